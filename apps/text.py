"""Text demo: a Gradio tab to see attention in a pretrained sentence encoder and in small
causal language models trained here.

- **Sentence**: all-MiniLM-L6-v2 reads a sentence (up to 512 tokens); BertViz-style head view
  (Vig 2019; hover a token), the model view (every layer x head), attention-rollout saliency
  (Abnar & Zuidema 2020) on the text, and the head gallery: every head named by what it
  measurably does (previous-token, sink, broad...; Clark et al. 2019).
- **Two sentences**: cosine similarity of the two embeddings, the pair read as one input
  ``[CLS] a [SEP] b [SEP]`` and the block of attention from a's tokens to b's; ablate a head
  and see the similarity move (Michel et al. 2019, "Are Sixteen Heads Really Better than One?").
- **Generate**: the shipped character model ``text/chars`` samples text (temperature, top-k,
  top-p, seed; KV cache); a slider steps through the generated characters with the attention
  each one was chosen with.
- **Induction**: the shipped ``text/induction`` model's training checkpoints: the loss curve
  with the chosen step marked beside the heads at that step (Olsson et al. 2022).
- **Agreement**: the shipped ``text/agreement`` model on a sentence of its grammar: the verb's
  attention to its subject per head, the verb it prefers, and that preference with a head
  ablated (Linzen et al. 2016).

Handlers are plain functions of form values, tested without a server; each refusal is a
``gr.Error`` saying what to change. ``build()`` returns the ``gr.Blocks``.
"""

from __future__ import annotations

import json
import math
import warnings
from html import escape
from typing import Any

import gradio as gr
import numpy as np
import torch

from attnlab.apps import guard
from attnlab.apps import text_lab as lab
from attnlab.apps.text_lab import as_choice, as_float, as_index_or_mean, as_int, as_text, refusals
from attnlab.apps.views import (
    head_gallery,
    head_gallery_html,
    head_view_html,
    head_view_js,
    heatmap,
    lut,
    model_view,
    plot_checkpoint,
)
from attnlab.core.analysis import attention_rollout
from attnlab.core.capture import ablate_heads, record_attention

__all__ = [
    "analyse_sentence", "sentence_gallery", "compare_pair", "ablate_pair", "generate_text",
    "generation_step", "induction_checkpoint", "agreement_view", "agreement_ablate", "build",
    "CONCURRENCY",
]  # fmt: skip

#: one queue per model: listeners sharing a model share its queue; the slow head-gallery
#: scoring and generation never hold the queue of the quick per-sentence views
CONCURRENCY = {
    "encoder": "text_encoder",  # sentence views, pair, ablation (MiniLM, < 2 s each)
    "gallery": "text_gallery",  # head gallery: its own MiniLM copy, scoring once (~4 s)
    "generate": "text_generate",  # text/chars sampling
    "steps": "text_steps",  # stepping through a generation: no model, reads the state
    "induction": "text_induction",  # text/induction checkpoints
    "agreement": "text_agreement",  # text/agreement
}
FUSIONS = ("mean", "max", "min")
HV_TOP_K, HV_ENTRIES = 6, 120_000  # head view: keys per query row, entries over all heads
HV_MAX_TOKENS = 256  # longer inputs are pooled in blocks for the head view (~1 s at 512)
MODES = ("zero", "mean")
SWEEP_MAX_TOKENS = 160  # ablation sweeps every head of the layer only for pairs this short


# ------------------------------------------------------------------------------------------
# small views
# ------------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


def _grid_html(values: np.ndarray, title: str, col_prefix: str = "H",
               highlight: tuple[int, int] | None = None) -> str:  # fmt: skip
    """A (layers, heads) table of numbers in [0, 1], each cell coloured by the shared LUT."""
    v = np.asarray(values, dtype=np.float64)
    table = lut()
    out = [
        f'<div class="attnlab-grid"><div style="font-weight:600;margin:4px 0">'
        f'{escape(title)}</div><table style="border-collapse:collapse"><tr><th></th>'
    ]
    out += [f"<th>{col_prefix}{h}</th>" for h in range(v.shape[1])]
    out.append("</tr>")
    for li in range(v.shape[0]):
        out.append(f"<tr><th>L{li}</th>")
        for hi in range(v.shape[1]):
            x = v[li, hi]
            rgb = table[int(np.clip(0 if not np.isfinite(x) else x, 0, 1) * 255)]
            ink = "#000" if (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) > 140 else "#fff"
            border = "3px solid #d55e00" if highlight == (li, hi) else "1px solid #fff"
            out.append(
                f'<td style="padding:3px 6px;text-align:center;font:12px monospace;'
                f'background:rgb({rgb[0]},{rgb[1]},{rgb[2]});color:{ink};border:{border}"'
                f">{_fmt(x)}</td>"
            )
        out.append("</tr>")
    out.append("</table></div>")
    return "".join(out)


