"""Plots drawn straight into pixels: a white canvas with data panels, ticks and text.

Matplotlib spends most of an interactive picture's time building tick and text artists
(about 100 ms for a two-panel spectrogram figure); the views that a tab redraws on every click
draw with PIL through this module instead, in a few milliseconds. A :class:`Panel` maps data
coordinates to pixels and draws images, lines, dashed lines, translucent spans and filled
profiles; every text drawn is also kept, so :meth:`Canvas.view` gives a `View` whose SVG holds
the raster plus real text (as :func:`~.heatmap.model_view` does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .colors import colorbar_image, font
from .export import View, raster_svg

__all__ = ["Canvas", "Panel", "nice_ticks", "hex_rgb"]

INK = (30, 30, 30)
GRID = (225, 225, 225)


def hex_rgb(colour: str | Sequence[int]) -> tuple[int, int, int]:
    """``"#21918c"`` or an (r, g, b) triple as an (r, g, b) tuple of ints."""
    if isinstance(colour, str):
        c = colour.lstrip("#")
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)
    r, g, b = colour[:3]
    return int(r), int(g), int(b)


def nice_ticks(lo: float, hi: float, most: int = 8) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) inside [lo, hi]: the
    finest step giving at most ``most`` ticks, or, where that gives one tick only, the step
    below it (then a few more than ``most``; this happens only for ``most`` < 6)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    mag = 10.0 ** math.floor(math.log10(hi - lo))
    finer: list[float] = []
    for step in (m * mag * d for d in (0.01, 0.1, 1, 10) for m in (1, 2, 2.5, 5)):
        first = math.ceil(lo / step - 1e-9) * step
        n = int(math.floor((hi - first) / step + 1e-9)) + 1
        ticks = [round(first + k * step, 12) for k in range(n)]
        if n <= most:
            return ticks if n >= 2 or not finer else finer
        finer = ticks
    return finer


def _label(v: float) -> str:
    text = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


class Canvas:
    """A white RGB picture ``width`` x ``height`` px to draw panels and text on."""

    def __init__(self, width: int, height: int) -> None:
        if width < 40 or height < 40:
            raise ValueError(f"a canvas needs at least 40 x 40 px, got {width} x {height}")
        self.pixels = np.full((height, width, 3), 255, dtype=np.uint8)
        self.width, self.height = width, height
        self.texts: list[tuple[float, float, str, dict]] = []
        self._ops: list[tuple] = []  # drawing done on the PIL image, after pixel work

    # -- text and lines go through PIL at the end, over the pixel layers ----------------------
    def text(self, x: float, y: float, s: str, size: int = 11, fill: Any = INK,
             anchor: str = "la") -> None:  # fmt: skip
        """Text at pixel (x, y); ``anchor`` as PIL's (``"mm"``: centred, ``"rm"``: right)."""
        self._ops.append(("text", (x, y), s, size, hex_rgb(fill), anchor))
        svg_anchor = {"l": "start", "m": "middle", "r": "end"}[anchor[0]]
        base = {"a": size * 0.8, "m": size * 0.35, "d": 0.0, "s": 0.0, "t": size * 0.8}
        self.texts.append((x, y + base.get(anchor[1], 0.0), s,
                           {"font_size": size, "text_anchor": svg_anchor,
                            "fill": "#{:02x}{:02x}{:02x}".format(*hex_rgb(fill))}))  # fmt: skip

    def vtext(self, x: float, y: float, s: str, size: int = 11, fill: Any = INK) -> None:
        """Text turned 90 degrees (read bottom to top), centred on pixel (x, y)."""
        self._ops.append(("vtext", (x, y), s, size, hex_rgb(fill), "mm"))
        self.texts.append((x, y, s, {"font_size": size, "text_anchor": "middle",
                                     "transform": f"rotate(-90 {x:.1f} {y:.1f})"}))  # fmt: skip

    def line(self, points: Sequence[tuple[float, float]], fill: Any, width: float = 1.0,
             dash: tuple[int, int] | None = None) -> None:  # fmt: skip
        """A polyline through pixel points; ``dash``: (on, off) lengths in px."""
        self._ops.append(("line", [(float(x), float(y)) for x, y in points], hex_rgb(fill),
                          max(1, round(width)), dash))  # fmt: skip

    def paste(self, image: Image.Image, x: int, y: int) -> None:
        """Paste an RGB picture (a colour bar, a legend) with its top-left corner at (x, y)."""
        arr = np.asarray(image.convert("RGB"))
        h = min(arr.shape[0], self.height - y)
        w = min(arr.shape[1], self.width - x)
        if h > 0 and w > 0:
            self.pixels[y : y + h, x : x + w] = arr[:h, :w]

    def colorbar(self, x: int, y: int, height: int, vmin: float, vmax: float,
                 label: str) -> None:  # fmt: skip
        """The shared colour bar (viridis, min to max) at (x, y)."""
        self.paste(colorbar_image(max(20, height), vmin, vmax, label=label), x, y)

    def legend(self, x: float, y: float, entries: Sequence[tuple[str, Any, tuple | None]]) -> None:
        """A boxed legend with its top-right corner at (x, y): (label, colour, dash) rows."""
        f = font(10)
        w = 34 + max(int(f.getlength(lab)) for lab, _, _ in entries)
        h = 6 + 15 * len(entries)
        x0 = x - w
        self.line([(x0, y), (x, y), (x, y + h), (x0, y + h), (x0, y)], (190, 190, 190))
        self.pixels[int(y) + 1 : int(y + h), int(x0) + 1 : int(x)] = 255
        for k, (lab, colour, dash) in enumerate(entries):
            yy = y + 10 + 15 * k
            self.line([(x0 + 5, yy), (x0 + 27, yy)], colour, 2, dash)
            self.text(x0 + 31, yy, lab, size=10, anchor="lm")

    def panel(self, box: tuple[int, int, int, int], xlim: tuple[float, float],
              ylim: tuple[float, float]) -> Panel:  # fmt: skip
        """A plot area at pixel ``box`` (left, top, right, bottom) showing ``xlim`` x ``ylim``
        (y grows upwards; ``ylim=(high, low)`` turns it downwards)."""
        return Panel(self, box, xlim, ylim)

    def image(self) -> Image.Image:
        img = Image.fromarray(self.pixels)
        draw = ImageDraw.Draw(img)
        for op in self._ops:
            if op[0] == "text":
                _, xy, s, size, fill, anchor = op
                draw.text(xy, s, fill=fill, font=font(size), anchor=anchor)
            elif op[0] == "vtext":
                _, (x, y), s, size, fill, _ = op
                f = font(size)
                w = max(1, int(f.getlength(s)) + 2)
                strip = Image.new("RGB", (w, size + 4), "white")
                ImageDraw.Draw(strip).text((w / 2, (size + 4) / 2), s, fill=fill, font=f,
                                           anchor="mm")  # fmt: skip
                rot = strip.rotate(90, expand=True)
                img.paste(rot, (int(x - rot.width / 2), int(y - rot.height / 2)))
                draw = ImageDraw.Draw(img)
            else:
                _, pts, fill, width, dash = op
                if dash is None:
                    draw.line(pts, fill=fill, width=width)
                else:
                    for seg in _dashes(pts, *dash):
                        draw.line(seg, fill=fill, width=width)
        return img

    def view(self, kind: str, data: dict[str, Any]) -> View:
        """The finished picture as a `View` (SVG: the raster with every text as real text)."""
        img = self.image()
        texts = list(self.texts)
        return View(image=img, data=data, svg_fn=lambda: raster_svg(img, texts), kind=kind)


