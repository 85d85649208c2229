"""`attnlab bench gpu`: refuses with a sentence where torch sees no CUDA device, and its rows
(every backend against torch's SDPA, recording against the fused forward) are complete and
consistent when run on the CPU as a smoke test."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab.bench import gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_refuses_without_cuda(capsys, tmp_path):
    assert gpu.main(["--out", str(tmp_path / "g.json")]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()


def test_smoke_run_on_cpu_writes_every_row(tmp_path):
    out = tmp_path / "g.json"
    argv = [
        "--device",
        "cpu",
        "--lengths",
        "64",
        "--dtypes",
        "fp32",
        "--budget",
        "0.001",
        "--models",
        "32",
        "--out",
        str(out),
    ]
    assert gpu.main(argv) == 0
    res = json.loads(out.read_text())
    rows = res["attention"]
    # 3 masks x 2 passes x backends (math everywhere at this L; linear without the window)
    assert len(rows) == 3 * 2 * 5 - 2
    for r in rows:
        assert r["time_ratio"] == pytest.approx(r["ms"] / r["torch_ms"])
        assert r["ms"] > 0 and r["torch_ms"] > 0
    assert {r["backend"] for r in rows} == set(gpu.BACKENDS)
    (rec,) = res["recording"]
    assert rec["L"] == 32 and rec["ratio"] == pytest.approx(rec["record_ms"] / rec["fused_ms"])
    assert res["command"].startswith("attnlab bench gpu --device cpu")


def test_unknown_dtype_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        gpu.main(["--device", "cpu", "--dtypes", "fp8", "--out", str(tmp_path / "g.json")])
