"""Pictures of speech timing: the waveform with word starts (predicted beside true), and the
cross-attention alignment (tokens x time) with its dynamic-time-warping path, as in Whisper's
word-timestamp notebook (openai/whisper ``notebooks/Multilingual_ASR.ipynb``, the DTW figure).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from .heatmap import shared_cmap  # noqa: E402
from .plots import figure_to_image  # noqa: E402
from .reduce import as_array  # noqa: E402

__all__ = ["word_timeline", "alignment_view"]


def word_timeline(wave: Any, sample_rate: int, words: Sequence[tuple[str, float, float]],
                  true_starts: Sequence[tuple[str, float]] | None = None, title: str = "",
                  size: tuple[float, float] = (8.0, 2.8),
                  dpi: int = 100) -> Image.Image:  # fmt: skip
    """The waveform with each predicted word as a shaded span from its start to its end
    (solid line at the start) and, when given, the true starts as dashed lines below.

    Args:
        wave: (N,) samples; sample_rate: Hz.
        words: (word, start s, end s) predicted.
        true_starts: (word, start s) known to be right (e.g. eSpeak's word events).
    """
    x = as_array(wave, "wave").astype(np.float32).reshape(-1)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    t = np.arange(len(x)) / sample_rate
    step = max(1, len(x) // 4000)  # a few thousand points draw the envelope well
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    ax.plot(t[::step], x[::step], color="#777777", lw=0.6)
    top = float(np.abs(x).max()) or 1.0
    for i, (word, s, e) in enumerate(words):
        ax.axvspan(s, max(e, s + 0.01), color="#21918c", alpha=0.15 if i % 2 else 0.25, lw=0)
        ax.axvline(s, color="#21918c", lw=1.6)
        ax.text(s, top * 1.05, word, color="#21918c", fontsize=9, ha="left", va="bottom")
    for word, s in true_starts or ():
        ax.axvline(s, color="#D55E00", lw=1.4, ls="--")
        ax.text(s, -top * 1.1, word, color="#D55E00", fontsize=8, ha="left", va="top")
    ax.set_ylim(-top * 1.45, top * 1.4)
    ax.set_xlim(0, max(t[-1] if len(t) else 0.0, 1e-3))
    ax.set_xlabel("time (s)")
    ax.set_yticks([])
    handles = [plt.Line2D([], [], color="#21918c", lw=1.6, label="cross-attention start")]
    if true_starts:
        handles.append(plt.Line2D([], [], color="#D55E00", lw=1.4, ls="--", label="true start"))
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.subplots_adjust(left=0.03, right=0.98, bottom=0.17, top=0.88)  # tight_layout: +50 ms
    return figure_to_image(fig, dpi=dpi)


def alignment_view(matrix: Any, tokens: Sequence[str], seconds_per_position: float,
                   path: tuple[Any, Any] | None = None, offset: float = 0.0, title: str = "",
                   size: tuple[float, float] = (8.0, 3.6),
                   dpi: int = 100) -> Image.Image:  # fmt: skip
    """Tokens (rows) x audio time (columns) of the alignment heads' averaged cross-attention,
    with the DTW path drawn on top.

    Args:
        matrix: (tokens, positions) values (standardised attention).
        tokens: one label per row.
        seconds_per_position: audio time per column; ``offset`` the time of column 0.
        path: (rows, cols) of the DTW path.
    """
    m = as_array(matrix, "matrix").astype(np.float32)
    if m.ndim != 2:
        raise ValueError(f"matrix must be 2-D (tokens, positions), got {m.shape}")
    if len(tokens) != m.shape[0]:
        raise ValueError(f"{len(tokens)} token labels for {m.shape[0]} rows")
    t1 = offset + m.shape[1] * seconds_per_position
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    im = ax.imshow(m, aspect="auto", cmap=shared_cmap(), interpolation="nearest",
                   extent=(offset, t1, m.shape[0] - 0.5, -0.5))  # fmt: skip
    if path is not None:
        rows, cols = (np.asarray(p) for p in path)
        keep = rows >= 0
        ax.plot(offset + (cols[keep] + 0.5) * seconds_per_position, rows[keep], color="#D55E00",
                lw=1.2)  # fmt: skip
    ax.set_yticks(range(len(tokens)))
    ax.set_yticklabels([repr(t)[1:-1] if t.strip() else "_" for t in tokens], fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("token predicted")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="standardised attention")
    if title:
        ax.set_title(title, fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.9, bottom=0.14, top=0.9)
    return figure_to_image(fig, dpi=dpi)
