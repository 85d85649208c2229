"""Inference with the shipped audio models: :func:`transcribe` (speech to text with word times
read from cross-attention), :func:`classify` (keyword with its attention over the log-mel),
and :func:`recognize`, which returns everything a view needs.

Input rules (checked by :func:`.data.prepare`): mono or multichannel, any sample rate
(resampled to 16 kHz), 0.1 s to 30 s, not silent, not heavily clipped. Leading and trailing
silence is trimmed before recognition (word times stay on the input's clock); what remains must
fit the recogniser's window (3 s for the shipped ``audio/asr``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.core.analysis import attention_rollout
from attnlab.core.capture import record_attention
from attnlab.core.registry import load

from .align import AlignItem, align_words, cross_attention, separator
from .data import HOP, SAMPLE_RATE, log_mel, prepare
from .model import KeywordTransformer, SpeechSeq2Seq

__all__ = ["transcribe", "classify", "recognize", "Transcription", "KeywordResult",
           "speech_model", "keyword_model", "trim_silence"]  # fmt: skip


@functools.cache
def speech_model() -> SpeechSeq2Seq:
    """The shipped recogniser ``weights/audio/asr`` (loaded once)."""
    return load("audio/asr")


@functools.cache
def keyword_model() -> KeywordTransformer:
    """The shipped keyword spotter ``weights/audio/kws`` (loaded once)."""
    return load("audio/kws")


def trim_silence(x: Tensor, margin: float = 0.1, threshold_db: float = -35.0) -> tuple[int, int]:
    """[start, stop) samples of the voiced part of 16 kHz ``x``: 10 ms frames within
    ``threshold_db`` of the loudest, widened by ``margin`` seconds."""
    frames = x[: len(x) // HOP * HOP].reshape(-1, HOP)
    if len(frames) == 0:
        return 0, len(x)
    db = 10 * torch.log10(frames.pow(2).mean(1) + 1e-12)
    loud = torch.nonzero(db > db.max() + threshold_db).flatten()
    pad = int(margin * SAMPLE_RATE)
    start = max(0, int(loud[0]) * HOP - pad)
    stop = min(len(x), (int(loud[-1]) + 1) * HOP + pad)
    return start, stop


@dataclass(frozen=True)
class Transcription:
    """What :func:`recognize` read: the text, words with (start, end) seconds on the input's
    clock, the log-mel the model heard (n_mels, frames) starting at ``offset`` seconds, the
    frames holding audio, the decoded tokens (strings), every cross-attention map (layers,
    heads, tokens + 1, positions), the heads used, the DTW matrix (tokens + 1, positions) and
    the DTW path (rows, positions; row -1 is the lead row before the first word)."""

    text: str
    words: list[tuple[str, float, float]]
    spec: Tensor
    offset: float
    frames: int
    tokens: list[str]
    cross: Tensor
    heads: list[list[int]]
    matrix: np.ndarray
    path: tuple[np.ndarray, np.ndarray] = (np.zeros(0, int), np.zeros(0, int))


@dataclass(frozen=True)
class KeywordResult:
    """The keyword, class probabilities, the log-mel window heard (n_mels, frames) from
    ``offset`` seconds, the class token's attention over the patches (last layer, heads
    averaged) and its attention rollout (both ``layout`` vectors, class token first)."""

    label: str
    probs: dict[str, float]
    spec: Tensor
    offset: float
    cls_attention: np.ndarray
    rollout: np.ndarray


def _window(model: SpeechSeq2Seq) -> int:
    """Samples the recogniser hears at once."""
    return (model.config.max_frames - 1) * HOP


@torch.no_grad()
def recognize(waveform, sample_rate: int, model: SpeechSeq2Seq | None = None,
              heads: list[list[int]] | None = None) -> Transcription:  # fmt: skip
    """Transcribe with the recogniser and align its words by cross-attention.

    Raises:
        ValueError: bad input (see the module), or speech longer than the model's window.
    """
    model = model or speech_model()
    x = prepare(waveform, sample_rate)
    start, stop = trim_silence(x)
    n = _window(model)
    if stop - start > n:
        raise ValueError(
            f"the speech lasts {(stop - start) / SAMPLE_RATE:.1f} s; this model "
            f"hears at most {n / SAMPLE_RATE:.1f} s at once: trim the clip"
        )
    clip = x[start:stop]
    spec = log_mel(F.pad(clip, (0, n - len(clip))))  # padded as in training
    frames = len(clip) // HOP + 1
    ids = model.greedy(spec[None])[0]
    text = model.decode_text(ids)
    words = text.split()
    offset = start / SAMPLE_RATE
    c = model.config
    if not words:
        cross = cross_attention(model, spec, [c.sot_id, c.eot_id])
        return Transcription("", [], spec, offset, frames, ["<eot>"], cross, [],
                             np.zeros((0, 0)))  # fmt: skip
    word_tokens = [model.encode_text(w) for w in words]
    flat = AlignItem(spec, word_tokens, [], frames, separator(model)).tokens()
    al = align_words(model, spec, words, word_tokens, heads, frames=frames)
    cross = cross_attention(model, spec, [c.sot_id, *flat, c.eot_id])
    timed = [(w, s + offset, e + offset) for w, s, e in al.words]
    return Transcription(" ".join(words), timed, spec, offset, frames,
                         [*(c.vocab[t] for t in flat), "<eot>"], cross,
                         heads or list(c.alignment_heads), al.matrix, al.path)  # fmt: skip


def transcribe(waveform, sample_rate: int, model: SpeechSeq2Seq | None = None,
               ) -> tuple[str, list[tuple[str, float, float]]]:  # fmt: skip
    """``(text, [(word, start_s, end_s), ...])`` of speech in ``waveform`` ((N,) or
    (channels, N), any rate) with the shipped recogniser; word times from its alignment
    heads' cross-attention (Whisper's method)."""
    t = recognize(waveform, sample_rate, model)
    return t.text, t.words


@torch.no_grad()
def classify(waveform, sample_rate: int, model: nn.Module | None = None) -> KeywordResult:
    """The keyword spoken in the loudest second of ``waveform``, with attention maps."""
    model = model or keyword_model()
    x = prepare(waveform, sample_rate)
    T = model.config.frames
    n = (T - 1) * HOP
    if len(x) > n:  # the window of n samples with the most energy
        energy = F.avg_pool1d(x.pow(2)[None, None], HOP, HOP)[0, 0]
        k = n // HOP
        sums = torch.cumsum(F.pad(energy, (1, 0)), 0)
        best = int(torch.argmax(sums[k:] - sums[:-k])) if len(energy) > k else 0
        x, offset = x[best * HOP : best * HOP + n], best * HOP / SAMPLE_RATE
    else:
        offset = 0.0
    spec = log_mel(F.pad(x, (0, n - len(x))))
    with record_attention(model, layers="encoder.blocks.*.attn") as maps:
        logits = model(spec[None])[0]
    att = maps.stack()[:, 0].float()  # (layers, H, L, L)
    cls = att[-1].mean(0)[0].numpy()
    roll = attention_rollout(att[:, None])[0, 0].numpy()
    p = logits.softmax(-1)
    probs = {lab: float(v) for lab, v in zip(model.config.labels, p, strict=True)}
    label = model.config.labels[int(p.argmax())]
    return KeywordResult(label, probs, model.fit_frames(spec[None])[0],
                         offset, cls, roll)  # fmt: skip
