"""Blocks that express real checkpoints: pre/post norm against a float64 reference and against
``torch.nn.TransformerEncoderLayer``, per-projection biases, ``load_qkv``, layer scale, drop
path, activations and the final norm."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from reference import reference_attention

from attnlab.core.blocks import (
    Block,
    DecoderBlock,
    DropPath,
    LayerScale,
    TransformerDecoder,
    TransformerEncoder,
)
from attnlab.core.modules import MultiHeadAttention

TOL = dict(atol=1e-5, rtol=1e-5)
ACTS = {"gelu": F.gelu, "relu": F.relu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
        "silu": F.silu, "quick_gelu": lambda t: t * torch.sigmoid(1.702 * t)}  # fmt: skip


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Random values everywhere (LayerNorm and layer-scale parameters included), so a weight
    that is loaded in the wrong place or ignored changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _lin(x, w, b):
    return x @ w.double().T + (0 if b is None else b.double())


def _ln(x, norm):
    return F.layer_norm(x, x.shape[-1:], norm.weight.double(), norm.bias.double(), norm.eps)


def _reference_attention(attn: MultiHeadAttention, x, allowed=None):
    """Float64 multi-head self-attention from the module's parameters."""
    B, L, _ = x.shape
    H, D = attn.num_heads, attn.head_dim
    w = attn.qkv.weight.double()
    if attn.qkv.bias is not None:
        b = attn.qkv.bias.double()
    else:
        b = torch.cat(
            [
                getattr(attn, n).double()
                if hasattr(attn, n)
                else torch.zeros(H * D, dtype=torch.float64)
                for n in ("q_bias", "k_bias", "v_bias")
            ]
        )
    q, k, v = (x @ w.T + b).split(H * D, dim=-1)
    q, k, v = (t.view(B, L, H, D).transpose(1, 2) for t in (q, k, v))
    o, _, _ = reference_attention(q, k, v, allowed=allowed)
    return _lin(o.transpose(1, 2).reshape(B, L, H * D), attn.proj.weight, attn.proj.bias)


def _reference_block(blk: Block, x, act: str, allowed=None):
    x = x.double()

    def ls(mod, t):
        return t * mod.gamma.double() if isinstance(mod, LayerScale) else t

    def mlp(t):
        return _lin(
            ACTS[act](_lin(t, blk.mlp.fc1.weight, blk.mlp.fc1.bias)),
            blk.mlp.fc2.weight,
            blk.mlp.fc2.bias,
        )

    if blk.pre_norm:
        x = x + ls(blk.ls1, _reference_attention(blk.attn, _ln(x, blk.norm1), allowed))
        return x + ls(blk.ls2, mlp(_ln(x, blk.norm2)))
    x = _ln(x + ls(blk.ls1, _reference_attention(blk.attn, x, allowed)), blk.norm1)
    return _ln(x + ls(blk.ls2, mlp(x)), blk.norm2)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("init_values", [None, 0.5])
def test_block_matches_float64_reference(norm, act, init_values):
    torch.manual_seed(0)
    blk = Block(24, 3, norm=norm, act=act, init_values=init_values, mlp_ratio=2.5).eval()
    _randomise(blk, 1)
    x = torch.randn(2, 7, 24)
    torch.testing.assert_close(blk(x), _reference_block(blk, x, act).float(), **TOL)
    causal = Block(24, 3, norm=norm, act=act, causal=True).eval()
    _randomise(causal, 2)
    allowed = torch.ones(7, 7, dtype=torch.bool).tril()
    torch.testing.assert_close(causal(x), _reference_block(causal, x, act, allowed).float(), **TOL)


@pytest.mark.parametrize("qkv_bias", [(True, False, True), (False, True, False), (False,) * 3])
@pytest.mark.parametrize("proj_bias", [True, False])
def test_per_projection_biases(qkv_bias, proj_bias):
    torch.manual_seed(3)
    attn = MultiHeadAttention(16, 2, qkv_bias=qkv_bias, proj_bias=proj_bias).eval()
    _randomise(attn, 4)
    keys = set(attn.state_dict())
    same = len(set(qkv_bias)) == 1
    assert ("qkv.bias" in keys) == (same and qkv_bias[0])
    for name, on in zip(("q_bias", "k_bias", "v_bias"), qkv_bias, strict=True):
        assert (name in keys) == (on and not same)
    assert ("proj.bias" in keys) == proj_bias
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(attn(x), _reference_attention(attn, x.double()).float(), **TOL)


