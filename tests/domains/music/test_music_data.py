"""Chorales and user folders: a fixed split by piece, the token cache on disk, training windows
with transposition that keep every note in range, held-out windows that score each token once."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab.domains.music import decode, load_chorales
from attnlab.domains.music.data import (
    IGNORE,
    PieceWindows,
    TokenWindows,
    cache_dir,
    chorale_paths,
    load_folder,
    split_of,
)
from attnlab.domains.music.tokens import NOTE_OFF, Note, notes_to_tokens, tokens_to_notes


@pytest.fixture(scope="module")
def chorales():
    return load_chorales()


def test_chorales_split_by_piece_as_stated(chorales):
    names = sorted(p.name for p in chorale_paths())
    assert len(names) >= 400
    for split, pieces in chorales.items():
        assert pieces, split
        for p in pieces:
            assert split_of(names.index(p.name)) == split
    sets = [{p.name for p in v} for v in chorales.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(map(len, sets)) == len(names)
    assert (len(chorales["train"]), len(chorales["test"])) == (328, 41)


def test_folder_of_midi_is_read_split_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_MUSIC_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "tunes"
    (folder / "sub").mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i in range(12):
        notes = [
            Note(2 * j, 50 + int(torch.randint(0, 24, (1,), generator=g)), 2 * j + 2)
            for j in range(20)
        ]
        where = folder / "sub" if i % 2 else folder
        (where / f"t{i:02d}.mid").write_bytes(decode(notes_to_tokens(notes)))
    (folder / "junk.mid").write_bytes(b"junk")
    (folder / "readme.txt").write_text("not music")
    data = load_folder(folder)
    assert sum(map(len, data.values())) == 12 and len(data["test"]) == 2
    files = list((tmp_path / "cache").glob("folder-*.json"))
    assert len(files) == 1 and cache_dir() == tmp_path / "cache"
    cached = json.loads(files[0].read_text())
    assert any("junk.mid" in s for s in cached["skipped"])
    again = load_folder(folder)
    assert [p.notes for p in again["train"]] == [p.notes for p in data["train"]]
    with pytest.raises(ValueError, match="not a folder"):
        load_folder(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no files ending"):
        load_folder(empty)


def test_training_windows_transpose_within_range(chorales):
    pieces = chorales["train"][:20]
    data = TokenWindows(pieces, 64, 200, seed=1, max_transpose=6)
    shifts = set()
    for i in range(200):
        item = data[i]
        x, y = item["tokens"], item["targets"]
        assert x.shape == y.shape == (64,)
        scored = y != IGNORE
        assert torch.equal(x[1:][scored[:-1]], y[:-1][scored[:-1]])  # y is x shifted by one
        pitches = [int(t) % 128 for t in x if t < 2 * NOTE_OFF]
        assert all(0 <= p < 128 for p in pitches)
        shifts.add(tuple(pitches[:3]))
    assert torch.equal(data[5]["tokens"], TokenWindows(pieces, 64, 200, 1, 6)[5]["tokens"])
    assert len(shifts) > 50  # windows and transpositions vary


def test_held_out_windows_score_every_token_once(chorales):
    pieces = chorales["test"][:4]
    data = PieceWindows(pieces, 100)
    scored = sum(int((data[i]["targets"] != IGNORE).sum()) for i in range(len(data)))
    assert scored == sum(len(p.tokens()) - 1 for p in pieces)
    first = pieces[0].tokens()
    assert data[0]["tokens"].tolist() == first[:100]
    assert tokens_to_notes(first) == pieces[0].notes
