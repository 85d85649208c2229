"""The Audio tab: record, upload or type a phrase that eSpeak NG speaks, then see

* the log-mel spectrogram with the keyword spotter's attention over it (time x frequency),
* the transcription with its cross-attention alignment (tokens x time) and DTW path,
* the word timestamps on the waveform, beside the true starts for synthesised phrases,
* the audio itself.

Handlers are plain functions (``load_file``, ``load_phrase``, ``analyse``) testable without a
server. Reading and synthesis run on a quick queue; the models run on their own queue
(``audio_models``) chained with ``.success()``, so a long request never blocks a quick one and
two requests never record attention on the same modules at once. Limits: files up to
10 MB, clips of 0.1 s to 30 s, speech up to the recogniser's 3 s window after silence is
trimmed, phrases up to 200 characters.
"""

from __future__ import annotations

import os
from typing import Any

import gradio as gr
import numpy as np
import torch

from attnlab.apps.guard import Slider, as_choice, as_int, as_text, refuse, user_errors
from attnlab.apps.views.audio_plots import alignment_view, word_timeline
from attnlab.apps.views.overlays import spectrogram_overlay
from attnlab.domains.audio import classify, read_audio, recognize, synthesize, voice_variants
from attnlab.domains.audio.data import prepare

__all__ = ["load_file", "load_phrase", "analyse", "build", "VOICES", "MAX_PHRASE",
           "QUEUE_INPUT", "QUEUE_MODELS", "MAX_FILE_SIZE"]  # fmt: skip

MAX_PHRASE = 200
#: upload limit: Blocks.launch takes max_file_size (the suite and __main__ pass it);
#: load_file checks it too, so a launch without it still refuses bigger files
MAX_FILE_SIZE = "10mb"
MAX_FILE_BYTES = 10 * 2**20
QUEUE_INPUT, QUEUE_MODELS = "audio_input", "audio_models"
ATTENTION_KINDS = ("class token, last layer", "rollout")
EXAMPLES = ["three seven two nine", "stop go left", "yes no up down", "eight five zero"]


class AudioInput(gr.Audio):
    """``gr.Audio`` (file path) that refuses a malformed payload with a sentence."""

    def get_block_name(self) -> str:
        return "audio"  # the page draws it with gr.Audio's own front end

    def preprocess(self, payload: Any) -> Any:
        if payload is None:
            return None
        path = payload.get("path") if isinstance(payload, dict) else getattr(payload, "path", None)
        if not isinstance(path, str) or not path:
            raise refuse("The audio field needs a recording or an uploaded file (wav, flac, ogg "
                         "or mp3).")  # fmt: skip
        if isinstance(payload, dict):
            from gradio.data_classes import FileData

            payload = FileData(**payload)
        return super().preprocess(payload)


def _voices() -> list[str]:
    return [f"en+{v}" for v in voice_variants()]


VOICES = _voices()


def _clip(wave: Any, sr: int, truth: list[tuple[str, float]] | None, source: str) -> dict:
    x = prepare(wave, sr)  # checks shape, length, level; 16 kHz mono
    return {"wave": x.numpy(), "sr": 16000, "truth": truth, "source": source}


@user_errors
def load_file(path: Any) -> tuple[dict, tuple[int, np.ndarray]]:
    """A recording or an upload (wav, flac, ogg, mp3) as the analysis state and playback."""
    if not isinstance(path, str) or not path:
        raise refuse("No audio yet: record with the microphone or upload a wav, flac, ogg or "
                     "mp3 file.")  # fmt: skip
    if os.path.isfile(path) and os.path.getsize(path) > MAX_FILE_BYTES:
        raise refuse(f"The file is {os.path.getsize(path) / 2**20:.0f} MB; upload at most 10 MB.")
    wave, sr = read_audio(path)
    state = _clip(wave, sr, None, "recording")
    return state, (16000, state["wave"])


