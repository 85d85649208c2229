"""The vision recipes: any ImageFolder with augmentation and a stratified held-out split; the
digits and locate recipes build their data and probes."""

import numpy as np
import pytest
import torch
from PIL import Image

from attnlab.core.recipes import get_recipe
from attnlab.core.registry import create
from attnlab.domains.vision.data import LocateScenes, image_folder_split
from attnlab.domains.vision.train import locate_probe


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for c, n in (("cats", 10), ("dogs", 5)):
        (tmp_path / c).mkdir()
        for i in range(n):
            a = (rng.random((30 + i, 40, 3)) * 255).astype(np.uint8)
            Image.fromarray(a).convert("RGBA" if i % 2 else "RGB").save(tmp_path / c / f"{i}.png")
    (tmp_path / "dogs" / "README.txt").write_text("not an image")
    return tmp_path


def test_image_folder_split_is_stratified_and_augmented(folder):
    train, test, classes = image_folder_split(folder, 32, held_out=0.2, seed=0)
    assert classes == ["cats", "dogs"]
    assert len(train) == 12 and len(test) == 3
    labels = [int(test[i]["label"]) for i in range(len(test))]
    assert sorted(labels) == [0, 0, 1]
    x = train[0]["image"]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    torch.manual_seed(0)
    a = train[0]["image"]
    torch.manual_seed(1)
    assert not torch.equal(a, train[0]["image"])  # augmentation: random per call
    assert torch.equal(test[0]["image"], test[0]["image"])  # held out: deterministic


def test_folder_recipe_builds_a_model_with_the_folder_classes(folder):
    r = get_recipe("vision")
    cfg = r.defaults.replace(data_args={"path": str(folder)},
                             model_args={"img_size": 32, "depth": 2})  # fmt: skip
    parts = r.build(cfg)
    assert parts.model.config.labels == ["cats", "dogs"]
    loss, m = parts.model.loss(
        torch.utils.data.default_collate([parts.train_set[i] for i in range(4)])
    )
    assert loss.isfinite() and 0 <= float(m["acc"]) <= 1


def test_bad_folders_are_refused(tmp_path):
    with pytest.raises(ValueError, match="one sub-folder of images per class"):
        image_folder_split(tmp_path / "nope", 32)
    (tmp_path / "only").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "a.png")
    with pytest.raises(ValueError, match="need 2"):
        image_folder_split(tmp_path, 32)
    with pytest.raises(ValueError, match="needs --data"):
        get_recipe("vision").build(get_recipe("vision").defaults)


def test_locate_probe_reports_accuracy_and_every_pointing_score():
    torch.manual_seed(0)
    model = create("vision_locate", depth=1, labels=["circle", "square", "triangle", "cross"])
    res = locate_probe(model, LocateScenes(40, "test"), 40)
    assert set(res) == {"test_accuracy", "pointing_rollout", "pointing_gradient_rollout",
                        "pointing_cls_attention"}  # fmt: skip
    assert all(0 <= v <= 1 for v in res.values())
