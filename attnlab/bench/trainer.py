"""``attnlab bench trainer``: the trainer's throughput and its overhead over a bare loop.

Workload: the 2-layer causal copy-task model (``toy_copy``: dim 64, 4 heads) on
``copy_task(length=16)`` (32 tokens per sample), global batch 32, fp32, AdamW, clipping.

Measured (median of ``--repeats`` alternating runs, after one warm-up of each):

- **bare loop**: the same model, optimiser, schedule and batches (indices from the same
  per-epoch permutation, tensors sliced directly) with nothing else: forward, backward,
  clip, step;
- **trainer, 1 process**: :class:`attnlab.core.train.Trainer`, quiet, logging every 10 steps,
  training time only (its final checkpoint excluded);
- **trainer, 2-process DDP**: ``torchrun --standalone --nproc_per_node 2`` (gloo), one
  thread per process, same global batch (16 per rank).

Overhead = trainer time / bare time - 1 (target <= 5 %). Writes JSON to
``attnlab/bench/results/trainer.json`` (or ``--out``). Follows the house benchmark habit of
timing with ``time.perf_counter`` around whole runs and reporting medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from attnlab.core.distributed import DistInfo, ShardedBatchSampler
from attnlab.core.registry import create
from attnlab.core.toy import copy_task
from attnlab.core.train import TrainConfig, Trainer, lr_at, make_optimizer, seed_everything

RESULTS = Path(__file__).resolve().parent / "results" / "trainer.json"
LENGTH, BATCH = 16, 32


def _config(steps: int, out_dir: str) -> TrainConfig:
    return TrainConfig(
        recipe="toy", model="toy_copy", data="copy", steps=steps, batch_size=BATCH, lr=3e-3,
        warmup_steps=10, log_every=10, quiet=True, device="cpu", out_dir=out_dir,
    )  # fmt: skip


def _data():
    return copy_task(4096, length=LENGTH, seed=0)


def bare_loop(steps: int) -> float:
    """Seconds for ``steps`` plain optimiser steps on the same model and batches."""
    cfg = _config(steps, "")
    data = _data()
    seed_everything(cfg.seed)
    model = create("toy_copy", vocab_size=data.vocab_size, max_len=data.seq_len).train()
    opt = make_optimizer(model, cfg)
    sampler = ShardedBatchSampler(len(data), BATCH, 1, DistInfo(0, 1, 0, torch.device("cpu")), 0)
    batches = iter(sampler)
    t0 = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg, steps)
        idx = torch.tensor(next(batches))
        loss, _ = model.loss({"tokens": data.tokens[idx], "targets": data.targets[idx]})
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def trainer_run(steps: int) -> float:
    """Training seconds of the trainer for ``steps`` steps (this process, world size from env)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(steps, tmp)
        data = _data()
        seed_everything(cfg.seed)
        model = create("toy_copy", vocab_size=data.vocab_size, max_len=data.seq_len)
        result = Trainer(cfg, model, data, tokens_per_sample=data.seq_len).fit()
        return result.train_time_s


def ddp_run(steps: int, nproc: int = 2) -> dict:
    """Run :func:`trainer_run` under torchrun; rank 0 reports its training seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.json"
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        cmd = [torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m",
               "attnlab.bench.trainer", "--worker", "--steps", str(steps),
               "--out", str(out)]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"torchrun failed:\n{proc.stderr[-3000:]}")
        return {**json.loads(out.read_text()), "wall_s_with_startup": wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="attnlab bench trainer", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=200, help="optimiser steps per timed run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each variant")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    p.add_argument("--no-ddp", action="store_true", help="skip the 2-process run")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        p.error("--steps and --repeats must be >= 1")
    if args.worker:  # inside torchrun
        secs = trainer_run(args.steps)
        if int(os.environ.get("RANK", "0")) == 0:
            args.out.write_text(json.dumps({"train_s": secs, "threads": torch.get_num_threads()}))
        return 0
    samples = args.steps * BATCH
    bare_loop(20), trainer_run(20)  # warm-up: allocator, kernels, imports
    bare, trainer = [], []
    for _ in range(args.repeats):
        bare.append(bare_loop(args.steps))
        trainer.append(trainer_run(args.steps))
    b, t = statistics.median(bare), statistics.median(trainer)
    res = {
        "workload": f"toy_copy (dim 64, depth 2, 4 heads), copy length {LENGTH} "
        f"({2 * LENGTH} tokens), global batch {BATCH}, fp32, {args.steps} steps",
        "command": "attnlab bench trainer " + " ".join(argv or []),
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                    "python": platform.python_version(), "threads": torch.get_num_threads()},
        "bare_loop": {"seconds": bare, "samples_per_s": samples / b},
        "trainer_1proc": {"seconds": trainer, "samples_per_s": samples / t},
        "trainer_overhead_pct": 100 * (t / b - 1),
    }  # fmt: skip
    res["tokens_per_s_1proc"] = res["trainer_1proc"]["samples_per_s"] * 2 * LENGTH
    if not args.no_ddp:
        ddp = [ddp_run(args.steps) for _ in range(args.repeats)]
        d = statistics.median(r["train_s"] for r in ddp)
        res["trainer_ddp_2proc"] = {"seconds": [r["train_s"] for r in ddp],
                                    "samples_per_s": samples / d,
                                    "wall_s_with_startup": [r["wall_s_with_startup"] for r in ddp],
                                    "threads_per_proc": ddp[0]["threads"]}  # fmt: skip
        res["ddp_speedup"] = t / d
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
