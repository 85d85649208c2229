"""The Audio tab in a real browser: speak a phrase with eSpeak NG, see the spectrogram overlay,
the transcription, the word times beside the true starts; an empty phrase is answered with a
readable message."""

import os
import tempfile
from pathlib import Path

import pytest

from tests.e2e.conftest import serve

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]
SHOT = Path(os.environ.get("ATTNLAB_SHOTS") or tempfile.gettempdir()) / "audio_demo.png"


@pytest.fixture(scope="module")
def audio_url(chromium_path):
    """The suite with the Audio tab alone, on 127.0.0.1, closed after the module."""
    from attnlab.core.registry import list_weights

    if not {"audio/kws", "audio/asr"} <= set(list_weights()):
        pytest.skip("the shipped audio weights are not in this checkout")
    with serve("audio") as url:
        yield url


def test_audio_tab_speaks_and_analyses_a_phrase(audio_url, browser_page):
    page = browser_page
    page.goto(audio_url)
    page.wait_for_selector("#audio-speak")
    page.locator("#audio-phrase textarea").fill("stop go left")
    page.locator("#audio-speak").click()
    page.wait_for_selector("#audio-time img", timeout=90_000)
    page.wait_for_selector("#audio-spec img")
    text = page.locator("#audio-text textarea").input_value()
    assert text.strip()
    assert "true start" in page.locator("#audio-table").inner_text()
    page.screenshot(path=str(SHOT), full_page=True)
    assert SHOT.stat().st_size > 30_000
    assert not page.js_errors, page.js_errors


def test_audio_tab_answers_an_empty_phrase(audio_url, browser_page):
    page = browser_page
    page.goto(audio_url)
    page.wait_for_selector("#audio-speak")
    page.locator("#audio-phrase textarea").fill("   ")
    page.locator("#audio-speak").click()
    toast = page.locator(".toast-body").first
    toast.wait_for(timeout=20_000)
    assert "empty" in toast.inner_text()
    assert page.locator("#audio-speak").is_enabled()
    assert not page.js_errors, page.js_errors
