"""Key/value caches for incremental decoding.

A ``KVCache`` holds one attention layer's keys and values (B, Hk, S, D). For self-attention the
new keys are appended at every step; for cross-attention the projected context is stored on the
first call and reused (``static``), so the encoder output is projected once per sequence.
Positional schemes read ``length`` as the position offset of the new queries.

Following the cache of x-transformers / Hugging Face ``DynamicCache``: concatenation, no
pre-allocation (simple and exact; fine for the sequence lengths of the demos).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["KVCache", "DecoderLayerCache"]


class KVCache:
    """Keys and values of one attention layer: ``k`` (B, Hk, S, D), ``v`` (B, Hk, S, Dv)."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    @property
    def length(self) -> int:
        """Number of cached positions (the offset of the next query)."""
        return 0 if self.k is None else self.k.shape[-2]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add the new keys/values (B, Hk, L, D) and return all of them (B, Hk, S + L, D)."""
        if self.k is None:
            self.k, self.v = k, v
        else:
            if k.shape[:2] != self.k.shape[:2] or k.shape[-1] != self.k.shape[-1]:
                raise ValueError(f"kv_cache holds keys of shape {tuple(self.k.shape)}, cannot "
                                 f"append keys of shape {tuple(k.shape)}")
            self.k = torch.cat([self.k, k], dim=-2)
            self.v = torch.cat([self.v, v], dim=-2)
        return self.k, self.v

    def set(self, k: Tensor, v: Tensor) -> None:
        """Store static keys/values (cross-attention)."""
        self.k, self.v = k, v

    def reset(self) -> None:
        self.k = self.v = None

    def __repr__(self) -> str:
        return f"KVCache(length={self.length})"


@dataclass
class DecoderLayerCache:
    """The two caches of a decoder block: its causal self-attention and its cross-attention."""

    self_kv: KVCache = field(default_factory=KVCache)
    cross_kv: KVCache = field(default_factory=KVCache)

    @property
    def length(self) -> int:
        return self.self_kv.length
