"""Music demo handlers, headless: the piano roll holds the piece's notes, a click finds the note
under it, the arcs follow the note's attention row, both models continue the same prime and the
generated MIDI holds the prime's notes; and every handler answers any form value with a result
or a gr.Error that says something.

The models are the shipped ``music/relative`` and ``music/absolute``; where this checkout does
not ship them, untrained ones of the same architecture stand in.
"""

from __future__ import annotations

import struct

import gradio as gr
import numpy as np
import pytest
import torch
from handler_fuzz import refusals, silent_components
from PIL import Image

from attnlab.apps import music as M
from attnlab.apps import music_lab as lab
from attnlab.apps import suite
from attnlab.core import registry
from attnlab.domains.music import encode
from attnlab.domains.music.tokens import notes_to_tokens, tokens_to_notes

pytestmark = pytest.mark.timeout(240)
NEEDED = ("music/relative", "music/absolute")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", autouse=True)
def music_weights(tmp_path_factory):
    """The shipped weights, or untrained stand-ins in a temporary weights folder."""
    lab.forget()
    if all(n in registry.list_weights() for n in NEEDED):
        yield True
        return
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    for kind in ("relative", "absolute"):
        m = registry.create(f"music_{kind}")
        registry.save_weights(m, f"music/{kind}", {"recipe": f"music/{kind}"}, root=root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTNLAB_WEIGHTS", str(root))
        yield False
    lab.forget()


@pytest.fixture(scope="module")
def chorale():
    return lab.chorale_choices()[0]


@pytest.fixture(scope="module")
def loaded(chorale):
    return M.load_piece(chorale, None, "relative", 192)


@pytest.fixture(scope="module")
def generated(loaded):
    return M.generate_pair(loaded[3], 64, 48, 1.0, 0, 0.95, 3)


def _refusal(fn, *args):
    with pytest.raises(gr.Error) as e:
        fn(*args)
    assert str(e.value.message).strip()
    return str(e.value.message)


class Click:
    def __init__(self, x, y):
        self.index = [x, y]


# ------------------------------------------------------------------------------------------
# good input
# ------------------------------------------------------------------------------------------
def test_loading_a_chorale_draws_its_notes_and_plays_them(loaded, chorale):
    image, info, (sr, audio), state, slider = loaded
    piece = lab.chorale(chorale)
    tokens = piece.tokens()[:192]
    assert state["tokens"] == tokens and state["kind"] == "relative"
    n_notes = len(lab.attention("relative", tokens).notes)
    assert slider["maximum"] == n_notes - 1
    assert isinstance(image, Image.Image) and image.width >= 800
    assert f"{n_notes} notes in 192 events" in info and "first 192" in info
    assert sr == 22050 and audio.dtype == np.int16 and np.abs(audio).max() > 1000
    last = max(n.end for n in tokens_to_notes(tokens))
    seconds = last / 4 * 60 / piece.tempo
    assert abs(len(audio) / sr - seconds) < 0.5


def test_arcs_follow_the_notes_attention_row(loaded):
    state = loaded[3]
    na = lab.attention("relative", state["tokens"])
    note = len(na.notes) // 2
    view = lab.roll(na, note, 1, [0, 2], 5, 0.0)
    row = na.maps[1, [0, 2], na.notes[note]["on"]].mean(0)
    expect = [row[n["on"]] + (row[n["off"]] if n["off"] >= 0 else 0) for n in na.notes]
    np.testing.assert_allclose(view.data["note_weights"], np.array(expect), rtol=1e-5,
                               atol=1e-7)  # fmt: skip
    strongest = sorted(((float(w), j) for j, w in enumerate(expect) if j != note), reverse=True)
    assert [j for j, _ in view.data["keys"]] == [j for _, j in strongest[:5]]
    cut = lab.roll(na, note, 1, [0, 2], 64, 0.9)
    kept = [float(w) for j, w in enumerate(expect) if j != note]
    assert len(cut.data["keys"]) == sum(w >= 0.9 * max(kept) for w in kept)


def test_a_click_on_a_note_selects_it(loaded):
    state = dict(loaded[3])
    na = lab.attention("relative", state["tokens"])
    _, _, state = M.note_view(state, 0, 0, ["0"], 3, 0.0)
    for j in (3, len(na.notes) - 2, len(na.notes) // 2):
        # the click is read against the drawing the state remembers (the last one shown)
        geo, (W, H) = state["view"]["axes"], state["view"]["size"]
        x0, y0, x1, y1 = geo["box"]
        n = na.notes[j]
        t, p = (n["start"] + n["end"]) / 8, n["pitch"] + 0.5
        fx = (t - geo["xlim"][0]) / (geo["xlim"][1] - geo["xlim"][0])
        fy = (p - geo["ylim"][0]) / (geo["ylim"][1] - geo["ylim"][0])
        x, y = (x0 + fx * (x1 - x0)) * W, (1 - (y0 + fy * (y1 - y0))) * H
        image, info, note, state = M.click_note(state, 0, ["0"], 3, 0.0, Click(x, y))
        hit = na.notes[note]
        assert (hit["pitch"], hit["start"]) == (n["pitch"], n["start"])
        assert f"Note {note} attends" in info and image.size == (W, H)
    assert "No note there" in _refusal(M.click_note, state, 0, ["0"], 3, 0.0, Click(2, 2))


def test_uploaded_midi_is_read(tmp_path):
    from attnlab.domains.music import decode
    from attnlab.domains.music.tokens import Note

    notes = [Note(4 * i, 60 + (i % 5), 4 * i + 3) for i in range(30)]
    path = tmp_path / "tune.mid"
    path.write_bytes(decode(notes_to_tokens(notes), tempo=90))
    image, info, _, state, _ = M.load_piece(None, str(path), "absolute", 512)
    assert state["tokens"] == encode(str(path)) and state["tempo"] == pytest.approx(90, abs=0.01)
    assert "30 notes" in info and state["kind"] == "absolute"


def test_both_models_continue_the_same_prime(generated, loaded):
    info, rel_audio, abs_audio, rel_midi, abs_midi, out, slider = generated
    prime = loaded[3]["tokens"][:64]
    for kind, midi in (("relative", rel_midi), ("absolute", abs_midi)):
        toks = out[kind]
        assert toks[:64] == prime and len(toks) == 64 + 48
        assert encode(open(midi, "rb").read()) == notes_to_tokens(tokens_to_notes(toks))
        assert f"music/{kind}:" in info
    assert rel_audio[1].size > 0 and abs_audio[1].size > 0
    assert slider["maximum"] == max(len(out["relative_new"]), len(out["absolute_new"]), 1)
    again = M.generate_pair(loaded[3], 64, 48, 1.0, 0, 0.95, 3)[5]
    assert again["relative"] == out["relative"] and again["absolute"] == out["absolute"]


def test_stepping_shows_the_notes_up_to_the_step(generated):
    out = generated[5]
    rel, ab, info = M.generation_step(out, 1, 0, ["0", "1"], 6, 0.0)
    assert isinstance(rel, Image.Image) or out["relative_new"] == []
    assert "of the note weight on the prime" in info or "generated no note" in info
    if len(out["relative_new"]) >= 2:
        a = np.asarray(M.generation_step(out, 1, 0, ["0"], 6, 0.0)[0])
        b = np.asarray(M.generation_step(out, 2, 0, ["0"], 6, 0.0)[0])
        assert a.shape == b.shape and not np.array_equal(a, b)


def test_build_names_every_listener_and_keeps_generation_on_its_own_queue():
    demo = M.build()
    fns = list(demo.fns.values())
    assert fns and all(f.api_name for f in fns)
    by_api = {f.api_name: f.concurrency_id for f in fns}
    assert by_api["music_generate"] == "music_generate"
    quick = {by_api[a] for a in ("music_load", "music_note", "music_click", "music_heads")}
    assert quick == {"music_view"}
    assert "music" in suite.available_demos()
    assert suite.upload_limit("music") == 8 * 2**20  # launch() caps uploads with it


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
BAD = [
    None,
    "",
    "abc",
    -1,
    10**9,
    float("nan"),
    float("inf"),
    2.5,
    True,
    [],
    {},
    ["0"],
    {"a": 1},
    "x" * 7000,
]


def test_every_handler_answers_any_value(loaded, generated, chorale):
    state, out = loaded[3], generated[5]
    handlers = {
        "load_piece": (M.load_piece, [chorale, None, "relative", 64, 0, 0, ["0"], 3, 0.0]),
        "note_view": (M.note_view, [state, 2, 0, ["0"], 3, 0.0]),
        "click_note": (M.click_note, [state, 0, ["0"], 3, 0.0, Click(450, 200)]),
        "generate_pair": (M.generate_pair, [state, 16, 16, 1.0, 0, 0.9, 0]),
        "generation_step": (M.generation_step, [out, 1, 0, ["0"], 3, 0.0]),
    }
    skip = ("build", "CONCURRENCY", "MAX_FILE_SIZE")
    assert set(handlers) >= {n for n in M.__all__ if n not in skip}
    refused = refusals(
        handlers, BAD,
        substitute=lambda name, pos, bad: Click(bad, bad) if (name, pos) == ("click_note", 5)
        else bad,
        # a click off the notes is a sentence too
        good_may_refuse=lambda name, e: name == "click_note" and "No note" in e.message,
    )  # fmt: skip
    assert refused > 150


def _midi(track: bytes) -> bytes:
    return (b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk"
            + struct.pack(">I", len(track)) + track)  # fmt: skip


@pytest.mark.parametrize("content, name, words", [
    (b"", "empty.mid", "empty"),
    (b"not music at all", "a.mid", "not a MIDI file"),
    (b"GIF89a", "pic.gif", "not a MIDI (.mid) or MusicXML"),
    (_midi(b"\x00\x99\x24\x64\x60\x89\x24\x00\x00\xff\x2f\x00"), "drums.mid", "drums only"),
    (_midi(b"\x00\xff\x51\x03\x00\x00\x01\x00\x90\x3c\x40\x60\x80\x3c\x00\x00\xff\x2f\x00"),
     "fast.mid", "tempo of"),
    (b"<score-partwise><part", "bad.musicxml", "not a readable MusicXML"),
])  # fmt: skip
def test_bad_uploads_are_refused_with_the_reason(tmp_path, content, name, words):
    path = tmp_path / name
    path.write_bytes(content)
    msg = _refusal(M.load_piece, None, str(path), "relative", 128)
    assert words in msg and "pload" in msg


@pytest.mark.parametrize("fn, args, words", [
    (M.note_view, [None, 0, 0, ["0"], 3, 0.0], "Load a piece first"),
    (M.generate_pair, [None, 16, 16, 1.0, 0, 0.9, 0], "Load a piece first"),
    (M.generation_step, [None, 1, 0, ["0"], 3, 0.0], "Generate a continuation first"),
    (M.load_piece, ["bwv0 (test)", None, "relative", 64], "Chorale must be one of"),
    (M.load_piece, [None, None, "relative", 5000], "Events read must be from 16 to 1024"),
    (M.generate_pair, [{"tokens": [60]}, 16, 10**6, 1.0, 0, 0.9, 0], "New events"),
])  # fmt: skip
def test_refusals_say_what_to_change(fn, args, words):
    assert words in _refusal(fn, *args)


def test_heads_none_ticked_is_refused(loaded):
    assert "tick at least one head" in _refusal(M.note_view, loaded[3], 0, 0, [], 3, 0.0)


def test_missing_weights_are_a_sentence(monkeypatch, tmp_path, chorale):
    monkeypatch.setenv("ATTNLAB_WEIGHTS", str(tmp_path))
    lab.forget()
    try:
        msg = _refusal(M.load_piece, chorale, None, "absolute", 64)
        assert "music/absolute" in msg and "attnlab train" in msg
    finally:
        lab.forget()


def test_components_refuse_malformed_payloads_with_a_sentence():
    page = M.build()
    silent = silent_components(page, skip=("State", "File"))
    assert not silent, silent[:10]
