"""``attnlab bench core`` at tiny sizes: the structure of its rows, the two model cases
(recording cost, KV-cache decoding) and ``--only``, and that the explorer measures the same
peak memory as the benchmark for the same call. No assertion on how long anything takes."""

import json

import pytest
import torch

from attnlab.apps import explorer_lab as lab
from attnlab.bench import core as bc
from attnlab.core import masks


@pytest.mark.parametrize("backend", ["math", "sdpa", "tiled"])
def test_bench_and_explorer_measure_the_same_peak(backend):
    row = bc.measure_case(backend, "causal", 128, "fwd", repeats=1)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(bc.B, bc.H, 128, bc.D, generator=g) for _ in range(3))
    _, _, peak = lab.measure(lambda: lab.run_backend(backend, q, k, v, masks.causal()), repeats=1)
    assert row["peak_mem_mb"] == round(peak / 2**20, 2) > 0
    if backend == "math":  # it materialises (H, L, L) float32 scores at least once
        assert peak >= bc.H * 128 * 128 * 4


def test_attention_row_structure():
    row = bc.measure_case("tiled", "causal_window_256", 64, "fwdbwd", repeats=1)
    assert {"backend", "mask", "pass", "L", "time_ms", "gflops", "peak_mem_mb"} <= set(row)
    assert row["time_ms"] > 0 and row["peak_mem_mb"] > 0
    assert "peak_mem_mb" not in bc.measure_case("sdpa", "full", 64, "fwd", 1, memory=False)


def test_recording_cost_tiny():
    rows = bc.recording_cost(models=((32, 2, 4, 16), (32, 3, 2, 24)), rounds=1, repeats=1)
    assert [(r["depth"], r["L"]) for r in rows] == [(2, 16), (3, 24)]
    for r in rows:
        assert r["maps"] == r["depth"]  # every layer recorded
        assert r["out_max_diff"] < 1e-5  # recording does not change the output
        assert r["ratio"] == pytest.approx(r["record_ms"] / r["plain_ms"], rel=0.01)
        assert r["record_peak_mb"] > r["plain_peak_mb"]  # the maps are kept


def test_kv_cache_decoding_tiny():
    r = bc.kv_cache_decoding(dim=32, depth=2, num_heads=4, prefix=16, rounds=1, repeats=1)
    assert r["outputs_equal"] and r["out_max_diff"] <= 1e-5 and r["position"] == 16
    assert r["step_ms"] > 0 and r["full_ms"] > 0 and r["speedup"] > 0
    assert {"step_peak_mb", "full_peak_mb"} <= set(r)


def test_only_runs_the_chosen_cases_and_keeps_the_others(tmp_path, monkeypatch):
    tiny_rec, tiny_kv = bc.recording_cost, bc.kv_cache_decoding
    monkeypatch.setattr(
        bc,
        "recording_cost",
        lambda **kw: tiny_rec(models=((32, 2, 4, 16),), rounds=1, repeats=1, memory=kw["memory"]),
    )
    monkeypatch.setattr(
        bc,
        "kv_cache_decoding",
        lambda **kw: tiny_kv(
            dim=32, depth=2, num_heads=4, prefix=8, rounds=1, repeats=1, memory=kw["memory"]
        ),
    )
    out = tmp_path / "core.json"
    out.write_text(json.dumps({"rows": [{"backend": "sdpa", "L": 256}], "linear_error": []}))
    threads = torch.get_num_threads()
    argv = ["--only", "recording,kv_cache", "--no-memory", "--threads", "1", "--out", str(out)]
    assert bc.main(argv) == 0
    assert torch.get_num_threads() == threads  # restored
    res = json.loads(out.read_text())
    assert res["recording"]["machine"]["threads"] == res["kv_cache"]["machine"]["threads"] == 1
    assert res["rows"] == [{"backend": "sdpa", "L": 256}] and res["linear_error"] == []
    assert res["recording"]["rows"][0]["maps"] == 2
    assert res["kv_cache"]["outputs_equal"] and "step_peak_mb" not in res["kv_cache"]
    assert res["kv_cache"]["command"].startswith("attnlab bench core --only recording,kv_cache")
    with pytest.raises(SystemExit, match="--only takes some of"):
        bc.main(["--only", "recording,bogus", "--out", str(out)])


def test_attention_case_alone_then_memory_only(tmp_path):
    out = tmp_path / "core.json"
    argv = "--only attention --max-len 256 --backends sdpa,tiled --masks causal --no-memory"
    assert bc.main([*argv.split(), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert {(r["backend"], r["pass"]) for r in res["rows"]} == {
        (b, p) for b in ("sdpa", "tiled") for p in ("fwd", "fwdbwd")
    }
    assert all(r["vs_sdpa"] > 0 and "peak_mem_mb" not in r for r in res["rows"])
    assert "recording" not in res and res["machine"]["matmul_2048_gflops"] > 0
    assert out.with_suffix(".png").is_file()
    # --memory-only fills in the peaks, the same as measuring them with the times
    assert bc.main(["--memory-only", "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert [r["time_ms"] for r in again["rows"]] == [r["time_ms"] for r in res["rows"]]
    for r in again["rows"]:
        assert (
            r["peak_mem_mb"]
            == bc.measure_case(r["backend"], "causal", 256, r["pass"], None, 1)["peak_mem_mb"]
        )


def test_a_subset_re_measure_replaces_its_rows_and_keeps_the_others(tmp_path):
    out = tmp_path / "core.json"
    first = "--only attention --max-len 256 --backends sdpa,tiled --masks causal --no-memory"
    assert bc.main([*first.split(), "--out", str(out)]) == 0
    before = json.loads(out.read_text())
    again = "--only attention --max-len 256 --backends tiled --masks causal,prefix_lm --no-memory"
    assert bc.main([*again.split(), "--out", str(out)]) == 0
    after = json.loads(out.read_text())
    keys = [(r["backend"], r["mask"], r["pass"]) for r in after["rows"]]
    assert len(keys) == len(set(keys))  # each (backend, mask, pass, L) once
    old = {(r["backend"], r["mask"], r["pass"]): r for r in before["rows"]}
    for r in after["rows"]:
        if r["backend"] == "sdpa":  # not re-measured: kept as it was
            assert r == old[("sdpa", r["mask"], r["pass"])]
    assert {k for k in keys if k[0] == "tiled"} == {
        ("tiled", m, p) for m in ("causal", "prefix_lm") for p in ("fwd", "fwdbwd")
    }
    assert after["command"] == before["command"]  # the base run's command stays
    (log,) = after["remeasured"]
    assert log["command"] == "attnlab bench core " + again + f" --out {out}"
    assert log["rows"] == 4
