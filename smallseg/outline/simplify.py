"""Per-object outlines from a label raster: exact pixel outlines, topology-keeping simplification, and
building regularisation.

Each object's outline is computed from a fixed context of the *stitched* labels: its bounding box grown by
``options.margin_px`` (clipped to the scene), polygonised whole (every region, background included, 4-connected
as :func:`smallseg.io.vector.object_polygons`) into a coverage, simplified with
``shapely.coverage_simplify(..., simplify_boundary=False)`` and the object's parts taken out. Why this is
exact and keeps shared edges shared:

- The coverage simplifier simplifies each *arc* (a chain of pixel edges between junctions where three
  regions meet, or a closed ring) once, from the arc's own vertices, and refuses a removal whose triangle
  would hold a vertex of another arc (so arcs never cross). An arc of the object lies within its box + 1 px;
  its triangles lie within the arc's convex hull; both, and every vertex that can fall in them, are inside
  the context, and the cut at the context's edge is held fixed (``simplify_boundary=False``) at least
  ``margin_px - 1`` px away. So the object's arcs come out the same whatever else is in the scene, and the
  arc two touching objects share comes out identical in both objects' contexts: no overlap, no gap.
- The result depends only on the labels in the context, never on the tile grid or on how the scene was
  streamed (bands just have to deliver the context: :mod:`smallseg.outline.stream`).

Coordinates: (x, y) = (column, row) of pixel *edges*, in scene pixels; map coordinates come from the scene's
affine transform (:func:`to_map`).
"""

from __future__ import annotations

import numpy as np
import rasterio.features
import shapely
import shapely.affinity
from affine import Affine
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon, shape

from smallseg.errors import SmallsegError
from smallseg.outline.options import OutlineOptions


