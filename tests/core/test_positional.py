"""Positional schemes: sinusoidal/learned tables, RoPE against the complex-number form and its
relative property, Music Transformer skewing against the naive gather, relative bias gradients."""

from __future__ import annotations

import math

import pytest
import torch

from attnlab.core.positional import (
    LearnedPositionalEmbedding,
    MusicRelativeAttention,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionalEmbedding,
    build_position,
    sinusoidal_table,
    skew,
)


def test_sinusoidal_table_follows_the_formula():
    pe = sinusoidal_table(50, 16)
    for p, i in [(0, 0), (7, 3), (49, 7)]:
        ang = p / 10000 ** (2 * i / 16)
        assert pe[p, 2 * i].item() == pytest.approx(math.sin(ang), abs=1e-6)
        assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(ang), abs=1e-6)
    with pytest.raises(ValueError, match="even"):
        sinusoidal_table(4, 5)


def test_absolute_embeddings_add_the_rows_at_the_offset():
    x = torch.randn(2, 3, 8)
    sin = SinusoidalPositionalEmbedding(8, max_len=10)
    torch.testing.assert_close(sin(x, offset=4), x + sinusoidal_table(10, 8)[4:7])
    assert "pe" not in sin.state_dict()
    lrn = LearnedPositionalEmbedding(8, max_len=10)
    torch.testing.assert_close(lrn(x, offset=2), x + lrn.weight[2:5])
    with pytest.raises(ValueError, match="max_len"):
        lrn(x, offset=8)


def test_rope_matches_complex_rotation():
    torch.manual_seed(0)
    D, L, off = 8, 5, 3
    rope = RotaryEmbedding(D, max_len=4)  # grows its table on demand
    x = torch.randn(2, 3, L, D, dtype=torch.float64)
    got = rope.apply_rotary(x.float(), offset=off).double()
    # rotate-half layout: pair (i, i + D/2) is the complex number x_i + 1j x_{i+D/2}
    z = torch.complex(x[..., : D // 2], x[..., D // 2 :])
    theta = 10000.0 ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    pos = torch.arange(off, off + L, dtype=torch.float64)[:, None]
    zr = z * torch.polar(torch.ones_like(pos * theta), pos * theta)
    want = torch.cat([zr.real, zr.imag], dim=-1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_rope_scores_depend_on_relative_position_only():
    torch.manual_seed(1)
    rope = RotaryEmbedding(16)
    q, k = torch.randn(1, 2, 6, 16), torch.randn(1, 2, 6, 16)
    s0 = (lambda a, b: a @ b.transpose(-1, -2))(*rope.rotate(q, k, 0))
    s9 = (lambda a, b: a @ b.transpose(-1, -2))(*rope.rotate(q, k, 9))
    torch.testing.assert_close(s0, s9, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(s0, q @ k.transpose(-1, -2), atol=1e-3)


def _naive_rel(q, table, S, offset, max_len, causal):
    """S_rel[b, h, i, j] = q_i . E[h, clip(j - (offset + i))], zero for future keys if causal."""
    B, H, L, D = q.shape
    out = torch.zeros(B, H, L, S, dtype=q.dtype)
    for i in range(L):
        for j in range(S):
            r = j - (offset + i)
            if causal and r > 0:
                continue
            r = max(-(max_len - 1), min(r, 0 if causal else max_len - 1))
            out[:, :, i, j] = (q[:, :, i] * table[:, r + max_len - 1]).sum(-1)
    return out


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(("L", "S", "max_len"), [(6, 6, 16), (3, 8, 16), (1, 9, 16), (7, 7, 4)])
def test_music_skewing_equals_naive_gather(causal, L, S, max_len):
    torch.manual_seed(2)
    mra = MusicRelativeAttention(3, 4, max_len=max_len, causal=causal).double()
    q = torch.randn(2, 3, L, 4, dtype=torch.float64)
    got = mra.attn_bias(q, S, S - L, scale=1.0)
    want = _naive_rel(q, mra.rel.detach(), S, S - L, max_len, causal)
    if causal:  # future entries are masked by the causal mask; the scheme zeroes them
        fut = torch.arange(S) > (torch.arange(L) + S - L)[:, None]
        assert (got[..., fut] == 0).all()
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_skew_is_the_paper_trick_on_a_square_matrix():
    L = 4
    m = torch.arange(1.0, 1 + L * L).view(L, L)  # column c = distance c - (L - 1)
    s = skew(m, L)
    for i in range(L):
        for j in range(i + 1):
            assert s[i, j] == m[i, j - i + L - 1]
    with pytest.raises(ValueError, match="skew"):
        skew(torch.zeros(5, 3), 4)


def test_relative_bias_is_learned_and_receives_gradients():
    from attnlab.core.modules import MultiHeadAttention

    torch.manual_seed(3)
    mod = MultiHeadAttention(16, 2, pos=RelativePositionBias(2, max_distance=3))
    mod(torch.randn(2, 5, 16)).sum().backward()
    g = mod.pos.table.grad
    assert g is not None and g.abs().sum() > 0
    music = MultiHeadAttention(16, 2, causal=True, pos="music", max_len=8)
    music(torch.randn(2, 5, 16)).sum().backward()
    assert music.pos.rel.grad.abs().sum() > 0


def test_build_position_names_and_errors():
    assert isinstance(build_position("rope", num_heads=2, head_dim=8), RotaryEmbedding)
    assert build_position(None, num_heads=2, head_dim=8) is None
    with pytest.raises(ValueError, match="pos must be"):
        build_position("sinusoidal", num_heads=2, head_dim=8)
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7)
