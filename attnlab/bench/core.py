"""``attnlab bench core``: time and peak memory of the attention backends against torch SDPA and
compiled FlexAttention, the cost of recording attention and the speed-up of KV-cache decoding,
each measured against its baseline in the same run.

Cases (``--only`` picks some; the others' results in the JSON are kept):

- ``attention``: float32, B*H = 8 (B=1, H=8), D = 64, L from 256 to 16384, forward and
  forward+backward, for the masks full, causal, causal sliding window 256, document (8 documents)
  and prefix-LM (prefix L/8). Ratios are against torch SDPA (a dense boolean mask for the masked
  cases, ``is_causal`` for causal) and against ``torch.compile(flex_attention)`` with the same
  block mask (forward only: FlexAttention has no CPU backward; its compile time is reported
  separately). Achieved GFLOP/s count useful FLOPs 4*B*H*Lq*avg_keys*D (x2.5 with backward)
  against a 2048^3 matmul.
- ``linear_error``: the relative error of linear attention against exact attention.
- ``recording``: a plain eval forward of a ``TransformerEncoder`` against the same forward inside
  ``record_attention(model)`` (all layers and heads, default options), batch 1, no_grad.
- ``kv_cache``: one cached decoding step of a causal ``TransformerEncoder`` at position 1024
  against re-running the 1025-token prefix without a cache; the two last-position outputs are
  compared (atol 1e-5).

Time and peak memory come from ``attnlab.core.timing`` (best of N after a warm-up; peak tensor
bytes of one call above what was live before it), the harness the explorer uses too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from attnlab.bench.harness import matmul_gflops, torch_threads
from attnlab.core import masks as M
from attnlab.core.attention import attention
from attnlab.core.blocks import TransformerEncoder
from attnlab.core.capture import record_attention
from attnlab.core.timing import Measurement, measure, peak_bytes, time_runs, timed

__all__ = ["main", "measure_case", "linear_error", "recording_cost", "kv_cache_decoding"]

MASKS = ("full", "causal", "causal_window_256", "document_8", "prefix_lm")
BACKENDS = ("sdpa", "auto", "tiled", "math", "linear", "flex")
B, H, D = 1, 8, 64
CASES = ("attention", "linear_error", "recording", "kv_cache")
# (dim, depth, num_heads, L) of the recording case; targets: record/plain <= 1.10
# at L = 128 and <= 1.25 at L = 512
RECORDING_MODELS = ((384, 6, 12, 128), (256, 4, 8, 512))
RESULTS = Path(__file__).parent / "results"


def make_mask(name: str, L: int) -> M.Mask | None:
    return {
        "full": lambda: None,
        "causal": M.causal,
        "causal_window_256": lambda: M.sliding_window(256),
        "document_8": lambda: M.document(torch.arange(L) * 8 // L),
        "prefix_lm": lambda: M.prefix_lm(L // 8),
    }[name]()


def flex_mask_mod(name: str, L: int):
    doc = torch.arange(L) * 8 // L
    return {
        "full": None,
        "causal": lambda b, h, q, kv: q >= kv,
        "causal_window_256": lambda b, h, q, kv: (q >= kv) & (q - kv < 256),
        "document_8": lambda b, h, q, kv: doc[q] == doc[kv],
        "prefix_lm": lambda b, h, q, kv: (kv < L // 8) | (q >= kv),
    }[name]


def avg_keys(name: str, L: int) -> float:
    mask = make_mask(name, L)
    return float(L) if mask is None else mask.allowed_pairs(L) / L


def supported(backend: str, mask: str, L: int, pas: str) -> bool:
    if backend == "math":
        return L <= 4096
    if backend == "linear":
        return mask in ("full", "causal")
    if backend == "flex":
        return pas == "fwd"
    return True


def make_case(backend: str, mask: str, L: int, pas: str, flex_fn=None):
    """Inputs and a closure running one forward (and backward)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, L, D, generator=g) for _ in range(3))
    bwd = pas == "fwdbwd"
    if bwd:
        for t in (q, k, v):
            t.requires_grad_()
    spec = make_mask(mask, L)

    if backend == "sdpa":

        def f():
            if mask == "causal":
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
            dense = None if spec is None else spec.dense(L, L)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
    elif backend == "flex":

        def f():
            return flex_fn(q, k, v)
    else:

        def f():
            return attention(q, k, v, mask=spec, backend=backend)

    def run():
        out = f()
        if bwd:
            out.backward(torch.ones_like(out))
            for t in (q, k, v):
                t.grad = None
        return out

    return run


