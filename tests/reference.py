"""Naive float64 attention that imports nothing from attnlab, so that a bug shared by two
backends cannot hide behind their agreement."""

import math

import torch


def reference_attention(q, k, v, allowed=None, bias=None, scale=None, score_fn=None):
    """softmax(q k^T * scale + bias) v in float64, with rows of no allowed key giving zeros.

    Args:
        q (B, H, L, D), k (B, Hk, S, D), v (B, Hk, S, Dv); Hk divides H (GQA).
        allowed: bool broadcastable to (B, H, L, S), True = may attend.
        bias: float added to the scores, broadcastable to (B, H, L, S).
        score_fn: optional function of the (B, H, L, S) float64 scores (e.g. soft-capping).
    Returns:
        (output (B, H, L, Dv), weights (B, H, L, S), lse (B, H, L)) in float64.
    """
    q, k, v = (t.detach().double() for t in (q, k, v))
    H, Hk = q.shape[1], k.shape[1]
    k = k.repeat_interleave(H // Hk, dim=1)
    v = v.repeat_interleave(H // Hk, dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.einsum("bhld,bhsd->bhls", q, k) * scale
    if score_fn is not None:
        s = score_fn(s)
    if bias is not None:
        s = s + bias.double()
    if allowed is not None:
        s = s.masked_fill(~allowed, float("-inf"))
    out_rows = torch.isfinite(s).any(-1, keepdim=True)
    lse = torch.logsumexp(s, dim=-1)
    w = torch.where(out_rows, torch.exp(s - lse.unsqueeze(-1).where(out_rows, 0.0)), 0.0)
    return torch.einsum("bhls,bhsd->bhld", w, v), w, lse
