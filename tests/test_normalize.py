"""One input-normalisation model (smallseg.normalize): validation, fit/apply, legacy equality, any dtype."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
import tifffile
from conftest import DATA_DIR, RASTERIO_DATA

from smallseg.errors import SmallsegError
from smallseg.io.medical import IntensityPreset
from smallseg.models.checkpoint import read_checkpoint_config
from smallseg.normalize import (
    CT_WINDOWS,
    MICROSCOPY,
    Normalization,
    NormStats,
    normalization_for,
    sample_raster,
)
from smallseg.train.data import MEDICAL_PRESETS

WEIGHTS = DATA_DIR.parent.parent / "smallseg" / "weights"


@pytest.mark.parametrize("norm", [
    Normalization.fixed(1 / 255, [0.5, 0.4, 0.3], [0.2, 0.2, 0.1]),
    Normalization.percentile(1, 99.8, clip=False, mean=[0.4], std=[0.3], name="p"),
    Normalization.window((-600, 1500), (40, 400), mean=[0.1, 0.2], std=[1.0, 2.0]),
    Normalization(kind="none"),
])
def test_to_dict_is_plain_json_and_round_trips(norm):
    data = json.loads(json.dumps(norm.to_dict()))
    assert Normalization.from_dict(data) == norm
    assert data["kind"] == norm.kind and set(data) <= {"kind", "scale", "lo", "hi", "clip", "windows", "mean",
                                                       "std", "name"}


@pytest.mark.parametrize("data, words", [
    ({"kind": "zscore"}, "unknown kind"),
    ({"kind": "percentile", "lo": 1, "hi": 99, "module": "os"}, "unknown: module"),
    ({"kind": "fixed", "scale": float("nan")}, "finite"),
    ({"kind": "fixed", "scale": "1/255"}, "number"),
    ({"kind": "fixed", "scale": True}, "number"),
    ({"kind": "fixed", "scale": 0}, "> 0"),
    ({"kind": "percentile", "lo": 99, "hi": 1}, "lo < hi"),
    ({"kind": "percentile", "lo": 1, "hi": 101}, "hi <= 100"),
    ({"kind": "fixed", "mean": [0.5]}, "both mean and std"),
    ({"kind": "fixed", "mean": [0.5] * 65, "std": [1.0] * 65}, "1 to 64"),
    ({"kind": "fixed", "mean": [0.5], "std": [0.0]}, "std values must be > 0"),
    ({"kind": "fixed", "mean": [0.5, 0.1], "std": [1.0]}, "2 mean values but 1 std"),
    ({"kind": "window"}, "at least one"),
    ({"kind": "window", "windows": [[-600, -5]]}, "width must be > 0"),
    ({"kind": "window", "windows": [[-600, 1500]] * 9}, "at most 8"),
    ({"kind": "window", "windows": "lung"}, "pairs"),
    ({"kind": "window", "windows": [[1, 2, 3]]}, "[centre, width]"),
    ({"kind": "none", "mean": [0.0], "std": [1.0]}, "unknown: mean, std"),
    ({"kind": "percentile", "clip": "yes"}, "true or false"),
    ({"kind": "fixed", "name": "x" * 65}, "64 characters"),
    (["percentile"], "expected a mapping"),
])
def test_from_dict_refuses_what_a_checkpoint_must_not_carry(data, words):
    with pytest.raises(SmallsegError) as info:
        Normalization.from_dict(data)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_shipped_remote_sensing_checkpoint_gets_exactly_todays_input_for_a_uint8_tile():
    config = read_checkpoint_config(WEIGHTS / "remote-sensing.safetensors")
    with rasterio.open(RASTERIO_DATA / "RGB.byte.tif") as src:
        tile = src.read(window=((300, 556), (300, 556)))  # real uint8 RGB
    norm = normalization_for(config)
    assert norm.kind == "fixed" and norm.scale == config.input_scale
    got = norm.apply(tile, norm.fit(tile))
    assert got.dtype == np.float32 and np.array_equal(got, config.normalise(tile))


def test_shipped_medical_checkpoint_gets_exactly_todays_input_with_the_microscopy_preset():
    config = read_checkpoint_config(WEIGHTS / "medical.safetensors")
    image = tifffile.imread(DATA_DIR / "dsb2018_nuclei_image.tif")  # real uint16 DSB2018 nuclei
    # Today's code path (tests/test_default_models.py, benchmarks/eval_default_models.py):
    preset = IntensityPreset.from_dict(MEDICAL_PRESETS["microscopy"]).resolve(image)
    today = config.normalise((preset.apply(image) / np.float32(config.input_scale))[None])
    norm = normalization_for(config, legacy_preset=MEDICAL_PRESETS["microscopy"])
    assert norm.kind == "percentile" and (norm.lo, norm.hi) == (1.0, 99.5) and norm.mean == tuple(config.norm_mean)
    stats = norm.fit(image)
    assert stats.lo == (preset.low,) and stats.hi == (preset.high,)
    assert np.array_equal(norm.apply(image[None], stats), today)
    # The same declared explicitly, as a checkpoint will store it:
    declared = MICROSCOPY.with_standardisation(config.norm_mean, config.norm_std)
    assert np.array_equal(declared.apply(image[None], declared.fit(image)), today)


def test_ct_window_equals_todays_lung_preset():
    config = read_checkpoint_config(WEIGHTS / "medical.safetensors")
    hu = np.random.default_rng(0).integers(-1500, 1200, (1, 64, 64)).astype(np.int16)
    lung = IntensityPreset.from_dict(MEDICAL_PRESETS["CT"])
    today = config.normalise((lung.apply(hu[0]) / np.float32(config.input_scale))[None])
    norm = normalization_for(config, "CT", legacy_preset=lung)
    assert norm.kind == "window" and norm.windows == ((-600.0, 1500.0),)
    assert np.array_equal(norm.apply(hu, norm.fit(hu)), today)
    np.testing.assert_allclose(CT_WINDOWS["lung"].apply(np.array([[[-1350, -600, 150, 3000]]], np.int16))[0, 0],
                               [0.0, 0.5, 1.0, 1.0])


def test_declared_normalization_wins_over_legacy_fields_and_by_modality_over_default():
    config = read_checkpoint_config(WEIGHTS / "medical.safetensors")
    config.training = {**config.training, "normalization": MICROSCOPY.to_dict(),
                       "normalization_by_modality": {"ct": CT_WINDOWS["lung"].to_dict()}}
    assert normalization_for(config) == MICROSCOPY
    assert normalization_for(config, "CT") == CT_WINDOWS["lung"]
    assert normalization_for(config, "MR") == MICROSCOPY
    config.training["normalization"] = {"kind": "percentile", "lo": 1, "hi": 99, "eval": "x"}
    with pytest.raises(SmallsegError, match="unknown: eval"):
        normalization_for(config)


def test_several_windows_become_channels():
    hu = np.array([[[-1350, 40, 240]]], np.int16)
    norm = Normalization.window((-600, 1500), (40, 400))
    out = norm.apply(hu)
    assert out.shape == (2, 1, 3) and norm.out_channels(1) == 2
    np.testing.assert_allclose(out[0, 0], [0.0, 1390 / 1500, 1.0], rtol=1e-6)  # 240 HU clips at 150
    np.testing.assert_allclose(out[1, 0], [0.0, 0.5, 1.0])
    with pytest.raises(SmallsegError, match="need a 1-band image"):
        norm.apply(np.zeros((3, 4, 4), np.int16))


@pytest.mark.parametrize("dtype, top", [("uint8", 255), ("uint16", 4095), ("uint16", 2047), ("int16", 3000),
                                        ("float32", 1.0)])
def test_percentile_maps_any_dtype_to_unit_range(dtype, top):
    rng = np.random.default_rng(1)
    x = (rng.random((2, 120, 90)) * top).astype(dtype)
    if dtype == "int16":
        x = x - np.int16(1000)  # HU-like negative values
    norm = Normalization.percentile(1, 99)
    stats = norm.fit(x)
    out = norm.apply(x, stats)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    # 98 % of the pixels lie strictly inside the two percentiles
    inside = ((out > 0) & (out < 1)).mean()
    assert 0.96 < inside < 0.99
    np.testing.assert_allclose(stats.lo, np.percentile(x.reshape(2, -1).astype(np.float64), 1, axis=1))


def test_fit_excludes_masked_nodata_and_nan_pixels():
    rng = np.random.default_rng(2)
    band = rng.normal(100.0, 10.0, (80, 80)).astype(np.float32)
    clean = band.copy()
    band[:5] = np.nan
    band[5:10] = -9999.0  # nodata
    band[10:20] = 1e6  # e.g. a saturated region outside the footprint
    valid = np.ones(band.shape, bool)
    valid[10:20] = False
    norm = Normalization.percentile(1, 99.8)
    stats = norm.fit(band, valid, nodata=-9999.0)
    expected = np.percentile(clean[20:].astype(np.float64), [1, 99.8])
    assert stats.lo[0] == pytest.approx(expected[0]) and stats.hi[0] == pytest.approx(expected[1])
    assert stats.valid_fraction == pytest.approx(60 / 80) and stats.reliable
    out = norm.apply(band[None], stats, valid=valid)
    assert np.isfinite(out).all() and (out[0, :5] == 0).all() and (out[0, 10:20] == 0).all()


def test_tiles_normalised_with_scene_stats_equal_the_whole_scene():
    x = np.random.default_rng(3).integers(0, 4096, (3, 300, 200)).astype(np.uint16)
    norm = Normalization.percentile(2, 98, mean=[0.5] * 3, std=[0.25] * 3)
    stats = norm.fit(x)
    whole = norm.apply(x, stats)
    tiled = np.concatenate([norm.apply(x[:, r:r + 128], stats) for r in range(0, 300, 128)], axis=1)
    assert np.array_equal(whole, tiled)
    with pytest.raises(SmallsegError, match="needs stats"):
        norm.apply(x)


def test_large_samples_are_subsampled_with_a_stride():
    x = np.random.default_rng(4).integers(0, 1000, (1, 1000, 1000)).astype(np.uint16)
    stats = Normalization.percentile(1, 99).fit(x, max_pixels=10_000)
    assert stats.sampled_pixels == 100 * 100
    np.testing.assert_allclose(stats.lo, np.percentile(x[0, ::10, ::10], 1))


def test_constant_and_empty_bands_are_degenerate_not_a_division_by_zero():
    x = np.random.default_rng(5).integers(0, 255, (3, 40, 40)).astype(np.float32)
    x[1] = 77.0
    x[2] = np.nan
    for norm in (Normalization.percentile(1, 99.8), Normalization.fixed(1 / 255)):
        stats = norm.fit(x)
        assert stats.degenerate == (False, True, True) and not stats.reliable
        assert "band 2 is constant (77" in stats.reason and "band 3 has no valid pixels" in stats.reason
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no divide-by-zero / invalid-value warning either
            out = norm.apply(x, stats)
        assert np.isfinite(out).all()
        if norm.kind == "percentile":
            assert (out[1] == 0).all() and (out[2] == 0).all()
        assert NormStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
        assert json.loads(json.dumps(stats.to_dict()))["reliable"] is False


def test_real_rgba_uint16_file_is_flagged_degenerate():
    # rasterio's RGBA.uint16.tif holds 10000 in every colour pixel: a normalisation can only say so.
    with rasterio.open(RASTERIO_DATA / "RGBA.uint16.tif") as src:
        sample, valid = sample_raster(src, (3, 2, 1), alpha_index=4, max_pixels=50_000)
    assert sample.dtype == np.uint16 and sample.shape[0] == 3 and 0 < valid.mean() < 1
    stats = Normalization.percentile(1, 99.8).fit(sample, valid)
    assert stats.degenerate == (True, True, True) and "constant (10000" in stats.reason


def test_stats_from_dict_refuses_garbage():
    with pytest.raises(SmallsegError, match="unknown keys"):
        NormStats.from_dict({"kind": "percentile", "lo": [1], "hi": [2], "exec": 1})
    with pytest.raises(SmallsegError, match="finite"):
        NormStats.from_dict({"kind": "percentile", "lo": [float("inf")], "hi": [2.0], "degenerate": [False],
                             "reasons": [""], "sampled_pixels": 4})


def _write(path, data, interp=None, nodata=None):
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype, crs="EPSG:32612", transform=Affine(0.5, 0, 0, 0, -0.5, 0),
                   nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if interp is not None:
            dst.colorinterp = interp
    return path


def _model_input(path, norm, model_bands=("red", "green", "blue")):
    """What a pipeline will do: plan bands by meaning, fit on a decimated read, apply to the full read."""
    from smallseg.bands import plan_for_dataset

    with rasterio.open(path) as src:
        plan = plan_for_dataset(src, model_bands)
        sample, valid = sample_raster(src, plan.indices, alpha_index=plan.alpha_index, max_pixels=40_000)
        stats = norm.fit(sample, valid)
        full = src.read(list(plan.indices))
        full_valid = np.all([src.read_masks(i) > 0 for i in set(plan.indices)], axis=0)
    return norm.apply(full, stats, valid=full_valid), full_valid, plan


def test_same_scene_as_uint8_uint16_and_grey_gives_the_same_model_input(tmp_path):
    from rasterio.enums import ColorInterp as CI

    with rasterio.open(RASTERIO_DATA / "RGB.byte.tif") as src:  # real Landsat RGB, nodata 0 around the footprint
        rgb = src.read(window=((200, 456), (200, 520)))
    rng = np.random.default_rng(6)
    noisy = np.clip(rgb.astype(np.int32) * 257 + rng.integers(-40, 41, rgb.shape), 1, 65535)
    as16 = np.where(rgb > 0, noisy, 0).astype(np.uint16)
    grey = np.round(rgb.astype(np.float64).mean(0, keepdims=True)).astype(np.uint8)
    p8 = _write(tmp_path / "u8.tif", rgb, [CI.red, CI.green, CI.blue], nodata=0)
    p16 = _write(tmp_path / "u16.tif", as16, [CI.red, CI.green, CI.blue], nodata=0)
    p1 = _write(tmp_path / "grey.tif", grey, [CI.gray], nodata=0)
    pg3 = _write(tmp_path / "grey3.tif", np.repeat(grey, 3, 0), [CI.red, CI.green, CI.blue], nodata=0)
    norm = Normalization.percentile(1, 99.8, mean=[0.45, 0.45, 0.43], std=[0.15, 0.12, 0.14])
    x8, v8, _ = _model_input(p8, norm)
    x16, v16, _ = _model_input(p16, norm)
    assert np.array_equal(v8, v16) and 0.5 < v8.mean() < 1.0
    diff = np.abs(x8 - x16)[:, v8]
    # noise of +-40 on x257 data is 0.16 of one 8-bit step; percentiles on the two agree as closely
    assert diff.max() < 0.05 and diff.mean() < 0.01
    x1, _, plan = _model_input(p1, norm)
    xg3, _, _ = _model_input(pg3, norm)
    assert plan.replicate_grey and plan.indices == (1, 1, 1)
    assert np.array_equal(x1, xg3)
