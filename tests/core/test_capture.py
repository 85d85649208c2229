"""record_attention / AttentionMaps / ablate_heads: outputs unchanged, weights exact, only the
recorded layers leave the fused path, flags restored on error, lazy rows exact, ablation exact."""

from __future__ import annotations

import pytest
import torch
from reference import reference_attention

from attnlab.core import masks
from attnlab.core.backends import math as math_backend
from attnlab.core.blocks import TransformerDecoder, TransformerEncoder
from attnlab.core.capture import ablate_heads, attention_modules, record_attention
from attnlab.core.modules import MultiHeadAttention

TOL = dict(atol=1e-5, rtol=1e-5)


def _observers(model):
    return [m._observer for _, m in attention_modules(model)]


@pytest.fixture
def enc():
    torch.manual_seed(0)
    return TransformerEncoder(32, 3, 4, causal=True, pos="alibi", num_kv_heads=2).eval()


def test_recording_changes_no_output(enc):
    x = torch.randn(2, 9, 32)
    pad = masks.key_padding(torch.tensor([9, 6]))
    off = enc(x, mask=pad)
    with record_attention(enc) as maps:
        on = enc(x, mask=pad)
    torch.testing.assert_close(on, off, **TOL)
    assert list(maps) == ["blocks.0.attn", "blocks.1.attn", "blocks.2.attn"]
    assert maps.stack().shape == (3, 2, 4, 9, 9)
    assert _observers(enc) == [None, None, None]


def test_weights_sum_to_one_and_match_float64_reference():
    torch.manual_seed(1)
    mod = MultiHeadAttention(16, 2, causal=True).eval()
    x = torch.randn(2, 6, 16)
    lengths = torch.tensor([6, 3])
    with record_attention(mod) as maps:
        mod(x, mask=masks.key_padding(lengths))
    w = maps[""]
    allowed = torch.ones(6, 6, dtype=torch.bool).tril() & (torch.arange(6) < lengths.view(2, 1,
                                                                                            1, 1))
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 6), **TOL)  # every row has a key
    assert (w[~allowed.expand_as(w)] == 0).all()
    # q, k from the module's own weights, in float64
    qkv = x.double() @ mod.qkv.weight.double().T + mod.qkv.bias.double()
    q, k, v = (t.view(2, 6, 2, 8).transpose(1, 2) for t in qkv.split(16, -1))
    _, ref_w, _ = reference_attention(q, k, v, allowed=allowed)
    torch.testing.assert_close(w.double(), ref_w, atol=1e-6, rtol=1e-6)
    meta = maps.meta("")
    assert meta["kind"] == "self" and "causal" in meta["mask"].describe()
    torch.testing.assert_close(maps.record("").allowed().expand(2, 1, 6, 6), allowed.expand(2, 1,
                                                                                            6, 6))


def test_only_recorded_layers_leave_the_fused_path(enc, monkeypatch):
    calls = []
    real = math_backend.forward
    monkeypatch.setattr(math_backend, "forward", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(1, 7, 32)
    enc(x)
    assert calls == []  # nothing is explicit outside a recording
    with record_attention(enc, layers=["blocks.1.attn"]) as maps:
        enc(x)
    assert len(calls) == 1 and list(maps) == ["blocks.1.attn"]
    with record_attention(enc, layers=[0, "blocks.2.*"]) as maps:
        enc(x)
    assert len(calls) == 3 and list(maps) == ["blocks.0.attn", "blocks.2.attn"]


def test_self_and_cross_layers_with_names_and_decoding_calls():
    torch.manual_seed(2)
    dec = TransformerDecoder(32, 2, 4, context_dim=24).eval()
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 7, 24)
    with record_attention(dec, layers=["blocks.*.cross_attn"]) as maps:
        dec(x, ctx)
    assert list(maps) == ["blocks.0.cross_attn", "blocks.1.cross_attn"]
    assert maps["blocks.1.cross_attn"].shape == (2, 4, 5, 7)
    assert maps.meta("blocks.1.cross_attn")["kind"] == "cross"
    cache = dec.make_cache()
    with record_attention(dec, layers=["blocks.0.attn"]) as maps:
        for i in range(5):
            dec(x[:, i : i + 1], ctx, cache=cache)
    calls = maps.calls("blocks.0.attn")
    assert [c.weights.shape[-1] for c in calls] == [1, 2, 3, 4, 5]
    torch.testing.assert_close(calls[-1].weights.sum(-1), torch.ones(2, 4, 1), **TOL)


