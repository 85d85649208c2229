"""Inputs of the Vision demo (``apps/vision.py``): its limits, the model cache, and the
checks that turn form values (model names, checkpoint uploads, images, layer/head choices, head
lists) into what the handlers use, each refusal a ``gr.Error`` sentence.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from attnlab.apps.guard import as_int, refuse
from attnlab.domains.vision import MAX_PIXELS, WORK_SIDE, load_classifier, shipped_models

__all__ = ["CONCURRENCY", "METHODS", "TIMM_SUGGESTIONS", "EXAMPLES", "LIMITS", "ImageInput",
           "model_choices", "checkpoint_path", "classifier", "forget_models", "pixels",
           "layer_head", "top_k", "describe", "parse_heads"]  # fmt: skip

#: one queue for the views that record or edit the loaded models (one request at a time), one
#: for loading models (timm building, checkpoints: the slow part), one for the examples
CONCURRENCY = {"model": "vision_model", "load": "vision_load", "example": "vision_example"}
METHODS = {"rollout": "attention rollout", "gradient_rollout": "gradient rollout (class)",
           "cls_attention": "class-token attention (layer, head)"}  # fmt: skip
TIMM_SUGGESTIONS = ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224",
                    "deit3_small_patch16_224", "vit_small_patch16_224",
                    "vit_medium_patch16_reg4_gap_256"]  # fmt: skip
MAX_UPLOAD, UPLOAD_BYTES = "50mb", 50 * 2**20
MAX_CHECKPOINT, CHECKPOINT_BYTES = "400mb", 400 * 2**20
DISPLAY = 320  # longer side of the shown overlay, in pixels
MAX_ABLATE = 64
MAX_PARAMS = 350_000_000  # ViT-L/16 (304 M) fits; larger timm models are refused
EXAMPLES = [*(f"digit {i}" for i in range(5)), *(f"scene {i}" for i in range(5))]

LIMITS = (
    f"Images: any mode (greyscale, RGBA, palette, 16-bit), up to {MAX_UPLOAD}; up to "
    f"{MAX_PIXELS // 1_000_000} megapixels (larger ones are refused), downscaled to "
    f"{WORK_SIDE} px on the longer side, then resized to the model's input."
)


def model_choices() -> list[str]:
    """The shipped vision models, then a few timm ViT names (any other may be typed)."""
    return shipped_models() + TIMM_SUGGESTIONS


def checkpoint_path(value: Any) -> str | None:
    """The uploaded checkpoint's path (None for no upload), checked for existence and size."""
    if value in (None, ""):
        return None
    if isinstance(value, dict):
        value = value.get("path")
    if not isinstance(value, str):
        raise refuse(
            f"checkpoint must be an uploaded file, got {type(value).__name__}: upload "
            "a .safetensors or .pth state dict."
        )
    if not Path(value).is_file():
        raise refuse("The checkpoint file is gone: upload it again.")
    if os.path.getsize(value) > CHECKPOINT_BYTES:
        raise refuse(f"The checkpoint is larger than {MAX_CHECKPOINT}: use a smaller model.")
    return value


@functools.lru_cache(maxsize=4)
def cached_classifier(name: str, checkpoint: str | None, mtime: float):
    """The loaded model, cached by name, checkpoint path and its modification time."""
    return load_classifier(name, checkpoint, max_params=MAX_PARAMS)


def classifier(name: Any, checkpoint: Any):
    """The classifier for a model name and checkpoint upload (cached); refusals as gr.Error."""
    if not isinstance(name, str) or not name.strip():
        raise refuse("Choose a model: a shipped one (vision/...) or a timm model name.")
    name = name.strip()
    ckpt = checkpoint_path(checkpoint)
    if name.startswith("vision/") and name not in shipped_models():
        raise refuse(
            f"There is no shipped model {name!r}: choose one of "
            f"{', '.join(shipped_models()) or '(none shipped)'}."
        )
    mtime = os.path.getmtime(ckpt) if ckpt else 0.0
    try:
        return cached_classifier(name, ckpt, mtime)
    except (ValueError, TypeError) as e:
        raise refuse(f"Cannot load {name}: {e}") from None


def pixels(clf, image: Any) -> np.ndarray:
    """The working image (see ``Classifier.prepare``) of a form value; refusals as gr.Error."""
    if image is None or (isinstance(image, str) and not image.strip()):
        raise refuse("No image: upload one or pick an example.")
    if isinstance(image, dict):  # an API payload of a file
        image = image.get("path")
    if isinstance(image, str) and Path(image).is_file() and os.path.getsize(image) > UPLOAD_BYTES:
        raise refuse(f"The image file is larger than {MAX_UPLOAD}: upload a smaller one.")
    if isinstance(image, list):
        image = np.asarray(image)
    if not isinstance(image, (str, np.ndarray)) and not hasattr(image, "mode"):
        raise refuse(f"The image must be an uploaded picture, got {type(image).__name__}.")
    if isinstance(image, np.ndarray) and image.dtype == object:
        raise refuse("The image must be an array of numbers.")
    try:
        return clf.prepare(image)
    except ValueError as e:
        raise refuse(f"Cannot read this image: {e}") from None


