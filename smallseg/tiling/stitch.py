"""Tile results -> one scene, streamed one tile row at a time: instance ownership.

Instances (:class:`RowStitcher`)
--------------------------------
Each tile row is added as one :class:`~smallseg.instances.Instances` per tile (tile px, any dense ids).

1. **Ownership.** A tile keeps only the objects whose centroid lies in its core (:meth:`Tile.owns`). Under
   the grid's guarantee (objects within ``floor(overlap / 2)`` px of their centroid) the owner saw the
   object whole, and every object is kept by exactly one tile.
2. **Global ids.** Kept objects get ids from a running counter, in tile row-major order, then the tile's
   object order. An object later removed as a duplicate (below) leaves its id unused, so ids are unique
   and increasing but may have gaps: count objects from the object table, not from the largest id.
3. **Conflicts** (only possible in overlaps). A tile may also keep a *cut* copy of a neighbour's object
   when the cut copy's own centroid falls in its core (an object heavy on the far side of the seam), and
   two tiles may disagree. Each new object X is compared with the already placed objects Y it touches:

   - Y is a **duplicate** of X when they share ``>= duplicate_ios`` of the smaller one's pixels
     (intersection over smaller, as in SAHI). The preferred one stays whole, the other is removed entirely.
   - otherwise they are neighbours, and each shared pixel goes to the preferred one.

   Preference, first difference decides: (a) an object that already has pixels in finished rows (above
   the current tile row's window) — it can no longer change; (b) an object that does not touch an inner
   edge of its tile (touching one means it may be cut); (c) higher score; (d) larger area; (e) earlier
   tile (row-major), then object order. All of it depends only on the tiles' content, never on timing,
   so streaming output equals :func:`stitch_instances` exactly. An object left with no pixel is dropped.

Streaming
---------
After tile row ``r`` is added, scene rows ``grid.final_rows(r)`` are final (no later tile reaches above
the next tile row's top) and come back as a :class:`StitchedBand` with the finished objects' table rows
(an object is finished when all its rows are out, so ``area_px`` and ``bbox`` are after conflicts). In
memory: one pending band (about ``overlap`` rows once emitted; at most ``tile_h`` rows while a tile row
is added) of the scene width, plus the objects touching it.

Resume
------
:class:`StitchState` is everything the stitcher carries between tile rows (next tile row, next id, the
pending band and its objects). :meth:`StitchState.save` writes it atomically to ``.npz``; a stitcher built
with ``state=StitchState.load(path)`` continues at ``state.next_tile_row`` and produces the same bands and
ids as an uninterrupted run. The pending band cannot be recomputed from the previous tile row alone (with
a large overlap several tile rows reach it), hence it is saved rather than recomputed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from smallseg.errors import SmallsegError
from smallseg.instances import Instances
from smallseg.io.atomic import atomic_path
from smallseg.io.tables import ObjectTable
from smallseg.tiling.grid import Tile, TileGrid

_STATE_VERSION = 1


@dataclass
class StitchedBand:
    """Finished scene rows ``[row0, row1)`` (full scene width).

    Attributes:
        row0, row1: scene rows covered (half-open).
        labels: (row1 - row0, W) uint32 global object ids, 0 = background.
        classes: (row1 - row0, W) uint8 class of each pixel's object, 0 = background.
        objects: table rows of the objects whose last row is in this band.
    """

    row0: int
    row1: int
    labels: np.ndarray
    classes: np.ndarray
    objects: ObjectTable


# ----------------------------------------------------------------------------------------------- state


@dataclass
class _Live:
    """An object with pixels not yet emitted (or placed in the pending band)."""

    id: int
    class_id: int
    score: float
    centroid_yx: tuple[float, float]  # scene px
    tile_rc: tuple[int, int]
    index: int  # object order inside its tile
    touches_edge: bool
    paste_box: tuple[int, int, int, int]  # scene rows/cols where it was pasted (row0, col0, row1, col1)
    area_pending: int  # pixels in the pending band
    area_emitted: int = 0
    bbox_emitted: tuple[int, int, int, int] = (2**62, 2**62, -1, -1)


_LIVE_INT = ("id", "class_id", "index", "area_pending", "area_emitted")


@dataclass
class StitchState:
    """Everything a :class:`RowStitcher` carries between tile rows (see module docstring, *Resume*).

    Attributes:
        grid_key: (height, width, tile_h, tile_w, overlap_h, overlap_w) of the grid it belongs to.
        next_tile_row: the next tile row to add.
        next_id: the next global id to hand out.
        pending_row0: first scene row not yet emitted.
        pending_labels: (h, W) uint32 ids of scene rows ``[pending_row0, pending_row0 + h)``.
        live: objects with pixels in the pending band, by id.
    """

    grid_key: tuple[int, ...]
    next_tile_row: int = 0
    next_id: int = 1
    pending_row0: int = 0
    pending_labels: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.uint32))
    live: dict[int, _Live] = field(default_factory=dict)

    @classmethod
    def start(cls, grid: TileGrid) -> "StitchState":
        """The state before the first tile row."""
        key = (grid.height, grid.width, grid.tile_h, grid.tile_w, grid.overlap_h, grid.overlap_w)
        return cls(grid_key=key, pending_labels=np.zeros((0, grid.width), np.uint32))

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` (``.npz``) atomically: a temporary name, renamed when complete."""
        path = Path(path)
        live = sorted(self.live.values(), key=lambda o: o.id)
        cols = {f"live_{f.name}": np.array([getattr(o, f.name) for o in live]) for f in fields(_Live)}
        for name in ("centroid_yx", "tile_rc", "paste_box", "bbox_emitted"):
            width = {"centroid_yx": 2, "tile_rc": 2}.get(name, 4)
            cols[f"live_{name}"] = cols[f"live_{name}"].reshape(len(live), width)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                version=_STATE_VERSION,
                grid_key=np.array(self.grid_key, np.int64),
                counters=np.array([self.next_tile_row, self.next_id, self.pending_row0], np.int64),
                pending_labels=self.pending_labels,
                **cols,
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "StitchState":
        """Read a state written by :meth:`save`."""
        try:
            with np.load(path) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as exc:
            raise SmallsegError(f"{path}: not a readable stitch state ({exc}); delete it to start over") from None
        if int(data.get("version", -1)) != _STATE_VERSION:
            raise SmallsegError(f"{path}: stitch state of another smallseg version; delete it to start over")
        live = {}
        for i in range(len(data["live_id"])):
            kw = {}
            for f in fields(_Live):
                v = data[f"live_{f.name}"][i]
                if f.name in _LIVE_INT:
                    kw[f.name] = int(v)
                elif f.name == "score":
                    kw[f.name] = float(v)
                elif f.name == "touches_edge":
                    kw[f.name] = bool(v)
                elif f.name == "centroid_yx":
                    kw[f.name] = (float(v[0]), float(v[1]))
                else:
                    kw[f.name] = tuple(int(x) for x in v)
            live[kw["id"]] = _Live(**kw)
        next_tile_row, next_id, pending_row0 = (int(v) for v in data["counters"])
        return cls(
            grid_key=tuple(int(v) for v in data["grid_key"]),
            next_tile_row=next_tile_row,
            next_id=next_id,
            pending_row0=pending_row0,
            pending_labels=data["pending_labels"].astype(np.uint32),
            live=live,
        )


