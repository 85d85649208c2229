"""Text-domain data: token vocabularies and three deterministic datasets.

- **induction**: repeated random tokens, ``[prefix r1..rn r1..rn]`` (Olsson et al. 2022, "In-context
  Learning and Induction Heads"), scored on the second repeat only. The period ``n`` varies per
  sequence and every token of ``prefix r1..rn`` is distinct, so the next token can only be
  found by looking up the previous occurrence of the current one -- not by a fixed offset.
- **agreement**: a small English-like grammar with subject-verb agreement across prepositional
  phrases, relative clauses and "that" complements (whose subject is not the sentence's first
  noun), with attractor nouns of the other number in between
  (Linzen et al. 2016, "Assessing the Ability of LSTMs to Learn Syntax-Sensitive
  Dependencies"; templates in the spirit of Marvin & Linzen 2018). Every verb's position, its
  subject's position and both inflections are recorded. The held-out split uses
  (subject noun, verb) combinations that never occur in training.
- **chars**: character windows of any UTF-8 text; by default Python's own documentation
  (``pydoc_data/topics.py``, ~465k characters, present on every machine), so nothing is
  downloaded.

Generators are seeded and pure (Python's ``random.Random`` / a torch ``Generator``): a seed gives
the same tensors on every machine. They are fast enough that nothing is cached.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from attnlab.core.lm import IGNORE
from attnlab.core.toy import TokenTask

__all__ = ["IGNORE", "Vocab", "InductionTask", "induction_task", "AgreementTask",
           "agreement_task", "AGREEMENT_VOCAB", "held_out_pair", "CharCorpus", "CharWindows",
           "char_corpus", "default_text", "read_text_file"]  # fmt: skip


class Vocab:
    """Token strings <-> ids, for characters (``"chars"``) or space-separated words
    (``"words"``).

    Args:
        tokens: the token string of each id (no duplicates).
        kind: ``"chars"`` or ``"words"``.
    """

    def __init__(self, tokens: Sequence[str], kind: str = "chars") -> None:
        if kind not in ("chars", "words"):
            raise ValueError(f"kind must be 'chars' or 'words', got {kind!r}")
        self.tokens, self.kind = list(tokens), kind
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("vocabulary has duplicate tokens")
        if kind == "chars" and any(len(t) != 1 for t in self.tokens):
            raise ValueError("a character vocabulary holds single characters")

    @classmethod
    def from_text(cls, text: str, kind: str = "chars") -> Vocab:
        """The sorted distinct characters (or words) of ``text``."""
        return cls(sorted(set(text if kind == "chars" else text.split())), kind)

    def __len__(self) -> int:
        return len(self.tokens)

    def split(self, text: str) -> list[str]:
        return list(text) if self.kind == "chars" else text.split()

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; ``ValueError`` naming the tokens the vocabulary lacks."""
        parts = self.split(text)
        unknown = sorted({t for t in parts if t not in self.index})
        if unknown:
            shown = ", ".join(repr(t) for t in unknown[:8])
            raise ValueError(f"{len(unknown)} token(s) not in the vocabulary: {shown}")
        return [self.index[t] for t in parts]

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """Text of ``ids`` (chars joined directly, words with spaces)."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        if any(not 0 <= i < len(self.tokens) for i in ids):
            raise ValueError(f"ids must be in [0, {len(self.tokens)})")
        sep = "" if self.kind == "chars" else " "
        return sep.join(self.tokens[i] for i in ids)


def _check(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


# ------------------------------------------------------------------------------------------
# induction: repeated random tokens
# ------------------------------------------------------------------------------------------
class InductionTask(TokenTask):
    """Repeated random tokens. ``period`` (N,): the repeat length ``n`` of each sequence; its
    second repeat starts at ``seq_len - n`` (``second_start``)."""

    def __init__(self, tokens: Tensor, targets: Tensor, vocab_size: int, period: Tensor) -> None:
        super().__init__(tokens, targets, vocab_size)
        self.period = period

    @property
    def second_start(self) -> Tensor:
        return self.seq_len - self.period


def induction_task(
    num_samples: int,
    seq_len: int = 64,
    min_period: int = 8,
    max_period: int = 28,
    vocab_size: int = 64,
    seed: int = 0,
) -> InductionTask:
    """``prefix r1..rn r1..rn`` with ``n`` uniform in ``[min_period, max_period]``.

    The prefix and ``r1..rn`` are distinct tokens (a random permutation of the vocabulary),
    so every token of the second repeat has exactly one earlier occurrence. Tokens are the
    whole sequence; targets are the next token at positions ``seq_len - n .. seq_len - 2``
    (predicting ``r2..rn`` of the second repeat) and ``IGNORE`` elsewhere.
    """
    _check("num_samples", num_samples, 1)
    _check("min_period", min_period, 2)
    _check("max_period", max_period, min_period)
    _check("seq_len", seq_len, 2 * max_period)
    _check("vocab_size", vocab_size, seq_len)
    g = torch.Generator().manual_seed(seed)
    period = torch.randint(min_period, max_period + 1, (num_samples,), generator=g)
    perm = torch.rand(num_samples, vocab_size, generator=g).argsort(-1)  # (N, V)
    pos = torch.arange(seq_len)
    start = (seq_len - period)[:, None]  # (N, 1) first position of the second repeat
    src = torch.where(pos >= start, pos - period[:, None], pos)  # (N, L)
    tokens = perm[:, :seq_len].gather(1, src)
    targets = torch.full_like(tokens, IGNORE)
    scored = pos[:-1] >= start  # (N, L - 1)
    targets[:, :-1] = torch.where(scored, tokens[:, 1:], IGNORE)
    return InductionTask(tokens, targets, vocab_size, period)


# ------------------------------------------------------------------------------------------
# agreement: a synthetic grammar with attractors
# ------------------------------------------------------------------------------------------
# (singular, plural) pairs. Animate nouns are subjects, objects and attractors; places only
# appear in prepositional phrases.
NOUNS = [("cat", "cats"), ("dog", "dogs"), ("bird", "birds"), ("author", "authors"),
         ("pilot", "pilots"), ("farmer", "farmers"), ("teacher", "teachers"),
         ("senator", "senators"), ("doctor", "doctors"), ("student", "students"),
         ("child", "children"), ("king", "kings")]  # fmt: skip
PLACES = [
    ("table", "tables"),
    ("house", "houses"),
    ("car", "cars"),
    ("tree", "trees"),
    ("box", "boxes"),
    ("garden", "gardens"),
    ("river", "rivers"),
    ("door", "doors"),
]
INTRANSITIVE = [
    ("runs", "run"),
    ("sleeps", "sleep"),
    ("laughs", "laugh"),
    ("smiles", "smile"),
    ("swims", "swim"),
    ("waits", "wait"),
    ("sings", "sing"),
    ("falls", "fall"),
]
TRANSITIVE = [
    ("likes", "like"),
    ("sees", "see"),
    ("chases", "chase"),
    ("admires", "admire"),
    ("follows", "follow"),
    ("knows", "know"),
    ("helps", "help"),
    ("hates", "hate"),
]
SAYING = [("says", "say"), ("thinks", "think"), ("hopes", "hope")]  # take a "that" clause
VERBS = INTRANSITIVE + TRANSITIVE + SAYING  # lemma index: 0..7 intransitive, 8..15 transitive
PREPOSITIONS = ["near", "behind", "beside", "above"]
ADJECTIVES = ["old", "young", "small", "happy"]
PAD, BOS, EOS = "<pad>", "<s>", "."
AGREEMENT_VOCAB: list[str] = [
    PAD,
    BOS,
    EOS,
    "the",
    "that",
    *PREPOSITIONS,
    *ADJECTIVES,
    *(w for pair in NOUNS + PLACES + VERBS for w in pair),
]
# modifiers of the subject: none, one or two prepositional phrases, a subject relative clause
# ("that chases the dogs") or an object relative clause ("that the dogs chase")
_MODIFIERS, _MODIFIER_WEIGHTS = ("none", "pp", "pp2", "src", "orc"), (2, 3, 1, 2, 3)
VERB_COLUMNS = ("sample", "verb_pos", "subject_pos", "correct", "wrong", "attractor")


def held_out_pair(noun: int, verb: int) -> bool:
    """Whether (subject noun lemma, verb lemma) is a held-out combination (one in five)."""
    return (noun + verb) % 5 == 0


@dataclass
class _Agreement:
    verb_pos: int
    subject_pos: int
    noun: int  # lemma index into NOUNS
    verb: int  # lemma index into VERBS
    plural: bool
    attractor: bool = False


class _Sentence:
    """Words built left to right, with every noun's position and number."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.words = rng, [BOS]
        self.nouns: list[tuple[int, bool]] = []
        self.agreements: list[_Agreement] = []

    def noun_phrase(self, pool: list[tuple[str, str]]) -> tuple[int, int, bool]:
        """``the [adj] noun``; returns (position, lemma, plural)."""
        rng = self.rng
        self.words.append("the")
        if rng.random() < 0.25:
            self.words.append(rng.choice(ADJECTIVES))
        lemma, plural = rng.randrange(len(pool)), rng.random() < 0.5
        self.words.append(pool[lemma][plural])
        self.nouns.append((len(self.words) - 1, plural))
        return len(self.words) - 1, lemma, plural

    def prepositional_phrase(self) -> None:
        self.words.append(self.rng.choice(PREPOSITIONS))
        self.noun_phrase(self.rng.choice([NOUNS, PLACES]))

    def verb(self, lemma: int, subject: tuple[int, int, bool]) -> None:
        pos, noun, plural = subject
        self.words.append(VERBS[lemma][plural])
        v = len(self.words) - 1
        between = [p for p, pl in self.nouns if pos < p < v and pl != plural]
        self.agreements.append(_Agreement(v, pos, noun, lemma, plural, bool(between)))


