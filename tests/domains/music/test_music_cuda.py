"""The music model on a CUDA device: relative attention's logits equal the CPU's, and
generation with the KV cache gives the same samples as without it.
Skipped where no GPU is present."""

from __future__ import annotations

import pytest
import torch

from attnlab.core.registry import create
from attnlab.domains.music import generate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("name", ["music_relative", "music_absolute"])
def test_music_model_on_cuda_matches_the_cpu_and_samples_alike(name):
    torch.manual_seed(0)
    model = create(name).eval()
    tokens = torch.randint(0, model.config.vocab_size, (2, 200))
    with torch.no_grad():
        cpu = model(tokens)
        model.cuda()
        gpu = model(tokens.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)
    prime = tokens[0, :64].tolist()
    cached = generate(model, prime, 48, seed=3, temperature=0.0)
    rerun = generate(model, prime, 48, seed=3, temperature=0.0, use_cache=False)
    assert cached.tokens == rerun.tokens
