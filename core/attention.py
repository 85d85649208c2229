"""Functional scaled dot-product attention with interchangeable backends.

``attention(q, k, v, ...)`` computes softmax(q k^T * scale + bias) v (Vaswani et al. 2017) with the
argument semantics of ``torch.nn.functional.scaled_dot_product_attention`` where they overlap, and
adds mask specs (``attnlab.core.masks``), score modifiers (``attnlab.core.scores``), returned
weights and the per-row log-sum-exp.

The call is described to the backends as an ``AttentionCall`` (``core/call.py``, re-exported
here with ``expand_kv``). Backends (one signature each, in ``core/backends``):
  * ``math``   materialised softmax(QK^T/sqrt(d))V: the readable reference; returns weights.
  * ``sdpa``   torch's fused kernels; what ``auto`` uses whenever it can.
  * ``tiled``  exact attention by blocks with an online softmax (FlashAttention, Dao et al. 2022),
               skipping the blocks a mask removes: local attention costs O(L*w).
  * ``linear`` kernelised linear attention (Katharopoulos et al. 2020): O(L*D^2), approximate.

Shape letters: B batch, H heads (Hq query heads, Hk key/value heads), L/S query/key length,
D head dim (Dv value head dim).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .backends import linear, sdpa, tiled
from .backends import math as math_backend
from .call import AttentionCall, expand_kv
from .masks import Mask, causal
from .scores import ScoreMod

__all__ = [
    "attention",
    "AttentionOutput",
    "AttentionCall",
    "expand_kv",
    "BACKENDS",
    "choose_backend",
]

# modules, not their functions: ``forward`` is looked up per call (tests patch it)
_BACKENDS = {"math": math_backend, "sdpa": sdpa, "tiled": tiled, "linear": linear}
BACKENDS = tuple(_BACKENDS)
# a mask that removes blocks pays off in the tiled backend above this many score entries: on
# the CPU (``attnlab bench core``), and on CUDA, where torch's fused kernels are far ahead of a
# loop over blocks until the masked-out area dominates (``attnlab bench gpu`` on an H100, sliding
# window 256: tiled 5.6x slower than dense-mask SDPA at L=4096 in bf16, 0.63x of its time for
# forward + backward at L=16384; in fp32 0.51x at 4096 and 0.12x at 16384)
_TILED_MIN_SCORES = 512 * 512
_TILED_MIN_SCORES_CUDA = {torch.float32: 4096 * 4096, torch.float64: 4096 * 4096}
_TILED_MIN_SCORES_CUDA_HALF = 16384 * 16384


def _tiled_min_scores(device: torch.device | None, dtype: torch.dtype | None) -> int:
    if device is None or device.type != "cuda":
        return _TILED_MIN_SCORES
    return _TILED_MIN_SCORES_CUDA.get(dtype, _TILED_MIN_SCORES_CUDA_HALF)


class AttentionOutput(NamedTuple):
    """What ``attention`` returns when weights or the log-sum-exp are asked for."""

    output: Tensor  # (..., H, L, Dv)
    weights: Tensor | None  # (..., H, L, S), rows sum to 1 over allowed keys (0 if none)
    lse: Tensor | None  # (..., H, L), log-sum-exp of the masked scaled scores (-inf if none)


def choose_backend(
    call: AttentionCall,
    L: int,
    S: int,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> str:
    """The backend ``auto`` picks: weights need ``math``; non-additive score modifiers and the
    log-sum-exp need ``tiled``; masks that remove whole blocks use ``tiled`` on long inputs
    (longer on CUDA, longer still in 16-bit); everything else goes to torch's fused kernels."""
    if call.need_weights:
        return "math"
    if call.need_lse or (call.score_mod is not None and not call.score_mod.additive):
        return "tiled"
    if call.mask is None or call.is_plain_causal:
        return "sdpa"
    if L * S >= _tiled_min_scores(device, dtype) and call.attn_mask is None:
        return "tiled"
    return "sdpa"


def _check_tensor(name: str, t) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.dim() < 3:
        raise ValueError(
            f"{name} must have shape (..., H, L, D) with at least 3 dims, "
            f"got shape {tuple(t.shape)}"
        )


