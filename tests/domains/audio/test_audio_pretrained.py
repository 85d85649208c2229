"""The Whisper loader against transformers' own WhisperForConditionalGeneration (randomly
initialised, tiny, saved to a temporary folder): equal logits and cross-attention maps."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab.core.capture import record_attention
from attnlab.domains.audio.align import AlignItem, find_alignment_heads
from attnlab.domains.audio.pretrained import WhisperCheckpointError, load_whisper

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(
        vocab_size=96, num_mel_bins=16, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, d_model=32, max_source_positions=30, max_target_positions=20,
        decoder_start_token_id=1, eos_token_id=2, pad_token_id=0, bos_token_id=1,
        begin_suppress_tokens=None, suppress_tokens=None)  # fmt: skip
    hf = transformers.WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # random LayerNorm gains and biases, so a swapped norm shows
        for n, p in hf.named_parameters():
            if "layer_norm" in n:
                p.add_(torch.randn_like(p) * 0.2)
    folder = tmp_path_factory.mktemp("whisper")
    hf.save_pretrained(folder, safe_serialization=True)
    hf.set_attn_implementation("eager")
    return folder, hf


def test_logits_and_cross_attention_match_transformers(whisper_dir):
    folder, hf = whisper_dir
    ours = load_whisper(folder)
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 16, 60, generator=g)
    ids = torch.randint(3, 96, (2, 7), generator=g)
    ids[:, 0] = 1
    with torch.no_grad():
        ref = hf(input_features=feats, decoder_input_ids=ids, output_attentions=True)
        with record_attention(ours, layers="decoder.blocks.*.cross_attn") as maps:
            logits = ours(feats, ids)
    torch.testing.assert_close(logits, ref.logits, atol=2e-5, rtol=1e-4)
    for i in range(2):
        torch.testing.assert_close(
            maps[f"decoder.blocks.{i}.cross_attn"], ref.cross_attentions[i], atol=1e-6, rtol=1e-5
        )


def test_kv_cache_greedy_matches_full_forward(whisper_dir):
    folder, _ = whisper_dir
    ours = load_whisper(folder)
    feats = torch.randn(1, 16, 60, generator=torch.Generator().manual_seed(2))
    out = ours.greedy(feats, max_new=8)[0]
    seq = torch.tensor([[1, *out]])
    with torch.no_grad():
        full = ours(feats, seq)[0].argmax(-1)
    assert full[: len(out)].tolist() == out


def test_head_discovery_runs_on_a_loaded_whisper(whisper_dir):
    folder, _ = whisper_dir
    ours = load_whisper(folder)
    g = torch.Generator().manual_seed(3)
    items = [
        AlignItem(torch.randn(16, 50, generator=g), [[5, 6], [7], [8, 9]], [0.0, 0.1, 0.3])
        for _ in range(3)
    ]
    found = find_alignment_heads(ours, items, max_heads=3)
    assert found.single_mae_ms.shape == (2, 4)
    assert 1 <= len(found.heads) <= 3
    assert found.mae_ms <= found.single_mae_ms.min() + 1e-9


def test_bad_folders_are_refused(tmp_path):
    with pytest.raises(WhisperCheckpointError, match="not a folder"):
        load_whisper(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(WhisperCheckpointError, match="no Whisper config"):
        load_whisper(tmp_path)
