"""``attnlab bench audio --quick`` as a smoke run: the JSON's structure, metrics in range, the
automatic heads never worse on their calibration data than the single best of them. No
assertion on how long anything takes."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("gradio")

from attnlab.bench import audio as ba  # noqa: E402
from attnlab.core.registry import list_weights  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.mark.skipif(not {"audio/kws", "audio/asr"} <= set(list_weights()),
                    reason="the shipped audio weights are not in this checkout")  # fmt: skip
def test_quick_run_writes_rows_and_targets(tmp_path):
    out = tmp_path / "audio.json"
    assert ba.main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["command"] == f"attnlab bench audio --quick --threads 1 --out {out}"
    assert res["quick"] is True and res["machine"]["threads"] == 1
    rows = {r["case"]: r for r in res["rows"]}
    assert list(rows) == ["kws", "asr", "word_starts", "heads", "demo", "other_sounds"]
    other = rows["other_sounds"]  # numbers only for a spotter with those two classes
    from attnlab.domains.audio.infer import keyword_model

    extra = {"_unknown_", "_silence_"} <= set(keyword_model().config.labels)
    assert ("skipped" in other) != extra
    for name in ("unknown", "silence") if extra else ():
        assert 0 <= other[f"{name}_recall"] <= 1 - other[f"{name}_as_keyword"] + 1e-9
    assert 0 <= rows["kws"]["acc"] <= 1 and rows["kws"]["n"] == 40
    assert 0 <= rows["asr"]["cer"] and rows["asr"]["n"] == 8
    ws = rows["word_starts"]
    assert 0 <= ws["median_ms"] <= ws["p90_ms"] and ws["num_words"] > 8
    h = rows["heads"]
    assert len(h["single_head_test_mae_ms"]) == 2 and len(h["single_head_test_mae_ms"][0]) == 4
    assert h["best_single_mae_ms"] == pytest.approx(
        min(min(r) for r in h["single_head_test_mae_ms"]), abs=0.1
    )
    assert rows["demo"]["time_ms"] > 0 and 1.0 < rows["demo"]["clip_s"] < 3.0
    assert set(res["targets"]) == {"kws_acc", "cer", "word_start_mae_ms", "demo_ms"}


@pytest.mark.skipif("audio/kws" not in set(list_weights()),
                    reason="the shipped audio weights are not in this checkout")  # fmt: skip
def test_other_draws_hear_fresh_held_out_voices():
    from attnlab.domains.audio.infer import keyword_model

    row = ba.other_draws(keyword_model(), seeds=(11, 12), n=20)
    assert row["case"] == "kws_other_draws" and row["n_each"] == 20
    assert len(row["acc"]) == 2 and row["min_acc"] == min(row["acc"])
    assert row["min_acc"] >= 0.7  # the shipped spotter scores ~0.96 on such draws
