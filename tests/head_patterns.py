"""Models whose attention heads have KNOWN behaviour, for the head-scoring tests
(tests/domains/text/test_heads.py) and the head gallery's (tests/apps/test_head_gallery.py).

Each head's pattern is forced by an additive bias built from the token ids; q/k/v projections
are zero, so the bias alone decides the weights: uniform over the pattern's targets.
"""

from __future__ import annotations

import torch
from torch import nn

from attnlab.core import MultiHeadAttention
from attnlab.core.masks import key_padding

PAD, CLS, SEP, VOCAB = 0, 1, 2, 60


def _targets(name: str, ids: torch.Tensor) -> torch.Tensor:
    """(B, L, L) bool: the keys a head of pattern ``name`` attends to (rows without one: all)."""
    B, L = ids.shape
    i = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    eq = ids[:, :, None] == ids[:, None, :]
    if name == "prev":
        t = (j == i - 1).expand(B, L, L)
    elif name == "next":
        t = (j == i + 1).expand(B, L, L)
    elif name == "first":
        t = (j == 0).expand(B, L, L)
    elif name == "sep":
        t = (ids == SEP)[:, None, :].expand(B, L, L)
    elif name == "same":
        t = eq & (j != i)
    elif name == "induction":  # the token after an earlier occurrence of the current token
        prev_eq = torch.zeros_like(eq)
        prev_eq[:, :, 1:] = eq[:, :, :-1]
        t = prev_eq & (j - 1 < i)
    elif name == "uniform":
        t = torch.zeros(B, L, L, dtype=torch.bool)
    else:
        raise ValueError(name)
    return t


class PatternModel(nn.Module):
    """Layers of attnlab ``MultiHeadAttention`` with zero q/k/v projections, so every allowed
    key scores the same; a per-head additive bias (0 on the pattern's targets, -1e4 elsewhere)
    then gives each head exactly its pattern (uniform over the targets)."""

    def __init__(self, patterns: list[list[str]], causal: bool = False, dim: int = 16):
        super().__init__()
        self.patterns = patterns
        self.embed = nn.Embedding(VOCAB, dim)
        self.attn = nn.ModuleList(
            MultiHeadAttention(dim, len(p), head_dim=4, causal=causal) for p in patterns
        )
        with torch.no_grad():
            for m in self.attn:
                m.qkv.weight.zero_()
                m.qkv.bias.zero_()

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(ids)
        mask = None if lengths is None else key_padding(lengths)
        for attn, pats in zip(self.attn, self.patterns, strict=True):
            tgt = torch.stack([_targets(p, ids) for p in pats], 1)  # (B, H, L, L)
            tgt |= ~tgt.any(-1, keepdim=True)  # rows without a target: uniform
            bias = torch.where(tgt, 0.0, -1e4)
            x = x + attn(x, mask=mask, attn_mask=bias)
        return x


def batch(seed: int = 0, lengths=(12, 9, 7)) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] w w w ... [SEP] [PAD]..., with a few words repeated so same-token rows exist."""
    g = torch.Generator().manual_seed(seed)
    L = max(lengths)
    ids = torch.full((len(lengths), L), PAD)
    for b, n in enumerate(lengths):
        words = torch.randint(3, VOCAB, (n - 2,), generator=g)
        words[-1] = words[0]  # a repeated word in every row
        ids[b, 0], ids[b, 1 : n - 1], ids[b, n - 1] = CLS, words, SEP
    return ids, torch.tensor(lengths)


def run(model):
    return lambda ids, lengths: model(ids, lengths)


PATTERNS = [["prev", "first", "uniform", "induction"], ["same", "sep", "next", "prev"]]
EXPECT = [
    ["previous-token", "sink", "broad", "induction"],
    ["same-token", "sink", "next-token", "previous-token"],
]
