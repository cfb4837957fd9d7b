"""Quick-look PNG of a huge scene with object outlines, built while the scene streams past.

Nothing is re-read at the end: each finished row band of the scene (input pixels, valid mask, object
labels) is pooled into a small grid as it goes by, ``factor`` x ``factor`` scene pixels per quick-look
pixel (``factor = ceil(longest side / max_side_px)``), and kept as a :class:`QuicklookPart` (a few quick-look
rows). The parts are small, can be saved with a run's checkpoint, and :func:`render_quicklook` adds them up.

- Image: mean of the valid pixels of each cell, per band, contrast-stretched (2nd-98th percentile of the
  quick-look itself); cells without a valid pixel are black. One band is shown grey, three or more as the
  first three bands (R, G, B if the bands are in that order).
- Outlines: an object pixel is an outline pixel when one of its 4 neighbours (inside the scene) carries
  another label or none; a cell holding an outline pixel is painted in its object's class colour (max class
  id in the cell). Small objects therefore stay visible as coloured dots however far the scene is reduced.

Outline pixels need the rows above and below, so :class:`OutlineTracer` lags one row behind the bands it
is given and carries the last two label rows between bands (``carry``, saved with checkpoints).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from smallseg.io.atomic import atomic_path

# Class colours (class id 1, 2, ...; repeats after the last): yellow, magenta, cyan, orange, lime, red.
CLASS_COLOURS = np.array(
    [[255, 230, 0], [255, 0, 200], [0, 220, 255], [255, 140, 0], [120, 255, 0], [255, 40, 40]], np.uint8
)


@dataclass(frozen=True)
class QuicklookGrid:
    """Reduction of a ``height x width`` scene to a quick-look of ``out_height x out_width`` px.

    Attributes:
        height, width: scene size in px.
        factor: scene px per quick-look px along each axis.
        out_height, out_width: quick-look size in px (``ceil(size / factor)``).
    """

    height: int
    width: int
    factor: int

    @property
    def out_height(self) -> int:
        return math.ceil(self.height / self.factor)

    @property
    def out_width(self) -> int:
        return math.ceil(self.width / self.factor)


def quicklook_grid(height: int, width: int, max_side_px: int = 1024) -> QuicklookGrid:
    """The :class:`QuicklookGrid` whose longer side is at most ``max_side_px`` (no enlargement)."""
    if max_side_px < 1:
        raise ValueError(f"max_side_px {max_side_px}: must be >= 1")
    return QuicklookGrid(int(height), int(width), max(1, math.ceil(max(height, width) / max_side_px)))


@dataclass
class QuicklookPart:
    """Pooled sums of some scene rows: quick-look rows ``[row0, row0 + n)``.

    Attributes:
        row0: first quick-look row.
        image_sum: (C, n, out_width) float64 sum of valid pixel values per cell (or (0, n, out_width)).
        valid_count: (n, out_width) int64 valid pixels per cell.
        outline: (n, out_width) uint8 largest class id of an outline pixel in the cell, 0 = none.
    """

    row0: int
    image_sum: np.ndarray
    valid_count: np.ndarray
    outline: np.ndarray

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays to store (e.g. in an ``.npz``), names prefixed with ``prefix``."""
        return {
            f"{prefix}row0": np.array(self.row0, np.int64),
            f"{prefix}image_sum": self.image_sum,
            f"{prefix}valid_count": self.valid_count,
            f"{prefix}outline": self.outline,
        }

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> "QuicklookPart":
        """Inverse of :meth:`to_arrays`."""
        return cls(
            row0=int(arrays[f"{prefix}row0"]),
            image_sum=np.asarray(arrays[f"{prefix}image_sum"]),
            valid_count=np.asarray(arrays[f"{prefix}valid_count"]),
            outline=np.asarray(arrays[f"{prefix}outline"]),
        )


def _row_groups(grid: QuicklookGrid, row0: int, n: int) -> tuple[int, np.ndarray]:
    """First quick-look row of scene rows ``[row0, row0 + n)`` and each row's quick-look row offset."""
    q = (row0 + np.arange(n)) // grid.factor
    return int(q[0]), q - q[0]


