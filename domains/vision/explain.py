"""Explanations of a ViT's decision as scores on its patch grid, and the pointing game.

One function computes every explanation the demo, the public API, the training probes and the
benchmark report, so the numbers on the weights cards are those of what users see:

- ``"rollout"``: attention rollout (Abnar & Zuidema 2020), the class token's row;
- ``"gradient_rollout"``: gradient-weighted rollout for a class (Chefer, Gur & Wolf 2021);
- ``"cls_attention"``: the class token's attention in one layer (default the last), one head
  or the mean of the heads (Caron et al. 2021 show it for DINO).

Models without a class token (global average pooling) use the mean over patch queries instead
of the class token's row. Prefix tokens (class, distillation, registers) are dropped from the
keys; the rest is reshaped to the grid of the model's :class:`~attnlab.core.layout.PatchLayout`.

Pointing game (Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop"): a hit
when the highest-scoring patch overlaps the object's mask (any pixel of its box).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnlab.core.analysis import attention_rollout, gradient_rollout
from attnlab.core.capture import attention_modules, record_attention
from attnlab.core.layout import PatchLayout

__all__ = ["METHODS", "explain_grid", "pointing_hits", "query_row"]

METHODS = ("rollout", "gradient_rollout", "cls_attention")


def query_row(a: Tensor, layout: PatchLayout, has_cls: bool) -> Tensor:
    """(B, L, L) -> (B, rows, cols): the class token's row (else the mean over patch queries)
    over the patch keys."""
    p = layout.num_prefix
    row = a[:, 0] if has_cls else a[:, p:].mean(1)
    return row[:, p:].reshape(row.shape[0], *layout.grid)


def explain_grid(model: nn.Module, images: Tensor, layout: PatchLayout, method: str = "rollout",
                 *, target: int | Tensor | None = None, layer: int = -1, head: int | None = None,
                 has_cls: bool = True) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(scores (B, rows, cols), logits (B, classes)) for ``images``.

    Args:
        model: a model whose attention modules are attnlab's (a ViT here, or a timm model after
            ``make_visible``), each block's self-attention in order.
        images: the model's input batch.
        layout: the token layout (prefix count and grid).
        method: one of ``METHODS``.
        target: the class for ``gradient_rollout`` (an int or a (B,) tensor); default the
            predicted class.
        layer, head: for ``cls_attention``: the layer index and a head (None: the heads' mean).
        has_cls: the model has a class token at position 0.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    names = [n for n, _ in attention_modules(model)]
    if method == "gradient_rollout":
        with torch.enable_grad(), record_attention(model, retain_grad=True) as maps:
            logits = model(images)
            cls = (
                logits.argmax(-1)
                if target is None
                else torch.as_tensor(target).expand(logits.shape[0])
            )
            logits.gather(1, cls[:, None].long()).sum().backward()
        grads = [maps.grad(n) for n in names]
        if any(g is None for g in grads):
            raise ValueError("gradient rollout: an attention map received no gradient")
        attn = [maps[n].detach() for n in names]
        r = gradient_rollout(attn, grads)
        model.zero_grad(set_to_none=True)
        return query_row(r, layout, has_cls).float(), logits.detach()
    with torch.no_grad():
        if method == "rollout":
            with record_attention(model, dtype=torch.float32) as maps:
                logits = model(images)
            r = attention_rollout([maps[n] for n in names])
            return query_row(r, layout, has_cls), logits
        if not -len(names) <= layer < len(names):
            raise ValueError(f"layer {layer} out of range: the model has {len(names)} layers")
        with record_attention(model, layers=[names[layer]]) as maps:
            logits = model(images)
        w = maps[names[layer]].float()  # (B, H, L, L)
        if head is not None:
            if not -w.shape[1] <= head < w.shape[1]:
                raise ValueError(f"head {head} out of range: {w.shape[1]} heads")
            w = w[:, head]
        else:
            w = w.mean(1)
        return query_row(w, layout, has_cls), logits


def pointing_hits(scores: Tensor, masks: Tensor, layout: PatchLayout) -> Tensor:
    """(B,) bool: the highest-scoring patch of ``scores`` (B, rows, cols) overlaps ``masks``
    (B, H, W) (any pixel of its box)."""
    B, rows, cols = scores.shape
    i = scores.reshape(B, -1).argmax(-1)
    hits = torch.zeros(B, dtype=torch.bool)
    for b in range(B):
        x0, y0, x1, y1 = layout.box(layout.num_prefix + int(i[b]))
        hits[b] = bool(masks[b, y0:y1, x0:x1].any())
    return hits
