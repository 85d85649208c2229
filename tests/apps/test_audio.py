"""Audio demo handlers, headless: a spoken phrase and uploaded files in every format go through
both models to pictures, a transcription and word times beside the true starts; bad uploads
and malformed form values get a sentence; every listener is named and the models have their
own queue.

The models are the shipped ``audio/kws`` and ``audio/asr``; where this checkout does not ship
them yet, untrained ones of the same architecture stand in (the wiring is the same, the
numbers mean nothing).
"""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from attnlab.apps import audio as AU
from attnlab.core import registry
from attnlab.domains.audio import infer as R

pytestmark = pytest.mark.timeout(180)
NEEDED = ("audio/kws", "audio/asr")


@pytest.fixture(scope="module", autouse=True)
def models(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    R.speech_model.cache_clear()
    R.keyword_model.cache_clear()
    if all(name in registry.list_weights() for name in NEEDED):
        yield True
    else:
        root = tmp_path_factory.mktemp("weights")
        torch.manual_seed(0)
        registry.save_weights(registry.create("audio_kws"), "audio/kws", {}, root=root)
        registry.save_weights(registry.create("audio_asr"), "audio/asr", {}, root=root)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ATTNLAB_WEIGHTS", str(root))
            yield False
    R.speech_model.cache_clear()
    R.keyword_model.cache_clear()
    torch.set_num_threads(n)


def test_spoken_phrase_goes_through_both_models(models, tmp_path):
    state, (sr, wave) = AU.load_phrase("three seven two", "en+f3", 160, 50)
    assert sr == 16000 and wave.dtype == np.float32 and len(wave) > 8000
    assert [w for w, _ in state["truth"]] == ["three", "seven", "two"]
    over, probs, text, align, timeline, table = AU.analyse(state, AU.ATTENTION_KINDS[0])
    for img in (over, timeline):
        assert isinstance(img, Image.Image) and img.width > 300
    assert set(probs) <= set(R.keyword_model().config.labels) and len(probs) == 5
    assert sum(probs.values()) <= 1.0 + 1e-6
    assert isinstance(text, str)
    if models:  # the shipped recogniser hears three words and times them against the truth
        from attnlab.domains.audio.train import char_error_rate

        assert len(text.split()) == 3 and char_error_rate([text], ["three seven two"]) < 0.5
        assert "true start" in table and "Mean word-start error" in table
        assert "this clip holds 3 words" in table  # the spotter's one-word answer explained
        assert isinstance(align, Image.Image)
    over2 = AU.analyse(state, AU.ATTENTION_KINDS[1])[0]
    assert not np.array_equal(np.asarray(over), np.asarray(over2))  # rollout differs
    over.save(tmp_path / "overlay.png")
    timeline.save(tmp_path / "timeline.png")


@pytest.mark.parametrize("fmt,ext", [
    ("WAV", ".wav"), pytest.param("FLAC", ".flac", marks=pytest.mark.slow),
    pytest.param("OGG", ".ogg", marks=pytest.mark.slow),
    pytest.param("MP3", ".mp3", marks=pytest.mark.slow)])  # fmt: skip
def test_uploads_of_every_format_and_rate(tmp_path, fmt, ext):
    from attnlab.domains.audio import synthesize
    from attnlab.domains.audio.data import prepare

    wave, sr, _ = synthesize("stop go", voice="en+m3")
    x = prepare(wave, sr).numpy()
    import torchaudio.functional as F

    x48 = F.resample(torch.from_numpy(x), 16000, 48000).numpy() * 0.8
    path = tmp_path / f"clip{ext}"
    sf.write(path, np.stack([x48, x48 * 0.5], axis=1), 48000, format=fmt)
    state, (sr2, w2) = AU.load_file(str(path))
    assert sr2 == 16000 and abs(len(w2) - len(x)) < 2000
    out = AU.analyse(state, AU.ATTENTION_KINDS[0])
    assert isinstance(out[0], Image.Image)


def test_bad_uploads_get_a_sentence(tmp_path):
    (tmp_path / "junk.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    sf.write(tmp_path / "silence.wav", np.zeros(16000, np.float32), 16000)
    sf.write(tmp_path / "short.wav", np.full(800, 0.3, np.float32), 16000)
    sf.write(tmp_path / "long.flac", (np.random.default_rng(1).random(8000 * 31) - 0.5)
             .astype(np.float32) * 0.2, 8000)  # fmt: skip
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "clipped.wav", np.clip(3 * np.sin(2 * np.pi * 200 * t), -1, 1), 16000)
    for name, needle in [("junk.wav", "not an audio file"), ("silence.wav", "silent"),
                         ("short.wav", "at least 0.1 s"), ("long.flac", "at most 30 s"),
                         ("clipped.wav", "clipped"), ("missing.mp3", "no audio file")]:  # fmt: skip
        with pytest.raises(gr.Error) as err:
            AU.load_file(str(tmp_path / name))
        assert needle in str(err.value.message), (name, err.value.message)
    with pytest.raises(gr.Error, match="No audio yet"):
        AU.load_file(None)


def test_speech_longer_than_the_window_is_refused():
    state, _ = AU.load_phrase("one two three four five six seven eight nine zero one two",
                              "en+m1", 100, 50)  # fmt: skip
    with pytest.raises(gr.Error, match="hears at most"):
        AU.analyse(state, AU.ATTENTION_KINDS[0])


def test_listeners_are_named_and_models_have_their_own_queue():
    page = AU.build()
    fns = list(page.fns.values())
    assert fns and all(f.api_name for f in fns)
    queues = {f.api_name: f.concurrency_id for f in fns if f.api_name}
    assert queues["audio_speak"] == queues["audio_load_file"] == AU.QUEUE_INPUT
    assert queues["audio_analyse_phrase"] == queues["audio_analyse_file"] == AU.QUEUE_MODELS


BAD_VALUES = [None, "", "abc", "12", -1, 0, 2.5, 10**9, float("nan"), float("inf"), [], {},
              True, [1, 2], {"a": 1}, {"wave": "x", "sr": 16000}]  # fmt: skip


def test_fuzzed_inputs_always_get_a_sentence():
    """Every listener, every input, every malformed value: accepted or a gr.Error sentence."""
    page = AU.build()
    fns = [f for f in page.fns.values() if f.api_name]
    state, _ = AU.load_phrase("yes", "en+f3", 160, 50)
    silent = []
    for fn in fns:
        good = [state if isinstance(c, gr.State) else getattr(c, "value", None)
                for c in fn.inputs]  # fmt: skip
        for i in range(len(fn.inputs)):
            for bad in BAD_VALUES:
                args = list(good)
                try:
                    args[i] = bad
                    args = [a if isinstance(c, gr.State) else c.preprocess(a)
                            for a, c in zip(args, fn.inputs, strict=True)]  # fmt: skip
                    fn.fn(*args)
                except gr.Error as e:
                    if not str(e.message).strip():
                        silent.append((fn.api_name, i, bad, "empty gr.Error"))
                except Exception as e:  # noqa: BLE001 - what we are hunting
                    silent.append((fn.api_name, i, bad, f"{type(e).__name__}: {e}"))
    assert not silent, silent[:10]
