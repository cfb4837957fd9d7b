"""Sub-pixel outlines: marching squares (``skimage.measure.find_contours``) on a soft map around each object.

Where the model provides a soft map - the foreground probability ``1 - p(background)`` (level 0.5) or the
contour-refinement head's signed distance to the edge (level 0; :mod:`smallseg.decode.refine`) - an object's
edge lies between pixel centres, where the map crosses the level. The contour of one object is traced on
the map cut to its surroundings: pixels of other objects and pixels more than ``reach_px`` px from the object
count as outside (so touching objects get one contour each, and a neighbour's soft values cannot pull the
contour over), and the window is padded with outside so every contour closes.

Coordinates as the pixel outlines (:mod:`smallseg.outline.simplify`): (x, y) = (column, row) of pixel
edges, so pixel (r, c)'s centre is (c + 0.5, r + 0.5). These outlines do not tile the plane: two touching
objects' contours may leave a sliver between them; they are for drawing and measuring, not for coverage.
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


def _cells(mask: np.ndarray, row0: int, col0: int):
    """Union of the pixel cells of ``mask`` (window at scene px ``row0``, ``col0``) as one shapely geometry,
    in the outlines' pixel-edge coordinates (exact: GDAL polygonises whole pixel edges)."""
    geoms = [shape(g) for g, v in rasterio.features.shapes(mask.astype(np.uint8), mask=mask,
                                                           transform=Affine(1, 0, col0, 0, 1, row0)) if v]
    return shapely.union_all(geoms) if geoms else Polygon()


def _polygonal(geom) -> MultiPolygon:
    """The areal parts of a shapely result (intersections also return the lines and points where two
    polygons only touch)."""
    geom = shapely.make_valid(geom) if not geom.is_valid else geom
    parts = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, (Polygon, MultiPolygon)) and not g.is_empty]
    flat = []
    for g in parts:
        flat.extend(g.geoms if isinstance(g, MultiPolygon) else [g])
    return MultiPolygon(flat)


def coverage_subpixel_outlines(soft: np.ndarray, labels: np.ndarray, ids=None, *, level: float = 0.5,
                               reach_px: int = 2) -> tuple[np.ndarray, list[MultiPolygon]]:
    """Sub-pixel outlines that keep the coverage: touching objects share their edge, none overlaps another.

    :func:`subpixel_outline` alone leaves a sliver between touching objects (each contour stops short of the
    shared pixel edge, because the neighbour's pixels count as outside) and, with a steep signed distance,
    can cross it. Between two touching objects the soft map carries no edge position of its own (both sides
    are foreground; where one ends and the other starts is the decoder's partition), so there the pixel edge
    is the answer, and sub-pixel placement is used only where an object meets background:

    - each object's *territory* is its own pixels plus the background pixels nearer to it than to any other
      object (Euclidean, between pixel centres; ties by scipy's fixed scan order): territories partition the
      raster, so outlines cut to them cannot overlap;
    - its *contact* pixels (those with an 8-neighbour in another object) are kept whole, so along every
      shared pixel edge both neighbours reach exactly that edge: no gap;
    - outline = (sub-pixel contour U contact cells) n territory cells.

    An isolated object's outline is exactly :func:`subpixel_outline`'s. Same arguments and coordinates as
    :func:`subpixel_outlines`.
    """
    soft = np.asarray(soft, np.float64)
    labels = np.asarray(labels)
    if soft.shape != labels.shape or soft.ndim != 2:
        raise SmallsegError(f"subpixel: soft map {soft.shape} and labels {labels.shape} must be equal (H, W)")
    ids = np.unique(labels[labels > 0]).astype(np.int64) if ids is None else np.asarray(ids, np.int64)
    if labels.size == 0 or not (labels > 0).any():
        return ids, [MultiPolygon() for _ in ids]
    # Nearest object pixel of every pixel: one EDT over the whole raster (the territory rule needs no window,
    # and a window would make it depend on where the window was cut).
    _, (ir, ic) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    territory = labels[ir, ic]
    fg = labels > 0
    lab = labels.astype(np.int64)
    grown_max = ndimage.grey_dilation(lab, size=(3, 3), mode="constant", cval=0)  # background is 0
    grown_min = ndimage.grey_erosion(np.where(fg, lab, lab.max() + 1), size=(3, 3), mode="nearest")
    contact = fg & ((grown_max != lab) | (grown_min != lab))
    out = []
    for k in ids:
        k = int(k)
        sub = subpixel_outline(soft, labels, k, level=level, reach_px=reach_px)
        mask = labels == k
        if not mask.any():
            out.append(MultiPolygon())
            continue
        (box,) = ndimage.find_objects(mask.astype(np.int8))
        pad = reach_px + 2
        r0, c0 = max(box[0].start - pad, 0), max(box[1].start - pad, 0)
        r1, c1 = min(box[0].stop + pad, labels.shape[0]), min(box[1].stop + pad, labels.shape[1])
        own_contact = contact[r0:r1, c0:c1] & mask[r0:r1, c0:c1]
        terr = _cells(territory[r0:r1, c0:c1] == k, r0, c0)
        geom = shapely.union(sub, _cells(own_contact, r0, c0)) if own_contact.any() else sub
        out.append(_polygonal(shapely.intersection(geom, terr)))
    return ids, out
