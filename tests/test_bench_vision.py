"""``attnlab bench vision --quick`` as a smoke run: the JSON's structure, and recording every
map of timm's ViT through make_visible leaves its output equal to timm's fused forward and its
maps equal to timm's AttentionExtract. No assertion on how long anything takes."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("timm")
pytest.importorskip("gradio")

from attnlab.bench import vision as bv  # noqa: E402


def test_quick_run_writes_rows_and_targets(tmp_path):
    out = tmp_path / "vision.json"
    assert bv.main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["command"] == f"attnlab bench vision --quick --threads 1 --out {out}"
    assert res["machine"]["threads"] == 1 and res["quick"] is True
    demos = [r for r in res["rows"] if r["case"] == "demo" and "time_ms" in r]
    assert any(r["model"] == bv.TIMM_MODEL and r["tokens"] == 197 for r in demos)
    rec = next(r for r in res["rows"] if r["case"] == "recording")
    assert rec["maps"] == 12 and rec["map_shape"] == [12, 1, 6, 197, 197]
    assert rec["outputs_equal"] and rec["out_max_diff"] <= rec["atol"]
    assert rec["map_max_diff_vs_attention_extract"] < 1e-5
    assert rec["ratio"] == pytest.approx(rec["record_ms"] / rec["timm_fused_ms"], rel=0.01)
    pointing = [r for r in res["rows"] if r["case"] == "pointing"]
    assert pointing
    for r in pointing:
        if "skipped" not in r:
            assert r["method"] in (
                "rollout",
                "gradient_rollout",
                "cls_attention",
                "centre_baseline",
            )
            assert 0 <= r["pointing_game"] <= 1
    assert set(res["targets"]) == {"demo_ms", "recording_ratio"}
    for t in res["targets"].values():
        assert t["pass"] == (t["value"] <= t["target_max"])
