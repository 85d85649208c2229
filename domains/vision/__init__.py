"""Vision domain: a Vision Transformer on attnlab's core (``VisionTransformer``), any timm ViT
made observable (``make_visible``), explanations measured against where objects are
(``explain_grid``, the pointing game), and trained classifiers that predict and explain
(``load_classifier``).
"""

from .classify import Classifier, load_classifier, shipped_models
from .data import LocateScenes, digits_split, image_folder_split
from .explain import METHODS, explain_grid, pointing_hits
from .images import MAX_PIXELS, MIN_SIDE, WORK_SIDE, read_image
from .model import VisionTransformer, ViTConfig
from .timm_bridge import VisibleAttention, load_timm, make_visible, read_state_dict, timm_layout

__all__ = [
    "make_visible",
    "load_classifier",
    "Classifier",
    "shipped_models",
    "VisibleAttention",
    "load_timm",
    "read_state_dict",
    "timm_layout",
    "ViTConfig",
    "VisionTransformer",
    "METHODS",
    "explain_grid",
    "pointing_hits",
    "read_image",
    "MIN_SIDE",
    "MAX_PIXELS",
    "WORK_SIDE",
    "LocateScenes",
    "digits_split",
    "image_folder_split",
]
