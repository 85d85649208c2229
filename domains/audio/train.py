"""Training recipes of the audio domain, and the held-out probes whose numbers go on the cards.

- ``audio/kws``: :class:`~.model.KeywordTransformer` on the 20 keywords spoken by eSpeak NG
  (noise, gain and SpecAugment drawn per read); held out: voices of
  :data:`~.data.TEST_VARIANTS`, never heard in training. ``eval_acc`` is the accuracy.
- ``audio/asr``: :class:`~.model.SpeechSeq2Seq` on sequences of 1..4 keywords, characters out;
  the probe decodes held-out voices greedily (character error rate), then finds the alignment
  heads on a calibration set of *training* voices (:func:`.align.find_alignment_heads`) and
  measures word-start errors with them on the held-out voices; the heads are written into the
  model's config, so the shipped card carries them.

Both take ``data.path=DIR``: a folder of the user's labelled audio, ``DIR/<label>/*.wav``
(or .flac, .ogg, .mp3; ``_`` in a label stands for a space); every fifth file of each label
is held out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from attnlab.core.recipes import RecipeParts, register_recipe
from attnlab.core.registry import create
from attnlab.core.train_config import TrainConfig

from .data import (
    KEYWORDS,
    SILENCE,
    UNKNOWN,
    Clips,
    KeywordSet,
    SequenceSet,
    background_clips,
    folder_clips,
    frames_for,
    join_clips,
    speech_clips,
)
from .model import IGNORE, SpeechSeq2Seq

__all__ = ["char_error_rate", "asr_probe", "keyword_probe", "collate_speech", "split_clips"]


def split_clips(clips: Clips, every: int = 5) -> tuple[Clips, Clips]:
    """(train, held out): every ``every``-th clip of each label is held out."""
    seen: dict[str, int] = {}
    train, test = [], []
    for i, t in enumerate(clips.texts):
        seen[t] = seen.get(t, 0) + 1
        (test if seen[t] % every == 0 else train).append(i)
    if not train or not test:
        raise ValueError(f"need at least {every} files of some label to hold one out")
    return _subset(clips, train), _subset(clips, test)


def _subset(c: Clips, idx: list[int]) -> Clips:
    import numpy as np

    pcms = [c.audio[c.offsets[i] : c.offsets[i + 1]] for i in idx]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pcms])]).astype(np.int64)
    return Clips(np.concatenate(pcms), offsets, [c.texts[i] for i in idx],
                 [c.starts[i] for i in idx], [c.voices[i] for i in idx])  # fmt: skip


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_error_rate(hyps: list[str], refs: list[str]) -> float:
    """Total character edits over total reference characters."""
    edits = sum(_edit_distance(h, r) for h, r in zip(hyps, refs, strict=True))
    return edits / max(1, sum(len(r) for r in refs))


def collate_speech(model_or_vocab: SpeechSeq2Seq, items: list[dict]) -> dict[str, torch.Tensor]:
    """Pad a list of :class:`~.data.SequenceSet` items: spectrograms (B, n_mels, T), decoder
    inputs ``tokens`` (<sot> + chars) and ``targets`` (chars + <eot>, padding = IGNORE)."""
    c = model_or_vocab.config
    ids = [model_or_vocab.encode_text(it["text"])[: c.max_len - 1] for it in items]
    L = max(len(x) for x in ids) + 1
    tokens = torch.zeros(len(items), L, dtype=torch.long)
    targets = torch.full((len(items), L), IGNORE, dtype=torch.long)
    for b, x in enumerate(ids):
        tokens[b, : len(x) + 1] = torch.tensor([c.sot_id, *x])
        targets[b, : len(x) + 1] = torch.tensor([*x, c.eot_id])
    T = max(it["spec"].shape[-1] for it in items)
    spec = torch.stack([torch.nn.functional.pad(it["spec"], (0, T - it["spec"].shape[-1]),
                                                value=float(it["spec"].min()))
                        for it in items])  # fmt: skip
    return {"spec": spec, "tokens": tokens, "targets": targets}


@torch.no_grad()
def asr_probe(model: SpeechSeq2Seq, probe: SequenceSet, calib: SequenceSet | None,
              batch: int = 32) -> dict[str, float]:  # fmt: skip
    """Held-out CER by greedy decoding; with word starts known, the alignment heads found on
    ``calib`` and the word-start errors they give on ``probe`` (written into the config)."""
    from .align import find_alignment_heads, word_start_errors

    was = model.training
    model.eval()
    try:
        hyps, refs = [], []
        for s in range(0, len(probe), batch):
            items = [probe[i] for i in range(s, min(len(probe), s + batch))]
            spec = collate_speech(model, items)["spec"]
            hyps += [model.decode_text(x) for x in model.greedy(spec)]
            refs += [" ".join(it["text"].split()) for it in items]
        out = {
            "cer": char_error_rate(hyps, refs),
            "exact": sum(h == r for h, r in zip(hyps, refs, strict=True)) / len(refs),
        }
        if calib is not None and all(probe.clips.starts):
            found = find_alignment_heads(model, calib)
            heads = found.heads
            model.config = dataclasses.replace(model.config, alignment_heads=heads,
                                               alignment_medfilt=found.medfilt)  # fmt: skip
            if hasattr(model, "registry_args"):
                model.registry_args = {**model.registry_args, "alignment_heads": heads,
                                       "alignment_medfilt": found.medfilt}  # fmt: skip
            err = word_start_errors(model, probe, heads)
            out.update({"word_start_mae_ms": err["mae_ms"], "word_start_p90_ms": err["p90_ms"],
                        "num_alignment_heads": len(heads),
                        "alignment_medfilt": found.medfilt})  # fmt: skip
        return out
    finally:
        model.train(was)


def _own(args: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    return {k: args.get(k, v) for k, v in defaults.items()}


_KWS = {"num_train": 30000, "num_eval": 600, "seconds": 1.0, "path": "", "speed": False,
        "warp": 0.0, "unknown": 0, "silence": 0}  # fmt: skip


@register_recipe(
    "audio/kws",
    split=(
        "held out: voice variants never used in training (data.TEST_VARIANTS); "
        "with data.path, every fifth file of each label"
    ),
    defaults=TrainConfig(
        model="audio_kws",
        model_args={"stem": "conv"},
        data="espeak-keywords",
        data_args=dict(_KWS),
        lr=2e-3,
        weight_decay=0.05,
        warmup_steps=100,
        steps=10000,
        batch_size=32,
        log_every=50,
        eval_every=500,
        ckpt_every=500,
        out_dir="runs/audio-kws",
    ),  # fmt: skip
)
def kws_recipe(cfg: TrainConfig) -> RecipeParts:
    """AST-style keyword spotter on 20 eSpeak NG keywords (or data.path=DIR of labelled audio);
    ``data.unknown=N`` / ``data.silence=N`` add Speech Commands' ``_unknown_`` (N clips of other
    words) and ``_silence_`` (N clips of background noise alone) classes."""
    a = _own(cfg.data_args, _KWS)
    if a["path"]:
        train_clips, test_clips = split_clips(folder_clips(a["path"], max_seconds=a["seconds"]))
        labels = sorted(set(train_clips.texts) | set(test_clips.texts))
    else:
        train_clips = speech_clips("keyword", "train", a["num_train"], seed=cfg.seed)
        test_clips = speech_clips("keyword", "test", a["num_eval"], seed=cfg.seed)
        labels = list(KEYWORDS)
        extra_train, extra_test = [], []
        if a["unknown"]:
            n_test = max(12, a["num_eval"] // 5)
            extra_train.append(_unknown(speech_clips("filler", "train", a["unknown"], cfg.seed)))
            extra_test.append(_unknown(speech_clips("filler", "test", n_test, cfg.seed)))
            labels.append(UNKNOWN)
        if a["silence"]:
            extra_train.append(background_clips(a["silence"]))
            extra_test.append(background_clips(max(10, a["num_eval"] // 10)))
            labels.append(SILENCE)
        train_clips = join_clips(train_clips, *extra_train)
        test_clips = join_clips(test_clips, *extra_test)
    frames = frames_for(a["seconds"])
    model = create(cfg.model, **{"labels": labels, "frames": frames, **cfg.model_args})
    train_set = KeywordSet(train_clips, tuple(labels), a["seconds"], train=True, seed=cfg.seed,
                           speed=bool(a["speed"]), warp=a["warp"])  # fmt: skip
    eval_set = KeywordSet(test_clips, tuple(labels), a["seconds"], train=False, seed=cfg.seed + 1)

    def evaluate(m: nn.Module, step: int | None) -> dict[str, float]:
        return keyword_probe(m, eval_set)

    return RecipeParts(model, train_set, eval_set, evaluate=evaluate)


def _unknown(clips: Clips) -> Clips:
    return dataclasses.replace(clips, texts=[UNKNOWN] * len(clips))


@torch.no_grad()
def keyword_probe(model: nn.Module, data: KeywordSet, batch: int = 64) -> dict[str, float]:
    """Accuracy over every held-out clip (``eval_acc``), over the keywords alone
    (``keyword_acc``), and the share of ``_unknown_`` / ``_silence_`` clips recognised as such."""
    from torch.utils.data import default_collate

    was = model.training
    model.eval()
    try:
        preds, ys, loss = [], [], 0.0
        for s in range(0, len(data), batch):
            b = default_collate([data[i] for i in range(s, min(len(data), s + batch))])
            logits = model(b["spec"])
            loss += float(torch.nn.functional.cross_entropy(logits, b["label"], reduction="sum"))
            preds.append(logits.argmax(-1))
            ys.append(b["label"])
        p, y = torch.cat(preds), torch.cat(ys)
        out = {"eval_acc": float((p == y).float().mean()), "eval_loss": loss / len(y)}
        labels = list(data.labels)
        extra = [labels.index(c) for c in (UNKNOWN, SILENCE) if c in labels]
        words = ~torch.isin(y, torch.tensor(extra, dtype=y.dtype))
        if extra and bool(words.any()):
            out["keyword_acc"] = float((p[words] == y[words]).float().mean())
        for name in (UNKNOWN, SILENCE):
            if name in labels and bool((y == labels.index(name)).any()):
                hit = y == labels.index(name)
                out[f"{name.strip('_')}_recall"] = float((p[hit] == y[hit]).float().mean())
        return out
    finally:
        model.train(was)


_ASR = {"num_train": 6000, "num_eval": 300, "num_calib": 100, "seconds": 3.0, "path": ""}


@register_recipe(
    "audio/asr",
    split=(
        "held out: voice variants never used in training (data.TEST_VARIANTS); alignment "
        "heads are chosen on training voices; with data.path, every fifth file of each label"
    ),
    defaults=TrainConfig(
        model="audio_asr",
        data="espeak-sequences",
        data_args=dict(_ASR),
        lr=2e-3,
        weight_decay=0.05,
        warmup_steps=100,
        steps=3600,
        batch_size=24,
        log_every=50,
        eval_every=0,
        ckpt_every=500,
        out_dir="runs/audio-asr",
    ),  # fmt: skip
)
def asr_recipe(cfg: TrainConfig) -> RecipeParts:
    """Whisper-style recogniser of spoken keyword sequences, characters out (or data.path=DIR)."""
    a = _own(cfg.data_args, _ASR)
    calib_clips = None
    if a["path"]:
        train_clips, test_clips = split_clips(folder_clips(a["path"], max_seconds=a["seconds"]))
    else:
        train_clips = speech_clips("sequence", "train", a["num_train"], seed=cfg.seed,
                                   max_seconds=a["seconds"])  # fmt: skip
        test_clips = speech_clips("sequence", "test", a["num_eval"], seed=cfg.seed,
                                  max_seconds=a["seconds"])  # fmt: skip
        calib_clips = _subset(train_clips, list(range(min(a["num_calib"], len(train_clips)))))
    model_args = {"max_frames": frames_for(a["seconds"]) + 1, **cfg.model_args}
    model = create(cfg.model, **model_args)
    train_set = SequenceSet(train_clips, a["seconds"], train=True, seed=cfg.seed)
    eval_set = SequenceSet(test_clips, a["seconds"], train=False, seed=cfg.seed + 1)
    calib = None
    if calib_clips is not None:
        calib = SequenceSet(calib_clips, a["seconds"], train=False, seed=cfg.seed + 2)
    probe = eval_set

    def evaluate(m: nn.Module, step: int | None) -> dict[str, float]:
        return asr_probe(m, probe, calib)

    return RecipeParts(model, train_set, eval_set,
                       collate_fn=lambda items: collate_speech(model, items),
                       evaluate=evaluate)  # fmt: skip
