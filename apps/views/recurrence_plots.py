"""Figures of ``attnlab bench recurrence``: attention vs an LSTM on recall-at-distance-d.

Pure functions from the bench's result dict (``attnlab/bench/results/recurrence.json``) to PIL
images, optionally saved as PNG: accuracy against the distance d (with the chance level),
training-step and inference time against the sequence length L (log-log, with O(L) and O(L^2)
guides, the way cost is drawn in the FlashAttention paper, Dao et al. 2022, Fig. 3) and the
trained attention map on one example beside the mean weight per offset for every d. Colours
are the Okabe & Ito palette of :mod:`.plots` for series and the shared viridis map for weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from .heatmap import shared_cmap  # noqa: E402
from .plots import OKABE_ITO, _finish  # noqa: E402

__all__ = ["plot_accuracy", "plot_timing", "plot_attention_example", "plot_all"]

# one colour and marker per model, the same in every figure
STYLE = {
    "lstm": {"color": OKABE_ITO[1], "marker": "s", "label": "LSTM"},
    "attention": {"color": OKABE_ITO[0], "marker": "o", "label": "attention (RoPE)"},
}


def _check(res: Mapping[str, Any], *keys: str) -> None:
    if not isinstance(res, Mapping):
        raise TypeError(f"res must be the bench's result dict, got {type(res).__name__}")
    missing = [k for k in keys if k not in res]
    if missing:
        raise ValueError(f"res lacks {missing}: pass the dict written by attnlab bench recurrence")


def _label(name: str, res: Mapping[str, Any]) -> str:
    n = res.get("params", {}).get(name)
    return STYLE[name]["label"] + (f", {n / 1e3:.1f}k params" if n else "")


def plot_accuracy(res: Mapping[str, Any], path: str | Path | None = None) -> Image.Image:
    """Held-out token accuracy against the recall distance d, both models, chance dashed."""
    _check(res, "accuracy", "chance")
    acc = res["accuracy"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    for name in ("lstm", "attention"):
        st = STYLE[name]
        ax.plot(acc["d"], acc[name], color=st["color"], marker=st["marker"],
                label=_label(name, res))  # fmt: skip
    ax.axhline(res["chance"], color="0.4", ls="--", lw=1,
               label=f"chance (1/{round(1 / res['chance'])})")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(acc["d"], [str(d) for d in acc["d"]])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("distance d (predict the token d positions back)")
    ax.set_ylabel("held-out accuracy")
    cfg = res.get("config", {})
    if cfg:
        ax.set_title(f"Recall at distance d: {cfg.get('steps')} steps x batch "
                     f"{cfg.get('batch_size')} for each model and d", fontsize=10)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", fontsize=9)
    return _finish(fig, path)


def plot_timing(res: Mapping[str, Any], path: str | Path | None = None) -> Image.Image:
    """Training-step and inference time against L, log-log, with O(L) and O(L^2) guides."""
    _check(res, "timing")
    t = res["timing"]
    L = np.asarray(t["L"], dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.0), layout="constrained")
    panels = (("train_step_ms", "training step (forward + backward)"),
              ("inference_ms", "inference (forward, no grad)"))  # fmt: skip
    for ax, (key, title) in zip(axes, panels, strict=True):
        for name in ("lstm", "attention"):
            st = STYLE[name]
            ax.plot(L, t[name][key], color=st["color"], marker=st["marker"], label=st["label"])
        # guides: slope 1 through the LSTM's last point, slope 2 through attention's
        for name, power, ls in (("lstm", 1, ":"), ("attention", 2, "-.")):
            y_end = float(t[name][key][-1])
            ax.plot(L, y_end * (L / L[-1]) ** power, color=STYLE[name]["color"], ls=ls, lw=1,
                    alpha=0.6, label=f"O(L{'²' if power == 2 else ''}) guide")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(L, [str(int(x)) for x in L])
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(f"ms (batch {t.get('batch', '?')}, best of {t.get('repeats', '?')})")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    m = res.get("machine", {})
    where = f"\nmeasured on {m['cpu_count']} CPU cores, {m['threads']} threads" if m else ""
    fig.suptitle("LSTM: L sequential steps of O(dim²) work.  Attention: one parallel layer of "
                 f"O(L²·dim) work.{where}", fontsize=10)  # fmt: skip
    return _finish(fig, path)


def plot_attention_example(res: Mapping[str, Any], path: str | Path | None = None) -> Image.Image:
    """Left: the trained head's map on one example, the offset-d diagonal marked. Right: mean
    weight against the offset t - s for every trained d (a peak at s = t - d)."""
    _check(res, "attention_map", "runs")
    ex = res["attention_map"]
    w = np.asarray(ex["weights"], dtype=np.float32)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"attention_map.weights must be a square matrix, got shape {w.shape}")
    d, L = int(ex["d"]), w.shape[0]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained",
                                   gridspec_kw={"width_ratios": [1, 1.25]})  # fmt: skip
    im = ax0.imshow(w, cmap=shared_cmap(), vmin=0.0, vmax=max(float(w.max()), 1e-6),
                    interpolation="nearest")  # fmt: skip
    t = np.arange(d, L)
    ax0.plot(t - d, t, ls="none", marker="o", ms=5, mfc="none", mec=OKABE_ITO[3], mew=1,
             label=f"source key s = t - {d}")  # fmt: skip
    ax0.axhline(d - 0.5, color="w", lw=0.8, ls="--")
    ax0.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax0.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax0.set_xlabel("key position s")
    ax0.set_ylabel("query position t")
    ax0.set_title(f"d = {d}: head {ex.get('head', 0)} weights on one example", fontsize=10)
    ax0.legend(loc="upper right", fontsize=8, framealpha=0.8)
    fig.colorbar(im, ax=ax0, shrink=0.8, label="attention weight")
    runs = res["runs"]["attention"]
    for i, r in enumerate(runs):
        prof = np.asarray(r["offset_profile"], dtype=float)
        color = matplotlib.colormaps["viridis"](i / max(1, len(runs) - 1))
        ax1.plot(np.arange(1, prof.size), prof[1:], color=color, lw=1.2, label=f"d={r['d']}")
        ax1.plot([r["d"]], [prof[r["d"]]], marker="o", color=color, ms=4)
    ax1.set_xscale("log", base=2)
    ax1.set_ylim(0, 1.02)
    ax1.set_xlabel("offset t - s (log scale; offset 0 not drawn)")
    ax1.set_ylabel("mean weight (best head, queries t ≥ d)")
    ax1.set_title("every trained model: weight by offset, peak at its d", fontsize=10)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7, ncol=2)
    return _finish(fig, path)


def plot_all(
    res: Mapping[str, Any], out_dir: str | Path, stem: str = "recurrence"
) -> dict[str, Path]:
    """Write the three figures as ``<stem>_{accuracy,timing,attention}.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / f"{stem}_{name}.png" for name in ("accuracy", "timing", "attention")}
    plot_accuracy(res, paths["accuracy"])
    plot_timing(res, paths["timing"])
    plot_attention_example(res, paths["attention"])
    return paths