def _highlight(text: str, offsets: list[tuple[int, int]], special: np.ndarray,
               scores: np.ndarray, truncated: bool) -> list[tuple[str, float | None]]:  # fmt: skip
    """The text as (piece, score) spans for ``gr.HighlightedText``: each token's characters
    (the tokenizer's offsets) with its score, the gaps between tokens unscored; special tokens
    are left out."""
    out: list[tuple[str, float | None]] = []
    cursor = 0
    for (a, b), sp, s in zip(offsets, special, scores, strict=True):
        if sp or b <= a or a < cursor:
            continue
        if a > cursor:
            out.append((text[cursor:a], None))
        out.append((text[a:b], round(float(s), 3)))
        cursor = b
    if truncated:
        out.append((" … [not read: the encoder reads the first 512 tokens]", None))
    elif cursor < len(text):
        out.append((text[cursor:], None))
    return out


def _special(tokens: list[str]) -> np.ndarray:
    return np.array([t.startswith("[") and t.endswith("]") for t in tokens])


def _label(tok: str) -> str:
    return {" ": "␣", "\n": "⏎", "\t": "⇥"}.get(tok, tok)


# ------------------------------------------------------------------------------------------
# 1. one sentence: head view, model view, rollout saliency, head gallery
# ------------------------------------------------------------------------------------------
def _sentence_maps(enc, text: str, lock: str):
    with lab.model_lock(lock), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation is said in the page
        return enc.attention_maps(text)


@refusals("analyse the sentence")
def analyse_sentence(text, fusion="mean"):
    """Head view HTML, model view image, rollout saliency spans and a summary (Markdown)."""
    text = as_text(text, "The sentence", lab.MAX_CHARS)
    fusion = as_choice(fusion, "Rollout head fusion", FUSIONS)
    att = _sentence_maps(lab.encoder(), text, "encoder")
    w, tokens = att.weights, att.tokens
    n_layers, n_heads, L = w.shape[0], w.shape[1], w.shape[-1]
    hv = head_view_html(
        w,
        tokens,
        top_k=HV_TOP_K,
        max_entries=HV_ENTRIES,
        height=460,
        max_tokens=HV_MAX_TOKENS,
        title="Head view: hover a token (left: what it attends to; right: what "
        "attends to it); pick the layer, click a head to toggle it",
    )
    mv = model_view(w, thumb=56).image
    rollout = attention_rollout(w, head_fusion=fusion)  # (L, L)
    sal = rollout.mean(0).numpy()  # the embedding is the mean of every position's output
    special = _special(tokens)
    words = sal[~special] if (~special).any() else sal
    lo, hi = float(words.min()), float(words.max())
    sal_n = np.clip((sal - lo) / max(hi - lo, 1e-12), 0.0, 1.0)  # 0: least, 1: most salient
    offsets = lab.encoder().tokenizer.encode(text).offsets
    spans = _highlight(text, offsets, special, sal_n, att.truncated)
    top = sorted(((float(sal_n[i]), tokens[i]) for i in range(L) if not special[i]), reverse=True)[
        :6
    ]
    lines = [f"**{L} tokens** ({n_layers} layers × {n_heads} heads of {lab.ENCODER})."]
    if att.truncated:
        lines.append(
            f"⚠ The text is longer than {lab.MAX_TOKENS} tokens: the encoder read "
            f"only its first {lab.MAX_TOKENS} (special tokens included); the rest "
            "is not shown."
        )
    lines.append(
        "Most salient (rollout, "
        + fusion
        + " over heads): "
        + ", ".join(f"`{t}` {s:.2f}" for s, t in top)
        + "."
    )
    return hv, mv, spans, "\n\n".join(lines)


@refusals("draw the head gallery")
def sentence_gallery(text):
    """Head gallery image (this sentence's maps, every head's label from a scored corpus)
    and the labels as an HTML table."""
    text = as_text(text, "The sentence", lab.MAX_CHARS)
    scores = lab.encoder_scores()  # cached: the long part runs once
    att = _sentence_maps(lab.gallery_encoder(), text, "gallery_encoder")
    labels, best = scores.labels()
    view = head_gallery(
        att.weights,
        labels,
        best,
        thumb=56,
        title="Each head on this sentence, named by its behaviour on "
        f"{len(lab.GALLERY_CORPUS)} reference sentences",
    )
    n_layers, n_heads = scores.shape
    details = [[scores.scores(i, h) for h in range(n_heads)] for i in range(n_layers)]
    return view.image, head_gallery_html(labels, best, details=details)


