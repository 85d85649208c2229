"""Model names -> builders, and shipped weights (safetensors + JSON card) with hash checks.

Follows timm's registry (``@register_model`` keyed by the function name, ``create_model(name,
**overrides)``, ``list_models(pattern)``) and Hugging Face's model cards, reduced to a JSON
file. Shipped weights live in the repository's ``weights/`` folder as
``weights/<name>.safetensors`` + ``weights/<name>.json``, where ``<name>`` may contain a
folder (``toy/copy-lm``). The card holds the builder name and arguments, the resulting
config, the command that trained it, the data and split, the metrics, the file size and its
sha256. :func:`load` checks all of them before a single weight is copied.

Discovery: core never imports a domain by name in its code, yet ``attnlab.create("text_test")``
must work from plain Python. So the first lookup that misses (and every :func:`list_models`)
runs :func:`discover` once: it imports :mod:`attnlab.core.toy` and each
``attnlab.domains.<name>`` subpackage's ``model`` and ``train`` modules by name, whose
``@register`` decorators fill the registry. A domain that fails to import does not stop the
others; its error is kept (:func:`import_failures`) and named when a lookup misses.
Training recipes have their own registry beside the trainer (:mod:`attnlab.core.recipes`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import threading
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .checkpoint import atomic_save, atomic_write_text

Builder = Callable[..., nn.Module]
_BUILDERS: dict[str, Builder] = {}
# Modules whose import registers models and recipes: the core's toy, then every domain's.
_CORE_PLUGINS = ("attnlab.core.toy",)
_DOMAINS = "attnlab.domains"
_DOMAIN_PARTS = ("model", "train")
_discovery_lock = threading.RLock()
_import_failures: list[str] | None = None  # None until discover() has run

__all__ = [
    "WeightsError",
    "register",
    "create",
    "list_models",
    "load",
    "save_weights",
    "list_weights",
    "read_card",
    "weights_dir",
    "weights_paths",
    "check_architecture",
    "model_config",
    "model_config_class",
    "discover",
    "import_failures",
]


class WeightsError(ValueError):
    """A weights file is missing, truncated, corrupted or of another architecture."""


def register(fn: Builder) -> Builder:
    """Register a model builder under its function name; raises on a duplicate name."""
    name = fn.__name__
    if name in _BUILDERS and _BUILDERS[name] is not fn:
        raise ValueError(f"model {name!r} is already registered (by {_BUILDERS[name].__module__})")
    _BUILDERS[name] = fn
    return fn


def discover() -> list[str]:
    """Import the core toy and every domain's ``model``/``train`` modules, once.

    Thread-safe and re-entrant (a domain that looks a model up while it is being imported
    sees what is registered so far). Returns :func:`import_failures`.
    """
    global _import_failures
    with _discovery_lock:
        if _import_failures is not None:
            return list(_import_failures)
        _import_failures = failures = []
        for name in _CORE_PLUGINS:
            try:
                importlib.import_module(name)
            except Exception as err:  # a broken plugin must not break the others
                failures.append(f"{name.rsplit('.', 1)[-1]}: {type(err).__name__}: {err}")
        try:
            domains = importlib.import_module(_DOMAINS)
        except ImportError as err:
            failures.append(f"domains: {type(err).__name__}: {err}")
            return list(failures)
        for mod in pkgutil.iter_modules(domains.__path__):
            if not mod.ispkg:
                continue
            for part in _DOMAIN_PARTS:
                name = f"{_DOMAINS}.{mod.name}.{part}"
                try:
                    if importlib.util.find_spec(name) is not None:
                        importlib.import_module(name)
                except Exception as err:
                    failures.append(f"{mod.name}: {type(err).__name__}: {err}")
                    break  # the domain's train module needs its model module
        return list(failures)


def import_failures() -> list[str]:
    """``"domain: Error: message"`` for each domain :func:`discover` could not import."""
    return discover()


def _lookup(name: str) -> Builder:
    if name not in _BUILDERS:
        discover()
    if name not in _BUILDERS:
        failed = import_failures()
        extra = f" (failed to import: {'; '.join(failed)})" if failed else ""
        raise ValueError(
            f"unknown model {name!r}; valid: {', '.join(list_models()) or 'none'}{extra}"
        )
    return _BUILDERS[name]


def list_models(pattern: str = "*") -> list[str]:
    """Registered builder names matching a shell-style ``pattern`` (every domain's)."""
    discover()
    return sorted(n for n in _BUILDERS if fnmatch.fnmatchcase(n, pattern))


def create(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model with its default config updated by ``overrides``.

    The model gets ``registry_name`` and ``registry_args`` attributes so that
    :func:`save_weights` can write a card that rebuilds it.
    """
    model = _lookup(name)(**overrides)
    model.registry_name = name
    model.registry_args = dict(overrides)
    return model


def model_config(model: nn.Module) -> dict[str, Any] | None:
    """The model's ``config`` dataclass as a dict, if it has one."""
    cfg = getattr(model, "config", None)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else None


def model_config_class(name: str) -> type | None:
    """The config dataclass that builder ``name`` fills, read from its annotations.

    The builder's return annotation names the model class, whose ``__init__`` takes the
    config (``def toy_copy(**kw) -> ToyLM`` and ``ToyLM.__init__(self, config: ToyConfig)``).
    ``None`` when the annotations do not say. Nothing is built.
    """
    builder = _lookup(name)
    try:
        cls = typing.get_type_hints(builder).get("return")
        if not inspect.isclass(cls):
            return None
        if dataclasses.is_dataclass(cls):
            return cls
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: the caller falls back to untyped values
        return None
    params = list(inspect.signature(cls.__init__).parameters)[1:]
    for p in params:
        tp = hints.get(p)
        if inspect.isclass(tp) and dataclasses.is_dataclass(tp):
            return tp
    return None


def weights_dir() -> Path:
    """``$ATTNLAB_WEIGHTS`` or the repository's ``weights/`` folder."""
    env = os.environ.get("ATTNLAB_WEIGHTS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "weights"


def weights_paths(name: str, root: Path | None = None) -> tuple[Path, Path]:
    """(weights file, card file) of weights ``name``; ``ValueError`` for a name escaping the
    weights folder."""
    if not name or name.startswith(("/", ".")) or ".." in name.split("/"):
        raise ValueError(f"weights name must look like 'domain/model', got {name!r}")
    base = (root or weights_dir()) / name
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def list_weights(root: Path | None = None) -> list[str]:
    """Names of the shipped weights (those with a card)."""
    root = root or weights_dir()
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.json"))


def read_card(name: str, root: Path | None = None) -> dict[str, Any]:
    """The JSON card of shipped weights ``name``."""
    _, card_path = weights_paths(name, root)
    if not card_path.is_file():
        valid = ", ".join(list_weights(root)) or "none shipped"
        raise ValueError(f"unknown weights {name!r}; valid: {valid}")
    return json.loads(card_path.read_text())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_weights(
    model: nn.Module, name: str, card: dict[str, Any] | None = None, root: Path | None = None
) -> Path:
    """Write ``weights/<name>.safetensors`` and its card; return the weights path.

    Args:
        model: a model built by :func:`create` (or ``card`` must give ``model`` and
            ``model_args``).
        name: weights name such as ``"toy/copy-lm"``.
        card: extra card fields: ``command``, ``data``, ``split``, ``metrics``, ``recipe``...
        root: weights folder (default :func:`weights_dir`).
    """
    card = dict(card or {})
    builder = card.setdefault("model", getattr(model, "registry_name", None))
    if builder is None or builder not in _BUILDERS:
        raise ValueError("save_weights: model was not built by create(); give card['model']")
    card.setdefault("model_args", getattr(model, "registry_args", {}))
    card["module"] = _BUILDERS[builder].__module__
    card["config"] = model_config(model)
    path, card_path = weights_paths(name, root)
    state = model.state_dict()
    atomic_save(state, path, {"format": "attnlab-weights", "model": builder})
    card["name"] = name
    card["file"] = path.name
    card["bytes"] = path.stat().st_size
    card["sha256"] = _sha256(path)
    card["num_params"] = sum(p.numel() for p in model.parameters())
    atomic_write_text(json.dumps(card, indent=2) + "\n", card_path)
    return path


def load(
    name: str, root: Path | None = None, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Build shipped model ``name`` (e.g. ``"toy/copy-lm"``) and load its checked weights.

    Raises:
        ValueError: unknown name (the message lists the shipped ones).
        WeightsError: missing, truncated or corrupted file (size / sha256 differ from the
            card), or weights of another architecture (keys, shapes or config differ).
    """
    card = read_card(name, root)
    path, _ = weights_paths(name, root)
    if not path.is_file():
        raise WeightsError(f"weights {name!r}: file {path} is missing")
    size = path.stat().st_size
    if "bytes" in card and size != card["bytes"]:
        what = "truncated" if size < card["bytes"] else "corrupted"
        raise WeightsError(
            f"weights {name!r}: {path} is {what} ({size} bytes, the card says {card['bytes']})"
        )
    digest = _sha256(path)
    if digest != card.get("sha256"):
        raise WeightsError(
            f"weights {name!r}: {path} is corrupted (sha256 {digest[:12]}..., "
            f"the card says {str(card.get('sha256'))[:12]}...)"
        )
    builder = card["model"]
    if builder not in _BUILDERS and card.get("module"):
        try:  # the card's module registers the builder: cheaper than discovering them all
            importlib.import_module(card["module"])
        except ImportError:
            pass  # moved or broken: create() discovers, and names the failures if it must
    model = create(builder, **card.get("model_args", {}))
    if card.get("config") is not None and model_config(model) != card["config"]:
        raise WeightsError(f"weights {name!r}: config in the card does not match {builder!r}")
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"weights {name!r}: {path} is unreadable ({err})") from None
    check_architecture(model, state, f"weights {name!r}")
    model.load_state_dict(state)
    return model.to(map_location).eval()


def check_architecture(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``WeightsError`` naming the first key or shape where ``state`` and ``model`` differ."""
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise WeightsError(
            f"{what} are for another architecture (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for k, v in own.items():
        if v.shape != state[k].shape:
            raise WeightsError(
                f"{what} are for another architecture ({k}: {tuple(state[k].shape)} in the "
                f"file, {tuple(v.shape)} in the model)"
            )