@user_errors
def load_phrase(
    text: Any, voice: Any, rate: Any, pitch: Any
) -> tuple[dict, tuple[int, np.ndarray]]:
    """A typed phrase spoken by eSpeak NG, with its true word starts."""
    text = as_text(text, "Phrase", MAX_PHRASE)
    voice = as_choice(voice, "Voice", VOICES)
    rate = as_int(rate, "Rate", 80, 400)
    pitch = as_int(pitch, "Pitch", 0, 100)
    wave, sr, starts = synthesize(text, voice=voice, rate=rate, pitch=pitch)
    state = _clip(wave, sr, [(w, float(s)) for w, s in starts], f"eSpeak NG {voice}")
    return state, (16000, state["wave"])


def _check_state(state: Any) -> tuple[np.ndarray, list | None]:
    if not isinstance(state, dict) or not isinstance(state.get("wave"), np.ndarray):
        raise refuse("Nothing to analyse yet: record, upload or speak a phrase first.")
    wave = state["wave"]
    if wave.ndim != 1 or wave.dtype != np.float32 or state.get("sr") != 16000:
        raise refuse("The stored clip is malformed: load the audio again.")
    truth = state.get("truth")
    if truth is not None and not isinstance(truth, list):
        raise refuse("The stored word starts are malformed: speak the phrase again.")
    return wave, truth


def _words_table(words: list[tuple[str, float, float]], truth: list | None) -> str:
    if not words:
        return "*No words recognised.*"
    rows = ["| word | start (s) | end (s) | true start (s) | error (ms) |", "|---|---|---|---|---|"]
    errs = []
    truth = list(truth or [])
    paired = len(truth) == len(words)
    for i, (w, s, e) in enumerate(words):
        if paired:
            t = float(truth[i][1])
            errs.append(abs(s - t) * 1000)
            rows.append(f"| {w} | {s:.2f} | {e:.2f} | {t:.2f} | {errs[-1]:.0f} |")
        else:
            rows.append(f"| {w} | {s:.2f} | {e:.2f} | | |")
    if errs:
        rows.append(f"\nMean word-start error: **{np.mean(errs):.0f} ms** over {len(errs)} words.")
    elif truth:
        rows.append("\n*The recognised words do not pair one to one with the spoken ones: no "
                    "error is computed.*")  # fmt: skip
    return "\n".join(rows)


@user_errors
def analyse(state: Any, attention: Any) -> tuple[Any, dict, str, Any, Any, str]:
    """Both models on the loaded clip: (spectrogram overlay, keyword probabilities,
    transcription, alignment picture, waveform with word times, words table)."""
    wave, truth = _check_state(state)
    kind = as_choice(attention, "Attention", ATTENTION_KINDS)
    x = torch.from_numpy(wave)
    kw = classify(x, 16000)
    from attnlab.domains.audio.infer import keyword_model

    layout = keyword_model().layout()
    weights = kw.cls_attention if kind == ATTENTION_KINDS[0] else kw.rollout
    spec = kw.spec.numpy()[:, : layout.num_frames]
    over = spectrogram_overlay(spec, weights, layout, freqs=None,
                               title=f"keyword: {kw.label} ({kw.probs[kw.label]:.0%}); window "
                                     f"from {kw.offset:.2f} s").image  # fmt: skip
    try:
        tr = recognize(x, 16000)
    except ValueError as err:
        raise refuse(f"{err}.") from None
    spp = 2 * 160 / 16000
    if tr.matrix.size:
        align = alignment_view(tr.matrix, tr.tokens, spp, path=tr.path, offset=tr.offset,
                               title="cross-attention of the alignment heads "
                                     f"{tr.heads} (standardised, filtered)").image  # fmt: skip
    else:
        align = None
    timeline = word_timeline(
        wave, 16000, tr.words, truth, title=f"“{tr.text}”" if tr.text else "no words recognised"
    ).image
    top = dict(sorted(kw.probs.items(), key=lambda kv: -kv[1])[:5])
    table = _words_table(tr.words, truth)
    if len(tr.words) > 1:
        heard = (keyword_model().config.frames - 1) * 160 / 16000  # the spotter's window
        n = sum(not w.startswith("_") for w in kw.probs)  # the keywords, not _unknown_ etc.
        table += (f"\n\n*The keyword spotter names one of its {n} keywords for the "
                  f"loudest {heard:g} s ({kw.offset:.2f}–{kw.offset + heard:.2f} s); this clip "
                  f"holds {len(tr.words)} words: speak one keyword alone to test it.*")  # fmt: skip
    return over, top, tr.text, align, timeline, table


