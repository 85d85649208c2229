"""Audio front end and the synthetic speech corpus of the audio domain.

Front end (torchaudio's transforms; files read with ``soundfile``, which handles wav, flac, ogg
and mp3 without FFmpeg): any rate resampled to 16 kHz, channels averaged, an 80-band log-mel
spectrogram (25 ms window, 10 ms hop) normalised as Whisper's ``log_mel_spectrogram`` does
(log10, floor at the clip's maximum - 8, then (x + 4) / 4), and SpecAugment's frequency and
time masks for training (Park et al. 2019).

Corpus: keywords and keyword sequences spoken by eSpeak NG (:mod:`.speech`) over many voice
variants, rates and pitches, the true word starts from its word events. Voices in
:data:`TEST_VARIANTS` are never used for training. Clean clips are generated from a seed and
cached on disk (``$ATTNLAB_AUDIO_CACHE``, default ``~/.cache/attnlab/audio``); noise (white or
brown, 10..40 dB SNR) and gain (-24..+6 dB) are drawn per sample from the same seed when a
sample is read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .speech import synthesize, voice_variants

__all__ = ["SAMPLE_RATE", "N_MELS", "HOP", "WIN", "KEYWORDS", "FILLERS", "UNKNOWN", "SILENCE",
           "TEST_VARIANTS", "filler_words", "background_clips", "join_clips", "MIN_SECONDS",
           "MAX_SECONDS", "AUDIO_SUFFIXES", "read_audio", "prepare", "log_mel", "spec_augment",
           "augment", "speed_perturb", "warp_frequencies", "Clips", "speech_clips",
           "split_variants", "KeywordSet", "SequenceSet", "folder_clips", "cache_dir"]  # fmt: skip

SAMPLE_RATE = 16000
N_MELS = 80
WIN, HOP = 400, 160  # 25 ms window, 10 ms hop
MIN_SECONDS = 0.1
MAX_SECONDS = 30.0  #: longest input the front end accepts
MAX_FILE_BYTES = 50 * 2**20
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")

#: the 20 keywords: the ten digits and ten commands (as in Warden 2018, Speech Commands)
KEYWORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
            "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")  # fmt: skip

#: words that are none of the keywords (Speech Commands' auxiliary words and more, none sounding
#: like a keyword): spoken as the ``_unknown_`` class; the last 12 are heard only in tests
FILLERS = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
           "backward", "forward", "follow", "learn", "visual", "apple", "table", "water",
           "music", "paper", "window", "garden", "river", "yellow", "purple", "orange", "green",
           "little", "number", "people", "morning", "evening", "coffee", "doctor", "pencil",
           "monkey", "tiger", "rabbit", "button", "camera", "rocket", "silver", "winter",
           "summer", "basket", "candle", "dinner", "letter", "planet", "circle", "bottle",
           "kitchen", "island", "bridge", "castle", "forest", "mountain", "ocean", "shadow",
           "thunder", "lemon", "banana", "tomato", "pillow", "jacket", "engine", "pocket",
           "sugar", "market", "village", "wizard", "yogurt")  # fmt: skip
UNKNOWN, SILENCE = "_unknown_", "_silence_"

#: voice variants kept out of training: the held-out voices of every test split
TEST_VARIANTS = ("Andy", "Annie", "f4", "m4", "klatt3", "linda", "quincy", "steph2",
                 "travis", "iven2", "norbert", "belinda")  # fmt: skip
_LANGS = ("en", "en-us")


def cache_dir() -> Path:
    """Where generated audio is cached: ``$ATTNLAB_AUDIO_CACHE`` or ``~/.cache/attnlab/audio``."""
    root = os.environ.get("ATTNLAB_AUDIO_CACHE") or Path.home() / ".cache" / "attnlab" / "audio"
    return Path(root)


def split_variants(split: str) -> tuple[str, ...]:
    """Voice variants of ``"train"`` (all but :data:`TEST_VARIANTS`) or ``"test"``."""
    if split == "test":
        return TEST_VARIANTS
    if split == "train":
        return tuple(v for v in voice_variants() if v not in TEST_VARIANTS)
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


# ------------------------------------------------------------------------------------------
# front end
# ------------------------------------------------------------------------------------------
def read_audio(path: str | os.PathLike) -> tuple[Tensor, int]:
    """Read a wav/flac/ogg/mp3 file: ((channels, N) float32 tensor, sample rate).

    Raises:
        ValueError: a missing, empty, huge, corrupt or non-audio file, with what to do.
    """
    import soundfile as sf

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no audio file at {p}")
    size = p.stat().st_size
    if size == 0:
        raise ValueError(f"{p.name} is empty: record or choose an audio file")
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{p.name} is {size / 2**20:.0f} MB; files up to "
                         f"{MAX_FILE_BYTES // 2**20} MB are read")  # fmt: skip
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)  # (N, C)
    except Exception as err:  # libsndfile's errors name no type worth catching apart
        raise ValueError(f"{p.name} is not an audio file this reader understands "
                         f"(wav, flac, ogg or mp3): {err}") from None  # fmt: skip
    if data.shape[0] == 0:
        raise ValueError(f"{p.name} holds no samples")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sr)


def prepare(waveform, sample_rate: int, *, max_seconds: float = MAX_SECONDS,
            check_level: bool = True) -> Tensor:  # fmt: skip
    """Mono 16 kHz float32 (N,) from a (N,), (C, N) waveform at any rate.

    Channels (up to 8, the shorter axis of a 2-D input) are averaged, then the signal is
    resampled with torchaudio's band-limited sinc interpolation.

    Raises:
        ValueError: wrong type or shape, non-finite samples, a clip shorter than
            :data:`MIN_SECONDS` or longer than ``max_seconds``, silence, or heavy clipping
            (``check_level``).
    """
    import torchaudio.functional as AF

    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(np.ascontiguousarray(waveform))
    if not isinstance(waveform, Tensor):
        raise ValueError(f"waveform must be a tensor or an array, got {type(waveform).__name__}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise ValueError(f"sample_rate must be an int (Hz), got {sample_rate!r}")
    sample_rate = int(sample_rate)
    if not 1000 <= sample_rate <= 384000:
        raise ValueError(f"sample rate {sample_rate} Hz is outside 1000..384000 Hz")
    if waveform.dtype == torch.int16:
        waveform = waveform.float() / 32768.0
    elif waveform.dtype == torch.int32:
        waveform = waveform.float() / 2**31
    elif not waveform.dtype.is_floating_point:
        raise ValueError(f"waveform must hold floats or int16/int32 samples, got {waveform.dtype}")
    x = waveform.float()
    if x.dim() == 2:
        if x.shape[0] > x.shape[1]:  # (N, C) as soundfile and numpy users hold it
            x = x.T
        if x.shape[0] > 8:
            raise ValueError(f"waveform has {x.shape[0]} channels; give (N,) or (C, N), C <= 8")
        x = x.mean(0)
    elif x.dim() != 1:
        raise ValueError(f"waveform must be (N,) or (channels, N), got shape {tuple(x.shape)}")
    seconds = x.numel() / sample_rate
    if seconds < MIN_SECONDS:
        raise ValueError(f"the clip lasts {seconds:.3f} s; give at least {MIN_SECONDS} s")
    if seconds > max_seconds:
        raise ValueError(f"the clip lasts {seconds:.1f} s; at most {max_seconds:g} s is accepted")
    if not torch.isfinite(x).all():
        raise ValueError("the waveform holds NaN or infinite samples")
    if check_level:
        peak = float(x.abs().max())
        if peak < 1e-3:
            raise ValueError("the clip is silent (peak below -60 dBFS): record closer to "
                             "the microphone or raise the volume")  # fmt: skip
        clipped = float((x.abs() >= 0.999 * max(peak, 1.0)).float().mean())
        if peak >= 0.999 and clipped > 0.02:
            raise ValueError(f"{clipped:.0%} of the samples are clipped at full scale: record "
                             "again at a lower level")  # fmt: skip
    if sample_rate != SAMPLE_RATE:
        x = AF.resample(x, sample_rate, SAMPLE_RATE)
    return x.contiguous()


@functools.cache
def _mel_transform():
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        SAMPLE_RATE, n_fft=WIN, win_length=WIN, hop_length=HOP, n_mels=N_MELS, power=2.0,
        f_min=0.0, f_max=8000.0, mel_scale="slaney", norm="slaney")  # fmt: skip


def log_mel(x: Tensor) -> Tensor:
    """Whisper-normalised log-mel (..., N_MELS, frames) of 16 kHz audio (..., N);
    frames = N // HOP + 1 (centred STFT)."""
    with torch.no_grad():
        mel = _mel_transform()(x.float())
    logm = mel.clamp(min=1e-10).log10()
    floor = logm.amax(dim=(-2, -1), keepdim=True) - 8.0
    return (torch.maximum(logm, floor) + 4.0) / 4.0


