"""Core Explorer: a Gradio tab to see what a mask allows, what attention uses, and what it costs.

Pick a mask (full, causal, local window, key padding, document, prefix-LM, cross), L, heads and
a backend; the tab draws the mask pattern beside the weights on an example input, compares the
backend's output with the `math` reference, and reports its measured time and peak memory. A
second tab plots time and memory against L for every backend from the shipped
``attnlab bench core`` results (FlashAttention-style log-log cost plots, Dao et al. 2022) and
re-measures small L live. Handlers are plain functions (tested without a server); ``build()``
returns the ``gr.Blocks``.
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from attnlab.apps import explorer_lab as lab
from attnlab.apps import guard
from attnlab.apps.views import head_view_html, head_view_js, heatmap, plot_bench
from attnlab.core import attention, masks

__all__ = [
    "ExploreResult",
    "explore",
    "run_explorer",
    "run_explorer_quick",
    "run_explorer_long",
    "refusal",
    "param_visibility",
    "load_bench_results",
    "complexity",
    "remeasure",
    "run_remeasure",
    "build",
]

CONCURRENCY_ID = "explorer_cpu"  # quick timing requests share the CPU: one at a time
PARAMS = ("window", "symmetric", "valid_keys", "n_docs", "prefix", "kv_len")
_PARAMS_OF = {
    "local window": ("window", "symmetric"),
    "key padding": ("valid_keys",),
    "document": ("n_docs",),
    "prefix-LM": ("prefix",),
    "cross": ("kv_len",),
}
REMEASURE_MASKS = ("full", "causal", "causal window 256")
REMEASURE_LENGTHS = (256, 512, 1024, 2048)
_HEAD_VIEW_MAX = lab.HEAD_VIEW_MAX
LONG_QUEUE_ID = "explorer_long"  # requests estimated above lab.QUICK_SECONDS: their own queue


@dataclass
class ExploreResult:
    """What one explorer run shows."""

    allowed: Any  # PIL image: mask pattern of the drawn head (None when not drawn)
    used: Any  # PIL image: weights of the drawn head (None when not drawn)
    head_view: str  # HTML for gr.HTML (empty when L is too long)
    table: str  # Markdown: backend, diff vs math, time, memory
    max_abs_diff: float
    backend: str  # the backend that ran
    time_ms: float
    peak_mb: float
    weights: torch.Tensor  # (Lq', Sk') weights of the drawn head, block-pooled for long inputs
    allowed_frac: torch.Tensor  # (Lq', Sk') fraction of each block the mask allows


def _labels(names: list[str], factor: int) -> list[str]:
    return names if factor == 1 else [str(i) for i in range(0, len(names), factor)]


def explore(
    mask_kind: str,
    L: int,
    heads: int,
    backend: str,
    input_kind: str = "sentence",
    seed: int = 0,
    window: int = 8,
    symmetric: bool = False,
    valid_keys=None,
    n_docs: int = 3,
    prefix: int = 4,
    kv_len: int | None = None,
    head: int = 0,
    draw: bool = True,
) -> ExploreResult:
    """Run one setting: validate, refuse what does not fit, compute, measure and draw.

    ``draw=False`` skips the pictures and the head view (tests, scripts).

    Raises:
        ValueError: with a sentence a person can act on (bad parameter, too large for memory).
    """
    prob = lab.make_mask(
        mask_kind,
        L,
        window=window,
        symmetric=symmetric,
        valid_keys=valid_keys,
        n_docs=n_docs,
        prefix=prefix,
        kv_len=kv_len,
        heads=heads,
        backend=backend,
    )
    head = lab._int(head, "head to draw", 0)
    if head >= prob.heads:
        raise ValueError(
            f"head to draw is {head} but there are only {prob.heads} heads (0 to {prob.heads - 1})"
        )
    name = lab.check_fits(prob)  # raises before anything large is allocated
    q, k, v, ql, kl = lab.make_inputs(input_kind, prob, seed)
    run = lambda: lab.run_backend(name, q, k, v, prob.call_mask)  # noqa: E731
    try:
        t0 = time.perf_counter()
        out = run()
        first = time.perf_counter() - t0
    except (ValueError, NotImplementedError) as e:
        raise ValueError(
            f"backend {name} cannot run this setting: {e}. The exact backends (math, sdpa, "
            "tiled) run every mask."
        ) from e
    secs, runs, peak = lab.measure(run, first=first)

    ref = lab.reference(q, k, v, prob.call_mask, head=head)
    w_pool, a_pool, (fq, fk) = ref.weights, ref.allowed, ref.factors
    diff = float((out[:, :, ref.rows] - ref.out).abs().max())
    qlab, klab = _labels(ql, fq), _labels(kl, fk)
    allowed = used = None
    hv = ""
    if draw:
        size = (5.0, 4.4)
        title = f"allowed: {prob.mask.describe()}"
        allowed = heatmap(
            a_pool,
            qlab,
            klab,
            title=title,
            vmin=0.0,
            vmax=1.0,
            size=size,
            cbar_label="allowed (fraction of the cell)",
        ).image
        used = heatmap(w_pool, qlab, klab, title=f"used: weights of head {head}", size=size).image
    if draw and prob.heads * prob.L * prob.S <= _HEAD_VIEW_MAX:
        w_all = attention(q, k, v, mask=prob.mask, backend="math", return_weights=True).weights
        hint = "head view: hover a token to see what it attends to"
        hv = head_view_html(w_all[0], ql, kl, top_k=6, height=420, title=hint)

    allowed_frac = lab.allowed_count(prob.call_mask, prob.L, prob.S) / (prob.L * prob.S)
    flops = 4.0 * prob.heads * allowed_frac * prob.L * prob.S * lab.HEAD_DIM
    rows = [
        ("backend", f"{backend} → **{name}**" if backend == "auto" else f"**{name}**"),
        ("mask", prob.mask.describe()),
        ("shape", f"B=1, H={prob.heads}, L={prob.L}, S={prob.S}, D={lab.HEAD_DIM}, float32"),
        ("allowed (query, key) pairs", f"{allowed_frac:.1%} of L·S"),
        (
            "output max abs diff vs math",
            f"{diff:.2e}" + (f" (on {len(ref.rows)} sampled query rows)" if ref.sampled else ""),
        ),
        (
            "time (best run)",
            f"{secs * 1e3:.2f} ms over {runs} run(s), {flops / secs / 1e9:.3g} useful GFLOP/s",
        ),
        ("peak memory (measured)", lab.fmt_bytes(peak)),
        (
            "memory estimate (what the refusal check uses)",
            lab.fmt_bytes(lab.estimate_bytes(name, prob)),
        ),
        ("math would need", lab.fmt_bytes(lab.estimate_bytes("math", prob))),
    ]
    table = "| quantity | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    if name == "linear":
        table += (
            "\n\n*linear attention approximates softmax attention: the weights drawn are "
            "the exact softmax ones; the difference above is its approximation error.*"
        )
    if fq > 1 or fk > 1:
        table += f"\n\n*pictures pooled in blocks of {fq} queries × {fk} keys.*"
    return ExploreResult(
        allowed, used, hv, table, diff, name, secs * 1e3, peak / 2**20, w_pool, a_pool
    )


def run_explorer(
    mask_kind,
    L,
    heads,
    backend,
    input_kind,
    seed,
    window,
    symmetric,
    valid_keys,
    n_docs,
    prefix,
    kv_len,
    head,
):
    """`explore` for the page: the pictures, the head view and the table. A setting that cannot
    run raises ``gr.Error`` with the reason (shown as a message in the page): never a
    traceback."""
    r = _explore_for_page(mask_kind, L, heads, backend, input_kind, seed, window, symmetric,
                          valid_keys, n_docs, prefix, kv_len, head)  # fmt: skip
    return r.allowed, r.used, r.head_view, r.table


@guard.user_errors
def _explore_for_page(mask_kind, L, heads, backend, input_kind, seed, *rest) -> ExploreResult:
    if not isinstance(input_kind, str) or input_kind not in lab.INPUT_KINDS:
        raise ValueError(f"input must be one of {', '.join(lab.INPUT_KINDS)}; got {input_kind!r}")
    seed = lab._int(seed, "seed", 0, 2**31 - 1)
    return explore(mask_kind, L, heads, backend, input_kind, seed, *rest)


def run_explorer_quick(*form):
    """The Run button, on the shared quick queue: runs a setting estimated to take at most
    ``lab.QUICK_SECONDS``; a longer one is handed to ``run_explorer_long`` (its own queue, one at
    a time) through the returned state, so that it never holds up quick requests."""
    prob, name = _validate(*form)
    secs = lab.estimate_request_seconds(name, prob)
    if secs > lab.QUICK_SECONDS:
        note = (
            f"Running on the long-request queue (about {secs:.0f} s estimated on this CPU; "
            "other long requests may be ahead)."
        )
        return gr.skip(), gr.skip(), gr.skip(), note, list(form)
    return (*run_explorer(*form), None)


def run_explorer_long(pending):
    """Second step of the Run button: runs the long request ``run_explorer_quick`` left."""
    if not pending:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    if not isinstance(pending, (list, tuple)) or len(pending) != 13:
        raise refusal("This long request was lost: press Run again.")
    return run_explorer(*pending)


@guard.user_errors
def _validate(
    mask_kind,
    L,
    heads,
    backend,
    input_kind,
    seed,
    window,
    symmetric,
    valid_keys,
    n_docs,
    prefix,
    kv_len,
    head,
) -> tuple[lab.Problem, str]:
    """Check the form and the cost without allocating anything (the refusal as gr.Error)."""
    prob = lab.make_mask(mask_kind, L, window=window, symmetric=symmetric,
                         valid_keys=valid_keys, n_docs=n_docs, prefix=prefix, kv_len=kv_len,
                         heads=heads, backend=backend)  # fmt: skip
    return prob, lab.check_fits(prob)


def refusal(message: str, title: str = "Cannot run this setting") -> gr.Error:
    """The ``gr.Error`` that carries a refusal to the page (raise it)."""
    return guard.refuse(message, title)


def param_visibility(mask_kind: str) -> list[dict]:
    """Show only the parameters of the chosen mask (window, valid keys, documents...)."""
    shown = _PARAMS_OF.get(mask_kind, ())
    return [gr.update(visible=p in shown) for p in PARAMS]


# --------------------------------------------------------------------------------------------
# complexity tab
# --------------------------------------------------------------------------------------------
def results_path(name: str = "core.json") -> Path:
    """``attnlab/bench/results/<name>`` inside the installed package (not imported)."""
    spec = importlib.util.find_spec("attnlab")
    root = Path(next(iter(spec.submodule_search_locations))) if spec else Path("attnlab")
    return root / "bench" / "results" / name


def load_bench_results(path: str | Path | None = None) -> list[dict]:
    """Rows of the shipped benchmark (a list, or a dict holding "rows"/"results")."""
    p = Path(path) if path is not None else results_path()
    if not p.is_file():
        return []
    data = json.loads(p.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("rows", data.get("results", []))
    return [r for r in data if isinstance(r, dict) and "L" in r]


def _table(rows: list[dict], limit: int = 40) -> str:
    keys = (
        "backend",
        "mask",
        "pass",
        "L",
        "time_ms",
        "peak_mem_mb",
        "vs_sdpa",
        "vs_flex",
        "gflops",
    )
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows[:limit]:
        cells = [f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    more = f"\n\n*{len(rows) - limit} more rows in the JSON.*" if len(rows) > limit else ""
    return "\n".join(lines) + more


def complexity(
    mask_filter: str = "all", pass_filter: str = "all", path: str | Path | None = None
) -> tuple[Any, str]:
    """Plot the shipped benchmark rows (time and peak memory against L, every backend)."""
    rows = load_bench_results(path)
    if not rows:
        return None, (
            f"No shipped benchmark results at `{results_path()}` yet: run "
            "`attnlab bench core` to make them, or re-measure small L below."
        )
    if mask_filter not in (None, "", "all"):
        rows = [r for r in rows if str(r.get("mask")) == mask_filter]
    if pass_filter not in (None, "", "all"):
        rows = [r for r in rows if str(r.get("pass")) == pass_filter]
    if not rows:
        return None, f"No rows for mask {mask_filter!r} and pass {pass_filter!r}."
    img = plot_bench(rows, title="attnlab bench core (shipped results)")
    return img, _table(rows)


def _bench_mask(kind: str) -> tuple[str, masks.Mask | None]:
    if kind == "full":
        return "full", None  # no mask at all: what a model without one runs
    if kind == "causal":
        return "causal", masks.causal()
    if kind == "causal window 256":
        return "causal_window_256", masks.sliding_window(256)
    raise ValueError(f"re-measure mask must be one of {', '.join(REMEASURE_MASKS)}; got {kind!r}")


def remeasure(mask_kind: str, lengths, heads: int = 8) -> list[dict]:
    """Measure every backend at small L (<= 2048), forward, B·H = 8, D = 64, in this process.

    Returns rows in the benchmark's format. Settings a backend refuses are left out.
    """
    label, mask = _bench_mask(mask_kind)
    if not lengths:
        raise ValueError("choose at least one length L to re-measure")
    Ls = sorted({lab._int(x, "L", 2, 2048) for x in lengths})
    rows = []
    for L in Ls:
        g = torch.Generator().manual_seed(L)
        q, k, v = (torch.randn(1, heads, L, lab.HEAD_DIM, generator=g) for _ in range(3))
        pairs = float(lab.allowed_count(mask, L, L))
        for name in lab.available_backends():
            try:
                secs, _, peak = lab.measure(
                    lambda n=name, q=q, k=k, v=v: lab.run_backend(n, q, k, v, mask),
                    max_seconds=0.5,
                    repeats=3,
                )
            except (ValueError, NotImplementedError):
                continue
            rows.append(
                {
                    "backend": name,
                    "mask": label,
                    "pass": "fwd",
                    "L": L,
                    "time_ms": secs * 1e3,
                    "peak_mem_mb": peak / 2**20,
                    "gflops": 4.0 * heads * pairs * lab.HEAD_DIM / secs / 1e9,
                }
            )
        sdpa = {r["L"]: r["time_ms"] for r in rows if r["backend"] == "sdpa"}
        for r in rows:
            if r["L"] in sdpa:
                r["vs_sdpa"] = r["time_ms"] / sdpa[r["L"]]
    return rows


def run_remeasure(mask_kind, lengths):
    """Gradio handler of the re-measure button (a refusal is raised as ``gr.Error``)."""
    rows = guard.user_errors(remeasure)(mask_kind, lengths)
    img = plot_bench(rows, title=f"measured now: {mask_kind}, forward, B·H = 8, D = 64")
    return img, _table(rows)


def _mask_filters() -> list[str]:
    return ["all", *sorted({str(r.get("mask")) for r in load_bench_results()})]


# --------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# attention vs recurrence tab (shipped results of `attnlab bench recurrence`)
# --------------------------------------------------------------------------------------------
def recurrence_view(
    path: str | Path | None = None,
) -> tuple[str | None, str | None, str | None, str]:
    """The shipped figures (accuracy, timing, attention map) and the comparison table."""
    p = Path(path) if path is not None else results_path("recurrence.json")
    if not p.is_file():
        return (
            None,
            None,
            None,
            (
                "No shipped results: run `attnlab bench recurrence` "
                "(about 2 minutes on 2 CPU cores)."
            ),
        )
    res = json.loads(p.read_text(encoding="utf-8"))
    figs = [p.parent / f for f in (res.get("figures") or {}).values()]
    figs = [str(f) if f.is_file() else None for f in figs] + [None] * 3
    acc = res.get("accuracy", {})
    lines = [
        f"Re-run: `{res.get('command', 'attnlab bench recurrence')}` "
        f"({res.get('elapsed_s', 0):.0f} s here). Chance level: {res.get('chance', 0):.3f}.",
        "",
        "| property | measure | LSTM | attention |",
        "|---|---|---|---|",
    ]
    for row in res.get("table", []):
        cells = ("—" if row[m] is None else row[m] for m in ("lstm", "attention"))
        lines.append(
            f"| {row['property']} | {row['metric']} | " + " | ".join(map(str, cells)) + " |"
        )
    if {"d", "lstm", "attention"} <= acc.keys():
        lines += [
            "",
            "| held-out accuracy | " + " | ".join(f"d={d}" for d in acc["d"]) + " |",
            "|---" * (len(acc["d"]) + 1) + "|",
        ]
        for model in ("lstm", "attention"):
            lines.append(f"| {model} | " + " | ".join(f"{a:.2f}" for a in acc[model]) + " |")
    return figs[0], figs[1], figs[2], "\n".join(lines)


INTRO = """### Core Explorer
Choose a mask and a backend: the left picture is what the mask **allows**, the right one what
a head actually **uses** on the input. Every backend is checked against the `math` reference,
timed and measured. Settings that would not fit in memory are refused before anything is
allocated, with the backends that would fit."""


def build() -> gr.Blocks:
    """The Core Explorer as a ``gr.Blocks`` (two tabs: explorer and complexity)."""
    with gr.Blocks(title="attnlab: Core Explorer") as demo:
        with gr.Tab("Explorer"):
            gr.Markdown(INTRO)
            with gr.Row():
                with gr.Column(scale=1, min_width=260):
                    mask = gr.Dropdown(
                        list(lab.MASK_KINDS), value="causal", label="mask", elem_id="explorer-mask"
                    )
                    window = guard.Number(
                        8, precision=0, label="window w", visible=False, elem_id="explorer-window"
                    )
                    symmetric = guard.Checkbox(
                        False, label="symmetric window (w // 2 each side)", visible=False
                    )
                    valid = guard.Number(
                        20, precision=0, label="valid keys (the rest is padding)", visible=False
                    )
                    n_docs = guard.Slider(1, 16, 3, step=1, label="documents", visible=False)
                    prefix = guard.Number(6, precision=0, label="prefix length", visible=False)
                    kv_len = guard.Number(16, precision=0, label="Lk (keys)", visible=False)
                    L = guard.Number(
                        32,
                        precision=0,
                        minimum=2,
                        maximum=lab.MAX_L,
                        label=f"L (queries, 2 to {lab.MAX_L})",
                    )
                    heads = guard.Slider(1, 16, 4, step=1, label="heads")
                    backend = gr.Radio(list(lab.BACKEND_CHOICES), value="auto", label="backend")
                    inputs = gr.Radio(list(lab.INPUT_KINDS), value="sentence", label="input")
                    with gr.Row():
                        seed = guard.Number(0, precision=0, label="seed", min_width=80)
                        head = guard.Number(
                            0, precision=0, minimum=0, label="head to draw", min_width=80
                        )
                    run = gr.Button("Run", variant="primary", elem_id="explorer-run")
                with gr.Column(scale=3):
                    with gr.Row():
                        allowed = gr.Image(
                            label="allowed (mask pattern)",
                            type="pil",
                            show_label=False,
                            format="png",
                            elem_id="explorer-allowed",
                            buttons=["download"],
                        )
                        used = gr.Image(
                            label="used (attention weights)",
                            type="pil",
                            show_label=False,
                            format="png",
                            elem_id="explorer-used",
                            buttons=["download"],
                        )
                    table = gr.Markdown("Press **Run**.", elem_id="explorer-results")
                    hv = gr.HTML("", js_on_load=head_view_js(), elem_id="explorer-head-view")
            params = [window, symmetric, valid, n_docs, prefix, kv_len]
            mask.change(param_visibility, mask, params, api_name="explorer_params", queue=False)
            pending = gr.State(None)
            outputs = [allowed, used, hv, table]
            run.click(
                run_explorer_quick,
                [mask, L, heads, backend, inputs, seed, *params, head],
                [*outputs, pending],
                api_name="explorer_run",
                concurrency_id=CONCURRENCY_ID,
                concurrency_limit=1,
            ).success(  # only after a quick step that did not raise: no stale pending run
                run_explorer_long,
                pending,
                outputs,
                api_name="explorer_run_long",
                concurrency_id=LONG_QUEUE_ID,
                concurrency_limit=1,
            )
        with gr.Tab("Complexity"):
            gr.Markdown(
                "### Time and peak memory against L, every backend\nFrom the shipped "
                "`attnlab bench core` results (float32, B·H = 8, D = 64)."
            )
            with gr.Row():
                mfilt = gr.Dropdown(_mask_filters(), value="all", label="mask")
                pfilt = gr.Radio(["all", "fwd", "fwd+bwd"], value="fwd", label="pass")
            shipped = gr.Image(
                label="shipped results", type="pil", format="png", elem_id="complexity-shipped"
            )
            shipped_table = gr.Markdown()
            gr.Markdown("#### Re-measure now (small L, on this machine, forward only)")
            with gr.Row():
                rm_mask = gr.Dropdown(list(REMEASURE_MASKS), value="causal", label="mask")
                rm_len = guard.CheckboxGroup(
                    list(REMEASURE_LENGTHS), value=[256, 512, 1024], label="L"
                )
                rm_btn = gr.Button("Re-measure", elem_id="complexity-remeasure")
            live = gr.Image(
                label="measured now", type="pil", format="png", elem_id="complexity-live"
            )
            live_table = gr.Markdown()
            for comp, api in ((mfilt, "complexity_mask"), (pfilt, "complexity_pass")):
                comp.change(complexity, [mfilt, pfilt], [shipped, shipped_table], api_name=api)
            rm_btn.click(
                run_remeasure,
                [rm_mask, rm_len],
                [live, live_table],
                api_name="complexity_remeasure",
                concurrency_id=LONG_QUEUE_ID,
                concurrency_limit=1,
            )
        with gr.Tab("Attention vs recurrence"):
            gr.Markdown(
                "### Attention vs recurrence, measured\nAn LSTM and a one-layer attention model "
                "of the same size, trained with the same budget to recall the token d "
                "positions back; then their cost against the sequence length."
            )
            # the figures carry their own titles: no label badge over them
            rec_acc = gr.Image(label="accuracy against d", type="filepath", show_label=False)
            rec_attn = gr.Image(
                label="the trained attention map", type="filepath", show_label=False
            )
            rec_time = gr.Image(
                label="time against sequence length", type="filepath", show_label=False
            )
            rec_table = gr.Markdown()
        demo.load(complexity, [mfilt, pfilt], [shipped, shipped_table], api_name="complexity_load")
        demo.load(
            lambda: recurrence_view(),
            None,
            [rec_acc, rec_time, rec_attn, rec_table],
            api_name="recurrence_load",
        )
    return demo


if __name__ == "__main__":
    build().launch()
