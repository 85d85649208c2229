"""Attention masks as composable specs.

A mask says which key each query may attend to. It is written once, as a predicate
``mask_mod(b, h, q_idx, kv_idx) -> bool`` in the form of PyTorch's FlexAttention
(He et al., "FlexAttention", 2024), and from that one object we derive

* a dense boolean mask (``dense``) that the `math`/`sdpa` backends and the demos use, and
* a block layout (``block_kinds``) that the `tiled` backend uses to skip key blocks the mask
  removes, so that local attention costs O(L*w) instead of O(L^2). Built-in masks compute their
  block layout analytically; user predicates are evaluated block by block (chunked, eager: no
  ``torch.compile``).

Masks combine with ``&``, ``|`` and ``~``. True means "may attend". Backends ask a mask about
its structure through public queries (``factors``, ``is_full``, ``causal_alignment``,
``window``, ``key_lengths``, ``evaluate``), never through its private classes.

Tensor masks -- bool (True = may attend) or additive float (-inf = masked), the two forms of
``F.scaled_dot_product_attention``'s ``attn_mask`` -- and biases are merged by one algebra here
(``merge_attn_masks``, ``combine``, ``to_additive``, ``to_allowed``): bool AND bool stays bool,
anything with a float becomes additive float.

Index tensors broadcast: ``b`` (B,1,1,1), ``h`` (1,H,1,1), ``q_idx`` (1,1,L,1), ``kv_idx``
(1,1,1,S). A user predicate must therefore be written with tensor operations (comparisons,
``&``, ``|``, indexing captured tensors), exactly as a FlexAttention ``mask_mod``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# block kinds of a (query block, key block) pair; AND is min, OR is max, NOT is 2 - x
EMPTY, PARTIAL, FULL = 0, 1, 2

__all__ = [
    "EMPTY",
    "PARTIAL",
    "FULL",
    "Mask",
    "full",
    "causal",
    "sliding_window",
    "key_padding",
    "document",
    "prefix_lm",
    "cross",
    "from_predicate",
    "merge_attn_masks",
    "combine",
    "to_additive",
    "to_allowed",
]


class Mask:
    """Base class of mask specs. Subclasses implement ``_eval`` and, ideally, ``_blocks``."""

    #: the mask depends on the batch index (padding lengths, document ids)
    batch_size: int | None = None
    #: the mask depends on the head index
    num_heads: int | None = None

    # -- what subclasses provide -------------------------------------------------------------
    def _eval(self, b: Tensor, h: Tensor, q: Tensor, kv: Tensor, L: int, S: int) -> Tensor:
        raise NotImplementedError

    def _blocks(self, qs: Tensor, qe: Tensor, ks: Tensor, ke: Tensor, L: int, S: int) -> Tensor:
        """Kinds of blocks [qs, qe) x [ks, ke): qs/qe (nQ,1), ks/ke (1,nK), inclusive-exclusive.

        Returns int8 broadcastable to (B, H, nQ, nK). The default evaluates the dense mask.
        """
        return _blocks_by_evaluation(self, qs, qe, ks, ke, L, S)

    def describe(self) -> str:
        return type(self).__name__

    # -- public API ---------------------------------------------------------------------------
    def mask_mod(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        """The FlexAttention-form predicate (alignment-free masks only use square L = S)."""
        L = int(q_idx.max()) + 1
        S = int(kv_idx.max()) + 1
        return self._eval(b, h, q_idx, kv_idx, L, S)

    def evaluate(
        self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, L: int, S: int
    ) -> Tensor:
        """The predicate on broadcasting index tensors, for full lengths L and S.

        Args:
            b, h, q_idx, kv_idx: integer index tensors that broadcast against each other, in
                the roles of (B,1,1,1), (1,H,1,1), (1,1,Lq,1), (1,1,1,Sk) (any positions, e.g.
                gathered blocks).
            L, S: the whole query and key lengths (bottom-right alignment needs them).

        Returns:
            bool, True where the query may attend, broadcastable to the indices' shape.
        """
        return self._eval(b, h, q_idx, kv_idx, L, S)

    # -- structure queries: what a backend may ask without knowing the classes ---------------
    def factors(self) -> tuple[Mask, ...]:
        """The masks whose AND this mask is, flattened: ``(self,)`` unless it is ``a & b``."""
        return (self,)

    @property
    def is_full(self) -> bool:
        """True when the mask is ``full()`` (or an ``&`` of them): every pair is allowed."""
        return False

    @property
    def causal_alignment(self) -> str | None:
        """'top_left' or 'bottom_right' when the mask is exactly ``causal(align)``, else None."""
        return None

    @property
    def window(self) -> int | None:
        """Width of the narrowest ``sliding_window`` the mask is or is an ``&`` with, or None."""
        return None

    @property
    def key_lengths(self) -> Tensor | None:
        """Per-batch numbers of valid keys (B,) or (1,) when the mask is exactly
        ``key_padding(lengths)``, else None."""
        return None

    def dense(
        self,
        L: int,
        S: int | None = None,
        *,
        batch: int | None = None,
        heads: int | None = None,
        device: torch.device | str | None = None,
        q_range: tuple[int, int] | None = None,
        kv_range: tuple[int, int] | None = None,
    ) -> Tensor:
        """Boolean mask of shape (B', H', Lq', S') where B'/H' are 1 unless the mask varies.

        Args:
            L: query length. S: key length (defaults to L).
            batch, heads: sizes to evaluate when the mask depends on them.
            q_range, kv_range: evaluate only rows [q0, q1) / columns [k0, k1).
        """
        S = L if S is None else S
        _check_len("L", L)
        _check_len("S", S)
        device = torch.device(device) if device is not None else self._device()
        q0, q1 = q_range or (0, L)
        k0, k1 = kv_range or (0, S)
        b, h = self._bh(batch, heads, device)
        q = torch.arange(q0, q1, device=device).view(1, 1, -1, 1)
        kv = torch.arange(k0, k1, device=device).view(1, 1, 1, -1)
        m = self._eval(b, h, q, kv, L, S)
        return m.expand(b.shape[0], h.shape[1], q1 - q0, k1 - k0)

    def block_kinds(self, L: int, S: int, block_q: int, block_k: int, *, device=None) -> Tensor:
        """int8 (B', H', ceil(L/block_q), ceil(S/block_k)): EMPTY, PARTIAL or FULL per block."""
        _check_len("L", L)
        _check_len("S", S)
        device = torch.device(device) if device is not None else self._device()
        qs = torch.arange(0, L, block_q, device=device).view(-1, 1)
        ks = torch.arange(0, S, block_k, device=device).view(1, -1)
        kinds = self._blocks(qs, (qs + block_q).clamp(max=L), ks, (ks + block_k).clamp(max=S), L, S)
        while kinds.dim() < 4:
            kinds = kinds.unsqueeze(0)
        return kinds.to(torch.int8)

    def allowed_pairs(self, L: int, S: int | None = None, *, block: int = 256) -> float:
        """Mean number of (query, key) pairs allowed per batch item and head (for FLOP counts).

        FULL blocks count by their area; only rows of blocks holding a PARTIAL block are
        evaluated, one row of blocks at a time.
        """
        S = L if S is None else S
        kinds = self.block_kinds(L, S, block, block)  # (B', H', nQ, nK)
        nb, nh = kinds.shape[:2]
        qs = torch.arange(0, L, block)
        ks = torch.arange(0, S, block)
        rows = (torch.clamp(qs + block, max=L) - qs).view(1, 1, -1, 1)
        cols = (torch.clamp(ks + block, max=S) - ks).view(1, 1, 1, -1)
        total = float(((kinds == FULL) * rows * cols).sum()) / (nb * nh)
        for i in (kinds == PARTIAL).any(-1).any(0).any(0).nonzero().flatten().tolist():
            r0, r1 = i * block, min(L, (i + 1) * block)
            d = self.dense(L, S, batch=self.batch_size, heads=self.num_heads, q_range=(r0, r1))
            part = (kinds[:, :, i] == PARTIAL).repeat_interleave(block, dim=-1)[..., :S]
            total += float((d & part[:, :, None, :]).sum()) / (nb * nh)
        return total

    def __and__(self, other: Mask) -> Mask:
        return _And(_as_mask(self), _as_mask(other))

    def __or__(self, other: Mask) -> Mask:
        return _Or(_as_mask(self), _as_mask(other))

    def __invert__(self) -> Mask:
        return _Not(self)

    def __repr__(self) -> str:
        return self.describe()

    # -- helpers -------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return torch.device("cpu")

    def _bh(self, batch, heads, device) -> tuple[Tensor, Tensor]:
        nb = self.batch_size if self.batch_size is not None else 1
        if batch is not None and self.batch_size is not None and batch != self.batch_size:
            raise ValueError(
                f"mask {self.describe()} was built for batch {self.batch_size}, got batch {batch}"
            )
        nh = self.num_heads if self.num_heads is not None else 1
        if heads is not None and self.num_heads is not None and heads != self.num_heads:
            raise ValueError(
                f"mask {self.describe()} was built for {self.num_heads} heads, got {heads}"
            )
        b = torch.arange(nb, device=device).view(-1, 1, 1, 1)
        h = torch.arange(nh, device=device).view(1, -1, 1, 1)
        return b, h


def _check_len(name: str, n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive int, got {n!r}")


def _as_mask(m) -> Mask:
    if not isinstance(m, Mask):
        raise TypeError(f"masks combine only with masks, got {type(m).__name__}")
    return m


def _merge_size(a: int | None, b: int | None, what: str) -> int | None:
    if a is not None and b is not None and a != b:
        raise ValueError(f"combined masks disagree on {what}: {a} vs {b}")
    return a if a is not None else b


def _blocks_by_evaluation(mask: Mask, qs, qe, ks, ke, L: int, S: int, chunk: int = 1 << 22):
    """Classify blocks by evaluating the predicate, a few rows of blocks at a time."""
    nq, nk = qs.shape[0], ks.shape[1]
    bq = int((qe - qs).max())
    bk = int((ke - ks).max())
    out = None
    rows_per = max(1, chunk // max(1, bq * S))
    for i0 in range(0, nq, rows_per):
        i1 = min(nq, i0 + rows_per)
        r0, r1 = int(qs[i0, 0]), int(qe[i1 - 1, 0])
        d = mask.dense(
            L, S, batch=mask.batch_size, heads=mask.num_heads, device=qs.device, q_range=(r0, r1)
        )
        B, H = d.shape[:2]
        # pad to whole blocks so that the reshape below is exact; padding counts as neither
        pad_q = (i1 - i0) * bq - (r1 - r0)
        pad_k = nk * bk - S
        dd = torch.nn.functional.pad(d.to(torch.int8), (0, pad_k, 0, pad_q), value=-1)
        dd = dd.view(B, H, i1 - i0, bq, nk, bk)  # (B, H, nQ', bq, nK, bk)
        any_ = (dd == 1).any(5).any(3)
        all_ = (dd != 0).all(5).all(3)
        kinds = torch.where(all_, FULL, torch.where(any_, PARTIAL, EMPTY)).to(torch.int8)
        out = kinds if out is None else torch.cat([out, kinds], dim=2)
    return out


# ------------------------------------------------------------------------------------------
# primitives
# ------------------------------------------------------------------------------------------
class _Full(Mask):
    is_full = True

    def _eval(self, b, h, q, kv, L, S):
        return torch.ones((1, 1, 1, 1), dtype=torch.bool, device=q.device).expand(
            1, 1, q.shape[2], kv.shape[3]
        )

    def _blocks(self, qs, qe, ks, ke, L, S):
        return torch.full((qs.shape[0], ks.shape[1]), FULL, dtype=torch.int8, device=qs.device)

    def describe(self) -> str:
        return "full"


class _Diagonal(Mask):
    """Masks defined by d = (q + offset) - kv: causal and sliding windows."""

    def __init__(self, lo: int | None, hi: int | None, align: str):
        if align not in ("top_left", "bottom_right"):
            raise ValueError(f"align must be 'top_left' or 'bottom_right', got {align!r}")
        self.lo, self.hi, self.align = lo, hi, align

    def _offset(self, L: int, S: int) -> int:
        return 0 if self.align == "top_left" else S - L

    def _eval(self, b, h, q, kv, L, S):
        d = q + self._offset(L, S) - kv
        m = torch.ones_like(d, dtype=torch.bool)
        if self.lo is not None:
            m = m & (d >= self.lo)
        if self.hi is not None:
            m = m & (d <= self.hi)
        return m

    def _blocks(self, qs, qe, ks, ke, L, S):
        off = self._offset(L, S)
        dmin = qs + off - (ke - 1)  # smallest d in the block
        dmax = qe - 1 + off - ks  # largest d in the block
        lo = self.lo if self.lo is not None else -(1 << 62)
        hi = self.hi if self.hi is not None else 1 << 62
        full_ = (dmin >= lo) & (dmax <= hi)
        empty = (dmax < lo) | (dmin > hi)
        return torch.where(full_, FULL, torch.where(empty, EMPTY, PARTIAL)).to(torch.int8)


class _Causal(_Diagonal):
    def __init__(self, align: str):
        super().__init__(0, None, align)

    @property
    def causal_alignment(self) -> str | None:
        return self.align

    def describe(self) -> str:
        return "causal" if self.align == "top_left" else "causal(bottom_right)"


class _Window(_Diagonal):
    def __init__(self, window: int, causal: bool, align: str):
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        self.width, self.causal = window, causal
        if causal:
            super().__init__(0, window - 1, align)  # the query and the w - 1 keys before it
        else:
            r = window // 2
            super().__init__(-r, r, align)  # w // 2 keys on either side (Longformer's width)

    @property
    def window(self) -> int | None:
        return self.width

    def describe(self) -> str:
        return f"{'causal ' if self.causal else ''}window {self.width}"


def _as_long(x, name: str) -> Tensor:
    if isinstance(x, int):
        x = torch.tensor([x])
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.dtype.is_floating_point or x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must hold integers, got dtype {x.dtype}")
    return x.long()


class _KeyRange(Mask):
    """kv < n[b]: key padding (lengths) and the prefix of a prefix-LM."""

    def __init__(self, n, name: str):
        n = _as_long(n, name)
        if n.dim() != 1 or n.numel() == 0:
            raise ValueError(f"{name} must be an int or a 1-D tensor of per-batch lengths")
        if (n < 0).any():
            raise ValueError(f"{name} must be >= 0, got {n.tolist()}")
        self.n, self.name = n, name
        self.batch_size = n.numel() if n.numel() > 1 else None

    def _device(self):
        return self.n.device

    @property
    def key_lengths(self) -> Tensor | None:
        return self.n if self.name == "key_padding" else None  # a prefix is not padding

    def _eval(self, b, h, q, kv, L, S):
        n = self.n.to(q.device)[b.clamp(max=self.n.numel() - 1)]  # (B,1,1,1)
        return (kv < n).expand(-1, -1, q.shape[2], -1)

    def _blocks(self, qs, qe, ks, ke, L, S):
        n = self.n.to(qs.device).view(-1, 1, 1, 1)
        full_ = (ke <= n).expand(-1, -1, qs.shape[0], -1)
        empty = (ks >= n).expand(-1, -1, qs.shape[0], -1)
        return torch.where(full_, FULL, torch.where(empty, EMPTY, PARTIAL)).to(torch.int8)

    def describe(self) -> str:
        v = self.n.tolist()
        return f"{self.name}({v[0] if len(v) == 1 else v})"


class _Document(Mask):
    """q_ids[b, q] == kv_ids[b, kv]: attention stays within a document (packed sequences)."""

    def __init__(self, q_ids, kv_ids=None):
        q_ids = _as_long(q_ids, "doc_ids")
        kv_ids = q_ids if kv_ids is None else _as_long(kv_ids, "kv_doc_ids")
        if q_ids.dim() == 1:
            q_ids = q_ids[None]
        if kv_ids.dim() == 1:
            kv_ids = kv_ids[None]
        if q_ids.dim() != 2 or kv_ids.dim() != 2 or q_ids.shape[0] != kv_ids.shape[0]:
            raise ValueError("doc_ids must be (L,) or (B, L), and kv_doc_ids the same batch")
        self.q_ids, self.kv_ids = q_ids, kv_ids
        self.batch_size = q_ids.shape[0] if q_ids.shape[0] > 1 else None

    def _device(self):
        return self.q_ids.device

    def _check(self, L, S):
        if self.q_ids.shape[1] != L or self.kv_ids.shape[1] != S:
            raise ValueError(
                f"document ids cover {self.q_ids.shape[1]} queries / {self.kv_ids.shape[1]} "
                f"keys, but attention has L={L}, S={S}"
            )

    def _eval(self, b, h, q, kv, L, S):
        self._check(L, S)
        qi = self.q_ids.to(q.device)
        ki = self.kv_ids.to(q.device)
        bb = b.clamp(max=qi.shape[0] - 1)
        return qi[bb, q] == ki[bb, kv]

    def _blocks(self, qs, qe, ks, ke, L, S):
        self._check(L, S)

        def ranges(ids, starts, ends):  # per block min/max id, (B, nBlocks)
            idx = torch.arange(ids.shape[1], device=ids.device)
            blk = torch.bucketize(idx, starts.flatten(), right=True) - 1
            nb = starts.numel()
            lo = torch.full((ids.shape[0], nb), 1 << 62, dtype=torch.long, device=ids.device)
            hi = torch.full_like(lo, -(1 << 62))
            lo.scatter_reduce_(1, blk.expand_as(ids), ids, "amin")
            hi.scatter_reduce_(1, blk.expand_as(ids), ids, "amax")
            return lo, hi

        qlo, qhi = ranges(self.q_ids.to(qs.device), qs, qe)
        klo, khi = ranges(self.kv_ids.to(qs.device), ks, ke)
        qlo, qhi = qlo[:, None, :, None], qhi[:, None, :, None]
        klo, khi = klo[:, None, None, :], khi[:, None, None, :]
        full_ = (qlo == qhi) & (klo == khi) & (qlo == klo)
        empty = (qhi < klo) | (khi < qlo)  # id ranges do not overlap
        return torch.where(full_, FULL, torch.where(empty, EMPTY, PARTIAL)).to(torch.int8)

    def describe(self) -> str:
        n = int(self.q_ids[0].unique().numel())
        return f"document({n} docs)"


class _Predicate(Mask):
    def __init__(self, fn: Callable, batch_size: int | None, num_heads: int | None, name: str):
        if not callable(fn):
            raise TypeError("mask_mod must be callable as mask_mod(b, h, q_idx, kv_idx)")
        self.fn, self.batch_size, self.num_heads, self.name = fn, batch_size, num_heads, name

    def _eval(self, b, h, q, kv, L, S):
        m = self.fn(b, h, q, kv)
        if not isinstance(m, Tensor) or m.dtype != torch.bool:
            raise TypeError("mask_mod must return a bool tensor (use tensor comparisons)")
        return m.expand(torch.broadcast_shapes(m.shape, (1, 1, q.shape[2], kv.shape[3])))

    def describe(self) -> str:
        return self.name


class _And(Mask):
    def __init__(self, a: Mask, b: Mask):
        self.a, self.b = a, b
        self.batch_size = _merge_size(a.batch_size, b.batch_size, "batch size")
        self.num_heads = _merge_size(a.num_heads, b.num_heads, "heads")

    def _device(self):
        return self.a._device()

    def _eval(self, b, h, q, kv, L, S):
        return self.a._eval(b, h, q, kv, L, S) & self.b._eval(b, h, q, kv, L, S)

    def factors(self) -> tuple[Mask, ...]:
        return self.a.factors() + self.b.factors()

    @property
    def is_full(self) -> bool:
        return self.a.is_full and self.b.is_full

    @property
    def window(self) -> int | None:
        ws = [w for w in (self.a.window, self.b.window) if w is not None]
        return min(ws) if ws else None

    def _blocks(self, qs, qe, ks, ke, L, S):
        return torch.minimum(
            self.a._blocks(qs, qe, ks, ke, L, S), self.b._blocks(qs, qe, ks, ke, L, S)
        )

    def describe(self) -> str:
        return f"({self.a.describe()} & {self.b.describe()})"


class _Or(_And):
    def _eval(self, b, h, q, kv, L, S):
        return self.a._eval(b, h, q, kv, L, S) | self.b._eval(b, h, q, kv, L, S)

    # _And's structure answers do not hold for a union
    def factors(self) -> tuple[Mask, ...]:
        return (self,)

    @property
    def is_full(self) -> bool:
        return self.a.is_full or self.b.is_full

    @property
    def window(self) -> int | None:
        return None  # a union is as wide as its wider side, and that side may be unbounded

    def _blocks(self, qs, qe, ks, ke, L, S):
        # the union of two partial blocks may be full: PARTIAL is the safe answer
        return torch.maximum(
            self.a._blocks(qs, qe, ks, ke, L, S), self.b._blocks(qs, qe, ks, ke, L, S)
        )

    def describe(self) -> str:
        return f"({self.a.describe()} | {self.b.describe()})"


class _Not(Mask):
    def __init__(self, a: Mask):
        self.a, self.batch_size, self.num_heads = a, a.batch_size, a.num_heads

    def _device(self):
        return self.a._device()

    def _eval(self, b, h, q, kv, L, S):
        return ~self.a._eval(b, h, q, kv, L, S)

    def _blocks(self, qs, qe, ks, ke, L, S):
        return (FULL - self.a._blocks(qs, qe, ks, ke, L, S)).to(torch.int8)

    def describe(self) -> str:
        return f"~{self.a.describe()}"


# ------------------------------------------------------------------------------------------
# constructors (the public vocabulary)
# ------------------------------------------------------------------------------------------
def full() -> Mask:
    """Every query sees every key."""
    return _Full()


def causal(align: str = "top_left") -> Mask:
    """kv <= q. ``align='top_left'`` matches SDPA's ``is_causal`` when L != S;
    ``'bottom_right'`` aligns the last query with the last key (decoding with a KV cache)."""
    return _Causal(align)


def sliding_window(window: int, *, causal: bool = True, align: str = "top_left") -> Mask:
    """Local attention of width ``window``.

    Causal: the query and the ``window - 1`` keys before it (Mistral's sliding window).
    Symmetric: ``window // 2`` keys on each side and the query itself (Longformer).
    """
    return _Window(window, causal, align)


def key_padding(lengths) -> Mask:
    """Keys at positions >= lengths[b] are padding. ``lengths``: int or (B,) ints."""
    return _KeyRange(lengths, "key_padding")


def document(doc_ids, kv_doc_ids=None) -> Mask:
    """Packed sequences: a query sees only keys of its own document. ids: (L,) or (B, L)."""
    return _Document(doc_ids, kv_doc_ids)


def prefix_lm(prefix) -> Mask:
    """Prefix-LM (T5/UniLM): the first ``prefix`` keys are seen by all, the rest causally."""
    return _KeyRange(prefix, "prefix") | causal()


def cross(kv_lengths=None) -> Mask:
    """Cross attention (Lq != Lk): every key, or the first ``kv_lengths[b]`` of them."""
    return full() if kv_lengths is None else key_padding(kv_lengths)


def from_predicate(
    mask_mod: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor],
    *,
    batch_size: int | None = None,
    num_heads: int | None = None,
    name: str = "custom",
) -> Mask:
    """Wrap a FlexAttention-style ``mask_mod(b, h, q_idx, kv_idx) -> bool tensor``.

    Give ``batch_size`` / ``num_heads`` when the predicate depends on ``b`` / ``h``; otherwise it
    is evaluated with ``b = h = 0`` and broadcast.
    """
    return _Predicate(mask_mod, batch_size, num_heads, name)


# ------------------------------------------------------------------------------------------
# tensor masks: bool (True = may attend) and additive float (-inf = masked), merged one way
# ------------------------------------------------------------------------------------------
_NEG_INF = float("-inf")


def to_allowed(mask: Tensor) -> Tensor:
    """bool, True where a query may attend: a bool mask as it is, an additive one where it is
    above -inf (a NaN entry counts as masked)."""
    return mask if mask.dtype == torch.bool else mask > _NEG_INF


def to_additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive float mask of ``dtype``: 0 where a bool mask allows, -inf where it masks; a
    float mask is cast."""
    if mask.dtype == torch.bool:
        zeros = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return zeros.masked_fill_(~mask, _NEG_INF)
    return mask.to(dtype)


def merge_attn_masks(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """The mask that applies both ``a`` and ``b`` (None = no mask), broadcast together.

    bool & bool -> bool (AND); bool with float -> the float with -inf where the bool masks;
    float + float -> their sum (biases add).
    """
    if a is None or b is None:
        return b if a is None else a
    if a.dtype == torch.bool and b.dtype == torch.bool:
        return a & b
    if a.dtype == torch.bool:
        a, b = b, a  # a is float from here on
    if b.dtype == torch.bool:
        # where, not masked_fill: the bool mask may be the larger one after broadcasting
        return torch.where(b, a, _NEG_INF)
    return a + b


def combine(*parts: Tensor | None, dtype: torch.dtype | None = None) -> Tensor | None:
    """``merge_attn_masks`` over any number of masks and biases; None parts are skipped.

    Args:
        parts: bool masks (True = may attend), additive float masks or biases, or None.
        dtype: float parts are cast to it first (the scores' dtype), when given.

    Returns:
        None if every part is None; bool if every part is bool; else additive float.
    """
    out = None
    for p in parts:
        if p is not None and dtype is not None and p.dtype != torch.bool:
            p = p.to(dtype)
        out = merge_attn_masks(out, p)
    return out
