"""The demo suite in a real browser: choose a mask, run, see the pictures and the numbers, and
see bad input answered with a readable message instead of a crash."""

import os
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
# screenshots stay for a person to look at (ATTNLAB_SHOTS=folder), else in the temp folder
SHOTS = Path(os.environ.get("ATTNLAB_SHOTS") or tempfile.gettempdir())


def _choose_mask(page, name: str) -> None:
    page.locator("#explorer-mask input").click()
    page.get_by_role("option", name=name, exact=True).click()


def test_explorer_runs_a_local_window(suite_url, browser_page):
    page = browser_page
    page.goto(suite_url)
    page.wait_for_selector("#explorer-run")
    _choose_mask(page, "local window")
    window = page.locator("#explorer-window input")
    window.wait_for(state="visible")  # the mask's own parameter appears
    window.fill("6")
    page.locator("#explorer-run").click()
    page.wait_for_selector("#explorer-used img", timeout=30_000)
    page.wait_for_selector("#explorer-allowed img")
    results = page.locator("#explorer-results")
    results.get_by_text("output max abs diff vs math").wait_for()
    text = results.inner_text()
    assert "causal window 6" in text
    assert "peak memory" in text and "time (best run)" in text
    page.wait_for_selector("#explorer-head-view .attn-hv-svg")  # the head view's JS ran
    shot = SHOTS / "explorer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    assert page.locator(".toast-body").count() == 0  # no error message
    assert not page.js_errors, page.js_errors


def test_explorer_shows_bad_input_as_a_message(suite_url, browser_page):
    page = browser_page
    page.goto(suite_url)
    page.wait_for_selector("#explorer-run")
    _choose_mask(page, "local window")
    page.locator("#explorer-window input").fill("500")  # larger than L = 32
    page.locator("#explorer-run").click()
    toast = page.locator(".toast-body").first  # the refusal, as an error message
    toast.get_by_text("is larger than L = 32").wait_for(timeout=20_000)
    page.screenshot(path=str(SHOTS / "explorer_error.png"))
    assert page.locator("#explorer-run").is_enabled()  # the page is still alive
    assert not page.js_errors, page.js_errors
