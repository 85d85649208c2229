"""Line plots for numbers the trainer and the benchmarks write: loss curves and cost vs L.

The trainer writes JSONL records (one dict per logged step) and the benchmarks write result
rows (one dict per backend, mask, pass and length). These functions turn them into figures
with matplotlib's Agg backend (no display needed) and return PIL images, optionally saving
a PNG. Time and memory against sequence length are drawn log-log, following the usual way of
showing attention's O(L^2) cost (e.g. the FlashAttention paper, Dao et al. 2022, Fig. 3).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from PIL import Image  # noqa: E402

__all__ = ["figure_to_image", "plot_bench", "plot_curves", "save_figure"]

# Okabe & Ito (2008) colour-blind-safe qualitative palette, used for categorical series.
OKABE_ITO = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
)
_LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)), (0, (8, 3)))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def figure_to_image(fig: Figure, dpi: int = 100) -> Image.Image:
    """Render a matplotlib figure to an RGB PIL image and close the figure.

    Reads the Agg canvas's pixels directly: the same pixels as ``savefig`` to PNG and back,
    without encoding and decoding a PNG (about half the time of a demo's picture)."""
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    w, h = canvas.get_width_height()
    img = Image.frombuffer("RGBA", (w, h), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    plt.close(fig)
    return img.convert("RGB")


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> None:
    """Save a figure as PNG or SVG (chosen by the path's suffix) without closing it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format=path.suffix.lstrip(".").lower() or "png")


def _finish(fig: Figure, path: str | Path | None, svg: bool = False) -> Image.Image:
    """Optionally save `fig` (PNG, plus SVG beside it when asked), then return it as an image."""
    if path is not None:
        save_figure(fig, path)
        if svg:
            save_figure(fig, Path(path).with_suffix(".svg"))
    return figure_to_image(fig)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(float(value))


def plot_curves(
    records: list[dict],
    path: str | Path | None = None,
    x: str = "step",
    ys: Sequence[str] = ("loss",),
    title: str = "",
    logy: bool | None = None,
    svg: bool = False,
) -> Image.Image:
    """Plot metric curves (loss, accuracy, ...) from JSONL-style records.

    Args:
        records: one dict per logged point, e.g. ``{"step": 10, "loss": 2.3, "val_loss": 2.5}``.
            Records lacking a key (or holding a non-finite value) are skipped for that curve.
        path: if given, the PNG is written there.
        x: key of the horizontal axis.
        ys: keys to draw, one line each. Keys containing "loss" share the left axis; other
            keys (accuracy, learning rate, ...) go on their own panels below.
        title: figure title.
        logy: log scale for the loss panel; default: on when the loss spans > 1.5 decades.
        svg: also write an SVG beside the PNG (needs ``path``).

    Returns:
        The figure as an RGB PIL image.
    """
    if not isinstance(records, list):
        raise TypeError(f"records must be a list of dicts, got {type(records).__name__}")
    if isinstance(ys, str):
        ys = (ys,)
    if not ys:
        raise ValueError("ys must name at least one key")
    series: dict[str, tuple[list[float], list[float]]] = {}
    for key in ys:
        xs_, ys_ = [], []
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise TypeError(f"records[{i}] must be a dict, got {type(rec).__name__}")
            xv = rec.get(x, i)
            yv = rec.get(key)
            if _finite(xv) and _finite(yv):
                xs_.append(float(xv))
                ys_.append(float(yv))
        series[key] = (xs_, ys_)

    loss_keys = [k for k in ys if "loss" in k]
    other_keys = [k for k in ys if "loss" not in k]
    panels: list[list[str]] = [loss_keys] if loss_keys else []
    panels += [[k] for k in other_keys]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(7, 2.2 + 2.0 * len(panels)), sharex=True, squeeze=False
    )
    for ax, keys in zip(axes[:, 0], panels, strict=True):
        all_y = []
        for j, key in enumerate(keys):
            xs_, ys_ = series[key]
            all_y += ys_
            style = "-o" if len(xs_) < 30 else "-"
            ax.plot(xs_, ys_, style, color=OKABE_ITO[j % len(OKABE_ITO)], label=key, ms=3, lw=1.6)
            if not xs_:
                ax.text(0.5, 0.5, f"no data for {key!r}", transform=ax.transAxes, ha="center")
        positive = [v for v in all_y if v > 0]
        use_log = logy
        if use_log is None:
            use_log = bool(
                keys is loss_keys
                and positive
                and len(positive) == len(all_y)
                and max(positive) / min(positive) > 10**1.5
            )
        if use_log and positive:
            ax.set_yscale("log")
        ax.set_ylabel(", ".join(keys) if len(keys) <= 2 else "loss")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=9, frameon=False)
    axes[-1, 0].set_xlabel(x)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig, path, svg)


def _length_label(value: float, _pos: int) -> str:
    """Tick label for a sequence length: 512, 1k, 16k, 1M."""
    if value >= 2**20 and value % 2**20 == 0:
        return f"{int(value) // 2**20}M"
    if value >= 1024 and value % 1024 == 0:
        return f"{int(value) // 1024}k"
    return f"{value:g}"


def _group(results: Iterable[dict]) -> dict[tuple[str, str, str], list[dict]]:
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for i, row in enumerate(results):
        if not isinstance(row, dict):
            raise TypeError(f"results[{i}] must be a dict, got {type(row).__name__}")
        if "L" not in row:
            raise ValueError(f"results[{i}] has no 'L' key: {sorted(row)}")
        key = (str(row.get("backend", "?")), str(row.get("mask", "")), str(row.get("pass", "")))
        groups.setdefault(key, []).append(row)
    for rows in groups.values():
        rows.sort(key=lambda r: float(r["L"]))
    return groups


def plot_bench(
    results: list[dict],
    path: str | Path | None = None,
    metrics: Sequence[str] = ("time_ms", "peak_mem_mb"),
    title: str = "",
    passes: Sequence[str] | None = None,
    svg: bool = False,
) -> Image.Image:
    """Plot benchmark rows: time and peak memory against L, log-log, side by side.

    One colour per backend, one line style per mask, and one marker per pass (forward,
    forward + backward), so every (backend, mask, pass) series is distinguishable in print
    and for colour-blind readers. Rows without a finite positive value for a metric (e.g. a
    backend refused because it would not fit in memory) are left out of that panel.

    Args:
        results: rows like ``{"backend": "tiled", "mask": "causal_window_256", "pass": "fwd",
            "L": 8192, "time_ms": 51.2, "peak_mem_mb": 12.3}``.
        path: if given, the PNG is written there.
        metrics: row keys to plot, one panel each.
        title: figure title.
        passes: keep only these passes (default: all present).
        svg: also write an SVG beside the PNG (needs ``path``).

    Returns:
        The figure as an RGB PIL image.
    """
    if not isinstance(results, list):
        raise TypeError(f"results must be a list of dicts, got {type(results).__name__}")
    if isinstance(metrics, str):
        metrics = (metrics,)
    if not metrics:
        raise ValueError("metrics must name at least one key")
    groups = _group(results)
    if passes is not None:
        groups = {k: v for k, v in groups.items() if k[2] in set(passes)}
    backends = sorted({k[0] for k in groups})
    masks = sorted({k[1] for k in groups})
    pass_names = sorted({k[2] for k in groups})
    colour = {b: OKABE_ITO[i % len(OKABE_ITO)] for i, b in enumerate(backends)}
    style = {m: _LINESTYLES[i % len(_LINESTYLES)] for i, m in enumerate(masks)}
    marker = {p: _MARKERS[i % len(_MARKERS)] for i, p in enumerate(pass_names)}
    labels = {"time_ms": "time (ms)", "peak_mem_mb": "peak memory (MB)", "gflops": "GFLOP/s"}

    fig, axes = plt.subplots(
        1, len(metrics), figsize=(5.2 * len(metrics) + 1.9, 4.6), squeeze=False
    )
    for ax, metric in zip(axes[0], metrics, strict=True):
        drawn = 0
        for (backend, mask, pas), rows in groups.items():
            pts = [
                (float(r["L"]), float(r[metric]))
                for r in rows
                if _finite(r.get(metric)) and float(r[metric]) > 0 and float(r["L"]) > 0
            ]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(
                xs,
                ys,
                color=colour[backend],
                linestyle=style[mask],
                marker=marker[pas],
                ms=4,
                lw=1.5,
                mfc="white" if pas == "fwd" else colour[backend],
            )
            drawn += 1
        if drawn:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(_length_label))
        else:
            ax.text(0.5, 0.5, f"no {metric} values", transform=ax.transAxes, ha="center")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(labels.get(metric, metric))
        ax.grid(True, which="both", alpha=0.25)

    # Three small legends (colour = backend, line = mask, marker = pass) instead of one entry
    # per series: with 5 backends x 4 masks x 2 passes a combined legend is unreadable.
    handles = [Line2D([], [], color=colour[b], lw=2.5, label=b) for b in backends]
    handles += [
        Line2D([], [], color="0.3", linestyle=style[m], lw=1.5, label=m or "-") for m in masks
    ]
    handles += [
        Line2D(
            [],
            [],
            color="0.3",
            marker=marker[p],
            linestyle="none",
            mfc="white" if p == "fwd" else "0.3",
            label=p or "-",
        )
        for p in pass_names
    ]
    if handles:
        fig.legend(
            handles=handles,
            loc="center right",
            fontsize=8.5,
            frameon=False,
            title="backend / mask / pass",
            title_fontsize=9,
        )
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1 - 1.9 / fig.get_figwidth(), 1))
    return _finish(fig, path, svg)
