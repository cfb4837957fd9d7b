"""World v2 of the synthetic aerial generator: trees as class 3, occlusion, land cover, sensor effects.

What could go wrong and is checked here: windows that do not render like the whole scene (crowns and their
shadows cross window seams), listed objects without pixels (a crown hiding a car or a lower crown), a tree
id split across a seam, crowns labelled on shrubs, occluded objects losing more than allowed, the classic
world changing when v2 options are added, JPEG blocks that depend on the window, bad options passing.
"""

import math

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from smallseg.data import landscape, sensor
from smallseg.data.remote_sensing import _plan_scene, _settings, make_remote_sensing_scene, write_remote_sensing_scene
from smallseg.errors import SmallsegError

V2 = dict(world="v2")


@pytest.fixture(scope="module")
def seam_scene(tmp_path_factory):
    """A suburban summer scene with street trees and gardens, written in 128-px windows, and in one piece."""
    out = tmp_path_factory.mktemp("v2") / "scene"
    kw = dict(seed=7, pixel_size_m=0.4, landscape="suburban", season="summer", nodata_collar=True, **V2)
    paths = write_remote_sensing_scene(out, 416, 384, window_px=128, **kw)
    return paths, make_remote_sensing_scene(416, 384, **kw)


def test_windows_render_like_the_whole_scene_and_trees_keep_one_id_across_seams(seam_scene):
    paths, scene = seam_scene
    with rasterio.open(paths.image) as img, rasterio.open(paths.instances) as ins, rasterio.open(paths.classes) as cls:
        assert np.array_equal(img.read(), scene.image)
        instances, classes = ins.read(1), cls.read(1)
    assert np.array_equal(instances, scene.instances) and np.array_equal(classes, scene.classes)
    trees = set(scene.objects.id[scene.objects.class_id == 3].tolist())
    crossing = set()
    for b in range(128, 416, 128):
        crossing |= set(np.intersect1d(instances[b - 1], instances[b]).tolist())
    for b in range(128, 384, 128):
        crossing |= set(np.intersect1d(instances[:, b - 1], instances[:, b]).tolist())
    tree_crossing = crossing & trees
    assert len(tree_crossing) >= 5, "no crowns on the window seams: the seam test tests nothing"
    for k in tree_crossing:
        assert (classes[instances == k] == 3).all()
        _, n = ndimage.label(instances == k, structure=np.ones((3, 3)))
        assert n <= 2  # a visible crown can be notched by a taller one, not shattered


def test_every_listed_object_has_pixels_and_occluded_ones_keep_half(seam_scene):
    _, scene = seam_scene
    table = scene.objects
    counts = np.bincount(scene.instances.ravel(), minlength=len(table) + 1)[1:]
    assert np.array_equal(counts, table.area_px) and (counts >= 1).all()
    assert {1, 2, 3} <= set(table.class_id.tolist())
    px = scene.pixel_size_m
    h = px / math.sqrt(2)
    solid = table.class_id != 3
    # each car / roof footprint (pixel centres inside its rectangle): what a crown covers of it
    rows, cols = np.mgrid[0:scene.instances.shape[0], 0:scene.instances.shape[1]]
    under_crowns = 0
    for i in np.flatnonzero(solid):
        ang = -math.radians(table.angle_deg[i])  # map angles count counter-clockwise, rows run down
        du, dv = cols - table.center_col_px[i], rows - table.center_row_px[i]
        u = (du * math.cos(ang) + dv * math.sin(ang)) * px
        v = (-du * math.sin(ang) + dv * math.cos(ang)) * px
        foot = (np.abs(u) <= table.length_m[i] / 2 - 1e-6) & (np.abs(v) <= table.width_m[i] / 2 - 1e-6)
        own = foot & (scene.instances == table.id[i])
        assert own.sum() >= 0.5 * foot.sum()  # crowns never hide more than half of a car or roof
        under_crowns += (foot & (scene.classes == 3)).sum() >= 3
    assert under_crowns >= 2, "no car or roof is partly under a crown"
    # crowns: at most the outline's reach, at least one pixel
    r = table.length_m[~solid] / 2
    assert (table.area_m2[~solid] <= math.pi * (landscape.CROWN_REACH * r + h) ** 2).all()
    assert (r >= landscape.MIN_TREE_RADIUS_M).all()
    # every id has exactly one class
    pairs = np.unique(np.stack([scene.instances.ravel(), scene.classes.ravel()]), axis=1)
    ids, n = np.unique(pairs[0], return_counts=True)
    assert (n == 1).all()


