"""Core Explorer handlers, headless: every mask with every backend, outputs checked against a
float64 reference that imports nothing from attnlab, and bad input refused with a readable
message before anything large is allocated."""

import json
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from attnlab.apps import explorer as ex
from attnlab.apps import explorer_lab as lab
from attnlab.apps import suite

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference import reference_attention  # noqa: E402

BACKENDS = lab.available_backends()
EXACT = {"math", "sdpa", "tiled"}
LINEAR_MASKS = {"full", "causal", "key padding", "cross"}  # what kernelised attention supports
# form values that make every mask valid at L = 24
FORM = dict(window=5, symmetric=False, valid_keys=10, n_docs=3, prefix=6, kv_len=16)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mask", lab.MASK_KINDS)
def test_every_mask_and_backend_runs(mask, backend):
    if backend == "linear" and mask not in LINEAR_MASKS:
        with pytest.raises(ValueError, match="linear cannot run this setting.*exact backends"):
            ex.explore(mask, 24, 2, backend, "random", draw=False, **FORM)
        return
    r = ex.explore(mask, 24, 2, backend, "random", seed=1, draw=False, **FORM)
    assert r.backend == backend
    S = 16 if mask == "cross" else 24
    assert tuple(r.weights.shape) == (24, S) and tuple(r.allowed_frac.shape) == (24, S)
    assert r.time_ms > 0 and r.peak_mb >= 0
    assert r.max_abs_diff is not None and np.isfinite(r.max_abs_diff)
    if backend in EXACT:
        assert r.max_abs_diff < 1e-5
    assert "output max abs diff vs math" in r.table


@pytest.mark.parametrize("mask", lab.MASK_KINDS)
def test_handler_draws_for_each_mask(mask):
    allowed, used, hv, table = ex.run_explorer(
        mask, 20, 2, "auto", "sentence", 0, *FORM.values(), 1
    )
    assert isinstance(allowed, Image.Image) and isinstance(used, Image.Image)
    assert allowed.size == used.size == (500, 440)
    assert np.asarray(allowed).std() > 0 and not np.array_equal(allowed, used)
    assert 'class="attn-hv"' in hv and "max abs diff" in table


