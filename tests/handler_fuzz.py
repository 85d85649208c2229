"""The fuzz loop every Gradio tab's tests share: each handler, with good values and then with
each bad value in each argument, either answers or refuses with a ``gr.Error`` sentence; a
bare exception fails the test, naming the handler, the argument and the value."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr
import pytest


def refusals(
    handlers: dict[str, tuple[Callable, list[Any]]],
    bad_values: Sequence[Any],
    substitute: Callable[[str, int, Any], Any] | None = None,
    good_may_refuse: Callable[[str, gr.Error], bool] | None = None,
) -> int:
    """Run the loop; return how many calls were refused with a sentence.

    Args:
        handlers: name -> (handler, good arguments).
        bad_values: what each argument is replaced with, in turn.
        substitute: ``(name, position, bad) -> value`` for arguments that wrap a bad value
            (e.g. a click event); default the bad value itself.
        good_may_refuse: ``(name, error) -> bool`` for handlers whose good values may still be
            refused (e.g. a click beside every note); default none may.
    """
    refused = 0
    for name, (fn, good) in handlers.items():
        try:
            fn(*good)  # the good values work
        except gr.Error as e:
            if good_may_refuse is None or not good_may_refuse(name, e):
                raise
        for pos in range(len(good)):
            for bad in bad_values:
                args = list(good)
                args[pos] = bad if substitute is None else substitute(name, pos, bad)
                try:
                    fn(*args)
                except gr.Error as e:
                    assert str(e.message).strip(), (name, pos, bad)
                    refused += 1
                except Exception as e:  # noqa: BLE001
                    pytest.fail(f"{name} arg {pos} = {bad!r:.40}: bare {type(e).__name__}: {e}")
    return refused


MALFORMED = (None, "", "abc", "12", -1, 2.5, 10**9, float("nan"), float("inf"), [], {}, True,
             [1, 2], {"a": 1})  # fmt: skip


def silent_components(page: gr.Blocks, skip: tuple[str, ...] = ("State",)) -> list[tuple]:
    """The API layer: every input component of every listener of ``page`` either accepts each
    malformed payload or raises ``gr.Error`` with a message. Returns the exceptions it did not
    (listener, component, value, what), to assert empty; ``skip`` names component classes
    whose payloads Gradio itself checks (e.g. ``File``)."""
    silent = []
    for fn in page.fns.values():
        for comp in fn.inputs:
            if not hasattr(comp, "preprocess") or type(comp).__name__ in skip:
                continue
            for bad in MALFORMED:
                try:
                    comp.preprocess(bad)
                except gr.Error as e:
                    if not str(e.message).strip():
                        silent.append((fn.api_name, comp.label, bad, "empty"))
                except Exception as e:  # noqa: BLE001 - what we are hunting
                    silent.append((fn.api_name, comp.label, bad, f"{type(e).__name__}: {e}"))
    return silent
