"""``attnlab bench recurrence``: attention vs recurrence, measured on one long-range task.

Task ("recall the token at distance d", :func:`attnlab.core.toy.recall_task`): random tokens
from a vocabulary of 16; every position ``t >= d`` must predict ``x[t - d]`` (dense
supervision, ``scored`` targets per sequence, length ``d + scored``). Two models of about the
same parameter count, trained by the shared trainer (:class:`attnlab.core.train.Trainer`) with
the same steps, batch and schedule for every d:

- an LSTM (Hochreiter & Schmidhuber 1997): embedding, one ``nn.LSTM`` layer, linear head;
- a causal attention model (Vaswani et al. 2017) built on
  :class:`attnlab.core.blocks.TransformerEncoder` with rotary positions (RoPE, Su et al.
  2021), so a score can depend on the offset ``t - s``.

Measured: accuracy against d; training-step and inference time against L (the LSTM runs L
sequential steps of O(dim^2) work, attention one parallel layer of O(L^2 * dim) work); the
trained model's attention map on one example (:func:`attnlab.core.capture.record_attention`),
and the comparison table of the "attention vs RNN" argument (parallelism, long-range
dependencies, per-step vs per-layer cost, interpretability) as numbers. Figures are drawn by
:mod:`attnlab.apps.views.recurrence_plots`. Timings are the best of ``repeats`` runs after a
warm-up (``time.perf_counter``; the minimum, as ``timeit`` advises, because other jobs share
the two cores and only ever add time). Training runs on ``train_threads`` threads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnlab.core.toy import recall_task
from attnlab.core.train import TrainConfig, Trainer, seed_everything

from ._recurrence_models import (
    AttentionRecall,
    LSTMRecall,
    attention_offsets,
    count_params,
    lstm_hidden_for,
    recall_loss,
    saliency_hit_rate,
)

__all__ = ["BenchConfig", "QUICK", "AttentionRecall", "LSTMRecall", "recall_loss", "run", "main"]

RESULTS = Path(__file__).parent / "results" / "recurrence.json"


@dataclass(frozen=True)
class BenchConfig:
    """The experiment. Defaults are the shipped run (< 10 min on 2 CPU cores)."""

    distances: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512)
    vocab_size: int = 16
    scored: int = 32  # supervised positions per sequence; length = d + scored
    steps: int = 300
    batch_size: int = 16
    warmup_steps: int = 20
    lr_attention: float = 1e-2
    lr_lstm: float = 1e-2
    dim: int = 64
    depth: int = 1
    num_heads: int = 2
    mlp_ratio: float = 4.0
    rope_base: float = 10000.0
    num_eval: int = 64
    timing_lengths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096)
    timing_batch: int = 4
    repeats: int = 5
    map_distance: int = 16  # the example whose attention map is stored and drawn
    seed: int = 0
    # tiny models gain nothing from intra-op threads, and 2 threads on 2 shared cores ran the
    # quick config 15x slower under load (37 s vs 2.5 s); timing uses all threads
    train_threads: int = 1


QUICK = BenchConfig(
    distances=(4, 8), scored=16, steps=80, batch_size=16, warmup_steps=5, lr_attention=2e-2, dim=32,
    num_heads=2, num_eval=32, timing_lengths=(32, 64), timing_batch=2, repeats=1, map_distance=4,
)  # fmt: skip


def build_models(cfg: BenchConfig, max_len: int = 4096) -> dict[str, nn.Module]:
    """Freshly initialised ``{"lstm": ..., "attention": ...}`` of matched size."""
    attn = AttentionRecall(
        cfg.vocab_size, cfg.dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.rope_base, max_len
    )
    hidden = lstm_hidden_for(count_params(attn), cfg.vocab_size, cfg.dim)
    return {"lstm": LSTMRecall(cfg.vocab_size, cfg.dim, hidden), "attention": attn}


# -- training ----------------------------------------------------------------------------------
def train_model(model: nn.Module, d: int, cfg: BenchConfig, lr: float, out_dir: Path) -> dict:
    """Train ``model`` on recall-at-``d`` with the shared trainer; eval accuracy and timings."""
    length = d + cfg.scored
    train_set = recall_task(
        cfg.steps * cfg.batch_size,
        length=length,
        distance=d,
        vocab_size=cfg.vocab_size,
        seed=cfg.seed * 10_000 + 2 * d,
    )
    eval_set = recall_task(
        cfg.num_eval,
        length=length,
        distance=d,
        vocab_size=cfg.vocab_size,
        seed=cfg.seed * 10_000 + 2 * d + 1,
    )
    tc = TrainConfig(
        lr=lr,
        warmup_steps=cfg.warmup_steps,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        log_every=max(1, cfg.steps // 10),
        out_dir=str(out_dir),
        quiet=True,
        device="cpu",
        seed=cfg.seed,
    )
    trainer = Trainer(tc, model, train_set, eval_set, loss_fn=recall_loss, tokens_per_sample=length)
    res = trainer.fit()
    model.eval()
    last = [r for r in res.records if "loss" in r][-1]
    return {
        "d": d,
        "length": length,
        "accuracy": res.eval["eval_acc"],
        "eval_loss": res.eval["eval_loss"],
        "final_train_loss": last["loss"],
        "train_time_s": res.train_time_s,
        "step_ms": 1e3 * res.train_time_s / cfg.steps,
        "eval_tokens": eval_set.tokens[:8],
    }


# -- timing ------------------------------------------------------------------------------------
def _best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def time_models(models: dict[str, nn.Module], cfg: BenchConfig, passes: int = 2) -> dict:
    """Training-step (forward + backward) and inference time against L, in milliseconds.

    Each point is the best of ``repeats`` calls, and of ``passes`` sweeps over all lengths and
    both models, so that a burst of other jobs on the shared cores spoils at most one sweep.
    """
    out: dict[str, Any] = {"L": list(cfg.timing_lengths), "batch": cfg.timing_batch,
                           "repeats": cfg.repeats, "passes": passes, "statistic": "min",
                           "load_before": round(os.getloadavg()[0], 2)}  # fmt: skip
    best: dict[tuple[str, str, int], float] = {}
    for _ in range(passes):
        for L in cfg.timing_lengths:
            g = torch.Generator().manual_seed(L)
            x = torch.randint(0, cfg.vocab_size, (cfg.timing_batch, L), generator=g)
            batch = {"tokens": x, "targets": x.roll(1, dims=1)}
            for name, model in models.items():

                def step(model=model, batch=batch) -> None:
                    model.zero_grad(set_to_none=True)
                    recall_loss(model, batch)[0].backward()

                def infer(model=model, x=x) -> None:
                    with torch.no_grad():
                        model(x)

                model.train()
                t_step = 1e3 * _best_time(step, cfg.repeats)
                model.eval()
                t_inf = 1e3 * _best_time(infer, cfg.repeats)
                for key, t in (("train_step_ms", t_step), ("inference_ms", t_inf)):
                    best[name, key, L] = min(t, best.get((name, key, L), math.inf))
    for name in models:
        out[name] = {key: [best[name, key, L] for L in cfg.timing_lengths]
                     for key in ("train_step_ms", "inference_ms")}  # fmt: skip
    out["load_after"] = round(os.getloadavg()[0], 2)
    return out


def flops_per_token(name: str, model: nn.Module, L: int) -> float:
    """Forward multiply-adds x 2 per token of one layer, causal attention averaging L/2 keys."""
    if name == "lstm":
        h, dim = model.rnn.hidden_size, model.rnn.input_size
        return 2 * 4 * h * (dim + h)  # the same for every L: O(1) per step, O(L) per sequence
    blk = model.encoder.blocks[0]
    dim, hidden = blk.attn.dim, blk.mlp.fc1.out_features
    proj = 2 * 4 * dim * dim + 2 * 2 * dim * hidden  # q, k, v, out projections and the MLP
    return proj + 2 * 2 * (L / 2) * dim  # scores and weighted values grow with L


# -- the experiment ----------------------------------------------------------------------------
def _train_all(cfg: BenchConfig, log) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Both models at every d: one result dict per run, and the stored attention example."""
    lrs = {"lstm": cfg.lr_lstm, "attention": cfg.lr_attention}
    per_d: dict[str, list[dict]] = {"lstm": [], "attention": []}
    example: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for d in cfg.distances:
            seed_everything(cfg.seed + d)
            models = build_models(cfg, max_len=d + cfg.scored)
            for name, model in models.items():
                r = train_model(model, d, cfg, lrs[name], Path(tmp) / f"{name}-{d}")
                tokens = r.pop("eval_tokens")
                r["saliency_hit_rate"] = saliency_hit_rate(model, tokens, d)
                r["load1"] = round(os.getloadavg()[0], 2)  # others share the cores: say so
                if name == "attention":
                    a = attention_offsets(model, tokens, d)
                    m, toks = a.pop("map"), a.pop("tokens")
                    r.update(a)
                    if d == cfg.map_distance:
                        example = {
                            "d": d,
                            "head": a["head"],
                            "tokens": toks.tolist(),
                            "weights": [[round(float(v), 4) for v in row] for row in m],
                        }
                per_d[name].append(r)
                log(f"d={d:4d} {name:9s} acc={r['accuracy']:.3f} step={r['step_ms']:.0f} ms")
    return per_d, example


