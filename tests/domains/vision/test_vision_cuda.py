"""The vision domain on a CUDA device: timm ViTs made visible give timm's outputs there, and
the recorded maps equal those recorded on the CPU. Skipped where no GPU is present."""

from __future__ import annotations

import pytest
import torch

from attnlab.core.capture import record_attention
from attnlab.domains.vision import make_visible

timm = pytest.importorskip("timm")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize(
    "name",
    ["vit_small_patch16_224", "deit_tiny_distilled_patch16_224", "vit_medium_patch16_reg4_gap_256"],
)
def test_make_visible_on_cuda_matches_timm_and_the_cpu(name):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, img_size=96, depth=3).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        cpu_ref = model(x)
        model.cuda()
        ref = model(x.cuda())
        make_visible(model)
        out = model(x.cuda())
        with record_attention(model) as maps:
            recorded = model(x.cuda())
        gpu_maps = [maps[n].float().cpu() for n in maps]
        model.cpu()
        with record_attention(model) as maps:
            model(x)
        cpu_maps = [maps[n].float() for n in maps]
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(recorded.cpu(), cpu_ref, atol=1e-4, rtol=1e-4)
    assert len(gpu_maps) == 3
    for g, c in zip(gpu_maps, cpu_maps, strict=True):
        torch.testing.assert_close(g, c, atol=1e-4, rtol=0)
