"""Fixtures of the music domain's tests: a real chorale from music21's corpus."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def chorale_path() -> Path:
    from attnlab.domains.music.data import chorale_paths

    return chorale_paths()[5]
