"""Text demo handlers, headless: the encoder views hold the sentence's tokens, the similarity
is the embeddings' cosine, an ablated head moves it, generation is deterministic for a seed and
its recorded steps equal a recomputation without the KV cache, the checkpoint scrubber and the
agreement view read the shipped models; and every handler answers any form value (None,
text in number fields, NaN, huge, lists...) with a result or a gr.Error that says something.

The causal models are the shipped ``text/chars``, ``text/agreement`` and ``text/induction``
(+ checkpoints); where this checkout does not ship them yet, untrained ones of the same
architecture stand in (the wiring is the same, the numbers mean nothing).
"""

from __future__ import annotations

import math

import gradio as gr
import numpy as np
import pytest
import torch
from handler_fuzz import refusals, silent_components
from PIL import Image

from attnlab.apps import suite
from attnlab.apps import text as T
from attnlab.apps import text_lab as lab
from attnlab.apps.views import payload_from_html
from attnlab.core import registry
from attnlab.core.capture import record_attention

pytestmark = pytest.mark.timeout(120)

SENT = "The cat sat on the mat because it was tired."
A, B = "A man is playing a guitar on stage.", "Someone performs music at a concert."
NEEDED = ("text/chars", "text/agreement", "text/induction")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a 2-core machine shared with other jobs, OpenMP's spinning
    threads make a 15 ms MiniLM forward take ~0.8 s; results are the same."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _stand_ins(root) -> None:
    """Untrained models of the shipped architectures, with training-checkpoint cards."""
    from attnlab.domains.text.data import AGREEMENT_VOCAB, char_corpus

    torch.manual_seed(0)
    c = char_corpus()
    m = registry.create(
        "text_chars", vocab_size=len(c.vocab), tokenizer="chars", vocab=c.vocab.tokens, max_len=128
    )
    registry.save_weights(m, "text/chars", {"recipe": "text/chars"}, root=root)
    m = registry.create(
        "text_agreement",
        vocab_size=len(AGREEMENT_VOCAB),
        tokenizer="words",
        vocab=list(AGREEMENT_VOCAB),
        max_len=24,
    )
    registry.save_weights(m, "text/agreement", {"recipe": "text/agreement"}, root=root)
    curve = []
    for step in (100, 300, 600):
        m = registry.create("text_induction", vocab_size=64, max_len=64)
        curve.append({"step": step, "probe_loss": 4.0 - step / 300, "induction_score": step / 700})
        registry.save_weights(
            m,
            f"text/induction/step-{step:05d}",
            {
                "snapshot_of": "text/induction",
                "step": step,
                "metrics": dict(curve[-1]),
                "curve": list(curve),
            },
            root=root,
        )
    registry.save_weights(m, "text/induction", {"metrics": {"step": 600}}, root=root)


