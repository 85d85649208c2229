"""Offline speech from eSpeak NG (the ``espeakng-loader`` wheel's shared library, via ctypes),
with the true start time of every word.

eSpeak NG reports a *word event* for each word it speaks, carrying the sample index at which
the word's phonemes begin (``espeak_EVENT.sample``; ``audio_position`` is the same in ms).
A pause before a sentence falls before its first word's event: the word starts where its own
sound (or a stop's closure) begins. The library is one global C state, so every call holds
:data:`_LOCK`; the synthesiser runs in synchronous mode (``AUDIO_OUTPUT_SYNCHRONOUS``), its
callback collecting samples and events.

eSpeak NG's noise source is not seeded: the same request twice gives the same length, word
starts and spectrum, not the same samples; the corpus cache (:mod:`.data`) makes runs
reproducible.

Voices are ``LANGUAGE+VARIANT`` (``"en+f3"``, ``"en-us+klatt2"``); the variants are the files
of the package's ``espeak-ng-data/voices/!v`` folder (:func:`voice_variants`).
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import threading

import numpy as np
import torch

__all__ = ["synthesize", "voice_variants", "voice_name", "SAMPLE_RATE", "RATE_RANGE",
           "PITCH_RANGE", "MAX_CHARS"]  # fmt: skip

SAMPLE_RATE = 22050  #: what eSpeak NG produces
RATE_RANGE = (80, 450)  #: words per minute eSpeak NG accepts
PITCH_RANGE = (0, 100)  #: eSpeak NG's base pitch scale (50 = the voice's default)
MAX_CHARS = 500  #: longest text :func:`synthesize` speaks
_LOCK = threading.Lock()

# espeak_EVENT_TYPE and espeak_PARAMETER values (speak_lib.h)
_EV_END_OF_LIST, _EV_WORD = 0, 1
_RATE, _VOLUME, _PITCH = 1, 2, 3
_SYNCHRONOUS, _DONT_EXIT = 2, 0x8000
_CHARS_UTF8, _POS_CHARACTER = 1, 1


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_int64)]  # fmt: skip


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class _Engine:
    """The initialised library and what its callback collects for the current utterance."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.data_path = espeakng_loader.get_data_path()
        rate = self.lib.espeak_Initialize(_SYNCHRONOUS, 0, self.data_path.encode(), _DONT_EXIT)
        if rate != SAMPLE_RATE:
            raise RuntimeError(f"eSpeak NG failed to initialise (returned {rate})")
        self.chunks: list[np.ndarray] = []
        self.words: list[tuple[int, int, int]] = []  # (text_position, length, sample)
        self._cb = _CALLBACK(self._collect)  # kept referenced: C holds the pointer
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                          ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                          ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip

    def _collect(self, wav, n: int, events) -> int:
        if wav and n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != _EV_END_OF_LIST:
            ev = events[i]
            if ev.type == _EV_WORD:
                self.words.append((ev.text_position, ev.length, ev.sample))
            i += 1
        return 0


@functools.cache
def _engine() -> _Engine:
    return _Engine()


@functools.cache
def voice_variants() -> tuple[str, ...]:
    """Names of the voice variants shipped with the package (``"f3"``, ``"klatt2"``, ...)."""
    import espeakng_loader

    folder = os.path.join(espeakng_loader.get_data_path(), "voices", "!v")
    return tuple(sorted(os.listdir(folder)))


def voice_name(voice: str) -> str:
    """``"en+f3"`` for ``"f3"``; ``"LANG+VARIANT"`` and plain ``"LANG"`` pass through checked.

    Raises:
        ValueError: an unknown variant (the message lists a few valid ones).
    """
    if not isinstance(voice, str) or not voice.strip():
        raise ValueError("voice must be a non-empty string such as 'en+f3' or 'm2'")
    voice = voice.strip()
    lang, plus, variant = voice.rpartition("+")
    if not plus:
        lang, variant = ("", voice)
    if variant and variant not in voice_variants():
        if not plus and re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]+)?", variant):
            return variant  # a bare language name, checked by eSpeak itself
        some = ", ".join(voice_variants()[:8])
        raise ValueError(f"unknown voice variant {variant!r}; valid ones include {some}, ... "
                         f"({len(voice_variants())} in all, see voice_variants())")  # fmt: skip
    return f"{lang or 'en'}+{variant}"


def _words(text: str, events: list[tuple[int, int, int]], sr: int) -> list[tuple[str, float]]:
    out = []
    for pos, length, sample in events:
        word = text[max(pos - 1, 0) : max(pos - 1, 0) + max(length, 0)].strip()
        word = word.strip(".,;:!?\"'()[]")
        if word:
            out.append((word, sample / sr))
    return out


def synthesize(text: str, voice: str = "en+m3", rate: int = 175, pitch: int = 50,
               ) -> tuple[torch.Tensor, int, list[tuple[str, float]]]:  # fmt: skip
    """Speak ``text`` with eSpeak NG.

    Args:
        text: what to say (at most :data:`MAX_CHARS` characters).
        voice: ``"LANG+VARIANT"`` or a variant name (``"f3"`` means ``"en+f3"``).
        rate: words per minute, within :data:`RATE_RANGE` (eSpeak's default is 175).
        pitch: base pitch 0..100 (50 = the voice's own).

    Returns:
        (waveform (N,) float32 in [-1, 1], sample rate 22050, [(word, start seconds), ...]),
        the starts read from eSpeak's word events.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text is empty: type a word or a phrase to speak")
    if len(text) > MAX_CHARS:
        raise ValueError(f"text has {len(text)} characters; at most {MAX_CHARS} are spoken")
    for name, value, (lo, hi) in (("rate", rate, RATE_RANGE), ("pitch", pitch, PITCH_RANGE)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
    name = voice_name(voice)
    data = text.replace("\x00", " ").encode("utf-8")
    with _LOCK:
        eng = _engine()
        if eng.lib.espeak_SetVoiceByName(name.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {name!r}")
        eng.lib.espeak_SetParameter(_RATE, int(rate), 0)
        eng.lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        eng.lib.espeak_SetParameter(_VOLUME, 100, 0)
        eng.chunks, eng.words = [], []
        err = eng.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                   None, None)  # fmt: skip
        eng.lib.espeak_Synchronize()
        chunks, events = eng.chunks, eng.words
        eng.chunks, eng.words = [], []
    if err != 0:
        raise RuntimeError(f"eSpeak NG could not speak this text (error {err})")
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    wave = torch.from_numpy(pcm.astype(np.float32) / 32768.0)
    return wave, SAMPLE_RATE, _words(text, events, SAMPLE_RATE)
