"""Key/value caches for incremental decoding.

A ``KVCache`` holds one attention layer's keys and values (B, Hk, S, D). For self-attention the
new keys are appended at every step; for cross-attention the projected context is stored on the
first call and reused (``static``), so the encoder output is projected once per sequence.
Positional schemes read ``length`` as the position offset of the new queries.

Appends write in place into buffers grown by doubling (or pre-allocated for ``max_len``, as
gpt-fast's static cache; Hugging Face's ``StaticCache``), so a decoding step copies only its new
keys: concatenating (x-transformers, ``DynamicCache``) copies the whole cache at every token,
which at position ~500 was 40% of a step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["KVCache", "DecoderLayerCache", "rollback_on_error"]


class KVCache:
    """Keys and values of one attention layer: ``k`` (B, Hk, S, D), ``v`` (B, Hk, S, Dv).

    Appends write in place into buffers of ``capacity`` positions, grown by doubling, so a
    decoding step copies only its new positions; ``k``/``v`` are views of the filled part.

    Args:
        max_len: positions to allocate on the first append (gpt-fast's static cache); the
            buffers still grow past it. Default: the next power of two above the first append.
    """

    #: the smallest buffer allocated, in positions
    MIN_CAPACITY = 256

    def __init__(self, max_len: int | None = None) -> None:
        if max_len is not None and (not isinstance(max_len, int) or max_len < 1):
            raise ValueError(f"max_len must be a positive int or None, got {max_len!r}")
        self.max_len = max_len
        self._k: Tensor | None = None  # (B, Hk, capacity, D); positions >= length unused
        self._v: Tensor | None = None
        self._len = 0

    @property
    def k(self) -> Tensor | None:
        """The cached keys (B, Hk, length, D), a view of the buffer (None when empty)."""
        return None if self._k is None else self._k[:, :, : self._len]

    @property
    def v(self) -> Tensor | None:
        """The cached values (B, Hk, length, Dv), a view of the buffer (None when empty)."""
        return None if self._v is None else self._v[:, :, : self._len]

    @property
    def length(self) -> int:
        """Number of cached positions (the offset of the next query)."""
        return self._len

    @property
    def capacity(self) -> int:
        """Positions the buffers hold before the next append must grow them."""
        return 0 if self._k is None else self._k.shape[2]

    def _check(self, k: Tensor, v: Tensor) -> None:
        _check_pair(k, v, "append")
        if self._k is None:
            return
        ck, cv = self._k, self._v
        if k.shape[:2] != ck.shape[:2] or k.shape[3] != ck.shape[3] or v.shape[3] != cv.shape[3]:
            raise ValueError(
                f"kv_cache holds keys (B, Hk, S, D) = {tuple(self.k.shape)} and "
                f"values {tuple(self.v.shape)}; cannot append keys "
                f"{tuple(k.shape)} and values {tuple(v.shape)} (B, Hk and the "
                "head dims must match; reset() the cache for a new batch)"
            )
        if (k.dtype, k.device, v.dtype, v.device) != (ck.dtype, ck.device, cv.dtype, cv.device):
            raise ValueError(
                f"kv_cache holds {ck.dtype} keys on {ck.device}; cannot append "
                f"{k.dtype} keys on {k.device} (or values of another dtype/device)"
            )

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add the new keys/values (B, Hk, L, D) and return all of them (B, Hk, S + L, D).

        The returned tensors are views of the buffers; the positions they cover are never
        written again (growing copies into new buffers), so they stay valid. A call that raises
        leaves the cache as it was. Under autograd (inputs or cache requiring grad) the cache
        concatenates instead, so that gradients flow through it.
        """
        self._check(k, v)
        n, L = self._len, k.shape[2]
        track = torch.is_grad_enabled() and (
            k.requires_grad
            or v.requires_grad
            or (self._k is not None and (self._k.requires_grad or self._v.requires_grad))
        )
        if track:  # in-place writes would invalidate tensors saved for backward
            nk = k if self._k is None else torch.cat([self.k, k], dim=2)
            nv = v if self._v is None else torch.cat([self.v, v], dim=2)
            self._k, self._v, self._len = nk, nv, n + L
            return nk, nv
        if n + L > self.capacity:
            self._grow(k, v, n + L)
        with torch.no_grad():
            self._k[:, :, n : n + L].copy_(k)
            self._v[:, :, n : n + L].copy_(v)
        self._len = n + L  # only once both writes succeeded
        return self.k, self.v

    def _grow(self, k: Tensor, v: Tensor, need: int) -> None:
        # at least double: a sequence of appends copies each position O(1) times on average;
        # the first buffer has room past the prompt, so the first decoding step does not grow
        cap = max(need, 2 * self.capacity, self.MIN_CAPACITY, 1 << need.bit_length())
        if self._k is None and self.max_len is not None:
            cap = max(need, self.max_len)
        B, Hk = k.shape[:2]
        nk = k.new_empty(B, Hk, cap, k.shape[3])  # (B, Hk, capacity, D)
        nv = v.new_empty(B, Hk, cap, v.shape[3])
        if self._len:
            with torch.no_grad():
                nk[:, :, : self._len].copy_(self.k)
                nv[:, :, : self._len].copy_(self.v)
        self._k, self._v = nk, nv

    def set(self, k: Tensor, v: Tensor) -> None:
        """Store static keys/values (cross-attention): held as they are, not copied."""
        _check_pair(k, v, "set")
        self._k, self._v, self._len = k, v, k.shape[2]

    def reset(self) -> None:
        """Empty the cache (and free its buffers: views handed out stay valid)."""
        self._k = self._v = None
        self._len = 0

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` positions (0 empties the cache); later appends overwrite
        the positions dropped."""
        if not 0 <= length <= self._len:
            raise ValueError(f"cannot truncate a cache of length {self._len} to {length}")
        if length == 0:
            self.reset()
        else:
            self._len = length

    def __repr__(self) -> str:
        return f"KVCache(length={self.length}, capacity={self.capacity})"


def _check_pair(k, v, method: str) -> None:
    if (
        not isinstance(k, Tensor)
        or not isinstance(v, Tensor)
        or k.dim() != 4
        or v.dim() != 4
        or k.shape[:3] != v.shape[:3]
    ):

        def shape(t):
            return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__

        raise ValueError(
            f"kv_cache.{method} takes keys (B, Hk, L, D) and values (B, Hk, L, Dv) "
            f"with the same B, Hk, L; got {shape(k)} and {shape(v)}"
        )


@dataclass
class DecoderLayerCache:
    """The two caches of a decoder block: its causal self-attention and its cross-attention."""

    self_kv: KVCache = field(default_factory=KVCache)
    cross_kv: KVCache = field(default_factory=KVCache)

    @property
    def length(self) -> int:
        return self.self_kv.length


@contextlib.contextmanager
def rollback_on_error(caches: Sequence[KVCache | DecoderLayerCache] | None) -> Iterator[None]:
    """Restore every cache's length when the block raises: a decoding step that fails in layer
    i must not leave the caches of layers < i one step ahead of the others (and of the
    positions the next step is given)."""
    if caches is None:
        yield
        return
    kvs = [
        kv
        for c in caches
        for kv in ((c.self_kv, c.cross_kv) if isinstance(c, DecoderLayerCache) else (c,))
    ]
    lengths = [kv.length for kv in kvs]
    try:
        yield
    except BaseException:
        for kv, n in zip(kvs, lengths, strict=True):
            kv.truncate(n)
        raise
