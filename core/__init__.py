"""attnlab.core: the attention math, masks, modules, capture, training and weights."""

from . import masks, scores
from .attention import AttentionOutput, attention
from .masks import Mask

__all__ = ["attention", "AttentionOutput", "Mask", "masks", "scores"]
