"""``attnlab bench audio``: the shipped audio models on held-out voices, word timing from
cross-attention, and the Audio demo's latency, in one run.

Rows:

- ``kws``: accuracy of ``weights/audio/kws`` on the keyword test split (voice variants never
  heard in training: ``data.TEST_VARIANTS``; noise and gain from a fixed seed). Target >= 0.95.
- ``kws_other_draws``: the same accuracy on three more draws of the held-out voices (seeds 1..3,
  600 clips each): new words, rates, pitches and noise, so that one lucky draw cannot pass the
  target alone.
- ``other_sounds``: words that are no keyword (12 words never heard in training, held-out
  voices) and background noise alone: the share named ``_unknown_`` / ``_silence_``, and the
  share taken for a keyword.
- ``asr``: character error rate of ``weights/audio/asr`` (greedy decoding) on the sequence test
  split. Target <= 0.05.
- ``word_starts``: word-start error (mean, median, 90th percentile, ms) of the shipped
  alignment heads against eSpeak NG's word events on the test split. Target: mean <= 50 ms.
- ``heads``: automatic head discovery (:func:`attnlab.domains.audio.find_alignment_heads`,
  calibrated on training voices) against the best single head chosen by hand with hindsight
  (each head scored on the test split itself and the best one kept), against Whisper's default
  (every head of the decoder's last half) and against every head averaged.
- ``demo``: one press of the tab's **Speak and analyse** button on a 2 s clip, models loaded:
  ``apps.audio.analyse`` (both models, the spectrogram overlay, the alignment and the waveform
  pictures). Target <= 300 ms.

``--quick`` evaluates a few clips only (a smoke run: its numbers are not the card's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from attnlab.bench.harness import judge, machine_info, row_line, run_suite, write_result
from attnlab.core.timing import time_runs

__all__ = ["main", "keyword_accuracy", "other_sounds", "other_draws", "asr_metrics",
           "head_comparison", "demo_latency"]  # fmt: skip

RESULTS = Path(__file__).parent / "results"
TARGETS = {"kws_acc": ("min", 0.95), "cer": ("max", 0.05), "word_start_mae_ms": ("max", 50.0),
           "demo_ms": ("max", 300.0)}  # fmt: skip


def _sets(n_kws: int, n_seq: int, n_calib: int, seed: int = 0):
    from attnlab.domains.audio.data import KEYWORDS, KeywordSet, SequenceSet, speech_clips
    from attnlab.domains.audio.train import _subset

    # the held-out sets the cards use, or (a smoke run) only as many clips as it reads, so
    # that a fresh machine does not synthesise the whole training corpus for it
    full = n_kws >= 600
    kws = KeywordSet(speech_clips("keyword", "test", 600 if full else n_kws, seed=seed),
                     KEYWORDS, train=False, seed=seed + 1)  # fmt: skip
    test = speech_clips("sequence", "test", 300 if full else n_seq, seed=seed, max_seconds=3.0)
    train = speech_clips("sequence", "train", 6000 if full else n_calib, seed=seed,
                         max_seconds=3.0)  # fmt: skip
    seq = SequenceSet(_subset(test, list(range(n_seq))), 3.0, train=False, seed=seed + 1)
    calib = SequenceSet(_subset(train, list(range(n_calib))), 3.0, train=False, seed=seed + 2)
    return kws, list(range(0, len(kws), max(1, len(kws) // n_kws)))[:n_kws], seq, calib


def other_sounds(model, n_unknown: int = 120, n_silence: int = 60, seed: int = 0) -> dict:
    """How the spotter answers what is not a keyword: words it never heard (the test fillers,
    by held-out voices) and background noise alone. ``*_recall``: the share named
    ``_unknown_`` / ``_silence_``; ``*_as_keyword``: the share taken for one of the keywords."""
    from attnlab.domains.audio import data as D
    from attnlab.domains.audio.train import _unknown

    SILENCE, UNKNOWN = D.SILENCE, D.UNKNOWN

    labels = list(model.config.labels)
    if UNKNOWN not in labels or SILENCE not in labels:
        return {"case": "other_sounds", "skipped": "the model has no _unknown_/_silence_ class"}
    row: dict = {"case": "other_sounds", "n_unknown": n_unknown, "n_silence": n_silence}
    extra = {labels.index(UNKNOWN), labels.index(SILENCE)}
    for name, clips in (("unknown", _unknown(D.speech_clips("filler", "test", n_unknown, seed))),
                        ("silence", D.background_clips(n_silence))):  # fmt: skip
        data = D.KeywordSet(clips, tuple(labels), train=False, seed=seed + 1)
        pred, _ = _predictions(model, data)
        want = labels.index(UNKNOWN if name == "unknown" else SILENCE)
        row[f"{name}_recall"] = float((pred == want).float().mean())
        row[f"{name}_as_keyword"] = float(
            (~torch.isin(pred, torch.tensor(sorted(extra)))).float().mean()
        )
    return row


@torch.no_grad()
def _predictions(model, data, indices: list[int] | None = None) -> tuple[torch.Tensor, ...]:
    """(predicted, true) class ids of ``data``'s items (all, or ``indices``)."""
    from torch.utils.data import default_collate

    model.eval()
    idx = list(range(len(data))) if indices is None else list(indices)
    preds, ys = [], []
    for s in range(0, len(idx), 64):
        b = default_collate([data[i] for i in idx[s : s + 64]])
        preds.append(model(b["spec"]).argmax(-1))
        ys.append(b["label"])
    return torch.cat(preds), torch.cat(ys)


