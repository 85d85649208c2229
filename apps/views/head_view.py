"""Head view: an interactive token-to-token link view as self-contained HTML + bundled JS.

After BertViz's head view (Vig, 2019: "A Multiscale Visualization of Attention in the
Transformer Model"): queries on the left, keys on the right, one colour per head; hover a
token to see what it attends to (or, on the right, what attends to it). Unlike BertViz it
does not ship every L x L weight to the browser: each query row keeps its top-k keys with
weights rounded to thousandths, k shrinks to fit an entry budget, and inputs longer than
`max_tokens` are block-pooled first, so L = 1024 stays a few hundred kilobytes.

Gradio 6 does not run ``<script>`` inside ``gr.HTML``; use::

    gr.HTML(head_view_html(w, tokens), js_on_load=head_view_js())

`head_view_page` wraps the same markup and script into a standalone HTML document.
"""

from __future__ import annotations

import json
from functools import lru_cache
from html import escape, unescape
from importlib import resources
from typing import Any

import numpy as np

from .colors import lut
from .plots import OKABE_ITO
from .reduce import as_array, downsample, pool_labels, topk_rows

__all__ = ["head_colors", "head_view_css", "head_view_data", "head_view_html", "head_view_js",
           "head_view_page", "payload_from_html"]  # fmt: skip

_SCALE = 1000  # weights travel as integers in thousandths


@lru_cache(maxsize=1)
def head_view_js() -> str:
    """The head view's JavaScript (for ``gr.HTML(js_on_load=...)``), read from the package."""
    return resources.files(__package__).joinpath("head_view.js").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def head_view_css() -> str:
    """The head view's CSS (already embedded by `head_view_html`; for ``css_template``)."""
    return resources.files(__package__).joinpath("head_view.css").read_text(encoding="utf-8")


def head_colors(n: int) -> list[str]:
    """`n` distinguishable head colours: Okabe-Ito up to 8, else samples of the shared LUT."""
    if n <= len(OKABE_ITO):
        return list(OKABE_ITO[:n])
    rows = lut()[np.linspace(0, 230, n).astype(int)]  # stop before viridis' pale yellow end
    return ["#{:02x}{:02x}{:02x}".format(*row) for row in rows]


def head_view_data(
    weights: Any,
    tokens: list[str],
    k_tokens: list[str] | None = None,
    top_k: int = 8,
    max_tokens: int = 512,
    max_entries: int = 400_000,
    layer_names: list[str] | None = None,
    head_names: list[str] | None = None,
) -> dict[str, Any]:
    """The reduced, JSON-ready data behind the head view.

    Args:
        weights: (heads, Lq, Lk) for one layer or (layers, heads, Lq, Lk).
        tokens: one label per query (and per key for self-attention).
        k_tokens: key labels for cross-attention (default: `tokens`).
        top_k: keys kept per query row (lowered to respect `max_entries`).
        max_tokens: longer axes are block-pooled to this many positions first.
        max_entries: budget of (query, key) entries over all layers and heads.
        layer_names, head_names: labels for the controls.

    Returns:
        A dict with labels, colours, ``idx`` and ``val`` (flat integer lists of shape
        (layers, heads, Lq, k)), ``scale`` and a ``note`` saying what was reduced.
    """
    w = as_array(weights)
    if w.ndim == 3:
        w = w[None]
    if w.ndim != 4:
        raise ValueError(
            f"weights must be (heads, Lq, Lk) or (layers, heads, Lq, Lk), got {w.shape}"
        )
    if not isinstance(tokens, (list, tuple)):
        raise TypeError(f"tokens must be a list of strings, got {type(tokens).__name__}")
    n_layers, n_heads, lq, lk = w.shape
    k_tokens = list(tokens) if k_tokens is None else list(k_tokens)
    if len(tokens) != lq:
        raise ValueError(f"tokens has {len(tokens)} labels for {lq} queries")
    if len(k_tokens) != lk:
        raise ValueError(f"k_tokens has {len(k_tokens)} labels for {lk} keys")
    if top_k < 1 or max_tokens < 2 or max_entries < 1:
        raise ValueError("top_k, max_tokens and max_entries must be positive (max_tokens >= 2)")
    notes = []
    w, (fq, fk) = downsample(w, max_tokens)  # keys summed, queries averaged
    q_labels = pool_labels([str(t) for t in tokens], fq)
    k_labels = pool_labels([str(t) for t in k_tokens], fk)
    if fq > 1 or fk > 1:
        notes.append(f"{lq} x {lk} positions pooled in blocks of {fq} x {fk}.")
    lq2, lk2 = w.shape[-2:]
    k = max(1, min(top_k, lk2, max_entries // max(1, n_layers * n_heads * lq2)))
    if k < lk2:
        notes.append(f"Top {k} keys per query shown.")
    idx, val = topk_rows(w, k, decimals=None)  # (layers, heads, Lq, k)
    val_int = np.rint(np.clip(val, 0.0, 1.0) * _SCALE).astype(np.int32)
    return {
        "q": q_labels,
        "k": k_labels,
        "layers": layer_names or [f"layer {i}" for i in range(n_layers)],
        "heads": head_names or [f"H{h}" for h in range(n_heads)],
        "colors": head_colors(n_heads),
        "topk": int(k),
        "scale": _SCALE,
        "idx": idx.ravel().tolist(),
        "val": val_int.ravel().tolist(),
        "pool": [int(fq), int(fk)],
        "note": " ".join(notes),
    }


def head_view_html(
    weights: Any,
    tokens: list[str],
    k_tokens: list[str] | None = None,
    top_k: int = 8,
    max_tokens: int = 512,
    max_entries: int = 400_000,
    height: int = 600,
    max_links: int = 3000,
    title: str = "",
    layer_names: list[str] | None = None,
    head_names: list[str] | None = None,
) -> str:
    """Markup of the head view: a ``div.attn-hv`` holding its data as JSON, plus scoped CSS.

    Render it with ``gr.HTML(value, js_on_load=head_view_js())``; the JS draws the SVG.
    Arguments are those of `head_view_data`, plus:

    Args:
        height: visible height in pixels (the token columns scroll).
        max_links: with no token hovered, all links are drawn only up to this many.
        title: optional heading.
    """
    data = head_view_data(weights, tokens, k_tokens, top_k, max_tokens, max_entries,
                          layer_names, head_names)  # fmt: skip
    longest = max((len(s) for s in data["q"] + data["k"]), default=4)
    data["labelWidth"] = int(min(220, max(60, 7.5 * longest + 20)))
    data["height"] = int(height)
    data["maxLinks"] = int(max_links)
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    heading = f'<div class="attn-hv-title">{escape(title)}</div>' if title else ""
    return (
        f"<style>{head_view_css()}</style>"
        f'<div class="attn-hv" data-attn-hv="{escape(payload, quote=True)}">{heading}'
        '<div class="attn-hv-mount">Attention head view (loading; needs JavaScript).</div>'
        "</div>"
    )


def payload_from_html(markup: str) -> dict[str, Any]:
    """The JSON data embedded in head-view markup (for export and tests)."""
    start = markup.find('data-attn-hv="')
    if start < 0:
        raise ValueError("markup holds no head view (no data-attn-hv attribute)")
    start += len('data-attn-hv="')
    return json.loads(unescape(markup[start : markup.index('"', start)]))


def head_view_page(markup: str, title: str = "attnlab head view") -> str:
    """A standalone HTML document running the head view without Gradio (export, tests)."""
    js = head_view_js().replace("</script", "<\\/script")
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"</head><body>{markup}<script>{js}</script></body></html>"
    )
