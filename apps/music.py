"""Music demo: a Gradio tab to see a Music Transformer (Huang et al. 2018) read a piece.

- **Piece**: pick a Bach chorale (held-out ones first) or upload a MIDI/MusicXML file; its
  first events become a piano roll. Click a note (or choose it with the slider) to draw arcs to
  the notes it attends to, for one layer and the chosen heads (the mean over them), the top-K
  strongest, hiding those under a cut-off; computed live from the shipped ``music/relative`` or
  ``music/absolute`` model. Listen to it.
- **Continue**: both models continue the same prime (temperature, top-k, top-p, seed; KV
  cache) side by side; step through the continuation note by note with the attention each note
  was chosen with, listen to both and download the MIDI files.

Handlers are plain functions of form values, tested without a server; each refusal is a
``gr.Error`` saying what to change. ``build()`` returns the ``gr.Blocks``.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np

from attnlab.apps import guard
from attnlab.apps import music_lab as lab
from attnlab.apps.guard import as_choice, as_float, as_int
from attnlab.domains.music.generate import MAX_HOLD, generate
from attnlab.domains.music.synth import SAMPLE_RATE, render
from attnlab.domains.music.tokens import decode, tokens_to_notes

__all__ = ["load_piece", "note_view", "click_note", "generate_pair", "generation_step",
           "build", "CONCURRENCY", "MAX_FILE_SIZE"]  # fmt: skip

#: the quick views share one queue; generation runs on its own, so it never blocks them
CONCURRENCY = {"view": "music_view", "generate": "music_generate", "steps": "music_steps"}
AUDIO_SECONDS = 60.0
#: upload limit: Blocks.launch takes max_file_size; the suite and __main__ pass it
MAX_FILE_SIZE = lab.MAX_UPLOAD


def _refusals(what: str):
    return lambda fn: guard.user_errors(fn, what=what)


def _heads(value: Any, n: int) -> list[int]:
    if value is None or isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise guard.refuse(f"Heads must be a list of head numbers, got {value!r:.40}: tick "
                           "at least one head.")  # fmt: skip
    heads = set()
    for h in value:
        heads.add(as_int(h, "Head", 0, n - 1))
    if not heads:
        raise guard.refuse("No head is ticked: tick at least one head.")
    return sorted(heads)


def _view_args(na, note, layer, heads, top_k, cutoff, n_notes: int):
    note = as_int(note, "Note", 0, max(0, n_notes - 1))
    layer = as_int(layer, "Layer", 0, na.num_layers - 1)
    heads = _heads(heads, na.num_heads)
    top_k = as_int(top_k, "Top-K arcs", 1, 64)
    cutoff = as_float(cutoff, "Weight cut-off", 0.0, 1.0)
    return note, layer, heads, top_k, cutoff


def _audio(tokens: list[int], tempo: float) -> tuple[int, np.ndarray]:
    samples = render(tokens_to_notes(tokens), tempo, max_seconds=AUDIO_SECONDS)
    return SAMPLE_RATE, (np.clip(samples, -1, 1) * 32767).astype(np.int16)


def _state(piece, n_tokens: int, kind: str) -> dict[str, Any]:
    tokens = piece.tokens()
    cut = tokens[:n_tokens]
    if not tokens_to_notes(cut):
        raise guard.refuse("The first events hold no complete note: read more events.")
    name = piece.name
    if name.lower().endswith((".mid", ".midi", ".mxl", ".musicxml", ".xml")):
        name = name.rsplit(".", 1)[0]
    return {"tokens": cut, "total": len(tokens), "tempo": piece.tempo, "kind": kind,
            "name": name or "piece", "dropped": piece.dropped}  # fmt: skip


def _remember(state: dict, view) -> None:
    """Keep the drawn plot's box and limits: the next click is read against this drawing."""
    state["view"] = {"axes": view.data["axes"], "size": list(view.image.size)}