def _validate(q, k, v, attn_mask, dropout_p, scale, enable_gqa, mask, score_mod):
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if not (q.dim() == k.dim() == v.dim()):
        raise ValueError(
            f"q, k, v must have the same rank, got shapes {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if not (q.shape[:-3] == k.shape[:-3] == v.shape[:-3]):
        raise ValueError(
            f"batch dims of q {tuple(q.shape[:-3])}, k {tuple(k.shape[:-3])} and "
            f"v {tuple(v.shape[:-3])} differ (no implicit broadcasting)"
        )
    Hq, L, D = q.shape[-3:]
    Hk, S, Dk = k.shape[-3:]
    if Dk != D:
        raise ValueError(f"head dim of k ({Dk}) differs from that of q ({D})")
    if v.shape[-2] != S:
        raise ValueError(f"k has {S} keys but v has {v.shape[-2]} values")
    if v.shape[-3] != Hk:
        raise ValueError(f"k has {Hk} heads but v has {v.shape[-3]}")
    if L == 0 or S == 0 or D == 0:
        raise ValueError(f"empty attention: L={L} queries, S={S} keys, head dim {D}")
    if Hq != Hk:
        if not enable_gqa:
            raise ValueError(
                f"q has {Hq} heads but k/v have {Hk}: pass enable_gqa=True for "
                "grouped-query attention"
            )
        if Hq % Hk:
            raise ValueError(
                f"grouped-query attention needs q heads ({Hq}) to be a multiple of k/v heads ({Hk})"
            )
    if not (0.0 <= dropout_p < 1.0):
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if scale is not None and not (
        isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0
    ):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor):
            raise TypeError(f"attn_mask must be a tensor, got {type(attn_mask).__name__}")
        if not (attn_mask.dtype == torch.bool or attn_mask.dtype.is_floating_point):
            raise TypeError(
                f"attn_mask must be bool (True = attend) or float (added to the "
                f"scores), got dtype {attn_mask.dtype}"
            )
        target = (*q.shape[:-1], S)
        shp = tuple(attn_mask.shape)
        ok = len(shp) <= len(target) and all(
            a in (1, b) for a, b in zip(reversed(shp), reversed(target), strict=False)
        )
        if not ok or len(shp) < 2 or shp[-1] != S or shp[-2] not in (1, L):
            raise ValueError(
                f"attn_mask of shape {shp} does not fit attention scores of shape "
                f"{target} (..., H, L, S)"
            )
    if mask is not None and not isinstance(mask, Mask):
        raise TypeError(f"mask must be an attnlab.core.masks.Mask, got {type(mask).__name__}")
    if score_mod is not None and not isinstance(score_mod, ScoreMod):
        raise TypeError(
            f"score_mod must be an attnlab.core.scores.ScoreMod, got {type(score_mod).__name__}"
        )
    if score_mod is not None and score_mod.num_heads not in (None, Hq):
        raise ValueError(f"score_mod is built for {score_mod.num_heads} heads, q has {Hq}")


def _mask_to_4d(m: Tensor, lead: tuple[int, ...], B: int) -> Tensor:
    """Bring a mask broadcastable to (*lead, H, L, S) to (B or 1, H or 1, L or 1, S)."""
    while m.dim() < len(lead) + 3:
        m = m.unsqueeze(0)
    if all(s == 1 for s in m.shape[: len(lead)]):
        return m.reshape(1, *m.shape[len(lead) :])
    return m.expand(*lead, *m.shape[len(lead) :]).reshape(B, *m.shape[len(lead) :])


def _all_finite(t: Tensor) -> bool:
    """One reduction (NaN and Inf propagate into a sum); the exact elementwise test only when
    the sum is not finite, since finite values can overflow a low-precision sum."""
    t = t.detach()
    return math.isfinite(t.sum().item()) or bool(torch.isfinite(t).all())


