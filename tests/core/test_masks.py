"""Mask specs: dense masks agree with the analytic block layout (an EMPTY block has no True, a
FULL block no False), combinators mean what they say, bad arguments raise."""

import pytest
import torch

from attnlab.core import masks as M


def _ids(L, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.sort(torch.randint(0, 5, (L,), generator=g)).values
                        for _ in range(2)])


CASES = {
    "full": lambda L, S: M.full(),
    "causal": lambda L, S: M.causal(),
    "causal_br": lambda L, S: M.causal("bottom_right"),
    "window": lambda L, S: M.sliding_window(23),
    "window_sym": lambda L, S: M.sliding_window(18, causal=False, align="bottom_right"),
    "key_padding": lambda L, S: M.key_padding(torch.tensor([S // 2, 0])),
    "document": lambda L, S: M.document(_ids(L), _ids(S, 1)),
    "prefix_lm": lambda L, S: M.prefix_lm(torch.tensor([7, 40])),
    "cross": lambda L, S: M.cross(torch.tensor([S, 3])),
    "predicate": lambda L, S: M.from_predicate(lambda b, h, q, kv: (q * kv) % 5 == 0),
    "heads": lambda L, S: M.from_predicate(lambda b, h, q, kv: kv <= q + h, num_heads=3),
    "combo": lambda L, S: (M.sliding_window(10) | M.prefix_lm(4)) & ~M.key_padding(2),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("L,S,bq,bk", [(64, 64, 16, 16), (50, 77, 8, 32), (90, 33, 32, 7)])
def test_block_kinds_agree_with_dense(name, L, S, bq, bk):
    mask = CASES[name](L, S)
    dense = mask.dense(L, S, batch=mask.batch_size, heads=mask.num_heads)
    kinds = mask.block_kinds(L, S, bq, bk)
    B, H = dense.shape[:2]
    kinds = kinds.expand(B, H, *kinds.shape[2:])
    assert kinds.shape[2:] == (-(-L // bq), -(-S // bk))
    for i in range(kinds.shape[2]):
        for j in range(kinds.shape[3]):
            blk = dense[:, :, i * bq:(i + 1) * bq, j * bk:(j + 1) * bk].flatten(2)
            kind = kinds[:, :, i, j]
            assert not blk[kind == M.EMPTY].any(), (i, j)
            assert blk[kind == M.FULL].all(), (i, j)


def test_analytic_layouts_are_tight():
    """Built-in masks call a block PARTIAL only when it really is mixed (what the tiled backend
    relies on to skip work)."""
    for mask in (M.causal(), M.sliding_window(16), M.document(torch.arange(64) // 16)):
        dense = mask.dense(64, 64)[0, 0]
        kinds = mask.block_kinds(64, 64, 8, 8)[0, 0]
        blocks = dense.view(8, 8, 8, 8).transpose(1, 2).flatten(2)
        truth = torch.where(blocks.all(-1), M.FULL, torch.where(blocks.any(-1), M.PARTIAL,
                                                                M.EMPTY))
        assert torch.equal(kinds, truth.to(torch.int8))


def test_semantics():
    L, S = 12, 15
    q = torch.arange(L).view(-1, 1)
    kv = torch.arange(S).view(1, -1)
    d = lambda m: m.dense(L, S)[0, 0]  # noqa: E731
    assert torch.equal(d(M.causal()), kv <= q)
    assert torch.equal(d(M.causal("bottom_right")), kv <= q + S - L)
    assert torch.equal(d(M.sliding_window(4)), (kv <= q) & (kv > q - 4))
    assert torch.equal(d(M.sliding_window(4, causal=False)), (kv - q).abs() <= 2)
    assert torch.equal(d(M.prefix_lm(5)), (kv < 5) | (kv <= q))
    a, b = M.causal(), M.key_padding(9)
    assert torch.equal(d(a & b), d(a) & d(b))
    assert torch.equal(d(a | b), d(a) | d(b))
    assert torch.equal(d(~a), ~d(a))
    ids = torch.tensor([0] * 5 + [1] * 7)
    doc = M.document(ids)
    assert torch.equal(doc.dense(12)[0, 0], ids.view(-1, 1) == ids.view(1, -1))
    pad = M.key_padding(torch.tensor([3, 15])).dense(L, S, batch=2)
    assert pad.shape == (2, 1, L, S) and torch.equal(pad[0, 0, 0], kv[0] < 3)


def test_predicate_matches_flex_form():
    fn = lambda b, h, q, kv: (kv <= q) & ((q - kv) % 2 == 0)  # noqa: E731
    m = M.from_predicate(fn)
    q = torch.arange(6).view(1, 1, -1, 1)
    kv = torch.arange(6).view(1, 1, 1, -1)
    z = torch.zeros(1, 1, 1, 1, dtype=torch.long)
    assert torch.equal(m.dense(6), fn(z, z, q, kv))
    assert torch.equal(M.causal().mask_mod(z, z, q, kv), kv <= q)


@pytest.mark.parametrize("make,err", [
    (lambda: M.sliding_window(0), ValueError),
    (lambda: M.causal("middle"), ValueError),
    (lambda: M.key_padding(torch.tensor([-1])), ValueError),
    (lambda: M.key_padding(torch.tensor([1.5])), TypeError),
    (lambda: M.document(torch.zeros(2, 3, 4, dtype=torch.long)), ValueError),
    (lambda: M.document(torch.zeros(5, dtype=torch.long)).dense(6), ValueError),
    (lambda: M.from_predicate(3), TypeError),
    (lambda: M.causal() & 3, TypeError),
    (lambda: M.causal().dense(0), ValueError),
])
def test_bad_arguments(make, err):
    with pytest.raises(err):
        make()