def mel_frequencies() -> np.ndarray:
    """Centre frequency (Hz) of each mel band."""
    import torchaudio

    fb = torchaudio.functional.melscale_fbanks(WIN // 2 + 1, 0.0, 8000.0, N_MELS, SAMPLE_RATE,
                                               norm="slaney", mel_scale="slaney")  # fmt: skip
    freqs = torch.linspace(0, SAMPLE_RATE / 2, WIN // 2 + 1)
    return (freqs[:, None] * fb).sum(0).div(fb.sum(0).clamp(min=1e-9)).numpy()


def spec_augment(spec: Tensor, rng: random.Random, freq_masks: int = 2, freq_width: int = 10,
                 time_masks: int = 2, time_width: int = 8) -> Tensor:  # fmt: skip
    """SpecAugment's masks on a (n_mels, frames) log-mel: bands and frame spans set to the
    clip's mean."""
    spec = spec.clone()
    fill = spec.mean()
    n_mels, frames = spec.shape
    for _ in range(freq_masks):
        w = rng.randint(0, freq_width)
        f0 = rng.randint(0, max(0, n_mels - w))
        spec[f0 : f0 + w] = fill
    for _ in range(time_masks):
        w = rng.randint(0, min(time_width, frames // 8))
        t0 = rng.randint(0, max(0, frames - w))
        spec[:, t0 : t0 + w] = fill
    return spec


def augment(x: Tensor, rng: random.Random) -> Tensor:
    """Background noise (white or brown, SNR 10..40 dB; -60..-20 dBFS when ``x`` is silent) and
    a gain of -24..+6 dB, clipped to [-1, 1] as a recorder would."""
    g = torch.Generator().manual_seed(rng.getrandbits(31))
    noise = torch.randn(x.shape, generator=g)
    if rng.random() < 0.5:  # brown: integrated white noise, rumble-like
        noise = torch.cumsum(noise, 0)
        noise = noise - torch.linspace(float(noise[0]), float(noise[-1]), len(noise))
    power = x.pow(2).mean()
    snr = rng.uniform(10.0, 40.0)
    if power < 1e-8:  # no signal (a background clip): noise at -60..-20 dBFS of its own
        target = 10 ** (rng.uniform(-60.0, -20.0) / 10)
    else:
        target = power / 10 ** (snr / 10)
    noise = noise * torch.sqrt(target / noise.pow(2).mean().clamp(min=1e-12))
    gain = 10 ** (rng.uniform(-24.0, 6.0) / 20)
    return ((x + noise) * gain).clamp(-1.0, 1.0)


#: the speed factors of :func:`speed_perturb` (a fixed set, so each resampler is built once)
SPEEDS = (0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15)


@functools.cache
def _resampler(factor: float):
    import torchaudio

    # playing n samples in n / factor: resample from rate * factor down to rate
    return torchaudio.transforms.Resample(round(SAMPLE_RATE * factor), SAMPLE_RATE,
                                          lowpass_filter_width=8)  # fmt: skip


def speed_perturb(x: Tensor, rng: random.Random, speeds: tuple[float, ...] = SPEEDS) -> Tensor:
    """Speed perturbation (Ko et al. 2015): ``x`` played ``factor`` times faster, one of
    ``speeds`` drawn by ``rng``; pitch, formants and tempo all move together, the cheapest
    imitation of another speaker."""
    factor = rng.choice(speeds)
    if factor == 1.0:
        return x
    with torch.no_grad():
        return _resampler(factor)(x)


def warp_frequencies(spec: Tensor, alpha: float) -> Tensor:
    """Vocal-tract-length perturbation (Jaitly & Hinton 2013) on a (n_mels, frames) log-mel:
    every frequency f is moved to ``alpha * f`` (alpha > 1: a shorter vocal tract), by linear
    interpolation between the mel bands' centre frequencies."""
    centres = torch.from_numpy(_band_centres())
    src = (centres / alpha).clamp(centres[0], centres[-1])  # where band j reads from
    hi = torch.searchsorted(centres, src).clamp(1, len(centres) - 1)
    lo = hi - 1
    w = ((src - centres[lo]) / (centres[hi] - centres[lo])).clamp(0, 1)[:, None]
    return spec[lo] * (1 - w) + spec[hi] * w


@functools.cache
def _band_centres() -> np.ndarray:
    return mel_frequencies().astype(np.float32)


# ------------------------------------------------------------------------------------------
# corpus
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clips:
    """Clean 16 kHz clips with their labels and word starts.

    Attributes:
        audio: (total,) int16 samples of every clip, end to end.
        offsets: (n + 1,) clip boundaries in ``audio``.
        texts: the words spoken in each clip, space-separated.
        starts: per clip, the start (seconds) of each word.
        voices: per clip, the eSpeak voice.
    """

    audio: np.ndarray
    offsets: np.ndarray
    texts: list[str]
    starts: list[list[float]]
    voices: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def wave(self, i: int) -> Tensor:
        a = self.audio[self.offsets[i] : self.offsets[i + 1]]
        return torch.from_numpy(a.astype(np.float32) / 32768.0)


def _speak_clip(words: list[str], rng: random.Random, variants: tuple[str, ...],
                pad: tuple[float, float]) -> tuple[np.ndarray, list[float], str]:  # fmt: skip
    voice = f"{rng.choice(_LANGS)}+{rng.choice(variants)}"
    rate = rng.randint(120, 240)
    pitch = rng.randint(20, 80)
    wave, sr, starts = synthesize(" ".join(words), voice=voice, rate=rate, pitch=pitch)
    x = prepare(wave, sr, check_level=False)
    lead = rng.uniform(*pad)
    tail = rng.uniform(*pad)
    n0, n1 = int(lead * SAMPLE_RATE), int(tail * SAMPLE_RATE)
    x = torch.cat([torch.zeros(n0), x, torch.zeros(n1)])
    peak = float(x.abs().max()) or 1.0
    pcm = (x / peak * 0.7 * 32767).round().to(torch.int16).numpy()
    return pcm, [lead + s for _, s in starts], voice


def filler_words(split: str) -> tuple[str, ...]:
    """The :data:`FILLERS` of ``"train"`` (all but the last 12) or ``"test"`` (the last 12)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return FILLERS[-12:] if split == "test" else FILLERS[:-12]


def background_clips(n: int) -> Clips:
    """``n`` clips of no speech at all, labelled :data:`SILENCE`: empty, so that
    :class:`KeywordSet` hears only its background noise (white or brown, any gain)."""
    return Clips(np.zeros(0, np.int16), np.zeros(n + 1, np.int64), [SILENCE] * n,
                 [[] for _ in range(n)], [""] * n)  # fmt: skip


def speech_clips(
    kind: str, split: str, n: int, seed: int = 0, max_words: int = 4, max_seconds: float = 3.0
) -> Clips:
    """``n`` clean clips, generated from ``seed`` or read from the cache.

    Args:
        kind: ``"keyword"`` (one of :data:`KEYWORDS`, classes balanced), ``"sequence"``
            (1..``max_words`` keywords) or ``"filler"`` (one of the split's
            :func:`filler_words`, balanced; the text is the word itself).
        split: ``"train"`` or ``"test"`` (voices of :func:`split_variants`).
        n: number of clips.
        seed: generator seed (the split is mixed in, so train and test never coincide).
        max_words: most keywords in a sequence.
        max_seconds: longest clip; a longer draw is drawn again.
    """
    if kind not in ("keyword", "sequence", "filler"):
        raise ValueError(f"kind must be 'keyword', 'sequence' or 'filler', got {kind!r}")
    variants = split_variants(split)
    parts = [kind, split, n, seed, max_words, max_seconds, variants, 1]
    if kind == "filler":
        parts.append(filler_words(split))
    key = json.dumps(parts)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = cache_dir() / f"{kind}-{split}-{n}-{seed}-{digest}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return Clips(z["audio"], z["offsets"], meta["texts"], meta["starts"],
                             meta["voices"])  # fmt: skip
        except (OSError, ValueError, KeyError):
            pass  # a torn cache file is regenerated
    rng = random.Random(f"{kind}/{split}/{seed}")
    pcms, texts, starts, voices = [], [], [], []
    for i in range(n):
        while True:  # redrawn when too long, or when eSpeak speaks two words as one
            if kind == "keyword":  # ("no one" is a single word event)
                words, pad = [KEYWORDS[i % len(KEYWORDS)]], (0.05, 0.3)
            elif kind == "filler":
                fill = filler_words(split)
                words, pad = [fill[i % len(fill)]], (0.05, 0.3)
            else:
                words = [rng.choice(KEYWORDS) for _ in range(rng.randint(1, max_words))]
                pad = (0.05, 0.4)
            pcm, st, voice = _speak_clip(words, rng, variants, pad)
            if len(pcm) <= max_seconds * SAMPLE_RATE and len(st) == len(words):
                break
        pcms.append(pcm)
        texts.append(" ".join(words))
        starts.append(st)
        voices.append(voice)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pcms])]).astype(np.int64)
    clips = Clips(np.concatenate(pcms), offsets, texts, starts, voices)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    meta = json.dumps({"texts": texts, "starts": starts, "voices": voices})
    np.savez(tmp, audio=clips.audio, offsets=offsets, meta=np.array(meta))
    os.replace(tmp, path)
    return clips


def join_clips(*parts: Clips) -> Clips:
    """The clips of ``parts`` one after another, as one :class:`Clips`."""
    audio = np.concatenate([p.audio for p in parts])
    sizes = np.concatenate([np.diff(p.offsets) for p in parts])
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    texts = [t for p in parts for t in p.texts]
    starts = [s for p in parts for s in p.starts]
    return Clips(audio, offsets, texts, starts, [v for p in parts for v in p.voices])


def folder_clips(root: str | os.PathLike, max_seconds: float = 8.0) -> Clips:
    """Clips from a folder of the user's labelled audio: ``ROOT/<label>/*.wav|flac|ogg|mp3``
    (the folder name is the keyword or the words spoken; ``_`` stands for a space). No word
    starts are known (empty lists)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder of <label>/<audio files>")
    pcms, texts = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(sub.iterdir()):
            if f.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            wave, sr = read_audio(f)
            x = prepare(wave, sr, max_seconds=max_seconds, check_level=False)
            pcms.append((x.clamp(-1, 1) * 32767).round().to(torch.int16).numpy())
            texts.append(sub.name.replace("_", " ").lower())
    if not pcms:
        raise ValueError(f"{root} has no <label>/<file>{'|'.join(AUDIO_SUFFIXES)} audio files")
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pcms])]).astype(np.int64)
    return Clips(np.concatenate(pcms), offsets, texts, [[] for _ in texts], [""] * len(texts))


