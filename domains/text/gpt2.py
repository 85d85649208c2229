"""GPT-2-family causal language models built from core blocks, loaded from Hugging Face folders.

``GPT2LM`` is Radford et al. 2019 ("Language Models are Unsupervised Multitask Learners") as
Hugging Face's ``GPT2LMHeadModel`` and nanoGPT's ``model.py`` lay it out: token + learned
position embeddings, a pre-norm causal ``TransformerEncoder`` with GELU-tanh ("gelu_new"), a
final ``ln_f`` and an output head tied to the token embedding. Incremental decoding uses the
core's KV cache (``make_cache()``).

GPT-2 stores its projections as ``Conv1D`` with weight (in, out), the transpose of
``nn.Linear``'s; the fused ``c_attn`` ([q | k | v] along ``out``) goes through ``load_qkv``::

    wte, wpe                          -> tok_embed, pos_embed       (``transformer.`` optional)
    h.{i}.ln_1 / ln_2                 -> encoder.blocks.{i}.norm1 / norm2
    h.{i}.attn.c_attn / attn.c_proj   -> encoder.blocks.{i}.attn.qkv (load_qkv) / attn.proj
    h.{i}.mlp.c_fc / mlp.c_proj       -> encoder.blocks.{i}.mlp.fc1 / mlp.fc2
    ln_f                              -> encoder.norm
    lm_head                           -> tied to tok_embed (or lm_head when untied)
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.core.blocks import TransformerEncoder
from attnlab.core.kv_cache import KVCache
from attnlab.core.positional import LearnedPositionalEmbedding

from .hf import (
    CheckpointError,
    StateLoader,
    activation,
    check_model_type,
    config_value,
    read_config,
    read_safetensors,
    strip_prefix,
    widths,
)

__all__ = ["GPT2Config", "GPT2LM", "load_causal_lm"]

# causal-mask buffers older transformers saved with the weights; they are not weights
_MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)$")


@dataclass(frozen=True)
class GPT2Config:
    """A GPT-2's shape (Hugging Face's ``GPT2Config`` in the house vocabulary).

    Args:
        max_len: position table size (``n_positions``). mlp_ratio: ``n_inner / dim``.
        act: MLP activation (a core name). norm_eps: LayerNorm epsilon. dropout: training only.
        tie_embeddings: the output head is the token embedding.
    """

    vocab_size: int = 50257
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    max_len: int = 1024
    act: str = "gelu_tanh"
    norm_eps: float = 1e-5
    dropout: float = 0.0
    tie_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], **overrides) -> GPT2Config:
        """From a Hugging Face ``config.json`` dict (``model_type`` 'gpt2')."""
        check_model_type(cfg, "gpt2", "GPT2LM")
        if not cfg.get("scale_attn_weights", True) or cfg.get("scale_attn_by_inverse_layer_idx"):
            raise CheckpointError(
                "only the standard 1/sqrt(head_dim) attention scale is "
                "supported (scale_attn_weights=True, "
                "scale_attn_by_inverse_layer_idx=False)"
            )
        if cfg.get("add_cross_attention"):
            raise CheckpointError("GPT-2 with cross-attention is not supported")
        dim, heads, ratio = widths(cfg, "n_embd", "n_head", "n_inner")
        out = cls(
            vocab_size=config_value(cfg, "vocab_size"),
            dim=dim,
            depth=config_value(cfg, "n_layer"),
            num_heads=heads,
            mlp_ratio=ratio,
            max_len=config_value(cfg, "n_positions", default=1024),
            act=activation(config_value(cfg, "activation_function", str, "gelu_new")),
            norm_eps=float(config_value(cfg, "layer_norm_epsilon", (int, float), 1e-5)),
            dropout=float(config_value(cfg, "resid_pdrop", (int, float), 0.0)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        )
        return dataclasses.replace(out, **overrides)


class GPT2LM(nn.Module):
    """GPT-2 from core modules: (B, L) token ids -> logits (B, L, vocab_size).

    Submodules: ``tok_embed``, ``pos_embed``, ``encoder`` (pre-norm causal
    ``TransformerEncoder``, attention at ``encoder.blocks.{i}.attn``, final norm
    ``encoder.norm``), ``lm_head`` (only when the head is not tied).
    """

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.cfg = cfg
        self.tok_embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_embed = LearnedPositionalEmbedding(cfg.dim, cfg.max_len)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = TransformerEncoder(
            cfg.dim,
            cfg.depth,
            cfg.num_heads,
            norm="pre",
            causal=True,
            final_norm=True,
            mlp_ratio=cfg.mlp_ratio,
            act=cfg.act,
            norm_eps=cfg.norm_eps,
            dropout=cfg.dropout,
            max_len=cfg.max_len,
        )
        self.lm_head = (
            None if cfg.tie_embeddings else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        )

    def make_cache(self) -> list[KVCache]:
        """One empty KV cache per block, for ``forward(..., cache=...)``."""
        return self.encoder.make_cache()

    def forward(self, input_ids: Tensor, *, cache: list[KVCache] | None = None) -> Tensor:
        """Logits (B, L, vocab_size). With ``cache``, ``input_ids`` are the new positions
        only; they are placed after the cached ones."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, L), got {tuple(input_ids.shape)}")
        offset = 0 if cache is None else cache[0].length
        x = self.drop(self.pos_embed(self.tok_embed(input_ids), offset))
        h = self.encoder(x, cache=cache)
        weight = self.tok_embed.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(h, weight)

    @torch.no_grad()
    def generate(self, input_ids: Tensor, max_new_tokens: int) -> Tensor:
        """Greedy decoding with the KV cache: (B, L) -> (B, L + max_new_tokens)."""
        if input_ids.shape[1] + max_new_tokens > self.cfg.max_len:
            raise ValueError(
                f"{input_ids.shape[1]} + {max_new_tokens} tokens exceed the "
                f"model's max_len {self.cfg.max_len}"
            )
        cache, out, step = self.make_cache(), input_ids, input_ids
        for _ in range(max_new_tokens):
            step = self(step, cache=cache)[:, -1:].argmax(-1)  # (B, 1)
            out = torch.cat([out, step], dim=1)
        return out


