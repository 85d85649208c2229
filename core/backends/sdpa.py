"""The `sdpa` backend: torch's fused ``scaled_dot_product_attention`` kernels.

Masks, mask specs and additive score modifiers are folded into one dense mask; plain causal
attention goes through ``is_causal=True`` so that the fused kernels skip the upper triangle.
Fully masked rows give zeros (PyTorch >= 2.5). No weights, and no log-sum-exp: ``auto`` routes
those requests to the `math` and `tiled` backends.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..call import AttentionCall


def forward(q: Tensor, k: Tensor, v: Tensor, call: AttentionCall):
    if call.need_weights or call.need_lse:
        raise ValueError(
            "backend 'sdpa' returns neither weights nor the log-sum-exp: use "
            "backend='auto', 'math' or 'tiled'"
        )
    B, H, L, _ = q.shape
    S = k.shape[2]
    if call.is_plain_causal:
        mask, is_causal = None, True
    else:
        mask, is_causal = call.dense_mask(B, H, L, S, q.device, q.dtype), False
    out = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask,
        dropout_p=call.dropout_p,
        is_causal=is_causal,
        scale=call.scale,
        enable_gqa=call.groups > 1,
    )
    return out, None, None
