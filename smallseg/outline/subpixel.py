"""Sub-pixel outlines: marching squares (``skimage.measure.find_contours``) on a soft map around each object.

Where the model provides a soft map - the foreground probability ``1 - p(background)`` (level 0.5) or the
contour-refinement head's signed distance to the edge (level 0; :mod:`smallseg.decode.refine`) - an object's
edge lies between pixel centres, where the map crosses the level. The contour of one object is traced on
the map cut to its surroundings: pixels of other objects and pixels more than ``reach_px`` px from the object
count as outside (so touching objects get one contour each, and a neighbour's soft values cannot pull the
contour over), and the window is padded with outside so every contour closes.

Coordinates as the pixel outlines (:mod:`smallseg.outline.simplify`): (x, y) = (column, row) of pixel
edges, so pixel (r, c)'s centre is (c + 0.5, r + 0.5). :func:`subpixel_outline` alone does not tile the plane
(two touching objects' contours leave a sliver between them); :func:`coverage_subpixel_outline` does: the
pixel edge where an object meets another, sub-pixel where it meets background, no overlap, computed from a
fixed window around the object so that :class:`~smallseg.outline.OutlineStream` gives it band by band.

In tile-and-predict (``OutlineOptions(subpixel=True)``, ``--subpixel``): ``pipeline/array.py:
predict_tile_row(soft_out=)`` keeps each tile's soft map (:func:`smallseg.pipeline.array.soft_map`: the boundary head's signed
distance + 0.5, edge at :data:`SUBPIXEL_LEVEL`; a model without that head is refused, because its foreground
probability crosses 0.5 about a pixel outside the decoded objects: measured in RESULTS #17), ``pipeline/geotiff/stream.py`` takes each pixel from the tile whose core holds it
(cores partition the scene, like object ownership) into a float band of the finished rows (the previous tile
row's core rows below its band are carried, and saved with the band checkpoint for resume), and the sink
feeds it to :class:`~smallseg.outline.OutlineStream`. A resampled scene is refused (nearest neighbour back to
the input grid would put the steps back).
"""

from __future__ import annotations

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage
from shapely import contains_xy
from shapely.geometry import MultiPolygon, Polygon, shape
from skimage.measure import find_contours

from smallseg.errors import SmallsegError

SUBPIXEL_LEVEL = 0.5  # the pipeline's soft band: the boundary head's signed distance + 0.5
SUBPIXEL_REACH_PX = 2


def subpixel_outline(soft: np.ndarray, labels: np.ndarray, object_id: int, *, level: float = 0.5,
                     reach_px: int = 2) -> MultiPolygon:
    """One object's sub-pixel outline.

    Args:
        soft: (H, W) float map, higher inside (probability, or signed distance).
        labels: (H, W) integer labels (the decoded objects).
        object_id: the object's label value.
        level: the map's value on the edge (0.5 for a probability, 0 for a signed distance).
        reach_px: how far from the object's pixels the contour may go, px.

    Returns:
        MultiPolygon in pixel-edge coordinates (the parts of the level set that hold an object pixel
        centre; empty when the map never reaches the level there).
    """
    soft = np.asarray(soft, np.float64)
    labels = np.asarray(labels)
    if soft.shape != labels.shape or soft.ndim != 2:
        raise SmallsegError(f"subpixel: soft map {soft.shape} and labels {labels.shape} must be equal (H, W)")
    mask = labels == object_id
    if not mask.any():
        return MultiPolygon()
    (box,) = ndimage.find_objects(mask.astype(np.int8))
    pad = reach_px + 1
    r0, c0 = max(box[0].start - pad, 0), max(box[1].start - pad, 0)
    r1, c1 = min(box[0].stop + pad, labels.shape[0]), min(box[1].stop + pad, labels.shape[1])
    m = soft[r0:r1, c0:c1].copy()
    own = mask[r0:r1, c0:c1]
    near = ndimage.binary_dilation(own, iterations=reach_px) if reach_px > 0 else own
    low = min(level - 1.0, float(np.nanmin(m)) - 1.0)
    m[(labels[r0:r1, c0:c1] != object_id) & (labels[r0:r1, c0:c1] != 0)] = low
    m[~near] = low
    m = np.pad(np.nan_to_num(m, nan=low), 1, constant_values=low)
    centres = np.argwhere(own) + 0.5
    polys = []
    for contour in find_contours(m, level):
        if len(contour) < 4:
            continue
        # find_contours gives (row, col) of the padded window's pixel centres.
        xy = np.stack([contour[:, 1] - 1 + c0 + 0.5, contour[:, 0] - 1 + r0 + 0.5], axis=1)
        poly = Polygon(xy)
        if not poly.is_valid:
            poly = poly.buffer(0)
        if poly.is_empty:
            continue
        polys.append(poly)
    if not polys:
        return MultiPolygon()
    # Outer contours hold object pixel centres; a contour that holds none but lies inside an outer one is a
    # hole of it (a background pocket).
    pts = centres[:, ::-1] + np.array([c0, r0])
    holds = [bool(contains_xy(p, pts[:, 0], pts[:, 1]).any()) for p in polys]
    outer = [p for p, h in zip(polys, holds) if h]
    holes = [p for p, h in zip(polys, holds) if not h]
    result = []
    for p in outer:
        for hole in holes:
            if p.contains(hole):
                p = p.difference(hole)
        result.append(p)
    parts = []
    for q in result:
        parts.extend(q.geoms if isinstance(q, MultiPolygon) else [q])
    return MultiPolygon([q for q in parts if isinstance(q, Polygon) and not q.is_empty])


