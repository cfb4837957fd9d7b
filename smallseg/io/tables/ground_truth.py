"""Ground truth of the synthetic generators: aerial scene objects (:class:`SceneObjects`, ``STEM_objects.csv``)
and nuclei (:class:`NucleiTable`, ``STEM_nuclei.csv``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from smallseg.io.tables.base import Table, _array, _fixed, _stack

@dataclass(frozen=True, eq=False)
class SceneObjects(Table):
    """One row per ground-truth object of a synthetic aerial scene (row ``i`` is the object with id ``id[i]``).

    Attributes:
        id: (N,) uint32 instance id in the ``instances`` raster (1..N, unique in the scene).
        class_id: (N,) uint8, 1 = car, 2 = building.
        center_x, center_y: (N,) float64 footprint centre in map (CRS) units, metres for projected CRSs.
        center_row_px, center_col_px: (N,) float64 footprint centre in pixels (pixel centres at integers).
        length_m, width_m: (N,) float64 rectangle sides, ``length_m >= width_m``.
        angle_deg: (N,) float64 direction of the long side, degrees counter-clockwise from map east (-90, 90].
        height_m: (N,) float64 height above ground (casts the shadow).
        footprint_area_m2: (N,) float64 analytic area ``length_m * width_m``.
        area_px: (N,) int64 number of pixels with this id in the raster (exact).
        area_m2: (N,) float64 ``area_px * pixel_size_m**2``.
        bbox_px: (N, 4) int64 pixel bounding box (row0, col0, row1, col1), half-open.
        context: (N,) str how the object was placed (``parking_lot``, ``kerbside``, ``house_row`` ...).
    """

    id: np.ndarray
    class_id: np.ndarray
    center_x: np.ndarray
    center_y: np.ndarray
    center_row_px: np.ndarray
    center_col_px: np.ndarray
    length_m: np.ndarray
    width_m: np.ndarray
    angle_deg: np.ndarray
    height_m: np.ndarray
    footprint_area_m2: np.ndarray
    area_px: np.ndarray
    area_m2: np.ndarray
    bbox_px: np.ndarray
    context: np.ndarray

    CSV_TEXT = frozenset({"class_name", "context"})
    _HEADER = (
        "id", "class_id", "class_name", "center_x", "center_y", "center_row_px", "center_col_px", "length_m",
        "width_m", "angle_deg", "height_m", "footprint_area_m2", "area_px", "area_m2", "bbox_row0",
        "bbox_col0", "bbox_row1", "bbox_col1", "context",
    )

    @classmethod
    def empty(cls) -> "SceneObjects":
        f = np.zeros(0, np.float64)
        return cls(id=np.zeros(0, np.uint32), class_id=np.zeros(0, np.uint8), center_x=f, center_y=f,
                   center_row_px=f, center_col_px=f, length_m=f, width_m=f, angle_deg=f, height_m=f,
                   footprint_area_m2=f, area_px=np.zeros(0, np.int64), area_m2=f,
                   bbox_px=np.zeros((0, 4), np.int64), context=np.zeros(0, str))

    def csv_header(self) -> list[str]:
        return list(self._HEADER)

    def csv_cells(self, *, class_names: dict[int, str]) -> list[Sequence]:
        """Cells of the CSV columns; ``class_names`` maps class id -> name."""
        return [
            self.id.astype(np.int64).tolist(), self.class_id.astype(np.int64).tolist(),
            [class_names[c] for c in self.class_id.tolist()],
            *(_fixed(getattr(self, k), 3) for k in ("center_x", "center_y", "center_row_px", "center_col_px",
                                                    "length_m", "width_m", "angle_deg")),
            _fixed(self.height_m, 2), _fixed(self.footprint_area_m2, 4), self.area_px.astype(np.int64).tolist(),
            _fixed(self.area_m2, 4), *self.bbox_px.astype(np.int64).T.tolist(), [str(c) for c in self.context],
        ]

    @classmethod
    def from_csv_cells(cls, columns, source: str) -> "SceneObjects":
        floats = {k: _array(columns, k, np.float64) for k in (
            "center_x", "center_y", "center_row_px", "center_col_px", "length_m", "width_m", "angle_deg",
            "height_m", "footprint_area_m2", "area_m2")}
        return cls(id=_array(columns, "id", np.int64).astype(np.uint32),
                   class_id=_array(columns, "class_id", np.int64).astype(np.uint8),
                   area_px=_array(columns, "area_px", np.int64),
                   bbox_px=_stack(columns, ("bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1"), np.int64),
                   context=np.array(columns["context"], dtype=str), **floats)


@dataclass(frozen=True, eq=False)
class NucleiTable(Table):
    """One row per nucleus of a synthetic microscopy image (row ``i`` is the nucleus with id ``id[i]``).

    Attributes:
        id: (N,) int64 label value.
        center_row_px, center_col_px: (N,) float64 shape centre (pixel centres at integers).
        semi_axes_px: (N, 2) float64 ellipse semi-axes before the boundary wobble.
        angle_deg: (N,) float64 orientation of the first semi-axis, degrees from the column axis towards rows.
        area_px: (N,) int64 pixel count in the label image.
        in_focus: (N,) bool, False for blurred out-of-focus nuclei.
        brightness: (N,) float64 relative mean intensity.
        cluster: (N,) int64 cluster index, -1 for isolated nuclei.
    """

    id: np.ndarray
    center_row_px: np.ndarray
    center_col_px: np.ndarray
    semi_axes_px: np.ndarray
    angle_deg: np.ndarray
    area_px: np.ndarray
    in_focus: np.ndarray
    brightness: np.ndarray
    cluster: np.ndarray

    @classmethod
    def empty(cls) -> "NucleiTable":
        f = np.zeros(0, np.float64)
        return cls(id=np.zeros(0, np.int64), center_row_px=f, center_col_px=f, semi_axes_px=np.zeros((0, 2)),
                   angle_deg=f, area_px=np.zeros(0, np.int64), in_focus=np.zeros(0, bool), brightness=f,
                   cluster=np.zeros(0, np.int64))

    def csv_header(self) -> list[str]:
        return ["id", "center_row_px", "center_col_px", "semi_axis_a_px", "semi_axis_b_px", "angle_deg",
                "area_px", "in_focus", "brightness", "cluster"]

    def csv_cells(self) -> list[Sequence]:
        return [self.id.astype(np.int64).tolist(), _fixed(self.center_row_px, 3), _fixed(self.center_col_px, 3),
                _fixed(self.semi_axes_px[:, 0], 3), _fixed(self.semi_axes_px[:, 1], 3), _fixed(self.angle_deg, 2),
                self.area_px.astype(np.int64).tolist(), np.asarray(self.in_focus, bool).astype(int).tolist(),
                _fixed(self.brightness, 4), self.cluster.astype(np.int64).tolist()]

    @classmethod
    def from_csv_cells(cls, columns, source: str) -> "NucleiTable":
        return cls(id=_array(columns, "id", np.int64), center_row_px=_array(columns, "center_row_px", float),
                   center_col_px=_array(columns, "center_col_px", float),
                   semi_axes_px=_stack(columns, ("semi_axis_a_px", "semi_axis_b_px"), float),
                   angle_deg=_array(columns, "angle_deg", float), area_px=_array(columns, "area_px", np.int64),
                   in_focus=_array(columns, "in_focus", np.int64).astype(bool),
                   brightness=_array(columns, "brightness", float), cluster=_array(columns, "cluster", np.int64))