def image_part(grid: QuicklookGrid, row0: int, image: np.ndarray, valid: np.ndarray) -> QuicklookPart:
    """Pool scene rows ``[row0, row0 + h)`` of the input.

    Args:
        grid: the quick-look grid.
        row0: first scene row of ``image``.
        image: (C, h, width) pixel values of those rows (any numeric dtype).
        valid: (h, width) bool, False on nodata.

    Returns:
        A :class:`QuicklookPart` with the image sums and valid counts (no outlines).
    """
    c, h, w = image.shape
    k, wq = grid.factor, grid.out_width
    q0, offsets = _row_groups(grid, row0, h)
    nq = int(offsets[-1]) + 1
    pad = wq * k - w
    # Column pooling: pad the width to whole cells, then sum each cell's k columns. Sums are accumulated
    # in float64 by the reduction itself: no float copy of the (C, h, width) band is made.
    # One band at a time and no padded copy when the width fills whole cells: temporaries of the width of
    # a huge scene add up.
    widen = (lambda a: a) if pad == 0 else (lambda a: np.pad(a, ((0, 0), (0, pad))))
    col_valid = widen(valid).reshape(h, wq, k).sum(axis=2, dtype=np.float64)
    col_sum = np.empty((c, h, wq), np.float64)
    for b in range(c):
        kept = np.where(valid, image[b], np.zeros((), image.dtype))
        col_sum[b] = widen(kept).reshape(h, wq, k).sum(axis=2, dtype=np.float64)
        del kept
    # Row pooling: consecutive rows with the same quick-look row are summed.
    starts = np.flatnonzero(np.r_[True, offsets[1:] != offsets[:-1]])
    return QuicklookPart(
        row0=q0,
        image_sum=np.add.reduceat(col_sum, starts, axis=1),
        valid_count=np.add.reduceat(col_valid, starts, axis=0).astype(np.int64),
        outline=np.zeros((nq, wq), np.uint8),
    )


_OUTLINE_CHUNK_ROWS = 64


def _rows(pieces: list[np.ndarray], i0: int, i1: int) -> np.ndarray:
    """Rows ``[i0, i1)`` of the row-wise concatenation of ``pieces`` (a copy of just those rows)."""
    out, offset = [], 0
    for piece in pieces:
        n = piece.shape[0]
        lo, hi = max(i0 - offset, 0), min(i1 - offset, n)
        if lo < hi:
            out.append(piece[lo:hi])
        offset += n
    return np.concatenate(out) if out else pieces[0][:0].copy()


