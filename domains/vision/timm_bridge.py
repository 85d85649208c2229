"""Make any timm Vision Transformer observable: its attention runs through attnlab's core.

``make_visible(model)`` swaps every ``timm.layers.Attention`` (the layer of timm's ViT, DeiT,
distilled DeiT, DeiT-III, the register and GAP variants and the hybrids) for a
:class:`VisibleAttention`: a :class:`~attnlab.core.modules.MultiHeadAttention` that holds the
very same submodules (``qkv``, ``q_norm``, ``k_norm``, ``norm``, ``gate``, ``proj``), so the
state-dict keys and the outputs are timm's, and ``record_attention(model)`` yields one map per
block. timm's fused path never materialises the weights (hooks on ``attn_drop`` see nothing);
here the fused kernel stays the default and recording switches only the chosen modules.

Attention layers with another computation (EVA's rotary ``AttentionRope``, BEiT's relative
position bias, Swin's windows, ...) are refused with a message naming the class.

``load_timm(name, checkpoint=path)`` builds a timm model without downloading anything and loads
a state dict the user gives: a safetensors file, or a ``.pth``/``.pt``/``.bin`` state dict read
with ``torch.load(weights_only=True)`` (tensors only: no pickled code runs).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.core.attention import attention
from attnlab.core.modules import MultiHeadAttention

__all__ = ["VisibleAttention", "make_visible", "load_timm", "read_state_dict", "prefix_names",
           "timm_layout"]  # fmt: skip


class VisibleAttention(MultiHeadAttention):
    """timm's ``Attention`` computed by attnlab's core: same submodules, same outputs.

    Built with :meth:`from_timm`, which moves the timm layer's modules (not copies) into it.
    ``forward(x, attn_mask=None, is_causal=False)`` has timm's signature.
    """

    @classmethod
    def from_timm(cls, layer: nn.Module) -> VisibleAttention:
        """The observable twin of timm's ``Attention`` ``layer`` (sharing its parameters)."""
        qkv: nn.Linear = layer.qkv
        dim = qkv.in_features
        self = cls(dim, layer.num_heads, head_dim=layer.head_dim,
                   qkv_bias=qkv.bias is not None, proj_bias=layer.proj.bias is not None,
                   dropout=float(layer.attn_drop.p))  # fmt: skip
        self.scale = float(layer.scale)
        self.qkv, self.q_norm, self.k_norm = qkv, layer.q_norm, layer.k_norm
        self.attn_drop, self.norm, self.proj, self.proj_drop = (
            layer.attn_drop,
            layer.norm,
            layer.proj,
            layer.proj_drop,
        )
        self.gate = getattr(layer, "gate", None)
        for n in ("qkv", "q_norm", "k_norm", "attn_drop", "norm", "gate", "proj", "proj_drop"):
            mod = self._modules.pop(n, None)  # re-added in timm's order: same state-dict order
            if mod is not None:
                self._modules[n] = mod
        self.fused_attn = bool(getattr(layer, "fused_attn", True))
        self.attn_dim = self.num_heads * self.head_dim
        return self.to(qkv.weight.device)

    def project(self, x: Tensor, context: Tensor | None = None, kv_cache: Any = None):
        q, k, v, offset = super().project(x, context, kv_cache)
        return self.q_norm(q), self.k_norm(k), v, offset

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:  # type: ignore[override]
        B, N, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        q, k, v, offset = self.project(x)
        args = self.attention_args(q, k.shape[2], offset, None, attn_mask)
        args["dropout_p"] = self.attn_drop.p if self.training else 0.0
        args["is_causal"] = bool(is_causal)
        if self._observer is None:
            o = attention(q, k, v, **args)
        else:
            o = self._observer(self, q, k, v, args)
        o = self.norm(o.transpose(1, 2).reshape(B, N, self.attn_dim))  # (B, H, N, D) -> (B, N, HD)
        if gate is not None:
            o = o * gate
        return self.proj_drop(self.proj(o))


def _timm_attention() -> type:
    from timm.layers import Attention

    return Attention


def make_visible(model: nn.Module, strict: bool = True) -> nn.Module:
    """Swap every timm ``Attention`` in ``model`` for a :class:`VisibleAttention`, in place.

    Args:
        model: a timm model (or any module containing timm ``Attention`` layers).
        strict: refuse models that hold other attention layers, which would stay unrecorded.

    Returns:
        ``model`` itself, changed in place (its state dict is unchanged).

    Raises:
        ValueError: no timm ``Attention`` found, a subclass that computes attention its own way,
            or (``strict``) other attention layers (named by class).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"make_visible takes a torch module (a timm model), got {type(model).__name__}"
        )
    Attention = _timm_attention()
    swaps, others = [], set()
    for name, m in model.named_modules():
        if isinstance(m, VisibleAttention):
            continue
        if isinstance(m, Attention):
            if type(m).forward is not Attention.forward:
                raise ValueError(
                    f"{name} is a {type(m).__module__}.{type(m).__name__}, a timm "
                    "Attention subclass with its own forward; make_visible "
                    "supports timm.layers.Attention as ViT/DeiT use it"
                )
            swaps.append(name)
        elif type(m).__name__.endswith("Attention") or type(m).__name__ in (
            "AttentionRope",
            "WindowAttention",
            "DiffAttention",
        ):
            others.add(f"{type(m).__module__}.{type(m).__name__}")
    if strict and others:
        raise ValueError(
            f"{type(model).__name__} uses attention layers make_visible cannot run "
            f"through attnlab's core: {', '.join(sorted(others))} (supported: "
            "timm.layers.Attention, as in ViT, DeiT, DeiT-III, register, GAP and "
            "hybrid ViTs)"
        )
    if not swaps and any(isinstance(m, VisibleAttention) for m in model.modules()):
        return model  # already visible
    if not swaps:
        raise ValueError(
            f"{type(model).__name__} contains no timm.layers.Attention layer; "
            "make_visible supports timm's ViT family (ViT, DeiT, DeiT-III, "
            "registers, GAP, hybrids)"
        )
    for name in swaps:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        new = VisibleAttention.from_timm(old)
        new.train(old.training)
        setattr(parent, child, new)
    return model


def prefix_names(model: nn.Module) -> tuple[str, ...]:
    """Names of a timm ViT's prefix tokens: ``cls``, ``dist``, ``reg1``..."""
    n = int(getattr(model, "num_prefix_tokens", 0))
    names: list[str] = []
    if getattr(model, "cls_token", None) is not None:
        names.append("cls")
    if getattr(model, "dist_token", None) is not None:
        names.append("dist")
    names += [f"reg{i + 1}" for i in range(n - len(names))]
    return tuple(names[:n])


