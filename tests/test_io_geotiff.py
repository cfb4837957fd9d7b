"""GeoTIFF reader/writer on real files from rasterio's test data (in tests/data, see its ORIGIN.md)."""

import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.windows import Window

from smallseg.errors import SmallsegError
from smallseg.io.geotiff import RasterGeometry, class_writer, label_writer, open_raster

from conftest import RASTERIO_DATA as DATA  # tests/ is on sys.path under pytest
ROOT = Path(__file__).resolve().parents[1]

def _default_sigint():
    # A shell starts background jobs with SIGINT ignored, and Python then installs no KeyboardInterrupt
    # handler; restore the default so the child reacts to Ctrl-C as it does in a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)



def _one_line_error(fn, *needles):
    with pytest.raises(SmallsegError) as err:
        fn()
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    for needle in needles:
        assert needle in text, text
    return text


# ------------------------------------------------------------------------------------------------ reader


def test_rgb_byte_geometry_and_collar_masks():
    with open_raster(DATA / "RGB.byte.tif") as src, rasterio.open(DATA / "RGB.byte.tif") as ref:
        assert src.bands == (1, 2, 3) and src.dtype == "uint8" and src.nodata == 0
        g = src.geometry
        assert (g.width, g.height) == (791, 718)
        assert g.crs.to_epsg() == 32618 and g.transform == ref.transform and g.georeferenced
        assert g.linear_units == "metre"
        assert g.pixel_area == pytest.approx(300.0379266750948 * 300.041782729805)
        full = ref.read()
        # A window across the nodata collar: valid = not nodata in at least one band (GDAL's rule).
        win = Window(0, 300, 200, 100)
        data, valid = src.read_with_mask(win)
        np.testing.assert_array_equal(data, full[:, 300:400, 0:200])
        np.testing.assert_array_equal(valid, (full[:, 300:400, 0:200] != 0).any(axis=0))
        assert 0 < valid.mean() < 1  # the window really straddles the collar


def test_boundless_edge_window_fills_nodata_and_marks_it_invalid():
    with open_raster(DATA / "RGB.byte.tif") as src, rasterio.open(DATA / "RGB.byte.tif") as ref:
        full = ref.read()
        win = Window(700, 650, 128, 128)  # runs past the right and bottom edges
        data, valid = src.read_with_mask(win)
        assert data.shape == (3, 128, 128) and valid.shape == (128, 128)
        np.testing.assert_array_equal(data[:, :68, :91], full[:, 650:, 700:])
        assert (data[:, 68:, :] == 0).all() and (data[:, :, 91:] == 0).all()
        assert not valid[68:, :].any() and not valid[:, 91:].any()
        np.testing.assert_array_equal(valid[:68, :91], (full[:, 650:, 700:] != 0).any(axis=0))
        outside = src.read_with_mask(Window(-500, -500, 64, 64))
        assert (outside[0] == 0).all() and not outside[1].any()


def test_rgba_uint16_band_selection_and_alpha_mask():
    with rasterio.open(DATA / "RGBA.uint16.tif") as ref:
        full = ref.read()
    with open_raster(DATA / "RGBA.uint16.tif", bands=[3, 1]) as src:
        assert src.count == 2 and src.dtype == "uint16"
        win = Window(100, 50, 300, 200)
        data, valid = src.read_with_mask(win)
        np.testing.assert_array_equal(data[0], full[2, 50:250, 100:400])
        np.testing.assert_array_equal(data[1], full[0, 50:250, 100:400])
        np.testing.assert_array_equal(valid, full[3, 50:250, 100:400] > 0)  # band 4 is alpha
        assert 0 < valid.mean() < 1
    # A 3-band model and no --bands: the alpha band is left out, not counted as image content.
    with open_raster(DATA / "RGBA.uint16.tif", expected_bands=3) as src:
        assert src.bands == (1, 2, 3)
    _one_line_error(lambda: open_raster(DATA / "RGBA.uint16.tif", expected_bands=2), "4 bands", "expects 2", "bands=[...]")


