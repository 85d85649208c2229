"""Timing and memory harness of the ``attnlab bench`` suites.

Timing: warm-up, then the median of repeats, with ``torch.get_num_threads()`` threads.
Memory: resident-set peaks in a worker subprocess (the Python allocator and ``tracemalloc`` do
not see torch's buffers): per case the worker resets the kernel's high-water mark
(``/proc/self/clear_refs``), reads VmRSS as the baseline with the inputs allocated, runs the
case and reports VmHWM - baseline.

Run alone (``attnlab bench harness``) it prints the 2048^3 matmul rate, the practical ceiling the
suites compare achieved GFLOP/s against.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

__all__ = ["time_fn", "matmul_gflops", "peak_memory_mb", "main"]


def time_fn(fn: Callable[[], object], repeats: int = 5, budget_s: float = 6.0) -> float:
    """Median wall time of ``fn()`` in ms after one warm-up run; fewer repeats (at least 1)
    when a run is long, so that a case stays within ``budget_s``."""
    t0 = time.perf_counter()
    fn()
    warm = time.perf_counter() - t0
    n = max(1, min(repeats, int(budget_s / max(warm, 1e-6))))
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of an n^3 float32 matmul (2 n^3 FLOPs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    ms = time_fn(lambda: a @ b, repeats)
    return 2 * n**3 / (ms * 1e-3) / 1e9


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1]) / 1024  # kB -> MB
    return float("nan")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def measure_in_process(setup: Callable[[], Callable[[], object]]) -> float:
    """Peak RSS (MB) of running the closure returned by ``setup()`` once, above the RSS after
    setup. Runs in the current process: call it from a fresh worker."""
    import gc

    gc.collect()
    run = setup()
    gc.collect()
    if not _reset_peak():
        return float("nan")
    base = _status("VmRSS")
    run()
    return max(0.0, _status("VmHWM") - base)


def peak_memory_mb(module: str, cases: list[dict], timeout: float = 1800) -> list[float]:
    """Run ``module``'s ``memory_worker(case)`` for each case in one worker subprocess (which
    resets the peak between cases); returns MB per case (NaN where it failed)."""
    code = (f"import json, sys; from {module} import memory_worker; "
            "cases = json.loads(sys.stdin.read()); "
            "print(json.dumps([memory_worker(c) for c in cases]))")
    try:
        res = subprocess.run([sys.executable, "-c", code], input=json.dumps(cases),
                             capture_output=True, text=True, timeout=timeout, check=True)
        return [float(x) for x in json.loads(res.stdout.strip().splitlines()[-1])]
    except (subprocess.SubprocessError, ValueError, IndexError) as err:
        print(f"memory worker failed: {err}", file=sys.stderr)
        return [float("nan")] * len(cases)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="attnlab bench harness",
                                description="print the matmul GFLOP/s ceiling of this machine")
    p.add_argument("--n", type=int, default=2048, help="matrix size (default 2048)")
    args = p.parse_args(argv)
    print(f"{args.n}^3 float32 matmul: {matmul_gflops(args.n):.1f} GFLOP/s "
          f"({torch.get_num_threads()} threads)")
    return 0