def timm_layout(model: nn.Module, image_hw: tuple[int, int]):
    """The :class:`~attnlab.core.layout.PatchLayout` of a timm ViT's tokens for an input of
    ``image_hw`` pixels (the grid from its patch embedding, non-square grids included)."""
    from attnlab.core.layout import PatchLayout

    pe = model.patch_embed
    grid = (
        tuple(pe.dynamic_feat_size(image_hw))
        if getattr(pe, "dynamic_img_size", False)
        else tuple(pe.grid_size)
    )
    h, w = image_hw
    step = (h // grid[0], w // grid[1])
    names = prefix_names(model)
    return PatchLayout.create(grid, step, num_prefix=len(names), prefix_names=names,
                              image_size=(h, w))  # fmt: skip


# ------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------
def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a safetensors file, or from a ``.pth``/``.pt``/``.bin`` file read with
    ``torch.load(weights_only=True)`` (tensors only; nested ``{"state_dict"|"model": ...}`` and a
    ``module.`` prefix are unwrapped). ``ValueError`` with a sentence for anything else."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"checkpoint {str(path)!r} is not a file")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd: Any = load_file(str(p))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise ValueError(
                f"checkpoint {p.name} is not a readable safetensors file ({e})"
            ) from None
    elif p.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 -- pickle and zip errors of every kind
            raise ValueError(
                f"checkpoint {p.name} is not a state dict torch can load with "
                f"weights_only=True ({type(e).__name__}); save model.state_dict() "
                "or use safetensors"
            ) from None
    else:
        raise ValueError(
            f"checkpoint {p.name}: use a .safetensors file or a .pth/.pt/.bin state dict"
        )
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"checkpoint {p.name} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


@functools.lru_cache(maxsize=1)
def _timm_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


def count_params(name: str, **kwargs: Any) -> int | None:
    """Parameters of timm model ``name`` built on the meta device (no memory, no weights), or
    None where that build fails."""
    import timm

    try:
        with torch.device("meta"):
            m = timm.create_model(name, pretrained=False, **kwargs)
    except Exception:  # noqa: BLE001 -- the real build reports the reason
        return None
    return sum(p.numel() for p in m.parameters())


def load_timm(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    visible: bool = True,
    max_params: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A timm model by name, never downloading: random weights, or ``checkpoint``'s.

    Args:
        name: a timm model name (``timm.list_models()``).
        checkpoint: a state dict file (see :func:`read_state_dict`); the class count is read
            from its ``head.weight`` unless ``num_classes`` is given.
        visible: apply :func:`make_visible`.
        max_params: refuse models with more parameters (counted on the meta device first).
        **kwargs: passed to ``timm.create_model`` (e.g. ``img_size``, ``num_classes``).

    Returns:
        the model in eval mode.
    """
    import timm

    if not isinstance(name, str) or name not in _timm_names():
        raise ValueError(f"{name!r} is not a timm model name (see timm.list_models())")
    sd = read_state_dict(checkpoint) if checkpoint is not None else None
    if sd is not None and "num_classes" not in kwargs:
        head = sd.get("head.weight")
        kwargs["num_classes"] = int(head.shape[0]) if head is not None else 0
    if max_params is not None:
        n = count_params(name, **kwargs)
        if n is not None and n > max_params:
            raise ValueError(
                f"{name} has {n / 1e6:.0f} M parameters; this server takes models "
                f"of up to {max_params / 1e6:.0f} M: choose a smaller one"
            )
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        raise ValueError(f"timm could not build {name!r} with {kwargs}: {e}") from None
    if sd is not None:
        try:
            from timm.models import vision_transformer as vt

            if isinstance(model, vt.VisionTransformer):
                sd = vt.checkpoint_filter_fn(sd, model)  # e.g. resizes position embeddings
            missing, unexpected = model.load_state_dict(sd, strict=False)
        except (RuntimeError, KeyError, ValueError) as e:
            raise ValueError(f"checkpoint does not fit {name}: {str(e).splitlines()[0]}") from None
        if missing or unexpected:
            raise ValueError(
                f"checkpoint does not fit {name}: missing {list(missing)[:4]}, "
                f"unexpected {list(unexpected)[:4]}"
            )
    if visible:
        make_visible(model)
    return model.eval()
