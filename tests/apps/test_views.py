"""Tests for attnlab.apps.views: images of the right size that respond to the weights,
reducers checked against torch, exports that parse, and the head view's HTML, size and JS."""

from __future__ import annotations

import json
import shutil
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from attnlab.apps import views
from attnlab.core.layout import NoteLayout, PatchLayout, SpectrogramLayout

TOKENS = "the cat sat on the mat because it was warm".split()


def softmax_rows(shape, seed=0, temp=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(*shape, generator=g) * temp, dim=-1)


def pixels(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img.convert("RGB"))
    assert arr.dtype == np.uint8 and np.isfinite(arr).all()
    assert arr.std() > 1.0, "image is blank"
    return arr


def differ(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    return float(np.abs(pixels(a).astype(int) - pixels(b).astype(int)).mean())


def test_lut_is_viridis_and_colorize_maps_ends():
    lut = views.lut()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    ref = (matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).round()
    np.testing.assert_allclose(lut, ref, atol=1)
    rgb = views.colorize(np.array([[0.0, 0.5, 1.0, np.nan]]), 0.0, 1.0)
    assert rgb.shape == (1, 4, 3)
    np.testing.assert_array_equal(rgb[0, 0], lut[0])
    np.testing.assert_array_equal(rgb[0, 2], lut[255])
    np.testing.assert_array_equal(rgb[0, 3], lut[0])  # non-finite -> bottom colour


def test_topk_rows_matches_torch_topk():
    w = softmax_rows((3, 17, 40), seed=1)
    idx, val = views.topk_rows(w, 5, decimals=None)
    ref_v, ref_i = torch.topk(w, 5, dim=-1)
    torch.testing.assert_close(torch.from_numpy(val), ref_v, rtol=0, atol=0)
    np.testing.assert_array_equal(idx, ref_i.numpy())
    idx2, val2 = views.topk_rows(w[0, 0], 100)  # k larger than the row
    assert idx2.shape == (40,) and val2[0] == pytest.approx(float(w[0, 0].max()), abs=5e-4)
    with pytest.raises(ValueError, match="k"):
        views.topk_rows(w, 0)


def test_downsample_keeps_row_sums_and_means():
    w = softmax_rows((2, 100, 90), seed=2)
    small, factors = views.downsample(w, 32)
    assert factors == (4, 3) and small.shape == (2, 25, 30)
    np.testing.assert_allclose(small.sum(-1), 1.0, rtol=1e-5)  # keys summed
    ref = w.reshape(2, 25, 4, 90).mean(2).reshape(2, 25, 30, 3).sum(-1)
    np.testing.assert_allclose(small, ref.numpy(), rtol=1e-5, atol=1e-7)
    assert views.pool_labels(list("abcdefg"), 3) == ["a…", "d…", "g"]
    assert len(views.thin_labels([str(i) for i in range(1000)], 40)) <= 40


def test_plot_curves_and_bench(tmp_path):
    recs = [
        {"step": s, "loss": 3 * np.exp(-s / 50) + 0.1, "acc": s / 200} for s in range(0, 200, 5)
    ]
    img = views.plot_curves(recs, tmp_path / "c.png", ys=("loss", "acc"), title="t")
    assert (tmp_path / "c.png").exists() and img.size[0] > 300
    flat = [{**r, "loss": 1.0} for r in recs]
    assert differ(img, views.plot_curves(flat, ys=("loss", "acc"), title="t")) > 0.1
    rows = [
        {"backend": b, "mask": m, "pass": p, "L": L, "time_ms": L * f / 100, "peak_mem_mb": L * f}
        for b, f in (("sdpa", 1.0), ("tiled", 0.3))
        for m in ("causal", "full")
        for p in ("fwd", "fwd+bwd")
        for L in (256, 512, 1024)
    ]
    rows.append({"backend": "math", "mask": "full", "pass": "fwd", "L": 4096, "time_ms": None})
    img = views.plot_bench(rows, tmp_path / "b.png", svg=True)
    assert (tmp_path / "b.svg").read_text().lstrip().startswith("<?xml")
    pixels(img)
    with pytest.raises(ValueError, match="L"):
        views.plot_bench([{"backend": "x", "time_ms": 1.0}])


def test_heatmap_size_labels_and_response():
    a = views.heatmap(softmax_rows((10, 10), 3), TOKENS, TOKENS, title="L0 H0")
    b = views.heatmap(torch.eye(10), TOKENS, TOKENS, title="L0 H0")
    assert a.image.size == (640, 560) and a.kind == "heatmap"
    assert differ(a.image, b.image) > 1.0
    assert a.data["q_labels"] == TOKENS
    long = views.heatmap(softmax_rows((1000, 700), 4), max_cells=250)
    assert long.data["weights"].shape == (250, 234) and long.data["pool"] == [4, 3]
    pixels(long.image)
    with pytest.raises(ValueError, match="q_labels"):
        views.heatmap(torch.eye(3), ["a"])
    with pytest.raises(ValueError, match="2-D"):
        views.heatmap(torch.ones(2, 2, 2))


def test_model_view_12x12_grid_renders_fast_enough_to_print():
    w = softmax_rows((12, 12, 128, 128), 5)
    views.model_view(w[:1, :1])  # warm caches (font, LUT)
    t0 = time.perf_counter()
    v = views.model_view(w, thumb=64)
    elapsed = time.perf_counter() - t0
    print(f"\nmodel_view 12x12 heads at L=128: {elapsed * 1000:.0f} ms")  # not asserted
    assert v.data["thumbnails"].shape == (12, 12, 64, 64)
    assert v.image.width >= 12 * 64 and v.image.height >= 12 * 64
    diag = torch.eye(128).expand(12, 12, 128, 128)
    assert differ(v.image, views.model_view(diag, thumb=64).image) > 1.0


def test_image_overlay_prefix_and_non_square_grid():
    img = Image.fromarray((np.random.default_rng(0).random((96, 160, 3)) * 255).astype(np.uint8))
    lay = PatchLayout.create((6, 10), 16, num_prefix=3, prefix_names=("cls", "dist", "reg"))
    w1 = np.zeros(len(lay), np.float32)
    w2 = np.zeros(len(lay), np.float32)
    w1[lay.index(0, 0)] = w2[lay.index(5, 9)] = 1.0
    w1[0] = w2[0] = 0.5
    a = views.image_overlay(img, w1, lay, title="cls")
    b = views.image_overlay(img, w2, lay, title="cls")
    assert a.image.size == b.image.size and a.image.height == 96 + 20
    assert differ(a.image, b.image) > 0.5
    assert a.data["grid"].shape == (6, 10) and a.data["prefix"].tolist() == [0.5, 0.0, 0.0]
    # Bilinear upsampling is smooth: the corner peak shows top-left, fades away from it.
    heat = views.upsample_grid(a.data["grid"], (96, 160))
    assert heat[0, 0] > heat[8, 20] > heat[40, 80] and heat[95, 159] == 0
    g = views.image_overlay(np.zeros((3, 32, 48)) + 0.5, np.arange(6.0).reshape(2, 3))
    assert g.image.height == 32
    with pytest.raises(ValueError, match="alpha"):
        views.image_overlay(img, w1, lay, alpha=2.0)


def test_spectrogram_overlay_uses_layout_coordinates():
    spec = np.random.default_rng(0).random((64, 120)).astype(np.float32)
    lay = SpectrogramLayout.create(120, frames_per_token=12, frame_stride=8, num_prefix=1,
                                   band_bins=((0, 32), (32, 64)))  # fmt: skip
    w1 = np.zeros(len(lay))
    w2 = np.zeros(len(lay))
    w1[1] = w2[-1] = 1.0  # first vs last cell
    a = views.spectrogram_overlay(spec, w1, lay)
    b = views.spectrogram_overlay(spec, w2, lay)
    assert a.image.size == (800, 480)
    assert differ(a.image, b.image) > 0.5
    assert a.data["cells"].shape == (64, 120)
    assert a.data["profile"][:12].sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="frames"):
        views.spectrogram_overlay(spec[:, :100], w1, lay)


