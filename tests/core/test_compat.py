"""compat.MultiheadAttention against torch.nn.MultiheadAttention with copied weights."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from torch import nn

from attnlab.core.capture import ablate_heads, attention_modules, record_attention
from attnlab.core.compat import MultiheadAttention

TOL = dict(atol=1e-5, rtol=1e-5)


def _pair(**kw):
    ref = torch.nn.MultiheadAttention(16, 4, **kw).eval()
    ours = MultiheadAttention(16, 4, **kw).eval()
    ours.load_state_dict(ref.state_dict())  # same keys, so this is strict
    return ref, ours


def _inputs(N, L, S, kdim, batch_first, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(N, L, 16, generator=g)
    k = torch.randn(N, S, kdim, generator=g)
    v = torch.randn(N, S, kdim, generator=g)
    if not batch_first:
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    return q, k, v


CASES = list(itertools.product([False, True], [None, 12], [False, True], [False, True]))


@pytest.mark.parametrize(("batch_first", "kdim", "add_bias_kv", "add_zero_attn"), CASES)
def test_matches_torch_with_masks_and_weights(batch_first, kdim, add_bias_kv, add_zero_attn):
    torch.manual_seed(0)
    ref, ours = _pair(
        batch_first=batch_first,
        kdim=kdim,
        vdim=kdim,
        add_bias_kv=add_bias_kv,
        add_zero_attn=add_zero_attn,
    )
    N, L, S = 3, 5, 7
    q, k, v = _inputs(N, L, S, kdim or 16, batch_first)
    kpm = torch.zeros(N, S, dtype=torch.bool)
    kpm[1, 4:] = True
    masks = [
        dict(),
        dict(key_padding_mask=kpm),
        dict(attn_mask=torch.rand(L, S) > 0.3, key_padding_mask=kpm),  # bool: True = blocked
        dict(attn_mask=torch.randn(N * 4, L, S)),  # float, per batch and head
    ]
    for m, (nw, avg) in itertools.product(masks, [(True, True), (True, False), (False, True)]):
        if "attn_mask" in m and m["attn_mask"].dtype == torch.bool:
            m["attn_mask"][:, 0] = False  # keep a key for every query (torch gives NaN rows)
        a = ref(q, k, v, need_weights=nw, average_attn_weights=avg, **m)
        b = ours(q, k, v, need_weights=nw, average_attn_weights=avg, **m)
        torch.testing.assert_close(b[0], a[0], **TOL)
        if nw:
            torch.testing.assert_close(b[1], a[1], **TOL)
        else:
            assert b[1] is None and a[1] is None


def test_mixed_mask_types_unbatched_and_causal():
    torch.manual_seed(1)
    ref, ours = _pair(batch_first=True)
    q, k, v = _inputs(2, 6, 6, 16, True, seed=1)
    kpm = torch.zeros(2, 6)
    kpm[0, 5] = float("-inf")
    am = torch.zeros(6, 6, dtype=torch.bool)
    am[:, 2] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about mismatched mask types
        a = ref(q, k, v, key_padding_mask=kpm, attn_mask=am)
    b = ours(q, k, v, key_padding_mask=kpm, attn_mask=am)
    torch.testing.assert_close(b[0], a[0], **TOL)
    torch.testing.assert_close(b[1], a[1], **TOL)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(6)
    a = ref(q, k, v, attn_mask=causal, is_causal=True, need_weights=False)
    b = ours(q, k, v, attn_mask=causal, is_causal=True, need_weights=False)
    torch.testing.assert_close(b[0], a[0], **TOL)
    b2 = ours(q, k, v, is_causal=True, need_weights=False)  # without a mask: causal (torch raises)
    torch.testing.assert_close(b2[0], a[0], **TOL)
    a = ref(q[0], k[0], v[0], average_attn_weights=False)  # unbatched (L, E)
    b = ours(q[0], k[0], v[0], average_attn_weights=False)
    torch.testing.assert_close(b[0], a[0], **TOL)
    torch.testing.assert_close(b[1], a[1], **TOL)
    assert b[1].shape == (4, 6, 6)


def test_state_dict_keys_training_and_errors():
    for kw in (
        dict(),
        dict(kdim=8, vdim=12),
        dict(bias=False, add_bias_kv=False),
        dict(add_bias_kv=True),
    ):
        ref = torch.nn.MultiheadAttention(16, 4, **kw)
        assert set(MultiheadAttention(16, 4, **kw).state_dict()) == set(ref.state_dict())
    ref, ours = _pair(dropout=0.5)
    ours.train()
    q, k, v = _inputs(2, 4, 4, 16, False)
    o1, _ = ours(q, k, v, need_weights=False)
    o2, _ = ours(q, k, v, need_weights=False)
    assert not torch.allclose(o1, o2)  # dropout acts in training
    ours.eval()
    torch.testing.assert_close(ours(q, k, v)[0], ref(q, k, v)[0], **TOL)
    with pytest.raises(ValueError, match="divisible"):
        MultiheadAttention(10, 4)
    with pytest.raises(ValueError, match="key_padding_mask"):
        ours(q, k, v, key_padding_mask=torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask"):
        ours(q, k, v, attn_mask=torch.zeros(5, 4))


# -- record_attention and ablate_heads on the drop-in ------------------------------------------
class _Layer(nn.Module):
    """A torch ``nn.TransformerDecoderLayer``-like block of two drop-ins: self-attention, then
    cross-attention to a memory of another width (kdim = vdim = 12)."""

    def __init__(self, cls, batch_first: bool):
        super().__init__()
        self.self_attn = cls(16, 4, batch_first=batch_first)
        self.cross_attn = cls(16, 4, kdim=12, vdim=12, batch_first=batch_first)
        self.linear = nn.Linear(16, 16)

    def forward(self, x, memory, *, self_kw=None, cross_kw=None):
        x = x + self.self_attn(x, x, x, need_weights=False, **(self_kw or {}))[0]
        x = x + self.cross_attn(x, memory, memory, need_weights=False, **(cross_kw or {}))[0]
        return self.linear(x)


def _layers(batch_first, seed=0):
    torch.manual_seed(seed)
    ref = _Layer(torch.nn.MultiheadAttention, batch_first).eval()
    ours = _Layer(MultiheadAttention, batch_first).eval()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _torch_weights(ref, x, memory, self_kw, cross_kw):
    """Per-head weights of torch's own modules, asked for with need_weights=True."""
    a = ref.self_attn(x, x, x, need_weights=True, average_attn_weights=False, **self_kw)
    h = x + a[0]
    b = ref.cross_attn(h, memory, memory, need_weights=True, average_attn_weights=False, **cross_kw)
    return {"self_attn": a[1], "cross_attn": b[1]}


