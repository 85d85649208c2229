"""The `math` backend: materialised softmax(Q K^T * scale + bias) V (Vaswani et al. 2017).

The readable reference of the package and the one path that returns weights. Memory is
O(B*H*L*S). Fully masked rows give zero weights and a zero output (a "safe" softmax).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..call import AttentionCall, expand_kv
from ..masks import combine, merge_attn_masks


def masked_scores(
    q: Tensor,
    k: Tensor,
    call: AttentionCall,
    q_offset: int = 0,
    k_offset: int = 0,
    L: int | None = None,
    S: int | None = None,
) -> Tensor:
    """Scaled scores with score modifiers and masks applied, -inf where masked: (B, H, Lq, Sk).

    ``q``/``k`` may be a slice of the full sequences starting at ``q_offset``/``k_offset``; L and
    S are the full lengths (masks aligned bottom-right need them).
    """
    B, H, Lq, _ = q.shape
    Sk = k.shape[2]
    L = Lq if L is None else L
    S = Sk if S is None else S
    s = torch.matmul(q, k.transpose(-2, -1)) * call.scale  # (B, H, Lq, Sk)
    if s.dtype in (torch.float16, torch.bfloat16):
        s = s.float()  # softmax statistics in float32
    dev = q.device
    qi = torch.arange(q_offset, q_offset + Lq, device=dev).view(1, 1, -1, 1)
    ki = torch.arange(k_offset, k_offset + Sk, device=dev).view(1, 1, 1, -1)
    if call.score_mod is not None:
        b = torch.arange(B, device=dev).view(-1, 1, 1, 1)
        h = torch.arange(H, device=dev).view(1, -1, 1, 1)
        s = call.score_mod(s, b, h, qi, ki, L, S)
    m = call.attn_mask
    if m is not None:
        m = (
            m[..., q_offset : q_offset + Lq, k_offset : k_offset + Sk]
            if m.shape[-2] != 1
            else m[..., k_offset : k_offset + Sk]
        )
        s = combine(s, m, dtype=s.dtype)  # scores are a float part: -inf where m masks
    if call.mask is not None:
        allowed = call.mask.dense(
            L,
            S,
            batch=B if call.mask.batch_size else None,
            heads=H if call.mask.num_heads else None,
            device=dev,
            q_range=(q_offset, q_offset + Lq),
            kv_range=(k_offset, k_offset + Sk),
        )
        s = merge_attn_masks(s, allowed)
    return s


def safe_softmax(s: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax over the last dim that gives zeros (not NaN) for rows with no allowed key.

    Returns (weights, lse) with lse = -inf for such rows.
    """
    mx = s.amax(-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    p = torch.exp(s - mx)
    den = p.sum(-1, keepdim=True)
    w = p / den.clamp_min(torch.finfo(p.dtype).tiny)
    lse = (mx + torch.log(den)).squeeze(-1)
    return w, lse


def forward(q: Tensor, k: Tensor, v: Tensor, call: AttentionCall):
    k, v = expand_kv(k, v, call.groups)
    s = masked_scores(q, k, call)
    w, lse = safe_softmax(s)
    w = w.to(q.dtype)
    p = F.dropout(w, call.dropout_p) if call.dropout_p > 0 else w
    out = torch.matmul(p, v)  # (B, H, L, Dv)
    return out, (w if call.need_weights else None), (lse if call.need_lse else None)