def subpixel_outlines(soft: np.ndarray, labels: np.ndarray, ids=None, *, level: float = 0.5,
                      reach_px: int = 2) -> tuple[np.ndarray, list[MultiPolygon]]:
    """:func:`subpixel_outline` of every object (default: every id present, ascending)."""
    labels = np.asarray(labels)
    ids = np.unique(labels[labels > 0]).astype(np.int64) if ids is None else np.asarray(ids, np.int64)
    return ids, [subpixel_outline(soft, labels, int(k), level=level, reach_px=reach_px) for k in ids]


def coverage_context_px(reach_px: int) -> int:
    """Rows / columns around an object's box that :func:`coverage_subpixel_outline` reads: the contour stays
    within ``reach_px + 1`` px of the object (city-block), and whichever object is nearest to such a pixel
    lies within ``reach_px + 1`` px of it."""
    return 2 * reach_px + 3


def _cells(mask: np.ndarray):
    """Union of the pixel cells of ``mask`` as one shapely geometry, window pixel-edge coordinates (exact:
    GDAL polygonises whole pixel edges)."""
    geoms = [shape(g) for g, v in rasterio.features.shapes(mask.astype(np.uint8), mask=mask,
                                                           transform=Affine.identity()) if v]
    return shapely.union_all(geoms) if geoms else Polygon()


def _polygonal(geom) -> MultiPolygon:
    """The areal parts of a shapely result (an intersection also returns the lines and points where two
    polygons only touch)."""
    geom = shapely.make_valid(geom) if not geom.is_valid else geom
    flat = []
    for g in getattr(geom, "geoms", [geom]):
        if isinstance(g, MultiPolygon):
            flat.extend(g.geoms)
        elif isinstance(g, Polygon) and not g.is_empty:
            flat.append(g)
    return MultiPolygon(flat)


