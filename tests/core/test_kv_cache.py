"""KVCache: appends in place (no copy of the cache per token), grows by doubling, and cached
decoding -- token by token or in chunks, self- and cross-attention, positional schemes, GQA --
equals the full causal forward; bad appends raise and leave the cache as it was."""

from __future__ import annotations

import pytest
import torch

from attnlab.core.blocks import TransformerDecoder, TransformerEncoder
from attnlab.core.kv_cache import DecoderLayerCache, KVCache

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture
def small_buffers(monkeypatch):
    """Start buffers at 2 positions, so that short tests grow them several times."""
    monkeypatch.setattr(KVCache, "MIN_CAPACITY", 2)


def _decode(model, x, sizes, cache, *context):
    outs, i = [], 0
    for n in sizes:
        outs.append(model(x[:, i : i + n], *context, cache=cache))
        i += n
    assert i == x.shape[1]
    return torch.cat(outs, 1)


@pytest.mark.parametrize("pos", [None, "rope", "alibi", "relative"])
@pytest.mark.parametrize("num_kv_heads", [4, 2, 1])
@torch.no_grad()  # decoding: the in-place path (autograd concatenates)
def test_cached_decoding_equals_full_causal_forward(pos, num_kv_heads, small_buffers):
    torch.manual_seed(20)
    enc = TransformerEncoder(
        32, 2, 4, causal=True, pos=pos, num_kv_heads=num_kv_heads, max_len=64
    ).eval()
    for seed in range(2):  # fresh random inputs each time
        x = torch.randn(2, 19, 32, generator=torch.Generator().manual_seed(seed))
        full = enc(x)
        cache = enc.make_cache()
        torch.testing.assert_close(_decode(enc, x, [1] * 19, cache), full, **TOL)
        assert [c.length for c in cache] == [19, 19] and cache[0].capacity >= 19
        cache = enc.make_cache()  # a prompt, then chunks of several tokens
        torch.testing.assert_close(_decode(enc, x, [5, 1, 3, 7, 2, 1], cache), full, **TOL)
        cache = enc.make_cache(max_len=8)  # pre-allocated, then grown past it
        torch.testing.assert_close(_decode(enc, x, [3] * 5 + [4], cache), full, **TOL)


@pytest.mark.parametrize("pos", [None, "rope", "alibi"])
@torch.no_grad()  # decoding: the in-place path (autograd concatenates)
def test_decoder_cache_equals_full_forward_with_cross_attention(pos, small_buffers):
    torch.manual_seed(21)
    dec = TransformerDecoder(32, 2, 4, kdim=24, pos=pos, num_kv_heads=2, max_len=64).eval()
    x, ctx = torch.randn(2, 13, 32), torch.randn(2, 9, 24)
    full = dec(x, ctx)
    for sizes in ([1] * 13, [4, 1, 6, 2]):
        cache = dec.make_cache()
        torch.testing.assert_close(_decode(dec, x, sizes, cache, ctx), full, **TOL)
        assert all(c.length == 13 and c.cross_kv.length == 9 for c in cache)
    cache = dec.make_cache(max_len=32)
    _decode(dec, x, [2] * 6 + [1], cache, ctx)
    assert cache[0].self_kv.capacity == 32


def test_appends_write_in_place_and_grow_by_doubling():
    c = KVCache(max_len=4)
    k, v = torch.randn(2, 3, 1, 8), torch.randn(2, 3, 1, 5)
    c.append(k, v)
    assert (c.length, c.capacity) == (1, 4)
    ptr = c.k.data_ptr()
    for _ in range(3):  # within capacity: the same buffer, nothing copied
        kk, vv = c.append(torch.randn(2, 3, 1, 8), torch.randn(2, 3, 1, 5))
        assert kk.data_ptr() == ptr
    assert kk.shape == (2, 3, 4, 8) and vv.shape == (2, 3, 4, 5)
    old_k = kk.clone()
    c.append(torch.randn(2, 3, 1, 8), torch.randn(2, 3, 1, 5))  # grows
    assert c.capacity >= 8 and c.length == 5
    torch.testing.assert_close(c.k[:, :, :4], old_k)
    torch.testing.assert_close(kk, old_k)  # a view handed out earlier is still valid
    torch.testing.assert_close(c.k[:, :, :1], k)
    caps = []
    d = KVCache()
    for _ in range(40):
        d.append(torch.randn(1, 1, 30, 2), torch.randn(1, 1, 30, 2))
        caps.append(d.capacity)
    grows = sum(a != b for a, b in zip(caps, caps[1:], strict=False))
    assert grows <= 3 and d.length == 1200  # doubling: O(log n) copies of the cache


@torch.no_grad()  # decoding: the in-place path (autograd concatenates)
def test_first_append_sets_dtype_and_device_and_reset_frees():
    c = KVCache()
    c.append(
        torch.randn(1, 2, 3, 4, dtype=torch.float64), torch.randn(1, 2, 3, 4, dtype=torch.float64)
    )
    assert c.k.dtype == torch.float64 and c.k.device.type == "cpu"
    with pytest.raises(ValueError, match="float64"):
        c.append(torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))
    c.reset()
    assert (c.length, c.capacity, c.k) == (0, 0, None)
    c.append(torch.randn(3, 1, 2, 4), torch.randn(3, 1, 2, 4))  # a new batch after reset
    assert c.k.shape == (3, 1, 2, 4) and c.k.dtype == torch.float32
    enc = TransformerEncoder(16, 2, 2, causal=True, pos="rope").double().eval()
    x = torch.randn(1, 7, 16, dtype=torch.float64)
    cache = enc.make_cache()
    torch.testing.assert_close(_decode(enc, x, [3, 1, 1, 2], cache), enc(x))
    assert cache[1].k.dtype == torch.float64