def _check_state(state: Any, what: str = "Load a piece first") -> dict[str, Any]:
    if not isinstance(state, dict) or not isinstance(state.get("tokens"), list):
        raise guard.refuse(f"{what}: there is nothing to show yet.")
    return state


def _piece_view(state: dict, note: int, layer, heads, top_k, cutoff):
    na = lab.attention(state["kind"], state["tokens"])
    note, layer, heads, top_k, cutoff = _view_args(na, note, layer, heads, top_k, cutoff,
                                                   len(na.notes))  # fmt: skip
    n = na.notes[note]
    title = (f"music/{state['kind']}  layer {layer}  heads {','.join(map(str, heads))}: "
             f"note {note} ({na.layout().describe(note)['label']}, beat "
             f"{n['start'] / 4:g})")  # fmt: skip
    view = lab.roll(na, note, layer, heads, top_k, cutoff, title=title)
    share = na.event_share(note, layer, heads)
    keys = ", ".join(f"{na.layout().describe(j)['label']}@{na.notes[j]['start'] / 4:g} "
                     f"({v:.3f})" for j, v in view.data["keys"][:5])  # fmt: skip
    info = (f"**{state['name']}**: {len(na.notes)} notes in {len(na.tokens)} events. Note "
            f"{note} attends most to {keys or 'itself'}; {share:.0%} of its attention goes to "
            "time-shift and velocity events (not drawn).")  # fmt: skip
    return view, info


@_refusals("read the piece")
def load_piece(chorale: Any, upload: Any, kind: Any, n_tokens: Any, note: Any = 0,
               layer: Any = 0, heads: Any = None, top_k: Any = 12, cutoff: Any = 0.0):  # fmt: skip
    """Read a chorale (or the upload, when there is one) and draw its attention.

    Returns: (piano roll, info, audio, state, note slider update).
    """
    kind = as_choice(kind, "Model", lab.KINDS)
    n = as_int(n_tokens, "Events read", 16, lab.MAX_VIEW_TOKENS)
    piece = lab.read_upload(upload) if upload else lab.chorale(chorale)
    state = _state(piece, n, kind)
    na = lab.attention(kind, state["tokens"])
    heads = list(range(na.num_heads)) if heads is None else heads
    note = min(as_int(note, "Note", 0, 10**6), len(na.notes) - 1)
    view, info = _piece_view(state, note, layer, heads, top_k, cutoff)
    if state["total"] > n or piece.dropped:
        info += (f" Showing the first {n} of {state['total']} events"
                 + (f"; {piece.dropped} notes past the {4000}-note limit were left out"
                    if piece.dropped else "") + ".")  # fmt: skip
    _remember(state, view)
    slider = gr.update(maximum=len(na.notes) - 1, value=note)
    return view.image, info, _audio(state["tokens"], piece.tempo), state, slider


@_refusals("draw the note's attention")
def note_view(state: Any, note: Any, layer: Any, heads: Any, top_k: Any, cutoff: Any):
    """Arcs from one note of the loaded piece. Returns (piano roll, info, state): the state
    keeps where this drawing put the plot, for clicks on it."""
    state = _check_state(state)
    view, info = _piece_view(state, note, layer, heads, top_k, cutoff)
    _remember(state, view)
    return view.image, info, state


@_refusals("find the clicked note")
def click_note(state: Any, layer: Any, heads: Any, top_k: Any, cutoff: Any,
               evt: gr.SelectData = None):  # fmt: skip
    """A click on the piano roll: the note under it becomes the query.
    Returns (piano roll, info, note slider value, state)."""
    state = _check_state(state)
    index = getattr(evt, "index", None)
    if not isinstance(index, (list, tuple)) or len(index) != 2:
        raise guard.refuse("Click on a note of the piano roll (or choose one with the slider).")
    x, y = (as_float(v, "Click position", -1e6, 1e6) for v in index)
    na = lab.attention(state["kind"], state["tokens"])
    view = state.get("view") or {}
    size = tuple(view.get("size") or (900, 450))
    note = lab.note_at(view, na, x, y, size)
    if note is None:
        raise guard.refuse("No note there: click on a note of the piano roll.")
    image, info, state = note_view(state, note, layer, heads, top_k, cutoff)
    return image, info, note, state