def _sentence(rng: random.Random) -> _Sentence:
    s = _Sentence(rng)
    if rng.random() < 0.25:  # the authors think that <clause>: its subject is not the first noun
        outer = s.noun_phrase(NOUNS)
        s.verb(len(INTRANSITIVE) + len(TRANSITIVE) + rng.randrange(len(SAYING)), outer)
        s.words.append("that")
    subject = s.noun_phrase(NOUNS)
    mod = rng.choices(_MODIFIERS, _MODIFIER_WEIGHTS)[0]
    if mod in ("pp", "pp2"):
        s.prepositional_phrase()
        if mod == "pp2":
            s.prepositional_phrase()
    elif mod == "src":  # the cat that chases the dogs ...
        s.words.append("that")
        s.verb(len(INTRANSITIVE) + rng.randrange(len(TRANSITIVE)), subject)
        s.noun_phrase(NOUNS)
    elif mod == "orc":  # the cat that the dogs chase ...
        s.words.append("that")
        inner = s.noun_phrase(NOUNS)
        s.verb(len(INTRANSITIVE) + rng.randrange(len(TRANSITIVE)), inner)
    s.verb(rng.randrange(len(INTRANSITIVE) + len(TRANSITIVE)), subject)
    if s.agreements[-1].verb >= len(INTRANSITIVE):  # a transitive main verb takes an object
        s.noun_phrase(NOUNS)
        if rng.random() < 0.3:
            s.prepositional_phrase()
    s.words.append(EOS)
    return s


