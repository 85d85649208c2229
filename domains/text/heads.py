"""Heads named by what they measurably do: per-head behaviour scores for any attnlab model.

Every self-attention head of a model is scored on a batch of real token ids for
previous-token, next-token, same-token and sink attention (the first token and special tokens
such as [CLS]/[SEP]/BOS), on how broad it is (normalised row entropy) and on its mean
attention distance, and on repeated random tokens for induction. The behaviours follow the
head taxonomies of Clark et al. 2019 ("What Does BERT Look At?": previous/next-token heads,
[CLS]/[SEP] sinks, broad heads), Voita et al. 2019 ("Analyzing Multi-Head Self-Attention":
positional heads) and Olsson et al. 2022 ("In-context Learning and Induction Heads": the
prefix-matching score on a random sequence repeated twice, weight from position t of the
second repeat to t - n + 1). Mean attention distance and entropy reuse ``core.analysis``.

Every score except the distance is a mean attention weight (or a normalised entropy), so it
lies in [0, 1] and the scores of one head compare directly; ``HeadScores.label`` names a
head by its largest score (``label`` documents the rule). Scores are row-weighted means over
every query row of the batch that the behaviour is defined for: padded rows are left out,
weight on padded keys is removed (and rows renormalised, for models that do not mask
padding), and rows with fewer than two keys to choose from (the first rows of a causal model)
say nothing about any behaviour. A behaviour defined for no row is NaN -- next-token in a
causal layer, where it is 0 by construction.

Memory: long inputs are recorded lazily (``record_attention(lazy=True)`` keeps q, k and the
log-sum-exp per layer) and scored a block of query rows at a time, so the peak is one
(B, H, rows, L) block, not (layers, B, H, L, L).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attnlab.core.analysis import head_entropy, mean_attention_distance
from attnlab.core.capture import attention_modules, record_attention

__all__ = ["BEHAVIOURS", "HeadScores", "score_heads"]

#: behaviour names (labels) and the ``HeadScores`` field holding each one's scores
BEHAVIOURS: dict[str, str] = {
    "previous-token": "previous_token",
    "next-token": "next_token",
    "same-token": "same_token",
    "sink": "sink",
    "broad": "broad",
    "induction": "induction",
}
MIXED = "mixed"
_EPS = 1e-12


def _json_array(a: np.ndarray) -> list:
    """Nested lists with None for NaN (JSON has no NaN)."""
    return [[None if not math.isfinite(v) else round(float(v), 6) for v in row] for row in a]


def _from_json(rows: list) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)


@dataclass
class HeadScores:
    """Behaviour scores of every head: each array is (layers, heads), NaN where undefined.

    Attributes:
        layer_names: qualified names of the scored attention modules (``encoder.blocks.0.attn``).
        previous_token, next_token: mean weight on position t - 1 / t + 1.
        same_token: mean weight on other positions holding the same token id (rows that have
            one); special tokens are neither such rows nor such keys.
        sink: mean weight on the first token and on special-token positions.
        broad: mean row entropy / log(number of keys the row may attend to), in [0, 1].
        induction: mean weight from t in the second repeat of a random sequence to t - n + 1.
        mean_distance: mean |i - j| weighted by attention, in tokens (not a label).
        causal: (layers,) whether each layer attends to no later key.
        rows: per behaviour (and ``mean_distance``), (layers,) how many query rows were scored.
        threshold, margin: the labelling rule's parameters (see ``label``).
        induction_len: length n of the repeated random sequence (0: not probed).
        example: (layers, heads, L, L) weights of one sequence of the batch, cut to its real
            tokens, for a gallery (None if not kept); ``example_ids`` its token ids.
    """

    layer_names: list[str]
    previous_token: np.ndarray
    next_token: np.ndarray
    same_token: np.ndarray
    sink: np.ndarray
    broad: np.ndarray
    induction: np.ndarray
    mean_distance: np.ndarray
    causal: np.ndarray
    rows: dict[str, list[int]] = field(default_factory=dict)
    threshold: float = 0.4
    margin: float = 0.1
    induction_len: int = 0
    example: np.ndarray | None = field(default=None, repr=False)
    example_ids: list[int] | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """(layers, heads)."""
        return self.previous_token.shape

    def scores(self, layer: int, head: int) -> dict[str, float]:
        """Every behaviour's score of one head (NaN where undefined)."""
        return {b: float(getattr(self, f)[layer, head]) for b, f in BEHAVIOURS.items()}

    def label(self, layer: int, head: int) -> tuple[str, float]:
        """The head's strongest behaviour and its score.

        Rule: the behaviour with the largest defined score names the head, unless that score
        is below ``threshold`` or within ``margin`` of the runner-up: then the head is
        ``'mixed'`` (with its largest score). A head with no defined score is ('mixed', NaN).
        Mean distance is not a behaviour (it has no [0, 1] scale).
        """
        s = sorted(
            ((v, b) for b, v in self.scores(layer, head).items() if math.isfinite(v)), reverse=True
        )
        if not s:
            return MIXED, float("nan")
        best, name = s[0]
        runner = s[1][0] if len(s) > 1 else 0.0
        if best < self.threshold or best - runner < self.margin:
            return MIXED, best
        return name, best

    def labels(self) -> tuple[list[list[str]], np.ndarray]:
        """Every head's label, (layers lists of heads names), and its score (layers, heads)."""
        n_layers, n_heads = self.shape
        names = [[self.label(i, h)[0] for h in range(n_heads)] for i in range(n_layers)]
        best = np.array([[self.label(i, h)[1] for h in range(n_heads)] for i in range(n_layers)])
        return names, best.reshape(n_layers, n_heads)

    def table(self) -> list[dict[str, Any]]:
        """One row per head: layer, head, module name, label, score, every behaviour's score
        and the mean distance (None where undefined), layers first."""
        out = []
        n_layers, n_heads = self.shape
        for i in range(n_layers):
            for h in range(n_heads):
                name, best = self.label(i, h)
                row = {
                    "layer": i,
                    "head": h,
                    "module": self.layer_names[i],
                    "label": name,
                    "score": _num(best),
                }
                row.update({b: _num(v) for b, v in self.scores(i, h).items()})
                row["mean_distance"] = _num(self.mean_distance[i, h])
                out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able scores (NaN as None) with the labels; ``from_dict`` reads it back."""
        names, best = self.labels()
        d: dict[str, Any] = {"layer_names": list(self.layer_names)}
        d.update({f: _json_array(getattr(self, f)) for f in BEHAVIOURS.values()})
        d["mean_distance"] = _json_array(self.mean_distance)
        d.update(
            causal=[bool(c) for c in self.causal],
            rows=dict(self.rows),
            threshold=self.threshold,
            margin=self.margin,
            induction_len=self.induction_len,
            labels=names,
            label_scores=_json_array(best),
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadScores:
        """The inverse of ``to_dict`` (the example map is not part of it)."""
        arrays = {f: _from_json(d[f]) for f in (*BEHAVIOURS.values(), "mean_distance")}
        return cls(
            layer_names=list(d["layer_names"]),
            causal=np.array(d["causal"], dtype=bool),
            rows={k: list(v) for k, v in d["rows"].items()},
            threshold=d["threshold"],
            margin=d["margin"],
            induction_len=d["induction_len"],
            **arrays,
        )


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


# ------------------------------------------------------------------------------------------
# scoring
# ------------------------------------------------------------------------------------------
class _Sums:
    """Running per-head sums and row counts of each behaviour over blocks of query rows."""

    KEYS = ("previous_token", "next_token", "same_token", "sink", "broad", "mean_distance")

    def __init__(self, n_heads: int):
        self.sum = {k: torch.zeros(n_heads, dtype=torch.float64) for k in self.KEYS}
        self.n = {k: torch.zeros(n_heads, dtype=torch.float64) for k in self.KEYS}

    def add(self, key: str, values: Tensor, rows: Tensor) -> None:
        """values, rows (B, H, R): per-row scores and which rows count."""
        values, rows = torch.broadcast_tensors(values, rows)
        self.add_totals(key, (values * rows).sum(2), rows.sum(2))

    def add_totals(self, key: str, total: Tensor, count: Tensor) -> None:
        """total, count (B, H): sums over rows and how many rows they hold."""
        self.sum[key] += total.sum(0).double().cpu()
        self.n[key] += count.sum(0).double().cpu()

    def mean(self, key: str) -> np.ndarray:
        n = self.n[key]
        return torch.where(n > 0, self.sum[key] / n.clamp_min(1), float("nan")).numpy()

    def count(self, key: str) -> int:
        return int(self.n[key].max())


def _at(x: Tensor, idx: Tensor) -> Tensor:
    """x (B, H, R, S) at key idx[r] for each row r: (B, H, R)."""
    idx = idx.view(1, 1, -1, 1).expand(*x.shape[:2], -1, 1)
    return x.gather(-1, idx).squeeze(-1)


def _score_rows(
    w: Tensor,
    allowed: Tensor,
    r0: int,
    ids: Tensor,
    valid: Tensor,
    special: Tensor,
    sinks: Tensor,
    sums: _Sums,
) -> None:
    """Add one block of query rows [r0, r0 + R) of one layer to ``sums``.

    Args:
        w: (B, H, R, S) recorded weights of the block.
        allowed: (B|1, H|1, R, S) keys each row may attend to.
        ids, valid, special, sinks: (B, S) token ids, real tokens, special tokens, sink keys.
    """
    B, H, R, S = w.shape
    pos = torch.arange(r0, r0 + R, device=w.device)
    keys = allowed & valid[:, None, None, :]  # (B, H|1, R, S): allowed real keys
    w = w.float() * keys
    mass = w.sum(-1)
    w = w / mass.clamp_min(_EPS)[..., None]  # padded keys removed, rows renormalised
    n_keys = keys.sum(-1)  # (B, H|1, R)
    live = valid[:, None, r0 : r0 + R] & (n_keys >= 2) & (mass > 0)  # (B, H, R)
    w = w * live[..., None]

    for key, off in (("previous_token", -1), ("next_token", 1)):
        tgt = pos + off
        inside = (tgt >= 0) & (tgt < S)
        tgt = tgt.clamp(0, S - 1)
        ok = live & _at(keys.expand(B, -1, -1, -1), tgt) & inside.view(1, 1, R)
        sums.add(key, _at(w, tgt), ok)

    same = ids[:, r0 : r0 + R, None] == ids[:, None, :]  # (B, R, S)
    same &= ~special[:, None, :] & (pos[:, None] != torch.arange(S, device=w.device))
    same = same[:, None] & keys  # (B, H|1, R, S)
    rows = live & same.any(-1) & ~special[:, None, r0 : r0 + R]
    sums.add("same_token", (w * same).sum(-1), rows)

    sums.add("sink", (w * sinks[:, None, None, :]).sum(-1), live)
    # each row as a one-row map: head_entropy gives that row's entropy (B, H, R)
    ent = head_entropy(w.unsqueeze(-2))
    sums.add("broad", ent / torch.log(n_keys.clamp_min(2).float()), live)
    coords = torch.arange(S, device=w.device, dtype=torch.float32)[:, None]
    dist = mean_attention_distance(w, coords[r0 : r0 + R], coords)  # (B, H): mean of live rows
    n_live = live.sum(-1)
    sums.add_totals("mean_distance", dist * n_live, n_live)


def _score_layer(
    maps, rec, ids: Tensor, valid: Tensor, special: Tensor, sinks: Tensor, example: int | None
) -> tuple[_Sums, bool, np.ndarray | None]:
    """One recorded layer: its sums, whether it is causal, and the example's (H, n, n) map."""
    B, L = ids.shape
    sums = _Sums(rec.num_heads)
    allowed = rec.allowed()  # (B|1, H|1, L, S) bool
    causal = not bool(torch.triu(allowed, 1).any())
    step = _row_block(B, rec.num_heads, L)
    ex = []
    for r0 in range(0, L, step):
        w = maps.rows(rec.name, slice(r0, min(L, r0 + step)))  # (B, H, R, S)
        a = allowed[..., r0 : r0 + w.shape[2], :].to(w.device)
        _score_rows(w, a, r0, ids, valid, special, sinks, sums)
        if example is not None:
            ex.append(w[example].float().cpu())
    if example is None:
        return sums, causal, None
    keep = valid[example].cpu()
    return sums, causal, torch.cat(ex, 1)[:, keep][:, :, keep].numpy()


