"""Exact attention weights, cheaply: what ``core.capture`` records with.

Two ways to the weights softmax(q k^T * scale + bias) of one call, both equal to the math
backend's (``core/backends/math.py``) to float rounding:

* ``explicit_attention``: materialised -- one matmul for the scores, the softmax written over
  them (outside autograd), one matmul with v; returns the output too. On CPU, at the lengths
  whose maps are looked at (L <= ~1k), this costs about what the fused kernel does.
* ``lse_weights``: from the per-row log-sum-exp a fused kernel returns (FlashAttention's
  statistics, Dao et al. 2022): exp(q k^T * scale + bias - lse), one matmul and one exp, for
  any subset of heads; the output comes from the fused call.

Both fold every mask and additive bias into one dense tensor (``AttentionCall.dense_mask``), put
the scale into q, and score the g query heads that share a key head (GQA) as rows of one matmul.
Shape letters as in ``core/attention.py``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import AttentionCall, expand_kv
from .backends.math import masked_scores
from .masks import causal, to_allowed

__all__ = ["attention_call", "explicit_attention", "lse_weights"]


def attention_call(q: Tensor, k: Tensor, args: dict) -> AttentionCall:
    """The ``AttentionCall`` that ``attention(q, k, v, **args)`` describes to its backend
    (``args``: all of attention()'s keyword arguments but the return flags)."""
    mask = args["mask"]
    if args["is_causal"]:  # folded in as attention() does
        mask = causal() if mask is None else causal() & mask
    am = args["attn_mask"]
    if am is not None and am.dtype != torch.bool:
        am = am.to(q.dtype)
    scale, D = args["scale"], q.shape[-1]
    return AttentionCall(
        attn_mask=am,
        mask=mask,
        score_mod=args["score_mod"],
        # attention()'s default scale, to the last bit
        scale=float(scale) if scale is not None else 1.0 / math.sqrt(D),
        dropout_p=float(args["dropout_p"]),
        groups=q.shape[1] // k.shape[1],
        need_weights=True,
        need_lse=False,
    )


def _scores(
    q: Tensor, k: Tensor, call: AttentionCall, heads: list[int] | None = None
) -> tuple[Tensor, Tensor | None]:
    """Scaled scores with biases and masks, -inf where masked: (B, h, L, S), float32 for half
    inputs; and the dense mask applied (bool or additive, broadcastable to them), or None.

    The math backend's ``masked_scores``, cheaper: the scale goes into q (L*D products, not
    L*S), the g query heads that share a key head (GQA) are rows of one matmul instead of
    repeated keys, every mask and additive bias is folded into one dense tensor
    (``AttentionCall.dense_mask``) and applied in place, and only the ``heads`` kept are scored.
    """
    B, H, L, D = q.shape
    Hk, S = k.shape[1], k.shape[2]
    idx = None if heads is None else torch.tensor([h % H for h in heads], device=q.device)
    if call.score_mod is not None and not call.score_mod.additive:
        # a modifier that needs the scores themselves (soft-capping): the math backend's way
        kx, _ = expand_kv(k, k, H // Hk)
        s = masked_scores(q, kx, call)
        m = replace(call, score_mod=None).dense_mask(B, H, L, S, q.device, q.dtype)
        return (s, m) if idx is None else (s[:, idx], m)
    m = call.dense_mask(B, H, L, S, q.device, q.dtype)  # (B'|1, H'|1, L|1, S) or None
    if idx is not None:
        q, k = q[:, idx], k[:, idx // (H // Hk)]
        if m is not None and m.dim() >= 3 and m.shape[-3] == H:
            m = m.index_select(-3, idx)
        H = Hk = len(heads)
    g = H // Hk
    qs = (q * call.scale).reshape(B, Hk, g * L, D)  # (B, H, L, D) -> (B, Hk, g*L, D)
    s = torch.matmul(qs, k.transpose(-2, -1)).view(B, H, L, S)
    if s.dtype in (torch.float16, torch.bfloat16):
        s = s.float()  # softmax statistics in float32, as in the math backend
    if m is not None and m.dtype == torch.bool:
        s.masked_fill_(~m, float("-inf"))
    elif m is not None:
        s.add_(m)
    return s, m


def explicit_attention(
    q: Tensor, k: Tensor, v: Tensor, call: AttentionCall
) -> tuple[Tensor, Tensor]:
    """The output (B, H, L, Dv) and the weights (B, H, L, S) before dropout, materialised:
    softmax of the scores, then (dropout of) the weights times v -- the math backend's
    algorithm, with ``_scores``'s savings and, outside autograd, the softmax written over the
    scores (one L x S buffer per call: on CPU, touching fresh pages costs more than the
    arithmetic). Rows with no allowed key get zero weights. Under autograd the weights are on
    the output's graph (gradient rollout reads d(output)/d(weights)).
    """
    B, H, L, _ = q.shape
    Hk, S, Dv = v.shape[1], v.shape[2], v.shape[3]
    s, m = _scores(q, k, call)
    inplace = s.device.type == "cpu" and not (torch.is_grad_enabled() and s.requires_grad)
    # the CPU kernel reads a row before writing it: out=s is exact (autograd refuses out=)
    w = torch.softmax(s, -1, out=s) if inplace else torch.softmax(s, -1)
    if m is not None:
        # softmax gives NaN rows where no key is allowed; we give zeros. Looking at the first
        # column (O(L)) finds them; NaN rows that some key was allowed in (NaN inputs) stay
        nan_rows = w[..., :1].isnan()  # (B, H, L, 1)
        if bool(nan_rows.any()):
            dead = nan_rows & ~to_allowed(m).any(-1, keepdim=True)
            w = w.masked_fill_(dead, 0.0) if inplace else w.masked_fill(dead, 0.0)
    w = w.to(q.dtype)
    p = F.dropout(w, call.dropout_p) if call.dropout_p > 0 else w
    out = torch.matmul(p.reshape(B, Hk, (H // Hk) * L, S), v)  # (B, Hk, g*L, Dv)
    return out.view(B, H, L, Dv), w


def lse_weights(
    q: Tensor, k: Tensor, lse: Tensor, call: AttentionCall, heads: list[int] | None = None
) -> Tensor:
    """The weights (B, h, L, S) from the per-row log-sum-exp of a fused call: exp(q k^T * scale
    + bias - lse), one matmul and one exp in place, rows renormalised (no softmax, no
    weights @ v)."""
    s, _ = _scores(q, k, call, heads)
    if heads is not None:
        lse = lse[:, [h % q.shape[1] for h in heads]]
    # rows with no allowed key have lse = -inf and scores all -inf: exp(-inf - 0) = 0, not NaN
    lse = torch.where(torch.isfinite(lse), lse, 0.0)
    w = s.sub_(lse.unsqueeze(-1).to(s.dtype)).exp_()
    # the fused kernel's float32 LSE leaves rows ~1e-5 off summing to 1: renormalise (rows
    # with no allowed key sum to 0 and stay 0)
    return w.div_(w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)).to(q.dtype)
