"""``attnlab bench core``: time and peak memory of the attention backends against torch SDPA and
compiled FlexAttention, measured in the same run.

float32, B*H = 8 (B=1, H=8), D = 64, L from 256 to 16384, forward and forward+backward, for the
masks full, causal, causal sliding window 256, document (8 documents) and prefix-LM (prefix L/8).
Ratios are against torch SDPA (a dense boolean mask for the masked cases, ``is_causal`` for
causal) and against ``torch.compile(flex_attention)`` with the same block mask (forward only:
FlexAttention has no CPU backward; its compile time is reported separately). Achieved GFLOP/s
count useful FLOPs 4*B*H*Lq*avg_keys*D (x2.5 with backward) against a 2048^3 matmul.
Peak memory comes from a worker subprocess (``harness.peak_memory_mb``).

Also writes ``linear_error``: the relative error of linear attention against exact attention.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from attnlab.bench.harness import matmul_gflops, measure_in_process, peak_memory_mb, time_fn
from attnlab.core import masks as M
from attnlab.core.attention import attention

__all__ = ["main", "memory_worker", "linear_error"]

MASKS = ("full", "causal", "causal_window_256", "document_8", "prefix_lm")
BACKENDS = ("sdpa", "auto", "tiled", "math", "linear", "flex")
B, H, D = 1, 8, 64
RESULTS = Path(__file__).parent / "results"


def make_mask(name: str, L: int) -> M.Mask | None:
    return {"full": lambda: None, "causal": M.causal,
            "causal_window_256": lambda: M.sliding_window(256),
            "document_8": lambda: M.document(torch.arange(L) * 8 // L),
            "prefix_lm": lambda: M.prefix_lm(L // 8)}[name]()


def flex_mask_mod(name: str, L: int):
    doc = torch.arange(L) * 8 // L
    return {"full": None, "causal": lambda b, h, q, kv: q >= kv,
            "causal_window_256": lambda b, h, q, kv: (q >= kv) & (q - kv < 256),
            "document_8": lambda b, h, q, kv: doc[q] == doc[kv],
            "prefix_lm": lambda b, h, q, kv: (kv < L // 8) | (q >= kv)}[name]


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


def memory_worker(case: dict) -> float:
    """Entry point of the memory subprocess: peak RSS (MB) above the inputs for one case."""
    torch.set_num_threads(case["threads"])
    return measure_in_process(lambda: make_case(case["backend"], case["mask"], case["L"],
                                                 case["pass"]))


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
                    rows.append({"L": L, "input_std": std, "mask": "causal" if causal else
                                 "full", "feature": feat, "rel_error": round(err, 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="attnlab bench core", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="L in 256..1024, few repeats")
    p.add_argument("--max-len", type=int, default=16384, help="largest L (default 16384)")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--masks", default=",".join(MASKS))
    p.add_argument("--flex-min-len", type=int, default=4096,
                   help="compile flex only for L >= this (each compile takes ~20 s)")
    p.add_argument("--flex-masks", default="causal,causal_window_256,document_8,prefix_lm")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--out", default=str(RESULTS / "core.json"))
    args = p.parse_args(argv)
    lengths = [L for L in (256, 1024, 4096, 8192, 16384) if L <= args.max_len]
    if args.quick:
        lengths = [L for L in lengths if L <= 1024]
        args.flex_min_len = min(args.flex_min_len, 1024)
    backends = args.backends.split(",")
    masks = args.masks.split(",")
    flex_masks = set(args.flex_masks.split(","))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    ceiling = matmul_gflops()
    print(f"threads={threads}  2048^3 matmul: {ceiling:.1f} GFLOP/s")
    rows, flex_compile = [], {}
    for L in lengths:
        for mask in masks:
            keys = avg_keys(mask, L)
            flex_fn = None
            if "flex" in backends and L >= args.flex_min_len and mask in flex_masks:
                flex_fn, info = build_flex(mask, L)
                flex_compile[f"{mask}@{L}"] = info if flex_fn is None else round(info, 2)
            for pas in ("fwd", "fwdbwd"):
                base = {}
                for backend in backends:
                    if not supported(backend, mask, L, pas) or (backend == "flex"
                                                                and flex_fn is None):
                        continue
                    if backend == "auto" and mask not in ("full", "causal"):
                        continue  # auto = tiled there
                    run = make_case(backend, mask, L, pas, flex_fn)
                    ms = time_fn(run, repeats=2 if args.quick else 5)
                    flops = 4 * B * H * L * keys * D * (2.5 if pas == "fwdbwd" else 1.0)
                    row = {"backend": backend, "mask": mask, "pass": pas, "L": L,
                           "time_ms": round(ms, 2), "gflops": round(flops / ms / 1e6, 1)}
                    base[backend] = ms
                    rows.append(row)
                    del run
                for row in rows:
                    if row["L"] == L and row["mask"] == mask and row["pass"] == pas:
                        if "sdpa" in base:
                            row["vs_sdpa"] = round(row["time_ms"] / base["sdpa"], 3)
                        if "flex" in base:
                            row["vs_flex"] = round(row["time_ms"] / base["flex"], 3)
                        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        # keep what is measured so far: a crash at a larger L loses nothing
        out.with_suffix(".partial.json").write_text(json.dumps({"rows": rows}, indent=1))
    if not args.no_memory:
        cases = [{"backend": r["backend"], "mask": r["mask"], "L": r["L"], "pass": r["pass"],
                  "threads": threads} for r in rows if r["backend"] != "flex"]
        mem = peak_memory_mb(__name__, cases)
        it = iter(mem)
        for r in rows:
            if r["backend"] != "flex":
                r["peak_mem_mb"] = round(next(it), 1)
                r["dense_LxL_mb"] = round(r["L"] ** 2 * 4 / 2**20, 1)
    result = {"machine": {"threads": threads, "torch": torch.__version__,
                          "matmul_2048_gflops": round(ceiling, 1), "B": B, "H": H, "D": D,
                          "dtype": "float32"},
              "flex_compile_s": flex_compile, "rows": rows, "linear_error": linear_error()}
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    print(_table(rows))
    print(f"wrote {out}")
    try:
        from attnlab.apps.views.plots import plot_bench

        plot_bench([r for r in rows if math.isfinite(r.get("peak_mem_mb", 1.0))],
                   out.with_suffix(".png"), title="attnlab core attention")
        print(f"wrote {out.with_suffix('.png')}")
    except Exception as err:  # noqa: BLE001 - the plot is a bonus; the numbers are written
        print(f"plot skipped: {err}", file=sys.stderr)
    return 0


def _table(rows: list[dict]) -> str:
    cols = ("backend", "mask", "pass", "L", "time_ms", "vs_sdpa", "vs_flex", "gflops",
            "peak_mem_mb")
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for r in rows:
        lines.append(" | ".join(str(r.get(c, "")) for c in cols))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
