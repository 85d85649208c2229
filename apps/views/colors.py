"""One colour map for every view: a cached viridis LUT, colourising and colour bars.

Viridis (van der Walt & Smith, matplotlib 2.0 default, 2015) is perceptually uniform and
readable with the common colour-vision deficiencies and in greyscale, so every attention
picture in the project uses it, through `LUT` here. It is computed from matplotlib once and
kept as a (256, 3) uint8 table so that colourising is a single numpy gather (fast enough for
the 144-thumbnail model view).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["CMAP_NAME", "colorbar_image", "colorize", "font", "lut", "normalize"]

CMAP_NAME = "viridis"


@lru_cache(maxsize=4)
def lut(name: str = CMAP_NAME) -> np.ndarray:
    """(256, 3) uint8 RGB table of the colour map (computed once, then cached)."""
    import matplotlib

    cmap = matplotlib.colormaps[name]
    table = (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)
    table.setflags(write=False)
    return table


def normalize(
    values: np.ndarray, vmin: float | None = None, vmax: float | None = None
) -> tuple[np.ndarray, float, float]:
    """Scale to [0, 1] (non-finite values become 0); returns (scaled, vmin, vmax) used."""
    v = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(v)
    if vmin is None:
        vmin = float(v[finite].min()) if finite.any() else 0.0
    if vmax is None:
        vmax = float(v[finite].max()) if finite.any() else 1.0
    if vmax <= vmin:
        vmax = vmin + 1e-12
    out = np.where(finite, (v - vmin) / (vmax - vmin), 0.0)
    return np.clip(out, 0.0, 1.0, out=out), vmin, vmax


def colorize(
    values: np.ndarray, vmin: float | None = None, vmax: float | None = None
) -> np.ndarray:
    """Map a (..., H, W) array to (..., H, W, 3) uint8 RGB through the shared LUT."""
    scaled, _, _ = normalize(values, vmin, vmax)
    return lut()[(scaled * 255.0 + 0.5).astype(np.intp)]


@lru_cache(maxsize=8)
def font(size: int = 12) -> ImageFont.ImageFont:
    """A TrueType font (matplotlib's bundled DejaVu Sans) at `size` px, else PIL's default."""
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except (OSError, ImportError):
        return ImageFont.load_default(size)


def colorbar_image(
    height: int, vmin: float, vmax: float, label: str = "weight", width: int = 16
) -> Image.Image:
    """A vertical colour bar with ticks at min, middle and max, drawn with PIL.

    Returns an RGB image `height` px tall, wide enough for its tick labels.
    """
    if height < 20:
        raise ValueError(f"height must be >= 20 px, got {height}")
    f = font(11)
    pad_t, pad_b = 8, 8
    bar_h = height - pad_t - pad_b
    ticks = [vmin, (vmin + vmax) / 2, vmax]
    texts = [_fmt(t) for t in ticks]
    text_w = max(int(f.getlength(t)) for t in texts)
    total_w = width + 6 + text_w + 20
    img = Image.new("RGB", (total_w, height), "white")
    ramp = lut()[np.linspace(255, 0, bar_h).astype(np.intp)]  # (bar_h, 3), top = max
    img.paste(Image.fromarray(np.repeat(ramp[:, None, :], width, axis=1)), (0, pad_t))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, pad_t, width - 1, pad_t + bar_h - 1), outline=(60, 60, 60))
    for t, text in zip(ticks, texts, strict=True):
        frac = 0.0 if vmax == vmin else (t - vmin) / (vmax - vmin)
        y = pad_t + (1 - frac) * (bar_h - 1)
        draw.line((width, y, width + 4, y), fill=(40, 40, 40))
        draw.text((width + 6, y), text, fill=(20, 20, 20), font=f, anchor="lm")
    # The label runs vertically along the right edge.
    lab = Image.new("RGB", (bar_h, 16), "white")
    ImageDraw.Draw(lab).text((bar_h / 2, 8), label, fill=(20, 20, 20), font=f, anchor="mm")
    img.paste(lab.rotate(90, expand=True), (total_w - 16, pad_t))
    return img


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100 or abs(x) < 0.01:
        return f"{x:.2g}"
    return f"{x:.2f}"