@pytest.mark.parametrize("batch_first", [False, True])
def test_record_attention_on_the_drop_in_equals_torch_weights(batch_first):
    ref, ours = _layers(batch_first)
    N, L, S = 3, 6, 5
    x, memory = torch.randn(N, L, 16), torch.randn(N, S, 12)
    if not batch_first:
        x, memory = x.transpose(0, 1), memory.transpose(0, 1)
    kpm = torch.zeros(N, S, dtype=torch.bool)
    kpm[1, 3:] = True
    am = torch.rand(L, L) > 0.3
    am.fill_diagonal_(False)  # torch's bool masks: True = blocked; every query keeps a key
    causal = torch.nn.Transformer.generate_square_subsequent_mask(L)
    for self_kw, cross_kw in [
        ({}, {}),
        ({"attn_mask": am}, {"key_padding_mask": kpm}),
        ({"attn_mask": causal, "is_causal": True}, {"attn_mask": torch.randn(N * 4, L, S)}),
    ]:
        plain = ours(x, memory, self_kw=self_kw, cross_kw=cross_kw)
        with record_attention(ours) as maps:
            out = ours(x, memory, self_kw=self_kw, cross_kw=cross_kw)
        torch.testing.assert_close(out, plain, **TOL)
        torch.testing.assert_close(out, ref(x, memory, self_kw=self_kw, cross_kw=cross_kw), **TOL)
        want = _torch_weights(ref, x, memory, self_kw, cross_kw)
        assert list(maps) == ["self_attn", "cross_attn"]
        assert maps.meta("self_attn")["kind"] == "self"
        assert maps.meta("cross_attn")["kind"] == "cross"
        for name, w in want.items():
            assert maps[name].shape == w.shape  # (N, H, L, S)
            torch.testing.assert_close(maps[name], w, atol=1e-6, rtol=1e-5)
    assert [n for n, _ in attention_modules(ours)] == ["self_attn", "cross_attn"]
    assert ours.self_attn._observer is None and ours.cross_attn._observer is None


