"""Model names -> builders, and shipped weights (safetensors + JSON card) with hash checks.

Follows timm's registry (``@register_model`` keyed by the function name, ``create_model(name,
**overrides)``, ``list_models(pattern)``) and Hugging Face's model cards, reduced to a JSON
file. Shipped weights live in the repository's ``weights/`` folder as
``weights/<name>.safetensors`` + ``weights/<name>.json``, where ``<name>`` may contain a
folder (``toy/copy-lm``). The card holds the builder name and arguments, the resulting
config, the command that trained it, the data and split, the metrics, the file size and its
sha256. :func:`load` checks all of them before a single weight is copied.

Training recipes (domain name -> ``build(cfg) -> RecipeParts``) are registered here too,
so that ``attnlab train DOMAIN`` and ``attnlab eval NAME`` find them by name.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from torch.utils.data import Dataset

from .checkpoint import atomic_save, atomic_write_text
from .train_config import TrainConfig

Builder = Callable[..., nn.Module]
LossFn = Callable[[nn.Module, Any], "torch.Tensor | tuple[torch.Tensor, dict[str, Any]]"]
_BUILDERS: dict[str, Builder] = {}

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
    "RecipeParts",
    "Recipe",
    "register_recipe",
    "get_recipe",
    "list_recipes",
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


def list_models(pattern: str = "*") -> list[str]:
    """Registered builder names matching a shell-style ``pattern``."""
    return sorted(n for n in _BUILDERS if fnmatch.fnmatchcase(n, pattern))


def create(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model with its default config updated by ``overrides``.

    The model gets ``registry_name`` and ``registry_args`` attributes so that
    :func:`save_weights` can write a card that rebuilds it.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(list_models()) or 'none'}")
    model = _BUILDERS[name](**overrides)
    model.registry_name = name
    model.registry_args = dict(overrides)
    return model


def model_config(model: nn.Module) -> dict[str, Any] | None:
    """The model's ``config`` dataclass as a dict, if it has one."""
    cfg = getattr(model, "config", None)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else None


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
        importlib.import_module(card["module"])  # registers the builder
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


# ---------------------------------------------------------------- training recipes


@dataclass(frozen=True)
class RecipeParts:
    """What a recipe builds for a config: the model and its data.

    Attributes:
        model: the module to train (its ``state_dict`` keys are the checkpoint keys).
        train_set: map-style dataset.
        eval_set: optional held-out dataset, evaluated every ``eval_every`` steps and at the end.
        loss_fn: ``(model, batch) -> loss | (loss, metrics)``; default ``model.loss(batch)``.
        collate_fn: batches a list of samples; default ``torch.utils.data.default_collate``.
        tokens_per_sample: when set, throughput is reported in tokens/s instead of samples/s.
    """

    model: nn.Module
    train_set: Dataset
    eval_set: Dataset | None = None
    loss_fn: LossFn | None = None
    collate_fn: Callable[[list[Any]], Any] | None = None
    tokens_per_sample: int | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    build: Callable[[TrainConfig], RecipeParts]
    defaults: TrainConfig
    description: str = ""


_RECIPES: dict[str, Recipe] = {}


def register_recipe(
    name: str, defaults: TrainConfig, description: str = ""
) -> Callable[[Callable[[TrainConfig], RecipeParts]], Callable[[TrainConfig], RecipeParts]]:
    """Register ``build(cfg) -> RecipeParts`` as the training recipe ``name``."""

    def deco(build: Callable[[TrainConfig], RecipeParts]) -> Callable:
        if name in _RECIPES:
            raise ValueError(f"recipe {name!r} is already registered")
        doc = description or (build.__doc__ or "").strip().split("\n")[0]
        _RECIPES[name] = Recipe(name, build, defaults.replace(recipe=name), doc)
        return build

    return deco


def get_recipe(name: str) -> Recipe:
    if name not in _RECIPES:
        valid = ", ".join(sorted(_RECIPES)) or "(none registered)"
        raise ValueError(f"unknown training recipe {name!r}; valid: {valid}")
    return _RECIPES[name]


def list_recipes() -> list[str]:
    return sorted(_RECIPES)
