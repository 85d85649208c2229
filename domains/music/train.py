"""Training recipes of the music domain: ``music/relative`` and ``music/absolute``, the same
model and data with relative (skewed) or absolute (learned) positions, as in Huang et al.
2018's comparison on the JSB chorales.

Data: the Bach chorales of music21's corpus, or ``--data DIR`` (any folder of MIDI/MusicXML),
split by piece (:mod:`.data`). Training windows of ``seq_len`` tokens are drawn from the train
pieces with a random transposition of up to ``max_transpose`` semitones; the trainer's
evaluation is the validation pieces; the card's ``test_nll`` is the held-out negative
log-likelihood per token (nats) on the test pieces, cut into consecutive windows of
``seq_len`` (no transposition), through :func:`held_out_nll`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from attnlab.core.recipes import RecipeParts, register_recipe
from attnlab.core.registry import create
from attnlab.core.train_config import TrainConfig

from .data import IGNORE, PieceWindows, TokenWindows, load_chorales, load_folder
from .tokens import Piece

__all__ = ["held_out_nll", "music_data"]

SPLIT = ("by piece, fixed: files sorted by name, file i -> test if i % 10 == 0, validation if "
         "i % 10 == 1, else train (Bach chorales of music21's corpus: 328 train / 41 "
         "validation / 41 test); test_nll is on the test pieces")  # fmt: skip


def music_data(path: str = "") -> dict[str, list[Piece]]:
    """The chorales, or the folder ``path`` of MIDI/MusicXML files, split by piece."""
    return load_folder(path) if path else load_chorales()


@torch.no_grad()
def held_out_nll(model: nn.Module, pieces: Sequence[Piece], seq_len: int,
                 batch_size: int = 16) -> dict[str, float]:  # fmt: skip
    """Negative log-likelihood per token (nats) and bits per token on ``pieces``."""
    was_training = model.training
    model.eval()
    try:
        data = PieceWindows(pieces, seq_len)
        total, count = 0.0, 0
        for i in range(0, len(data), batch_size):
            items = [data[j] for j in range(i, min(i + batch_size, len(data)))]
            x = torch.stack([it["tokens"] for it in items])
            y = torch.stack([it["targets"] for it in items])
            logits = model(x)
            total += float(F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(),
                                           ignore_index=IGNORE, reduction="sum"))  # fmt: skip
            count += int((y != IGNORE).sum())
        nll = total / count
        return {"test_nll": nll, "test_bits_per_token": nll / math.log(2), "test_tokens": count}
    finally:
        model.train(was_training)


def _defaults(model: str, out_dir: str) -> TrainConfig:
    return TrainConfig(
        model=model,
        data="chorales",
        data_args={"path": "", "seq_len": 256, "num_train": 200000, "max_transpose": 5},
        lr=2e-3,
        weight_decay=0.05,
        warmup_steps=50,
        steps=800,
        batch_size=8,
        log_every=50,
        eval_every=400,
        ckpt_every=400,
        out_dir=out_dir,
    )


def _recipe(cfg: TrainConfig) -> RecipeParts:
    args = cfg.data_args
    seq_len = int(args.get("seq_len", 256))
    data = music_data(args.get("path", ""))
    train_set = TokenWindows(data["train"], seq_len, int(args.get("num_train", 200000)),
                             cfg.seed, int(args.get("max_transpose", 5)))  # fmt: skip
    eval_set = PieceWindows(data["validation"], seq_len)
    model = create(cfg.model, rel_window=seq_len, **cfg.model_args)
    test = data["test"]

    def evaluate(m: nn.Module, step: int | None) -> dict[str, float]:
        return held_out_nll(m, test, seq_len)

    return RecipeParts(model, train_set, eval_set, tokens_per_sample=seq_len,
                       evaluate=evaluate)  # fmt: skip


@register_recipe("music/relative", _defaults("music_relative", "runs/music-relative"),
                 split=SPLIT)  # fmt: skip
def relative_recipe(cfg: TrainConfig) -> RecipeParts:
    """Music Transformer (skewed relative attention) on the Bach chorales."""
    return _recipe(cfg)


@register_recipe("music/absolute", _defaults("music_absolute", "runs/music-absolute"),
                 split=SPLIT)  # fmt: skip
def absolute_recipe(cfg: TrainConfig) -> RecipeParts:
    """The same model with absolute (learned) positions, on the same data."""
    return _recipe(cfg)
