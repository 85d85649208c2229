"""Reducing attention maps before they are drawn or sent to a browser.

An L x L map grows quadratically; shipping every layer, head and cell to a browser is what
makes BertViz (Vig, 2019) stall past a few hundred tokens. These helpers keep what a person
can see: the top-k keys of each query row (values rounded), block pooling of long axes, and
thinned tick labels. Pure numpy (torch tensors are accepted and converted).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_array", "downsample", "pool_labels", "thin_labels", "topk_rows"]


def as_array(x: Any, name: str = "weights") -> np.ndarray:
    """Return `x` as a float32 numpy array (torch tensors detached and moved to CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    if not isinstance(x, (np.ndarray, list, tuple)):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    return np.asarray(x, dtype=np.float32)


def topk_rows(weights: Any, k: int, decimals: int | None = 3) -> tuple[np.ndarray, np.ndarray]:
    """Keep the k largest entries of each row of (..., Lq, Lk) weights.

    Returns:
        (indices, values), both (..., Lq, min(k, Lk)), sorted by decreasing value; indices
        int32, values float32 rounded to `decimals` (None: not rounded).
    """
    w = as_array(weights)
    if w.ndim < 1:
        raise ValueError(f"weights must have at least 1 dimension, got shape {w.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, w.shape[-1])
    w = np.where(np.isfinite(w), w, -np.inf)
    # argpartition is O(Lk) per row; only the k survivors are sorted.
    part = np.argpartition(-w, k - 1, axis=-1)[..., :k]
    vals = np.take_along_axis(w, part, axis=-1)
    order = np.argsort(-vals, axis=-1, kind="stable")
    idx = np.take_along_axis(part, order, axis=-1).astype(np.int32)
    vals = np.take_along_axis(vals, order, axis=-1)
    vals = np.where(np.isfinite(vals), vals, 0.0).astype(np.float32)
    if decimals is not None:
        vals = np.round(vals, decimals)
    return idx, vals


def downsample(weights: Any, max_len: int, axes: tuple[int, ...] = (-2, -1), mode: str = "auto"):
    """Block-pool the given axes of `weights` to at most `max_len` entries each.

    Args:
        weights: array (numpy or torch).
        max_len: longest allowed length of each pooled axis.
        axes: axes to pool (default: the last two, queries and keys).
        mode: "mean", "sum", "max", or "auto": keys (last axis) summed so pooled rows still
            sum to 1, other axes averaged.

    Returns:
        (pooled array, factors): the array and the block size used on each pooled axis. The
        last block may be shorter (padding is excluded from means).
    """
    w = as_array(weights)
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if mode not in ("auto", "mean", "sum", "max"):
        raise ValueError(f"mode must be auto, mean, sum or max, got {mode!r}")
    factors = []
    for ax in axes:
        ax = ax % w.ndim
        n = w.shape[ax]
        f = -(-n // max_len)  # ceil
        factors.append(f)
        if f == 1:
            continue
        m = mode if mode != "auto" else ("sum" if ax == w.ndim - 1 else "mean")
        starts = np.arange(0, n, f)
        if m == "max":
            w = np.maximum.reduceat(w, starts, axis=ax)
        else:
            w = np.add.reduceat(w, starts, axis=ax)
            if m == "mean":
                counts = np.minimum(f, n - starts).astype(np.float32)
                shape = [1] * w.ndim
                shape[ax] = -1
                w = w / counts.reshape(shape)
    return w, tuple(factors)


def pool_labels(labels: list[str], factor: int) -> list[str]:
    """Labels for blocks of `factor` positions: "first…" (or the label itself when 1)."""
    if factor <= 1:
        return list(labels)
    return [labels[i] + ("…" if i + 1 < len(labels) else "") for i in range(0, len(labels), factor)]


def thin_labels(labels: list[str], max_labels: int = 40) -> list[tuple[int, str]]:
    """Pick at most `max_labels` evenly spaced (position, label) pairs for axis ticks."""
    n = len(labels)
    if n == 0:
        return []
    step = max(1, -(-n // max(1, max_labels)))
    return [(i, labels[i]) for i in range(0, n, step)]
