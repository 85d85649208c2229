"""Head gallery: every layer x head as a thumbnail of its attention, named by its behaviour.

The grid of BertViz's model view (Vig, 2019), with each head labelled by what it measurably
does (``attnlab.domains.text.heads``: previous/next/same-token, sink, broad, induction, after
Clark et al. 2019 and Olsson et al. 2022): a frame and a strip under the thumbnail in the
behaviour's colour, with its short name and score. Colours are the Okabe & Ito (2008)
colour-blind-safe palette the other views use for categories, and every label is also
written out, so no reader depends on the colour. Thumbnails use the shared viridis LUT, each
scaled to its own maximum as in ``model_view``. ``head_gallery_html`` gives the same labels as
an HTML table (hover a cell for every score).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .colors import colorize, font
from .export import View, raster_svg
from .plots import OKABE_ITO
from .reduce import as_array, downsample

__all__ = ["BEHAVIOUR_COLORS", "behaviour_color", "head_gallery", "head_gallery_html"]

#: behaviour -> (colour, short name for the strip, what it measures)
BEHAVIOUR_COLORS: dict[str, tuple[str, str, str]] = {
    "previous-token": (OKABE_ITO[0], "prev", "weight on t-1"),
    "next-token": (OKABE_ITO[5], "next", "weight on t+1"),
    "same-token": (OKABE_ITO[2], "same", "weight on the same token id"),
    "sink": (OKABE_ITO[3], "sink", "weight on first/special tokens"),
    "broad": (OKABE_ITO[1], "broad", "entropy / log(keys)"),
    "induction": (OKABE_ITO[4], "induct", "t -> t-n+1 on repeats"),
    "mixed": ("#999999", "mixed", "no clear winner"),
}
_SPARE = ("#F0E442", "#000000", "#882255", "#44AA99")  # for behaviours not listed above


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _ink(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever contrasts more with ``rgb`` (WCAG relative luminance)."""
    lin = [(c / 255) / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
    lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return (0, 0, 0) if (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) else (255, 255, 255)


def behaviour_color(name: str) -> str:
    """The hex colour of a behaviour label (unknown names get a stable spare colour)."""
    if name in BEHAVIOUR_COLORS:
        return BEHAVIOUR_COLORS[name][0]
    return _SPARE[sum(map(ord, name)) % len(_SPARE)]


def _short(name: str) -> str:
    return BEHAVIOUR_COLORS[name][1] if name in BEHAVIOUR_COLORS else name[:6]


def _check(labels: Sequence[Sequence[str]], scores: Any, shape: tuple[int, int]) -> np.ndarray:
    if len(labels) != shape[0] or any(len(row) != shape[1] for row in labels):
        raise ValueError(f"labels must be {shape[0]} lists of {shape[1]} names (layers x heads)")
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != shape:
        raise ValueError(f"scores must have shape {shape} (layers, heads), got {s.shape}")
    return s


def _legend(names: list[str], width: int, f) -> tuple[Image.Image, list[str]]:
    """Swatches with short name and meaning, flowed into as many columns as fit ``width``."""
    texts = []
    for n in names:
        text = n if _short(n) == n else f"{_short(n)} = {n}"
        meaning = BEHAVIOUR_COLORS[n][2] if n in BEHAVIOUR_COLORS else ""
        texts.append(f"{text}: {meaning}" if meaning else text)
    sw, pad = 12, 6
    col = sw + pad + max(int(f.getlength(t)) for t in texts) + 14
    ncol = max(1, width // col)
    nrow = -(-len(names) // ncol)
    line = 18
    note = "maps: attention weight / head max (viridis); score: the behaviour's mean weight"
    img = Image.new("RGB", (width, nrow * line + line + 4), "white")
    d = ImageDraw.Draw(img)
    for k, (n, t) in enumerate(zip(names, texts, strict=True)):
        x, y = 4 + (k % ncol) * col, 2 + (k // ncol) * line
        d.rectangle((x, y + 2, x + sw, y + 2 + sw), fill=_rgb(behaviour_color(n)))
        d.text((x + sw + pad, y + 2 + sw / 2), t, fill=(30, 30, 30), font=f, anchor="lm")
    d.text((4, nrow * line + 4), note, fill=(90, 90, 90), font=f, anchor="la")
    return img, texts


def head_gallery(
    weights: Any,
    labels: Sequence[Sequence[str]],
    scores: Any,
    *,
    thumb: int = 64,
    gap: int = 6,
    layer_names: Sequence[str] | None = None,
    title: str = "",
) -> View:
    """A layers x heads grid of attention thumbnails, each labelled with its behaviour.

    Args:
        weights: (layers, heads, Lq, Lk) array or tensor, e.g. ``HeadScores.example``.
        labels: layers lists of heads behaviour names (``HeadScores.labels()[0]``).
        scores: (layers, heads) the score of each label (NaN: drawn as "n/a").
        thumb: thumbnail side in pixels (>= 24; maps are pooled to at most ``thumb`` cells).
        gap: pixels between cells.
        layer_names: row labels (default "L0", "L1", ...).
        title: a line above the grid.

    Returns:
        A `View` (kind "head_gallery") with data ``thumbnails`` (layers, heads, t, t),
        ``labels``, ``scores`` and ``cells``: per head its ``box`` and its label ``strip``
        (x0, y0, x1, y1) in pixels, and its ``color``.
    """
    w = as_array(weights)
    if w.ndim != 4:
        raise ValueError(f"weights must be 4-D (layers, heads, Lq, Lk), got shape {w.shape}")
    if thumb < 24:
        raise ValueError(f"thumb must be >= 24 px, got {thumb}")
    n_layers, n_heads = w.shape[:2]
    s = _check(labels, scores, (n_layers, n_heads))
    names = list(layer_names) if layer_names is not None else [f"L{i}" for i in range(n_layers)]
    if len(names) != n_layers:
        raise ValueError(f"layer_names has {len(names)} names for {n_layers} layers")

    small, _ = downsample(np.nan_to_num(w, nan=0.0), thumb)  # (layers, heads, <=t, <=t)
    head_max = small.max(axis=(-2, -1))
    rgb = colorize(small / np.maximum(head_max, 1e-12)[..., None, None], 0.0, 1.0)
    th, tw = rgb.shape[2:4]
    ri, ci = (np.arange(thumb) * th) // thumb, (np.arange(thumb) * tw) // thumb

    f, fs = font(12), font(max(9, min(13, thumb // 6)))
    frame, strip_h = 3, int(fs.size) + 5
    cell_w, cell_h = thumb + 2 * frame, thumb + 2 * frame + strip_h
    left = 8 + max(int(f.getlength(n)) for n in names)
    top = 22 + (22 if title else 0)
    grid_w = left + n_heads * (cell_w + gap)
    shown = [n for n in BEHAVIOUR_COLORS if n != "mixed"]
    shown += sorted({x for row in labels for x in row} - set(BEHAVIOUR_COLORS)) + ["mixed"]
    width = max(grid_w, 460)
    legend, legend_texts = _legend(shown, width, font(11))
    grid_h = top + n_layers * (cell_h + gap)
    canvas = Image.new("RGB", (width, grid_h + legend.height + 4), "white")
    canvas.paste(legend, (0, grid_h + 2))
    d = ImageDraw.Draw(canvas)
    if title:
        d.text((4, 4), title, fill=(20, 20, 20), font=font(14), anchor="la")
    cells = []
    for hi in range(n_heads):
        x = left + hi * (cell_w + gap) + cell_w / 2
        d.text((x, top - 11), f"H{hi}", fill=(30, 30, 30), font=f, anchor="mm")
    for li in range(n_layers):
        y = top + li * (cell_h + gap)
        d.text((left - 6, y + frame + thumb / 2), names[li], fill=(30, 30, 30), font=f, anchor="rm")
        for hi in range(n_heads):
            x = left + hi * (cell_w + gap)
            name, score = str(labels[li][hi]), float(s[li, hi])
            colour = _rgb(behaviour_color(name))
            d.rectangle((x, y, x + cell_w - 1, y + cell_h - 1), fill=colour)
            canvas.paste(Image.fromarray(rgb[li, hi][ri][:, ci]), (x + frame, y + frame))
            strip = (x, y + 2 * frame + thumb, x + cell_w - 1, y + cell_h - 1)
            text = f"{_short(name)} {score:.2f}" if math.isfinite(score) else _short(name)
            if fs.getlength(text) > cell_w - 4:
                text = _short(name)
            d.text(
                ((strip[0] + strip[2]) / 2, (strip[1] + strip[3]) / 2 + 1),
                text,
                fill=_ink(colour),
                font=fs,
                anchor="mm",
            )
            cells.append(
                {
                    "layer": li,
                    "head": hi,
                    "label": name,
                    "score": score,
                    "box": (x, y, x + cell_w - 1, y + cell_h - 1),
                    "strip": strip,
                    "color": behaviour_color(name),
                }
            )
    return View(
        image=canvas,
        data={
            "thumbnails": small,
            "scores": s,
            "labels": [list(r) for r in labels],
            "cells": cells,
            "layer_names": names,
            "legend": legend_texts,
        },
        svg_fn=lambda: raster_svg(canvas, None),
        kind="head_gallery",
    )


def head_gallery_html(
    labels: Sequence[Sequence[str]],
    scores: Any,
    *,
    layer_names: Sequence[str] | None = None,
    details: Sequence[Sequence[dict[str, float | None]]] | None = None,
) -> str:
    """The gallery's labels as an HTML table: layers down, heads across, one coloured cell
    per head with its behaviour and score.

    Args:
        labels, scores: as ``head_gallery``.
        layer_names: row headers (default "L0", "L1", ...).
        details: per head a dict of every behaviour's score (``HeadScores.scores(l, h)``),
            shown as the cell's tooltip.

    Returns:
        A ``<div class="attnlab-head-gallery">`` with the table and a legend.
    """
    n_layers = len(labels)
    n_heads = len(labels[0]) if n_layers else 0
    s = _check(labels, scores, (n_layers, n_heads))
    names = list(layer_names) if layer_names is not None else [f"L{i}" for i in range(n_layers)]
    cell = "padding:2px 4px;text-align:center;font:12px sans-serif;border:1px solid #fff"
    out = [
        '<div class="attnlab-head-gallery"><table style="border-collapse:collapse">',
        "<tr><th></th>" + "".join(f"<th>H{h}</th>" for h in range(n_heads)) + "</tr>",
    ]
    for li in range(n_layers):
        row = [f"<tr><th>{escape(str(names[li]))}</th>"]
        for hi in range(n_heads):
            name, score = str(labels[li][hi]), float(s[li, hi])
            colour = behaviour_color(name)
            ink = "#{:02x}{:02x}{:02x}".format(*_ink(_rgb(colour)))
            tip = name
            if details is not None:
                tip += "\n" + "\n".join(
                    f"{k}: {'n/a' if v is None or not math.isfinite(v) else f'{v:.2f}'}"
                    for k, v in details[li][hi].items()
                )
            val = f"{score:.2f}" if math.isfinite(score) else "n/a"
            row.append(
                f'<td style="{cell};background:{colour};color:{ink}" '
                f'title="{escape(tip)}">{escape(_short(name))}<br>{val}</td>'
            )
        out.append("".join(row) + "</tr>")
    out.append("</table><div>")
    for name, (colour, short, meaning) in BEHAVIOUR_COLORS.items():
        out.append(
            f'<span style="margin-right:10px"><span style="display:inline-block;'
            f'width:10px;height:10px;background:{colour}"></span> '
            f"{escape(name if short == name else f'{short} = {name}')}: "
            f"{escape(meaning)}</span>"
        )
    out.append("</div></div>")
    return "".join(out)