def build() -> gr.Blocks:
    """The Audio tab."""
    with gr.Blocks(title="attnlab: audio") as demo:
        gr.Markdown(
            "## Audio\nRecord, upload (wav, flac, ogg, mp3; up to 10 MB, 0.1 to 30 s) or type a "
            "phrase for eSpeak NG. The keyword spotter knows 20 words (zero..nine, yes, no, up, "
            "down, left, right, on, off, stop, go); the recogniser reads sequences of them, up "
            "to 3 s of speech. Word times come from the recogniser's cross-attention. Both "
            "learnt from synthetic speech only: other sounds still come out as their words."
        )
        state = gr.State(None)
        with gr.Row():
            with gr.Column():
                audio_in = AudioInput(sources=["microphone", "upload"], type="filepath",
                                    label="Recording or file")  # fmt: skip
                file_btn = gr.Button("Analyse the recording", variant="primary")
            with gr.Column():
                phrase = gr.Textbox(EXAMPLES[0], label="Phrase", max_length=MAX_PHRASE,
                                    elem_id="audio-phrase",
                                    info="e.g. " + "; ".join(EXAMPLES[1:]))  # fmt: skip
                with gr.Row():
                    voice = gr.Dropdown(VOICES, value="en+f3", label="Voice")
                    rate = Slider(80, 400, value=160, step=1, label="Rate")
                    pitch = Slider(0, 100, value=50, step=1, label="Pitch")
                speak_btn = gr.Button("Speak and analyse", variant="primary", elem_id="audio-speak")
        attention = gr.Radio(list(ATTENTION_KINDS), value=ATTENTION_KINDS[0], label="Attention")
        playback = gr.Audio(label="Playback", interactive=False)
        with gr.Row():
            spec_img = gr.Image(label="Log-mel with the keyword spotter's attention", type="pil",
                                elem_id="audio-spec", scale=3)  # fmt: skip
            probs = gr.Label(label="Keyword", num_top_classes=5, scale=1)
        text = gr.Textbox(label="Transcription", interactive=False, elem_id="audio-text")
        align_img = gr.Image(label="Cross-attention alignment (tokens x time)", type="pil")
        time_img = gr.Image(label="Word timestamps on the waveform", type="pil",
                            elem_id="audio-time")  # fmt: skip
        table = gr.Markdown(elem_id="audio-table")
        outs = [spec_img, probs, text, align_img, time_img, table]

        file_btn.click(load_file, [audio_in], [state, playback], api_name="audio_load_file",
                       concurrency_id=QUEUE_INPUT).success(
            analyse, [state, attention], outs, api_name="audio_analyse_file",
            concurrency_id=QUEUE_MODELS, concurrency_limit=1)  # fmt: skip
        speak_btn.click(load_phrase, [phrase, voice, rate, pitch], [state, playback],
                        api_name="audio_speak", concurrency_id=QUEUE_INPUT).success(
            analyse, [state, attention], outs, api_name="audio_analyse_phrase",
            concurrency_id=QUEUE_MODELS, concurrency_limit=1)  # fmt: skip
        attention.change(analyse, [state, attention], outs, api_name="audio_attention",
                         concurrency_id=QUEUE_MODELS, concurrency_limit=1)  # fmt: skip
    return demo


if __name__ == "__main__":
    build().launch(server_name="127.0.0.1", max_file_size=MAX_FILE_SIZE)