def build_flex(mask: str, L: int):
    """(compiled flex closure, compile seconds) or (None, reason)."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        torch._dynamo.reset()  # one compile per (mask, L): never hit dynamo's recompile limit
        fn = flex_mask_mod(mask, L)
        bm = None if fn is None else create_block_mask(fn, None, None, L, L, device="cpu")
        compiled = torch.compile(flex_attention, dynamic=False)
        q = torch.randn(B, H, L, D)
        t0 = time.perf_counter()
        compiled(q, q, q, block_mask=bm)
        return (lambda q, k, v: compiled(q, k, v, block_mask=bm)), time.perf_counter() - t0
    except Exception as err:  # noqa: BLE001 - any compile failure: skip flex, say why
        return None, f"{type(err).__name__}: {str(err)[:200]}"


def measure_case(
    backend: str, mask: str, L: int, pas: str, flex_fn=None, repeats: int = 5, memory: bool = True
) -> dict:
    """One row of the attention case: time (best of ``repeats``), GFLOP/s and peak memory."""
    run = make_case(backend, mask, L, pas, flex_fn)
    m = measure(run, repeats=repeats, memory=memory)
    flops = 4 * B * H * L * avg_keys(mask, L) * D * (2.5 if pas == "fwdbwd" else 1.0)
    row = {
        "backend": backend,
        "mask": mask,
        "pass": pas,
        "L": L,
        "time_ms": round(m.best * 1e3, 2),
        "gflops": round(flops / m.best / 1e9, 1),
    }
    if m.peak_bytes is not None:
        row["peak_mem_mb"] = round(m.peak_bytes / 2**20, 2)
        row["dense_LxL_mb"] = round(L**2 * 4 / 2**20, 1)
    return row


def linear_error(lengths=(256, 1024), seed: int = 0) -> list[dict]:
    """Relative Frobenius error of linear attention vs exact attention (float64)."""
    from attnlab.core.backends.linear import linear_attention

    rows = []
    g = torch.Generator().manual_seed(seed)
    for L in lengths:
        q, k, v = (torch.randn(B, H, L, D, generator=g, dtype=torch.float64) for _ in range(3))
        for std in (1.0, 0.5):
            for causal in (False, True):
                exact = attention(q * std, k * std, v, is_causal=causal, backend="math")
                for feat in ("elu", "performer"):
                    out, _ = linear_attention(q * std, k * std, v, causal=causal, feature=feat)
                    err = float((out - exact).norm() / exact.norm())
                    rows.append(
                        {
                            "L": L,
                            "input_std": std,
                            "mask": "causal" if causal else "full",
                            "feature": feat,
                            "rel_error": round(err, 3),
                        }
                    )
    return rows


def _interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, repeats: int, memory: bool
) -> dict[str, Measurement]:
    """Time the calls in turn, ``rounds`` times, so that a slow spell of a shared machine falls
    on all of them alike; each keeps all its timed runs (its best is the best of them all)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name] += time_runs(fn, repeats=repeats)
    return {k: Measurement(tuple(times[k]), peak_bytes(fns[k]) if memory else None)
            for k in fns}  # fmt: skip


