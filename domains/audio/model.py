"""Models of the audio domain, on core blocks, and their registered builders.

- :class:`KeywordTransformer`: an Audio Spectrogram Transformer (Gong et al. 2021, "AST") in
  small: the log-mel cut into (mel band x frame span) patches, a class token, learned
  positions, a pre-norm :class:`~attnlab.core.blocks.TransformerEncoder`, a linear head on the
  class token. Tokens are time-major (all bands of a time step, then the next), the order of
  :class:`~attnlab.core.layout.SpectrogramLayout` with bands.
- :class:`SpeechSeq2Seq`: Whisper's architecture (Radford et al. 2022, "Robust Speech
  Recognition via Large-Scale Weak Supervision"; openai/whisper ``model.py``): two 1-D convs
  (the second with stride 2) and fixed sinusoidal positions before a pre-norm encoder, a
  decoder with learned positions, causal self-attention and cross-attention to the audio,
  logits tied to the token embedding. Names map one to one onto Hugging Face's
  ``WhisperForConditionalGeneration`` (:mod:`.pretrained`). The shipped model reads characters
  (:attr:`SpeechConfig.vocab`); a loaded Whisper keeps its token ids.

Names are API: ``patch``, ``cls_token``, ``pos_embed``, ``encoder.blocks.{i}.attn``,
``head`` (keyword model); ``conv1``, ``conv2``, ``enc_pos``, ``encoder``, ``tok_embed``,
``dec_pos``, ``decoder.blocks.{i}.cross_attn`` (speech model).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.core.blocks import TransformerDecoder, TransformerEncoder
from attnlab.core.config_checks import check_sizes
from attnlab.core.kv_cache import DecoderLayerCache
from attnlab.core.layout import SpectrogramLayout
from attnlab.core.registry import register

from .data import HOP, KEYWORDS, N_MELS, SAMPLE_RATE, WIN

__all__ = ["KeywordConfig", "KeywordTransformer", "SpeechConfig", "SpeechSeq2Seq", "CHARS",
           "IGNORE", "whisper_sinusoids", "audio_test", "audio_kws", "audio_asr",
           "audio_asr_test"]  # fmt: skip

IGNORE = -100
#: the character vocabulary of the shipped speech model: specials, space, apostrophe, a..z
CHARS = ["<pad>", "<sot>", "<eot>", " ", "'", *"abcdefghijklmnopqrstuvwxyz"]


# ------------------------------------------------------------------------------------------
# keyword spotting: AST-style
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeywordConfig:
    """Hyperparameters of :class:`KeywordTransformer`.

    Attributes:
        labels: class names (the keywords).
        n_mels: mel bands of the input.
        frames: log-mel frames of the input (1 s at a 10 ms hop: 101; the last ones beyond a
            whole patch are dropped).
        patch_size: (mel bands, frames) per patch.
        dim, depth, num_heads, mlp_ratio, dropout: the encoder (timm's names).
        stem: ``"linear"``: AST's patch embedding (one linear map per patch); ``"conv"``: a
            3x3 convolution (32 channels, stride 2) before it, as in Xiao et al. 2021 ("Early
            convolutions help transformers see better"): the same tokens on the same patches
            (each also hears a one-cell rim).
    """

    labels: list[str] = field(default_factory=lambda: list(KEYWORDS))
    n_mels: int = N_MELS
    frames: int = 101
    patch_size: list[int] = field(default_factory=lambda: [16, 8])
    dim: int = 96
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 3.0
    dropout: float = 0.0
    stem: str = "linear"

    def __post_init__(self) -> None:
        check_sizes(self, "n_mels", "frames", "dim", "depth", "num_heads")
        if self.stem not in ("linear", "conv"):
            raise ValueError(f"stem must be 'linear' or 'conv', got {self.stem!r}")
        object.__setattr__(self, "patch_size", [int(p) for p in self.patch_size])
        object.__setattr__(self, "labels", list(self.labels))
        pf, pt = self.patch_size
        if self.n_mels % pf or pt > self.frames or pf % 2 or pt % 2:
            raise ValueError(f"patch_size {self.patch_size} must be even, tile "
                             f"n_mels={self.n_mels} and fit frames={self.frames}")  # fmt: skip
        if len(self.labels) < 2:
            raise ValueError("labels needs at least two classes")

    @property
    def num_bands(self) -> int:
        return self.n_mels // self.patch_size[0]

    @property
    def num_steps(self) -> int:
        return self.frames // self.patch_size[1]

    @property
    def num_classes(self) -> int:
        return len(self.labels)


class KeywordTransformer(nn.Module):
    """``forward(spec (B, n_mels, frames)) -> logits (B, classes)``."""

    def __init__(self, config: KeywordConfig) -> None:
        super().__init__()
        self.config = c = config
        pf, pt = c.patch_size
        if c.stem == "conv":
            self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.GELU())
            self.patch = nn.Conv2d(32, c.dim, kernel_size=(pf // 2, pt // 2),
                                   stride=(pf // 2, pt // 2))  # fmt: skip
        else:
            self.stem = nn.Identity()
            self.patch = nn.Conv2d(1, c.dim, kernel_size=(pf, pt), stride=(pf, pt))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + c.num_steps * c.num_bands, c.dim) * 0.02)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = TransformerEncoder(c.dim, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio,
                                          dropout=c.dropout)  # fmt: skip
        self.head = nn.Linear(c.dim, c.num_classes)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def layout(self) -> SpectrogramLayout:
        """Where each token sits on the log-mel (time steps x mel bands, class token first)."""
        c = self.config
        pf, pt = c.patch_size
        bands = tuple((j * pf, (j + 1) * pf) for j in range(c.num_bands))
        return SpectrogramLayout.create(
            c.num_steps * pt, SAMPLE_RATE, HOP, WIN, frames_per_token=pt, band_bins=bands,
            num_bins=c.n_mels, num_prefix=1, prefix_names=("cls",))  # fmt: skip

    def fit_frames(self, spec: Tensor) -> Tensor:
        """Crop or pad (with the clip's floor) ``spec`` (B, n_mels, T) to the model's frames."""
        c = self.config
        if spec.dim() != 3 or spec.shape[1] != c.n_mels:
            raise ValueError(f"spec must be (B, {c.n_mels}, frames), got {tuple(spec.shape)}")
        T = c.num_steps * c.patch_size[1]
        if spec.shape[-1] >= T:
            return spec[..., :T]
        floor = spec.amin(dim=(-2, -1), keepdim=True)
        pad = floor.expand(-1, c.n_mels, T - spec.shape[-1])
        return torch.cat([spec, pad], dim=-1)

    def forward(self, spec: Tensor) -> Tensor:
        x = self.patch(self.stem(self.fit_frames(spec)[:, None]))  # (B, dim, bands, steps)
        x = x.permute(0, 3, 2, 1).flatten(1, 2)  # (B, steps * bands, dim), time-major
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.encoder(self.drop(x))
        return self.head(x[:, 0])

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self(batch["spec"])
        loss = F.cross_entropy(logits, batch["label"])
        acc = (logits.argmax(-1) == batch["label"]).float().mean()
        return loss, {"acc": acc.detach()}


# ------------------------------------------------------------------------------------------
# speech recognition: Whisper-style
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeechConfig:
    """Hyperparameters of :class:`SpeechSeq2Seq` (Whisper's, in timm's vocabulary).

    Attributes:
        n_mels: mel bands of the input.
        dim: model width; ``enc_depth`` / ``dec_depth`` blocks; ``num_heads`` per block.
        max_frames: longest log-mel input (the encoder has ``max_frames // 2`` positions).
        max_len: longest token sequence (start token included).
        vocab_size: token ids; ``vocab`` the characters by id (None: bare ids, as a loaded
            Whisper); ``sot_id`` / ``eot_id`` start and end of text.
        act, norm_eps: MLP activation and LayerNorm epsilon (Whisper: gelu, 1e-5).
        alignment_heads: ((decoder layer, head), ...) whose cross-attention gives word times
            (found by :func:`attnlab.domains.audio.align.find_alignment_heads`);
            ``alignment_medfilt`` the median-filter width found with them (Whisper's 7).
        ctc_weight: weight of an auxiliary CTC loss on the encoder (Kim et al. 2017, joint
            CTC-attention; blank = id 0): it teaches the encoder the sounds early, so that the
            cross-attention finds them instead of the decoder first learning spelling alone.
            0 builds no ``ctc_head``.
    """

    n_mels: int = N_MELS
    dim: int = 128
    enc_depth: int = 3
    dec_depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    max_frames: int = 3000
    max_len: int = 64
    vocab_size: int = len(CHARS)
    vocab: list[str] | None = field(default_factory=lambda: list(CHARS))
    sot_id: int = 1
    eot_id: int = 2
    act: str = "gelu"
    norm_eps: float = 1e-5
    alignment_heads: list[list[int]] = field(default_factory=list)
    alignment_medfilt: int = 7
    ctc_weight: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {self.ctc_weight}")
        check_sizes(self, "n_mels", "dim", "enc_depth", "dec_depth", "num_heads", "max_frames",
                    "max_len", "vocab_size", "alignment_medfilt")  # fmt: skip
        if self.vocab is not None and len(self.vocab) != self.vocab_size:
            raise ValueError(f"vocab has {len(self.vocab)} tokens but vocab_size={self.vocab_size}")
        heads = [list(map(int, h)) for h in self.alignment_heads]
        for layer, head in heads:
            if not (0 <= layer < self.dec_depth and 0 <= head < self.num_heads):
                raise ValueError(f"alignment head ({layer}, {head}) is outside "
                                 f"{self.dec_depth} layers x {self.num_heads} heads")  # fmt: skip
        object.__setattr__(self, "alignment_heads", heads)

    @property
    def max_source(self) -> int:
        return (self.max_frames + 1) // 2

    @property
    def seconds_per_position(self) -> float:
        """Audio time per encoder position (two 10 ms frames)."""
        return 2 * HOP / SAMPLE_RATE


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's fixed positions (``whisper.model.sinusoids``): [sin | cos] halves."""
    if channels % 2:
        raise ValueError(f"channels must be even, got {channels}")
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-increment * torch.arange(channels // 2, dtype=torch.float64))
    t = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cat([t.sin(), t.cos()], dim=1).float()


class SpeechSeq2Seq(nn.Module):
    """``forward(spec (B, n_mels, T), tokens (B, L)) -> logits (B, L, vocab)``.

    ``encode(spec)`` gives the audio context (B, ceil(T / 2), dim); ``decode(tokens, context,
    cache=None)`` the next-token logits (with a cache from :meth:`make_cache`, only the new
    tokens).
    """

    def __init__(self, config: SpeechConfig) -> None:
        super().__init__()
        self.config = c = config
        kw = dict(mlp_ratio=c.mlp_ratio, qkv_bias=(True, False, True), act=c.act,
                  dropout=c.dropout, norm_eps=c.norm_eps)  # fmt: skip
        self.conv1 = nn.Conv1d(c.n_mels, c.dim, 3, padding=1)
        self.conv2 = nn.Conv1d(c.dim, c.dim, 3, stride=2, padding=1)
        self.register_buffer("enc_pos", whisper_sinusoids(c.max_source, c.dim))
        self.encoder = TransformerEncoder(c.dim, c.enc_depth, c.num_heads, **kw)
        self.tok_embed = nn.Embedding(c.vocab_size, c.dim)
        self.dec_pos = nn.Parameter(torch.randn(c.max_len, c.dim) * 0.01)
        self.drop = nn.Dropout(c.dropout)
        self.decoder = TransformerDecoder(c.dim, c.dec_depth, c.num_heads, max_len=c.max_len, **kw)
        self.ctc_head = nn.Linear(c.dim, c.vocab_size) if c.ctc_weight > 0 else None
        nn.init.normal_(self.tok_embed.weight, std=0.02)

    # -- text ----------------------------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        """Character ids of ``text`` (lower-cased; characters outside the vocabulary dropped)."""
        vocab = self._vocab()
        index = {ch: i for i, ch in enumerate(vocab) if not ch.startswith("<")}
        return [index[ch] for ch in " ".join(text.lower().split()) if ch in index]

    def decode_text(self, ids: list[int] | Tensor) -> str:
        """Text of ids (special tokens dropped)."""
        vocab = self._vocab()
        ids = ids.tolist() if isinstance(ids, Tensor) else ids
        return "".join(
            vocab[i] for i in ids if 0 <= i < len(vocab) and not vocab[i].startswith("<")
        )

    def _vocab(self) -> list[str]:
        if self.config.vocab is None:
            raise ValueError("this model has no character vocabulary: give and read token ids")
        return self.config.vocab

    # -- forward -------------------------------------------------------------------------------
    def encode(self, spec: Tensor) -> Tensor:
        """Audio context (B, ceil(T / 2), dim) of log-mels (B, n_mels, T)."""
        c = self.config
        if spec.dim() != 3 or spec.shape[1] != c.n_mels:
            raise ValueError(f"spec must be (B, {c.n_mels}, frames), got {tuple(spec.shape)}")
        if spec.shape[-1] > c.max_frames:
            raise ValueError(f"{spec.shape[-1]} frames exceed max_frames={c.max_frames}")
        x = F.gelu(self.conv1(spec))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, S, dim)
        x = x + self.enc_pos[: x.shape[1]]
        return self.encoder(self.drop(x))

    def make_cache(self) -> list[DecoderLayerCache]:
        return self.decoder.make_cache()

    def decode(self, tokens: Tensor, context: Tensor,
               cache: list[DecoderLayerCache] | None = None) -> Tensor:  # fmt: skip
        """Next-token logits (B, L, vocab) of ``tokens`` (B, L) given the audio ``context``."""
        c = self.config
        offset = cache[0].self_kv.length if cache else 0
        if tokens.dim() != 2 or tokens.dtype.is_floating_point:
            raise ValueError(f"tokens must be (B, L) integer ids, got {tuple(tokens.shape)}")
        if offset + tokens.shape[1] > c.max_len:
            raise ValueError(f"{offset + tokens.shape[1]} tokens exceed max_len={c.max_len}")
        x = self.tok_embed(tokens) + self.dec_pos[offset : offset + tokens.shape[1]]
        x = self.decoder(self.drop(x), context, cache=cache)
        return F.linear(x, self.tok_embed.weight)

    def forward(self, spec: Tensor, tokens: Tensor) -> Tensor:
        return self.decode(tokens, self.encode(spec))

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        context = self.encode(batch["spec"])
        logits = self.decode(batch["tokens"], context)
        targets = batch["targets"]
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        scored = targets != IGNORE
        acc = (logits.argmax(-1) == targets)[scored].float().mean()
        metrics = {"acc": acc.detach()}
        if self.ctc_head is not None:
            text = scored & (targets != self.config.eot_id)  # (B, L) the characters
            logp = self.ctc_head(context).log_softmax(-1).transpose(0, 1)  # (S, B, V)
            lengths = torch.full((len(targets),), logp.shape[0], dtype=torch.long)
            ctc = F.ctc_loss(logp, targets[text], lengths, text.sum(1), blank=0,
                             zero_infinity=True)  # fmt: skip
            metrics["ctc"] = ctc.detach()
            loss = loss + self.config.ctc_weight * ctc
        return loss, metrics

    @torch.no_grad()
    def greedy(self, spec: Tensor, max_new: int | None = None) -> list[list[int]]:
        """Greedy decoding with the KV cache: per batch item, the ids after the start token
        up to (not including) the end token, at most ``max_len - 2`` of them."""
        c = self.config
        context = self.encode(spec)
        B = spec.shape[0]
        cache = self.make_cache()
        tok = torch.full((B, 1), c.sot_id, dtype=torch.long, device=spec.device)
        out: list[list[int]] = [[] for _ in range(B)]
        done = torch.zeros(B, dtype=torch.bool, device=spec.device)
        for _ in range(min(max_new or c.max_len, c.max_len - 2)):  # room for <sot> and <eot>
            nxt = self.decode(tok, context, cache)[:, -1].argmax(-1)
            for b in range(B):
                if not done[b] and int(nxt[b]) != c.eot_id:
                    out[b].append(int(nxt[b]))
            done |= nxt == c.eot_id
            if bool(done.all()):
                break
            tok = nxt[:, None]
        return out


def _build(cls, defaults, overrides: dict[str, Any]):
    return cls(dataclasses.replace(defaults, **overrides))


@register
def audio_test(**overrides: Any) -> KeywordTransformer:
    """Smallest keyword model for tests: dim 32, depth 2, 2 heads, 4 classes."""
    cfg = KeywordConfig(labels=["yes", "no", "up", "down"], dim=32, depth=2, num_heads=2)
    return _build(KeywordTransformer, cfg, overrides)


@register
def audio_asr_test(**overrides: Any) -> SpeechSeq2Seq:
    """Smallest speech model for tests: dim 32, one encoder and one decoder block, 2 heads."""
    cfg = SpeechConfig(dim=32, enc_depth=1, dec_depth=2, num_heads=2, max_frames=400,
                       max_len=32)  # fmt: skip
    return _build(SpeechSeq2Seq, cfg, overrides)


@register
def audio_kws(**overrides: Any) -> KeywordTransformer:
    """AST-style keyword classifier: 16-band x 80 ms patches, dim 96, 4 blocks, 20 keywords."""
    return _build(KeywordTransformer, KeywordConfig(), overrides)


@register
def audio_asr(**overrides: Any) -> SpeechSeq2Seq:
    """Whisper-style recogniser: dim 96, 3 encoder + 2 decoder blocks, 4 heads, characters,
    3 s of audio."""
    cfg = SpeechConfig(dim=96, max_frames=302, max_len=48, ctc_weight=0.3)
    return _build(SpeechSeq2Seq, cfg, overrides)