def check_inputs_finite(q: Tensor, k: Tensor, v: Tensor) -> None:
    """Raise ValueError naming q, k or v when it holds NaN or Inf (one reduction each). Run it
    before any kernel: fused kernels may turn a NaN row into a silent row of zeros."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not _all_finite(t):
            raise ValueError(f"{name} contains NaN or Inf values")


def check_output_finite(out: Tensor) -> None:
    """Raise ValueError when an output computed from finite inputs is not finite."""
    if not _all_finite(out):
        raise ValueError(
            "attention produced NaN or Inf from finite inputs (overflow in low "
            "precision, or an additive attn_mask with NaN/+Inf)"
        )


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    mask: Mask | None = None,
    score_mod: ScoreMod | None = None,
    backend: str = "auto",
    return_weights: bool = False,
    return_lse: bool = False,
    check_finite: bool | None = None,
) -> Tensor | AttentionOutput:
    """Scaled dot-product attention.

    Args:
        q: queries (..., Hq, L, D). k: keys (..., Hk, S, D). v: values (..., Hk, S, Dv).
        attn_mask: bool (True = may attend) or float (added to the scores), broadcastable to
            (..., Hq, L, S), as in ``F.scaled_dot_product_attention``.
        dropout_p: dropout on the attention weights (applied whenever > 0, as in SDPA).
        is_causal: causal mask aligned top-left (SDPA's convention when L != S).
        scale: score scale; 1/sqrt(D) when None.
        enable_gqa: allow Hq to be a multiple of Hk (grouped-query / multi-query attention).
        mask: a mask spec from ``attnlab.core.masks`` (combined with the others by AND).
        score_mod: a score modifier from ``attnlab.core.scores`` (ALiBi, relative bias, softcap).
        backend: 'auto', 'math', 'sdpa', 'tiled' or 'linear'.
        return_weights: also return the attention weights (..., Hq, L, S).
        return_lse: also return the log-sum-exp of the masked scaled scores (..., Hq, L).
        check_finite: raise ValueError when q, k or v holds NaN or Inf (naming it), on every
            backend alike, checked before the backend runs; and when the output is not finite
            from finite inputs (low-precision overflow, an additive attn_mask with NaN/+Inf).
            Costs one reduction per input and one over the output. Default: on for CPU
            tensors, off on GPUs (the check would force a synchronisation) and under
            ``torch.compile``; without it a non-finite input gives whatever the backend
            gives (NaN, or zeros from a fused kernel).

    Returns:
        The output (..., Hq, L, Dv), or an ``AttentionOutput`` when weights or LSE are asked for.
        A query whose every key is masked gets a zero output (and zero gradients), never NaN.
    """
    _validate(q, k, v, attn_mask, dropout_p, scale, enable_gqa, mask, score_mod)
    lead = tuple(q.shape[:-3])
    Hq, L, D = q.shape[-3:]
    Hk, S = k.shape[-3], k.shape[-2]
    B = math.prod(lead)
    if q.dim() == 4:
        q4, k4, v4 = q, k, v
    else:  # fold the leading dims into one batch dim: fused kernels want 4-D inputs
        q4, k4, v4 = (t.reshape(B, *t.shape[-3:]) for t in (q, k, v))
    if attn_mask is not None:
        attn_mask = _mask_to_4d(attn_mask, lead, B)
        if attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.to(q.dtype)
    if mask is not None and mask.batch_size is not None and mask.batch_size != B:
        raise ValueError(
            f"mask {mask.describe()} is built for batch {mask.batch_size}, inputs have batch {B}"
        )
    if is_causal:
        mask = causal() if mask is None else causal() & mask
    call = AttentionCall(
        attn_mask=attn_mask,
        mask=mask,
        score_mod=score_mod,
        scale=float(scale) if scale is not None else 1.0 / math.sqrt(D),
        dropout_p=float(dropout_p),
        groups=Hq // Hk,
        need_weights=return_weights,
        need_lse=return_lse,
    )
    name = choose_backend(call, L, S, q.device, q.dtype) if backend == "auto" else backend
    if name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    if check_finite is None:
        check_finite = q.device.type == "cpu" and not torch.compiler.is_compiling()
    if check_finite:
        check_inputs_finite(q, k, v)
    out, weights, lse = _BACKENDS[name].forward(q4, k4, v4, call)
    if check_finite:
        check_output_finite(out)
    if q.dim() != 4:
        out = out.reshape(*lead, Hq, L, out.shape[-1])
    if not (return_weights or return_lse):
        return out
    if weights is not None:
        weights = weights.reshape(*lead, Hq, L, S)
    if lse is not None:
        lse = lse.reshape(*lead, Hq, L)
    return AttentionOutput(out, weights if return_weights else None, lse if return_lse else None)
