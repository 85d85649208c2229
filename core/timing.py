"""Wall time and peak memory of one call, measured one way for every caller: the
``attnlab bench`` suites and the explorer's live measurements use this file, so their numbers
can be put on one plot.

**Time** is the best of N runs after a warm-up run (the first call pays for dispatch caches,
allocator growth and first-touch page faults). On a shared machine other work only ever adds
time to a run, so the minimum is the least noisy estimate of the call's own cost (the advice of
Python's ``timeit``); the median is kept beside it. Long calls are repeated fewer times so a
measurement stays within a time budget. On CUDA every timed run is bracketed by
``torch.cuda.synchronize()``.

**Peak memory** is the peak of the bytes torch's allocator holds for tensors during one call,
above what was live before it (so inputs, weights and caches made beforehand do not count; the
output does):

- CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus
  ``memory_allocated()`` before the call.
- CPU: the same quantity, from the allocation and free events that torch's profiler records
  with ``profile_memory=True``: the peak of their running total, in time order.

Why the profiler and not the process's resident-set peak (VmHWM), which the benchmarks read
before: the RSS peak counts pages, not tensors. A tensor that reuses pages freed earlier in the
process reads as 0, page-granular rounding and other threads' memory blur small cases, and it
needs a fresh worker process per measurement. The profiler's running total is exact and
deterministic (the same call gives the same bytes every time), needs no subprocess, and is the
CPU twin of CUDA's ``max_memory_allocated``. What it does not see: memory that libraries such
as oneDNN or OpenMP take from ``malloc`` directly, and allocator or page overhead. The profiled
run is a separate, untimed call (profiling slows a call down).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["Measurement", "measure", "time_runs", "timed", "peak_bytes"]


@dataclass(frozen=True)
class Measurement:
    """Timed runs (seconds) and the peak bytes of one call (None when not measured)."""

    times: tuple[float, ...]
    peak_bytes: int | None = None

    @property
    def best(self) -> float:
        """Fastest run, seconds: the figure every caller reports."""
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def runs(self) -> int:
        return len(self.times)


def _is_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def timed(fn: Callable[[], object], device: str | torch.device = "cpu") -> tuple[float, object]:
    """One call of ``fn``: (seconds, its result). On CUDA the device is synchronised around it."""
    cuda = _is_cuda(device)
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, out


def time_runs(
    fn: Callable[[], object],
    repeats: int = 5,
    budget_s: float = 6.0,
    first: float | None = None,
    device: str | torch.device = "cpu",
) -> tuple[float, ...]:
    """Seconds of each timed run of ``fn()``, after a warm-up run.

    Args:
        fn: the call to time.
        repeats: at most this many timed runs; at least one.
        budget_s: stop repeating once the timed runs add up to this.
        first: seconds of a call the caller already made: it serves as the warm-up, and when
            it took half the budget or more it is the only timing (the call is not repeated).
        device: where ``fn`` runs ("cpu" or a CUDA device).
    """
    if first is None:
        timed(fn, device)  # warm-up: dispatch caches, allocator, page faults
    elif first >= budget_s / 2:
        return (first,)
    times: list[float] = []
    while not times or (len(times) < repeats and sum(times) < budget_s):
        times.append(timed(fn, device)[0])
    return tuple(times)


def peak_bytes(fn: Callable[[], object], device: str | torch.device = "cpu") -> int:
    """Peak bytes torch allocates for tensors during one ``fn()``, above what was live before.

    CUDA: ``max_memory_allocated`` (peak reset first). CPU: the peak of the running total of
    the profiler's memory events (see the module docstring for why and what it misses).
    """
    if _is_cuda(device):
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return max(0, int(torch.cuda.max_memory_allocated(device)) - base)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]"
    )
    cur = peak = 0
    for _, n in events:
        cur += n
        peak = max(peak, cur)
    return int(peak)


def measure(
    fn: Callable[[], object],
    repeats: int = 5,
    budget_s: float = 6.0,
    first: float | None = None,
    memory: bool = True,
    device: str | torch.device = "cpu",
) -> Measurement:
    """Time ``fn()`` (``time_runs``) and, when ``memory``, its peak allocation (``peak_bytes``,
    one more, untimed call)."""
    times = time_runs(fn, repeats=repeats, budget_s=budget_s, first=first, device=device)
    return Measurement(times, peak_bytes(fn, device) if memory else None)
