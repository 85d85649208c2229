"""Word timestamps from cross-attention, and the automatic search for alignment heads.

Follows openai/whisper's ``timing.py`` (``find_alignment``): teacher-force the transcript
through the decoder while recording the cross-attention of chosen (layer, head) pairs, keep
the frames that hold audio, standardise each head's map over the tokens, median-filter it
along time (width 7), average the heads, and align tokens to time with dynamic time warping on
the negated map; a word starts where the path first reaches its first token.

Whisper ships a hand-made list of alignment heads per checkpoint (``_ALIGNMENT_HEADS``) and
none for fine-tuned or new models. :func:`find_alignment_heads` finds them for any model built
on the core decoder (the shipped recogniser, one trained with ``attnlab train audio/asr``, a
Whisper loaded by :mod:`.pretrained`): score every cross-attention head by the word-start
error it gives alone on a calibration set with known word starts, then add heads best first
while the error of their average keeps falling.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.core.capture import record_attention

__all__ = ["separator", "AlignItem", "Alignment", "AlignmentHeads", "cross_attention", "dtw",
           "median_filter", "align_words", "find_alignment_heads", "word_start_errors",
           "MEDFILT_WIDTH", "speech_onset"]  # fmt: skip

MEDFILT_WIDTH = 7  # Whisper's ``medfilt_width``


@dataclass(frozen=True)
class AlignItem:
    """One calibration clip: log-mel (n_mels, frames) as the model reads it (padded as in
    training), the token ids of each word (in order), each word's true start in seconds, how
    many frames hold the clip's audio (default all), and the tokens between words (a space
    for a character model; none for BPE, whose tokens carry their leading space)."""

    spec: Tensor
    word_tokens: list[list[int]]
    starts: list[float]
    frames: int | None = None
    separator: tuple[int, ...] = ()

    def tokens(self) -> list[int]:
        """The text's tokens: the words joined by ``separator`` (a space for characters)."""
        return _join(self.word_tokens, self.separator)[0]

    def spans(self) -> list[tuple[int, int]]:
        """[first, after last) index of each word's tokens in :meth:`tokens`."""
        return _join(self.word_tokens, self.separator)[1]

    @functools.cached_property
    def onset(self) -> int:
        """The encoder position where speech starts (:func:`speech_onset`), computed once:
        head discovery scores every head on the same clips."""
        return speech_onset(self.spec, self.frames)

    @property
    def positions(self) -> int:
        """Encoder positions that hold audio (the second conv has stride 2)."""
        return (int(self.frames or self.spec.shape[-1]) + 1) // 2


@dataclass(frozen=True)
class Alignment:
    """Words with (start, end) seconds, and the averaged, filtered map (tokens, frames) with
    the DTW path that produced them."""

    words: list[tuple[str, float, float]]
    matrix: np.ndarray
    path: tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class AlignmentHeads:
    """The heads found, each single head's calibration error (layers, heads) in ms, and the
    error of the chosen average."""

    heads: list[list[int]]
    single_mae_ms: np.ndarray
    mae_ms: float
    medfilt: int = MEDFILT_WIDTH


def _join(word_tokens: list[list[int]], sep: Sequence[int]) -> tuple[list[int], list[tuple]]:
    flat: list[int] = []
    spans = []
    for k, w in enumerate(word_tokens):
        if k:
            flat.extend(sep)
        spans.append((len(flat), len(flat) + len(w)))
        flat.extend(w)
    return flat, spans


def separator(model: nn.Module) -> tuple[int, ...]:
    """The token between words: the space of a character vocabulary, else none."""
    vocab = getattr(model.config, "vocab", None)
    return (vocab.index(" "),) if vocab and " " in vocab else ()


def _decoder_blocks(model: nn.Module) -> int:
    return len(model.decoder.blocks)