class AgreementTask(TokenTask):
    """Sentences (N, L) as word ids, padded with ``<pad>`` (id 0), next-word targets.

    Attributes:
        sentences: the words of each sentence, joined by spaces (no padding).
        verbs: (M, 6) long, one row per verb, columns ``VERB_COLUMNS``: sample index, verb
            position, its subject's position, the correct and the wrong inflection's ids, and
            whether an attractor (a noun of the other number) stands between them.
        vocab: the word vocabulary.
    """

    def __init__(self, tokens: Tensor, targets: Tensor, verbs: Tensor,
                 sentences: list[str]) -> None:  # fmt: skip
        super().__init__(tokens, targets, len(AGREEMENT_VOCAB))
        self.verbs, self.sentences = verbs, sentences
        self.vocab = Vocab(AGREEMENT_VOCAB, "words")


def agreement_task(num_samples: int, split: str = "train", seq_len: int = 28,
                   seed: int = 0) -> AgreementTask:  # fmt: skip
    """``num_samples`` sentences of the agreement grammar.

    Args:
        split: ``"train"`` (no agreement pair is held out) or ``"test"`` (every agreement pair
            is a held-out (noun, verb) combination, see :func:`held_out_pair`): the splits
            share no sentence.
        seq_len: padded length; the longest sentence of the grammar has 26 tokens.
        seed: with ``split``, picks the stream.
    """
    _check("num_samples", num_samples, 1)
    _check("seq_len", seq_len, 26)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = random.Random(f"agreement/{split}/{seed}")
    vocab = Vocab(AGREEMENT_VOCAB, "words")
    tokens = torch.zeros(num_samples, seq_len, dtype=torch.long)  # <pad> = 0
    targets = torch.full((num_samples, seq_len), IGNORE, dtype=torch.long)
    verbs, sentences = [], []
    while len(sentences) < num_samples:
        s = _sentence(rng)
        held = [held_out_pair(a.noun, a.verb) for a in s.agreements]
        if (split == "train" and any(held)) or (split == "test" and not all(held)):
            continue
        i, ids = len(sentences), vocab.encode(" ".join(s.words))
        tokens[i, : len(ids)] = torch.tensor(ids)
        targets[i, : len(ids) - 1] = torch.tensor(ids[1:])
        for a in s.agreements:
            right = VERBS[a.verb][a.plural]
            wrong = VERBS[a.verb][not a.plural]
            verbs.append([i, a.verb_pos, a.subject_pos, vocab.index[right], vocab.index[wrong],
                          int(a.attractor)])  # fmt: skip
        sentences.append(" ".join(s.words[1:]))
    return AgreementTask(tokens, targets, torch.tensor(verbs, dtype=torch.long), sentences)


