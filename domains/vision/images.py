"""Turning whatever a user gives into an image array, with clear refusals.

``read_image(x)`` accepts a PIL image of any mode (1, L, LA, P, RGB, RGBA, CMYK, I, I;16, F...),
a numpy array or a torch tensor ((H, W), (H, W, C) or (C, H, W), C in 1, 3, 4; uint8, uint16,
bool or float in [0, 1]) or a path / bytes of an image file, and returns float32 RGB or grey
pixels in [0, 1], shape (H, W, C). Transparency is composited over white; 16-bit and 32-bit
integer images are scaled by their type's range (``I`` images by their own maximum).

Limits: each side at least ``MIN_SIDE`` pixels; images of up to ``MAX_PIXELS`` pixels are
accepted and downscaled (antialiased) so that the longer side is at most ``WORK_SIDE``; larger
ones are refused before their pixels are decoded. Truncated or non-image files, empty arrays and
non-finite values raise ``ValueError`` with a sentence saying what is wrong.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MIN_SIDE", "MAX_PIXELS", "WORK_SIDE", "read_image", "to_channels", "resize"]

MIN_SIDE = 4
MAX_PIXELS = 50_000_000
WORK_SIDE = 2048


def _check_size(h: int, w: int) -> None:
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"the image is {w}x{h} pixels: give one at least {MIN_SIDE}x{MIN_SIDE}")
    if h * w > MAX_PIXELS:
        raise ValueError(
            f"the image is {w}x{h} pixels ({h * w / 1e6:.0f} megapixels): the limit "
            f"is {MAX_PIXELS / 1e6:.0f} megapixels; downscale it first"
        )


def _from_pil(img: Any) -> np.ndarray:
    from PIL import Image

    _check_size(img.height, img.width)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        a = np.asarray(img, dtype=np.float32) / 65535.0
        return a[..., None]
    if mode == "I":
        a = np.asarray(img, dtype=np.float64)
        top = a.max()
        return (a / top if top > 0 else a).astype(np.float32)[..., None]
    if mode == "F":
        return _from_array(np.asarray(img, dtype=np.float32))
    if mode in ("1", "L"):
        return np.asarray(img.convert("L"), dtype=np.float32)[..., None] / 255.0
    if mode in ("LA", "La", "PA", "P", "RGBA", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _from_array(a: np.ndarray) -> np.ndarray:
    if a.size == 0:
        raise ValueError(f"the image array is empty (shape {a.shape})")
    if a.ndim == 3 and a.shape[-1] not in (1, 3, 4) and a.shape[0] in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # (C, H, W) -> (H, W, C)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"an image array must be (H, W), (H, W, C) or (C, H, W) with C in "
            f"1, 3, 4; got shape {a.shape}"
        )
    _check_size(a.shape[0], a.shape[1])
    if a.dtype == np.bool_:
        a = a.astype(np.float32)
    elif a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float64)
        lo, hi = a.min(), a.max()
        if lo < 0 or hi > 255:
            raise ValueError(
                f"integer image values must lie in 0..255 (uint8) or use uint16; got {lo:g}..{hi:g}"
            )
        a = (a / 255.0).astype(np.float32)
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise ValueError("the image holds NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"float image values must lie in [0, 1], got {lo:g}..{hi:g}")
        a = a.clip(0, 1)
    else:
        raise ValueError(f"unsupported image array dtype {a.dtype}")
    if a.shape[-1] == 4:  # straight alpha over white
        alpha = a[..., 3:]
        a = a[..., :3] * alpha + (1 - alpha)
    return a


def _open_file(data: bytes | str | Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    name = "the upload" if isinstance(data, bytes) else Path(data).name
    if not isinstance(data, bytes) and not Path(data).is_file():
        raise ValueError(f"{name!r} is not a file")
    src = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    try:
        with Image.open(src) as img:
            _check_size(img.height, img.width)  # from the header: nothing decoded yet
            img.load()
            return _from_pil(img)
    except UnidentifiedImageError:
        raise ValueError(
            f"{name} is not an image file PIL can read (PNG, JPEG, GIF, BMP, TIFF, WebP...)"
        ) from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(
            f"{name} could not be decoded: it looks truncated or corrupt ({e})"
        ) from None


def resize(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, C) floats resized (bilinear, antialiased when shrinking) to ``hw``."""
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]
    t = F.interpolate(
        t,
        size=hw,
        mode="bilinear",
        align_corners=False,
        antialias=hw[0] < a.shape[0] or hw[1] < a.shape[1],
    )
    return t[0].permute(1, 2, 0).clamp(0, 1).numpy()


def read_image(image: Any) -> np.ndarray:
    """float32 pixels (H, W, 1 or 3) in [0, 1] of ``image``, the longer side at most
    ``WORK_SIDE`` (see the module docstring for what is accepted)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        a = _from_pil(image)
    elif isinstance(image, torch.Tensor):
        a = _from_array(image.detach().cpu().numpy())
    elif isinstance(image, np.ndarray):
        a = _from_array(image)
    elif isinstance(image, (str, Path, bytes)):
        a = _open_file(image)
    else:
        raise ValueError(
            f"an image must be a PIL image, numpy array, tensor or file path; got "
            f"{type(image).__name__}"
        )
    h, w = a.shape[:2]
    if max(h, w) > WORK_SIDE:
        s = WORK_SIDE / max(h, w)
        a = resize(a, (max(1, round(h * s)), max(1, round(w * s))))
    return a


def to_channels(a: np.ndarray, c: int) -> np.ndarray:
    """(H, W, 1|3) -> (H, W, c): grey to RGB by repetition, RGB to grey by luminance (ITU-R
    601-2, as PIL's ``convert("L")``)."""
    if a.shape[-1] == c:
        return a
    if c == 3:
        return np.repeat(a, 3, axis=-1)
    if c == 1:
        return (a @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    raise ValueError(f"models with {c} input channels are not supported")
