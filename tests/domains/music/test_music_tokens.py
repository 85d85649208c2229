"""Event tokens and MIDI files: round trips on random notes, random token streams and real
chorales; every refusal says why."""

from __future__ import annotations

import random
import struct

import pytest

from attnlab.domains.music import decode, encode
from attnlab.domains.music.tokens import (
    MAX_SHIFT,
    NOTE_OFF,
    TIME_SHIFT,
    VELOCITY,
    VOCAB_SIZE,
    Note,
    normalize_notes,
    note_positions,
    notes_to_tokens,
    read_midi,
    read_piece,
    token_name,
    tokens_to_notes,
    transpose,
    write_midi,
)


def random_notes(rng: random.Random, n: int) -> list[Note]:
    notes = []
    for _ in range(n):
        s = rng.randrange(0, 200)
        notes.append(Note(s, rng.randrange(128), s + rng.randrange(1, 80), rng.randrange(32)))
    return notes


def test_vocabulary_names_every_id_once():
    names = [token_name(t) for t in range(VOCAB_SIZE)]
    assert len(set(names)) == VOCAB_SIZE
    assert names[60] == "note_on_60" and names[NOTE_OFF + 60] == "note_off_60"
    assert names[TIME_SHIFT] == "time_shift_1" and names[VELOCITY - 1] == f"time_shift_{MAX_SHIFT}"
    with pytest.raises(ValueError, match="out of range"):
        token_name(VOCAB_SIZE)


@pytest.mark.parametrize("seed", range(20))
def test_notes_tokens_midi_tokens_round_trip(seed):
    rng = random.Random(seed)
    notes = normalize_notes(random_notes(rng, rng.randrange(1, 60)))
    tokens = notes_to_tokens(notes)
    assert tokens_to_notes(tokens) == notes
    midi = decode(tokens, tempo=rng.uniform(30, 300))
    assert midi[:4] == b"MThd"
    assert encode(midi) == tokens
    assert read_midi(midi).notes == notes


@pytest.mark.parametrize("seed", range(20))
def test_random_token_streams_reach_a_fixed_point(seed):
    """Any stream decodes; its MIDI encodes to the canonical stream of the same notes, which
    round-trips exactly."""
    rng = random.Random(100 + seed)
    stream = [rng.randrange(VOCAB_SIZE) for _ in range(rng.randrange(20, 400))]
    notes = tokens_to_notes(stream)
    if not notes:
        with pytest.raises(ValueError, match="no notes"):
            encode(decode(stream))
        return
    canon = encode(decode(stream))
    assert canon == notes_to_tokens(notes)
    assert encode(decode(canon)) == canon
    assert decode(canon) == decode(stream)


def test_note_positions_match_the_decoded_notes():
    rng = random.Random(7)
    tokens = notes_to_tokens(random_notes(rng, 40))
    pos = note_positions(tokens)
    notes = tokens_to_notes(tokens)
    assert sorted((p["start"], p["pitch"], p["end"]) for p in pos) == sorted(
        (n.start, n.pitch, n.end) for n in notes
    )
    for p in pos:
        assert tokens[p["on"]] == p["pitch"] and tokens[p["off"]] == NOTE_OFF + p["pitch"]


def test_unison_notes_are_merged_as_midi_would():
    notes = normalize_notes([Note(0, 60, 8), Note(0, 60, 4), Note(2, 60, 6)])
    assert notes == (Note(0, 60, 2), Note(2, 60, 6))


def test_transpose_moves_pitches_only_and_refuses_leaving_the_range():
    tokens = notes_to_tokens([Note(0, 60, 4), Note(4, 64, 8)])
    up = transpose(tokens, 3)
    assert [n.pitch for n in tokens_to_notes(up)] == [63, 67]
    assert [t for t in up if t >= TIME_SHIFT] == [t for t in tokens if t >= TIME_SHIFT]
    with pytest.raises(ValueError, match="out of 0..127"):
        transpose(tokens, 100)


def test_real_chorale_round_trips(chorale_path):
    piece = read_piece(chorale_path)
    tokens = piece.tokens()
    assert len(piece.notes) > 100
    assert encode(decode(tokens, piece.tempo)) == tokens
    import music21

    assert encode(music21.converter.parse(str(chorale_path))) == tokens


def _midi(track: bytes, fmt: int = 0, division: int = 480) -> bytes:
    return (b"MThd" + struct.pack(">IHHH", 6, fmt, 1, division) + b"MTrk"
            + struct.pack(">I", len(track)) + track)  # fmt: skip


def test_bad_files_are_refused_with_reasons(tmp_path):
    with pytest.raises(ValueError, match="not a MIDI file"):
        read_midi(b"RIFF....WAVEfmt ")
    drums = _midi(b"\x00\x99\x24\x64\x60\x89\x24\x00\x00\xff\x2f\x00")
    with pytest.raises(ValueError, match="drums only"):
        read_midi(drums)
    with pytest.raises(ValueError, match="no notes"):
        read_midi(_midi(b"\x00\xff\x2f\x00"))
    fast = _midi(b"\x00\xff\x51\x03\x00\x00\x10\x00\x90\x3c\x40\x60\x80\x3c\x00\x00\xff\x2f\x00")
    with pytest.raises(ValueError, match="tempo of"):
        read_midi(fast)
    with pytest.raises(ValueError, match="SMPTE"):
        read_midi(_midi(b"\x00\xff\x2f\x00", division=0xE728))
    with pytest.raises(ValueError, match="ends inside a track"):
        read_midi(_midi(b"\x00\x90\x3c"))
    empty = tmp_path / "empty.mid"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_piece(empty)
    text = tmp_path / "notes.txt"
    text.write_text("C D E")
    with pytest.raises(ValueError, match="not a MIDI"):
        read_piece(text)
    fake = tmp_path / "fake.mid"
    fake.write_text("hello")
    with pytest.raises(ValueError, match="not a MIDI file"):
        read_piece(fake)
    xml = tmp_path / "bad.musicxml"
    xml.write_text("<score-partwise><oops")
    with pytest.raises(ValueError, match="not a readable MusicXML"):
        read_piece(xml)
    with pytest.raises(TypeError):
        read_piece(12)
    with pytest.raises(ValueError, match="tempo"):
        decode([60, TIME_SHIFT, NOTE_OFF + 60], tempo=5000)


def test_thousands_of_notes_are_truncated_to_the_stated_limit():
    notes = [Note(i, 40 + i % 40, i + 2) for i in range(6000)]
    piece = read_midi(write_midi(notes), max_notes=4000)
    assert len(piece.notes) == 4000 and piece.dropped == 2000
    assert piece.notes == normalize_notes(notes)[:4000]
