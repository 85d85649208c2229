"""Data of the vision domain: scikit-learn's digits, generated localisation scenes, any
ImageFolder.

- ``digits_split``: the 1,797 8x8 handwritten digits that scikit-learn ships, split with
  ``train_test_split(test_size=0.2, random_state=0, stratify=y)``, upsampled to 16x16;
  training samples get a small random affine transform (rotation, shift, scale).
- ``LocateScenes``: 48x48 scenes generated on the fly, deterministic per (seed, index): a red
  *target* shape (circle, square, triangle or cross; the label) among 2-3 distractor shapes of
  other colours, on a background cut from the photographs scikit-image ships. Each sample keeps
  the target's pixel mask, the ground truth of the pointing game. Training and held-out scenes
  come from disjoint photographs (``TRAIN_PHOTOS`` / ``HELD_OUT_PHOTOS``) and seeds.
- ``image_folder_split``: a torchvision ``ImageFolder`` with train-time augmentation
  (random resized crop, flip, colour jitter) and a stratified held-out split.

Shapes are rasterised with numpy (implicit functions on a pixel grid): no drawing library.
Nothing is downloaded; scenes need no cache (each is a pure function of its seed and index).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["SHAPES", "TRAIN_PHOTOS", "HELD_OUT_PHOTOS", "DIGIT_LABELS", "digits_split",
           "DigitsSet", "LocateScenes", "shape_mask", "image_folder_split",
           "IMAGE_SUFFIXES"]  # fmt: skip

SHAPES = ("circle", "square", "triangle", "cross")
DIGIT_LABELS = [str(i) for i in range(10)]
TRAIN_PHOTOS = ("astronaut", "coffee", "chelsea", "hubble_deep_field", "immunohistochemistry",
                "brick", "grass")  # fmt: skip
HELD_OUT_PHOTOS = ("rocket", "gravel")
#: the target's colour and the distractors' palette (RGB in [0, 1])
TARGET_RGB = (0.9, 0.1, 0.1)
DISTRACTOR_RGB = ((0.1, 0.75, 0.2), (0.15, 0.3, 0.95), (0.95, 0.9, 0.1), (0.95, 0.95, 0.95),
                  (0.1, 0.85, 0.9))  # fmt: skip
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


# ------------------------------------------------------------------------------------------
# digits
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DigitsSplit:
    train_x: Tensor  # (N, 1, 16, 16) in [0, 1]
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


def upsample_digits(x: np.ndarray | Tensor, size: int = 16) -> Tensor:
    """8x8 digits with values 0..16 -> (N, 1, size, size) floats in [0, 1]."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(-1, 1, 8, 8) / 16.0
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)


@lru_cache(maxsize=2)
def digits_split(size: int = 16) -> DigitsSplit:
    """scikit-learn's digits, ``train_test_split(test_size=0.2, random_state=0, stratify=y)``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    xtr, xte, ytr, yte = train_test_split(d.data, d.target, test_size=0.2, random_state=0,
                                          stratify=d.target)  # fmt: skip
    return DigitsSplit(upsample_digits(xtr, size), torch.as_tensor(ytr),
                       upsample_digits(xte, size), torch.as_tensor(yte))  # fmt: skip


class DigitsSet(Dataset):
    """Digits as ``{"image": (1, H, W), "label": int}``, normalised by ``mean``/``std``; with
    ``augment``, a random affine transform per sample (rotation +-12 deg, shift 1/8, scale
    0.9-1.1)."""

    def __init__(self, x: Tensor, y: Tensor, mean: float, std: float, augment: bool = False):
        self.x, self.y, self.mean, self.std, self.augment = x, y, mean, std, augment
        self.tf = None
        if augment:
            from torchvision.transforms import v2

            self.tf = v2.RandomAffine(degrees=12, translate=(0.125, 0.125), scale=(0.9, 1.1))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        img = self.x[i]
        if self.tf is not None:
            img = self.tf(img)
        return {"image": (img - self.mean) / self.std, "label": self.y[i]}


# ------------------------------------------------------------------------------------------
# localisation scenes
# ------------------------------------------------------------------------------------------
def shape_mask(shape: str, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    """Boolean (size, size) mask of ``shape`` centred at (cy, cx) with half-extent ``r``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        s = r * 0.85
        return (np.abs(dy) <= s) & (np.abs(dx) <= s)
    if shape == "triangle":  # apex up; the half-width grows linearly to r at the base
        t = (dy + r) / (2 * r)
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * r)
    if shape == "cross":
        w = r * 0.35
        return ((np.abs(dy) <= r) & (np.abs(dx) <= w)) | ((np.abs(dx) <= r) & (np.abs(dy) <= w))
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


