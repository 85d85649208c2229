"""The shipped vision weights: the figures on their cards hold when recomputed here (skipped
where this checkout does not ship them yet)."""

import numpy as np
import pytest

from attnlab.core import registry
from attnlab.domains.vision import load_classifier


def _shipped(name):
    if name not in registry.list_weights():
        pytest.skip(f"{name} is not shipped in this checkout")
    return load_classifier(name)


def test_shipped_digits_reach_98_percent_on_sklearns_test_split():
    from attnlab.domains.vision.data import digits_split
    from attnlab.domains.vision.train import DIGITS_MEAN, DIGITS_STD, accuracy

    clf = _shipped("vision/digits")
    s = digits_split(16)
    acc = accuracy(clf.model, (s.test_x - DIGITS_MEAN) / DIGITS_STD, s.test_y)
    assert acc >= 0.98
    assert registry.read_card("vision/digits")["metrics"]["test_accuracy"] == pytest.approx(acc)
    # a dark digit on white paper is inverted to the training data's light-on-dark
    img = (255 * (1 - s.test_x[0, 0].numpy())).astype(np.uint8)
    assert clf.predict(img)[0][0] == str(int(s.test_y[0]))


def test_shipped_locate_finds_the_target_on_fresh_scenes():
    from attnlab.domains.vision.data import LocateScenes
    from attnlab.domains.vision.train import SCENE_MEAN, SCENE_STD, locate_probe

    clf = _shipped("vision/locate")
    m = registry.read_card("vision/locate")["metrics"]
    assert m["test_accuracy"] >= 0.95 and m["pointing_rollout"] >= 0.90
    assert {"pointing_gradient_rollout", "pointing_cls_attention"} <= set(m)
    # scenes of another seed than the card's, on the held-out photographs
    fresh = LocateScenes(200, "test", seed=7, mean=SCENE_MEAN, std=SCENE_STD)
    res = locate_probe(clf.model, fresh, 200)
    assert res["test_accuracy"] >= 0.95
    assert res["pointing_rollout"] >= 0.90 and res["pointing_gradient_rollout"] >= 0.90
    # the public API's explanation peaks on the target, in the scene's own pixels
    img, label, mask = fresh.scene(0)
    heat = clf.explain((img * 255).astype(np.uint8), "rollout")
    assert heat.shape == mask.shape
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    ys, xs = np.nonzero(mask)
    assert np.sqrt((ys - y) ** 2 + (xs - x) ** 2).min() <= 6  # within one 6-pixel patch
    assert clf.predict(img)[0][0] == clf.labels[label]
