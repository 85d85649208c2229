"""Score modifiers: functions applied to the scaled scores q.k/sqrt(d) before the softmax.

Written in the spirit of FlexAttention's ``score_mod(score, b, h, q_idx, kv_idx)`` (He et al.,
2024). Additive modifiers (ALiBi, relative position bias) can also be materialised as a dense bias
so that fused kernels take them as an additive ``attn_mask``; non-additive ones (soft-capping, as
in Gemma 2) need a backend that sees the scores (``math`` or ``tiled``).

References: ALiBi — Press et al. 2022, "Train Short, Test Long"; relative position bias —
Shaw et al. 2018 / Raffel et al. 2020 (T5); soft-capping — Gemma 2 report, 2024.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["ScoreMod", "ALiBi", "RelativeBias", "SoftCap", "compose", "alibi_slopes"]


class ScoreMod:
    """Base class. ``additive`` modifiers implement ``bias``; others implement ``__call__``."""

    additive: bool = False
    num_heads: int | None = None

    def bias(self, b: Tensor, h: Tensor, q: Tensor, kv: Tensor, L: int, S: int) -> Tensor:
        raise NotImplementedError

    def __call__(self, score: Tensor, b, h, q, kv, L: int, S: int) -> Tensor:
        return score + self.bias(b, h, q, kv, L, S).to(score.dtype)

    def dense_bias(
        self,
        L: int,
        S: int,
        *,
        heads: int,
        device=None,
        dtype=torch.float32,
        q_range=None,
        kv_range=None,
    ) -> Tensor:
        """The additive bias as a (1, H, L, S) tensor (only for ``additive`` modifiers)."""
        if not self.additive:
            raise TypeError(f"{self.describe()} is not additive: it has no dense bias")
        q0, q1 = q_range or (0, L)
        k0, k1 = kv_range or (0, S)
        b = torch.zeros(1, 1, 1, 1, dtype=torch.long, device=device)
        h = torch.arange(heads, device=device).view(1, -1, 1, 1)
        q = torch.arange(q0, q1, device=device).view(1, 1, -1, 1)
        kv = torch.arange(k0, k1, device=device).view(1, 1, 1, -1)
        out = self.bias(b, h, q, kv, L, S).to(dtype)
        return out.expand(1, heads, q1 - q0, k1 - k0)

    def describe(self) -> str:
        return type(self).__name__


def alibi_slopes(num_heads: int) -> Tensor:
    """The geometric slopes of ALiBi (Press et al. 2022), for any number of heads."""

    def pow2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        s = pow2(num_heads)
    else:  # the paper's recipe for head counts that are not a power of two
        n = 2 ** math.floor(math.log2(num_heads))
        s = pow2(n) + pow2(2 * n)[0::2][: num_heads - n]
    return torch.tensor(s, dtype=torch.float32)


class ALiBi(ScoreMod):
    """score - slope_h * |i - j| with positions aligned bottom-right (so that decoding with a KV
    cache, L=1 and S=t, sees the same biases as the full forward)."""

    additive = True

    def __init__(self, num_heads: int, slopes: Tensor | None = None, align: str = "bottom_right"):
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        self.num_heads = num_heads
        self.slopes = alibi_slopes(num_heads) if slopes is None else slopes.float()
        if self.slopes.shape != (num_heads,):
            raise ValueError(
                f"slopes must have shape ({num_heads},), got {tuple(self.slopes.shape)}"
            )
        self.align = align

    def bias(self, b, h, q, kv, L, S):
        off = S - L if self.align == "bottom_right" else 0
        slope = self.slopes.to(q.device)[h]
        return -slope * (q + off - kv).abs()

    def describe(self) -> str:
        return f"alibi({self.num_heads} heads)"


class RelativeBias(ScoreMod):
    """A learned bias per head and clipped relative distance (Shaw et al. 2018; T5 without
    buckets): ``table[h, clip(kv - q, -M, M) + M]`` with ``table`` of shape (H, 2M + 1)."""

    additive = True

    def __init__(self, table: Tensor, align: str = "bottom_right"):
        if table.dim() != 2 or table.shape[1] % 2 != 1:
            raise ValueError("table must have shape (num_heads, 2 * max_distance + 1)")
        self.table = table
        self.num_heads = table.shape[0]
        self.max_distance = (table.shape[1] - 1) // 2
        self.align = align

    def bias(self, b, h, q, kv, L, S):
        off = S - L if self.align == "bottom_right" else 0
        rel = (kv - q - off).clamp(-self.max_distance, self.max_distance) + self.max_distance
        return self.table[h, rel]

    def describe(self) -> str:
        return f"relative_bias(±{self.max_distance})"


class SoftCap(ScoreMod):
    """cap * tanh(score / cap): bounds the logits (Gemma 2)."""

    def __init__(self, cap: float):
        if not cap > 0:
            raise ValueError(f"cap must be > 0, got {cap}")
        self.cap = float(cap)

    def __call__(self, score, b, h, q, kv, L, S):
        return self.cap * torch.tanh(score / self.cap)

    def describe(self) -> str:
        return f"softcap({self.cap:g})"


class _Compose(ScoreMod):
    def __init__(self, mods: tuple[ScoreMod, ...]):
        self.mods = mods
        self.additive = all(m.additive for m in mods)
        heads = {m.num_heads for m in mods if m.num_heads is not None}
        if len(heads) > 1:
            raise ValueError(f"composed score mods disagree on heads: {sorted(heads)}")
        self.num_heads = heads.pop() if heads else None

    def bias(self, b, h, q, kv, L, S):
        return sum(m.bias(b, h, q, kv, L, S) for m in self.mods)

    def __call__(self, score, b, h, q, kv, L, S):
        for m in self.mods:
            score = m(score, b, h, q, kv, L, S)
        return score

    def describe(self) -> str:
        return " then ".join(m.describe() for m in self.mods)


def compose(*mods: ScoreMod) -> ScoreMod:
    """Apply modifiers left to right."""
    if not mods or not all(isinstance(m, ScoreMod) for m in mods):
        raise TypeError("compose takes one or more ScoreMod objects")
    return mods[0] if len(mods) == 1 else _Compose(mods)
