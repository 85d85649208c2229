"""attn_weights: the materialised path and the LSE path give the math backend's weights (and the
materialised path its output), with masks, GQA, a non-additive score modifier, dead rows and
half precision. Whole-model recordings are tested in test_capture.py."""

from __future__ import annotations

import pytest
import torch

from attnlab.core import masks
from attnlab.core.attention import attention
from attnlab.core.attn_weights import attention_call, explicit_attention, lse_weights
from attnlab.core.scores import ALiBi, SoftCap

W_TOL = dict(atol=1e-6, rtol=1e-5)


def _args(**kw):
    args = dict(
        attn_mask=None,
        dropout_p=0.0,
        is_causal=False,
        scale=None,
        enable_gqa=True,
        mask=None,
        score_mod=None,
        backend="auto",
    )
    return {**args, **kw}


CASES = {
    "causal_padding_softcap": dict(
        is_causal=True, mask=masks.key_padding(torch.tensor([7, 5])), score_mod=SoftCap(2.0)
    ),
    "alibi_window": dict(score_mod=ALiBi(4), mask=masks.sliding_window(3)),
    "float_mask_scale": dict(attn_mask=torch.randn(2, 1, 7, 7), scale=0.3),
    # query 2 sees no key: zero weights and output, not NaN
    "dead_rows": dict(attn_mask=(torch.arange(7).view(7, 1) != 2).expand(7, 7)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_both_paths_equal_the_math_backend(case):
    torch.manual_seed(30)
    q, k, v = torch.randn(2, 4, 7, 8), torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 6)
    args = _args(**CASES[case])
    ref = attention(q, k, v, **{**args, "backend": "math"}, return_weights=True, return_lse=True)
    call = attention_call(q, k, args)
    with torch.no_grad():  # the softmax written over the scores
        out, w = explicit_attention(q, k, v, call)
    torch.testing.assert_close(w, ref.weights, **W_TOL)
    torch.testing.assert_close(out, ref.output, **W_TOL)
    assert not w.isnan().any()
    out2, w2 = explicit_attention(q.requires_grad_(), k, v, call)  # under autograd
    torch.testing.assert_close(w2.detach(), w)
    torch.testing.assert_close(out2.detach(), out)
    for heads in (None, [3, 0]):
        got = lse_weights(q.detach(), k, ref.lse, call, heads)
        torch.testing.assert_close(
            got, ref.weights if heads is None else ref.weights[:, heads], **W_TOL
        )


def test_half_precision_keeps_float32_statistics():
    torch.manual_seed(31)
    q, k, v = (torch.randn(1, 2, 9, 8).bfloat16() for _ in range(3))
    args = _args(is_causal=True)
    ref = attention(q, k, v, **{**args, "backend": "math"}, return_weights=True)
    out, w = explicit_attention(q, k, v, attention_call(q, k, args))
    assert w.dtype == out.dtype == torch.bfloat16
    torch.testing.assert_close(w.float(), ref.weights.float(), atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(out.float(), ref.output.float(), atol=2e-2, rtol=2e-2)
