"""``attnlab bench music``: the Music Transformer's claims measured in one run (batch 1, eval,
no_grad, best of N from ``attnlab.core.timing``).

Cases:

- ``nll``: held-out negative log-likelihood per token (nats) of the shipped ``music/relative``
  and ``music/absolute`` on the test chorales, recomputed from the weights (``--quick``: read
  from the cards). The paper's claim: relative < absolute.
- ``kv_cache``: the time per generated token at prefix length L = 256, 1024, 2048 with the KV
  cache (one position per step) against re-running the whole prefix (what a step costs
  without a cache), shipped relative model. Target at L = 1024: speed-up >= 5.
- ``skew``: relative logits S_rel by the paper's skewing (``MusicRelativeAttention.attn_bias``:
  Q E_r^T, pad, reshape, slice) against the naive gather of an (H, L, L, D) embedding tensor,
  time and peak memory (torch's allocations, ``core.timing.peak_bytes``) against L, one layer
  of the shipped model's shape (batch 1). The naive form is skipped past L = 1024 (its tensor
  alone passes 400 MB there).
- ``demo``: the Music tab for a 512-event chorale: a note chosen (``apps.music.note_view``:
  the note's row read per note, the piano roll with arcs drawn), maps cached as in the tab;
  and reading the piece (``load_piece``: tokens, recording every map, drawing, audio). Target:
  note view <= 300 ms.
- ``generate``: 256 new events after a 256-event prime, with the cache, both models.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from attnlab.bench.harness import judge, machine_info, row_line, run_suite, write_result
from attnlab.core import registry
from attnlab.core.timing import Measurement, peak_bytes, time_runs

__all__ = ["main", "nll_rows", "kv_cache_rows", "skew_rows", "demo_rows", "generate_rows"]

RESULTS = Path(__file__).parent / "results"
TARGETS = {"note_view_ms": ("max", 300.0), "kv_speedup_1024": ("min", 5.0),
           "relative_minus_absolute_nll": ("max", 0.0)}  # fmt: skip


def _ms(m: Measurement | float) -> float:
    return round((m.best if isinstance(m, Measurement) else m) * 1e3, 3)


def _model(kind: str, quick: bool):
    """The shipped model, or (``quick`` without weights) an untrained one of its shape."""
    try:
        return registry.load(f"music/{kind}").eval(), True
    except ValueError:
        if not quick:
            raise
        return registry.create(f"music_{kind}").eval(), False


def _test_pieces(quick: bool):
    from attnlab.domains.music import load_chorales

    test = load_chorales()["test"]
    return test[:3] if quick else test


def nll_rows(quick: bool) -> list[dict]:
    from attnlab.domains.music.train import held_out_nll

    rows = []
    for kind in ("relative", "absolute"):
        try:
            card = registry.read_card(f"music/{kind}")
        except ValueError:
            card = {}
        row = {"case": "nll", "model": f"music/{kind}",
               "card_test_nll": card.get("metrics", {}).get("test_nll")}  # fmt: skip
        if not quick:
            model, _ = _model(kind, quick)
            seq_len = card.get("data", {}).get("seq_len", 256)
            got = held_out_nll(model, _test_pieces(quick), seq_len)
            row.update(test_nll=round(got["test_nll"], 4), test_tokens=got["test_tokens"],
                       seq_len=seq_len)  # fmt: skip
        rows.append(row)
    return rows


@torch.no_grad()
def _decode_step_s(model, L: int, steps: int, repeats: int) -> float:
    """Seconds per token decoding ``steps`` tokens after a cached prefix of L - steps."""
    g = torch.Generator().manual_seed(L)
    prefix = torch.randint(0, model.config.vocab_size, (1, L - steps), generator=g)
    nxt = torch.randint(0, model.config.vocab_size, (steps, 1, 1), generator=g)
    best = math.inf
    for _ in range(repeats + 1):  # the first run warms up
        cache = model.make_cache()
        model(prefix, cache=cache)
        t0 = time.perf_counter()
        for t in nxt:
            model(t, cache=cache)
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def kv_cache_rows(quick: bool) -> list[dict]:
    model, shipped = _model("relative", quick)
    lengths = (128, 256) if quick else (256, 1024, 2048)
    rows = []
    for L in lengths:
        x = torch.randint(0, model.config.vocab_size, (1, L))
        with torch.no_grad():
            full = Measurement(time_runs(lambda x=x: model(x), repeats=2 if quick else 5))
        cached = _decode_step_s(model, L, 4 if quick else 16, 1 if quick else 3)
        rows.append({"case": "kv_cache", "model": "music/relative", "trained": shipped, "L": L,
                     "no_cache_step_ms": _ms(full), "cache_step_ms": _ms(cached),
                     "speedup": round(full.best / cached, 2)})  # fmt: skip
    return rows


def _naive_rel(q: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """S_rel[i, j] = q_i . E[j - i] by gathering the (H, L, L, D) embeddings (causal)."""
    L, W = q.shape[2], rel.shape[1]
    i = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    E = rel[:, (j - i).clamp(-(W - 1), 0) + (W - 1)]  # (H, L, L, D)
    return torch.einsum("bhid,hijd->bhij", q, E).masked_fill(j > i, 0.0)


def skew_rows(quick: bool) -> list[dict]:
    from attnlab.core.positional import MusicRelativeAttention

    cfg = registry.create("music_relative").config
    H, D = cfg.num_heads, cfg.head_dim
    lengths = (64, 128) if quick else (128, 256, 512, 1024, 2048)
    rows = []
    for L in lengths:
        pos = MusicRelativeAttention(H, D, max_len=L)
        q = torch.randn(1, H, L, D)
        skewed_fn = lambda pos=pos, q=q, L=L: pos.attn_bias(q, L, 0, 1.0)  # noqa: E731
        naive_fn = lambda pos=pos, q=q: _naive_rel(q, pos.rel)  # noqa: E731
        with torch.no_grad():
            skewed = Measurement(time_runs(skewed_fn, repeats=3), peak_bytes(skewed_fn))
            row = {"case": "skew", "L": L, "heads": H, "head_dim": D,
                   "skewed_ms": _ms(skewed),
                   "skewed_peak_mb": round(skewed.peak_bytes / 2**20, 2)}  # fmt: skip
            if L <= 1024:
                naive = Measurement(time_runs(naive_fn, repeats=3), peak_bytes(naive_fn))
                diff = float((skewed_fn() - naive_fn()).abs().max())
                row.update(
                    naive_ms=_ms(naive),
                    naive_peak_mb=round(naive.peak_bytes / 2**20, 2),
                    memory_ratio=round(naive.peak_bytes / max(skewed.peak_bytes, 1), 1),
                    time_ratio=round(naive.best / skewed.best, 2),
                    max_abs_diff=diff,
                )
            else:
                gib = H * L * L * D * 4 / 2**30
                row["naive"] = f"skipped: its (H, L, L, D) tensor alone is {gib:.1f} GiB"
        rows.append(row)
    return rows


def demo_rows(quick: bool) -> list[dict]:
    from attnlab.apps import music as app
    from attnlab.apps import music_lab as lab

    n = 128 if quick else 512
    try:
        lab.model("relative")
    except Exception as e:  # noqa: BLE001 -- gr.Error when the weights are not shipped
        return [{"case": "demo", "skipped": f"music/relative not available: {e}"}]
    label = lab.chorale_choices()[0]
    load = lambda: app.load_piece(label, None, "relative", n)  # noqa: E731
    state = load()[3]
    note = len(lab.attention("relative", state["tokens"]).notes) // 2
    heads = [str(h) for h in range(6)]
    view = lambda: app.note_view(state, note, 2, heads, 12, 0.0)  # noqa: E731
    reps = 2 if quick else 5
    m_view = Measurement(time_runs(view, repeats=reps))
    lab.forget()  # reading the piece again records its maps again
    t_load = Measurement(time_runs(lambda: (lab.forget(), load()), repeats=2 if quick else 3))
    notes = len(lab.attention("relative", state["tokens"]).notes)
    return [{"case": "demo", "handler": "apps.music.note_view", "events": n, "notes": notes,
             "time_ms": _ms(m_view), "median_ms": round(m_view.median * 1e3, 3),
             "includes": "row -> note weights, cut-off, piano roll with arcs (PNG); maps cached"},
            {"case": "demo_load", "handler": "apps.music.load_piece", "events": n,
             "time_ms": _ms(t_load),
             "includes": "chorale tokens, model forward recording 3x6 maps, piano roll, "
                         "synthesised audio"}]  # fmt: skip


def generate_rows(quick: bool) -> list[dict]:
    from attnlab.domains.music.generate import generate

    prime = _test_pieces(quick)[0].tokens()[:256]
    n = 32 if quick else 256
    rows = []
    for kind in ("relative", "absolute"):
        model, shipped = _model(kind, quick)
        m = Measurement(time_runs(lambda m=model: generate(m, prime, n, seed=0), repeats=1))
        rows.append({"case": "generate", "model": f"music/{kind}", "trained": shipped,
                     "prime": len(prime), "new": n, "time_ms": _ms(m),
                     "per_token_ms": round(m.best * 1e3 / n, 3)})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    return run_suite(
        argv,
        "music",
        __doc__,
        "small lengths, few runs (a smoke run)",
        RESULTS / "music.json",
        _run,
    )


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    q = args.quick
    machine = machine_info()
    rows: list[dict] = []
    for part in (nll_rows, kv_cache_rows, skew_rows, demo_rows, generate_rows):
        for r in part(q):
            print(row_line(r), flush=True)
            rows.append(r)
    checks = {}
    view = [r for r in rows if r["case"] == "demo" and "time_ms" in r]
    if view:
        checks["note_view_ms"] = view[0]["time_ms"]
    kv = {r["L"]: r["speedup"] for r in rows if r["case"] == "kv_cache"}
    if 1024 in kv:
        checks["kv_speedup_1024"] = kv[1024]
    nll = {r["model"]: r.get("test_nll", r["card_test_nll"]) for r in rows if r["case"] == "nll"}
    if all(v is not None for v in nll.values()) and len(nll) == 2:
        checks["relative_minus_absolute_nll"] = round(
            nll["music/relative"] - nll["music/absolute"], 4
        )
    return write_result("music", argv, args, rows, judge(checks, TARGETS), machine)


if __name__ == "__main__":
    sys.exit(main())