# ------------------------------------------------------------------------------------------
# 2. two sentences: similarity and cross-sentence attention; 3. ablation
# ------------------------------------------------------------------------------------------
def _encoder_shape() -> tuple[int, int]:
    """(layers, heads) of MiniLM from its config.json (no model load at build time)."""
    try:
        from attnlab.domains.text import minilm_path

        cfg = json.loads((minilm_path() / "config.json").read_text())
        return int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"])
    except (OSError, KeyError, ValueError, TypeError):
        return 6, 12


def _pair_texts(a, b) -> tuple[str, str]:
    return (
        as_text(a, "Sentence A", lab.MAX_PAIR_CHARS),
        as_text(b, "Sentence B", lab.MAX_PAIR_CHARS),
    )


@refusals("compare the sentences")
def compare_pair(a, b, layer="mean", head="mean"):
    """Cosine similarity, a summary, the a→b attention heatmap and its head view."""
    a, b = _pair_texts(a, b)
    n_layers, n_heads = _encoder_shape()
    li = as_index_or_mean(layer, "Layer", n_layers)
    hi = as_index_or_mean(head, "Head", n_heads)
    sim = lab.similarity(a, b)
    pa = lab.pair_attention(a, b)
    if not pa.a_pos or not pa.b_pos:
        raise gr.Error(
            "One sentence has no tokens left after cutting the pair to 512 "
            "tokens: shorten the other sentence."
        )
    block = pa.block()  # (layers, heads, La, Lb)
    sel = block.mean(0) if li is None else block[li]
    two = sel.mean(0) if hi is None else sel[hi]
    a_tok = [pa.tokens[i] for i in pa.a_pos]
    b_tok = [pa.tokens[i] for i in pa.b_pos]
    lname = "mean of layers" if li is None else f"layer {li}"
    hname = "mean of heads" if hi is None else f"head {hi}"
    img = heatmap(
        two,
        a_tok,
        b_tok,
        title=f"A → B attention ({lname}, {hname})",
        cbar_label="attention weight from A's token to B's",
    ).image
    hv = head_view_html(
        block,
        a_tok,
        b_tok,
        top_k=HV_TOP_K,
        max_entries=HV_ENTRIES,
        height=360,
        title="A's tokens (left) attending to B's (right): hover",
    )
    share = float(two.sum(-1).mean())
    lines = [
        f"**Cosine similarity {sim:.4f}** (mean-pooled, normalised embeddings).",
        f"A has {len(a_tok)} tokens, B {len(b_tok)}; on average {share:.1%} of an A "
        f"token's attention goes to B ({lname}, {hname}); the rest stays in A or on "
        "[CLS]/[SEP].",
    ]
    if pa.truncated:
        lines.append("⚠ The pair was cut to 512 tokens for the cross-attention view.")
    return sim, "\n\n".join(lines), img, hv


def _ablated_similarity(enc, a: str, b: str, layer: int, heads: list[int], mode: str) -> float:
    with lab.model_lock("encoder"), ablate_heads(enc.model, {f"encoder.blocks.{layer}.attn": heads},
                                                  mode=mode):  # fmt: skip
        return lab.similarity(a, b)


@refusals("ablate the head")
def ablate_pair(a, b, layer=0, head=0, mode="zero"):
    """Similarity before and after ablating (layer, head), and a Markdown report (with every
    head of that layer ablated in turn, for short pairs)."""
    a, b = _pair_texts(a, b)
    n_layers, n_heads = _encoder_shape()
    li = as_int(layer, "Layer to ablate", 0, n_layers - 1)
    hi = as_int(head, "Head to ablate", 0, n_heads - 1)
    mode = as_choice(mode, "Ablation", MODES)
    enc = lab.encoder()
    before = lab.similarity(a, b)
    after = _ablated_similarity(enc, a, b, li, [hi], mode)
    how = "zeroed" if mode == "zero" else "its output replaced by its mean over positions"
    lines = [
        f"Ablating **layer {li}, head {hi}** ({how}): similarity {before:.4f} → "
        f"{after:.4f} (**{after - before:+.4f}**)."
    ]
    lengths = enc.encode([a, b]).lengths
    if int(lengths.max()) <= SWEEP_MAX_TOKENS:
        rows = ["| head | similarity | change |", "|---|---|---|"]
        for h in range(n_heads):
            s = after if h == hi else _ablated_similarity(enc, a, b, li, [h], mode)
            mark = "**" if h == hi else ""
            rows.append(f"| {mark}{h}{mark} | {s:.4f} | {s - before:+.4f} |")
        lines += [f"Every head of layer {li}, one at a time:", "\n".join(rows)]
    else:
        lines.append(f"(The per-head sweep runs for sentences up to {SWEEP_MAX_TOKENS} tokens.)")
    return before, after, "\n\n".join(lines)


