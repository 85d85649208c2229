"""Training recipes of the vision domain, and the held-out probes whose numbers go on the cards.

- ``vision/digits``: :func:`~attnlab.domains.vision.model.vision_digits` on scikit-learn's
  digits (``train_test_split(test_size=0.2, random_state=0, stratify=y)``), random affine
  augmentation. Probe: test accuracy over the whole 20 % split.
- ``vision/locate``: :func:`~attnlab.domains.vision.model.vision_locate` on generated scenes
  (a red target shape among distractors on photographs; the label is the target's shape).
  Probe, on scenes from photographs never seen in training: accuracy, and the pointing game
  of each explanation method (rollout, gradient rollout, last-layer class-token attention).
- ``vision``: any ImageFolder (``--data DIR``) with torchvision augmentation; the class names
  are the folder names and go into the model's config.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attnlab.core.recipes import RecipeParts, register_recipe
from attnlab.core.registry import create
from attnlab.core.train_config import TrainConfig

from .data import DIGIT_LABELS, SHAPES, DigitsSet, LocateScenes, digits_split, image_folder_split
from .explain import METHODS, explain_grid, pointing_hits

__all__ = ["DIGITS_MEAN", "DIGITS_STD", "accuracy", "locate_probe"]

DIGITS_MEAN, DIGITS_STD = 0.3, 0.37
SCENE_MEAN, SCENE_STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch: int = 256) -> float:  # fmt: skip
    """Share of ``images`` classified as ``labels``."""
    was = model.training
    model.eval()
    try:
        hits = sum(
            int((model(images[i : i + batch]).argmax(-1) == labels[i : i + batch]).sum())
            for i in range(0, len(labels), batch)
        )
    finally:
        model.train(was)
    return hits / len(labels)


def locate_probe(model: nn.Module, scenes: LocateScenes, n_point: int = 500) -> dict[str, float]:
    """Held-out accuracy over ``scenes`` and the pointing game of every explanation method over
    its first ``n_point`` scenes."""
    was = model.training
    model.eval()
    try:
        data = scenes.batch(range(len(scenes)))
        out = {"test_accuracy": accuracy(model, data["image"], data["label"])}
        layout = model.layout()
        k = min(n_point, len(scenes))
        for method in METHODS:
            hits = []
            for i in range(0, k, 250):
                grid, _ = explain_grid(model, data["image"][i : i + 250], layout, method)
                hits.append(pointing_hits(grid, data["mask"][i : i + 250], layout))
            out[f"pointing_{method}"] = float(torch.cat(hits).float().mean())
        return out
    finally:
        model.train(was)


@register_recipe(
    "vision/digits",
    split="train_test_split(test_size=0.2, random_state=0, stratify=y) of sklearn's digits",
    defaults=TrainConfig(
        model="vision_digits",
        data="sklearn-digits",
        data_args={},
        lr=2e-3,
        weight_decay=0.05,
        warmup_steps=200,
        steps=3000,
        batch_size=64,
        log_every=100,
        eval_every=1000,
        ckpt_every=2000,
        out_dir="runs/vision-digits",
    ),  # fmt: skip
)
def digits_recipe(cfg: TrainConfig) -> RecipeParts:
    """A small ViT on scikit-learn's 8x8 digits (upsampled to 16x16), with affine augmentation."""
    split = digits_split(16)
    model = create(cfg.model, labels=list(DIGIT_LABELS), mean=[DIGITS_MEAN], std=[DIGITS_STD],
                   **cfg.model_args)  # fmt: skip
    train_set = DigitsSet(split.train_x, split.train_y, DIGITS_MEAN, DIGITS_STD, augment=True)
    test_set = DigitsSet(split.test_x, split.test_y, DIGITS_MEAN, DIGITS_STD)
    test_x = (split.test_x - DIGITS_MEAN) / DIGITS_STD

    def evaluate(m: nn.Module, step: int | None) -> dict[str, float]:
        return {"test_accuracy": accuracy(m, test_x, split.test_y)}

    return RecipeParts(model, train_set, test_set, evaluate=evaluate)


@register_recipe(
    "vision/locate",
    split=(
        "train: scenes on crops of " + ", ".join(LocateScenes(1).photos) + " (seed stream "
        "2*seed); held out: scenes on other photographs (rocket, gravel; stream 2*seed+1)"
    ),
    defaults=TrainConfig(
        model="vision_locate",
        data="locate-scenes",
        data_args={"num_train": 200000, "num_eval": 1000, "num_point": 500},
        lr=1.5e-3,
        weight_decay=0.05,
        warmup_steps=200,
        steps=3000,
        batch_size=64,
        log_every=100,
        eval_every=1000,
        ckpt_every=1000,
        out_dir="runs/vision-locate",
    ),  # fmt: skip
)
def locate_recipe(cfg: TrainConfig) -> RecipeParts:
    """Find the red shape among distractors on real photographs and name it."""
    args = cfg.data_args
    size = int(cfg.model_args.get("img_size", 48))
    kw = dict(size=size, mean=SCENE_MEAN, std=SCENE_STD)
    train_set = LocateScenes(args.get("num_train", 200000), "train", seed=cfg.seed, **kw)
    test_set = LocateScenes(args.get("num_eval", 1000), "test", seed=cfg.seed, **kw)
    model = create(cfg.model, labels=list(SHAPES), mean=SCENE_MEAN, std=SCENE_STD,
                   **cfg.model_args)  # fmt: skip
    n_point = int(args.get("num_point", 500))
    return RecipeParts(model, _NoMask(train_set), _NoMask(test_set),
                       evaluate=lambda m, step: locate_probe(m, test_set, n_point))  # fmt: skip


class _NoMask(torch.utils.data.Dataset):
    """The scenes without their masks (the trainer's batches carry image and label)."""

    def __init__(self, scenes: LocateScenes):
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.scenes[i]
        return {"image": s["image"], "label": s["label"]}


@register_recipe(
    "vision",
    split="held out: held_out (20 %) of each class folder's images, chosen with the run's seed",
    defaults=TrainConfig(
        model="vision_small",
        data="image-folder",
        data_args={"path": "", "held_out": 0.2},
        lr=1e-3,
        weight_decay=0.05,
        warmup_steps=100,
        steps=2000,
        batch_size=32,
        log_every=50,
        eval_every=500,
        ckpt_every=500,
        out_dir="runs/vision",
    ),  # fmt: skip
)
def folder_recipe(cfg: TrainConfig) -> RecipeParts:
    """A ViT on any ImageFolder (``--data DIR``: one sub-folder of images per class)."""
    path = cfg.data_args.get("path") or ""
    if not path:
        raise ValueError("recipe 'vision' needs --data DIR (one sub-folder of images per class)")
    img = cfg.model_args.get("img_size", 64)
    if not isinstance(img, int):
        raise ValueError("recipe 'vision' takes a square model.img_size (an int)")
    train_set, test_set, classes = image_folder_split(
        path, img, cfg.data_args.get("held_out", 0.2), cfg.seed, SCENE_MEAN, SCENE_STD
    )
    model = create(
        cfg.model,
        **{
            "num_classes": len(classes),
            "labels": classes,
            "mean": SCENE_MEAN,
            "std": SCENE_STD,
            **cfg.model_args,
        },
    )
    return RecipeParts(model, train_set, test_set)