def test_arcs_on_sequence_and_piano_roll():
    row1 = np.eye(10)[2] * 0.7 + 0.03
    row2 = np.eye(10)[8] * 0.7 + 0.03
    a = views.sequence_arcs(row1, TOKENS, query=5)
    b = views.sequence_arcs(row2, TOKENS, query=5)
    assert differ(a.image, b.image) > 0.2 and a.data["keys"][0][0] == 2
    lay = NoteLayout.create(np.arange(8) * 0.5, [60, 62, 64, -1, 67, 69, 71, 72], [0.5] * 8,
                            num_prefix=1)  # fmt: skip
    w = softmax_rows((9, 9), 6)
    p = views.piano_roll_arcs(w, lay, query=4, top_k=3)
    q = views.piano_roll_arcs(w.flip(-1), lay, query=4, top_k=3)
    assert p.image.size == (900, 450) and differ(p.image, q.image) > 0.2
    assert all(j not in (0, 4) for j, _ in p.data["keys"])
    with pytest.raises(ValueError, match="query"):
        views.piano_roll_arcs(w, lay, query=0)


def test_export_writes_png_svg_npz_json(tmp_path):
    v = views.heatmap(softmax_rows((6, 6), 7), TOKENS[:6], TOKENS[:6])
    out = views.export(v, tmp_path, "hm")
    assert set(out) == {"png", "svg", "npz", "json"}
    assert Image.open(out["png"]).size == v.image.size
    assert ET.parse(out["svg"]).getroot().tag.endswith("svg")
    np.testing.assert_array_equal(np.load(out["npz"])["weights"], v.data["weights"])
    assert json.loads(out["json"].read_text())["q_labels"] == TOKENS[:6]
    mv = views.export(views.model_view(softmax_rows((2, 3, 8, 8))), tmp_path, "mv")
    assert ET.parse(mv["svg"]).getroot().find("{http://www.w3.org/2000/svg}image") is not None
    assert views.export("<p>x</p>", tmp_path, "p")["html"].read_text() == "<p>x</p>"
    hv = views.export(views.head_view_html(softmax_rows((2, 6, 6)), TOKENS[:6]), tmp_path, "hv")
    assert "<script>" in hv["html"].read_text()  # standalone page runs the bundled JS
    assert json.loads(hv["json"].read_text())["q"] == TOKENS[:6]
    with pytest.raises(ValueError, match="stem"):
        views.export(v, tmp_path, "a/b")


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.payloads, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        d = dict(attrs)
        if "data-attn-hv" in d:
            self.payloads.append(json.loads(d["data-attn-hv"]))


