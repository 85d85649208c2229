"""The audio front end against explicit references: resampling keeps a tone's frequency,
channels are averaged, the log-mel equals a float64 STFT -> mel -> Whisper normalisation,
files of every format read back, bad input is refused with a sentence; the corpus is cached
and keeps test voices out of training."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from attnlab.domains.audio import data as D


def _tone(freq: float, sr: int, seconds: float = 0.5, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(sr * seconds), dtype=torch.float64) / sr
    return (amp * torch.sin(2 * torch.pi * freq * t)).float()


def _peak_hz(x: torch.Tensor, sr: int) -> float:
    spec = torch.fft.rfft(x.double() * torch.hann_window(len(x), dtype=torch.float64)).abs()
    return float(spec.argmax()) * sr / len(x)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resampling_keeps_the_tone(sr):
    x = D.prepare(_tone(440.0, sr), sr)
    assert x.dtype == torch.float32 and abs(len(x) - 8000) <= 1
    assert abs(_peak_hz(x, 16000) - 440.0) < 4.0


def test_channels_are_averaged_in_either_layout():
    g = torch.Generator().manual_seed(0)
    left, right = _tone(300, 16000), torch.rand(8000, generator=g) * 0.2
    stereo = torch.stack([left, right])
    torch.testing.assert_close(D.prepare(stereo, 16000), (left + right) / 2)
    torch.testing.assert_close(D.prepare(stereo.T.numpy(), 16000), (left + right) / 2)
    pcm = (left * 32767).to(torch.int16)
    torch.testing.assert_close(D.prepare(pcm, 16000), pcm.float() / 32768)


def test_log_mel_equals_a_float64_reference():
    import torchaudio

    x = torch.randn(16000, generator=torch.Generator().manual_seed(1)) * 0.1
    ours = D.log_mel(x)
    xd = x.double()
    stft = torch.stft(torch.nn.functional.pad(xd[None], (200, 200), mode="reflect")[0], 400,
                      160, 400, torch.hann_window(400, dtype=torch.float64), center=False,
                      return_complex=True)  # fmt: skip
    power = stft.abs() ** 2  # (201, frames)
    fb = torchaudio.functional.melscale_fbanks(201, 0.0, 8000.0, 80, 16000, norm="slaney",
                                               mel_scale="slaney").double()  # fmt: skip
    logm = (fb.T @ power).clamp(min=1e-10).log10()
    ref = (torch.maximum(logm, logm.max() - 8.0) + 4.0) / 4.0
    assert ours.shape == ref.shape == (80, 101)
    torch.testing.assert_close(ours.double(), ref, atol=2e-4, rtol=1e-4)


def test_a_gain_shifts_the_log_mel_by_a_constant():
    x = _tone(500, 16000) + 0.01 * torch.randn(8000, generator=torch.Generator().manual_seed(2))
    a, b = D.log_mel(x), D.log_mel(x * 0.05)
    torch.testing.assert_close(a - b, torch.full_like(a, -2 * np.log10(0.05) / 4), atol=1e-4,
                               rtol=0)  # fmt: skip


@pytest.mark.parametrize(
    "fmt,ext,tol",
    [("WAV", ".wav", 1e-4), ("FLAC", ".flac", 1e-4), ("OGG", ".ogg", None), ("MP3", ".mp3", None)],
)
def test_every_format_reads_back(tmp_path, fmt, ext, tol):
    x = _tone(440, 48000, seconds=1.0).numpy()
    stereo = np.stack([x, x * 0.5], axis=1)
    path = tmp_path / f"clip{ext}"
    sf.write(path, stereo, 48000, format=fmt)
    wave, sr = D.read_audio(path)
    assert sr == 48000 and wave.shape[0] == 2
    mono = D.prepare(wave, sr)
    assert abs(_peak_hz(mono[:16000], 16000) - 440.0) < 4.0
    if tol is not None:
        np.testing.assert_allclose(wave[0].numpy(), x, atol=tol)


def test_bad_files_are_refused(tmp_path):
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "notes.mp3").write_text("not audio at all\n" * 50)
    (tmp_path / "empty.flac").write_bytes(b"")
    for name, match in [
        ("noise.wav", "not an audio file"),
        ("notes.mp3", "not an audio file"),
        ("empty.flac", "empty"),
        ("missing.ogg", "no audio file"),
    ]:
        with pytest.raises(ValueError, match=match):
            D.read_audio(tmp_path / name)


@pytest.mark.parametrize(
    "wave,sr,match",
    [(torch.zeros(16000), 16000, "silent"), (torch.ones(16000), 16000, "clipped"),
     (_tone(440, 16000, 0.05), 16000, "at least 0.1 s"),
     (_tone(440, 8000, 31.0), 8000, "at most 30 s"),
     (torch.full((16000,), float("nan")), 16000, "NaN"),
     (torch.zeros(2, 2, 100), 16000, "shape"), ("abc", 16000, "tensor or an array"),
     (_tone(440, 16000), 16000.5, "sample_rate"), (_tone(440, 16000), 100, "outside")],
)  # fmt: skip
def test_bad_waveforms_are_refused(wave, sr, match):
    with pytest.raises(ValueError, match=match):
        D.prepare(wave, sr)


def test_corpus_is_cached_and_keeps_test_voices_out(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_AUDIO_CACHE", str(tmp_path))
    train = D.speech_clips("sequence", "train", 12, seed=3)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = D.speech_clips("sequence", "train", 12, seed=3)
    np.testing.assert_array_equal(train.audio, again.audio)
    test = D.speech_clips("sequence", "test", 12, seed=3)
    assert {v.split("+")[1] for v in test.voices} <= set(D.TEST_VARIANTS)
    assert not {v.split("+")[1] for v in train.voices} & set(D.TEST_VARIANTS)
    for text, starts in zip(train.texts, train.starts, strict=True):
        assert len(text.split()) == len(starts) and starts == sorted(starts)
        assert set(text.split()) <= set(D.KEYWORDS)


def test_spec_augment_masks_whole_bands_and_spans():
    import random

    spec = torch.randn(80, 101, generator=torch.Generator().manual_seed(4))
    out = D.spec_augment(spec, random.Random(0), freq_masks=1, freq_width=10, time_masks=0)
    changed = (out != spec).any(1)
    rows = torch.nonzero(changed).flatten()
    assert 0 < len(rows) <= 10 and (rows.diff() == 1).all()
    assert torch.equal(out[~changed], spec[~changed])


@pytest.mark.parametrize("factor", [f for f in D.SPEEDS if f != 1.0])
def test_speed_perturbation_moves_a_tone_and_its_length(factor):
    import random

    class Pick(random.Random):
        def choice(self, seq):
            return factor

    x = _tone(500.0, 16000, seconds=1.0)
    y = D.speed_perturb(x, Pick(0))
    assert abs(len(y) - 16000 / factor) <= 2  # played faster: shorter
    assert abs(_peak_hz(y, 16000) - 500.0 * factor) < 6.0  # and higher
    assert D.speed_perturb(x, random.Random(0), speeds=(1.0,)) is x


def test_frequency_warp_moves_a_tone_along_the_mel_axis():
    freqs = D.mel_frequencies()
    rng = np.random.default_rng(int(torch.randint(0, 2**31, ()).item()))
    f0 = float(rng.uniform(400, 3000))
    spec = D.log_mel(_tone(f0, 16000))
    assert torch.equal(D.warp_frequencies(spec, 1.0), spec)
    for alpha in (0.9, 1.12):
        band = int(D.warp_frequencies(spec, alpha).mean(1).argmax())
        want = int(np.abs(freqs - f0 * alpha).argmin())
        assert abs(band - want) <= 1, (f0, alpha, band, want)


def test_filler_words_split_and_never_name_a_keyword():
    train, test = D.filler_words("train"), D.filler_words("test")
    assert len(test) == 12 and not set(train) & set(test)
    assert set(train) | set(test) == set(D.FILLERS)
    assert not set(D.FILLERS) & set(D.KEYWORDS)
    with pytest.raises(ValueError, match="split"):
        D.filler_words("dev")
    clips = D.speech_clips("filler", "test", 14, seed=3)
    assert set(clips.texts) <= set(test) and len(set(clips.texts)) == 12
    assert {v.split("+")[1] for v in clips.voices} <= set(D.TEST_VARIANTS)


def test_background_clips_hear_noise_at_a_stated_level_and_join():
    import random

    bg = D.background_clips(5)
    assert len(bg) == 5 and bg.texts == [D.SILENCE] * 5 and len(bg.wave(3)) == 0
    seed = int(torch.randint(0, 2**31, ()).item())
    for k in range(20):
        x = D.augment(torch.zeros(16000), random.Random(seed + k))
        db = 10 * np.log10(float(x.pow(2).mean()))
        assert -24 - 60 - 0.5 <= db <= 6 - 20 + 0.5, db  # -60..-20 dBFS, then the gain
    words = D.speech_clips("keyword", "test", 40, seed=0)
    both = D.join_clips(words, bg)
    assert len(both) == 45 and both.texts[-1] == D.SILENCE
    for i in (0, 17, 39):
        assert torch.equal(both.wave(i), words.wave(i))
    ds = D.KeywordSet(both, (*D.KEYWORDS, D.SILENCE), train=False)
    item = ds[44]
    assert item["label"] == 20 and float(item["spec"].std()) > 0.05  # noise, not a flat floor
