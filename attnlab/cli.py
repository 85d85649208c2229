"""The ``attnlab`` command line: demo, train, eval, bench, info.

argparse with ``--help`` on every command. Bad input (unknown domain, model, suite or
config key; a resume path that is not a checkpoint; weights that are corrupted or of another
architecture) prints one line on stderr and exits with status 2 before anything is written.
Training runs the same under ``torchrun --nproc_per_node N -m attnlab train ...``: only
rank 0 prints, writes and plots.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """Bad input: reported on one line, exit status 2."""


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def bench_suites() -> list[str]:
    """Modules of ``attnlab.bench`` that a user can run (public names)."""
    import attnlab.bench as bench

    return sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")
    )


# ---------------------------------------------------------------- commands


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        suite = importlib.import_module("attnlab.apps.suite")
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("attnlab.apps"):
            msg = "the demo app is not available (attnlab.apps.suite is missing)"
            raise CLIError(msg) from None
        raise
    kwargs: dict[str, Any] = {"domain": args.domain}
    if args.model is not None or args.checkpoint is not None:
        if args.domain != "vision":
            raise CLIError(
                "--model and --checkpoint belong to the vision demo: attnlab demo "
                "vision --model TIMM_NAME --checkpoint FILE"
            )
        from attnlab.domains.vision import load_classifier

        model = args.model or "vit_small_patch16_224"
        try:  # refuse a wrong name or file now, with the reason, not after serving
            load_classifier(model, args.checkpoint)
        except (ValueError, OSError) as err:
            raise CLIError(str(err)) from None
        kwargs["options"] = {"model": model, "checkpoint": args.checkpoint}
    if args.port is not None:
        kwargs["port"] = args.port
    try:
        suite.launch(**kwargs)
    except ValueError as err:  # an unknown or unavailable demo, refused before serving
        raise CLIError(str(err)) from None
    return 0


def _train_config(args: argparse.Namespace):
    from attnlab.core.checkpoint import checkpoint_file, read_meta
    from attnlab.core.train import TrainConfig, get_recipe

    recipe = get_recipe(args.domain)  # names the domains that failed to import, if any
    if args.resume:
        meta = read_meta(Path(args.resume))
        cfg = TrainConfig.from_dict(meta["config"])
        if cfg.recipe != recipe.name:
            raise CLIError(f"resume: {args.resume} is a {cfg.recipe!r} run, not {recipe.name!r}")
        args.resume = str(checkpoint_file(Path(args.resume)))
    else:
        cfg = recipe.defaults
    if args.config:
        path = Path(args.config)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CLIError(f"--config {path}: cannot read a JSON object ({err})") from None
        cfg = TrainConfig.from_dict(data, base=cfg)
    cfg = cfg.with_overrides(args.overrides)
    if args.data is not None:
        data = Path(args.data)
        if not (data.is_file() or data.is_dir()):
            what = "is not a file or folder" if data.exists() else "does not exist"
            raise CLIError(f"--data {data}: {what}")
        cfg = cfg.replace(data_args={**cfg.data_args, "path": str(data)})
    if args.quiet:
        cfg = cfg.replace(quiet=True)
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from attnlab.core import registry
    from attnlab.core.train import get_recipe, train

    cfg = _train_config(args)
    out = Path(cfg.out_dir)
    if not args.resume and (out / "checkpoint.safetensors").exists() and not args.overwrite:
        raise CLIError(f"{out} already holds a run: pass --resume {out} or --overwrite")
    if args.save_weights:
        target, _ = registry.weights_paths(args.save_weights, None)
        if target.exists() and not args.overwrite:
            raise CLIError(f"weights {args.save_weights!r} exist: pass --overwrite to replace them")
    main_rank = _is_main_rank()
    if main_rank and not cfg.quiet:
        print(cfg, file=sys.stderr)
    result = train(cfg, resume=args.resume)
    if not main_rank:
        return 0
    records = result.records
    if (out / "metrics.jsonl").exists():
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
    _plot(records, out / "curves.png", title=f"{cfg.recipe}: {cfg.model} on {cfg.data}")
    last = next((r for r in reversed(records) if "loss" in r), {})
    summary = {"step": result.step, "loss": last.get("loss"), **result.eval}
    if args.save_weights:
        card = {
            "recipe": cfg.recipe,
            "command": "attnlab " + " ".join(shlex.quote(a) for a in args.argv),
            "data": {"name": cfg.data, **cfg.data_args},
            "split": get_recipe(cfg.recipe).split,
            "metrics": summary,
            "train_config": cfg.to_dict(),
        }
        path = registry.save_weights(result.model, args.save_weights, card)
        print(f"saved weights {args.save_weights!r} -> {path}", file=sys.stderr)
    print(json.dumps(summary))
    return 0


def _plot(records: list[dict], path: Path, title: str) -> None:
    """Ask apps/views for the curve PNG; training results stand without it."""
    try:
        from attnlab.apps.views.plots import plot_curves
    except ImportError as err:
        print(f"note: no curve plot ({err})", file=sys.stderr)
        return
    keys = {k for r in records for k in r}
    ys = [k for k in ("loss", "eval_loss", "acc", "eval_acc") if k in keys]
    if ys:
        plot_curves(records, path, x="step", ys=ys, title=title)


def cmd_eval(args: argparse.Namespace) -> int:
    from attnlab.core import registry
    from attnlab.core.train import TrainConfig, Trainer, get_recipe, seed_everything

    model = registry.load(args.model)
    card = registry.read_card(args.model)
    if "recipe" not in card or "train_config" not in card:
        raise CLIError(f"weights {args.model!r} have no recipe in their card: nothing to eval on")
    cfg = TrainConfig.from_dict(card["train_config"]).replace(quiet=True, device=args.device)
    seed_everything(cfg.seed)
    parts = get_recipe(card["recipe"]).build(cfg)
    if parts.eval_set is None and parts.evaluate is None:
        raise CLIError(f"recipe {card['recipe']!r} has no eval set")
    trainer = Trainer(cfg, model, parts.train_set, parts.eval_set, loss_fn=parts.loss_fn,
                      collate_fn=parts.collate_fn, evaluate_fn=parts.evaluate)  # fmt: skip
    metrics = trainer.evaluate()
    print(json.dumps({"model": args.model, **metrics, "card": card.get("metrics", {})}))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    suites = bench_suites()
    if args.suite not in suites:
        raise CLIError(f"unknown bench suite {args.suite!r}; valid: {', '.join(suites)}")
    mod = importlib.import_module(f"attnlab.bench.{args.suite}")
    if not callable(getattr(mod, "main", None)):
        raise CLIError(f"attnlab.bench.{args.suite} has no main(argv)")
    return int(mod.main(list(args.args)) or 0)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from attnlab.core import registry
    from attnlab.core.train import list_recipes

    failures = registry.discover()
    dists = ("attnlab", "torch", "numpy", "safetensors", "tqdm", "gradio", "matplotlib", "timm")
    cuda = torch.cuda.is_available()
    shipped = {}
    for name in registry.list_weights():
        card = registry.read_card(name)
        shipped[name] = {"model": card.get("model"), "metrics": card.get("metrics", {})}
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {d: _version(d) for d in dists},
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda": cuda,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "models": registry.list_models(),
        "recipes": list_recipes(),
        "bench_suites": bench_suites(),
        "weights_dir": str(registry.weights_dir()),
        "shipped_weights": shipped,
        "import_failures": failures,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if isinstance(value, dict) and key == "shipped_weights":
            print(f"{key}:" + ("" if value else " none"))
            for name, v in value.items():
                metrics = ", ".join(f"{k}={_fmt(x)}" for k, x in v["metrics"].items())
                print(f"  {name} ({v['model']}): {metrics}")
        elif isinstance(value, dict):
            print(f"{key}: " + ", ".join(f"{k} {v}" for k, v in value.items()))
        elif isinstance(value, list):
            print(f"{key}: {', '.join(map(str, value)) or '-'}")
        else:
            print(f"{key}: {value}")
    return 0


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attnlab", description="See and use attention.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="launch the Gradio demo (all domains or one)")
    d.add_argument("domain", nargs="?", default=None, help="open this domain's tab only")
    d.add_argument("--port", type=int, default=None, help="server port")
    d.add_argument("--model", help="vision: a shipped model (vision/...) or a timm ViT name")
    d.add_argument("--checkpoint", help="vision: a .safetensors or .pth state dict for --model")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser(
        "train",
        help="train a model with a domain's recipe",
        description="Train with DOMAIN's recipe. Overrides are key=value (model.KEY=V and "
        "data.KEY=V reach the model and data). Runs under torchrun for data parallelism.",
    )
    t.add_argument("domain", help="training recipe (e.g. toy)")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    t.add_argument("--config", help="JSON file with config values")
    t.add_argument(
        "--data",
        metavar="PATH",
        help="data file or folder for the recipe (sets "
        "data.path; e.g. any UTF-8 text for text/chars, a folder of MIDI/MusicXML "
        "for music/relative)",
    )
    t.add_argument("--resume", help="checkpoint file or run folder to continue exactly")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run/weights")
    t.add_argument("--save-weights", metavar="NAME", help="export to weights/NAME + card")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate shipped weights on their recipe's eval set")
    e.add_argument("model", help="weights name, e.g. toy/copy-lm")
    e.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", help="run a benchmark suite (attnlab bench SUITE --help)")
    b.add_argument("suite", help="suite name (see `attnlab info`)")
    b.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the suite")
    b.set_defaults(func=cmd_bench)

    i = sub.add_parser("info", help="versions, device, models and shipped weights")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Overrides may come after options (`train toy --quiet steps=5`): argparse leaves those
    # to parse_known_args, and we take the KEY=VALUE ones back.
    args, extra = parser.parse_known_args(argv)
    unknown = [x for x in extra if x.startswith("-") or args.command != "train"]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "train":
        args.overrides = [*args.overrides, *extra]
    args.argv = argv
    if args.command in ("demo", "bench") and os.environ.get("ATTNLAB_KEEP_FREED", "1") != "0":
        # the demo records attention on every request, and the bench measures that path: let
        # recorded maps reuse freed pages (see reuse_freed_memory; ATTNLAB_KEEP_FREED=0: off)
        from attnlab.core.capture import reuse_freed_memory

        reuse_freed_memory()
    try:
        return args.func(args)
    except (CLIError, ValueError, TypeError) as err:
        # WeightsError is a ValueError: corrupted, truncated or foreign weights land here too.
        if os.environ.get("ATTNLAB_DEBUG"):
            raise
        print(f"attnlab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
