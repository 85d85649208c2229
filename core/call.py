"""What an attention backend is asked to do, beside q, k and v.

``attention()`` (``core/attention.py``) validates its arguments and describes the call as one
``AttentionCall``; every backend in ``core/backends`` reads it. It lives in its own module so
that the backends and ``attention.py`` both import it, and ``attention.py`` can import the
backends plainly (no import loop).

Shape letters as in ``core/attention.py``: B batch, H heads, L/S query/key length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .masks import Mask, combine
from .scores import ScoreMod

__all__ = ["AttentionCall", "expand_kv"]


@dataclass
class AttentionCall:
    """Everything a backend needs beside q, k, v (already validated and 4-D)."""

    attn_mask: Tensor | None  # bool (True = attend) or additive float, broadcastable to (B,H,L,S)
    mask: Mask | None  # mask spec, is_causal folded in
    score_mod: ScoreMod | None
    scale: float
    dropout_p: float
    groups: int  # query heads per key/value head (GQA); 1 for ordinary attention
    need_weights: bool
    need_lse: bool

    def dense_mask(
        self,
        B: int,
        H: int,
        L: int,
        S: int,
        device: torch.device | str,
        dtype: torch.dtype,
        q_range: tuple[int, int] | None = None,
        kv_range: tuple[int, int] | None = None,
    ) -> Tensor | None:
        """The mask spec, the tensor mask and any additive score modifier folded into one dense
        tensor (``masks.combine``): bool if all are boolean, else additive float (-inf where
        masked); None when the call has none of them.

        ``q_range``/``kv_range`` restrict it to rows [q0, q1) and columns [k0, k1) (the tiled
        backend asks for one block of rows and keys at a time).
        """
        q0, q1 = q_range or (0, L)
        k0, k1 = kv_range or (0, S)
        m = self.attn_mask
        if m is not None and (q_range or kv_range):
            m = m[..., k0:k1] if m.shape[-2] == 1 else m[..., q0:q1, k0:k1]
        spec = bias = None
        if self.mask is not None:
            spec = self.mask.dense(
                L,
                S,
                batch=B if self.mask.batch_size else None,
                heads=H if self.mask.num_heads else None,
                device=device,
                q_range=q_range,
                kv_range=kv_range,
            )
        if self.score_mod is not None:
            if not self.score_mod.additive:
                raise ValueError(
                    f"{self.score_mod.describe()} is not additive: use the 'math' "
                    "or 'tiled' backend"
                )
            bias = self.score_mod.dense_bias(
                L, S, heads=H, device=device, dtype=dtype, q_range=q_range, kv_range=kv_range
            )
        return combine(m, spec, bias)

    @property
    def is_plain_causal(self) -> bool:
        """Only a top-left causal mask: what SDPA's ``is_causal=True`` computes."""
        return (
            self.mask is not None
            and self.mask.causal_alignment == "top_left"
            and self.attn_mask is None
            and self.score_mod is None
        )


def expand_kv(k: Tensor, v: Tensor, groups: int) -> tuple[Tensor, Tensor]:
    """Repeat key/value heads for grouped-query attention: (B, Hk, S, D) -> (B, Hk*g, S, D)."""
    if groups == 1:
        return k, v
    return k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
