"""Typed ``key=value`` overrides: each supported type parsed, bad values named with the type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

import pytest

from attnlab.core.overrides import OverrideError, coerce_value, field_types, parse_value


@pytest.mark.parametrize(
    "tp,raw,want",
    [
        (int, "64", 64),
        (int, " 3 ", 3),
        (int, "1e3", 1000),
        (int, "-2", -2),
        (float, "0.1", 0.1),
        (float, "3", 3.0),
        (float, "1e-3", 1e-3),
        (bool, "true", True),
        (bool, "False", False),
        (bool, "1", True),
        (bool, "0", False),
        (bool, "yes", True),
        (bool, "NO", False),
        (str, "runs/x", "runs/x"),
        (str, "3", "3"),
        (int | None, "none", None),
        (Optional[int], "null", None),  # noqa: UP045 - the spelling under test
        (int | None, "7", 7),
        (int | str, "7", 7),
        (int | str, "seven", "seven"),
        (tuple[int, ...], "1,2,3", (1, 2, 3)),
        (tuple[int, ...], "(1, 2)", (1, 2)),
        (tuple[int, ...], "[4]", (4,)),
        (tuple[int, ...], "", ()),
        (tuple[int, float], "2,0.5", (2, 0.5)),
        (list[float], "[0.5, 1]", [0.5, 1.0]),
        (list[str], "a, b", ["a", "b"]),
        (list[bool], "yes,no", [True, False]),
        (Literal["fp32", "bf16"], "bf16", "bf16"),
        (Literal[1, 2], "2", 2),
        (dict, '{"a": 1}', {"a": 1}),
        (dict[str, Any], "{}", {}),
        (Any, "3", 3),
        (Any, "[1, 2]", [1, 2]),
        (Any, "abc", "abc"),
    ],
)
def test_parse_value_by_type(tp, raw, want):
    got = parse_value("k", raw, tp)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(
    "tp,raw,expected",
    [
        (int, "abc", "expected an int"),
        (int, "1.5", "expected an int"),
        (int, "true", "expected an int"),
        (int, "", "expected an int"),
        (float, "fast", "expected a float"),
        (bool, "maybe", "expected a bool (true/false/1/0/yes/no)"),
        (bool, "2", "expected a bool (true/false/1/0/yes/no)"),
        (int | None, "x", "expected an int or none"),
        (tuple[int, ...], "1,b", "expected a tuple of int, comma-separated"),
        (tuple[int, float], "1,2,3", "expected a tuple of 2 (int, float), comma-separated"),
        (list[float], "[1, 'x']", "expected a list of float, comma-separated"),
        (Literal["fp32", "bf16"], "fp8", "expected one of 'fp32', 'bf16'"),
        (dict, "[1]", "expected a JSON object"),
    ],
)
def test_bad_values_name_key_value_and_type(tp, raw, expected):
    with pytest.raises(OverrideError) as exc:
        parse_value("model.dim", raw, tp)
    assert str(exc.value) == f"model.dim={raw}: {expected}"
    assert isinstance(exc.value, ValueError)


def test_coerce_json_values():
    assert coerce_value("steps", 64.0, int) == 64 and coerce_value("lr", 1, float) == 1.0
    assert coerce_value("quiet", True, bool) is True
    assert coerce_value("patch", [16, 16], tuple[int, int]) == (16, 16)
    assert coerce_value("x", None, int | None) is None
    for value, tp, msg in [
        (True, int, "steps=true: expected an int"),
        ("fast", float, "steps=fast: expected a float"),
        (3, str, "steps=3: expected a string"),
        ({"a": 1}, int, 'steps={"a": 1}: expected an int'),
    ]:
        with pytest.raises(OverrideError, match=msg.replace("(", r"\(")):
            coerce_value("steps", value, tp)


@dataclass(frozen=True)
class _Cfg:
    dim: int = 8
    ratio: float = 4.0
    sizes: tuple[int, ...] = (1, 2)
    mode: Literal["a", "b"] = "a"


def test_field_types_resolve_string_annotations():
    assert field_types(_Cfg) == {
        "dim": int,
        "ratio": float,
        "sizes": tuple[int, ...],
        "mode": Literal["a", "b"],
    }