def test_flags_restored_when_forward_raises(enc):
    with pytest.raises(ValueError, match="x must have shape"):
        with record_attention(enc) as maps:
            with ablate_heads(enc, {"blocks.1.attn": [0]}):
                enc(torch.randn(1, 4, 32))  # records and ablates, then the next call fails
                enc(torch.randn(4, 32))
    assert len(maps) == 3
    assert _observers(enc) == [None, None, None]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in enc.modules())
    with pytest.raises(ValueError, match="matches no attention module"):
        with record_attention(enc, layers=["blocks.9.attn"]):
            pass
    assert _observers(enc) == [None, None, None]


@pytest.mark.parametrize("pos", ["alibi", "rope", "music"])
def test_lazy_rows_equal_eager_rows(pos):
    torch.manual_seed(3)
    enc = TransformerEncoder(32, 2, 4, causal=True, pos=pos, num_kv_heads=2, max_len=32).eval()
    x = torch.randn(2, 12, 32)
    pad = masks.key_padding(torch.tensor([12, 8]))
    with record_attention(enc) as eager:
        y0 = enc(x, mask=pad)
    with record_attention(enc, lazy=True) as lazy:
        y1 = enc(x, mask=pad)
    torch.testing.assert_close(y0, y1, **TOL)
    for name in eager:
        torch.testing.assert_close(lazy.rows(name, slice(3, 9)), eager[name][:, :, 3:9], **TOL)
        torch.testing.assert_close(lazy.rows(name, 11), eager[name][:, :, 11:12], **TOL)
    assert lazy.record("blocks.0.attn").weights is None
    with record_attention(enc, heads=[1, 3], lazy=True) as lz:
        enc(x)
    with record_attention(enc, heads=[1, 3]) as ez:
        enc(x)
    torch.testing.assert_close(lz.rows("blocks.1.attn", slice(0, 4)),
                               ez["blocks.1.attn"][:, :, :4], **TOL)


def test_reductions_heads_topk_dtype_mean(enc):
    x = torch.randn(2, 8, 32)
    with record_attention(enc) as full:
        enc(x)
    w = full["blocks.0.attn"]
    with record_attention(enc, layers=[0], heads=[2, 0], dtype=torch.float16) as m:
        enc(x)
    assert m["blocks.0.attn"].dtype == torch.float16
    torch.testing.assert_close(m["blocks.0.attn"].float(), w[:, [2, 0]], atol=1e-3, rtol=1e-3)
    with record_attention(enc, layers=[0], reduce="mean") as m:
        enc(x)
    torch.testing.assert_close(m["blocks.0.attn"], w.mean(1, keepdim=True), **TOL)
    with record_attention(enc, layers=[0], topk=3) as m:
        enc(x)
    rec = m.record("blocks.0.attn")
    vals, idx = w.topk(3, dim=-1)
    torch.testing.assert_close(rec.topk_values, vals, **TOL)
    dense = m["blocks.0.attn"]
    assert ((dense > 0).sum(-1) <= 3).all()
    torch.testing.assert_close(dense.gather(-1, idx), vals, **TOL)
    with pytest.raises(ValueError, match="topk"):
        with record_attention(enc, topk=0):
            pass


def _proj_inputs(model, name, x):
    got = []
    mod = dict(model.named_modules())[name]
    h = mod.proj.register_forward_pre_hook(lambda m, a: got.append(a[0].detach()))
    try:
        model(x)
    finally:
        h.remove()
    return got[0]


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_ablation_changes_exactly_the_chosen_heads(enc, mode):
    x = torch.randn(2, 8, 32)
    base = _proj_inputs(enc, "blocks.0.attn", x).view(2, 8, 4, 8)  # (B, L, H, D)
    with ablate_heads(enc, {"blocks.0.attn": [1, 3]}, mode=mode):
        abl = _proj_inputs(enc, "blocks.0.attn", x).view(2, 8, 4, 8)
    torch.testing.assert_close(abl[:, :, [0, 2]], base[:, :, [0, 2]], **TOL)
    want = (torch.zeros_like(base[:, :, [1, 3]]) if mode == "zero"
            else base[:, :, [1, 3]].mean(1, keepdim=True).expand(-1, 8, -1, -1))
    torch.testing.assert_close(abl[:, :, [1, 3]], want, **TOL)
    assert _observers(enc) == [None, None, None]
    # the downstream output changes; an ablation of no head changes nothing
    with ablate_heads(enc, {0: []}):
        torch.testing.assert_close(enc(x), enc.eval()(x))
    with pytest.raises(ValueError, match="out of range"):
        with ablate_heads(enc, {0: [4]}):
            pass


def test_retain_grad_gives_weight_gradients(enc):
    x = torch.randn(1, 6, 32)
    with record_attention(enc, retain_grad=True) as maps:
        enc(x).sum().backward()
    g = maps.grad("blocks.2.attn")
    assert g is not None and g.shape == (1, 4, 6, 6) and g.abs().sum() > 0