def _padding(
    token_ids: Tensor, lengths: Tensor | None, attention_mask: Tensor | None
) -> tuple[Tensor, Any]:
    """valid (B, L) bool and the padding argument handed to ``run``."""
    B, L = token_ids.shape
    if lengths is not None and attention_mask is not None:
        raise ValueError("give lengths or attention_mask, not both")
    if attention_mask is not None:
        if tuple(attention_mask.shape) != (B, L):
            raise ValueError(
                f"attention_mask must be (B, L) = {(B, L)}, got {tuple(attention_mask.shape)}"
            )
        return attention_mask.to(token_ids.device).bool(), attention_mask
    if lengths is None:
        lengths = torch.full((B,), L, dtype=torch.long, device=token_ids.device)
    lengths = torch.as_tensor(lengths, device=token_ids.device)
    if lengths.shape != (B,) or bool((lengths < 1).any()) or bool((lengths > L).any()):
        raise ValueError(f"lengths must be (B,) = ({B},) counts in [1, {L}], got {lengths}")
    return torch.arange(L, device=token_ids.device) < lengths[:, None], lengths


def _full_padding(pad: Any, ids: Tensor) -> Any:
    """``run``'s padding argument for an unpadded batch, in the caller's form."""
    B, L = ids.shape
    if pad is not None and pad.dim() == 2:
        return torch.ones(B, L, dtype=pad.dtype, device=ids.device)
    return torch.full((B,), L, dtype=torch.long, device=ids.device)


