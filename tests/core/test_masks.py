"""Mask specs: dense masks agree with the analytic block layout (an EMPTY block has no True, a
FULL block no False), combinators mean what they say, bad arguments raise."""

import pytest
import torch

from attnlab.core import masks as M


def _ids(L, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack(
        [torch.sort(torch.randint(0, 5, (L,), generator=g)).values for _ in range(2)]
    )


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
            blk = dense[:, :, i * bq : (i + 1) * bq, j * bk : (j + 1) * bk].flatten(2)
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
        truth = torch.where(blocks.all(-1), M.FULL, torch.where(blocks.any(-1), M.PARTIAL, M.EMPTY))
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


@pytest.mark.parametrize(
    "make,err",
    [
        (lambda: M.sliding_window(0), ValueError),
        (lambda: M.causal("middle"), ValueError),
        (lambda: M.key_padding(torch.tensor([-1])), ValueError),
        (lambda: M.key_padding(torch.tensor([1.5])), TypeError),
        (lambda: M.document(torch.zeros(2, 3, 4, dtype=torch.long)), ValueError),
        (lambda: M.document(torch.zeros(5, dtype=torch.long)).dense(6), ValueError),
        (lambda: M.from_predicate(3), TypeError),
        (lambda: M.causal() & 3, TypeError),
        (lambda: M.causal().dense(0), ValueError),
    ],
)
def test_bad_arguments(make, err):
    with pytest.raises(err):
        make()


# -- structure queries ---------------------------------------------------------------------------
def test_structure_queries():
    c, br, pad = M.causal(), M.causal("bottom_right"), M.key_padding(torch.tensor([3, 5]))
    w8, w5 = M.sliding_window(8), M.sliding_window(5, causal=False)
    assert (c & pad & w8).factors() == (c, pad, w8)
    assert (c | pad).factors()[0].describe() == "(causal | key_padding([3, 5]))"
    assert M.full().is_full and (M.full() & M.full()).is_full and (M.full() | c).is_full
    assert M.cross().is_full and not c.is_full and not (M.full() & c).is_full
    assert (c.causal_alignment, br.causal_alignment) == ("top_left", "bottom_right")
    assert w8.causal_alignment is None and (c & pad).causal_alignment is None
    assert (w8.window, (c & w8 & w5).window, (w8 | c).window, c.window) == (8, 5, None, None)
    assert torch.equal(pad.key_lengths, torch.tensor([3, 5]))
    assert M.prefix_lm(4).key_lengths is None and (c & pad).key_lengths is None
    assert (c & pad).describe() == "(causal & key_padding([3, 5]))"


@pytest.mark.parametrize("name", list(CASES))
def test_evaluate_at_scattered_positions(name):
    """``evaluate`` at arbitrary broadcast positions agrees with the dense mask there."""
    L, S = 40, 52
    mask = CASES[name](L, S)
    dense = mask.dense(L, S, batch=mask.batch_size, heads=mask.num_heads)
    g = torch.Generator().manual_seed(7)
    qi = torch.randint(0, L, (5,), generator=g)
    ki = torch.randint(0, S, (9,), generator=g)
    b = torch.arange(dense.shape[0]).view(-1, 1, 1, 1)
    h = torch.arange(dense.shape[1]).view(1, -1, 1, 1)
    got = mask.evaluate(b, h, qi.view(1, 1, -1, 1), ki.view(1, 1, 1, -1), L, S)
    want = dense[:, :, qi][:, :, :, ki]
    assert torch.equal(got.expand_as(want), want)


# -- tensor mask algebra ---------------------------------------------------------------------------
NEG = float("-inf")


def _rand_bool(shape, seed):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.6


def _rand_float(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _by_hand(a, b):
    """Elementwise, one entry at a time: the rule the algebra promises."""
    shape = torch.broadcast_shapes(a.shape, b.shape)
    a, b = a.expand(shape), b.expand(shape)
    bool_out = a.dtype == b.dtype == torch.bool
    out = torch.empty(shape, dtype=torch.bool if bool_out else torch.float64)
    for idx in torch.cartesian_prod(*(torch.arange(n) for n in shape)).tolist():
        x, y = a[tuple(idx)].item(), b[tuple(idx)].item()
        if bool_out:
            out[tuple(idx)] = x and y
        elif isinstance(x, bool) or isinstance(y, bool):
            flag, val = (x, y) if isinstance(x, bool) else (y, x)
            out[tuple(idx)] = val if flag else NEG
        else:
            out[tuple(idx)] = x + y
    return out


SHAPES = [
    ((2, 3, 4, 5), (2, 3, 4, 5)),
    ((2, 1, 4, 5), (1, 3, 1, 5)),
    ((4, 5), (2, 1, 1, 5)),
    ((1, 1, 1, 5), (2, 3, 4, 5)),
]


@pytest.mark.parametrize("kinds", ["bool/bool", "bool/float", "float/bool", "float/float"])
@pytest.mark.parametrize("shapes", SHAPES)
def test_merge_attn_masks_by_hand(kinds, shapes):
    ka, kb = kinds.split("/")
    make = {"bool": _rand_bool, "float": _rand_float}
    a, b = make[ka](shapes[0], 1), make[kb](shapes[1], 2)
    got = M.merge_attn_masks(a, b)
    want = _by_hand(a, b)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(got, want)  # exact: AND, where and one addition round the same
    assert torch.equal(M.combine(a, None, b), want)
    assert M.merge_attn_masks(None, a) is a and M.merge_attn_masks(a, None) is a


def test_combine_many_and_dtype():
    m1, m2 = _rand_bool((2, 1, 4, 5), 3), _rand_bool((4, 5), 4)
    f1, f2 = _rand_float((1, 3, 4, 5), 5), _rand_float((5,), 6)
    assert M.combine() is None and M.combine(None, None) is None
    assert torch.equal(M.combine(m1, m2), m1 & m2)
    got = M.combine(f1, m1, f2, m2, dtype=torch.float32)
    assert got.dtype == torch.float32 and got.shape == (2, 3, 4, 5)
    allowed = (m1 & m2).expand(2, 3, 4, 5)
    want = (f1.float() + f2.float()).expand(2, 3, 4, 5)
    assert torch.equal(got[allowed], want[allowed]) and (got[~allowed] == NEG).all()
    assert M.combine(m1, dtype=torch.float16).dtype == torch.bool  # bool parts stay bool


def test_to_additive_and_to_allowed():
    m = _rand_bool((2, 1, 4, 5), 8)
    add = M.to_additive(m, torch.float16)
    assert add.dtype == torch.float16 and add.shape == m.shape
    assert (add[m] == 0).all() and (add[~m] == NEG).all()
    f = _rand_float((3, 5), 9)
    assert torch.equal(M.to_additive(f, torch.float32), f.float())
    assert M.to_allowed(m) is m and torch.equal(M.to_allowed(add), m)
    f[0, 1], f[1, 2], f[2, 3] = NEG, float("nan"), float("inf")
    want = torch.ones(3, 5, dtype=torch.bool)
    want[0, 1] = want[1, 2] = False  # -inf and NaN mask; +inf does not
    assert torch.equal(M.to_allowed(f), want)
