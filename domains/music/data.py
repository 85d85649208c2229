"""Music data: the Bach chorales of music21's corpus (or any folder of MIDI/MusicXML files) as
event tokens, a fixed split by piece, a token cache on disk, and training windows with
transposition augmentation (Huang et al. 2018 augment their data the same way).

Split (by piece, fixed): files sorted by name; file i goes to ``test`` when i % 10 == 0, to
``validation`` when i % 10 == 1, else to ``train`` (80 / 10 / 10). No window of a held-out piece
is ever seen in training.

Cache: parsed chorales are kept as JSON under ``$ATTNLAB_MUSIC_CACHE`` (default
``~/.cache/attnlab/music``); parsing all of them with music21 takes minutes, reading the cache
well under a second.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from attnlab.core.lm import IGNORE

from .tokens import MAX_NOTES, Note, Piece, read_piece, transpose

__all__ = ["load_chorales", "load_folder", "chorale_paths", "split_of", "cache_dir", "IGNORE",
           "TokenWindows", "PieceWindows", "MUSIC_SUFFIXES", "CACHE_VERSION"]  # fmt: skip

MUSIC_SUFFIXES = (".mid", ".midi", ".mxl", ".musicxml", ".xml")
CACHE_VERSION = 1
SPLITS = ("train", "validation", "test")


def cache_dir() -> Path:
    """``$ATTNLAB_MUSIC_CACHE`` or ``~/.cache/attnlab/music``."""
    env = os.environ.get("ATTNLAB_MUSIC_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "attnlab" / "music"


def split_of(i: int) -> str:
    """The split of the i-th file in name order: test, validation, train, train, ..."""
    return "test" if i % 10 == 0 else "validation" if i % 10 == 1 else "train"


def chorale_paths() -> list[Path]:
    """The Bach chorale scores (.mxl, .xml) of music21's corpus, sorted by name."""
    from music21 import corpus

    paths = [Path(p) for p in corpus.getComposer("bach") if Path(p).suffix in (".mxl", ".xml")]
    return sorted(paths, key=lambda p: p.name)


def _to_json(p: Piece) -> dict:
    return {"name": p.name, "tempo": p.tempo, "dropped": p.dropped,
            "notes": [[n.start, n.pitch, n.end, n.velocity] for n in p.notes]}  # fmt: skip


def _from_json(d: dict) -> Piece:
    return Piece(tuple(Note(*n) for n in d["notes"]), d["tempo"], d["name"], d["dropped"])


