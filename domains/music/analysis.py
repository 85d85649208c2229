"""Attention between notes: the event-level maps of a music model (every layer and head,
recorded with :func:`attnlab.core.capture.record_attention`) read per note, in the piece's own
coordinates (:class:`attnlab.core.layout.NoteLayout`: onset and duration in beats, MIDI pitch).

A note is two events, its note-on and the note-off that ends it; the weight from note q to note
j is the weight from q's note-on token to j's note-on plus to j's note-off (zero for a note-off
still in q's future: the model is causal). Weights to time-shift and velocity tokens are left
out of the note view; ``event_share`` says how much of the row they hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from attnlab.core.capture import record_attention
from attnlab.core.layout import NoteLayout

from .tokens import STEPS_PER_QUARTER, note_positions

__all__ = ["NoteAttention", "note_attention", "note_layout"]


def note_layout(notes: Sequence[dict[str, int]]) -> NoteLayout:
    """One position per note (from :func:`tokens.note_positions`), times in beats."""
    q = float(STEPS_PER_QUARTER)
    return NoteLayout.create([n["start"] / q for n in notes], [n["pitch"] for n in notes],
                             [(n["end"] - n["start"]) / q for n in notes])  # fmt: skip


@dataclass(frozen=True)
class NoteAttention:
    """Recorded attention of one token sequence.

    Attributes:
        tokens: the events.
        notes: per note its ``on``/``off`` token indices, ``pitch``, ``start``, ``end`` steps.
        maps: (layers, heads, L, L) event-level weights (float32).
    """

    tokens: list[int]
    notes: list[dict[str, int]]
    maps: Tensor

    @property
    def num_layers(self) -> int:
        return self.maps.shape[0]

    @property
    def num_heads(self) -> int:
        return self.maps.shape[1]

    def layout(self, upto: int | None = None) -> NoteLayout:
        """The notes (the first ``upto`` of them) as a layout."""
        return note_layout(self.notes if upto is None else self.notes[:upto])

    def check(self, note: int, layer: int, heads: Sequence[int]) -> list[int]:
        if not 0 <= note < len(self.notes):
            raise ValueError(f"note must be in 0..{len(self.notes) - 1}, got {note}")
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must be in 0..{self.num_layers - 1}, got {layer}")
        heads = sorted({int(h) for h in heads})
        if not heads:
            raise ValueError("choose at least one head")
        if heads[0] < 0 or heads[-1] >= self.num_heads:
            raise ValueError(f"heads must be in 0..{self.num_heads - 1}, got {heads}")
        return heads

    def event_row(self, note: int, layer: int, heads: Sequence[int]) -> Tensor:
        """(L,) weights from the note's note-on token, mean over ``heads``."""
        heads = self.check(note, layer, heads)
        return self.maps[layer, heads, self.notes[note]["on"]].mean(0)

    def note_weights(self, note: int, layer: int, heads: Sequence[int],
                     upto: int | None = None) -> np.ndarray:  # fmt: skip
        """(notes,) weight from note ``note`` to every note (the first ``upto``)."""
        row = self.event_row(note, layer, heads)
        on = torch.tensor([n["on"] for n in self.notes])
        off = torch.tensor([n["off"] for n in self.notes])
        w = row[on] + torch.where(off >= 0, row[off.clamp(min=0)], torch.zeros(()))
        w = w.numpy().astype(np.float32)
        return w if upto is None else w[:upto]

    def event_share(self, note: int, layer: int, heads: Sequence[int]) -> float:
        """Share of the row on time-shift and velocity tokens (not drawn as notes)."""
        return float(1.0 - self.note_weights(note, layer, heads).sum())


@torch.no_grad()
def note_attention(model: nn.Module, tokens: Sequence[int]) -> NoteAttention:
    """Every layer's and head's attention over ``tokens`` (one forward), read per note."""
    tokens = [int(t) for t in tokens]
    notes = note_positions(tokens)
    if not notes:
        raise ValueError("the sequence holds no notes")
    was_training = model.training
    model.eval()
    try:
        with record_attention(model, layers="encoder.blocks.*.attn") as maps:
            model(torch.tensor([tokens]))
        stacked = maps.stack().float()[:, 0]  # (layers, B=1, H, L, L) -> (layers, H, L, L)
    finally:
        model.train(was_training)
    return NoteAttention(tokens, notes, stacked)
