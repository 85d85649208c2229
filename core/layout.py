"""Coordinate maps: what each query/key index of an attention map stands for.

An attention map is indexed by token positions; a person reads it on the input. A layout
maps every index to the input's own coordinates, so views draw in those coordinates:

- `TextLayout`: a token's label and its character span in the source text;
- `PatchLayout`: an image patch (row, col, pixel box) on a possibly non-square grid, after
  any number of prefix tokens (class, distillation, registers; as in timm's
  ``num_prefix_tokens``, Dosovitskiy et al. 2021, Touvron et al. 2021, Darcet et al. 2024);
- `SpectrogramLayout`: a spectrogram cell (a run of STFT frames, optionally a frequency
  band), with hop/window lengths turned into seconds and overlapping token strides (as in
  AST's overlapping patches, Gong et al. 2021, or Whisper's stride-2 convolution);
- `NoteLayout`: a note or event (onset, pitch, duration), as in a piano roll.

All layouts are frozen dataclasses sharing `num_prefix`, `__len__`, `labels()` and
`describe(i)`. Weights may be numpy arrays or torch tensors; results are numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["NoteLayout", "PatchLayout", "SpectrogramLayout", "TextLayout", "TokenLayout"]


def _as_numpy(weights: Any, name: str = "weights") -> np.ndarray:
    """Return `weights` as a float numpy array (torch tensors are detached and moved to CPU)."""
    if isinstance(weights, torch.Tensor):
        return weights.detach().to("cpu", torch.float32).numpy()
    if isinstance(weights, (np.ndarray, list, tuple)):
        return np.asarray(weights, dtype=np.float32)
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(weights).__name__}")


def _check_last(weights: np.ndarray, n: int, name: str = "weights") -> None:
    if weights.ndim == 0 or weights.shape[-1] != n:
        raise ValueError(f"{name} must end with a dimension of {n} positions, got {weights.shape}")


@dataclass(frozen=True)
class TokenLayout:
    """A plain sequence of positions: the base of all layouts.

    Attributes:
        length: number of positions (prefix tokens included).
        num_prefix: leading positions that stand for no part of the input (CLS, registers).
        prefix_names: labels of the prefix positions (default "cls", "reg1", ...).
    """

    length: int
    num_prefix: int = 0
    prefix_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.length < 0:
            raise ValueError(f"length must be >= 0, got {self.length}")
        if not 0 <= self.num_prefix <= self.length:
            raise ValueError(f"num_prefix must be in [0, {self.length}], got {self.num_prefix}")
        if self.prefix_names and len(self.prefix_names) != self.num_prefix:
            raise ValueError(
                f"prefix_names has {len(self.prefix_names)} names for "
                f"{self.num_prefix} prefix tokens"
            )

    def __len__(self) -> int:
        return self.length

    def _prefix_label(self, i: int) -> str:
        if self.prefix_names:
            return self.prefix_names[i]
        return "cls" if i == 0 else f"reg{i}"

    def _check_index(self, i: int) -> int:
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for a layout of {self.length} positions")
        return i % self.length

    def labels(self) -> list[str]:
        """A short label per position (prefix names, then position numbers)."""
        return [self._prefix_label(i) for i in range(self.num_prefix)] + [
            str(i) for i in range(self.length - self.num_prefix)
        ]

    def describe(self, i: int) -> dict[str, Any]:
        """What position `i` stands for, as a plain dict."""
        i = self._check_index(i)
        if i < self.num_prefix:
            return {"index": i, "kind": "prefix", "label": self._prefix_label(i)}
        return {"index": i, "kind": "position", "label": str(i - self.num_prefix)}

    def split_prefix(self, weights: Any) -> tuple[np.ndarray, np.ndarray]:
        """Split (..., length) weights into (..., num_prefix) and (..., length - num_prefix)."""
        w = _as_numpy(weights)
        _check_last(w, self.length)
        return w[..., : self.num_prefix], w[..., self.num_prefix :]


@dataclass(frozen=True)
class TextLayout(TokenLayout):
    """Text tokens with character spans in `text` (`None` for special tokens)."""

    tokens: tuple[str, ...] = ()
    spans: tuple[tuple[int, int] | None, ...] = ()
    text: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.tokens) != self.length:
            raise ValueError(f"tokens has {len(self.tokens)} entries for length {self.length}")
        if self.spans and len(self.spans) != self.length:
            raise ValueError(f"spans has {len(self.spans)} entries for length {self.length}")
        for i, span in enumerate(self.spans):
            if span is not None and not 0 <= span[0] <= span[1] <= len(self.text):
                raise ValueError(f"spans[{i}]={span} lies outside text of {len(self.text)} chars")

    @classmethod
    def from_tokens(
        cls, tokens: list[str], text: str | None = None, num_prefix: int = 0
    ) -> TextLayout:
        """Build a layout, finding each token's span by scanning `text` left to right.

        WordPiece "##" and SentencePiece/BPE space markers are stripped before searching;
        tokens that are not found (e.g. "[CLS]") get no span. Without `text`, the tokens are
        joined with spaces.
        """
        if text is None:
            text = " ".join(tokens)
        spans: list[tuple[int, int] | None] = []
        cursor = 0
        for tok in tokens:
            piece = tok.removeprefix("##").lstrip("\u2581\u0120 ")
            pos = text.find(piece, cursor) if piece else -1
            if pos < 0 and piece:
                pos = text.lower().find(piece.lower(), cursor)
            if pos < 0 or (tok.startswith("[") and tok.endswith("]")):
                spans.append(None)
                continue
            spans.append((pos, pos + len(piece)))
            cursor = pos + len(piece)
        return cls(
            length=len(tokens),
            num_prefix=num_prefix,
            tokens=tuple(tokens),
            spans=tuple(spans),
            text=text,
        )

    def labels(self) -> list[str]:
        return list(self.tokens)

    def describe(self, i: int) -> dict[str, Any]:
        i = self._check_index(i)
        span = self.spans[i] if self.spans else None
        return {"index": i, "kind": "token", "label": self.tokens[i], "span": span}

    def token_at_char(self, c: int) -> int | None:
        """Index of the token whose span holds character `c`, or None."""
        for i, span in enumerate(self.spans):
            if span is not None and span[0] <= c < span[1]:
                return i
        return None

    def char_weights(self, weights: Any) -> np.ndarray:
        """Spread (..., length) token weights onto (..., len(text)) characters of the text."""
        w = _as_numpy(weights)
        _check_last(w, self.length)
        out = np.zeros(w.shape[:-1] + (len(self.text),), dtype=np.float32)
        for i, span in enumerate(self.spans):
            if span is not None:
                out[..., span[0] : span[1]] = w[..., i : i + 1]
        return out


@dataclass(frozen=True)
class PatchLayout(TokenLayout):
    """Image patches on a `grid` = (rows, cols), row-major, after `num_prefix` prefix tokens.

    `patch_size` = (height, width) in pixels and `stride` (default: the patch size) place
    each patch's pixel box; `image_size` = (height, width) defaults to the grid's extent.
    """

    grid: tuple[int, int] = (1, 1)
    patch_size: tuple[int, int] = (16, 16)
    stride: tuple[int, int] | None = None
    image_size: tuple[int, int] | None = None

    @classmethod
    def create(
        cls,
        grid: tuple[int, int],
        patch_size: int | tuple[int, int] = 16,
        num_prefix: int = 0,
        prefix_names: tuple[str, ...] = (),
        stride: int | tuple[int, int] | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> PatchLayout:
        """Build a layout from the grid; the length is num_prefix + rows * cols."""
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"grid must be (rows, cols) with both >= 1, got {grid}")
        ps = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        st = (stride, stride) if isinstance(stride, int) else stride
        return cls(
            length=num_prefix + grid[0] * grid[1], num_prefix=num_prefix,
            prefix_names=tuple(prefix_names), grid=tuple(grid), patch_size=ps,
            stride=None if st is None else tuple(st), image_size=image_size,
        )  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.length != self.num_prefix + self.grid[0] * self.grid[1]:
            raise ValueError(
                f"length {self.length} != num_prefix {self.num_prefix} + grid {self.grid} cells"
            )

    @property
    def step(self) -> tuple[int, int]:
        return self.stride if self.stride is not None else self.patch_size

    @property
    def pixel_size(self) -> tuple[int, int]:
        """(height, width) of the image the grid covers."""
        if self.image_size is not None:
            return self.image_size
        (r, c), (sh, sw), (ph, pw) = self.grid, self.step, self.patch_size
        return ((r - 1) * sh + ph, (c - 1) * sw + pw)

    def index(self, row: int, col: int) -> int:
        """Sequence index of the patch at (row, col)."""
        if not (0 <= row < self.grid[0] and 0 <= col < self.grid[1]):
            raise IndexError(f"(row, col)=({row}, {col}) outside grid {self.grid}")
        return self.num_prefix + row * self.grid[1] + col

    def position(self, i: int) -> tuple[int, int]:
        """(row, col) of the patch at sequence index `i` (which must not be a prefix token)."""
        i = self._check_index(i)
        if i < self.num_prefix:
            raise ValueError(f"index {i} is a prefix token and has no grid position")
        return divmod(i - self.num_prefix, self.grid[1])

    def box(self, i: int) -> tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1) of patch `i`."""
        row, col = self.position(i)
        (sh, sw), (ph, pw) = self.step, self.patch_size
        return (col * sw, row * sh, col * sw + pw, row * sh + ph)

    def describe(self, i: int) -> dict[str, Any]:
        i = self._check_index(i)
        if i < self.num_prefix:
            return {"index": i, "kind": "prefix", "label": self._prefix_label(i)}
        row, col = self.position(i)
        return {"index": i, "kind": "patch", "label": f"r{row}c{col}", "row": row,
                "col": col, "box": self.box(i)}  # fmt: skip

    def labels(self) -> list[str]:
        return [self.describe(i)["label"] for i in range(self.length)]

    def to_grid(self, weights: Any) -> np.ndarray:
        """(..., length) weights -> (..., rows, cols) patch weights, prefix tokens dropped."""
        _, patches = self.split_prefix(weights)
        return patches.reshape(patches.shape[:-1] + tuple(self.grid))  # (..., rows, cols)

    def from_grid(self, grid: Any, prefix: Any = None) -> np.ndarray:
        """Inverse of `to_grid`: (..., rows, cols) -> (..., length); prefix weights default 0."""
        g = _as_numpy(grid, "grid")
        if tuple(g.shape[-2:]) != tuple(self.grid):
            raise ValueError(f"grid must end with {self.grid}, got {g.shape}")
        flat = g.reshape(g.shape[:-2] + (-1,))
        if prefix is None:
            pre = np.zeros(flat.shape[:-1] + (self.num_prefix,), dtype=np.float32)
        else:
            pre = np.broadcast_to(_as_numpy(prefix, "prefix"), flat.shape[:-1] + (self.num_prefix,))
        return np.concatenate([pre, flat], axis=-1)


