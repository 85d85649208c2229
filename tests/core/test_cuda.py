"""The core on a CUDA device: every backend against the float64 reference (outputs and
gradients), half precision against float32, modules and stacks fused vs recorded, cached
decoding, the ``nn.MultiheadAttention`` drop-in against torch's, and one trainer step.

Skipped where no GPU is present (CI runs on CPUs); run on a GPU machine with
``pytest tests/core/test_cuda.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from attnlab.core import masks as M
from attnlab.core.attention import attention
from attnlab.core.blocks import TransformerDecoder, TransformerEncoder
from attnlab.core.capture import record_attention
from attnlab.core.compat import MultiheadAttention
from tests.reference import reference_attention

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEV = "cuda"


def _qkv(seed, B=2, Hq=4, Hk=2, L=96, S=96, D=32, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    shapes = [(B, Hq, L, D), (B, Hk, S, D), (B, Hk, S, D)]
    return [torch.randn(s, generator=g, dtype=torch.float64).to(DEV, dtype) for s in shapes]


def _ref(q, k, v, allowed):
    """Float64 softmax attention on the CPU with autograd; checked against
    tests/reference.py's naive formula."""
    g = q.shape[1] // k.shape[1]
    q, k, v = (t.detach().double().cpu().requires_grad_() for t in (q, k, v))
    kk, vv = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = q @ kk.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if allowed is not None:
        s = s.masked_fill(~allowed.cpu(), float("-inf"))
    out = torch.softmax(s, -1) @ vv
    naive, _, _ = reference_attention(
        q.detach(), kk.detach(), vv.detach(), allowed=None if allowed is None else allowed.cpu()
    )
    torch.testing.assert_close(out.detach(), naive, atol=1e-10, rtol=0)
    return out, (q, k, v)


MASKS = {
    "none": lambda L, S: None,
    "causal": lambda L, S: M.causal(),
    "window": lambda L, S: M.sliding_window(16),
    "padding": lambda L, S: M.key_padding(torch.tensor([S, S // 3])),
}


@pytest.mark.parametrize("backend", ["math", "sdpa", "tiled"])
@pytest.mark.parametrize("mask_name", list(MASKS))
def test_backends_match_the_float64_reference_on_cuda(backend, mask_name):
    for seed in range(2):
        q, k, v = (t.requires_grad_() for t in _qkv(seed))
        L, S = q.shape[2], k.shape[2]
        mask = MASKS[mask_name](L, S)
        out = attention(q, k, v, mask=mask, enable_gqa=True, backend=backend)
        assert out.device.type == "cuda"
        allowed = (
            None
            if mask is None
            else mask.dense(L, S, batch=q.shape[0] if mask.batch_size else None)
        )
        ref, leaves = _ref(q, k, v, allowed)
        torch.testing.assert_close(out.double().cpu(), ref.detach(), atol=2e-5, rtol=0)
        gout = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 7))
        (out * gout.to(DEV)).sum().backward()
        (ref * gout.double()).sum().backward()
        for t, r in zip((q, k, v), leaves, strict=True):
            torch.testing.assert_close(t.grad.double().cpu(), r.grad, atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["sdpa", "tiled", "math"])
def test_half_precision_follows_float32_on_cuda(dtype, backend):
    q, k, v = _qkv(3, L=128, S=128, D=64)
    ref = attention(q, k, v, mask=M.causal(), enable_gqa=True, backend="math")
    out = attention(
        *(t.to(dtype) for t in (q, k, v)), mask=M.causal(), enable_gqa=True, backend=backend
    )
    assert out.dtype == dtype
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=0)