# -------------------------------------------------------------------------------------------- stitcher


class RowStitcher:
    """Stitch decoded tiles into a scene label raster, one tile row at a time (see module docstring).

    Args:
        grid: the tile grid the tiles come from.
        duplicate_ios: share of the smaller object's pixels two objects must have in common to count as
            duplicates of one object (0 < value <= 1).
        state: a saved :class:`StitchState` to resume from; default: start at tile row 0.
        emit_early: hand out finished rows after every tile row (streaming). ``False`` holds the whole scene
            until the last tile row (what :func:`stitch_instances` does; same result, more memory).

    Usage::

        stitcher = RowStitcher(grid)
        for r in range(grid.n_rows):
            band = stitcher.add_tile_row(r, decoded_instances_of_row_r)
            writer.write_rows(band.row0, band.labels); table_rows.append(band.objects)
    """

    def __init__(
        self,
        grid: TileGrid,
        *,
        duplicate_ios: float = 0.5,
        state: StitchState | None = None,
        emit_early: bool = True,
    ) -> None:
        if not 0.0 < duplicate_ios <= 1.0:
            raise SmallsegError(f"duplicate_ios {duplicate_ios}: must be in (0, 1]")
        self.grid = grid
        self.duplicate_ios = float(duplicate_ios)
        self.emit_early = emit_early
        self.state = StitchState.start(grid) if state is None else state
        if self.state.grid_key != StitchState.start(grid).grid_key:
            raise SmallsegError(
                f"stitch state belongs to grid {self.state.grid_key} (height, width, tile, overlap), "
                f"not to this one; resume with the same scene, tile size and overlap, or start over"
            )

    @property
    def done(self) -> bool:
        """True once every tile row has been added."""
        return self.state.next_tile_row >= self.grid.n_rows

    def add_tile_row(self, tile_row: int, instances: Sequence[Instances]) -> StitchedBand:
        """Add one tile row's decoded objects and return the rows that became final.

        Args:
            tile_row: index of the tile row; must be ``state.next_tile_row`` (rows go top to bottom).
            instances: one :class:`Instances` per tile of the row, left to right, labels of shape
                ``(tile_h, tile_w)`` in tile px.

        Returns:
            The finished :class:`StitchedBand` (``grid.final_rows(tile_row)``; empty rows when
            ``emit_early=False`` until the last tile row, which returns the rest of the scene).
        """
        st, grid = self.state, self.grid
        if tile_row >= grid.n_rows:
            raise ValueError(f"tile row {tile_row} added, but the grid has only {grid.n_rows} tile rows")
        if tile_row != st.next_tile_row:
            raise ValueError(f"tile row {tile_row} added, but the stitcher expects tile row {st.next_tile_row}")
        if len(instances) != grid.n_cols:
            raise ValueError(f"tile row {tile_row}: {len(instances)} tiles given, the grid has {grid.n_cols}")
        line = grid.row_starts[tile_row]  # rows above it are decided (emitted, or would be)
        bottom = min(grid.height, line + grid.tile_h)
        have = st.pending_row0 + st.pending_labels.shape[0]
        if bottom > have:
            # Filled in place, not concatenated: a concatenation would briefly hold the grown band twice.
            grown = np.zeros((bottom - st.pending_row0, grid.width), np.uint32)
            grown[: st.pending_labels.shape[0]] = st.pending_labels
            st.pending_labels = grown
        for col, inst in enumerate(instances):
            tile = grid.tile(tile_row, col)
            if inst.labels.shape != (grid.tile_h, grid.tile_w):
                raise ValueError(
                    f"tile ({tile_row}, {col}): labels {inst.labels.shape}, expected {(grid.tile_h, grid.tile_w)}"
                )
            self._paste_tile(tile, inst, line)
        st.next_tile_row += 1
        last = st.next_tile_row == grid.n_rows
        if self.emit_early or last:
            return self._emit(grid.final_rows(tile_row)[1])
        return self._emit(st.pending_row0)

    # -- pasting ----------------------------------------------------------------------------------------

    def _rank(self, obj: _Live, frozen: bool, area: int) -> tuple:
        # Smaller is preferred; see module docstring (a)-(e).
        return (0 if frozen else 1, int(obj.touches_edge), -obj.score, -area, obj.tile_rc, obj.index)

    def _area(self, obj: _Live) -> int:
        return obj.area_pending + obj.area_emitted

    def _frozen(self, obj: _Live, line: int) -> bool:
        """Has pixels above ``line`` (finished rows): true by geometry, whether or not they were emitted."""
        if obj.area_emitted > 0:
            return True
        st = self.state
        r0, c0, _, c1 = obj.paste_box
        top = max(r0, st.pending_row0)
        if top >= line:
            return False
        view = st.pending_labels[top - st.pending_row0 : line - st.pending_row0, c0:c1]
        return bool((view == obj.id).any())

    def _remove(self, obj: _Live) -> None:
        st = self.state
        r0, c0, r1, c1 = obj.paste_box
        view = st.pending_labels[r0 - st.pending_row0 : r1 - st.pending_row0, c0:c1]
        view[view == obj.id] = 0
        del st.live[obj.id]

    def _paste_tile(self, tile: Tile, inst: Instances, line: int) -> None:
        st, grid = self.state, self.grid
        if len(inst) == 0:
            return
        owned = tile.owns(inst.centroids_yx)
        slices = inst.object_slices()
        top_in, bottom_in, left_in, right_in = tile.interior_edges()
        oy, ox = tile.offset_yx
        for j in np.flatnonzero(owned):
            sl = slices[j]
            if sl is None:
                continue
            ys, xs = sl
            touches = (
                (top_in and ys.start == 0)
                or (bottom_in and ys.stop == grid.tile_h)
                or (left_in and xs.start == 0)
                or (right_in and xs.stop == grid.tile_w)
            )
            # Crop to the scene: a padded tile (scene smaller than a tile) runs past the bottom/right edge.
            r0, r1 = oy + ys.start, min(oy + ys.stop, grid.height)
            c0, c1 = ox + xs.start, min(ox + xs.stop, grid.width)
            if r1 <= r0 or c1 <= c0:
                continue
            mask = inst.labels[ys.start : ys.start + (r1 - r0), xs.start : xs.start + (c1 - c0)] == inst.ids[j]
            area_x = int(mask.sum())
            if area_x == 0:
                continue
            cy, cx = (float(v) for v in inst.centroids_yx[j])
            x = _Live(
                id=st.next_id,
                class_id=int(inst.class_ids[j]),
                score=float(inst.scores[j]),
                centroid_yx=(cy + oy, cx + ox),
                tile_rc=(tile.row, tile.col),
                index=int(j),
                touches_edge=bool(touches),
                paste_box=(r0, c0, r1, c1),
                area_pending=area_x,
            )
            if x.class_id > 255 or x.class_id < 0:
                raise ValueError(f"tile ({tile.row}, {tile.col}): class id {x.class_id} outside 0..255")
            region = st.pending_labels[r0 - st.pending_row0 : r1 - st.pending_row0, c0:c1]
            under = region[mask]
            if under.any():
                others, shared = np.unique(under[under != 0], return_counts=True)
            else:  # the common case: nothing placed here yet
                others, shared = np.zeros(0, np.uint32), np.zeros(0, np.int64)
            x_rank = self._rank(x, False, area_x)
            beaten, neighbours = [], []
            lost = False
            for y_id, n_shared in zip(others.tolist(), shared.tolist()):
                y = st.live[y_id]
                area_y = self._area(y)
                y_wins = self._rank(y, self._frozen(y, line), area_y) < x_rank
                if n_shared >= self.duplicate_ios * min(area_x, area_y):
                    if y_wins:
                        lost = True
                        break
                    beaten.append(y)
                else:
                    neighbours.append((y, y_wins))
            if lost:
                continue  # X duplicates a preferred object: drop it, nothing changes
            for y in beaten:
                self._remove(y)
            for y, y_wins in neighbours:
                contested = mask & (region == y.id)
                if y_wins:
                    mask &= ~contested
                else:
                    y.area_pending -= int(contested.sum())
                    if self._area(y) == 0:
                        del st.live[y.id]
            x.area_pending = int(mask.sum())
            if x.area_pending == 0:
                continue
            region[mask] = x.id
            st.live[x.id] = x
            st.next_id += 1

    # -- emitting ---------------------------------------------------------------------------------------

    def _emit(self, row1: int) -> StitchedBand:
        st, width = self.state, self.grid.width
        row0 = st.pending_row0
        n = row1 - row0
        band = st.pending_labels[:n]
        st.pending_labels = st.pending_labels[n:].copy()
        st.pending_row0 = row1
        # Work on the labelled pixels only, with the narrowest index type: full-band temporaries (an int64
        # bincount input costs 8 bytes per pixel of the band) are what bounds the memory of wide scenes.
        labelled = band != 0
        values = band[labelled]
        ids, counts = np.unique(values, return_counts=True)
        if len(ids):
            index_dtype = np.uint16 if len(ids) < 2**16 else np.int32
            compact = np.zeros(band.shape, index_dtype)
            compact[labelled] = np.searchsorted(ids, values).astype(index_dtype) + 1
            del values, labelled
            boxes = ndimage.find_objects(compact)
            class_of = np.zeros(len(ids) + 1, np.uint8)
            for k, obj_id in enumerate(ids.tolist()):
                obj = st.live[obj_id]
                class_of[k + 1] = obj.class_id
                ys, xs = boxes[k]
                b = obj.bbox_emitted
                obj.bbox_emitted = (
                    min(b[0], row0 + ys.start),
                    min(b[1], xs.start),
                    max(b[2], row0 + ys.stop),
                    max(b[3], xs.stop),
                )
                obj.area_emitted += int(counts[k])
                obj.area_pending -= int(counts[k])
            classes = class_of[compact]
            del compact
        else:
            classes = np.zeros(band.shape, np.uint8)
        finished = sorted((o for o in st.live.values() if o.area_pending == 0), key=lambda o: o.id)
        for o in finished:
            del st.live[o.id]
        table = ObjectTable(
            ids=np.array([o.id for o in finished], np.int64),
            class_ids=np.array([o.class_id for o in finished], np.int32),
            scores=np.array([o.score for o in finished], np.float32),
            centroids_yx=np.array([o.centroid_yx for o in finished], np.float64).reshape(-1, 2),
            area_px=np.array([o.area_emitted for o in finished], np.int64),
            bbox=np.array([o.bbox_emitted for o in finished], np.int64).reshape(-1, 4),
            tile_rc=np.array([o.tile_rc for o in finished], np.int32).reshape(-1, 2),
            touches_tile_edge=np.array([o.touches_edge for o in finished], bool),
        )
        return StitchedBand(row0=row0, row1=row1, labels=band.reshape(n, width), classes=classes, objects=table)


