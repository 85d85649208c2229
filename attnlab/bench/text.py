"""``attnlab bench text``: the Text demo's sentence request, the cost of recording MiniLM's
attention, and our MiniLM forward against Hugging Face ``transformers``' ``BertModel``, in one
run (batch 1, eval, no_grad, best of N from ``attnlab.core.timing``).

Cases:

- ``demo``: one press of the Text tab's **Analyse** button for a sentence of exactly 32 tokens
  (special tokens included): ``apps.text.analyse_sentence`` called directly, with MiniLM loaded
  first. Included: validation, tokenizing, recording all 6 x 12 maps, the head view HTML, the
  model view image, attention rollout, saliency spans and the summary. Not included: Gradio's
  queue and transport, and the head gallery, which the page runs as a separate event after
  it; that event (``sentence_gallery``, its corpus scoring computed once beforehand and left
  out) is a second row without a target (not in ``--quick``). Target: <= 150 ms.
- ``recording``: MiniLM's plain fused forward against the same forward inside
  ``record_attention(model)`` (every layer and head), on ids of a text of exactly 128 tokens;
  the two are timed in turn. Target: record/plain <= 1.10.
- ``vs_transformers``: our MiniLM (plain, and recording every map) against ``BertModel`` from
  the same folder (``minilm_path()``) with ``attn_implementation="sdpa"`` and with ``"eager"``
  and ``output_attentions=True``, at L = 32 and 128, all timed in turn. Skipped with a note
  when ``transformers`` (a dev dependency) is not installed.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from attnlab.bench.harness import judge, machine_info, row_line, run_suite, write_result
from attnlab.core.capture import record_attention
from attnlab.core.timing import Measurement, time_runs

__all__ = ["main", "text_of_tokens", "demo_request", "recording_cost", "vs_transformers"]

RESULTS = Path(__file__).parent / "results"
TARGETS = {"demo_ms": ("max", 150.0), "recording_ratio": ("max", 1.10)}
DEMO_TOKENS, RECORD_TOKENS, HF_LENGTHS = 32, 128, (32, 128)
WORDS = (
    "the quick brown fox jumps over the lazy dog while a small bird sings in the old "
    "tree near the river and the children play on the green grass under the warm sun "
    "of a long summer day"
).split()


def text_of_tokens(enc, n: int) -> str:
    """A text of plain English words that ``enc`` tokenizes to exactly ``n`` tokens (special
    tokens included)."""
    words: list[str] = []
    i = 0
    while True:
        words.append(WORDS[i % len(WORDS)])
        i += 1
        got = len(enc.encode([" ".join(words)]).ids[0])
        if got == n:
            return " ".join(words)
        if got > n:
            raise ValueError(f"no prefix of the word list tokenizes to exactly {n} tokens")


def _interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, repeats: int
) -> dict[str, Measurement]:
    """Time the calls in turn, ``rounds`` times ``repeats`` runs each (each round warms up
    first), so a slow spell of a shared machine falls on all of them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name] += time_runs(fn, repeats=repeats)
    return {k: Measurement(tuple(v)) for k, v in times.items()}


def _ms(m: Measurement) -> float:
    return round(m.best * 1e3, 3)


def demo_request(rounds: int = 3, repeats: int = 5, gallery: bool = True) -> list[dict]:
    """The Analyse handler on a 32-token sentence (and, when ``gallery``, the gallery event)."""
    from attnlab.apps import text as app
    from attnlab.apps import text_lab as lab

    enc = lab.encoder()  # warm: loaded before timing
    text = text_of_tokens(enc, DEMO_TOKENS)
    fns: dict[str, Callable[[], object]] = {"analyse": lambda: app.analyse_sentence(text)}
    if gallery:
        lab.encoder_scores()  # the gallery's corpus scoring: once, not timed
        fns["gallery"] = lambda: app.sentence_gallery(text)
    with torch.no_grad():
        m = _interleaved(fns, rounds, repeats)
    rows = [
        {
            "case": "demo",
            "handler": "apps.text.analyse_sentence",
            "L": DEMO_TOKENS,
            "batch": 1,
            "time_ms": _ms(m["analyse"]),
            "median_ms": round(m["analyse"].median * 1e3, 3),
            "runs": m["analyse"].runs,
            "includes": "tokenize, record 6x12 maps, head view HTML, model view image, "
            "rollout, saliency spans, summary (no Gradio queue, no gallery)",
        }
    ]
    if gallery:
        rows.append(
            {
                "case": "demo_gallery",
                "handler": "apps.text.sentence_gallery",
                "L": DEMO_TOKENS,
                "batch": 1,
                "time_ms": _ms(m["gallery"]),
                "median_ms": round(m["gallery"].median * 1e3, 3),
                "runs": m["gallery"].runs,
                "includes": "the separate event after Analyse: gallery encoder's 6x12 "
                "maps, head gallery image and table; corpus scoring cached "
                "(excluded)",
            }
        )
    return rows


