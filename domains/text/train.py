"""Training recipes of the text domain, and the held-out probes whose numbers go on the cards.

- ``text/induction``: a two-layer attention-only model on repeated random tokens (Olsson et
  al. 2022). Probe: the **induction score** of every head -- mean attention, over the second
  repeat, from position t to t - n + 1 (the token after the previous occurrence of the current
  token) -- and the previous-token score (attention from t to t - 1), read with
  :func:`attnlab.core.capture.record_attention`. With ``data.snapshots=NAME`` the model is also
  saved as loadable weights ``NAME/step-XXXXX`` at ``data.snapshot_steps``, each card holding
  its step, probe loss, scores and the curve so far: the loss plateau and drop beside the
  heads forming.
- ``text/agreement``: word-level LM on the agreement grammar (Linzen et al. 2016). Probe: on
  unseen (noun, verb) combinations, the share of verbs whose correct inflection gets the higher
  logit (Linzen et al.'s number-prediction accuracy, read from an LM as in Gulordava et al.
  2018), overall and with an attractor; and for each head, the share of verbs whose strongest
  key, from the position that predicts the verb, is the verb's subject.
- ``text/chars``: character LM on any UTF-8 text (``--data FILE``), by default Python's
  documentation; held-out bits per character.

The probes run through ``RecipeParts.evaluate``: the trainer calls them at every evaluation and
their metrics land in ``metrics.jsonl`` and on the card that ``--save-weights`` writes.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.core.capture import record_attention
from attnlab.core.recipes import EvalFn, RecipeParts, register_recipe
from attnlab.core.registry import create, save_weights
from attnlab.core.train_config import TrainConfig

from .data import (
    AGREEMENT_VOCAB,
    IGNORE,
    AgreementTask,
    CharWindows,
    InductionTask,
    agreement_task,
    char_corpus,
    induction_task,
)

__all__ = ["attention_stack", "induction_scores", "previous_token_scores", "agreement_metrics",
           "induction_probe", "bits_per_char_loss"]  # fmt: skip


# ------------------------------------------------------------------------------------------
# probes
# ------------------------------------------------------------------------------------------
@torch.no_grad()
def attention_stack(model: nn.Module, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Logits (B, L, V) and every block's attention (layers, B, H, L, L) for ``tokens``."""
    was_training = model.training
    model.eval()
    try:
        with record_attention(model, layers="encoder.blocks.*.attn") as maps:
            logits = model(tokens)
        return logits, maps.stack().float()
    finally:
        model.train(was_training)


def induction_scores(attn: Tensor, period: Tensor) -> Tensor:
    """Per-head induction score (layers, H) from maps (layers, B, H, L, L) of repeated tokens
    whose repeat length is ``period`` (B,): mean weight from each query t of the second repeat
    to key t - n + 1."""
    L = attn.shape[-1]
    t = torch.arange(L)
    start = (L - period)[:, None]  # (B, 1)
    second = t >= start  # (B, L)
    key = (t - period[:, None] + 1).clamp(min=0)  # (B, L)
    w = attn.gather(-1, key[None, :, None, :, None].expand(*attn.shape[:-1], 1))[..., 0]
    w = w * second[None, :, None, :]  # (layers, B, H, L)
    return w.sum((1, 3)) / second.sum()


def previous_token_scores(attn: Tensor) -> Tensor:
    """Per-head previous-token score (layers, H): mean weight from t to t - 1, t >= 1."""
    return attn.diagonal(offset=-1, dim1=-2, dim2=-1).mean((1, 3))


def _best(scores: Tensor) -> tuple[float, int, int]:
    """(best score, its layer, its head) of (layers, H) scores."""
    i = int(scores.argmax())
    return float(scores.flatten()[i]), i // scores.shape[1], i % scores.shape[1]


def _scored_loss(logits: Tensor, targets: Tensor) -> float:
    return float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE))