# ------------------------------------------------------------------------------------------
# chars: windows of a UTF-8 text
# ------------------------------------------------------------------------------------------
def default_text() -> str:
    """Python's own documentation topics (``pydoc_data/topics.py``), joined in key order."""
    try:
        topics = importlib.import_module("pydoc_data.topics").topics
    except ImportError as err:  # some distributions strip it
        raise ValueError(
            f"this Python has no pydoc_data.topics ({err}): pass a text file with --data FILE"
        ) from None
    return "\n".join(topics[k] for k in sorted(topics))


def read_text_file(path: str | Path) -> str:
    """The text of a UTF-8 file; ``ValueError`` for a missing, empty or non-UTF-8 file."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"data file {str(p)!r} does not exist")
    if not p.is_file():
        raise ValueError(f"data file {str(p)!r} is not a file")
    raw = p.read_bytes()
    if not raw.strip():
        raise ValueError(f"data file {str(p)!r} is empty")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"data file {str(p)!r} is not UTF-8 text (byte {err.start}: "
            f"{err.reason}); convert it, e.g. iconv -t utf-8"
        ) from None


@dataclass
class CharCorpus:
    """A text, its character vocabulary and a split: ``train`` / ``held_out`` ids (1-D long),
    the held-out part being the text's last ``held_out_fraction``."""

    text: str
    vocab: Vocab
    train: Tensor
    held_out: Tensor


def char_corpus(path: str | Path | None = None, held_out_fraction: float = 0.05,
                seq_len: int = 128) -> CharCorpus:  # fmt: skip
    """Read ``path`` (default: :func:`default_text`) and split it; both parts hold at least one
    window of ``seq_len + 1`` characters."""
    text = read_text_file(path) if path else default_text()
    if not 0 < held_out_fraction < 1:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    need = 2 * (seq_len + 1)
    if len(text) < need:
        raise ValueError(
            f"text of {len(text)} characters is too short for windows of "
            f"{seq_len + 1}: it needs at least {need}"
        )
    vocab = Vocab.from_text(text, "chars")
    ids = torch.tensor(vocab.encode(text), dtype=torch.long)
    cut = min(len(text) - (seq_len + 1), int(len(text) * (1 - held_out_fraction)))
    cut = max(cut, seq_len + 1)
    return CharCorpus(text, vocab, ids[:cut], ids[cut:])


class CharWindows(Dataset):
    """Windows of ``seq_len + 1`` characters of ``ids`` starting at ``offsets``; items are
    ``{"tokens": window[:-1], "targets": window[1:]}``.

    Args:
        ids: the text's ids (1-D).
        seq_len: tokens per item.
        num: random windows (seeded by ``seed``); 0 = consecutive non-overlapping windows.
    """

    def __init__(self, ids: Tensor, seq_len: int, num: int = 0, seed: int = 0) -> None:
        _check("seq_len", seq_len, 1)
        last = len(ids) - (seq_len + 1)
        if last < 0:
            raise ValueError(f"{len(ids)} ids hold no window of {seq_len + 1}")
        if num:
            g = torch.Generator().manual_seed(seed)
            self.offsets = torch.randint(0, last + 1, (num,), generator=g)
        else:
            self.offsets = torch.arange(0, last + 1, seq_len)
        self.ids, self.seq_len = ids, seq_len

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        o = int(self.offsets[i])
        w = self.ids[o : o + self.seq_len + 1]
        return {"tokens": w[:-1], "targets": w[1:]}
