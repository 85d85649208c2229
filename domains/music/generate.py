"""Continue a prime of event tokens with a music model: temperature, top-k and nucleus (top-p,
Holtzman et al. 2020) sampling, with a KV cache (each step feeds one token) or without (each
step re-runs the whole prefix: the reference the cache must match).

For a fixed ``seed`` both paths draw the same samples: the random numbers come from one
generator, one draw per step, and the logits agree to float rounding.

A small model forgets to end notes: unchecked, most continuations of the shipped models held a
note to the very end (up to 94 sixteenths, where the longest note of the training chorales
lasts 32). ``max_hold`` bounds that: when a sampled time shift would carry a sounding note past
``max_hold`` steps, the note's note-off is written instead (and fed to the model), then sampling
goes on; the positions so written are in ``Generation.forced``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .tokens import NOTE_OFF, TIME_SHIFT, VELOCITY

__all__ = ["generate", "sample_logits", "Generation", "NoteClock", "MAX_NEW_TOKENS",
           "MAX_HOLD"]  # fmt: skip

MAX_NEW_TOKENS = 2048
#: longest note (time-shift steps, sixteenths) a continuation may hold: the longest note of the
#: training chorales
MAX_HOLD = 32


@dataclass(frozen=True)
class Generation:
    """``tokens``: prime followed by the ``new`` generated tokens; ``prime_len``; ``forced``:
    positions in ``tokens`` of the note-offs written by the ``max_hold`` rule."""

    tokens: list[int]
    prime_len: int
    forced: tuple[int, ...] = ()

    @property
    def new(self) -> list[int]:
        return self.tokens[self.prime_len :]


def sample_logits(logits: Tensor, g: torch.Generator, temperature: float = 1.0,
                  top_k: int = 0, top_p: float = 1.0) -> int:  # fmt: skip
    """One id from (V,) logits; ``temperature`` 0 is greedy; ``top_k`` 0 and ``top_p`` 1 keep
    every id."""
    logits = logits.detach().double().cpu()  # the same draw on every device
    u = torch.rand((), generator=g, dtype=torch.float64)  # drawn even when greedy: one per step
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    if top_p < 1.0:
        p, idx = probs.sort(descending=True)
        keep = (p.cumsum(0) - p) < top_p  # the smallest prefix reaching top_p
        probs = torch.zeros_like(probs).scatter(0, idx[keep], p[keep])
        probs = probs / probs.sum()
    cdf = probs.cumsum(0)
    return int(torch.searchsorted(cdf, u * cdf[-1]).clamp(max=probs.numel() - 1))


class NoteClock:
    """Follows a token stream: the time (steps) and the pitches sounding, each since when."""

    def __init__(self, tokens: list[int] = ()) -> None:
        self.now = 0
        self.sounding: dict[int, int] = {}
        for t in tokens:
            self.push(t)

    def push(self, t: int) -> None:
        if t < NOTE_OFF:
            self.sounding[t] = self.now  # a sounding pitch restarts
        elif t < TIME_SHIFT:
            self.sounding.pop(t - NOTE_OFF, None)
        elif t < VELOCITY:
            self.now += t - TIME_SHIFT + 1

    def overdue(self, t: int, max_hold: int) -> int | None:
        """The note-off to write instead of ``t`` when ``t`` is a time shift that would carry
        the longest-sounding note past ``max_hold`` steps; else None."""
        if not TIME_SHIFT <= t < VELOCITY or not self.sounding:
            return None
        pitch, since = min(self.sounding.items(), key=lambda kv: (kv[1], kv[0]))
        if self.now + (t - TIME_SHIFT + 1) - since > max_hold:
            return NOTE_OFF + pitch
        return None


def _check(prime: list[int], n: int, temperature: float, top_k: int, top_p: float,
           vocab: int, max_len: int) -> None:  # fmt: skip
    if not prime:
        raise ValueError("the prime is empty: give at least one token")
    if any(not 0 <= t < vocab for t in prime):
        raise ValueError(f"prime tokens must be in [0, {vocab})")
    if not isinstance(n, int) or n < 1 or n > MAX_NEW_TOKENS:
        raise ValueError(f"new tokens must be an int in 1..{MAX_NEW_TOKENS}, got {n!r}")
    if len(prime) + n > max_len:
        raise ValueError(f"prime ({len(prime)}) + new tokens ({n}) exceed the model's "
                         f"max_len {max_len}")  # fmt: skip
    if not 0 <= temperature <= 10:
        raise ValueError(f"temperature must be in [0, 10], got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


@torch.no_grad()
def generate(model: nn.Module, prime: list[int], n: int, *, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, seed: int = 0, use_cache: bool = True,
             max_hold: int | None = MAX_HOLD) -> Generation:  # fmt: skip
    """``n`` tokens continuing ``prime`` (batch of one).

    Args:
        model: a :class:`MusicTransformer` (``forward(tokens, cache)``, ``make_cache()``).
        prime: token ids.
        n: tokens to generate (1..MAX_NEW_TOKENS, prime + n <= max_len).
        temperature, top_k, top_p: sampling (temperature 0 = greedy).
        seed: seeds the sampler.
        use_cache: KV cache (one position per step) or re-run the prefix every step.
        max_hold: longest note in time-shift steps (see the module); None lets notes ring on.
    """
    prime = [int(t) for t in prime]
    c = model.config
    _check(prime, n, float(temperature), int(top_k), float(top_p), c.vocab_size, c.max_len)
    if max_hold is not None and (isinstance(max_hold, bool) or not isinstance(max_hold, int)
                                 or max_hold < 1):  # fmt: skip
        raise ValueError(f"max_hold must be a positive int (steps) or None, got {max_hold!r}")
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(int(seed))
    dev = next(model.parameters()).device  # the model's device (CPU or a GPU)
    tokens = list(prime)
    clock = NoteClock(prime)
    forced: list[int] = []

    def choose(logits: Tensor) -> int:
        t = sample_logits(logits, g, temperature, top_k, top_p)
        off = None if max_hold is None else clock.overdue(t, max_hold)
        if off is not None:
            t = off
            forced.append(len(tokens))
        clock.push(t)
        tokens.append(t)
        return t

    try:
        if use_cache:
            cache = model.make_cache()
            logits = model(torch.tensor([prime], device=dev), cache=cache)[0, -1]
            for i in range(n):
                t = choose(logits)
                if i < n - 1:
                    logits = model(torch.tensor([[t]], device=dev), cache=cache)[0, -1]
        else:
            for _ in range(n):
                choose(model(torch.tensor([tokens], device=dev))[0, -1])
    finally:
        model.train(was_training)
    return Generation(tokens, len(prime), tuple(forced))
