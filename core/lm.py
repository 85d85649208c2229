"""What every next-token model here shares: the ignored-target id, the training loss with its
accuracy, and GPT-2's weight initialisation (Radford et al. 2019: normal with std 0.02, zero
biases; nanoGPT's ``_init_weights``).

The toy model, the text and music decoders and the speech decoder all score "predict the next
token where a target is given": one loss, so their cards' figures mean the same thing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["IGNORE", "token_loss", "init_gpt2_weights", "check_token_ids"]

IGNORE = -100  # targets that are not scored (cross_entropy's ignore_index)


def token_loss(logits: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean cross-entropy (nats per scored token) of ``logits`` (..., V) against ``targets``
    (...), skipping ``IGNORE``; and the scored tokens' argmax accuracy, as the trainer's
    ``loss`` methods return them."""
    loss = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), ignore_index=IGNORE)
    scored = targets != IGNORE
    acc = (logits.argmax(-1) == targets)[scored].float().mean()
    return loss, {"acc": acc.detach()}


def init_gpt2_weights(m: nn.Module) -> None:
    """``model.apply(init_gpt2_weights)``: Linear and Embedding weights ~ N(0, 0.02), biases 0."""
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)


def check_token_ids(tokens: Tensor, vocab_size: int, max_len: int, offset: int = 0) -> None:
    """``ValueError`` (``TypeError`` for a non-tensor) unless ``tokens`` is a (B, L) integer
    tensor of ids in ``[0, vocab_size)`` that fits in ``max_len`` after ``offset`` cached
    positions: a model's input check, said in one sentence."""
    if not isinstance(tokens, Tensor):
        raise TypeError(f"tokens must be a tensor of ids, got {type(tokens).__name__}")
    if tokens.dim() != 2 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise ValueError(
            f"tokens must be a (B, L) integer tensor, got {tuple(tokens.shape)} {tokens.dtype}"
        )
    if tokens.shape[1] == 0:
        raise ValueError("tokens is empty (L = 0)")
    if offset + tokens.shape[1] > max_len:
        raise ValueError(
            f"sequence of {offset + tokens.shape[1]} tokens is longer than max_len={max_len}"
        )
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"token id {lo if lo < 0 else hi} out of range [0, {vocab_size})")
