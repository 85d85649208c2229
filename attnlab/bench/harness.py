"""The machine ceiling of the ``attnlab bench`` suites: the 2048^3 float32 matmul rate that
achieved GFLOP/s are compared against.

Time and peak memory are measured by ``attnlab.core.timing`` (best of N after a warm-up; peak
tensor bytes of one call), the harness the explorer's live measurements use too, so benchmark
rows and explorer rows are the same quantities.

Run alone (``attnlab bench harness``) it prints the matmul rate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from attnlab.core.timing import measure

__all__ = ["matmul_gflops", "torch_threads", "machine_info", "run_suite", "main"]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads (``n <= 0``: leave the count as it is), and
    restore the count afterwards."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def machine_info(**extra) -> dict:
    """Where a benchmark ran, for its JSON: torch threads and version, CPUs, processor, Python,
    and how freed memory is handled (``attnlab bench`` keeps freed blocks for reuse unless
    ``ATTNLAB_KEEP_FREED=0``); ``extra`` adds fields."""
    keep = os.environ.get("ATTNLAB_KEEP_FREED", "1") != "0"
    return {
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "malloc": "freed blocks kept for reuse (the CLI's reuse_freed_memory)" if keep
        else "glibc defaults (ATTNLAB_KEEP_FREED=0)",
        **extra,
    }  # fmt: skip


def run_suite(
    argv: list[str] | None,
    name: str,
    doc: str,
    quick_help: str,
    out: Path,
    run: Callable[[argparse.Namespace, list[str]], int],
) -> int:
    """The command line every domain suite shares: ``attnlab bench NAME [--quick] [--threads N]
    [--out FILE]``; calls ``run(args, argv)`` with that many torch threads (argv for the
    result's ``command``)."""
    p = argparse.ArgumentParser(prog=f"attnlab bench {name}", description=doc.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads for this run (default: torch's)")  # fmt: skip
    p.add_argument("--out", default=str(out))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    with torch_threads(args.threads):
        return run(args, argv)


def row_line(row: dict, skip: tuple[str, ...] = ("includes",)) -> str:
    """A result row as the suites print it: ``key=value`` pairs, the ``skip`` keys left out."""
    return " ".join(f"{k}={v}" for k, v in row.items() if k not in skip)


def judge(checks: dict[str, float], targets: dict[str, tuple[str, float]]) -> dict[str, dict]:
    """Each measured check against its target (``("max", t)``: value <= t; ``("min", t)``:
    value >= t), printed: ``{name: {"value", "target_max" | "target_min", "pass"}}``."""
    out = {}
    for k, v in checks.items():
        kind, t = targets[k]
        ok = v <= t if kind == "max" else v >= t
        out[k] = {"value": v, f"target_{kind}": t, "pass": ok}
        sign = "<=" if kind == "max" else ">="
        print(f"target {k}: {v:.4g} {sign} {t}: {'pass' if ok else 'FAIL'}", flush=True)
    return out


def write_result(name: str, argv: list[str], args: argparse.Namespace, rows: list[dict],
                 targets: dict[str, dict], machine: dict) -> int:  # fmt: skip
    """Write a domain suite's JSON (command, machine, quick, rows, targets) to ``args.out``."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"command": " ".join([f"attnlab bench {name}", *argv]), "machine": machine,
              "quick": args.quick, "rows": rows, "targets": targets}  # fmt: skip
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of an n^3 float32 matmul (2 n^3 FLOPs), best of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    secs = measure(lambda: a @ b, repeats=repeats, memory=False).best
    return 2 * n**3 / secs / 1e9


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="attnlab bench harness", description="print the matmul GFLOP/s ceiling of this machine"
    )
    p.add_argument("--n", type=int, default=2048, help="matrix size (default 2048)")
    args = p.parse_args(argv)
    print(
        f"{args.n}^3 float32 matmul: {matmul_gflops(args.n):.1f} GFLOP/s "
        f"({torch.get_num_threads()} threads)"
    )
    return 0
