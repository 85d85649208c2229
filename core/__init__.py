"""attnlab.core: the attention math, masks, modules, capture, training and weights.

Only torch, numpy, safetensors, tqdm and the standard library are imported here (see
../shared/DESIGN.md); the trainer and the registry are reached as ``attnlab.core.train`` and
``attnlab.core.registry``.
"""

from . import analysis, masks, scores
from .attention import AttentionOutput, attention
from .blocks import Block, DecoderBlock, Mlp, TransformerDecoder, TransformerEncoder
from .capture import AttentionMaps, ablate_heads, record_attention
from .compat import MultiheadAttention
from .kv_cache import DecoderLayerCache, KVCache
from .layout import NoteLayout, PatchLayout, SpectrogramLayout, TextLayout, TokenLayout
from .masks import Mask
from .modules import MultiHeadAttention
from .positional import (
    ALiBiPosition,
    LearnedPositionalEmbedding,
    MusicRelativeAttention,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionalEmbedding,
)
from .registry import create, list_models, load

__all__ = [
    "attention",
    "AttentionOutput",
    "Mask",
    "masks",
    "scores",
    "analysis",
    "MultiHeadAttention",
    "MultiheadAttention",
    "Block",
    "DecoderBlock",
    "Mlp",
    "TransformerEncoder",
    "TransformerDecoder",
    "KVCache",
    "DecoderLayerCache",
    "SinusoidalPositionalEmbedding",
    "LearnedPositionalEmbedding",
    "RotaryEmbedding",
    "ALiBiPosition",
    "RelativePositionBias",
    "MusicRelativeAttention",
    "record_attention",
    "AttentionMaps",
    "ablate_heads",
    "TokenLayout",
    "TextLayout",
    "PatchLayout",
    "SpectrogramLayout",
    "NoteLayout",
    "create",
    "list_models",
    "load",
]
