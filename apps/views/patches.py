"""Views of a ViT's attention over image patches: every head of a layer as overlays, the mean
attention distance per head and layer (Dosovitskiy et al. 2021, fig. 7), a marked patch.

Pure functions from arrays to pictures (PIL images in a ``View``); no Gradio.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from .colors import font, lut  # noqa: E402
from .export import View, raster_svg  # noqa: E402
from .overlays import image_overlay  # noqa: E402
from .plots import figure_to_image  # noqa: E402

__all__ = ["display_image", "head_grid", "distance_plot", "mark_box"]


def display_image(pixels: np.ndarray, side: int = 320) -> Image.Image:
    """(H, W, C) floats in [0, 1] as an RGB picture whose longer side is ``side`` pixels
    (nearest-neighbour when enlarging, so small inputs keep their pixels)."""
    a = np.asarray(pixels, dtype=np.float32)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    img = Image.fromarray((a.clip(0, 1) * 255).round().astype(np.uint8))
    s = side / max(img.size)
    size = (max(1, round(img.width * s)), max(1, round(img.height * s)))
    return img.resize(size, Image.NEAREST if s > 1 else Image.BILINEAR)


def head_grid(image: Image.Image, grids: np.ndarray, alpha: float = 0.6, cols: int = 4,
              tile: int = 160, titles: list[str] | None = None) -> View:  # fmt: skip
    """Every head's (rows, cols) scores ``grids`` (H, rows, cols) as overlays on ``image``,
    tiled ``cols`` to a row, each at most ``tile`` pixels wide, each on its own colour scale."""
    grids = np.asarray(grids, dtype=np.float32)
    small = image.copy()
    small.thumbnail((tile, tile))
    n = grids.shape[0]
    cols = max(1, min(cols, n))
    tiles = [image_overlay(small, g, alpha=alpha, show_colorbar=False,
                           title=(titles[i] if titles else f"head {i}")).image
             for i, g in enumerate(grids)]  # fmt: skip
    tw, th = max(t.width for t in tiles), max(t.height for t in tiles)
    rows = -(-n // cols)
    canvas = Image.new("RGB", (cols * (tw + 4) + 4, rows * (th + 4) + 4), "white")
    for i, t in enumerate(tiles):
        canvas.paste(t, (4 + (i % cols) * (tw + 4), 4 + (i // cols) * (th + 4)))
    return View(
        image=canvas, data={"grids": grids}, svg_fn=lambda: raster_svg(canvas, []), kind="head_grid"
    )


def distance_plot(distances: Any, unit: str = "pixels", title: str = "") -> View:
    """Mean attention distance (layers, H): one dot per head at its layer, as in the ViT
    paper's figure 7 (heads of early layers attend both near and far; late ones far)."""
    d = np.asarray(distances, dtype=np.float32)
    layers, heads = d.shape
    colours = lut()[np.linspace(0, 255, max(heads, 2)).astype(int)[:heads]] / 255.0
    fig, ax = plt.subplots(figsize=(4.8, 3.2), dpi=100)
    for h in range(heads):
        ax.scatter(np.arange(layers), d[:, h], s=18, color=colours[h], label=f"head {h}")
    ax.set_xlabel("layer")
    ax.set_ylabel(f"mean distance ({unit})")  # the title names it: a short label fits
    ax.set_xticks(range(layers))
    ax.set_title(title or "mean attention distance per head", fontsize=10)
    if heads <= 8:
        ax.legend(fontsize=7, loc="best", ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    img = figure_to_image(fig)
    plt.close(fig)
    return View(
        image=img, data={"distances": d}, svg_fn=lambda: raster_svg(img, []), kind="distance_plot"
    )


def mark_box(image: Image.Image, box: tuple[float, float, float, float], label: str = "",
             colour: tuple[int, int, int] = (255, 60, 60)) -> Image.Image:  # fmt: skip
    """A copy of ``image`` with the pixel box (x0, y0, x1, y1) outlined and an optional label."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    draw.rectangle(tuple(round(v) for v in box), outline=colour, width=2)
    if label:
        draw.text((box[0] + 2, max(0, box[1] - 14)), label, fill=colour, font=font(11))
    return out
