"""Overlapping tiles over a scene, and the *core* of each tile: the share of the scene it owns.

Layout along one axis (scene length ``L``, tile ``T``, overlap ``O``, stride ``S = T - O``)::

    starts  = 0, S, 2S, ...  and the last start shifted back to L - T      (when L >= T)
    starts  = 0 only; the tile runs past the scene end and is padded        (when L <  T)
    core boundary between tile i and i+1 = middle of their overlap  = (start[i+1] + start[i] + T) // 2
    first core starts at 0, last core ends at L                             (scene border -> edge tiles)

So every tile has the same size ``T`` (a model batch needs one shape), the last tile's overlap with its
neighbour is at least ``O`` (never less), and the cores partition ``[0, L)`` exactly.

Ownership. A point (a decoded object's centroid, pixel centres at integers) belongs to the pixel
``floor(c + 0.5)`` (clipped into the scene, so a centre voted just outside the scene goes to the edge
tile) and to the one tile whose core holds that pixel.

Guarantee (why the overlap must be at least the object size). Between a core's edge and its tile's edge
lie at least ``floor(O / 2)`` pixels on every side that is not the scene border. Hence **an object whose
centroid lies in a tile's core and whose pixels are all within ``floor(O / 2)`` px of that centroid
(Chebyshev distance, i.e. per axis) lies wholly inside that tile**: the tile that owns it saw it whole.
:func:`overlap_for` turns an object extent into an overlap that gives this guarantee;
:func:`max_extent_from_centroid_px` measures the extent on ground-truth labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window
from scipy import ndimage

from smallseg.errors import SmallsegError


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise SmallsegError(f"{name}: expected one integer or (rows, cols), got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def axis_starts(length: int, tile_px: int, overlap_px: int) -> np.ndarray:
    """Tile start offsets along one axis.

    Args:
        length: scene length in px (>= 1).
        tile_px: tile length in px.
        overlap_px: overlap between neighbouring tiles in px, ``0 <= overlap_px < tile_px``.

    Returns:
        (n,) int64 strictly increasing starts; the last tile ends exactly at ``length`` when
        ``length >= tile_px`` (shifted back, so its overlap with the previous tile is >= ``overlap_px``),
        otherwise ``[0]`` (one tile, padded past the scene end).
    """
    if length <= tile_px:
        return np.zeros(1, np.int64)
    stride = tile_px - overlap_px
    n = math.ceil((length - tile_px) / stride) + 1
    return np.minimum(np.arange(n, dtype=np.int64) * stride, length - tile_px)


def axis_core_bounds(starts: np.ndarray, tile_px: int, length: int) -> np.ndarray:
    """Core boundaries along one axis: core ``i`` is ``[bounds[i], bounds[i+1])``.

    Args:
        starts: (n,) tile starts from :func:`axis_starts`.
        tile_px: tile length in px.
        length: scene length in px.

    Returns:
        (n + 1,) int64, ``bounds[0] = 0``, ``bounds[n] = length``, inner bounds at the middle of each overlap.
    """
    inner = (starts[1:] + starts[:-1] + tile_px) // 2
    return np.concatenate([[0], inner, [length]]).astype(np.int64)


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`.

    Attributes:
        row, col: tile row / column index in the grid.
        window: the tile's read window in scene px (always ``tile_h x tile_w``; runs past the scene's
            bottom/right edge only when the scene is smaller than a tile on that axis: read it boundless).
        core: the scene region this tile owns (inside the scene; the cores of all tiles partition it).
        scene_shape: (height, width) of the scene in px.
    """

    row: int
    col: int
    window: Window
    core: Window
    scene_shape: tuple[int, int]

    @property
    def offset_yx(self) -> tuple[int, int]:
        """(row, col) of the tile's top-left pixel in the scene."""
        return int(self.window.row_off), int(self.window.col_off)

    def owns(self, centroids_yx: np.ndarray) -> np.ndarray:
        """Which centroids this tile owns.

        Args:
            centroids_yx: (N, 2) float centres in *tile* px (row, col), pixel centres at integers.

        Returns:
            (N,) bool, True where the centre's pixel ``floor(c + 0.5)`` (clipped into the scene) lies in
            this tile's core.
        """
        c = np.asarray(centroids_yx, np.float64).reshape(-1, 2) + np.array(self.offset_yx, np.float64)
        pix = np.floor(c + 0.5)
        pix[:, 0] = np.clip(pix[:, 0], 0, self.scene_shape[0] - 1)
        pix[:, 1] = np.clip(pix[:, 1], 0, self.scene_shape[1] - 1)
        r0, c0 = self.core.row_off, self.core.col_off
        return (
            (pix[:, 0] >= r0)
            & (pix[:, 0] < r0 + self.core.height)
            & (pix[:, 1] >= c0)
            & (pix[:, 1] < c0 + self.core.width)
        )

    def interior_edges(self) -> tuple[bool, bool, bool, bool]:
        """Which tile edges (top, bottom, left, right) lie inside the scene, i.e. may cut an object."""
        r0, c0 = self.offset_yx
        h, w = self.scene_shape
        return (r0 > 0, r0 + self.window.height < h, c0 > 0, c0 + self.window.width < w)


