"""The ``attnlab`` command line: help, info, training end to end, SIGKILL + resume, and bad
input (one line on stderr, exit 2, nothing overwritten)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attnlab.cli import build_parser, main
from attnlab.core import checkpoint as ckpt
from attnlab.core import registry

SMALL = ["model.depth=1", "model.dim=32", "model.num_heads=2", "data.num_train=256",
         "data.num_eval=32", "batch_size=16", "log_every=5", "eval_every=0",
         "device=cpu"]  # fmt: skip


def _toy():
    return pytest.importorskip("attnlab.core.toy")


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message on stderr"
    return err[-1]


@pytest.mark.parametrize("cmd", [[], ["train"], ["eval"], ["bench"], ["info"], ["demo"]])
def test_help_everywhere(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: attnlab" in capsys.readouterr().out


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "attnlab", "--help"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0 and "train" in proc.stdout


def test_info_lists_models_and_versions(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert "toy_test" in info["models"] and "toy" in info["recipes"]
    assert "trainer" in info["bench_suites"]
    assert isinstance(info["shipped_weights"], dict)


def test_unknown_domain_model_and_suite_exit_2(capsys):
    _toy()
    assert main(["train", "nosuch"]) == 2
    line = _err_line(capsys)
    assert "unknown training recipe 'nosuch'" in line and "toy" in line
    assert main(["eval", "toy/nosuch"]) == 2
    assert "unknown weights 'toy/nosuch'" in _err_line(capsys)
    assert main(["bench", "nosuch"]) == 2
    assert "unknown bench suite 'nosuch'; valid:" in _err_line(capsys)


def test_unknown_config_key_and_bad_value_exit_2(tmp_path, capsys):
    _toy()
    assert main(["train", "toy", f"out_dir={tmp_path}/r", "bogus=1"]) == 2
    assert "unknown config key 'bogus'" in _err_line(capsys)
    assert main(["train", "toy", f"out_dir={tmp_path}/r", "steps=many"]) == 2
    assert _err_line(capsys) == "attnlab train: error: steps=many: expected an int"
    bad = tmp_path / "cfg.json"
    bad.write_text('{"lr": 0.1, "nope": 3}')
    assert main(["train", "toy", "--config", str(bad), f"out_dir={tmp_path}/r"]) == 2
    assert "unknown config key" in _err_line(capsys)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "item,message",
    [
        ("model.dim=abc", "model.dim=abc: expected an int"),
        ("model.mlp_ratio=wide", "model.mlp_ratio=wide: expected a float"),
        ("model.qkv_bias=2", "model.qkv_bias=2: expected a bool (true/false/1/0/yes/no)"),
        ("precision=fp8", "precision=fp8: expected one of 'fp32', 'bf16', 'fp16'"),
        ("lr=fast", "lr=fast: expected a float"),
        ("quiet=2", "quiet=2: expected a bool (true/false/1/0/yes/no)"),
        ("data.length=long", "data.length=long: expected an int"),
        ("model.width=3", "unknown model key 'model.width' for 'toy_copy'; valid: model."),
        ("stepz=3", "unknown config key 'stepz'; valid: recipe, model, "),
        ("steps", "override 'steps' is not of the form key=value"),
    ],
)
def test_typed_overrides_one_line_exit_2(item, message, tmp_path, capsys):
    """Overrides are parsed by the field's type before anything is built or written."""
    _toy()
    assert main(["train", "toy", f"out_dir={tmp_path}/r", item]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"attnlab train: error: {message}"), err
    assert not (tmp_path / "r").exists()


def test_resume_path_not_a_checkpoint_exit_2(tmp_path, capsys):
    _toy()
    junk = tmp_path / "junk.safetensors"
    junk.write_text("hello")
    assert main(["train", "toy", "--resume", str(junk)]) == 2
    assert "is not a checkpoint" in _err_line(capsys)
    assert main(["train", "toy", "--resume", str(tmp_path / "missing")]) == 2
    assert "not a checkpoint" in _err_line(capsys)
    assert junk.read_text() == "hello"


def _train(out: Path, *extra: str) -> int:
    return main(["train", "toy", "--quiet", *SMALL, f"out_dir={out}", *extra])


