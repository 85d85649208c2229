"""The PIL plotting canvas and the audio pictures drawn with it: ticks are round and inside
their range, data land on the pixels the axes say, envelopes and spans cover exactly what they
should, and the SVG export keeps every text."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from attnlab.apps.views.audio_plots import PREDICTED, TRUE, alignment_view, word_timeline
from attnlab.apps.views.canvas import Canvas, hex_rgb, nice_ticks


def _seed() -> int:
    return int(np.random.SeedSequence().entropy % 2**31)


def test_nice_ticks_are_round_evenly_spaced_and_inside():
    rng = np.random.default_rng(_seed())
    for _ in range(200):
        lo = float(rng.uniform(-1e3, 1e3)) * 10 ** float(rng.integers(-4, 3))
        hi = lo + float(rng.uniform(1e-3, 1e3)) * 10 ** float(rng.integers(-3, 3))
        most = int(rng.integers(3, 10))
        t = np.array(nice_ticks(lo, hi, most))
        assert 2 <= len(t) <= (most if most >= 6 else 2 * most), (lo, hi, most, t)
        span = hi - lo
        assert t.min() >= lo - 1e-9 * span and t.max() <= hi + 1e-9 * span
        step = np.diff(t)
        assert np.allclose(step, step[0], rtol=1e-6)
        mant = step[0] / 10 ** math.floor(math.log10(step[0]))
        assert any(abs(mant - m) < 1e-6 for m in (1, 2, 2.5, 5, 10)), step[0]
    assert nice_ticks(0.0, 1.0, 6) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(3.0, 3.0) == [3.0] and nice_ticks(float("nan"), 1.0) == []


def test_panel_maps_limits_to_its_edges_and_reversed_limits_flip():
    cv = Canvas(300, 200)
    ax = cv.panel((40, 20, 280, 180), (2.0, 6.0), (-1.0, 1.0))
    assert ax.px(2.0) == 40 and ax.px(6.0) == 280 and ax.px(4.0) == 160
    assert ax.py(-1.0) == 180 and ax.py(1.0) == 20
    down = cv.panel((40, 20, 280, 180), (0, 1), (9.5, -0.5))  # rows: 0 at the top
    assert down.py(-0.5) == 20 and down.py(9.5) == 180
    with pytest.raises(ValueError, match="too small"):
        cv.panel((10, 10, 12, 100), (0, 1), (0, 1))
    with pytest.raises(ValueError, match="40 x 40"):
        Canvas(20, 300)


def test_waveform_envelope_reaches_the_signal_extremes_in_every_column():
    rng = np.random.default_rng(_seed())
    amp = float(rng.uniform(0.2, 0.9))
    t = np.linspace(0, 1, 20000)
    x = amp * np.sin(2 * np.pi * float(rng.uniform(30, 60)) * t)
    cv = Canvas(400, 200)
    ax = cv.panel((0, 0, 400, 200), (0, 1), (-1, 1))
    ax.waveform(t, x, (0, 0, 0))
    ink = (cv.pixels == 0).all(-1)  # (rows, cols)
    assert ink.any(0).all()  # every column has ink
    rows = np.nonzero(ink.any(1))[0]
    assert abs(rows.min() - float(ax.py(amp))) <= 1.5
    assert abs(rows.max() - float(ax.py(-amp))) <= 1.5


def test_span_blends_only_its_columns_and_fill_under_follows_the_curve():
    cv = Canvas(200, 100)
    ax = cv.panel((0, 0, 200, 100), (0, 10), (0, 1))
    ax.span(2.0, 4.0, "#000000", 0.5)
    touched = (cv.pixels != 255).any(-1).any(0)
    assert np.nonzero(touched)[0].tolist() == list(range(40, 80))
    assert (cv.pixels[:, 40:80] == 128).all()  # half way from white to black
    cv2 = Canvas(200, 100)
    ax2 = cv2.panel((0, 0, 200, 100), (0, 10), (0, 1))
    xs = np.arange(10) + 0.5
    ys = np.linspace(0.1, 0.9, 10)
    ax2.fill_under(xs, ys, (0, 0, 0))
    height = (cv2.pixels == 0).all(-1).sum(0)  # filled rows per column
    for i, y in enumerate(ys):
        assert abs(height[20 * i + 10] - y * 100) <= 1.5


def test_svg_keeps_texts_and_colours():
    cv = Canvas(200, 120)
    ax = cv.panel((40, 20, 190, 90), (0, 1), (0, 1))
    ax.frame()
    ax.xaxis("time (s)")
    ax.yaxis("weight")
    cv.text(100, 5, "a <title> & more", 12, "#21918c", anchor="ma")
    view = cv.view("test", {})
    root = ET.fromstring(view.svg())
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert {"time (s)", "weight", "a <title> & more", "0.4"} <= set(texts)
    assert np.asarray(view.image).std() > 10


def _columns_with(img, colour) -> np.ndarray:
    arr = np.asarray(img).astype(int)
    near = (np.abs(arr - np.array(hex_rgb(colour))) <= 12).all(-1)
    return np.nonzero(near.sum(0) >= 20)[0]  # columns with a line of that colour


def test_word_timeline_draws_each_start_where_the_axis_says():
    rng = np.random.default_rng(_seed())
    sr = 16000
    wave = (rng.standard_normal(int(sr * 2.0)) * 0.1).astype(np.float32)
    starts = np.sort(rng.uniform(0.1, 1.8, 3))
    words = [(f"w{i}", float(s), float(s) + 0.15) for i, s in enumerate(starts)]
    truth = [(f"w{i}", float(s) - 0.05) for i, s in enumerate(starts)]
    view = word_timeline(wave, sr, words, truth, title="three words")
    assert view.image.size == (800, 280) and view.kind == "word_timeline"
    # panel: x from 12 to 788 px over 2.0 s
    for colour, times in ((PREDICTED, [w[1] for w in words]), (TRUE, [t[1] for t in truth])):
        cols = _columns_with(view.image, colour)
        for s in times:
            assert np.abs(cols - (12 + s / 2.0 * 776)).min() <= 2, (colour, s, cols)
    assert view.data["words"][0][0] == "w0" and len(view.data["true_starts"]) == 3
    with pytest.raises(ValueError, match="empty"):
        word_timeline(np.zeros(0, np.float32), sr, [])
    with pytest.raises(ValueError, match="sample_rate"):
        word_timeline(wave, 0, [])


def test_alignment_view_draws_the_path_over_the_matrix():
    rng = np.random.default_rng(_seed())
    n, t = int(rng.integers(3, 30)), int(rng.integers(20, 150))
    m = rng.standard_normal((n, t)).astype(np.float32)
    cols = np.sort(rng.integers(0, t, n))
    view = alignment_view(m, [f"t{i}" for i in range(n)], 0.02, path=(np.arange(n), cols),
                          title="heads")  # fmt: skip
    assert view.image.size == (800, 360)
    np.testing.assert_array_equal(view.data["matrix"], m)
    assert view.data["path"].shape == (2, n)
    arr = np.asarray(view.image).astype(int)
    orange = (np.abs(arr - np.array(hex_rgb("#D55E00"))) <= 12).all(-1)
    assert orange.sum() >= n  # the path is drawn
    labels = [e.text for e in ET.fromstring(view.svg()).iter("{http://www.w3.org/2000/svg}text")]
    assert "t0" in labels and "token predicted" in labels
    with pytest.raises(ValueError, match="labels"):
        alignment_view(m, ["x"], 0.02)
    with pytest.raises(ValueError, match="2-D"):
        alignment_view(m[0], ["x"], 0.02)
    with pytest.raises(ValueError, match="positive"):
        alignment_view(m, [f"t{i}" for i in range(n)], 0.0)
