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

import numpy as np
from PIL import Image, ImageDraw

from attnlab.core.layout import PatchLayout, SpectrogramLayout

from .canvas import Canvas
from .colors import colorbar_image, colorize, font, normalize
from .export import View, raster_svg
from .reduce import as_array

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
    _, lo, hi = normalize(cells, 0.0, None)
    prefix, _ = layout.split_prefix(w)
    names = [layout.describe(i)["label"] for i in range(layout.num_prefix)]
    head = title
    if prefix.size:
        head += ("  " if head else "") + "prefix " + ", ".join(
            f"{n} {v:.2f}" for n, v in zip(names, prefix, strict=True))  # fmt: skip

    W, H = round(size[0] * dpi), round(size[1] * dpi)
    cv = Canvas(W, H)
    left, right = 64, W - 96
    split = round((H - 46) * 0.72)
    ax = cv.panel((left, 28, right, split), (t0, t1), (0.0, float(n_bins)))
    grey, _, _ = normalize(spec[::-1])  # rows top to bottom: highest bin first
    g = (grey * 255 + 0.5).astype(np.uint8)
    ax.image(np.repeat(g[..., None], 3, axis=-1))
    rel = np.clip(cells / max(hi, 1e-12), 0, 1)[::-1]
    ax.image(colorize(cells[::-1], lo, hi), alpha=alpha * rel)
    ax.frame()
    if freqs is not None:
        fr = as_array(freqs, "freqs").reshape(-1)
        if fr.size != n_bins:
            raise ValueError(f"freqs has {fr.size} values for {n_bins} bins")
        picks = np.unique(np.linspace(0, n_bins - 1, 6).round().astype(int))
        ax.yaxis("frequency (Hz)", [(b + 0.5, f"{fr[b]:.0f}") for b in picks])
    else:
        ax.yaxis("bin")
    if head:
        ax.title(head, 11)
    axp = cv.panel((left, split + 10, right, H - 40), (t0, t1),
                   (0.0, max(float(profile.max()), 1e-12) * 1.1))  # fmt: skip
    axp.frame(grid_x=True, grid_y=True)
    axp.fill_under(times, profile, "#21918c", 0.8)
    axp.frame()
    axp.yaxis("weight / frame", most=3, size=9)
    axp.xaxis("time (s)")
    cv.colorbar(right + 12, 28, H - 68, lo, hi, "attention weight (token)")
    return cv.view(
        "spectrogram_overlay",
        {
            "cells": cells.astype(np.float32),
            "profile": profile.astype(np.float32),
            "times": times.astype(np.float32),
            "prefix": prefix,
        },
    )
