"""The checks every model config here runs in ``__post_init__``: sizes are ints >= 1 and the
width splits evenly over the heads. One wording, so a bad ``model.dim=...`` override reads the
same for every domain."""

from __future__ import annotations

from typing import Any

__all__ = ["check_sizes"]


def check_sizes(config: Any, *names: str) -> None:
    """``ValueError`` unless each field ``names`` of ``config`` is an int >= 1 (not a bool), and,
    when the config has ``dim`` and ``num_heads``, ``dim`` divides by ``num_heads``."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    dim, heads = getattr(config, "dim", None), getattr(config, "num_heads", None)
    if isinstance(dim, int) and isinstance(heads, int) and dim % heads:
        raise ValueError(f"dim={dim} must be divisible by num_heads={heads}")
