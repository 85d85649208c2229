"""Tests for attnlab.core.layout: coordinate maps round-trip and preserve attention mass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnlab.core.layout import (
    NoteLayout,
    PatchLayout,
    SpectrogramLayout,
    TextLayout,
    TokenLayout,
)


def test_token_layout_prefix_split_and_labels():
    lay = TokenLayout(length=6, num_prefix=2)
    assert lay.labels() == ["cls", "reg1", "0", "1", "2", "3"]
    pre, rest = lay.split_prefix(torch.arange(6.0))
    np.testing.assert_array_equal(pre, [0, 1])
    np.testing.assert_array_equal(rest, [2, 3, 4, 5])
    with pytest.raises(ValueError, match="num_prefix"):
        TokenLayout(length=2, num_prefix=3)
    with pytest.raises(ValueError, match="weights"):
        lay.split_prefix(np.zeros(5))
    with pytest.raises(TypeError, match="weights"):
        lay.split_prefix("abc")


@pytest.mark.parametrize("num_prefix,grid", [(0, (4, 4)), (1, (3, 5)), (5, (7, 2))])
def test_patch_layout_round_trip(num_prefix, grid):
    lay = PatchLayout.create(grid, patch_size=(8, 16), num_prefix=num_prefix)
    assert len(lay) == num_prefix + grid[0] * grid[1]
    rng = np.random.default_rng(0)
    w = rng.random((3, len(lay))).astype(np.float32)  # 3 query rows
    g = lay.to_grid(w)
    assert g.shape == (3, *grid)
    back = lay.from_grid(g, prefix=w[:, :num_prefix])
    np.testing.assert_array_equal(back, w)
    for i in range(num_prefix, len(lay)):
        r, c = lay.position(i)
        assert lay.index(r, c) == i
        assert g[0, r, c] == w[0, i]
        x0, y0, x1, y1 = lay.box(i)
        assert (x0, y0, x1 - x0, y1 - y0) == (c * 16, r * 8, 16, 8)
    assert lay.pixel_size == (grid[0] * 8, grid[1] * 16)


def test_patch_layout_prefix_names_and_errors():
    lay = PatchLayout.create((2, 3), 4, num_prefix=2, prefix_names=("cls", "dist"))
    assert lay.labels()[:3] == ["cls", "dist", "r0c0"]
    assert lay.describe(7) == {"index": 7, "kind": "patch", "label": "r1c2", "row": 1,
                               "col": 2, "box": (8, 4, 12, 8)}  # fmt: skip
    with pytest.raises(ValueError, match="prefix"):
        lay.position(1)
    with pytest.raises(IndexError):
        lay.index(2, 0)
    with pytest.raises(ValueError, match="grid"):
        lay.from_grid(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="prefix_names"):
        PatchLayout.create((2, 2), num_prefix=1, prefix_names=("a", "b"))
    # Overlapping patches: stride smaller than the patch.
    ov = PatchLayout.create((3, 3), 16, stride=10)
    assert ov.box(ov.index(2, 2)) == (20, 20, 36, 36)
    assert ov.pixel_size == (36, 36)


def test_text_layout_spans_and_char_weights():
    text = "Attention isn't all, you need!"
    toks = ["[CLS]", "attention", "isn", "'", "t", "all", ",", "you", "need", "!", "[SEP]"]
    lay = TextLayout.from_tokens(toks, text, num_prefix=1)
    for tok, span in zip(toks, lay.spans, strict=True):
        if span is None:
            assert tok.startswith("[")
        else:
            assert text[span[0] : span[1]].lower() == tok.lower()
    for i, span in enumerate(lay.spans):
        if span is not None:
            assert lay.token_at_char(span[0]) == i
    w = np.arange(len(toks), dtype=np.float32)
    cw = lay.char_weights(w)
    assert cw.shape == (len(text),)
    assert cw[0] == 1.0 and cw[text.index("need")] == 8.0 and cw[text.index(" you")] == 0.0
    wp = TextLayout.from_tokens(["play", "##ing", "\u2581fast"], "playing fast")
    assert wp.spans == ((0, 4), (4, 7), (8, 12))
    with pytest.raises(ValueError, match="tokens"):
        TextLayout(length=2, tokens=("a",))


def test_spectrogram_layout_overlapping_strides_preserve_mass():
    # AST-like: 16-frame tokens every 10 frames, 4 frequency bands of 32 bins, 2 prefix tokens.
    bands = tuple((i * 32, i * 32 + 32) for i in range(4))
    lay = SpectrogramLayout.create(
        num_frames=128, sample_rate=16000, hop=160, win=400, frames_per_token=16,
        frame_stride=10, band_bins=bands, num_prefix=2,
    )  # fmt: skip
    steps = (128 - 16) // 10 + 1
    assert lay.num_steps == steps and len(lay) == 2 + 4 * steps
    rng = np.random.default_rng(1)
    w = torch.softmax(torch.tensor(rng.normal(size=(5, len(lay)))), -1)
    total = w[:, 2:].sum(-1).numpy()
    prof = lay.time_profile(w)
    assert prof.shape == (5, 128)
    np.testing.assert_allclose(prof.sum(-1), total, rtol=1e-5)
    mass = lay.cell_map(w, mode="mass")
    assert mass.shape == (5, 128, 128)
    np.testing.assert_allclose(mass.sum((-2, -1)), total, rtol=1e-5)
    # "mean" of a constant weight is that constant wherever a token covers the cell.
    const = lay.cell_map(np.full(len(lay), 0.25), mode="mean")
    covered = slice(0, (steps - 1) * 10 + 16)
    np.testing.assert_allclose(const[:, covered], 0.25)
    assert (const[:, (steps - 1) * 10 + 16 :] == 0).all()
    # Token 2 + 4*3 + 1 = step 3, band 1: frames 30..45, bins 32..63, seconds from hop/win.
    i = 2 + 4 * 3 + 1
    assert lay.frames(i) == (30, 46)
    assert lay.seconds(i) == pytest.approx((30 * 160 / 16000, (45 * 160 + 400) / 16000))
    assert lay.describe(i)["bins"] == (32, 64)


def test_spectrogram_layout_time_only():
    lay = SpectrogramLayout.create(num_frames=100, frames_per_token=2)  # Whisper-like stride 2
    assert len(lay) == 50
    g = lay.to_grid(np.arange(50.0))
    assert g.shape == (50, 1)
    prof = lay.time_profile(np.eye(50)[7])
    np.testing.assert_allclose(prof[14:16], [0.5, 0.5])
    assert prof.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="frames"):
        SpectrogramLayout.create(num_frames=1, frames_per_token=2)
    with pytest.raises(ValueError, match="mode"):
        lay.cell_map(np.zeros(50), mode="max")


def test_note_layout_round_trip():
    onsets, pitches, durs = [0.0, 0.5, 1.0, 1.0], [60, 64, -1, 67], [0.5, 0.5, 0.0, 1.0]
    lay = NoteLayout.create(torch.tensor(onsets), pitches, np.array(durs), num_prefix=1)
    assert len(lay) == 5
    assert [lay.note(i) for i in range(1, 5)] == list(zip(onsets, pitches, durs, strict=True))
    assert lay.labels() == ["cls", "C4", "E4", "event", "G4"]
    assert lay.describe(3)["kind"] == "event"
    np.testing.assert_array_equal(lay.to_notes(np.arange(5.0)), [1, 2, 3, 4])
    with pytest.raises(ValueError, match="pitches"):
        NoteLayout.create([0.0], [60, 61], [1.0])
    with pytest.raises(ValueError, match="prefix"):
        lay.note(0)