def test_shade_nodata_255_and_band_stats_exact_on_small_rasters():
    with rasterio.open(DATA / "shade.tif") as ref:
        full = ref.read(1)
    with open_raster(DATA / "shade.tif") as src:
        assert src.nodata == 255 and src.fill_value == 255
        data, valid = src.read_with_mask(Window(0, 0, 1024, 1024))
        np.testing.assert_array_equal(valid, full != 255)
        assert 0 < valid.mean() < 1
        pad = src.read(Window(1000, 1000, 40, 40))
        assert (pad[:, 24:, :] == 255).all()  # outside filled with nodata, not 0
        stats = src.band_stats(max_windows=16, window_px=256)  # 16 windows cover it: exact
        vals = full[full != 255].astype(np.float64)
        assert stats.valid_px == vals.size and stats.sampled_px == stats.total_px == 1024 * 1024
        np.testing.assert_allclose(stats.mean, [vals.mean()], rtol=1e-12)
        np.testing.assert_allclose(stats.std, [vals.std()], rtol=1e-9)
        assert stats.min[0] == vals.min() and stats.max[0] == vals.max()
        sampled = src.band_stats(max_windows=4, window_px=128)
        assert sampled.windows == 4 and sampled.sampled_px == 4 * 128 * 128 < stats.total_px


def test_single_band_web_mercator():
    with open_raster(DATA / "rgb1_fake_nir_epsg3857.tif", expected_bands=1) as src:
        assert src.count == 1 and src.geometry.crs.to_epsg() == 3857
        assert src.read(Window(0, 0, 16, 16)).shape == (1, 16, 16)
    _one_line_error(lambda: open_raster(DATA / "rgb1_fake_nir_epsg3857.tif", expected_bands=3), "1 band", "3")


def test_all_nodata_says_no_valid_pixels():
    with open_raster(DATA / "all-nodata.tif") as src:
        _one_line_error(src.require_valid_pixels, "all-nodata.tif", "no valid pixels")
        _one_line_error(src.band_stats, "no valid pixels")
    with open_raster(DATA / "RGB.byte.tif") as src:
        src.require_valid_pixels()  # a normal scene passes


def test_corrupt_file_fails_with_one_line():
    with open_raster(DATA / "corrupt.tif") as src:
        src.read(Window(0, 0, 64, 64))  # the first blocks decode ...
        _one_line_error(lambda: src.read(Window(600, 600, 64, 64)), "corrupt.tif", "cannot be decoded", "damaged")
        _one_line_error(src.check_decodable, "corrupt.tif", "damaged")