# ------------------------------------------------------------------------------------------
# 4. generation and its steps
# ------------------------------------------------------------------------------------------
def _card_shape(name: str, default: tuple[int, int]) -> tuple[int, int]:
    try:
        cfg = lab.registry.read_card(name).get("config") or {}
        return int(cfg.get("depth", default[0])), int(cfg.get("num_heads", default[1]))
    except (ValueError, OSError, TypeError):
        return default


@refusals("generate text")
def generate_text(prompt, max_new_tokens=80, temperature=0.8, top_k=0, top_p=0.95, seed=0):
    """Generated text (prompt / generated spans), a summary, the state for stepping, and the
    step slider's update."""
    prompt = as_text(prompt, "The prompt", lab.MAX_PROMPT_CHARS)
    n = as_int(max_new_tokens, "Characters to generate", 1, lab.MAX_NEW_TOKENS)
    temp = as_float(temperature, "Temperature", 0.0, 5.0)
    k = as_int(top_k, "Top-k (0 = off)", 0, 100_000)
    p = as_float(top_p, "Top-p", 0.0, 1.0, open_lo=True)
    s = as_int(seed, "Seed", 0, 2**31 - 1)
    model = lab.causal_model("text/chars")
    if n >= model.config.max_len:
        raise gr.Error(
            f"The character model reads {model.config.max_len} characters: generate "
            f"at most {model.config.max_len - 1}."
        )
    vocab = model.vocab
    unknown = sorted({c for c in prompt if c not in vocab.index})
    if unknown:
        shown = " ".join(repr(c) for c in unknown[:8])
        raise gr.Error(
            f"The character model has never seen {shown}: remove or replace "
            "these characters in the prompt."
        )
    keep = model.config.max_len - n
    note = ""
    if len(prompt) > keep:
        prompt = prompt[-keep:]
        note = (
            f" The model reads {model.config.max_len} characters: the prompt was cut to "
            f"its last {keep}."
        )
    trace = lab.generate_traced(
        model,
        vocab.encode(prompt),
        n,
        temperature=temp,
        top_k=min(k, model.config.vocab_size) or None,
        top_p=None if p >= 1.0 else p,
        seed=s,
    )
    new = "".join(trace.tokens[trace.prompt_len :])
    spans = [(prompt, "prompt"), (new, "generated")]
    mean_p = float(np.mean(trace.chosen_p)) if trace.chosen_p else float("nan")
    md = (
        f"Generated **{len(new)} characters** with temperature {temp:g}, top-k "
        f"{k or 'off'}, top-p {p:g}, seed {s} (mean probability of the chosen character "
        f"{mean_p:.2f}).{note} Move the slider to see what each character was chosen from."
    )
    state = trace.to_state()
    return (
        spans,
        md,
        state,
        gr.update(minimum=1, maximum=len(new), value=len(new), interactive=True),
    )


@refusals("show that step")
def generation_step(state, step=1, layer="mean", head="mean"):
    """The attention over the prefix with which generated character ``step`` was chosen:
    scored spans (weight / max), a summary, and a heatmap of every layer x head."""
    if not isinstance(state, dict) or state.get("kind") != "generation" or not state.get("steps"):
        raise gr.Error("Generate some text first, then move the slider to step through it.")
    steps = state["steps"]
    i = as_int(step, "Step", 1, len(steps))
    w = np.asarray(steps[i - 1], dtype=np.float32)  # (layers, heads, S)
    li = as_index_or_mean(layer, "Layer", w.shape[0])
    hi = as_index_or_mean(head, "Head", w.shape[1])
    sel = w.mean(0) if li is None else w[li]
    row = sel.mean(0) if hi is None else sel[hi]
    S = w.shape[-1]
    tokens = state["tokens"]
    prefix, chosen = tokens[:S], tokens[S]
    scaled = row / max(float(row.max()), 1e-12)
    spans = [(_label(t), round(float(v), 3)) for t, v in zip(prefix, scaled, strict=True)]
    top = state["top"][i - 1]
    peak = int(row.argmax())
    md = (
        f"Step **{i} / {len(steps)}**: after {S} characters the model wrote "
        f"**{_label(chosen)!r}** (p = {state['chosen_p'][i - 1]:.2f}). Its top choices: "
        + ", ".join(f"{_label(t)!r} {q:.2f}" for t, q in top)
        + f". Strongest key: position {peak} ({_label(prefix[peak])!r}, weight "
        f"{row[peak]:.2f})."
    )
    rows = w.reshape(-1, S)
    names = [f"L{a}H{b}" for a in range(w.shape[0]) for b in range(w.shape[1])]
    img = heatmap(
        rows,
        names,
        [_label(t) for t in prefix],
        size=(9.0, 3.6),
        max_labels=48,
        title=f"step {i}: each head's attention over the prefix (rows: heads)",
        cbar_label="attention weight",
    ).image
    return spans, md, img