def recording_cost(
    models=RECORDING_MODELS, rounds: int = 3, repeats: int = 5, memory: bool = True, seed: int = 0
) -> list[dict]:
    """Plain forward against the same forward inside ``record_attention(model)`` (all layers,
    all heads, default options): batch 1, eval, no_grad.

    Args:
        models: (dim, depth, num_heads, L) of each ``TransformerEncoder`` measured.
        rounds: plain and recorded forwards are timed in turn this many times.
        repeats: timed runs per round.
        memory: also measure the peak memory of each forward.
        seed: of the weights and the input.

    Returns:
        One row per model with both times, their ratio record/plain, the number of maps
        recorded and the largest output difference recording made (0 when exact).
    """
    rows = []
    for dim, depth, heads, L in models:
        torch.manual_seed(seed)
        model = TransformerEncoder(dim=dim, depth=depth, num_heads=heads).eval()
        x = torch.randn(1, L, dim)

        def plain(model=model, x=x):
            return model(x)

        def record(model=model, x=x):
            with record_attention(model) as maps:
                model(x)
            return maps

        with torch.no_grad():
            m = _interleaved({"plain": plain, "record": record}, rounds, repeats, memory)
            with record_attention(model) as maps:
                y_rec = model(x)
            diff = float((y_rec - plain()).abs().max())
        row = {
            "dim": dim,
            "depth": depth,
            "num_heads": heads,
            "L": L,
            "batch": 1,
            "plain_ms": round(m["plain"].best * 1e3, 3),
            "record_ms": round(m["record"].best * 1e3, 3),
            "ratio": round(m["record"].best / m["plain"].best, 3),
            "maps": len(maps),
            "out_max_diff": diff,
        }
        if memory:
            row["plain_peak_mb"] = round(m["plain"].peak_bytes / 2**20, 2)
            row["record_peak_mb"] = round(m["record"].peak_bytes / 2**20, 2)
        rows.append(row)
    return rows


def kv_cache_decoding(
    dim: int = 256,
    depth: int = 4,
    num_heads: int = 8,
    prefix: int = 1024,
    rounds: int = 3,
    repeats: int = 3,
    memory: bool = True,
    seed: int = 0,
    atol: float = 1e-5,
) -> dict:
    """One cached decoding step at position ``prefix`` against re-running the ``prefix + 1``
    tokens without a cache, for a causal ``TransformerEncoder`` (batch 1, eval, no_grad).

    Every timed step starts from a fresh cache prefilled with the first ``prefix`` tokens
    (``model.make_cache()``, then ``model(x, cache=cache)``; the prefill is not timed), so each
    one decodes exactly position ``prefix``. Steps and full forwards are timed in turn,
    ``rounds`` times ``repeats`` runs each, after a warm-up of each.

    Returns:
        Both times (per token: one step decodes one token), the speed-up full/step, the peak
        memory of each, and whether the last-position outputs agree within ``atol``.
    """
    torch.manual_seed(seed)
    model = TransformerEncoder(dim=dim, depth=depth, num_heads=num_heads, causal=True).eval()
    x = torch.randn(1, prefix + 1, dim)
    with torch.no_grad():

        def prefilled():
            cache = model.make_cache()
            model(x[:, :prefix], cache=cache)
            return cache

        steps, fulls, y_step = [], [], None
        timed(lambda: model(x[:, prefix:], cache=prefilled()))  # warm-up of the step
        for _ in range(rounds):  # step and full in turn, like the recording case
            for _ in range(repeats):
                cache = prefilled()
                secs, y_step = timed(lambda cache=cache: model(x[:, prefix:], cache=cache))
                steps.append(secs)
            fulls += time_runs(lambda: model(x), repeats=repeats)
        step, full = Measurement(tuple(steps)), Measurement(tuple(fulls))
        diff = float((y_step[:, -1] - model(x)[:, -1]).abs().max())
        if memory:
            cache = prefilled()
            step_peak = peak_bytes(lambda: model(x[:, prefix:], cache=cache))
            full_peak = peak_bytes(lambda: model(x))
    row = {
        "dim": dim,
        "depth": depth,
        "num_heads": num_heads,
        "position": prefix,
        "batch": 1,
        "step_ms": round(step.best * 1e3, 3),
        "full_ms": round(full.best * 1e3, 3),
        "speedup": round(full.best / step.best, 2),
        "out_max_diff": diff,
        "outputs_equal": diff <= atol,
        "atol": atol,
    }
    if memory:
        row["step_peak_mb"] = round(step_peak / 2**20, 2)
        row["full_peak_mb"] = round(full_peak / 2**20, 2)
    return row


