"""Stitching: objects on every seam come out exactly once and whole; streaming == whole scene; resume.

The oracle "model" crops the ground-truth labels to each tile (objects cut by the tile edge appear cut, as a
real model sees them, and report the centre of mass of their cut mask), so any difference between the
stitched scene and the ground truth is the stitcher's.
"""

import numpy as np
import pytest
from scipy import ndimage

from smallseg.instances import Instances
from smallseg.tiling.grid import max_extent_from_centroid_px, tile_windows
from smallseg.tiling.stitch import (
    RowStitcher,
    StitchState,
    stitch_instances,
)

# (height, width, tile, overlap): sizes not divisible by the stride, deep overlap, padded scene.
COMBOS = [
    (211, 263, 64, 16),
    (190, 175, 48, 20),
    (157, 201, 40, 12),
    (150, 170, 64, 40),
    (50, 170, 64, 16),
]


# ------------------------------------------------------------------------------------- scene and oracle


def _extent(mask):
    rr, cc = np.nonzero(mask)
    return max(np.abs(rr - rr.mean()).max(), np.abs(cc - cc.mean()).max())


def _shape(rng, r):
    """A random object mask whose pixels are all within r px (per axis) of its centre of mass."""
    for size in range(r, 0, -1):  # arbitrary shapes can reach D - 1 from their centroid: shrink to fit
        m = _raw_shape(rng, size)
        if _extent(m) <= r:
            return m
    return np.ones((1, 1), bool)