# ------------------------------------------------------------------------------------------
# 5. induction checkpoints
# ------------------------------------------------------------------------------------------
def _no_checkpoints() -> gr.Error:
    return gr.Error(
        "No training checkpoints of text/induction are shipped in this "
        "installation: train them with `attnlab train text/induction "
        "data.snapshots=text/induction --save-weights text/induction`."
    )


@refusals("show that checkpoint")
def induction_checkpoint(index=0):
    """Loss curve with the checkpoint marked, its head gallery on a repeated random sequence,
    and a Markdown summary with every head's induction score."""
    cks = lab.checkpoints()
    if not cks:
        raise _no_checkpoints()
    i = as_int(index, "Checkpoint", 0, len(cks) - 1)
    step, name = cks[i]
    attn, period, scores, loss = lab.induction_probe(name)
    curve = lab.training_curve([n for _, n in cks])
    labels, best = scores.labels()
    title = f"step {step}: heads on a random sequence repeated (period {period})"
    gallery = head_gallery(
        attn, labels, best, thumb=96 if attn.shape[1] <= 8 else 56, title=title
    ).image
    ind = scores.induction
    li, hi = np.unravel_index(int(np.nanargmax(ind)), ind.shape)
    md = (
        f"<p>Checkpoint <b>{i + 1} of {len(cks)}</b> (<code>{escape(name)}</code>, step "
        f"{step}): loss on the second repeat {loss:.3f}; strongest induction head "
        f"<b>L{li}H{hi}</b> ({ind[li, hi]:.2f}).</p>"
        + _grid_html(
            ind,
            "induction score per head (weight from t to the token after its previous occurrence)",
            highlight=(int(li), int(hi)),
        )
        + _grid_html(scores.previous_token, "previous-token score per head")
    )
    return plot_checkpoint(curve, step), gallery, md


# ------------------------------------------------------------------------------------------
# 6. agreement
# ------------------------------------------------------------------------------------------
def _agreement_run(sentence, ablate: tuple[int, int] | None = None):
    text = as_text(sentence, "The sentence", 400)
    case = lab.parse_agreement(text)
    model = lab.causal_model("text/agreement")
    if len(case.words) > model.config.max_len:
        raise gr.Error(
            f"The sentence has {len(case.words)} words; the agreement model reads "
            f"{model.config.max_len}: shorten it."
        )
    ids = torch.tensor([model.encode(" ".join(case.words))])
    return case, model, ids


def _p(x: float) -> str:
    return f"{x:.3f}" if x >= 1e-3 else f"{x:.1e}"


def _verb_probs(model, ids, case, heads: dict | None = None) -> tuple[float, float, list]:
    """P(right), P(wrong) at the position that predicts the verb, and the top 3 words."""
    with lab.model_lock("text/agreement"), torch.no_grad():
        if heads:
            with ablate_heads(model, heads):
                logits = model(ids)
        else:
            logits = model(ids)
    p = logits[0, case.verb_pos - 1].softmax(-1)
    v = model.vocab
    top = [(v.tokens[int(j)], float(p[j])) for j in p.topk(3).indices]
    return float(p[v.index[case.right]]), float(p[v.index[case.wrong]]), top


@refusals("read the sentence")
def agreement_view(sentence):
    """HTML tables of each head's attention to the subject, the verb choice (Markdown) and
    the head view of the sentence."""
    case, model, ids = _agreement_run(sentence)
    with lab.model_lock("text/agreement"), torch.no_grad():
        with record_attention(model, layers="encoder.blocks.*.attn") as maps:
            model(ids)
        attn = maps.stack()[:, 0]  # (layers, heads, L, L)
    before = attn[:, :, case.verb_pos - 1, case.subject_pos].numpy()
    at_verb = attn[:, :, case.verb_pos, case.subject_pos].numpy()
    pr, pw, top = _verb_probs(model, ids, case)
    w = case.words
    choice = case.right if pr >= pw else case.wrong
    verdict = "✔ agrees with" if pr >= pw else "✘ disagrees with"
    md = (
        f"Subject **{w[case.subject_pos]}** (position {case.subject_pos}), verb slot "
        f"**{w[case.verb_pos]}** (position {case.verb_pos})"
        + (", with an attractor noun between them" if case.attractor else "")
        + ".\n\n"
        f"At *{w[case.verb_pos - 1]}* the model prefers **{choice}**: P({case.right}) = "
        f"{_p(pr)}, P({case.wrong}) = {_p(pw)}, which {verdict} the subject. Its top "
        "next words: " + ", ".join(f"{t} {q:.2f}" for t, q in top) + "."
    )
    tables = _grid_html(
        before,
        f"attention to the subject from '{w[case.verb_pos - 1]}' "
        "(the position that chooses the verb)",
    ) + _grid_html(at_verb, f"attention to the subject from the verb '{w[case.verb_pos]}'")
    hv = head_view_html(
        attn, w, top_k=HV_TOP_K, height=380, title="Head view of the sentence: hover a word"
    )
    return tables, md, hv


