"""``MultiHeadAttention``: the attention layer every attnlab model uses.

Multi-head attention of Vaswani et al. 2017 with grouped-query / multi-query heads (Ainslie et al.
2023; Shazeer 2019), self- and cross-attention, causal masking, mask specs, positional schemes
acting inside attention (RoPE, ALiBi, relative biases; ``core.positional``) and a KV cache for
incremental decoding (``core.kv_cache``).

Fast path and observability: ``forward`` calls ``attention(..., backend='auto')`` -- torch's
fused kernels when nothing else is asked -- and always returns a tensor. Its only cost for being
observable is one attribute check, ``if self._observer is None``; ``core.capture`` sets that
attribute on the modules it records or edits (and only on those) and clears it afterwards.

Submodule names are state-dict keys and stay stable:
  self-attention:  ``qkv`` (one fused Linear, features ordered [q heads | k heads | v heads],
                   timm's layout when Hk = H), ``proj``;
  cross-attention: ``q``, ``kv`` (fused; or ``k`` and ``v`` when kdim != vdim), ``proj``;
  positional scheme with parameters: ``pos``;
  biases that differ per projection (Whisper's key projection has none): the fused Linear has
  no bias and the others are parameters ``q_bias`` / ``k_bias`` / ``v_bias`` (BEiT's layout).
Checkpoints with separate q/k/v projections (Hugging Face BERT, Whisper) load through
``load_qkv``, which writes them into the fused layout.

Shape letters: B batch, H query heads, Hk key/value heads, L queries, S keys, D head dim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import attention, check_inputs_finite, check_output_finite
from .kv_cache import KVCache
from .masks import Mask, merge_attn_masks
from .masks import causal as causal_mask
from .positional import PositionScheme, build_position

__all__ = ["MultiHeadAttention"]


def _shapes(context) -> str:
    if isinstance(context, (tuple, list)):
        return ", ".join(str(tuple(t.shape)) for t in context)
    return str(tuple(context.shape))


class MultiHeadAttention(nn.Module):
    """Multi-head attention, self or cross.

    Args:
        dim: model width (input and output features).
        num_heads: query heads H.
        num_kv_heads: key/value heads Hk (divides H): H = GQA off, 1 = multi-query.
        head_dim: per-head width D (default dim // num_heads).
        qkv_bias: bias in the input projections: one flag for all, or one per projection
            ``(q, k, v)`` (Whisper: ``(True, False, True)``).
        proj_bias: bias in the output projection.
        scale: score scale (default head_dim ** -0.5).
        dropout: dropout on the attention weights and on the output (training only).
        causal: causal self-attention (aligned bottom-right while decoding with a cache).
        mask: a mask spec applied at every call (AND-ed with the call's ``mask``).
        pos: positional scheme acting inside attention: 'rope', 'alibi', 'relative', 'music' or
            a ``PositionScheme`` (self-attention only).
        max_len: longest sequence the positional scheme must cover.
        backend: attention backend ('auto' picks torch's fused kernels when it can).
        cross: build a cross-attention layer (keys/values from ``context``).
        kdim, vdim: feature sizes of the context for keys and values (imply ``cross``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        qkv_bias: bool | Sequence[bool] = True,
        proj_bias: bool = True,
        scale: float | None = None,
        dropout: float = 0.0,
        causal: bool = False,
        mask: Mask | None = None,
        pos: str | PositionScheme | None = None,
        max_len: int = 2048,
        backend: str = "auto",
        cross: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
    ):
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(
                    f"dim ({dim}) must be divisible by num_heads ({num_heads}), or give head_dim"
                )
            head_dim = dim // num_heads
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_kv_heads < 1 or num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads ({num_kv_heads}) must divide num_heads ({num_heads})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if mask is not None and not isinstance(mask, Mask):
            raise TypeError(f"mask must be a core.masks.Mask, got {type(mask).__name__}")
        cross = cross or kdim is not None or vdim is not None
        if cross and pos is not None:
            raise ValueError("pos (positional scheme) applies to self-attention only")
        self.dim, self.num_heads, self.num_kv_heads, self.head_dim = (
            dim,
            num_heads,
            num_kv_heads,
            head_dim,
        )
        self.dropout, self.causal, self.mask, self.backend, self.cross = (
            dropout,
            causal,
            mask,
            backend,
            cross,
        )
        if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        self.scale = head_dim**-0.5 if scale is None else float(scale)
        qb, kb, vb = _bias_flags(qkv_bias)
        # the fused projection's bias parts ((name, size), ...) when it has none of its own
        self.qkv_bias, self._loose = (qb, kb, vb), ()
        inner, kv_inner = num_heads * head_dim, num_kv_heads * head_dim
        if cross:
            kdim = dim if kdim is None else kdim
            vdim = kdim if vdim is None else vdim
            self.kdim, self.vdim = kdim, vdim
            self.q = nn.Linear(dim, inner, bias=qb)
            if kdim == vdim:
                self.kv = nn.Linear(kdim, 2 * kv_inner, bias=kb and vb)
                if kb != vb:
                    self._loose_bias((("k_bias", kb, kv_inner), ("v_bias", vb, kv_inner)))
            else:
                self.k = nn.Linear(kdim, kv_inner, bias=kb)
                self.v = nn.Linear(vdim, kv_inner, bias=vb)
        else:
            self.kdim = self.vdim = dim
            same = qb == kb == vb
            self.qkv = nn.Linear(dim, inner + 2 * kv_inner, bias=qb and same)
            if not same:
                self._loose_bias(
                    (("q_bias", qb, inner), ("k_bias", kb, kv_inner), ("v_bias", vb, kv_inner))
                )
        self.proj = nn.Linear(inner, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(dropout)
        self.pos = build_position(
            pos, num_heads=num_heads, head_dim=head_dim, max_len=max_len, causal=causal
        )
        # set by core.capture (record_attention, ablate_heads) and nothing else
        self._observer = None

    # -- projections ---------------------------------------------------------------------------
    def _loose_bias(self, parts: Sequence[tuple[str, bool, int]]) -> None:
        """Bias parameters ``(name, on, size)`` of the projections a fused Linear without a bias
        holds; the parts that are off are zeros in its bias."""
        self._loose = tuple((name, n) for name, _, n in parts)
        for name, on, n in parts:
            if on:
                self.register_parameter(name, nn.Parameter(torch.zeros(n)))

    def _in_proj(self, linear: nn.Linear, x: Tensor) -> Tensor:
        """``linear(x)``; with loose biases, the fused bias assembled from them (zeros where a
        projection has none)."""
        if not self._loose:
            return linear(x)
        w = linear.weight
        bias = torch.cat(
            [
                getattr(self, name) if hasattr(self, name) else w.new_zeros(n)
                for name, n in self._loose
            ]
        )
        return F.linear(x, w, bias)

    @torch.no_grad()
    def load_qkv(
        self,
        q_weight: Tensor,
        k_weight: Tensor,
        v_weight: Tensor,
        q_bias: Tensor | None = None,
        k_bias: Tensor | None = None,
        v_bias: Tensor | None = None,
    ) -> None:
        """Copy separate q/k/v projections (``nn.Linear`` layout: weight (out, in)) into this
        module's fused or split layout, e.g. a Hugging Face BERT layer's
        ``attention.self.{query,key,value}``.

        A bias is required exactly where this module has one (``qkv_bias``); shapes are checked.
        """
        inner, kv_inner = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        parts = (
            ("q", q_weight, q_bias, (inner, self.dim)),
            ("k", k_weight, k_bias, (kv_inner, self.kdim)),
            ("v", v_weight, v_bias, (kv_inner, self.vdim)),
        )
        for (name, w, b, shape), has_bias in zip(parts, self.qkv_bias, strict=True):
            if not isinstance(w, Tensor) or tuple(w.shape) != shape:
                got = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
                raise ValueError(f"{name}_weight must have shape {shape}, got {got}")
            if has_bias != (b is not None):
                raise ValueError(
                    f"{name}_bias: this module was built with qkv_bias="
                    f"{self.qkv_bias}; give a bias exactly where it has one"
                )
            if b is not None and tuple(b.shape) != (shape[0],):
                raise ValueError(f"{name}_bias must have shape ({shape[0]},), got {tuple(b.shape)}")
        (_, wq, bq, _), (_, wk, bk, _), (_, wv, bv, _) = parts
        if self.cross:
            fused = [(self.q, [(wq, bq, "q_bias")])]
            if hasattr(self, "kv"):
                fused.append((self.kv, [(wk, bk, "k_bias"), (wv, bv, "v_bias")]))
            else:
                fused += [(self.k, [(wk, bk, "k_bias")]), (self.v, [(wv, bv, "v_bias")])]
        else:
            fused = [(self.qkv, [(wq, bq, "q_bias"), (wk, bk, "k_bias"), (wv, bv, "v_bias")])]
        for linear, pieces in fused:
            linear.weight.copy_(torch.cat([w for w, _, _ in pieces]))
            if linear.bias is not None:
                linear.bias.copy_(torch.cat([b for _, b, _ in pieces]))
            else:
                for _, b, name in pieces:
                    if b is not None:
                        getattr(self, name).copy_(b)

    def _heads(self, t: Tensor, n: int) -> Tensor:
        B, L, _ = t.shape
        return t.view(B, L, n, self.head_dim).transpose(1, 2)  # (B, L, n*D) -> (B, n, L, D)

    def project_kv(self, context: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Keys and values of a cross-attention context (B, S, kdim) -- or a pair (key input
        (B, S, kdim), value input (B, S, vdim)) -- each (B, Hk, S, D)."""
        kin, vin = context if isinstance(context, (tuple, list)) else (context, context)
        if (
            kin.dim() != 3
            or vin.dim() != 3
            or kin.shape[-1] != self.kdim
            or vin.shape[-1] != self.vdim
            or kin.shape[:2] != vin.shape[:2]
        ):
            raise ValueError(
                f"context must be (B, S, {self.kdim})"
                + ("" if self.kdim == self.vdim else f" keys and (B, S, {self.vdim}) values")
                + f", got {_shapes(context)}"
            )
        if hasattr(self, "kv"):
            k, v = self._in_proj(self.kv, kin).chunk(2, dim=-1)
        else:
            k, v = self.k(kin), self.v(vin)
        return self._heads(k, self.num_kv_heads), self._heads(v, self.num_kv_heads)

    def project(
        self, x: Tensor, context: Tensor | None = None, kv_cache: KVCache | None = None
    ) -> tuple[Tensor, Tensor, Tensor, int]:
        """q (B, H, L, D), k, v (B, Hk, S, D) after positional rotation and the cache, and the
        position offset of the queries. ``forward`` uses it; so do tests and capture."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (B, L, {self.dim}), got {tuple(x.shape)}")
        H, Hk = self.num_heads, self.num_kv_heads
        if self.cross:
            if context is None:
                raise ValueError("this is a cross-attention layer: pass context (B, S, kdim)")
            q = self._heads(self.q(x), H)
            kin = context[0] if isinstance(context, (tuple, list)) else context
            if kin.shape[0] != x.shape[0]:
                raise ValueError(f"context has batch {kin.shape[0]}, x has {x.shape[0]}")
            if kv_cache is not None and kv_cache.k is not None:
                k, v = kv_cache.k, kv_cache.v  # the context was projected on the first step
            else:
                k, v = self.project_kv(context)
                if kv_cache is not None:
                    kv_cache.set(k, v)
            return q, k, v, 0
        if context is not None:
            raise ValueError(
                "this is a self-attention layer: build it with cross=True (or "
                "kdim/vdim) to attend to a context"
            )
        B, L, _ = x.shape
        qkv = self._in_proj(self.qkv, x).view(B, L, H + 2 * Hk, self.head_dim).transpose(1, 2)
        q, k, v = qkv.split([H, Hk, Hk], dim=1)  # (B, H, L, D), (B, Hk, L, D) x 2
        offset = 0 if kv_cache is None else kv_cache.length
        if self.pos is not None:
            q, k = self.pos.rotate(q, k, offset)
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)
        return q, k, v, offset

    def attention_args(
        self, q: Tensor, S: int, offset: int, mask: Mask | None, attn_mask: Tensor | None
    ) -> dict[str, Any]:
        """Keyword arguments of ``core.attention`` for this call (masks, score modifier, bias)."""
        L = q.shape[2]
        if self.mask is not None:
            mask = self.mask if mask is None else self.mask & mask
        is_causal = False
        if self.causal:
            if L == S:
                is_causal = True  # SDPA's top-left causal equals bottom-right when L == S
            elif L > 1:  # decoding a chunk: the last query sees every key
                c = causal_mask("bottom_right")
                mask = c if mask is None else c & mask
        score_mod = None
        if self.pos is not None:
            score_mod = self.pos.score_mod()
            attn_mask = merge_attn_masks(attn_mask, self.pos.attn_bias(q, S, offset, self.scale))
        return dict(
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
            scale=self.scale,
            enable_gqa=self.num_kv_heads != self.num_heads,
            mask=mask,
            score_mod=score_mod,
            backend=self.backend,
        )

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        mask: Mask | None = None,
        attn_mask: Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> Tensor:
        """Attend from x (B, L, dim) to itself or to ``context`` (B, S, kdim); when kdim != vdim
        give ``context`` as a pair (key input (B, S, kdim), value input (B, S, vdim)).

        Args:
            mask: a mask spec for this call (e.g. ``key_padding(lengths)``).
            attn_mask: bool (True = attend) or additive float, broadcastable to (B, H, L, S).
            kv_cache: a ``KVCache``; self-attention appends the new keys to it, cross-attention
                projects ``context`` on the first call and reuses it.

        Returns:
            (B, L, dim).
        """
        cached = kv_cache is not None and kv_cache.k is not None  # before this step's append
        q, k, v, offset = self.project(x, context, kv_cache)
        args = self.attention_args(q, k.shape[2], offset, mask, attn_mask)
        if self._observer is None and kv_cache is not None and _checks_finite(q):
            # decoding: the cached keys were checked when they were appended; check only what
            # is new (reading the whole cache each step cost ~20 % of a step at 1024 tokens)
            new = slice(0, 0) if self.cross and cached else slice(0 if self.cross else offset, None)
            check_inputs_finite(q, k[:, :, new], v[:, :, new])
            o = attention(q, k, v, check_finite=False, **args)
            check_output_finite(o)
        elif self._observer is None:
            o = attention(q, k, v, **args)
        else:
            o = self._observer(self, q, k, v, args)
        B, H, L, D = o.shape
        o = o.transpose(1, 2).reshape(B, L, H * D)  # (B, H, L, D) -> (B, L, H*D)
        return self.proj_drop(self.proj(o))

    def extra_repr(self) -> str:
        s = f"dim={self.dim}, num_heads={self.num_heads}, head_dim={self.head_dim}"
        if self.num_kv_heads != self.num_heads:
            s += f", num_kv_heads={self.num_kv_heads}"
        if self.cross:
            s += ", cross=True"
        if self.causal:
            s += ", causal=True"
        if self.mask is not None:
            s += f", mask={self.mask.describe()}"
        if self.qkv_bias != (True, True, True):
            s += f", qkv_bias={self.qkv_bias}"
        return s


def _checks_finite(q: Tensor) -> bool:
    """``attention``'s default for ``check_finite``."""
    return q.device.type == "cpu" and not torch.compiler.is_compiling()


def _bias_flags(qkv_bias: bool | Sequence[bool]) -> tuple[bool, bool, bool]:
    if isinstance(qkv_bias, bool):
        return qkv_bias, qkv_bias, qkv_bias
    flags = tuple(qkv_bias) if isinstance(qkv_bias, Sequence) else ()
    if len(flags) != 3 or not all(isinstance(f, bool) for f in flags):
        raise ValueError(f"qkv_bias must be a bool or three bools (q, k, v), got {qkv_bias!r}")
    return flags
