"""The public API: ``load_classifier(...).predict / .explain`` on every kind of image a user may
give, refusals of bad ones with a sentence, and the shipped models' card figures."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from attnlab.core import registry
from attnlab.domains.vision import MAX_PIXELS, WORK_SIDE, load_classifier, read_image
from attnlab.domains.vision.classify import Classifier


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """An untrained ``vision_test`` saved as weights ``vision/standin`` in a temporary folder."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    m = registry.create("vision_test", labels=["a", "b", "c", "d"], mean=[0.5] * 3,
                        std=[0.25] * 3)  # fmt: skip
    registry.save_weights(m, "vision/standin", {"recipe": "test"}, root=root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTNLAB_WEIGHTS", str(root))
        yield load_classifier("vision/standin")


def test_predict_is_the_models_softmax_sorted(stand_in):
    clf: Classifier = stand_in
    rng = np.random.default_rng(0)
    img = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    pred = clf.predict(img)
    with torch.no_grad():
        x = (torch.from_numpy(img / 255.0).float().permute(2, 0, 1)[None] - 0.5) / 0.25
        ref = torch.softmax(clf.model(x), -1)[0]
    assert [p for _, p in pred] == sorted((p for _, p in pred), reverse=True)
    assert sum(p for _, p in pred) == pytest.approx(1.0, abs=1e-5)
    for label, p in pred:
        assert p == pytest.approx(float(ref[clf.labels.index(label)]), abs=1e-5)


@pytest.mark.parametrize("method", ["rollout", "gradient_rollout", "cls_attention"])
def test_explain_is_in_the_images_pixel_coordinates(stand_in, method):
    img = Image.fromarray((np.random.default_rng(1).random((30, 50, 3)) * 255).astype(np.uint8))
    e = stand_in.explain(img, method)
    assert e.shape == (30, 50) and e.dtype == np.float32 and np.isfinite(e).all()
    assert e.max() > e.min()


def _modes():
    rng = np.random.default_rng(2)
    rgb = Image.fromarray((rng.random((20, 24, 3)) * 255).astype(np.uint8))
    i16 = Image.fromarray((rng.random((20, 24)) * 65535).astype(np.uint16))
    return {
        "L": rgb.convert("L"),
        "RGBA": rgb.convert("RGBA"),
        "P": rgb.convert("P"),
        "I;16": i16,
        "1": rgb.convert("1"),
        "CMYK": rgb.convert("CMYK"),
        "LA": rgb.convert("LA"),
        "F": rgb.convert("F").point(lambda v: v / 255.0),
    }


@pytest.mark.parametrize("mode", list(_modes()))
def test_any_pil_mode_is_read(stand_in, mode):
    img = _modes()[mode]
    a = read_image(img)
    assert a.shape[:2] == (20, 24) and a.dtype == np.float32
    assert 0 <= a.min() and a.max() <= 1
    assert len(stand_in.predict(img)) == 4
    assert stand_in.explain(img).shape == (20, 24)


def test_transparency_is_white_and_16_bit_is_scaled():
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    assert np.allclose(read_image(Image.fromarray(rgba, "RGBA")), 1.0)
    i16 = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    assert np.allclose(read_image(i16), 1.0)
    assert np.allclose(read_image(torch.ones(3, 8, 8) * 0.5), 0.5)
    assert read_image(np.zeros((3, 9, 7), np.uint8)).shape == (9, 7, 3)  # (C, H, W)


def test_large_images_are_downscaled_and_huge_ones_refused(stand_in, tmp_path):
    a = read_image(np.zeros((3000, 1500), np.uint8))
    assert a.shape == (WORK_SIDE, WORK_SIDE // 2, 1)
    # a PNG header claiming more than MAX_PIXELS is refused before decoding
    side = int(MAX_PIXELS**0.5) + 100
    big = Image.new("1", (side, side))
    path = tmp_path / "big.png"
    big.save(path)
    with pytest.raises(ValueError, match="megapixels"):
        stand_in.predict(str(path))


@pytest.mark.parametrize("bad, words", [
    (np.zeros((1, 1, 3), np.uint8), "at least 4x4"),
    (np.zeros((0, 5)), "empty"),
    (np.full((8, 8), np.nan, np.float32), "NaN"),
    (np.full((8, 8), 3.0, np.float32), r"\[0, 1\]"),
    (np.zeros((8, 8, 5)), "C in 1, 3, 4"),
    ("not/a/file.png", "not a file"),
    (b"GIF89a-truncated", "could not be decoded|not an image"),
    (b"hello, not an image", "not an image file"),
    (12, "PIL image, numpy array, tensor or file path"),
])  # fmt: skip
def test_bad_images_are_refused_with_a_sentence(stand_in, bad, words):
    with pytest.raises(ValueError, match=words):
        stand_in.predict(bad)


def test_truncated_png_is_refused(stand_in, tmp_path):
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(3).random((64, 64, 3)) * 255).astype(np.uint8)).save(
        buf, "PNG")  # fmt: skip
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        stand_in.predict(str(path))


def test_unknown_models_are_named():
    with pytest.raises(ValueError, match="no shipped model"):
        load_classifier("vision/nope")
    with pytest.raises(ValueError, match="not a timm model"):
        load_classifier("not_a_model")


def test_timm_classifier_explains_non_square_grids_with_registers():
    clf = load_classifier("vit_medium_patch16_reg4_gap_256", img_size=(32, 64), depth=2,
                          num_classes=3)  # fmt: skip
    assert clf.layout.grid == (2, 4) and clf.layout.num_prefix == 4 and not clf.has_cls
    e = clf.explain(np.zeros((40, 80, 3), np.uint8) + 100, "rollout")
    assert e.shape == (40, 80)
