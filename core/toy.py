"""Synthetic token tasks and a tiny causal token model: the trainer's and tests' smallest case.

Tasks (deterministic generators, a seed gives the same tensors on every machine):

- **copy** (Graves et al. 2014, "Neural Turing Machines", copy task): ``x1..xn SEP x1..xn``;
  the model is scored on reproducing the second half. Solving it needs attention to the
  token ``n + 1`` positions back -- one clean, visible attention pattern.
- **recall** ("recall the token at distance d"): random tokens, the target at position ``t``
  is the token at ``t - d``; an induction-free relative-position lookup.

The model is a nanoGPT-style decoder (token + learned position embeddings, a causal pre-norm
:class:`attnlab.core.blocks.TransformerEncoder`, linear head) in timm's vocabulary.
``forward(tokens)`` returns logits; ``loss(batch)`` is the training path used by the trainer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .blocks import TransformerEncoder
from .lm import IGNORE, token_loss
from .recipes import RecipeParts, register_recipe
from .registry import create, register
from .train_config import TrainConfig

__all__ = ["ToyConfig", "ToyLM", "TokenTask", "copy_task", "recall_task", "toy_test", "toy_copy"]


class TokenTask(Dataset):
    """Pairs of ``tokens`` (N, L) and ``targets`` (N, L) long tensors; items are dicts."""

    def __init__(self, tokens: Tensor, targets: Tensor, vocab_size: int) -> None:
        if tokens.shape != targets.shape or tokens.dim() != 2:
            raise ValueError(
                f"tokens and targets must be equal (N, L), got {tuple(tokens.shape)} "
                f"and {tuple(targets.shape)}"
            )
        self.tokens, self.targets, self.vocab_size = tokens, targets, vocab_size

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"tokens": self.tokens[i], "targets": self.targets[i]}

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]

    @property
    def scored_per_sample(self) -> int:
        return int((self.targets[0] != IGNORE).sum())


def _check(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def copy_task(num_samples: int, length: int = 8, vocab_size: int = 17, seed: int = 0) -> TokenTask:
    """``x1..xn SEP x1..xn`` with tokens in ``[0, vocab_size - 1)`` and ``SEP = vocab_size - 1``.

    Inputs are the sequence without its last token (length ``2n``), targets the sequence
    shifted by one, scored only where the copy is produced (the last ``n`` positions).
    """
    _check("num_samples", num_samples, 1)
    _check("length", length, 1)
    _check("vocab_size", vocab_size, 3)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab_size - 1, (num_samples, length), generator=g)
    sep = torch.full((num_samples, 1), vocab_size - 1)
    seq = torch.cat([x, sep, x], dim=1)  # (N, 2n+1)
    tokens, targets = seq[:, :-1], seq[:, 1:].clone()
    targets[:, :length] = IGNORE  # positions 0..n-1 would predict random tokens or SEP
    return TokenTask(tokens.contiguous(), targets, vocab_size)


def recall_task(
    num_samples: int, length: int = 16, distance: int = 3, vocab_size: int = 16, seed: int = 0
) -> TokenTask:
    """Random tokens in ``[0, vocab_size)``; the target at position ``t`` is the token at
    ``t - distance``."""
    _check("num_samples", num_samples, 1)
    _check("distance", distance, 1)
    _check("length", length, distance + 1)
    _check("vocab_size", vocab_size, 2)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size, (num_samples, length), generator=g)
    targets = torch.full_like(tokens, IGNORE)
    targets[:, distance:] = tokens[:, :-distance]
    return TokenTask(tokens, targets, vocab_size)


@dataclass(frozen=True)
class ToyConfig:
    vocab_size: int = 17
    dim: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dropout: float = 0.0
    max_len: int = 64

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        for name in ("vocab_size", "dim", "depth", "num_heads", "max_len"):
            _check(name, getattr(self, name), 1)


class ToyLM(nn.Module):
    """Tiny causal token model. ``forward(tokens (B, L)) -> logits (B, L, vocab_size)``."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = c = config
        self.tok_embed = nn.Embedding(c.vocab_size, c.dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, c.max_len, c.dim))
        self.drop = nn.Dropout(c.dropout)
        self.encoder = TransformerEncoder(
            c.dim, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias,
            dropout=c.dropout, causal=True, max_len=c.max_len)  # fmt: skip
        self.head = nn.Linear(c.dim, c.vocab_size, bias=False)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.tok_embed.weight, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (B, L), got shape {tuple(tokens.shape)}")
        L = tokens.shape[1]
        if L > self.config.max_len:
            raise ValueError(f"sequence length {L} exceeds max_len={self.config.max_len}")
        x = self.drop(self.tok_embed(tokens) + self.pos_embed[:, :L])  # (B, L, dim)
        return self.head(self.encoder(x))  # (B, L, vocab_size)

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy over scored positions, and their token accuracy."""
        return token_loss(self(batch["tokens"]), batch["targets"])


def _build(defaults: ToyConfig, overrides: dict[str, Any]) -> ToyLM:
    return ToyLM(dataclasses.replace(defaults, **overrides))


@register
def toy_test(**overrides: Any) -> ToyLM:
    """Smallest model for tests: dim 32, depth 2, 2 heads."""
    return _build(ToyConfig(dim=32, depth=2, num_heads=2), overrides)


@register
def toy_copy(**overrides: Any) -> ToyLM:
    """The copy-task model: dim 64, depth 2, 4 heads."""
    return _build(ToyConfig(dim=64, depth=2, num_heads=4), overrides)


def make_task(name: str, args: dict[str, Any], split: str) -> TokenTask:
    """Dataset ``name`` ("copy" or "recall") with ``args``; the split picks the seed."""
    args = dict(args)
    n_train, n_eval = args.pop("num_train", 4096), args.pop("num_eval", 512)
    seed = args.pop("seed", 0) * 2 + (split == "eval")  # disjoint streams for train / eval
    num = n_train if split == "train" else n_eval
    if name == "copy":
        return copy_task(num, seed=seed, **args)
    if name == "recall":
        return recall_task(num, seed=seed, **args)
    raise ValueError(f"unknown toy data {name!r}; valid: copy, recall")


@register_recipe(
    "toy",
    defaults=TrainConfig(
        model="toy_copy",
        data="copy",
        data_args={"length": 8, "vocab_size": 17},
        lr=3e-3,
        warmup_steps=50,
        steps=600,
        batch_size=32,
        log_every=20,
        eval_every=200,
        ckpt_every=200,
        out_dir="runs/toy",
    ),  # fmt: skip
)
def toy_recipe(cfg: TrainConfig) -> RecipeParts:
    """Synthetic copy / recall tasks on the tiny causal token model."""
    train_set = make_task(cfg.data, cfg.data_args, "train")
    eval_set = make_task(cfg.data, cfg.data_args, "eval")
    args = {"vocab_size": train_set.vocab_size, "max_len": train_set.seq_len, **cfg.model_args}
    model = create(cfg.model, **args)
    return RecipeParts(model, train_set, eval_set, tokens_per_sample=train_set.seq_len)
