"""Reading Hugging Face-format model folders without ``transformers``: ``config.json``,
``model.safetensors`` and ``tokenizer.json``, and copying a checkpoint into a model strictly.

Follows the folder layout written by ``transformers``' ``save_pretrained`` and the checks of
``torch.nn.Module.load_state_dict(strict=True)``: every checkpoint tensor must be used and
every model tensor filled, or a ``CheckpointError`` lists what is missing, unexpected or
mis-shaped. Pickled checkpoints (``pytorch_model.bin``) are refused, never unpickled: pickle
runs code (see ../shared/DESIGN.md, "Never torch.load of a model").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

__all__ = [
    "CheckpointError",
    "HF_ACTIVATIONS",
    "read_config",
    "read_safetensors",
    "load_tokenizer",
    "StateLoader",
]

#: Hugging Face ``hidden_act`` / ``activation_function`` names -> core ``Block`` activations
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
    "quick_gelu": "quick_gelu",
}


class CheckpointError(ValueError):
    """A checkpoint folder or file that cannot fill the model (missing, unexpected or
    mis-shaped tensors, unsupported options)."""


def _folder(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model folder {str(folder)!r} does not exist (give a folder "
            "holding config.json and model.safetensors)"
        )
    return folder


def read_config(path: str | Path) -> dict[str, Any]:
    """The folder's ``config.json`` as a dict."""
    file = _folder(path) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} is missing: a Hugging Face model folder needs its config.json"
        )
    try:
        cfg = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{file} must hold a JSON object")
    return cfg


def config_value(
    cfg: dict[str, Any], key: str, kind: type | tuple[type, ...] = int, default: Any = ...
) -> Any:
    """``cfg[key]`` checked to be of ``kind`` (``default`` when absent, if given)."""
    if key not in cfg or cfg[key] is None:
        if default is ...:
            raise CheckpointError(f"config.json has no {key!r}")
        return default
    value = cfg[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise CheckpointError(f"config.json: {key!r} must be {kind}, got {value!r}")
    if not isinstance(value, kind):
        raise CheckpointError(f"config.json: {key!r} must be {kind}, got {value!r}")
    return value


def check_model_type(cfg: dict[str, Any], expected: str, what: str) -> None:
    """Refuse a config of another family (its weights would load into the wrong layout)."""
    kind = cfg.get("model_type", expected)
    if kind != expected:
        raise CheckpointError(
            f"model_type {kind!r} is not supported here: only {expected!r} folders load as a {what}"
        )


def widths(
    cfg: dict[str, Any], dim_key: str, heads_key: str, hidden_key: str
) -> tuple[int, int, float]:
    """``dim``, ``num_heads`` and ``mlp_ratio`` read from a config under its own names."""
    dim, heads = config_value(cfg, dim_key), config_value(cfg, heads_key)
    if heads < 1 or dim % heads:
        raise CheckpointError(f"{dim_key} {dim} is not divisible by {heads_key} {heads}")
    hidden = config_value(cfg, hidden_key, default=4 * dim)
    if int(dim * (hidden / dim)) != hidden:  # Block sizes its MLP as int(dim * mlp_ratio)
        raise CheckpointError(f"{hidden_key} {hidden} is not representable as {dim} * mlp_ratio")
    return dim, heads, hidden / dim


def activation(name: str) -> str:
    """A Hugging Face activation name as a core ``Block`` activation."""
    if name not in HF_ACTIVATIONS:
        raise CheckpointError(
            f"activation {name!r} is not supported; supported: {sorted(HF_ACTIVATIONS)}"
        )
    return HF_ACTIVATIONS[name]


def read_safetensors(path: str | Path) -> dict[str, Tensor]:
    """All tensors of the folder's ``model.safetensors`` (on the CPU)."""
    folder = _folder(path)
    file = folder / "model.safetensors"
    if not file.is_file():
        if (folder / "model.safetensors.index.json").is_file():
            raise CheckpointError(
                f"{folder} holds a sharded checkpoint; sharded checkpoints are not supported"
            )
        pickled = [p.name for p in folder.glob("*.bin")]
        hint = (
            f" It has {', '.join(sorted(pickled))}, a pickle, which is never loaded here "
            "(unpickling runs code): convert it to safetensors first, e.g. "
            "`transformers`' save_pretrained(folder, safe_serialization=True)."
            if pickled
            else ""
        )
        raise FileNotFoundError(f"{file} is missing.{hint}")
    try:
        return load_file(file)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file} cannot be read as safetensors: {e}") from None