@refusals("ablate the head")
def agreement_ablate(sentence, layer=0, head=0):
    """Markdown: the verb choice with each head of the model ablated (zeroed), the chosen one
    first."""
    case, model, ids = _agreement_run(sentence)
    depth, n_heads = model.config.depth, model.config.num_heads
    li = as_int(layer, "Layer to ablate", 0, depth - 1)
    hi = as_int(head, "Head to ablate", 0, n_heads - 1)
    pr, pw, _ = _verb_probs(model, ids, case)
    base = math.log(max(pr, 1e-12)) - math.log(max(pw, 1e-12))
    rows = [
        "| head | P(" + case.right + ") | P(" + case.wrong + ") | log-odds | change |",
        "|---|---|---|---|---|",
    ]
    chosen = None
    for a in range(depth):
        for b in range(n_heads):
            r, q, _ = _verb_probs(model, ids, case, {f"encoder.blocks.{a}.attn": [b]})
            lo = math.log(max(r, 1e-12)) - math.log(max(q, 1e-12))
            mark = "**" if (a, b) == (li, hi) else ""
            rows.append(
                f"| {mark}L{a}H{b}{mark} | {_p(r)} | {_p(q)} | {lo:+.2f} | {lo - base:+.2f} |"
            )
            if (a, b) == (li, hi):
                chosen = (r, q, lo)
    r, q, lo = chosen
    flip = (r >= q) != (pr >= pw)
    return (
        f"Without ablation P({case.right}) = {_p(pr)}, P({case.wrong}) = {_p(pw)} "
        f"(log-odds {base:+.2f}). Zeroing **L{li}H{hi}**: P({case.right}) = {_p(r)}, "
        f"P({case.wrong}) = {_p(q)} (log-odds {lo:+.2f}, change **{lo - base:+.2f}**)"
        + (" — **the choice flips**." if flip else ".")
        + "\n\nEvery head zeroed in turn:\n\n"
        + "\n".join(rows)
    )


# ------------------------------------------------------------------------------------------
# layout
# ------------------------------------------------------------------------------------------
EXAMPLE = "The keys to the old cabinet, which my grandmother left me, are on the table."
LONG_HINT = (
    f"Up to {lab.MAX_CHARS:,} characters; the encoder reads the first {lab.MAX_TOKENS} tokens."
)


def _choices(n: int, what: str) -> list[tuple[str, Any]]:
    return [(f"mean of all {what}s", "mean")] + [(f"{what} {i}", i) for i in range(n)]


