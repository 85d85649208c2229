"""Transformer blocks and stacks: ``Mlp``, ``LayerScale``, ``DropPath``, ``Block``,
``DecoderBlock``, ``TransformerEncoder``, ``TransformerDecoder``.

Both residual layouts real checkpoints use:

* ``norm="pre"`` (Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture";
  GPT-2, nanoGPT, timm's ViT, Whisper): ``x + attn(norm(x))``, a final norm after the stack;
* ``norm="post"`` (Vaswani et al. 2017; BERT, MiniLM): ``norm(x + attn(x))``, no final norm.

Options follow timm's ``Block``: a bias flag per projection (``qkv_bias`` may be three flags, as
Whisper's key projection has no bias), layer scale (``init_values``; CaiT, Touvron et al. 2021;
DeiT-III, DINOv2), stochastic depth (``drop_path``; Huang et al. 2016), the MLP activation.
Names are state-dict keys and capture names, timm's where they exist: ``blocks.{i}.attn``,
``blocks.{i}.cross_attn``, ``blocks.{i}.mlp.fc1``, ``blocks.{i}.ls1.gamma``, ``norm``.

Incremental decoding: ``make_cache()`` returns one cache per block; pass it as ``cache=`` with
only the new positions in ``x``. Absolute position embeddings belong to the model that embeds
the tokens (``core.positional``); ``pos=`` here selects a scheme acting inside attention.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .kv_cache import DecoderLayerCache, KVCache, rollback_on_error
from .masks import Mask
from .modules import MultiHeadAttention
from .positional import PositionScheme

__all__ = ["Mlp", "LayerScale", "DropPath", "Block", "DecoderBlock", "TransformerEncoder",
           "TransformerDecoder", "ACTIVATIONS"]  # fmt: skip

#: activations by name: Hugging Face's ``hidden_act`` values map onto these
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,  # exact erf GELU (BERT, ViT, Whisper)
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),  # GPT-2's "gelu_new"
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "quick_gelu": lambda: _QuickGELU(),  # CLIP
}
NORMS = ("pre", "post")


class _QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def _activation(act: str | Callable[[], nn.Module]) -> nn.Module:
    if isinstance(act, str):
        if act not in ACTIVATIONS:
            raise ValueError(
                f"act must be one of {sorted(ACTIVATIONS)} or a module class, got {act!r}"
            )
        return ACTIVATIONS[act]()
    if callable(act):
        return act()
    raise TypeError(f"act must be a name or a module class, got {type(act).__name__}")


class Mlp(nn.Module):
    """fc1 -> activation -> dropout -> fc2 -> dropout (timm's names).

    Args:
        dim: input and output features. hidden: hidden features.
        act: activation name (see ``ACTIVATIONS``) or a module class.
        bias: bias in fc1 and fc2.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        dropout: float = 0.0,
        *,
        act: str | Callable[[], nn.Module] = "gelu",
        bias: bool = True,
    ):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = _activation(act)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class LayerScale(nn.Module):
    """Per-channel residual scale ``x * gamma``, gamma initialised to ``init_values``
    (CaiT, Touvron et al. 2021; timm's name ``gamma``)."""

    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, zero a sample's residual branch with
    probability ``p`` and scale the kept ones by 1 / (1 - p); the identity in eval."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _branch_tail(dim: int, init_values: float | None, drop_path: float):
    """The residual branch's layer scale and stochastic depth (identities when off)."""
    ls = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
    return ls, DropPath(drop_path) if drop_path > 0 else nn.Identity()


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be 'pre' or 'post', got {norm!r}")


