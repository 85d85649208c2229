"""Tests for attnlab.domains.text.heads: models whose heads have KNOWN behaviour (each head's
pattern forced by an additive bias built from the token ids) must be named by it, padding
must change nothing, causal layers report next-token as undefined, cross-attention is
ignored, and lazy recording gives the same scores as dense recording."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from head_patterns import CLS, EXPECT, PAD, PATTERNS, SEP, VOCAB, PatternModel, batch, run
from torch import nn

from attnlab.core import MultiHeadAttention, TransformerEncoder
from attnlab.core.masks import key_padding
from attnlab.domains.text.heads import BEHAVIOURS, HeadScores, score_heads


@pytest.fixture(scope="module")
def scores() -> HeadScores:
    model = PatternModel(PATTERNS)
    ids, lengths = batch()
    return score_heads(
        model,
        run(model),
        ids,
        lengths=lengths,
        special_ids=[CLS, SEP, PAD],
        vocab=(0, VOCAB),
        induction_len=16,
        prefix=[CLS],
        suffix=[SEP],
    )


def test_known_heads_are_named_by_their_behaviour(scores):
    assert scores.shape == (2, 4)
    assert scores.layer_names == ["attn.0", "attn.1"]
    names, best = scores.labels()
    assert names == EXPECT
    assert np.all(best > 0.95)
    close = dict(atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores.previous_token[0, 0], 1.0, **close)
    np.testing.assert_allclose(scores.previous_token[1, 3], 1.0, **close)
    np.testing.assert_allclose(scores.sink[0, 1], 1.0, **close)  # first token
    np.testing.assert_allclose(scores.sink[1, 1], 1.0, **close)  # [SEP]
    np.testing.assert_allclose(scores.broad[0, 2], 1.0, **close)
    np.testing.assert_allclose(scores.induction[0, 3], 1.0, **close)
    np.testing.assert_allclose(scores.same_token[1, 0], 1.0, **close)
    np.testing.assert_allclose(scores.next_token[1, 2], 1.0, **close)
    # and the others are low: a pure pattern is not mistaken for another
    assert scores.previous_token[0, 1] < 0.2
    # the previous-token head is uniform (broad 1) only in row 0 of each of the 3 sequences
    np.testing.assert_allclose(scores.broad[0, 0], 3 / (12 + 9 + 7), **close)
    assert scores.induction[0, 0] < 0.05 and scores.induction[1, 0] < 0.05
    assert scores.sink[0, 2] < 0.35  # uniform over 7..12 keys, 2 of them sinks
    assert not scores.causal.any()


def test_mean_distance_in_tokens(scores):
    # previous token: 1, but row 0 of each sequence is uniform over its n keys: (n - 1) / 2
    expect = (11 + 8 + 6 + 11 / 2 + 8 / 2 + 6 / 2) / (12 + 9 + 7)
    np.testing.assert_allclose(scores.mean_distance[0, 0], expect, atol=1e-4)
    # next token: 1, but the last row ([SEP]) of each sequence is uniform
    np.testing.assert_allclose(scores.mean_distance[1, 2], expect, atol=1e-4)
    # the first-token head: mean of i over all real rows of the batch
    rows = [i for n in (12, 9, 7) for i in range(n)]
    np.testing.assert_allclose(scores.mean_distance[0, 1], np.mean(rows), atol=1e-4)


def test_padding_is_excluded():
    """Pad ids that look like real tokens, and a run that does not mask padding at all, must
    give the same scores as masked ordinary padding; and a padded batch scores as its rows
    would one by one (row-weighted)."""
    model = PatternModel(PATTERNS)
    ids, lengths = batch()
    kw = dict(special_ids=[CLS, SEP], example=None)
    base = score_heads(model, run(model), ids, lengths=lengths, **kw)
    odd = ids.clone()
    pad = torch.arange(ids.shape[1]) >= lengths[:, None]
    odd[pad] = SEP  # padding that looks like [SEP]: would add sink and same-token weight
    fields = (*BEHAVIOURS.values(), "mean_distance")
    for other in (
        score_heads(model, run(model), odd, lengths=lengths, **kw),
        score_heads(model, lambda i, m: model(i, m.sum(1)), ids, attention_mask=~pad, **kw),
    ):
        for f in fields:
            np.testing.assert_allclose(getattr(other, f), getattr(base, f), atol=1e-5, err_msg=f)
    # a run that leaves padding unmasked: weight on padded keys is removed and rows
    # renormalised; only the next-token head (1, 2) differs, as its last real row puts all its
    # weight on the (unmasked) padding after it and is left out
    unmasked = score_heads(model, lambda i, n: model(i), ids, lengths=lengths, **kw)
    for f in fields:
        a, b = getattr(unmasked, f), getattr(base, f)
        a[1, 2] = b[1, 2] = 0.0
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=f)
    # one sequence alone, unpadded: the previous-token head is exactly as pure
    single = score_heads(model, run(model), ids[2:, :7], **kw)
    np.testing.assert_allclose(single.previous_token[0, 0], 1.0, atol=1e-4)
    assert single.rows["broad"][0] == 7 and base.rows["broad"][0] == 12 + 9 + 7


def test_causal_model():
    model = PatternModel([["prev", "first", "uniform", "induction"]], causal=True)
    ids, lengths = batch()
    s = score_heads(
        model,
        run(model),
        ids,
        lengths=lengths,
        special_ids=[CLS, SEP],
        vocab=(3, VOCAB),
        induction_len=8,
        prefix=[CLS],
    )
    assert s.causal.tolist() == [True]
    assert np.isnan(s.next_token).all()  # 0 by construction: undefined, not a label
    assert s.labels()[0] == [["previous-token", "sink", "broad", "induction"]]
    np.testing.assert_allclose(s.broad[0, 2], 1.0, atol=1e-4)  # uniform over t + 1 keys
    np.testing.assert_allclose(s.induction[0, 3], 1.0, atol=1e-4)
    # row 0 (one key) says nothing; every other real row counts once
    assert s.rows["broad"] == [11 + 8 + 6]
    assert "null" not in json.dumps(s.to_dict()["labels"])


def test_label_rule_threshold_margin_and_round_trip(scores):
    d = scores.to_dict()
    again = HeadScores.from_dict(json.loads(json.dumps(d)))
    assert again.labels()[0] == scores.labels()[0]
    np.testing.assert_array_equal(np.isnan(again.next_token), np.isnan(scores.next_token))
    assert d["next_token"][0][0] is not None and d["labels"] == EXPECT
    t = again
    t.previous_token[0, 0], t.sink[0, 0] = 0.6, 0.55  # a tie within the margin
    assert t.label(0, 0) == ("mixed", pytest.approx(0.6))
    t.previous_token[0, 0], t.sink[0, 0] = 0.3, 0.0  # no behaviour above the threshold
    t.broad[0, 0] = t.next_token[0, 0] = t.same_token[0, 0] = t.induction[0, 0] = 0.1
    assert t.label(0, 0) == ("mixed", pytest.approx(0.3))
    t.threshold = 0.25
    assert t.label(0, 0) == ("previous-token", pytest.approx(0.3))
    rows = scores.table()
    assert len(rows) == 8 and rows[0]["label"] == "previous-token"
    assert set(rows[0]) >= {"layer", "head", "module", "score", *BEHAVIOURS, "mean_distance"}
    json.dumps(rows)


def test_example_map_kept_cut_to_real_tokens(scores):
    assert scores.example.shape == (2, 4, 12, 12)
    np.testing.assert_allclose(scores.example.sum(-1), 1.0, atol=1e-4)
    assert scores.example_ids[0] == CLS and scores.example_ids[-1] == SEP


class WithCross(nn.Module):
    """A pattern layer plus a cross-attention layer and an unscored self-attention layer."""

    def __init__(self):
        super().__init__()
        self.pattern = PatternModel([["prev", "first"]])
        self.cross = MultiHeadAttention(16, 2, cross=True)

    def forward(self, ids, lengths):
        x = self.pattern(ids, lengths)
        return self.cross(x, torch.randn(ids.shape[0], 5, 16))


def test_cross_attention_is_ignored():
    model = WithCross()
    ids, lengths = batch()
    s = score_heads(model, run(model), ids, lengths=lengths, special_ids=[CLS, SEP])
    assert s.layer_names == ["pattern.attn.0"]
    assert s.labels()[0] == [["previous-token", "sink"]]
    assert np.isnan(s.induction).all() and s.rows["induction"] == [0]


def test_lazy_equals_dense_on_a_random_encoder():
    torch.manual_seed(0)
    enc = TransformerEncoder(32, 3, 4, causal=False)
    emb = nn.Embedding(VOCAB, 32)
    model = nn.ModuleDict(dict(enc=enc, emb=emb)).eval()

    def fwd(ids, lengths):
        return enc(emb(ids), mask=key_padding(lengths))

    ids, lengths = batch(1)
    kw = dict(
        lengths=lengths,
        special_ids=[CLS, SEP],
        vocab=(3, VOCAB),
        induction_len=10,
        prefix=[CLS],
        suffix=[SEP],
    )
    dense = score_heads(model, fwd, ids, lazy=False, **kw)
    lazy = score_heads(model, fwd, ids, lazy=True, **kw)
    assert dense.shape == (3, 4)
    for f in (*BEHAVIOURS.values(), "mean_distance"):
        a = getattr(dense, f)
        np.testing.assert_allclose(getattr(lazy, f), a, atol=1e-5, err_msg=f)
        assert np.all((a >= -1e-6) & (a <= 1 + 1e-6)) or f == "mean_distance"
    assert model.training is False


def test_bad_inputs():
    model = PatternModel(PATTERNS)
    ids, lengths = batch()
    with pytest.raises(ValueError, match="not both"):
        score_heads(model, run(model), ids, lengths=lengths, attention_mask=ids > 0)
    with pytest.raises(ValueError, match="no self-attention"):
        score_heads(nn.Linear(2, 2), run(model), ids)
    with pytest.raises(ValueError, match="integer ids"):
        score_heads(model, run(model), ids.float())
    with pytest.raises(ValueError, match="at least 2"):
        score_heads(model, run(model), ids, vocab=[CLS, SEP, 5], special_ids=[CLS, SEP])