@_refusals("continue the piece")
def generate_pair(state: Any, n_prime: Any, n_new: Any, temperature: Any, top_k: Any,
                  top_p: Any, seed: Any):  # fmt: skip
    """Both models continue the loaded piece's first ``n_prime`` events with the same sampler.

    Returns: (info, relative audio, absolute audio, relative MIDI, absolute MIDI, state, step
    slider update).
    """
    state = _check_state(state, "Load a piece first (the prime is its beginning)")
    n_prime = as_int(n_prime, "Prime events", 1, lab.MAX_PRIME_TOKENS)
    n_new = as_int(n_new, "New events", 1, lab.MAX_NEW_TOKENS)
    temperature = as_float(temperature, "Temperature", 0.0, 2.0)
    top_k = as_int(top_k, "Sampling top-k", 0, 320)
    top_p = as_float(top_p, "Top-p", 0.0, 1.0, open_lo=True)
    seed = as_int(seed, "Seed", 0, 2**31 - 1)
    prime = state["tokens"][:n_prime]
    out: dict[str, Any] = {"prime_len": len(prime), "tempo": state["tempo"],
                           "name": state["name"]}  # fmt: skip
    lines, audio, files = [], [], []
    for kind in lab.KINDS:
        m = lab.model(kind)
        with lab._model_locks[kind]:
            g = generate(m, prime, n_new, temperature=temperature, top_k=top_k, top_p=top_p,
                         seed=seed)  # fmt: skip
        out[kind] = g.tokens
        na = lab.attention(kind, g.tokens)  # computed here, on the long queue
        new_notes = [i for i, n in enumerate(na.notes) if n["on"] >= len(prime)]
        out[f"{kind}_new"] = new_notes
        ended = (f" ({len(g.forced)} held past {MAX_HOLD} sixteenths and ended for it)"
                 if g.forced else "")  # fmt: skip
        lines.append(f"music/{kind}: {len(new_notes)} new notes in {n_new} events{ended}")
        audio.append(_audio(g.tokens, state["tempo"]))
        files.append(lab.midi_path(decode(g.tokens, state["tempo"]),
                                   f"{state['name']}-{kind}"))  # fmt: skip
    most = max(len(out["relative_new"]), len(out["absolute_new"]), 1)
    info = (f"Prime: the first {len(prime)} events of **{state['name']}**. "
            + "; ".join(lines) + ". Step through the new notes with the slider.")  # fmt: skip
    slider = gr.update(maximum=most, value=1, interactive=True)
    return info, audio[0], audio[1], files[0], files[1], out, slider


def _step_view(out: dict, kind: str, step: int, layer, heads, top_k, cutoff):
    new = out[f"{kind}_new"]
    if not new:
        return None, f"music/{kind} generated no note."
    j = new[min(step, len(new)) - 1]
    na = lab.attention(kind, out[kind])
    note, layer, heads, top_k, cutoff = _view_args(na, j, layer, heads, top_k, cutoff,
                                                   len(na.notes))  # fmt: skip
    title = (f"music/{kind}: new note {min(step, len(new))} of {len(new)} "
             f"({na.layout().describe(note)['label']}), layer {layer}")  # fmt: skip
    view = lab.roll(na, note, layer, heads, top_k, cutoff, upto=note + 1, title=title)
    w = na.note_weights(note, layer, heads, note + 1)
    prime_notes = sum(1 for n in na.notes[: note + 1] if n["on"] < out["prime_len"])
    share = float(w[:prime_notes].sum() / max(w.sum(), 1e-12))
    return view.image, f"music/{kind}: {share:.0%} of the note weight on the prime."


