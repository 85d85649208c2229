"""Analysis helpers against hand-computed tiny examples and closed forms."""

from __future__ import annotations

import itertools

import pytest
import torch

from attnlab.core.analysis import (
    attention_flow,
    attention_rollout,
    gradient_rollout,
    head_entropy,
    mean_attention_distance,
    top_k_attended,
)


def _rand_maps(n, B=1, H=2, L=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.softmax(torch.randn(B, H, L, L, generator=g) * 2, -1) for _ in range(n)]


def test_rollout_of_identity_attention_is_identity():
    eye = torch.eye(5).expand(1, 3, 5, 5)
    torch.testing.assert_close(attention_rollout([eye, eye, eye]), torch.eye(5)[None])


def test_rollout_hand_computed_two_layers():
    a1 = torch.tensor([[[[0.5, 0.5], [0.0, 1.0]]]])  # (B=1, H=1, 2, 2)
    a2 = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])
    # A_hat = 0.5 A + 0.5 I (rows already sum to 1)
    h1 = torch.tensor([[0.75, 0.25], [0.0, 1.0]])
    h2 = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    want = h2 @ h1  # [[0.75, 0.25], [0.1875, 0.8125]]
    got = attention_rollout([a1, a2])
    torch.testing.assert_close(got[0], want)
    torch.testing.assert_close(got[0], torch.tensor([[0.75, 0.25], [0.1875, 0.8125]]))
    torch.testing.assert_close(attention_rollout(torch.stack([a1, a2])[:, 0]), want)  # unbatched


def test_rollout_rows_sum_to_one_and_heads_choice():
    maps = _rand_maps(3, B=2, H=3)
    r = attention_rollout(maps)
    torch.testing.assert_close(r.sum(-1), torch.ones(2, 4))
    only1 = attention_rollout([m[:, 1:2] for m in maps])
    torch.testing.assert_close(attention_rollout(maps, head_indices=[1]), only1)
    with pytest.raises(ValueError, match="head_fusion"):
        attention_rollout(maps, head_fusion="median")


def test_gradient_rollout_follows_chefer_rule():
    maps = _rand_maps(2, H=2, L=3, seed=1)
    g = torch.Generator().manual_seed(5)
    grads = [torch.randn(1, 2, 3, 3, generator=g) for _ in range(2)]
    cam = [(gr * a).clamp_min(0).mean(1)[0] for a, gr in zip(maps, grads, strict=True)]
    r = torch.eye(3)
    for c in cam:
        r = r + c @ r
    torch.testing.assert_close(gradient_rollout(maps, grads)[0], r)
    zero = [torch.zeros_like(a) for a in maps]
    torch.testing.assert_close(gradient_rollout(maps, zero)[0], torch.eye(3))
    with pytest.raises(ValueError, match="differ"):
        gradient_rollout(maps, grads[:1])


def test_attention_flow_one_and_two_layers_closed_form():
    maps = _rand_maps(2, L=4, seed=2)
    hat = [0.5 * m.mean(1)[0] + 0.5 * torch.eye(4) for m in maps]
    # one layer: the flow from i to j is the single edge's capacity
    torch.testing.assert_close(attention_flow(maps[:1])[0], hat[0], atol=1e-6, rtol=1e-6)
    # two layers: the paths i -> a -> j share no edge, so flow = sum_a min(A2[i, a], A1[a, j])
    want = torch.minimum(hat[1][:, :, None], hat[0][None]).sum(1)
    torch.testing.assert_close(attention_flow(maps)[0], want, atol=1e-6, rtol=1e-6)


def test_bottleneck_is_the_widest_path_and_bounds_the_flow():
    maps = _rand_maps(3, L=3, seed=3)
    hat = [0.5 * m.mean(1)[0] + 0.5 * torch.eye(3) for m in maps]
    want = torch.zeros(3, 3)
    for i, j in itertools.product(range(3), repeat=2):
        want[i, j] = max(
            min(hat[2][i, a], hat[1][a, b], hat[0][b, j])
            for a, b in itertools.product(range(3), repeat=2)
        )
    bott = attention_flow(maps, method="bottleneck")[0]
    torch.testing.assert_close(bott, want)
    flow = attention_flow(maps)[0]
    assert (flow >= bott - 1e-6).all() and (flow <= 1 + 1e-6).all()
    with pytest.raises(ValueError, match="max_nodes"):
        attention_flow(maps, max_nodes=8)


def test_entropy_uniform_onehot_and_masked_rows():
    w = torch.zeros(1, 2, 3, 4)
    w[0, 0] = 0.25  # uniform over 4 keys
    w[0, 1, :, 2] = 1.0  # one-hot
    w[0, 1, 2] = 0.0  # a fully masked query row: left out
    torch.testing.assert_close(head_entropy(w), torch.tensor([[torch.log(torch.tensor(4.0)), 0.0]]))


def test_mean_attention_distance_positions_and_coords():
    w = torch.zeros(1, 1, 3, 3)
    w[0, 0, 0, 2] = 1.0  # distance 2
    w[0, 0, 1, 1] = 1.0  # 0
    w[0, 0, 2, 0] = 1.0  # 2
    torch.testing.assert_close(mean_attention_distance(w), torch.tensor([[4 / 3]]))
    coords = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    torch.testing.assert_close(mean_attention_distance(w, coords), torch.tensor([[20 / 3]]))
    # decoding: one query at position 2 attending to key 0 -> distance 2
    torch.testing.assert_close(mean_attention_distance(w[:, :, 2:]), torch.tensor([[2.0]]))


def test_top_k_attended():
    w = torch.tensor([[[[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]]])
    vals, idx = top_k_attended(w, 2)
    assert idx.tolist() == [[[[1, 2], [0, 2]]]]
    vals, idx = top_k_attended(w, 5, query=1)
    assert idx.tolist() == [[[0, 2, 1]]]
    with pytest.raises(ValueError, match="k must"):
        top_k_attended(w, 0)
