"""Resolution (#13 item 5): a scene outside the model's training pixel size is predicted resampled, and every
output comes back on the input's grid; tile-and-predict keeps only the classes of the image's modality.

The equivalence test uses the shipped model with a declared training range of exactly 0.4 m: the 0.2 m copy
of a 0.4 m scene (each pixel repeated 2 x 2) is then read back, by area average, as exactly the 0.4 m pixels,
so the objects must be exactly the 0.4 m scene's, repeated 2 x 2 on the input grid.
"""

import json
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
import tifffile
from rasterio.enums import ColorInterp
from rasterio.transform import Affine
from rasterio.windows import Window

from smallseg.data.remote_sensing import make_remote_sensing_scene
from smallseg.errors import SmallsegError
from smallseg.io.geotiff import open_raster
from smallseg.io.tables import read_objects_csv
from smallseg.models.registry import load_model
from smallseg.pipeline.geotiff import predict_geotiff

DATA = Path(__file__).parent / "data"


def _write(path, image, pixel_m, interp=None):
    c, h, w = image.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype=image.dtype.name,
                       crs="EPSG:32633", transform=Affine(pixel_m, 0, 500_000, 0, -pixel_m, 5_800_000),
                       photometric="RGB" if c == 3 else "MINISBLACK") as ds:
        ds.write(image)
        if interp is not None:
            ds.colorinterp = interp
    return path


def _repeat(image, k):
    return np.repeat(np.repeat(image, k, axis=-2), k, axis=-1)


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.transform, ds.crs, ds.shape


@pytest.fixture(scope="module")
def scene():
    return make_remote_sensing_scene(192, 192, seed=123_461, pixel_size_m=0.4)


@pytest.fixture()
def model_at_04():
    """The shipped model, declared as trained at 0.4 m only (its weights unchanged)."""
    model = load_model("remote-sensing")
    model.config.training["train_pixel_size_m"] = [0.4, 0.4]
    return model


def test_windows_of_the_virtual_resampled_raster_equal_a_whole_read(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (4, 203, 157), dtype=np.uint8)
    image[3] = 255
    image[3, :40, :50] = 0  # alpha: the top-left corner is not valid
    path = _write(tmp_path / "a.tif", image, 0.2,
                  interp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha])
    for factor in (2.14, 0.7):  # coarser (area average) and finer (bilinear)
        with open_raster(path, expected_bands=3) as reader:
            grid = reader.resample(factor)
            h, w = reader.height, reader.width
            assert (h, w) == (round(203 / factor), round(157 / factor))
            assert reader.geometry.transform == reader.input_geometry.transform @ Affine.scale(factor)
            whole, valid = reader.read_with_mask(Window(0, 0, w, h))
            # The alpha is taken by nearest neighbour: invalid exactly where the centre's input pixel is.
            rows, cols = grid.input_pixels(0, h, 0), grid.input_pixels(0, w, 1)
            assert np.array_equal(valid, image[3][np.ix_(rows, cols)] > 0)
            for r0 in range(-20, h, 47):
                for c0 in range(-15, w, 39):
                    data, ok = reader.read_with_mask(Window(c0, r0, 64, 60))
                    rr, cc = slice(max(r0, 0), r0 + 60), slice(max(c0, 0), c0 + 64)
                    inner = (slice(None), slice(max(-r0, 0), max(-r0, 0) + whole[:, rr, cc].shape[1]),
                             slice(max(-c0, 0), max(-c0, 0) + whole[:, rr, cc].shape[2]))
                    assert np.array_equal(data[inner], whole[:, rr, cc])  # tiling stays exact
                    assert np.array_equal(ok[inner[1:]], valid[rr, cc])
                    assert not ok[: max(-r0, 0)].any() and not ok[:, : max(-c0, 0)].any()  # outside: invalid


