"""Sub-pixel outlines that keep the coverage (issue #17): a perfect field reproduces an analytic outline within
0.1 px where the pixel outline is ~0.5 px off, and touching objects share their edge (no overlap, no gap)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from scipy import ndimage
from shapely.geometry import LineString, MultiLineString, Point

from smallseg.errors import SmallsegError
from smallseg.outline import (OutlineOptions, OutlineStream, coverage_subpixel_outlines, outline_polygons,
                              subpixel_outline)


def _hausdorff_to_circle(poly, cx, cy, radius, keep=None):
    """Largest radial distance from the polygon's boundary (densified to 0.05 px) to the circle."""
    xy = shapely.get_coordinates(shapely.segmentize(poly.boundary, 0.05))
    if keep is not None:
        xy = xy[keep(xy)]
    return float(np.abs(np.hypot(xy[:, 0] - cx, xy[:, 1] - cy) - radius).max())


def _centres(shape_hw):
    yy, xx = np.mgrid[: shape_hw[0], : shape_hw[1]] + 0.5  # pixel centres in edge coordinates
    return yy, xx


def _shared_edges(labels, a, b):
    """The pixel edges between object ``a``'s and ``b``'s pixels (4-neighbours), as lines."""
    segs = []
    h, w = labels.shape
    for r in range(h):
        for c in range(w):
            if labels[r, c] != a:
                continue
            if c + 1 < w and labels[r, c + 1] == b:
                segs.append(LineString([(c + 1, r), (c + 1, r + 1)]))
            if c > 0 and labels[r, c - 1] == b:
                segs.append(LineString([(c, r), (c, r + 1)]))
            if r + 1 < h and labels[r + 1, c] == b:
                segs.append(LineString([(c, r + 1), (c + 1, r + 1)]))
            if r > 0 and labels[r - 1, c] == b:
                segs.append(LineString([(c, r), (c + 1, r)]))
    return MultiLineString(segs)


def test_perfect_field_gives_the_disc_within_a_tenth_of_a_pixel():
    cy, cx, radius = 20.4, 19.7, 7.3
    yy, xx = _centres((40, 40))
    sdf = radius - np.hypot(yy - cy, xx - cx)  # the boundary head's target: signed distance to the edge
    labels = (sdf > 0).astype(np.int32)
    pixel = outline_polygons(labels)[1][0]
    (_, [sub]) = coverage_subpixel_outlines(sdf, labels, level=0.0)
    assert sub.is_valid and len(sub.geoms) == 1
    assert _hausdorff_to_circle(sub, cx, cy, radius) < 0.1
    assert _hausdorff_to_circle(pixel, cx, cy, radius) > 0.4  # the staircase: up to ~half a pixel off
    true_area = np.pi * radius**2
    assert abs(sub.area - true_area) / true_area < 0.01
    # A foreground probability (a disc blurred over one pixel), level 0.5: the same circle.
    prob = np.clip(sdf + 0.5, 0, 1)
    (_, [sub_p]) = coverage_subpixel_outlines(prob, labels, level=0.5)
    assert _hausdorff_to_circle(sub_p, cx, cy, radius) < 0.1


def test_touching_discs_share_their_edge_and_keep_sub_pixel_outer_edges():
    (ay, ax), (by, bx), radius = (20.2, 14.6), (20.7, 26.1), 7.3
    yy, xx = _centres((40, 44))
    da, db = np.hypot(yy - ay, xx - ax), np.hypot(yy - by, xx - bx)
    sdf = radius - np.minimum(da, db)  # signed distance to the union's edge
    labels = np.where(sdf > 0, np.where(da <= db, 1, 2), 0).astype(np.int32)
    _, (a, b) = coverage_subpixel_outlines(sdf, labels, level=0.0)
    assert a.is_valid and b.is_valid
    assert a.intersection(b).area < 1e-9  # no overlap
    shared = _shared_edges(labels, 1, 2)
    assert shared.length >= 8
    # no gap: every shared pixel edge lies on both outlines
    assert shared.difference(a.boundary.buffer(1e-9)).length < 1e-6
    assert shared.difference(b.boundary.buffer(1e-9)).length < 1e-6
    # away from the contact (2 px from the bisector x ~ 20.35), each outline is its circle within 0.1 px
    mid = (ax + bx) / 2
    assert _hausdorff_to_circle(a, ax, ay, radius, keep=lambda xy: xy[:, 0] < mid - 2.5) < 0.1
    assert _hausdorff_to_circle(b, bx, by, radius, keep=lambda xy: xy[:, 0] > mid + 2.5) < 0.1


