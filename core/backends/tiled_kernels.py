"""Block kernels of the `tiled` backend.

Two exact kernels that compute softmax(q k^T * scale + bias) v over one set of query rows and the
key blocks those rows need:

* ``fused_attention``: torch's fused CPU flash kernel
  (``aten._scaled_dot_product_flash_attention_for_cpu``, a private op that also returns the
  per-row log-sum-exp). Autograd gives its backward. When the op is missing or refuses the input
  we fall back to the public ``F.scaled_dot_product_attention`` (no LSE then).
* ``OnlineSoftmax``: the readable pure-PyTorch FlashAttention-2 algorithm (Dao 2023) as a
  ``torch.autograd.Function``: forward with an online softmax over key blocks (running max ``m``,
  running sum ``l``, rescaled accumulator), backward by recomputation from the saved LSE, memory
  O(L*D). It sees the scores, so it runs non-additive score modifiers (soft-capping) and any
  device or dtype.

Shapes: q (B, H, L, D), k (B, H, S, D), v (B, H, S, Dv) with heads already matched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..call import AttentionCall
from .math import masked_scores

__all__ = [
    "fused_attention",
    "fused_lse_available",
    "FlashParts",
    "flash_parts",
    "OnlineSoftmax",
    "online_softmax_attention",
]

_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_FUSED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def fused_lse_available(q: Tensor, v: Tensor) -> bool:
    """Whether the fused CPU kernel that returns the LSE can run on ``q`` and ``v`` (it needs
    the value head dim to equal the query's)."""
    return (
        _FLASH_CPU is not None
        and q.device.type == "cpu"
        and q.dtype in _FUSED_DTYPES
        and q.shape[-1] == v.shape[-1]
    )


def fused_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Tensor | None,
    scale: float,
    dropout_p: float = 0.0,
    need_lse: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """One fused attention call. ``bias``: additive float mask (-inf = masked) broadcastable to
    (B, H, Lq, S), or None. Returns (out (B, H, Lq, Dv), lse (B, H, Lq) float or None).

    Rows whose bias is -inf everywhere get a zero output and an LSE of -inf.
    """
    lse = None
    if dropout_p == 0.0 and fused_lse_available(q, v):
        try:
            out, lse = _FLASH_CPU(q, k, v, 0.0, False, attn_mask=bias, scale=scale)
        except RuntimeError:  # a private op: any refusal sends us to the public kernel
            out = None
        if out is not None:
            if need_lse and bias is not None:
                # the op reports lse = 0 for rows with no allowed key; we say -inf
                dead = ~(bias > float("-inf")).any(-1)
                if bool(dead.any()):
                    lse = lse.masked_fill(dead.expand_as(lse), float("-inf"))
            return out, (lse if need_lse else None)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)
    if need_lse:  # the LSE does not depend on dropout: one more pass without it
        lse = _lse_by_blocks(q, k, bias, scale)
    return out, lse


class FlashParts(torch.autograd.Function):
    """Attention of the same queries over one or two disjoint key sets, each one fused CPU
    flash call, merged with FlashAttention's rescaling: l = logaddexp(l1, l2),
    o = exp(l1 - l) o1 + exp(l2 - l) o2. Used to run a row's FULL key blocks without any mask
    and only its PARTIAL blocks with one.

    Backward is FlashAttention-2's: each part's gradient is the op's own backward called with
    the *merged* output and LSE (then P = exp(S - l) are the final probabilities and
    delta = rowsum(dO * o) is the final one), so torch's non-differentiable LSE is never
    differentiated. A gradient on the returned LSE adds P * dlse to dS, i.e. replaces delta by
    delta - dlse; we get that by appending one column: q' = [q, 0], k' = [k, 0], v' = [v, 0],
    o' = [o, -dlse], dO' = [dO, 1].
    """

    @staticmethod
    def forward(ctx, q, k1, v1, bias1, k2, v2, bias2, scale):
        o1, l1 = _part(q, k1, v1, bias1, scale)
        if k2 is None:
            out, lse = o1, l1
        else:
            o2, l2 = _part(q, k2, v2, bias2, scale)
            lse = torch.logaddexp(l1, l2)
            safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
            w1 = torch.exp(l1 - safe).unsqueeze(-1).to(o1.dtype)
            w2 = torch.exp(l2 - safe).unsqueeze(-1).to(o2.dtype)
            out = o1 * w1 + o2 * w2
        ctx.save_for_backward(q, k1, v1, bias1, k2, v2, bias2, out, lse)
        ctx.scale = scale
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k1, v1, bias1, k2, v2, bias2, out, lse = ctx.saved_tensors
        bwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
        dout = torch.zeros_like(out) if dout is None else dout.contiguous()
        # rows with no key at all: +inf makes P = exp(S - lse) = 0 there
        lse_b = torch.where(torch.isfinite(lse), lse, torch.full_like(lse, float("inf")))
        extra = dlse is not None and bool(dlse.any())
        if extra:

            def aug(t, fill=None):
                col = t.new_zeros(*t.shape[:-1], 1) if fill is None else fill
                return torch.cat([t, col], dim=-1)

            q = aug(q)
            out = aug(out, -dlse.to(out.dtype).unsqueeze(-1))
            dout = aug(dout, dout.new_ones(*dout.shape[:-1], 1))
        grads = []
        for k, v, bias in ((k1, v1, bias1), (k2, v2, bias2)):
            if k is None:
                grads.append((None, None))
                continue
            if extra:
                k, v = aug(k), aug(v)
            dq, dk, dv = bwd(dout, q, k, v, out, lse_b, 0.0, False, attn_mask=bias, scale=ctx.scale)
            if extra:
                dq, dk, dv = dq[..., :-1], dk[..., :-1], dv[..., :-1]
            grads.append((dq, dk, dv))
        dq = grads[0][0] if k2 is None else grads[0][0] + grads[1][0]
        return (
            dq,
            grads[0][1],
            grads[0][2],
            None,
            grads[1][1] if k2 is not None else None,
            grads[1][2] if k2 is not None else None,
            None,
            None,
        )


