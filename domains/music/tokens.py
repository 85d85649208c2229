"""Music as event tokens (the performance encoding of Oore et al. 2018, used by the Music
Transformer of Huang et al. 2018), and Standard MIDI files read and written without any
library.

Vocabulary (``VOCAB_SIZE`` = 320 ids):

* ``note_on_P``  (ids 0..127)   -- pitch P starts;
* ``note_off_P`` (ids 128..255) -- pitch P stops;
* ``time_shift_N`` (ids 256..287) -- time moves on by N = 1..32 grid steps;
* ``velocity_V`` (ids 288..319) -- the following note-ons get velocity bin V = 0..31.

Time lives on a grid of ``STEPS_PER_QUARTER`` = 4 steps per quarter note (sixteenths), so a
score (MusicXML) and a MIDI file of it give the same tokens; the tempo only matters when the
notes are played (:func:`decode` writes it into the MIDI file). A MIDI velocity v falls in bin
v // 4 and is written back as 4 * bin + 2, so tokens -> MIDI -> tokens is lossless.

Canonical order at each grid time: note-offs (by pitch), then a velocity token when the
velocity changes, then note-ons (by pitch). Two sounding notes of one pitch cannot be told apart
in MIDI, so a note that starts while the same pitch sounds ends the earlier one
(:func:`normalize_notes`).
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Note", "Piece", "STEPS_PER_QUARTER", "MAX_SHIFT", "VELOCITY_BINS", "VOCAB_SIZE",
    "NOTE_ON", "NOTE_OFF", "TIME_SHIFT", "VELOCITY", "MAX_NOTES", "TEMPO_RANGE",
    "token_name", "token_names", "normalize_notes", "notes_to_tokens", "tokens_to_notes",
    "encode", "decode", "read_piece", "read_midi", "write_midi", "transpose", "note_positions",
]  # fmt: skip

STEPS_PER_QUARTER = 4
MAX_SHIFT = 32
VELOCITY_BINS = 32
NOTE_ON, NOTE_OFF, TIME_SHIFT = 0, 128, 256
VELOCITY = TIME_SHIFT + MAX_SHIFT
VOCAB_SIZE = VELOCITY + VELOCITY_BINS
#: notes kept from one file; later ones are dropped (``Piece.dropped`` counts them)
MAX_NOTES = 4000
#: tempos (quarter notes per minute) a file may state
TEMPO_RANGE = (10.0, 600.0)
#: largest file read (bytes)
MAX_FILE_BYTES = 8 * 1024 * 1024
_TICKS = 480  # MIDI ticks per quarter note written by write_midi
_DRUMS = 9  # General MIDI percussion channel (channel 10)


@dataclass(frozen=True, order=True)
class Note:
    """A note on the grid: ``start`` and ``end`` in steps (end > start), MIDI ``pitch`` 0..127,
    ``velocity`` bin 0..31."""

    start: int
    pitch: int
    end: int
    velocity: int = 16

    @property
    def duration(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Piece:
    """A piece read from a file or a music21 stream.

    Attributes:
        notes: the notes on the grid, normalised (:func:`normalize_notes`).
        tempo: quarter notes per minute (the file's first tempo; 100 when it states none).
        name: where it came from.
        dropped: notes left out past ``MAX_NOTES``.
    """

    notes: tuple[Note, ...]
    tempo: float = 100.0
    name: str = ""
    dropped: int = 0
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def tokens(self) -> list[int]:
        return notes_to_tokens(self.notes)


# ------------------------------------------------------------------------------------------
# tokens
# ------------------------------------------------------------------------------------------
def token_name(t: int) -> str:
    """``note_on_60``, ``note_off_60``, ``time_shift_4``, ``velocity_16``."""
    t = int(t)
    if not 0 <= t < VOCAB_SIZE:
        raise ValueError(f"token {t} out of range [0, {VOCAB_SIZE})")
    if t < NOTE_OFF:
        return f"note_on_{t}"
    if t < TIME_SHIFT:
        return f"note_off_{t - NOTE_OFF}"
    if t < VELOCITY:
        return f"time_shift_{t - TIME_SHIFT + 1}"
    return f"velocity_{t - VELOCITY}"


def token_names(tokens: Iterable[int]) -> list[str]:
    return [token_name(t) for t in tokens]


def _check_tokens(tokens: Any) -> list[int]:
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Iterable):
        raise TypeError(f"tokens must be a sequence of ints, got {type(tokens).__name__}")
    out = []
    for t in tokens:
        if hasattr(t, "item"):
            t = t.item()
        if isinstance(t, bool) or not isinstance(t, int):
            raise TypeError(f"tokens must be ints, got {type(t).__name__}")
        if not 0 <= t < VOCAB_SIZE:
            raise ValueError(f"token {t} out of range [0, {VOCAB_SIZE})")
        out.append(t)
    return out


def normalize_notes(notes: Iterable[Note]) -> tuple[Note, ...]:
    """Sorted notes with at most one sounding note per pitch: a note starting while the same
    pitch sounds ends the earlier one there (of two starting together the longer stays);
    zero-length notes are dropped."""
    by_pitch: dict[int, list[Note]] = {}
    for n in notes:
        if not 0 <= n.pitch < 128 or not 0 <= n.velocity < VELOCITY_BINS or n.start < 0:
            raise ValueError(f"note out of range: {n}")
        if n.end > n.start:
            by_pitch.setdefault(n.pitch, []).append(n)
    out = []
    for group in by_pitch.values():
        group.sort(key=lambda n: (n.start, -n.end))
        prev: Note | None = None
        for n in group:
            if prev is not None:
                if n.start == prev.start:
                    continue  # a unison doubling: the longer note (first) stays
                if n.start < prev.end:
                    prev = Note(prev.start, prev.pitch, n.start, prev.velocity)
                out.append(prev)
            prev = n
        if prev is not None:
            out.append(prev)
    return tuple(sorted(out))


def notes_to_tokens(notes: Iterable[Note]) -> list[int]:
    """Canonical event tokens of ``notes`` (normalised first)."""
    events: dict[int, tuple[list[int], list[Note]]] = {}
    for n in normalize_notes(notes):
        events.setdefault(n.start, ([], []))[1].append(n)
        events.setdefault(n.end, ([], []))[0].append(n.pitch)
    tokens: list[int] = []
    now, vel = 0, None
    for t in sorted(events):
        offs, ons = events[t]
        gap = t - now
        while gap > 0:
            step = min(gap, MAX_SHIFT)
            tokens.append(TIME_SHIFT + step - 1)
            gap -= step
        now = t
        tokens.extend(NOTE_OFF + p for p in sorted(offs))
        for n in sorted(ons, key=lambda n: (n.velocity, n.pitch)):
            if n.velocity != vel:
                tokens.append(VELOCITY + n.velocity)
                vel = n.velocity
            tokens.append(NOTE_ON + n.pitch)
    return tokens


def tokens_to_notes(tokens: Iterable[int]) -> tuple[Note, ...]:
    """Notes of any token stream. A note-on of a sounding pitch restarts it; a note-off of a
    silent pitch is ignored; notes still sounding at the end stop at the last time (those of
    zero length are dropped). The default velocity bin before any velocity token is 16."""
    now, vel = 0, 16
    sounding: dict[int, tuple[int, int]] = {}
    notes: list[Note] = []
    for t in _check_tokens(tokens):
        if t < NOTE_OFF:
            if t in sounding:
                s, v = sounding.pop(t)
                notes.append(Note(s, t, now, v))
            sounding[t] = (now, vel)
        elif t < TIME_SHIFT:
            p = t - NOTE_OFF
            if p in sounding:
                s, v = sounding.pop(p)
                notes.append(Note(s, p, now, v))
        elif t < VELOCITY:
            now += t - TIME_SHIFT + 1
        else:
            vel = t - VELOCITY
    notes.extend(Note(s, p, now, v) for p, (s, v) in sounding.items())
    return normalize_notes(notes)


def note_positions(tokens: Sequence[int]) -> list[dict[str, int]]:
    """For each note of ``tokens`` (in token order of its note-on): its note-on index ``on``,
    the index of the token that ends it ``off`` (-1 if none), ``pitch``, ``start`` and ``end``
    steps. The same bookkeeping as :func:`tokens_to_notes`, kept per position."""
    now = 0
    sounding: dict[int, dict[str, int]] = {}
    out: list[dict[str, int]] = []
    for i, t in enumerate(_check_tokens(tokens)):
        if t < TIME_SHIFT:
            p = t % 128
            if p in sounding:
                n = sounding.pop(p)
                n["end"], n["off"] = now, i
            if t < NOTE_OFF:
                n = {"on": i, "off": -1, "pitch": p, "start": now, "end": -1}
                sounding[p] = n
                out.append(n)
        elif t < VELOCITY:
            now += t - TIME_SHIFT + 1
    for n in sounding.values():
        n["end"] = now
    return out


def transpose(tokens: Sequence[int], semitones: int) -> list[int]:
    """Tokens with every pitch moved by ``semitones``; ValueError if one leaves 0..127."""
    out = []
    for t in tokens:
        if t < TIME_SHIFT:
            p = t % 128 + semitones
            if not 0 <= p < 128:
                raise ValueError(f"transposing by {semitones} moves pitch {t % 128} out of 0..127")
            out.append(t - t % 128 + p)
        else:
            out.append(t)
    return out


# ------------------------------------------------------------------------------------------
# Standard MIDI files
# ------------------------------------------------------------------------------------------
def _varlen(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def write_midi(notes: Iterable[Note], tempo: float = 100.0, program: int = 0) -> bytes:
    """A format-0 MIDI file (480 ticks per quarter, channel 1) of grid notes."""
    lo, hi = TEMPO_RANGE
    if not lo <= float(tempo) <= hi:
        raise ValueError(f"tempo must be within {lo:g}..{hi:g} quarter notes per minute, "
                         f"got {tempo}")  # fmt: skip
    tick = _TICKS // STEPS_PER_QUARTER
    ev: list[tuple[int, int, bytes]] = []
    for n in normalize_notes(notes):
        ev.append((n.end * tick, 0, bytes([0x80, n.pitch, 0])))
        ev.append((n.start * tick, 1, bytes([0x90, n.pitch, 4 * n.velocity + 2])))
    ev.sort(key=lambda e: (e[0], e[1], e[2][1]))
    usec = round(60_000_000 / float(tempo))
    body = bytearray(b"\x00\xff\x51\x03" + usec.to_bytes(3, "big"))
    body += b"\x00" + bytes([0xC0, program & 0x7F])
    now = 0
    for t, _, msg in ev:
        body += _varlen(t - now) + msg
        now = t
    body += b"\x00\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, _TICKS)
    return header + b"MTrk" + struct.pack(">I", len(body)) + bytes(body)


def _read_varlen(data: bytes, i: int) -> tuple[int, int]:
    n = 0
    for _ in range(4):
        if i >= len(data):
            raise ValueError("the MIDI file ends inside a track")
        b = data[i]
        i += 1
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            return n, i
    raise ValueError("malformed MIDI file: a length field is longer than 4 bytes")


def _parse_track(data: bytes) -> tuple[list[tuple[int, int, int, int, int]], list[tuple[int, int]]]:
    """(note events (tick, kind 1 on / 0 off, channel, pitch, velocity), tempos (tick, usec))."""
    i, tick, status = 0, 0, 0
    notes, tempos = [], []
    while i < len(data):
        delta, i = _read_varlen(data, i)
        tick += delta
        if i >= len(data):
            raise ValueError("the MIDI file ends inside a track")
        b = data[i]
        if b == 0xFF:  # meta event
            if i + 1 >= len(data):
                raise ValueError("the MIDI file ends inside a track")
            kind = data[i + 1]
            length, i = _read_varlen(data, i + 2)
            if kind == 0x51 and length == 3:
                tempos.append((tick, int.from_bytes(data[i : i + 3], "big")))
            i += length
            if kind == 0x2F:
                break
            continue
        if b in (0xF0, 0xF7):  # sysex
            length, i = _read_varlen(data, i + 1)
            i += length
            continue
        if b & 0x80:
            status = b
            i += 1
        elif not status:
            raise ValueError("malformed MIDI file: data byte without a status byte")
        kind, ch = status & 0xF0, status & 0x0F
        size = 1 if kind in (0xC0, 0xD0) else 2
        if i + size > len(data):
            raise ValueError("the MIDI file ends inside a track")
        msg = data[i : i + size]
        i += size
        if kind == 0x90 and msg[1] > 0:
            notes.append((tick, 1, ch, msg[0] & 0x7F, msg[1] & 0x7F))
        elif kind == 0x80 or kind == 0x90:
            notes.append((tick, 0, ch, msg[0] & 0x7F, 0))
    return notes, tempos


def read_midi(data: bytes, name: str = "", max_notes: int = MAX_NOTES) -> Piece:
    """Notes of a Standard MIDI file (format 0 or 1), quantised to the grid; the percussion
    channel is left out. ValueError with the reason for anything else."""
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"MIDI data must be bytes, got {type(data).__name__}")
    if len(data) < 14 or data[:4] != b"MThd":
        raise ValueError("not a MIDI file (it does not start with 'MThd')")
    hlen, fmt, ntracks, division = struct.unpack(">IHHH", data[4:14])
    if fmt not in (0, 1):
        raise ValueError(f"MIDI format {fmt} is not supported (only formats 0 and 1)")
    if division & 0x8000:
        raise ValueError("MIDI files timed in SMPTE frames are not supported (only ticks "
                         "per quarter note)")  # fmt: skip
    if division == 0:
        raise ValueError("malformed MIDI file: 0 ticks per quarter note")
    i = 8 + hlen
    events, tempos = [], []
    for _ in range(ntracks):
        if i + 8 > len(data):
            break
        tag, length = data[i : i + 4], struct.unpack(">I", data[i + 4 : i + 8])[0]
        chunk = data[i + 8 : i + 8 + length]
        i += 8 + length
        if tag != b"MTrk":
            continue
        ev, te = _parse_track(chunk)
        events += ev
        tempos += te
    tempos.sort()
    for _, usec in tempos:
        qpm = 60_000_000 / max(usec, 1)
        lo, hi = TEMPO_RANGE
        if not lo <= qpm <= hi:
            raise ValueError(f"the file sets a tempo of {qpm:.4g} quarter notes per minute, "
                             f"outside {lo:g}..{hi:g}")  # fmt: skip
    drums = sum(1 for e in events if e[1] and e[2] == _DRUMS)
    pitched = [e for e in events if e[2] != _DRUMS]
    if not any(e[1] for e in pitched):
        if drums:
            raise ValueError("the MIDI file holds drums only (channel 10): there are no "
                             "pitched notes to read")  # fmt: skip
        raise ValueError("the MIDI file holds no notes")
    pitched.sort(key=lambda e: (e[0], e[1]))
    sounding: dict[tuple[int, int], list[tuple[int, int]]] = {}
    notes = []

    def q(tick: int) -> int:
        return round(tick * STEPS_PER_QUARTER / division)

    for tick, on, ch, pitch, vel in pitched:
        key = (ch, pitch)
        if on:
            sounding.setdefault(key, []).append((tick, vel))
        elif sounding.get(key):
            start, v = sounding[key].pop(0)
            s, e = q(start), q(tick)
            notes.append(Note(s, pitch, max(e, s + 1), min(v // 4, VELOCITY_BINS - 1)))
    end = max(e[0] for e in pitched)
    for (_, pitch), starts in sounding.items():
        for start, v in starts:
            s = q(start)
            notes.append(Note(s, pitch, max(q(end), s + 1), min(v // 4, VELOCITY_BINS - 1)))
    tempo = 60_000_000 / tempos[0][1] if tempos else 120.0
    return _piece(notes, tempo, name, max_notes, drums=drums)


def _piece(notes: list[Note], tempo: float, name: str, max_notes: int, **meta: Any) -> Piece:
    if not isinstance(max_notes, int) or max_notes < 1:
        raise ValueError(f"max_notes must be an int >= 1, got {max_notes!r}")
    notes = list(normalize_notes(notes))
    if not notes:
        raise ValueError("the file holds no notes")
    dropped = max(0, len(notes) - max_notes)
    notes = notes[:max_notes]
    return Piece(tuple(notes), float(tempo), name, dropped, meta)


# ------------------------------------------------------------------------------------------
# music21 streams and files
# ------------------------------------------------------------------------------------------
def _from_stream(stream: Any, name: str, max_notes: int) -> Piece:
    """Notes of a music21 stream (parts flattened; ties joined; grace notes left out)."""
    from music21 import tempo as m21tempo

    flat = stream.flatten()
    notes = []
    for el in flat.stripTies().notes:
        if el.duration.isGrace:
            continue
        s = round(float(el.offset) * STEPS_PER_QUARTER)
        e = round(float(el.offset + el.quarterLength) * STEPS_PER_QUARTER)
        vel = el.volume.velocity if el.volume.velocity is not None else 64
        for p in el.pitches:
            if 0 <= p.midi < 128:
                notes.append(Note(s, int(p.midi), max(e, s + 1), min(int(vel) // 4, 31)))
    marks = list(flat.getElementsByClass(m21tempo.MetronomeMark))
    tempo = 100.0
    if marks and marks[0].getQuarterBPM():
        tempo = float(marks[0].getQuarterBPM())
        lo, hi = TEMPO_RANGE
        if not lo <= tempo <= hi:
            raise ValueError(f"the score sets a tempo of {tempo:.4g} quarter notes per minute, "
                             f"outside {lo:g}..{hi:g}")  # fmt: skip
    if not notes:
        raise ValueError("the score holds no notes")
    return _piece(notes, tempo, name, max_notes)


def read_piece(source: Any, max_notes: int = MAX_NOTES) -> Piece:
    """A :class:`Piece` from a MIDI or MusicXML (.mxl, .musicxml, .xml) file path, a MIDI
    file's bytes, or a music21 stream. ValueError with the reason when it is no such music."""
    if isinstance(source, (bytes, bytearray)):
        return read_midi(bytes(source), max_notes=max_notes)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        size = path.stat().st_size
        if size == 0:
            raise ValueError(f"{path.name}: the file is empty")
        if size > MAX_FILE_BYTES:
            raise ValueError(f"{path.name}: {size / 1e6:.1f} MB is over the "
                             f"{MAX_FILE_BYTES / 1e6:.0f} MB limit")  # fmt: skip
        head = path.read_bytes()[:4]
        if head == b"MThd":
            return read_midi(path.read_bytes(), path.name, max_notes)
        if path.suffix.lower() in (".mid", ".midi"):
            raise ValueError(f"{path.name}: not a MIDI file (it does not start with 'MThd')")
        if path.suffix.lower() not in (".mxl", ".musicxml", ".xml"):
            raise ValueError(f"{path.name}: not a MIDI (.mid) or MusicXML (.mxl, .musicxml, "
                             ".xml) file")  # fmt: skip
        import music21

        try:
            stream = music21.converter.parse(str(path), format="musicxml")
        except Exception as e:  # music21 raises many kinds on bad files
            raise ValueError(f"{path.name}: not a readable MusicXML file "
                             f"({type(e).__name__})") from None  # fmt: skip
        return _from_stream(stream, path.name, max_notes)
    if hasattr(source, "flatten") and hasattr(source, "recurse"):
        return _from_stream(source, str(getattr(source, "id", "")), max_notes)
    raise TypeError(f"expected a file path, MIDI bytes or a music21 stream, "
                    f"got {type(source).__name__}")  # fmt: skip


def encode(source: Any, max_notes: int = MAX_NOTES) -> list[int]:
    """Event tokens of a MIDI/MusicXML file, MIDI bytes, a music21 stream or a list of
    :class:`Note`. Files of more than ``max_notes`` notes keep their first ``max_notes``."""
    if isinstance(source, (list, tuple)) and all(isinstance(n, Note) for n in source):
        return notes_to_tokens(list(source)[:max_notes] if len(source) > max_notes else source)
    return read_piece(source, max_notes).tokens()


def decode(tokens: Iterable[int], tempo: float = 100.0, program: int = 0) -> bytes:
    """The MIDI file (bytes) of event tokens, at ``tempo`` quarter notes per minute."""
    return write_midi(tokens_to_notes(tokens), tempo, program)


def midi_file(tokens: Iterable[int], tempo: float = 100.0) -> io.BytesIO:
    """:func:`decode` as a file object."""
    return io.BytesIO(decode(tokens, tempo))