def attention_rows(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """The attention case: rows (with their vs_sdpa / vs_flex ratios) and flex compile times."""
    lengths = [L for L in (256, 1024, 4096, 8192, 16384) if L <= args.max_len]
    if args.quick:
        lengths = [L for L in lengths if L <= 1024]
        args.flex_min_len = min(args.flex_min_len, 1024)
    backends = args.backends.split(",")
    flex_masks = set(args.flex_masks.split(","))
    partial = Path(args.out).with_suffix(".partial.json")
    rows, flex_compile = [], {}
    for L in lengths:
        for mask in args.masks.split(","):
            flex_fn = None
            if "flex" in backends and L >= args.flex_min_len and mask in flex_masks:
                flex_fn, info = build_flex(mask, L)
                flex_compile[f"{mask}@{L}"] = info if flex_fn is None else round(info, 2)
            for pas in ("fwd", "fwdbwd"):
                base, these = {}, []
                for backend in backends:
                    if not supported(backend, mask, L, pas) or (
                        backend == "flex" and flex_fn is None
                    ):
                        continue
                    if backend == "auto" and mask not in ("full", "causal"):
                        continue  # auto = tiled there
                    row = measure_case(
                        backend,
                        mask,
                        L,
                        pas,
                        flex_fn,
                        repeats=2 if args.quick else 5,
                        memory=not args.no_memory,
                    )
                    base[backend] = row["time_ms"]
                    these.append(row)
                for row in these:
                    if "sdpa" in base:
                        row["vs_sdpa"] = round(row["time_ms"] / base["sdpa"], 3)
                    if "flex" in base:
                        row["vs_flex"] = round(row["time_ms"] / base["flex"], 3)
                    print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
                rows += these
        # keep what is measured so far: a crash at a larger L loses nothing
        partial.write_text(json.dumps({"rows": rows}, indent=1))
    partial.unlink(missing_ok=True)
    return rows, flex_compile


def _cases(only: str) -> list[str]:
    chosen = [c.strip() for c in only.split(",") if c.strip()]
    bad = [c for c in chosen if c not in CASES]
    if bad or not chosen:
        raise SystemExit(
            f"attnlab bench core: --only takes some of {', '.join(CASES)}; got {only!r}"
        )
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="attnlab bench core", description=__doc__.split("\n")[0])
    p.add_argument(
        "--only",
        default=",".join(CASES),
        help=f"comma-separated cases to run, of {','.join(CASES)} (default: all); "
        "the other cases' results already in --out are kept",
    )
    p.add_argument(
        "--quick", action="store_true", help="attention at L in 256..1024; fewer repeats everywhere"
    )
    p.add_argument("--max-len", type=int, default=16384, help="largest L (default 16384)")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--masks", default=",".join(MASKS))
    p.add_argument(
        "--flex-min-len",
        type=int,
        default=4096,
        help="compile flex only for L >= this (each compile takes ~20 s)",
    )
    p.add_argument("--flex-masks", default="causal,causal_window_256,document_8,prefix_lm")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument(
        "--memory-only",
        action="store_true",
        help="re-measure only the peak memory of the attention rows already in --out "
        "(their times are kept; flex rows are left out)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads for this run (default: torch's); 1 steadies the recording and "
        "kv_cache ratios on a machine that other work shares",
    )
    p.add_argument("--out", default=str(RESULTS / "core.json"))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    with torch_threads(args.threads):
        return _run(args, argv)


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    only = _cases(args.only)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = json.loads(out.read_text()) if out.exists() and set(only) != set(CASES) else {}
    command = " ".join(["attnlab bench core", *argv])
    threads = torch.get_num_threads()
    machine = {"threads": threads, "torch": torch.__version__}
    memory = not args.no_memory
    if args.memory_only:
        return _refresh_memory(out, command)
    if "attention" in only:
        ceiling = matmul_gflops()
        print(f"threads={threads}  2048^3 matmul: {ceiling:.1f} GFLOP/s")
        rows, flex_compile = attention_rows(args)
        measured = {
            "machine": {**machine, "matmul_2048_gflops": round(ceiling, 1), "B": B, "H": H,
                        "D": D, "dtype": "float32"},
            "flex_compile_s": flex_compile,
            "rows": rows,
            "command": command,
        }  # fmt: skip
        if _subset(args) and result.get("rows"):
            result.update(merge_rows(result, measured))
        else:
            result.pop("note", None)  # a note on how older rows were made no longer holds
            result.pop("remeasured", None)
            result.update(measured)
        print(_table(rows))
    if "linear_error" in only:
        result["linear_error"] = linear_error()
    if "recording" in only:
        rec = recording_cost(rounds=2 if args.quick else 3, memory=memory)
        keep = os.environ.get("ATTNLAB_KEEP_FREED", "1") != "0"
        result["recording"] = {
            "command": command, "machine": machine, "rows": rec,
            "malloc": ("freed blocks kept for reuse (the CLI's reuse_freed_memory; "
                       "ATTNLAB_KEEP_FREED=0 measures glibc's defaults)" if keep
                       else "glibc defaults (ATTNLAB_KEEP_FREED=0)"),
        }  # fmt: skip
        for r in rec:
            print("recording: " + " ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    if "kv_cache" in only:
        kv = kv_cache_decoding(rounds=2 if args.quick else 3, memory=memory)
        result["kv_cache"] = {"command": command, "machine": machine, **kv}
        print("kv_cache: " + " ".join(f"{k}={v}" for k, v in kv.items()), flush=True)
        if not kv["outputs_equal"]:
            print(
                f"kv_cache: cached and uncached outputs differ by {kv['out_max_diff']:.2e} "
                f"(> atol {kv['atol']})",
                file=sys.stderr,
            )
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    if "attention" in only:
        _plot(result["rows"], out)
    return 0


def _key(row: dict) -> tuple:
    return row["backend"], row["mask"], row["pass"], row["L"]


def _subset(args: argparse.Namespace) -> bool:
    """Whether the attention case measures only part of the full grid."""
    return (
        set(args.backends.split(",")) != set(BACKENDS)
        or set(args.masks.split(",")) != set(MASKS)
        or args.max_len < 16384
        or args.quick
    )


def merge_rows(old: dict, new: dict) -> dict:
    """The attention results of a subset re-measure merged into a full run's: rows with the same
    (backend, mask, pass, L) replaced, the others kept, and each re-measure listed (command,
    machine, rows replaced) under ``remeasured``. Every ratio compares rows of one run."""
    fresh = {_key(r) for r in new["rows"]}
    kept = [r for r in old["rows"] if _key(r) not in fresh]
    order = {k: i for i, k in enumerate(_key(r) for r in old["rows"])}
    rows = sorted(kept + new["rows"], key=lambda r: order.get(_key(r), len(order)))
    this = {"command": new["command"], "machine": new["machine"], "rows": len(new["rows"])}
    log = [*old.get("remeasured", []), this]
    return {
        "rows": rows,
        "flex_compile_s": {**old.get("flex_compile_s", {}), **new["flex_compile_s"]},
        "remeasured": log,
    }


def _refresh_memory(out: Path, command: str) -> int:
    """Re-measure ``peak_mem_mb`` of the non-flex attention rows in ``out``, keep the rest."""
    result = json.loads(out.read_text())
    for row in result["rows"]:
        if row["backend"] == "flex":
            row.pop("peak_mem_mb", None)
            continue
        run = make_case(row["backend"], row["mask"], row["L"], row["pass"])
        row["peak_mem_mb"] = round(peak_bytes(run) / 2**20, 2)
        row["dense_LxL_mb"] = round(row["L"] ** 2 * 4 / 2**20, 1)
        del run
        print(" ".join(f"{k}={row[k]}" for k in ("backend", "mask", "pass", "L", "peak_mem_mb")),
              flush=True)  # fmt: skip
    result["memory_command"] = command
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    _plot(result["rows"], out)
    return 0


def _plot(rows: list[dict], out: Path) -> None:
    try:
        from attnlab.apps.views.plots import plot_bench

        plot_bench(
            [r for r in rows if math.isfinite(r.get("peak_mem_mb", 1.0))],
            out.with_suffix(".png"),
            title="attnlab core attention",
        )
        print(f"wrote {out.with_suffix('.png')}")
    except Exception as err:  # noqa: BLE001 - the plot is a bonus; the numbers are written
        print(f"plot skipped: {err}", file=sys.stderr)


def _table(rows: list[dict]) -> str:
    cols = (
        "backend",
        "mask",
        "pass",
        "L",
        "time_ms",
        "vs_sdpa",
        "vs_flex",
        "gflops",
        "peak_mem_mb",
    )
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for r in rows:
        lines.append(" | ".join(str(r.get(c, "")) for c in cols))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