def induction_probe(model: nn.Module, task: InductionTask) -> dict[str, float]:
    """Held-out loss on the second repeat, the best induction head and previous-token head."""
    logits, attn = attention_stack(model, task.tokens)
    ind, layer, head = _best(induction_scores(attn, task.period))
    prev, prev_layer, prev_head = _best(previous_token_scores(attn))
    return {"probe_loss": _scored_loss(logits, task.targets), "induction_score": ind,
            "induction_layer": layer, "induction_head": head, "previous_token_score": prev,
            "previous_token_layer": prev_layer, "previous_token_head": prev_head}  # fmt: skip


def agreement_metrics(model: nn.Module, task: AgreementTask) -> dict[str, float]:
    """Agreement accuracy (correct inflection's logit above the wrong one's, at the position
    that predicts the verb), with attractors, and the subject-attention share of the best head.

    ``subject_attention`` counts verbs whose subject is not the predicting position itself
    (a modifier stands between them); ``subject_attention_all`` counts every verb.
    """
    logits, attn = attention_stack(model, task.tokens)
    sample, verb, subject, right, wrong, attractor = task.verbs.unbind(1)
    at = logits[sample, verb - 1]  # (M, V): the position predicting the verb
    ok = at.gather(1, right[:, None]) > at.gather(1, wrong[:, None])
    ok, attractor = ok[:, 0].float(), attractor.bool()
    rows = attn[:, sample, :, verb - 1]  # (M, layers, H, L): split advanced indices go first
    hits = (rows.argmax(-1) == subject[:, None, None]).float()  # (M, layers, H)
    share, layer, head = _best(hits[subject < verb - 1].mean(0))
    return {"agreement_acc": float(ok.mean()),
            "agreement_acc_attractor": float(ok[attractor].mean()),
            "subject_attention": share, "subject_attention_all": _best(hits.mean(0))[0],
            "subject_layer": layer, "subject_head": head}  # fmt: skip


def bits_per_char_loss(model: nn.Module, batch: dict[str, Tensor]):
    """The model's loss, with its accuracy and bits per character (loss / ln 2)."""
    loss, metrics = model.loss(batch)
    return loss, {**metrics, "bits_per_char": loss.detach() / math.log(2)}


