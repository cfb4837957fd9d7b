"""Synthetic remote-sensing scenes: determinism, GeoTIFF profiles, exact object areas, windowed writing."""

import math

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from smallseg.data.remote_sensing import (
    make_remote_sensing_scene,
    save_remote_sensing_scene,
    write_remote_sensing_scene,
)
from smallseg.errors import SmallsegError
from smallseg.io.tables import SceneObjects


def test_same_seed_same_scene_different_seed_different_scene():
    a = make_remote_sensing_scene(192, 160, seed=11)
    b = make_remote_sensing_scene(192, 160, seed=11)
    c = make_remote_sensing_scene(192, 160, seed=12)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.instances, b.instances)
    assert np.array_equal(a.objects.center_x, b.objects.center_x)
    assert not np.array_equal(a.image, c.image)


def test_same_seed_gives_identical_file_bytes(tmp_path):
    p1 = write_remote_sensing_scene(tmp_path / "a" / "s", 160, 144, seed=5)
    p2 = write_remote_sensing_scene(tmp_path / "b" / "s", 160, 144, seed=5)
    for f1, f2 in zip((p1.image, p1.instances, p1.classes, p1.objects_csv),
                      (p2.image, p2.instances, p2.classes, p2.objects_csv)):
        assert f1.read_bytes() == f2.read_bytes()


@pytest.fixture(scope="module")
def written_scene(tmp_path_factory):
    """A 4-band uint16 scene at 0.3 m with a nodata collar, written in 128-px windows."""
    out = tmp_path_factory.mktemp("rs") / "scene"
    kw = dict(seed=21, pixel_size_m=0.3, bands=4, dtype="uint16", nodata_collar=True, density=1.5)
    paths = write_remote_sensing_scene(out, 544, 480, window_px=128, **kw)
    return paths, make_remote_sensing_scene(544, 480, **kw)


def test_geotiffs_share_one_profile_and_carry_crs_transform_nodata(written_scene):
    paths, _ = written_scene
    with rasterio.open(paths.image) as img, rasterio.open(paths.instances) as ins, \
            rasterio.open(paths.classes) as cls:
        assert img.crs.to_epsg() == 32633
        assert img.transform.a == pytest.approx(0.3) and img.transform.e == pytest.approx(-0.3)
        assert img.transform.b == 0 and img.transform.d == 0
        assert img.count == 4 and img.dtypes == ("uint16",) * 4 and img.nodata == 0
        assert img.profile["compress"] == "deflate" and img.block_shapes[0] == (512, 480)  # tiled blocks
        for lab, dtype in ((ins, "uint32"), (cls, "uint8")):
            assert lab.crs == img.crs and lab.transform == img.transform and lab.shape == img.shape
            assert lab.count == 1 and lab.dtypes[0] == dtype
        image, instances, classes = img.read(), ins.read(1), cls.read(1)
    nodata = (image == 0).all(0)
    assert 0.05 < nodata.mean() < 0.6  # a real collar, not the whole scene
    assert not (image[:, ~nodata] == 0).any()  # valid pixels never collide with the nodata value
    assert (instances[nodata] == 0).all() and (classes[nodata] == 0).all()
    # every id has exactly one class, and background is class 0
    pairs = np.unique(np.stack([instances.ravel(), classes.ravel()]), axis=1)
    ids, counts = np.unique(pairs[0], return_counts=True)
    assert (counts == 1).all()
    assert set(pairs[1][pairs[0] == 0]) == {0} and set(pairs[1][pairs[0] > 0]) <= {1, 2}
    assert {1, 2} <= set(pairs[1][pairs[0] > 0])