@_refusals("show the generated note")
def generation_step(out: Any, step: Any, layer: Any, heads: Any, top_k: Any, cutoff: Any):
    """The ``step``-th generated note of each model with its attention over the notes so far.
    Returns (relative roll, absolute roll, info)."""
    if not isinstance(out, dict) or "relative" not in out:
        raise guard.refuse("Generate a continuation first: there is nothing to step through.")
    step = as_int(step, "Generated note", 1, lab.MAX_NEW_TOKENS)
    rel, rel_info = _step_view(out, "relative", step, layer, heads, top_k, cutoff)
    ab, ab_info = _step_view(out, "absolute", step, layer, heads, top_k, cutoff)
    return rel, ab, f"{rel_info} {ab_info}"


def build() -> gr.Blocks:
    """The Music demo as a ``gr.Blocks``. The default chorale is read when the page opens."""
    layers, n_heads = lab.model_shape()
    head_choices = [str(h) for h in range(n_heads)]
    try:
        choices = lab.chorale_choices()
    except Exception:  # noqa: BLE001 -- music21's corpus missing: uploads still work
        choices = []
    cid = CONCURRENCY
    with gr.Blocks(title="attnlab: Music") as demo:
        gr.Markdown(
            "### A Music Transformer reading Bach\nPick a chorale (the *test* ones were "
            "never seen in training) or upload a MIDI/MusicXML file (up to "
            f"{lab.MAX_UPLOAD}, {4000} notes). Click a note on the piano roll, or "
            "choose it with the slider, to see which notes it attends to."
        )
        with gr.Row():
            chorale = gr.Dropdown(
                choices,
                value=choices[0] if choices else None,
                label="chorale",
                elem_id="music-chorale",
                scale=2,
            )
            upload = gr.File(
                label="or upload MIDI / MusicXML",
                type="filepath",
                file_types=[".mid", ".midi", ".mxl", ".musicxml", ".xml"],
                elem_id="music-upload",
                scale=2,
            )
            with gr.Column(scale=2):
                kind = gr.Radio(
                    list(lab.KINDS), value="relative", label="model", elem_id="music-kind"
                )
                n_tokens = guard.Slider(
                    16,
                    lab.MAX_VIEW_TOKENS,
                    512,
                    step=16,
                    label="events read",
                    elem_id="music-events",
                )
                load = gr.Button("Read", variant="primary", elem_id="music-load")
        with gr.Row():
            note = guard.Slider(0, 400, 0, step=1, label="note", elem_id="music-note", scale=3)
            layer = guard.Slider(0, layers - 1, layers - 1, step=1, label="layer",
                                 elem_id="music-layer")  # fmt: skip
            heads = guard.CheckboxGroup(head_choices, value=head_choices, label="heads",
                                        elem_id="music-heads")  # fmt: skip
            top_k = guard.Slider(1, 64, 12, step=1, label="top-K arcs")
            cutoff = guard.Slider(
                0.0, 1.0, 0.0, step=0.05, label="weight cut-off (share of the strongest)"
            )
        roll = gr.Image(
            label="piano roll with attention arcs (click a note)",
            type="pil",
            format="png",
            interactive=False,
            elem_id="music-roll",
        )
        info = gr.Markdown(elem_id="music-info")
        audio = gr.Audio(
            label="listen (built-in synthesiser)",
            type="numpy",
            interactive=False,
            elem_id="music-audio",
        )
        state = gr.State(None)
        view_in = [state, note, layer, heads, top_k, cutoff]
        load_args = dict(fn=load_piece,
                         inputs=[chorale, upload, kind, n_tokens, note, layer, heads, top_k,
                                 cutoff],
                         outputs=[roll, info, audio, state, note],
                         concurrency_id=cid["view"], concurrency_limit=1)  # fmt: skip
        load.click(api_name="music_load", **load_args)
        demo.load(api_name="music_load_default", **load_args)
        note_args = dict(fn=note_view, inputs=view_in, outputs=[roll, info, state],
                         concurrency_id=cid["view"], concurrency_limit=1)  # fmt: skip
        note.release(api_name="music_note", trigger_mode="always_last", **note_args)
        layer.release(api_name="music_layer", trigger_mode="always_last", **note_args)
        heads.input(api_name="music_heads", trigger_mode="always_last", **note_args)
        top_k.release(api_name="music_top_k", trigger_mode="always_last", **note_args)
        cutoff.release(api_name="music_cutoff", trigger_mode="always_last", **note_args)
        roll.select(
            click_note,
            [state, layer, heads, top_k, cutoff],
            [roll, info, note, state],
            api_name="music_click",
            concurrency_id=cid["view"],
            concurrency_limit=1,
        )

        gr.Markdown(
            "### Continue the piece: relative vs absolute positions\nBoth models "
            "continue the same prime with the same sampler (KV cache). Step through "
            "the new notes: each arc shows what the note was chosen with."
        )
        with gr.Row():
            n_prime = guard.Slider(16, lab.MAX_PRIME_TOKENS, 256, step=16, label="prime events")
            n_new = guard.Slider(16, lab.MAX_NEW_TOKENS, 256, step=16, label="new events")
            temp = guard.Slider(0.0, 2.0, 1.0, step=0.05, label="temperature (0 = greedy)")
            s_top_k = guard.Number(0, precision=0, minimum=0, label="top-k (0 = off)")
            top_p = guard.Slider(0.05, 1.0, 0.95, step=0.05, label="top-p")
            seed = guard.Number(0, precision=0, minimum=0, label="seed")
            gen = gr.Button("Continue", variant="primary", elem_id="music-generate")
        g_info = gr.Markdown(elem_id="music-gen-info")
        step = guard.Slider(
            1,
            lab.MAX_NEW_TOKENS,
            1,
            step=1,
            label="generated note",
            interactive=False,
            elem_id="music-step",
        )
        with gr.Row():
            rel_roll = gr.Image(
                label="music/relative",
                type="pil",
                format="png",
                interactive=False,
                elem_id="music-rel-roll",
            )
            abs_roll = gr.Image(
                label="music/absolute",
                type="pil",
                format="png",
                interactive=False,
                elem_id="music-abs-roll",
            )
        s_info = gr.Markdown(elem_id="music-step-info")
        with gr.Row():
            rel_audio = gr.Audio(label="music/relative", type="numpy", interactive=False)
            abs_audio = gr.Audio(label="music/absolute", type="numpy", interactive=False)
        with gr.Row():
            rel_midi = gr.File(
                label="MIDI: music/relative", interactive=False, elem_id="music-rel-midi"
            )
            abs_midi = gr.File(
                label="MIDI: music/absolute", interactive=False, elem_id="music-abs-midi"
            )
        gen_state = gr.State(None)
        step_args = dict(fn=generation_step, inputs=[gen_state, step, layer, heads, top_k,
                                                     cutoff],
                         outputs=[rel_roll, abs_roll, s_info], concurrency_id=cid["steps"],
                         concurrency_limit=2)  # fmt: skip
        gen.click(generate_pair, [state, n_prime, n_new, temp, s_top_k, top_p, seed],
                  [g_info, rel_audio, abs_audio, rel_midi, abs_midi, gen_state, step],
                  api_name="music_generate", concurrency_id=cid["generate"],
                  concurrency_limit=1).success(api_name="music_step_after_generate",
                                               **step_args)  # fmt: skip
        step.release(api_name="music_step", trigger_mode="always_last", **step_args)
    return demo


if __name__ == "__main__":
    build().launch(max_file_size=MAX_FILE_SIZE)
