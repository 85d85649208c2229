"""MultiHeadAttention, blocks and stacks: fused vs explicit vs a float64 reference, KV-cached
decoding vs the full forward, dropout, masks, names and bad input."""

from __future__ import annotations

import pytest
import torch
from reference import reference_attention

from attnlab.core import masks
from attnlab.core.blocks import Block, TransformerDecoder, TransformerEncoder
from attnlab.core.kv_cache import KVCache
from attnlab.core.modules import MultiHeadAttention
from attnlab.core.scores import alibi_slopes

TOL = dict(atol=1e-5, rtol=1e-5)


def _set_backend(model: torch.nn.Module, backend: str) -> None:
    for m in model.modules():
        if isinstance(m, MultiHeadAttention):
            m.backend = backend


def _manual_self_attention(mod: MultiHeadAttention, x, allowed=None, bias=None):
    """Float64 attention from the module's own weights, independent of its forward."""
    B, L, _ = x.shape
    H, Hk, D = mod.num_heads, mod.num_kv_heads, mod.head_dim
    qkv = x.double() @ mod.qkv.weight.double().T + mod.qkv.bias.double()
    q = qkv[..., : H * D].view(B, L, H, D).transpose(1, 2)
    k = qkv[..., H * D : (H + Hk) * D].view(B, L, Hk, D).transpose(1, 2)
    v = qkv[..., (H + Hk) * D :].view(B, L, Hk, D).transpose(1, 2)
    o, w, _ = reference_attention(q, k, v, allowed=allowed, bias=bias)
    o = o.transpose(1, 2).reshape(B, L, H * D)
    return (o @ mod.proj.weight.double().T + mod.proj.bias.double()).float(), w


