"""Real inputs as users have them (#13): the intensity and band model reaches every entry point.

The same pixels in another data type, band order or band count give the same objects; a constant band is
reported, not presented as a result; the CLI and the Python API agree on the real DSB2018 image.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
from rasterio.enums import ColorInterp
from rasterio.transform import Affine

from smallseg.cli import main
from smallseg.instances import Instances
from smallseg.data.remote_sensing import make_remote_sensing_scene
from smallseg.metrics.multi import evaluate_images
from smallseg.models.registry import load_model
from smallseg.normalize import CT_WINDOWS, MICROSCOPY, Normalization
from smallseg.pipeline.array import predict_array

DATA = Path(__file__).parent / "data"
TRANSFORM = Affine(0.4, 0, 500_000, 0, -0.4, 5_800_000)  # 0.4 m: inside the remote-sensing model's range


def _cli(*args):
    return main(["tile-and-predict", *map(str, args), "--quiet"])


def _write(path, bands_chw, interp=None, mask=None, crs="EPSG:32633", transform=TRANSFORM):
    """A GeoTIFF of (C, H, W) pixels with the given colour interpretation and optional internal mask."""
    c, h, w = bands_chw.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype=bands_chw.dtype.name,
                       crs=crs, transform=transform, photometric="MINISBLACK" if c != 3 else "RGB") as ds:
        ds.write(bands_chw)
        if interp is not None:
            ds.colorinterp = interp
        if mask is not None:
            ds.write_mask(mask.astype(np.uint8) * 255)
    return path


def _labels(out: Path, stem: str) -> np.ndarray:
    with rasterio.open(out / f"{stem}.instances.tif") as ds:
        return ds.read(1)


def _run(out: Path, stem: str) -> dict:
    return json.loads((out / f"{stem}.run.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def scene():
    """A 256 x 256 synthetic aerial scene (uint8 RGB, cars and buildings) the shipped model finds objects in."""
    return make_remote_sensing_scene(256, 256, seed=123_461, pixel_size_m=0.4)


# ------------------------------------------------------------------------------------ microscopy: CLI == API


def test_dsb2018_image_through_the_cli_gives_the_api_objects_and_a_real_f1(tmp_path, capsys):
    image = tifffile.imread(DATA / "dsb2018_nuclei_image.tif")  # uint16, 1 band, no georeferencing
    gt = tifffile.imread(DATA / "dsb2018_nuclei_labels.tif").astype(np.int64)
    assert _cli(DATA / "dsb2018_nuclei_image.tif", "--out", tmp_path, "--model", "medical") == 0
    err = capsys.readouterr().err
    assert "note:" in err and "pixel units" in err and "warning" not in err
    via_cli = _labels(tmp_path, "dsb2018_nuclei_image")
    model = load_model("medical")
    via_api = predict_array(image, model)
    assert np.array_equal(via_cli, via_api.labels)
    f1 = evaluate_images([(gt, (gt > 0).astype(np.int32), via_api)]).metrics["F1"]
    assert f1 > 0.5, f1  # 0.575 measured; 0 before the checkpoint declared its percentile normalisation
    run = _run(tmp_path, "dsb2018_nuclei_image")
    applied = run["input"]["normalization"]
    assert applied["applied"]["kind"] == "percentile" and applied["applied"]["hi"] == 99.5
    # The fitted values are the image's own percentiles (an independent computation).
    lo, hi = np.percentile(image.astype(np.float64), [1.0, 99.5])
    assert applied["stats"]["lo"] == [pytest.approx(lo)] and applied["stats"]["hi"] == [pytest.approx(hi)]
    assert run["reliable"] is True


def test_shipped_checkpoints_declare_their_input_and_keep_their_weights():
    medical = load_model("medical").config
    from smallseg.normalize import normalization_for

    assert normalization_for(medical) == MICROSCOPY.with_standardisation(medical.norm_mean, medical.norm_std)
    ct = normalization_for(medical, "CT")
    assert ct.kind == "window" and ct.windows == CT_WINDOWS["lung_nodule"].windows and ct.mean == tuple(medical.norm_mean)
    assert medical.training["band_names"] == ["grey"]
    rs = load_model("remote-sensing").config
    assert normalization_for(rs) == Normalization.fixed(rs.input_scale, rs.norm_mean, rs.norm_std)
    assert rs.training["band_names"] == ["red", "green", "blue"]
    # A legacy checkpoint (nothing declared) still means x * input_scale, then mean/std.
    legacy = type("Legacy", (), {"training": {}, "input_scale": 1 / 255, "norm_mean": [0.5], "norm_std": [0.2]})()
    assert normalization_for(legacy) == Normalization.fixed(1 / 255, [0.5], [0.2])


# ----------------------------------------------------------------------- one scene, several data types / bands


def test_uint8_uint16_and_grey_copies_of_one_scene_give_the_same_objects(tmp_path, scene):
    rgb = np.ascontiguousarray(scene.image)  # (3, H, W) uint8
    rng = np.random.default_rng(0)
    # 16-bit: x 257 plus noise below one 8-bit grey level, clipped at the top of the range
    u16 = np.minimum(rgb.astype(np.int32) * 257 + rng.integers(0, 64, rgb.shape), 65535).astype(np.uint16)
    _write(tmp_path / "u8.tif", rgb)
    _write(tmp_path / "u16.tif", u16)
    for stem in ("u8", "u16"):
        assert _cli(tmp_path / f"{stem}.tif", "--out", tmp_path / stem, "--model", "remote-sensing",
                    "--normalize", "percentile") == 0
    a, b = _labels(tmp_path / "u8", "u8"), _labels(tmp_path / "u16", "u16")
    assert a.max() > 5  # the model finds objects here
    metrics = evaluate_images([(a.astype(np.int64), (a > 0).astype(np.int32),
                                Instances.from_labels(b.astype(np.int64)))]).metrics
    assert metrics["F1"] >= 0.9, metrics  # the noise moves a few objects across the decoder's thresholds
    assert abs(int(a.max()) - int(b.max())) <= max(2, int(a.max()) // 10)
    # Without the noise, 16-bit data is the 8-bit scene exactly.
    _write(tmp_path / "x257.tif", (rgb.astype(np.uint16) * 257))
    assert _cli(tmp_path / "x257.tif", "--out", tmp_path / "x257", "--model", "remote-sensing",
                "--normalize", "percentile") == 0
    assert np.array_equal(_labels(tmp_path / "x257", "x257"), a)
    # The recorded percentiles are 257 x the 8-bit ones (give or take the noise).
    s8 = _run(tmp_path / "u8", "u8")["input"]["normalization"]["stats"]
    s16 = _run(tmp_path / "u16", "u16")["input"]["normalization"]["stats"]
    assert np.allclose(np.array(s16["hi"]) / 257, s8["hi"], atol=0.3)

    # Without --normalize, 16-bit data to the 8-bit model gets percentiles too (with a note), not x / 255.
    assert _cli(tmp_path / "u16.tif", "--out", tmp_path / "auto", "--model", "remote-sensing") == 0
    auto = _run(tmp_path / "auto", "u16")
    assert auto["input"]["normalization"]["applied"]["kind"] == "percentile"
    assert any("8-bit" in n for n in auto["notes"])
    assert np.array_equal(_labels(tmp_path / "auto", "u16"), b)  # the same percentiles as asked for

    # One grey band == that band read three times (replicated, with a note).
    grey = rgb.mean(axis=0).round().astype(np.uint8)[None]
    _write(tmp_path / "grey.tif", grey, interp=[ColorInterp.gray])
    _write(tmp_path / "grey3.tif", np.repeat(grey, 3, axis=0))
    assert _cli(tmp_path / "grey.tif", "--out", tmp_path / "g1", "--model", "remote-sensing") == 0
    assert _cli(tmp_path / "grey3.tif", "--out", tmp_path / "g3", "--model", "remote-sensing") == 0
    assert np.array_equal(_labels(tmp_path / "g1", "grey"), _labels(tmp_path / "g3", "grey3"))
    assert _run(tmp_path / "g1", "grey")["input"]["band_plan"]["replicate_grey"] is True


def test_a_bgra_file_is_its_rgb_reordering_with_the_alpha_as_the_valid_mask(tmp_path, scene, capsys):
    rgb = np.ascontiguousarray(scene.image)
    alpha = np.full(rgb.shape[1:], 255, np.uint8)
    alpha[:, :100] = 0  # the left part is transparent: no objects may come from it
    bgra = np.concatenate([rgb[::-1], alpha[None]])
    _write(tmp_path / "bgra.tif", bgra, interp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red,
                                                  ColorInterp.alpha])
    _write(tmp_path / "rgb.tif", rgb, mask=alpha > 0)
    assert _cli(tmp_path / "bgra.tif", "--out", tmp_path / "a", "--model", "remote-sensing") == 0
    err = capsys.readouterr().err
    assert "note: bgra.tif: bands: file band 3 (red) -> red" in err and "band 4 (alpha) is the valid mask" in err
    assert _cli(tmp_path / "rgb.tif", "--out", tmp_path / "b", "--model", "remote-sensing") == 0
    from_bgra, from_rgb = _labels(tmp_path / "a", "bgra"), _labels(tmp_path / "b", "rgb")
    assert from_bgra.max() > 3 and np.array_equal(from_bgra, from_rgb)
    assert not from_bgra[:, :100].any()
    # The same through the API with the mask given explicitly.
    api = predict_array(rgb, load_model("remote-sensing"), valid_mask=alpha > 0)
    assert np.array_equal(api.labels, from_rgb)
    run = _run(tmp_path / "a", "bgra")
    assert run["input"]["bands"] == [3, 2, 1] and run["input"]["band_plan"]["alpha_index"] == 4
    # Bands by name give the same plan; a name the file does not carry is one line naming its bands.
    assert _cli(tmp_path / "bgra.tif", "--out", tmp_path / "n", "--model", "remote-sensing",
                "--bands", "red,green,blue") == 0
    assert np.array_equal(_labels(tmp_path / "n", "bgra"), from_bgra)
    capsys.readouterr()
    assert _cli(tmp_path / "bgra.tif", "--out", tmp_path / "x", "--model", "remote-sensing", "--bands", "nir,red,green") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'nir'" in err and "4 (alpha)" in err and "--bands" in err


# ------------------------------------------------------------------------------------------- honest verdicts


def test_a_constant_band_is_not_reliable_and_strict_refuses_it(tmp_path, scene, capsys):
    rgb = np.ascontiguousarray(scene.image).copy()
    rgb[1] = 77
    _write(tmp_path / "flat.tif", rgb)
    assert _cli(tmp_path / "flat.tif", "--out", tmp_path / "o", "--model", "remote-sensing") == 0
    captured = capsys.readouterr()
    assert "NOT RELIABLE" in captured.out and "band 2 is constant (77" in captured.out
    run = _run(tmp_path / "o", "flat")
    assert run["reliable"] is False and "band 2 is constant" in run["reliable_reason"]
    assert any("not reliable" in w for w in run["warnings"])
    assert _cli(tmp_path / "flat.tif", "--out", tmp_path / "s", "--model", "remote-sensing", "--strict") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "strict" in err and "band 2 is constant" in err
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_a_nan_filled_float_band_is_not_reliable(tmp_path, scene):
    rgb = scene.image.astype(np.float32) / 255
    rgb[2] = np.nan
    _write(tmp_path / "nan.tif", rgb)
    assert _cli(tmp_path / "nan.tif", "--out", tmp_path / "o", "--model", "remote-sensing", "--formats", "json") == 0
    run = _run(tmp_path / "o", "nan")
    # NaN is nodata in every band of the pixel: nothing valid, said so; never a normal-looking result.
    assert run["counts"]["objects"] == 0 and run["counts"]["valid_px"] == 0


def test_resume_checks_the_normalisation(tmp_path, scene):
    from smallseg.errors import SmallsegError
    from smallseg.pipeline.geotiff import predict_geotiff

    src = _write(tmp_path / "s.tif", np.ascontiguousarray(scene.image))
    first = predict_geotiff(src, tmp_path / "o", "remote-sensing", formats="json", progress=False,
                            normalize="percentile")
    assert first.run["resume_key"]["normalization"]["kind"] == "percentile"
    with pytest.raises(SmallsegError, match=r"normalization(, norm_stats)? differ"):
        predict_geotiff(src, tmp_path / "o", "remote-sensing", formats="json", progress=False,
                        normalize="percentile", percentiles=(2, 98), resume=True)


def test_bad_normalize_flags_are_one_line(tmp_path, capsys):
    src = DATA / "dsb2018_nuclei_image.tif"
    assert _cli(src, "--out", tmp_path, "--model", "medical", "--percentiles", "5") == 2
    assert "--percentiles 5: give LO,HI" in capsys.readouterr().err
    assert _cli(src, "--out", tmp_path, "--model", "medical", "--percentiles", "60,40") == 2
    assert "--percentiles 60.0,40.0: give two numbers LO,HI" in capsys.readouterr().err
    assert _cli(src, "--out", tmp_path, "--model", "medical", "--normalize", "fixed", "--percentiles", "1,99") == 2
    assert "--percentiles" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- volumes


def test_predict_volume_uses_the_declared_ct_window_fitted_once(tmp_path):
    from smallseg.data.medical import make_ct_volume
    from smallseg.io.medical import Volume
    from smallseg.pipeline.volume import choose_volume_normalization

    import SimpleITK as sitk

    hu = sitk.GetArrayFromImage(make_ct_volume((64, 64, 4), seed=123_502).image)  # (Z, Y, X) int16
    volume = Volume(array=hu, spacing_zyx_mm=(2.0, 1.0, 1.0), origin_lps_mm=(0.0, 0.0, 0.0),
                    direction_lps=tuple(np.eye(3).ravel()), modality="CT")
    model = load_model("medical")
    norm, stats, window, source = choose_volume_normalization(volume, model)
    assert source == "checkpoint" and norm.windows == ((-600.0, 1500.0),) and stats.reliable
    assert window.low == -1350.0 and window.high == 150.0
    # A percentile request is fitted on the whole volume (an independent computation of the percentiles).
    norm, stats, _, source = choose_volume_normalization(volume, model, normalize="percentile",
                                                         percentiles=(2.0, 98.0))
    lo, hi = np.percentile(hu.astype(np.float64), [2.0, 98.0])
    assert source == "argument" and stats.lo[0] == pytest.approx(lo) and stats.hi[0] == pytest.approx(hi)


def test_reader_sample_windows_and_whole_read_follow_the_valid_mask(tmp_path):
    from smallseg.io.geotiff import open_raster

    rng = np.random.default_rng(3)
    pixels = rng.integers(1, 255, (1, 200, 200), dtype=np.uint8)
    pixels[:, :, :50] = 0  # nodata on the left quarter
    src = tmp_path / "nd.tif"
    with rasterio.open(src, "w", driver="GTiff", width=200, height=200, count=1, dtype="uint8", nodata=0,
                       crs="EPSG:32633", transform=TRANSFORM) as ds:
        ds.write(pixels)
    with open_raster(src) as reader:
        whole, valid = reader.sample(windows=16, whole_up_to=40_000)  # small enough: read whole
        assert np.array_equal(whole, pixels) and np.array_equal(valid, pixels[0] > 0)
        part, pvalid = reader.sample(max_pixels=10_000, windows=16)  # 16 windows of 25 px side by side
        assert part.shape == (1, 25, 400) and pvalid.shape == (25, 400)
        assert np.array_equal(pvalid, part[0] > 0)  # the nodata rule, window by window
        assert 0.6 < pvalid.mean() < 0.9  # about the scene's 75 % valid
        assert np.array_equal(part[0, :, :25], pixels[0, :25, :25])  # the first window is the top-left corner