def test_dense_forest_gives_touching_crowns_and_shrubs_are_not_labelled():
    s = _settings(320, 320, 3, 0.5, 3, "uint8", False, "EPSG:32633", (389_000.0, 5_819_000.0), 1.0,
                  "v2", "forest", "summer")
    plan = _plan_scene(s)
    scene = make_remote_sensing_scene(320, 320, seed=3, pixel_size_m=0.5, landscape="forest", season="summer", **V2)
    labels = scene.instances.astype(np.int64)
    trees = scene.classes == 3
    assert trees.mean() > 0.3
    touching = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        both = (a > 0) & (b > 0) & (a != b)
        touching |= set(zip(a[both].tolist(), b[both].tolist()))
    assert len(touching) > 100  # canopy: crowns share boundaries, each still its own instance
    # shrubs: never labelled (the pixel at a shrub's centre is background or a tree drawn over it)
    sh = plan.shrub_array
    assert len(sh) > 0
    rows = np.clip((sh[:, 1] / 0.5).astype(int), 0, 319)
    cols = np.clip((sh[:, 0] / 0.5).astype(int), 0, 319)
    assert set(scene.classes[rows, cols].tolist()) <= {0, 3}


def test_same_seed_same_v2_scene_and_classic_world_is_untouched():
    a = make_remote_sensing_scene(160, 144, seed=4, **V2)
    b = make_remote_sensing_scene(160, 144, seed=4, **V2)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.instances, b.instances)
    classic = make_remote_sensing_scene(160, 144, seed=4)
    explicit = make_remote_sensing_scene(160, 144, seed=4, world="v1")
    assert np.array_equal(classic.image, explicit.image)
    assert not np.array_equal(classic.image, a.image)
    assert set(np.unique(classic.classes).tolist()) <= {0, 1, 2}


def test_winter_forest_has_snow_and_dark_canopy_and_pan_has_one_band():
    open_ground = {}
    for season in ("summer", "winter"):
        s = make_remote_sensing_scene(256, 256, seed=12, landscape="rural", season=season, **V2)
        grey = s.image.astype(float).mean(0)
        tree = s.classes == 3
        assert tree.sum() > 50
        open_ground[season] = np.median(grey[~tree])
        crowns = np.median(grey[tree])
    assert open_ground["winter"] > 200 > 160 > open_ground["summer"]  # snow on open ground
    assert crowns < 0.7 * open_ground["winter"]  # crowns dark against it
    pan = make_remote_sensing_scene(128, 128, seed=5, bands=1, **V2)
    assert pan.image.shape == (1, 128, 128) and pan.image.dtype == np.uint8 and pan.image.min() >= 1
    nir = make_remote_sensing_scene(128, 128, seed=5, bands=4, dtype="uint16", **V2)
    assert nir.image.shape == (4, 128, 128) and nir.image.max() <= 4095
    veg = nir.classes == 3
    if veg.any():  # vegetation is bright in NIR, dark in red
        assert nir.image[3][veg].mean() > 2 * nir.image[0][veg].mean()


def test_jpeg_roundtrip_is_blockwise_and_window_independent():
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.uniform(20, 230, (3, 64, 80)), (0, 3, 3)).astype(np.uint8)
    hi = sensor.jpeg_roundtrip(smooth, 95, 0, 0)
    lo = sensor.jpeg_roundtrip(smooth, 20, 0, 0)
    err_hi = np.abs(hi.astype(int) - smooth).mean()
    err_lo = np.abs(lo.astype(int) - smooth).mean()
    assert err_hi < 2.0 < err_lo < 20.0
    # the right half compressed on its own equals the right half of the whole (blocks on the scene grid)
    assert np.array_equal(sensor.jpeg_roundtrip(smooth[:, :, 32:], 20, 0, 32), lo[:, :, 32:])
    with pytest.raises(ValueError, match="16-px"):
        sensor.jpeg_roundtrip(smooth[:, :, 8:], 20, 0, 8)


def test_bad_world_options_raise_one_line_errors():
    with pytest.raises(SmallsegError, match="world"):
        make_remote_sensing_scene(64, 64, seed=0, world="v3")
    with pytest.raises(SmallsegError, match="landscape"):
        make_remote_sensing_scene(64, 64, seed=0, landscape="jungle", **V2)
    with pytest.raises(SmallsegError, match="world='v2'"):
        make_remote_sensing_scene(64, 64, seed=0, season="winter")
    with pytest.raises(SmallsegError, match="bands"):
        make_remote_sensing_scene(64, 64, seed=0, bands=2, **V2)
