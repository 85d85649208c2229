"""core.lm: the shared next-token loss against a float64 log-softmax written out, ignored
targets left out of loss and accuracy; GPT-2 initialisation statistics."""

import math

import torch
from torch import nn

from attnlab.core.lm import IGNORE, init_gpt2_weights, token_loss


def test_token_loss_matches_float64_and_skips_ignored_targets():
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(3, 11, 7, generator=g)
        targets = torch.randint(0, 7, (3, 11), generator=g)
        targets[torch.rand(3, 11, generator=g) < 0.4] = IGNORE
        loss, m = token_loss(logits, targets)
        keep = targets != IGNORE
        lp = logits.double().log_softmax(-1)[keep]
        ref = -lp.gather(-1, targets[keep].unsqueeze(-1)).mean()
        torch.testing.assert_close(loss.double(), ref, atol=1e-6, rtol=0)
        acc = (logits.argmax(-1)[keep] == targets[keep]).double().mean()
        assert math.isclose(float(m["acc"]), float(acc), abs_tol=1e-7)
        # changing the logits at ignored positions changes nothing
        other = logits.clone()
        other[~keep] = torch.randn(int((~keep).sum()), 7, generator=g) * 10
        torch.testing.assert_close(token_loss(other, targets)[0], loss)


def test_gpt2_init_statistics():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Embedding(500, 64), nn.Linear(64, 512), nn.LayerNorm(512))
    m[1].bias.data.fill_(3.0)
    m.apply(init_gpt2_weights)
    for w in (m[0].weight, m[1].weight):
        assert abs(float(w.std()) - 0.02) < 0.001 and abs(float(w.mean())) < 0.001
    assert torch.all(m[1].bias == 0)
    assert torch.all(m[2].weight == 1)  # norms keep their own initialisation
