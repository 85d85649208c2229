"""``attnlab bench recurrence``: the tiny configuration end to end, the JSON schema, the shipped
results, and the pieces (size matching, loss alignment, plots) on their own."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from attnlab.apps.views import recurrence_plots as rp
from attnlab.bench import recurrence as rec

TABLE_PROPS = {"parallelism", "long-range dependencies", "per-step vs per-layer cost",
               "interpretability", "size"}  # fmt: skip


def check_schema(res: dict) -> None:
    d = res["accuracy"]["d"]
    for name in ("lstm", "attention"):
        assert len(res["accuracy"][name]) == len(d)
        assert all(0.0 <= a <= 1.0 for a in res["accuracy"][name])
        assert [r["d"] for r in res["runs"][name]] == d
        for key in ("train_step_ms", "inference_ms"):
            times = res["timing"][name][key]
            assert len(times) == len(res["timing"]["L"]) and all(t > 0 for t in times)
    assert res["chance"] == pytest.approx(1 / res["config"]["vocab_size"])
    assert {r["property"] for r in res["table"]} == TABLE_PROPS
    assert all(set(r) == {"property", "metric", "lstm", "attention"} for r in res["table"])
    ex = res["attention_map"]
    w = torch.tensor(ex["weights"])
    L = ex["d"] + res["config"]["scored"]
    assert w.shape == (L, L) and len(ex["tokens"]) == L
    torch.testing.assert_close(w.sum(-1), torch.ones(L), atol=5e-3, rtol=0)  # rows sum to 1
    assert torch.all(w.triu(1) == 0)  # causal: nothing above the diagonal
    assert res["command"].startswith("attnlab bench recurrence")
    assert {"load_before", "load_after", "threads"} <= set(res["machine"])
    # similar size: within 5 % of each other
    p = res["params"]
    assert abs(p["lstm"] - p["attention"]) / p["attention"] < 0.05


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, object]:
    out = tmp_path_factory.mktemp("rec") / "r.json"
    threads = torch.get_num_threads()
    assert rec.main(["--quick", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads  # training ran on 1 thread, then restored
    return json.loads(out.read_text()), out


def test_quick_run_schema_and_sanity(quick) -> None:
    res, out = quick
    check_schema(res)
    assert res["command"] == f"attnlab bench recurrence --quick --out {out}"
    # the attention model learns the short offsets well above chance (1/16) ...
    assert min(res["accuracy"]["attention"]) > 0.5
    # ... by attending to the source token t - d
    assert all(r["source_weight"] > 0.3 for r in res["runs"]["attention"])
    for name in res["figures"].values():
        png = out.parent / name
        assert png.stat().st_size < 200_000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_printed_table(quick, capsys) -> None:
    res, _ = quick
    text = rec.format_table(res["table"])
    assert text.splitlines()[0].split() == ["property", "metric", "lstm", "attention"]
    assert len(text.splitlines()) == len(res["table"]) + 2


def test_shipped_results_schema() -> None:
    if not rec.RESULTS.exists():
        pytest.skip("results not shipped yet")
    res = json.loads(rec.RESULTS.read_text())
    check_schema(res)
    assert res["accuracy"]["d"] == [8, 16, 32, 64, 128, 256, 512]
    for name in res["figures"].values():
        assert (rec.RESULTS.parent / name).stat().st_size < 200_000


def test_replot_rebuilds_table_and_figures_without_measuring(quick, tmp_path) -> None:
    res, out = quick
    again = tmp_path / "again.json"
    assert rec.main(["--replot", str(out), "--out", str(again)]) == 0
    res2 = json.loads(again.read_text())
    assert res2["table"] == res["table"] and res2["timing"] == res["timing"]
    assert res2["command"] == res["command"]  # still the command that measured
    assert all((tmp_path / name).is_file() for name in res2["figures"].values())


def test_lstm_width_matches_parameter_formula() -> None:
    for vocab_size, dim, target in [(16, 64, 52_176), (16, 32, 9_000), (7, 24, 5_000)]:
        h = rec.lstm_hidden_for(target, vocab_size, dim)
        n = rec.count_params(rec.LSTMRecall(vocab_size, dim, h))
        n_up = rec.count_params(rec.LSTMRecall(vocab_size, dim, h + 1))
        n_down = rec.count_params(rec.LSTMRecall(vocab_size, dim, h - 1))
        assert abs(n - target) <= min(abs(n_up - target), abs(n_down - target))


def test_loss_scores_exactly_the_source_token() -> None:
    # a model that outputs one-hot logits of x[t - d] must reach accuracy 1 and ~0 loss
    d, vocab_size = 5, 16
    task = rec.recall_task(4, length=d + 7, distance=d, vocab_size=vocab_size, seed=3)

    class Oracle(torch.nn.Module):
        def forward(self, tokens):
            shifted = tokens.roll(d, dims=1)
            return 50.0 * torch.nn.functional.one_hot(shifted, vocab_size).float()

    batch = {"tokens": task.tokens, "targets": task.targets}
    loss, metrics = rec.recall_loss(Oracle(), batch)
    assert metrics["acc"].item() == 1.0 and loss.item() < 1e-6
    wrong = {"tokens": task.tokens, "targets": task.targets.roll(1, dims=1)}
    assert rec.recall_loss(Oracle(), wrong)[1]["acc"].item() < 0.5


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="map_distance"):
        rec.run(dataclasses.replace(rec.QUICK, map_distance=3))
    with pytest.raises(ValueError, match="train_threads"):
        rec.run(dataclasses.replace(rec.QUICK, train_threads=0))
    with pytest.raises(ValueError, match="distances"):
        rec.run(dataclasses.replace(rec.QUICK, distances=(0, 4)))
    with pytest.raises(SystemExit):
        rec.main(["--quick", "--steps", "0"])
    with pytest.raises(SystemExit):
        rec.main(["--replot", "/nonexistent/recurrence.json"])
    with pytest.raises(ValueError, match="lacks"):
        rp.plot_accuracy({"accuracy": {}})
    with pytest.raises(TypeError, match="res"):
        rp.plot_timing([1, 2])


def test_plots_respond_to_the_numbers(quick) -> None:
    res, _ = quick
    a = rp.plot_attention_example(res)
    flipped = dict(res, attention_map=dict(res["attention_map"]))
    w = torch.tensor(res["attention_map"]["weights"])
    flipped["attention_map"]["weights"] = torch.eye(w.shape[0]).tolist()
    b = rp.plot_attention_example(flipped)
    assert a.size == b.size and a.tobytes() != b.tobytes()
    acc = rp.plot_accuracy(res)
    res2 = dict(res, accuracy=dict(res["accuracy"], lstm=[1.0] * len(res["accuracy"]["d"])))
    assert acc.tobytes() != rp.plot_accuracy(res2).tobytes()