def _part(q, k, v, bias, scale):
    out, lse = _FLASH_CPU(q, k, v, 0.0, False, attn_mask=bias, scale=scale)
    if bias is not None:  # the op reports lse = 0 for rows with no allowed key
        dead = ~(bias > float("-inf")).any(-1)
        if bool(dead.any()):
            lse = lse.masked_fill(dead.expand_as(lse), float("-inf"))
    return out, lse


def flash_parts(
    q: Tensor, parts: list[tuple[Tensor, Tensor, Tensor | None]], scale: float
) -> tuple[Tensor, Tensor]:
    """(out, lse) of ``q`` over the union of one or two key parts [(k, v, bias | None)], both
    differentiable; lse = -inf on rows with no allowed key (their output is 0)."""
    if len(parts) == 1:
        (k1, v1, b1), (k2, v2, b2) = parts[0], (None, None, None)
    else:
        (k1, v1, b1), (k2, v2, b2) = parts
    return FlashParts.apply(q, k1, v1, b1, k2, v2, b2, scale)


def _lse_by_blocks(
    q: Tensor, k: Tensor, bias: Tensor | None, scale: float, rows: int = 256
) -> Tensor:
    """Per-row log-sum-exp of the biased scores, a few rows at a time (no autograd needed)."""
    parts = []
    with torch.no_grad():
        for a in range(0, q.shape[2], rows):
            s = torch.matmul(q[:, :, a : a + rows], k.transpose(-2, -1)).float() * scale
            if bias is not None:
                s = s + (bias[..., a : a + rows, :] if bias.shape[-2] != 1 else bias).float()
            parts.append(torch.logsumexp(s, -1))
    return torch.cat(parts, dim=2)


def _row_positions(i: int, block: int, n: int) -> tuple[int, int]:
    return i * block, min(n, (i + 1) * block)


