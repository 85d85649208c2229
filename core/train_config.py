"""The run configuration of :mod:`attnlab.core.train`: one frozen dataclass, JSON in and out.

Follows the house rule for configs (frozen dataclasses, overrides through
``dataclasses.replace``, which raises on unknown keys) and nanoGPT's habit of printing the
whole config at the start of a run. ``key=value`` overrides from the command line are
parsed here by each field's type (:mod:`attnlab.core.overrides`); ``model.<key>=v`` go to the
model builder's arguments, typed by its config dataclass, and ``data.<key>=v`` to the recipe's
data arguments, typed by the recipe's default value when it has one.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .overrides import OverrideError, coerce_value, field_types, parse_value
from .registry import model_config_class

Optimizer = Literal["adamw"]
Precision = Literal["fp32", "bf16", "fp16"]
Schedule = Literal["cosine", "constant"]
Device = Literal["auto", "cpu", "cuda"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
# Fields that may change between a checkpoint and its resumed run without breaking exactness.
RESUMABLE_CHANGES = frozenset(
    {"steps", "epochs", "log_every", "eval_every", "ckpt_every", "out_dir", "quiet", "device",
     "num_workers"}
)  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    Attributes:
        recipe: registered training recipe (domain) that builds model and data.
        model: registered model builder name (see :mod:`attnlab.core.registry`).
        model_args: overrides passed to the builder.
        data: dataset name, interpreted by the recipe.
        data_args: dataset options, interpreted by the recipe.
        optimizer: only ``"adamw"``.
        lr: peak learning rate.
        weight_decay: AdamW decay on matrices (biases and norms are not decayed).
        beta1: AdamW first-moment decay.
        beta2: AdamW second-moment decay.
        eps: AdamW epsilon.
        warmup_steps: linear warm-up length in optimiser steps.
        schedule: ``"cosine"`` (decay to ``min_lr_ratio * lr`` at the last step) or ``"constant"``.
        min_lr_ratio: floor of the cosine schedule, as a fraction of ``lr``.
        grad_clip: max global gradient norm; 0 disables clipping.
        precision: ``"fp32"``, ``"bf16"`` (autocast, CPU or GPU) or ``"fp16"`` (GPU, scaled).
        grad_accum: micro-batches per optimiser step (per rank).
        batch_size: global batch: samples per optimiser step over all ranks.
        steps: optimiser steps; when 0, ``epochs`` decides.
        epochs: passes over the training set (may be fractional) when ``steps`` is 0.
        seed: seeds weights, data order and dropout.
        log_every: steps between metric records.
        eval_every: steps between evaluations (0: only at the end).
        ckpt_every: steps between checkpoints (0: only at the end).
        out_dir: where ``config.json``, ``metrics.jsonl/csv`` and the checkpoint go.
        quiet: no progress bar.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        num_workers: DataLoader worker processes.
    """

    recipe: str = ""
    model: str = ""
    model_args: dict[str, Any] = field(default_factory=dict)
    data: str = ""
    data_args: dict[str, Any] = field(default_factory=dict)
    optimizer: Optimizer = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: Schedule = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    precision: Precision = "fp32"
    grad_accum: int = 1
    batch_size: int = 32
    steps: int = 0
    epochs: float = 0.0
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0
    ckpt_every: int = 0
    out_dir: str = "runs/run"
    quiet: bool = False
    device: Device = "auto"
    num_workers: int = 0

    def __post_init__(self) -> None:
        for name in ("model_args", "data_args"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name} must be a dict, got {type(getattr(self, name)).__name__}")
        if self.optimizer != "adamw":
            raise ValueError(f"optimizer must be 'adamw', got {self.optimizer!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("batch_size", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("steps", "epochs", "warmup_steps", "eval_every", "ckpt_every",
                     "grad_clip", "weight_decay", "num_workers"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.steps == 0 and self.epochs == 0:
            raise ValueError("set steps > 0 or epochs > 0")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; ``ValueError`` naming unknown keys."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid: {self.keys()}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def keys(cls) -> list[str]:
        """The field names, in order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def types(cls) -> dict[str, Any]:
        """Field name -> its type (annotations resolved)."""
        return field_types(cls)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
        """Build from a dict (e.g. a JSON config file), on top of ``base`` when given."""
        if not isinstance(d, dict):
            raise TypeError(f"config must be a JSON object, got {type(d).__name__}")
        base = base or cls(steps=1)
        types = cls.types()
        typed = {k: coerce_value(k, v, types[k]) for k, v in d.items() if k in types}
        return base.replace(**{**d, **typed})

    def with_overrides(self, items: list[str]) -> TrainConfig:
        """Apply ``key=value`` strings, each parsed by its field's type.

        ``model.k=v`` updates ``model_args``, typed by the config dataclass of the model
        builder (:func:`attnlab.core.registry.model_config_class`); ``data.k=v`` updates
        ``data_args``, typed like the recipe's default value for ``k``. Where no type is
        known the value is JSON when it parses (``3``, ``0.1``, ``[1, 2]``) and a string
        otherwise.

        Raises:
            OverrideError: (a ``ValueError``) naming the key, the value and the type
                expected (``"model.dim=abc: expected an int"``), or an unknown key and the
                valid ones.
        """
        types = self.types()
        changes: dict[str, Any] = {}
        nested: list[tuple[str, str, str, str]] = []  # (item key, "model"/"data", sub, raw)
        for item in items:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise OverrideError(f"override {item!r} is not of the form key=value")
            prefix, dot, sub = key.partition(".")
            if dot and prefix in ("model", "data") and sub:
                nested.append((key, prefix, sub, raw))
            elif key not in types:
                valid = ", ".join([*types, "model.KEY", "data.KEY"])
                raise OverrideError(f"unknown config key {key!r}; valid: {valid}")
            else:
                changes[key] = parse_value(key, raw, types[key])
        args = {"model": dict(self.model_args), "data": dict(self.data_args)}
        model_types = _model_types(changes.get("model", self.model)) if nested else None
        for key, prefix, sub, raw in nested:
            if prefix == "model" and model_types is not None:
                if sub not in model_types:
                    valid = ", ".join(f"model.{k}" for k in model_types)
                    name = changes.get("model", self.model)
                    raise OverrideError(f"unknown model key {key!r} for {name!r}; valid: {valid}")
                tp = model_types[sub]
            else:
                default = args[prefix].get(sub)
                tp = type(default) if isinstance(default, bool | int | float | str) else Any
            args[prefix][sub] = parse_value(key, raw, tp)
        return self.replace(model_args=args["model"], data_args=args["data"], **changes)

    def check_resumable(self, saved: TrainConfig) -> None:
        """``ValueError`` if this config changes a field that an exact resume depends on."""
        differ = [
            k
            for k in self.keys()
            if k not in RESUMABLE_CHANGES and getattr(self, k) != getattr(saved, k)
        ]
        if differ:
            raise ValueError(f"resume: config differs from the checkpoint's in {differ}")

    def __str__(self) -> str:
        return "TrainConfig(\n" + "".join(
            f"  {k}={getattr(self, k)!r},\n" for k in self.keys()
        ) + ")"  # fmt: skip


def _model_types(name: str) -> dict[str, Any] | None:
    """Field types of model builder ``name``'s config, or ``None`` when it is unknown."""
    if not name:
        return None
    cls = model_config_class(name)
    return field_types(cls) if cls is not None else None
