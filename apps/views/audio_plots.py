"""Pictures of speech timing: the waveform with word starts (predicted beside true), and the
cross-attention alignment (tokens x time) with its dynamic-time-warping path, as in Whisper's
word-timestamp notebook (openai/whisper ``notebooks/Multilingual_ASR.ipynb``, the DTW figure).

Both are drawn with PIL (:mod:`.canvas`): the Audio tab redraws them on every analysis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .canvas import Canvas
from .colors import colorize, normalize
from .export import View
from .reduce import as_array

__all__ = ["word_timeline", "alignment_view"]

PREDICTED, TRUE = "#21918c", "#D55E00"


def word_timeline(wave: Any, sample_rate: int, words: Sequence[tuple[str, float, float]],
                  true_starts: Sequence[tuple[str, float]] | None = None, title: str = "",
                  size: tuple[float, float] = (8.0, 2.8),
                  dpi: int = 100) -> View:  # fmt: skip
    """The waveform with each predicted word as a shaded span from its start to its end
    (solid line at the start, the word above) and, when given, the true starts as dashed lines
    (the word below).

    Args:
        wave: (N,) samples; sample_rate: Hz.
        words: (word, start s, end s) predicted.
        true_starts: (word, start s) known to be right (e.g. eSpeak's word events).
        size, dpi: picture size in inches and pixels per inch.

    Returns:
        A `View` (kind "word_timeline"); data: ``words`` and ``true_starts``.
    """
    x = as_array(wave, "wave").astype(np.float32).reshape(-1)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if x.size == 0:
        raise ValueError("wave is empty")
    W, H = round(size[0] * dpi), round(size[1] * dpi)
    cv = Canvas(W, H)
    duration = max(len(x) / sample_rate, 1e-3)
    top = float(np.abs(x).max()) or 1.0
    ax = cv.panel((12, 30 if title else 12, W - 12, H - 40), (0.0, duration),
                  (-top * 1.45, top * 1.4))  # fmt: skip
    for i, (_, s, e) in enumerate(words):
        ax.span(s, max(e, s + 0.01), PREDICTED, 0.15 if i % 2 else 0.25)
    ax.waveform(np.arange(len(x)) / sample_rate, x, (119, 119, 119))
    for word, s, _ in words:
        ax.vline(s, PREDICTED, 2)
        ax.text(s, top * 1.05, f" {word}", 10, PREDICTED, anchor="ld")
    for word, s in true_starts or ():
        ax.vline(s, TRUE, 2, dash=(5, 3))
        ax.text(s, -top * 1.1, f" {word}", 9, TRUE, anchor="la")
    ax.frame()
    ax.xaxis("time (s)")
    legend = [("cross-attention start", PREDICTED, None)]
    if true_starts:
        legend.append(("true start", TRUE, (5, 3)))
    cv.legend(ax.right - 4, ax.bottom - 8 - 15 * len(legend), legend)
    if title:
        ax.title(title, 12)
    data = {"words": [list(w) for w in words],
            "true_starts": [list(t) for t in true_starts or ()]}  # fmt: skip
    return cv.view("word_timeline", data)


def alignment_view(matrix: Any, tokens: Sequence[str], seconds_per_position: float,
                   path: tuple[Any, Any] | None = None, offset: float = 0.0, title: str = "",
                   size: tuple[float, float] = (8.0, 3.6),
                   dpi: int = 100) -> View:  # fmt: skip
    """Tokens (rows) x audio time (columns) of the alignment heads' averaged cross-attention,
    with the DTW path drawn on top.

    Args:
        matrix: (tokens, positions) values (standardised attention).
        tokens: one label per row.
        seconds_per_position: audio time per column; ``offset`` the time of column 0.
        path: (rows, cols) of the DTW path.
        size, dpi: picture size in inches and pixels per inch.

    Returns:
        A `View` (kind "alignment"); data: ``matrix``, ``tokens`` and the ``path``.
    """
    m = as_array(matrix, "matrix").astype(np.float32)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"matrix must be 2-D (tokens, positions) and not empty, got {m.shape}")
    if len(tokens) != m.shape[0]:
        raise ValueError(f"{len(tokens)} token labels for {m.shape[0]} rows")
    if not seconds_per_position > 0:
        raise ValueError(f"seconds_per_position must be positive, got {seconds_per_position}")
    W, H = round(size[0] * dpi), round(size[1] * dpi)
    cv = Canvas(W, H)
    t1 = offset + m.shape[1] * seconds_per_position
    n = m.shape[0]
    ax = cv.panel((78, 30 if title else 12, W - 100, H - 40), (offset, t1), (n - 0.5, -0.5))
    _, lo, hi = normalize(m)
    ax.image(colorize(m, lo, hi))  # row 0 (first token) at the top
    data: dict[str, Any] = {"matrix": m, "tokens": list(tokens)}
    if path is not None:
        rows, cols = (np.asarray(p) for p in path)
        keep = rows >= 0
        ax.plot(offset + (cols[keep] + 0.5) * seconds_per_position, rows[keep], "#D55E00", 2)
        data["path"] = np.stack([rows, cols]).astype(np.int64)
    ax.frame()
    labels = [repr(t)[1:-1] if t.strip() else "_" for t in tokens]
    every = max(1, int(np.ceil(n * 12 / max(1, ax.size[1]))))  # at most one label per 12 px
    ax.yaxis("token predicted", [(i, labels[i]) for i in range(0, n, every)], size=9)
    ax.xaxis("time (s)")
    cv.colorbar(ax.right + 10, ax.top, ax.size[1], lo, hi, "standardised attention")
    if title:
        ax.title(title, 12)
    return cv.view("alignment", data)
