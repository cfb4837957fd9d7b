"""GeoTiffOptions validate at construction with Python names; the CLI speaks flags; predict_geotiffs' policy;
inputs the GeoJSON step used to crash or mislabel (engineering CRS, a transform without CRS); NaN pixels;
a read-only output folder."""

import json
import os
import shutil
import time

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.transform import Affine

from conftest import RASTERIO_DATA
from smallseg.cli import main
from smallseg.errors import SmallsegError
from smallseg.pipeline.geotiff import GeoTiffOptions, OptionError, predict_geotiff, predict_geotiffs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRANSFORM = Affine(0.5, 0, 389_000, 0, -0.5, 5_819_000)
SITE_GRID = 'LOCAL_CS["Site grid",UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'  # an engineering CRS


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model("mobilenetv3", semantic_bias=[-0.5, 1.0, 0.5], classes=2, max_distance_px=6, tile_size_px=64,
                      input_scale=1 / 255, class_names=["car", "building"], norm_mean=[0.45] * 3,
                      norm_std=[0.25] * 3)


def _write_tif(path, image, crs="EPSG:32633", transform=TRANSFORM, nodata=None):
    c, h, w = image.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype=image.dtype, crs=crs,
                       transform=transform, nodata=nodata) as ds:
        ds.write(image)
    return path


def _image(seed, h=90, w=100):
    return np.random.default_rng(seed).integers(0, 255, (3, h, w), dtype=np.uint8)


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("values, message", [
    ({"overlap_px": -5}, "overlap_px -5: must be >= 0"),
    ({"tile_size_px": 8}, "tile_size_px 8: must be a whole number of at least 16 px"),
    ({"tile_size_px": 64, "overlap_px": 64}, "overlap_px 64: must be smaller than tile_size_px 64"),
    ({"batch_size": 0}, "batch_size 0: must be a whole number"),
    ({"decode_workers": 0}, "decode_workers 0: must be a whole number"),
    ({"min_score": 2}, "min_score 2: must be between 0 and 1"),
    ({"min_area_px": 0}, "min_area_px 0: must be a whole number of at least 1 px"),
    ({"formats": "tif,shp"}, "formats tif,shp: use a comma list of"),
    ({"compress": "jpeg"}, "compress jpeg: use one of deflate"),
    ({"bands": [0, 1]}, "bands 0,1: use 1-based band numbers"),
    ({"nodata": float("inf")}, "nodata inf: must be a finite number or NaN"),
    ({"decode": {"min_scroe": 0.2}}, "decode min_scroe: unknown decode setting"),
    ({"duplicate_ios": 0}, "duplicate_ios 0: must be in (0, 1]"),
    ({"device": "gpu7"}, "device gpu7: use auto, cpu, cuda or cuda:N"),
    ({"resume": "yes"}, "resume yes: must be True or False"),
])
def test_every_bad_option_is_refused_at_construction_with_its_python_name(values, message):
    with pytest.raises(OptionError) as err:
        GeoTiffOptions(**values)
    assert str(err.value).startswith(message) and "\n" not in str(err.value) and "--" not in str(err.value)
    assert err.value.option == message.split()[0]


def test_a_huge_tile_is_refused_in_one_line_before_anything_is_allocated():
    t = time.perf_counter()
    with pytest.raises(OptionError, match=r"^tile_size_px 1000000000: .* px per forward pass, about .* GB") as err:
        GeoTiffOptions(tile_size_px=1_000_000_000)
    assert time.perf_counter() - t < 0.5 and "\n" not in str(err.value)
    GeoTiffOptions(tile_size_px=4096, batch_size=4)  # 67 MP per pass: the largest that is allowed
    with pytest.raises(OptionError, match=r"^tile_size_px 4096: 5 tile\(s\) of that size"):
        GeoTiffOptions(tile_size_px=4096, batch_size=5)


def test_options_are_frozen_normalised_and_replace_revalidates():
    options = GeoTiffOptions(formats="TIF, csv,tif", bands=[3, 2, 1], compress="ZSTD", decode={"min_votes": 3})
    assert options.formats == ("tif", "csv") and options.bands == (3, 2, 1) and options.compress == "zstd"
    assert options.output_kinds == {"instances", "classes", "csv"}
    assert options.decode_overrides() == {"min_votes": 3}
    assert GeoTiffOptions(min_score=0.3, min_area_px=4).decode_overrides() == {"min_score": 0.3, "min_area_px": 4}
    with pytest.raises(AttributeError):
        options.tile_size_px = 128
    with pytest.raises(OptionError, match="^overlap_px -1"):
        options.replace(overlap_px=-1)