def _raw_shape(rng, r):
    kind = rng.choice(["disk", "rect", "ibeam", "blob", "ell"])
    side = 2 * r + 1
    yy, xx = np.mgrid[:side, :side] - r
    if kind == "disk":
        rad = rng.uniform(1.5, r + 0.5)
        m = yy**2 + xx**2 <= rad**2
    elif kind == "rect":
        h, w = rng.integers(1, side + 1, 2)
        m = np.zeros((side, side), bool)
        m[:h, :w] = True
    elif kind == "ibeam":
        # Heavy at both ends: a copy cut at one end has its centroid moved a lot (the hard case).
        m = np.zeros((side, side), bool)
        t = max(1, side // 5)
        m[:t] = m[-t:] = True
        m[:, r - t // 2 : r - t // 2 + t] = True
    elif kind == "ell":
        m = np.zeros((side, side), bool)
        t = int(rng.integers(1, max(2, r)))
        m[:, :t] = True
        m[-t:, :] = True
    else:
        noise = ndimage.gaussian_filter(rng.normal(size=(side, side)), 1.5)
        m = noise > np.quantile(noise, rng.uniform(0.3, 0.7))
        lab, n = ndimage.label(m)
        if n == 0:
            m = np.ones((1, 1), bool)
        else:
            m = lab == 1 + np.argmax(np.bincount(lab.ravel())[1:])
    if rng.random() < 0.5:
        m = m.T
    if rng.random() < 0.5:
        m = m[::-1]
    ys, xs = np.nonzero(m)
    return m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _plant(labels, mask, centre_yx, next_id):
    """Put mask with its centre of mass at centre_yx (rounded); skip if out of the scene or overlapping."""
    com = np.array(ndimage.center_of_mass(mask))
    top = np.round(np.asarray(centre_yx) - com).astype(int)
    h, w = mask.shape
    if top[0] < 0 or top[1] < 0 or top[0] + h > labels.shape[0] or top[1] + w > labels.shape[1]:
        return next_id
    view = labels[top[0] : top[0] + h, top[1] : top[1] + w]
    if (view[mask] != 0).any():
        return next_id
    view[mask] = next_id
    return next_id + 1


def seam_scene(grid, seed):
    """Ground truth with objects centred on every core boundary, tile edge and their crossings."""
    rng = np.random.default_rng(seed)
    r = min(grid.overlap_h, grid.overlap_w) // 2
    labels = np.zeros((grid.height, grid.width), np.int32)
    nid = 1
    row_seams = sorted(set(grid.row_bounds[1:-1]) | set(grid.row_starts[1:])
                       | {s + grid.tile_h - 1 for s in grid.row_starts[:-1]})
    col_seams = sorted(set(grid.col_bounds[1:-1]) | set(grid.col_starts[1:])
                       | {s + grid.tile_w - 1 for s in grid.col_starts[:-1]})
    jitter = [-1, -0.5, 0, 0, 0.5, 1]
    # I-beams of the full allowed extent centred exactly on core boundaries: their copy cut by the tile
    # edge has its centroid inside the *other* tile's core, so two tiles keep it (the duplicate rule).
    for b in grid.row_bounds[1:-1]:
        for x in rng.integers(0, grid.width, 3):
            m = np.zeros((2 * r + 1, 2 * r + 1), bool)
            m[:2] = m[-2:] = True
            m[:, r] = True
            nid = _plant(labels, m, (b, x), nid)
    for y in row_seams:
        for x in rng.integers(0, grid.width, 4):
            nid = _plant(labels, _shape(rng, r), (y + rng.choice(jitter), x), nid)
    for x in col_seams:
        for y in rng.integers(0, grid.height, 4):
            nid = _plant(labels, _shape(rng, r), (y, x + rng.choice(jitter)), nid)
    for y in row_seams:
        for x in col_seams:
            nid = _plant(labels, _shape(rng, r), (y + rng.choice(jitter), x + rng.choice(jitter)), nid)
    for _ in range(40):
        nid = _plant(labels, _shape(rng, r), rng.uniform(0, [grid.height, grid.width]), nid)
    return labels


def oracle_tile(labels, tile, scores=None):
    """What a perfect model reports for one tile: the GT cropped (zero-padded) to the window, dense ids,
    each centroid the centre of mass of the (possibly cut) mask inside the tile."""
    r0, c0 = tile.offset_yx
    h, w = int(tile.window.height), int(tile.window.width)
    crop = np.zeros((h, w), labels.dtype)
    part = labels[r0 : r0 + h, c0 : c0 + w]
    crop[: part.shape[0], : part.shape[1]] = part
    gt_ids = np.unique(crop)
    gt_ids = gt_ids[gt_ids != 0]
    dense = np.where(crop != 0, np.searchsorted(gt_ids, crop) + 1, 0).astype(np.int32)
    s = None if scores is None else {k + 1: scores[g] for k, g in enumerate(gt_ids.tolist())}
    return Instances.from_labels(dense, scores=s)


def oracle_rows(labels, grid, scores=None):
    return [[oracle_tile(labels, t, scores) for t in row] for row in grid.tile_rows()]


def assert_same_partition(gt, pred):
    """Same objects, pixel for pixel (IoU = 1 for every matched pair), each exactly once."""
    assert gt.shape == pred.shape
    assert ((gt == 0) == (pred == 0)).all(), "foreground differs"
    fg = gt != 0
    pairs = np.unique(np.stack([gt[fg], pred[fg].astype(np.int64)], 1), axis=0)
    assert len(np.unique(pairs[:, 0])) == len(pairs), "a ground-truth object was split"
    assert len(np.unique(pairs[:, 1])) == len(pairs), "two ground-truth objects were merged"
    assert len(pairs) == len(np.unique(gt[fg]))


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("h,w,tile,overlap", COMBOS)
def test_seam_objects_come_out_exactly_once_and_whole(h, w, tile, overlap):
    grid = tile_windows(h, w, tile, overlap)
    gt = seam_scene(grid, seed=h * w + tile)
    n_gt = len(np.unique(gt)) - 1
    assert n_gt > 20
    assert max_extent_from_centroid_px(gt) <= overlap // 2  # the precondition of the guarantee
    rows = oracle_rows(gt, grid)
    scene, table = stitch_instances(grid, rows)
    assert_same_partition(gt, scene.labels)
    assert len(scene) == len(table) == n_gt
    assert len(np.unique(table.ids)) == n_gt
    # Table facts checked against the label raster itself.
    counts = np.bincount(scene.labels.ravel().astype(np.int64))
    np.testing.assert_array_equal(table.area_px, counts[table.ids])
    boxes = ndimage.find_objects(scene.labels.astype(np.int64))
    for i, obj_id in enumerate(table.ids):
        ys, xs = boxes[obj_id - 1]
        assert tuple(table.bbox[i]) == (ys.start, xs.start, ys.stop, xs.stop)
    # Whole objects report their full centre of mass (in scene px).
    com = np.array(ndimage.center_of_mass(np.ones(gt.shape), scene.labels, table.ids))
    np.testing.assert_allclose(table.centroids_yx, com, atol=1e-9)


def test_cut_copies_kept_by_a_second_tile_are_resolved():
    # The I-beams on core boundaries make some tiles keep a cut copy: the conflict rule must run and win.
    grid = tile_windows(211, 263, 64, 16)
    gt = seam_scene(grid, seed=211 * 263 + 64)
    rows = oracle_rows(gt, grid)
    kept = sum(int(t.owns(inst.centroids_yx).sum()) for row, trow in zip(rows, grid.tile_rows())
               for inst, t in zip(row, trow))
    n_gt = len(np.unique(gt)) - 1
    assert kept > n_gt  # some objects were claimed twice ...
    scene, _ = stitch_instances(grid, rows)
    assert_same_partition(gt, scene.labels)  # ... and still come out once and whole


def test_first_owner_alone_would_not_be_exact():
    # Sanity of the test scene: keeping every owned object by "first owner wins" splits the I-beams.
    grid = tile_windows(211, 263, 64, 16)
    gt = seam_scene(grid, seed=211 * 263 + 64)
    naive = np.zeros_like(gt)
    nid = 1
    for trow in grid.tile_rows():
        for t in trow:
            inst = oracle_tile(gt, t)
            r0, c0 = t.offset_yx
            for j in np.flatnonzero(t.owns(inst.centroids_yx)):
                rr, cc = np.nonzero(inst.labels == inst.ids[j])
                rr, cc = rr + r0, cc + c0
                ok = (rr < gt.shape[0]) & (cc < gt.shape[1])
                free = naive[rr[ok], cc[ok]] == 0
                naive[rr[ok][free], cc[ok][free]] = nid
                nid += 1
    with pytest.raises(AssertionError):
        assert_same_partition(gt, naive)


@pytest.mark.parametrize("h,w,tile,overlap", COMBOS)
def test_streaming_bands_equal_the_whole_scene_result(h, w, tile, overlap):
    grid = tile_windows(h, w, tile, overlap)
    gt = seam_scene(grid, seed=7 + h)
    rows = oracle_rows(gt, grid)
    whole, whole_table = stitch_instances(grid, rows)
    stitcher = RowStitcher(grid)
    bands, tables = [], []
    for r, row in enumerate(rows):
        band = stitcher.add_tile_row(r, row)
        assert (band.row0, band.row1) == grid.final_rows(r)
        assert band.labels.shape == (band.row1 - band.row0, w)
        assert stitcher.state.pending_labels.shape[0] <= grid.max_pending_rows() <= tile
        # Objects reported as finished have no pixel below this band.
        for obj_id, box in zip(band.objects.ids, band.objects.bbox):
            assert box[2] <= band.row1
        bands.append(band)
        tables.append(band.objects)
    assert stitcher.done and not stitcher.state.live
    streamed = np.concatenate([b.labels for b in bands])
    np.testing.assert_array_equal(streamed, whole.labels)
    classes = np.concatenate([b.classes for b in bands])
    np.testing.assert_array_equal(classes > 0, whole.labels > 0)
    streamed_table = tables[0].concat(tables).sorted_by_id()
    for name in ("ids", "class_ids", "scores", "centroids_yx", "area_px", "bbox", "tile_rc", "touches_tile_edge"):
        np.testing.assert_array_equal(getattr(streamed_table, name), getattr(whole_table, name), err_msg=name)


def test_emitting_too_early_would_be_caught():
    # The streaming test above is only meaningful if later tile rows really change pending rows:
    # check that some objects owned by tile row r + 1 have pixels above tile row r's window bottom.
    grid = tile_windows(211, 263, 64, 16)
    gt = seam_scene(grid, seed=7 + 211)
    _, table = stitch_instances(grid, oracle_rows(gt, grid))
    reach_up = [
        box[0] < grid.row_starts[rc[0] - 1] + grid.tile_h
        for box, rc in zip(table.bbox, table.tile_rc)
        if rc[0] > 0
    ]
    assert sum(reach_up) > 5


def test_ids_are_deterministic_and_follow_tile_row_major_order():
    grid = tile_windows(157, 201, 40, 12)
    gt = seam_scene(grid, seed=3)
    a, ta = stitch_instances(grid, oracle_rows(gt, grid))
    b, tb = stitch_instances(grid, oracle_rows(gt, grid))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(ta.ids, tb.ids)
    order = [tuple(rc) for rc in ta.tile_rc]
    assert order == sorted(order)  # ids increase with the owner tile's row-major position
    assert ta.ids[0] >= 1 and (np.diff(ta.ids) > 0).all()
    # Ids come from a running counter over kept objects: gaps only where a duplicate was removed.
    claims = sum(int(t.owns(oracle_tile(gt, t).centroids_yx).sum()) for t in grid)
    assert len(ta) <= ta.ids[-1] <= claims


def test_scores_decide_between_disagreeing_tiles():
    # Two tiles report different masks for one object in their overlap; each claims it (centroids in
    # their own cores). The one with the higher score must stay whole; the other is a duplicate.
    grid = tile_windows(40, 64, 40, 16)  # two tiles side by side, overlap cols 24..39, core split at 32
    assert grid.shape == (1, 2) and grid.col_bounds[1] == 32
    left = np.zeros((40, 40), np.int32)
    left[10:20, 26:36] = 1  # scene cols 26..35, centroid col 30.5 -> left core
    right = np.zeros((40, 40), np.int32)
    right[10:20, 4:16] = 1  # scene cols 28..39
    right[12:18, 16:22] = 1  # scene cols 40..45: centroid col 35.6 -> right core; shares 80 px of 100
    for left_score, winner in ((0.9, "left"), (0.2, "right")):
        li = Instances.from_labels(left, scores={1: left_score})
        ri = Instances.from_labels(right, scores={1: 0.5})
        assert grid.tile(0, 0).owns(li.centroids_yx).all() and grid.tile(0, 1).owns(ri.centroids_yx).all()
        scene, table = stitch_instances(grid, [[li, ri]])
        assert len(table) == 1
        expect = np.zeros((40, 64), bool)
        if winner == "left":
            expect[10:20, 26:36] = True
        else:
            expect[10:20, 28:40] = True
            expect[12:18, 40:46] = True
        np.testing.assert_array_equal(scene.labels > 0, expect)
        assert table.scores[0] == pytest.approx(left_score if winner == "left" else 0.5)
        assert table.area_px[0] == expect.sum()


def test_touching_neighbours_share_contested_pixels_by_score():
    # Two different objects from two tiles overlap in 2 columns (less than half of either): both stay,
    # the contested pixels go to the higher score.
    grid = tile_windows(40, 64, 40, 16)
    left = np.zeros((40, 40), np.int32)
    left[5:15, 22:32] = 1  # scene cols 22..31
    right = np.zeros((40, 40), np.int32)
    right[5:15, 6:16] = 1  # scene cols 30..39 -> shares cols 30, 31 with the left object
    li = Instances.from_labels(left, scores={1: 0.4})
    ri = Instances.from_labels(right, scores={1: 0.8})
    scene, table = stitch_instances(grid, [[li, ri]])
    assert len(table) == 2
    assert (scene.labels[5:15, 30:32] == table.ids[1]).all()
    np.testing.assert_array_equal(table.area_px, [80, 100])


def test_padded_tile_objects_are_cropped_to_the_scene():
    grid = tile_windows(20, 30, 32, 8)  # one tile, padded past the bottom and right edges
    labels = np.zeros((32, 32), np.int32)
    labels[15:25, 25:31] = 1  # runs past the scene (rows 20.., cols 30..)
    labels[24:30, 0:5] = 2  # entirely in the padding: dropped
    inst = Instances(
        labels=labels,
        ids=np.array([1, 2]),
        class_ids=np.array([1, 2], np.int32),
        scores=np.array([0.9, 0.9], np.float32),
        centroids_yx=np.array([[19.0, 29.0], [26.5, 2.0]]),  # 2's centre is clipped into the scene
    )
    scene, table = stitch_instances(grid, [[inst]])
    assert scene.labels.shape == (20, 30)
    assert len(table) == 1 and table.area_px[0] == 5 * 5
    assert (scene.labels[15:20, 25:30] == 1).all()


def test_resume_from_a_saved_state_gives_the_uninterrupted_result(tmp_path):
    grid = tile_windows(190, 175, 48, 20)
    gt = seam_scene(grid, seed=11)
    rows = oracle_rows(gt, grid)
    full = RowStitcher(grid)
    ref = [full.add_tile_row(r, row) for r, row in enumerate(rows)]
    first = RowStitcher(grid)
    got = [first.add_tile_row(r, rows[r]) for r in range(2)]
    assert first.state.live  # objects straddle the cut: the pending band matters
    path = first.state.save(tmp_path / "stitch.npz")
    del first
    resumed = RowStitcher(grid, state=StitchState.load(path))
    got += [resumed.add_tile_row(r, rows[r]) for r in range(2, grid.n_rows)]
    for a, b in zip(ref, got):
        assert (a.row0, a.row1) == (b.row0, b.row1)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.objects.ids, b.objects.ids)
        np.testing.assert_array_equal(a.objects.area_px, b.objects.area_px)
        np.testing.assert_array_equal(a.objects.bbox, b.objects.bbox)
        np.testing.assert_allclose(a.objects.centroids_yx, b.objects.centroids_yx)


def test_resume_state_must_match_the_grid(tmp_path):
    from smallseg.errors import SmallsegError

    grid = tile_windows(190, 175, 48, 20)
    path = RowStitcher(grid).state.save(tmp_path / "s.npz")
    with pytest.raises(SmallsegError):
        RowStitcher(tile_windows(190, 175, 48, 16), state=StitchState.load(path))
    (tmp_path / "junk.npz").write_text("not a state")
    with pytest.raises(SmallsegError):
        StitchState.load(tmp_path / "junk.npz")


def test_rows_must_come_in_order():
    grid = tile_windows(100, 100, 40, 10)
    stitcher = RowStitcher(grid)
    empty = [Instances.empty((40, 40))] * grid.n_cols
    with pytest.raises(ValueError):
        stitcher.add_tile_row(1, empty)
    with pytest.raises(ValueError):
        stitcher.add_tile_row(0, empty[:-1])


# ------------------------------------------------------------------------------- composed with the writer


def test_streamed_bands_written_to_geotiff_equal_ground_truth(tmp_path):
    # Reader geometry -> grid -> per-tile-row oracle -> RowStitcher -> label/class writers, band by band.
    import rasterio

    from conftest import RASTERIO_DATA
    from smallseg.io.geotiff import class_writer, label_writer, open_raster

    src_path = RASTERIO_DATA / "RGB.byte.tif"
    with open_raster(src_path) as src:
        geometry = src.geometry
    grid = tile_windows(geometry.height, geometry.width, 128, 24)
    gt = seam_scene(grid, seed=5)
    stitcher = RowStitcher(grid)
    with label_writer(tmp_path / "labels.tif", geometry, blocksize=256) as labels_out, \
            class_writer(tmp_path / "classes.tif", geometry, blocksize=256) as classes_out:
        for r, trow in enumerate(grid.tile_rows()):
            band = stitcher.add_tile_row(r, [oracle_tile(gt, t) for t in trow])
            labels_out.write_rows(band.row0, band.labels)
            classes_out.write_rows(band.row0, band.classes)
    with rasterio.open(tmp_path / "labels.tif") as ds:
        assert ds.crs.to_epsg() == 32618 and ds.transform == geometry.transform
        written = ds.read(1)
    assert_same_partition(gt, written)
    with rasterio.open(tmp_path / "classes.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), (gt > 0).astype(np.uint8))  # oracle objects are class 1
