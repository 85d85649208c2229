"""The Music tab in a real browser: the default chorale is read when the page opens, a click on
the piano roll redraws the arcs, a continuation plays and is downloadable, and a file that is
not music is answered with a readable message."""

import os
import tempfile
from pathlib import Path

import pytest

from tests.e2e.conftest import serve

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]
SHOT = Path(os.environ.get("ATTNLAB_SHOTS") or tempfile.gettempdir()) / "music_demo.png"


@pytest.fixture(scope="module")
def music_url(chromium_path):
    """The suite with the Music tab alone, on 127.0.0.1, closed after the module."""
    from attnlab.apps import music
    from attnlab.core import registry

    if not all(n in registry.list_weights() for n in ("music/relative", "music/absolute")):
        pytest.skip("the music weights are not shipped in this checkout")
    with serve("music", max_file_size=music.MAX_FILE_SIZE) as url:
        yield url


def _roll_src(page) -> str:
    return page.locator("#music-roll img").get_attribute("src") or ""


def test_music_tab_reads_clicks_and_continues(music_url, browser_page):
    page = browser_page
    page.goto(music_url)
    page.wait_for_selector("#music-roll img", timeout=90_000)  # read on page load
    page.locator("#music-info").get_by_text("notes in").wait_for(timeout=30_000)
    before = _roll_src(page)
    box = page.locator("#music-roll img").bounding_box()
    # a note sits somewhere in the middle of a chorale's roll: click around it until one hits
    for fx, fy in ((0.45, 0.5), (0.3, 0.45), (0.55, 0.6), (0.4, 0.35)):
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_timeout(2500)
        if _roll_src(page) != before:
            break
    assert _roll_src(page) != before, "a click on the roll did not redraw the arcs"
    assert "attends most to" in page.locator("#music-info").inner_text()
    page.locator("#music-generate").click()
    page.wait_for_selector("#music-rel-roll img", timeout=180_000)
    page.wait_for_selector("#music-abs-roll img", timeout=30_000)
    assert "new notes" in page.locator("#music-gen-info").inner_text()
    page.wait_for_selector("#music-rel-midi a", timeout=30_000)
    page.screenshot(path=str(SHOT), full_page=True)
    assert SHOT.stat().st_size > 30_000
    assert not page.js_errors, page.js_errors


def test_music_tab_answers_a_file_that_is_not_music(music_url, browser_page, tmp_path):
    page = browser_page
    page.goto(music_url)
    page.wait_for_selector("#music-roll img", timeout=90_000)
    bad = tmp_path / "notes.mid"
    bad.write_text("this is not a MIDI file")
    page.locator("#music-upload input[type=file]").set_input_files(str(bad))
    page.wait_for_timeout(1000)
    page.locator("#music-load").click()
    toast = page.locator(".toast-body").first
    toast.wait_for(timeout=30_000)
    assert "not a MIDI file" in toast.inner_text()
    assert page.locator("#music-load").is_enabled()
    assert not page.js_errors, page.js_errors
