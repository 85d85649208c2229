"""Arcs from one selected event to the events it attends, on a sequence or a piano roll.

For sequences of tokens or events the arc diagram (as in Music Transformer's attention
pictures, Huang et al. 2019, Fig. 1, and BertViz's neuron view) shows one query's strongest
keys without a matrix: an arc per key, its width and opacity following the weight, its
colour from the shared LUT. With a `NoteLayout` the arcs join notes on a piano roll
(time across, MIDI pitch up), every note tinted by the weight it receives.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import PatchCollection  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

from attnlab.core.layout import NoteLayout  # noqa: E402

from .colors import normalize  # noqa: E402
from .export import View, figure_svg  # noqa: E402
from .heatmap import shared_cmap  # noqa: E402
from .plots import figure_to_image  # noqa: E402
from .reduce import as_array, thin_labels, topk_rows  # noqa: E402

__all__ = ["piano_roll_arcs", "sequence_arcs"]


def _row(weights: Any, query: int) -> np.ndarray:
    """Return the query's weight row from a (L,) row or an (Lq, L) matrix."""
    w = as_array(weights)
    if w.ndim == 2:
        if not 0 <= query < w.shape[0]:
            raise ValueError(f"query {query} outside [0, {w.shape[0]})")
        w = w[query]
    if w.ndim != 1:
        raise ValueError(f"weights must be (L,) or (Lq, L), got shape {w.shape}")
    return np.where(np.isfinite(w), w, 0.0)


def _keys(row: np.ndarray, top_k: int, skip: set[int]) -> list[tuple[int, float]]:
    idx, val = topk_rows(row, min(len(row), top_k + len(skip)), decimals=None)
    keep = [(int(i), float(v)) for i, v in zip(idx, val, strict=True) if int(i) not in skip]
    return [(i, v) for i, v in keep[:top_k] if v > 0]


