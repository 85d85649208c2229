"""Audio domain: speech spoken offline by eSpeak NG with the true start of every word
(``synthesize``), a torchaudio front end, an AST-style keyword spotter and a Whisper-style
recogniser on core blocks, word timestamps from cross-attention with alignment heads found
automatically (``find_alignment_heads``), and a loader for Hugging Face Whisper checkpoints.
"""

from .align import AlignItem, AlignmentHeads, align_words, find_alignment_heads, word_start_errors
from .data import KEYWORDS, TEST_VARIANTS, log_mel, prepare, read_audio
from .infer import KeywordResult, Transcription, classify, recognize, transcribe
from .model import KeywordConfig, KeywordTransformer, SpeechConfig, SpeechSeq2Seq
from .pretrained import WhisperCheckpointError, load_whisper
from .speech import synthesize, voice_variants

__all__ = [
    "synthesize", "transcribe", "classify", "recognize", "voice_variants", "read_audio",
    "prepare", "log_mel", "KEYWORDS", "TEST_VARIANTS", "KeywordConfig", "KeywordTransformer",
    "SpeechConfig", "SpeechSeq2Seq", "load_whisper", "WhisperCheckpointError",
    "find_alignment_heads", "align_words", "word_start_errors", "AlignItem", "AlignmentHeads",
    "Transcription", "KeywordResult",
]  # fmt: skip