def test_bad_inputs_fail_with_one_line(tmp_path):
    _one_line_error(lambda: open_raster(tmp_path / "missing.tif"), "missing.tif", "no such file")
    (tmp_path / "notes.txt").write_text("not pixels")
    _one_line_error(lambda: open_raster(tmp_path / "notes.txt"), "notes.txt", "not a raster")
    _one_line_error(lambda: open_raster(DATA / "RGB.byte.tif", bands=[1, 5]), "band 5 does not exist", "1..3")
    _one_line_error(lambda: open_raster(DATA / "RGB.byte.tif", bands=[1, 2], expected_bands=3), "2 bands", "expects 3")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes((DATA / "shade.tif").read_bytes()[:300])
    _one_line_error(lambda: open_raster(truncated).read(Window(0, 0, 64, 64)), "truncated.tif")


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_plain_image_without_georeferencing_warns_once_and_reads_in_pixels(tmp_path, suffix):
    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    path = tmp_path / f"plain{suffix}"
    Image.fromarray(rgb).save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src = open_raster(path)
        data = src.read(Window(0, 0, 50, 40))
        src.valid_mask(Window(0, 0, 50, 40))
    ours = [w for w in caught if "no georeferencing" in str(w.message)]
    assert len(ours) == 1 and len(caught) == 1  # rasterio's own NotGeoreferencedWarning is not repeated
    np.testing.assert_array_equal(data, rgb.transpose(2, 0, 1))
    g = src.geometry
    assert not g.georeferenced and g.crs is None and g.pixel_area == 1.0 and g.linear_units == "px"
    out = tmp_path / "labels.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # writing pixel-unit output must not warn either
        with label_writer(out, g) as dst:
            dst.write_rows(0, np.ones((40, 50), np.uint32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(out) as ds:
            assert ds.crs is None and ds.transform.is_identity
    src.close()


# ------------------------------------------------------------------------------------------------ writer


def _labels_like(h, w, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.zeros((h, w), np.uint32)
    for i in range(1, 200):
        y, x = rng.integers(0, [h - 8, w - 8])
        labels[y : y + rng.integers(2, 8), x : x + rng.integers(2, 8)] = i * 1000003  # big ids need 32 bit
    return labels


@pytest.mark.parametrize("compress,blocksize", [("deflate", 256), ("zstd", 512)])
def test_label_writer_copies_geometry_and_values_in_uneven_bands(tmp_path, compress, blocksize):
    with open_raster(DATA / "RGB.byte.tif") as src:
        g = src.geometry
    labels = _labels_like(g.height, g.width)
    out = tmp_path / "labels.tif"
    with label_writer(out, g, compress=compress, blocksize=blocksize, tags={"producer": "test"}) as dst:
        row = 0
        for h in [37, 1, 300, 255, 125]:  # 718 rows in bands unrelated to the block size
            dst.write_rows(row, labels[row : row + h])
            row += h
            assert not out.exists()  # nothing under the final name before the end
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]  # no temporary file left
    with rasterio.open(out) as ds, rasterio.open(DATA / "RGB.byte.tif") as ref:
        assert (ds.width, ds.height, ds.count) == (ref.width, ref.height, 1)
        assert ds.crs == ref.crs and ds.transform == ref.transform
        assert ds.dtypes[0] == "uint32" and ds.nodata is None
        assert ds.profile["tiled"] and ds.block_shapes[0] == (blocksize, blocksize)
        assert ds.compression.value.lower() == compress
        assert ds.tags()["producer"] == "test"
        np.testing.assert_array_equal(ds.read(1), labels)


def test_class_writer_uint8_with_nodata(tmp_path):
    with open_raster(DATA / "shade.tif") as src:
        g = src.geometry
        valid = src.valid_mask(Window(0, 0, g.width, g.height))
    classes = np.where(valid, (np.arange(g.width) % 3).astype(np.uint8)[None, :], 255).astype(np.uint8)
    out = tmp_path / "classes.tif"
    with class_writer(out, g) as dst:
        for r in range(0, g.height, 300):
            dst.write_rows(r, classes[r : r + 300])
    with rasterio.open(out) as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.crs.to_epsg() == 3857
        np.testing.assert_array_equal(ds.read(1), classes)
        np.testing.assert_array_equal(ds.dataset_mask() > 0, valid)


def test_cog_output_has_overviews_and_same_values(tmp_path):
    with open_raster(DATA / "RGB.byte.tif") as src:
        g = src.geometry
    labels = _labels_like(g.height, g.width, seed=1)
    out = tmp_path / "labels_cog.tif"
    with label_writer(out, g, cog=True, blocksize=256) as dst:
        dst.write_rows(0, labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels_cog.tif"]
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.overviews(1)  # pyramids for fast display
        assert ds.crs.to_epsg() == 32618 and ds.transform == g.transform
        np.testing.assert_array_equal(ds.read(1), labels)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_no_file(tmp_path, exc):
    g = RasterGeometry(width=300, height=200, crs=rasterio.crs.CRS.from_epsg(32618),
                       transform=rasterio.transform.Affine(0.5, 0, 1000, 0, -0.5, 2000))
    out = tmp_path / "labels.tif"
    with pytest.raises(exc):
        with label_writer(out, g) as dst:
            dst.write_rows(0, np.ones((150, 300), np.uint32))
            raise exc("stopped")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_keeps_an_older_complete_file(tmp_path):
    g = RasterGeometry(width=64, height=64, crs=None, transform=rasterio.transform.Affine.identity())
    out = tmp_path / "labels.tif"
    with label_writer(out, g) as dst:
        dst.write_rows(0, np.full((64, 64), 7, np.uint32))
    with pytest.raises(RuntimeError):
        with label_writer(out, g) as dst:
            dst.write_rows(0, np.full((10, 64), 9, np.uint32))
            raise RuntimeError("model crashed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(out) as ds:
            assert (ds.read(1) == 7).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]


def test_missing_rows_are_an_error_and_no_file(tmp_path):
    g = RasterGeometry(width=64, height=64, crs=None, transform=rasterio.transform.Affine.identity())
    out = tmp_path / "labels.tif"
    with pytest.raises(SmallsegError, match="only 40 of 64 rows"):
        with label_writer(out, g) as dst:
            dst.write_rows(0, np.zeros((40, 64), np.uint32))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        with label_writer(out, g) as dst:
            dst.write_rows(8, np.zeros((8, 64), np.uint32))  # rows must come in order
    with pytest.raises(ValueError):
        with class_writer(out, g) as dst:
            dst.write_rows(0, np.full((64, 64), 300))  # does not fit uint8
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_in_a_real_process_leaves_no_final_file(tmp_path):
    out = tmp_path / "labels.tif"
    script = textwrap.dedent(
        f"""
        import sys, time
        import numpy as np
        from smallseg.io.geotiff import label_writer, open_raster
        with open_raster({str(DATA / 'RGB.byte.tif')!r}) as src:
            g = src.geometry
        with label_writer({str(out)!r}, g) as dst:
            dst.write_rows(0, np.ones((300, g.width), np.uint32))
            print("writing", flush=True)
            time.sleep(30)
            dst.write_rows(300, np.ones((g.height - 300, g.width), np.uint32))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint,
                            text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "writing"
        names = [p.name for p in tmp_path.iterdir()]
        assert len(names) == 1 and names[0].startswith(".labels.partial-")  # mid-write: only a temporary name
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_settings(tmp_path):
    g = RasterGeometry(width=8, height=8, crs=None, transform=rasterio.transform.Affine.identity())
    _one_line_error(lambda: label_writer(tmp_path / "x.tif", g, compress="jpeg2000"), "compress")
    _one_line_error(lambda: label_writer(tmp_path / "x.tif", g, blocksize=100), "blocksize")
    _one_line_error(lambda: label_writer(tmp_path / "nowhere" / "x.tif", g), "does not exist")


def test_raster_without_nodata_or_mask_is_valid_everywhere_inside(tmp_path):
    path = tmp_path / "plain_geo.tif"
    data = np.arange(3 * 30 * 40, dtype=np.uint16).reshape(3, 30, 40)
    with rasterio.open(path, "w", driver="GTiff", width=40, height=30, count=3, dtype="uint16",
                       crs="EPSG:32633", transform=rasterio.transform.Affine(2, 0, 500000, 0, -2, 6000000)) as ds:
        ds.write(data)
    with open_raster(path) as src:
        got, valid = src.read_with_mask(Window(30, 20, 16, 16))
        np.testing.assert_array_equal(got[:, :10, :10], data[:, 20:, 30:])
        assert valid[:10, :10].all() and not valid[10:].any() and not valid[:, 10:].any()
        assert src.geometry.pixel_area == 4.0


def test_nodata_override_replaces_the_files_mask(tmp_path):
    # shade.tif says nodata = 255; the user says 0 instead: valid = some band differs from 0.
    with open_raster(DATA / "shade.tif", nodata=0) as src, rasterio.open(DATA / "shade.tif") as ref:
        full = ref.read()
        assert src.nodata == 0 and src.fill_value == 0
        win = Window(1000, 0, 64, 64)  # runs past the right edge: filled with the new nodata, invalid
        data, valid = src.read_with_mask(win)
        np.testing.assert_array_equal(valid[:, :24], (full[:, :64, 1000:] != 0).any(axis=0))
        assert not valid[:, 24:].any() and (data[:, :, 24:] == 0).all()
        np.testing.assert_array_equal(src.valid_mask(win), valid)
    _one_line_error(lambda: open_raster(DATA / "shade.tif", nodata=-1), "nodata -1", "uint8")
    _one_line_error(lambda: open_raster(DATA / "shade.tif", nodata=0.5), "nodata 0.5")


def test_band_stats_without_valid_samples_can_return_nan_instead_of_raising():
    with open_raster(DATA / "all-nodata.tif") as src:
        stats = src.band_stats(require_valid=False)
        assert stats.valid_px == 0 and np.isnan(stats.mean).all() and stats.sampled_px > 0


def test_pixel_size_in_metres_follows_the_crs_units():
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    utm = RasterGeometry(10, 10, CRS.from_epsg(32633), from_origin(389_000, 5_819_000, 0.5, 0.5))
    assert utm.metres_per_unit == 1.0 and utm.pixel_area_m2 == pytest.approx(0.25) and utm.pixel_size_m == 0.5
    # NY state plane in US survey feet: a 10 ft pixel is 3.048006 m on a side (1 ftUS = 1200/3937 m)
    feet = RasterGeometry(10, 10, CRS.from_epsg(2263), from_origin(980_000, 200_000, 10.0, 10.0))
    assert feet.pixel_size_m == pytest.approx(10 * 1200 / 3937, rel=1e-9)
    # degrees are not a length unit, but a pixel has a ground size at its latitude (1e-5 deg at 52 N:
    # 0.685 m x 1.113 m; tests/test_ground_units.py); pixel units have no metric scale
    wgs84 = RasterGeometry(10, 10, CRS.from_epsg(4326), from_origin(13.0, 52.0, 1e-5, 1e-5))
    plain = RasterGeometry(10, 10, None, from_origin(0, 0, 1, 1))
    assert wgs84.metres_per_unit is None and wgs84.pixel_size_m == pytest.approx(0.873, abs=0.002)
    assert plain.metres_per_unit is None and plain.pixel_area_m2 is None