def test_train_save_eval_and_refuse_overwrite(tmp_path, capsys, monkeypatch):
    _toy()
    monkeypatch.setenv("ATTNLAB_WEIGHTS", str(tmp_path / "weights"))
    out = tmp_path / "run"
    assert _train(out, "steps=10", "--save-weights", "toy/unit") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 10 and "eval_loss" in summary
    assert (out / "metrics.jsonl").exists() and (out / "config.json").exists()
    card = registry.read_card("toy/unit")
    assert card["recipe"] == "toy" and card["command"].startswith("attnlab train toy")
    # Existing run / weights: refused, untouched.
    before = (out / "checkpoint.safetensors").read_bytes()
    assert _train(out, "steps=10") == 2
    assert "already holds a run" in _err_line(capsys)
    assert _train(tmp_path / "run2", "steps=10", "--save-weights", "toy/unit") == 2
    assert "exist" in _err_line(capsys)
    assert (out / "checkpoint.safetensors").read_bytes() == before
    # eval reproduces the card's metric; another architecture's weights are refused.
    assert main(["eval", "toy/unit"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["eval_loss"] == pytest.approx(card["metrics"]["eval_loss"], rel=1e-5)
    card_path = tmp_path / "weights" / "toy" / "unit.json"
    card["model_args"]["dim"] = 64
    card["config"] = None
    card_path.write_text(json.dumps(card))
    assert main(["eval", "toy/unit"]) == 2
    assert "another architecture" in _err_line(capsys)


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, one_thread):
    """A real ``kill -9`` mid-run; ``--resume`` ends with bit-identical weights."""
    _toy()
    steps = ["steps=120", "ckpt_every=3", "log_every=3", "model.dropout=0.1"]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "attnlab", "train", "toy", "--quiet", *SMALL, *steps,
           f"out_dir={killed}"]  # fmt: skip
    # One thread here and there: float sums must be ordered alike to compare bits, and a
    # 2-thread run stalls badly on a busy 2-core machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env)
    stop = time.monotonic() + 120
    step = 0
    try:
        while time.monotonic() < stop and proc.poll() is None:
            if (killed / "checkpoint.safetensors").exists():
                step = ckpt.read_meta(killed)["step"]
                if step >= 6:
                    break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    step = ckpt.read_meta(killed)["step"]
    assert 0 < step < 120, f"the run was not killed mid-way (checkpoint at step {step})"
    assert main(["train", "toy", "--quiet", "--resume", str(killed)]) == 0
    full = tmp_path / "full"
    assert main(["train", "toy", "--quiet", *SMALL, *steps, f"out_dir={full}"]) == 0
    with (
        ckpt.safe_open(str(killed / "checkpoint.safetensors"), "pt") as a,
        ckpt.safe_open(str(full / "checkpoint.safetensors"), "pt") as b,
    ):
        keys = [k for k in a.keys() if k.startswith(("model.", "optim."))]
        assert keys and set(keys) <= set(b.keys())
        for k in keys:
            assert torch.equal(a.get_tensor(k), b.get_tensor(k)), k

    def losses(run: Path) -> list[float]:
        recs = [json.loads(x) for x in (run / "metrics.jsonl").open()]
        return [r["loss"] for r in recs if "loss" in r]

    assert losses(killed) == losses(full)


def test_demo_unknown_domain_exits_2_before_serving(capsys):
    assert main(["demo", "nosuch"]) == 2
    line = _err_line(capsys)
    assert "domain must be one of" in line and "explorer" in line


def test_demo_vision_checkpoint_is_checked_before_serving_and_reaches_the_tab(
    tmp_path, monkeypatch, capsys
):
    import timm
    from safetensors.torch import save_file

    import attnlab.apps.suite as suite

    served = {}
    monkeypatch.setattr(suite, "launch", lambda **kw: served.update(kw))
    assert main(["demo", "text", "--checkpoint", "x.pth"]) == 2
    assert "belong to the vision demo" in _err_line(capsys)
    assert main(["demo", "vision", "--checkpoint", str(tmp_path / "none.safetensors")]) == 2
    assert "none.safetensors" in _err_line(capsys)
    torch.manual_seed(0)
    src = timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=3)
    f = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(f))
    assert main(["demo", "vision", "--model", "vit_small_patch16_224", "--checkpoint", str(f)]) == 2
    assert "does not fit" in _err_line(capsys)  # a checkpoint of another architecture
    assert not served
    assert main(["demo", "vision", "--model", "deit_tiny_patch16_224", "--checkpoint", str(f)]) == 0
    assert served["options"] == {"model": "deit_tiny_patch16_224", "checkpoint": str(f)}
    page = suite.build("vision", served["options"])  # the tab builds with them pre-filled
    assert "deit_tiny_patch16_224" in json.dumps(page.config)
    with pytest.raises(ValueError, match="need one demo named"):
        suite.build(None, served["options"])
