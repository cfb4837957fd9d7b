"""3-D (or 2-D) objects of a medical volume (:class:`VolumeObjects`) and their CSV, dicom-batch's ``objects.csv``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from smallseg.io.tables.base import Table, _array, _stack

@dataclass(frozen=True, eq=False)
class VolumeObjects(Table):
    """One row per 3-D object (2-D object for a 2-D image) of a medical volume. Columns have length ``N``.

    Attributes:
        ids: (N,) int64 object id = its value in the label volume, dense ``1..N``.
        class_ids: (N,) int32 class, 1-based.
        class_names: N class names (from the model's ``class_names``), a list.
        scores: (N,) float32 voxel-weighted mean of the 2-D objects' scores.
        max_slice_scores: (N,) float32 best 2-D score.
        voxels: (N,) int64 voxel (pixel) count.
        volume_mm3: (N,) float64 voxels x voxel volume; ``None`` for 2-D images.
        area_mm2: (N,) float64 pixels x pixel area for 2-D images; ``None`` for volumes.
        equivalent_diameter_mm: (N,) float64 diameter of the sphere (circle for 2-D) of that volume (area).
        centroid_index: (N, D) float64 mean voxel index, array order (z, y, x) / (y, x).
        centroid_lps_mm: (N, D) float64 physical centroid, SimpleITK order (x, y, z) = (L, P, S), mm.
        slice_range: (N, 2) int64 first and last slice (inclusive); (0, 0) for 2-D images.
        bbox: (N, 2D) int64 half-open voxel box ``(z0, y0, x0, z1, y1, x1)`` (2-D: ``(y0, x0, y1, x1)``).
        geometry_notes: N texts saying what the mm values rest on when the file did not say (``Volume.assumed``
            joined, e.g. ``"pixel spacing missing: 1 mm assumed"``; :meth:`with_geometry_note`), or None.

    CSV (``objects.csv`` of dicom-batch, ``\\n`` line ends): id, class, class_id, score, max_slice_score,
    voxels, volume_mm3 (2-D: area_mm2), equivalent_diameter_mm, centroid_lps_{x,y,z}_mm,
    centroid_{z,y,x}_index, slice_first, slice_last, bbox_{z,y,x}0, bbox_{z,y,x}1 (half-open voxel indices),
    and a last column geometry_note when the table has notes (so the table says it wherever it is copied).
    """

    ids: np.ndarray
    class_ids: np.ndarray
    class_names: list[str]
    scores: np.ndarray
    max_slice_scores: np.ndarray
    voxels: np.ndarray
    volume_mm3: np.ndarray | None
    area_mm2: np.ndarray | None
    equivalent_diameter_mm: np.ndarray
    centroid_index: np.ndarray
    centroid_lps_mm: np.ndarray
    slice_range: np.ndarray
    bbox: np.ndarray
    geometry_notes: list[str] | None = None

    ROW_NAMES = {"ids": "id", "class_ids": "class_id", "class_names": "class_name",
                 "scores": "score", "max_slice_scores": "max_slice_score", "geometry_notes": "geometry_note"}
    CSV_TEXT = frozenset({"class", "geometry_note"})
    CSV_LINE_END = "\n"

    @classmethod
    def empty(cls, ndim: int = 3) -> "VolumeObjects":
        f = np.zeros(0, np.float64)
        return cls(ids=np.zeros(0, np.int64), class_ids=np.zeros(0, np.int32), class_names=[],
                   scores=np.zeros(0, np.float32), max_slice_scores=np.zeros(0, np.float32),
                   voxels=np.zeros(0, np.int64), volume_mm3=f if ndim == 3 else None,
                   area_mm2=f if ndim == 2 else None, equivalent_diameter_mm=f,
                   centroid_index=np.zeros((0, ndim)), centroid_lps_mm=np.zeros((0, ndim)),
                   slice_range=np.zeros((0, 2), np.int64), bbox=np.zeros((0, 2 * ndim), np.int64))

    def with_geometry_note(self, note: str) -> "VolumeObjects":
        """The same rows, each carrying ``note`` (``""``: the table as it is, no note column)."""
        return replace(self, geometry_notes=[note] * len(self)) if note else self

    @property
    def ndim(self) -> int:
        """2 for objects of a 2-D image, 3 for a volume."""
        return 3 if self.volume_mm3 is not None else 2

    def csv_header(self) -> list[str]:
        """CSV header, also for an empty table."""
        size_key = "volume_mm3" if self.ndim == 3 else "area_mm2"
        axes_lps = ("x", "y", "z")[: self.ndim]
        axes_idx = ("z", "y", "x")[3 - self.ndim:]
        return (["id", "class", "class_id", "score", "max_slice_score", "voxels", size_key, "equivalent_diameter_mm"]
                + [f"centroid_lps_{a}_mm" for a in axes_lps] + [f"centroid_{a}_index" for a in axes_idx]
                + ["slice_first", "slice_last"] + [f"bbox_{a}0" for a in axes_idx] + [f"bbox_{a}1" for a in axes_idx]
                + (["geometry_note"] if self.geometry_notes is not None else []))

    def columns(self) -> list[str]:
        """The CSV header (kept name)."""
        return self.csv_header()

    def csv_cells(self) -> list[Sequence]:
        def rounded(values, digits):
            return [round(v, digits) for v in np.asarray(values, np.float64).tolist()]

        size = self.volume_mm3 if self.ndim == 3 else self.area_mm2
        return [self.ids.astype(np.int64).tolist(), list(self.class_names), self.class_ids.astype(np.int64).tolist(),
                rounded(self.scores, 6), rounded(self.max_slice_scores, 6), self.voxels.astype(np.int64).tolist(),
                rounded(size, 4), rounded(self.equivalent_diameter_mm, 4),
                *(rounded(c, 4) for c in np.asarray(self.centroid_lps_mm).reshape(-1, self.ndim).T),
                *(rounded(c, 4) for c in np.asarray(self.centroid_index).reshape(-1, self.ndim).T),
                *np.asarray(self.slice_range, np.int64).reshape(-1, 2).T.tolist(),
                *np.asarray(self.bbox, np.int64).reshape(-1, 2 * self.ndim).T.tolist(),
                *([list(self.geometry_notes)] if self.geometry_notes is not None else [])]

    def to_csv_dicts(self) -> list[dict[str, object]]:
        """The table as CSV-ready dicts (header names -> values)."""
        header = self.csv_header()
        return [dict(zip(header, row)) for row in zip(*self.csv_cells())]

    @classmethod
    def from_csv_cells(cls, columns, source: str) -> "VolumeObjects":
        ndim = 3 if "volume_mm3" in columns else 2
        axes_lps = ("x", "y", "z")[:ndim]
        axes_idx = ("z", "y", "x")[3 - ndim:]
        size = _array(columns, "volume_mm3" if ndim == 3 else "area_mm2", np.float64)
        return cls(ids=_array(columns, "id", np.int64), class_ids=_array(columns, "class_id", np.int32),
                   class_names=list(columns["class"]), scores=_array(columns, "score", np.float32),
                   max_slice_scores=_array(columns, "max_slice_score", np.float32),
                   voxels=_array(columns, "voxels", np.int64), volume_mm3=size if ndim == 3 else None,
                   area_mm2=size if ndim == 2 else None,
                   equivalent_diameter_mm=_array(columns, "equivalent_diameter_mm", np.float64),
                   centroid_index=_stack(columns, [f"centroid_{a}_index" for a in axes_idx], np.float64),
                   centroid_lps_mm=_stack(columns, [f"centroid_lps_{a}_mm" for a in axes_lps], np.float64),
                   slice_range=_stack(columns, ("slice_first", "slice_last"), np.int64),
                   bbox=_stack(columns, [f"bbox_{a}{e}" for e in "01" for a in axes_idx], np.int64),
                   geometry_notes=list(columns["geometry_note"]) if "geometry_note" in columns else None)