def _random_scene(seed: int, size: int = 64):
    """Touching and isolated discs (each pixel to the disc whose edge is farthest out), a noisy probability."""
    rng = np.random.default_rng(seed)
    yy, xx = _centres((size, size))
    seeds = rng.uniform(4, size - 4, (14, 2))
    d = np.hypot(yy[..., None] - seeds[:, 0], xx[..., None] - seeds[:, 1])
    radii = rng.uniform(4, 9, len(seeds))
    sdf = (radii - d).max(axis=2)
    fg = sdf > 0
    labels = np.where(fg, np.argmin(d - radii, axis=2) + 1, 0).astype(np.int32)
    soft = np.clip(sdf + 0.5, 0, 1) * (1 + 0.1 * rng.standard_normal(sdf.shape))  # a noisy probability
    return labels, soft.astype(np.float32)


def test_random_touching_objects_never_overlap_and_never_open_a_gap():
    labels, soft = _random_scene(3)
    ids, polys = coverage_subpixel_outlines(soft, labels, level=0.5)
    assert all(p.is_valid and not p.is_empty for p in polys)
    n_shared = 0
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            assert polys[i].intersection(polys[j]).area < 1e-9
            shared = _shared_edges(labels, ids[i], ids[j])
            if shared.length:
                n_shared += 1
                assert shared.difference(polys[i].boundary.buffer(1e-9)).length < 1e-6
                assert shared.difference(polys[j].boundary.buffer(1e-9)).length < 1e-6
    assert n_shared >= 3  # the scene really has touching pairs


def test_isolated_object_is_the_plain_subpixel_contour_and_bad_shapes_are_one_line():
    yy, xx = _centres((30, 30))
    sdf = 6.2 - np.hypot(yy - 14.8, xx - 15.3)
    labels = (sdf > 0).astype(np.int32)
    _, [cov] = coverage_subpixel_outlines(sdf, labels, level=0.0)
    plain = subpixel_outline(sdf, labels, 1, level=0.0)
    assert cov.symmetric_difference(plain).area < 1e-9
    with pytest.raises(SmallsegError, match="must be equal"):
        coverage_subpixel_outlines(sdf[:-1], labels)
    assert Point(15.3, 14.8).within(cov)


class _Table:
    def __init__(self, ids, bbox):
        self.ids, self.bbox, self.class_ids = ids, bbox, np.ones(len(ids), np.int32)

    def __len__(self):
        return len(self.ids)


@pytest.mark.parametrize("cuts", [(13, 30, 47), (40,), (7, 8, 9, 50, 63)])
def test_streamed_in_bands_equals_the_whole_raster(cuts):
    """OutlineStream with a soft map, fed row bands as the GeoTIFF sink does (each object with the band
    holding its last row): the same polygons as the whole raster, exactly."""
    labels, soft = _random_scene(5)
    ids, whole = coverage_subpixel_outlines(soft, labels, level=0.5)
    boxes = ndimage.find_objects(labels)
    bbox = np.array([(b[0].start, b[1].start, b[0].stop, b[1].stop) for b in boxes])
    stream = OutlineStream(OutlineOptions(subpixel=True), labels.shape)
    got, row0 = {}, 0
    for cut in list(cuts) + [labels.shape[0]]:
        sel = (bbox[:, 2] > row0) & (bbox[:, 2] <= cut)
        later = bbox[:, 2] > cut
        keep_from = int(bbox[later, 0].min()) if later.any() else cut
        for polys, tb in stream.add_band(row0, labels[row0:cut], _Table(ids[sel], bbox[sel]), keep_from=keep_from,
                                         soft=soft[row0:cut]):
            got.update(zip(tb.ids.tolist(), polys))
        row0 = cut
    for polys, tb in stream.finish():
        got.update(zip(tb.ids.tolist(), polys))
    assert sorted(got) == ids.tolist()
    for k, p in zip(ids.tolist(), whole):
        assert shapely.equals_exact(got[k], p, tolerance=0.0), f"object {k} differs"
    if len(cuts) > 1:
        assert len(stream.rows) < labels.shape[0]  # it did not keep the whole scene


def test_stream_refuses_subpixel_with_simplification_and_a_missing_soft_map():
    with pytest.raises(SmallsegError, match="choose subpixel=True"):
        OutlineOptions(simplify_px=1.0, subpixel=True)
    with pytest.raises(SmallsegError, match="True or False"):
        OutlineOptions(subpixel="yes")
    stream = OutlineStream(OutlineOptions(subpixel=True), (10, 10))
    with pytest.raises(SmallsegError, match="soft map"):
        stream.add_band(0, np.zeros((4, 10), np.int32), _Table(np.zeros(0, np.int64), np.zeros((0, 4), np.int64)))
