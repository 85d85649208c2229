"""Seeing and editing attention: ``record_attention``, ``AttentionMaps``, ``ablate_heads``.

Fused kernels never materialise the attention weights. Instead of hooks that find nothing
(timm's fused path, HF's SDPA), ``record_attention`` observes only the chosen attention modules
(``MultiHeadAttention`` and the ``torch.nn.MultiheadAttention`` drop-in
``compat.MultiheadAttention``) for the duration of a ``with`` block and collects their per-head
weights (B, H, Lq, Lk), self and cross, under the modules' qualified names (``blocks.3.attn``).
Every other module keeps the fused path; outside the block nothing is kept and a module's only
cost is one attribute check (``module._observer is None``).

How a recorded call is computed (exactly the math backend's weights, to float rounding):
  * by default materialised (``attn_weights.explicit_attention``): one matmul for the scores,
    the softmax written over them, one matmul with v. At the lengths whose maps are looked at it
    costs about what the fused kernel does on CPU, and it keeps one L x S buffer per call --
    the map itself; the rest of what recording costs is the first touch of that fresh memory.
  * with a few ``head_indices``: the fused call the forward makes anyway, with its per-row
    log-sum-exp, and then only the kept heads' weights, exp(q k^T * scale + bias - lse)
    (``attn_weights.lse_weights``): no softmax, no weights @ v, no map for the other heads.

Reduce inside the recording, because maps grow as L^2: chosen heads, top-k per row, a smaller
dtype (e.g. ``torch.float16``), or a head reduction. For long sequences ``lazy=True`` keeps only
q, k and the per-row log-sum-exp and materialises the rows asked for (``maps.rows``): exactly
exp(q k^T * scale + bias - lse).

Interventions: ``ablate_heads`` zeroes or mean-replaces chosen heads' outputs (before the output
projection) during a forward, as in Michel et al. 2019 ("Are Sixteen Heads Really Better than
One?") and mean-ablation in the circuits literature.

Concurrency: recording and ablation MUTATE the modules (they set ``_observer``) for the length of
the ``with`` block; two threads sharing a model must not record at the same time. In Gradio, give
the listeners that share a model one ``concurrency_id`` (with ``concurrency_limit=1``).
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .attention import (
    AttentionCall,
    attention,
    check_inputs_finite,
    check_output_finite,
    expand_kv,
)
from .attn_weights import attention_call, explicit_attention, lse_weights
from .backends.tiled_kernels import fused_lse_available
from .compat import MultiheadAttention
from .masks import Mask, to_allowed
from .masks import causal as causal_mask
from .modules import MultiHeadAttention

__all__ = [
    "record_attention",
    "AttentionMaps",
    "AttentionRecord",
    "ablate_heads",
    "attention_modules",
    "reuse_freed_memory",
]

LayerSpec = int | str
#: the modules that call ``_observer``: attnlab's own and the ``torch.nn.MultiheadAttention``
#: drop-in
ATTENTION_MODULES = (MultiHeadAttention, MultiheadAttention)


# ------------------------------------------------------------------------------------------
# module selection and the per-module observer
# ------------------------------------------------------------------------------------------
def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every attention module in ``model`` (``MultiHeadAttention`` and the drop-in
    ``compat.MultiheadAttention``) with its qualified name, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ATTENTION_MODULES)]


def _select(model: nn.Module, layers: Sequence[LayerSpec] | None, arg: str = "layers"):
    found = attention_modules(model)
    if not found:
        raise ValueError(
            f"{type(model).__name__} contains no attnlab attention module "
            "(MultiHeadAttention or compat.MultiheadAttention)"
        )
    if layers is None:
        return found
    if isinstance(layers, (str, int)):
        layers = [layers]
    names = [n for n, _ in found]
    chosen: dict[str, nn.Module] = {}
    for spec in layers:
        if isinstance(spec, bool) or not isinstance(spec, (int, str)):
            raise TypeError(f"{arg} items must be names, glob patterns or indices, got {spec!r}")
        if isinstance(spec, int):
            if not -len(found) <= spec < len(found):
                raise ValueError(
                    f"{arg} index {spec} out of range: {len(found)} attention modules ({names})"
                )
            hits = [found[spec]]
        else:
            hits = [(n, m) for n, m in found if n == spec or fnmatch.fnmatchcase(n, spec)]
            if not hits:
                raise ValueError(
                    f"{arg} entry {spec!r} matches no attention module; available: {names}"
                )
        chosen.update(hits)
    return [(n, m) for n, m in found if n in chosen]


class _Observer:
    """What an attention module's forward calls instead of ``attention`` while observed.

    The protocol: ``module._observer(module, q, k, v, args[, kind])`` with q (B, H, L, D), k/v
    (B, Hk, S, D), ``args`` the keyword arguments of ``core.attention`` for this call (all of
    ``attn_mask, dropout_p, is_causal, scale, enable_gqa, mask, score_mod, backend``) and
    ``kind`` 'self' or 'cross' (default: the module's ``cross`` flag); it returns the output
    (B, H, L, Dv) that the module then projects.
    """

    def __init__(self) -> None:
        self.recorder: _Recorder | None = None
        self.ablation: Callable[[Tensor], Tensor] | None = None

    def __call__(self, module, q, k, v, args, kind: str | None = None):
        if self.recorder is None:
            o = attention(q, k, v, **args)
        else:
            kind = kind or ("cross" if getattr(module, "cross", False) else "self")
            o = self.recorder(q, k, v, args, kind)
        return o if self.ablation is None else self.ablation(o)


def _set_slot(module: nn.Module, slot: str, value) -> Any:
    obs = module._observer
    if obs is None:
        obs = module._observer = _Observer()
    prev = getattr(obs, slot)
    setattr(obs, slot, value)
    return prev


def _restore_slot(module: nn.Module, slot: str, prev) -> None:
    obs = module._observer
    if obs is None:
        return
    setattr(obs, slot, prev)
    if obs.recorder is None and obs.ablation is None:
        module._observer = None


# ------------------------------------------------------------------------------------------
# records and maps
# ------------------------------------------------------------------------------------------
@dataclass
class AttentionRecord:
    """One call of one recorded module.

    ``weights`` (B, h, L, S) after reduction (h = len(head_indices), or 1 after a head
    reduction);
    with ``topk`` only ``values``/``indices`` (B, h, L, k) are kept; with ``lazy`` only q, k, lse.
    ``mask``/``attn_mask``/``is_causal`` are what the call used, so a view can draw "allowed"
    beside "used" (``allowed()``).
    """

    name: str
    kind: str  # 'self' or 'cross'
    L: int
    S: int
    num_heads: int
    head_indices: list[int] | None  # the heads kept (indices), None = all
    mask: Mask | None
    attn_mask: Tensor | None
    is_causal: bool
    weights: Tensor | None = None
    topk_values: Tensor | None = None
    topk_indices: Tensor | None = None
    lazy: dict[str, Any] | None = field(default=None, repr=False)

    def full_mask(self) -> Mask | None:
        """The mask spec with the causal flag folded in."""
        if not self.is_causal:
            return self.mask
        return causal_mask() if self.mask is None else causal_mask() & self.mask

    def allowed(self) -> Tensor:
        """bool (B' or 1, H' or 1, L, S): which keys each query was allowed to see."""
        m = self.full_mask()
        a = torch.ones(1, 1, self.L, self.S, dtype=torch.bool)
        if m is not None:
            a = a & m.dense(self.L, self.S, batch=m.batch_size, heads=m.num_heads).cpu()
        if self.attn_mask is not None:
            am = to_allowed(self.attn_mask.detach().cpu())
            while am.dim() < 4:
                am = am.unsqueeze(0)
            a = a & am
        return a

    def dense(self) -> Tensor:
        """The weights as a dense (B, h, L, S) tensor (top-k entries scattered into zeros)."""
        if self.weights is not None:
            return self.weights
        if self.topk_values is not None:
            shape = (*self.topk_values.shape[:-1], self.S)
            z = torch.zeros(shape, dtype=self.topk_values.dtype, device=self.topk_values.device)
            return z.scatter(-1, self.topk_indices, self.topk_values)
        return self.rows(slice(None))

    def rows(self, q_slice: slice | int) -> Tensor:
        """Weights of query rows ``q_slice`` (B, h, rows, S); exact from q, k and the LSE."""
        if isinstance(q_slice, int):
            q_slice = slice(q_slice, q_slice + 1)
        r0, r1, step = q_slice.indices(self.L)
        if step != 1:
            raise ValueError("rows() takes a contiguous slice of queries")
        if self.lazy is None:
            return self.dense()[:, :, r0:r1]
        z = self.lazy
        q, k, lse = z["q"][:, :, r0:r1], z["k"], z["lse"][:, :, r0:r1]
        call = AttentionCall(
            attn_mask=z["attn_mask"],
            mask=self.full_mask(),
            score_mod=z["score_mod"],
            scale=z["scale"],
            dropout_p=0.0,
            groups=1,
            need_weights=False,
            need_lse=False,
        )
        from .backends.math import masked_scores

        s = masked_scores(q, k, call, q_offset=r0, L=self.L, S=self.S)  # (B, H, rows, S)
        live = torch.isfinite(lse)[..., None]
        w = torch.where(live, torch.exp(s - torch.where(live, lse[..., None], 0.0)), 0.0)
        return _reduce_heads(w, self.head_indices, z["reduce"]).to(z["dtype"] or w.dtype)


class AttentionMaps(Mapping):
    """Recorded attention, ``name -> (B, h, L, S)`` weights of the last call of that module.

    ``calls(name)`` lists every call (decoding step by step records one per step); ``stack()``
    gives (layers, B, h, L, S); ``rows(name, q_slice)`` materialises rows of a lazy recording;
    ``grad(name)`` is the gradient of the weights when recorded with ``retain_grad=True``.
    """

    def __init__(self) -> None:
        self._records: dict[str, list[AttentionRecord]] = {}

    def _add(self, rec: AttentionRecord) -> None:
        self._records.setdefault(rec.name, []).append(rec)

    def __getitem__(self, name: str) -> Tensor:
        return self.record(name).dense()

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def record(self, name: str) -> AttentionRecord:
        if name not in self._records:
            raise KeyError(f"no attention recorded for {name!r}; recorded: {list(self._records)}")
        return self._records[name][-1]

    def calls(self, name: str) -> list[AttentionRecord]:
        self.record(name)
        return list(self._records[name])

    def rows(self, name: str, q_slice: slice | int) -> Tensor:
        return self.record(name).rows(q_slice)

    def grad(self, name: str) -> Tensor | None:
        return self.record(name).weights.grad

    def meta(self, name: str) -> dict[str, Any]:
        r = self.record(name)
        return dict(
            kind=r.kind,
            L=r.L,
            S=r.S,
            num_heads=r.num_heads,
            head_indices=r.head_indices,
            mask=r.full_mask(),
            calls=len(self._records[name]),
        )

    def stack(self, names: Sequence[str] | None = None) -> Tensor:
        """(layers, B, h, L, S) in recording order (or the order of ``names``)."""
        names = list(self) if names is None else list(names)
        if not names:
            raise ValueError("nothing was recorded")
        maps = [self[n] for n in names]
        shapes = {tuple(m.shape) for m in maps}
        if len(shapes) > 1:
            raise ValueError(
                f"recorded maps differ in shape ({sorted(shapes)}): stack self "
                "and cross layers separately with names=[...]"
            )
        return torch.stack(maps)

    def __repr__(self) -> str:
        items = ", ".join(
            f"{n}: {r[-1].kind} {'lazy' if r[-1].lazy else tuple(self[n].shape)}"
            for n, r in self._records.items()
        )
        return f"AttentionMaps({items})"


def _reduce_heads(w: Tensor, head_indices: list[int] | None, reduce) -> Tensor:
    if head_indices is not None:
        w = w[:, head_indices]
    if reduce is None:
        return w
    if reduce == "mean":
        return w.mean(1, keepdim=True)
    if reduce == "max":
        return w.amax(1, keepdim=True)
    return reduce(w)


class _Recorder:
    def __init__(self, name: str, module: nn.Module, maps: AttentionMaps, opts: dict):
        self.name, self.module, self.maps, self.o = name, module, maps, opts

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, args: dict, kind: str) -> Tensor:
        o, H, L, S = self.o, q.shape[1], q.shape[2], k.shape[2]
        heads = o["head_indices"]
        if heads is not None and not all(-H <= h < H for h in heads):
            raise ValueError(f"head_indices {heads} out of range for {self.name} with {H} heads")
        rec = AttentionRecord(
            name=self.name,
            kind=kind,
            L=L,
            S=S,
            num_heads=H,
            head_indices=heads,
            mask=args["mask"],
            attn_mask=args["attn_mask"],
            is_causal=args["is_causal"],
        )
        if o["lazy"]:
            res = attention(q, k, v, **{**args, "backend": "auto"}, return_lse=True)
            kk, _ = expand_kv(k, v, H // k.shape[1])
            rec.lazy = dict(
                q=q.detach(),
                k=kk.detach(),
                lse=res.lse.detach(),
                attn_mask=args["attn_mask"],
                score_mod=args["score_mod"],
                scale=attention_call(q, k, args).scale,
                reduce=o["reduce"],
                dtype=o["dtype"],
            )
            self.maps._add(rec)
            return res.output
        call = attention_call(q, k, args)
        if not _lse_path(q, v, call, heads):
            # Materialised: at the lengths where weights are looked at, softmax + weights @ v
            # costs about what the fused kernel does (measured on CPU at L <= 512), so the
            # weights come almost free, and exactly as the math backend computes them. Dropout
            # and retain_grad need this path: the output must be made from these weights.
            check = q.device.type == "cpu"  # attention()'s default check_finite
            if check:
                check_inputs_finite(q, k, v)
            out, w = explicit_attention(q, k, v, call)
            if check:
                check_output_finite(out)
            if o["retain_grad"]:
                if w.requires_grad:
                    w.retain_grad()
                rec.weights = w
                self.maps._add(rec)
                return out
            w = _reduce_heads(w.detach(), heads, o["reduce"])
        else:
            # a few heads kept: the fused call the forward makes anyway, plus its per-row LSE,
            # then the kept heads' weights only (exp(scores - lse): no softmax, no weights @ v)
            res = attention(q, k, v, **{**args, "backend": "auto"}, return_lse=True)
            out = res.output
            with torch.no_grad():
                w = _reduce_heads(lse_weights(q, k, res.lse, call, heads), None, o["reduce"])
        if o["dtype"] is not None:
            w = w.to(o["dtype"])
        if o["topk"] is not None:
            rec.topk_values, rec.topk_indices = w.topk(min(o["topk"], S), dim=-1)
        else:
            rec.weights = w
        self.maps._add(rec)
        return out


def _lse_path(q: Tensor, v: Tensor, call: AttentionCall, head_indices: list[int] | None) -> bool:
    """Whether to record from the fused call's LSE rather than materialise: when only some
    heads are kept (their weights alone are computed), without dropout, and when
    ``attention(..., return_lse=True)`` runs a fused kernel (not the tiled backend's
    pure-PyTorch one, which the explicit path beats)."""
    H = q.shape[1]
    return (
        head_indices is not None
        and len({h % H for h in head_indices}) < H
        and call.dropout_p == 0
        and fused_lse_available(q, v)
        and (call.score_mod is None or call.score_mod.additive)
    )


def reuse_freed_memory(threshold_mb: int = 32) -> bool:
    """Ask glibc to keep freed blocks of up to ``threshold_mb`` in the process (no ``munmap``,
    no trimming) so that the next recording writes its maps into pages already mapped.

    Recorded maps are fresh memory every time; with glibc's defaults each large block is
    returned to the OS when freed, and the next one pays a page fault per 4 KiB page (on a
    busy VM ~2 µs each: at L = 512, 8 heads, 4 layers, a third of the recorded forward). A demo
    server that records every request trades a higher resident size for that time. This is
    process-wide: the CLI's ``demo`` and ``bench`` call it; libraries should leave the choice to
    the application. Returns False where it does not apply (not glibc).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    nbytes = int(threshold_mb) * 2**20
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
    return bool(mallopt(M_MMAP_THRESHOLD, nbytes)) and bool(mallopt(M_TRIM_THRESHOLD, 4 * nbytes))


@contextlib.contextmanager
def record_attention(
    model: nn.Module,
    layers: Sequence[LayerSpec] | LayerSpec | None = None,
    head_indices: Sequence[int] | None = None,
    *,
    reduce: str | Callable[[Tensor], Tensor] | None = None,
    topk: int | None = None,
    dtype: torch.dtype | None = None,
    lazy: bool = False,
    retain_grad: bool = False,
) -> Iterator[AttentionMaps]:
    """Record the attention weights of chosen layers during the forwards inside the block.

    Args:
        model: any module containing attention modules (``MultiHeadAttention`` or
            ``compat.MultiheadAttention``), or one itself.
        layers: None (all), or qualified names (``'blocks.3.attn'``), glob patterns
            (``'blocks.*.cross_attn'``) or indices into ``attention_modules(model)``.
        head_indices: keep only the heads with these indices (a list of indices; ``heads``
            elsewhere in attnlab is a count).
        reduce: 'mean' or 'max' over the kept heads, or a function of (B, h, L, S).
        topk: keep only the k largest weights per query row (values and key indices).
        dtype: store the weights in this dtype (e.g. ``torch.float16``).
        lazy: keep q, k and the log-sum-exp; materialise rows on demand (``maps.rows``).
        retain_grad: keep the full weights in the autograd graph and retain their gradient
            (for gradient-weighted rollout); excludes head_indices/reduce/topk/dtype/lazy.

    Yields:
        ``AttentionMaps``, filled as the model runs. Flags are restored on exit, even on error.
    """
    if topk is not None and (not isinstance(topk, int) or topk < 1):
        raise ValueError(f"topk must be a positive int, got {topk!r}")
    if reduce is not None and reduce not in ("mean", "max") and not callable(reduce):
        raise ValueError(f"reduce must be 'mean', 'max', a callable or None, got {reduce!r}")
    if retain_grad and (
        head_indices is not None
        or reduce is not None
        or topk is not None
        or dtype is not None
        or lazy
    ):
        raise ValueError(
            "retain_grad keeps the full weights: drop head_indices/reduce/topk/dtype/lazy"
        )
    if lazy and topk is not None:
        raise ValueError("lazy and topk exclude each other (lazy keeps no weights)")
    head_indices = None if head_indices is None else [int(h) for h in head_indices]
    opts = dict(
        head_indices=head_indices,
        reduce=reduce,
        topk=topk,
        dtype=dtype,
        lazy=lazy,
        retain_grad=retain_grad,
    )
    maps = AttentionMaps()
    chosen = _select(model, layers)
    saved: list[tuple[nn.Module, Any]] = []
    try:
        for name, mod in chosen:
            saved.append((mod, _set_slot(mod, "recorder", _Recorder(name, mod, maps, opts))))
        yield maps
    finally:
        for mod, prev in reversed(saved):
            _restore_slot(mod, "recorder", prev)


@contextlib.contextmanager
def ablate_heads(
    model: nn.Module,
    heads: Mapping[LayerSpec, Sequence[int]],
    mode: str = "zero",
) -> Iterator[None]:
    """Zero (``'zero'``) or mean-replace (``'mean'``: the head's output averaged over query
    positions, per batch item) the outputs of chosen heads, before the output projection.

    Args:
        heads: ``{layer: [head indices]}`` -- lists of indices, as ``head_indices`` elsewhere
            in capture and analysis (not a count); a layer is a name, glob pattern or index as
            in ``record_attention``. Works on ``MultiHeadAttention`` and on the drop-in
            ``compat.MultiheadAttention`` (before its ``out_proj``).
        mode: 'zero' or 'mean'.
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
    if not isinstance(heads, Mapping):
        raise TypeError("heads must map layers to lists of head indices")
    plan: list[tuple[nn.Module, list[int]]] = []
    for spec, hs in heads.items():
        for _, mod in _select(model, [spec], "heads"):
            hs = [int(h) for h in hs]
            if not all(0 <= h < mod.num_heads for h in hs):
                raise ValueError(f"head indices {hs} out of range for {mod.num_heads} heads")
            plan.append((mod, hs))
    saved = []
    try:
        for mod, hs in plan:
            saved.append(
                (mod, _set_slot(mod, "ablation", _Ablation(hs, mode, _prev(mod, "ablation"))))
            )
        yield
    finally:
        for mod, prev in reversed(saved):
            _restore_slot(mod, "ablation", prev)


def _prev(mod: nn.Module, slot: str):
    return None if mod._observer is None else getattr(mod._observer, slot)


class _Ablation:
    def __init__(self, heads: list[int], mode: str, inner=None):
        self.heads, self.mode, self.inner = heads, mode, inner

    def __call__(self, o: Tensor) -> Tensor:  # o: (B, H, L, Dv)
        if self.inner is not None:  # an enclosing ablation of the same module still applies
            o = self.inner(o)
        sel = torch.zeros(o.shape[1], dtype=torch.bool, device=o.device)
        sel[self.heads] = True
        sel = sel.view(1, -1, 1, 1)
        repl = torch.zeros_like(o) if self.mode == "zero" else o.mean(2, keepdim=True)
        return torch.where(sel, repl, o)
