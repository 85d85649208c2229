"""The package's face: ``from attnlab import *`` binds every public name, and only names."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("module", ["attnlab", "attnlab.core"])
def test_star_import_binds_every_name(module):
    mod = importlib.import_module(module)
    assert mod.__all__ and all(isinstance(n, str) for n in mod.__all__)
    assert len(set(mod.__all__)) == len(mod.__all__), "a name is listed twice"
    ns: dict = {}
    exec(f"from {module} import *", ns)  # noqa: S102 - the statement under test
    missing = [n for n in mod.__all__ if n not in ns]
    assert not missing
    for name in mod.__all__:
        assert ns[name] is getattr(mod, name)


def test_registry_api_is_the_core_one():
    import attnlab
    from attnlab.core import registry

    assert attnlab.create is registry.create and attnlab.load is registry.load
    assert attnlab.list_models is registry.list_models