class OnlineSoftmax(torch.autograd.Function):
    """FlashAttention-2 forward and backward in plain PyTorch over a block layout.

    ``needed`` is a bool (nQ, nK) matrix of the key blocks each query block must visit; the
    masks themselves are applied inside each block by ``masked_scores`` (mask spec, attn_mask
    slice, score modifier).
    """

    @staticmethod
    def forward(ctx, q, k, v, call: AttentionCall, needed: Tensor, block: int):
        B, H, L, _ = q.shape
        S, Dv = k.shape[2], v.shape[3]
        acc_dtype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
        out = torch.zeros(B, H, L, Dv, dtype=q.dtype, device=q.device)
        lse = torch.full((B, H, L), float("-inf"), dtype=acc_dtype, device=q.device)
        for i, js in enumerate(_lists(needed)):
            q0, q1 = _row_positions(i, block, L)
            qi = q[:, :, q0:q1]
            m = torch.full((B, H, q1 - q0, 1), float("-inf"), dtype=acc_dtype, device=q.device)
            den = torch.zeros_like(m)
            acc = torch.zeros(B, H, q1 - q0, Dv, dtype=acc_dtype, device=q.device)
            for j in js:
                k0, k1 = _row_positions(j, block, S)
                s = masked_scores(qi, k[:, :, k0:k1], call, q0, k0, L, S).to(acc_dtype)
                m_new = torch.maximum(m, s.amax(-1, keepdim=True))
                m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
                p = torch.exp(s - m_safe)  # (B, H, bq, bk), 0 where masked
                alpha = torch.exp(m - m_safe)  # rescales what was summed so far
                den = den * alpha + p.sum(-1, keepdim=True)
                acc = acc * alpha + torch.matmul(p, v[:, :, k0:k1].to(acc_dtype))
                m = m_new
            out[:, :, q0:q1] = (acc / den.clamp_min(torch.finfo(acc_dtype).tiny)).to(q.dtype)
            m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
            lse[:, :, q0:q1] = (m_safe + torch.log(den)).squeeze(-1)  # -inf where nothing
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.call, ctx.needed, ctx.block = call, needed, block
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        call, block = ctx.call, ctx.block
        B, H, L, _ = q.shape
        S = k.shape[2]
        acc_dtype = lse.dtype
        dq = torch.zeros(q.shape, dtype=acc_dtype, device=q.device)
        dk = torch.zeros(k.shape, dtype=acc_dtype, device=q.device)
        dv = torch.zeros(v.shape, dtype=acc_dtype, device=q.device)
        dout = dout.to(acc_dtype)
        delta = (dout * out.to(acc_dtype)).sum(-1, keepdim=True)  # (B, H, L, 1): rowsum(dO*O)
        # -inf LSE (no allowed key): p = exp(s - inf) = 0, so such rows pass no gradient
        lse_safe = torch.where(torch.isfinite(lse), lse, torch.full_like(lse, float("inf")))
        if dlse is not None:  # d lse / d s = p: fold it into delta
            delta = delta - dlse.to(acc_dtype).unsqueeze(-1)
        general = call.score_mod is not None
        for i, js in enumerate(_lists(ctx.needed)):
            q0, q1 = _row_positions(i, block, L)
            qi = q[:, :, q0:q1].to(acc_dtype)
            doi, di = dout[:, :, q0:q1], delta[:, :, q0:q1]
            li = lse_safe[:, :, q0:q1].unsqueeze(-1)
            for j in js:
                k0, k1 = _row_positions(j, block, S)
                kj, vj = k[:, :, k0:k1].to(acc_dtype), v[:, :, k0:k1].to(acc_dtype)
                if general:  # let autograd differentiate the score modifier
                    with torch.enable_grad():
                        qg, kg = qi.detach().requires_grad_(), kj.detach().requires_grad_()
                        s = masked_scores(qg, kg, call, q0, k0, L, S)
                        p = torch.exp(s.detach() - li)
                        ds = p * (torch.matmul(doi, vj.transpose(-2, -1)) - di)
                        gq, gk = torch.autograd.grad(s, (qg, kg), ds)
                else:
                    s = masked_scores(qi, kj, call, q0, k0, L, S)
                    p = torch.exp(s - li)
                    ds = p * (torch.matmul(doi, vj.transpose(-2, -1)) - di)
                    gq = torch.matmul(ds, kj) * call.scale
                    gk = torch.matmul(ds.transpose(-2, -1), qi) * call.scale
                dq[:, :, q0:q1] += gq
                dk[:, :, k0:k1] += gk
                dv[:, :, k0:k1] += torch.matmul(p.transpose(-2, -1), doi)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None


def _lists(needed: Tensor) -> list[list[int]]:
    return [row.nonzero().flatten().tolist() for row in needed]


def online_softmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    call: AttentionCall,
    needed: Tensor | None = None,
    block: int = 128,
) -> tuple[Tensor, Tensor]:
    """Exact attention with the pure-PyTorch online softmax. Returns (out, lse).

    Args:
        q, k, v: (B, H, L, D), (B, H, S, D), (B, H, S, Dv), heads already matched.
        call: masks, score modifier and scale (dropout is not supported here).
        needed: bool (ceil(L/block), ceil(S/block)) key blocks to visit; all when None.
        block: rows and keys per block.
    """
    if call.dropout_p > 0:
        raise ValueError(
            "dropout_p > 0 is not supported by the pure online-softmax kernel "
            "(non-additive score_mod or a device without fused kernels)"
        )
    L, S = q.shape[2], k.shape[2]
    if needed is None:
        needed = torch.ones(-(-L // block), -(-S // block), dtype=torch.bool)
    return OnlineSoftmax.apply(q, k, v, call, needed.cpu(), block)
