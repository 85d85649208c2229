"""The music model: skewed relative attention against a naive O(L^2 D) float64 reference and
its memory, KV-cache decoding against the full forward, generation with and without the cache,
sampling filters."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attnlab.core.registry import create
from attnlab.domains.music.generate import generate, sample_logits
from attnlab.domains.music.model import MusicConfig
from attnlab.domains.music.tokens import NOTE_OFF, TIME_SHIFT, VOCAB_SIZE, tokens_to_notes


def naive_relative_attention(attn, x):
    """Huang et al. 2018 eq. before skewing: logits[i, j] = (q_i.k_j + q_i.E_r[j - i]) / sqrt(D)
    with the (L, L, D) tensor of gathered embeddings, causal; float64."""
    q, k, v, _ = attn.project(x)
    B, H, L, D = q.shape
    W = attn.pos.rel.shape[1]  # causal distances -(W-1)..0, clipped beyond
    i = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    dist = (j - i).clamp(-(W - 1), 0) + (W - 1)  # (L, L) rows of rel
    E = attn.pos.rel[:, dist]  # (H, L, L, D): the O(L^2 D) tensor the skewing avoids
    logits = q @ k.transpose(-1, -2) + torch.einsum("bhid,hijd->bhij", q, E)
    logits = logits / math.sqrt(D)
    logits = logits.masked_fill(j > i, float("-inf"))
    o = torch.softmax(logits, -1) @ v
    return attn.proj(o.transpose(1, 2).reshape(B, L, H * D))


@pytest.mark.parametrize("L", [5, 32, 50])
def test_skewed_relative_attention_equals_the_naive_reference(L):
    torch.manual_seed(L)
    model = create("music_test", rel_window=32).double().eval()
    attn = model.encoder.blocks[1].attn
    with torch.no_grad():
        attn.pos.rel.normal_()  # large embeddings: a wrong distance would show
        x = torch.randn(2, L, model.config.dim, dtype=torch.float64)
        torch.testing.assert_close(attn(x), naive_relative_attention(attn, x), rtol=1e-10,
                                   atol=1e-10)  # fmt: skip


class LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_relative_logits_need_o_of_l_times_s_memory_not_l_s_d():
    model = create("music_test", rel_window=64).eval()
    attn = model.encoder.blocks[0].attn
    B, H, L, D = 1, attn.num_heads, 64, attn.head_dim
    q = torch.randn(B, H, L, D)
    with torch.no_grad(), LargestTensor() as probe:
        attn.pos.attn_bias(q, L, 0, 1.0)
    assert probe.largest <= B * H * L * (L + 1)  # the padded logits, one extra column
    x = torch.randn(B, L, model.config.dim)
    with torch.no_grad(), LargestTensor() as naive:
        naive_relative_attention(attn, x)
    assert naive.largest >= H * L * L * D  # the reference does build the big tensor


@pytest.mark.parametrize("name", ["music_test", "music_absolute"])
def test_kv_cache_decoding_equals_the_full_forward(name):
    torch.manual_seed(0)
    kw = {} if name == "music_test" else dict(dim=32, depth=2, num_heads=2, max_len=128)
    model = create(name, **kw).double().eval()
    tokens = torch.randint(0, VOCAB_SIZE, (2, 40))
    with torch.no_grad():
        full = model(tokens)
        cache = model.make_cache()
        parts = [model(tokens[:, :17], cache=cache)]
        parts += [model(tokens[:, t : t + 1], cache=cache) for t in range(17, 40)]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-9, atol=1e-9)


def test_past_logits_ignore_the_future_beyond_the_relative_window():
    torch.manual_seed(1)
    model = create("music_test", rel_window=8).eval()
    a = torch.randint(0, VOCAB_SIZE, (1, 60))
    b = a.clone()
    b[0, 40:] = torch.randint(0, VOCAB_SIZE, (20,))
    with torch.no_grad():
        torch.testing.assert_close(model(a)[:, :40], model(b)[:, :40])


def test_generation_is_identical_with_and_without_the_cache():
    torch.manual_seed(2)
    model = create("music_test")
    prime = torch.randint(0, VOCAB_SIZE, (10,)).tolist()
    for seed in (0, 1):
        with_cache = generate(model, prime, 16, seed=seed, temperature=1.2, top_k=40)
        without = generate(model, prime, 16, seed=seed, temperature=1.2, top_k=40,
                           use_cache=False)  # fmt: skip
        assert with_cache.tokens == without.tokens
        assert with_cache.tokens[:10] == prime and len(with_cache.new) == 16
    assert generate(model, prime, 16, seed=0).tokens != generate(model, prime, 16, seed=1).tokens


def test_greedy_top_k_one_and_tiny_top_p_agree():
    torch.manual_seed(3)
    model = create("music_test")
    prime = [60, 64, 67]
    greedy = generate(model, prime, 12, temperature=0).tokens
    assert generate(model, prime, 12, top_k=1, seed=5).tokens == greedy
    assert generate(model, prime, 12, top_p=1e-6, seed=9).tokens == greedy
    with torch.no_grad():
        x = torch.tensor([prime])
        for _ in range(12):
            nxt = int(model(x)[0, -1].argmax())
            x = torch.cat([x, torch.tensor([[nxt]])], 1)
    assert x[0].tolist() == greedy


def test_top_k_and_top_p_only_draw_from_the_kept_ids():
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0)) * 3
    top5 = set(torch.topk(logits, 5).indices.tolist())
    p = torch.softmax(logits.double(), -1)
    order = p.argsort(descending=True)
    nucleus = set(order[: int((p[order].cumsum(0) < 0.7).sum()) + 1].tolist())
    g = torch.Generator().manual_seed(1)
    k_draws = {sample_logits(logits, g, top_k=5) for _ in range(400)}
    p_draws = {sample_logits(logits, g, top_p=0.7) for _ in range(400)}
    assert k_draws == top5
    assert p_draws == nucleus


def test_bad_generation_requests_are_refused():
    model = create("music_test")
    with pytest.raises(ValueError, match="prime is empty"):
        generate(model, [], 5)
    with pytest.raises(ValueError, match="exceed the model's max_len"):
        generate(model, [1] * 60, 10)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [1], 5, top_p=0)
    with pytest.raises(ValueError, match="prime tokens"):
        generate(model, [VOCAB_SIZE], 5)


def test_config_checks():
    with pytest.raises(ValueError, match="pos must be"):
        MusicConfig(pos="rope")
    with pytest.raises(ValueError, match="divisible"):
        MusicConfig(dim=30, num_heads=4)
    with pytest.raises(ValueError, match="longer than max_len"):
        create("music_test")(torch.zeros(1, 65, dtype=torch.long))


def test_shipped_models_match_their_cards_and_relative_beats_absolute():
    from attnlab.core.registry import list_weights, load, read_card
    from attnlab.domains.music import load_chorales
    from attnlab.domains.music.train import held_out_nll

    if not {"music/relative", "music/absolute"} <= set(list_weights()):
        pytest.skip("the music weights are not shipped in this checkout")
    test = load_chorales()["test"]
    nll = {}
    for kind in ("relative", "absolute"):
        card = read_card(f"music/{kind}")
        assert "by piece" in card["split"] and card["data"]["seq_len"] == 256
        got = held_out_nll(load(f"music/{kind}"), test, 256)["test_nll"]
        assert got == pytest.approx(card["metrics"]["test_nll"], abs=1e-3)
        nll[kind] = got
    assert nll["relative"] < nll["absolute"]


class _ShiftOnly(torch.nn.Module):
    """Proposes the same time shift at every step and never a note-off (a model that forgets
    to end its notes, the worst case)."""

    def __init__(self, shift: int):
        super().__init__()
        from types import SimpleNamespace

        self.w = torch.nn.Parameter(torch.zeros(()))
        self.config = SimpleNamespace(vocab_size=VOCAB_SIZE, max_len=4096)
        self.shift = shift

    def make_cache(self):
        return None

    def forward(self, tokens, cache=None):
        out = torch.full((*tokens.shape, VOCAB_SIZE), -30.0)
        out[..., TIME_SHIFT + self.shift - 1] = 30.0
        return out + self.w


@pytest.mark.parametrize("use_cache", [True, False])
def test_max_hold_ends_every_note_a_forgetful_model_would_hold(use_cache):
    rng = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()).item()))
    max_hold = int(torch.randint(8, 40, (), generator=rng))
    shift = int(torch.randint(1, 9, (), generator=rng))
    prime = [60, TIME_SHIFT + 9, 64, 67]  # 60 has sounded 10 steps when 64 and 67 start
    model = _ShiftOnly(shift)
    g = generate(model, prime, 40, seed=1, use_cache=use_cache, max_hold=max_hold)
    notes = tokens_to_notes(g.tokens)
    assert max(n.end - n.start for n in notes) <= max_hold
    assert sorted(g.tokens[i] - NOTE_OFF for i in g.forced) == [60, 64, 67]  # each ended once
    assert all(t == TIME_SHIFT + shift - 1 for i, t in enumerate(g.new, 4) if i not in g.forced)
    free = generate(model, prime, 40, seed=1, use_cache=use_cache, max_hold=None)
    assert free.forced == () and max(n.end - n.start for n in tokens_to_notes(free.tokens)) > 40
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_hold"):
            generate(model, prime, 4, max_hold=bad)
