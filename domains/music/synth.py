"""A small additive synthesiser: each note is a sum of harmonics (amplitudes 1/k, the higher ones
fading faster, an organ-like voice fit for chorales) under an ADSR envelope; the mix is
normalised and written as 16-bit mono WAV with the standard library's ``wave``. Nothing is
downloaded and no sound font is needed.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Iterable, Sequence

import numpy as np

from .tokens import STEPS_PER_QUARTER, TEMPO_RANGE, Note, read_midi, tokens_to_notes

__all__ = ["render", "render_wav", "wav_bytes", "SAMPLE_RATE", "MAX_SECONDS", "HARMONICS"]

SAMPLE_RATE = 22050
#: longest rendering (seconds); longer pieces are cut there
MAX_SECONDS = 600.0
HARMONICS = (1.0, 0.5, 0.33, 0.25, 0.2, 0.16)
ATTACK, DECAY, SUSTAIN, RELEASE = 0.01, 0.08, 0.7, 0.12  # seconds, seconds, level, seconds


def _envelope(n_hold: int, sr: int) -> np.ndarray:
    """ADSR over a note held ``n_hold`` samples, followed by its release."""
    a, d, r = int(ATTACK * sr), int(DECAY * sr), int(RELEASE * sr)
    env = np.full(n_hold + r, SUSTAIN, dtype=np.float32)
    a_n = min(a, n_hold)
    env[:a_n] = np.linspace(0.0, 1.0, a, endpoint=False, dtype=np.float32)[:a_n]
    d_n = max(0, min(d, n_hold - a_n))
    env[a_n : a_n + d_n] = np.linspace(1.0, SUSTAIN, d, dtype=np.float32)[:d_n]
    level = env[n_hold - 1] if n_hold else 0.0
    env[n_hold:] = np.linspace(level, 0.0, r, dtype=np.float32)
    return env


def render(notes: Iterable[Note], tempo: float = 100.0, sample_rate: int = SAMPLE_RATE,
           max_seconds: float = MAX_SECONDS) -> np.ndarray:  # fmt: skip
    """Mono float32 samples in [-1, 1] of grid notes at ``tempo`` quarter notes per minute."""
    lo, hi = TEMPO_RANGE
    if not lo <= float(tempo) <= hi:
        raise ValueError(f"tempo must be within {lo:g}..{hi:g} quarter notes per minute, "
                         f"got {tempo}")  # fmt: skip
    if not 8000 <= int(sample_rate) <= 96000:
        raise ValueError(f"sample_rate must be within 8000..96000 Hz, got {sample_rate}")
    step = 60.0 / float(tempo) / STEPS_PER_QUARTER  # seconds per grid step
    notes = [n for n in notes if n.start * step < max_seconds]
    end = max((n.end for n in notes), default=0) * step
    total = int(min(end, max_seconds) * sample_rate) + int(RELEASE * sample_rate) + 1
    out = np.zeros(total, dtype=np.float32)
    for n in notes:
        s = int(n.start * step * sample_rate)
        hold = max(1, int(min(n.end * step, max_seconds) * sample_rate) - s)
        env = _envelope(hold, sample_rate)
        t = np.arange(env.size, dtype=np.float32) / sample_rate
        f0 = 440.0 * 2.0 ** ((n.pitch - 69) / 12)
        tone = np.zeros(env.size, dtype=np.float32)
        for k, amp in enumerate(HARMONICS, start=1):
            if k * f0 >= sample_rate / 2:
                break
            tone += amp * np.exp(-t * (k - 1) * 1.5) * np.sin(2 * np.pi * k * f0 * t)
        gain = 0.25 + 0.75 * (n.velocity / 31)
        e = min(total, s + env.size)
        out[s:e] += (gain * env * tone)[: e - s]
    peak = float(np.abs(out).max(initial=0.0))
    return out / peak * 0.9 if peak > 0 else out


def wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit mono PCM WAV of float samples in [-1, 1]."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def render_wav(source: Sequence[int] | bytes | Iterable[Note], tempo: float | None = None,
               sample_rate: int = SAMPLE_RATE) -> bytes:  # fmt: skip
    """WAV bytes of event tokens, a MIDI file's bytes (its own tempo unless ``tempo`` is
    given) or notes."""
    if isinstance(source, (bytes, bytearray)):
        piece = read_midi(bytes(source))
        notes, tempo = piece.notes, tempo or piece.tempo
    else:
        items = list(source)
        notes = items if items and isinstance(items[0], Note) else tokens_to_notes(items)
    return wav_bytes(render(notes, tempo or 100.0, sample_rate), sample_rate)