def stitch_instances(
    grid: TileGrid, tile_rows: Iterable[Sequence[Instances]], **kwargs
) -> tuple[Instances, ObjectTable]:
    """Stitch a whole scene at once (reference for :class:`RowStitcher`; holds the whole scene in memory).

    Args:
        grid: the tile grid.
        tile_rows: ``tile_rows[r][c]`` is the decoded :class:`Instances` of tile (r, c), tile px; any
            iterable of tile rows, top to bottom (a generator keeps only one tile row's tiles alive).
        **kwargs: passed to :class:`RowStitcher` (e.g. ``duplicate_ios``).

    Returns:
        (scene Instances with (H, W) uint32 labels, global ids (ascending, maybe with gaps), centroids in
        scene px and ``objects`` = the object table; the object table sorted by id).
    """
    stitcher = RowStitcher(grid, emit_early=False, **kwargs)
    bands = [stitcher.add_tile_row(r, row) for r, row in enumerate(tile_rows)]
    if not stitcher.done:
        raise ValueError(f"{len(bands)} tile rows given, the grid has {grid.n_rows}")
    labels = np.concatenate([b.labels for b in bands])
    table = ObjectTable.concat([b.objects for b in bands]).sorted_by_id()
    scene = Instances(
        labels=labels,
        ids=table.ids.copy(),
        class_ids=table.class_ids.copy(),
        scores=table.scores.copy(),
        centroids_yx=table.centroids_yx.copy(),
        objects=table,
    )
    return scene, table
