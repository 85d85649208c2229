"""Vision demo handlers, headless: the top-k is the model's softmax, the overlay's patch scores
are the explanation's, a click reads the clicked patch's attention row, an ablation equals the
model with those heads' output-projection columns zeroed; and every handler answers any form
value with a result or a gr.Error that says something.

Untrained models of the shipped architectures stand in, in a temporary weights folder (the
wiring is the same; the shipped models' figures are tested in tests/domains/vision).
"""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
import torch
from handler_fuzz import refusals

from attnlab.apps import suite
from attnlab.apps import vision as V
from attnlab.apps import vision_lab as VL
from attnlab.core import registry
from attnlab.core.capture import record_attention
from attnlab.domains.vision.data import DIGIT_LABELS, SHAPES

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module", autouse=True)
def stand_ins(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    m = registry.create("vision_digits", labels=list(DIGIT_LABELS), mean=[0.3], std=[0.37])
    registry.save_weights(m, "vision/digits", {"metrics": {"test_accuracy": 0.5}}, root=root)
    m = registry.create("vision_locate", labels=list(SHAPES), mean=[0.5] * 3, std=[0.25] * 3)
    registry.save_weights(m, "vision/locate", {"metrics": {
        "test_accuracy": 0.5, "pointing_rollout": 0.3, "pointing_gradient_rollout": 0.4,
        "pointing_cls_attention": 0.2}}, root=root)  # fmt: skip
    VL.forget_models()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTNLAB_WEIGHTS", str(root))
        yield
    VL.forget_models()
    torch.set_num_threads(n)


def _refusal(fn, *args):
    with pytest.raises(gr.Error) as e:
        fn(*args)
    assert str(e.value.message).strip()
    return str(e.value.message)


SCENE = "vision/locate"


def test_load_describes_the_model_and_its_pointing_scores():
    md, classes, layer, head = V.load_model(SCENE, None)
    assert "4 layers × 4 heads" in md and "8×8" in md and "prefix tokens: cls" in md
    assert "gradient rollout" in md and "Most faithful here: **gradient rollout" in md
    assert classes["choices"] == ["predicted", *SHAPES]


def test_analyse_top_k_is_the_softmax_and_the_overlay_is_drawn():
    img = V.pick_example("scene 2")
    top, overlay, heads, dist, info = V.analyse(SCENE, None, img, "rollout", "predicted", 3,
                                                "mean", 0.5, 4)  # fmt: skip
    clf = VL.classifier(SCENE, None)
    probs = clf.probabilities(img)
    assert list(top) == [clf.labels[i] for i in np.argsort(-probs)[:4]]
    assert all(top[k] == pytest.approx(float(probs[clf.labels.index(k)])) for k in top)
    assert overlay.size == (320, 320) and heads.width > 320 and dist.width > 100
    assert "attention rollout" in info
    # alpha 0 shows the image itself
    plain = V.analyse(SCENE, None, img, "rollout", "predicted", 3, "mean", 0.0, 4)[1]
    assert np.abs(np.asarray(plain, float) - np.asarray(overlay, float)).mean() > 1


def test_gradient_rollout_for_a_chosen_class_and_digits_examples():
    img = V.pick_example("digit 3")
    assert img.shape == (16, 16) and img.dtype == np.uint8
    out = V.analyse("vision/digits", None, img, "gradient_rollout", "7", 2, "mean", 0.6, 3)
    assert "for class 7" in out[4] and len(out[0]) == 3
    out = V.analyse("vision/digits", None, img, "cls_attention", "predicted", 1, 2, 0.6, 3)
    assert "layer 1, head 2" in out[4]


def test_controls_redraw_only_once_an_image_is_chosen():
    skipped = V.refresh(SCENE, None, None, "rollout", "predicted", 1, "mean", 0.5, 3)
    assert len(skipped) == 5 and all(isinstance(x, dict) and x.get("__type__") == "update"
                                     for x in skipped)  # fmt: skip
    img = V.pick_example("scene 0")
    out = V.refresh(SCENE, None, img, "rollout", "predicted", 1, "mean", 0.5, 3)
    assert out[0] == V.analyse(SCENE, None, img, "rollout", "predicted", 1, "mean", 0.5, 3)[0]


def test_click_reads_the_clicked_patch_row():
    img = V.pick_example("scene 1")
    clf = VL.classifier(SCENE, None)
    # 320 px shown for an 8x8 grid: pixel (100, 250) is patch row 6, col 2
    out, info = V.attend_patch(SCENE, None, img, 2, 1, 0.6, 100, 250)
    assert "Patch r6c2" in info
    q = clf.layout.index(6, 2)
    with torch.no_grad(), record_attention(clf.model) as maps:
        clf.model(clf.tensor(clf.prepare(img)))
    row = maps.stack()[2, 0, 1, q]
    assert f"cls {float(row[0]):.2f}" in info
    assert f"{float(row[1:].sum()):.0%} of its attention on patches" in info
    assert out.size == (320, 320)


def test_ablation_equals_zeroed_projection_columns():
    img = V.pick_example("scene 0")
    clf = VL.classifier(SCENE, None)
    before, after, info = V.ablate(SCENE, None, img, "1.2, 3.*", "zero", 4)
    x = clf.tensor(clf.prepare(img))
    model = registry.load(SCENE)
    D = model.config.head_dim
    with torch.no_grad():
        for li, hs in ((1, [2]), (3, [0, 1, 2, 3])):
            w = model.encoder.blocks[li].attn.proj.weight
            for h in hs:
                w[:, h * D : (h + 1) * D] = 0
        ref = torch.softmax(model(x), -1)[0]
    for label, p in after.items():
        assert p == pytest.approx(float(ref[SHAPES.index(label)]), abs=1e-5)
    assert "Ablated 5 head(s)" in info


def test_timm_models_run_in_the_tab():
    md = V.load_model("deit_tiny_distilled_patch16_224", None)[0]
    assert "prefix tokens: cls, dist" in md and "random weights" in md


def test_a_checkpoint_file_loads_in_the_tab_and_prefills_the_upload(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(5)
    src = timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=3).eval()
    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    md = V.load_model("deit_tiny_patch16_224", str(path))[0]
    assert "weights of mine.safetensors" in md and "3 classes" in md
    img = V.pick_example("scene 1")
    top = V.analyse("deit_tiny_patch16_224", str(path), img, "rollout", "predicted", 11,
                    "mean", 0.5, 3)[0]  # fmt: skip
    clf = VL.classifier("deit_tiny_patch16_224", str(path))
    with torch.no_grad():
        ref = torch.softmax(src(clf.tensor(clf.prepare(img))), -1)[0]
    for label, p in top.items():
        assert p == pytest.approx(float(ref[int(label)]), abs=1e-5)
    demo = V.build("deit_tiny_patch16_224", str(path))
    files = [b for b in demo.blocks.values() if isinstance(b, gr.File)]
    assert files and files[0].value is not None


def test_build_names_every_listener_and_separates_loading():
    demo = V.build()
    fns = list(demo.fns.values())
    assert fns and all(f.api_name for f in fns)
    by_api = {f.api_name: f.concurrency_id for f in fns}
    assert by_api["vision_load"] == "vision_load"
    assert {by_api[a] for a in ("vision_analyse", "vision_patch", "vision_ablate")} == {
        "vision_model"
    }
    assert "vision" in suite.available_demos()


BAD = [
    None,
    "",
    "   ",
    "abc",
    -1,
    10**9,
    10**400,
    float("nan"),
    float("inf"),
    2.5,
    True,
    [],
    {},
    ["x"],
    {"path": "/nope"},
    "x" * 3000,
]


def _handlers():
    img = V.pick_example("scene 0")
    return {
        "load_model": (V.load_model, [SCENE, None]),
        "pick_example": (V.pick_example, ["scene 1"]),
        "analyse": (V.analyse, [SCENE, None, img, "rollout", "predicted", 1, "mean", 0.5, 3]),
        "refresh": (V.refresh, [SCENE, None, img, "cls_attention", "predicted", 1, 0, 0.5, 3]),
        "attend_patch": (V.attend_patch, [SCENE, None, img, 1, "mean", 0.5, 10, 10]),
        "ablate": (V.ablate, [SCENE, None, img, "0.1", "zero", 3]),
    }


def test_every_handler_answers_any_value():
    handlers = _handlers()
    assert set(handlers) >= {
        n for n in V.__all__ if n not in ("build", "CONCURRENCY", "EXAMPLES", "METHODS")
    }
    refused = refusals(handlers, BAD)
    assert refused > 150


@pytest.mark.parametrize("fn, args, words", [
    (V.analyse, [SCENE, None, None, "rollout", "predicted", 1, "mean", 0.5, 3], "No image"),
    (V.analyse, [SCENE, None, np.zeros((1, 1, 3), np.uint8), "rollout", "predicted", 1,
                 "mean", 0.5, 3], "at least 4x4"),
    (V.analyse, [SCENE, None, np.zeros((8, 8, 3), np.uint8), "rollout", "predicted", 9,
                 "mean", 0.5, 3], "from 0 to 3"),
    (V.analyse, ["vision/nope", None, None, "rollout", "predicted", 1, "mean", 0.5, 3],
     "no shipped model"),
    (V.load_model, ["eva02_tiny_patch14_224", None], "EvaAttention"),
    (V.load_model, ["vit_huge_patch14_224", None], "631 M parameters"),
    (V.ablate, [SCENE, None, np.zeros((8, 8, 3), np.uint8), "9.0", "zero", 3],
     "layers 0-3"),
    (V.ablate, [SCENE, None, np.zeros((8, 8, 3), np.uint8), "one", "zero", 3], "layer.head"),
])  # fmt: skip
def test_refusals_say_what_to_change(fn, args, words):
    assert words in _refusal(fn, *args)


def test_corrupt_checkpoint_upload_is_a_sentence(tmp_path):
    p = tmp_path / "w.safetensors"
    p.write_bytes(b"garbage")
    assert "not a readable safetensors" in _refusal(V.load_model, "vit_tiny_patch16_224", str(p))


def test_unreadable_uploads_are_a_sentence_and_the_image_component_renders(tmp_path):
    from gradio.data_classes import FileData

    bad = tmp_path / "cut.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    comp = V.ImageInput(type="filepath")
    assert comp.get_block_name() == "image"
    with pytest.raises(gr.Error) as e:
        comp.preprocess(FileData(path=str(bad)))
    assert "truncated or is not an image" in str(e.value.message)
