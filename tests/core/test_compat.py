"""compat.MultiheadAttention against torch.nn.MultiheadAttention with copied weights."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

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
    ref, ours = _pair(batch_first=batch_first, kdim=kdim, vdim=kdim, add_bias_kv=add_bias_kv,
                      add_zero_attn=add_zero_attn)
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
    for kw in (dict(), dict(kdim=8, vdim=12), dict(bias=False, add_bias_kv=False),
               dict(add_bias_kv=True)):
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