@lru_cache(maxsize=16)
def _photo_pyramid(name: str, size: int) -> tuple[np.ndarray, ...]:
    """A scikit-image photograph (float RGB in [0, 1]) at three scales whose short side is 2x,
    3x and 4x the scene size: a crop of ``size`` pixels covers 1/2 to 1/4 of the photo."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    t = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1)[None]
    out = []
    for k in (2, 3, 4):
        s = k * size / min(t.shape[-2:])
        hw = (max(size, round(t.shape[-2] * s)), max(size, round(t.shape[-1] * s)))
        small = F.interpolate(t, size=hw, mode="bilinear", antialias=True, align_corners=False)
        out.append(small[0].permute(1, 2, 0).numpy())
    return tuple(out)


class LocateScenes(Dataset):
    """Generated localisation scenes: ``{"image": (3, S, S) normalised, "label": int,
    "mask": (S, S) bool}``; sample ``i`` is a pure function of (``seed``, ``i``).

    Args:
        n: number of scenes.
        split: ``"train"`` (photos ``TRAIN_PHOTOS``) or ``"test"`` (``HELD_OUT_PHOTOS``).
        seed: base seed; the train and test streams use disjoint seeds for the same ``seed``.
        size: scene side in pixels.
        distractors: (min, max) number of distractor shapes.
        mean, std: per-channel normalisation of the returned image.
    """

    def __init__(self, n: int, split: str = "train", seed: int = 0, size: int = 48,
                 distractors: tuple[int, int] = (2, 3), mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.25, 0.25, 0.25)):  # fmt: skip
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if n < 1 or size < 24:
            raise ValueError(f"need n >= 1 and size >= 24, got n={n}, size={size}")
        self.n, self.split, self.size = int(n), split, int(size)
        self.seed = 2 * int(seed) + (split == "test")
        self.photos = TRAIN_PHOTOS if split == "train" else HELD_OUT_PHOTOS
        self.distractors = tuple(distractors)
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return self.n

    def scene(self, i: int) -> tuple[np.ndarray, int, np.ndarray]:
        """(image (S, S, 3) float in [0, 1], label, target mask (S, S) bool) of scene ``i``."""
        if not 0 <= i < self.n:
            raise IndexError(f"scene {i} out of range [0, {self.n})")
        rng = np.random.default_rng([self.seed, i])
        S = self.size
        pyramid = _photo_pyramid(self.photos[rng.integers(len(self.photos))], S)
        photo = pyramid[rng.integers(len(pyramid))]
        y0, x0 = rng.integers(photo.shape[0] - S + 1), rng.integers(photo.shape[1] - S + 1)
        img = photo[y0 : y0 + S, x0 : x0 + S].copy()
        if rng.random() < 0.5:
            img = img[:, ::-1]
        img = 0.15 + 0.7 * img  # keep the shapes' colours distinct from the extremes
        label = int(rng.integers(len(SHAPES)))
        k = int(rng.integers(self.distractors[0], self.distractors[1] + 1))
        placed: list[tuple[float, float, float]] = []
        target_mask = None
        for j in range(k + 1):
            for _ in range(100):  # rejection sampling: shapes never overlap
                r = float(rng.uniform(0.11, 0.17) * S)
                cy, cx = rng.uniform(r + 1, S - r - 1, size=2)
                if all(
                    (cy - py) ** 2 + (cx - px) ** 2 > (r + pr + 2) ** 2 for py, px, pr in placed
                ):
                    break
            placed.append((cy, cx, r))
            shape = SHAPES[label] if j == 0 else SHAPES[int(rng.integers(len(SHAPES)))]
            colour = TARGET_RGB if j == 0 else DISTRACTOR_RGB[rng.integers(len(DISTRACTOR_RGB))]
            m = shape_mask(shape, S, cy, cx, r)
            jitter = rng.uniform(-0.08, 0.08, size=3)
            img[m] = np.clip(np.asarray(colour) + jitter, 0, 1)
            if j == 0:
                target_mask = m
        return img.astype(np.float32), label, target_mask

    def normalise(self, img: np.ndarray) -> Tensor:
        """(S, S, 3) floats in [0, 1] -> the model's (3, S, S) input."""
        return (torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1) - self.mean) / self.std

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        img, label, mask = self.scene(i)
        return {"image": self.normalise(img), "label": torch.tensor(label),
                "mask": torch.from_numpy(mask)}  # fmt: skip

    def batch(self, indices: Sequence[int]) -> dict[str, Tensor]:
        items = [self[i] for i in indices]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}