def load_causal_lm(path: str | Path, **overrides) -> GPT2LM:
    """A GPT-2 from a Hugging Face folder (config.json + model.safetensors, keys with or
    without ``transformer.``), in eval mode. Every checkpoint tensor must be used and every
    model tensor filled; a stored ``lm_head.weight`` must equal ``wte`` when tied.

    Raises:
        FileNotFoundError: no folder, config.json or model.safetensors.
        CheckpointError: the checkpoint does not fit the config (the keys are listed).
    """
    cfg = GPT2Config.from_hf(read_config(path), **overrides)
    state = strip_prefix(read_safetensors(path), "transformer.", "wte.weight")
    model = GPT2LM(cfg)
    ld = StateLoader(
        model,
        state,
        f"{Path(path)}/model.safetensors",
        ignore=lambda k: bool(_MASK_BUFFER.fullmatch(k)),
    )
    ld.copy("tok_embed.weight", "wte.weight")
    ld.copy("pos_embed.weight", "wpe.weight")
    if cfg.tie_embeddings:
        if ld.has("lm_head.weight"):
            if not torch.equal(ld.take("lm_head.weight"), state["wte.weight"]):
                ld.errors.append(
                    "lm_head.weight differs from wte.weight but the config ties "
                    "them (tie_word_embeddings)"
                )
    else:
        ld.copy("lm_head.weight", "lm_head.weight")
    for i, blk in enumerate(model.encoder.blocks):
        src, dst = f"h.{i}", f"encoder.blocks.{i}"
        key = f"{src}.attn.c_attn"
        if ld.check_shape(f"{key}.weight", (cfg.dim, 3 * cfg.dim)) and ld.check_shape(
            f"{key}.bias", (3 * cfg.dim,)
        ):
            w, b = ld.take(f"{key}.weight"), ld.take(f"{key}.bias")
            # Conv1D (in, 3 * dim) -> three nn.Linear weights (dim, in)
            blk.attn.load_qkv(*w.t().chunk(3, dim=0), *b.chunk(3))
            ld.filled(f"{dst}.attn.qkv.weight", f"{dst}.attn.qkv.bias")
        for ours, theirs, conv in (
            ("norm1", "ln_1", False),
            ("norm2", "ln_2", False),
            ("attn.proj", "attn.c_proj", True),
            ("mlp.fc1", "mlp.c_fc", True),
            ("mlp.fc2", "mlp.c_proj", True),
        ):
            ld.copy(f"{dst}.{ours}.weight", f"{src}.{theirs}.weight", Tensor.t if conv else None)
            ld.copy(f"{dst}.{ours}.bias", f"{src}.{theirs}.bias")
    for p in ("weight", "bias"):
        ld.copy(f"encoder.norm.{p}", f"ln_f.{p}")
    ld.finish()
    return model.eval()
