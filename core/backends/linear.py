"""The `linear` backend: kernelised linear attention (Katharopoulos et al. 2020, "Transformers
are RNNs"), an approximation of softmax attention in O(L * D * Dv) time.

softmax(q.k) is replaced by a kernel phi(q).phi(k), so that

    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / phi(q_i)^T (sum_j phi(k_j))

where the sums run over the keys query i may see: all of them (one (D', Dv) state), or, when
causal, the prefix j <= i -- a running sum computed chunk by chunk (``chunk`` queries at a time:
a masked (chunk x chunk) product inside the chunk plus the state of the keys before it), so
memory stays O(L * D + (L / chunk) * D' * Dv) with autograd.

Feature maps: ``"elu"``: phi(x) = elu(x) + 1 (the paper's; it ignores the softmax scale), and
``"performer"``: positive orthogonal random features of the softmax kernel exp(scale * q.k)
(Choromanski et al. 2021, FAVOR+), an unbiased estimate whose error shrinks with the number of
features. Masks: full, causal (either alignment) and key padding, and their ``&``; anything else
raises ValueError (a general mask has no prefix-sum form).

Error against exact softmax attention (float64, q, k, v ~ N(0, 1), D = Dv = 64, B*H = 8,
seed 0, relative Frobenius error ||lin - exact|| / ||exact||; ``attnlab bench core`` writes the
same measurement, also for inputs of std 0.5, to its JSON as ``linear_error``):

    feature map          mask     L=256   L=1024
    elu + 1              full     0.77    0.79
    elu + 1              causal   0.65    0.69
    performer (m=256)    full     0.81    0.82
    performer (m=256)    causal   0.92    0.91

With inputs of std 0.5 (flatter softmax rows) elu + 1 gives 0.24 and performer 0.41 (m=256),
0.17 (m=2048) at L=256, full mask: both errors fall as the logits flatten, performer's also with
the number of features. With std-1 inputs softmax rows are peaked while linear attention's rows
are nearly uniform, so the error is of the order of the output itself: linear attention is a
different model to be trained as such, not a drop-in for a trained softmax model. Tests check it
against the exact linear-attention formula in float64, not against softmax.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..call import AttentionCall, expand_kv
from ..masks import Mask

__all__ = ["forward", "linear_attention", "feature_map", "parse_mask"]

_EPS = 1e-6


def feature_map(
    x: Tensor,
    kind: str = "elu",
    *,
    scale: float | None = None,
    proj: Tensor | None = None,
    is_query: bool = True,
) -> Tensor:
    """phi(x) for (B, H, L, D) inputs.

    Args:
        kind: "elu" (elu(x) + 1) or "performer" (positive random features; needs ``proj``
            (m, D) and ``scale``).
        is_query: performer features stabilise queries per row and keys globally (a per-key
            constant would not cancel in the ratio).
    """
    if kind == "elu":
        return F.elu(x) + 1
    if kind == "performer":
        if proj is None or scale is None:
            raise ValueError("performer features need proj and scale")
        x = x * math.sqrt(scale)  # exp(scale q.k) = exp(q'.k') with q' = sqrt(scale) q
        wx = torch.matmul(x, proj.to(x.dtype).transpose(0, 1))  # (B, H, L, m)
        sq = 0.5 * (x * x).sum(-1, keepdim=True)
        stab = wx.amax(-1, keepdim=True) if is_query else wx.amax()
        return torch.exp(wx - sq - stab.detach()) / math.sqrt(proj.shape[0]) + _EPS
    raise ValueError(f"feature map must be 'elu' or 'performer', got {kind!r}")


def orthogonal_features(
    num_features: int, dim: int, seed: int = 0, dtype=torch.float32, device=None
) -> Tensor:
    """(m, D) blocks of random orthogonal rows scaled to Gaussian norms (FAVOR+)."""
    g = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(-(-num_features // dim)):
        qm, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        blocks.append(qm.T)
    w = torch.cat(blocks)[:num_features]
    norms = torch.randn(num_features, dim, generator=g, dtype=torch.float64).norm(dim=1)
    return (w * norms[:, None]).to(dtype=dtype, device=device)


def parse_mask(mask: Mask | None) -> tuple[str | None, Tensor | None]:
    """(causal alignment or None, key lengths (B,) or None) of a mask linear attention can do.

    Raises ValueError for any other mask.
    """
    align, lengths = None, None
    for m in mask.factors() if mask is not None else ():
        if m.causal_alignment is not None and align in (None, m.causal_alignment):
            align = m.causal_alignment
        elif m.key_lengths is not None:
            n = m.key_lengths
            lengths = n if lengths is None else torch.minimum(lengths, n)
        elif not m.is_full:
            raise ValueError(
                f"backend 'linear' supports full, causal and key-padding masks "
                f"only, got mask {mask.describe()}"
            )
    return align, lengths


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: str | bool | None = None,
    key_lengths: Tensor | None = None,
    feature: str = "elu",
    num_features: int = 256,
    seed: int = 0,
    scale: float | None = None,
    chunk: int = 128,
    return_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Linear attention of q (B, H, L, D), k (B, H, S, D), v (B, H, S, Dv).

    Args:
        causal: None/False, True/"top_left" (key j <= query i) or "bottom_right"
            (j <= i + S - L).
        key_lengths: (B,) or (1,) ints: keys at positions >= length are ignored.
        feature: "elu" or "performer" (``num_features`` random features drawn with ``seed``).
        scale: softmax scale the performer kernel approximates (1/sqrt(D) by default).
        chunk: queries per step of the causal prefix sum (bounds memory).
        return_weights: also return the (B, H, L, S) normalised kernel matrix.

    Returns:
        (out (B, H, L, Dv), weights or None). Queries that see no key get zeros.
    """
    B, H, L, D = q.shape
    S = k.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    proj = (
        orthogonal_features(num_features, D, seed, q.dtype, q.device)
        if feature == "performer"
        else None
    )
    fq = feature_map(q, feature, scale=scale, proj=proj, is_query=True)  # (B, H, L, D')
    fk = feature_map(k, feature, scale=scale, proj=proj, is_query=False)  # (B, H, S, D')
    if key_lengths is not None:  # padded keys contribute nothing
        n = key_lengths.to(q.device).view(-1, 1, 1, 1)
        fk = fk * (torch.arange(S, device=q.device).view(1, 1, -1, 1) < n).to(fk.dtype)
    align = "top_left" if causal is True else (causal or None)
    if return_weights:
        a = torch.matmul(fq, fk.transpose(-2, -1))  # (B, H, L, S)
        if align is not None:
            off = 0 if align == "top_left" else S - L
            qi = torch.arange(L, device=q.device).view(-1, 1)
            a = a * (torch.arange(S, device=q.device).view(1, -1) <= qi + off).to(a.dtype)
        w = a / a.sum(-1, keepdim=True).clamp_min(_EPS)
        return torch.matmul(w, v), w
    if align is None:
        kv = torch.matmul(fk.transpose(-2, -1), v)  # (B, H, D', Dv)
        z = fk.sum(2)  # (B, H, D')
        num = torch.matmul(fq, kv)
        den = torch.matmul(fq, z.unsqueeze(-1))  # (B, H, L, 1)
        return num / den.clamp_min(_EPS), None
    off = 0 if align == "top_left" else S - L
    kv = fq.new_zeros(B, H, fq.shape[-1], v.shape[-1])
    z = fq.new_zeros(B, H, fq.shape[-1], 1)
    done = 0  # keys [0, done) are in the state
    outs = []
    for a in range(0, L, chunk):
        b = min(L, a + chunk)
        lo = min(max(a + off, 0), S)  # keys before lo are seen by every query of the chunk
        hi = min(max(b + off, 0), S)  # keys in [lo, hi) are seen causally
        if lo > done:
            kv = kv + torch.matmul(fk[:, :, done:lo].transpose(-2, -1), v[:, :, done:lo])
            z = z + fk[:, :, done:lo].sum(2).unsqueeze(-1)
            done = lo
        fqc = fq[:, :, a:b]
        num = torch.matmul(fqc, kv)
        den = torch.matmul(fqc, z)
        if hi > lo:
            att = torch.matmul(fqc, fk[:, :, lo:hi].transpose(-2, -1))  # (B, H, b-a, hi-lo)
            qi = torch.arange(a, b, device=q.device).view(-1, 1) + off
            att = att * (torch.arange(lo, hi, device=q.device).view(1, -1) <= qi).to(att.dtype)
            num = num + torch.matmul(att, v[:, :, lo:hi])
            den = den + att.sum(-1, keepdim=True)
        outs.append(num / den.clamp_min(_EPS))
    return torch.cat(outs, dim=2), None


def forward(q: Tensor, k: Tensor, v: Tensor, call: AttentionCall):
    if call.attn_mask is not None:
        raise ValueError(
            "backend 'linear' takes no attn_mask tensor: use mask=key_padding(...) or mask=causal()"
        )
    if call.score_mod is not None:
        raise ValueError("backend 'linear' has no scores to modify: score_mod is not supported")
    if call.dropout_p > 0:
        raise ValueError("backend 'linear' does not support dropout_p > 0")
    if call.need_lse:
        raise ValueError(
            "backend 'linear' has no softmax, hence no log-sum-exp: return_lse "
            "needs an exact backend"
        )
    align, lengths = parse_mask(call.mask)
    k, v = expand_kv(k, v, call.groups)
    out, w = linear_attention(
        q, k, v, causal=align, key_lengths=lengths, return_weights=call.need_weights
    )
    return out, w, None
