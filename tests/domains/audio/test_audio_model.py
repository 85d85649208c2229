"""Audio models: patch tokens sit where the layout says, the KV cache decodes what a full
forward predicts, batch items are independent, weights round-trip through the registry."""

from __future__ import annotations

import pytest
import torch

from attnlab.core.registry import create, load, save_weights
from attnlab.domains.audio.model import KeywordConfig, SpeechConfig
from attnlab.domains.audio.train import char_error_rate, collate_speech


def test_keyword_tokens_follow_the_spectrogram_layout():
    torch.manual_seed(0)
    model = create("audio_test").eval()
    layout = model.layout()
    c = model.config
    assert layout.length == 1 + c.num_steps * c.num_bands
    spec = torch.randn(1, c.n_mels, c.frames)
    seen = []
    model.patch.register_forward_hook(lambda m, i, o: seen.append(o))
    for band, frame in [(0, 0), (3, 37), (4, 95)]:
        seen.clear()
        bumped = spec.clone()
        bumped[0, band * c.patch_size[0] + 1, frame] += 10.0
        model(spec)
        model(bumped)
        a, b = (o.permute(0, 3, 2, 1).flatten(1, 2) for o in seen)  # tokens, time-major
        delta = (a - b).abs().sum(-1)[0]
        changed = torch.nonzero(delta > 0).flatten().tolist()
        assert 1 <= len(changed) <= 4  # the conv stem's rim reaches the neighbouring cells
        info = layout.describe(int(delta.argmax()) + 1)
        f0, f1 = info["frames"]
        lo, hi = info["bins"]
        assert f0 <= frame < f1 and lo <= band * c.patch_size[0] + 1 < hi


def test_keyword_batch_items_are_independent():
    torch.manual_seed(1)
    model = create("audio_test").eval()
    x = torch.randn(3, 80, 101)
    with torch.no_grad():
        full = model(x)
        x2 = x.clone()
        x2[1] = torch.randn(80, 101)
        other = model(x2)
    torch.testing.assert_close(full[[0, 2]], other[[0, 2]])
    assert not torch.allclose(full[1], other[1])


def test_speech_cache_decoding_matches_a_full_forward():
    torch.manual_seed(2)
    model = create("audio_asr_test").eval()
    spec = torch.randn(2, 80, 120)
    ids = model.greedy(spec, max_new=12)
    for b in range(2):
        seq = torch.tensor([[model.config.sot_id, *ids[b]]])
        with torch.no_grad():
            full = model(spec[b : b + 1], seq)[0].argmax(-1)
        assert full[: len(ids[b])].tolist() == ids[b]


def test_speech_front_end_halves_time_and_is_local():
    # two 3-tap convs (the second with stride 2): frame t reaches positions (t - 2) // 2 ..
    torch.manual_seed(3)
    model = create("audio_asr_test").eval()
    x = torch.randn(1, 80, 51)
    front = lambda s: model.conv2(torch.nn.functional.gelu(model.conv1(s)))  # noqa: E731
    y = front(x)
    assert y.shape[-1] == 26 and model.encode(x).shape == (1, 26, model.config.dim)
    x2 = x.clone()
    x2[..., 40:] = 0
    y2 = front(x2)
    torch.testing.assert_close(y[..., :19], y2[..., :19])
    assert not torch.allclose(y[..., 20:], y2[..., 20:])
    assert model.config.seconds_per_position == pytest.approx(0.02)


def test_weights_round_trip(tmp_path):
    torch.manual_seed(4)
    model = create("audio_asr_test", alignment_heads=[[1, 0]])
    save_weights(model, "audio/t", {"metrics": {}}, root=tmp_path)
    back = load("audio/t", root=tmp_path)
    assert back.config.alignment_heads == [[1, 0]]
    for (k, v), (k2, v2) in zip(model.state_dict().items(), back.state_dict().items(),
                                strict=True):  # fmt: skip
        assert k == k2 and torch.equal(v, v2)
    kws = create("audio_test")
    save_weights(kws, "audio/k", {}, root=tmp_path)
    assert load("audio/k", root=tmp_path).config == kws.config


def test_collate_and_cer():
    model = create("audio_asr_test")
    items = [
        {"spec": torch.zeros(80, 30), "text": "go", "starts": []},
        {"spec": torch.ones(80, 50), "text": "three one", "starts": []},
    ]
    batch = collate_speech(model, items)
    assert batch["spec"].shape == (2, 80, 50)
    assert model.decode_text(batch["tokens"][1, 1:]) == "three one"
    assert batch["targets"][0].tolist()[:3] == [*model.encode_text("go"), model.config.eot_id]
    assert char_error_rate(["go", "three won"], ["go", "three one"]) == pytest.approx(2 / 11)


@pytest.mark.parametrize("cls,kw,match", [
    (KeywordConfig, {"patch_size": [7, 5]}, "even"), (KeywordConfig, {"labels": ["a"]}, "two"),
    (SpeechConfig, {"alignment_heads": [[5, 0]]}, "outside"),
    (SpeechConfig, {"dim": 30}, "divisible")])  # fmt: skip
def test_configs_refuse_nonsense(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls(**kw)
