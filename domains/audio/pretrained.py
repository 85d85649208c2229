"""Load Hugging Face-format Whisper checkpoints (a folder with ``config.json`` and
``model.safetensors``, as ``WhisperForConditionalGeneration.save_pretrained`` writes) onto
:class:`~.model.SpeechSeq2Seq`, so that their cross-attention, word alignment and alignment
heads (:mod:`.align`) can be read with the same tools as the shipped model. Nothing is
downloaded: the folder must be on disk.

Key mapping (Hugging Face -> core): ``encoder.layers.{i}.self_attn.{q,k,v}_proj`` -> the fused
``encoder.blocks.{i}.attn.qkv`` (Whisper's key projection has no bias: ``qkv_bias=(True,
False, True)``), ``out_proj`` -> ``proj``, ``self_attn_layer_norm`` -> ``norm1``,
``final_layer_norm`` -> ``norm2`` (``norm3`` in the decoder), ``encoder_attn`` -> ``cross_attn``
(``q`` and fused ``kv``), ``encoder_attn_layer_norm`` -> ``norm2``, ``layer_norm`` -> ``norm``,
``embed_positions`` -> ``enc_pos`` / ``dec_pos``, ``embed_tokens`` -> ``tok_embed`` (the output
projection is tied to it, as in Whisper).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .model import SpeechConfig, SpeechSeq2Seq

__all__ = ["load_whisper", "whisper_config", "WhisperCheckpointError"]


class WhisperCheckpointError(ValueError):
    """A folder that is not a readable Whisper checkpoint (the message says what is wrong)."""


def _read(folder: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not folder.is_dir():
        raise WhisperCheckpointError(f"{folder} is not a folder with config.json and "
                                     "model.safetensors")  # fmt: skip
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WhisperCheckpointError(f"{folder}/config.json is unreadable: {err}") from None
    if not isinstance(cfg, dict) or cfg.get("model_type") != "whisper":
        raise WhisperCheckpointError(
            f"{folder} holds no Whisper config (model_type "
            f"{cfg.get('model_type') if isinstance(cfg, dict) else None!r})"
        )
    try:
        state = load_file(str(folder / "model.safetensors"))
    except (OSError, SafetensorError) as err:
        raise WhisperCheckpointError(f"{folder}/model.safetensors is unreadable: {err}") from None
    return cfg, state


def whisper_config(cfg: dict[str, Any]) -> SpeechConfig:
    """The :class:`~.model.SpeechConfig` of a Hugging Face Whisper ``config.json``."""
    dim = int(cfg["d_model"])
    heads = {int(cfg["encoder_attention_heads"]), int(cfg["decoder_attention_heads"])}
    ffn = {int(cfg["encoder_ffn_dim"]), int(cfg["decoder_ffn_dim"])}
    if len(heads) != 1 or len(ffn) != 1:
        raise WhisperCheckpointError("encoder and decoder must share head count and MLP width")
    act = cfg.get("activation_function", "gelu")
    if act != "gelu":
        raise WhisperCheckpointError(f"activation {act!r} is not supported (Whisper uses gelu)")
    if cfg.get("scale_embedding"):
        raise WhisperCheckpointError("scale_embedding=True is not supported")
    return SpeechConfig(
        n_mels=int(cfg["num_mel_bins"]), dim=dim, enc_depth=int(cfg["encoder_layers"]),
        dec_depth=int(cfg["decoder_layers"]), num_heads=heads.pop(),
        mlp_ratio=ffn.pop() / dim, max_frames=2 * int(cfg["max_source_positions"]),
        max_len=int(cfg["max_target_positions"]), vocab_size=int(cfg["vocab_size"]),
        vocab=None, sot_id=int(cfg.get("decoder_start_token_id", 50257)),
        eot_id=int(cfg.get("eos_token_id", 50256)))  # fmt: skip


def _take(state: dict[str, Tensor], key: str) -> Tensor:
    for k in (key, f"model.{key}"):
        if k in state:
            return state.pop(k)
    raise WhisperCheckpointError(f"model.safetensors lacks {key!r}")


def _attention(mod, state: dict[str, Tensor], base: str) -> None:
    mod.load_qkv(_take(state, f"{base}.q_proj.weight"), _take(state, f"{base}.k_proj.weight"),
                 _take(state, f"{base}.v_proj.weight"), _take(state, f"{base}.q_proj.bias"),
                 None, _take(state, f"{base}.v_proj.bias"))  # fmt: skip
    mod.proj.weight.copy_(_take(state, f"{base}.out_proj.weight"))
    mod.proj.bias.copy_(_take(state, f"{base}.out_proj.bias"))


def _linear(mod, state: dict[str, Tensor], base: str) -> None:
    w = _take(state, f"{base}.weight")
    if tuple(w.shape) != tuple(mod.weight.shape):
        raise WhisperCheckpointError(f"{base}.weight has shape {tuple(w.shape)}, config says "
                                     f"{tuple(mod.weight.shape)}")  # fmt: skip
    mod.weight.copy_(w)
    mod.bias.copy_(_take(state, f"{base}.bias"))


@torch.no_grad()
def load_whisper(path: str | Path) -> SpeechSeq2Seq:
    """A Whisper checkpoint folder as a :class:`~.model.SpeechSeq2Seq` (eval mode, float32).

    Raises:
        WhisperCheckpointError: no folder, no Whisper config, unreadable or mismatched weights.
    """
    cfg, state = _read(Path(path))
    model = SpeechSeq2Seq(whisper_config(cfg))
    state = {k: v.float() for k, v in state.items()}
    for name in ("conv1", "conv2"):
        _linear(getattr(model, name), state, f"encoder.{name}")
    pos = _take(state, "encoder.embed_positions.weight")
    model.enc_pos.copy_(pos[: model.enc_pos.shape[0]])
    for i, blk in enumerate(model.encoder.blocks):
        b = f"encoder.layers.{i}"
        _attention(blk.attn, state, f"{b}.self_attn")
        _linear(blk.norm1, state, f"{b}.self_attn_layer_norm")
        _linear(blk.norm2, state, f"{b}.final_layer_norm")
        _linear(blk.mlp.fc1, state, f"{b}.fc1")
        _linear(blk.mlp.fc2, state, f"{b}.fc2")
    _linear(model.encoder.norm, state, "encoder.layer_norm")
    model.tok_embed.weight.copy_(_take(state, "decoder.embed_tokens.weight"))
    model.dec_pos.copy_(_take(state, "decoder.embed_positions.weight"))
    for i, blk in enumerate(model.decoder.blocks):
        b = f"decoder.layers.{i}"
        _attention(blk.attn, state, f"{b}.self_attn")
        _attention(blk.cross_attn, state, f"{b}.encoder_attn")
        _linear(blk.norm1, state, f"{b}.self_attn_layer_norm")
        _linear(blk.norm2, state, f"{b}.encoder_attn_layer_norm")
        _linear(blk.norm3, state, f"{b}.final_layer_norm")
        _linear(blk.mlp.fc1, state, f"{b}.fc1")
        _linear(blk.mlp.fc2, state, f"{b}.fc2")
    _linear(model.decoder.norm, state, "decoder.layer_norm")
    state.pop("proj_out.weight", None)  # tied to the token embedding
    if state:
        left = ", ".join(sorted(state)[:8])
        raise WhisperCheckpointError(f"model.safetensors has weights this loader does not "
                                     f"place: {left}")  # fmt: skip
    return model.eval()