def _parse_payload(markup: str) -> dict:
    p = _Collect()
    p.feed(markup)
    assert "script" not in p.tags  # Gradio would not run it anyway
    assert len(p.payloads) == 1
    return p.payloads[0]


def test_head_view_html_carries_topk_data():
    w = softmax_rows((2, 3, 10, 10), 8)  # 2 layers, 3 heads
    toks = TOKENS[:9] + ['<"&>']
    data = _parse_payload(views.head_view_html(w, toks, top_k=4, title="demo"))
    assert data["q"] == toks and data["topk"] == 4 and len(data["colors"]) == 3
    idx = np.array(data["idx"]).reshape(2, 3, 10, 4)
    val = np.array(data["val"]).reshape(2, 3, 10, 4) / data["scale"]
    ref_v, ref_i = torch.topk(w, 4, dim=-1)
    np.testing.assert_array_equal(idx, ref_i.numpy())
    np.testing.assert_allclose(val, ref_v.numpy(), atol=5e-4)
    js = views.head_view_js()
    assert (
        "attn-hv" in js
        and "watch" in js
        and "http" not in js.replace("http://www.w3.org/2000/svg", "")
    )


def test_head_view_stays_small_for_long_inputs():
    L = 1024
    w = softmax_rows((12, L, L), 9)
    full_bytes = 12 * L * L * 6  # what shipping every weight as short JSON numbers would cost
    markup = views.head_view_html(w, [f"tok{i}" for i in range(L)])
    data = _parse_payload(markup)
    assert len(markup) < 1_500_000 < full_bytes / 40
    assert data["pool"] == [2, 2] and len(data["q"]) == 512 and data["topk"] == 8
    small = views.head_view_data(w, [str(i) for i in range(L)], max_tokens=2048,
                                 max_entries=50_000)  # fmt: skip
    assert small["topk"] == 4 and len(small["idx"]) == 12 * L * 4
    with pytest.raises(ValueError, match="tokens"):
        views.head_view_html(w, ["a"])


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.browser
def test_head_view_runs_in_chromium(tmp_path):
    if not shutil.which("chromium"):
        pytest.skip("chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    w = softmax_rows((1, 2, 10, 10), 10)
    page_html = views.head_view_page(views.head_view_html(w, TOKENS, top_k=3))
    path = tmp_path / "hv.html"
    path.write_text(page_html, encoding="utf-8")
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"]  # fmt: skip
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            page.wait_for_selector(".attn-hv-svg")
            assert page.locator(".attn-hv-links line").count() == 2 * 10 * 3  # all links
            page.locator('.attn-hv-tok[data-side="q"][data-i="3"]').hover()
            assert page.locator(".attn-hv-links line").count() == 2 * 3  # one query's links
            assert '"on" attends to' in page.locator(".attn-hv-info").inner_text()
            page.locator(".attn-hv-head").first.click()  # hide head 0
            page.locator('.attn-hv-tok[data-side="q"][data-i="3"]').hover()
            assert page.locator(".attn-hv-links line").count() == 3
            assert not errors, errors
        finally:
            browser.close()
