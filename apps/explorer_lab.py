"""The Core Explorer's computations: example inputs, mask specs from form values, cost
estimates, and measuring one attention call (no Gradio and no pictures here).

The memory estimates follow the backends' own accounting: the `math` backend materialises the
(B, H, L, S) scores, the weights and one softmax temporary (about 3 float32 copies; Vaswani et
al. 2017); `sdpa` with a mask spec folds it into one dense (L, S) mask that torch's CPU flash
kernel turns into a float bias; `tiled` (FlashAttention, Dao et al. 2022) keeps O(L*D) plus a
few blocks; `linear` (Katharopoulos et al. 2020) keeps O(L*D) plus, when causal, its prefix
sums. They are used to refuse a run *before* anything is allocated.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from attnlab.core import attention, masks, timing
from attnlab.core.attention import BACKENDS, AttentionCall, choose_backend
from attnlab.core.backends.math import safe_softmax
from attnlab.core.timing import peak_bytes

from .explorer_inputs import INPUT_KINDS, make_inputs

__all__ = [
    "MASK_KINDS",
    "INPUT_KINDS",
    "BACKEND_CHOICES",
    "HEAD_DIM",
    "MAX_L",
    "Problem",
    "make_mask",
    "make_inputs",
    "estimate_bytes",
    "estimate_seconds",
    "estimate_request_seconds",
    "QUICK_SECONDS",
    "memory_budget",
    "allowed_count",
    "check_fits",
    "resolve_backend",
    "available_backends",
    "reference",
    "Reference",
    "measure",
    "peak_bytes",
    "fmt_bytes",
]

MASK_KINDS = ("full", "causal", "local window", "key padding", "document", "prefix-LM", "cross")
BACKEND_CHOICES = ("auto", *BACKENDS)
HEAD_DIM = 64
MAX_L = 16384
# sustained float32 throughput per backend on a 2-core CPU (NOTES.md), for time estimates only
_RATE = {"math": 40e9, "sdpa": 120e9, "tiled": 60e9, "linear": 20e9}
_MAX_SECONDS = 10.0  # refuse a request estimated to take longer (estimate_request_seconds)
QUICK_SECONDS = 1.5  # requests estimated above this run on the long-job queue
REFERENCE_FLOPS = 5e9  # cost cap of the math reference: rows are sampled above it
HEAD_VIEW_MAX = 4_000_000  # weights entries (H * L * S) materialised for the head view


@dataclass(frozen=True)
class Problem:
    """One explorer setting, validated: lengths, heads, the mask and the chosen backend."""

    mask_kind: str
    mask: masks.Mask
    L: int
    S: int
    heads: int
    backend: str  # as chosen: "auto" or a backend name
    causal_like: bool  # the mask lets a query see no later key (linear attention's causal mode)

    @property
    def call_mask(self) -> masks.Mask | None:
        """The mask to pass to `attention`: None when every key is allowed, so that no
        backend pays for a dense all-True mask."""
        return None if self.mask_kind in ("full", "cross") else self.mask


def _int(value, name: str, lo: int, hi: int | None = None) -> int:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if not math.isfinite(f) or f != int(f):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    n = int(f)
    if n < lo or (hi is not None and n > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ValueError(f"{name} must be {rng}, got {n}")
    return n


def make_mask(
    kind: str,
    L: int,
    *,
    window: int = 8,
    symmetric: bool = False,
    valid_keys: int | None = None,
    n_docs: int = 2,
    prefix: int = 4,
    kv_len: int | None = None,
    heads: int = 4,
    backend: str = "auto",
) -> Problem:
    """Validate the form values and build the mask spec; ValueError names what is wrong."""
    if kind not in MASK_KINDS:
        raise ValueError(f"mask must be one of {', '.join(MASK_KINDS)}; got {kind!r}")
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {', '.join(BACKEND_CHOICES)}; got {backend!r}")
    L = _int(L, "L (sequence length)", 2, MAX_L)
    heads = _int(heads, "heads", 1, 16)
    S, causal_like = L, False
    if kind == "full":
        m = masks.full()
    elif kind == "causal":
        m, causal_like = masks.causal(), True
    elif kind == "local window":
        w = _int(window, "window w", 1)
        if w > L:
            raise ValueError(
                f"window w = {w} is larger than L = {L}: a window that covers the "
                f"whole sequence is just {'full' if symmetric else 'causal'} "
                f"attention. Pick w <= {L}."
            )
        m, causal_like = masks.sliding_window(w, causal=not symmetric), not symmetric
    elif kind == "key padding":
        if valid_keys is None or (isinstance(valid_keys, str) and not valid_keys.strip()):
            raise ValueError(
                "key padding needs the number of valid (non-padding) keys: the "
                "field is empty. Enter a number between 1 and L."
            )
        n = _int(valid_keys, "valid keys (key padding)", 0)
        if n == 0:
            raise ValueError(
                "key padding leaves no valid key (valid keys = 0): every query "
                "would attend to nothing. Enter at least 1."
            )
        if n > L:
            raise ValueError(f"valid keys = {n} exceeds L = {L}: at most L keys can be valid.")
        m = masks.key_padding(n)
    elif kind == "document":
        n = _int(n_docs, "documents", 1)
        if n > L:
            raise ValueError(
                f"{n} documents do not fit in L = {L} positions (one token each "
                f"at least). Pick at most {L}."
            )
        m = masks.document(doc_ids(L, n))
    elif kind == "prefix-LM":
        p = _int(prefix, "prefix length", 0)
        if p > L:
            raise ValueError(f"prefix length {p} is longer than L = {L}. Pick at most {L}.")
        m = masks.prefix_lm(p)
    else:  # cross
        S = _int(kv_len if kv_len is not None else L, "Lk (keys for cross attention)", 1, MAX_L)
        m = masks.cross()
    return Problem(kind, m, L, S, heads, backend, causal_like)


def doc_ids(L: int, n: int) -> Tensor:
    """Document id of each position when L positions are split into n near-equal documents."""
    return torch.arange(L) * n // L


def available_backends() -> tuple[str, ...]:
    """The backends installed in ``attnlab.core.backends`` (looked up, not imported)."""
    return tuple(
        b for b in BACKENDS if importlib.util.find_spec(f"attnlab.core.backends.{b}") is not None
    )


def resolve_backend(prob: Problem) -> str:
    """The backend that will run: ``auto`` resolved the way `attention` resolves it."""
    name = prob.backend
    if name == "auto":
        call = _call(prob.call_mask, HEAD_DIM, need_weights=False)
        name = choose_backend(call, prob.L, prob.S)
    if name not in available_backends():
        raise ValueError(
            f"the {name} backend is not available in this installation; "
            f"pick one of {', '.join(available_backends())}"
        )
    return name


def estimate_bytes(backend: str, prob: Problem, D: int = HEAD_DIM) -> int:
    """Bytes one forward call allocates beyond its inputs (B = 1, float32)."""
    H, L, S = prob.heads, prob.L, prob.S
    out = H * L * D * 4
    if backend == "math":
        return H * L * S * 4 * 3 + out
    if backend == "sdpa":
        plain = prob.mask_kind in ("full", "causal", "cross")  # no dense mask is built
        return (0 if plain else L * S * 5) + out * 2
    if backend == "tiled":
        return out * 3 + H * min(L, 256) * min(S, 1024) * 4 * 3 + H * L * 8
    if backend == "linear":
        return out * 4 + H * D * D * 4 * 4 + (H * L * D * 4 * 2 if prob.causal_like else 0)
    raise ValueError(f"unknown backend {backend!r}")


def estimate_seconds(backend: str, prob: Problem, D: int = HEAD_DIM) -> float:
    """Rough forward time on this CPU class: useful FLOPs over a sustained throughput."""
    H, L, S = prob.heads, prob.L, prob.S
    if backend == "linear":
        flops = 4.0 * H * (L + S) * D * D
    elif backend == "tiled":
        flops = 4.0 * H * approx_pairs(prob) * D
    else:
        flops = 4.0 * H * L * S * D * (0.5 if prob.mask_kind == "causal" else 1.0)
    return flops / _RATE[backend]


def estimate_request_seconds(backend: str, prob: Problem, D: int = HEAD_DIM) -> float:
    """Rough wall time of a whole explorer request: the first run, the memory-measuring run and
    the timed repeats (1 s budget), the `math` reference (at most ``REFERENCE_FLOPS``), the
    head view's weights when they are drawn, and the pictures."""
    run = estimate_seconds(backend, prob, D)
    runs = 2 * run + min(1.0, 4 * run)
    H, L, S = prob.heads, prob.L, prob.S
    ref_scores = min(H * L * S, REFERENCE_FLOPS / (4.0 * D))
    # matmuls at the math rate, plus ~8 elementwise passes over the scores (~1 ns each)
    per_score = 4.0 * D / _RATE["math"] + 8e-9
    head_view = H * L * S * per_score if H * L * S <= HEAD_VIEW_MAX else 0.0
    return runs + ref_scores * per_score + head_view + 0.3


