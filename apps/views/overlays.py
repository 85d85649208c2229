"""Overlays: attention drawn on the input itself, an image or a spectrogram.

Image overlays follow the usual ViT attention-map picture (Dosovitskiy et al. 2021, Fig. 6;
Caron et al. 2021, DINO): patch weights, prefix tokens removed by the `PatchLayout`, are
upsampled bilinearly to the pixel grid and alpha-blended on the image, with a colour bar.
Spectrogram overlays put per-cell weights on the spectrogram's own (time, frequency) axes
through a `SpectrogramLayout`, which resolves hop/window lengths and overlapping token
strides, with the time profile underneath (as in AST's attention pictures, Gong et al. 2021).
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from attnlab.core.layout import PatchLayout, SpectrogramLayout  # noqa: E402

from .colors import colorbar_image, colorize, font, normalize  # noqa: E402
from .export import View, figure_svg, raster_svg  # noqa: E402
from .heatmap import shared_cmap  # noqa: E402
from .plots import figure_to_image  # noqa: E402
from .reduce import as_array  # noqa: E402

__all__ = ["image_overlay", "spectrogram_overlay", "upsample_grid"]


def _to_rgb(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = as_array(image, "image")
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise ValueError(f"image must be (H, W), (H, W, 3) or (3, H, W), got {arr.shape}")
    if arr.max(initial=0.0) <= 1.0:
        arr = arr * 255.0
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGB")


def upsample_grid(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly upsample a (rows, cols) float grid to `size` = (height, width) pixels."""
    g = np.ascontiguousarray(grid, dtype=np.float32)
    if g.ndim != 2:
        raise ValueError(f"grid must be 2-D, got shape {g.shape}")
    img = Image.fromarray(g, mode="F").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def image_overlay(
    image: Any,
    weights: Any,
    layout: PatchLayout | tuple[int, int] | None = None,
    alpha: float = 0.6,
    vmax: float | None = None,
    title: str = "",
    show_colorbar: bool = True,
) -> View:
    """Blend patch attention on an image.

    Args:
        image: PIL image or (H, W[, 3]) / (3, H, W) array (0-1 or 0-255).
        weights: (length,) weights over the layout's positions (one query row), or an
            already-shaped (rows, cols) grid.
        layout: a `PatchLayout` (prefix tokens, non-square grids, pixel boxes), or a
            (rows, cols) grid for weights without prefix tokens.
        alpha: opacity of the heat layer where the weight is largest; it fades with the
            weight, so the image stays visible where attention is low.
        vmax: top of the colour range (default: the largest patch weight).
        title: drawn above the picture.
        show_colorbar: append a colour bar on the right.

    Returns:
        A `View` (kind "image_overlay"); data: ``grid`` (rows, cols) and ``prefix`` weights.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = _to_rgb(image)
    w = as_array(weights)
    prefix = np.zeros(0, dtype=np.float32)
    if isinstance(layout, PatchLayout):
        if w.ndim != 1:
            raise ValueError(f"weights must be 1-D (length,) with a PatchLayout, got {w.shape}")
        prefix, _ = layout.split_prefix(w)
        grid = layout.to_grid(w)
        names = [layout.describe(i)["label"] for i in range(layout.num_prefix)]
    else:
        if w.ndim == 1 and layout is not None:
            grid = w.reshape(tuple(layout))
        elif w.ndim == 2:
            grid = w
        else:
            raise ValueError("weights must be a (rows, cols) grid or 1-D with a layout")
        names = []
    # The grid is stretched over the whole shown image: the image may be shown larger or
    # smaller than the model's input, and the patches tile that input.
    height, width = img.height, img.width
    heat = upsample_grid(grid, (height, width))
    scaled, lo, hi = normalize(heat, 0.0, float(vmax) if vmax is not None else float(grid.max()))
    colour = colorize(scaled, 0.0, 1.0).astype(np.float32)
    a = (alpha * (0.25 + 0.75 * scaled))[..., None]  # (H, W, 1): low weights stay see-through
    base = np.asarray(img, dtype=np.float32)
    blended = Image.fromarray(((1 - a) * base + a * colour).astype(np.uint8))

    f = font(12)
    caption = title
    if prefix.size:
        caption = (
            (title + "  " if title else "")
            + "prefix "
            + ", ".join(f"{n} {v:.2f}" for n, v in zip(names, prefix, strict=True))
        )
    top = 20 if caption else 0
    bar = colorbar_image(max(60, height), lo, hi, "attention weight") if show_colorbar else None
    out_w = width + (bar.width + 8 if bar else 0)
    canvas = Image.new("RGB", (max(out_w, int(f.getlength(caption)) + 8), height + top), "white")
    canvas.paste(blended, (0, top))
    if bar:
        canvas.paste(bar.resize((bar.width, height)) if bar.height != height else bar,
                     (width + 8, top))  # fmt: skip
    if caption:
        ImageDraw.Draw(canvas).text((4, 3), caption, fill=(20, 20, 20), font=f)
    texts = [(4, 15, caption, {"font_size": 12})] if caption else []
    return View(
        image=canvas,
        data={"grid": grid.astype(np.float32), "prefix": prefix, "range": [lo, hi]},
        svg_fn=lambda: raster_svg(canvas, texts),
        kind="image_overlay",
    )


def spectrogram_overlay(
    spectrogram: Any,
    weights: Any,
    layout: SpectrogramLayout,
    alpha: float = 0.75,
    freqs: Any = None,
    title: str = "",
    size: tuple[float, float] = (8.0, 4.8),
    dpi: int = 100,
) -> View:
    """Attention of one query over a spectrogram, on the spectrogram's axes.

    Args:
        spectrogram: (bins, frames) magnitudes (log/dB or linear); drawn in grey.
        weights: (length,) weights over the layout's positions (one query row).
        layout: maps tokens to frames (hop, window, overlapping strides) and bands.
        alpha: opacity of the heat layer where the weight is largest.
        freqs: optional (bins,) centre frequencies in Hz for the y axis.
        title: figure title.
        size, dpi: figure size in inches and resolution.

    Returns:
        A `View` (kind "spectrogram_overlay"); data: ``cells`` (bins, frames) weights,
        ``profile`` (frames,) and ``times`` (frames,) seconds.
    """
    if not isinstance(layout, SpectrogramLayout):
        raise TypeError(f"layout must be a SpectrogramLayout, got {type(layout).__name__}")
    spec = as_array(spectrogram, "spectrogram")
    if spec.ndim != 2:
        raise ValueError(f"spectrogram must be 2-D (bins, frames), got {spec.shape}")
    if spec.shape[1] != layout.num_frames:
        raise ValueError(f"spectrogram has {spec.shape[1]} frames, layout {layout.num_frames}")
    w = as_array(weights)
    if w.ndim != 1:
        raise ValueError(f"weights must be 1-D (one query row), got {w.shape}")
    n_bins = spec.shape[0]
    profile = layout.time_profile(w)  # (frames,)
    cells = layout.cell_map(w, mode="mean")  # (layout bins or 1, frames): token weights
    if cells.shape[0] != n_bins:  # bands given on another bin scale (or none): resample rows
        cells = upsample_grid(cells, (n_bins, layout.num_frames))
    times = layout.frame_times()
    t0 = 0.0
    t1 = ((layout.num_frames - 1) * layout.hop + layout.win) / layout.sample_rate
    if freqs is not None:
        fr = as_array(freqs, "freqs")
        y0, y1, ylabel = float(fr[0]), float(fr[-1]), "frequency (Hz)"
    else:
        y0, y1, ylabel = 0.0, float(n_bins), "bin"
    _, lo, hi = normalize(cells, 0.0, None)
    prefix, _ = layout.split_prefix(w)
    names = [layout.describe(i)["label"] for i in range(layout.num_prefix)]

    def build() -> plt.Figure:
        fig, (ax, axp) = plt.subplots(2, 1, figsize=size, dpi=dpi, sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})  # fmt: skip
        ext = (t0, t1, y0, y1)
        ax.imshow(spec, origin="lower", aspect="auto", cmap="gray", extent=ext,
                  interpolation="nearest")  # fmt: skip
        rel = np.clip(cells / max(hi, 1e-12), 0, 1)
        im = ax.imshow(cells, origin="lower", aspect="auto", cmap=shared_cmap(), extent=ext,
                       vmin=lo, vmax=hi, alpha=alpha * rel, interpolation="bilinear")  # fmt: skip
        ax.set_ylabel(ylabel)
        head = title
        if prefix.size:
            head += (
                ("  " if head else "")
                + "prefix "
                + ", ".join(f"{n} {v:.2f}" for n, v in zip(names, prefix, strict=True))
            )
        if head:
            ax.set_title(head, fontsize=10)
        cb = fig.colorbar(im, ax=[ax, axp], fraction=0.04, pad=0.02)
        cb.set_label("attention weight (token)")
        axp.fill_between(times, profile, step="mid", color="#21918c", alpha=0.8)
        axp.set_ylabel("weight / frame", fontsize=9)
        axp.set_xlabel("time (s)")
        axp.set_xlim(t0, t1)
        axp.set_ylim(0, max(float(profile.max()), 1e-12) * 1.1)
        axp.grid(True, alpha=0.3)
        return fig

    return View(
        image=figure_to_image(build(), dpi=dpi),
        data={
            "cells": cells.astype(np.float32),
            "profile": profile.astype(np.float32),
            "times": times.astype(np.float32),
            "prefix": prefix,
        },  # fmt: skip
        svg_fn=lambda: figure_svg(build()),
        kind="spectrogram_overlay",
    )