def test_object_sizes_are_cars_and_small_buildings_and_areas_are_exact(written_scene):
    paths, _ = written_scene
    table = SceneObjects.read_csv(paths.objects_csv)
    with rasterio.open(paths.instances) as ins:
        instances = ins.read(1)
        px = ins.transform.a
    counts = np.bincount(instances.ravel(), minlength=len(table) + 1)[1:]
    assert set(np.unique(instances)) - {0} == set(table.id.tolist())  # ids 1..N, every one visible
    assert np.array_equal(counts, table.area_px)
    assert np.allclose(table.area_m2, counts * px * px)
    car, bld = table.class_id == 1, table.class_id == 2
    assert car.sum() > 10 and bld.sum() > 3
    assert (table.length_m[car] <= 5).all() and (table.width_m[car] >= 1.5).all()
    assert (table.length_m[bld] <= 20).all() and (table.width_m[bld] >= 6).all()
    # Pixel areas against the analytic footprint: pixels whose centre is inside the rectangle cover the
    # rectangle eroded by half a pixel diagonal h and lie inside it dilated by h.
    h = px / math.sqrt(2)
    L, W = table.length_m, table.width_m
    assert (table.area_m2 >= (L - 2 * h) * (W - 2 * h) - 1e-9).all()
    assert (table.area_m2 <= (L + 2 * h) * (W + 2 * h) + 1e-9).all()
    # object sizes in m² in the car (2-5 m sides) and building (6-20 m sides) ranges
    assert (table.area_m2[car] > 2.0).all() and (table.area_m2[car] < 5 * 2.5).all()
    assert (table.area_m2[bld] > 30).all() and (table.area_m2[bld] < 20 * 20 + 20).all()
    # map centre agrees with the pixel centre through the transform
    with rasterio.open(paths.instances) as ins:
        xs, ys = rasterio.transform.xy(ins.transform, table.center_row_px, table.center_col_px)
    assert np.allclose(xs, table.center_x, atol=1e-6) and np.allclose(ys, table.center_y, atol=1e-6)


def test_windowed_writer_equals_one_piece_and_keeps_ids_across_window_borders(written_scene):
    paths, scene = written_scene
    with rasterio.open(paths.image) as img, rasterio.open(paths.instances) as ins:
        assert np.array_equal(img.read(), scene.image)
        instances = ins.read(1)
    assert np.array_equal(instances, scene.instances)
    assert np.array_equal(SceneObjects.read_csv(paths.objects_csv).area_px, scene.objects.area_px)
    # objects whose pixels straddle a 128-px window border keep one id and stay one connected piece
    crossing = set()
    for b in range(128, 544, 128):
        crossing |= set(np.intersect1d(instances[b - 1], instances[b]).tolist())
    for b in range(128, 480, 128):
        crossing |= set(np.intersect1d(instances[:, b - 1], instances[:, b]).tolist())
    crossing.discard(0)
    assert len(crossing) >= 3
    for k in crossing:
        _, n = ndimage.label(instances == k, structure=np.ones((3, 3)))
        assert n == 1


def test_scene_converts_to_instances_and_saves(tmp_path):
    scene = make_remote_sensing_scene(128, 128, seed=3, density=2.0)
    inst = scene.to_instances()
    assert len(inst) == (scene.objects.area_px > 0).sum() > 0
    for i, k in enumerate(inst.ids):
        assert (scene.classes[scene.instances == k] == inst.class_ids[i]).all()
    paths = save_remote_sensing_scene(scene, tmp_path / "s")
    with rasterio.open(paths.classes) as cls:
        assert np.array_equal(cls.read(1), scene.classes) and cls.transform == scene.transform


def test_bad_options_raise_one_line_errors():
    with pytest.raises(SmallsegError, match="^pixel_size_m 5.0: use 0.1 to 2 m"):
        make_remote_sensing_scene(64, 64, seed=0, pixel_size_m=5)
    with pytest.raises(SmallsegError, match="^bands 2: use 1"):
        make_remote_sensing_scene(64, 64, seed=0, bands=2)
    with pytest.raises(SmallsegError, match="^window_px 100: use a positive multiple of 16"):
        write_remote_sensing_scene("/tmp/never", 64, 64, seed=0, window_px=100)


def test_coarse_pixels_never_list_an_object_without_pixels():
    scene = make_remote_sensing_scene(200, 200, seed=9, pixel_size_m=2.0)
    counts = np.bincount(scene.instances.ravel(), minlength=len(scene.objects) + 1)[1:]
    assert len(scene.objects) > 20 and (counts >= 1).all()
    assert np.array_equal(counts, scene.objects.area_px)


def test_some_objects_touch(written_scene):
    """Row houses and tight parking rows give objects that share a boundary (4-adjacent, different ids)."""
    _, scene = written_scene
    labels = scene.instances.astype(np.int64)
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        both = (a > 0) & (b > 0) & (a != b)
        pairs |= set(zip(a[both].tolist(), b[both].tolist()))
    assert len(pairs) >= 3