def test_a_scene_at_half_the_pixel_size_gives_the_same_objects_resampled(tmp_path, scene, model_at_04):
    image = np.ascontiguousarray(scene.image)
    a = _write(tmp_path / "a04.tif", image, 0.4)
    b = _write(tmp_path / "b02.tif", _repeat(image, 2), 0.2)
    ra = predict_geotiff(a, tmp_path / "a", model_at_04, progress=False)
    rb = predict_geotiff(b, tmp_path / "b", model_at_04, progress=False)
    assert ra.run["input"]["resample"]["applied"] is False
    applied = rb.run["input"]["resample"]
    assert applied["applied"] is True and applied["from_m"] == 0.2 and applied["to_m"] == 0.4
    assert applied["method"] == "average" and applied["grid"]["width"] == 192
    la, ta, crs_a, _ = _read(ra.paths["instances"])
    lb, tb, crs_b, shape_b = _read(rb.paths["instances"])
    assert la.max() > 5
    # Every output on the input's grid: size, transform and CRS of the 0.2 m file.
    with rasterio.open(b) as src:
        assert shape_b == src.shape and tb == src.transform and crs_b == src.crs
    assert _read(rb.paths["classes"])[1:] == (tb, crs_b, shape_b)
    assert np.array_equal(lb, _repeat(la, 2))  # the same objects
    oa, ob = read_objects_csv(ra.paths["csv"]), read_objects_csv(rb.paths["csv"])
    assert len(oa) == len(ob) == ra.n_objects == rb.n_objects
    assert np.array_equal(ob.area_px, 4 * oa.area_px)  # input px: the objects' pixels in the 0.2 m raster
    assert np.array_equal(ob.area_px, np.bincount(lb.ravel(), minlength=lb.max() + 1)[ob.ids])
    csv_a = np.genfromtxt(ra.paths["csv"], delimiter=",", names=True, dtype=None, encoding="utf-8")
    csv_b = np.genfromtxt(rb.paths["csv"], delimiter=",", names=True, dtype=None, encoding="utf-8")
    assert np.allclose(csv_b["area_m2"], csv_a["area_m2"], rtol=1e-9)  # true ground areas
    assert np.allclose(csv_b["centroid_x"], csv_a["centroid_x"]) and np.allclose(csv_b["centroid_y"], csv_a["centroid_y"])
    assert np.allclose(ob.centroids_yx, (oa.centroids_yx + 0.5) * 2 - 0.5)
    assert np.array_equal(ob.bbox, oa.bbox * 2)
    (meta_a, _, geom_a, _), (meta_b, _, geom_b, _) = (pyogrio.raw.read(r.paths["gpkg"]) for r in (ra, rb))
    assert meta_a["crs"] == meta_b["crs"]  # polygons in the input's CRS, the same ground shapes
    assert np.allclose(shapely.area(shapely.from_wkb(geom_b)), shapely.area(shapely.from_wkb(geom_a)))

    # At the input's own pixels the model sees objects twice as large: other objects.
    rc = predict_geotiff(b, tmp_path / "c", model_at_04, progress=False, resample=False)
    assert rc.run["input"]["resample"] == {"applied": False, "reason": rc.run["input"]["resample"]["reason"]}
    assert "resample=False" in rc.run["input"]["resample"]["reason"]
    assert not np.array_equal(_read(rc.paths["instances"])[0], lb)


def test_a_non_integer_factor_keeps_the_table_and_the_rasters_consistent(tmp_path, scene):
    # 0.1 m (the 0.4 m scene repeated 4 x 4) to the shipped model (0.214-0.857 m): read at its centre, 0.429 m.
    path = _write(tmp_path / "s01.tif", _repeat(np.ascontiguousarray(scene.image[:, :96, :96]), 4), 0.1)
    result = predict_geotiff(path, tmp_path / "o", "remote-sensing", progress=False, formats="tif,csv,json")
    resample = result.run["input"]["resample"]
    assert resample["applied"] and resample["to_m"] == pytest.approx(np.sqrt(0.214286 * 0.857143), rel=1e-5) and resample["method"] == "average"
    assert resample["grid"]["width"] == round(384 / 4.28571)
    assert result.run["input"]["width"] == 384 and result.run["input"]["pixel_size_m"] == pytest.approx(0.1)
    labels, transform, _, shape = _read(result.paths["instances"])
    assert shape == (384, 384) and transform.a == pytest.approx(0.1)
    objects = result.objects
    assert len(objects) > 0 and set(np.unique(labels[labels > 0])) == set(objects.ids.tolist())
    assert np.array_equal(objects.area_px, np.bincount(labels.ravel())[objects.ids])
    for i, (r0, c0, r1, c1) in zip(objects.ids, objects.bbox):
        rows, cols = np.nonzero(labels == i)
        assert (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1) == (r0, c0, r1, c1)
    cells = np.genfromtxt(result.paths["csv"], delimiter=",", names=True, dtype=None, encoding="utf-8")
    assert np.allclose(np.atleast_1d(cells["area_m2"]), objects.area_px * 0.01)


