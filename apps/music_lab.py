"""The Music tab's model side, without Gradio widgets: shipped models loaded once, chorales and
uploads read into tokens, attention per note cached per sequence, clicks on the piano roll
mapped back to notes, and the piano roll with arcs drawn (``apps.views.piano_roll_arcs``).
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from attnlab.apps.views import piano_roll_arcs
from attnlab.core import registry
from attnlab.domains.music.analysis import NoteAttention, note_attention
from attnlab.domains.music.data import load_chorales
from attnlab.domains.music.tokens import MAX_FILE_BYTES, Piece, read_piece

__all__ = ["KINDS", "MAX_VIEW_TOKENS", "MAX_PRIME_TOKENS", "MAX_NEW_TOKENS", "MAX_UPLOAD",
           "model", "chorale_choices", "chorale", "read_upload", "attention", "roll",
           "note_at", "midi_path", "model_shape"]  # fmt: skip

KINDS = ("relative", "absolute")
#: events read for the attention view (the first ones of the piece)
MAX_VIEW_TOKENS = 1024
#: events of the prime, and events generated at most, in the demo
MAX_PRIME_TOKENS = 512
MAX_NEW_TOKENS = 512
#: upload limit (the same as ``tokens.MAX_FILE_BYTES``), for ``launch(max_file_size=...)``
MAX_UPLOAD = f"{MAX_FILE_BYTES // (1024 * 1024)}mb"
_CACHE_SIZE = 6

_lock = threading.Lock()
_models: dict[str, Any] = {}
_model_locks: dict[str, threading.Lock] = {k: threading.Lock() for k in KINDS}
_maps: OrderedDict[tuple, NoteAttention] = OrderedDict()
_chorales: dict[str, Piece] = {}


def model(kind: str):
    """The shipped model ``music/<kind>``, loaded once; gr.Error if it is not installed."""
    with _lock:
        if kind in _models:
            return _models[kind]
    try:
        m = registry.load(f"music/{kind}").eval()
    except ValueError as e:  # unknown name or a WeightsError
        raise gr.Error(f"The shipped model music/{kind} is not available in this installation "
                       f"({e}). Train it with `attnlab train music/{kind} --save-weights "
                       f"music/{kind}`.") from None  # fmt: skip
    with _lock:
        return _models.setdefault(kind, m)


def model_shape() -> tuple[int, int]:
    """(layers, heads) of the shipped relative model, from its card (no weights loaded)."""
    try:
        card = registry.read_card("music/relative")
        args = card.get("model_args", {})
        from attnlab.domains.music.model import MusicConfig

        c = MusicConfig(**{k: v for k, v in args.items() if k in MusicConfig.__dataclass_fields__})
        return c.depth, c.num_heads
    except Exception:  # noqa: BLE001 -- no card yet: the default architecture
        from attnlab.domains.music.model import MusicConfig

        return MusicConfig().depth, MusicConfig().num_heads


def forget() -> None:
    """Drop loaded models and cached maps (tests swap the weights folder)."""
    with _lock:
        _models.clear()
        _maps.clear()


def _load_chorales() -> None:
    if _chorales:
        return
    splits = load_chorales()
    for split in ("test", "validation", "train"):
        for p in splits[split]:
            _chorales[f"{p.name.rsplit('.', 1)[0]} ({split})"] = p


def chorale_choices() -> list[str]:
    """Chorale labels, held-out (test) ones first: ``'bwv10.7 (test)'``."""
    with _lock:
        _load_chorales()
        return list(_chorales)


def chorale(label: Any) -> Piece:
    """The chorale of a label from :func:`chorale_choices`."""
    with _lock:
        _load_chorales()
        if not isinstance(label, str) or label not in _chorales:
            shown = repr(label) if len(repr(label)) < 40 else repr(label)[:37] + "..."
            raise gr.Error(f"Chorale must be one of the listed chorales, got {shown}: pick one "
                           "from the list.")  # fmt: skip
        return _chorales[label]


def read_upload(path: Any) -> Piece:
    """A piece from an uploaded file path; gr.Error with the reason when it is no music."""
    if isinstance(path, dict):  # the API's FileData payload
        path = path.get("path")
    if not isinstance(path, (str, Path)) or not str(path):
        raise gr.Error("The upload is not a file: upload a MIDI (.mid) or MusicXML (.mxl, "
                       ".musicxml) file.")  # fmt: skip
    p = Path(path)
    if not p.is_file():
        raise gr.Error("The uploaded file is gone: upload it again.")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise gr.Error(f"The file is {p.stat().st_size / 1e6:.1f} MB: upload one under "
                       f"{MAX_FILE_BYTES / 1e6:.0f} MB.")  # fmt: skip
    try:
        return read_piece(p)
    except ValueError as e:
        raise gr.Error(f"Cannot read {p.name}: {e}. Upload a MIDI or MusicXML file with "
                       "pitched notes.") from None  # fmt: skip


def attention(kind: str, tokens: Sequence[int]) -> NoteAttention:
    """Every layer's and head's attention of ``music/<kind>`` over ``tokens`` (cached)."""
    key = (kind, hashlib.sha1(np.asarray(tokens, dtype=np.int32).tobytes()).hexdigest())
    with _lock:
        if key in _maps:
            _maps.move_to_end(key)
            return _maps[key]
    m = model(kind)
    with _model_locks[kind]:  # recording switches the model's modules
        na = note_attention(m, tokens)
    with _lock:
        _maps[key] = na
        while len(_maps) > _CACHE_SIZE:
            _maps.popitem(last=False)
    return na


def roll(na: NoteAttention, note: int, layer: int, heads: Sequence[int], top_k: int,
         cutoff: float, upto: int | None = None, title: str = ""):  # fmt: skip
    """The piano roll (first ``upto`` notes) with arcs from ``note``; weights under ``cutoff``
    times the strongest are hidden. Returns the ``View``."""
    w = na.note_weights(note, layer, heads, upto)
    peak = float(np.delete(w, note).max(initial=0.0)) if len(w) > 1 else float(w.max())
    w = np.where(w >= cutoff * peak, w, 0.0).astype(np.float32)
    return piano_roll_arcs(w, na.layout(upto), note, top_k=top_k, title=title)


def note_at(view_data: dict, na: NoteAttention, x: float, y: float, size: tuple[int, int],
            upto: int | None = None) -> int | None:  # fmt: skip
    """The note under pixel (x, y) of a piano roll image of ``size`` (or the nearest one
    within two beats and three semitones); None when the click is off the notes."""
    geo = view_data.get("axes") or {}
    if not geo:
        return None
    W, H = size
    x0, y0, x1, y1 = geo["box"]
    fx = (x / W - x0) / (x1 - x0)
    fy = (1 - y / H - y0) / (y1 - y0)
    if not (0 <= fx <= 1 and 0 <= fy <= 1):
        return None
    t = geo["xlim"][0] + fx * (geo["xlim"][1] - geo["xlim"][0])
    pitch = geo["ylim"][0] + fy * (geo["ylim"][1] - geo["ylim"][0])
    lay = na.layout(upto)
    on, du, pi = np.asarray(lay.onsets), np.asarray(lay.durations), np.asarray(lay.pitches)
    hit = np.flatnonzero((on <= t) & (t <= on + du) & (pi <= pitch) & (pitch <= pi + 1))
    if hit.size:
        return int(hit[-1])
    dist = np.abs(on + du / 2 - t) / 2 + np.abs(pi + 0.5 - pitch) / 3
    j = int(dist.argmin()) if dist.size else -1
    return j if j >= 0 and dist[j] <= 1.0 else None


def midi_path(data: bytes, stem: str) -> str:
    """Write MIDI bytes to a fresh temporary file for download; return its path."""
    folder = Path(tempfile.mkdtemp(prefix="attnlab-music-"))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:60] or "music"
    path = folder / f"{safe}.mid"
    path.write_bytes(data)
    return str(path)