def _read_all(paths: Sequence[Path], key: str, max_notes: int) -> tuple[list[Piece], list[str]]:
    """Pieces of ``paths`` through the cache file ``key``; unreadable files are reported."""
    folder = cache_dir()
    file = folder / f"{key}.json"
    if file.is_file():
        try:
            data = json.loads(file.read_text())
            if data.get("version") == CACHE_VERSION:
                return [_from_json(d) for d in data["pieces"]], data["skipped"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged cache is rebuilt
    pieces, skipped = [], []
    for path in paths:
        try:
            piece = read_piece(path, max_notes)
            pieces.append(Piece(piece.notes, piece.tempo, path.name, piece.dropped))
        except ValueError as e:
            skipped.append(f"{path.name}: {e}")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    data = {"version": CACHE_VERSION, "pieces": [_to_json(p) for p in pieces],
            "skipped": skipped}  # fmt: skip
    tmp.write_text(json.dumps(data))
    tmp.replace(file)
    return pieces, skipped


def _split(pieces: list[Piece]) -> dict[str, list[Piece]]:
    out: dict[str, list[Piece]] = {s: [] for s in SPLITS}
    for i, p in enumerate(sorted(pieces, key=lambda p: p.name)):
        out[split_of(i)].append(p)
    return out


def load_chorales(max_notes: int = MAX_NOTES) -> dict[str, list[Piece]]:
    """The Bach chorales as :class:`Piece` s, split by piece into train / validation / test
    (see the module docstring); parsed once, then read from the cache."""
    paths = chorale_paths()
    if not paths:
        raise RuntimeError("music21's corpus holds no Bach chorales (is music21 installed?)")
    key = f"chorales-v{CACHE_VERSION}-{len(paths)}-{max_notes}"
    pieces, _ = _read_all(paths, key, max_notes)
    return _split(pieces)


def load_folder(folder: str | os.PathLike, max_notes: int = MAX_NOTES,
                min_pieces: int = 3) -> dict[str, list[Piece]]:  # fmt: skip
    """Every MIDI/MusicXML file under ``folder`` (recursively), split like the chorales.
    Unreadable files are skipped; ValueError when fewer than ``min_pieces`` remain."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder of MIDI/MusicXML files")
    paths = sorted((p for p in root.rglob("*") if p.suffix.lower() in MUSIC_SUFFIXES
                    and p.is_file()), key=lambda p: str(p.relative_to(root)))  # fmt: skip
    if not paths:
        raise ValueError(f"{root}: no files ending in {', '.join(MUSIC_SUFFIXES)}")
    sig = hashlib.sha256()
    for p in paths:
        st = p.stat()
        sig.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    pieces, skipped = _read_all(paths, f"folder-{sig.hexdigest()[:16]}-{max_notes}", max_notes)
    if len(pieces) < min_pieces:
        why = "; ".join(skipped[:3])
        raise ValueError(f"{root}: {len(pieces)} readable pieces, at least {min_pieces} are "
                         f"needed for a split" + (f" ({why})" if why else ""))  # fmt: skip
    return _split(pieces)


def _window(tokens: list[int], seq_len: int) -> dict[str, Tensor]:
    """tokens[:-1] -> tokens[1:], padded to seq_len (padding is never scored)."""
    x = torch.zeros(seq_len, dtype=torch.long)
    y = torch.full((seq_len,), IGNORE, dtype=torch.long)
    n = min(len(tokens) - 1, seq_len)
    x[:n] = torch.tensor(tokens[:n])
    y[:n] = torch.tensor(tokens[1 : n + 1])
    return {"tokens": x, "targets": y}


class TokenWindows(Dataset):
    """``num`` random windows of ``seq_len + 1`` tokens from random pieces, each transposed by
    a random number of semitones in ``[-max_transpose, max_transpose]`` (kept within the MIDI
    range), seeded per item so that a run is repeatable."""

    def __init__(self, pieces: Sequence[Piece], seq_len: int, num: int, seed: int = 0,
                 max_transpose: int = 5) -> None:  # fmt: skip
        self.tokens = [p.tokens() for p in pieces]
        self.tokens = [t for t in self.tokens if len(t) >= 2]
        if not self.tokens:
            raise ValueError("no piece holds two tokens")
        self.ranges = []
        for p in pieces:
            pitches = [n.pitch for n in p.notes] or [60]
            self.ranges.append((min(pitches), max(pitches)))
        self.seq_len, self.num, self.seed, self.max_transpose = seq_len, num, seed, max_transpose
        weights = torch.tensor([float(len(t)) for t in self.tokens])
        self.weights = weights / weights.sum()

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        k = int(torch.multinomial(self.weights, 1, generator=g))
        toks = self.tokens[k]
        start = int(torch.randint(0, max(1, len(toks) - self.seq_len), (1,), generator=g))
        window = toks[start : start + self.seq_len + 1]
        lo, hi = self.ranges[k]
        m = self.max_transpose
        shift = int(torch.randint(max(-m, -lo), min(m, 127 - hi) + 1, (1,), generator=g))
        return _window(transpose(window, shift), self.seq_len)


class PieceWindows(Dataset):
    """Every piece cut into consecutive windows (held-out NLL: each token scored once, given
    the tokens before it in its window)."""

    def __init__(self, pieces: Sequence[Piece], seq_len: int) -> None:
        self.items = []
        for p in pieces:
            toks = p.tokens()
            for s in range(0, max(1, len(toks) - 1), seq_len):
                if len(toks) - s >= 2:
                    self.items.append(_window(toks[s : s + seq_len + 1], seq_len))
        if not self.items:
            raise ValueError("no piece holds two tokens")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return self.items[i]
