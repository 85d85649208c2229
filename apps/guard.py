"""Input guards shared by every Gradio tab: each refusal reaches the user as a sentence.

Gradio turns an exception that is not a ``gr.Error`` into a bare "Error" with no message, and
its own components raise such exceptions on malformed API payloads (``"abc"`` or NaN sent to a
``gr.Number``, a number sent to a ``gr.CheckboxGroup``). Two guards close both doors:

* the components here (``Number``, ``Slider``, ``Checkbox``, ``CheckboxGroup``) check the
  payload's type before Gradio's own ``preprocess`` and refuse with ``gr.Error`` naming the
  field and what it expects;
* ``user_errors`` wraps a handler so that ``ValueError``/``TypeError`` (the package's way of
  saying "bad input") become ``gr.Error`` with the same sentence, ``MemoryError`` a request to
  choose a smaller input, and anything else a one-line message, never a traceback.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

__all__ = ["Number", "Slider", "Checkbox", "CheckboxGroup", "user_errors", "refuse"]

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def refuse(message: str, title: str = "Cannot run this") -> gr.Error:
    """A ``gr.Error`` carrying ``message`` (raise it)."""
    return gr.Error(message, title=title)


def _name(component: Any) -> str:
    return str(getattr(component, "label", None) or "this field")


def _number(component: Any, payload: Any) -> Any:
    if payload is None:
        return None
    if isinstance(payload, bool) or not isinstance(payload, (int, float)):
        if isinstance(payload, str):
            try:
                payload = float(payload.strip())
            except ValueError:
                raise refuse(f"{_name(component)} must be a number, got {payload!r}.") from None
        else:
            raise refuse(f"{_name(component)} must be a number, got {type(payload).__name__}.")
    if not math.isfinite(payload):
        raise refuse(f"{_name(component)} must be a finite number, got {payload!r}.")
    return payload


class Number(gr.Number):
    """``gr.Number`` that refuses non-numbers, NaN and infinities with a sentence."""

    def preprocess(self, payload: Any) -> Any:
        return super().preprocess(_number(self, payload))


class Slider(gr.Slider):
    """``gr.Slider`` that refuses non-numbers, NaN and infinities with a sentence."""

    def preprocess(self, payload: Any) -> Any:
        value = _number(self, payload)
        if value is None:
            raise refuse(f"{_name(self)} needs a value.")
        return super().preprocess(value)


class Checkbox(gr.Checkbox):
    """``gr.Checkbox`` that accepts only true/false."""

    def preprocess(self, payload: Any) -> Any:
        if payload is not None and not isinstance(payload, bool):
            raise refuse(f"{_name(self)} must be true or false, got {payload!r}.")
        return super().preprocess(payload)


class CheckboxGroup(gr.CheckboxGroup):
    """``gr.CheckboxGroup`` that accepts only a list of its choices."""

    def preprocess(self, payload: Any) -> Any:
        if payload is None:
            payload = []
        if not isinstance(payload, (list, tuple)):
            raise refuse(f"{_name(self)} must be a list of choices, got {payload!r}.")
        return super().preprocess(list(payload))


def user_errors(fn: F) -> F:
    """Wrap a Gradio handler: every failure reaches the user as ``gr.Error`` with a sentence."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise refuse(_sentence(e)) from e
        except MemoryError as e:
            raise refuse("This input needs more memory than the server has: choose a shorter "
                         "input or fewer heads/layers.") from e
        except Exception as e:  # a bug: log it, still answer with a sentence
            log.exception("handler %s failed", getattr(fn, "__name__", fn))
            raise refuse(f"The request failed ({type(e).__name__}: {_sentence(e)}). Try "
                         "another input; if it keeps failing, please report it.") from e

    return wrapper  # type: ignore[return-value]


def _sentence(e: BaseException) -> str:
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    msg = msg.strip() or f"invalid input ({type(e).__name__})"
    return msg if msg.endswith((".", "!", "?")) else msg + "."