@pytest.mark.parametrize(
    ("k_shape", "v_shape", "match"),
    [
        ((2, 3, 1), (2, 3, 1, 8), "keys"),  # not 4-D
        ((2, 3, 1, 8), (2, 3, 2, 8), "same B, Hk, L"),  # k and v of different lengths
        ((1, 3, 1, 8), (1, 3, 1, 8), "B, Hk"),  # another batch
        ((2, 2, 1, 8), (2, 2, 1, 8), "B, Hk"),  # other key/value heads
        ((2, 3, 1, 4), (2, 3, 1, 8), "head dims"),  # another head dim
        ((2, 3, 1, 8), (2, 3, 1, 6), "head dims"),  # another value head dim
    ],
)
def test_wrong_appends_raise_and_leave_the_cache_unchanged(k_shape, v_shape, match):
    c = KVCache()
    k0, v0 = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)
    c.append(k0, v0)
    with pytest.raises(ValueError, match=match):
        c.append(torch.randn(k_shape), torch.randn(v_shape))
    assert c.length == 4
    torch.testing.assert_close(c.k, k0)
    torch.testing.assert_close(c.v, v0)
    with pytest.raises(ValueError, match="cannot truncate"):
        c.truncate(5)
    c.truncate(2)
    assert c.k.shape == (2, 3, 2, 8)


@torch.no_grad()  # decoding: the in-place path (autograd concatenates)
def test_a_step_that_raises_leaves_every_cache_as_it_was(small_buffers):
    torch.manual_seed(22)
    enc = TransformerEncoder(32, 3, 4, causal=True, pos="alibi").eval()
    x = torch.randn(1, 8, 32)
    full = enc(x)
    cache = enc.make_cache()
    enc(x[:, :5], cache=cache)

    def fail(*_):
        raise RuntimeError("boom")

    h = enc.blocks[2].register_forward_pre_hook(fail)  # blocks 0 and 1 have appended by then
    with pytest.raises(RuntimeError, match="boom"):
        enc(x[:, 5:6], cache=cache)
    h.remove()
    assert [c.length for c in cache] == [5, 5, 5]
    torch.testing.assert_close(_decode(enc, x[:, 5:], [1, 2], cache), full[:, 5:], **TOL)
    dec = TransformerDecoder(32, 2, 4).eval()
    ctx = torch.randn(1, 6, 32)
    cache = dec.make_cache()
    h = dec.blocks[1].register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="boom"):
        dec(x[:, :2], ctx, cache=cache)  # the first step: block 0 stored the context
    h.remove()
    assert all(c.length == 0 and c.cross_kv.length == 0 for c in cache)
    torch.testing.assert_close(_decode(dec, x, [2, 6], cache, ctx), dec(x, ctx), **TOL)
    assert isinstance(cache[0], DecoderLayerCache)


def test_gradients_flow_through_the_cache():
    torch.manual_seed(23)
    enc = TransformerEncoder(16, 2, 2, causal=True, pos="rope")
    x = torch.randn(1, 6, 16, requires_grad=True)
    g_full = torch.autograd.grad(enc(x).square().sum(), x)[0]
    cache = enc.make_cache()
    g_cached = torch.autograd.grad(_decode(enc, x, [2, 1, 3], cache).square().sum(), x)[0]
    torch.testing.assert_close(g_cached, g_full, **TOL)
    with torch.no_grad():  # a cache filled without autograd, then a step with it
        cache = enc.make_cache()
        enc(x[:, :4], cache=cache)
    y = enc(x[:, 4:], cache=cache)
    g = torch.autograd.grad(y.square().sum(), x)[0]
    want = torch.autograd.grad(enc(x)[:, 4:].square().sum(), x)[0]
    torch.testing.assert_close(g[:, 4:], want[:, 4:], **TOL)


@torch.no_grad()
def test_decoding_checks_each_new_key_once_and_still_refuses_non_finite_steps(monkeypatch):
    """With a cache only the step's new keys are checked (the cache was checked as it grew),
    yet a NaN in a step, or in the context on the first step, raises and leaves the cache as
    it was."""
    import attnlab.core.modules as modules

    torch.manual_seed(23)
    dec = TransformerDecoder(32, 2, 4, kdim=16).eval()
    x, ctx = torch.randn(1, 12, 32), torch.randn(1, 7, 16)
    seen = []
    real = modules.check_inputs_finite
    monkeypatch.setattr(
        modules,
        "check_inputs_finite",
        lambda q, k, v: (seen.append((q.shape[2], k.shape[2])), real(q, k, v)),
    )
    cache = dec.make_cache()
    torch.testing.assert_close(_decode(dec, x, [4] + [1] * 8, cache, ctx), dec(x, ctx), **TOL)
    # per block and step: self-attention sees the new queries' keys, cross-attention the
    # context on the first step and nothing after
    assert seen[:4] == [(4, 4), (4, 7), (4, 4), (4, 7)]
    assert set(seen[4:]) == {(1, 1), (1, 0)}
    bad = x[:, :1].clone()
    bad[0, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        dec(bad, ctx, cache=cache)
    assert all(c.length == 12 for c in cache)
    fresh = dec.make_cache()
    bad_ctx = ctx.clone()
    bad_ctx[0, 2, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        dec(x[:, :2], bad_ctx, cache=fresh)
    assert all(c.length == 0 and c.cross_kv.length == 0 for c in fresh)
