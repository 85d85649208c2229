"""The Music Transformer (Huang et al. 2018): a decoder-only stack on event tokens with
relative position self-attention computed by the memory-efficient "skewing", and the same model
with absolute positions as the baseline of the paper's table.

``pos="relative"``: every block's attention adds ``S_rel = skew(Q E_r^T)`` to its logits
(:class:`attnlab.core.positional.MusicRelativeAttention`), one learned embedding per head and
causal distance 0..``rel_window``-1 (longer distances share the last one), so the model runs on
sequences longer than it was trained on. ``pos="absolute"``: a learned table of positions
(GPT-2) is added to the token embeddings, initialised at their scale (the paper's baseline adds
Vaswani et al.'s sin/cos table; at amplitude 1 against token embeddings of ~0.2 it drowned
them here: training loss 2.56 against the relative model's 1.67 after 650 steps).

Names are API (state-dict keys and capture names): ``tok_embed``, ``encoder.blocks.{i}.attn``
(``.pos.rel`` holds E_r), ``pos_embed`` (absolute only), ``encoder.norm``; the head is tied to
``tok_embed``.
``forward(tokens, cache=None)`` returns logits; ``loss(batch)`` is the trainer's path.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.core.blocks import TransformerEncoder
from attnlab.core.config_checks import check_sizes
from attnlab.core.kv_cache import KVCache
from attnlab.core.lm import check_token_ids, init_gpt2_weights, token_loss
from attnlab.core.positional import LearnedPositionalEmbedding
from attnlab.core.registry import register

from .tokens import VOCAB_SIZE

__all__ = ["MusicConfig", "MusicTransformer", "POSITIONS", "music_test", "music_relative",
           "music_absolute"]  # fmt: skip

POSITIONS = ("relative", "absolute")


@dataclass(frozen=True)
class MusicConfig:
    """Hyperparameters of :class:`MusicTransformer` (timm's vocabulary).

    Attributes:
        vocab_size: event vocabulary (``tokens.VOCAB_SIZE``).
        dim, depth, num_heads, mlp_ratio, qkv_bias, dropout: the stack.
        max_len: longest sequence (prime plus generated tokens).
        pos: ``"relative"`` (skewed relative attention) or ``"absolute"`` (learned table).
        rel_window: distances with their own relative embedding (the training length).
    """

    vocab_size: int = VOCAB_SIZE
    dim: int = 96
    depth: int = 3
    num_heads: int = 6
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dropout: float = 0.1
    max_len: int = 2048
    pos: str = "relative"
    rel_window: int = 256

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def __post_init__(self) -> None:
        check_sizes(self, "vocab_size", "dim", "depth", "num_heads", "max_len", "rel_window")
        if self.mlp_ratio < 0:
            raise ValueError(f"mlp_ratio must be >= 0, got {self.mlp_ratio}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pos not in POSITIONS:
            raise ValueError(f"pos must be one of {POSITIONS}, got {self.pos!r}")


class MusicTransformer(nn.Module):
    """Decoder-only model: ``forward(tokens (B, L), cache=None) -> logits (B, L, V)``."""

    def __init__(self, config: MusicConfig) -> None:
        super().__init__()
        self.config = c = config
        self.tok_embed = nn.Embedding(c.vocab_size, c.dim)
        relative = c.pos == "relative"
        # absolute: a learned table (GPT-2) initialised at the scale of the scaled token
        # embeddings (0.02 * sqrt(dim)); a fixed sin/cos table of amplitude 1 drowned them
        self.pos_embed = (
            None
            if relative
            else LearnedPositionalEmbedding(c.dim, c.max_len, init_std=0.02 * math.sqrt(c.dim))
        )
        self.drop = nn.Dropout(c.dropout)
        # the block's max_len is the span of the relative embeddings (clipped beyond)
        self.encoder = TransformerEncoder(
            c.dim, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias,
            dropout=c.dropout, causal=True, max_len=c.rel_window if relative else c.max_len,
            pos="music" if relative else None)  # fmt: skip
        self.apply(init_gpt2_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by depth
            if name.endswith(("attn.proj.weight", "mlp.fc2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * c.depth))

    def make_cache(self) -> list[KVCache]:
        """An empty KV cache, one per block."""
        return self.encoder.make_cache()

    def check_tokens(self, tokens: Tensor, offset: int = 0) -> None:
        """``ValueError`` unless ``tokens`` is a (B, L) integer tensor of ids in range that fits
        in ``max_len`` after ``offset`` cached positions."""
        check_token_ids(tokens, self.config.vocab_size, self.config.max_len, offset)

    def forward(self, tokens: Tensor, cache: list[KVCache] | None = None) -> Tensor:
        """Next-event logits (B, L, vocab_size); with ``cache``, ``tokens`` are the new
        positions only and the cache grows by them."""
        offset = cache[0].length if cache else 0
        self.check_tokens(tokens, offset)
        x = self.tok_embed(tokens) * math.sqrt(self.config.dim)  # (B, L, dim)
        if self.pos_embed is not None:
            x = self.pos_embed(x, offset)
        x = self.encoder(self.drop(x), cache=cache)
        return F.linear(x, self.tok_embed.weight)

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy (NLL per token, nats) over scored positions and their accuracy."""
        return token_loss(self(batch["tokens"]), batch["targets"])


def _build(defaults: MusicConfig, overrides: dict[str, Any]) -> MusicTransformer:
    return MusicTransformer(dataclasses.replace(defaults, **overrides))


@register
def music_test(**overrides: Any) -> MusicTransformer:
    """Smallest model for tests: dim 32, depth 2, 2 heads, relative, 64 tokens."""
    return _build(MusicConfig(dim=32, depth=2, num_heads=2, max_len=64, rel_window=32,
                              dropout=0.0), overrides)  # fmt: skip


@register
def music_relative(**overrides: Any) -> MusicTransformer:
    """Music Transformer with skewed relative attention (Huang et al. 2018)."""
    return _build(MusicConfig(pos="relative"), overrides)


@register
def music_absolute(**overrides: Any) -> MusicTransformer:
    """The same model with absolute (learned) positions: the paper's baseline."""
    return _build(MusicConfig(pos="absolute"), overrides)
