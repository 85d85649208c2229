"""Pre-norm transformer blocks and stacks: ``Block``, ``DecoderBlock``, ``TransformerEncoder``,
``TransformerDecoder``.

Pre-layer-norm residual blocks (Xiong et al. 2020, "On Layer Normalization in the Transformer
Architecture"; the layout of GPT-2, nanoGPT and timm's ViT): x + attn(norm(x)), x + mlp(norm(x)),
and a final norm after the stack. Names are state-dict keys and capture names:
``blocks.{i}.attn``, ``blocks.{i}.cross_attn``, ``blocks.{i}.mlp.fc1``, ``norm``.

Incremental decoding: ``make_cache()`` returns one cache per block; pass it as ``cache=`` with
only the new positions in ``x``. Absolute position embeddings belong to the model that embeds
the tokens (``core.positional``); ``pos=`` here selects a scheme acting inside attention.
"""

from __future__ import annotations

from torch import Tensor, nn

from .kv_cache import DecoderLayerCache, KVCache
from .masks import Mask
from .modules import MultiHeadAttention
from .positional import PositionScheme

__all__ = ["Mlp", "Block", "DecoderBlock", "TransformerEncoder", "TransformerDecoder"]


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout (timm's names)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm self-attention + MLP block: ``norm1``, ``attn``, ``norm2``, ``mlp``.

    Args mirror ``MultiHeadAttention``; ``mlp_ratio`` sets the MLP width (mlp_ratio * dim).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        causal: bool = False,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        mask: Mask | None = None,
        pos: str | PositionScheme | None = None,
        max_len: int = 2048,
        backend: str = "auto",
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(
            dim, num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim, qkv_bias=qkv_bias,
            dropout=dropout, causal=causal, mask=mask, pos=pos, max_len=max_len, backend=backend)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: Tensor, *, mask: Mask | None = None, attn_mask: Tensor | None = None,
                kv_cache: KVCache | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), mask=mask, attn_mask=attn_mask, kv_cache=kv_cache)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Pre-norm causal self-attention + cross-attention + MLP: ``norm1``, ``attn``, ``norm2``,
    ``cross_attn``, ``norm3``, ``mlp``. ``context_dim`` is the encoder width (default dim)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        context_dim: int | None = None,
        pos: str | PositionScheme | None = None,
        max_len: int = 2048,
        backend: str = "auto",
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(
            dim, num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim, qkv_bias=qkv_bias,
            dropout=dropout, causal=True, pos=pos, max_len=max_len, backend=backend)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.cross_attn = MultiHeadAttention(
            dim, num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim, qkv_bias=qkv_bias,
            dropout=dropout, cross=True, kdim=context_dim or dim, backend=backend)
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: Tensor, context: Tensor, *, mask: Mask | None = None,
                attn_mask: Tensor | None = None, context_mask: Mask | None = None,
                cache: DecoderLayerCache | None = None) -> Tensor:
        self_kv = cache.self_kv if cache is not None else None
        cross_kv = cache.cross_kv if cache is not None else None
        x = x + self.attn(self.norm1(x), mask=mask, attn_mask=attn_mask, kv_cache=self_kv)
        x = x + self.cross_attn(self.norm2(x), context, mask=context_mask, kv_cache=cross_kv)
        return x + self.mlp(self.norm3(x))


def _check_cache(cache, depth: int, kind: type) -> None:
    if cache is not None and (len(cache) != depth or not all(isinstance(c, kind) for c in cache)):
        raise ValueError(f"cache must be a list of {depth} {kind.__name__} (use make_cache())")


class TransformerEncoder(nn.Module):
    """A stack of ``depth`` pre-norm ``Block``s and a final ``norm``: (B, L, dim) -> (B, L, dim).

    With ``causal=True`` it is a decoder-only (GPT-style) stack and supports incremental
    decoding with ``cache=make_cache()``. Keyword args are passed to every ``Block``.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, **block_kw):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.dim, self.depth, self.num_heads = dim, depth, num_heads
        self.blocks = nn.ModuleList(Block(dim, num_heads, **block_kw) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=block_kw.get("norm_eps", 1e-5))

    def make_cache(self) -> list[KVCache]:
        return [KVCache() for _ in range(self.depth)]

    def forward(self, x: Tensor, *, mask: Mask | None = None, attn_mask: Tensor | None = None,
                cache: list[KVCache] | None = None) -> Tensor:
        _check_cache(cache, self.depth, KVCache)
        for i, blk in enumerate(self.blocks):
            x = blk(x, mask=mask, attn_mask=attn_mask,
                    kv_cache=cache[i] if cache is not None else None)
        return self.norm(x)


class TransformerDecoder(nn.Module):
    """A stack of ``depth`` pre-norm ``DecoderBlock``s and a final ``norm``.

    forward(x (B, L, dim), context (B, S, context_dim)) -> (B, L, dim). With
    ``cache=make_cache()`` pass only the new positions; the context is projected once.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, **block_kw):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.dim, self.depth, self.num_heads = dim, depth, num_heads
        self.blocks = nn.ModuleList(
            DecoderBlock(dim, num_heads, **block_kw) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=block_kw.get("norm_eps", 1e-5))

    def make_cache(self) -> list[DecoderLayerCache]:
        return [DecoderLayerCache() for _ in range(self.depth)]

    def forward(self, x: Tensor, context: Tensor, *, mask: Mask | None = None,
                attn_mask: Tensor | None = None, context_mask: Mask | None = None,
                cache: list[DecoderLayerCache] | None = None) -> Tensor:
        _check_cache(cache, self.depth, DecoderLayerCache)
        for i, blk in enumerate(self.blocks):
            x = blk(x, context, mask=mask, attn_mask=attn_mask, context_mask=context_mask,
                    cache=cache[i] if cache is not None else None)
        return self.norm(x)
