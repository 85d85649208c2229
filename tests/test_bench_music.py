"""``attnlab bench music --quick`` as a smoke run: the JSON's structure, the skewed relative
logits equal the naive gather, and the targets are judged from the rows. No assertion on how
long anything takes."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("music21")

from attnlab.bench import music as bm  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def test_quick_run_writes_rows_and_targets(tmp_path):
    out = tmp_path / "music.json"
    assert bm.main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["command"] == f"attnlab bench music --quick --threads 1 --out {out}"
    assert res["machine"]["threads"] == 1 and res["quick"] is True
    cases = {r["case"] for r in res["rows"]}
    assert {"nll", "kv_cache", "skew", "demo", "generate"} <= cases
    for r in res["rows"]:
        if r["case"] == "kv_cache":
            assert r["speedup"] == pytest.approx(r["no_cache_step_ms"] / r["cache_step_ms"],
                                                 rel=0.02)  # fmt: skip
        if r["case"] == "skew":
            assert r["max_abs_diff"] < 1e-5
            assert r["naive_peak_mb"] > r["skewed_peak_mb"] > 0
        if r["case"] == "generate":
            assert r["new"] == 32 and r["time_ms"] > 0
    for name, t in res["targets"].items():
        assert name in bm.TARGETS
        kind, target = bm.TARGETS[name]
        assert t["pass"] == (t["value"] <= target if kind == "max" else t["value"] >= target)
