"""A small GPT-style causal language model for the text domain, and its registered builders.

The model follows nanoGPT's ``model.py`` (Radford et al. 2019, GPT-2: token embedding,
absolute learned positions, a causal pre-norm stack, a final norm and a head tied to the
embedding) built on :class:`attnlab.core.blocks.TransformerEncoder`, with two options from the
interpretability literature: positions inside attention (``pos="rope"``, Su et al. 2021;
``"alibi"``, Press et al. 2022) and attention-only blocks (``mlp_ratio=0``; Elhage et al. 2021,
"A Mathematical Framework for Transformer Circuits"; Olsson et al. 2022).

Names are API (state-dict keys and capture names): ``tok_embed``, ``pos_embed`` (learned
positions only), ``encoder.blocks.{i}.attn``, ``encoder.norm``, ``head`` (untied only).
``forward(tokens, cache=None)`` returns logits; ``loss(batch)`` is the trainer's path. The
config carries the vocabulary (``tokenizer`` + ``vocab``) so shipped models encode and decode.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.core.blocks import TransformerEncoder
from attnlab.core.config_checks import check_sizes
from attnlab.core.kv_cache import KVCache
from attnlab.core.lm import check_token_ids, init_gpt2_weights, token_loss
from attnlab.core.positional import LearnedPositionalEmbedding
from attnlab.core.registry import register

from .data import Vocab

__all__ = ["TextConfig", "CausalLM", "POSITIONS", "text_test", "text_induction",
           "text_agreement", "text_chars"]  # fmt: skip

#: ``pos`` values: absolute learned embeddings, or a scheme acting inside attention
POSITIONS = ("learned", "rope", "alibi", "relative")
TOKENIZERS = ("ids", "chars", "words")


@dataclass(frozen=True)
class TextConfig:
    """Hyperparameters of :class:`CausalLM` (timm's vocabulary).

    Attributes:
        vocab_size: number of token ids.
        dim: model width.
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP width as a multiple of ``dim``; 0 = attention-only blocks.
        qkv_bias: bias in the query/key/value projection.
        dropout: dropout on embeddings, attention output and MLP.
        max_len: longest sequence (prompt plus generated tokens).
        pos: ``"learned"`` (absolute, added to the embeddings), or inside attention ``"rope"``,
            ``"alibi"`` or ``"relative"`` (a learned bias per head and distance; Shaw et al. 2018).
        tie_weights: the output head reuses the token embedding matrix.
        tokenizer: ``"ids"`` (bare ids), ``"chars"`` or ``"words"`` (space-separated).
        vocab: token strings by id for ``"chars"``/``"words"`` (a list, so that the JSON card
            round-trips it unchanged).
    """

    vocab_size: int = 64
    dim: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dropout: float = 0.0
    max_len: int = 128
    pos: str = "learned"
    tie_weights: bool = True
    tokenizer: str = "ids"
    vocab: list[str] | None = None

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def __post_init__(self) -> None:
        check_sizes(self, "vocab_size", "dim", "depth", "num_heads", "max_len")
        if self.mlp_ratio < 0:
            raise ValueError(f"mlp_ratio must be >= 0 (0 = attention-only), got {self.mlp_ratio}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pos not in POSITIONS:
            raise ValueError(f"pos must be one of {POSITIONS}, got {self.pos!r}")
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {self.tokenizer!r}")
        if (self.tokenizer == "ids") != (self.vocab is None):
            raise ValueError(
                "vocab is required for tokenizer 'chars'/'words' and must be None for 'ids'"
            )
        if self.vocab is not None and len(self.vocab) != self.vocab_size:
            raise ValueError(f"vocab has {len(self.vocab)} tokens but vocab_size={self.vocab_size}")


class CausalLM(nn.Module):
    """Decoder-only language model: ``forward(tokens (B, L), cache=None) -> logits (B, L, V)``.

    Args:
        config: the hyperparameters.
    """

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.config = c = config
        self.tok_embed = nn.Embedding(c.vocab_size, c.dim)
        learned = c.pos == "learned"
        self.pos_embed = LearnedPositionalEmbedding(c.dim, c.max_len) if learned else None
        self.drop = nn.Dropout(c.dropout)
        self.encoder = TransformerEncoder(
            c.dim, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias,
            dropout=c.dropout, causal=True, max_len=c.max_len,
            pos=None if learned else c.pos)  # fmt: skip
        self.head = None if c.tie_weights else nn.Linear(c.dim, c.vocab_size, bias=False)
        self.apply(init_gpt2_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by depth
            if name.endswith(("attn.proj.weight", "mlp.fc2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * c.depth))

    @property
    def vocab(self) -> Vocab:
        """The tokenizer of a ``"chars"``/``"words"`` model (``ValueError`` for bare ids)."""
        c = self.config
        if c.vocab is None:
            raise ValueError("this model has no vocabulary (tokenizer='ids'): pass token ids")
        return Vocab(c.vocab, c.tokenizer)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (chars or words)."""
        return self.vocab.encode(text)

    def decode(self, ids: Tensor | list[int]) -> str:
        """Text of token ids."""
        return self.vocab.decode(ids)

    def make_cache(self) -> list[KVCache]:
        """An empty KV cache, one per block, for :meth:`forward`'s ``cache``."""
        return self.encoder.make_cache()

    def check_tokens(self, tokens: Tensor, offset: int = 0) -> None:
        """``ValueError`` unless ``tokens`` is a (B, L) integer tensor of ids in range that fits
        in ``max_len`` after ``offset`` cached positions."""
        check_token_ids(tokens, self.config.vocab_size, self.config.max_len, offset)

    def forward(self, tokens: Tensor, cache: list[KVCache] | None = None) -> Tensor:
        """Next-token logits (B, L, vocab_size).

        Args:
            tokens: ids (B, L); with ``cache``, only the new positions.
            cache: from :meth:`make_cache`; filled with the keys/values of ``tokens``.
        """
        offset = cache[0].length if cache else 0
        self.check_tokens(tokens, offset)
        x = self.tok_embed(tokens)  # (B, L, dim)
        if self.pos_embed is not None:
            x = self.pos_embed(x, offset)
        x = self.encoder(self.drop(x), cache=cache)
        return self.head(x) if self.head is not None else F.linear(x, self.tok_embed.weight)

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy over scored positions (targets != IGNORE) and their accuracy."""
        return token_loss(self(batch["tokens"]), batch["targets"])


def _build(defaults: TextConfig, overrides: dict[str, Any]) -> CausalLM:
    return CausalLM(dataclasses.replace(defaults, **overrides))


@register
def text_test(**overrides: Any) -> CausalLM:
    """Smallest model for tests: dim 32, depth 2, 2 heads, 16 token ids."""
    return _build(TextConfig(vocab_size=16, dim=32, depth=2, num_heads=2, max_len=64), overrides)


@register
def text_induction(**overrides: Any) -> CausalLM:
    """Two attention-only layers (Olsson et al. 2022), 16 heads with ALiBi.

    ALiBi's steep recency slopes give the first layer previous-token heads for free, and
    without position embeddings in the residual stream no positional shortcut competes with
    the induction mechanism; learned or rotary positions plateaued on the shortcuts instead.
    """
    return _build(TextConfig(vocab_size=64, dim=128, depth=2, num_heads=16, mlp_ratio=0.0,
                             max_len=64, pos="alibi"), overrides)  # fmt: skip


@register
def text_agreement(**overrides: Any) -> CausalLM:
    """Word-level model for subject-verb agreement (Linzen et al. 2016)."""
    return _build(TextConfig(dim=64, depth=2, num_heads=4, max_len=32), overrides)


@register
def text_chars(**overrides: Any) -> CausalLM:
    """Character-level model (Karpathy's char-rnn task, here a small transformer), RoPE."""
    return _build(TextConfig(dim=128, depth=4, num_heads=4, max_len=128, pos="rope"),
                  overrides)  # fmt: skip
