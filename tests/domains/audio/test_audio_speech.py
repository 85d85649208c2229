"""eSpeak NG through ctypes: word starts against the samples emitted, determinism, thread
safety, refusals."""

from __future__ import annotations

import threading

import pytest
import torch

from attnlab.domains.audio.data import log_mel, prepare
from attnlab.domains.audio.speech import synthesize, voice_name, voice_variants


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def test_word_starts_follow_the_sound():
    # a sentence pause before "go": the silence falls before the word's start, not after it
    wave, sr, words = synthesize("Stop now. Go left.", voice="en+m3", rate=150)
    assert wave.dtype == torch.float32 and sr == 22050
    assert [w for w, _ in words] == ["Stop", "now", "Go", "left"]
    starts = [s for _, s in words]
    assert starts == sorted(starts) and starts[0] < 0.05
    go = int(starts[2] * sr)
    before = wave[go - int(0.1 * sr) : go]
    after = wave[go : go + int(0.25 * sr)]
    assert _rms(before) < 0.01 < _rms(after)
    assert starts[-1] < len(wave) / sr


def _same_speech(a, b):
    """eSpeak's noise source is not seeded: repeats agree in length, word starts and spectrum,
    not sample for sample."""
    assert a[0].shape == b[0].shape and a[1] == b[1]
    assert [w for w, _ in a[2]] == [w for w, _ in b[2]]
    for (_, s1), (_, s2) in zip(a[2], b[2], strict=True):
        assert abs(s1 - s2) < 0.002
    ma, mb = log_mel(prepare(a[0], a[1])), log_mel(prepare(b[0], b[1]))
    assert float((ma - mb).abs().mean()) < 0.1


def test_repeats_agree_and_threads_do_not_mix():
    ref = synthesize("three seven", voice="f3", rate=200, pitch=60)
    other = synthesize("yes no", voice="m2")
    assert ref[0].shape != other[0].shape
    results = {}

    def job(i):
        results[i] = (synthesize("three seven", voice="f3", rate=200, pitch=60) if i % 2 == 0
                      else synthesize("yes no", voice="m2"))  # fmt: skip

    threads = [threading.Thread(target=job, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, got in results.items():
        _same_speech(got, ref if i % 2 == 0 else other)


def test_voices_and_parameters_change_the_audio():
    a = synthesize("seven", voice="f3")[0]
    b = synthesize("seven", voice="m1")[0]
    c = synthesize("seven", voice="f3", rate=300)[0]
    assert not (len(a) == len(b) and torch.equal(a, b))
    assert len(c) < len(a)
    assert "f3" in voice_variants() and voice_name("f3") == "en+f3"
    assert voice_name("en-us+klatt2") == "en-us+klatt2"


@pytest.mark.parametrize(
    "kwargs,match",
    [({"text": ""}, "empty"), ({"text": "a" * 501}, "at most"),
     ({"text": "hi", "voice": "nobody"}, "unknown voice"), ({"text": "hi", "rate": 5}, "rate"),
     ({"text": "hi", "pitch": 101}, "pitch"), ({"text": "hi", "rate": True}, "rate")],
)  # fmt: skip
def test_refusals(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthesize(**kwargs)
