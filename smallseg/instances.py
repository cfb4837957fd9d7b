"""Instances: a label raster plus one row of facts per object.

This is the value object that flows between decoding, stitching, writing and scoring::

    decode  ──Instances (one tile)──▶  stitch  ──Instances (scene rows)──▶  sinks / metrics

Conventions (everywhere in smallseg):

- ``labels`` is a 2D integer array, 0 = background, ``k`` = object ``k``. Ids are dense ``1..N`` inside an
  :class:`Instances`; ``ids[i]`` is the label value of row ``i`` (kept explicit so that a subset or a
  stitched scene can keep global ids).
- ``class_ids`` are 1-based (0 is background), matching the model's semantic channel index.
- ``scores`` are confidences in [0, 1]; ground truth has score 1.
- ``centroids_yx`` are in pixel coordinates of ``labels`` (row, col), float, pixel centres at integers.
  For predictions it is the voted centre the decoder found; for ground truth, the mask's centre of mass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    from smallseg.io.tables import ObjectTable


@dataclass
class Instances:
    """Objects in one 2D raster: a label image and per-object columns of equal length ``N``.

    Attributes:
        labels: (H, W) int32/uint32 label image, 0 = background (tiles decoded by
            :func:`~smallseg.pipeline.array.predict_tile_row`: uint8/uint16 when their ids fit, to save memory).
        ids: (N,) int64 label value of each object in ``labels``.
        class_ids: (N,) int32 class of each object, 1-based.
        scores: (N,) float32 confidence in [0, 1].
        centroids_yx: (N, 2) float64 object centre (row, col) in pixels.
        objects: for a stitched scene (:func:`~smallseg.pipeline.array.predict_array`), the
            :class:`~smallseg.io.tables.ObjectTable` of its objects in id order (areas, boxes, owning tiles;
            ``objects[0]`` is one row, iterable); None for a tile or ground truth.
    """

    labels: np.ndarray
    ids: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray
    centroids_yx: np.ndarray
    objects: ObjectTable | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.objects is not None and len(self.objects) != n:
            raise ValueError(f"Instances.objects has {len(self.objects)} rows for {n} objects")
        if not (len(self.class_ids) == len(self.scores) == len(self.centroids_yx) == n):
            raise ValueError(
                f"Instances columns differ in length: ids={n}, class_ids={len(self.class_ids)}, "
                f"scores={len(self.scores)}, centroids_yx={len(self.centroids_yx)}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> "Instances":
        """No objects on an all-background raster of ``shape``."""
        return cls(
            labels=np.zeros(shape, np.int32),
            ids=np.zeros(0, np.int64),
            class_ids=np.zeros(0, np.int32),
            scores=np.zeros(0, np.float32),
            centroids_yx=np.zeros((0, 2), np.float64),
        )

    @classmethod
    def from_labels(
        cls,
        labels: np.ndarray,
        classes: np.ndarray | None = None,
        scores: dict[int, float] | None = None,
    ) -> "Instances":
        """Build from a label raster (e.g. ground truth).

        Args:
            labels: (H, W) integer label image, 0 = background.
            classes: optional (H, W) class raster; each object takes the most frequent class under its
                mask. Without it every object is class 1.
            scores: optional ``{label id: score}``; missing ids score 1.0.

        Returns:
            Instances with ids sorted ascending and centroids at each mask's centre of mass.
        """
        labels = np.asarray(labels)
        ids = np.unique(labels)
        ids = ids[ids != 0].astype(np.int64)
        if len(ids) == 0:
            return cls.empty(labels.shape)
        index = ids
        centroids = np.asarray(ndimage.center_of_mass(np.ones(labels.shape, np.uint8), labels, index))
        centroids = centroids.reshape(len(ids), 2)
        if classes is None:
            class_ids = np.ones(len(ids), np.int32)
        else:
            class_ids = majority_class(labels, np.asarray(classes), ids)
        score_col = np.array([1.0 if scores is None else scores.get(int(i), 1.0) for i in ids], np.float32)
        return cls(labels=labels, ids=ids, class_ids=class_ids, scores=score_col, centroids_yx=centroids)

    def object_slices(self) -> list[tuple[slice, slice] | None]:
        """Bounding-box slices of each object in ``labels`` (row order of ``ids``)."""
        found = ndimage.find_objects(self.labels.astype(np.int64, copy=False))
        return [found[int(i) - 1] if int(i) - 1 < len(found) else None for i in self.ids]


def majority_class(labels: np.ndarray, classes: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Most frequent class under each object's mask.

    Args:
        labels: (H, W) integer label image.
        classes: (H, W) integer class raster, same shape.
        ids: (N,) label values to look up.

    Returns:
        (N,) int32 class per id (ties go to the smaller class id).
    """
    if classes.shape != labels.shape:
        raise ValueError(f"class raster shape {classes.shape} differs from label shape {labels.shape}")
    fg = labels != 0
    pairs = np.stack([labels[fg].astype(np.int64), classes[fg].astype(np.int64)], axis=1)
    uniq, counts = np.unique(pairs, axis=0, return_counts=True)
    # Sort by (id, -count, class) so the first row of each id is its majority class.
    order = np.lexsort((uniq[:, 1], -counts, uniq[:, 0]))
    uniq = uniq[order]
    first = np.ones(len(uniq), bool)
    first[1:] = uniq[1:, 0] != uniq[:-1, 0]
    lookup = dict(zip(uniq[first, 0].tolist(), uniq[first, 1].tolist()))
    return np.array([lookup.get(int(i), 0) for i in ids], np.int32)
