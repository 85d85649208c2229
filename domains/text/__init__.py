"""Text domain: pretrained BERT-family sentence encoders (all-MiniLM-L6-v2 by default) and
GPT-2-family causal language models, both built from core blocks and loaded from Hugging
Face-format folders (config.json, model.safetensors, tokenizer.json) with no download; heads
named by what they measurably do (``score_heads``); small causal models trained on induction,
agreement and character data (``CausalLM``, ``generate``).
"""

from .data import (
    AgreementTask,
    InductionTask,
    Vocab,
    agreement_task,
    char_corpus,
    induction_task,
    read_text_file,
)
from .generate import Generation, generate
from .gpt2 import GPT2LM, GPT2Config, load_causal_lm
from .heads import BEHAVIOURS, HeadScores, score_heads
from .hf import CheckpointError, load_tokenizer
from .model import CausalLM, TextConfig
from .pretrained import (
    BertConfig,
    BertEncoder,
    SentenceEncoder,
    TextAttention,
    Tokenized,
    load_bert,
    load_encoder,
    minilm_path,
)

__all__ = [
    "load_encoder",
    "load_causal_lm",
    "load_bert",
    "load_tokenizer",
    "minilm_path",
    "SentenceEncoder",
    "BertEncoder",
    "BertConfig",
    "GPT2LM",
    "GPT2Config",
    "Tokenized",
    "TextAttention",
    "CheckpointError",
    "BEHAVIOURS",
    "HeadScores",
    "score_heads",
    "CausalLM",
    "TextConfig",
    "generate",
    "Generation",
    "Vocab",
    "induction_task",
    "InductionTask",
    "agreement_task",
    "AgreementTask",
    "char_corpus",
    "read_text_file",
]