@dataclass(frozen=True)
class TileGrid:
    """Tiles over a ``height x width`` scene. Build with :func:`tile_windows`.

    Attributes:
        height, width: scene size in px.
        tile_h, tile_w: tile size in px (every tile has this size; see module docstring for padding).
        overlap_h, overlap_w: requested overlap in px (actual overlap of the last tile may be larger).
        row_starts, col_starts: tile starts along each axis.
        row_bounds, col_bounds: core boundaries along each axis (one more than the starts).
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    overlap_h: int
    overlap_w: int
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]
    row_bounds: tuple[int, ...]
    col_bounds: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, int]:
        """(n tile rows, n tile cols)."""
        return len(self.row_starts), len(self.col_starts)

    @property
    def n_rows(self) -> int:
        return len(self.row_starts)

    @property
    def n_cols(self) -> int:
        return len(self.col_starts)

    @property
    def padded(self) -> tuple[bool, bool]:
        """Whether tiles run past the scene (scene smaller than a tile) along rows / cols."""
        return self.height < self.tile_h, self.width < self.tile_w

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def tile(self, row: int, col: int) -> Tile:
        """The tile at grid position (row, col)."""
        r0, c0 = self.row_starts[row], self.col_starts[col]
        cr0, cr1 = self.row_bounds[row], self.row_bounds[row + 1]
        cc0, cc1 = self.col_bounds[col], self.col_bounds[col + 1]
        return Tile(
            row=row,
            col=col,
            window=Window(c0, r0, self.tile_w, self.tile_h),
            core=Window(cc0, cr0, cc1 - cc0, cr1 - cr0),
            scene_shape=(self.height, self.width),
        )

    def tile_row(self, row: int) -> list[Tile]:
        """All tiles of one tile row, left to right (one model batch or a few)."""
        return [self.tile(row, c) for c in range(self.n_cols)]

    def tile_rows(self) -> list[list[Tile]]:
        """Tiles grouped by tile row, top to bottom: the unit of streaming."""
        return [self.tile_row(r) for r in range(self.n_rows)]

    def __iter__(self):
        for r in range(self.n_rows):
            yield from self.tile_row(r)

    def row_window(self, row: int) -> Window:
        """Read window covering a whole tile row (full scene width, ``tile_h`` rows, may run past the
        bottom of a scene smaller than one tile): read it once and cut the row's tiles out of it."""
        return Window(0, self.row_starts[row], max(self.width, self.tile_w), self.tile_h)

    def final_rows(self, row: int) -> tuple[int, int]:
        """Scene rows ``[row0, row1)`` that are final once tile rows ``0..row`` have been stitched.

        Rows above the next tile row's window top cannot be touched by any later tile (starts only grow),
        so band ``row`` is ``[row_starts[row], row_starts[row + 1])`` (the last band ends at ``height``).
        The bands partition the scene.
        """
        row0 = 0 if row == 0 else self.row_starts[row]
        row1 = self.height if row == self.n_rows - 1 else self.row_starts[row + 1]
        return row0, row1

    def max_pending_rows(self) -> int:
        """Most scene rows ever held between bands (the stitcher's memory, in rows of the scene width)."""
        bottoms = [min(s + self.tile_h, self.height) for s in self.row_starts]
        return max(b - self.final_rows(r)[0] for r, b in enumerate(np.maximum.accumulate(bottoms)))