def run(cfg: BenchConfig = BenchConfig(), log=print) -> dict[str, Any]:
    """Train both models at every d, time them against L, read the attention; return numbers."""
    if not cfg.distances or min(cfg.distances) < 1:
        raise ValueError(f"distances must be positive ints, got {cfg.distances}")
    if cfg.map_distance not in cfg.distances:
        raise ValueError(f"map_distance {cfg.map_distance} must be one of distances")
    if cfg.train_threads < 1:
        raise ValueError(f"train_threads must be >= 1, got {cfg.train_threads}")
    t_start, load_before = time.perf_counter(), os.getloadavg()
    sizes = build_models(cfg)
    params = {k: count_params(m) for k, m in sizes.items()}
    all_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.train_threads)
    try:
        per_d, example = _train_all(
            cfg, lambda m: log(f"{m}  ({time.perf_counter() - t_start:.0f} s)")
        )
    finally:
        torch.set_num_threads(all_threads)
    timing = time_models(build_models(cfg, max_len=max(cfg.timing_lengths)), cfg)
    log(f"timing done ({time.perf_counter() - t_start:.0f} s)")
    res: dict[str, Any] = {
        "config": dataclasses.asdict(cfg),
        "params": params,
        "lstm_hidden": sizes["lstm"].rnn.hidden_size,
        "chance": 1.0 / cfg.vocab_size,
        "accuracy": {
            "d": list(cfg.distances),
            **{k: [r["accuracy"] for r in v] for k, v in per_d.items()},
        },
        "runs": per_d,
        "timing": timing,
        "flops_per_token": {
            k: [flops_per_token(k, m, L) for L in cfg.timing_lengths] for k, m in sizes.items()
        },
        "attention_map": example,
    }
    res["table"] = build_table(res)
    res["machine"] = {
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "train_threads": cfg.train_threads,
        "cpu_count": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip
    res["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    return res


def _slope(xs: list[float], ys: list[float]) -> float:
    """Log-log slope between the last two points (the growth exponent at large L)."""
    return math.log(ys[-1] / ys[-2]) / math.log(xs[-1] / xs[-2])


def _ms(times: list[float]) -> float:
    return round(times[-1], 1)


def build_table(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The attention-vs-RNN comparison as measured rows ``{property, metric, lstm, attention}``."""
    acc, t, runs = res["accuracy"], res["timing"], res["runs"]
    L = t["L"]
    Lmax, thr = L[-1], 0.9

    def longest(name: str) -> int:
        ok = [d for d, a in zip(acc["d"], acc[name], strict=True) if a >= thr]
        return max(ok) if ok else 0

    def mean(xs: list[float]) -> float:
        return round(sum(xs) / len(xs), 4)

    def row(prop: str, metric: str, lstm: Any, attn: Any) -> dict[str, Any]:
        return {"property": prop, "metric": metric, "lstm": lstm, "attention": attn}

    fl = res["flops_per_token"]
    return [
        row("parallelism", f"sequential steps per layer at L={Lmax}", Lmax, 1),
        row("parallelism", f"training step (fwd+bwd) at L={Lmax}, ms",
            _ms(t["lstm"]["train_step_ms"]), _ms(t["attention"]["train_step_ms"])),
        row("parallelism", f"inference at L={Lmax}, ms",
            _ms(t["lstm"]["inference_ms"]), _ms(t["attention"]["inference_ms"])),
        row("parallelism", f"training time per dependent step at L={Lmax}, ms",
            round(t["lstm"]["train_step_ms"][-1] / Lmax, 4),
            round(t["attention"]["train_step_ms"][-1] / res["config"]["depth"], 1)),
        row("long-range dependencies", f"longest d with accuracy >= {thr}",
            longest("lstm"), longest("attention")),
        row("long-range dependencies", f"accuracy at d={acc['d'][-1]} (chance {res['chance']:.4f})",
            round(acc["lstm"][-1], 4), round(acc["attention"][-1], 4)),
        row("long-range dependencies", "mean accuracy over d", mean(acc["lstm"]),
            mean(acc["attention"])),
        row("per-step vs per-layer cost", f"forward FLOPs per token per layer at L={L[0]}",
            round(fl["lstm"][0]), round(fl["attention"][0])),
        row("per-step vs per-layer cost", f"forward FLOPs per token per layer at L={Lmax}",
            round(fl["lstm"][-1]), round(fl["attention"][-1])),
        row("per-step vs per-layer cost", f"inference time growth exponent, L {L[-2]}->{Lmax}",
            round(_slope(L, t["lstm"]["inference_ms"]), 2),
            round(_slope(L, t["attention"]["inference_ms"]), 2)),
        row("interpretability", "source t-d is the argmax of the model's own weights (mean over d)",
            None, mean([r["argmax_hit_rate"] for r in runs["attention"]])),
        row("interpretability", "weight on the source t-d, best head (mean over d)",
            None, mean([r["source_weight"] for r in runs["attention"]])),
        row("interpretability", "gradient saliency points at t-d (mean over d)",
            mean([r["saliency_hit_rate"] for r in runs["lstm"]]),
            mean([r["saliency_hit_rate"] for r in runs["attention"]])),
        row("interpretability", "passes to attribute all L queries (backward vs forward)",
            "L", 1),
        row("size", "parameters", res["params"]["lstm"], res["params"]["attention"]),
    ]  # fmt: skip


def format_table(table: list[dict[str, Any]]) -> str:
    """The table as aligned text (what the command prints)."""
    head = ("property", "metric", "lstm", "attention")
    cells = [head] + [tuple("-" if r[k] is None else str(r[k]) for k in head) for r in table]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(4)).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``attnlab bench recurrence [--quick] [--out PATH] [--no-plots]``."""
    p = argparse.ArgumentParser(
        prog="attnlab bench recurrence", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="tiny configuration (seconds, for tests)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"result JSON (default {RESULTS} or runs/bench/recurrence_quick.json)",
    )
    p.add_argument("--steps", type=int, default=None, help="training steps per model and d")
    p.add_argument("--no-plots", action="store_true", help="write the JSON only")
    p.add_argument(
        "--replot",
        type=Path,
        default=None,
        metavar="JSON",
        help="measure nothing: rebuild the table and figures of a result JSON",
    )
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else BenchConfig()
    if args.steps is not None:
        if args.steps < 1:
            p.error(f"--steps must be >= 1, got {args.steps}")
        cfg = dataclasses.replace(cfg, steps=args.steps)
    if args.replot is not None:
        if not args.replot.is_file():
            p.error(f"--replot: no such file {args.replot}")
        out = args.out or args.replot
        res = json.loads(args.replot.read_text())
        res["table"] = build_table(res)  # a pure function of the stored measurements
    else:
        out = args.out or (Path("runs/bench/recurrence_quick.json") if args.quick else RESULTS)
        res = run(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
        argv_list = sys.argv[1:] if argv is None else list(argv)
        res["command"] = shlex.join(["attnlab", "bench", "recurrence", *argv_list])
    figures: dict[str, str] = {}
    if not args.no_plots:
        from attnlab.apps.views.recurrence_plots import plot_all

        figures = {k: p.name for k, p in plot_all(res, out.parent, stem=out.stem).items()}
    res["figures"] = figures
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(format_table(res["table"]))
    print(f"wrote {out}" + "".join(f"\n      {out.parent / f}" for f in figures.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
