"""What every next-token model here shares: the ignored-target id, the training loss with its
accuracy, and GPT-2's weight initialisation (Radford et al. 2019: normal with std 0.02, zero
biases; nanoGPT's ``_init_weights``).

The toy model, the text and music decoders and the speech decoder all score "predict the next
token where a target is given": one loss, so their cards' figures mean the same thing.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["IGNORE", "token_loss", "init_gpt2_weights"]

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
