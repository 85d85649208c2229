"""A Vision Transformer on attnlab's core blocks, and its registered builders.

Follows Dosovitskiy et al. 2021 (ViT: patch embedding by a strided convolution, a class token,
learned absolute position embeddings, a pre-norm encoder, a linear head on the class token)
with timm's options where they matter for attention maps: register tokens (Darcet et al.
2024, "Vision Transformers Need Registers"), global average pooling instead of the class token
(``global_pool="avg"``), non-square images and patch grids, and stochastic depth.

Position embeddings cover the patches only; prefix tokens (class, registers) carry none (timm's
``no_embed_class=True``, as in DeiT-III and the register models).

Names are API (state-dict keys and capture names): ``patch_embed.proj``, ``cls_token``,
``reg_token``, ``pos_embed``, ``encoder.blocks.{i}.attn``, ``encoder.norm``, ``head``.
``forward(images (B, C, H, W))`` returns logits; ``loss(batch)`` is the trainer's path;
``layout()`` is the :class:`~attnlab.core.layout.PatchLayout` of the token sequence.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.core.blocks import TransformerEncoder
from attnlab.core.config_checks import check_sizes
from attnlab.core.layout import PatchLayout
from attnlab.core.registry import register

__all__ = ["ViTConfig", "VisionTransformer", "POOLS", "vision_test", "vision_digits",
           "vision_locate", "vision_small"]  # fmt: skip

POOLS = ("token", "avg")


def _pair(v: Any, name: str) -> tuple[int, int]:
    t = tuple(v) if isinstance(v, (list, tuple)) else (v, v)
    if len(t) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in t):
        raise ValueError(f"{name} must be an int >= 1 or (height, width), got {v!r}")
    return t  # type: ignore[return-value]


@dataclass(frozen=True)
class ViTConfig:
    """Hyperparameters of :class:`VisionTransformer` (timm's vocabulary).

    Attributes:
        img_size: input size, an int (square) or ``[height, width]``.
        patch_size: patch size, an int or ``[height, width]``; divides ``img_size``.
        in_chans: input channels (1 greyscale, 3 RGB).
        num_classes: classes of the head.
        dim: model width.
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP width as a multiple of ``dim``.
        qkv_bias: bias in the query/key/value projection.
        dropout: dropout on embeddings, attention and MLP.
        drop_path_rate: stochastic depth, rising linearly to this rate over the blocks.
        class_token: prepend a class token.
        reg_tokens: number of register tokens after the class token.
        global_pool: ``"token"`` (classify the class token) or ``"avg"`` (mean of the patches).
        labels: class names by index (a list, so the JSON card round-trips it).
        mean, std: per-channel normalisation applied by the preprocessing of shipped models.
    """

    img_size: int | list[int] = 224
    patch_size: int | list[int] = 16
    in_chans: int = 3
    num_classes: int = 10
    dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dropout: float = 0.0
    drop_path_rate: float = 0.0
    class_token: bool = True
    reg_tokens: int = 0
    global_pool: str = "token"
    labels: list[str] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def image_hw(self) -> tuple[int, int]:
        return _pair(self.img_size, "img_size")

    @property
    def patch_hw(self) -> tuple[int, int]:
        return _pair(self.patch_size, "patch_size")

    @property
    def grid(self) -> tuple[int, int]:
        (h, w), (ph, pw) = self.image_hw, self.patch_hw
        return h // ph, w // pw

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    def __post_init__(self) -> None:
        check_sizes(self, "in_chans", "num_classes", "dim", "depth", "num_heads")
        (h, w), (ph, pw) = self.image_hw, self.patch_hw
        if h % ph or w % pw:
            raise ValueError(f"patch_size {(ph, pw)} must divide img_size {(h, w)}")
        if not isinstance(self.reg_tokens, int) or self.reg_tokens < 0:
            raise ValueError(f"reg_tokens must be an int >= 0, got {self.reg_tokens!r}")
        if self.global_pool not in POOLS:
            raise ValueError(f"global_pool must be one of {POOLS}, got {self.global_pool!r}")
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool='token' needs class_token=True (or use 'avg')")
        if self.labels is not None and len(self.labels) != self.num_classes:
            raise ValueError(f"labels has {len(self.labels)} names, num_classes={self.num_classes}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None and len(v) != self.in_chans:
                raise ValueError(f"{name} needs one value per channel ({self.in_chans})")


class VisionTransformer(nn.Module):
    """ViT classifier: ``forward(images (B, C, H, W)) -> logits (B, num_classes)``.

    Args:
        config: the hyperparameters.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(c.in_chans, c.dim, c.patch_hw, stride=c.patch_hw)
        rows, cols = c.grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if c.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, c.reg_tokens, c.dim)) if c.reg_tokens else None
        self.pos_embed = nn.Parameter(torch.randn(1, rows * cols, c.dim) * 0.02)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = TransformerEncoder(
            c.dim, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias,
            dropout=c.dropout, drop_path_rate=c.drop_path_rate, norm_eps=1e-6)  # fmt: skip
        self.head = nn.Linear(c.dim, c.num_classes)
        for p in (self.cls_token, self.reg_token):
            if p is not None:
                nn.init.normal_(p, std=1e-6)
        self.apply(_init_weights)

    @property
    def num_prefix_tokens(self) -> int:
        return self.config.num_prefix_tokens

    def layout(self) -> PatchLayout:
        """Where each token of the sequence sits: prefix tokens, then the patch grid."""
        c = self.config
        names = (("cls",) if c.class_token else ()) + tuple(
            f"reg{i + 1}" for i in range(c.reg_tokens)
        )
        return PatchLayout.create(c.grid, c.patch_hw, num_prefix=c.num_prefix_tokens,
                                  prefix_names=names, image_size=c.image_hw)  # fmt: skip

    def check_images(self, images: Tensor) -> None:
        """``ValueError`` unless ``images`` is a float (B, in_chans, H, W) tensor of the
        model's size."""
        c = self.config
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a tensor, got {type(images).__name__}")
        shape = (c.in_chans, *c.image_hw)
        if images.dim() != 4 or tuple(images.shape[1:]) != shape:
            raise ValueError(
                f"images must have shape (B, {shape[0]}, {shape[1]}, {shape[2]}), "
                f"got {tuple(images.shape)}"
            )
        if not images.dtype.is_floating_point:
            raise ValueError(f"images must be a float tensor, got {images.dtype}")

    def tokens(self, images: Tensor) -> Tensor:
        """The token sequence (B, num_prefix + rows*cols, dim) before the encoder."""
        x = self.patch_embed.proj(images)  # (B, dim, rows, cols)
        x = x.flatten(2).transpose(1, 2)  # (B, rows * cols, dim)
        x = x + self.pos_embed
        prefix = [
            p.expand(x.shape[0], -1, -1) for p in (self.cls_token, self.reg_token) if p is not None
        ]
        return self.drop(torch.cat([*prefix, x], dim=1))

    def features(self, images: Tensor) -> Tensor:
        """The encoder's output (B, L, dim)."""
        self.check_images(images)
        return self.encoder(self.tokens(images))

    def forward(self, images: Tensor) -> Tensor:
        x = self.features(images)
        if self.config.global_pool == "avg":
            x = x[:, self.num_prefix_tokens :].mean(1)
        else:
            x = x[:, 0]
        return self.head(x)

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy of the labels and accuracy."""
        logits = self(batch["image"])
        loss = F.cross_entropy(logits.float(), batch["label"])
        acc = (logits.argmax(-1) == batch["label"]).float().mean()
        return loss, {"acc": acc.detach()}


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _build(defaults: ViTConfig, overrides: dict[str, Any]) -> VisionTransformer:
    return VisionTransformer(dataclasses.replace(defaults, **overrides))


@register
def vision_test(**overrides: Any) -> VisionTransformer:
    """Smallest model for tests: 16x16 RGB, patch 4, dim 32, depth 2, 2 heads, 1 register."""
    return _build(ViTConfig(img_size=16, patch_size=4, in_chans=3, num_classes=4, dim=32,
                            depth=2, num_heads=2, reg_tokens=1), overrides)  # fmt: skip


@register
def vision_digits(**overrides: Any) -> VisionTransformer:
    """scikit-learn's 8x8 digits upsampled to 16x16 greyscale, patch 2 (an 8x8 grid)."""
    return _build(ViTConfig(img_size=16, patch_size=2, in_chans=1, num_classes=10, dim=64,
                            depth=4, num_heads=4, mlp_ratio=2.0), overrides)  # fmt: skip


@register
def vision_locate(**overrides: Any) -> VisionTransformer:
    """The generated localisation scenes: 48x48 RGB, patch 6 (an 8x8 grid)."""
    return _build(ViTConfig(img_size=48, patch_size=6, in_chans=3, num_classes=4, dim=64,
                            depth=4, num_heads=4, mlp_ratio=2.0), overrides)  # fmt: skip


@register
def vision_small(**overrides: Any) -> VisionTransformer:
    """A general 64x64 RGB model for ``attnlab train vision --data DIR`` (patch 8)."""
    return _build(ViTConfig(img_size=64, patch_size=8, in_chans=3, num_classes=10, dim=128,
                            depth=6, num_heads=4, drop_path_rate=0.1), overrides)  # fmt: skip