def _pool(w, fq, fk):
    """Pool (Lq, S) weights in fq x fk blocks: keys summed, queries averaged."""
    w = torch.nn.functional.pad(w, (0, -w.shape[1] % fk, 0, -w.shape[0] % fq))
    return w.view(w.shape[0] // fq, fq, -1, fk).sum(-1).mean(1)


@pytest.mark.parametrize("mask", ["causal", "local window", "document", "cross"])
def test_reference_and_pooled_weights_match_float64(mask):
    prob = lab.make_mask(mask, 40, heads=3, **FORM)
    q, k, v, _, _ = lab.make_inputs("random", prob, seed=3)
    allowed = prob.mask.dense(prob.L, prob.S)
    want_out, want_w, _ = reference_attention(q, k, v, allowed=allowed)
    # chunks of 8 rows and pooling by 2 x 2 exercise the chunked, pooled path
    ref = lab.reference(
        q, k, v, prob.mask, head=2, max_cells=20, chunk_bytes=8 * 3 * prob.S * 4 * 3
    )
    assert not ref.sampled and ref.rows.tolist() == list(range(40))
    torch.testing.assert_close(ref.out.double(), want_out, atol=1e-5, rtol=1e-5)
    fq, fk = ref.factors
    assert (fq, fk) == (2, -(-prob.S // 20))
    torch.testing.assert_close(ref.weights.double(), _pool(want_w[0, 2], fq, fk), atol=1e-6,
                               rtol=1e-5)  # fmt: skip
    torch.testing.assert_close(ref.weights.sum(-1), torch.ones(20), atol=1e-5, rtol=0)
    want_allowed = _pool(allowed[0, 0].double(), fq, fk) / fk
    torch.testing.assert_close(ref.allowed.double(), want_allowed, atol=1e-6, rtol=0)


def test_reference_samples_rows_of_long_inputs():
    prob = lab.make_mask("causal", 60, heads=2)
    q, k, v, _, _ = lab.make_inputs("random", prob, seed=4)
    want_out, want_w, _ = reference_attention(q, k, v, allowed=prob.mask.dense(60))
    full = 4.0 * 2 * 60 * 60 * 64
    ref = lab.reference(q, k, v, prob.mask, head=1, max_cells=10, max_flops=full / 3)
    assert ref.sampled and ref.factors == (6, 6)
    assert ref.rows.tolist() == [r for b in range(0, 60, 6) for r in (b, b + 1)]  # 2 of 6
    torch.testing.assert_close(ref.out.double(), want_out[:, :, ref.rows], atol=1e-5, rtol=1e-5)
    sampled = want_w[0, 1].view(10, 6, 60)[:, :2].reshape(20, 60)
    torch.testing.assert_close(ref.weights.double(), _pool(sampled, 2, 6), atol=1e-6, rtol=1e-5)


def test_sentence_example_has_meaningful_heads():
    prob = lab.make_mask("full", 22, heads=2)
    q, k, v, words, _ = lab.make_inputs("sentence", prob)
    w = reference_attention(q, k, v)[1][0]
    # head 1 is the previous-token head
    assert (w[1, 1:].argmax(-1) == torch.arange(21)).all()
    # head 0 attends to copies of the same word: "mat" (8) puts most weight on both "mat"s
    mats = [i for i, t in enumerate(words) if t == "mat"]
    assert set(w[0, mats[1]].topk(2).indices.tolist()) == set(mats)


@pytest.mark.parametrize(
    "mask, kw, needle",
    [
        ("local window", dict(window=50), "larger than L"),
        ("key padding", dict(valid_keys=""), "field is empty"),
        ("key padding", dict(valid_keys=None), "field is empty"),
        ("key padding", dict(valid_keys=0), "no valid key"),
        ("key padding", dict(valid_keys=99), "exceeds L"),
        ("document", dict(n_docs=40), "do not fit"),
        ("prefix-LM", dict(prefix=33), "longer than L"),
        ("cross", dict(kv_len=0), "Lk"),
    ],
)
def test_bad_form_values_give_readable_errors(mask, kw, needle):
    form = {**FORM, **kw}
    with pytest.raises(gr.Error, match=needle):
        ex.run_explorer(mask, 32, 2, "auto", "random", 0, *form.values(), 0)
    with pytest.raises(gr.Error, match=needle):  # refused before it reaches any queue
        ex.run_explorer_quick(mask, 32, 2, "auto", "random", 0, *form.values(), 0)


def test_bad_length_head_and_names():
    with pytest.raises(ValueError, match="L \\(sequence length\\) must be between"):
        ex.explore("full", 1, 2, "math", draw=False)
    with pytest.raises(ValueError, match="whole number"):
        ex.explore("full", 12.5, 2, "math", draw=False)
    with pytest.raises(ValueError, match="only 2 heads"):
        ex.explore("full", 8, 2, "math", head=2, draw=False)
    with pytest.raises(ValueError, match="backend must be one of"):
        ex.explore("full", 8, 2, "flash", draw=False)
    with pytest.raises(ValueError, match="mask must be one of"):
        ex.explore("diagonal", 8, 2, "math", draw=False)


def test_too_slow_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(lab, "make_inputs", lambda *a, **k: 1 / 0)
    # sdpa itself is ~9 s here; its timing and memory runs and the reference make it ~20 s
    with pytest.raises(gr.Error, match="would take about .* s .* allows 10 s"):
        ex.run_explorer("full", 16384, 16, "sdpa", "random", 0, *FORM.values(), 0)


def test_too_large_for_memory_is_refused_before_allocating(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("inputs were allocated before the memory check")

    monkeypatch.setattr(lab, "make_inputs", boom)
    monkeypatch.setenv("ATTNLAB_EXPLORER_MAX_MB", "2048")
    with pytest.raises(gr.Error) as err:
        ex.run_explorer("full", 16384, 2, "math", "random", 0, *FORM.values(), 0)
    msg = err.value.message
    assert "math backend would need about 6.0 GB" in msg and "2.0 GB per run" in msg
    assert "Backends that fit:" in msg and "sdpa" in msg


def test_memory_estimate_of_math_matches_measured_peak():
    prob = lab.make_mask("causal", 256, heads=4)
    q, k, v, _, _ = lab.make_inputs("random", prob)
    peak = lab.peak_bytes(lambda: lab.run_backend("math", q, k, v, prob.mask))
    est = lab.estimate_bytes("math", prob)
    assert 0.5 * est <= peak <= 1.5 * est


def test_param_visibility():
    ups = ex.param_visibility("local window")
    assert [u["visible"] for u in ups] == [True, True, False, False, False, False]
    assert not any(u["visible"] for u in ex.param_visibility("full"))
    assert [u["visible"] for u in ex.param_visibility("cross")][-1]


def test_complexity_from_results_file(tmp_path):
    rows = [
        {"backend": b, "mask": m, "pass": "fwd", "L": L, "time_ms": L * t, "peak_mem_mb": L / 9}
        for b, t in (("sdpa", 1.0), ("tiled", 2.0))
        for m in ("full", "causal")
        for L in (256, 512, 1024)
    ]
    path = tmp_path / "core.json"
    path.write_text(json.dumps({"rows": rows}))
    img, table = ex.complexity("causal", "fwd", path=path)
    assert isinstance(img, Image.Image) and img.width > 400
    assert table.count("| causal |") == 6 and "| full |" not in table
    img, msg = ex.complexity(path=tmp_path / "missing.json")
    assert img is None and "attnlab bench core" in msg


def test_remeasure_small_lengths():
    rows = ex.remeasure("causal", [32, "64"], heads=2)
    assert {r["L"] for r in rows} == {32, 64}
    assert {r["backend"] for r in rows} >= {"math", "sdpa"}
    for r in rows:
        assert r["time_ms"] > 0 and r["gflops"] > 0 and "vs_sdpa" in r
    with pytest.raises(gr.Error, match="between 2 and 2048"):
        ex.run_remeasure("causal", [4096])
    with pytest.raises(gr.Error, match="at least one length"):
        ex.run_remeasure("causal", [])


def test_suite_names_every_listener_and_shares_timing_queue():
    page = suite.build()
    fns = list(page.fns.values())
    assert fns and all(f.api_name for f in fns)
    assert len({f.api_name for f in fns}) == len(fns)
    queue = {
        f.name: f.concurrency_id
        for f in fns
        if f.name in ("run_explorer_quick", "run_explorer_long", "run_remeasure")
    }
    # quick requests never wait behind long ones: those have a queue of their own
    assert queue == {
        "run_explorer_quick": ex.CONCURRENCY_ID,
        "run_explorer_long": ex.LONG_QUEUE_ID,
        "run_remeasure": ex.LONG_QUEUE_ID,
    }
    with pytest.raises(ValueError, match="domain must be one of"):
        suite.build("chemistry")


def test_recurrence_tab_shows_shipped_figures_and_table(tmp_path):
    from attnlab.apps.explorer import recurrence_view

    acc, timing, attn, md = recurrence_view()
    for f in (acc, timing, attn):
        assert f is not None and f.endswith(".png") and Path(f).is_file()
    assert "| parallelism |" in md and "held-out accuracy" in md and "None" not in md
    # no shipped results: a sentence that says how to make them, no crash
    assert recurrence_view(tmp_path / "missing.json")[3].startswith("No shipped results")


def test_long_requests_go_to_their_own_queue(monkeypatch):
    monkeypatch.setattr(lab, "QUICK_SECONDS", 0.0)  # every request counts as long
    form = ("causal", 32, 2, "auto", "random", 0, *FORM.values(), 0)
    *outs, pending = ex.run_explorer_quick(*form)
    assert outs[3].startswith("Running on the long-request queue") and pending == list(form)
    allowed, used, hv, table = ex.run_explorer_long(pending)
    assert isinstance(allowed, Image.Image) and "output max abs diff vs math" in table
    monkeypatch.setattr(lab, "QUICK_SECONDS", 1e9)
    *outs, pending = ex.run_explorer_quick(*form)
    assert pending is None and "output max abs diff vs math" in outs[3]
    assert ex.run_explorer_long(None) == tuple(gr.skip() for _ in range(4))  # nothing to do


BAD_VALUES = [
    None,
    "",
    "abc",
    "12",
    -1,
    0,
    2.5,
    10**9,
    float("nan"),
    float("inf"),
    [],
    {},
    True,
    [1, 2],
    {"a": 1},
]


def test_fuzzed_inputs_always_get_a_sentence(monkeypatch):
    """Every listener of the page, every input, every malformed value: the component's
    preprocess and the handler either accept it or raise gr.Error with a sentence."""
    monkeypatch.setattr(lab, "measure", lambda fn, **kw: (1e-3, 1, 0))  # no timing repeats
    page = ex.build()
    fns = [
        f
        for f in page.fns.values()
        if f.api_name in ("explorer_run", "complexity_remeasure", "complexity_mask")
    ]
    assert len(fns) == 3
    silent = []
    for fn in fns:
        good = [getattr(c, "value", None) for c in fn.inputs]
        for i, comp in enumerate(fn.inputs):
            for bad in BAD_VALUES:
                args = list(good)
                try:
                    args[i] = bad
                    args = [c.preprocess(a) for a, c in zip(args, fn.inputs, strict=True)]
                    fn.fn(*args)
                except gr.Error as e:
                    if not str(e.message).strip():
                        silent.append((fn.api_name, comp.label, bad, "empty gr.Error"))
                except Exception as e:  # noqa: BLE001 - what we are hunting
                    silent.append((fn.api_name, comp.label, bad, f"{type(e).__name__}: {e}"))
    assert not silent, silent[:10]
