"""The Text tab in a real browser: type a sentence, analyse it, see the head view drawn by its
script and the saliency on the words; an empty sentence is answered with a readable message."""

import os
import tempfile
from pathlib import Path

import pytest

from tests.e2e.conftest import serve

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
SHOT = Path(os.environ.get("ATTNLAB_SHOTS") or tempfile.gettempdir()) / "text_demo.png"


@pytest.fixture(scope="module")
def text_url(chromium_path):
    """The suite with the Text tab alone, on 127.0.0.1, closed after the module."""
    with serve("text") as url:
        yield url


def test_text_tab_analyses_a_sentence(text_url, browser_page):
    page = browser_page
    page.goto(text_url)
    page.wait_for_selector("#text-run")
    box = page.locator("#text-input textarea")
    box.fill("The keys to the cabinet are on the table, said the old man.")
    page.locator("#text-run").click()
    page.wait_for_selector("#text-head-view .attn-hv-svg", timeout=60_000)  # the JS ran
    saliency = page.locator("#text-saliency")
    saliency.get_by_text("cabinet").first.wait_for()
    page.wait_for_selector("#text-model-view img")
    info = page.locator("#text-info").inner_text()
    assert "tokens" in info and "Most salient" in info
    hv = page.locator("#text-head-view").inner_text()
    assert "keys" in hv and "cabinet" in hv
    page.wait_for_selector("#text-gallery img", timeout=60_000)  # its own queue, after
    page.screenshot(path=str(SHOT), full_page=True)
    assert SHOT.stat().st_size > 30_000
    assert page.locator(".toast-body").count() == 0
    assert not page.js_errors, page.js_errors


def test_text_tab_answers_an_empty_sentence(text_url, browser_page):
    page = browser_page
    page.goto(text_url)
    page.wait_for_selector("#text-run")
    page.locator("#text-input textarea").fill("   ")
    page.locator("#text-run").click()
    toast = page.locator(".toast-body").first
    toast.wait_for(timeout=20_000)
    assert "empty" in toast.inner_text()
    assert page.locator("#text-run").is_enabled()
    assert not page.js_errors, page.js_errors