@dataclass(frozen=True)
class SpectrogramLayout(TokenLayout):
    """Spectrogram cells: tokens on a (time, freq) grid, time-major, after prefix tokens.

    Token t (or (t, f)) covers STFT frames ``[t * frame_stride, t * frame_stride +
    frames_per_token)``; overlapping tokens (stride < size) are allowed. STFT frame k covers
    samples ``[k * hop, k * hop + win)``. With `freq_bands`, each time step has one token per
    band, covering mel/FFT bins ``band_bins[j]`` = (lo, hi).
    """

    num_frames: int = 0
    sample_rate: int = 16000
    hop: int = 160
    win: int = 400
    frames_per_token: int = 1
    frame_stride: int = 1
    band_bins: tuple[tuple[int, int], ...] = ()
    num_bins: int = 0

    @classmethod
    def create(
        cls,
        num_frames: int,
        sample_rate: int = 16000,
        hop: int = 160,
        win: int = 400,
        frames_per_token: int = 1,
        frame_stride: int | None = None,
        band_bins: tuple[tuple[int, int], ...] = (),
        num_bins: int = 0,
        num_prefix: int = 0,
        prefix_names: tuple[str, ...] = (),
    ) -> SpectrogramLayout:
        """Build a layout; the number of time steps follows from frames and strides."""
        stride = frames_per_token if frame_stride is None else frame_stride
        if frames_per_token < 1 or stride < 1:
            raise ValueError("frames_per_token and frame_stride must be >= 1")
        if num_frames < frames_per_token:
            raise ValueError(f"num_frames {num_frames} < frames_per_token {frames_per_token}")
        steps = (num_frames - frames_per_token) // stride + 1
        bands = max(1, len(band_bins))
        return cls(
            length=num_prefix + steps * bands, num_prefix=num_prefix,
            prefix_names=tuple(prefix_names), num_frames=num_frames, sample_rate=sample_rate,
            hop=hop, win=win, frames_per_token=frames_per_token, frame_stride=stride,
            band_bins=tuple(tuple(b) for b in band_bins),
            num_bins=num_bins or (max(b[1] for b in band_bins) if band_bins else 0),
        )  # fmt: skip

    @property
    def num_bands(self) -> int:
        return max(1, len(self.band_bins))

    @property
    def num_steps(self) -> int:
        return (self.length - self.num_prefix) // self.num_bands

    def frames(self, i: int) -> tuple[int, int]:
        """STFT frame range [start, stop) of token `i`."""
        i = self._check_index(i)
        if i < self.num_prefix:
            raise ValueError(f"index {i} is a prefix token and covers no frames")
        t = (i - self.num_prefix) // self.num_bands
        return (t * self.frame_stride, t * self.frame_stride + self.frames_per_token)

    def seconds(self, i: int) -> tuple[float, float]:
        """(start, end) time in seconds of the audio token `i` hears."""
        f0, f1 = self.frames(i)
        return (
            f0 * self.hop / self.sample_rate,
            ((f1 - 1) * self.hop + self.win) / self.sample_rate,
        )

    def frame_times(self) -> np.ndarray:
        """Centre time in seconds of every STFT frame, shape (num_frames,)."""
        return (np.arange(self.num_frames) * self.hop + self.win / 2) / self.sample_rate

    def describe(self, i: int) -> dict[str, Any]:
        i = self._check_index(i)
        if i < self.num_prefix:
            return {"index": i, "kind": "prefix", "label": self._prefix_label(i)}
        t, f = divmod(i - self.num_prefix, self.num_bands)
        s0, s1 = self.seconds(i)
        out = {"index": i, "kind": "cell", "label": f"{s0:.2f}s", "step": t,
               "frames": self.frames(i), "seconds": (s0, s1)}  # fmt: skip
        if self.band_bins:
            out["band"] = f
            out["bins"] = self.band_bins[f]
            out["label"] = f"{s0:.2f}s b{f}"
        return out

    def labels(self) -> list[str]:
        return [self.describe(i)["label"] for i in range(self.length)]

    def to_grid(self, weights: Any) -> np.ndarray:
        """(..., length) -> (..., num_steps, num_bands) token weights, prefix tokens dropped."""
        _, cells = self.split_prefix(weights)
        return cells.reshape(cells.shape[:-1] + (self.num_steps, self.num_bands))

    def _frame_matrix(self) -> np.ndarray:
        """(num_steps, num_frames) matrix spreading each step's weight evenly on its frames."""
        m = np.zeros((self.num_steps, self.num_frames), dtype=np.float32)
        for t in range(self.num_steps):
            f0 = t * self.frame_stride
            m[t, f0 : f0 + self.frames_per_token] = 1.0 / self.frames_per_token
        return m

    def time_profile(self, weights: Any) -> np.ndarray:
        """(..., length) -> (..., num_frames) weight per STFT frame (mass preserving).

        Bands are summed; a token's weight is spread evenly over the frames it covers, so
        overlapping strides add up where tokens share frames and the total is unchanged.
        """
        g = self.to_grid(weights).sum(-1)  # (..., num_steps)
        return g @ self._frame_matrix()

    def cell_map(self, weights: Any, mode: str = "mean") -> np.ndarray:
        """(..., length) -> (..., num_bins, num_frames) map on the spectrogram's own cells.

        Args:
            weights: one weight per position.
            mode: "mean": each cell shows the mean weight of the tokens covering it (what a
                picture should show; overlapping tokens do not add up); "mass": each token's
                weight is spread evenly over its cells, so the map sums to the total weight.

        Without bands every row repeats the time axis (`num_bins` rows, at least 1).
        """
        if mode not in ("mean", "mass"):
            raise ValueError(f"mode must be 'mean' or 'mass', got {mode!r}")
        g = self.to_grid(weights)  # (..., steps, bands)
        cover = self._frame_matrix() * self.frames_per_token  # (steps, frames) 0/1 coverage
        if mode == "mass":
            per_frame = np.einsum("...tb,tf->...bf", g, cover / self.frames_per_token)
        else:
            count = np.maximum(cover.sum(0), 1.0)  # tokens covering each frame
            per_frame = np.einsum("...tb,tf->...bf", g, cover) / count  # (..., bands, frames)
        rows = max(1, self.num_bins)
        if not self.band_bins:
            if mode == "mass":
                per_frame = per_frame / rows
            return np.repeat(per_frame, rows, axis=-2)
        out = np.zeros(g.shape[:-2] + (rows, self.num_frames), dtype=np.float32)
        hits = np.zeros((rows, 1), dtype=np.float32)
        for j, (lo, hi) in enumerate(self.band_bins):
            share = 1.0 / max(1, hi - lo) if mode == "mass" else 1.0
            out[..., lo:hi, :] += per_frame[..., j : j + 1, :] * share
            hits[lo:hi] += 1.0
        if mode == "mean":  # overlapping bands are averaged too
            out = out / np.maximum(hits, 1.0)
        return out


