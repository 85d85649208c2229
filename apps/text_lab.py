"""Models and computations behind the Text demo (``attnlab.apps.text``), free of layout.

Form values are checked here (``gr.Error`` with a sentence saying what to change); models load
lazily, once, under a lock: the MiniLM sentence encoder (all-MiniLM-L6-v2, read up to 512
tokens), a second copy of it for the slow head-gallery scoring (so that scoring never blocks
the quick views, which share the first copy), and the shipped causal models ``text/chars``,
``text/agreement`` and ``text/induction`` with its training checkpoints. Recording and ablating
switch a model's modules for the length of a call, so every use of a model holds its lock.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
import torch

from attnlab.apps import guard
from attnlab.core import registry
from attnlab.core.capture import record_attention

log = logging.getLogger(__name__)

__all__ = [
    "MAX_CHARS", "MAX_PAIR_CHARS", "MAX_PROMPT_CHARS", "MAX_NEW_TOKENS", "MAX_TOKENS",
    "as_int", "as_float", "as_text", "as_choice", "as_index_or_mean", "refusals",
    "encoder", "gallery_encoder", "encoder_scores", "causal_model", "model_lock",
    "PairAttention", "pair_attention", "similarity", "GenerationTrace", "generate_traced",
    "checkpoints", "training_curve", "induction_probe", "forget_causal", "AgreementCase",
    "parse_agreement", "agreement_examples",
]  # fmt: skip

MAX_TOKENS = 512  # the encoder's position table: longer texts are cut (and the page says so)
MAX_CHARS = 6000  # one sentence box: more than 512 word pieces of ordinary English
MAX_PAIR_CHARS = 2000  # each sentence of a pair (the pair shares the 512 tokens)
MAX_PROMPT_CHARS = 2000  # the generation prompt (its last characters are kept)
MAX_NEW_TOKENS = 120  # generated characters: the chars model reads 128 at most
ENCODER = "all-MiniLM-L6-v2"
GALLERY_CORPUS = (
    "The cat sat on the mat because it was tired.",
    "Dogs chase cats in the park every morning before breakfast.",
    "A quick brown fox jumps over the lazy dog near the river bank.",
    "She said that the results of the experiment were surprising.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "The committee will meet on Tuesday to discuss the new budget proposal.",
    "He bought three apples, two oranges and a loaf of bread at the market.",
    "When the rain stopped, the children ran outside to play in the puddles.",
)


# ------------------------------------------------------------------------------------------
# form values -> checked Python values (gr.Error otherwise)
# ------------------------------------------------------------------------------------------
# (the checks live in apps/guard.py, shared by every tab; re-exported here for apps/text.py)
as_choice, as_float, as_index_or_mean, as_int, as_text = (
    guard.as_choice,
    guard.as_float,
    guard.as_index_or_mean,
    guard.as_int,
    guard.as_text,
)


def refusals(what: str) -> Callable:
    """``guard.user_errors`` for a handler that does ``what`` (its refusals say so)."""
    return functools.partial(guard.user_errors, what=what)


# ------------------------------------------------------------------------------------------
# models: lazy, cached, one lock each
# ------------------------------------------------------------------------------------------
_LOAD_LOCK = threading.Lock()
_LOCKS: dict[str, threading.RLock] = {}
_CACHE: dict[Any, Any] = {}


_KEY_LOCKS: dict[Any, threading.Lock] = {}


def _cached(key: Any, make: Callable[[], Any]) -> Any:
    """``make()`` once per key: two queues asking at once wait for one load, and a slow load
    (the gallery scoring) holds only its own key."""
    with _LOAD_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:
        if key not in _CACHE:
            value = make()
            with _LOAD_LOCK:
                _CACHE[key] = value
        return _CACHE[key]


@contextmanager
def model_lock(name: str):
    """Hold the lock of model ``name`` (recording/ablation switch its modules)."""
    with _LOAD_LOCK:
        lock = _LOCKS.setdefault(name, threading.RLock())
    with lock:
        yield


def _load_encoder():
    from attnlab.domains.text import load_encoder

    try:
        return load_encoder(max_len=MAX_TOKENS)
    except FileNotFoundError as e:
        raise gr.Error(f"The sentence encoder is not installed ({e}).") from None


def encoder():
    """The MiniLM ``SentenceEncoder`` of the quick views (512 tokens at most)."""
    return _cached("encoder", _load_encoder)


def gallery_encoder():
    """A second MiniLM for the head gallery: its scoring runs beside the quick views."""
    return _cached("gallery_encoder", _load_encoder)


def encoder_scores():
    """``HeadScores`` of MiniLM on ``GALLERY_CORPUS`` (the slow part: computed once)."""

    def make():
        from attnlab.domains.text.heads import score_heads

        enc = gallery_encoder()
        tok = enc.tokenizer
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        special = [i for i in (cls, sep, enc.model.cfg.pad_id) if i is not None]
        batch = enc.encode(list(GALLERY_CORPUS))
        with model_lock("gallery_encoder"), torch.no_grad():
            return score_heads(
                enc.model,
                lambda ids, n: enc.model(ids, lengths=n),
                batch.ids,
                lengths=batch.lengths,
                special_ids=special,
                vocab=(1000, enc.model.cfg.vocab_size),
                induction_len=16,
                induction_batch=2,
                prefix=[cls],
                suffix=[sep],
            )

    return _cached("encoder_scores", make)


def causal_model(name: str):
    """Shipped causal model ``name`` (``text/chars``...), loaded once; gr.Error if absent."""

    def make():
        try:
            return registry.load(name)
        except ValueError as e:  # unknown name, or a WeightsError (a ValueError)
            raise gr.Error(
                f"The shipped model {name} is not available in this installation "
                f"({e}). Train it with `attnlab train {name.split('/step-')[0]} "
                f"--save-weights {name}`, or use another tab."
            ) from None

    return _cached(("causal", name), make)


# ------------------------------------------------------------------------------------------
# encoder: pairs and similarity
# ------------------------------------------------------------------------------------------
@dataclass
class PairAttention:
    """A sentence pair read as one input ``[CLS] a [SEP] b [SEP]``: every layer's weights
    (layers, heads, L, L), the tokens, the positions of a's and b's word pieces, and whether
    the pair was cut to 512 tokens."""

    tokens: list[str]
    weights: torch.Tensor
    a_pos: list[int]
    b_pos: list[int]
    truncated: bool

    def block(self) -> torch.Tensor:
        """(layers, heads, La, Lb): attention from a's tokens to b's tokens."""
        w = self.weights[:, :, self.a_pos]
        return w[:, :, :, self.b_pos]


def pair_attention(a: str, b: str) -> PairAttention:
    enc = encoder()
    e = enc.tokenizer.encode(a, b)
    ids = torch.tensor([e.ids])
    types = torch.tensor([e.type_ids])
    with model_lock("encoder"), torch.no_grad(), record_attention(enc.model) as maps:
        enc.model(ids, token_type_ids=types)
        w = maps.stack()[:, 0]
    words = [
        (i, t)
        for i, (t, s) in enumerate(zip(e.type_ids, e.special_tokens_mask, strict=True))
        if not s
    ]
    a_pos = [i for i, t in words if t == 0]
    b_pos = [i for i, t in words if t == 1]
    return PairAttention(list(e.tokens), w, a_pos, b_pos, bool(e.overflowing))


def similarity(a: str, b: str) -> float:
    """Cosine similarity of the two sentence embeddings (what ``enc.embed`` gives)."""
    enc = encoder()
    with model_lock("encoder"):
        e = enc.embed([a, b])
    return float(e[0] @ e[1])


# ------------------------------------------------------------------------------------------
# generation with the attention of every step
# ------------------------------------------------------------------------------------------
@dataclass
class GenerationTrace:
    """Prompt and generated tokens, and per generated token the attention of the query that
    chose it: ``steps[i]`` (layers, heads, P + i) over the prefix, plus its top choices."""

    tokens: list[str]
    prompt_len: int
    steps: list[np.ndarray]
    chosen_p: list[float]
    top: list[list[tuple[str, float]]]
    layer_names: list[str]

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": "generation",
            "tokens": self.tokens,
            "prompt_len": self.prompt_len,
            "steps": self.steps,
            "chosen_p": self.chosen_p,
            "top": self.top,
            "layer_names": self.layer_names,
        }


def generate_traced(model, prompt_ids: list[int], n: int, *, temperature: float,
                    top_k: int | None, top_p: float | None, seed: int,
                    name: str = "text/chars") -> GenerationTrace:  # fmt: skip
    """``generate`` with the KV cache, recording the attention of every decoding step (the
    prefill's last row, then each one-token step's row over the cached keys)."""
    from attnlab.domains.text.generate import generate

    with model_lock(name), record_attention(model, layers="encoder.blocks.*.attn") as maps:
        g = generate(
            model,
            prompt_ids,
            n,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            use_cache=True,
        )
    names = list(maps)
    calls = [maps.calls(nm) for nm in names]
    steps = []
    for i in range(g.new_ids.shape[1]):
        rows = [c[i].dense()[0, :, -1].float().numpy() for c in calls]  # (heads, S) each
        steps.append(np.stack(rows).astype(np.float32))
    vocab = model.vocab
    ids = g.ids[0].tolist()
    top = [
        [(vocab.tokens[int(t)], float(p)) for t, p in zip(ti, pi, strict=True)]
        for ti, pi in zip(g.top_ids[0].tolist(), g.top_probs[0].tolist(), strict=True)
    ]
    return GenerationTrace(
        [vocab.tokens[i] for i in ids],
        g.prompt_len,
        steps,
        [float(x) for x in g.logprobs[0].exp().tolist()],
        top,
        names,
    )


# ------------------------------------------------------------------------------------------
# induction checkpoints
# ------------------------------------------------------------------------------------------
_STEP = re.compile(r"step-(\d+)$")


def checkpoints(base: str = "text/induction") -> list[tuple[int, str]]:
    """(step, weights name) of the shipped training checkpoints of ``base``, by step: weights
    named ``.../step-NNNNN`` under ``base/`` or whose card says ``snapshot_of: base`` (one
    folder of them: ``base/`` first). The final weights ``base`` come last when their step is
    not already listed."""
    folders: dict[str, dict[int, str]] = {}
    final = None
    for name in registry.list_weights():
        if name == base:
            final = name
            continue
        m = _STEP.search(name)
        if m is None:
            continue
        try:
            card = registry.read_card(name)
        except (ValueError, OSError):
            continue
        if card.get("snapshot_of") == base or name.startswith(base + "/"):
            step = card.get("step", m.group(1))
            folders.setdefault(name.rsplit("/", 1)[0], {})[int(step)] = name
    found = folders.get(base) or max(folders.values(), key=len, default={})
    found = dict(found)
    if final is not None:
        card = registry.read_card(final)
        step = (card.get("metrics") or {}).get("step") or card.get("step")
        step = int(step) if isinstance(step, (int, float)) else max(found, default=0) + 1
        found.setdefault(step, final)
    return sorted(found.items())


def induction_probe(name: str, seq_len: int = 64):
    """On one random sequence repeated (the training distribution): every layer's attention
    (layers, heads, L, L), the period, ``HeadScores`` on a batch of 8 such sequences, and the
    loss on the second repeat. Cached per checkpoint."""

    def make():
        from attnlab.domains.text.data import IGNORE, induction_task
        from attnlab.domains.text.heads import score_heads

        model = causal_model(name)
        V, L = model.config.vocab_size, min(seq_len, model.config.max_len)
        task = induction_task(
            8,
            seq_len=L,
            min_period=max(2, L // 8),
            max_period=L * 7 // 16,
            vocab_size=max(V, L),
            seed=1234,
        )
        with model_lock(name), torch.no_grad():
            with record_attention(model, layers="encoder.blocks.*.attn") as maps:
                logits = model(task.tokens[:1])
            attn = maps.stack()[:, 0]
            scores = score_heads(
                model,
                lambda ids, _: model(ids),
                task.tokens,
                vocab=(0, V),
                induction_len=min(24, (L - 1) // 2),
                example=None,
            )
        loss = float(
            torch.nn.functional.cross_entropy(logits[0], task.targets[0], ignore_index=IGNORE)
        )
        return attn, int(task.period[0]), scores, loss

    return _cached(("induction", name), make)


def forget_causal() -> None:
    """Drop the cached causal models and what was computed from them (new weights shipped)."""
    with _LOAD_LOCK:
        for key in [k for k in _CACHE if isinstance(k, tuple)]:
            del _CACHE[key]


def training_curve(names: Sequence[str]) -> list[dict[str, float]]:
    """The longest probe curve found on the checkpoints' cards (each card holds the curve up
    to its step), else one point per checkpoint from its metrics."""
    best: list[dict] = []
    points = []
    for name in names:
        card = registry.read_card(name)
        curve = card.get("curve") or []
        if len(curve) > len(best):
            best = curve
        m = card.get("metrics") or {}
        if "step" in m:
            points.append(m)
    return [dict(r) for r in (best if len(best) >= len(points) else points) if isinstance(r, dict)]


# ------------------------------------------------------------------------------------------
# agreement sentences
# ------------------------------------------------------------------------------------------
@dataclass
class AgreementCase:
    """A sentence of the agreement grammar: words (``<s>`` first), the main verb's position,
    its subject's position, the right and the wrong inflection, and whether a noun of the
    other number stands between them (an attractor)."""

    words: list[str]
    verb_pos: int
    subject_pos: int
    right: str
    wrong: str
    attractor: bool


def parse_agreement(sentence: str) -> AgreementCase:
    """Find the main verb and its subject in a sentence of the grammar: the main verb is the
    last verb; its subject the first noun, or, after ``NP says/thinks/hopes that``, the first
    noun of that clause (every modifier of the grammar sits between subject and verb)."""
    from attnlab.domains.text import data

    words = sentence.split()
    if words and words[0] == data.BOS:
        words = words[1:]
    unknown = sorted({w for w in words if w not in data.AGREEMENT_VOCAB})
    if unknown:
        shown = ", ".join(repr(w) for w in unknown[:6])
        verb = "is" if len(unknown) == 1 else "are"
        raise gr.Error(
            f"The agreement model knows only the words of its grammar; {shown} "
            f"{verb} not one of them. Pick an example sentence or use its words."
        )
    words = [data.BOS, *words]
    noun_num = {w: pl for pair in data.NOUNS + data.PLACES for pl, w in enumerate(pair)}
    animate = {w for pair in data.NOUNS for w in pair}
    verbs = {w: (pair, pl) for pair in data.VERBS for pl, w in enumerate(pair)}
    saying = {w for pair in getattr(data, "SAYING", ()) for w in pair}
    start = next((i + 1 for i, w in enumerate(words) if w in saying), 0)  # "... says that"
    subject = next((i for i in range(start, len(words)) if words[i] in animate), None)
    verb = next((i for i in range(len(words) - 1, 0, -1) if words[i] in verbs), None)
    if subject is None or verb is None or verb <= subject:
        raise gr.Error(
            "The sentence needs a subject noun (e.g. 'the cat') followed by a verb "
            "(e.g. 'runs'): pick an example sentence."
        )
    pair, _ = verbs[words[verb]]
    subj_plural = bool(noun_num[words[subject]])
    attractor = any(
        w in noun_num and bool(noun_num[w]) != subj_plural for w in words[subject + 1 : verb]
    )
    # the form the subject asks for is right (whatever the sentence wrote)
    return AgreementCase(words, verb, subject, pair[subj_plural], pair[not subj_plural], attractor)


@functools.lru_cache(maxsize=4)
def agreement_examples(n: int = 16, seed: int = 0) -> tuple[str, ...]:
    """Held-out sentences of the grammar, those with an attractor first."""
    from attnlab.domains.text.data import agreement_task

    task = agreement_task(4 * n, "test", seed=seed)
    main = {int(r[0]): int(r[5]) for r in task.verbs}  # a sample's last row: its main verb
    flagged = {i for i, attractor in main.items() if attractor}
    order = sorted(range(len(task.sentences)), key=lambda i: i not in flagged)
    seen: list[str] = []
    for i in order:
        if task.sentences[i] not in seen:
            seen.append(task.sentences[i])
        if len(seen) == n:
            break
    return tuple(seen)
