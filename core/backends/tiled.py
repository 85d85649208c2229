"""The `tiled` backend: exact attention by blocks, skipping the blocks a mask removes.

The FlashAttention idea (Dao et al. 2022; FlashAttention-2, Dao 2023) -- never hold the L x S
score matrix, visit only the key blocks a query block needs -- with torch's fused CPU flash
kernel as the block kernel, because on CPU an eager online-softmax loop costs ~3.5x the fused
kernel while the fused kernel applied to gathered blocks is faster than compiled FlexAttention.

Plan (``plan``): the mask spec's analytic ``block_kinds`` gives EMPTY/PARTIAL/FULL per (query
block, key block); per query block we keep the list of non-empty key blocks. Then

* query blocks with the same key list form one call on contiguous slices (full rows, documents:
  no copy, no mask when every block is FULL);
* the other query blocks with the same number of key blocks (sliding windows) are batched: their
  key blocks are gathered with one advanced-indexing copy into (B * R, H, n * block, D), a small
  additive mask is built only for them, and one fused call runs them all;
* every call holds all of a row's keys, so no softmax merge across calls is needed, and the
  kernel's per-row LSE is the answer's LSE.

Memory: the plan, the gathered keys of one batch of rows (bounded by ``GATHER_BYTES``) and a
mask for PARTIAL blocks only; for full attention nothing beyond the output and the LSE.
Backward: autograd through the fused kernel and the gathers (the gathered blocks are kept for
it). Dropout: passed to the fused kernel per call (torch then uses its math kernel for that
call), so the dropout pattern is that of SDPA applied to the same blocks, not bit-identical to
SDPA on the whole matrix. Non-additive score modifiers (soft-capping), devices without the fused
CPU kernel asked for the LSE, and a missing private op all go to the readable pure-PyTorch
kernel in ``tiled_kernels.OnlineSoftmax`` (no dropout there).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..call import AttentionCall
from ..masks import EMPTY, FULL, to_additive
from .tiled_kernels import (
    flash_parts,
    fused_attention,
    fused_lse_available,
    online_softmax_attention,
)

__all__ = ["forward", "plan", "Plan", "GATHER_BYTES"]

#: budget for the gathered keys/values (and the block mask) of one batched call
GATHER_BYTES = 48 << 20


class Plan:
    """Which key blocks each query block needs. ``needed``/``full``: bool (nQ, nK)."""

    def __init__(self, needed: Tensor, full: Tensor, block: int):
        self.needed, self.full, self.block = needed, full, block

    def density(self) -> float:
        return float(self.needed.float().mean())


def _block_size(call: AttentionCall, L: int, S: int) -> int:
    """64 for local masks (a query block then sees ~w + 64 keys), 128 otherwise."""
    win = call.mask.window if call.mask is not None else None
    return 64 if win is not None and win <= 1024 else 128


def plan(call: AttentionCall, L: int, S: int, block: int | None = None) -> Plan:
    """The block layout of ``call.mask`` (union over batch and heads)."""
    block = block or _block_size(call, L, S)
    nq, nk = -(-L // block), -(-S // block)
    if call.mask is None:
        ones = torch.ones(nq, nk, dtype=torch.bool)
        return Plan(ones, ones.clone(), block)
    kinds = call.mask.block_kinds(L, S, block, block).cpu()  # (B', H', nQ, nK)
    kinds = kinds.flatten(0, 1)
    return Plan((kinds != EMPTY).any(0), (kinds == FULL).all(0), block)


def _expand_heads(t: Tensor, groups: int) -> Tensor:
    return t if groups == 1 else t.repeat_interleave(groups, dim=1)


class _Blocks:
    """A (B, H, N, D) tensor sliced along N at block boundaries.

    Spans are views, never copies: the fused kernel keeps its inputs for backward, so a copied
    span would stay alive until backward -- with causal rows (row r reads blocks 0..r) that was
    O(L^2) memory. Under autograd, one-block spans come from one ``split`` of the tensor (whose
    backward concatenates the pieces' gradients once); longer spans are slices, whose backward
    writes a zero-padded gradient of the whole tensor: one O(S) pass per call, about 1/block of
    the attention's own work.
    """

    def __init__(self, t: Tensor, block: int):
        self.t, self.block = t, block
        self.shape, self.device, self.dtype = t.shape, t.device, t.dtype
        grad = t.requires_grad and torch.is_grad_enabled()
        self.pieces = t.split(block, dim=2) if grad else None

    def span(self, a: int, b: int) -> Tensor:
        """Positions [a, b); ``a`` on a block boundary, ``b`` on one or at the end."""
        if a == 0 and b >= self.shape[2]:
            return self.t
        if self.pieces is None:
            return self.t[:, :, a:b]
        i, j = a // self.block, -(-b // self.block)
        return self.pieces[i] if j - i == 1 else self.t[:, :, a:b]


def _gather_keys(t: _Blocks, keys: list[tuple[int, int]], groups: int) -> Tensor:
    parts = [t.span(a, b) for a, b in keys]
    return _expand_heads(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2), groups)


def _keys_bias(q, call, L, S, rows: tuple[int, int], keys: list[tuple[int, int]]):
    """Additive bias (B'|1, H'|1, rows, keys) of the masks and score modifier over ``keys``."""
    B, H = q.shape[:2]
    r0, r1 = rows
    parts = []
    for a, b in keys:
        m = call.dense_mask(B, H, L, S, q.device, q.dtype, q_range=(r0, r1), kv_range=(a, b))
        if m is None:
            m = torch.zeros(1, 1, 1, b - a, dtype=q.dtype, device=q.device)
        else:  # the fused kernel takes an additive mask
            m = to_additive(m, q.dtype)
        parts.append(m)
    shape = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
    return torch.cat([p.expand(*shape, p.shape[-1]) for p in parts], dim=-1)


def _slice_call(
    q,
    k,
    v,
    call,
    L,
    S,
    rows: tuple[int, int],
    full: list[tuple[int, int]],
    partial: list[tuple[int, int]],
    split: bool,
):
    """Rows [r0, r1) against key ranges: ``full`` ones need no mask, ``partial`` ones do.

    With ``split`` the two sets run as two fused calls merged by their LSEs (no mask over the
    full keys at all); otherwise one call with a mask over all keys.
    """
    qi = q.span(rows[0], rows[1])
    if not split:  # one range where full and partial blocks touch: a view, not a copy
        keys = _merge_ranges(sorted(full + partial))
        bias = _keys_bias(q, call, L, S, rows, keys) if partial else None
        return fused_attention(
            qi,
            _gather_keys(k, keys, call.groups),
            _gather_keys(v, keys, call.groups),
            bias,
            call.scale,
            call.dropout_p,
            call.need_lse,
        )
    parts = []
    if full:
        parts.append((_gather_keys(k, full, call.groups), _gather_keys(v, full, call.groups), None))
    if partial:
        parts.append(
            (
                _gather_keys(k, partial, call.groups),
                _gather_keys(v, partial, call.groups),
                _keys_bias(q, call, L, S, rows, partial),
            )
        )
    return flash_parts(qi, parts, call.scale)


def _gather_call(
    q, k, v, call, L, S, rows: Tensor, lists: Tensor, masked: bool, block: int, split: bool
):
    """Query blocks ``rows`` (R,), each against its own key blocks ``lists`` (R, n): keys are
    gathered with one indexing copy into (B * R, H, n * block, D); blocks fold into the batch."""
    B, H, _, D = q.shape
    Hk, Dv = k.shape[1], v.shape[3]
    R, n = lists.shape
    dev = q.device
    rows_d, flat = rows.to(dev), lists.reshape(-1).to(dev)
    r0, j0 = int(rows[0]), int(lists[0, 0])
    steps = torch.arange(R).view(-1, 1) + torch.arange(n).view(1, -1)
    if bool((rows == r0 + torch.arange(R)).all()) and bool((lists == j0 + steps).all()):
        # a sliding pattern (windows): overlapping views of k/v, no copy (unfold's backward
        # adds the overlapping gradients back)
        qi = q.span(r0 * block, (r0 + R) * block)

        def windows(t):  # (B, Hk, R, n*block, D')
            t = t.span(j0 * block, (j0 + R - 1 + n) * block)
            return t.unfold(2, n * block, block).transpose(-1, -2)

        kj, vj = windows(k), windows(v)
    else:  # index_select copies whole (block, D) tiles: far faster than multi-tensor indexing
        q, k, v = q.t, k.t, v.t
        qi = q[:, :, : (L // block) * block].reshape(B, H, -1, block, D).index_select(2, rows_d)
        kj = k[:, :, : (S // block) * block].reshape(B, Hk, -1, block, D).index_select(2, flat)
        vj = v[:, :, : (S // block) * block].reshape(B, Hk, -1, block, Dv).index_select(2, flat)
    if call.groups > 1:  # GQA: query head h reads key head h // groups
        kj, vj = _expand_heads(kj, call.groups), _expand_heads(vj, call.groups)
    # fold (batch, head) into the kernel's batch and the R query blocks into its heads:
    # q (B*H, R, block, D), k/v (B*H, R, n*block, D)
    qi = qi.reshape(B * H, R, block, D)
    kj = kj.reshape(B * H, R, n * block, D)
    vj = vj.reshape(B * H, R, n * block, Dv)
    bias = None
    if masked:  # only masks that depend on neither the head nor a tensor mask come here
        mask = call.mask
        nb = mask.batch_size or 1
        b = torch.arange(nb, device=dev).view(-1, 1, 1, 1)
        h = torch.zeros(1, 1, 1, 1, dtype=torch.long, device=dev)
        qpos = rows_d.view(1, R, 1, 1) * block + torch.arange(block, device=dev).view(
            1, 1, -1, 1
        )  # (1, R, block, 1)
        kpos = (
            lists.to(dev).view(1, R, 1, n, 1) * block
            + torch.arange(block, device=dev).view(1, 1, 1, 1, -1)
        ).view(1, R, 1, n * block)
        allowed = mask.evaluate(b, h, qpos, kpos, L, S).expand(nb, R, block, n * block)
        bias = to_additive(allowed, q.dtype)  # (B'|1, R, block, n*block)
        if nb > 1:  # a batch-dependent mask: one copy per head
            bias = bias.unsqueeze(1).expand(B, H, R, block, n * block)
            bias = bias.reshape(B * H, R, block, n * block)
    if split:  # differentiable LSE
        out, lse = flash_parts(qi, [(kj, vj, bias)], call.scale)
    else:
        out, lse = fused_attention(qi, kj, vj, bias, call.scale, call.dropout_p, call.need_lse)
    # (B*H, R, block, Dv) -> (B, H, R*block, Dv): a view, rows in the order of ``rows``
    out = out.reshape(B, H, R * block, Dv)
    if lse is not None:
        lse = lse.reshape(B, H, R * block)
    return out, lse


def _merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted [a, b) ranges with touching ones joined."""
    out: list[list[int]] = []
    for a, b in ranges:
        if out and out[-1][1] == a:
            out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _ranges(idx: list[int], block: int, n: int) -> list[tuple[int, int]]:
    """Sorted block indices -> merged position ranges [a, b)."""
    return _merge_ranges([(j * block, min(n, (j + 1) * block)) for j in idx])


def forward(q: Tensor, k: Tensor, v: Tensor, call: AttentionCall):
    if call.need_weights:
        raise ValueError(
            "backend 'tiled' does not return weights: use backend='math' (or "
            "record_attention) to see them"
        )
    B, H, L, _ = q.shape
    S, Dv = k.shape[2], v.shape[3]
    p = plan(call, L, S)
    pure = (
        (call.score_mod is not None and not call.score_mod.additive)
        or (call.need_lse and not fused_lse_available(q, v))
        or q.device.type not in ("cpu", "cuda")
    )
    if pure:
        kx, vx = _expand_heads(k, call.groups), _expand_heads(v, call.groups)
        out, lse = online_softmax_attention(q, kx, vx, call, p.needed, p.block)
        return out, None, (lse if call.need_lse else None)

    # non-finite inputs (which the fused kernel may turn into silent zero rows) are refused
    # by attention() before any backend runs (its check_finite)
    block = p.block
    nq = p.needed.shape[0]
    uniq, inverse = torch.unique(p.needed, dim=0, return_inverse=True)
    # batched gathers need head-independent masks, no tensor mask, no bias, whole blocks
    can_gather = (
        call.attn_mask is None
        and call.score_mod is None
        and (call.mask is None or call.mask.num_heads is None)
    )
    # split FULL and PARTIAL keys into two calls merged by LSE: needs the LSE-returning kernel
    split = call.dropout_p == 0 and fused_lse_available(q, v)
    pieces: list[tuple[int, Tensor, Tensor | None]] = []  # (first position, out, lse)
    qb, kb, vb = _Blocks(q, block), _Blocks(k, block), _Blocks(v, block)
    singles: dict[int, list[tuple[int, list[int]]]] = {}
    last_q_short, last_k_short = L % block != 0, S % block != 0
    nk = p.needed.shape[1]
    for u in range(uniq.shape[0]):
        rows = (inverse == u).nonzero().flatten().tolist()
        idx = uniq[u].nonzero().flatten().tolist()
        if not idx:  # no key at all: zero output, -inf LSE
            for r in rows:
                a, b = r * block, min(L, (r + 1) * block)
                # zeros that stay in the graph, so that backward gives zero gradients
                zero = (q[:, :, a:b, :1] + k[:, :1, :1, :1] + v[:, :1, :1, :1]) * 0
                pieces.append(
                    (
                        a,
                        zero.expand(B, H, b - a, Dv),
                        q.new_full((B, H, b - a), float("-inf"), dtype=torch.float32),
                    )
                )
            continue
        short = (last_q_short and rows[-1] == nq - 1) or (last_k_short and idx[-1] == nk - 1)
        if len(rows) == 1 and can_gather and not short:
            singles.setdefault(len(idx), []).append((rows[0], idx))
            continue
        tensor_bias = call.attn_mask is not None or call.score_mod is not None
        allfull = p.full[rows][:, idx].all(0).tolist()
        fulls = [j for j, f in zip(idx, allfull, strict=True) if f and not tensor_bias]
        full = _ranges(fulls, block, S)
        fullset = set(fulls)
        partial = _ranges([j for j in idx if j not in fullset], block, S)
        # split runs of consecutive rows; bound the mask of each call
        nkeys = sum(b - a for a, b in (partial if split else partial + full))
        max_rows = max(1, (GATHER_BYTES // 4) // (block * nkeys * H)) if partial else nq
        run: list[int] = []
        for r in rows + [None]:
            if run and (r is None or r != run[-1] + 1 or len(run) >= max_rows):
                a, b = run[0] * block, min(L, (run[-1] + 1) * block)
                out, lse = _slice_call(qb, kb, vb, call, L, S, (a, b), full, partial, split)
                pieces.append((a, out, lse))
                run = []
            if r is not None:
                run.append(r)
    D = q.shape[3]
    for n, items in singles.items():
        items.sort()  # torch.unique ordered the lists lexicographically, not by row
        per_row = B * H * n * block * (D + Dv + 1) * q.element_size()
        chunk = max(1, GATHER_BYTES // per_row)
        for c in range(0, len(items), chunk):
            part = items[c : c + chunk]
            rows_t = torch.tensor([r for r, _ in part])
            lists_t = torch.tensor([js for _, js in part])
            masked = not bool(p.full[rows_t.view(-1, 1), lists_t].all())
            if len(part) == 1:  # one row: a plain slice call is cheaper than a gather
                r, js = part[0]
                allfull = p.full[r, js].tolist()
                full = _ranges([j for j, f in zip(js, allfull, strict=True) if f], block, S)
                partial = _ranges([j for j, f in zip(js, allfull, strict=True) if not f], block, S)
                out, lse = _slice_call(
                    qb, kb, vb, call, L, S, (r * block, (r + 1) * block), full, partial, split
                )
                pieces.append((r * block, out, lse))
                continue
            out, lse = _gather_call(qb, kb, vb, call, L, S, rows_t, lists_t, masked, block, split)
            starts = (rows_t * block).tolist()
            if starts == list(range(starts[0], starts[0] + len(part) * block, block)):
                pieces.append((starts[0], out, lse))
            else:  # rows not consecutive: split back into one piece per row
                for i, s in enumerate(starts):
                    pieces.append(
                        (
                            s,
                            out[:, :, i * block : (i + 1) * block],
                            None if lse is None else lse[:, :, i * block : (i + 1) * block],
                        )
                    )
    pieces.sort(key=lambda t: t[0])
    out = pieces[0][1] if len(pieces) == 1 else torch.cat([t[1] for t in pieces], dim=2)
    lse = None
    if call.need_lse:
        dt = torch.float64 if q.dtype == torch.float64 else torch.float32
        lse = torch.cat([t[2].to(dt) for t in pieces], dim=2)
    return out, None, lse
