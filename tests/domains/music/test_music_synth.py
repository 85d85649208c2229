"""The additive synthesiser: the pitch, the timing and the envelope of what it renders, and
valid WAV bytes from tokens or a MIDI file."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from attnlab.domains.music import decode
from attnlab.domains.music.synth import RELEASE, SAMPLE_RATE, render, render_wav
from attnlab.domains.music.tokens import Note, notes_to_tokens


@pytest.mark.parametrize("pitch", [57, 69, 76])
def test_a_note_sounds_at_its_pitch_and_time(pitch):
    tempo = 120.0  # a grid step is 0.125 s
    y = render([Note(8, pitch, 24)], tempo)  # from 1 s to 3 s
    sr = SAMPLE_RATE
    assert len(y) == int(3.0 * sr) + int(RELEASE * sr) + 1
    assert np.abs(y[: sr - 10]).max() == 0  # silence before the onset
    assert np.abs(y).max() == pytest.approx(0.9, abs=1e-6)  # normalised
    seg = y[int(1.5 * sr) : int(2.5 * sr)]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    f = np.fft.rfftfreq(len(seg), 1 / sr)[spec.argmax()]
    assert f == pytest.approx(440 * 2 ** ((pitch - 69) / 12), rel=0.01)
    assert np.abs(y[-50:]).max() < 0.01  # released to silence


def test_wav_from_tokens_and_from_midi_agree():
    notes = [Note(0, 60, 4, 20), Note(4, 64, 8, 10), Note(4, 67, 12, 31)]
    tokens = notes_to_tokens(notes)
    a = render_wav(tokens, tempo=90)
    b = render_wav(decode(tokens, tempo=90))
    assert a == b
    with wave.open(io.BytesIO(a)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE)
        seconds = w.getnframes() / SAMPLE_RATE
    assert seconds == pytest.approx(12 * 60 / 90 / 4 + RELEASE, abs=0.01)


def test_bad_render_requests_are_refused():
    with pytest.raises(ValueError, match="tempo"):
        render([Note(0, 60, 4)], tempo=0)
    with pytest.raises(ValueError, match="sample_rate"):
        render([Note(0, 60, 4)], sample_rate=100)
    assert render([], 100).max(initial=0) == 0