def _dashes(pts: list[tuple[float, float]], on: int, off: int) -> list[list[tuple[float, float]]]:
    out = []
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
        length = math.hypot(x1 - x0, y1 - y0)
        s = 0.0
        while s < length:
            e = min(length, s + on)
            a, b = s / length, e / length
            out.append([(x0 + a * (x1 - x0), y0 + a * (y1 - y0)),
                        (x0 + b * (x1 - x0), y0 + b * (y1 - y0))])  # fmt: skip
            s += on + off
    return out


class Panel:
    """A rectangle of a :class:`Canvas` with data axes; see :meth:`Canvas.panel`."""

    def __init__(self, canvas: Canvas, box: tuple[int, int, int, int],
                 xlim: tuple[float, float], ylim: tuple[float, float]) -> None:  # fmt: skip
        self.canvas = canvas
        self.left, self.top, self.right, self.bottom = (int(v) for v in box)
        if self.right - self.left < 4 or self.bottom - self.top < 4:
            raise ValueError(f"panel box {box} is too small to draw in")
        x0, x1 = (float(v) for v in xlim)
        y0, y1 = (float(v) for v in ylim)
        self.xlim = (x0, x1 if x1 != x0 else x0 + 1e-9)  # reversed limits flip the axis
        self.ylim = (y0, y1 if y1 != y0 else y0 + 1e-9)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in px."""
        return self.right - self.left, self.bottom - self.top

    def px(self, x: Any) -> Any:
        (x0, x1), w = self.xlim, self.right - self.left
        return self.left + (np.asarray(x, dtype=np.float64) - x0) / (x1 - x0) * w

    def py(self, y: Any) -> Any:
        (y0, y1), h = self.ylim, self.bottom - self.top
        return self.bottom - (np.asarray(y, dtype=np.float64) - y0) / (y1 - y0) * h

    def _cols(self, a: float, b: float) -> tuple[int, int]:
        c0 = int(np.clip(round(float(self.px(min(a, b)))), self.left, self.right))
        c1 = int(np.clip(round(float(self.px(max(a, b)))), self.left, self.right))
        return c0, max(c1, c0 + 1)

    def image(self, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
        """Fill the panel with ``rgb`` (rows top to bottom, (h, w, 3) uint8), stretched to the
        panel with nearest-neighbour sampling; ``alpha`` (h, w) in [0, 1] blends it over what
        is there."""
        w, h = self.size
        ri = (np.arange(h) * rgb.shape[0]) // h
        ci = (np.arange(w) * rgb.shape[1]) // w
        src = rgb[ri][:, ci].astype(np.float32)
        dst = self.canvas.pixels[self.top : self.bottom, self.left : self.right]
        if alpha is None:
            dst[:] = src.astype(np.uint8)
        else:
            a = np.asarray(alpha, dtype=np.float32)[ri][:, ci][..., None]
            dst[:] = (dst * (1 - a) + src * a + 0.5).astype(np.uint8)

    def span(self, x0: float, x1: float, fill: Any, alpha: float) -> None:
        """A translucent band over the panel's full height from x0 to x1 (data)."""
        c0, c1 = self._cols(x0, x1)
        dst = self.canvas.pixels[self.top : self.bottom, c0:c1]
        col = np.array(hex_rgb(fill), dtype=np.float32)
        dst[:] = (dst * (1 - alpha) + col * alpha + 0.5).astype(np.uint8)

    def fill_under(self, xs: Any, ys: Any, fill: Any, alpha: float = 1.0) -> None:
        """Each column filled from y = ylim[0] up to the step curve ys(xs) (nearest x)."""
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        if xs.size == 0:
            return
        cols = np.arange(self.left, self.right)
        xdata = self.xlim[0] + (cols + 0.5 - self.left) / (self.right - self.left) * (
            self.xlim[1] - self.xlim[0]
        )
        k = np.clip(np.searchsorted(xs, xdata), 0, len(xs) - 1)
        k0 = np.clip(k - 1, 0, len(xs) - 1)
        k = np.where(np.abs(xs[k0] - xdata) < np.abs(xs[k] - xdata), k0, k)
        tops = np.clip(self.py(ys[k]), self.top, self.bottom).astype(int)
        rows = np.arange(self.top, self.bottom)[:, None]
        mask = rows >= tops[None, :]
        region = self.canvas.pixels[self.top : self.bottom, self.left : self.right]
        col = np.array(hex_rgb(fill), dtype=np.float32)
        blended = (region * (1 - alpha) + col * alpha + 0.5).astype(np.uint8)
        region[mask] = blended[mask]

    def plot(self, xs: Any, ys: Any, fill: Any, width: float = 1.0,
             dash: tuple[int, int] | None = None) -> None:  # fmt: skip
        """A line through data points."""
        px, py = self.px(xs), self.py(ys)
        if len(px) >= 2:
            self.canvas.line(list(zip(px.tolist(), py.tolist(), strict=True)), fill, width, dash)

    def waveform(self, xs: Any, ys: Any, fill: Any) -> None:
        """A dense signal drawn as one vertical min..max bar per pixel column (exact envelope
        at any length, and far cheaper than a polyline through every sample)."""
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        cols = np.clip(self.px(xs).astype(int), self.left, self.right - 1) - self.left
        w = self.right - self.left
        lo = np.full(w, np.inf)
        hi = np.full(w, -np.inf)
        np.minimum.at(lo, cols, ys)
        np.maximum.at(hi, cols, ys)
        have = np.isfinite(lo)
        r0 = np.clip(self.py(np.where(have, hi, 0)), self.top, self.bottom - 1).astype(int)
        r1 = np.clip(self.py(np.where(have, lo, 0)), self.top, self.bottom - 1).astype(int)
        rows = np.arange(self.top, self.bottom)[:, None]
        mask = have[None, :] & (rows >= r0[None, :]) & (rows <= r1[None, :])
        region = self.canvas.pixels[self.top : self.bottom, self.left : self.right]
        region[mask] = hex_rgb(fill)

    def vline(self, x: float, fill: Any, width: float = 1.0, dash: tuple[int, int] | None = None,
              y: tuple[float, float] | None = None) -> None:  # fmt: skip
        """A vertical line at data x, over the panel or over data range ``y``."""
        c = float(self.px(x))
        if not self.left - 1 <= c <= self.right + 1:
            return
        if y is None:
            r0, r1 = float(self.top), float(self.bottom)
        else:
            r0, r1 = float(self.py(y[1])), float(self.py(y[0]))
        self.canvas.line([(c, r0), (c, r1)], fill, width, dash)

    def text(self, x: float, y: float, s: str, size: int = 10, fill: Any = INK,
             anchor: str = "la") -> None:  # fmt: skip
        """Text at data (x, y)."""
        self.canvas.text(float(self.px(x)), float(self.py(y)), s, size, fill, anchor)

    def frame(self, grid_x: bool = False, grid_y: bool = False) -> None:
        """The panel's outline (and optional light grid lines at the x / y ticks)."""
        if grid_x:
            for t in nice_ticks(*sorted(self.xlim)):
                self.vline(t, GRID)
        if grid_y:
            for t in nice_ticks(*sorted(self.ylim), most=5):
                r = float(self.py(t))
                self.canvas.line([(self.left, r), (self.right, r)], GRID)
        l, t, r, b = self.left, self.top, self.right - 1, self.bottom - 1  # noqa: E741
        self.canvas.line([(l, t), (r, t), (r, b), (l, b), (l, t)], (60, 60, 60))

    def xaxis(self, label: str = "", ticks: bool = True) -> None:
        """Tick marks and values below the panel, and the axis label under them."""
        if ticks:
            for t in nice_ticks(*sorted(self.xlim)):
                c = float(self.px(t))
                self.canvas.line([(c, self.bottom), (c, self.bottom + 4)], INK)
                self.canvas.text(c, self.bottom + 6, _label(t), 10, anchor="ma")
        if label:
            self.canvas.text((self.left + self.right) / 2, self.bottom + 21, label, 11, anchor="ma")

    def yaxis(self, label: str = "", ticks: Sequence[tuple[float, str]] | None = None,
              most: int = 6, size: int = 10) -> None:  # fmt: skip
        """Tick marks and values left of the panel (``ticks``: (value, text) pairs, or round
        values), and the label turned along the axis."""
        if ticks is None:
            ticks = [(t, _label(t)) for t in nice_ticks(*sorted(self.ylim), most=most)]
        widest = 0.0
        for v, s in ticks:
            r = float(self.py(v))
            self.canvas.line([(self.left - 4, r), (self.left, r)], INK)
            self.canvas.text(self.left - 6, r, s, size, anchor="rm")
            widest = max(widest, font(size).getlength(s))
        if label:
            self.canvas.vtext(self.left - 14 - widest, (self.top + self.bottom) / 2, label, 11)

    def title(self, s: str, size: int = 12) -> None:
        self.canvas.text((self.left + self.right) / 2, self.top - 6, s, size, anchor="md")
