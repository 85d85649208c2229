"""One trainer for every domain: AdamW, warm-up + cosine, clipping, mixed precision,
accumulation, exact resume and data parallelism under ``torchrun``.

The loop follows nanoGPT's ``train.py`` (AdamW with decay on matrices only, linear warm-up
then cosine decay to ``min_lr_ratio * lr``, clipping, ``no_sync`` during accumulation) and
PyTorch's DDP tutorial; checkpoints are safetensors (:mod:`attnlab.core.checkpoint`).

**Model protocol.** The trainer calls ``loss_fn(model, batch)`` which returns a scalar loss
tensor or ``(loss, metrics)`` with ``metrics`` a dict of scalar floats/tensors (e.g.
accuracy). The default ``loss_fn`` calls ``model.loss(batch)`` when the model has such a
method and ``model(batch)`` otherwise, so ``forward`` can stay the inference path (logits,
attention capture) while ``loss`` is the training path. The loss must be a mean over the
batch's samples (or over a fixed number of tokens per sample) so that N ranks reproduce one
process with the same global batch.

**Recipes.** A domain plugs in with ``@register_recipe("name", defaults=TrainConfig(...))``
on a function ``build(cfg) -> RecipeParts`` (model + datasets + optional loss/collate);
the recipe registry lives in :mod:`attnlab.core.recipes` and is re-exported here.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed as pdist
from .recipes import (
    EvalFn,
    LossFn,
    Recipe,
    RecipeParts,
    get_recipe,
    list_recipes,
    register_recipe,
)
from .train_config import TrainConfig

__all__ = [
    "TrainConfig",
    "RecipeParts",
    "Recipe",
    "register_recipe",
    "get_recipe",
    "list_recipes",
    "Trainer",
    "TrainResult",
    "train",
    "seed_everything",
    "lr_at",
    "make_optimizer",
]


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warm-up, then cosine."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress))


def _default_loss(model: nn.Module, batch: Any) -> Any:
    loss = getattr(model, "loss", None)
    return loss(batch) if callable(loss) else model(batch)


class _LossModule(nn.Module):
    """Wraps model + loss so that DDP's forward sees the whole training computation."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.loss_fn(self.model, batch)
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise TypeError("loss_fn must return a scalar loss tensor or (loss, metrics)")
        return loss, {k: torch.as_tensor(v).detach().float() for k, v in metrics.items()}


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # Decay matrices (weights of linear layers, embeddings), not biases and norm gains.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`.

    Attributes:
        step: optimiser steps completed.
        records: the metric records logged in this call (also in ``metrics.jsonl``).
        eval: the last evaluation's metrics (``eval_`` prefixed), empty without an eval set.
        out_dir: where the checkpoint, config and metrics were written (rank 0).
        train_time_s: seconds spent in training steps, logging included (evaluation and
            checkpointing excluded).
        samples_per_s: global samples per second over ``train_time_s``.
        model: the trained model (set by :func:`train`).
    """

    step: int
    records: list[dict[str, Any]] = field(default_factory=list)
    eval: dict[str, float] = field(default_factory=dict)
    out_dir: Path = Path(".")
    train_time_s: float = 0.0
    samples_per_s: float = 0.0
    model: nn.Module | None = None


class Trainer:
    """Train ``model`` on ``train_set`` as ``cfg`` says; see the module docstring.

    Args:
        cfg: the run config.
        model: module to train; moved to the run's device.
        train_set: map-style dataset.
        eval_set: optional held-out dataset.
        loss_fn: ``(model, batch) -> loss | (loss, metrics)``.
        collate_fn: batches a list of samples.
        tokens_per_sample: report tokens/s instead of samples/s.
        on_step: called with the step number after every optimiser step (rank-local);
            an exception raised there stops the run like a crash would.
        evaluate_fn: ``(model, step) -> metrics`` run on rank 0 at every evaluation, in eval
            mode without gradients (``RecipeParts.evaluate``).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        train_set: Dataset,
        eval_set: Dataset | None = None,
        *,
        loss_fn: LossFn | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        tokens_per_sample: int | None = None,
        on_step: Callable[[int], None] | None = None,
        evaluate_fn: EvalFn | None = None,
    ) -> None:
        if not isinstance(cfg, TrainConfig):
            raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
        self.cfg, self.model = cfg, model
        self.train_set, self.eval_set = train_set, eval_set
        self.loss_module = _LossModule(model, loss_fn or _default_loss)
        self.collate = collate_fn or default_collate
        self.tokens_per_sample, self.on_step = tokens_per_sample, on_step
        self.evaluate_fn = evaluate_fn
        self.out_dir = Path(cfg.out_dir)

    def fit(self, resume: str | Path | None = None) -> TrainResult:
        """Run (or, with ``resume``, continue) training up to the configured step count."""
        cfg = self.cfg
        info = pdist.setup(cfg.device)
        try:
            return self._fit(info, resume)
        finally:
            pdist.teardown(info)

    def _fit(self, info: pdist.DistInfo, resume: str | Path | None) -> TrainResult:
        cfg, model = self.cfg, self.model
        seed_everything(cfg.seed + info.rank)  # per-rank dropout streams
        model.to(info.device).train()
        net: nn.Module = self.loss_module
        if info.distributed:
            ids = [info.device.index] if info.device.type == "cuda" else None
            net = DistributedDataParallel(self.loss_module, device_ids=ids)
        opt = make_optimizer(model, cfg)
        if cfg.precision == "fp16" and info.device.type != "cuda":
            raise ValueError("precision='fp16' needs CUDA; use 'bf16' on CPU")
        scaler = torch.amp.GradScaler(info.device.type, enabled=cfg.precision == "fp16")
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        sampler = pdist.ShardedBatchSampler(
            len(self.train_set), cfg.batch_size, cfg.grad_accum, info, cfg.seed
        )
        total = cfg.steps or math.ceil(cfg.epochs * sampler.steps_per_epoch)
        start = 0
        if resume is not None:
            meta = ckpt.load_checkpoint(
                resume, model=model, optimizer=opt, rank=info.rank, world_size=info.world_size
            )
            cfg.check_resumable(TrainConfig.from_dict(meta["config"]))
            start = meta["step"]
            if meta["rng_state"] is not None:
                ckpt.set_rng_state(meta["rng_state"])
            if meta.get("scaler"):
                scaler.load_state_dict(meta["scaler"])
        log = _MetricsLog(self.out_dir, info.is_main, keep_until=start if resume else 0)
        if info.is_main:
            ckpt.atomic_write_text(cfg.to_json(), self.out_dir / "config.json")
        sampler.start_step = start
        loader = DataLoader(
            self.train_set,
            batch_sampler=sampler,
            collate_fn=self.collate,
            num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed),  # keep the global RNG untouched
        )
        batches = iter(loader)
        unit, per_sample = ("tok", self.tokens_per_sample) if self.tokens_per_sample else ("sa", 1)
        bar = tqdm(total=total, initial=start, disable=cfg.quiet or not info.is_main,
                   unit="step", dynamic_ncols=True)  # fmt: skip
        result = TrainResult(step=start, out_dir=self.out_dir)
        autocast = (
            torch.autocast(info.device.type, dtype=amp_dtype)
            if amp_dtype
            else contextlib.nullcontext()
        )
        sums: dict[str, torch.Tensor] = {}
        window_steps, window_t0, busy = 0, time.perf_counter(), 0.0
        try:
            for step in range(start, total):
                t_step = time.perf_counter()
                lr = lr_at(step, cfg, total)
                for group in opt.param_groups:
                    group["lr"] = lr
                for micro in range(cfg.grad_accum):
                    batch = _to_device(next(batches), info.device)
                    last = micro == cfg.grad_accum - 1
                    sync = (
                        contextlib.nullcontext() if last or not info.distributed else net.no_sync()
                    )
                    with sync:
                        with autocast:
                            loss, metrics = net(batch)
                        scaler.scale(loss / cfg.grad_accum).backward()
                    for k, v in {"loss": loss.detach().float(), **metrics}.items():
                        sums[k] = sums.get(k, 0.0) + v / cfg.grad_accum
                if cfg.grad_clip > 0:
                    scaler.unscale_(opt)
                    gnorm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    sums["grad_norm"] = sums.get("grad_norm", 0.0) + gnorm.detach().float()
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                done = step + 1
                window_steps += 1
                result.step = done
                if done % cfg.log_every == 0 or done == total:
                    names = sorted(sums)
                    vec = pdist.all_reduce_mean(torch.stack([sums[k] for k in names]), info)
                    elapsed = max(time.perf_counter() - window_t0, 1e-9)
                    rate = window_steps * cfg.batch_size * per_sample / elapsed
                    epoch, _ = sampler.position(step)
                    rec = {"step": done, "epoch": epoch, "lr": lr}
                    rec.update(
                        {k: float(v) / window_steps for k, v in zip(names, vec, strict=True)}
                    )
                    rec["tokens_per_s" if unit == "tok" else "samples_per_s"] = rate
                    result.records.append(log.write(rec))
                    bar.set_postfix(
                        loss=f"{rec['loss']:.4f}", lr=f"{lr:.2e}", **{f"{unit}/s": f"{rate:.0f}"}
                    )
                    sums, window_steps, window_t0 = {}, 0, time.perf_counter()
                bar.update(1)
                t_side = time.perf_counter()
                busy += t_side - t_step  # logging included; evaluation and saving are not
                if (self.eval_set is not None or self.evaluate_fn is not None) and (
                    (cfg.eval_every and done % cfg.eval_every == 0) or done == total
                ):
                    result.eval = self.evaluate(info, step=done)
                    result.records.append(log.write({"step": done, **result.eval}))
                if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == total:
                    self._save(info, opt, scaler, done, sampler.position(done))
                window_t0 += time.perf_counter() - t_side  # throughput counts training time only
                if self.on_step is not None:
                    self.on_step(done)
        finally:
            bar.close()
            log.close()
        result.train_time_s = busy
        result.samples_per_s = (total - start) * cfg.batch_size / max(busy, 1e-9)
        return result

    def _save(self, info, opt, scaler, step: int, position: tuple[int, int]) -> None:
        states = pdist.gather_objects(ckpt.rng_state(), info)  # collective: every rank calls
        if info.is_main:
            ckpt.save_checkpoint(
                self.out_dir / "checkpoint.safetensors",
                model=self.model,
                optimizer=opt,
                step=step,
                position=position,
                config=self.cfg.to_dict(),
                rng_states=states,  # type: ignore[arg-type]
                scaler=scaler.state_dict() if scaler.is_enabled() else None,
            )
        pdist.barrier(info)

    @torch.no_grad()
    def evaluate(
        self, info: pdist.DistInfo | None = None, step: int | None = None
    ) -> dict[str, float]:
        """Mean loss and metrics over the eval set (sharded over ranks), ``eval_`` prefixed,
        and on rank 0 the metrics of ``evaluate_fn(model, step)``."""
        if self.eval_set is None and self.evaluate_fn is None:
            return {}
        info = info or pdist.setup(self.cfg.device)
        self.model.eval()
        extra = self.evaluate_fn(self.model, step) if self.evaluate_fn and info.is_main else {}
        if self.eval_set is None:
            self.model.train()
            return dict(extra)
        n = len(self.eval_set)
        mine = list(range(info.rank, n, info.world_size))
        bs = max(1, self.cfg.batch_size // info.world_size)
        sums: dict[str, torch.Tensor] = {}
        for lo in range(0, len(mine), bs):
            idx = mine[lo : lo + bs]
            batch = _to_device(self.collate([self.eval_set[i] for i in idx]), info.device)
            loss, metrics = self.loss_module(batch)
            for k, v in {"loss": loss.float(), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + v.cpu() * len(idx)
        self.model.train()
        names = sorted(sums)
        vec = pdist.all_reduce_sum(torch.stack([torch.as_tensor(sums[k]) for k in names]), info)
        out = {f"eval_{k}": float(v) / n for k, v in zip(names, vec, strict=True)}
        return {**out, **extra}


class _MetricsLog:
    """``metrics.jsonl`` (appended as we go) and ``metrics.csv`` (rewritten at the end).

    On resume the JSONL keeps only records up to the checkpoint's step, so the lines a
    killed run wrote after its last checkpoint do not appear twice.
    """

    def __init__(self, out_dir: Path, active: bool, keep_until: int = 0) -> None:
        self.active, self.path = active, out_dir / "metrics.jsonl"
        self.records: list[dict[str, Any]] = []
        if not active:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        if keep_until and self.path.exists():
            old = [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]
            self.records = [r for r in old if r["step"] <= keep_until]
        self.fh = open(self.path, "w")  # noqa: SIM115 - closed in close()
        for rec in self.records:
            self.fh.write(json.dumps(rec) + "\n")
        self.fh.flush()

    def write(self, rec: dict[str, Any]) -> dict[str, Any]:
        if self.active:
            self.records.append(rec)
            self.fh.write(json.dumps(rec) + "\n")
            self.fh.flush()
        return rec

    def close(self) -> None:
        if not self.active:
            return
        self.fh.close()
        keys: list[str] = []
        for rec in self.records:
            keys += [k for k in rec if k not in keys]
        with open(self.path.with_suffix(".csv"), "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.records)


def train(
    cfg: TrainConfig,
    resume: str | Path | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Build ``cfg.recipe``'s model and data (seeded) and train them."""
    recipe = get_recipe(cfg.recipe)
    seed_everything(cfg.seed)  # the same initial weights on every rank and every run
    parts = recipe.build(cfg)
    trainer = Trainer(
        cfg,
        parts.model,
        parts.train_set,
        parts.eval_set,
        loss_fn=parts.loss_fn,
        collate_fn=parts.collate_fn,
        tokens_per_sample=parts.tokens_per_sample,
        on_step=on_step,
        evaluate_fn=parts.evaluate,
    )
    result = trainer.fit(resume)
    result.model = parts.model
    return result
