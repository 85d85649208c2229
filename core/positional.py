"""Positional schemes: absolute embeddings added to the input, and schemes that act inside
attention.

Absolute (added to the token embeddings by a model, before the blocks):
  * ``SinusoidalPositionalEmbedding`` -- the fixed sin/cos table of Vaswani et al. 2017.
  * ``LearnedPositionalEmbedding``    -- a learned table (BERT, GPT-2, ViT).

Inside attention (given to ``MultiHeadAttention(pos=...)``; they all take the position offset of
a KV cache so that incremental decoding sees the same positions as the full forward):
  * ``RotaryEmbedding``          -- RoPE (Su et al. 2021, "RoFormer"), "rotate-half" layout as in
                                    GPT-NeoX / LLaMA; rotates q and k.
  * ``ALiBiPosition``            -- linear biases (Press et al. 2022) via ``core.scores.ALiBi``.
  * ``RelativePositionBias``     -- a learned bias per head and clipped distance (Shaw et al.
                                    2018, T5 without buckets) via ``core.scores.RelativeBias``.
  * ``MusicRelativeAttention``   -- relative attention with per-head distance embeddings E_r and
                                    the memory-efficient "skewing" of Huang et al. 2018 ("Music
                                    Transformer"): S_rel = skew(Q E_r^T), added to the logits.

Shape letters: B batch, H heads, L new queries, S keys (cache included), D head dim.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .scores import ALiBi, RelativeBias, ScoreMod

__all__ = [
    "sinusoidal_table",
    "SinusoidalPositionalEmbedding",
    "LearnedPositionalEmbedding",
    "PositionScheme",
    "RotaryEmbedding",
    "ALiBiPosition",
    "RelativePositionBias",
    "MusicRelativeAttention",
    "skew",
    "build_position",
    "POSITION_KINDS",
]


def sinusoidal_table(max_len: int, dim: int, base: float = 10000.0) -> Tensor:
    """(max_len, dim) table: PE[p, 2i] = sin(p / base^(2i/dim)), PE[p, 2i+1] = cos(...)."""
    if dim % 2:
        raise ValueError(f"dim must be even for a sinusoidal table, got {dim}")
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]
    inv = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    pe = torch.zeros(max_len, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)
    return pe.float()


def _check_offset(x: Tensor, offset: int, max_len: int) -> None:
    if offset < 0 or offset + x.shape[1] > max_len:
        raise ValueError(f"positions {offset}..{offset + x.shape[1] - 1} exceed max_len={max_len}")


class SinusoidalPositionalEmbedding(nn.Module):
    """Adds the fixed sinusoidal table: ``x + PE[offset : offset + L]`` for x of shape (B, L, dim).

    The table is a non-persistent buffer (it is not a weight and stays out of the state dict).
    """

    def __init__(self, dim: int, max_len: int = 2048):
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self.register_buffer("pe", sinusoidal_table(max_len, dim), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        _check_offset(x, offset, self.max_len)
        return x + self.pe[offset : offset + x.shape[1]].to(x.dtype)


class LearnedPositionalEmbedding(nn.Module):
    """Adds a learned table ``weight`` (max_len, dim): ``x + weight[offset : offset + L]``."""

    def __init__(self, dim: int, max_len: int = 2048, init_std: float = 0.02):
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self.weight = nn.Parameter(torch.randn(max_len, dim) * init_std)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        _check_offset(x, offset, self.max_len)
        return x + self.weight[offset : offset + x.shape[1]].to(x.dtype)


class PositionScheme(nn.Module):
    """Base of the schemes that act inside attention. Each hook is a no-op by default.

    ``MultiHeadAttention`` calls, for self-attention with ``offset`` cached positions before the
    ``L`` new queries (so the keys are positions 0..S-1 with S = offset + L):
      1. ``rotate(q, k_new, offset)`` on the new queries and keys, before they enter the cache;
      2. ``score_mod()`` -- a ``ScoreMod`` (aligned bottom-right, so it needs no offset);
      3. ``attn_bias(q, S, offset, scale)`` -- an additive float bias (B, H, L, S) or None.
    """

    def rotate(self, q: Tensor, k: Tensor, offset: int) -> tuple[Tensor, Tensor]:
        return q, k

    def score_mod(self) -> ScoreMod | None:
        return None

    def attn_bias(self, q: Tensor, S: int, offset: int, scale: float) -> Tensor | None:
        return None


class RotaryEmbedding(PositionScheme):
    """RoPE: rotate pairs (x_i, x_{i + D/2}) of q and k by angle p * base^(-2i/D) at position p.

    Since <R_p q, R_r k> depends on p - r only, the scores see relative positions. cos/sin tables
    are cached and grown on demand (non-persistent buffers).
    """

    def __init__(self, head_dim: int, base: float = 10000.0, max_len: int = 2048):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {head_dim}")
        self.head_dim, self.base = head_dim, float(base)
        inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        self.register_buffer("inv_freq", inv.float(), persistent=False)
        self._build(max_len)

    def _build(self, n: int) -> None:
        ang = torch.arange(n, dtype=torch.float64)[:, None] * self.inv_freq.double()  # (n, D/2)
        ang = torch.cat([ang, ang], dim=-1)  # (n, D): the two halves share angles
        dev = self.inv_freq.device
        self.register_buffer("cos_cached", ang.cos().float().to(dev), persistent=False)
        self.register_buffer("sin_cached", ang.sin().float().to(dev), persistent=False)

    @staticmethod
    def rotate_half(x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([-x2, x1], dim=-1)

    def apply_rotary(self, x: Tensor, offset: int = 0) -> Tensor:
        """Rotate x (..., L, D) as positions offset..offset+L-1."""
        L = x.shape[-2]
        if offset + L > self.cos_cached.shape[0]:
            self._build(max(2 * self.cos_cached.shape[0], offset + L))
        cos = self.cos_cached[offset : offset + L].to(x.dtype)  # (L, D)
        sin = self.sin_cached[offset : offset + L].to(x.dtype)
        return x * cos + self.rotate_half(x) * sin

    def rotate(self, q: Tensor, k: Tensor, offset: int) -> tuple[Tensor, Tensor]:
        return self.apply_rotary(q, offset), self.apply_rotary(k, offset)


class ALiBiPosition(PositionScheme):
    """ALiBi (Press et al. 2022): score - slope_h * |i - j|; no parameters."""

    def __init__(self, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self._mod = ALiBi(num_heads)

    def score_mod(self) -> ScoreMod:
        return self._mod


class RelativePositionBias(PositionScheme):
    """A learned scalar per head and clipped relative distance kv - q in [-M, M] (Shaw et al.
    2018; T5 without log buckets). Parameter ``table`` (H, 2M + 1)."""

    def __init__(self, num_heads: int, max_distance: int = 128, init_std: float = 0.02):
        super().__init__()
        if max_distance < 1:
            raise ValueError(f"max_distance must be >= 1, got {max_distance}")
        self.num_heads, self.max_distance = num_heads, max_distance
        self.table = nn.Parameter(torch.randn(num_heads, 2 * max_distance + 1) * init_std)

    def score_mod(self) -> ScoreMod:
        return RelativeBias(self.table)


def skew(rel_logits: Tensor, S: int) -> Tensor:
    """The Music Transformer's skewing: from (..., L, W) logits indexed by relative distance to
    (..., L, S) logits indexed by key position, with no gather and O(L*W) memory.

    Column c of ``rel_logits`` holds distance r = c - (S - 1) (so W = S covers the causal
    distances -(S-1)..0 and W = 2S - 1 all of them); query i sits at absolute position
    i + S - L (bottom-right alignment, as with a KV cache). Output [i, j] = rel_logits[i, j - (i
    + S - L) + S - 1]. For W = S the entries with j > i + S - L (future keys) are not meaningful.
    """
    *lead, L, W = rel_logits.shape
    if W < S or L > S:
        raise ValueError(f"skew needs L <= S <= W, got L={L}, S={S}, W={W}")
    x = nn.functional.pad(rel_logits, (1, 0))  # (..., L, W + 1): one zero column on the left
    x = x.reshape(*lead, L * (W + 1))[..., L:]  # dropping L entries shifts row i by L - i
    return x.reshape(*lead, L, W)[..., :S]


class MusicRelativeAttention(PositionScheme):
    """Relative attention of Huang et al. 2018: logits = (Q K^T + S_rel) / sqrt(D) with
    S_rel[i, j] = q_i . E_r[h, j - i], one learned embedding per head and distance.

    Parameter ``rel`` (H, W, D): W = max_len distances -(max_len-1)..0 when ``causal`` (as in the
    paper), else 2 * max_len - 1 distances; longer distances use the last embedding (clipping).
    For causal schemes the future entries of S_rel are set to 0 (the causal mask removes them).
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        max_len: int = 1024,
        causal: bool = True,
        init_std: float = 0.02,
    ):
        super().__init__()
        self.num_heads, self.head_dim, self.max_len, self.causal = (
            num_heads,
            head_dim,
            max_len,
            causal,
        )
        W = max_len if causal else 2 * max_len - 1
        self.rel = nn.Parameter(torch.randn(num_heads, W, head_dim) * init_std)

    def distance_index(self, S: int, device=None) -> Tensor:
        """Rows of ``rel`` for the distances skew() expects: (S,) causal or (2S - 1,)."""
        W = S if self.causal else 2 * S - 1
        r = torch.arange(W, device=device) - (S - 1)
        hi = 0 if self.causal else self.max_len - 1
        return r.clamp(-(self.max_len - 1), hi) + (self.max_len - 1)

    def attn_bias(self, q: Tensor, S: int, offset: int, scale: float) -> Tensor:
        B, H, L, D = q.shape
        if offset != S - L:
            raise ValueError(
                f"relative attention expects S = offset + L, got S={S}, offset={offset}, L={L}"
            )
        er = self.rel[:, self.distance_index(S, q.device)].to(q.dtype)  # (H, W, D)
        s_rel = skew(torch.matmul(q, er.transpose(-1, -2)), S)  # (B, H, L, W) -> (B, H, L, S)
        if self.causal and L > 1:
            qpos = torch.arange(offset, offset + L, device=q.device)[:, None]
            s_rel = s_rel.masked_fill(torch.arange(S, device=q.device) > qpos, 0.0)
        return s_rel * scale


POSITION_KINDS = ("rope", "alibi", "relative", "music")


def build_position(
    kind: str | PositionScheme | None,
    *,
    num_heads: int,
    head_dim: int,
    max_len: int = 2048,
    causal: bool = True,
) -> PositionScheme | None:
    """A scheme from its name ('rope', 'alibi', 'relative', 'music'); instances pass through."""
    if kind is None or isinstance(kind, PositionScheme):
        return kind
    if kind == "rope":
        return RotaryEmbedding(head_dim, max_len=max_len)
    if kind == "alibi":
        return ALiBiPosition(num_heads)
    if kind == "relative":
        return RelativePositionBias(num_heads, max_distance=min(max_len, 128))
    if kind == "music":
        return MusicRelativeAttention(num_heads, head_dim, max_len=max_len, causal=causal)
    raise ValueError(f"pos must be None, a PositionScheme or one of {POSITION_KINDS}, got {kind!r}")
