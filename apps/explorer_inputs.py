"""Example inputs of the Core Explorer: a sentence with fixed word embeddings, a periodic
signal, or seeded random q, k, v, so that attention patterns mean something.

Words get unit vectors seeded by a stable hash of the word (not its position), and positions
get sinusoidal codes (Vaswani et al. 2017) with short wavelengths; heads are built from dot
products of these codes, in the spirit of the hand-written heads of Weiss et al. 2021
("Thinking Like Transformers"): same word, previous token, nearby positions.
"""

from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .explorer_lab import Problem

__all__ = ["INPUT_KINDS", "SENTENCE", "SOURCE", "PERIOD", "make_inputs"]

INPUT_KINDS = ("sentence", "periodic signal", "random")
HEAD_DIM = 64
SENTENCE = (
    "the cat sat on the mat because the mat was warm and the cat was tired so the "
    "dog sat by the door"
).split()
SOURCE = "a tired cat sat on a warm mat by the door".split()  # cross-attention keys
PERIOD = 12


def _token_vectors(words: list[str], D: int) -> Tensor:
    """Fixed unit vectors per word (seeded by a stable hash of the word, not by order)."""
    out = torch.empty(len(words), D)
    for i, w in enumerate(words):
        g = torch.Generator().manual_seed(zlib.crc32(w.encode()))
        out[i] = torch.randn(D, generator=g)
    return out / out.norm(dim=-1, keepdim=True)


def _positions(pos: Tensor, D: int, base: float = 10.0) -> Tensor:
    """Unit sinusoidal position codes (Vaswani et al. 2017) with short wavelengths, so that a
    dot product peaks at equal positions and decays within a few tokens."""
    i = torch.arange(D // 2, dtype=torch.float32)
    freq = base ** (-i / (D // 2)) * math.pi / 2
    ang = pos.float()[:, None] * freq[None]
    pe = torch.cat([ang.sin(), ang.cos()], dim=-1)
    return pe / pe.norm(dim=-1, keepdim=True)


def make_inputs(
    kind: str, prob: Problem, seed: int = 0, D: int = HEAD_DIM
) -> tuple[Tensor, Tensor, Tensor, list[str], list[str]]:
    """q (1, H, L, D), k and v (1, H, S, D), and query / key labels.

    ``sentence``: words with fixed embeddings; heads cycle through four patterns: same word,
    previous token, nearby positions, and a random content projection. ``periodic signal``:
    a signal of period 12 whose codes make a position attend to its earlier periods.
    ``random``: seeded Gaussian q, k, v.
    """
    if kind not in INPUT_KINDS:
        raise ValueError(f"input must be one of {', '.join(INPUT_KINDS)}; got {kind!r}")
    H, L, S = prob.heads, prob.L, prob.S
    g = torch.Generator().manual_seed(int(seed))
    v = torch.randn(1, H, S, D, generator=g)
    if kind == "random":
        q = torch.randn(1, H, L, D, generator=g)
        k = torch.randn(1, H, S, D, generator=g)
        return q, k, v, [str(i) for i in range(L)], [str(j) for j in range(S)]
    sharp = math.sqrt(8.0 * math.sqrt(D))  # unit-vector dot products become logits up to ~8
    if kind == "periodic signal":
        tq, tk = torch.arange(L), torch.arange(S) * (L / S if prob.mask_kind == "cross" else 1)
        ql = [f"t{i}" for i in range(L)]
        kl = [f"t{float(t):g}" for t in tk]
        pq = _positions(tq % PERIOD, D)
        pk = _positions(tk % PERIOD, D)
        # heads differ only in sharpness: later heads have sharper peaks
        q = torch.stack([pq * sharp] * H)[None]
        k = torch.stack([pk * sharp * (1.0 + 0.25 * h) ** 0.5 for h in range(H)])[None]
        return q.contiguous(), k.contiguous(), v, ql, kl
    qw = [SENTENCE[i % len(SENTENCE)] for i in range(L)]
    kw = [SOURCE[j % len(SOURCE)] for j in range(S)] if prob.mask_kind == "cross" else qw
    eq, ek = _token_vectors(qw, D), _token_vectors(kw, D)
    pq, pk = _positions(torch.arange(L), D), _positions(torch.arange(S), D)
    pk_next = _positions(torch.arange(S) + 1, D)  # key j coded as position j + 1
    qs, ks = [], []
    for h in range(H):
        pattern = h % 4
        if pattern == 0:  # same word
            qs.append(eq), ks.append(ek)
        elif pattern == 1:  # previous token: query i matches key coded i, i.e. key i - 1
            qs.append(pq), ks.append(pk_next)
        elif pattern == 2:  # nearby positions, softer
            qs.append(pq * 0.5), ks.append(pk)
        else:  # a random content projection (an arbitrary learned-looking head)
            w = torch.randn(D, D, generator=g) / math.sqrt(D)
            a, b = eq @ w, ek @ w.T
            qs.append(a / a.norm(dim=-1, keepdim=True)), ks.append(b / b.norm(dim=-1, keepdim=True))
    q = torch.stack(qs)[None] * sharp
    k = torch.stack(ks)[None] * sharp
    return q.contiguous(), k.contiguous(), v, qw, kw
