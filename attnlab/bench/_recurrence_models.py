"""The two models of ``attnlab bench recurrence`` and how to read where they look.

- :class:`AttentionRecall`: token embedding, a causal pre-norm
  :class:`attnlab.core.blocks.TransformerEncoder` with rotary positions (RoPE, Su et al. 2021),
  linear head;
- :class:`LSTMRecall`: token embedding, one ``nn.LSTM`` layer (Hochreiter & Schmidhuber 1997),
  linear head, sized by :func:`lstm_hidden_for` to the attention model's parameter count;
- :func:`recall_loss`: the trainer's ``loss_fn`` for :func:`attnlab.core.toy.recall_task`;
- :func:`attention_offsets` reads the weights recorded by ``record_attention``
  (:mod:`attnlab.core.capture`); :func:`saliency_hit_rate` is the gradient attribution
  (Simonyan et al. 2014) that works for both models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.core.blocks import TransformerEncoder
from attnlab.core.capture import record_attention
from attnlab.core.positional import RotaryEmbedding
from attnlab.core.toy import IGNORE

__all__ = ["AttentionRecall", "LSTMRecall", "count_params", "lstm_hidden_for", "recall_loss",
           "attention_offsets", "saliency_hit_rate"]  # fmt: skip


class AttentionRecall(nn.Module):
    """Token embedding, a causal pre-norm encoder with RoPE, linear head.

    ``forward(tokens (B, L)) -> logits (B, L, vocab_size)``. No absolute position embedding: the
    only position signal is RoPE's relative rotation, so an offset learned at one length
    applies at every length.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        rope_base: float = 10000.0,
        max_len: int = 4096,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        head_dim = dim // num_heads
        self.encoder = TransformerEncoder(
            dim, depth, num_heads, mlp_ratio=mlp_ratio, causal=True, max_len=max_len,
            pos=RotaryEmbedding(head_dim, base=rope_base, max_len=max_len))  # fmt: skip
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.encoder(self.embed(tokens)))  # (B, L, vocab_size)


class LSTMRecall(nn.Module):
    """Token embedding, one LSTM layer, linear head: ``forward(tokens) -> logits``.

    The forget-gate bias starts at 1 (Jozefowicz et al. 2015), the usual help for remembering.
    """

    def __init__(self, vocab_size: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.rnn = nn.LSTM(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)
        with torch.no_grad():  # gates are ordered (input, forget, cell, output)
            self.rnn.bias_ih_l0[hidden : 2 * hidden].fill_(1.0)
            self.rnn.bias_hh_l0[hidden : 2 * hidden].zero_()

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.rnn(self.embed(tokens))[0])


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def lstm_hidden_for(target: int, vocab_size: int, dim: int) -> int:
    """The LSTM width whose parameter count is closest to ``target``.

    An LSTM layer has 4 gates, each with input and recurrent weights and two biases:
    4h(dim + h) + 8h; plus the embedding (vocab_size * dim) and the head
    (h * vocab_size + vocab_size).
    """

    def size(h: int) -> int:
        return vocab_size * dim + 4 * h * (dim + h) + 8 * h + h * vocab_size + vocab_size

    return min(range(1, 8 * dim), key=lambda h: abs(size(h) - target))


def recall_loss(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy over scored positions and their token accuracy (the trainer's loss_fn)."""
    logits = model(batch["tokens"])
    targets = batch["targets"]
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    scored = targets != IGNORE
    acc = (logits.argmax(-1) == targets)[scored].float().mean()
    return loss, {"acc": acc.detach()}


def attention_offsets(model: AttentionRecall, tokens: Tensor, d: int) -> dict:
    """Where the trained attention looks: per head, the weight on the source key ``t - d``.

    Returns the best head, its mean weight on the source, how often the source is its
    argmax key, its mean weight per offset ``t - s`` and the map of the first example.
    """
    with torch.no_grad(), record_attention(model, layers=["encoder.blocks.0.attn"]) as maps:
        model(tokens)
    w = maps["encoder.blocks.0.attn"].float()  # (B, H, L, S)
    B, H, L, _ = w.shape
    t = torch.arange(d, L)
    on_src = w[:, :, t, t - d]  # (B, H, L - d)
    best = int(on_src.mean(dim=(0, 2)).argmax())
    hits = (w[:, best, t].argmax(-1) == (t - d)).float().mean()
    # mean weight per offset o = t - s over the scored queries t >= d: (L,) for o = 0..L-1
    wb = w[:, best].mean(0)  # (L, S)
    profile = [wb[ts, ts - o].mean() for o in range(L) for ts in [torch.arange(max(d, o), L)]]
    return {
        "head": best,
        "source_weight": float(on_src[:, best].mean()),
        "argmax_hit_rate": float(hits),
        "offset_profile": [round(float(p), 5) for p in profile],
        "map": w[0, best],
        "tokens": tokens[0],
    }


def saliency_hit_rate(model: nn.Module, tokens: Tensor, d: int, queries: int = 8) -> float:
    """How often the input with the largest gradient norm of the correct logit is ``t - d``.

    A model-agnostic attribution (Simonyan et al. 2014, gradient saliency) that needs one
    backward pass per query, for models without attention weights to read.
    """
    x = tokens[:1]
    L = x.shape[1]
    hits = 0
    qs = torch.linspace(d, L - 1, queries).long().tolist()
    for t in qs:
        emb = model.embed(x).detach().requires_grad_(True)  # (1, L, dim)
        if isinstance(model, LSTMRecall):
            logits = model.head(model.rnn(emb)[0])
        else:
            logits = model.head(model.encoder(emb))
        logits[0, t, x[0, t - d]].backward()
        hits += int(emb.grad[0].norm(dim=-1).argmax()) == t - d
    return hits / len(qs)