def test_bad_options_are_refused_before_the_model_is_loaded_or_the_folder_made(tmp_path):
    src = _write_tif(tmp_path / "a.tif", _image(0))
    # The model name does not exist either: the options are checked first.
    with pytest.raises(OptionError, match="^overlap_px -5"):
        predict_geotiff(src, tmp_path / "out", "no-such-model", overlap_px=-5)
    assert not (tmp_path / "out").exists()


def test_the_cli_names_flags_and_documents_its_exit_codes(tmp_path, capsys, model):
    from smallseg.models import save_checkpoint

    ckpt = save_checkpoint(model, tmp_path / "m.safetensors")
    src = _write_tif(tmp_path / "a.tif", _image(1))
    for flag, value, expected in (("--overlap", "-5", "--overlap -5: must be >= 0"),
                                  ("--tile", "1000000000", "--tile 1000000000: "),
                                  ("--min-area", "0", "--min-area 0: must be"),
                                  ("--formats", "tif,shp", "--formats tif,shp: use a comma list")):
        assert main(["tile-and-predict", str(src), "--out", str(tmp_path / "out"), "--model", str(ckpt), flag, value,
                     "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"smallseg tile-and-predict: error: {expected}" + err.split(expected, 1)[1]
        assert len(err.splitlines()) == 1 and "--resume" not in err and "_px" not in err
    # The model's own tile (64 px) with a user overlap that does not fit: refused with the flags' names.
    assert main(["tile-and-predict", str(src), "--out", str(tmp_path / "out"), "--model", str(ckpt), "--overlap",
                 "80", "--quiet"]) == 2
    assert "--overlap 80: must be smaller than the tile size 64 px; use a larger --tile" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        main(["tile-and-predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 every input done" in text and "1 some inputs failed" in text and "2 bad usage" in text


# ------------------------------------------------------------------------------------- the file loop


def test_predict_geotiffs_records_failures_and_goes_on(tmp_path, model):
    folder = tmp_path / "in"
    folder.mkdir()
    _write_tif(folder / "a_good.tif", _image(2))
    shutil.copy(RASTERIO_DATA / "corrupt.tif", folder / "b_corrupt.tif")
    _write_tif(folder / "c_good.tif", _image(3))
    seen = []
    options = GeoTiffOptions(formats="tif,csv", progress=False)
    batch = predict_geotiffs([folder], tmp_path / "out", model=model, options=options,
                             on_done=lambda path, outcome: seen.append(path.name))
    assert seen == ["a_good.tif", "b_corrupt.tif", "c_good.tif"]
    assert [r.input_path.name for r in batch.results] == ["a_good.tif", "c_good.tif"]
    assert [f.path.name for f in batch.failures] == ["b_corrupt.tif"] and batch.exit_code == 1
    failure = batch.failures[0]
    assert "b_corrupt.tif" in failure.message and "damaged" in failure.message and not failure.resumable
    assert batch.summary() == "2 of 3 inputs done, 1 failed"
    # Nothing done at all: exit code 2; the same failure raised with on_error="raise".
    only_bad = predict_geotiffs([folder / "b_corrupt.tif"], tmp_path / "out2", model=model, options=options)
    assert only_bad.exit_code == 2 and not only_bad.results
    with pytest.raises(SmallsegError, match="damaged"):
        predict_geotiffs([folder / "b_corrupt.tif"], tmp_path / "out2", model=model, options=options,
                         on_error="raise")
    # A problem with the batch as a whole is raised before any input runs.
    with pytest.raises(SmallsegError, match="no checkpoint file there"):
        predict_geotiffs([folder], tmp_path / "out3", model=str(tmp_path / "missing.safetensors"), options=options)
    assert not (tmp_path / "out3").exists()


# ------------------------------------------------------------------------------- CRS, transform, NaN


def test_an_engineering_crs_writes_geojson_in_its_own_coordinates_and_the_batch_goes_on(tmp_path, model):
    local = _write_tif(tmp_path / "a_site.tif", _image(4), crs=CRS.from_wkt(SITE_GRID),
                       transform=Affine(0.5, 0, 1000, 0, -0.5, 2000))
    utm = _write_tif(tmp_path / "b_utm.tif", _image(5))
    batch = predict_geotiffs([local, utm], tmp_path / "out", model=model, options=GeoTiffOptions(progress=False))
    assert batch.exit_code == 0 and len(batch.results) == 2, [f.message for f in batch.failures]
    site = batch.results[0]
    doc = json.loads(site.paths["geojson"].read_text())
    assert "cannot be converted to WGS 84" in doc["smallseg_coordinates"] and len(doc["features"]) == site.n_objects > 0
    assert sum("cannot be converted to WGS 84" in w for w in site.run["warnings"]) == 1
    # Not reprojected: the GeoJSON's polygons are the GeoPackage's (which records the local CRS), rounded.
    _, _, wkb, fields = pyogrio.raw.read(site.paths["gpkg"], columns=["id"])
    by_id = {f["id"]: shapely.geometry.shape(f["geometry"]) for f in doc["features"]}
    for geom, obj_id in zip(shapely.from_wkb(wkb), fields[0].tolist()):
        assert by_id[obj_id].equals_exact(geom, 1e-6)
    assert 1000 <= min(g.bounds[0] for g in by_id.values()) and max(g.bounds[2] for g in by_id.values()) <= 1050
    # The UTM scene after it is RFC 7946 as always.
    assert "smallseg_coordinates" not in json.loads(batch.results[1].paths["geojson"].read_text())


def test_a_transform_without_crs_warns_once_and_labels_the_geojson(tmp_path, model):
    src = _write_tif(tmp_path / "nocrs.tif", _image(6), crs=None)
    result = predict_geotiff(src, tmp_path / "out", model, formats="geojson,gpkg,csv", progress=False)
    assert sum("no CRS" in w for w in result.run["warnings"]) == 1
    doc = json.loads(result.paths["geojson"].read_text())
    assert doc["smallseg_coordinates"].startswith("map coordinates of the source raster's transform")
    assert "pixel grid" not in doc["smallseg_coordinates"] and doc["features"]
    x0, y0, x1, y1 = shapely.geometry.shape(doc["features"][0]["geometry"]).bounds
    assert 389_000 <= x0 < x1 <= 389_050 and 5_818_955 <= y0 < y1 <= 5_819_000  # the transform's coordinates
    assert doc["features"][0]["properties"]["area_m2"] is None  # no CRS: no metres


def test_nan_pixels_of_a_float_band_without_nodata_are_nodata(tmp_path, model):
    image = (_image(7).astype(np.float32) / 255.0)
    image[:, 20:50, 30:70] = np.nan  # a hole in every band
    image[1, 80:, :] = np.nan  # one band only: the pixel is unusable all the same
    src = _write_tif(tmp_path / "float.tif", image)  # no nodata tag
    with rasterio.open(src) as ds:
        assert ds.nodata is None
    result = predict_geotiff(src, tmp_path / "out", model, formats="tif", progress=False)
    nan = np.isnan(image).any(axis=0)
    with rasterio.open(result.paths["classes"]) as ds:
        classes = ds.read(1)
    with rasterio.open(result.paths["instances"]) as ds:
        labels = ds.read(1)
    np.testing.assert_array_equal(classes == 255, nan)
    assert not labels[nan].any() and result.run["counts"]["valid_px"] == int((~nan).sum())
    warned = [w for w in result.run["warnings"] if "NaN" in w]
    assert len(warned) == 1 and f"{int(nan.sum())} pixels are NaN" in warned[0]


def test_a_read_only_output_folder_is_one_line_without_a_resume_hint(tmp_path, capsys, model):
    from smallseg.models import save_checkpoint

    ckpt = save_checkpoint(model, tmp_path / "m.safetensors")
    src = _write_tif(tmp_path / "a.tif", _image(8))
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        probe = out / "probe"
        try:
            probe.touch()  # root ignores the mode: use a folder no one may write to instead
            probe.unlink()
            out = "/proc/self"
        except PermissionError:
            pass
        assert main(["tile-and-predict", str(src), "--out", str(out), "--model", str(ckpt), "--quiet"]) == 2
    finally:
        (tmp_path / "ro").chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write there" in err and str(out) in err
    assert "--resume" not in err and "Traceback" not in err
    assert os.listdir(tmp_path / "ro") == []
