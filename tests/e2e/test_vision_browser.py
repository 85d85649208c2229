"""The Vision tab in a real browser: pick an example, analyse it, see the overlay, click a patch
and see what it attends to; a corrupt upload is answered with a readable message."""

import os
import tempfile
from pathlib import Path

import pytest

from tests.e2e.conftest import serve

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]
SHOT = Path(os.environ.get("ATTNLAB_SHOTS") or tempfile.gettempdir()) / "vision_demo.png"


@pytest.fixture(scope="module")
def vision_url(chromium_path, tmp_path_factory):
    """The suite with the Vision tab alone (shipped weights, or untrained stand-ins where this
    checkout does not ship them), on 127.0.0.1, closed after the module."""
    from attnlab.core import registry
    from attnlab.domains.vision.data import SHAPES

    mp = pytest.MonkeyPatch()
    if "vision/locate" not in registry.list_weights():
        root = tmp_path_factory.mktemp("weights")
        m = registry.create("vision_locate", labels=list(SHAPES), mean=[0.5] * 3,
                            std=[0.25] * 3)  # fmt: skip
        registry.save_weights(m, "vision/locate", {}, root=root)
        mp.setenv("ATTNLAB_WEIGHTS", str(root))
    try:
        with serve("vision", max_file_size="50mb") as url:
            yield url
    finally:
        mp.undo()


def _choose(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(value)
    page.get_by_role("option", name=value, exact=True).click()


def test_vision_tab_explains_an_example_and_a_clicked_patch(vision_url, browser_page):
    page = browser_page
    page.goto(vision_url)
    page.wait_for_selector("#vision-run")
    _choose(page, "vision-model", "vision/locate")
    _choose(page, "vision-example", "scene 2")
    page.locator("#vision-use-example").click()
    page.wait_for_selector("#vision-image img", timeout=30_000)
    page.locator("#vision-run").click()
    page.wait_for_selector("#vision-overlay img", timeout=90_000)
    page.wait_for_selector("#vision-distance img", timeout=30_000)
    assert "attention rollout" in page.locator("#vision-info").inner_text()
    assert "prefix tokens: cls" in page.locator("#vision-model-info").inner_text()
    img = page.locator("#vision-overlay img")
    box = img.bounding_box()
    img.click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.7})
    page.wait_for_selector("#vision-patch img", timeout=60_000)
    page.get_by_text("of its attention on patches").wait_for(timeout=30_000)
    page.screenshot(path=str(SHOT), full_page=True)
    assert SHOT.stat().st_size > 30_000
    assert page.locator(".toast-body").count() == 0
    assert not page.js_errors, page.js_errors


def test_vision_tab_answers_a_corrupt_upload(vision_url, browser_page, tmp_path):
    page = browser_page
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    page.goto(vision_url)
    page.wait_for_selector("#vision-run")
    page.locator("#vision-image input[type=file]").set_input_files(str(bad))
    page.wait_for_timeout(1500)
    page.locator("#vision-run").click()
    toast = page.locator(".toast-body").first
    toast.wait_for(timeout=60_000)
    text = toast.inner_text()
    assert "image" in text.lower()
    assert page.locator("#vision-run").is_enabled()
    assert not page.js_errors, page.js_errors
