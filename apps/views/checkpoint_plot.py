"""A training curve with one checkpoint marked: the view beside a checkpoint scrubber.

Olsson et al. (2022, "In-context Learning and Induction Heads") show the loss bump where
induction heads form; the scrubber slides over saved checkpoints, and this plot marks the
chosen one on the held-out loss, with a score (e.g. the best induction score) on a second
axis. Records are the JSONL-style dicts the trainer's probes write.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from .plots import OKABE_ITO, figure_to_image  # noqa: E402

__all__ = ["plot_checkpoint"]


def _series(records: list[dict], x: str, y: str) -> tuple[list[float], list[float]]:
    pts = [
        (r[x], r[y])
        for r in records
        if isinstance(r, dict)
        and isinstance(r.get(x), (int, float))
        and isinstance(r.get(y), (int, float))
        and math.isfinite(r[x])
        and math.isfinite(r[y])
    ]
    return [float(a) for a, _ in pts], [float(b) for _, b in pts]


def plot_checkpoint(
    records: list[dict],
    step: float,
    *,
    x: str = "step",
    loss: str = "probe_loss",
    score: str | None = "induction_score",
    loss_label: str = "held-out loss",
    score_label: str = "best induction score",
    size: tuple[float, float] = (6.4, 3.6),
    dpi: int = 100,
) -> Image.Image:
    """The ``loss`` curve against ``x`` with a vertical line and a dot at ``step``, and
    ``score`` (in [0, 1]) dashed on a right axis. Missing keys draw nothing (with a note)."""
    xs, ys = _series(records, x, loss)
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    handles = []
    if xs:
        handles += ax.plot(xs, ys, "-", color=OKABE_ITO[0], lw=1.8, label=loss_label)
        at = min(range(len(xs)), key=lambda i: abs(xs[i] - step))
        ax.plot([xs[at]], [ys[at]], "o", color=OKABE_ITO[3], ms=8)
    else:
        ax.text(0.5, 0.5, f"no {loss!r} in the records", transform=ax.transAxes, ha="center")
    sx, sy = _series(records, x, score) if score else ([], [])
    if sx:
        ax2 = ax.twinx()
        handles += ax2.plot(sx, sy, "--", color=OKABE_ITO[2], lw=1.4, label=score_label)
        ax2.set_ylabel(score_label, color=OKABE_ITO[2])
        ax2.set_ylim(0, 1)
    ax.axvline(step, color=OKABE_ITO[3], lw=1.5)
    ax.set_xlabel(f"training {x}")
    ax.set_ylabel("loss")
    ax.set_title(f"training curve, checkpoint at {x} {step:g}")
    ax.grid(True, alpha=0.3)
    if handles:
        ax.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.tight_layout()
    return figure_to_image(fig, dpi=dpi)
