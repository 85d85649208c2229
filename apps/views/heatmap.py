"""Attention heatmaps: one head's (Lq x Lk) weights, and the layers x heads "model view".

The single-head heatmap is a matplotlib figure (labelled axes, thinned token labels, colour
bar); the model view follows BertViz's model view (Vig, 2019) as a grid of thumbnails but is
built with numpy + PIL (one LUT gather and one resize per thumbnail), so a 12 x 12 grid at
L = 128 draws in well under half a second. Both use the shared viridis LUT.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from .colors import colorbar_image, colorize, font, lut, normalize  # noqa: E402
from .export import View, figure_svg, raster_svg  # noqa: E402
from .plots import figure_to_image  # noqa: E402
from .reduce import as_array, downsample, pool_labels, thin_labels  # noqa: E402

__all__ = ["heatmap", "model_view", "shared_cmap"]


def shared_cmap() -> ListedColormap:
    """The project's colour map as a matplotlib colormap (built from the same LUT)."""
    return ListedColormap(lut() / 255.0, name="attnlab")


def _labels(labels: list[str] | None, n: int, name: str) -> list[str]:
    if labels is None:
        return [str(i) for i in range(n)]
    if len(labels) != n:
        raise ValueError(f"{name} has {len(labels)} labels for {n} positions")
    return [str(x) for x in labels]


def _short(text: str, n: int = 14) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def heatmap(
    weights: Any,
    q_labels: list[str] | None = None,
    k_labels: list[str] | None = None,
    title: str = "",
    vmin: float | None = 0.0,
    vmax: float | None = None,
    max_labels: int = 30,
    max_cells: int = 512,
    size: tuple[float, float] = (6.4, 5.6),
    dpi: int = 100,
    cbar_label: str = "attention weight",
) -> View:
    """Heatmap of one head's attention weights, queries down and keys across.

    Args:
        weights: (Lq, Lk) array or tensor.
        q_labels, k_labels: one label per query / key (tokens, "r2c3", "1.20s"...).
        title: figure title.
        vmin, vmax: colour range (default 0 to the largest weight).
        max_labels: at most this many tick labels per axis (evenly thinned).
        max_cells: longer axes are block-pooled to this many cells (keys summed, queries
            averaged, so pooled rows still sum to 1).
        size, dpi: figure size in inches and resolution.
        cbar_label: the colour bar's label (e.g. "allowed" for a mask pattern).

    Returns:
        A `View` (kind "heatmap") with data ``weights`` (what was drawn) and the labels.
    """
    w = as_array(weights)
    if w.ndim != 2:
        raise ValueError(f"weights must be 2-D (Lq, Lk), got shape {w.shape}")
    ql = _labels(q_labels, w.shape[0], "q_labels")
    kl = _labels(k_labels, w.shape[1], "k_labels")
    w, (fq, fk) = downsample(w, max_cells)
    ql, kl = pool_labels(ql, fq), pool_labels(kl, fk)
    _, lo, hi = normalize(w, vmin, vmax)

    def build() -> plt.Figure:
        fig, ax = plt.subplots(figsize=size, dpi=dpi)
        im = ax.imshow(w, cmap=shared_cmap(), vmin=lo, vmax=hi, aspect="auto",
                       interpolation="nearest")  # fmt: skip
        fs = 9 if max(len(ql), len(kl)) <= 24 else 7
        qt, kt = thin_labels(ql, max_labels), thin_labels(kl, max_labels)
        ax.set_yticks([i for i, _ in qt], [_short(s) for _, s in qt], fontsize=fs)
        ax.set_xticks([i for i, _ in kt], [_short(s) for _, s in kt], fontsize=fs,
                      rotation=90)  # fmt: skip
        ax.set_xlabel("key" + (f" (blocks of {fk})" if fk > 1 else ""))
        ax.set_ylabel("query" + (f" (blocks of {fq})" if fq > 1 else ""))
        if title:
            ax.set_title(title)
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        cb.set_label(cbar_label)
        fig.tight_layout()
        return fig

    return View(
        image=figure_to_image(build(), dpi=dpi),
        data={"weights": w, "q_labels": ql, "k_labels": kl, "pool": [fq, fk], "range": [lo, hi]},
        svg_fn=lambda: figure_svg(build()),
        kind="heatmap",
    )