def sequence_arcs(
    weights: Any,
    labels: list[str],
    query: int,
    top_k: int = 12,
    max_labels: int = 60,
    title: str = "",
    size: tuple[float, float] | None = None,
    dpi: int = 100,
) -> View:
    """Arcs from position `query` to its `top_k` keys, over a row of token labels.

    Args:
        weights: the query's (L,) weight row, or the (Lq, L) matrix.
        labels: one label per key position.
        query: index of the selected query (also marked on the key axis when < L).
        top_k: arcs drawn (strongest keys).
        max_labels: at most this many tick labels (evenly thinned).
        title: figure title.
        size, dpi: figure size in inches (default grows with L) and resolution.

    Returns:
        A `View` (kind "sequence_arcs"); data: ``row`` weights and the ``keys`` drawn.
    """
    row = _row(weights, query)
    n = len(row)
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} key positions")
    keys = _keys(row, top_k, set())
    _, lo, hi = normalize(row, 0.0, None)
    cmap = shared_cmap()

    def build() -> plt.Figure:
        fig_w = size[0] if size else min(14.0, max(6.0, 0.32 * min(n, max_labels) + 2))
        fig, ax = plt.subplots(figsize=(fig_w, size[1] if size else 3.4), dpi=dpi)
        ax.bar(np.arange(n), row, width=1.0, color=cmap(row / max(hi, 1e-12)), alpha=0.9)
        peak = max(hi, 1e-12)
        for j, v in keys:
            if j == query:
                continue
            rel = v / peak
            ax.add_patch(FancyArrowPatch(
                (query, peak * 1.05), (j, peak * 1.05),
                connectionstyle=f"arc3,rad={-0.45 if j > query else 0.45}",
                arrowstyle="-|>", mutation_scale=8, lw=0.6 + 2.8 * rel,
                color=cmap(rel), alpha=0.35 + 0.65 * rel,
            ))  # fmt: skip
        if 0 <= query < n:
            ax.axvline(query, color="black", lw=1.0, ls="--")
        ticks = thin_labels([str(s) for s in labels], max_labels)
        ax.set_xticks([i for i, _ in ticks], [s[:12] for _, s in ticks], rotation=90, fontsize=8)
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_ylim(0, peak * 1.05 * (1 + 0.45 * 0.5 * 2.2))
        ax.set_ylabel("attention weight")
        name = labels[query] if 0 <= query < n else str(query)
        ax.set_title(title or f"query {query} ({name}): top {len(keys)} keys", fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
        fig.tight_layout()
        return fig

    return View(
        image=figure_to_image(build(), dpi=dpi),
        data={"row": row.astype(np.float32), "keys": keys, "query": query, "range": [lo, hi]},
        svg_fn=lambda: figure_svg(build()),
        kind="sequence_arcs",
    )


def piano_roll_arcs(
    weights: Any,
    layout: NoteLayout,
    query: int,
    top_k: int = 12,
    title: str = "",
    time_unit: str = "beats",
    size: tuple[float, float] = (9.0, 4.5),
    dpi: int = 100,
) -> View:
    """Piano roll with every note tinted by its weight and arcs from note `query`.

    Args:
        weights: the query's (length,) row or the (Lq, length) matrix, over the layout's
            positions (prefix tokens included; they are listed in the title).
        layout: onset, pitch and duration of each position (pitch -1: non-note event,
            drawn as a tick on the time axis).
        query: sequence index of the selected note.
        top_k: arcs drawn (strongest attended notes).
        title: figure title.
        time_unit: x-axis unit label ("beats" or "s").
        size, dpi: figure size in inches and resolution.

    Returns:
        A `View` (kind "piano_roll_arcs"); data: ``note_weights``, the ``keys`` drawn and
        ``axes``: the plot's ``box`` (x0, y0, x1, y1 in figure fractions from the bottom left),
        ``xlim`` and ``ylim``, to map a click on the image back to a time and pitch.
    """
    if not isinstance(layout, NoteLayout):
        raise TypeError(f"layout must be a NoteLayout, got {type(layout).__name__}")
    row = _row(weights, query)
    if len(row) != len(layout):
        raise ValueError(f"weights cover {len(row)} positions, layout has {len(layout)}")
    if not layout.num_prefix <= query < len(layout):
        raise ValueError(
            f"query {query} must be a note index in [{layout.num_prefix}, {len(layout)})"
        )
    prefix = row[: layout.num_prefix]
    notes = layout.to_notes(row)  # (notes,)
    skip = set(range(layout.num_prefix)) | {query}
    keys = _keys(row, top_k, skip)
    peak = max(float(notes.max(initial=0.0)), 1e-12)
    cmap = shared_cmap()
    on = np.asarray(layout.onsets)
    du = np.asarray(layout.durations)
    pi = np.asarray(layout.pitches)
    is_note = pi >= 0

    def centre(i: int) -> tuple[float, float]:
        o, p, d = layout.note(i)
        return (o + d / 2, p + 0.5) if p >= 0 else (o, float(pi[is_note].min(initial=60)) - 1.5)

    geometry: dict[str, list[float]] = {}

    def build() -> plt.Figure:
        fig, ax = plt.subplots(figsize=size, dpi=dpi)
        idx = np.flatnonzero(is_note)
        # one collection, not a patch per note: hundreds of notes draw in a few milliseconds
        boxes = [Rectangle((on[j], pi[j]), max(du[j], 1e-3), 1.0) for j in idx]
        ax.add_collection(PatchCollection(boxes, facecolors=cmap(notes[idx] / peak),
                                          edgecolors="0.35", linewidths=0.4))  # fmt: skip
        qi = query - layout.num_prefix
        if is_note[qi]:
            ax.add_patch(Rectangle((on[qi], pi[qi]), max(du[qi], 1e-3), 1.0, fill=False,
                                   edgecolor="black", lw=2.2))  # fmt: skip
        lo_p = int(pi[is_note].min(initial=60)) - 3
        hi_p = int(pi[is_note].max(initial=72)) + 3
        for j in np.flatnonzero(~is_note):
            ax.plot([on[j], on[j]], [lo_p, lo_p + 1.2], color=cmap(notes[j] / peak), lw=2)
        q_xy = centre(query)
        for j, v in keys:
            rel = v / peak
            ax.add_patch(FancyArrowPatch(
                q_xy, centre(j), connectionstyle="arc3,rad=0.3", arrowstyle="-|>",
                mutation_scale=9, lw=0.6 + 2.6 * rel, color=cmap(rel), alpha=0.4 + 0.6 * rel,
            ))  # fmt: skip
        end = float((on + du).max(initial=1.0))
        ax.set_xlim(float(on.min(initial=0.0)) - 0.1, end + 0.1)
        ax.set_ylim(lo_p, hi_p)
        ax.set_xlabel(f"time ({time_unit})")
        ax.set_ylabel("MIDI pitch")
        ax.grid(True, axis="y", alpha=0.2)
        head = title or f"note {query} ({layout.describe(query)['label']}): top {len(keys)} keys"
        if prefix.size:
            head += "  prefix " + ", ".join(
                f"{layout.describe(i)['label']} {prefix[i]:.2f}" for i in range(prefix.size)
            )
        ax.set_title(head, fontsize=10)
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, peak))
        fig.colorbar(sm, ax=ax, fraction=0.04, pad=0.02).set_label("attention weight")
        fig.tight_layout()
        box = ax.get_position()  # figure fraction, origin bottom left: maps clicks to notes
        geometry.update(box=[box.x0, box.y0, box.x1, box.y1], xlim=list(ax.get_xlim()),
                        ylim=list(ax.get_ylim()))  # fmt: skip
        return fig

    return View(
        image=figure_to_image(build(), dpi=dpi),
        data={
            "note_weights": notes.astype(np.float32),
            "keys": keys,
            "query": query,
            "prefix": prefix,
            "axes": geometry,  # box (figure fraction), xlim, ylim: pixel -> (time, pitch)
        },  # fmt: skip
        svg_fn=lambda: figure_svg(build()),
        kind="piano_roll_arcs",
    )
