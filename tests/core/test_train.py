"""Trainer: loss falls, exact resume after a crash, schedule, config, checkpoint format,
and 2-process DDP (torchrun + gloo) against one process with the same global batch."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import torch
from safetensors import safe_open
from torch import nn
from torch.utils.data import TensorDataset

from attnlab.core import checkpoint as ckpt
from attnlab.core import recipes, registry
from attnlab.core.overrides import OverrideError
from attnlab.core.train import (
    RecipeParts,
    TrainConfig,
    Trainer,
    get_recipe,
    list_recipes,
    lr_at,
    register_recipe,
    seed_everything,
)


class StandIn(nn.Module):
    """Small regression net with dropout, so that RNG state matters for exact resume."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Dropout(0.1), nn.Linear(32, 1))

    def loss(self, batch):
        x, y = batch
        err = self.net(x).squeeze(-1) - y
        return err.pow(2).mean(), {"mae": err.abs().mean()}


def _data(n: int = 256) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = torch.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2]
    return TensorDataset(x, y)


def _cfg(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(
        steps=12, batch_size=32, lr=1e-2, warmup_steps=2, log_every=1, quiet=True,
        out_dir=str(tmp_path / "run"), device="cpu", seed=3,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _run(cfg: TrainConfig, resume=None, on_step=None):
    seed_everything(cfg.seed)
    model = StandIn()
    result = Trainer(cfg, model, _data(), _data(64), on_step=on_step).fit(resume)
    return model, result


def test_loss_falls_and_files_are_written(tmp_path):
    cfg = _cfg(tmp_path, steps=40, grad_accum=2)
    _, result = _run(cfg)
    losses = [r["loss"] for r in result.records if "loss" in r]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    out = Path(cfg.out_dir)
    assert json.loads((out / "config.json").read_text()) == cfg.to_dict()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["step"] == 1 and "samples_per_s" in json.loads(lines[0])
    assert (out / "metrics.csv").read_text().startswith("step,")
    assert "eval_loss" in result.eval and "eval_mae" in result.eval


class _Crash(Exception):
    pass


def _crash_at(step_to_crash: int):
    def hook(step: int) -> None:
        if step == step_to_crash:
            raise _Crash

    return hook


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_crash_and_resume_is_bit_identical(tmp_path, precision):
    full_model, full = _run(_cfg(tmp_path / "a", precision=precision, ckpt_every=4))
    cfg = _cfg(tmp_path / "b", precision=precision, ckpt_every=4)
    with pytest.raises(_Crash):
        _run(cfg, on_step=_crash_at(7))  # dies 3 steps after the step-4 checkpoint
    assert ckpt.read_meta(Path(cfg.out_dir))["step"] == 4
    resumed_model, resumed = _run(cfg, resume=cfg.out_dir)
    for (k, a), b in zip(
        full_model.state_dict().items(), resumed_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    # The resumed log continues the killed one without duplicates.
    steps = [json.loads(x)["step"] for x in Path(cfg.out_dir, "metrics.jsonl").open()]
    assert [s for s in steps] == [s for s in (json.loads(x)["step"] for x in
            Path(tmp_path / "a" / "run" / "metrics.jsonl").open())]  # fmt: skip
    last = [r for r in resumed.records if "loss" in r][-1]
    assert last == [r for r in full.records if "loss" in r][-1] | {
        k: last[k] for k in ("samples_per_s",)
    }


def test_checkpoint_holds_optimizer_rng_and_position(tmp_path):
    cfg = _cfg(tmp_path, steps=10, ckpt_every=5)  # 256 // 32 = 8 steps per epoch
    _run(cfg)
    path = Path(cfg.out_dir) / "checkpoint.safetensors"
    meta = ckpt.read_meta(path)
    assert (meta["step"], meta["epoch"], meta["batch_in_epoch"]) == (10, 1, 2)
    assert TrainConfig.from_dict(meta["config"]) == cfg
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert {"optim.0.exp_avg", "optim.0.exp_avg_sq", "rng.torch.0"} <= keys
    assert "model.net.0.weight" in keys
    assert not list(Path(cfg.out_dir).glob(".*tmp*"))  # atomic write left nothing behind


def test_resume_refuses_non_checkpoint_and_changed_config(tmp_path):
    cfg = _cfg(tmp_path, steps=4)
    _run(cfg)
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a checkpoint"):
        _run(cfg, resume=bogus)
    with pytest.raises(ValueError, match="differs from the checkpoint"):
        _run(cfg.replace(lr=0.5), resume=cfg.out_dir)


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg, 100) == pytest.approx(0.1)
    assert lr_at(9, cfg, 100) == pytest.approx(1.0)
    assert lr_at(55, cfg, 100) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(100, cfg, 100) == pytest.approx(0.1)
    assert lr_at(50, cfg.replace(schedule="constant"), 100) == 1.0


def test_config_overrides_and_errors():
    cfg = TrainConfig(steps=10).with_overrides(["lr=0.01", "steps=5", "model.dim=64", "quiet=true"])
    assert (cfg.lr, cfg.steps, cfg.model_args, cfg.quiet) == (0.01, 5, {"dim": 64}, True)
    with pytest.raises(ValueError, match="unknown config key 'bogus'"):
        cfg.with_overrides(["bogus=1"])
    with pytest.raises(OverrideError, match="^steps=abc: expected an int$"):
        cfg.with_overrides(["steps=abc"])
    with pytest.raises(OverrideError, match="^precision=fp8: expected one of 'fp32', 'bf16'"):
        cfg.with_overrides(["precision=fp8"])
    with pytest.raises(OverrideError, match=r"^quiet=maybe: expected a bool \(true/false"):
        cfg.with_overrides(["quiet=maybe"])
    with pytest.raises(OverrideError, match="not of the form key=value"):
        cfg.with_overrides(["steps"])
    with pytest.raises(ValueError, match="precision"):
        cfg.replace(precision="fp8")
    with pytest.raises(ValueError, match="unknown config key"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(OverrideError, match="^lr=fast: expected a float$"):
        TrainConfig.from_dict({"lr": "fast"})
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert "lr=0.01" in str(cfg)


@dataclass(frozen=True)
class _NetConfig:
    dim: int = 8
    ratio: float = 4.0
    bias: bool = True
    window: int | None = None
    sizes: tuple[int, ...] = (2, 2)
    norm: Literal["layer", "rms"] = "layer"


class _Net(nn.Module):
    def __init__(self, config: _NetConfig) -> None:
        super().__init__()
        self.config = config
        self.lin = nn.Linear(config.dim, 1, bias=config.bias)


@registry.register
def _train_test_net(**overrides) -> _Net:
    return _Net(_NetConfig(**overrides))


def test_model_overrides_are_typed_by_the_builder_config():
    cfg = TrainConfig(steps=1, model="_train_test_net", data_args={"length": 8})
    got = cfg.with_overrides(["model.dim=16", "model.ratio=2", "model.bias=no",
                              "model.window=none", "model.sizes=3,4", "model.norm=rms",
                              "data.length=4", "data.extra=[1, 2]"])  # fmt: skip
    assert got.model_args == {"dim": 16, "ratio": 2.0, "bias": False, "window": None,
                              "sizes": (3, 4), "norm": "rms"}  # fmt: skip
    assert got.data_args == {"length": 4, "extra": [1, 2]}
    assert cfg.with_overrides(["model.window=5"]).model_args == {"window": 5}
    for item, msg in [
        ("model.dim=abc", "model.dim=abc: expected an int"),
        ("model.ratio=big", "model.ratio=big: expected a float"),
        ("model.bias=maybe", "model.bias=maybe: expected a bool (true/false/1/0/yes/no)"),
        ("model.window=x", "model.window=x: expected an int or none"),
        ("model.sizes=1,a", "model.sizes=1,a: expected a tuple of int, comma-separated"),
        ("model.norm=batch", "model.norm=batch: expected one of 'layer', 'rms'"),
        ("data.length=long", "data.length=long: expected an int"),
    ]:
        with pytest.raises(OverrideError) as exc:
            cfg.with_overrides([item])
        assert str(exc.value) == msg
    with pytest.raises(OverrideError, match="unknown model key 'model.width' for "
                       "'_train_test_net'; valid: model.dim, model.ratio, model.bias"):  # fmt: skip
        cfg.with_overrides(["model.width=3"])
    # the model named in the same overrides decides the types; an unknown one is refused
    assert TrainConfig(steps=1).with_overrides(
        ["model=_train_test_net", "model.dim=4"]
    ).model_args == {"dim": 4}
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        TrainConfig(steps=1, model="nope").with_overrides(["model.dim=4"])


def test_recipe_registry():
    @register_recipe("_train_test_recipe", defaults=TrainConfig(steps=3))
    def build(cfg: TrainConfig) -> RecipeParts:
        """A test recipe."""
        return RecipeParts(StandIn(), _data(32))

    recipe = get_recipe("_train_test_recipe")
    assert recipe.build is build and recipe.defaults.recipe == "_train_test_recipe"
    assert recipe.description == "A test recipe." and "_train_test_recipe" in list_recipes()
    assert recipes.get_recipe is get_recipe  # the trainer re-exports the recipe registry
    with pytest.raises(ValueError, match="already registered"):
        register_recipe("_train_test_recipe", defaults=TrainConfig(steps=3))(build)
    with pytest.raises(ValueError, match="unknown training recipe 'nope'; valid: .*_train_test"):
        get_recipe("nope")


def test_unknown_recipe_names_domains_that_failed(monkeypatch):
    monkeypatch.setattr(registry, "_import_failures", ["music: ImportError: no music21"])
    with pytest.raises(ValueError, match=r"failed to import: music: ImportError: no music21\)"):
        get_recipe("nope")


def test_epochs_set_the_step_count_and_fp16_needs_cuda(tmp_path):
    _, result = _run(_cfg(tmp_path, steps=0, epochs=1.5, log_every=100))  # 256 // 32 = 8 a pass
    assert result.step == 12 and [r["step"] for r in result.records if "loss" in r] == [12]
    with pytest.raises(ValueError, match="fp16"):
        _run(_cfg(tmp_path, precision="fp16"))


def test_batch_must_split_over_accumulation(tmp_path):
    with pytest.raises(ValueError, match="grad_accum"):
        _run(_cfg(tmp_path, batch_size=30, grad_accum=4))


@pytest.fixture
def one_thread():
    """Like the torchrun workers (and immune to 2-thread stalls on a busy 2-core machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name(
    "torchrun").exists(), reason="torchrun not installed")  # fmt: skip
def test_two_process_ddp_matches_one_process(tmp_path, one_thread):
    """torchrun --nproc_per_node 2 (gloo) gives the loss curve of one process with the same
    global batch, and so does one process accumulating two micro-batches."""
    pytest.importorskip("attnlab.core.toy")
    from attnlab.cli import main

    overrides = ["steps=6", "batch_size=16", "log_every=1", "ckpt_every=0", "device=cpu",
                 "model.depth=1", "data.num_train=64", "data.num_eval=16"]  # fmt: skip

    def losses(out: Path) -> list[float]:
        recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in recs if "loss" in r]

    torchrun = str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "attnlab", "train", "toy",
           "--quiet", *overrides, f"out_dir={tmp_path / 'ddp'}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert main(["train", "toy", "--quiet", *overrides, f"out_dir={tmp_path / 'one'}"]) == 0
    accum = ["grad_accum=2", f"out_dir={tmp_path / 'accum'}"]
    assert main(["train", "toy", "--quiet", *overrides, *accum]) == 0
    one = torch.tensor(losses(tmp_path / "one"))
    assert len(one) == 6 and one[-1] < one[0]
    torch.testing.assert_close(torch.tensor(losses(tmp_path / "ddp")), one, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(losses(tmp_path / "accum")), one, rtol=1e-4, atol=1e-5)


def test_toy_tasks_and_causal_model():
    toy = pytest.importorskip("attnlab.core.toy")
    task = toy.copy_task(5, length=4, vocab_size=11, seed=1)
    seq = torch.cat([task.tokens, task.targets[:, -1:]], dim=1)  # (N, 2n+1) rebuilt
    torch.testing.assert_close(seq[:, :4], seq[:, 5:], rtol=0, atol=0)
    assert (seq[:, 4] == 10).all() and (task.targets[:, :4] == toy.IGNORE).all()
    torch.testing.assert_close(task.targets[:, 4:], task.tokens[:, :4], rtol=0, atol=0)
    assert torch.equal(toy.copy_task(5, length=4, vocab_size=11, seed=1).tokens, task.tokens)
    rec = toy.recall_task(3, length=9, distance=3, seed=2)
    torch.testing.assert_close(rec.targets[:, 3:], rec.tokens[:, :-3], rtol=0, atol=0)
    with pytest.raises(ValueError, match="distance"):
        toy.recall_task(3, length=9, distance=0)
    # The causal model: logits at t ignore tokens after t.
    torch.manual_seed(0)
    model = toy.toy_test(vocab_size=11, max_len=8).eval()
    a = torch.randint(0, 11, (2, 8))
    b = a.clone()
    b[:, 5:] = torch.randint(0, 11, (2, 3))
    torch.testing.assert_close(model(a)[:, :5], model(b)[:, :5], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(model(a)[:, 5:], model(b)[:, 5:])