class Block(nn.Module):
    """Self-attention + MLP block: ``norm1``, ``attn``, ``ls1``, ``norm2``, ``mlp``, ``ls2``.

    Args mirror ``MultiHeadAttention``, plus:
        norm: 'pre' (x + f(norm(x))) or 'post' (norm(x + f(x))).
        mlp_ratio: MLP width as a multiple of ``dim``; 0 builds an attention-only block (no
            ``norm2``/``mlp``), as in Elhage et al. 2021's attention-only transformers.
        proj_bias: bias in the attention's output projection. mlp_bias: bias in fc1/fc2.
        act: MLP activation (name or module class).
        init_values: layer scale's initial value; None = no layer scale.
        drop_path: stochastic depth rate of both residual branches.
        norm_eps: LayerNorm epsilon (BERT: 1e-12).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        norm: str = "pre",
        mlp_ratio: float = 4.0,
        qkv_bias: bool | Sequence[bool] = True,
        proj_bias: bool = True,
        mlp_bias: bool = True,
        act: str | Callable[[], nn.Module] = "gelu",
        init_values: float | None = None,
        drop_path: float = 0.0,
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
        _check_norm(norm)
        self.pre_norm = norm == "pre"
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(
            dim,
            num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            qkv_bias=qkv_bias,
            proj_bias=proj_bias,
            dropout=dropout,
            causal=causal,
            mask=mask,
            pos=pos,
            max_len=max_len,
            backend=backend,
        )
        self.ls1, self.drop_path1 = _branch_tail(dim, init_values, drop_path)
        if mlp_ratio < 0:
            raise ValueError(f"mlp_ratio must be >= 0, got {mlp_ratio}")
        self.mlp: Mlp | None = None
        if mlp_ratio > 0:
            self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
            self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout, act=act, bias=mlp_bias)
            self.ls2, self.drop_path2 = _branch_tail(dim, init_values, drop_path)

    def forward(
        self,
        x: Tensor,
        *,
        mask: Mask | None = None,
        attn_mask: Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> Tensor:
        def attn(h: Tensor) -> Tensor:
            return self.attn(h, mask=mask, attn_mask=attn_mask, kv_cache=kv_cache)

        if self.pre_norm:
            x = x + self.drop_path1(self.ls1(attn(self.norm1(x))))
            if self.mlp is None:
                return x
            return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        x = self.norm1(x + self.drop_path1(self.ls1(attn(x))))
        if self.mlp is None:
            return x
        return self.norm2(x + self.drop_path2(self.ls2(self.mlp(x))))


class DecoderBlock(nn.Module):
    """Causal self-attention + cross-attention + MLP: ``norm1``, ``attn``, ``norm2``,
    ``cross_attn``, ``norm3``, ``mlp`` (and ``ls1..3`` with layer scale).

    Args as ``Block``; ``kdim`` is the width of the context (the encoder's output; default dim),
    as in ``MultiHeadAttention``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        norm: str = "pre",
        mlp_ratio: float = 4.0,
        qkv_bias: bool | Sequence[bool] = True,
        proj_bias: bool = True,
        mlp_bias: bool = True,
        act: str | Callable[[], nn.Module] = "gelu",
        init_values: float | None = None,
        drop_path: float = 0.0,
        dropout: float = 0.0,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        kdim: int | None = None,
        pos: str | PositionScheme | None = None,
        max_len: int = 2048,
        backend: str = "auto",
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        _check_norm(norm)
        self.pre_norm = norm == "pre"
        attn_kw = dict(
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            qkv_bias=qkv_bias,
            proj_bias=proj_bias,
            dropout=dropout,
            backend=backend,
        )
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(
            dim, num_heads, causal=True, pos=pos, max_len=max_len, **attn_kw
        )
        self.ls1, self.drop_path1 = _branch_tail(dim, init_values, drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.cross_attn = MultiHeadAttention(
            dim, num_heads, cross=True, kdim=kdim or dim, **attn_kw
        )
        self.ls2, self.drop_path2 = _branch_tail(dim, init_values, drop_path)
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout, act=act, bias=mlp_bias)
        self.ls3, self.drop_path3 = _branch_tail(dim, init_values, drop_path)

    def forward(
        self,
        x: Tensor,
        context: Tensor,
        *,
        mask: Mask | None = None,
        attn_mask: Tensor | None = None,
        context_mask: Mask | None = None,
        cache: DecoderLayerCache | None = None,
    ) -> Tensor:
        self_kv = cache.self_kv if cache is not None else None
        cross_kv = cache.cross_kv if cache is not None else None
        branches = (
            (self.norm1, self.ls1, self.drop_path1,
             lambda h: self.attn(h, mask=mask, attn_mask=attn_mask, kv_cache=self_kv)),
            (self.norm2, self.ls2, self.drop_path2,
             lambda h: self.cross_attn(h, context, mask=context_mask, kv_cache=cross_kv)),
            (self.norm3, self.ls3, self.drop_path3, self.mlp),
        )  # fmt: skip
        for norm, ls, drop_path, f in branches:
            if self.pre_norm:
                x = x + drop_path(ls(f(norm(x))))
            else:
                x = norm(x + drop_path(ls(f(x))))
        return x


def _check_cache(cache, depth: int, kind: type) -> None:
    if cache is not None and (len(cache) != depth or not all(isinstance(c, kind) for c in cache)):
        raise ValueError(f"cache must be a list of {depth} {kind.__name__} (use make_cache())")


def _stack(
    block: type,
    dim: int,
    depth: int,
    num_heads: int,
    final_norm: bool | None,
    drop_path_rate: float,
    block_kw: dict,
) -> tuple[nn.ModuleList, nn.Module]:
    """``depth`` blocks with stochastic depth rising linearly to ``drop_path_rate`` (timm's
    schedule), and the final norm: on by default after pre-norm blocks, off after post-norm."""
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    if "drop_path" in block_kw:
        raise TypeError("stacks take drop_path_rate (rising over depth), not drop_path")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
    rates = [drop_path_rate * i / max(1, depth - 1) for i in range(depth)]
    blocks = nn.ModuleList(block(dim, num_heads, drop_path=r, **block_kw) for r in rates)
    if final_norm is None:
        final_norm = block_kw.get("norm", "pre") == "pre"
    norm = nn.LayerNorm(dim, eps=block_kw.get("norm_eps", 1e-5)) if final_norm else nn.Identity()
    return blocks, norm


class TransformerEncoder(nn.Module):
    """A stack of ``depth`` ``Block``s and a final ``norm``: (B, L, dim) -> (B, L, dim).

    With ``causal=True`` it is a decoder-only (GPT-style) stack and supports incremental
    decoding with ``cache=make_cache()``. Keyword args are passed to every ``Block``.

    Args:
        final_norm: LayerNorm after the last block (default: on for ``norm='pre'``, off for
            ``'post'``, whose blocks end in a norm already).
        drop_path_rate: stochastic depth rising linearly from 0 (first block) to this rate.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        *,
        final_norm: bool | None = None,
        drop_path_rate: float = 0.0,
        **block_kw,
    ):
        super().__init__()
        self.dim, self.depth, self.num_heads = dim, depth, num_heads
        self.blocks, self.norm = _stack(
            Block, dim, depth, num_heads, final_norm, drop_path_rate, block_kw
        )

    def make_cache(self, max_len: int | None = None) -> list[KVCache]:
        """One ``KVCache`` per block; ``max_len`` pre-allocates that many positions."""
        return [KVCache(max_len) for _ in range(self.depth)]

    def forward(
        self,
        x: Tensor,
        *,
        mask: Mask | None = None,
        attn_mask: Tensor | None = None,
        cache: list[KVCache] | None = None,
    ) -> Tensor:
        _check_cache(cache, self.depth, KVCache)
        with rollback_on_error(cache):  # a step that raises leaves every cache as it was
            for i, blk in enumerate(self.blocks):
                x = blk(
                    x,
                    mask=mask,
                    attn_mask=attn_mask,
                    kv_cache=cache[i] if cache is not None else None,
                )
        return self.norm(x)


class TransformerDecoder(nn.Module):
    """A stack of ``depth`` ``DecoderBlock``s and a final ``norm``.

    forward(x (B, L, dim), context (B, S, kdim)) -> (B, L, dim). With ``cache=make_cache()``
    pass only the new positions; the context is projected once. Arguments as
    ``TransformerEncoder``.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        *,
        final_norm: bool | None = None,
        drop_path_rate: float = 0.0,
        **block_kw,
    ):
        super().__init__()
        self.dim, self.depth, self.num_heads = dim, depth, num_heads
        self.blocks, self.norm = _stack(
            DecoderBlock, dim, depth, num_heads, final_norm, drop_path_rate, block_kw
        )

    def make_cache(self, max_len: int | None = None) -> list[DecoderLayerCache]:
        """One ``DecoderLayerCache`` per block; ``max_len`` pre-allocates the self-attention
        caches."""
        return [DecoderLayerCache(KVCache(max_len)) for _ in range(self.depth)]

    def forward(
        self,
        x: Tensor,
        context: Tensor,
        *,
        mask: Mask | None = None,
        attn_mask: Tensor | None = None,
        context_mask: Mask | None = None,
        cache: list[DecoderLayerCache] | None = None,
    ) -> Tensor:
        _check_cache(cache, self.depth, DecoderLayerCache)
        with rollback_on_error(cache):
            for i, blk in enumerate(self.blocks):
                x = blk(
                    x,
                    context,
                    mask=mask,
                    attn_mask=attn_mask,
                    context_mask=context_mask,
                    cache=cache[i] if cache is not None else None,
                )
        return self.norm(x)
