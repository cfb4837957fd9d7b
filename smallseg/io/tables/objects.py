"""Objects a prediction found in a scene (:class:`ObjectTable`) and their CSV, ``STEM.objects.csv``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from smallseg.io.geo import ground_units
from smallseg.io.tables.base import CsvTableWriter, Table, _array, _repr, _stack

OBJECTS_CSV_COLUMNS = (
    "id", "class_id", "class", "score", "area_px", "area_m2", "centroid_row", "centroid_col", "centroid_x",
    "centroid_y", "bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1", "tile_row", "tile_col", "touches_tile_edge",
)


@dataclass(frozen=True, eq=False)
class ObjectTable(Table):
    """One row per object a prediction found in a scene (stitched; scene px). Columns have length ``N``.

    Attributes:
        ids: (N,) int64 global id (the object's value in the label raster).
        class_ids: (N,) int32 class, 1-based.
        scores: (N,) float32 confidence.
        centroids_yx: (N, 2) float64 reported centre (row, col) in scene px.
        area_px: (N,) int64 pixels in the stitched label raster (after conflicts).
        bbox: (N, 4) int64 ``(row0, col0, row1, col1)`` half-open, scene px, of the stitched pixels.
        tile_rc: (N, 2) int32 grid (row, col) of the tile that owns the object.
        touches_tile_edge: (N,) bool the object touched an inner edge of its tile: it may be cut, i.e. the
            overlap may be smaller than the object (see :func:`~smallseg.tiling.grid.overlap_for`).

    A row record: ``id, class_id, score, centroid_yx, area_px, bbox, tile_rc, touches_tile_edge``.
    """

    ids: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray
    centroids_yx: np.ndarray
    area_px: np.ndarray
    bbox: np.ndarray
    tile_rc: np.ndarray
    touches_tile_edge: np.ndarray

    ROW_NAMES = {"ids": "id", "class_ids": "class_id", "scores": "score",
                                           "centroids_yx": "centroid_yx"}
    CSV_TEXT = frozenset({"class"})

    @classmethod
    def empty(cls) -> "ObjectTable":
        return cls(ids=np.zeros(0, np.int64), class_ids=np.zeros(0, np.int32), scores=np.zeros(0, np.float32),
                   centroids_yx=np.zeros((0, 2), np.float64), area_px=np.zeros(0, np.int64),
                   bbox=np.zeros((0, 4), np.int64), tile_rc=np.zeros((0, 2), np.int32),
                   touches_tile_edge=np.zeros(0, bool))

    def csv_header(self) -> list[str]:
        return list(OBJECTS_CSV_COLUMNS)

    def csv_cells(self, *, class_names: Sequence[str], geometry) -> list[Sequence]:
        """Cells of :data:`OBJECTS_CSV_COLUMNS`; ``geometry`` a :class:`~smallseg.io.geotiff.RasterGeometry`
        (width, height, crs, transform), ``class_names`` the name of class 1, 2, ..."""
        cy = self.centroids_yx[:, 0].astype(np.float64)
        cx = self.centroids_yx[:, 1].astype(np.float64)
        t = geometry.transform
        x = t.a * (cx + 0.5) + t.b * (cy + 0.5) + t.c  # pixel centre -> map coordinates
        y = t.d * (cx + 0.5) + t.e * (cy + 0.5) + t.f
        area_px = self.area_px.astype(np.int64)
        area_m2 = ground_units(geometry.crs, t, geometry.width, geometry.height).area_m2(area_px, self.centroids_yx)
        names = [class_names[c - 1] if 1 <= c <= len(class_names) else str(c) for c in self.class_ids.tolist()]
        return [
            self.ids.tolist(), self.class_ids.tolist(), names,
            [str(v) for v in self.scores.astype(np.float32)],  # shortest text that reads back as the float32
            area_px.tolist(), [""] * len(self) if area_m2 is None else _repr(area_m2), _repr(cy), _repr(cx),
            _repr(x), _repr(y), *self.bbox.T.tolist(), *self.tile_rc.T.tolist(),
            self.touches_tile_edge.astype(int).tolist(),
        ]

    @classmethod
    def from_csv_cells(cls, columns, source: str) -> "ObjectTable":
        return cls(
            ids=_array(columns, "id", np.int64),
            class_ids=_array(columns, "class_id", np.int32),
            scores=_array(columns, "score", np.float32),
            centroids_yx=_stack(columns, ("centroid_row", "centroid_col"), np.float64),
            area_px=_array(columns, "area_px", np.int64),
            bbox=_stack(columns, [f"bbox_{k}" for k in ("row0", "col0", "row1", "col1")], np.int64),
            tile_rc=_stack(columns, ("tile_row", "tile_col"), np.int32),
            touches_tile_edge=_array(columns, "touches_tile_edge", np.int64).astype(bool),
        )


def objects_csv_writer(path: str | os.PathLike) -> CsvTableWriter:
    """A streaming writer of ``STEM.objects.csv`` (header written); ``.write(table, class_names=...,
    geometry=...)`` per batch of objects in id order, then ``.close()``."""
    return CsvTableWriter(path, OBJECTS_CSV_COLUMNS, text=ObjectTable.CSV_TEXT)


def write_objects_csv(path: str | os.PathLike, objects: ObjectTable, class_names: Sequence[str],
                      geometry) -> Path:
    """Write a prediction's object table as ``STEM.objects.csv`` (columns :data:`OBJECTS_CSV_COLUMNS`).

    Units: ``area_px`` px; ``area_m2`` ground m² (:func:`~smallseg.io.geo.ground_units` at the object's
    centroid; empty without a CRS); ``centroid_row/col`` scene px (pixel centres at integers);
    ``centroid_x/y`` map coordinates of the centroid in the raster's CRS (pixel grid coordinates when it has
    none); ``bbox_*`` half-open scene px; ``score`` in [0, 1].
    """
    return objects.write_csv(path, class_names=class_names, geometry=geometry)


def read_objects_csv(path: str | os.PathLike) -> ObjectTable:
    """Read ``STEM.objects.csv`` written by :func:`write_objects_csv` back into an :class:`ObjectTable`."""
    return ObjectTable.read_csv(path)
