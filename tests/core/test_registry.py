"""Registry: names -> builders, and weights files checked by size, sha256, config and shapes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from attnlab.core import registry
from attnlab.core.registry import WeightsError


@dataclass(frozen=True)
class _Cfg:
    dim: int = 8
    depth: int = 2


class _Net(nn.Module):
    def __init__(self, cfg: _Cfg) -> None:
        super().__init__()
        self.config = cfg
        self.layers = nn.ModuleList(nn.Linear(cfg.dim, cfg.dim) for _ in range(cfg.depth))


@registry.register
def _registry_test_net(**overrides) -> _Net:
    return _Net(_Cfg(**overrides))


@registry.register
def _registry_test_other(**overrides) -> _Net:
    return _Net(_Cfg(dim=overrides.pop("dim", 8) * 2, **overrides))


def test_register_create_list():
    assert "_registry_test_net" in registry.list_models("_registry_test_*")
    assert registry.list_models("no-such-*") == []
    model = registry.create("_registry_test_net", dim=4)
    assert model.config == _Cfg(dim=4) and model.registry_args == {"dim": 4}
    with pytest.raises(ValueError, match="unknown model 'nope'; valid: .*_registry_test_net"):
        registry.create("nope")
    with pytest.raises(TypeError):
        registry.create("_registry_test_net", width=3)  # unknown override


def test_duplicate_name_raises():
    def _registry_test_net(**kw):  # same name, another function
        return _Net(_Cfg())

    with pytest.raises(ValueError, match="already registered"):
        registry.register(_registry_test_net)


@pytest.fixture
def shipped(tmp_path):
    torch.manual_seed(0)
    model = registry.create("_registry_test_net", dim=6)
    card = {"command": "test", "metrics": {"loss": 0.5}, "data": "none", "split": "none"}
    path = registry.save_weights(model, "unit/net", card, root=tmp_path)
    return model, path, tmp_path


def test_save_load_round_trip(shipped):
    model, path, root = shipped
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["model"] == "_registry_test_net" and card["config"] == {"dim": 6, "depth": 2}
    assert card["bytes"] == path.stat().st_size and len(card["sha256"]) == 64
    assert registry.list_weights(root) == ["unit/net"]
    loaded = registry.load("unit/net", root=root)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown weights 'unit/other'; valid: unit/net"):
        registry.load("unit/other", root=root)


def test_truncated_file_is_refused(shipped):
    _, path, root = shipped
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"is truncated \(\d+ bytes, the card says \d+\)"):
        registry.load("unit/net", root=root)


def test_corrupted_file_is_refused(shipped):
    _, path, root = shipped
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside a weight, same size
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="is corrupted \\(sha256"):
        registry.load("unit/net", root=root)


def test_other_architecture_is_refused(shipped, tmp_path):
    _, path, root = shipped
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    # A consistent card (hash and size right) whose builder makes a different network.
    card.update(model="_registry_test_other", config=None)
    card_path.write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="another architecture .*layers.0.weight"):
        registry.load("unit/net", root=root)
    card.update(model="_registry_test_net", config={"dim": 6, "depth": 3})
    card_path.write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="config in the card does not match"):
        registry.load("unit/net", root=root)


def test_bad_weights_names(tmp_path):
    with pytest.raises(ValueError, match="weights name"):
        registry.load("../etc/passwd", root=tmp_path)


def test_shipped_weights_load_if_present():
    """The toy cards in the repository's weights/ folder load and pass their checks
    (each domain's tests load their own weights)."""
    names = [n for n in registry.list_weights() if n.startswith("toy/")]
    if not names:
        pytest.skip("no weights shipped yet")
    pytest.importorskip("attnlab.core.toy")
    for name in names:
        assert isinstance(registry.load(name), nn.Module)


def _unannotated(**overrides):
    return _Net(_Cfg(**overrides))


def test_model_config_class_from_annotations():
    assert registry.model_config_class("_registry_test_net") is _Cfg
    registry.register(_unannotated)
    assert registry.model_config_class("_unannotated") is None
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        registry.model_config_class("nope")


def test_discovery_runs_once_and_reports_failures(monkeypatch):
    """A plugin that fails to import is reported (not raised, not silent), and named when a
    lookup misses; discovery is cached."""
    monkeypatch.setattr(registry, "_CORE_PLUGINS", ("attnlab.core._no_such_plugin",))
    monkeypatch.setattr(registry, "_import_failures", None)
    failures = registry.discover()
    assert failures and failures[0].startswith("_no_such_plugin: ModuleNotFoundError")
    monkeypatch.setattr(registry, "_CORE_PLUGINS", ())
    assert registry.discover() == failures  # cached: not run again
    with pytest.raises(ValueError, match=r"unknown model 'nope'; .*failed to import: _no_such"):
        registry.create("nope")


def test_plain_python_discovers_models_without_the_cli():
    """``import attnlab`` stays cheap; the first lookup finds the toy models, recipes and
    shipped weights, as the CLI does."""
    code = textwrap.dedent(
        """
        import sys
        import attnlab
        assert "attnlab.core.toy" not in sys.modules, "import attnlab imported the toy"
        assert "attnlab.core.train" not in sys.modules, "import attnlab imported the trainer"
        model = attnlab.create("toy_test", dim=16)
        assert model.config.dim == 16, model.config
        assert {"toy_test", "toy_copy"} <= set(attnlab.list_models("toy_*"))
        from attnlab.core.registry import list_weights
        for name in list_weights():
            if name.startswith("toy/"):
                assert not attnlab.load(name).training
        from attnlab.core.recipes import get_recipe
        assert get_recipe("toy").defaults.model == "toy_copy"
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
