"""Outlines for users (issue #17): simplification keeps topology, tolerance 0 is exact, tiled == untiled,
building regularisation gives right angles, sub-pixel contours beat pixel outlines on an analytic disc."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage
from shapely.geometry import Point

from smallseg.errors import SmallsegError
from smallseg.io.vector import object_polygons
from smallseg.outline import (OutlineOptions, OutlineStream, outline_polygons, regularise_polygon, subpixel_outline,
                              to_map)


def _touching_objects(seed: int, size: int = 80) -> np.ndarray:
    """Clusters of touching objects: random blobs cut into cells by their nearest seed point (Voronoi),
    plus some isolated ones; dense ids."""
    rng = np.random.default_rng(seed)
    fg = np.zeros((size, size), bool)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(7):
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(4, 14, 2)
        fg |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    seeds = rng.uniform(0, size, (30, 2))
    d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    cell = np.argmin(d, axis=2) + 1
    labels = np.where(fg, cell, 0)
    # 4-connected pieces as objects, dense ids
    out = np.zeros_like(labels)
    n = 0
    for k in np.unique(labels[labels > 0]):
        parts, m = ndimage.label(labels == k)
        for j in range(1, m + 1):
            n += 1
            out[parts == j] = n
    return out.astype(np.int32)


def _pixel_polys(labels):
    ids, polys = outline_polygons(labels)
    return dict(zip(ids.tolist(), polys))


@pytest.mark.parametrize("seed", range(4))
def test_simplification_never_overlaps_or_opens_a_gap(seed):
    labels = _touching_objects(seed)
    tol = 1.5
    original = _pixel_polys(labels)
    ids, simplified = outline_polygons(labels, OutlineOptions(simplify_px=tol))
    simple = dict(zip(ids.tolist(), simplified))
    assert all(p.is_valid and not p.is_empty for p in simple.values())
    n_shared = 0
    for a, b in itertools.combinations(ids.tolist(), 2):
        pa, pb = simple[a], simple[b]
        if not pa.buffer(1e-6).intersects(pb):
            continue
        assert pa.intersection(pb).area < 1e-9, f"objects {a} and {b} overlap"
        shared_before = original[a].intersection(original[b]).length
        if shared_before > 0:
            n_shared += 1
            shared = pa.intersection(pb).length
            assert shared > 0, f"objects {a} and {b} no longer share an edge"
            # The shared arc is the same line in both: each one's boundary near the other is exactly it (a gap
            # would make the two boundaries differ there).
            near_a = pa.boundary.intersection(pb.buffer(1e-7)).length
            near_b = pb.boundary.intersection(pa.buffer(1e-7)).length
            assert near_a == pytest.approx(shared, abs=1e-5) and near_b == pytest.approx(shared, abs=1e-5)
    assert n_shared >= 5  # the test images do have touching objects
    # The union (objects' cells together) moves only within the tolerance: no gap inside a cluster.
    before = shapely.union_all(list(original.values()))
    after = shapely.union_all(list(simple.values()))
    assert len(shapely.get_parts(after)) == len(shapely.get_parts(before))
    assert sum(len(p.interiors) for p in shapely.get_parts(after)) <= sum(len(p.interiors) for p in shapely.get_parts(before))
    assert before.symmetric_difference(after).area <= tol * before.boundary.length
    assert after.buffer(tol + 1e-6).contains(before) and before.buffer(tol + 1e-6).contains(after)
    # It did simplify.
    assert sum(len(shapely.get_coordinates(p)) for p in simplified) < 0.7 * sum(
        len(shapely.get_coordinates(p)) for p in original.values())


def test_tolerance_zero_reproduces_the_raster_outline_exactly():
    labels = _touching_objects(7)
    ids, polys = outline_polygons(labels, OutlineOptions(simplify_px=0.0))
    burnt = rasterio.features.rasterize(list(zip(polys, ids.tolist())), out_shape=labels.shape,
                                        transform=Affine.identity(), dtype="int32")
    assert np.array_equal(burnt, labels)
    boxes = ndimage.find_objects(labels)
    bbox = np.array([(b[0].start, b[1].start, b[0].stop, b[1].stop) for b in boxes])
    reference = object_polygons(labels, 0, 0, ids, bbox, Affine.identity())
    for p, q in zip(polys, reference):
        assert p.symmetric_difference(q).area == 0 and p.area == q.area
    for k, p in zip(ids, polys):
        assert p.area == (labels == k).sum()


def _stream(labels, options, cuts, classes=None):
    """Feed the label image through OutlineStream in row bands ending at ``cuts``; each object goes with
    the band holding its last row (as the stitcher finishes them)."""
    boxes = ndimage.find_objects(labels)
    ids = np.arange(1, len(boxes) + 1)
    bbox = np.array([(b[0].start, b[1].start, b[0].stop, b[1].stop) for b in boxes])
    cls = np.ones(len(ids), np.int32) if classes is None else classes
    stream = OutlineStream(options, labels.shape)
    got = {}
    row0 = 0
    for cut in list(cuts) + [labels.shape[0]]:
        sel = (bbox[:, 2] > row0) & (bbox[:, 2] <= cut)
        table = SimpleNamespace(ids=ids[sel], bbox=bbox[sel], class_ids=cls[sel], __len__=None)
        table = _Table(ids[sel], bbox[sel], cls[sel])
        later = bbox[:, 2] > cut
        keep_from = int(bbox[later, 0].min()) if later.any() else cut
        for polys, tb in stream.add_band(row0, labels[row0:cut], table, keep_from=keep_from):
            got.update(zip(tb.ids.tolist(), polys))
        row0 = cut
    for polys, tb in stream.finish():
        got.update(zip(tb.ids.tolist(), polys))
    assert len(stream.rows) < labels.shape[0] or len(cuts) < 2  # it did not keep the whole scene
    return got


class _Table:
    def __init__(self, ids, bbox, class_ids):
        self.ids, self.bbox, self.class_ids = ids, bbox, class_ids

    def __len__(self):
        return len(self.ids)


@pytest.mark.parametrize("cuts", [(13, 30, 47, 61), (40,), (7, 8, 9, 50, 79)])
def test_streamed_in_bands_equals_whole_image(cuts):
    labels = _touching_objects(3)
    options = OutlineOptions(simplify_px=1.5, regularise_class_ids=(2,))
    classes = (np.arange(1, labels.max() + 1) % 2 + 1).astype(np.int32)
    ids, whole = outline_polygons(labels, options, class_ids=classes)
    streamed = _stream(labels, options, cuts, classes)
    assert sorted(streamed) == ids.tolist()
    for k, p in zip(ids.tolist(), whole):
        assert shapely.equals_exact(streamed[k], p, tolerance=0.0), f"object {k} differs"


def test_outline_is_independent_of_far_content():
    """An object's simplified outline depends only on its context, not on what lies farther away."""
    labels = _touching_objects(5)
    options = OutlineOptions(simplify_px=2.0)
    ids, polys = outline_polygons(labels, options)
    k = int(ids[len(ids) // 2])
    rows, cols = np.nonzero(labels == k)
    far = np.ones(labels.shape, bool)
    far[max(rows.min() - 6, 0):rows.max() + 7, max(cols.min() - 6, 0):cols.max() + 7] = False
    changed = labels.copy()
    changed[far] = 0
    ids2, polys2 = outline_polygons(changed, options, ids=np.array([k]))
    assert shapely.equals_exact(polys2[0], polys[list(ids).index(k)], tolerance=0.0)


def test_regularisation_of_a_rotated_noisy_rectangle_gives_right_angles():
    rng = np.random.default_rng(0)
    size, angle = 64, np.deg2rad(23.0)
    yy, xx = np.mgrid[:size, :size] + 0.5
    u = (xx - 32) * np.cos(angle) + (yy - 32) * np.sin(angle)
    v = -(xx - 32) * np.sin(angle) + (yy - 32) * np.cos(angle)
    noise = rng.normal(0, 0.6, (size, size))
    rect = (np.abs(u + noise) <= 14) & (np.abs(v + noise) <= 8)
    labels = ndimage.binary_opening(rect).astype(np.int32)
    ids, plain = outline_polygons(labels, OutlineOptions(simplify_px=1.0), class_ids=np.array([1]))
    ids, reg = outline_polygons(labels, OutlineOptions(simplify_px=1.0, regularise_class_ids=(1,)),
                                class_ids=np.array([1]))
    poly = reg[0].geoms[0]
    ring = np.asarray(poly.exterior.coords)[:-1]
    assert len(ring) == 4 and len(shapely.get_coordinates(plain[0])) > 5
    edges = np.roll(ring, -1, axis=0) - ring
    for e0, e1 in zip(edges, np.roll(edges, -1, axis=0)):
        cos = abs(np.dot(e0, e1)) / np.linalg.norm(e0) / np.linalg.norm(e1)
        assert cos < 1e-9  # right angles
    long_edge = max(edges, key=np.linalg.norm)
    found = np.rad2deg(np.arctan2(long_edge[1], long_edge[0])) % 180
    assert min(abs(found - 23.0), 180 - abs(found - 23.0)) < 3.0  # dominant orientation
    assert abs(poly.area - labels.sum()) < 0.1 * labels.sum()
    # Not regularised: a shape far from its rectangle (an L) stays as simplified.
    ell = np.zeros((40, 40), np.int32)
    ell[5:35, 5:12] = 1
    ell[28:35, 5:35] = 1
    assert regularise_polygon(outline_polygons(ell)[1][0].geoms[0]) is None


def test_regularisation_never_covers_a_neighbour():
    labels = np.zeros((40, 40), np.int32)
    labels[10:20, 10:30] = 1
    labels[9, 12:28] = 1  # a bump: its rectangle is one row taller
    labels[6:8, 10:30] = 2  # a neighbour one px above the bump (not touching)
    _, reg = outline_polygons(labels, OutlineOptions(regularise_class_ids=(1,), regularise_min_fill=0.5),
                              class_ids=np.array([1, 1]))
    assert reg[0].intersection(reg[1]).area == 0
    _, ok = outline_polygons(labels[9:, :], OutlineOptions(regularise_class_ids=(1,), regularise_min_fill=0.5),
                             class_ids=np.array([1]))
    assert len(shapely.get_coordinates(ok[0])) == 5  # alone, it does become a rectangle


def test_subpixel_contour_of_a_disc_is_closer_to_the_circle_than_the_pixel_outline():
    size, cy, cx, radius = 48, 23.3, 24.6, 9.4
    yy, xx = np.mgrid[:size, :size] + 0.5  # pixel centres in edge coordinates
    r = np.hypot(yy - cy, xx - cx)
    soft = np.clip(radius - r + 0.5, 0, 1)  # a blurred disc, its 0.5 level on the circle
    labels = (soft >= 0.5).astype(np.int32)
    pixel = outline_polygons(labels)[1][0]
    sub = subpixel_outline(soft, labels, 1, level=0.5)
    circle = Point(cx, cy).buffer(radius, quad_segs=256)

    def error(poly):
        xy = shapely.get_coordinates(shapely.segmentize(poly.boundary, 0.1))
        return np.abs(np.hypot(xy[:, 0] - cx, xy[:, 1] - cy) - radius).mean()

    assert error(sub) < 0.05 < 0.2 < error(pixel)
    assert abs(sub.area - circle.area) < abs(pixel.area - circle.area)
    # Signed-distance map (the boundary head's), level 0: the same circle.
    sub_sdf = subpixel_outline(radius - r, labels, 1, level=0.0)
    assert error(sub_sdf) < 0.05


def test_subpixel_keeps_to_its_object_next_to_a_touching_one():
    labels = np.zeros((20, 30), np.int32)
    labels[5:15, 5:15] = 1
    labels[5:15, 15:25] = 2
    soft = (labels > 0).astype(float)
    a = subpixel_outline(soft, labels, 1)
    b = subpixel_outline(soft, labels, 2)
    assert a.intersection(b).area == 0 and a.area > 80 and b.area > 80


def test_options_validation_and_report():
    with pytest.raises(SmallsegError):
        OutlineOptions(simplify_px=-1)
    with pytest.raises(SmallsegError):
        OutlineOptions(regularise_class_ids=(0,))
    assert not OutlineOptions().active
    report = OutlineOptions(simplify_px=1, regularise_class_ids=2).to_report()
    assert report["simplify_px"] == 1.0 and report["regularise_class_ids"] == [2]


def test_to_map_applies_the_affine():
    labels = np.zeros((4, 4), np.int32)
    labels[1:3, 1:2] = 1
    poly = outline_polygons(labels)[1][0]
    t = Affine(0.5, 0, 100, 0, -0.5, 200)
    (m,) = to_map([poly], t)
    assert m.area == pytest.approx(poly.area * 0.25)
    assert m.bounds == pytest.approx((100.5, 198.5, 101.0, 199.5))