def test_record_attention_on_the_drop_in_with_need_weights_and_lazy():
    ref, ours = _pair(batch_first=True)
    q, k, v = _inputs(2, 5, 7, 16, True, seed=3)
    with record_attention(ours) as maps:
        o, w = ours(q, k, v, average_attn_weights=False)
    a, wa = ref(q, k, v, average_attn_weights=False)
    torch.testing.assert_close(o, a, **TOL)
    torch.testing.assert_close(w, wa, **TOL)  # the module still returns its weights
    torch.testing.assert_close(maps[""], wa, atol=1e-6, rtol=1e-5)
    assert maps.meta("")["kind"] == "cross"  # query is not key
    with record_attention(ours, lazy=True, head_indices=[2]) as lazy:
        ours(q, q, q, need_weights=False)
    assert lazy.meta("")["kind"] == "self"
    wa = ref(q, q, q, average_attn_weights=False)[1]
    torch.testing.assert_close(lazy.rows("", slice(1, 4)), wa[:, [2], 1:4], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_ablate_heads_on_the_drop_in_equals_editing_the_out_proj_input(mode):
    ref, ours = _layers(batch_first=True, seed=4)
    x, memory = torch.randn(2, 6, 16), torch.randn(2, 5, 12)

    def edit(module, args):  # the head's slice of the out_proj input, zeroed or averaged
        (t,) = args  # (N, L, E) = (N, L, H * D)
        t = t.clone()
        s = t[..., 8:12]  # head 2 of 4, D = 4
        t[..., 8:12] = 0 if mode == "zero" else s.mean(1, keepdim=True).expand_as(s)
        return (t,)

    # torch's module calls out_proj functionally (no hooks): edit ours, then check it is torch's
    torch.testing.assert_close(ours(x, memory), ref(x, memory), **TOL)
    h = ours.cross_attn.out_proj.register_forward_pre_hook(edit)
    want = ours(x, memory)
    h.remove()
    with ablate_heads(ours, {"cross_attn": [2]}, mode=mode):
        got = ours(x, memory)
    torch.testing.assert_close(got, want, **TOL)
    assert not torch.allclose(got, ours(x, memory))
    assert ours.cross_attn._observer is None


@pytest.mark.parametrize("kw", [dict(add_bias_kv=True), dict(add_zero_attn=True, kdim=12, vdim=12)])
def test_recorded_weights_include_the_appended_keys_like_torch(kw):
    torch.manual_seed(5)
    ref, ours = _pair(**kw)
    q, k, v = _inputs(2, 5, 6, kw.get("kdim", 16), False, seed=5)
    kpm = torch.zeros(2, 6, dtype=torch.bool)
    kpm[1, 4:] = True
    with record_attention(ours) as maps:
        o, _ = ours(q, k, v, key_padding_mask=kpm, need_weights=False)
    a, w = ref(q, k, v, key_padding_mask=kpm, average_attn_weights=False)
    torch.testing.assert_close(o, a, **TOL)
    assert maps[""].shape == (2, 4, 5, 7)  # S + 1 appended key
    torch.testing.assert_close(maps[""], w, atol=1e-6, rtol=1e-5)