def test_cross_attention_without_key_bias_matches_reference():
    """Whisper's cross-attention: q and v have a bias, k has none."""
    torch.manual_seed(5)
    attn = MultiHeadAttention(16, 2, cross=True, kdim=12, qkv_bias=(True, False, True)).eval()
    _randomise(attn, 6)
    assert "kv.bias" not in attn.state_dict() and "v_bias" in attn.state_dict()
    x, ctx = torch.randn(2, 4, 16).double(), torch.randn(2, 6, 12).double()
    q = _lin(x, attn.q.weight, attn.q.bias).view(2, 4, 2, 8).transpose(1, 2)
    wk, wv = attn.kv.weight.chunk(2)
    k = _lin(ctx, wk, None).view(2, 6, 2, 8).transpose(1, 2)
    v = _lin(ctx, wv, attn.v_bias).view(2, 6, 2, 8).transpose(1, 2)
    o, _, _ = reference_attention(q, k, v)
    ref = _lin(o.transpose(1, 2).reshape(2, 4, 16), attn.proj.weight, attn.proj.bias)
    torch.testing.assert_close(attn(x.float(), ctx.float()), ref.float(), **TOL)


def _hf_layer(dim: int, heads: int, bias: tuple[bool, bool, bool], seed: int):
    """Separate q/k/v Linears, as a Hugging Face BERT or Whisper layer stores them."""
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(dim, dim, generator=g) / math.sqrt(dim) for _ in range(3)]
    bs = [torch.randn(dim, generator=g) if on else None for on in bias]
    return ws, bs


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("bias", [(True, True, True), (True, False, True)])
def test_load_qkv_equals_separate_projections(cross, bias):
    torch.manual_seed(7)
    attn = MultiHeadAttention(16, 4, cross=cross, qkv_bias=bias).eval()
    (wq, wk, wv), (bq, bk, bv) = _hf_layer(16, 4, bias, seed=8)
    attn.load_qkv(wq, wk, wv, bq, bk, bv)
    x = torch.randn(2, 5, 16)
    ctx = torch.randn(2, 3, 16) if cross else x
    q = F.linear(x, wq, bq).view(2, 5, 4, 4).transpose(1, 2)
    k = F.linear(ctx, wk, bk).view(2, -1, 4, 4).transpose(1, 2)
    v = F.linear(ctx, wv, bv).view(2, -1, 4, 4).transpose(1, 2)
    o, _, _ = reference_attention(q, k, v)
    ref = attn.proj(o.float().transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(attn(x, ctx) if cross else attn(x), ref, **TOL)


def test_load_qkv_rejects_wrong_shapes_and_biases():
    attn = MultiHeadAttention(16, 2, qkv_bias=(True, False, True))
    w, b = torch.zeros(16, 16), torch.zeros(16)
    with pytest.raises(ValueError, match="k_weight must have shape"):
        attn.load_qkv(w, torch.zeros(8, 16), w, b, None, b)
    with pytest.raises(ValueError, match="k_bias"):
        attn.load_qkv(w, w, w, b, b, b)
    with pytest.raises(ValueError, match="q_bias must have shape"):
        attn.load_qkv(w, w, w, torch.zeros(3), None, b)
    with pytest.raises(ValueError, match="qkv_bias"):
        MultiHeadAttention(16, 2, qkv_bias=(True, False))


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_bert_style_layer_equals_torch_transformer_encoder_layer(norm_first, activation):
    """A post-norm (BERT) or pre-norm layer loaded through ``load_qkv`` equals torch's layer."""
    torch.manual_seed(9)
    dim, heads, ff = 32, 4, 48
    ref = torch.nn.TransformerEncoderLayer(
        dim,
        heads,
        ff,
        dropout=0.0,
        activation=activation,
        batch_first=True,
        norm_first=norm_first,
        layer_norm_eps=1e-12,
    ).eval()
    _randomise(ref, 10)
    blk = Block(
        dim,
        heads,
        norm="pre" if norm_first else "post",
        mlp_ratio=ff / dim,
        act=activation,
        norm_eps=1e-12,
    ).eval()
    wq, wk, wv = ref.self_attn.in_proj_weight.chunk(3)
    bq, bk, bv = ref.self_attn.in_proj_bias.chunk(3)
    blk.attn.load_qkv(wq, wk, wv, bq, bk, bv)
    with torch.no_grad():
        for mine, theirs in (
            (blk.attn.proj, ref.self_attn.out_proj),
            (blk.mlp.fc1, ref.linear1),
            (blk.mlp.fc2, ref.linear2),
            (blk.norm1, ref.norm1),
            (blk.norm2, ref.norm2),
        ):
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
    x = torch.randn(3, 9, dim)
    pad = torch.tensor([9, 6, 1])
    key_padding = torch.arange(9) >= pad[:, None]  # torch: True = ignore
    from attnlab.core import masks

    with torch.inference_mode(False):
        expected = ref(x, src_key_padding_mask=key_padding)
    got = blk(x, mask=masks.key_padding(pad))
    # torch's fast path may return zeros at padded query rows; compare the real ones
    real = ~key_padding
    torch.testing.assert_close(got[real], expected[real], **TOL)


def test_layer_scale_and_drop_path():
    torch.manual_seed(11)
    blk = Block(16, 2, init_values=1e-3, drop_path=0.5)
    assert torch.equal(blk.ls1.gamma, torch.full((16,), 1e-3))
    assert "ls1.gamma" in blk.state_dict() and "ls2.gamma" in blk.state_dict()
    x = torch.randn(64, 3, 16)
    blk.eval()
    torch.testing.assert_close(blk(x), blk(x))  # eval: drop path is the identity
    dp = DropPath(0.25).train()
    y = dp(x)
    kept = (y != 0).flatten(1).any(1)
    assert 0 < int(kept.sum()) < 64  # whole samples dropped, some kept
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    assert torch.equal(y[~kept], torch.zeros_like(y[~kept]))
    torch.testing.assert_close(dp.eval()(x), x)
    with pytest.raises(ValueError, match="drop_path"):
        DropPath(1.0)


def test_stacks_schedule_drop_path_and_choose_the_final_norm():
    enc = TransformerEncoder(16, 4, 2, drop_path_rate=0.3)
    rates = [b.drop_path1.p if isinstance(b.drop_path1, DropPath) else 0.0 for b in enc.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert isinstance(enc.norm, torch.nn.LayerNorm)
    post = TransformerEncoder(16, 2, 2, norm="post")
    assert "norm.weight" not in post.state_dict()
    assert "norm.weight" in TransformerEncoder(16, 2, 2, norm="post", final_norm=True).state_dict()
    assert "norm.weight" not in TransformerDecoder(16, 1, 2, final_norm=False).state_dict()
    with pytest.raises(TypeError, match="drop_path_rate"):
        TransformerEncoder(16, 2, 2, drop_path=0.1)
    with pytest.raises(ValueError, match="norm must be"):
        Block(16, 2, norm="sandwich")
    with pytest.raises(ValueError, match="act must be"):
        Block(16, 2, act="swish2")


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_post_norm_decoder_cache_equals_full_forward(norm):
    torch.manual_seed(12)
    dec = TransformerDecoder(
        16, 2, 2, norm=norm, kdim=12, init_values=0.1, qkv_bias=(True, False, True), act="gelu_tanh"
    ).eval()
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 4, 12)
    full = dec(x, ctx)
    cache = dec.make_cache()
    steps = torch.cat([dec(x[:, i : i + 1], ctx, cache=cache) for i in range(5)], 1)
    torch.testing.assert_close(steps, full, **TOL)
    assert isinstance(dec.blocks[0], DecoderBlock) and hasattr(dec.blocks[0], "ls3")


def test_attention_only_block():
    """mlp_ratio=0: x + attn(norm(x)) and nothing else (Elhage et al. 2021)."""
    torch.manual_seed(13)
    blk = Block(16, 2, mlp_ratio=0, causal=True).eval()
    assert blk.mlp is None and not any(k.startswith(("mlp", "norm2")) for k in blk.state_dict())
    _randomise(blk, 14)
    x = torch.randn(2, 6, 16)
    allowed = torch.ones(6, 6, dtype=torch.bool).tril()
    ref = x.double() + _reference_attention(blk.attn, _ln(x.double(), blk.norm1), allowed)
    torch.testing.assert_close(blk(x), ref.float(), **TOL)
    post = Block(16, 2, mlp_ratio=0, norm="post").eval()
    _randomise(post, 15)
    ref = _ln(x.double() + _reference_attention(post.attn, x.double()), post.norm1)
    torch.testing.assert_close(post(x), ref.float(), **TOL)
    with pytest.raises(ValueError, match="mlp_ratio"):
        Block(16, 2, mlp_ratio=-1)
