"""``MultiheadAttention``: a drop-in replacement for ``torch.nn.MultiheadAttention``.

Same constructor (``embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn, kdim, vdim,
batch_first, device, dtype``), same parameters and state-dict keys (``in_proj_weight``,
``in_proj_bias``, ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when kdim/vdim differ,
``bias_k``, ``bias_v``, ``out_proj.weight``, ``out_proj.bias``), same
``forward(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights,
is_causal)`` returning ``(output, weights or None)`` -- this is the one attnlab module that
returns a tuple, because that is the torch API. It follows
``torch.nn.functional.multi_head_attention_forward`` and computes with ``attnlab.core.attention``
(fused kernels when ``need_weights=False``).

Like ``MultiHeadAttention`` it calls ``_observer`` when ``core.capture`` sets one, so
``record_attention`` records its per-head weights (self-attention when ``query is key``, torch's
own test, else cross) and ``ablate_heads`` edits its heads, before ``out_proj``.

Differences, on purpose:
  * a query whose every key is masked gets a zero output and zero weights, not NaN;
  * ``is_causal=True`` without ``attn_mask`` applies a causal mask (torch raises);
  * with dropout in training, the returned weights are those before dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import attention
from .masks import combine

__all__ = ["MultiheadAttention"]


class MultiheadAttention(nn.Module):
    """See ``torch.nn.MultiheadAttention``; the arguments and outputs are the same."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be > 0, got {embed_dim}, {num_heads}")
        if embed_dim % num_heads:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        fk = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        E = embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * E, E, **fk))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(E, E, **fk))
            self.k_proj_weight = nn.Parameter(torch.empty(E, self.kdim, **fk))
            self.v_proj_weight = nn.Parameter(torch.empty(E, self.vdim, **fk))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * E, **fk))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(E, E, bias=bias, **fk)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, E, **fk))
            self.bias_v = nn.Parameter(torch.empty(1, 1, E, **fk))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        # set by core.capture (record_attention, ablate_heads) and nothing else
        self._observer = None
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # the initialisation of torch.nn.MultiheadAttention
        if self._qkv_same_embed_dim:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            nn.init.xavier_uniform_(self.q_proj_weight)
            nn.init.xavier_uniform_(self.k_proj_weight)
            nn.init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.constant_(self.in_proj_bias, 0.0)
            nn.init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)

    def _in_proj(self, query: Tensor, key: Tensor, value: Tensor):
        E = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else b.split(E)
        if self._qkv_same_embed_dim:
            wq, wk, wv = self.in_proj_weight.split(E)
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Inputs (L, N, E) -- or (N, L, E) with ``batch_first`` -- or unbatched (L, E).

        ``key_padding_mask`` (N, S): bool True = ignore, or float added. ``attn_mask`` (L, S) or
        (N * num_heads, L, S): bool True = NOT allowed, or float added.

        Returns:
            output like ``query``; weights (N, L, S) averaged over heads, (N, H, L, S) with
            ``average_attn_weights=False``, or None when ``need_weights=False``.
        """
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        # torch's own test for self-attention (its fast path): the same tensor object
        kind = "self" if query is key else "cross"
        batched = query.dim() == 3
        if query.dim() not in (2, 3) or key.dim() != query.dim() or value.dim() != query.dim():
            raise ValueError(
                f"query, key, value must all be 2-D (unbatched) or 3-D, got shapes "
                f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
            )
        if not batched:  # (L, E) -> (1, L, E)
            query, key, value = query[None], key[None], value[None]
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask[None]
        elif not self.batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        N, L, E = query.shape
        S = key.shape[1]
        if E != self.embed_dim:
            raise ValueError(f"query has {E} features, expected embed_dim={self.embed_dim}")
        if key.shape[:2] != value.shape[:2] or key.shape[0] != N:
            raise ValueError(
                f"key {tuple(key.shape)} and value {tuple(value.shape)} must share "
                f"batch ({N}) and length"
            )
        if key.shape[-1] != self.kdim or value.shape[-1] != self.vdim:
            raise ValueError(
                f"key/value features {key.shape[-1]}/{value.shape[-1]} differ "
                f"from kdim/vdim {self.kdim}/{self.vdim}"
            )
        H, D = self.num_heads, self.head_dim
        q, k, v = self._in_proj(query, key, value)  # (N, L, E), (N, S, E), (N, S, E)
        mask = self._merge_masks(key_padding_mask, attn_mask, N, L, S, q.dtype)
        extra = 0
        if self.bias_k is not None:  # one learned key/value appended to every sequence
            k = torch.cat([k, self.bias_k.expand(N, 1, E)], dim=1)
            v = torch.cat([v, self.bias_v.expand(N, 1, E)], dim=1)
            extra += 1
        q, k, v = (t.view(N, -1, H, D).transpose(1, 2) for t in (q, k, v))  # (N, H, *, D)
        if self.add_zero_attn:  # one zero key/value per head
            k = torch.cat([k, k.new_zeros(N, H, 1, D)], dim=2)
            v = torch.cat([v, v.new_zeros(N, H, 1, D)], dim=2)
            extra += 1
        if extra and mask is not None:  # the appended keys are always allowed
            mask = F.pad(mask, (0, extra), value=True if mask.dtype == torch.bool else 0.0)
        args = dict(
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and attn_mask is None,
            scale=None,
            enable_gqa=False,
            mask=None,
            score_mod=None,
            backend="auto",
        )
        if self._observer is None:
            res = attention(q, k, v, **args, return_weights=need_weights)
            o, w = (res.output, res.weights) if need_weights else (res, None)
        else:  # core.capture records or ablates this call (same protocol as MultiHeadAttention)
            o = self._observer(self, q, k, v, args, kind)
            w = None
            if need_weights:  # the weights of the unedited call, before dropout
                w = attention(q, k, v, **{**args, "dropout_p": 0.0}, return_weights=True).weights
        o = self.out_proj(o.transpose(1, 2).reshape(N, L, E))  # (N, H, L, D) -> (N, L, E)
        if w is not None and average_attn_weights:
            w = w.mean(dim=1)
        if not batched:
            return o[0], (w[0] if w is not None else None)
        if not self.batch_first:
            o = o.transpose(0, 1)
        return o, w

    def _merge_masks(self, kpm, am, N, L, S, dtype) -> Tensor | None:
        """One mask broadcastable to (N, H, L, S): bool (True = attend) if both masks are bool,
        else additive float (-inf where a bool mask says "ignore")."""
        parts = []
        if kpm is not None:
            if kpm.shape != (N, S):
                raise ValueError(
                    f"key_padding_mask must have shape ({N}, {S}), got {tuple(kpm.shape)}"
                )
            parts.append(kpm.view(N, 1, 1, S))
        if am is not None:
            if am.dim() == 2:
                if am.shape != (L, S):
                    raise ValueError(
                        f"2-D attn_mask must have shape ({L}, {S}), got {tuple(am.shape)}"
                    )
                am = am.view(1, 1, L, S)
            elif am.dim() == 3:
                if am.shape != (N * self.num_heads, L, S):
                    raise ValueError(
                        f"3-D attn_mask must have shape ({N * self.num_heads}, {L}, "
                        f"{S}), got {tuple(am.shape)}"
                    )
                am = am.view(N, self.num_heads, L, S)
            else:
                raise ValueError(f"attn_mask must be 2-D or 3-D, got {am.dim()}-D")
            parts.append(am)
        for p in parts:
            if not (p.dtype == torch.bool or p.dtype.is_floating_point):
                raise TypeError(f"masks must be bool or float, got {p.dtype}")
        # torch's bool masks say True = ignore; ours say True = attend
        return combine(*(~p if p.dtype == torch.bool else p for p in parts), dtype=dtype)