def _fit(x: Tensor, n: int, rng: random.Random | None) -> tuple[Tensor, int]:
    """Pad or crop ``x`` to ``n`` samples (randomly placed when ``rng``); (clip, shift)."""
    if len(x) >= n:
        s = 0 if rng is None else rng.randint(0, len(x) - n)
        return x[s : s + n], -s
    s = 0 if rng is None else rng.randint(0, n - len(x))
    return torch.nn.functional.pad(x, (s, n - len(x) - s)), s


class KeywordSet(Dataset):
    """Keyword clips as fixed-length log-mels: ``{"spec": (N_MELS, frames), "label": int}``.

    Args:
        clips: one keyword per clip (texts must be among ``labels``).
        labels: the class names.
        seconds: clip length the model hears (crop or pad).
        train: draw placement, noise, gain and SpecAugment per read (seeded by index and
            epoch-free ``seed``); held-out sets get noise and gain from a fixed seed.
        speed: training only: speed perturbation (:func:`speed_perturb`) on every read.
        warp: training only: a vocal-tract-length warp of the frequencies by a factor drawn
            from 1 +- ``warp`` (:func:`warp_frequencies`); 0 turns it off.
    """

    def __init__(self, clips: Clips, labels: tuple[str, ...], seconds: float = 1.0,
                 train: bool = True, seed: int = 0, speed: bool = False,
                 warp: float = 0.0):  # fmt: skip
        self.clips, self.labels, self.train, self.seed = clips, tuple(labels), train, seed
        self.speed, self.warp = speed, float(warp)
        self.n = int(seconds * SAMPLE_RATE)
        index = {w: i for i, w in enumerate(self.labels)}
        missing = sorted({t for t in clips.texts if t not in index})
        if missing:
            raise ValueError(f"clip labels {missing[:5]} are not among the classes")
        self.y = [index[t] for t in clips.texts]
        self.calls = 0

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        self.calls += 1
        rng = random.Random(f"{self.seed}/{i}/{self.calls if self.train else 0}")
        x = self.clips.wave(i)
        if self.train and self.speed:
            x = speed_perturb(x, rng)
        x, _ = _fit(x, self.n, rng if self.train else None)
        x = augment(x, rng)
        spec = log_mel(x)
        if self.train:
            if self.warp:
                spec = warp_frequencies(spec, rng.uniform(1 - self.warp, 1 + self.warp))
            spec = spec_augment(spec, rng)
        return {"spec": spec, "label": torch.tensor(self.y[i])}