@torch.no_grad()
def cross_attention(model: nn.Module, spec: Tensor, tokens: Sequence[int]) -> Tensor:
    """Cross-attention (layers, heads, L, S) of the decoder on ``tokens`` (prefix, text and
    end token) teacher-forced over the log-mel ``spec`` (n_mels, frames)."""
    was = model.training
    model.eval()
    try:
        ids = torch.tensor([list(tokens)], dtype=torch.long, device=spec.device)
        with record_attention(model, layers="decoder.blocks.*.cross_attn") as maps:
            model.decode(ids, model.encode(spec[None]))
        return maps.stack()[:, 0].float()  # (layers, H, L, S)
    finally:
        model.train(was)


def median_filter(x: Tensor, width: int) -> Tensor:
    """Median over a sliding window of odd ``width`` along the last axis (reflect padding),
    as Whisper's ``median_filter``."""
    if width <= 1:
        return x
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    shape = x.shape
    y = F.pad(x.reshape(-1, 1, shape[-1]), (pad, pad), mode="reflect")
    return y.unfold(-1, width, 1).median(-1).values.reshape(shape)


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic alignment minimising the summed ``cost`` (N, M): (row indices, column
    indices) along the path; Whisper's ``dtw_cpu`` and ``backtrace``, computed one
    anti-diagonal at a time. Where predecessors tie, Whisper takes the step to the right even
    when it costs more; here the cheapest wins (the diagonal first), so exact ties (the
    lead row of zeros) cannot push the path off its minimum."""
    N, M = cost.shape
    acc = np.full((N + 1, M + 1), np.inf)
    trace = np.full((N + 1, M + 1), -1, dtype=np.int8)
    acc[0, 0] = 0.0
    for d in range(2, N + M + 1):  # anti-diagonals: cell (i, j) needs only d - 1 and d - 2
        i = np.arange(max(1, d - M), min(N, d - 1) + 1)
        j = d - i
        c0, c1, c2 = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        t = np.argmin(np.stack([c0, c1, c2]), axis=0)  # ties: diagonal, then down, then right
        acc[i, j] = cost[i - 1, j - 1] + np.choose(t, [c0, c1, c2])
        trace[i, j] = t
    i, j = N, M
    trace[0, :] = 2
    trace[:, 0] = 1
    rows, cols = [], []
    while i > 0 or j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        else:
            j -= 1
    return np.array(rows[::-1]), np.array(cols[::-1])


def _path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = dtw(cost)
    keep = (rows >= 0) & (cols >= 0)
    return rows[keep], cols[keep]


def speech_onset(spec: Tensor, frames: int | None = None, share: float = 0.3) -> int:
    """The encoder position where speech starts: the first log-mel frame whose mean level
    rises ``share`` of the way from the clip's floor (10th percentile) to its peak, less two
    frames (20 ms) for weak onsets such as /f/ and /s/; 0 when the clip has no clear floor.

    Cross-attention says which frames a token listens to, not that the frames before the
    first word are silence: without this the DTW path may start the first word at frame 0
    (measured on held-out voices: a third of the first words placed 200-400 ms early)."""
    level = spec[..., : frames or spec.shape[-1]].float().mean(-2).flatten()
    if level.numel() < 4:
        return 0
    floor, peak = float(torch.quantile(level, 0.1)), float(level.max())
    if peak - floor < 0.25:  # under 10 dB between floor and peak: no silence to find
        return 0
    above = torch.nonzero(level > floor + share * (peak - floor)).flatten()
    first = int(above[0]) if len(above) else 0
    return max(0, first - 2) // 2  # log-mel frames -> encoder positions (stride 2)


def _word_times(weights: Tensor, n_prefix: int, spans: list[tuple[int, int]], frames: int,
                seconds_per_position: float, medfilt: int = MEDFILT_WIDTH, lead: bool = True,
                onset: int = 0) -> tuple[list[tuple[float, float]], np.ndarray, tuple]:  # fmt: skip
    """(start, end) seconds per word (``spans`` of text tokens) from maps (h, L, S) of
    prefix + text + end tokens: a word starts where the path reaches its first token's row
    and ends where it reaches the next token's.

    Row r of the matrix is the query that predicts text token r (the last row predicts the
    end token). Whisper's path starts on the first token's row, so its first word always
    starts at 0; with ``lead`` a row of zeros (the standardised maps' mean) goes before the
    tokens, taking the frames before the first word until its row stands out; no token row
    may take a frame before ``onset`` (the position where speech starts, :func:`speech_onset`).
    """
    w = weights[..., :frames]
    std, mean = torch.std_mean(w, dim=-2, keepdim=True, unbiased=False)
    w = (w - mean) / std.clamp(min=1e-8)
    w = median_filter(w, medfilt)
    matrix = w.mean(0)[n_prefix - 1 : -1].numpy()  # rows predicting each text token, then end
    cost = -matrix.astype(np.float64)
    if lead:
        cost = np.concatenate([np.zeros((1, cost.shape[1])), cost])
        onset = min(int(onset), cost.shape[1] - 1)
        cost[1:, :onset] = 1e6  # before speech starts only the lead row may take frames
    rows, cols = _path(cost)
    if lead:
        rows = rows - 1
    first = np.zeros(len(matrix), dtype=np.int64)  # first frame on each token's row
    for r in range(len(matrix) - 1, -1, -1):
        hit = np.nonzero(rows == r)[0]
        first[r] = cols[hit[0]] if len(hit) else (first[r + 1] if r + 1 < len(matrix) else 0)
    t = first * seconds_per_position
    times = [(float(t[a]), float(t[min(b, len(t) - 1)])) for a, b in spans]
    return times, matrix, (rows, cols)


def _prefix(model: nn.Module, prefix: Sequence[int] | None) -> list[int]:
    return [model.config.sot_id] if prefix is None else list(prefix)


def align_words(model: nn.Module, spec: Tensor, words: list[str], word_tokens: list[list[int]],
                heads: Sequence[Sequence[int]] | None = None,
                prefix: Sequence[int] | None = None, frames: int | None = None,
                sep: Sequence[int] | None = None) -> Alignment:  # fmt: skip
    """Word (start, end) times of a transcript on its audio.

    Args:
        model: a :class:`~.model.SpeechSeq2Seq` (or a loaded Whisper).
        spec: log-mel (n_mels, frames) of the audio, as the model reads it.
        words: the words; ``word_tokens`` their token ids, joined by ``sep``.
        heads: (layer, head) pairs; default the model's ``config.alignment_heads``, else every
            head of the last half of the decoder (Whisper's default).
        prefix: the tokens before the text (default ``[sot_id]``).
        frames: log-mel frames holding audio (the rest is padding); default all.
        sep: tokens between words (default: :func:`separator`).
    """
    prefix = _prefix(model, prefix)
    heads = _heads(model, heads)
    item = AlignItem(spec, word_tokens, [], frames, tuple(separator(model) if sep is None else sep))
    att = cross_attention(model, spec, [*prefix, *item.tokens(), model.config.eot_id])
    w = torch.stack([att[layer, head] for layer, head in heads])
    times, matrix, path = _word_times(w, len(prefix), item.spans(), item.positions,
                                      model.config.seconds_per_position,
                                      medfilt=_medfilt(model),
                                      onset=speech_onset(spec, frames))  # fmt: skip
    return Alignment([(wd, s, e) for wd, (s, e) in zip(words, times, strict=True)], matrix, path)


def _heads(model: nn.Module, heads: Sequence[Sequence[int]] | None) -> list[list[int]]:
    if heads is None:
        heads = getattr(model.config, "alignment_heads", None) or []
    if not heads:
        n = _decoder_blocks(model)
        heads = [[layer, h] for layer in range(n // 2, n) for h in range(model.config.num_heads)]
    return [list(map(int, h)) for h in heads]


def _items(model: nn.Module, data) -> list[AlignItem]:
    """AlignItems from a list of them or a :class:`~.data.SequenceSet` (characters; a word's
    tokens are its letters, the space before it left out)."""
    if isinstance(data, list | tuple):
        return list(data)
    from .data import HOP, log_mel

    out = []
    for i in range(len(data)):
        x, text, starts = data.item(i)
        n = len(x)
        spec = log_mel(F.pad(x, (0, max(0, data.n - n))))
        words = text.split()
        out.append(AlignItem(spec, [model.encode_text(w) for w in words], list(starts),
                             n // HOP + 1, separator(model)))  # fmt: skip
    return out


def _medfilt(model: nn.Module) -> int:
    """The model's calibrated median-filter width (Whisper's 7 when it has none)."""
    return int(getattr(model.config, "alignment_medfilt", MEDFILT_WIDTH) or MEDFILT_WIDTH)


def _errors(model: nn.Module, items: list[AlignItem], atts: list[Tensor],
            heads: list[list[int]], prefix: list[int], medfilt: int | None = None,
            ) -> np.ndarray:  # fmt: skip
    errs = []
    for it, att in zip(items, atts, strict=True):
        w = torch.stack([att[layer, head] for layer, head in heads])
        times, _, _ = _word_times(w, len(prefix), it.spans(), it.positions,
                                  model.config.seconds_per_position,
                                  medfilt=_medfilt(model) if medfilt is None else medfilt,
                                  onset=it.onset)  # fmt: skip
        errs += [abs(s - t) for (s, _), t in zip(times, it.starts, strict=True)]
    return np.array(errs)


def find_alignment_heads(model: nn.Module, data, max_heads: int = 6,
                         prefix: Sequence[int] | None = None,
                         medfilts: Sequence[int] = (1, 3, 5, 7)) -> AlignmentHeads:  # fmt: skip
    """The cross-attention heads whose average best predicts word starts on ``data``, and
    the median-filter width (from ``medfilts``) that serves them best there.

    Heads are chosen with Whisper's width 7, then the width is chosen for them: Whisper's 7
    suits its BPE tokens; a character model's tokens are a few frames long each.

    Args:
        model: any model with ``decoder.blocks.*.cross_attn``, ``encode``/``decode``.
        data: calibration clips: a list of :class:`AlignItem` or a SequenceSet.
        max_heads: most heads kept.
        prefix: tokens before the text (default ``[sot_id]``).
    """
    prefix = _prefix(model, prefix)
    items = _items(model, data)
    if not items:
        raise ValueError("the calibration set is empty")
    eot = model.config.eot_id
    atts = [cross_attention(model, it.spec, [*prefix, *it.tokens(), eot]) for it in items]
    n_layers, n_heads = atts[0].shape[:2]
    single = np.zeros((n_layers, n_heads))
    for layer in range(n_layers):
        for h in range(n_heads):
            single[layer, h] = (
                _errors(model, items, atts, [[layer, h]], prefix, MEDFILT_WIDTH).mean() * 1000
            )
    order = [[int(i // n_heads), int(i % n_heads)] for i in np.argsort(single, axis=None)]
    chosen, best = [order[0]], float(single.min())
    for cand in order[1 : max(1, max_heads) * 2]:
        if len(chosen) >= max_heads:
            break
        mae = float(
            _errors(model, items, atts, [*chosen, cand], prefix, MEDFILT_WIDTH).mean() * 1000
        )
        if mae < best:
            chosen, best = [*chosen, cand], mae
    width, best = MEDFILT_WIDTH, best
    for m in medfilts:
        mae = float(_errors(model, items, atts, chosen, prefix, int(m)).mean() * 1000)
        if mae < best - 1e-9:
            width, best = int(m), mae
    return AlignmentHeads(chosen, single, best, width)


def word_start_errors(model: nn.Module, data, heads: Sequence[Sequence[int]] | None = None,
                      prefix: Sequence[int] | None = None) -> dict[str, float]:  # fmt: skip
    """Word-start errors (ms: mean, median, 90th percentile) of ``heads`` on ``data``."""
    prefix = _prefix(model, prefix)
    items = _items(model, data)
    heads = _heads(model, heads)
    eot = model.config.eot_id
    atts = [cross_attention(model, it.spec, [*prefix, *it.tokens(), eot]) for it in items]
    e = _errors(model, items, atts, heads, prefix) * 1000
    return {"mae_ms": float(e.mean()), "median_ms": float(np.median(e)),
            "p90_ms": float(np.percentile(e, 90)), "num_words": int(e.size)}  # fmt: skip
