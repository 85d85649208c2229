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
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import gradio as gr

__all__ = [
    "Number",
    "Slider",
    "Checkbox",
    "CheckboxGroup",
    "user_errors",
    "refuse",
    "as_int",
    "as_float",
    "as_text",
    "as_choice",
    "as_index_or_mean",
]

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def refuse(message: str, title: str = "Cannot run this") -> gr.Error:
    """A ``gr.Error`` carrying ``message`` (raise it)."""
    return gr.Error(message, title=title)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict, tuple, set)):
        raise refuse(f"{name} must be a number, got {_show(value)}: enter a number.")
    try:
        f = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):
        raise refuse(f"{name} must be a number, got {_show(value)}: enter a number.") from None
    if not math.isfinite(f):
        raise refuse(f"{name} must be a finite number, got {_show(value)}: enter a number.")
    return f


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def as_int(value: Any, name: str, lo: int, hi: int) -> int:
    """A whole number in [lo, hi] from a form value (numbers, numeric strings)."""
    f = _number(value, name)
    if f != int(f):
        raise refuse(
            f"{name} must be a whole number, got {_show(value)}: enter one from {lo} to {hi}."
        )
    n = int(f)
    if not lo <= n <= hi:
        raise refuse(f"{name} must be from {lo} to {hi}, got {n}: choose a value in range.")
    return n


def as_float(value: Any, name: str, lo: float, hi: float, *, open_lo: bool = False) -> float:
    """A number in [lo, hi] (or (lo, hi] with ``open_lo``) from a form value."""
    f = _number(value, name)
    if f < lo or f > hi or (open_lo and f == lo):
        rng = f"above {lo} and at most {hi}" if open_lo else f"from {lo} to {hi}"
        raise refuse(f"{name} must be {rng}, got {f:g}: choose a value in range.")
    return f


def as_text(value: Any, name: str, max_chars: int) -> str:
    """Non-blank text of at most ``max_chars`` characters."""
    if not isinstance(value, str):
        raise refuse(f"{name} must be text, got {type(value).__name__}: type some words.")
    if not value.strip():
        raise refuse(f"{name} is empty: type some words.")
    if len(value) > max_chars:
        raise refuse(
            f"{name} is {len(value):,} characters long: shorten it to at most "
            f"{max_chars:,} characters."
        )
    return value


def as_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise refuse(
            f"{name} must be one of {', '.join(choices)}, got {_show(value)}: pick one of them."
        )
    return value


def as_index_or_mean(value: Any, name: str, n: int) -> int | None:
    """``None`` for "mean" (average over all), else an index in [0, n)."""
    if isinstance(value, str) and value.strip().lower() in ("mean", "average", "all"):
        return None
    return as_int(value, name, 0, n - 1)


def _name(component: Any) -> str:
    return str(getattr(component, "label", None) or "this field")


def _component_number(component: Any, payload: Any) -> Any:
    """A component's numeric payload: numbers pass as they are, numeric strings are read;
    anything else (and NaN, infinities) is refused with the component's label."""
    if payload is None or (
        isinstance(payload, (int, float))
        and not isinstance(payload, bool)
        and math.isfinite(payload)
    ):
        return payload
    return _number(payload, _name(component))


class Number(gr.Number):
    """``gr.Number`` that refuses non-numbers, NaN and infinities with a sentence."""

    def preprocess(self, payload: Any) -> Any:
        return super().preprocess(_component_number(self, payload))


class Slider(gr.Slider):
    """``gr.Slider`` that refuses non-numbers, NaN and infinities with a sentence."""

    def preprocess(self, payload: Any) -> Any:
        value = _component_number(self, payload)
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


def user_errors(fn: F, *, what: str | None = None) -> F:
    """Wrap a Gradio handler: every failure reaches the user as ``gr.Error`` with a sentence.

    Args:
        fn: the handler.
        what: what the handler does ("compare the sentences"): every failure then reads
            "Could not <what>: <reason>. Change the input and try again."
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except MemoryError as e:
            raise refuse(
                "This input needs more memory than the server has: choose a shorter "
                "input or fewer heads/layers."
            ) from e
        except Exception as e:  # noqa: BLE001 - every failure must reach the page as text
            user = isinstance(e, (ValueError, TypeError, KeyError, IndexError))
            if not user:  # a bug: log it, still answer with a sentence
                log.exception("handler %s failed", getattr(fn, "__name__", fn))
            if what is not None:
                msg = str(e).strip() or type(e).__name__
                raise refuse(f"Could not {what}: {msg}. Change the input and try again.") from e
            if user:
                raise refuse(_sentence(e)) from e
            raise refuse(
                f"The request failed ({type(e).__name__}: {_sentence(e)}). Try "
                "another input; if it keeps failing, please report it."
            ) from e

    return wrapper  # type: ignore[return-value]


def _sentence(e: BaseException) -> str:
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    msg = msg.strip() or f"invalid input ({type(e).__name__})"
    return msg if msg.endswith((".", "!", "?")) else msg + "."