def load_tokenizer(path: str | Path):
    """The folder's ``tokenizer.json`` as a ``tokenizers.Tokenizer`` with its shipped
    truncation and padding switched off (callers truncate and pad)."""
    from tokenizers import Tokenizer

    file = _folder(path) / "tokenizer.json"
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} is missing: the model folder needs a tokenizer.json "
            "(the `tokenizers` library's format)"
        )
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a bare Exception on malformed files
        raise CheckpointError(f"{file} cannot be read by `tokenizers`: {e}") from None
    tok.no_truncation()
    tok.no_padding()
    return tok


def strip_prefix(state: dict[str, Tensor], prefix: str, marker: str) -> dict[str, Tensor]:
    """Remove ``prefix`` (e.g. ``'bert.'``) from keys when the checkpoint's ``marker`` key
    (one the base model always has) carries it; keys outside the prefix are kept as they are
    (and are reported as unexpected unless a loader uses them)."""
    if prefix + marker not in state:
        return dict(state)
    return {k.removeprefix(prefix): v for k, v in state.items()}


class StateLoader:
    """Copies named checkpoint tensors into a model and checks that nothing is left over.

    Use ``take(key)`` to consume a tensor, ``copy(param, key, transform)`` to fill a model
    tensor, then ``finish()``: it raises a ``CheckpointError`` listing the checkpoint keys
    never taken, the model tensors never filled and the shape mismatches met on the way.
    """

    def __init__(
        self,
        model: nn.Module,
        state: dict[str, Tensor],
        source: str,
        ignore: Callable[[str], bool] = lambda k: False,
    ):
        self.model, self.state, self.source = model, state, source
        self.unused = {k for k in state if not ignore(k)}
        self.unfilled = dict(model.state_dict(keep_vars=True))
        self.errors: list[str] = []

    def take(self, key: str) -> Tensor | None:
        if key not in self.state:
            self.errors.append(f"missing in the checkpoint: {key}")
            return None
        self.unused.discard(key)
        return self.state[key]

    def has(self, key: str) -> bool:
        return key in self.state

    def filled(self, *names: str) -> None:
        """Mark model tensors as filled by a loader that wrote them itself."""
        for n in names:
            self.unfilled.pop(n, None)

    @torch.no_grad()
    def copy(self, target: str, key: str, transform: Callable[[Tensor], Tensor] | None = None):
        """Fill the model tensor ``target`` (a state-dict name) with checkpoint ``key``."""
        t = self.take(key)
        if t is None:
            return
        if transform is not None:
            t = transform(t)
        dest = self.unfilled.pop(target, None)
        if dest is None:
            raise KeyError(f"the model has no tensor {target!r} (or it was filled twice)")
        if dest.shape != t.shape:
            self.errors.append(
                f"{key}: shape {tuple(t.shape)} in the checkpoint, "
                f"{tuple(dest.shape)} expected by the config"
            )
            return
        dest.copy_(t.to(dest.dtype))

    def check_shape(self, key: str, shape: Iterable[int]) -> bool:
        """True when ``key`` exists with ``shape`` (otherwise the error is recorded)."""
        t = self.state.get(key)
        if t is None:
            self.errors.append(f"missing in the checkpoint: {key}")
            return False
        self.unused.discard(key)  # seen: reported here if mis-shaped, not as unexpected
        if tuple(t.shape) != tuple(shape):
            self.errors.append(
                f"{key}: shape {tuple(t.shape)} in the checkpoint, "
                f"{tuple(shape)} expected by the config"
            )
            return False
        return True

    def finish(self) -> None:
        problems = list(self.errors)
        if self.unused:
            problems.append("unexpected (unused) checkpoint tensors: " + _names(self.unused))
        if self.unfilled and not self.errors:
            problems.append("model tensors not filled: " + _names(self.unfilled))
        if problems:
            raise CheckpointError(
                f"{self.source} does not match the model its config.json "
                "describes:\n  " + "\n  ".join(problems)
            )


def _names(keys: Iterable[str], most: int = 12) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - most} more)" if len(keys) > most else ""
    return ", ".join(keys[:most]) + more
