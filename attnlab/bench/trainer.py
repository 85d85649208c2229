"""``attnlab bench trainer``: the trainer's throughput and its overhead over a bare loop.

Workload: the 2-layer causal copy-task model (``toy_copy``: dim 64, 4 heads) on
``copy_task(length=16)`` (32 tokens per sample), global batch 32, fp32, AdamW, clipping.

Measured (min and median of ``--repeats`` alternating runs after a warm-up, with 1 and 2
torch threads: on a shared 2-core machine a 2-thread run can stall on a busy core, so the
min is the figure to read):

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


def _stats(seconds: list[float], samples: int) -> dict:
    best, med = min(seconds), statistics.median(seconds)
    return {"seconds": seconds, "min_s": best, "median_s": med, "samples_per_s": samples / best,
            "tokens_per_s": samples * 2 * LENGTH / best}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="attnlab bench trainer", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=200, help="optimiser steps per timed run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each variant")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads to try")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    p.add_argument("--no-ddp", action="store_true", help="skip the 2-process run")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or min(args.threads) < 1:
        p.error("--steps, --repeats and --threads must be >= 1")
    if args.worker:  # inside torchrun
        secs = trainer_run(args.steps)
        if int(os.environ.get("RANK", "0")) == 0:
            args.out.write_text(json.dumps({"train_s": secs, "threads": torch.get_num_threads()}))
        return 0
    samples = args.steps * BATCH
    res: dict = {
        "workload": f"toy_copy (dim 64, depth 2, 4 heads), copy length {LENGTH} "
        f"({2 * LENGTH} tokens), global batch {BATCH}, fp32, AdamW, clip 1.0, {args.steps} steps",
        "command": "attnlab bench trainer " + " ".join(argv or []),
        "timing": "seconds of training steps per run; min (and median) over alternating repeats; "
        "rates from the min",
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                    "python": platform.python_version(),
                    "load_avg_at_start": os.getloadavg()},
        "single_process": {},
    }  # fmt: skip
    for threads in args.threads:
        torch.set_num_threads(threads)
        bare_loop(20), trainer_run(20)  # warm-up: allocator, kernels, lazy imports
        bare, trainer = [], []
        for _ in range(args.repeats):  # alternate, so that load changes hit both alike
            bare.append(bare_loop(args.steps))
            trainer.append(trainer_run(args.steps))
        b, t = _stats(bare, samples), _stats(trainer, samples)
        res["single_process"][f"{threads}_threads"] = {
            "bare_loop": b,
            "trainer": t,
            "trainer_overhead_pct_min": 100 * (t["min_s"] / b["min_s"] - 1),
            "trainer_overhead_pct_median": 100 * (t["median_s"] / b["median_s"] - 1),
        }
    if not args.no_ddp:
        ddp = [ddp_run(args.steps) for _ in range(args.repeats)]
        d = _stats([r["train_s"] for r in ddp], samples)
        d["wall_s_with_startup"] = [r["wall_s_with_startup"] for r in ddp]
        d["threads_per_proc"] = ddp[0]["threads"]
        res["ddp_2proc"] = d
        for key, single in res["single_process"].items():
            res[f"ddp_speedup_vs_{key}"] = single["trainer"]["min_s"] / d["min_s"]
    res["machine"]["load_avg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
