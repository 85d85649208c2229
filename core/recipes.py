"""Training recipes: a name -> ``build(cfg) -> RecipeParts`` that the trainer runs.

A domain plugs its model and data into the one trainer (:mod:`attnlab.core.train`) with
``@register_recipe("name", defaults=TrainConfig(...))``; ``attnlab train NAME`` and
``attnlab eval WEIGHTS`` find the recipe by name. Like the model registry
(:mod:`attnlab.core.registry`), a lookup that misses first imports every domain's ``model``
and ``train`` modules (:func:`attnlab.core.registry.discover`), so plain Python finds the
same recipes as the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .registry import discover, import_failures
from .train_config import TrainConfig

LossFn = Callable[[nn.Module, Any], "torch.Tensor | tuple[torch.Tensor, dict[str, Any]]"]
EvalFn = Callable[[nn.Module, "int | None"], dict[str, float]]
BuildFn = Callable[[TrainConfig], "RecipeParts"]

__all__ = ["LossFn", "EvalFn", "RecipeParts", "Recipe", "register_recipe", "get_recipe",
           "list_recipes"]  # fmt: skip


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
        evaluate: ``(model, step) -> {name: float}``: held-out metrics that are not means of
            per-batch values (e.g. read from attention maps), computed at every evaluation
            (``step`` is None outside training) and merged, unprefixed, into the eval record,
            hence into ``TrainResult.eval`` and the weights card.
    """

    model: nn.Module
    train_set: Dataset
    eval_set: Dataset | None = None
    loss_fn: LossFn | None = None
    collate_fn: Callable[[list[Any]], Any] | None = None
    tokens_per_sample: int | None = None
    evaluate: EvalFn | None = None


@dataclass(frozen=True)
class Recipe:
    """A registered recipe.

    Attributes:
        name: the name ``attnlab train NAME`` takes.
        build: ``build(cfg) -> RecipeParts``.
        defaults: the run config before the user's overrides (its ``recipe`` is ``name``).
        description: one line for listings.
        split: how training and held-out data are kept apart (written into weights cards).
    """

    name: str
    build: BuildFn
    defaults: TrainConfig
    description: str = ""
    split: str = "train: data_args seed stream 2*seed; eval: 2*seed+1 (see the recipe)"


_RECIPES: dict[str, Recipe] = {}


def register_recipe(
    name: str, defaults: TrainConfig, description: str = "", split: str | None = None
) -> Callable[[BuildFn], BuildFn]:
    """Register ``build(cfg) -> RecipeParts`` as the training recipe ``name``.

    Args:
        name: recipe name; a second registration under it raises ``ValueError``.
        defaults: the recipe's run config (``recipe`` is set to ``name``).
        description: one line; default the first line of the builder's docstring.
        split: how the recipe keeps held-out data apart (default: disjoint seed streams).
    """

    def deco(build: BuildFn) -> BuildFn:
        if name in _RECIPES:
            raise ValueError(f"recipe {name!r} is already registered")
        doc = description or (build.__doc__ or "").strip().split("\n")[0]
        kw = {} if split is None else {"split": split}
        _RECIPES[name] = Recipe(name, build, defaults.replace(recipe=name), doc, **kw)
        return build

    return deco


def get_recipe(name: str) -> Recipe:
    """The recipe ``name``; ``ValueError`` listing the valid ones (and the domains that
    failed to import) when there is none."""
    if name not in _RECIPES:
        discover()
    if name not in _RECIPES:
        valid = ", ".join(sorted(_RECIPES)) or "(none registered)"
        failed = import_failures()
        extra = f" (failed to import: {'; '.join(failed)})" if failed else ""
        raise ValueError(f"unknown training recipe {name!r}; valid: {valid}{extra}")
    return _RECIPES[name]


def list_recipes() -> list[str]:
    """Names of every recipe, the domains' included."""
    discover()
    return sorted(_RECIPES)