def _self_layers(model: nn.Module, layers) -> list[str]:
    names = [n for n, m in attention_modules(model) if not getattr(m, "cross", False)]
    if layers is not None:
        names = [n for n in names if n in set(layers)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no self-attention module to score")
    return names


def _record(model, run, ids, pad, names, lazy):
    with torch.no_grad(), record_attention(model, layers=names, lazy=lazy) as maps:
        run(ids, pad)
    recs = [maps.record(n) for n in names if n in maps]
    recs = [r for r in recs if r.kind == "self"]
    if not recs:
        raise ValueError(
            f"run(...) made no self-attention call in the model's attention modules {names}"
        )
    L = ids.shape[1]
    for r in recs:
        if r.L != L or r.S != L:
            raise ValueError(
                f"{r.name} attended over ({r.L}, {r.S}) positions for {L} tokens; "
                "heads can only be scored where positions are the tokens"
            )
    return maps, recs


def _row_block(B: int, H: int, S: int, budget: int = 1 << 24) -> int:
    return max(1, budget // max(1, B * H * S))


def _candidates(vocab: tuple[int, int] | Sequence[int] | Tensor, special: Iterable[int]) -> Tensor:
    if isinstance(vocab, tuple) and len(vocab) == 2:
        cand = torch.arange(int(vocab[0]), int(vocab[1]))
    else:
        cand = torch.as_tensor(list(vocab) if not isinstance(vocab, Tensor) else vocab).long()
    sp = torch.tensor(sorted(set(int(s) for s in special)), dtype=torch.long)
    cand = cand[~torch.isin(cand, sp)]
    if cand.numel() < 2:
        raise ValueError("the induction vocabulary needs at least 2 non-special ids")
    return cand


def _induction(
    model, run, names, cand, n, batch, prefix, suffix, seed, device, pad, lazy
) -> tuple[dict[str, np.ndarray], int]:
    """Olsson et al. 2022's prefix matching: prefix r r suffix with r n random tokens, the
    weight from t in the second repeat to t - n + 1, averaged over those rows."""
    g = torch.Generator().manual_seed(seed)
    if cand.numel() >= n:
        r = torch.stack([cand[torch.randperm(cand.numel(), generator=g)[:n]] for _ in range(batch)])
    else:
        r = cand[torch.randint(cand.numel(), (batch, n), generator=g)]
    pre = torch.tensor(list(prefix), dtype=torch.long).expand(batch, -1)
    suf = torch.tensor(list(suffix), dtype=torch.long).expand(batch, -1)
    ids = torch.cat([pre, r, r, suf], 1).to(device)
    P = pre.shape[1]
    maps, recs = _record(model, run, ids, _full_padding(pad, ids), names, lazy)
    out, rows = {}, 0
    for rec in recs:
        w = maps.rows(rec.name, slice(P + n, P + 2 * n)).float()  # (B, H, n, S)
        allowed = rec.allowed()[..., P + n : P + 2 * n, :].to(w.device)
        tgt = torch.arange(P + 1, P + n + 1, device=w.device)  # t - n + 1
        ok = _at(allowed.expand(w.shape[0], w.shape[1], -1, -1), tgt)
        ok &= allowed.sum(-1) >= 2
        val = _at(w, tgt) / w.sum(-1).clamp_min(_EPS)
        cnt = ok.sum((0, 2))
        out[rec.name] = (
            torch.where(cnt > 0, (val * ok).sum((0, 2)) / cnt.clamp_min(1), float("nan"))
            .double()
            .cpu()
            .numpy()
        )
        rows = max(rows, int(cnt.max()))
    return out, rows


def score_heads(
    model: nn.Module,
    run: Callable[[Tensor, Any], Any],
    token_ids: Tensor,
    *,
    lengths: Tensor | None = None,
    attention_mask: Tensor | None = None,
    special_ids: Iterable[int] = (),
    vocab: tuple[int, int] | Sequence[int] | Tensor | None = None,
    induction_len: int = 32,
    induction_batch: int = 4,
    prefix: Sequence[int] = (),
    suffix: Sequence[int] = (),
    layers: Sequence[str] | None = None,
    threshold: float = 0.4,
    margin: float = 0.1,
    example: int | None = 0,
    lazy: bool | None = None,
    seed: int = 0,
) -> HeadScores:
    """Score every self-attention head of ``model`` on each behaviour.

    Args:
        model: any module containing attnlab attention modules (cross-attention is ignored).
        run: ``run(token_ids, padding)`` runs the model's forward on (B, L) ids; ``padding``
            is ``lengths`` (B,) or ``attention_mask`` (B, L), in the form given here (lengths
            when neither is given). E.g. ``lambda ids, n: bert(ids, lengths=n)`` or
            ``lambda ids, _: gpt(ids)``.
        token_ids: (B, L) real token ids, special tokens included, padded.
        lengths: (B,) real tokens per row (right padding), or
        attention_mask: (B, L), nonzero at real tokens (any padding side).
        special_ids: ids of special tokens ([CLS], [SEP], BOS, ...): sink keys, and neither
            same-token rows nor induction draws.
        vocab: ids to draw the induction probe from: a range ``(low, high)`` or the ids
            themselves (special ids are removed). None: no induction probe (NaN).
        induction_len: n, the length of the repeated random sequence.
        induction_batch: how many random sequences.
        prefix, suffix: fixed ids around the probe, e.g. ``[cls]`` and ``[sep]`` for BERT, or
            ``[bos]`` for a causal model.
        layers: qualified names of the attention modules to score (default: every
            self-attention module).
        threshold, margin: the labelling rule (``HeadScores.label``).
        example: index of the batch row kept as ``HeadScores.example`` (None: none kept).
        lazy: record q, k and the log-sum-exp instead of weights and materialise rows block by
            block (default: when the weights of all layers would pass 256 MB).
        seed: seed of the induction probe's random tokens.

    Returns:
        ``HeadScores`` with (layers, heads) arrays.
    """
    if token_ids.dim() != 2 or token_ids.dtype not in (torch.long, torch.int):
        raise ValueError(
            f"token_ids must be (B, L) integer ids, got {tuple(token_ids.shape)} {token_ids.dtype}"
        )
    if not 0.0 <= threshold <= 1.0 or not 0.0 <= margin <= 1.0:
        raise ValueError("threshold and margin must be in [0, 1]")
    if vocab is not None and induction_len < 2:
        raise ValueError(f"induction_len must be >= 2, got {induction_len}")
    ids = token_ids.long()
    B, L = ids.shape
    valid, pad = _padding(ids, lengths, attention_mask)
    special_ids = [int(s) for s in special_ids]
    special = torch.isin(ids, torch.tensor(special_ids, dtype=torch.long, device=ids.device))
    special &= valid
    first = valid & (valid.long().cumsum(1) == 1)  # the first real token of each row
    sinks = (first | special).float()
    names = _self_layers(model, layers)
    if lazy is None:
        heads = max(m.num_heads for n, m in attention_modules(model) if n in names)
        lazy = len(names) * B * heads * L * L * 4 > 256 * 2**20

    was_training = model.training
    model.eval()
    try:
        maps, recs = _record(model, run, ids, pad, names, lazy)
        done = [_score_layer(maps, rec, ids, valid, special, sinks, example) for rec in recs]
        probe, probe_rows = ({}, 0)
        if vocab is not None:
            cand = _candidates(vocab, special_ids)
            probe, probe_rows = _induction(
                model,
                run,
                [r.name for r in recs],
                cand,
                induction_len,
                induction_batch,
                prefix,
                suffix,
                seed,
                ids.device,
                pad,
                lazy,
            )
    finally:
        model.train(was_training)

    n_heads = max(r.num_heads for r in recs)

    def grid(rows: list[np.ndarray]) -> np.ndarray:  # layers with fewer heads: NaN-padded
        out = np.full((len(rows), n_heads), np.nan)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    results = [d[0] for d in done]
    arrays = {k: grid([s.mean(k) for s in results]) for k in _Sums.KEYS}
    arrays["induction"] = grid([probe.get(r.name, np.full(r.num_heads, np.nan)) for r in recs])
    counts = {k: [s.count(k) for s in results] for k in _Sums.KEYS}
    counts["induction"] = [probe_rows] * len(recs)
    ex_arr = None
    if example is not None and len({d[2].shape for d in done}) == 1:
        ex_arr = np.stack([d[2] for d in done])  # (layers, H, n, n)
    return HeadScores(
        layer_names=[r.name for r in recs],
        causal=np.array([d[1] for d in done]),
        rows=counts,
        threshold=threshold,
        margin=margin,
        example=ex_arr,
        induction_len=induction_len if vocab is not None else 0,
        example_ids=None if example is None else ids[example][valid[example]].tolist(),
        **arrays,
    )
