"""Tests for attnlab.apps.views.head_gallery: one cell per head, each in its behaviour's
colour, readable at 1 x 1 and 12 x 12; the HTML table; and the gallery drawn from scores of
a model whose heads are known."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from head_patterns import CLS, EXPECT, PATTERNS, SEP, VOCAB, PatternModel, batch, run

from attnlab.apps.views.head_gallery import (
    BEHAVIOUR_COLORS,
    behaviour_color,
    head_gallery,
    head_gallery_html,
)
from attnlab.domains.text.heads import score_heads

NAMES = list(BEHAVIOUR_COLORS)


def _maps(layers: int, heads: int, L: int = 10, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(layers, heads, L, L, generator=g) * 2, -1).numpy()


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])


def _strip_colour(arr: np.ndarray, cell: dict) -> np.ndarray:
    """The colour of a label strip, sampled at its left end (away from the centred text)."""
    x0, y0, x1, y1 = cell["strip"]
    return arr[y0 + 1 : y1, x0 + 1 : x0 + 3].reshape(-1, 3)


@pytest.mark.parametrize("layers, heads", [(1, 1), (12, 12)])
def test_one_cell_per_head_in_its_behaviour_colour(layers, heads):
    labels = [[NAMES[(i * heads + h) % len(NAMES)] for h in range(heads)] for i in range(layers)]
    scores = np.linspace(0, 1, layers * heads).reshape(layers, heads)
    view = head_gallery(_maps(layers, heads), labels, scores)
    arr = np.asarray(view.image.convert("RGB"))
    cells = view.data["cells"]
    assert len(cells) == layers * heads and view.kind == "head_gallery"
    assert {(c["layer"], c["head"]) for c in cells} == {
        (i, h) for i in range(layers) for h in range(heads)
    }
    for c in cells:
        got = _strip_colour(arr, c)
        np.testing.assert_array_equal(
            got, np.broadcast_to(_rgb(behaviour_color(c["label"])), got.shape)
        )
    # cells do not overlap and lie inside the image
    boxes = [c["box"] for c in cells]
    assert all(0 <= b[0] < b[2] < arr.shape[1] and 0 <= b[1] < b[3] < arr.shape[0] for b in boxes)
    for a in boxes:
        for b in boxes:
            if a is not b:
                assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]
    # readable: thumbnails at least 64 px, legend width at least 460 px even for one head
    assert cells[0]["box"][2] - cells[0]["box"][0] >= 64 and arr.shape[1] >= 460


def test_strip_colours_differ_by_label_and_text_is_drawn():
    labels = [["previous-token", "sink", "broad", "mixed"]]
    view = head_gallery(_maps(1, 4), labels, [[0.9, 0.8, 0.7, 0.3]])
    arr = np.asarray(view.image)
    colours = [tuple(_strip_colour(arr, c)[0]) for c in view.data["cells"]]
    assert len(set(colours)) == 4
    for c in view.data["cells"]:  # the strip's centre carries text in a contrasting ink
        x0, y0, x1, y1 = c["strip"]
        mid = arr[y0:y1, (x0 + x1) // 2 - 10 : (x0 + x1) // 2 + 10].reshape(-1, 3)
        assert len({tuple(p) for p in mid}) > 2


def test_thumbnails_follow_the_weights():
    eye = np.eye(12)[None, None]
    first = np.zeros((1, 1, 12, 12))
    first[..., 0] = 1
    a = head_gallery(eye, [["previous-token"]], [[1.0]])
    b = head_gallery(first, [["previous-token"]], [[1.0]])
    x0, y0, x1, _ = a.data["cells"][0]["box"]
    ta = np.asarray(a.image)[y0 + 3 : y0 + 3 + 64, x0 + 3 : x0 + 3 + 64].astype(int)
    tb = np.asarray(b.image)[y0 + 3 : y0 + 3 + 64, x0 + 3 : x0 + 3 + 64].astype(int)
    assert np.abs(ta - tb).mean() > 20
    # the diagonal is bright (viridis' yellow end), off-diagonal dark
    assert ta[5, 5].sum() > ta[5, 60].sum() + 200


def test_unknown_labels_nan_scores_and_bad_shapes():
    view = head_gallery(_maps(1, 2), [["positional", "sink"]], [[np.nan, 0.5]])
    assert view.data["cells"][0]["color"] == behaviour_color("positional")
    assert any("positional" in t for t in view.data["legend"])
    with pytest.raises(ValueError, match="layers x heads"):
        head_gallery(_maps(2, 2), [["sink", "sink"]], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        head_gallery(_maps(1, 2), [["sink", "sink"]], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="4-D"):
        head_gallery(np.zeros((3, 3)), [["sink"]], [[0.0]])


def test_html_table():
    labels = [["previous-token", "sink"], ["induction", "mixed"]]
    details = [[{"sink": 0.1, "next-token": None}] * 2] * 2
    html = head_gallery_html(
        labels, [[0.97, 0.5], [0.8, np.nan]], details=details, layer_names=["a<b", "c"]
    )

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.td = []

        def handle_starttag(self, tag, attrs):
            if tag == "td":
                self.td.append(dict(attrs))

    p = Cells()
    p.feed(html)
    assert len(p.td) == 4
    assert BEHAVIOUR_COLORS["previous-token"][0] in p.td[0]["style"]
    assert "next-token: n/a" in p.td[0]["title"] and "a&lt;b" in html
    assert "n/a" in html and "prev<br>0.97" in html


def test_gallery_of_scored_pattern_heads():
    """End to end: the scores of a model with known heads, drawn; each strip has the colour of
    the behaviour the head was built with."""
    model = PatternModel(PATTERNS)
    ids, lengths = batch()
    s = score_heads(
        model,
        run(model),
        ids,
        lengths=lengths,
        special_ids=[CLS, SEP],
        vocab=(3, VOCAB),
        induction_len=12,
        prefix=[CLS],
        suffix=[SEP],
    )
    names, best = s.labels()
    view = head_gallery(s.example, names, best)
    arr = np.asarray(view.image)
    assert len(view.data["cells"]) == 8
    for c in view.data["cells"]:
        want = EXPECT[c["layer"]][c["head"]]
        assert c["label"] == want
        assert tuple(_strip_colour(arr, c)[0]) == tuple(_rgb(behaviour_color(want)))