class OutlineTracer:
    """Outline pixels of a label raster given as consecutive row bands (see module docstring).

    Args:
        grid: the quick-look grid (scene size and factor).
    """

    def __init__(self, grid: QuicklookGrid):
        self.grid = grid
        self.next_row = 0  # next scene row expected
        self.next_decided = 0  # next scene row whose outline pixels are not yet out
        self.carry_labels = np.zeros((0, grid.width), np.uint32)
        self.carry_classes = np.zeros((0, grid.width), np.uint8)

    @property
    def carry(self) -> dict[str, np.ndarray]:
        """State to save between bands: the last two label/class rows seen and the row counters."""
        return {
            "outline_rows": np.array([self.next_row, self.next_decided], np.int64),
            "outline_carry_labels": self.carry_labels,
            "outline_carry_classes": self.carry_classes,
        }

    def restore(self, carry) -> None:
        """Continue from a state returned by :attr:`carry`."""
        self.next_row, self.next_decided = (int(v) for v in carry["outline_rows"])
        self.carry_labels = np.asarray(carry["outline_carry_labels"], np.uint32)
        self.carry_classes = np.asarray(carry["outline_carry_classes"], np.uint8)

    def add(self, row0: int, labels: np.ndarray, classes: np.ndarray) -> QuicklookPart | None:
        """Take the next band and return the pooled outlines of the rows that became decidable.

        Args:
            row0: first scene row of the band (must follow the previous band).
            labels: (h, width) integer object ids, 0 = background.
            classes: (h, width) uint8 class of each pixel's object.

        Returns:
            The outlines of the scene rows decided now (all but the band's last row, plus the row before
            the band; the last band decides everything left), or None when no row was decided.
        """
        g = self.grid
        if row0 != self.next_row:
            raise ValueError(f"outline band starts at row {row0}, expected row {self.next_row}")
        h = labels.shape[0]
        real_labels = [self.carry_labels, np.asarray(labels, np.uint32)]
        real_classes = [self.carry_classes, np.asarray(classes, np.uint8)]
        n_real = self.carry_labels.shape[0] + h
        ext_row0 = row0 - self.carry_labels.shape[0]
        self.carry_labels = _rows(real_labels, max(n_real - 2, 0), n_real)
        self.carry_classes = _rows(real_classes, max(n_real - 2, 0), n_real)
        self.next_row = row0 + h
        last = self.next_row >= g.height
        start = self.next_decided
        end = self.next_row - 1 if last else self.next_row - 2  # inclusive: needs the row below
        if end < start:
            return None
        self.next_decided = end + 1
        zero = np.zeros((1, g.width), np.uint32)
        ext_labels, ext_classes = real_labels, real_classes
        if start == 0:  # above the scene is nothing
            ext_labels = [zero, *ext_labels]
            ext_classes = [zero.astype(np.uint8), *ext_classes]
            ext_row0 -= 1
        if last:  # below the scene is nothing
            ext_labels = [*ext_labels, zero]
        a, b = start - ext_row0, end - ext_row0 + 1
        k = g.factor
        q0 = start // k
        nq = end // k - q0 + 1
        outline = np.zeros((nq, g.out_width), np.uint8)
        # In chunks of rows: the comparisons' temporaries are then bounded whatever the scene width.
        for i0 in range(a, b, _OUTLINE_CHUNK_ROWS):
            i1 = min(i0 + _OUTLINE_CHUNK_ROWS, b)
            block = _rows(ext_labels, i0 - 1, i1 + 1)
            mid = block[1:-1]
            edge = (mid != block[:-2]) | (mid != block[2:])
            across = mid[:, 1:] != mid[:, :-1]
            edge[:, 1:] |= across
            edge[:, :-1] |= across
            edge[:, 0] = edge[:, -1] = True  # the scene's left/right border (nothing beyond it)
            edge &= mid != 0
            rows, cols = np.nonzero(edge)
            np.maximum.at(outline, ((start + i0 - a + rows) // k - q0, cols // k),
                          _rows(ext_classes, i0, i1)[rows, cols])
        return QuicklookPart(
            row0=q0,
            image_sum=np.zeros((0, nq, g.out_width)),
            valid_count=np.zeros((nq, g.out_width), np.int64),
            outline=outline,
        )


def render_quicklook(grid: QuicklookGrid, parts: list[QuicklookPart], n_bands: int) -> np.ndarray:
    """Add up the parts and draw the quick-look.

    Args:
        grid: the quick-look grid.
        parts: image parts and outline parts, any order, any overlap of rows (they add up).
        n_bands: C of the image parts.

    Returns:
        (out_height, out_width, 3) uint8 RGB.
    """
    hq, wq = grid.out_height, grid.out_width
    total = np.zeros((n_bands, hq, wq))
    count = np.zeros((hq, wq), np.int64)
    outline = np.zeros((hq, wq), np.uint8)
    for p in parts:
        n = p.valid_count.shape[0]
        sl = slice(p.row0, p.row0 + n)
        if p.image_sum.shape[0]:
            total[:, sl] += p.image_sum
        count[sl] += p.valid_count
        outline[sl] = np.maximum(outline[sl], p.outline)
    valid = count > 0
    mean = total / np.maximum(count, 1)
    show = mean[:3] if n_bands >= 3 else np.repeat(mean[:1], 3, axis=0)
    rgb = np.zeros((3, hq, wq), np.uint8)
    if valid.any():
        for b in range(3):
            values = show[b][valid]
            lo, hi = np.percentile(values, [2, 98])
            scale = 255.0 / (hi - lo) if hi > lo else 0.0
            rgb[b] = np.where(valid, np.clip((show[b] - lo) * scale, 0, 255), 0).round().astype(np.uint8)
    rgb = rgb.transpose(1, 2, 0).copy()
    marked = outline > 0
    rgb[marked] = CLASS_COLOURS[(outline[marked].astype(int) - 1) % len(CLASS_COLOURS)]
    return rgb


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 array as PNG (deterministic bytes: no timestamps), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb, "RGB").save(tmp, format="PNG", compress_level=3)  # fast; the PNG stays small
    return path