def build() -> gr.Blocks:
    """The Text demo as a ``gr.Blocks`` (tabs: sentence, two sentences, generate, induction,
    agreement). Nothing is loaded until a button is pressed."""
    enc_layers, enc_heads = _encoder_shape()
    ch_layers, ch_heads = _card_shape("text/chars", (4, 4))
    ag_layers, ag_heads = _card_shape("text/agreement", (2, 4))
    cks = lab.checkpoints()
    cid = CONCURRENCY
    with gr.Blocks(title="attnlab: Text") as demo:
        with gr.Tab("Sentence"):
            gr.Markdown(
                "### One sentence through all-MiniLM-L6-v2\nType a sentence (or a long "
                "paragraph) and press **Analyse**: the head view, the model view, "
                "which words the embedding draws on (attention rollout), and every "
                "head named by its behaviour."
            )
            with gr.Row():
                text = gr.Textbox(
                    EXAMPLE,
                    lines=3,
                    label="sentence",
                    info=LONG_HINT,
                    max_length=lab.MAX_CHARS,
                    elem_id="text-input",
                    scale=4,
                )
                with gr.Column(scale=1, min_width=200):
                    fusion = gr.Radio(list(FUSIONS), value="mean", label="rollout: fuse heads by")
                    run = gr.Button("Analyse", variant="primary", elem_id="text-run")
            info = gr.Markdown(elem_id="text-info")
            saliency = gr.HighlightedText(
                label="rollout saliency: what the embedding draws "
                "on (0 = the least, 1 = the most salient word)",
                elem_id="text-saliency",
                show_legend=False,
            )
            hv = gr.HTML("", js_on_load=head_view_js(), elem_id="text-head-view")
            with gr.Row():
                mv = gr.Image(
                    label="model view: every layer × head (weight / head max)",
                    type="pil",
                    format="png",
                    elem_id="text-model-view",
                    buttons=["download"],
                )
            gal = gr.Image(
                label="head gallery",
                type="pil",
                format="png",
                show_label=False,
                elem_id="text-gallery",
                buttons=["download"],
            )
            with gr.Accordion("head labels as a table (hover a cell for every score)", open=False):
                gal_html = gr.HTML(elem_id="text-gallery-table")
            ev = run.click(
                analyse_sentence,
                [text, fusion],
                [hv, mv, saliency, info],
                api_name="text_sentence",
                concurrency_id=cid["encoder"],
                concurrency_limit=1,
            )
            ev.success(
                sentence_gallery,
                [text],
                [gal, gal_html],
                api_name="text_gallery",
                concurrency_id=cid["gallery"],
                concurrency_limit=1,
            )

        with gr.Tab("Two sentences"):
            gr.Markdown(
                "### Similarity and cross-sentence attention\nThe pair is read as one "
                "input `[CLS] A [SEP] B [SEP]`; the map shows the attention from A's "
                "tokens to B's."
            )
            with gr.Row():
                pa = gr.Textbox(
                    "A man is playing a guitar on stage.",
                    label="sentence A",
                    max_length=lab.MAX_PAIR_CHARS,
                    elem_id="text-pair-a",
                )
                pb = gr.Textbox(
                    "Someone performs music at a concert.",
                    label="sentence B",
                    max_length=lab.MAX_PAIR_CHARS,
                    elem_id="text-pair-b",
                )
            with gr.Row():
                p_layer = gr.Dropdown(_choices(enc_layers, "layer"), value="mean", label="layer")
                p_head = gr.Dropdown(_choices(enc_heads, "head"), value="mean", label="head")
                compare = gr.Button("Compare", variant="primary", elem_id="text-compare")
            sim = guard.Number(
                label="cosine similarity", interactive=False, elem_id="text-similarity"
            )
            p_info = gr.Markdown()
            with gr.Row():
                p_map = gr.Image(
                    label="A → B attention",
                    type="pil",
                    format="png",
                    show_label=False,
                    elem_id="text-pair-map",
                )
                p_hv = gr.HTML("", js_on_load=head_view_js(), elem_id="text-pair-head-view")
            gr.Markdown(
                "#### Ablate a head\nZero one head (or replace its output by its mean) "
                "and embed both sentences again."
            )
            with gr.Row():
                ab_layer = guard.Number(
                    0,
                    precision=0,
                    minimum=0,
                    maximum=enc_layers - 1,
                    label=f"layer (0-{enc_layers - 1})",
                )
                ab_head = guard.Number(
                    0,
                    precision=0,
                    minimum=0,
                    maximum=enc_heads - 1,
                    label=f"head (0-{enc_heads - 1})",
                )
                ab_mode = gr.Radio(list(MODES), value="zero", label="ablation")
                ablate = gr.Button("Ablate", elem_id="text-ablate")
            with gr.Row():
                ab_before = guard.Number(label="similarity", interactive=False)
                ab_after = guard.Number(label="similarity with the head ablated", interactive=False)
            ab_info = gr.Markdown()
            compare.click(
                compare_pair,
                [pa, pb, p_layer, p_head],
                [sim, p_info, p_map, p_hv],
                api_name="text_pair",
                concurrency_id=cid["encoder"],
                concurrency_limit=1,
            )
            ablate.click(
                ablate_pair,
                [pa, pb, ab_layer, ab_head, ab_mode],
                [ab_before, ab_after, ab_info],
                api_name="text_ablate",
                concurrency_id=cid["encoder"],
                concurrency_limit=1,
            )

        with gr.Tab("Generate"):
            gr.Markdown(
                "### Character-level generation (`text/chars`)\nThe model was trained "
                "on Python's documentation. Every step's attention is recorded while "
                "it generates (with its KV cache)."
            )
            with gr.Row():
                prompt = gr.Textbox(
                    "The list data type has some more methods. ",
                    label="prompt",
                    max_length=lab.MAX_PROMPT_CHARS,
                    scale=3,
                    elem_id="text-prompt",
                )
                with gr.Column(scale=2):
                    n_new = guard.Slider(
                        1, lab.MAX_NEW_TOKENS, 60, step=1, label="characters to generate"
                    )
                    temp = guard.Slider(0.0, 2.0, 0.8, step=0.05, label="temperature (0 = greedy)")
                    with gr.Row():
                        top_k = guard.Number(0, precision=0, minimum=0, label="top-k (0 = off)")
                        top_p = guard.Slider(0.05, 1.0, 0.95, step=0.05, label="top-p")
                        seed = guard.Number(0, precision=0, minimum=0, label="seed")
                    gen = gr.Button("Generate", variant="primary", elem_id="text-generate")
            out = gr.HighlightedText(
                label="text",
                color_map={"generated": "#56B4E9", "prompt": "#E69F00"},
                elem_id="text-generated",
            )
            g_info = gr.Markdown()
            state = gr.State(None)
            with gr.Row():
                step = guard.Slider(
                    1,
                    lab.MAX_NEW_TOKENS,
                    1,
                    step=1,
                    label="generated character",
                    interactive=False,
                    scale=3,
                )
                s_layer = gr.Dropdown(_choices(ch_layers, "layer"), value="mean", label="layer")
                s_head = gr.Dropdown(_choices(ch_heads, "head"), value="mean", label="head")
            s_spans = gr.HighlightedText(
                label="attention over the prefix when this character was chosen (weight / max)",
                elem_id="text-step",
            )
            s_info = gr.Markdown()
            s_map = gr.Image(
                label="every head",
                type="pil",
                format="png",
                show_label=False,
                elem_id="text-step-map",
            )
            step_args = dict(
                fn=generation_step,
                inputs=[state, step, s_layer, s_head],
                outputs=[s_spans, s_info, s_map],
                concurrency_id=cid["steps"],
                concurrency_limit=2,
            )
            gen.click(
                generate_text,
                [prompt, n_new, temp, top_k, top_p, seed],
                [out, g_info, state, step],
                api_name="text_generate",
                concurrency_id=cid["generate"],
                concurrency_limit=1,
            ).success(api_name="text_step_after_generate", **step_args)
            step.release(api_name="text_step", trigger_mode="always_last", **step_args)
            s_layer.input(api_name="text_step_layer", **step_args)
            s_head.input(api_name="text_step_head", **step_args)

        with gr.Tab("Induction"):
            gr.Markdown(
                "### Induction heads forming (`text/induction`)\nA two-layer "
                "attention-only model trained on repeated random tokens. Slide over "
                "its training checkpoints: the loss drops when a head starts to attend "
                "to the token after the previous occurrence of the current one."
            )
            if cks:
                ck = guard.Slider(
                    0,
                    len(cks) - 1,
                    len(cks) - 1,
                    step=1,
                    label="checkpoint ("
                    + ", ".join(f"{i}: step {s}" for i, (s, _) in enumerate(cks))
                    + ")",
                    elem_id="text-checkpoint",
                )
                with gr.Row():
                    curve = gr.Image(
                        label="training curve",
                        type="pil",
                        format="png",
                        show_label=False,
                        elem_id="text-curve",
                    )
                    igal = gr.Image(
                        label="heads at this checkpoint",
                        type="pil",
                        format="png",
                        show_label=False,
                        elem_id="text-checkpoint-heads",
                    )
                i_info = gr.HTML()
                i_args = dict(
                    fn=induction_checkpoint,
                    inputs=[ck],
                    outputs=[curve, igal, i_info],
                    concurrency_id=cid["induction"],
                    concurrency_limit=1,
                )
                ck.release(api_name="text_induction", trigger_mode="always_last", **i_args)
                demo.load(api_name="text_induction_load", **i_args)
            else:
                gr.Markdown(
                    "*No training checkpoints of `text/induction` are shipped in this "
                    "installation.*"
                )

        with gr.Tab("Agreement"):
            gr.Markdown(
                "### Subject-verb agreement (`text/agreement`)\nA word-level model "
                "trained on a small grammar. Pick a held-out sentence (those with an "
                "attractor noun between subject and verb come first) or write one with "
                "its words."
            )
            try:
                examples = list(lab.agreement_examples())
            except Exception:  # noqa: BLE001 -- the grammar module is optional here
                examples = []
            with gr.Row():
                sent = gr.Dropdown(
                    examples,
                    value=examples[0] if examples else None,
                    allow_custom_value=True,
                    label="sentence",
                    scale=4,
                    elem_id="text-agreement-sentence",
                )
                read = gr.Button("Read", variant="primary", elem_id="text-agreement-run")
            a_info = gr.Markdown()
            with gr.Row():
                a_tables = gr.HTML()
                a_hv = gr.HTML("", js_on_load=head_view_js())
            with gr.Row():
                g_layer = guard.Number(
                    0,
                    precision=0,
                    minimum=0,
                    maximum=ag_layers - 1,
                    label=f"layer to ablate (0-{ag_layers - 1})",
                )
                g_head = guard.Number(
                    0,
                    precision=0,
                    minimum=0,
                    maximum=ag_heads - 1,
                    label=f"head to ablate (0-{ag_heads - 1})",
                )
                g_btn = gr.Button("Ablate")
            g_info = gr.Markdown()
            read.click(
                agreement_view,
                [sent],
                [a_tables, a_info, a_hv],
                api_name="text_agreement",
                concurrency_id=cid["agreement"],
                concurrency_limit=1,
            )
            g_btn.click(
                agreement_ablate,
                [sent, g_layer, g_head],
                [g_info],
                api_name="text_agreement_ablate",
                concurrency_id=cid["agreement"],
                concurrency_limit=1,
            )
    return demo


if __name__ == "__main__":
    build().launch()
