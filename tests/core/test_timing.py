"""``attnlab.core.timing``: the peak of a known allocation, a no-op, and the timing rules
(warm-up, repeats, a slow first call kept as the timing). No assertion on how long anything
takes."""

import pytest
import torch

from attnlab.core import timing

MB = 2**20


@pytest.mark.parametrize("n_mb", [1, 16])
def test_peak_of_a_known_allocation(n_mb):
    peak = timing.peak_bytes(lambda: torch.empty(n_mb * MB // 4))  # float32: 4 bytes each
    assert n_mb * MB <= peak <= n_mb * MB + 64 * 1024


def test_peak_of_a_noop_and_of_live_inputs_is_zero():
    x = torch.randn(MB // 4)  # allocated before: does not count
    assert timing.peak_bytes(lambda: None) == 0
    assert timing.peak_bytes(lambda: x.view(-1)) == 0


def test_peak_counts_temporaries_freed_inside_the_call():
    def two_steps():
        a = torch.ones(4 * MB // 4)  # 4 MB, freed before the call returns
        b = a * 2  # 4 MB more while a is alive
        del a
        return b.sum()

    assert 8 * MB <= timing.peak_bytes(two_steps) <= 8 * MB + 64 * 1024


def test_measure_warms_up_repeats_and_reports_best():
    calls = []
    m = timing.measure(lambda: calls.append(1), repeats=4, budget_s=10.0)
    assert len(calls) == 1 + 4 + 1  # warm-up, timed runs, the profiled run
    assert m.runs == 4 and m.best == min(m.times) <= m.median
    assert m.peak_bytes == 0


def test_a_slow_first_call_is_the_timing():
    calls = []
    m = timing.measure(lambda: calls.append(1), budget_s=1.0, first=0.75, memory=False)
    assert m.times == (0.75,) and m.peak_bytes is None and calls == []
    # a fast first call is only the warm-up
    m = timing.measure(lambda: calls.append(1), repeats=3, budget_s=1.0, first=1e-4, memory=False)
    assert m.runs == 3 and 0.75 not in m.times and len(calls) == 3