def tile_windows(
    height: int, width: int, tile_size: int | tuple[int, int], overlap: int | tuple[int, int]
) -> TileGrid:
    """Tile a ``height x width`` scene.

    Args:
        height, width: scene size in px.
        tile_size: tile side in px, or (rows, cols).
        overlap: overlap between neighbouring tiles in px, or (rows, cols); ``0 <= overlap < tile_size``.
            Use :func:`overlap_for` to pick it from the largest object.

    Returns:
        The :class:`TileGrid`. All tiles are ``tile_size``; the last tile row/column is shifted back to
        end at the scene edge, and a scene smaller than a tile gets one tile padded past its end.
    """
    th, tw = _pair(tile_size, "tile_size")
    oh, ow = _pair(overlap, "overlap")
    if height < 1 or width < 1:
        raise SmallsegError(f"scene size {height}x{width} px: nothing to tile")
    if th < 1 or tw < 1:
        raise SmallsegError(f"tile_size {th}x{tw} px: must be positive")
    for o, t in ((oh, th), (ow, tw)):
        if not 0 <= o < t:
            raise SmallsegError(f"overlap {o} px: must be >= 0 and smaller than the tile size {t} px")
    rs = axis_starts(height, th, oh)
    cs = axis_starts(width, tw, ow)
    return TileGrid(
        height=int(height),
        width=int(width),
        tile_h=th,
        tile_w=tw,
        overlap_h=oh,
        overlap_w=ow,
        row_starts=tuple(int(v) for v in rs),
        col_starts=tuple(int(v) for v in cs),
        row_bounds=tuple(int(v) for v in axis_core_bounds(rs, th, height)),
        col_bounds=tuple(int(v) for v in axis_core_bounds(cs, tw, width)),
    )


def overlap_for(max_extent_px: float) -> int:
    """Smallest overlap (px) for which the ownership guarantee holds.

    Args:
        max_extent_px: largest distance (per axis, in px between pixel centres) from an object's reported
            centroid to any of its pixels. For roughly symmetric objects of diameter ``D`` px this is about
            ``D / 2`` (so the overlap is about ``D``); for arbitrary shapes it can reach ``D - 1``. Add the
            decoder's centroid error if the centroid is voted rather than the centre of mass.

    Returns:
        ``2 * ceil(max_extent_px)``: then ``floor(overlap / 2) >= max_extent_px``.
    """
    if max_extent_px < 0:
        raise SmallsegError(f"max object extent {max_extent_px} px: must be >= 0")
    return 2 * math.ceil(max_extent_px)


def max_extent_from_centroid_px(labels: np.ndarray) -> float:
    """Largest per-axis distance from an object's centre of mass to one of its pixels, over all objects.

    Args:
        labels: (H, W) integer label raster (e.g. training ground truth), 0 = background.

    Returns:
        The extent in px (0.0 when there are no objects); feed it to :func:`overlap_for`.
    """
    labels = np.asarray(labels)
    ids = np.unique(labels)
    ids = ids[ids != 0]
    if len(ids) == 0:
        return 0.0
    centroids = np.asarray(ndimage.center_of_mass(np.ones(labels.shape), labels, ids)).reshape(-1, 2)
    lookup = np.zeros(int(ids.max()) + 1, np.int64)
    lookup[ids.astype(np.int64)] = np.arange(len(ids))
    rr, cc = np.nonzero(labels)
    k = lookup[labels[rr, cc].astype(np.int64)]
    return float(max(np.abs(rr - centroids[k, 0]).max(), np.abs(cc - centroids[k, 1]).max()))
