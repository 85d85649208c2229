"""Typed ``key=value`` overrides: a command-line string parsed by a dataclass field's type.

Hydra's dotted overrides (``model.dim=64``) reduced to what frozen configs need: the value is
parsed by the field's annotation, never ``eval``'d, so that ``model.dim=abc`` is refused as
``model.dim=abc: expected an int`` before anything is built. Supported annotations: ``int``,
``float``, ``bool`` (true/false/1/0/yes/no), ``str``, ``Literal[...]``, ``X | None`` and other
unions, ``tuple[X, ...]``, ``tuple[X, Y]`` and ``list[X]`` (comma-separated or a JSON list),
``dict`` (a JSON object) and ``Any`` (JSON when it parses, the string otherwise). The same
rules check values read from JSON (config files, checkpoints, cards).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
import typing
from typing import Any, Literal, Union

__all__ = ["OverrideError", "field_types", "parse_value", "coerce_value", "describe"]

_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_NONES = ("none", "null")


class OverrideError(ValueError):
    """A ``key=value`` override with an unknown key or a value of the wrong type."""


class _Mismatch(Exception):
    """The value does not parse as the type (the caller names key, value and type)."""


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation of dataclass ``cls`` (``Any`` where unresolvable)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation naming something its module cannot see
        hints = {}
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def parse_value(key: str, raw: str, tp: Any) -> Any:
    """Parse the command-line string ``raw`` as type ``tp``.

    Args:
        key: the override's key, for the message (``"model.dim"``).
        raw: the text after ``=``.
        tp: the field's annotation.

    Raises:
        OverrideError: ``"model.dim=abc: expected an int"``.
    """
    try:
        return _convert(raw, tp)
    except _Mismatch:
        raise OverrideError(f"{key}={raw}: expected {describe(tp)}") from None


def coerce_value(key: str, value: Any, tp: Any) -> Any:
    """Check a value read from JSON against ``tp`` (strings are parsed as on the command line).

    Raises:
        OverrideError: ``'lr="fast": expected a float'``.
    """
    try:
        return _convert(value, tp)
    except _Mismatch:
        try:
            shown = value if isinstance(value, str) else json.dumps(value)
        except (TypeError, ValueError):
            shown = repr(value)
        raise OverrideError(f"{key}={shown}: expected {describe(tp)}") from None


def _json_or_str(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _is_union(origin: Any) -> bool:
    return origin is Union or origin is types.UnionType


def _convert(v: Any, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return _json_or_str(v) if isinstance(v, str) else v
    if origin is Literal:
        for choice in args:
            try:
                if _convert(v, type(choice)) == choice:
                    return choice
            except _Mismatch:
                pass
        raise _Mismatch
    if _is_union(origin):
        if type(None) in args and (v is None or (isinstance(v, str) and v.lower() in _NONES)):
            return None
        # str last, so that "3" for ``int | str`` is the int
        for arg in sorted((a for a in args if a is not type(None)), key=lambda a: a is str):
            try:
                return _convert(v, arg)
            except _Mismatch:
                pass
        raise _Mismatch
    if tp is type(None):
        if v is None or (isinstance(v, str) and v.lower() in _NONES):
            return None
        raise _Mismatch
    if tp is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in _BOOLS:
            return _BOOLS[v.strip().lower()]
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        raise _Mismatch
    if tp is int:
        return _to_int(v)
    if tp is float:
        return _to_float(v)
    if tp is str:
        if isinstance(v, str):
            return v
        raise _Mismatch
    if origin in (tuple, list) or tp in (tuple, list):
        return _to_sequence(v, origin or tp, args)
    if origin is dict or tp is dict:
        if isinstance(v, str):
            v = _json_or_str(v)
        if isinstance(v, dict):
            return dict(v)
        raise _Mismatch
    if inspect.isclass(tp) and isinstance(v, tp):
        return v
    raise _Mismatch


def _to_int(v: Any) -> int:
    if isinstance(v, bool):
        raise _Mismatch
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            pass
        try:
            v = float(v)
        except ValueError:
            raise _Mismatch from None
    if isinstance(v, float) and v.is_integer():  # 1e3, 64.0
        return int(v)
    raise _Mismatch


def _to_float(v: Any) -> float:
    if isinstance(v, bool):
        raise _Mismatch
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            raise _Mismatch from None
    raise _Mismatch


def _to_sequence(v: Any, kind: type, args: tuple[Any, ...]) -> tuple | list:
    if isinstance(v, str):
        text = v.strip()
        parsed = _json_or_str(text) if text.startswith("[") else text
        if isinstance(parsed, list):
            v = parsed
        else:
            if text[:1] + text[-1:] in ("()", "[]"):
                text = text[1:-1].strip()
            v = [x.strip() for x in text.split(",")] if text else []
    if not isinstance(v, list | tuple):
        raise _Mismatch
    if not args:
        elem_types = [Any] * len(v)
    elif kind is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        if len(v) != len(args):
            raise _Mismatch
        elem_types = list(args)
    else:
        elem_types = [args[0]] * len(v)
    return kind(_convert(x, t) for x, t in zip(v, elem_types, strict=True))


def describe(tp: Any) -> str:
    """How a message names type ``tp``: "an int", "one of 'fp32', 'bf16'", ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return "a value"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if _is_union(origin):
        parts = [describe(a) for a in args if a is not type(None)]
        return " or ".join(parts + (["none"] if type(None) in args else []))
    if tp is type(None):
        return "none"
    names = {bool: "a bool (true/false/1/0/yes/no)", int: "an int", float: "a float",
             str: "a string", dict: "a JSON object"}  # fmt: skip
    if tp in names:
        return names[tp]
    if origin is dict:
        return names[dict]
    if origin in (tuple, list) or tp in (tuple, list):
        kind = (origin or tp).__name__
        if not args:
            return f"a {kind}, comma-separated"
        if kind == "tuple" and not (len(args) == 2 and args[1] is Ellipsis):
            inner = ", ".join(_short(a) for a in args)
            return f"a tuple of {len(args)} ({inner}), comma-separated"
        return f"a {kind} of {_short(args[0])}, comma-separated"
    return f"a {getattr(tp, '__name__', str(tp))}"


def _short(tp: Any) -> str:
    if typing.get_origin(tp) is None and hasattr(tp, "__name__"):
        return tp.__name__
    return describe(tp)