class SequenceSet(Dataset):
    """Keyword sequences as (log-mel, text, word starts), padded by :meth:`collate`.

    Items: ``{"spec": (N_MELS, frames), "text": str, "starts": [seconds]}``; ``collate``
    pads spectrograms to ``seconds`` and encodes texts with ``encode``.
    """

    def __init__(self, clips: Clips, seconds: float = 4.0, train: bool = True, seed: int = 0):
        self.clips, self.train, self.seed = clips, train, seed
        self.n = int(seconds * SAMPLE_RATE)
        self.calls = 0

    def __len__(self) -> int:
        return len(self.clips)

    def item(self, i: int, noisy: bool = True) -> tuple[Tensor, str, list[float]]:
        self.calls += 1
        rng = random.Random(f"{self.seed}/{i}/{self.calls if self.train else 0}")
        x = self.clips.wave(i)[: self.n]
        if noisy:
            x = augment(x, rng)
        return x, self.clips.texts[i], list(self.clips.starts[i])

    def __getitem__(self, i: int) -> dict:
        x, text, starts = self.item(i)
        x, _ = _fit(x, self.n, None)  # pad at the end: starts stay put
        spec = log_mel(x)
        if self.train:
            spec = spec_augment(spec, random.Random(f"{self.seed}/{i}/{self.calls}/sa"),
                                time_width=5)  # fmt: skip
        return {"spec": spec, "text": text, "starts": starts}


def frames_for(seconds: float) -> int:
    """Log-mel frames of a ``seconds`` clip."""
    return int(round(seconds * SAMPLE_RATE)) // HOP + 1


def seconds_per_frame() -> float:
    return HOP / SAMPLE_RATE
