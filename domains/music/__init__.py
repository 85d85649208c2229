"""Music domain: Bach chorales (music21's corpus) or any MIDI/MusicXML files as Music
Transformer event tokens (Huang et al. 2018), a decoder with skewed relative attention and its
absolute-position baseline, KV-cache generation, attention read per note, and a small additive
synthesiser.
"""

from .analysis import NoteAttention, note_attention
from .data import load_chorales, load_folder
from .generate import Generation, generate
from .model import MusicConfig, MusicTransformer
from .synth import render, render_wav
from .tokens import (
    Note,
    Piece,
    decode,
    encode,
    notes_to_tokens,
    read_piece,
    token_name,
    token_names,
    tokens_to_notes,
)

__all__ = ["encode", "decode", "load_chorales", "load_folder", "read_piece", "Note", "Piece",
           "token_name", "token_names", "notes_to_tokens", "tokens_to_notes", "generate",
           "Generation", "MusicConfig", "MusicTransformer", "render", "render_wav",
           "note_attention", "NoteAttention"]  # fmt: skip
