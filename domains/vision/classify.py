"""``load_classifier``: a shipped model or a timm model as one object that predicts and explains.

``Classifier.predict(image)`` -> ``[(label, prob), ...]`` sorted by probability;
``Classifier.explain(image, method)`` -> float scores (H, W) in the (working) image's pixel
coordinates: the patch-grid scores of :func:`~attnlab.domains.vision.explain.explain_grid`,
upsampled bilinearly. The whole image is resized to the model's input size (no crop), so every
pixel has a score. Images are read by :func:`~attnlab.domains.vision.images.read_image` (any
PIL mode, numpy, tensor, file; size limits there).

Greyscale models trained on light-on-dark data (the digits) invert images whose border is
mostly light, so a dark digit on white paper reads as the training data did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.core.capture import attention_modules, record_attention
from attnlab.core.layout import PatchLayout

from .explain import METHODS, explain_grid
from .images import read_image, resize, to_channels

__all__ = ["Classifier", "load_classifier", "shipped_models"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def shipped_models() -> list[str]:
    """Names of the shipped vision weights (``vision/...``)."""
    from attnlab.core.registry import list_weights

    return [n for n in list_weights() if n.startswith("vision/") and "/step-" not in n]


@dataclass
class Classifier:
    """A ViT classifier with its preprocessing.

    Attributes:
        model: attnlab ViT or a timm model after ``make_visible`` (eval mode).
        name: what it was loaded as.
        labels: class names by index.
        image_hw: the model's input (height, width).
        in_chans: input channels.
        mean, std: per-channel normalisation.
        has_cls: classification reads a class token at position 0 (else patch means).
        invert_light: invert greyscale images with a light border (digits).
    """

    model: nn.Module
    name: str
    labels: list[str]
    image_hw: tuple[int, int]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    has_cls: bool = True
    invert_light: bool = False
    prefix: tuple[str, ...] = field(default=())

    # -- input ---------------------------------------------------------------------------------
    def prepare(self, image: Any) -> np.ndarray:
        """The working image (H, W, in_chans) floats in [0, 1] (see ``images.read_image``)."""
        a = to_channels(read_image(image), self.in_chans)
        if self.invert_light and self.in_chans == 1:
            border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
            if float(border.mean()) > 0.5:
                a = 1.0 - a
        return a

    def tensor(self, a: np.ndarray) -> Tensor:
        """The model's input (1, C, h, w) for a working image."""
        x = torch.from_numpy(resize(a, self.image_hw)).permute(2, 0, 1)[None]
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return (x - mean) / std

    @property
    def layout(self) -> PatchLayout:
        """The token layout at the model's input size."""
        m = self.model
        if hasattr(m, "layout") and callable(m.layout):
            return m.layout()
        from .timm_bridge import timm_layout

        return timm_layout(m, self.image_hw)

    @property
    def depth(self) -> int:
        return len(attention_modules(self.model))

    @property
    def num_heads(self) -> int:
        return attention_modules(self.model)[0][1].num_heads

    # -- outputs -------------------------------------------------------------------------------
    @torch.no_grad()
    def probabilities(self, image: Any) -> np.ndarray:
        """Class probabilities (classes,) for one image."""
        x = self.tensor(self.prepare(image))
        return F.softmax(self.model(x).float(), -1)[0].numpy()

    def predict(self, image: Any, k: int | None = None) -> list[tuple[str, float]]:
        """``[(label, probability), ...]`` sorted by probability, the ``k`` best (default all)."""
        p = self.probabilities(image)
        order = np.argsort(-p)[: (k or len(p))]
        return [(self.labels[i], float(p[i])) for i in order]

    def class_index(self, target: int | str | None) -> int | None:
        """A class index from a label or index (None passes through)."""
        if target is None:
            return None
        if isinstance(target, str):
            if target not in self.labels:
                raise ValueError(f"unknown class {target!r}; classes: {self.labels[:20]}")
            return self.labels.index(target)
        if not 0 <= int(target) < len(self.labels):
            raise ValueError(f"class index {target} out of range [0, {len(self.labels)})")
        return int(target)

    def explain_array(self, a: np.ndarray, method: str = "rollout", *,
                      target: int | str | None = None, layer: int = -1,
                      head: int | None = None) -> np.ndarray:  # fmt: skip
        """Like :meth:`explain` for a working image from :meth:`prepare`."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        grid, _ = explain_grid(self.model, self.tensor(a), self.layout, method,
                               target=self.class_index(target), layer=layer, head=head,
                               has_cls=self.has_cls)  # fmt: skip
        return upsample(grid[0], a.shape[:2])

    def explain(
        self,
        image: Any,
        method: str = "rollout",
        *,
        target: int | str | None = None,
        layer: int = -1,
        head: int | None = None,
    ) -> np.ndarray:
        """Float scores (H, W) over the image's pixels (the working image's, for images
        downscaled on reading): ``method`` in ``"rollout"``, ``"gradient_rollout"`` (for class
        ``target``, default the predicted one), ``"cls_attention"`` (``layer``, ``head``)."""
        return self.explain_array(self.prepare(image), method, target=target, layer=layer,
                                  head=head)  # fmt: skip

    @torch.no_grad()
    def attention(self, a: np.ndarray) -> tuple[Tensor, Tensor]:
        """(every layer's attention (layers, H, L, L), probabilities) for a working image."""
        names = [n for n, _ in attention_modules(self.model)]
        with record_attention(self.model) as maps:
            logits = self.model(self.tensor(a))
        return torch.stack([maps[n][0].float() for n in names]), F.softmax(logits[0].float(), -1)


def upsample(grid: Tensor, hw: tuple[int, int]) -> np.ndarray:
    """(rows, cols) scores -> (H, W) float32, bilinear."""
    t = grid.detach().float()[None, None]
    return F.interpolate(t, size=tuple(hw), mode="bilinear", align_corners=False)[0, 0].numpy()


def _from_shipped(name: str) -> Classifier:
    from attnlab.core.registry import load

    model = load(name)
    c = model.config
    return Classifier(
        model,
        name,
        list(c.labels or [str(i) for i in range(c.num_classes)]),
        c.image_hw,
        c.in_chans,
        tuple(c.mean or (0.5,) * c.in_chans),
        tuple(c.std or (0.25,) * c.in_chans),
        has_cls=c.global_pool == "token",
        invert_light=c.in_chans == 1,
        prefix=model.layout().prefix_names,
    )


def _from_timm(name: str, checkpoint: str | Path | None, labels: list[str] | None,
               **kwargs: Any) -> Classifier:  # fmt: skip
    from .timm_bridge import load_timm, prefix_names

    model = load_timm(name, checkpoint, **kwargs)
    n = int(getattr(model, "num_classes", 0))
    if n < 1:
        raise ValueError(
            f"{name} has no classification head (num_classes=0): give a checkpoint "
            "with head.weight or num_classes"
        )
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for a model with {n} classes")
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    hw = tuple(int(v) for v in model.patch_embed.img_size)
    chans = int(model.patch_embed.proj.in_channels) if hasattr(model.patch_embed, "proj") else 3
    has_cls = (
        getattr(model, "cls_token", None) is not None
        and getattr(model, "global_pool", "token") == "token"
    )
    return Classifier(model, name, labels or [str(i) for i in range(n)], hw, chans,
                      tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)),
                      has_cls=has_cls, prefix=prefix_names(model))  # fmt: skip


def load_classifier(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    labels: list[str] | None = None,
    **kwargs: Any,
) -> Classifier:
    """A shipped model (``"vision/digits"``, ``"vision/locate"``) or a timm model by name with
    random weights or a ``checkpoint`` (safetensors or a ``.pth`` state dict; nothing is
    downloaded). ``labels`` names a timm model's classes; ``kwargs`` go to
    ``timm.create_model`` (e.g. ``img_size``), and ``max_params`` to ``load_timm`` (refuse
    larger timm models before building them)."""
    if not isinstance(name, str) or not name:
        raise ValueError(
            "give a model name: a shipped one (vision/digits, vision/locate) or a timm model name"
        )
    if name in shipped_models():
        if checkpoint is not None:
            raise ValueError(f"{name} is a shipped model: a checkpoint goes with a timm model name")
        return _from_shipped(name)
    if name.startswith("vision/"):
        raise ValueError(f"no shipped model {name!r}; shipped: {shipped_models()}")
    return _from_timm(name, checkpoint, labels, **kwargs)
