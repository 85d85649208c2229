"""Sampling from a causal language model: temperature, top-k, nucleus (top-p), greedy.

Decoding follows nanoGPT's ``generate`` and Holtzman et al. 2020 ("The Curious Case of Neural
Text Degeneration") for top-p, with the core KV cache (:mod:`attnlab.core.kv_cache`): the
prompt is run once (prefill) and every later step feeds one token. ``use_cache=False`` reruns
the whole prefix at every step instead -- the reference the cached path is tested against.

Both paths draw exactly one uniform number per sequence and step from the same seeded
generator and pick the token by inverting the cumulative distribution, so a fixed seed gives the
same samples with and without the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["Generation", "generate", "filter_logits"]


@dataclass
class Generation:
    """What :func:`generate` returns.

    Attributes:
        ids: prompt and generated ids (B, P + N).
        prompt_len: P.
        logprobs: (B, N) log-probability of each chosen token under the sampling
            distribution (after temperature, top-k and top-p).
        top_ids: (B, N, k) the k most likely next tokens of the model at each step
            (temperature applied, before top-k/top-p), for display.
        top_probs: (B, N, k) their probabilities.
    """

    ids: Tensor
    prompt_len: int
    logprobs: Tensor
    top_ids: Tensor
    top_probs: Tensor

    @property
    def new_ids(self) -> Tensor:
        """The generated ids (B, N)."""
        return self.ids[:, self.prompt_len :]


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Logits (..., V) with -inf outside the ``top_k`` largest and outside the smallest set
    whose probability reaches ``top_p`` (the most likely token always stays)."""
    if top_k is not None:
        k = min(top_k, logits.shape[-1])
        kth = logits.topk(k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # mass before this token already >= p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def _check_args(temperature: float, top_k: int | None, top_p: float | None,
                max_new_tokens: int) -> None:  # fmt: skip
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")


def _as_batch(prompt_ids: Tensor | Sequence[int]) -> Tensor:
    ids = torch.as_tensor(prompt_ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.shape[1] == 0:
        raise ValueError(
            f"prompt_ids must be a non-empty (P,) or (B, P) sequence of ids, got "
            f"shape {tuple(ids.shape)}"
        )
    return ids


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: Tensor | Sequence[int],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    eos_id: int | None = None,
    num_top: int = 5,
) -> Generation:
    """Sample ``max_new_tokens`` tokens after ``prompt_ids``.

    Args:
        model: a causal LM: ``model(tokens, cache=None) -> logits (B, L, V)``, ``make_cache()``
            and ``config.max_len`` (as :class:`~attnlab.domains.text.model.CausalLM`).
        prompt_ids: (P,) or (B, P) ids.
        max_new_tokens: tokens to add; prompt plus new tokens must fit in ``max_len``.
        temperature: divides the logits; 0 picks the most likely token (greedy).
        top_k: sample among the k most likely tokens only.
        top_p: sample from the smallest set of tokens whose probability reaches ``top_p``.
        seed: seeds the sampling; None draws from torch's global generator.
        use_cache: prefill once and feed one token per step (else rerun the prefix).
        eos_id: stop early once every sequence has produced this id (a sequence that is done
            repeats it until the others are).
        num_top: how many of the most likely tokens to report per step.
    """
    _check_args(temperature, top_k, top_p, max_new_tokens)
    device = next(model.parameters()).device
    ids = _as_batch(prompt_ids).to(device)
    B, P = ids.shape
    max_len = model.config.max_len
    if P + max_new_tokens > max_len:
        raise ValueError(
            f"prompt ({P}) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's max_len={max_len}"
        )
    gen = None if seed is None else torch.Generator(device).manual_seed(seed)
    was_training = model.training
    model.eval()
    logps, tops, top_ps = [], [], []
    done = torch.zeros(B, dtype=torch.bool, device=device)
    try:
        cache = model.make_cache() if use_cache else None
        step_input = ids
        for _ in range(max_new_tokens):
            logits = model(step_input if use_cache else ids, cache=cache)[:, -1].float()
            if temperature == 0:
                probs = torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, True), 1.0)
                shown = logits.softmax(-1)
            else:
                shown = (logits / temperature).softmax(-1)
                probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
            u = torch.rand(B, 1, generator=gen, device=device)
            nxt = torch.searchsorted(probs.cumsum(-1), u * probs.sum(-1, keepdim=True))
            nxt = nxt.clamp_(max=probs.shape[-1] - 1)  # u * total can round to the last edge
            nxt = torch.where(probs.gather(-1, nxt) > 0, nxt, probs.argmax(-1, True))
            if eos_id is not None:
                nxt = torch.where(done[:, None], eos_id, nxt)
            logps.append(probs.gather(-1, nxt).log().squeeze(-1))
            v, i = shown.topk(min(num_top, shown.shape[-1]), dim=-1)
            tops.append(i)
            top_ps.append(v)
            ids = torch.cat([ids, nxt], dim=1)
            step_input = nxt
            if eos_id is not None:
                done |= nxt.squeeze(-1) == eos_id
                if bool(done.all()):
                    break
    finally:
        model.train(was_training)
    k = min(num_top, model.config.vocab_size)
    empty = torch.zeros(B, 0, k, device=device)
    return Generation(
        ids=ids,
        prompt_len=P,
        logprobs=torch.stack(logps, 1) if logps else torch.zeros(B, 0, device=device),
        top_ids=torch.stack(tops, 1) if tops else empty.long(),
        top_probs=torch.stack(top_ps, 1) if top_ps else empty,
    )