@pytest.fixture(scope="module", autouse=True)
def causal_weights(tmp_path_factory):
    """The shipped causal weights, or untrained stand-ins in a temporary weights folder."""
    shipped = set(registry.list_weights())
    lab.forget_causal()
    if all(n in shipped for n in NEEDED) and lab.checkpoints():
        yield True
        return
    root = tmp_path_factory.mktemp("weights")
    _stand_ins(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTNLAB_WEIGHTS", str(root))
        yield False
    lab.forget_causal()


@pytest.fixture(scope="module")
def generation():
    return T.generate_text("The list ", 12, 0.8, 0, 0.95, 7)


def _refusal(fn, *args):
    with pytest.raises(gr.Error) as e:
        fn(*args)
    assert str(e.value.message).strip()
    return str(e.value.message)


# ------------------------------------------------------------------------------------------
# good input
# ------------------------------------------------------------------------------------------
def test_sentence_views_hold_the_tokens():
    hv, mv, spans, info = T.analyse_sentence(SENT, "mean")
    tokens = lab.encoder().tokenize(SENT)
    data = payload_from_html(hv)
    assert data["q"] == tokens and data["k"] == tokens and len(data["layers"]) == 6
    assert len(data["heads"]) == 12 and "cat" in tokens
    assert isinstance(mv, Image.Image) and mv.width > 12 * 56 and mv.height >= 6 * 56
    assert "".join(piece for piece, _ in spans) == SENT  # the text, every character once
    scored = [(p, s) for p, s in spans if s is not None]
    assert len(scored) == len(tokens) - 2  # [CLS] and [SEP] are not on the page
    assert max(s for _, s in scored) == pytest.approx(1.0)
    assert min(s for _, s in scored) == pytest.approx(0.0)
    assert all(0.0 <= s <= 1.0 for _, s in scored)
    assert f"{len(tokens)} tokens" in info and "512" not in info


def test_long_input_is_cut_pooled_and_said():
    text = " ".join(f"word{i % 50} and" for i in range(400))
    hv, _, spans, info = T.analyse_sentence(text, "max")
    assert "512 tokens" in info and "read only its first 512" in info
    data = payload_from_html(hv)
    assert len(data["q"]) <= T.HV_MAX_TOKENS and "pooled" in data["note"]
    assert len(data["idx"]) <= T.HV_ENTRIES
    assert "not read" in spans[-1][0]


def test_head_gallery_labels_every_head():
    img, html = T.sentence_gallery(SENT)
    assert isinstance(img, Image.Image) and img.width > 12 * 56
    assert html.count("<td") == 6 * 12
    labels, _ = lab.encoder_scores().labels()
    assert len(labels) == 6 and all(len(r) == 12 for r in labels)


def test_pair_similarity_is_the_embedding_cosine():
    sim, md, img, hv = T.compare_pair(A, B, "mean", "mean")
    e = lab.encoder().embed([A, B])
    assert sim == pytest.approx(
        float(torch.nn.functional.cosine_similarity(e[:1], e[1:])), abs=1e-5
    )
    assert f"{sim:.4f}" in md and isinstance(img, Image.Image)
    data = payload_from_html(hv)
    assert data["q"] == lab.encoder().tokenize(A)[1:-1]
    assert data["k"] == lab.encoder().tokenize(B)[1:-1]
    pa = lab.pair_attention(A, B)
    assert pa.tokens[0] == "[CLS]" and pa.tokens.count("[SEP]") == 2
    block = pa.block()
    assert block.shape == (6, 12, len(data["q"]), len(data["k"]))
    assert float(block.sum(-1).max()) < 1.0  # a's rows also attend inside a


def test_pair_layer_and_head_pick_one_map():
    _, _, img_one, _ = T.compare_pair(A, B, 2, "5")
    _, _, img_mean, _ = T.compare_pair(A, B, "mean", "mean")
    assert not np.array_equal(np.asarray(img_one), np.asarray(img_mean))


def test_ablation_changes_the_similarity():
    before, after, md = T.ablate_pair(A, B, 0, 3, "zero")
    sim, *_ = T.compare_pair(A, B, "mean", "mean")
    assert before == pytest.approx(sim, abs=1e-6)
    assert abs(after - before) > 1e-5 and "layer 0, head 3" in md
    assert md.count("\n| ") == 12 + 1  # the sweep: header + every head of the layer
    assert T.ablate_pair(A, B, 0, 3, "zero")[1] == pytest.approx(after, abs=1e-6)
    assert T.ablate_pair(A, B, 0, 3, "mean")[1] != pytest.approx(after, abs=1e-7)
    assert lab.similarity(A, B) == pytest.approx(before, abs=1e-6)  # ablation undone


def test_generation_is_deterministic_for_a_seed(generation):
    spans, md, state, slider = generation
    again = T.generate_text("The list ", 12, 0.8, 0, 0.95, 7)
    assert spans == again[0] and spans[0] == ("The list ", "prompt")
    assert len(spans[1][0]) == 12 and slider["maximum"] == 12 and slider["value"] == 12
    other = {T.generate_text("The list ", 12, 1.0, 0, 1.0, s)[0][1][0] for s in range(4)}
    assert len(other) > 1  # seeds differ
    greedy = T.generate_text("The list ", 12, 0, 0, 1.0, 1)[0]
    assert greedy == T.generate_text("The list ", 12, 0, 0, 1.0, 2)[0]  # no sampling


def test_recorded_steps_equal_a_run_without_cache(generation):
    _, _, state, _ = generation
    model = lab.causal_model("text/chars")
    assert len(state["steps"]) == 12
    ids = torch.tensor([model.encode("".join(state["tokens"]))])
    with torch.no_grad(), record_attention(model, layers="encoder.blocks.*.attn") as maps:
        model(ids)
    full = maps.stack()[:, 0].numpy()  # (layers, heads, L, L)
    for i, w in enumerate(state["steps"]):
        S = state["prompt_len"] + i
        assert w.shape == (model.config.depth, model.config.num_heads, S)
        np.testing.assert_allclose(w, full[:, :, S - 1, :S], atol=1e-5)


def test_step_view(generation):
    _, _, state, _ = generation
    spans, md, img = T.generation_step(state, 3, 1, "mean")
    S = state["prompt_len"] + 2
    assert [t for t, _ in spans] == [T._label(t) for t in state["tokens"][:S]]
    assert max(v for _, v in spans) == pytest.approx(1.0)
    assert "Step **3 / 12**" in md and isinstance(img, Image.Image)
    spans2, _, _ = T.generation_step(state, 3, "mean", 0)
    assert spans2 != spans


def test_induction_scrubber(causal_weights):
    cks = lab.checkpoints()
    assert len(cks) >= 2 and [s for s, _ in cks] == sorted(s for s, _ in cks)
    if causal_weights:
        assert len(cks) >= 5  # ~6 shipped training checkpoints
    seen = []
    for i in (0, len(cks) - 1):
        curve, gallery, md = T.induction_checkpoint(i)
        assert isinstance(curve, Image.Image) and isinstance(gallery, Image.Image)
        assert f"step {cks[i][0]}" in md and "induction score" in md
        seen.append(np.asarray(curve))
    assert not np.array_equal(*seen)  # the marker moved
    attn, period, scores, loss = lab.induction_probe(cks[-1][1])
    assert attn.shape[0] == scores.shape[0] and math.isfinite(loss) and period >= 2
    if causal_weights:  # trained: an induction head has formed by the last checkpoint
        assert float(np.nanmax(scores.induction)) > 0.3


def test_agreement_view_and_ablation(causal_weights):
    from attnlab.domains.text.data import agreement_task

    task = agreement_task(32, "test")
    for k, row in enumerate(task.verbs.tolist()):
        sample, verb_pos, subject_pos, right, _, _ = row
        last = [r for r in task.verbs.tolist() if r[0] == sample][-1]
        if row != last:
            continue  # the main verb is the sample's last agreement
        case = lab.parse_agreement(task.sentences[sample])
        assert (case.verb_pos, case.subject_pos) == (verb_pos, subject_pos), k
        assert case.right == task.vocab.tokens[right]
    ex = lab.agreement_examples()
    assert len(ex) == 16 and lab.parse_agreement(ex[0]).attractor
    tables, md, hv = T.agreement_view(ex[0])
    model = lab.causal_model("text/agreement")
    assert tables.count("<td") == 2 * model.config.depth * model.config.num_heads
    assert "prefers" in md and payload_from_html(hv)["q"][0] == "<s>"
    report = T.agreement_ablate(ex[0], 1, 2)
    assert "**L1H2**" in report
    assert (
        report.count("\n| L") + report.count("\n| **L")
        == model.config.depth * model.config.num_heads
    )


def test_build_names_every_listener_and_shares_queues_by_model():
    demo = T.build()
    assert isinstance(demo, gr.Blocks)
    fns = list(demo.fns.values())
    assert fns and all(f.api_name for f in fns)
    by_api = {f.api_name: f.concurrency_id for f in fns}
    enc = {by_api[a] for a in ("text_sentence", "text_pair", "text_ablate")}
    assert enc == {"text_encoder"}
    assert by_api["text_gallery"] == "text_gallery"
    assert by_api["text_generate"] == "text_generate"
    assert by_api["text_agreement"] == by_api["text_agreement_ablate"] == "text_agreement"
    assert len(set(by_api.values())) >= 5  # slow work never holds the quick views' queue
    assert "text" in suite.available_demos()


# ------------------------------------------------------------------------------------------
# any form value: a result or a gr.Error with a sentence
# ------------------------------------------------------------------------------------------
BAD = [
    None,
    "",
    "   ",
    "abc",
    -1,
    10**9,
    10**400,
    float("nan"),
    float("inf"),
    2.5,
    True,
    [],
    {},
    ["The cat"],
    {"a": 1},
    "x" * 7000,
]


def _handlers(state):
    ex = lab.agreement_examples()[0]
    return {
        "analyse_sentence": (T.analyse_sentence, ["A cat.", "mean"]),
        "sentence_gallery": (T.sentence_gallery, ["A cat."]),
        "compare_pair": (T.compare_pair, ["A cat.", "A dog.", "mean", 0]),
        "ablate_pair": (T.ablate_pair, ["A cat.", "A dog.", 0, 0, "zero"]),
        "generate_text": (T.generate_text, ["The ", 4, 0.8, 0, 0.9, 0]),
        "generation_step": (T.generation_step, [state, 1, "mean", "mean"]),
        "induction_checkpoint": (T.induction_checkpoint, [0]),
        "agreement_view": (T.agreement_view, [ex]),
        "agreement_ablate": (T.agreement_ablate, [ex, 0, 0]),
    }


def test_every_handler_answers_any_value(generation):
    handlers = _handlers(generation[2])
    assert set(handlers) >= {n for n in T.__all__ if n not in ("build", "CONCURRENCY")}
    refused = refusals(handlers, BAD)
    assert refused > 200


@pytest.mark.parametrize("fn, args, words", [
    (T.analyse_sentence, ["", "mean"], "empty"),
    (T.analyse_sentence, ["x" * 7000, "mean"], "at most 6,000"),
    (T.compare_pair, [A, B, 6, "mean"], "from 0 to 5"),
    (T.ablate_pair, [A, B, 0, float("nan"), "zero"], "finite"),
    (T.generate_text, ["The ", 10**9, 0.8, 0, 0.9, 0], "from 1 to 120"),
    (T.generate_text, ["Thé ✓", 4, 0.8, 0, 0.9, 0], "never seen"),
    (T.generate_text, ["The ", 4, 0.8, 0, 0, 0], "Top-p"),
    (T.generation_step, [None, 1, "mean", "mean"], "Generate some text first"),
    (T.induction_checkpoint, [99], "Checkpoint"),
    (T.agreement_view, ["the unicorn runs ."], "'unicorn' is not"),
    (T.agreement_view, ["the the ."], "subject"),
])  # fmt: skip
def test_refusals_say_what_to_change(fn, args, words):
    assert words in _refusal(fn, *args)


def test_long_prompt_keeps_its_end():
    spans, md, _, _ = T.generate_text("The list " * 40, 20, 0.5, 5, 0.9, 0)
    assert len(spans[0][0]) == lab.causal_model("text/chars").config.max_len - 20
    assert "cut" in md


def test_missing_weights_are_a_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNLAB_WEIGHTS", str(tmp_path))
    lab.forget_causal()
    try:
        msg = _refusal(T.generate_text, "The ", 4, 0.8, 0, 0.9, 0)
        assert "text/chars" in msg and "attnlab train" in msg
        assert "No training checkpoints" in _refusal(T.induction_checkpoint, 0)
    finally:
        lab.forget_causal()


def test_checkpoint_plot_marks_the_step():
    from attnlab.apps.views import plot_checkpoint

    recs = [
        {"step": s, "probe_loss": 3 - s / 500, "induction_score": s / 1000}
        for s in range(0, 1001, 100)
    ]
    a, b = np.asarray(plot_checkpoint(recs, 200)), np.asarray(plot_checkpoint(recs, 800))
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert isinstance(plot_checkpoint([{"step": 1}, "junk"], 1), Image.Image)  # nothing to draw


def test_components_refuse_malformed_payloads_with_a_sentence():
    """The API layer: every input component of every listener either accepts a malformed value
    or raises gr.Error with a message (never an exception Gradio would show without one)."""
    from attnlab.apps import text as text_app

    page = text_app.build()
    silent = silent_components(page)
    assert not silent, silent[:10]