def test_a_resumed_resampled_run_is_byte_identical_and_refuses_another_resample_setting(tmp_path, scene,
                                                                                       model_at_04):
    path = _write(tmp_path / "b.tif", _repeat(np.ascontiguousarray(scene.image), 2), 0.2)
    whole = predict_geotiff(path, tmp_path / "whole", model_at_04, progress=False, tile_size_px=96,
                            formats="tif,csv,gpkg,json")

    def stop(n):
        if n == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_geotiff(path, tmp_path / "cut", model_at_04, progress=False, tile_size_px=96,
                        formats="tif,csv,gpkg,json", on_row_done=stop)
    with pytest.raises(SmallsegError, match="resample"):
        predict_geotiff(path, tmp_path / "cut", model_at_04, progress=False, tile_size_px=96,
                        formats="tif,csv,gpkg,json", resume=True, resample=False)
    resumed = predict_geotiff(path, tmp_path / "cut", model_at_04, progress=False, tile_size_px=96,
                              formats="tif,csv,gpkg,json", resume=True)
    assert resumed.run["session"]["resumed_from_tile_row"] == 1
    for kind in ("instances", "classes", "csv", "gpkg"):
        assert whole.paths[kind].read_bytes() == resumed.paths[kind].read_bytes(), kind
    with pytest.raises(SmallsegError, match="resample"):  # a finished run with the other setting
        predict_geotiff(path, tmp_path / "whole", model_at_04, progress=False, tile_size_px=96,
                        formats="tif,csv,gpkg,json", resume=True, resample=False)


def test_pixel_sizes_more_than_10x_off_and_plain_images_are_not_resampled(tmp_path, scene):
    small = np.ascontiguousarray(scene.image[:, :64, :64])
    far = predict_geotiff(_write(tmp_path / "far.tif", small, 30.0), tmp_path / "far", "remote-sensing",
                          progress=False, formats="json")
    assert far.run["input"]["resample"]["applied"] is False and "10x" in far.run["input"]["resample"]["reason"]
    assert far.run["reliable"] is False
    tifffile.imwrite(tmp_path / "plain.tif", np.moveaxis(small, 0, -1), photometric="rgb")
    plain = predict_geotiff(tmp_path / "plain.tif", tmp_path / "plain", "remote-sensing", progress=False,
                            formats="json")
    assert plain.run["input"]["resample"]["applied"] is False
    assert "no georeferencing" in plain.run["input"]["resample"]["reason"]
    assert any("not resampled" in n for n in plain.run["notes"])


# ------------------------------------------------------------------------------- per-modality classes


def test_tile_and_predict_keeps_the_classes_of_the_images_modality(tmp_path):
    image = DATA / "dsb2018_nuclei_image.tif"  # fluorescence microscopy, no DICOM modality
    every = predict_geotiff(image, tmp_path / "any", "medical", progress=False, formats="tif,csv,json")
    per_class = every.run["counts"]["objects_per_class"]
    assert per_class["nodule"] == 0 and per_class["nucleus"] == every.n_objects > 10
    assert every.run["input"]["modality"] == {"modality": "", "class_ids": [1], "classes": ["nucleus"]}
    assert set(every.objects.class_ids.tolist()) == {1}
    ct = predict_geotiff(image, tmp_path / "ct", "medical", progress=False, formats="tif,csv,json", modality="ct")
    assert ct.run["input"]["modality"]["classes"] == ["nodule"]
    assert ct.run["counts"]["objects_per_class"]["nucleus"] == 0
    assert set(ct.objects.class_ids.tolist()) <= {2}
    # The restriction relabels, it does not move objects: an unknown modality (all classes, the same
    # normalisation) gives the same instances, and its "nodule" pixels are the restricted run's "nucleus".
    mr = predict_geotiff(image, tmp_path / "mr", "medical", progress=False, formats="tif,json", modality="MR")
    assert mr.run["input"]["modality"] is None
    assert np.array_equal(_read(mr.paths["instances"])[0], _read(every.paths["instances"])[0])
    mr_classes = _read(mr.paths["classes"])[0]
    assert mr.run["counts"]["objects_per_class"]["nodule"] >= 1  # what tile-and-predict gave before (#13)
    assert np.array_equal(_read(every.paths["classes"])[0], np.where(mr_classes == 2, 1, mr_classes))
    # A model without classes per modality is not affected.
    rs = predict_geotiff(_write(tmp_path / "rs.tif", np.zeros((3, 32, 32), np.uint8) + 100, 0.4), tmp_path / "rs",
                         "remote-sensing", progress=False, formats="json")
    assert rs.run["input"]["modality"] is None