def _minilm():
    from attnlab.domains.text.pretrained import load_encoder

    return load_encoder()


def _ids(enc, n: int) -> torch.Tensor:
    return enc.encode([text_of_tokens(enc, n)]).ids


def recording_cost(enc=None, rounds: int = 3, repeats: int = 5, atol: float = 1e-5) -> dict:
    """MiniLM plain forward vs the same forward recording every map, at L = 128."""
    enc = enc or _minilm()
    model, ids = enc.model.eval(), _ids(enc, RECORD_TOKENS)

    def plain():
        return model(ids)

    def record():
        with record_attention(model) as maps:
            model(ids)
        return maps

    with torch.no_grad():
        m = _interleaved({"plain": plain, "record": record}, rounds, repeats)
        with record_attention(model) as maps:
            y_rec = model(ids)
        diff = float((y_rec - plain()).abs().max())
    return {
        "case": "recording",
        "model": "all-MiniLM-L6-v2",
        "L": int(ids.shape[1]),
        "batch": 1,
        "plain_ms": _ms(m["plain"]),
        "record_ms": _ms(m["record"]),
        "ratio": round(m["record"].best / m["plain"].best, 3),
        "maps": len(maps),
        "map_shape": list(maps.stack().shape),
        "out_max_diff": diff,
        "outputs_equal": diff <= atol,
        "atol": atol,
    }


def vs_transformers(enc=None, lengths=HF_LENGTHS, rounds: int = 3, repeats: int = 5) -> list[dict]:
    """Our MiniLM against ``transformers``' BertModel (sdpa; eager with attentions)."""
    try:
        import transformers
        from transformers import BertModel
    except ImportError as err:
        return [{"case": "vs_transformers", "skipped": f"transformers not installed ({err})"}]
    from attnlab.domains.text.pretrained import minilm_path

    enc = enc or _minilm()
    ours = enc.model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = {
            impl: BertModel.from_pretrained(str(minilm_path()), attn_implementation=impl).eval()
            for impl in ("sdpa", "eager")
        }
    rows = []
    for L in lengths:
        ids = _ids(enc, L)

        def record(ids=ids):
            with record_attention(ours) as maps:
                ours(ids)
            return maps

        fns = {
            "ours": lambda ids=ids: ours(ids),
            "ours_record": record,
            "hf_sdpa": lambda ids=ids: hf["sdpa"](input_ids=ids),
            "hf_eager_attn": lambda ids=ids: hf["eager"](input_ids=ids, output_attentions=True),
        }
        with torch.no_grad():
            m = _interleaved(fns, rounds, repeats)
            y = ours(ids)
            diff = float((y - hf["sdpa"](input_ids=ids).last_hidden_state).abs().max())
        t = {k: v.best for k, v in m.items()}
        rows.append(
            {
                "case": "vs_transformers",
                "transformers": transformers.__version__,
                "L": L,
                "batch": 1,
                **{f"{k}_ms": round(v * 1e3, 3) for k, v in t.items()},
                "ours_vs_hf_sdpa": round(t["ours"] / t["hf_sdpa"], 3),
                "ours_record_vs_hf_eager_attn": round(t["ours_record"] / t["hf_eager_attn"], 3),
                "out_max_diff_vs_hf": diff,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    return run_suite(
        argv,
        "text",
        __doc__,
        "one round of 2 runs per call, no gallery row (a smoke run)",
        RESULTS / "text.json",
        _run,
    )


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    rounds, repeats = (1, 2) if args.quick else (3, 5)
    machine = machine_info()
    rows = demo_request(rounds, repeats, gallery=not args.quick)
    for r in rows:
        print(row_line(r), flush=True)
    enc = _minilm()
    rec = recording_cost(enc, rounds, repeats)
    print(row_line(rec), flush=True)
    rows.append(rec)
    for r in vs_transformers(enc, rounds=rounds, repeats=repeats):
        print(row_line(r), flush=True)
        rows.append(r)
    checks = {"demo_ms": rows[0]["time_ms"], "recording_ratio": rec["ratio"]}
    return write_result("text", argv, args, rows, judge(checks, TARGETS), machine)


if __name__ == "__main__":
    sys.exit(main())
