"""Training checkpoints in safetensors: model, AdamW state, RNG states and data position.

Never pickle, never ``torch.load``. A checkpoint is one ``.safetensors`` file:

- tensors ``model.<state-dict key>``; ``optim.<param index>.<state name>`` (AdamW's
  ``exp_avg``, ``exp_avg_sq``, ``step``); ``rng.torch.<rank>`` (and ``rng.cuda.<rank>``);
- metadata ``{"format": "attnlab-checkpoint", "meta": <JSON>}`` where the JSON holds the
  step, the data position (epoch, batch), the run config, the optimiser's param groups and
  non-tensor state, the grad scaler state, and numpy's and Python's RNG states per rank.

Files are written to a temporary name in the same folder and moved with ``os.replace``,
so a run killed while saving leaves the previous checkpoint intact (the pattern of
``torch.save``-free trainers such as nanoGPT's, with safetensors' own format).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

FORMAT = "attnlab-checkpoint"
VERSION = 1


def rng_state() -> dict[str, Any]:
    """This process's torch, CUDA, numpy and Python RNG states."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _cpu_tensors(named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies; tensors sharing storage (tied weights) get their own copy,
    since safetensors refuses aliased tensors."""
    out, seen = {}, set()
    for key, t in named.items():
        t = t.detach().to("cpu").contiguous()
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[key] = t
    return out


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write a safetensors file through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(_cpu_tensors(tensors), str(tmp), metadata=metadata)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(text: str, path: Path) -> None:
    """Write a text file through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    position: tuple[int, int],
    config: dict[str, Any],
    rng_states: list[dict[str, Any]],
    scaler: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint file atomically (call on rank 0 only).

    Args:
        path: the ``.safetensors`` file to write.
        model: the bare model (not the DDP wrapper): keys are its state-dict keys.
        optimizer: its state tensors are flattened into the file.
        step: optimiser steps completed.
        position: (epoch, batch index inside the epoch) of the next batch.
        config: the run config as a JSON-able dict.
        rng_states: one :func:`rng_state` per rank, in rank order.
        scaler: ``GradScaler.state_dict()`` when fp16 is used.
    """
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalar_state: dict[str, dict[str, Any]] = {}
    for idx, st in opt["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                scalar_state.setdefault(str(idx), {})[name] = value
    rng_json = []
    for rank, st in enumerate(rng_states):
        tensors[f"rng.torch.{rank}"] = st["torch"]
        if "cuda" in st:
            tensors[f"rng.cuda.{rank}"] = st["cuda"]
        rng_json.append({"numpy": st["numpy"], "python": st["python"]})
    meta = {
        "version": VERSION,
        "step": step,
        "epoch": position[0],
        "batch_in_epoch": position[1],
        "config": config,
        "param_groups": opt["param_groups"],
        "optim_scalars": scalar_state,
        "rng": rng_json,
        "scaler": scaler,
    }
    atomic_save(tensors, path, {"format": FORMAT, "meta": json.dumps(meta)})


def read_meta(path: Path) -> dict[str, Any]:
    """Metadata of a checkpoint; ``ValueError`` naming the path if it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.safetensors"
    if not path.is_file():
        raise ValueError(f"resume: {path} is not a checkpoint file (no such file)")
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"resume: {path} is not a checkpoint (unreadable: {err})") from None
    if md.get("format") != FORMAT:
        raise ValueError(f"resume: {path} is a safetensors file but not an attnlab checkpoint")
    return json.loads(md["meta"])


def checkpoint_file(path: Path) -> Path:
    """Accept a run folder or a checkpoint file; return the file."""
    path = Path(path)
    return path / "checkpoint.safetensors" if path.is_dir() else path


def load_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rank: int,
    world_size: int,
) -> dict[str, Any]:
    """Restore model and optimiser in place; return the metadata with this rank's RNG state
    under ``meta["rng_state"]`` (``None`` when the world size changed).

    Raises:
        ValueError: not a checkpoint, or one for another architecture.
    """
    path = checkpoint_file(path)
    meta = read_meta(path)
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        model_sd = {k[6:]: f.get_tensor(k) for k in keys if k.startswith("model.")}
        optim = {k: f.get_tensor(k) for k in keys if k.startswith("optim.")}
        rng_t = {k: f.get_tensor(k) for k in keys if k.startswith("rng.")}
    own = model.state_dict()
    if set(own) != set(model_sd) or any(own[k].shape != model_sd[k].shape for k in own):
        raise ValueError(f"resume: {path} holds weights of another architecture")
    model.load_state_dict(model_sd)
    state: dict[int, dict[str, Any]] = {}
    for key, value in optim.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, scalars in meta["optim_scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    meta["rng_state"] = None
    if len(meta["rng"]) == world_size:
        st = dict(meta["rng"][rank])
        st["torch"] = rng_t[f"rng.torch.{rank}"]
        if f"rng.cuda.{rank}" in rng_t:
            st["cuda"] = rng_t[f"rng.cuda.{rank}"]
        meta["rng_state"] = st
    return meta