def test_the_cli_resamples_by_default_and_no_resample_keeps_the_input_pixels(tmp_path, scene, capsys):
    from smallseg.cli import main

    path = _write(tmp_path / "s01.tif", _repeat(np.ascontiguousarray(scene.image[:, :48, :48]), 4), 0.1)
    for flags, out in (((), "on"), (("--no-resample",), "off")):
        assert main(["tile-and-predict", str(path), "--out", str(tmp_path / out), "--quiet", "--formats", "json",
                     *flags]) == 0
    err = capsys.readouterr().err
    assert "note:" in err and "resampled to 0.42857" in err
    on = json.loads((tmp_path / "on" / "s01.run.json").read_text(encoding="utf-8"))
    off = json.loads((tmp_path / "off" / "s01.run.json").read_text(encoding="utf-8"))
    assert on["input"]["resample"]["applied"] is True and off["input"]["resample"]["applied"] is False
    assert on["input"]["resample"]["grid"]["width"] == round(192 / (0.428572 / 0.1)) == 45  # what the model saw
    assert on["input"]["width"] == off["input"]["width"] == 192 and "grid" not in off["input"]["resample"]
    assert main(["tile-and-predict", str(path), "--out", str(tmp_path / "off"), "--quiet", "--formats", "json",
                 "--resume"]) == 2
    assert "resample" in capsys.readouterr().err
    assert main(["tile-and-predict", str(DATA / "dsb2018_nuclei_image.tif"), "--out", str(tmp_path / "m"),
                 "--quiet", "--formats", "json", "--model", "medical", "--modality", "c t"]) == 2
    assert "--modality c t:" in capsys.readouterr().err


def test_resample_to_a_chosen_pixel_size(tmp_path, scene, model_at_04, capsys):
    from smallseg.cli import main

    # The model declares 0.4 m only; asked for 0.8 m, the 0.2 m copy is read at 0.8 m (4 x 4 averages).
    path = _write(tmp_path / "b.tif", _repeat(np.ascontiguousarray(scene.image[:, :64, :64]), 2), 0.2)
    result = predict_geotiff(path, tmp_path / "o", model_at_04, progress=False, formats="tif,json",
                             resample_to_m=0.8)
    applied = result.run["input"]["resample"]
    assert applied["to_m"] == 0.8 and applied["factor"] == 4 and applied["grid"]["width"] == 32
    assert _read(result.paths["instances"])[3] == (128, 128)
    same = predict_geotiff(_write(tmp_path / "c.tif", np.zeros((3, 16, 16), np.uint8), 0.8), tmp_path / "c",
                           model_at_04, progress=False, formats="json", resample_to_m=0.8)
    assert same.run["input"]["resample"]["applied"] is False  # already at 0.8 m
    for bad, message in (("0", "--resample-to 0: must be a pixel size"),):
        assert main(["tile-and-predict", str(path), "--out", str(tmp_path / "x"), "--quiet", "--resample-to", bad]) == 2
        assert message in capsys.readouterr().err
    assert main(["tile-and-predict", str(path), "--out", str(tmp_path / "x"), "--quiet", "--resample-to", "0.4",
                 "--no-resample"]) == 2
    assert "--resample-to 0.4: cannot be combined with --no-resample" in capsys.readouterr().err


def test_a_resampled_scene_keeps_its_nodata_collar_out_of_the_objects(tmp_path):
    collar = make_remote_sensing_scene(96, 96, seed=1, pixel_size_m=0.4, nodata_collar=True)
    image = _repeat(np.ascontiguousarray(collar.image), 4)  # 0.1 m, nodata 0 around the valid area
    path = tmp_path / "collar.tif"
    with rasterio.open(path, "w", driver="GTiff", width=384, height=384, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(0.1, 0, 500_000, 0, -0.1, 5_800_000), nodata=0, photometric="RGB") as ds:
        ds.write(image)
    result = predict_geotiff(path, tmp_path / "o", "remote-sensing", progress=False, formats="tif,json")
    assert result.run["input"]["resample"]["applied"] is True
    invalid = (image == 0).all(axis=0)
    assert 0.2 < invalid.mean() < 0.8
    classes, labels = _read(result.paths["classes"])[0], _read(result.paths["instances"])[0]
    assert not labels[invalid].any()  # no object on nodata
    # The class raster's nodata (255) is the input's, up to the nearest-neighbour round trip at the edge.
    assert ((classes == 255) == invalid).mean() > 0.98