# ------------------------------------------------------------------------------------------
# recipes
# ------------------------------------------------------------------------------------------
def _split(args: dict[str, Any], *keys: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the recipe's own options among ``args``, the rest for the data generator)."""
    own = {k: args[k] for k in keys if k in args}
    return own, {k: v for k, v in args.items() if k not in keys}


def _snapshotter(cfg: TrainConfig, name: str, steps: list[int], probe: EvalFn) -> EvalFn:
    """An EvalFn that runs ``probe`` and saves the model as weights ``name/step-XXXXX`` at
    ``steps`` and at the last step, in float16 (they are for display), each card holding the
    probe's metrics and the curve so far."""
    curve: list[dict[str, float]] = []
    wanted = {int(s) for s in steps}

    def evaluate(model: nn.Module, step: int | None) -> dict[str, float]:
        metrics = probe(model, step)
        if step is None:
            return metrics
        curve.append({"step": step, **metrics})
        if name and (step in wanted or step == cfg.steps):
            card = {"recipe": cfg.recipe, "snapshot_of": cfg.recipe, "step": step,
                    "dtype": "float16", "metrics": {"step": step, **metrics},
                    "curve": list(curve), "train_config": cfg.to_dict()}  # fmt: skip
            save_weights(copy.deepcopy(model).half(), f"{name}/step-{step:05d}", card)
        return metrics

    return evaluate


@register_recipe(
    "text/induction",
    split="train: generator seed 2*seed; held out: seed 2*seed+1 (fresh random tokens and periods)",
    defaults=TrainConfig(
        model="text_induction",
        data="induction",
        data_args={
            "seq_len": 64,
            "min_period": 8,
            "max_period": 28,
            "vocab_size": 64,
            "num_train": 32768,
            "num_eval": 512,
            "num_probe": 128,
            "snapshots": "",
            "snapshot_steps": [200, 325, 375, 450, 700],
        },
        lr=2e-3,
        weight_decay=0.0,
        warmup_steps=50,
        steps=1500,
        batch_size=64,
        log_every=25,
        eval_every=25,
        ckpt_every=400,
        out_dir="runs/text-induction",
    ),  # fmt: skip
)
def induction_recipe(cfg: TrainConfig) -> RecipeParts:
    """Attention-only two-layer model on repeated random tokens: induction heads form."""
    own, args = _split(
        cfg.data_args, "num_train", "num_eval", "num_probe", "snapshots", "snapshot_steps"
    )
    seed = args.pop("seed", cfg.seed)
    train_set = induction_task(own.get("num_train", 32768), seed=2 * seed, **args)
    eval_set = induction_task(own.get("num_eval", 512), seed=2 * seed + 1, **args)
    model_args = {"vocab_size": train_set.vocab_size, "max_len": train_set.seq_len,
                  **cfg.model_args}  # fmt: skip
    model = create(cfg.model, **model_args)
    n = own.get("num_probe", 128)
    probe_set = induction_task(n, seed=2 * seed + 1, **args)  # held out: the eval stream
    probe = _snapshotter(cfg, own.get("snapshots", ""), own.get("snapshot_steps", []),
                         lambda m, step: induction_probe(m, probe_set))  # fmt: skip
    return RecipeParts(model, train_set, eval_set, tokens_per_sample=train_set.seq_len,
                       evaluate=probe)  # fmt: skip


@register_recipe(
    "text/agreement",
    split=(
        "held out: sentences whose (subject noun, verb) lemma pair is never seen in "
        "training (held_out_pair: one pair in five)"
    ),
    defaults=TrainConfig(
        model="text_agreement",
        data="agreement",
        data_args={"seq_len": 28, "num_train": 20000, "num_eval": 1000},
        lr=2e-3,
        weight_decay=0.1,
        warmup_steps=100,
        steps=2000,
        batch_size=64,
        log_every=50,
        eval_every=250,
        ckpt_every=500,
        out_dir="runs/text-agreement",
    ),  # fmt: skip
)
def agreement_recipe(cfg: TrainConfig) -> RecipeParts:
    """Word-level LM on a grammar with subject-verb agreement across clauses and attractors."""
    own, args = _split(cfg.data_args, "num_train", "num_eval")
    seed = args.pop("seed", cfg.seed)
    train_set = agreement_task(own.get("num_train", 20000), "train", seed=seed, **args)
    eval_set = agreement_task(own.get("num_eval", 1000), "test", seed=seed, **args)
    model = create(
        cfg.model,
        vocab_size=len(AGREEMENT_VOCAB),
        tokenizer="words",
        vocab=list(AGREEMENT_VOCAB),
        max_len=train_set.seq_len,
        **cfg.model_args,
    )
    return RecipeParts(model, train_set, eval_set, tokens_per_sample=train_set.seq_len,
                       evaluate=lambda m, step: agreement_metrics(m, eval_set))  # fmt: skip


@register_recipe(
    "text/chars",
    split=(
        "held out: the last held_out_fraction (5 %) of the text; training windows come "
        "from the rest"
    ),
    defaults=TrainConfig(
        model="text_chars",
        data="chars",
        data_args={"path": "", "seq_len": 128, "held_out_fraction": 0.05, "num_train": 100000},
        lr=2e-3,
        weight_decay=0.1,
        warmup_steps=100,
        steps=1200,
        batch_size=32,
        log_every=50,
        eval_every=400,
        ckpt_every=400,
        out_dir="runs/text-chars",
    ),  # fmt: skip
)
def chars_recipe(cfg: TrainConfig) -> RecipeParts:
    """Character LM on a UTF-8 text (--data FILE), by default Python's documentation."""
    args = cfg.data_args
    seq_len = args.get("seq_len", 128)
    corpus = char_corpus(args.get("path") or None, args.get("held_out_fraction", 0.05), seq_len)
    train_set = CharWindows(corpus.train, seq_len, args.get("num_train", 100000), cfg.seed)
    eval_set = CharWindows(corpus.held_out, seq_len)
    model = create(
        cfg.model,
        vocab_size=len(corpus.vocab),
        tokenizer="chars",
        vocab=corpus.vocab.tokens,
        max_len=seq_len,
        **cfg.model_args,
    )
    return RecipeParts(model, train_set, eval_set, loss_fn=bits_per_char_loss,
                       tokens_per_sample=seq_len)  # fmt: skip
