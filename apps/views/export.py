"""Views as values, and exporting them: PNG + SVG for people, NPZ + JSON for numbers.

Every render function in `attnlab.apps.views` returns a `View`: the raster image (what a
Gradio ``gr.Image`` shows), the numbers it was drawn from, and a way to get a real SVG
(matplotlib's SVG backend for figure views, hand-written SVG for raster grids). `export`
writes all four files side by side so a figure in a report can be re-plotted from its data.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["View", "export", "figure_svg", "raster_svg"]


@dataclass(frozen=True)
class View:
    """A rendered view.

    Attributes:
        image: RGB PIL image.
        data: the numbers drawn: numpy arrays go to the NPZ, everything else to the JSON.
        svg_fn: builds the SVG text on demand (drawing SVG costs time, so only on export).
        kind: which view made it ("heatmap", "model_view", ...).
    """

    image: Image.Image
    data: dict[str, Any] = field(default_factory=dict)
    svg_fn: Callable[[], str] | None = None
    kind: str = "view"

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def svg(self) -> str:
        """The view as SVG text (a raster embedded in SVG when no vector form exists)."""
        return self.svg_fn() if self.svg_fn is not None else raster_svg(self.image)


def figure_svg(fig: Any) -> str:
    """Render a matplotlib figure to SVG text and close it."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    return buf.getvalue()


def raster_svg(
    image: Image.Image, texts: list[tuple[float, float, str, dict]] | None = None
) -> str:
    """An SVG holding `image` as an embedded PNG plus vector text labels.

    Args:
        image: the picture, kept pixel-exact (``image-rendering: pixelated``).
        texts: (x, y, text, attrs) labels drawn on top, attrs being extra SVG attributes.
    """
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode("ascii")
    w, h = image.size
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
        f'<image x="0" y="0" width="{w}" height="{h}" style="image-rendering:pixelated" '
        f'href="data:image/png;base64,{b64}"/>',
    ]
    for x, y, text, attrs in texts or []:
        extra = " ".join(f'{k.replace("_", "-")}="{escape(str(v))}"' for k, v in attrs.items())
        parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-family="DejaVu Sans, sans-serif" {extra}>'
            f"{escape(text)}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def export(view: View | Image.Image | str, folder: str | Path, stem: str) -> dict[str, Path]:
    """Write a view as ``stem.png``, ``stem.svg``, ``stem.npz`` and ``stem.json`` in `folder`.

    A bare PIL image gets PNG + SVG; an HTML string gets ``stem.html`` (head-view markup is
    wrapped into a standalone page that runs offline, and its data goes to ``stem.json``).

    Returns:
        Mapping from suffix ("png", "svg", "npz", "json", "html") to the written path.
    """
    if not stem or "/" in stem or "\\" in stem:
        raise ValueError(f"stem must be a plain file name without folders, got {stem!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    if isinstance(view, str):
        out["html"] = folder / f"{stem}.html"
        if 'class="attn-hv"' in view and "<html" not in view:
            from .head_view import head_view_page, payload_from_html

            out["json"] = folder / f"{stem}.json"
            out["json"].write_text(json.dumps(payload_from_html(view)), encoding="utf-8")
            view = head_view_page(view, title=stem)
        out["html"].write_text(view, encoding="utf-8")
        return out
    if isinstance(view, Image.Image):
        view = View(image=view)
    if not isinstance(view, View):
        raise TypeError(f"view must be a View, a PIL image or an HTML string, got {type(view)}")
    out["png"] = folder / f"{stem}.png"
    view.image.save(out["png"])
    out["svg"] = folder / f"{stem}.svg"
    out["svg"].write_text(view.svg(), encoding="utf-8")
    arrays = {k: np.asarray(v) for k, v in view.data.items() if isinstance(v, np.ndarray)}
    meta = {k: _jsonable(v) for k, v in view.data.items() if not isinstance(v, np.ndarray)}
    meta["kind"] = view.kind
    meta["arrays"] = {k: list(v.shape) for k, v in arrays.items()}
    if arrays:
        out["npz"] = folder / f"{stem}.npz"
        np.savez_compressed(out["npz"], **arrays)
    out["json"] = folder / f"{stem}.json"
    out["json"].write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return out