@pytest.mark.parametrize("num_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_float64_reference(num_kv_heads, causal):
    torch.manual_seed(0)
    mod = MultiHeadAttention(32, 4, num_kv_heads=num_kv_heads, causal=causal).eval()
    x = torch.randn(2, 7, 32)
    lengths = torch.tensor([7, 4])
    allowed = torch.arange(7) < lengths.view(2, 1, 1, 1)  # (B, 1, 1, S)
    if causal:
        allowed = allowed & torch.ones(7, 7, dtype=torch.bool).tril()
    ref, _ = _manual_self_attention(mod, x, allowed=allowed)
    for backend in ("auto", "math", "sdpa"):
        mod.backend = backend
        y = mod(x, mask=masks.key_padding(lengths))
        torch.testing.assert_close(y, ref, **TOL)


def test_cross_attention_matches_reference():
    torch.manual_seed(1)
    mod = MultiHeadAttention(16, 2, cross=True).eval()
    assert hasattr(mod, "kv") and not hasattr(mod, "qkv")
    x, ctx = torch.randn(3, 5, 16), torch.randn(3, 9, 16)
    with pytest.raises(ValueError, match="context"):
        mod(x)
    q = mod.q(x).view(3, 5, 2, 8).transpose(1, 2)
    k, v = (t.view(3, 9, 2, 8).transpose(1, 2) for t in mod.kv(ctx).chunk(2, -1))
    o, _, _ = reference_attention(q, k, v)
    ref = mod.proj(o.float().transpose(1, 2).reshape(3, 5, 16))
    torch.testing.assert_close(mod(x, ctx), ref, **TOL)


def test_cross_attention_with_distinct_kdim_vdim():
    torch.manual_seed(2)
    mod = MultiHeadAttention(16, 2, kdim=12, vdim=10).eval()
    assert {"q", "k", "v", "proj"} <= {n for n, _ in mod.named_children()}
    x, kin, vin = torch.randn(2, 4, 16), torch.randn(2, 6, 12), torch.randn(2, 6, 10)
    q = mod.q(x).view(2, 4, 2, 8).transpose(1, 2)
    k = mod.k(kin).view(2, 6, 2, 8).transpose(1, 2)
    v = mod.v(vin).view(2, 6, 2, 8).transpose(1, 2)
    o, _, _ = reference_attention(q, k, v)
    ref = mod.proj(o.float().transpose(1, 2).reshape(2, 4, 16))
    torch.testing.assert_close(mod(x, (kin, vin)), ref, **TOL)
    with pytest.raises(ValueError, match="context must be"):
        mod(x, kin)


def test_alibi_module_matches_reference():
    torch.manual_seed(3)
    mod = MultiHeadAttention(32, 4, causal=True, pos="alibi").eval()
    x = torch.randn(2, 6, 32)
    pos = torch.arange(6)
    bias = -alibi_slopes(4).view(1, 4, 1, 1) * (pos.view(-1, 1) - pos.view(1, -1)).abs()
    ref, _ = _manual_self_attention(
        mod, x, allowed=torch.ones(6, 6, dtype=torch.bool).tril(), bias=bias
    )
    torch.testing.assert_close(mod(x), ref, **TOL)


@pytest.mark.parametrize("pos", [None, "rope", "alibi", "relative", "music"])
def test_encoder_fused_equals_explicit(pos):
    torch.manual_seed(4)
    enc = TransformerEncoder(32, 2, 4, causal=pos is not None, pos=pos, num_kv_heads=2).eval()
    x = torch.randn(2, 9, 32)
    fused = enc(x)
    _set_backend(enc, "math")
    torch.testing.assert_close(enc(x), fused, **TOL)


def test_decoder_fused_equals_explicit():
    torch.manual_seed(5)
    dec = TransformerDecoder(32, 2, 4, kdim=24, pos="rope").eval()
    x, ctx = torch.randn(2, 6, 32), torch.randn(2, 5, 24)
    ctx_mask = masks.key_padding(torch.tensor([5, 3]))
    fused = dec(x, ctx, context_mask=ctx_mask)
    _set_backend(dec, "math")
    torch.testing.assert_close(dec(x, ctx, context_mask=ctx_mask), fused, **TOL)


@pytest.mark.parametrize("pos", [None, "rope", "alibi", "relative", "music"])
@pytest.mark.parametrize("num_kv_heads", [4, 1])
def test_kv_cache_decoding_equals_full_causal_forward(pos, num_kv_heads):
    torch.manual_seed(6)
    enc = TransformerEncoder(
        32, 2, 4, causal=True, pos=pos, num_kv_heads=num_kv_heads, max_len=64
    ).eval()
    x = torch.randn(2, 10, 32)
    full = enc(x)
    cache = enc.make_cache()
    steps = [enc(x[:, i : i + 1], cache=cache) for i in range(10)]
    torch.testing.assert_close(torch.cat(steps, 1), full, **TOL)
    assert cache[0].length == 10
    cache = enc.make_cache()  # prompt chunk, then chunks of several tokens
    chunks = [enc(x[:, :4], cache=cache), enc(x[:, 4:7], cache=cache), enc(x[:, 7:], cache=cache)]
    torch.testing.assert_close(torch.cat(chunks, 1), full, **TOL)


def test_decoder_cache_equals_full_forward_and_projects_context_once():
    torch.manual_seed(7)
    dec = TransformerDecoder(32, 2, 4, kdim=24, pos="alibi", num_kv_heads=2).eval()
    x, ctx = torch.randn(2, 6, 32), torch.randn(2, 5, 24)
    full = dec(x, ctx)
    cache = dec.make_cache()
    calls = []
    h = dec.blocks[0].cross_attn.kv.register_forward_hook(lambda *a: calls.append(1))
    steps = [dec(x[:, i : i + 1], ctx, cache=cache) for i in range(6)]
    h.remove()
    torch.testing.assert_close(torch.cat(steps, 1), full, **TOL)
    assert len(calls) == 1  # the context is projected on the first step only


def test_causal_output_ignores_the_future():
    torch.manual_seed(8)
    blk = Block(16, 2, causal=True, pos="rope").eval()
    x = torch.randn(1, 8, 16)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(1, 3, 16)
    torch.testing.assert_close(blk(x)[:, :5], blk(x2)[:, :5], **TOL)
    assert not torch.allclose(blk(x)[:, 5:], blk(x2)[:, 5:])


def test_dropout_only_in_training():
    torch.manual_seed(9)
    enc = TransformerEncoder(16, 1, 2, dropout=0.5)
    x = torch.randn(2, 5, 16)
    enc.eval()
    torch.testing.assert_close(enc(x), enc(x))
    enc.train()
    assert not torch.allclose(enc(x), enc(x))
    enc0 = TransformerEncoder(16, 1, 2, dropout=0.0)
    torch.testing.assert_close(enc0.train()(x), enc0.eval()(x))


def test_module_mask_and_call_mask_combine():
    torch.manual_seed(10)
    mod = MultiHeadAttention(16, 2, mask=masks.sliding_window(3)).eval()
    x = torch.randn(2, 6, 16)
    lengths = torch.tensor([6, 4])
    allowed = masks.sliding_window(3).dense(6) & (torch.arange(6) < lengths.view(2, 1, 1, 1))
    ref, _ = _manual_self_attention(mod, x, allowed=allowed)
    torch.testing.assert_close(mod(x, mask=masks.key_padding(lengths)), ref, **TOL)
    am = allowed.clone()  # the same through a boolean attn_mask
    torch.testing.assert_close(MultiHeadAttention.forward(mod, x, attn_mask=am), ref, **TOL)


def test_state_dict_names_are_stable():
    enc = TransformerEncoder(16, 2, 2, pos="relative")
    keys = set(enc.state_dict())
    for k in (
        "blocks.0.attn.qkv.weight",
        "blocks.1.attn.proj.bias",
        "blocks.0.mlp.fc1.weight",
        "blocks.0.norm1.weight",
        "norm.weight",
        "blocks.1.attn.pos.table",
    ):
        assert k in keys
    dec = TransformerDecoder(16, 1, 2)
    assert "blocks.0.cross_attn.kv.weight" in dec.state_dict()
    assert "blocks.0.cross_attn.q.weight" in dec.state_dict()


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="num_kv_heads"):
        MultiHeadAttention(16, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="pos"):
        MultiHeadAttention(16, 2, cross=True, pos="rope")
    with pytest.raises(ValueError, match="pos"):
        MultiHeadAttention(16, 2, pos="sinusoid")
    mod = MultiHeadAttention(16, 2)
    with pytest.raises(ValueError, match="x must have shape"):
        mod(torch.randn(4, 16))
    with pytest.raises(ValueError, match="self-attention"):
        mod(torch.randn(1, 4, 16), torch.randn(1, 3, 16))
    enc = TransformerEncoder(16, 2, 2, causal=True)
    with pytest.raises(ValueError, match="cache"):
        enc(torch.randn(1, 3, 16), cache=[KVCache()])
    with pytest.raises(ValueError, match="depth"):
        TransformerEncoder(16, 0, 2)
