"""The attnlab demo suite: one Gradio page with a tab per demo (the Core Explorer, then one per
domain that exists), and `launch`, which ``attnlab demo`` calls.

Each demo module exposes ``build() -> gr.Blocks``; the suite calls it inside its own tabs (a
Blocks created inside another Blocks' context renders there), so every demo also runs alone
with ``python -m``. Domains
whose app module is not there yet (or fails to import) are skipped with a note in the page,
never a crash.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re

import gradio as gr

__all__ = ["DEMOS", "available_demos", "build", "launch", "upload_limit"]

log = logging.getLogger(__name__)

# module under attnlab.apps (with a build() function) -> tab title; the explorer comes first
DEMOS: dict[str, str] = {
    "explorer": "Core Explorer",
    "text": "Text",
    "vision": "Vision",
    "audio": "Audio",
    "music": "Music",
}

ALIASES = {"core": "explorer", "core-explorer": "explorer"}


def available_demos() -> dict[str, object]:
    """Modules that exist and import, keyed by demo name (``explorer``, ``text``...)."""
    found = {}
    for name in DEMOS:
        if importlib.util.find_spec(f"attnlab.apps.{name}") is None:
            continue
        try:
            mod = importlib.import_module(f"attnlab.apps.{name}")
        except Exception as e:  # a broken domain must not take the whole suite down
            log.warning("demo %s skipped: %s", name, e)
            continue
        if callable(getattr(mod, "build", None)):
            found[name] = mod
    return found


def build(domain: str | None = None, options: dict | None = None) -> gr.Blocks:
    """The suite page: every available demo as a tab, or only ``domain`` when given.

    Args:
        domain: one demo, or None for all.
        options: keyword arguments for that demo's ``build`` (e.g. the vision demo's
            ``model`` and ``checkpoint``); only with ``domain``.

    Raises:
        ValueError: ``domain`` is not a known demo, or its app is not available.
    """
    if options and domain is None:
        raise ValueError("demo options (a model, a checkpoint) need one demo named")
    demos = available_demos()
    domain = ALIASES.get(domain, domain)
    if domain is not None:
        if domain not in DEMOS:
            raise ValueError(
                f"domain must be one of {', '.join(DEMOS)} (or None for all), got {domain!r}"
            )
        if domain not in demos:
            raise ValueError(f"the {domain} demo is not available in this installation")
        demos = {domain: demos[domain]}
    if not demos:
        raise ValueError("no demo is available (attnlab.apps.explorer failed to import)")
    with gr.Blocks(title="attnlab: see and use attention") as page:
        gr.Markdown(
            "# attnlab\nSee and use the attention mechanism: one exact, fast attention "
            "core, its masks and backends, and the demos built on it."
        )
        for name, mod in demos.items():
            with gr.Tab(DEMOS[name], id=name):
                # a Blocks created inside a Blocks context renders itself
                mod.build(**(options or {}))
        missing = [DEMOS[n] for n in DEMOS if n not in demos and domain is None]
        if missing:
            gr.Markdown(f"*Demos not available in this installation: {', '.join(missing)}.*")
    return page


def launch(
    domain: str | None = None, server_name: str = "127.0.0.1", server_port: int | None = None, **kw
) -> gr.Blocks:
    """Build the suite and serve it (``attnlab demo``).

    Args:
        domain: one demo (``explorer``, ``text``, ``vision``, ``audio``, ``music``) or None
            for all.
        server_name, server_port: where to listen (port None: Gradio picks a free one from
            7860 up).
        **kw: ``port`` (the CLI's name for ``server_port``); the rest goes to
            ``gr.Blocks.launch`` (``prevent_thread_lock=True`` returns at once; call
            ``close()`` on the returned Blocks when done).

    Returns:
        The launched ``gr.Blocks``.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if "port" in kw:  # the CLI's --port
        port = kw.pop("port")
        server_port = port if port is not None else server_port
    page = build(domain, kw.pop("options", None))
    if "max_file_size" not in kw:  # uploads are capped before any handler sees them
        kw["max_file_size"] = upload_limit(domain)
    page.queue(default_concurrency_limit=1)
    page.launch(server_name=server_name, server_port=server_port, **kw)
    return page


def upload_limit(domain: str | None = None) -> int | None:
    """The largest ``MAX_FILE_SIZE`` (bytes) the page's demos state (each demo module may
    define one, e.g. ``"8mb"``; each still checks its own limit); None when none does."""
    demos = available_demos()
    name = ALIASES.get(domain, domain)
    mods = [demos[name]] if name in demos else list(demos.values())
    sizes = [file_size_bytes(m.MAX_FILE_SIZE) for m in mods if hasattr(m, "MAX_FILE_SIZE")]
    return max(sizes) if sizes else None


_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}


def file_size_bytes(size: int | str) -> int:
    """Bytes of a Gradio-style size: an int, or ``"8mb"``, ``"400 MB"``, ``"512kb"``
    (binary units, as Gradio counts them)."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"(\d+)\s*([kmg]?b)", str(size).strip().lower())
    if m is None:
        raise ValueError(f"file size {size!r}: expected bytes or e.g. '8mb'")
    return int(m.group(1)) * _UNITS[m.group(2)]


if __name__ == "__main__":
    launch()
