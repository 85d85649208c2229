"""record_attention / AttentionMaps / ablate_heads: outputs unchanged, weights exact, only the
recorded layers leave the fused path, flags restored on error, lazy rows exact, ablation exact."""

from __future__ import annotations

import pytest
import torch
from reference import reference_attention

from attnlab.core import capture, masks
from attnlab.core.attention import attention
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
    allowed = torch.ones(6, 6, dtype=torch.bool).tril() & (
        torch.arange(6) < lengths.view(2, 1, 1, 1)
    )
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 6), **TOL)  # every row has a key
    assert (w[~allowed.expand_as(w)] == 0).all()
    # q, k from the module's own weights, in float64
    qkv = x.double() @ mod.qkv.weight.double().T + mod.qkv.bias.double()
    q, k, v = (t.view(2, 6, 2, 8).transpose(1, 2) for t in qkv.split(16, -1))
    _, ref_w, _ = reference_attention(q, k, v, allowed=allowed)
    torch.testing.assert_close(w.double(), ref_w, atol=1e-6, rtol=1e-6)
    meta = maps.meta("")
    assert meta["kind"] == "self" and "causal" in meta["mask"].describe()
    torch.testing.assert_close(
        maps.record("").allowed().expand(2, 1, 6, 6), allowed.expand(2, 1, 6, 6)
    )


def test_only_recorded_layers_leave_the_fused_path(enc, monkeypatch):
    calls = []
    real = capture._Recorder.__call__
    monkeypatch.setattr(
        capture._Recorder, "__call__", lambda self, *a: calls.append(self.name) or real(self, *a)
    )
    x = torch.randn(1, 7, 32)
    enc(x)
    assert calls == []  # nothing is observed outside a recording
    with record_attention(enc, layers=["blocks.1.attn"]) as maps:
        enc(x)
    assert calls == ["blocks.1.attn"] and list(maps) == ["blocks.1.attn"]
    with record_attention(enc, layers=[0, "blocks.2.*"]) as maps:
        enc(x)
    assert calls[1:] == ["blocks.0.attn", "blocks.2.attn"] and list(maps) == calls[1:]


def test_self_and_cross_layers_with_names_and_decoding_calls():
    torch.manual_seed(2)
    dec = TransformerDecoder(32, 2, 4, kdim=24).eval()
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
    with record_attention(enc, head_indices=[1, 3], lazy=True) as lz:
        enc(x)
    with record_attention(enc, head_indices=[1, 3]) as ez:
        enc(x)
    torch.testing.assert_close(
        lz.rows("blocks.1.attn", slice(0, 4)), ez["blocks.1.attn"][:, :, :4], **TOL
    )


def test_reductions_heads_topk_dtype_mean(enc):
    x = torch.randn(2, 8, 32)
    with record_attention(enc) as full:
        enc(x)
    w = full["blocks.0.attn"]
    with record_attention(enc, layers=[0], head_indices=[2, 0], dtype=torch.float16) as m:
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
    want = (
        torch.zeros_like(base[:, :, [1, 3]])
        if mode == "zero"
        else base[:, :, [1, 3]].mean(1, keepdim=True).expand(-1, 8, -1, -1)
    )
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


# -- exactness of the recorded weights: against the math backend, feature by feature ---------
W_TOL = dict(atol=1e-6, rtol=1e-5)


def _math_reference(model, *inputs, **kw):
    """The model's output and every attention module's weights from the math backend, through
    the same observer protocol that ``record_attention`` uses."""
    got = {}
    mods = attention_modules(model)
    for name, mod in mods:

        def obs(m, q, k, v, args, kind=None, name=name):
            res = attention(q, k, v, **{**args, "backend": "math"}, return_weights=True)
            got[name] = res.weights.detach()
            return res.output

        mod._observer = obs
    try:
        out = model(*inputs, **kw)
    finally:
        for _, mod in mods:
            mod._observer = None
    return out, got


def _check_exact(model, *inputs, head_indices=None, **kw):
    plain = model(*inputs, **kw)
    _, want = _math_reference(model, *inputs, **kw)
    with record_attention(model, head_indices=head_indices) as maps:
        out = model(*inputs, **kw)
    torch.testing.assert_close(out, plain, **TOL)
    assert list(maps) == list(want)
    for name, w in want.items():
        w = w if head_indices is None else w[:, head_indices]
        got = maps[name]
        assert not got.isnan().any()
        torch.testing.assert_close(got, w, **W_TOL)
    return maps


