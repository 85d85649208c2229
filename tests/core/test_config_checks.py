"""core.config_checks: sizes must be ints >= 1 (bools and floats refused) and dim must split over
the heads; every domain config refuses the same way."""

from dataclasses import dataclass

import pytest

from attnlab.core.config_checks import check_sizes


@dataclass
class _Cfg:
    dim: object = 64
    num_heads: object = 4
    depth: object = 2


@pytest.mark.parametrize("field, value", [("depth", 0), ("depth", True), ("depth", 2.0),
                                          ("dim", "64"), ("num_heads", -1)])  # fmt: skip
def test_bad_sizes_are_named(field, value):
    with pytest.raises(ValueError, match=f"{field} must be an int >= 1"):
        check_sizes(_Cfg(**{field: value}), "dim", "num_heads", "depth")


def test_dim_must_split_over_heads_and_good_sizes_pass():
    check_sizes(_Cfg(), "dim", "num_heads", "depth")
    with pytest.raises(ValueError, match="dim=66 must be divisible by num_heads=4"):
        check_sizes(_Cfg(dim=66), "dim", "num_heads", "depth")


@pytest.mark.parametrize("name", ["audio.model:KeywordConfig", "audio.model:SpeechConfig",
                                  "music.model:MusicConfig", "text.model:TextConfig",
                                  "vision.model:ViTConfig"])  # fmt: skip
def test_every_domain_config_refuses_the_same_way(name):
    import importlib

    mod, cls = name.split(":")
    Config = getattr(importlib.import_module(f"attnlab.domains.{mod}"), cls)
    with pytest.raises(ValueError, match="depth must be an int >= 1|enc_depth must be an int"):
        Config(**{"depth" if "depth" in Config.__dataclass_fields__ else "enc_depth": 0})
    with pytest.raises(ValueError, match="must be divisible by num_heads"):
        Config(dim=66, num_heads=4)