@dataclass(frozen=True)
class NoteLayout(TokenLayout):
    """Notes or events in a sequence: onset and duration (seconds or beats) and MIDI pitch.

    Non-note events (bar lines, tempo) have pitch -1. Arrays have one entry per non-prefix
    position.
    """

    onsets: tuple[float, ...] = ()
    pitches: tuple[int, ...] = ()
    durations: tuple[float, ...] = ()
    names: tuple[str, ...] = field(default=())

    @classmethod
    def create(
        cls,
        onsets: Any,
        pitches: Any,
        durations: Any,
        num_prefix: int = 0,
        names: tuple[str, ...] = (),
    ) -> NoteLayout:
        """Build a layout from per-note arrays (lists, numpy or torch)."""
        on = tuple(float(x) for x in _as_numpy(onsets, "onsets").ravel())
        pi = tuple(int(x) for x in _as_numpy(pitches, "pitches").ravel())
        du = tuple(float(x) for x in _as_numpy(durations, "durations").ravel())
        return cls(length=num_prefix + len(on), num_prefix=num_prefix, onsets=on, pitches=pi,
                   durations=du, names=tuple(names))  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        n = self.length - self.num_prefix
        for name in ("onsets", "pitches", "durations"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, expected {n}")
        if self.names and len(self.names) != n:
            raise ValueError(f"names has {len(self.names)} entries, expected {n}")
        if any(d < 0 for d in self.durations):
            raise ValueError("durations must be >= 0")

    def note(self, i: int) -> tuple[float, int, float]:
        """(onset, pitch, duration) of position `i`."""
        i = self._check_index(i)
        if i < self.num_prefix:
            raise ValueError(f"index {i} is a prefix token and is no note")
        j = i - self.num_prefix
        return (self.onsets[j], self.pitches[j], self.durations[j])

    def describe(self, i: int) -> dict[str, Any]:
        i = self._check_index(i)
        if i < self.num_prefix:
            return {"index": i, "kind": "prefix", "label": self._prefix_label(i)}
        onset, pitch, dur = self.note(i)
        j = i - self.num_prefix
        label = self.names[j] if self.names else (_pitch_name(pitch) if pitch >= 0 else "event")
        return {"index": i, "kind": "note" if pitch >= 0 else "event", "label": label,
                "onset": onset, "pitch": pitch, "duration": dur}  # fmt: skip

    def labels(self) -> list[str]:
        return [self.describe(i)["label"] for i in range(self.length)]

    def to_notes(self, weights: Any) -> np.ndarray:
        """(..., length) -> (..., length - num_prefix) weights per note, prefix dropped."""
        return self.split_prefix(weights)[1]


_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def _pitch_name(pitch: int) -> str:
    """MIDI pitch -> scientific pitch name (60 -> C4)."""
    return f"{_NAMES[pitch % 12]}{pitch // 12 - 1}"