def model_view(
    weights: Any,
    thumb: int = 64,
    gap: int = 4,
    per_head_scale: bool = True,
    layer_names: list[str] | None = None,
) -> View:
    """Grid of every layer x head attention map as thumbnails (rows: layers, cols: heads).

    Args:
        weights: (layers, heads, Lq, Lk) array or tensor.
        thumb: thumbnail side in pixels (maps are pooled to at most `thumb` cells, then
            resized with nearest-neighbour so cells stay crisp).
        gap: pixels between thumbnails.
        per_head_scale: colour each thumbnail from 0 to its own maximum (patterns of weak
            heads stay visible); otherwise one range for the whole grid.
        layer_names: row labels (default "L0", "L1", ...).

    Returns:
        A `View` (kind "model_view") with data ``thumbnails`` (layers, heads, t, t) and
        ``head_max`` (layers, heads).
    """
    w = as_array(weights)
    if w.ndim != 4:
        raise ValueError(f"weights must be 4-D (layers, heads, Lq, Lk), got shape {w.shape}")
    if thumb < 8:
        raise ValueError(f"thumb must be >= 8 px, got {thumb}")
    n_layers, n_heads = w.shape[:2]
    names = (
        _labels(layer_names, n_layers, "layer_names")
        if layer_names
        else [f"L{i}" for i in range(n_layers)]
    )
    small, _ = downsample(w, thumb)  # (layers, heads, <=thumb, <=thumb)
    small = np.where(np.isfinite(small), small, 0.0)
    head_max = small.max(axis=(-2, -1))
    if per_head_scale:
        scaled = small / np.maximum(head_max, 1e-12)[..., None, None]
        rgb = colorize(scaled, 0.0, 1.0)
        lo, hi = 0.0, 1.0
    else:
        lo, hi = 0.0, float(head_max.max()) if head_max.size else 1.0
        rgb = colorize(small, lo, hi)
    f = font(12)
    left, top = 34, 22
    width = left + n_heads * (thumb + gap)
    height = top + n_layers * (thumb + gap)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    th, tw = rgb.shape[2:4]
    # Nearest-neighbour upscaling by index arrays: one gather per thumbnail, no PIL round trip.
    ri = (np.arange(thumb) * th) // thumb
    ci = (np.arange(thumb) * tw) // thumb
    for li in range(n_layers):
        y = top + li * (thumb + gap)
        for hi_ in range(n_heads):
            x = left + hi_ * (thumb + gap)
            canvas[y : y + thumb, x : x + thumb] = rgb[li, hi_][ri][:, ci]
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    texts: list[tuple[float, float, str, dict]] = []
    for hi_ in range(n_heads):
        x = left + hi_ * (thumb + gap) + thumb / 2
        draw.text((x, top / 2), f"H{hi_}", fill=(30, 30, 30), font=f, anchor="mm")
        texts.append((x, top / 2 + 4, f"H{hi_}", {"font_size": 12, "text_anchor": "middle"}))
    for li in range(n_layers):
        y = top + li * (thumb + gap) + thumb / 2
        draw.text((left - 4, y), names[li], fill=(30, 30, 30), font=f, anchor="rm")
        texts.append((left - 4, y + 4, names[li], {"font_size": 12, "text_anchor": "end"}))
    bar = colorbar_image(max(40, min(height - 4, 200)), lo, hi,
                         label="weight / head max" if per_head_scale else "weight")  # fmt: skip
    full = Image.new("RGB", (width + bar.width + 8, max(height, bar.height)), "white")
    full.paste(img, (0, 0))
    full.paste(bar, (width + 8, top))
    return View(
        image=full,
        data={"thumbnails": small, "head_max": head_max, "layer_names": names},
        svg_fn=lambda: raster_svg(full, None),
        kind="model_view",
    )