@pytest.mark.parametrize("pos", [None, "alibi", "rope", "relative", "music"])
@pytest.mark.parametrize("num_kv_heads", [4, 2, 1])
def test_recorded_weights_equal_math_backend(pos, num_kv_heads):
    torch.manual_seed(10)
    enc = TransformerEncoder(
        32, 2, 4, causal=True, pos=pos, num_kv_heads=num_kv_heads, max_len=64
    ).eval()
    x = torch.randn(2, 11, 32)
    pad = masks.key_padding(torch.tensor([11, 7]))
    with torch.no_grad():
        _check_exact(enc, x, mask=pad)
        _check_exact(enc, x, head_indices=[3, 1])  # the LSE path: a few heads only
    _check_exact(enc, x, mask=pad)  # under autograd (no in-place softmax)


def test_recorded_weights_exact_with_masks_cross_attention_and_dead_rows():
    torch.manual_seed(11)
    dec = TransformerDecoder(32, 2, 4, kdim=24, num_kv_heads=2).eval()
    x, ctx = torch.randn(2, 6, 32), torch.randn(2, 9, 24)
    ctx_mask = masks.key_padding(torch.tensor([9, 4]))
    am = torch.randn(2, 1, 6, 6)  # additive float mask on the self-attention
    with torch.no_grad():
        _check_exact(dec, x, ctx, context_mask=ctx_mask, attn_mask=am)
        _check_exact(dec, x, ctx, context_mask=ctx_mask, head_indices=[0, 2])
    enc = TransformerEncoder(32, 2, 4, pos="alibi").eval()
    allowed = torch.rand(2, 1, 8, 8) > 0.4
    allowed[0, 0, 3] = False  # query 3 of item 0 sees no key: zeros, not NaN
    allowed[1, 0, 5] = False
    with torch.no_grad():
        maps = _check_exact(enc, torch.randn(2, 8, 32), attn_mask=allowed)
        _check_exact(enc, torch.randn(2, 8, 32), attn_mask=allowed, head_indices=[1])
    w = maps["blocks.0.attn"]
    assert (w[0, :, 3] == 0).all() and (w[1, :, 5] == 0).all()
    torch.testing.assert_close(w[0, :, 2].sum(-1), torch.ones(4), **TOL)


def test_dropout_in_training_records_weights_before_dropout():
    torch.manual_seed(13)
    mod = MultiHeadAttention(16, 2, dropout=0.5, causal=True)
    x = torch.randn(2, 6, 16)
    _, want = _math_reference(mod.eval(), x)
    mod.train()
    with record_attention(mod) as maps:
        out = mod(x)
    torch.testing.assert_close(maps[""], want[""], **W_TOL)
    assert not torch.allclose(out, mod.eval()(x))  # dropout did act on the output


def test_retain_grad_gradient_is_d_output_d_weights():
    torch.manual_seed(14)
    enc = TransformerEncoder(32, 2, 4, causal=True, pos="rope", num_kv_heads=2).eval()
    x = torch.randn(2, 6, 32)
    r = torch.randn(2, 6, 32)
    with record_attention(enc, retain_grad=True) as maps:
        (enc(x) * r).sum().backward()
    # the reference: the math backend's weights, the output recomputed from them (the old path)
    grads, mods = {}, attention_modules(enc)
    for name, mod in mods:

        def obs(m, q, k, v, args, kind=None, name=name):
            w = attention(q, k, v, **{**args, "backend": "math"}, return_weights=True).weights
            w.retain_grad()
            grads[name] = w
            return torch.matmul(w, v.repeat_interleave(q.shape[1] // v.shape[1], 1))

        mod._observer = obs
    try:
        (enc(x) * r).sum().backward()
    finally:
        for _, mod in mods:
            mod._observer = None
    for name, w in grads.items():
        torch.testing.assert_close(maps[name].detach(), w.detach(), **W_TOL)
        torch.testing.assert_close(maps.grad(name), w.grad, atol=1e-5, rtol=1e-4)


def test_recording_raises_on_non_finite_inputs_like_the_fused_path():
    mod = MultiHeadAttention(16, 2).eval()
    x = torch.randn(1, 5, 16)
    x[0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="^q contains NaN or Inf values$"):
        mod(x)
    # the same error, naming the input, on the recorded path
    with pytest.raises(ValueError, match="^q contains NaN or Inf values$"), record_attention(mod):
        mod(x)