# ------------------------------------------------------------------------------------------
# ImageFolder
# ------------------------------------------------------------------------------------------
class _Subset(Dataset):
    """Samples ``indices`` of an ImageFolder through ``transform``, as dicts."""

    def __init__(self, folder, indices: Sequence[int], transform):
        self.folder, self.indices, self.transform = folder, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        path, label = self.folder.samples[self.indices[i]]
        img = self.folder.loader(path)
        return {"image": self.transform(img), "label": torch.tensor(label)}


def folder_transforms(img_size: int, mean: Sequence[float], std: Sequence[float]):
    """(train transform with augmentation, eval transform) of PIL images."""
    from torchvision.transforms import v2

    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    train = v2.Compose(
        [
            v2.RGB(),
            v2.RandomResizedCrop(img_size, scale=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(0.2, 0.2, 0.2),
            *tail,
        ]
    )
    evaluate = v2.Compose([v2.RGB(), v2.Resize(img_size, antialias=True), v2.CenterCrop(img_size),
                           *tail])  # fmt: skip
    return train, evaluate


def image_folder_split(path: str | Path, img_size: int, held_out: float = 0.2, seed: int = 0,
                       mean: Sequence[float] = (0.5, 0.5, 0.5),
                       std: Sequence[float] = (0.25, 0.25, 0.25)):  # fmt: skip
    """(train set, held-out set, class names) of an ImageFolder (one sub-folder per class),
    split per class (stratified) with ``held_out`` of each class's images held out."""
    from torchvision.datasets import ImageFolder

    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"--data {root}: give a folder with one sub-folder of images per class")
    try:
        folder = ImageFolder(str(root), is_valid_file=lambda p: p.lower().endswith(IMAGE_SUFFIXES))
    except (FileNotFoundError, RuntimeError) as e:
        raise ValueError(f"--data {root}: no images found in class sub-folders ({e})") from None
    if len(folder.classes) < 2:
        raise ValueError(f"--data {root}: found {len(folder.classes)} class folder(s); need 2+")
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be in (0, 1), got {held_out}")
    rng = np.random.default_rng(seed)
    targets = np.asarray(folder.targets)
    train_idx, test_idx = [], []
    for c in range(len(folder.classes)):
        idx = rng.permutation(np.nonzero(targets == c)[0])
        k = max(1, round(held_out * len(idx))) if len(idx) > 1 else 0
        test_idx += idx[:k].tolist()
        train_idx += idx[k:].tolist()
    if not test_idx:
        raise ValueError(f"--data {root}: too few images to hold any out")
    tr, ev = folder_transforms(img_size, mean, std)
    return _Subset(folder, train_idx, tr), _Subset(folder, test_idx, ev), list(folder.classes)