def approx_pairs(prob: Problem) -> float:
    """Allowed (query, key) pairs, estimated from the mask's block layout without evaluating
    any block (a partial block counts half): cheap even at L = 16384."""
    if prob.call_mask is None:
        return float(prob.L * prob.S)
    bq = max(64, -(-prob.L // 64))
    bk = max(64, -(-prob.S // 64))
    kinds = prob.mask.block_kinds(prob.L, prob.S, bq, bk)[0, 0].float()
    return float((kinds / 2).sum()) * bq * bk  # FULL = 2 -> 1 block, PARTIAL = 1 -> half


def allowed_count(mask: masks.Mask | None, L: int, S: int) -> int:
    """Exact number of allowed (query, key) pairs, counted by chunks of rows (memory
    O(2^22 + S))."""
    if mask is None:
        return L * S
    step = max(1, (1 << 22) // S)
    return sum(int(mask.dense(L, S, q_range=(r, min(L, r + step))).sum())
               for r in range(0, L, step))  # fmt: skip


def memory_budget() -> int:
    """Bytes one explorer run may allocate: half the available memory, at most 4 GiB."""
    env = os.environ.get("ATTNLAB_EXPLORER_MAX_MB")
    if env:
        return int(float(env) * 2**20)
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    return min(avail // 2 if avail else 2**31, 4 * 2**30)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def check_fits(prob: Problem) -> str:
    """Refuse (ValueError) a run whose backend would not fit in memory or time, *before*
    allocating; the message says why and which backends fit. Returns the backend to run."""
    name = resolve_backend(prob)
    budget = memory_budget()
    need = estimate_bytes(name, prob)
    secs = estimate_request_seconds(name, prob)
    if need <= budget and secs <= _MAX_SECONDS:
        return name
    fits = [
        b
        for b in available_backends()
        if estimate_bytes(b, prob) <= budget and estimate_request_seconds(b, prob) <= _MAX_SECONDS
    ]
    alt = ", ".join(f"{b} (~{fmt_bytes(estimate_bytes(b, prob))})" for b in fits)
    if need > budget:
        why = (
            f"The {name} backend would need about {fmt_bytes(need)} at L = {prob.L}, "
            f"S = {prob.S}, {prob.heads} heads"
            + (" (it materialises B·H·L·S float32 scores ~3 times)" if name == "math" else "")
            + f"; this demo allows {fmt_bytes(budget)} per run."
        )
    else:
        why = (
            f"With the {name} backend this request would take about {secs:.0f} s at "
            f"L = {prob.L} with {prob.heads} heads on this CPU (runs, reference, pictures); "
            f"this demo allows {_MAX_SECONDS:.0f} s."
        )
    hint = f" Backends that fit: {alt}." if alt else " Reduce L or the number of heads."
    raise ValueError(why + hint)


def _call(mask: masks.Mask, D: int, need_weights: bool = True) -> AttentionCall:
    return AttentionCall(
        attn_mask=None,
        mask=mask,
        score_mod=None,
        scale=1.0 / math.sqrt(D),
        dropout_p=0.0,
        groups=1,
        need_weights=need_weights,
        need_lse=False,
    )


@dataclass(frozen=True)
class Reference:
    """The `math` reference of one explorer run."""

    out: Tensor  # (1, H, n_rows, Dv): the math output at the query rows `rows`
    rows: Tensor  # (n_rows,) query indices covered: all of them unless `sampled`
    weights: Tensor  # (Lq', Sk') weights of the drawn head, pooled in fq x fk blocks
    allowed: Tensor  # (Lq', Sk') fraction of each block the mask allows
    factors: tuple[int, int]  # (fq, fk)
    sampled: bool  # only the first rows of each query block were computed (long inputs)


def reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: masks.Mask | None,
    head: int = 0,
    max_cells: int = 512,
    chunk_bytes: int = 64 * 2**20,
    max_flops: float = REFERENCE_FLOPS,
) -> Reference:
    """The `math` reference output (materialised softmax(QKᵀ/√d)V) at the query rows it
    covers, and the weights of one head pooled to at most ``max_cells`` per axis (keys summed,
    queries averaged).

    When the full reference would cost more than ``max_flops``, only the first rows of each
    pooled query block are computed (evenly spread over the sequence): the picture keeps its
    shape and the output difference is measured on those rows. Rows are gathered into a few
    large batches (memory O(chunk * S)): many small tensor calls are slow when other requests
    share the cores (each waits for the thread pool).
    """
    _, H, L, D = q.shape
    S = k.shape[2]
    scale = 1.0 / math.sqrt(D)
    fq, fk = -(-L // max_cells), -(-S // max_cells)
    nq, nk = -(-L // fq), -(-S // fk)
    per_block = min(fq, max(1, int(fq * max_flops / (4.0 * H * L * S * D))))
    if per_block == fq:
        rows = torch.arange(L)
    else:
        rows = (torch.arange(nq)[:, None] * fq + torch.arange(per_block)[None]).flatten()
        rows = rows[rows < L]
    kcount = torch.full((nk,), float(fk))
    kcount[-1] = S - (nk - 1) * fk
    w_sum, a_sum = torch.zeros(nq, nk), torch.zeros(nq, nk)
    step = max(1, chunk_bytes // (H * S * 4 * 3))
    kv_idx = torch.arange(S).view(1, 1, 1, -1)
    zero = torch.zeros(1, 1, 1, 1, dtype=torch.long)
    outs = []
    for i in range(0, rows.numel(), step):
        idx = rows[i : i + step]
        s = torch.matmul(q[:, :, idx], k.transpose(-2, -1)) * scale  # (1, H, r, S)
        if mask is not None:
            heads = torch.arange(H).view(1, -1, 1, 1) if mask.num_heads else zero
            ok = mask.evaluate(zero, heads, idx.view(1, 1, -1, 1), kv_idx, L, S)
            s = s.masked_fill(~ok, float("-inf"))
        w, _ = safe_softmax(s)
        outs.append(torch.matmul(w, v))
        # keys pooled by reshaping (padded to whole blocks), queries by their block index
        wk = torch.nn.functional.pad(w[0, head], (0, nk * fk - S)).view(-1, nk, fk).sum(-1)
        alive = torch.isfinite(s[0, head]).float()
        ak = torch.nn.functional.pad(alive, (0, nk * fk - S)).view(-1, nk, fk).sum(-1) / kcount
        blocks = idx // fq
        w_sum.index_add_(0, blocks, wk)
        a_sum.index_add_(0, blocks, ak)
    n_rows = torch.bincount(rows // fq, minlength=nq).clamp_min(1).float()[:, None]
    return Reference(
        out=torch.cat(outs, dim=2), rows=rows, weights=w_sum / n_rows,
        allowed=a_sum / n_rows, factors=(fq, fk), sampled=per_block < fq,
    )  # fmt: skip


def measure(fn, max_seconds: float = 1.0, repeats: int = 5, first: float | None = None):
    """Time ``fn()`` and its peak allocation with the harness `attnlab bench` uses
    (``attnlab.core.timing``), so the explorer's rows compare with the shipped ones.

    Args:
        fn: the call to measure.
        max_seconds: time budget of the repeats.
        repeats: at most this many timed runs.
        first: seconds of a run the caller already made (it served as the warm-up; if it took
            half the budget or more it is the timing, and the call is not repeated).

    Returns:
        (best seconds, runs timed, peak bytes allocated during one call).
    """
    m = timing.measure(fn, repeats=repeats, budget_s=max_seconds, first=first)
    return m.best, m.runs, m.peak_bytes


def run_backend(name: str, q: Tensor, k: Tensor, v: Tensor, mask: masks.Mask) -> Tensor:
    """One forward call of the chosen backend (no weights asked, as in a model's fast path)."""
    return attention(q, k, v, mask=mask, backend=name)
