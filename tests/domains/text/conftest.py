"""Shared fixtures of the text-domain tests: the shipped MiniLM (ours and transformers'), and
small randomly initialised Hugging Face BERT / GPT-2 folders written with save_pretrained.
Everything is offline: nothing is fetched from the Hub."""

import os
import shutil

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from attnlab.domains.text import load_encoder, minilm_path  # noqa: E402


@pytest.fixture(scope="session")
def minilm_dir():
    return minilm_path()


@pytest.fixture(scope="session")
def minilm(minilm_dir):
    return load_encoder(minilm_dir)


@pytest.fixture(scope="session")
def hf_minilm(minilm_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.BertModel.from_pretrained(
        str(minilm_dir), attn_implementation="eager"
    ).eval()


@pytest.fixture
def tiny_bert_dir(tmp_path, minilm_dir, request):
    """A random BERT (dim 64, 2 layers, 4 heads) saved by transformers, with MiniLM's
    tokenizer; ``request.param`` (if any) is its hidden_act."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=128,
        type_vocab_size=2,
        hidden_act=getattr(request, "param", "gelu"),
        attn_implementation="eager",
    )
    model = transformers.BertModel(cfg).eval()
    _randomize_norms(model)
    model.save_pretrained(tmp_path)
    shutil.copy(minilm_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    return tmp_path, model


@pytest.fixture
def tiny_gpt2_dir(tmp_path, request):
    """A random GPT-2 (dim 64, 2 layers, 4 heads) saved by transformers; ``request.param``
    (if any) is tie_word_embeddings."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=101,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=48,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=getattr(request, "param", True),
        attn_implementation="eager",
    )
    model = transformers.GPT2LMHeadModel(cfg).eval()
    _randomize_norms(model)
    model.save_pretrained(tmp_path)
    return tmp_path, model


@torch.no_grad()
def _randomize_norms(model):
    """Freshly initialised LayerNorms and biases are 1 / 0: randomise them so that a swapped
    weight and bias (or a dropped bias) cannot pass."""
    for name, p in model.named_parameters():
        if p.dim() == 1:
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