def test_linear_backend_runs_on_cuda_and_matches_cpu():
    q, k, v = _qkv(4)
    out = attention(q, k, v, enable_gqa=True, backend="linear")
    cpu = attention(q.cpu(), k.cpu(), v.cpu(), enable_gqa=True, backend="linear")
    torch.testing.assert_close(out.cpu(), cpu, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos", [None, "rope", "alibi", "relative"])
def test_stack_recorded_equals_fused_and_rows_sum_to_one_on_cuda(pos):
    torch.manual_seed(0)
    enc = TransformerEncoder(64, 2, 4, causal=True, pos=pos, max_len=128).to(DEV).eval()
    x = torch.randn(2, 50, 64, device=DEV)
    with torch.no_grad():
        fused = enc(x)
        with record_attention(enc) as maps:
            rec = enc(x)
    torch.testing.assert_close(rec, fused, atol=2e-5, rtol=0)
    assert len(maps) == 2
    for w in maps.values():
        w = torch.as_tensor(w).float()
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)), atol=1e-4, rtol=0)
        assert torch.all(w.triu(1) == 0)  # causal: no weight on the future


@torch.no_grad()
def test_cached_decoding_equals_full_forward_on_cuda():
    torch.manual_seed(1)
    dec = (
        TransformerDecoder(64, 2, 4, kdim=48, pos="rope", num_kv_heads=2, max_len=64).to(DEV).eval()
    )
    x, ctx = torch.randn(2, 21, 64, device=DEV), torch.randn(2, 11, 48, device=DEV)
    full = dec(x, ctx)
    cache = dec.make_cache()
    steps = [dec(x[:, i : i + 1], ctx, cache=cache) for i in range(21)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=2e-5, rtol=0)


def test_multihead_dropin_matches_torch_on_cuda():
    torch.manual_seed(2)
    ref = torch.nn.MultiheadAttention(64, 8, batch_first=True).to(DEV).eval()
    ours = MultiheadAttention(64, 8, batch_first=True).to(DEV).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 40, 64, device=DEV)
    pad = torch.zeros(3, 40, dtype=torch.bool, device=DEV)
    pad[1, 30:] = True
    a, wa = ref(x, x, x, key_padding_mask=pad, need_weights=True, average_attn_weights=False)
    b, wb = ours(x, x, x, key_padding_mask=pad, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(b, a, atol=2e-5, rtol=0)
    torch.testing.assert_close(wb, wa, atol=2e-5, rtol=0)


def test_the_trainer_runs_a_recipe_on_cuda_and_lowers_the_loss(tmp_path):
    import dataclasses

    from attnlab.core.recipes import get_recipe
    from attnlab.core.train import train

    cfg = dataclasses.replace(
        get_recipe("toy").defaults,
        recipe="toy",
        model="toy_test",
        steps=60,
        warmup_steps=5,
        eval_every=0,
        ckpt_every=0,
        device="cuda",
        precision="bf16",
        out_dir=str(tmp_path),
        quiet=True,
        log_every=5,
    )
    result = train(cfg)
    assert next(result.model.parameters()).device.type == "cuda"
    losses = [r["loss"] for r in result.records if "loss" in r]
    assert losses[-1] < 0.9 * losses[0]


@pytest.mark.parametrize("mask", ["causal", "prefix"])
def test_tiled_backward_memory_stays_near_sdpa(mask):
    """Forward + backward of ``tiled`` keeps about what SDPA keeps, not O(L^2): each query
    block's keys are one view of k/v (a concatenated copy per block was kept for backward)."""
    L = 2048
    spec = M.causal() if mask == "causal" else M.prefix_lm(L // 8)
    q, k, v = (t.requires_grad_() for t in _qkv(5, B=2, Hq=8, Hk=8, L=L, S=L, D=64))

    def peak(backend):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        attention(q, k, v, mask=spec, backend=backend).sum().backward()
        torch.cuda.synchronize()
        q.grad = k.grad = v.grad = None
        return torch.cuda.max_memory_allocated() - base

    sdpa, tiled = peak("sdpa"), peak("tiled")
    assert tiled <= 3 * sdpa, (tiled / 2**20, sdpa / 2**20)