def context_box(bbox, shape_hw: tuple[int, int], margin_px: int) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1) of an object's context: ``bbox`` (half-open scene px) grown by ``margin_px``,
    clipped to the scene of shape ``shape_hw``."""
    r0, c0, r1, c1 = (int(v) for v in bbox)
    h, w = shape_hw
    return max(r0 - margin_px, 0), max(c0 - margin_px, 0), min(r1 + margin_px, h), min(c1 + margin_px, w)


def _coverage(window: np.ndarray) -> tuple[list, np.ndarray]:
    """Every 4-connected region of ``window`` as a polygon (window px coordinates) and its label value."""
    window = np.ascontiguousarray(window)
    if window.size and int(window.max()) >= 2**31:
        raise SmallsegError("outline: object ids >= 2**31 cannot be polygonised (GDAL takes int32 labels)")
    window = window.astype(np.int32, copy=False)
    geoms, values = [], []
    for geom, value in rasterio.features.shapes(window, connectivity=4, transform=Affine.identity()):
        geoms.append(shape(geom))
        values.append(int(value))
    return geoms, np.asarray(values, np.int64)


def _multipolygon(parts: list) -> MultiPolygon:
    polys: list[Polygon] = []
    for p in parts:
        if p.is_empty:
            continue
        polys.extend(p.geoms if isinstance(p, MultiPolygon) else [p])
    return MultiPolygon(polys)


def object_outline(
    labels: np.ndarray,
    object_id: int,
    bbox,
    options: OutlineOptions,
    *,
    class_id: int | None = None,
    row0: int = 0,
    col0: int = 0,
    scene_shape: tuple[int, int] | None = None,
) -> MultiPolygon:
    """One object's outline in scene pixel coordinates.

    Args:
        labels: (h, w) integer label window of the scene whose pixel [0, 0] is scene pixel (row0, col0); it
            must hold the object's whole context (:func:`context_box`).
        object_id: the object's label value.
        bbox: its (row0, col0, row1, col1) half-open box, scene px.
        options: what to do (all off: the exact pixel outline).
        class_id: its 1-based class (for regularisation); None: not regularised.
        row0, col0: scene position of ``labels[0, 0]``.
        scene_shape: (H, W) of the scene (default: the window is the scene).

    Returns:
        MultiPolygon (x = column, y = row, pixel edges).
    """
    labels = np.asarray(labels)
    scene_shape = labels.shape if scene_shape is None else scene_shape
    cr0, cc0, cr1, cc1 = context_box(bbox, scene_shape, options.margin_px if options.active else 1)
    if cr0 < row0 or cc0 < col0 or cr1 > row0 + labels.shape[0] or cc1 > col0 + labels.shape[1]:
        raise SmallsegError(f"outline of object {object_id}: its context rows {cr0}-{cr1}, columns {cc0}-{cc1} are "
                            f"not all in the label window")
    window = labels[cr0 - row0 : cr1 - row0, cc0 - col0 : cc1 - col0]
    geoms, values = _coverage(window)
    if options.simplify_px > 0:
        simplified = list(shapely.coverage_simplify(np.asarray(geoms, dtype=object), options.simplify_px,
                                                    simplify_boundary=False))
    else:
        simplified = geoms
    mine = [g for g, v in zip(simplified, values) if v == object_id]
    outline = _multipolygon(mine)
    if class_id is not None and class_id in options.regularise_class_ids:
        outline = _regularised(outline, window, object_id, [g for g, v in zip(geoms, values) if v not in (0, object_id)],
                               options.regularise_min_fill)
    return shapely.transform(outline, lambda xy: xy + np.array([cc0, cr0], float))


def regularise_polygon(polygon: Polygon, min_fill: float = 0.8) -> Polygon | None:
    """A rectangle (right angles) in the orientation of ``polygon``'s minimum rotated rectangle, with that
    rectangle's aspect and ``polygon``'s area and centroid, when the polygon fills at least ``min_fill`` of
    its minimum rotated rectangle; else None."""
    if polygon.is_empty or polygon.area <= 0:
        return None
    rect = polygon.minimum_rotated_rectangle
    if not isinstance(rect, Polygon) or rect.area <= 0 or polygon.area / rect.area < min_fill:
        return None
    # The enclosing rectangle also encloses every bump of a noisy edge: shrink it about the polygon's centroid
    # to the polygon's area (same orientation and aspect), so regularising does not inflate buildings.
    scale = float(np.sqrt(polygon.area / rect.area))
    centre = polygon.centroid
    return shapely.affinity.scale(rect, scale, scale, origin=centre)


def _regularised(outline: MultiPolygon, window: np.ndarray, object_id: int, others: list, min_fill: float) -> MultiPolygon:
    """Regularise a building whose outline is one polygon without holes that touches no other object."""
    if len(outline.geoms) != 1 or len(outline.geoms[0].interiors):
        return outline
    mask = window == object_id
    neighbours = ndimage.binary_dilation(mask) & ~mask
    if (window[neighbours] != 0).any():
        return outline  # touching another object: the shared arc must stay shared
    rect = regularise_polygon(outline.geoms[0], min_fill)
    if rect is None:
        return outline
    if others and shapely.union_all(others).intersection(rect).area > 1e-9:
        return outline  # the rectangle would cover another object's pixels
    return MultiPolygon([rect])


def outline_polygons(
    labels: np.ndarray,
    options: OutlineOptions | None = None,
    *,
    ids: np.ndarray | None = None,
    class_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, list[MultiPolygon]]:
    """Outlines of the objects of a whole (stitched) label image, e.g. ``predict_array(...).labels``.

    Args:
        labels: (H, W) integer labels, 0 = background.
        options: :class:`OutlineOptions` (default: exact pixel outlines).
        ids: (N,) object ids to outline (default: every id present, ascending).
        class_ids: (N,) 1-based class per id (needed for regularisation).

    Returns:
        (ids, polygons): polygons in scene pixel coordinates, in the order of ``ids``.
    """
    options = OutlineOptions() if options is None else options
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise SmallsegError(f"outline: expected a 2D integer label image, got {labels.dtype} {labels.shape}")
    present = np.unique(labels[labels > 0]).astype(np.int64)
    ids = present if ids is None else np.asarray(ids, np.int64)
    if class_ids is not None and len(class_ids) != len(ids):
        raise SmallsegError(f"outline: {len(class_ids)} class ids for {len(ids)} objects")
    boxes = ndimage.find_objects(labels.astype(np.int64, copy=False))
    out = []
    with rasterio.Env():  # one GDAL environment for all objects (rasterio would enter one per call)
        _outline_all(labels, ids, boxes, options, class_ids, out)
    return ids, out


def _outline_all(labels, ids, boxes, options, class_ids, out) -> None:
    for i, k in enumerate(ids):
        box = boxes[k - 1] if 0 < k <= len(boxes) else None
        if box is None:
            out.append(MultiPolygon())
            continue
        bbox = (box[0].start, box[1].start, box[0].stop, box[1].stop)
        out.append(object_outline(labels, int(k), bbox, options,
                                  class_id=None if class_ids is None else int(class_ids[i])))


def to_map(polygons: list, transform: Affine) -> list:
    """Scene pixel coordinates (column, row) -> map coordinates with the scene's affine transform."""
    a, b, c, d, e, f = transform[:6]
    matrix = np.array([[a, d], [b, e]], float)
    offset = np.array([c, f], float)
    return [shapely.transform(p, lambda xy: xy @ matrix + offset) for p in polygons]