def layer_head(clf, layer: Any, head: Any) -> tuple[int, int | None]:
    """(layer, head or None for the mean) from form values, checked against the model."""
    li = as_int(layer, "Layer", 0, clf.depth - 1)
    if isinstance(head, str) and head.strip().lower() in ("mean", "all", "-1"):
        return li, None
    if isinstance(head, (int, float)) and not isinstance(head, bool) and head == -1:
        return li, None
    return li, as_int(head, "Head", -1, clf.num_heads - 1)


def top_k(probs: np.ndarray, labels: list[str], k: int) -> dict[str, float]:
    """The ``k`` most probable classes as ``{label: probability}`` for ``gr.Label``."""
    order = np.argsort(-probs)[:k]
    return {labels[i]: float(probs[i]) for i in order}


def describe(clf, checkpoint: str | None = None) -> str:
    """Markdown describing the model: shape, prefix tokens, and its card's figures."""
    lay = clf.layout
    prefix = ", ".join(lay.prefix_names) or "none"
    rows = [
        f"**{clf.name}**: {clf.depth} layers × {clf.num_heads} heads; input "
        f"{clf.image_hw[1]}×{clf.image_hw[0]} px, patch grid {lay.grid[0]}×{lay.grid[1]} "
        f"(patches {lay.patch_size[1]}×{lay.patch_size[0]} px); prefix tokens: {prefix}; "
        f"{len(clf.labels)} classes."
    ]
    if not clf.name.startswith("vision/"):
        if checkpoint:
            rows.append(f"A timm model with the weights of {Path(checkpoint).name}.")
        else:
            rows.append(
                "A timm model with random weights (upload a checkpoint for real ones): "
                "its predictions mean nothing, its attention shows the architecture."
            )
    else:
        from attnlab.core.registry import read_card

        m = read_card(clf.name).get("metrics", {})
        pts = {k.removeprefix("pointing_"): v for k, v in m.items() if k.startswith("pointing_")}
        if "test_accuracy" in m:
            rows.append(f"Held-out accuracy {m['test_accuracy']:.1%}.")
        if pts:
            best = max(pts, key=pts.get)
            rows.append(
                "Pointing game on held-out scenes (the top patch lies on the target): "
                + ", ".join(f"{METHODS.get(k, k)} {v:.1%}" for k, v in pts.items())
                + f". Most faithful here: **{METHODS.get(best, best)}**."
            )
    return "\n\n".join(rows)


def forget_models() -> None:
    """Drop the cached models (tests, or after the weights changed)."""
    cached_classifier.cache_clear()


HEAD_RE = re.compile(r"^\s*(\d+)\s*\.\s*(\d+|\*)\s*$")


def parse_heads(text: Any, clf) -> dict[int, list[int]]:
    """``{layer: [heads]}`` from a ``layer.head`` list such as ``0.1, 2.*``."""
    if not isinstance(text, str) or not text.strip():
        raise refuse("Heads to ablate is empty: write layer.head pairs such as 0.1, 2.* .")
    if len(text) > 2000:
        raise refuse("Heads to ablate is too long: list at most 64 layer.head pairs.")
    out: dict[int, set[int]] = {}
    for part in text.split(","):
        m = HEAD_RE.match(part)
        if not m:
            raise refuse(f"{part.strip()[:30]!r} is not layer.head (e.g. 0.1 or 2.*): fix it.")
        li, h = int(m.group(1)), m.group(2)
        if li >= clf.depth:
            raise refuse(f"Layer {li} does not exist: this model has layers 0-{clf.depth - 1}.")
        hs = range(clf.num_heads) if h == "*" else [int(h)]
        if h != "*" and int(h) >= clf.num_heads:
            raise refuse(f"Head {h} does not exist: heads are 0-{clf.num_heads - 1}.")
        out.setdefault(li, set()).update(hs)
    if sum(len(v) for v in out.values()) > MAX_ABLATE:
        raise refuse(f"Ablate at most {MAX_ABLATE} heads at once.")
    return {k: sorted(v) for k, v in out.items()}


class ImageInput(gr.Image):
    """``gr.Image`` whose unreadable uploads (truncated, not an image) are refused with a
    sentence instead of Gradio's bare error."""

    def get_block_name(self) -> str:
        return "image"  # the frontend component to draw: gr.Image's

    def preprocess(self, payload: Any) -> Any:
        try:
            return super().preprocess(payload)
        except Exception as e:  # noqa: BLE001 -- PIL raises many kinds for broken files
            raise refuse(
                "Cannot read this image: the file looks truncated or is not an image "
                f"(PNG, JPEG, GIF, BMP, TIFF, WebP; {type(e).__name__}). Upload "
                "another one."
            ) from None
