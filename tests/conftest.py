"""Shared test set-up: `tests/` on sys.path (for `reference`), no analytics, headless plots."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")