def coverage_subpixel_outline(soft: np.ndarray, labels: np.ndarray, object_id: int, bbox, *, level: float = 0.5,
                              reach_px: int = 2, row0: int = 0, col0: int = 0,
                              scene_shape: tuple[int, int] | None = None) -> MultiPolygon:
    """One object's sub-pixel outline that keeps the coverage: touching objects share their edge and no two
    overlap (scene pixel-edge coordinates).

    :func:`subpixel_outline` alone leaves a sliver between touching objects (each contour stops short of the
    shared pixel edge, because the neighbour's pixels count as outside) and, with a steep signed distance,
    can cross it. Between two touching objects the soft map holds no edge position of its own (both sides
    are foreground; where one ends and the other starts is the decoder's partition), so there the pixel edge
    is the answer, and sub-pixel placement is used only where an object meets background:

    - the object's *territory*: its pixels and the background pixels strictly nearer to it than to any other
      object (Euclidean, between pixel centres; a pixel equally near to two objects belongs to neither, a
      rule of relative positions only). Territories are disjoint, so outlines cut to them cannot overlap;
    - its *contact* pixels (those with an 8-neighbour in another object) are kept whole, so along every
      shared pixel edge both neighbours reach exactly that edge: no gap;
    - outline = (sub-pixel contour U contact cells) n territory cells.

    Everything is computed in the window ``bbox`` + :func:`coverage_context_px` (clipped to the scene) and
    shifted by one integer offset at the end, so the outline is the same from any label / soft window that
    holds that context (a streamed band or the whole raster). An isolated object's outline is
    :func:`subpixel_outline`'s.

    Args:
        soft, labels: (h, w) windows of the scene's soft map and labels, ``[0, 0]`` at scene px (row0, col0).
        object_id, bbox: the object's label and half-open (row0, col0, row1, col1) box, scene px.
        level, reach_px: as :func:`subpixel_outline`.
        scene_shape: (H, W) of the scene (default: the window is the scene).
    """
    soft = np.asarray(soft, np.float64)
    labels = np.asarray(labels)
    if soft.shape != labels.shape or soft.ndim != 2:
        raise SmallsegError(f"subpixel: soft map {soft.shape} and labels {labels.shape} must be equal (H, W)")
    scene_shape = labels.shape if scene_shape is None else scene_shape
    pad = coverage_context_px(reach_px)
    b0, b1, b2, b3 = (int(v) for v in bbox)
    wr0, wc0 = max(b0 - pad, 0), max(b1 - pad, 0)
    wr1, wc1 = min(b2 + pad, scene_shape[0]), min(b3 + pad, scene_shape[1])
    if wr0 < row0 or wc0 < col0 or wr1 > row0 + labels.shape[0] or wc1 > col0 + labels.shape[1]:
        raise SmallsegError(f"subpixel outline of object {object_id}: its context rows {wr0}-{wr1}, columns "
                            f"{wc0}-{wc1} are not all in the window")
    lab = labels[wr0 - row0 : wr1 - row0, wc0 - col0 : wc1 - col0].astype(np.int64)
    win = soft[wr0 - row0 : wr1 - row0, wc0 - col0 : wc1 - col0]
    mask = lab == object_id
    if not mask.any():
        return MultiPolygon()
    sub = subpixel_outline(win, lab, object_id, level=level, reach_px=reach_px)
    others = (lab > 0) & ~mask
    if others.any():
        d_own = ndimage.distance_transform_edt(~mask)
        d_other = ndimage.distance_transform_edt(~others)
        territory = d_own < d_other  # own pixels: 0 < distance to any other object
        near_other = ndimage.binary_dilation(others, structure=np.ones((3, 3), bool))
        contact = mask & near_other
        geom = shapely.union(sub, _cells(contact)) if contact.any() else sub
        geom = _polygonal(shapely.intersection(geom, _cells(territory)))
    else:
        geom = sub
    offset = np.array([wc0, wr0], float)  # one exact integer shift (the same from any window)
    return shapely.transform(geom, lambda xy: xy + offset)


def coverage_subpixel_outlines(soft: np.ndarray, labels: np.ndarray, ids=None, *, level: float = 0.5,
                               reach_px: int = 2) -> tuple[np.ndarray, list[MultiPolygon]]:
    """:func:`coverage_subpixel_outline` of every object of a whole raster (default: every id present,
    ascending); same arguments as :func:`subpixel_outlines`."""
    soft = np.asarray(soft)
    labels = np.asarray(labels)
    if soft.shape != labels.shape or soft.ndim != 2:
        raise SmallsegError(f"subpixel: soft map {soft.shape} and labels {labels.shape} must be equal (H, W)")
    ids = np.unique(labels[labels > 0]).astype(np.int64) if ids is None else np.asarray(ids, np.int64)
    boxes = ndimage.find_objects(labels.astype(np.int64)) if labels.size else []
    out = []
    for k in ids:
        k = int(k)
        box = boxes[k - 1] if 0 < k <= len(boxes) else None
        if box is None:
            out.append(MultiPolygon())
            continue
        bbox = (box[0].start, box[1].start, box[0].stop, box[1].stop)
        out.append(coverage_subpixel_outline(soft, labels, k, bbox, level=level, reach_px=reach_px))
    return ids, out