def other_draws(model, seeds: tuple[int, ...] = (1, 2, 3), n: int = 600) -> dict:
    """Keyword accuracy on further seeded draws of the held-out voices."""
    from attnlab.domains.audio.data import KEYWORDS, KeywordSet, speech_clips

    accs = []
    for seed in seeds:
        data = KeywordSet(speech_clips("keyword", "test", n, seed=seed), KEYWORDS, train=False,
                          seed=seed + 1)  # fmt: skip
        accs.append(keyword_accuracy(model, data, list(range(len(data))))["acc"])
    return {"case": "kws_other_draws", "seeds": list(seeds), "n_each": n, "acc": accs,
            "min_acc": min(accs)}  # fmt: skip


def keyword_accuracy(model, data, indices: list[int]) -> dict:
    pred, y = _predictions(model, data, indices)
    return {"case": "kws", "n": len(indices), "acc": float((pred == y).float().mean())}


def asr_metrics(model, seq) -> dict:
    from attnlab.domains.audio.train import asr_probe

    out = asr_probe(model, seq, None)
    return {"case": "asr", "n": len(seq), "cer": out["cer"], "exact": out["exact"]}


def head_comparison(model, seq, calib) -> tuple[dict, dict]:
    from attnlab.domains.audio.align import find_alignment_heads, word_start_errors

    shipped = word_start_errors(model, seq)
    starts = {
        "case": "word_starts",
        "heads": model.config.alignment_heads,
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in shipped.items()},
    }
    found = find_alignment_heads(model, calib)
    auto = word_start_errors(model, seq, found.heads)
    oracle = find_alignment_heads(model, seq, max_heads=1)  # scored on the test split itself
    c = model.config
    half = [[i, h] for i in range(c.dec_depth // 2, c.dec_depth) for h in range(c.num_heads)]
    every = [[i, h] for i in range(c.dec_depth) for h in range(c.num_heads)]
    heads = {
        "case": "heads",
        "auto_heads": found.heads, "auto_mae_ms": auto["mae_ms"], "auto_p90_ms": auto["p90_ms"],
        "best_single_head_by_hand": oracle.heads[0],
        "best_single_mae_ms": float(oracle.single_mae_ms.min()),
        "whisper_default_mae_ms": word_start_errors(model, seq, half)["mae_ms"],
        "all_heads_mae_ms": word_start_errors(model, seq, every)["mae_ms"],
        "single_head_test_mae_ms": np.round(oracle.single_mae_ms, 1).tolist(),
    }  # fmt: skip
    return starts, heads


def demo_latency(rounds: int = 5) -> dict:
    from attnlab.apps import audio as app
    from attnlab.domains.audio.infer import keyword_model, speech_model

    keyword_model(), speech_model()
    state, _ = app.load_phrase("three seven two nine", "en+f3", 120, 50)
    seconds = len(state["wave"]) / 16000
    times = time_runs(lambda: app.analyse(state, app.ATTENTION_KINDS[0]), repeats=rounds)
    return {"case": "demo", "clip_s": round(seconds, 2), "time_ms": 1000 * min(times),
            "median_ms": 1000 * float(np.median(times)),
            "includes": "keyword model + overlay, recognition + alignment, pictures"}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return run_suite(
        argv, "audio", __doc__, "a few clips only (a smoke run)", RESULTS / "audio.json", _run
    )


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    from attnlab.domains.audio.infer import keyword_model, speech_model

    n_kws, n_seq, n_calib = (40, 8, 8) if args.quick else (600, 300, 100)
    kws_set, idx, seq, calib = _sets(n_kws, n_seq, n_calib)
    rows = [keyword_accuracy(keyword_model(), kws_set, idx)]
    more = [other_sounds(keyword_model(), *((24, 12) if args.quick else (120, 60)))]
    if not args.quick:
        more.append(other_draws(keyword_model()))
    asr = speech_model()
    rows.append(asr_metrics(asr, seq))
    rows.extend(head_comparison(asr, seq, calib))
    rows.append(demo_latency(2 if args.quick else 5))
    rows += more
    for r in rows:
        print(row_line(r, skip=("includes", "single_head_test_mae_ms")), flush=True)
    values = {"kws_acc": rows[0]["acc"], "cer": rows[1]["cer"],
              "word_start_mae_ms": rows[2]["mae_ms"], "demo_ms": rows[4]["time_ms"]}  # fmt: skip
    return write_result("audio", argv, args, rows, judge(values, TARGETS), machine_info())


if __name__ == "__main__":
    sys.exit(main())
