"""Fixtures for the browser tests: Debian's chromium driven by Python playwright (never a
downloaded browser), and the demo suite served on 127.0.0.1 on a free port, always closed."""

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    return path


@contextlib.contextmanager
def serve(tab: str | None = None, **launch: object) -> Iterator[str]:
    """The demo suite (or one ``tab``) served on 127.0.0.1 on a free port: yields its URL and
    closes it afterwards; ``launch`` goes to ``suite.launch`` (e.g. ``max_file_size``)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from attnlab.apps import suite

    port = _free_port()
    page = None
    try:
        page = suite.launch(tab, server_port=port, prevent_thread_lock=True, quiet=True, **launch)
        yield f"http://127.0.0.1:{port}/"
    finally:
        if page is not None:
            page.close()


@pytest.fixture(scope="module")
def suite_url(chromium_path):
    """URL of the demo suite, launched without blocking and closed after the module."""
    with serve() as url:
        yield url


@pytest.fixture()
def browser_page(chromium_path):
    """A fresh chromium page (1400 x 1000) whose JavaScript errors are collected."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.js_errors = []
            page.on("pageerror", lambda e: page.js_errors.append(str(e)))
            yield page
        finally:
            browser.close()
