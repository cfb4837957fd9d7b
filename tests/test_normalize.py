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


# ---- training applies the same function ------------------------------------------------------------------


def _identity_augment(crop_size):
    from smallseg.train.augment import AugmentConfig

    return AugmentConfig(crop_size=crop_size, scale_range=(1.0, 1.0), flips=False, rotate90=False, brightness=0.0,
                         contrast=0.0, gamma_range=(100.0, 100.0), noise_std=0.0, blur_p=0.0, mosaic_p=0.0)


def test_training_crops_are_the_inference_input_of_the_same_pixels(tiny_model):
    from smallseg.train.data import CropDataset, LabeledImage

    rng = np.random.default_rng(7)
    image = rng.integers(0, 4096, (40, 44, 3)).astype(np.uint16)  # 12-bit data, every value unique enough
    instances = np.zeros((40, 44), np.int32)
    instances[10:20, 10:20] = 1
    norm = Normalization.percentile(1, 99.8, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])
    model = tiny_model(in_channels=3)
    model.config.training = {"normalization": norm.to_dict()}
    dataset = CropDataset([LabeledImage(image, instances, None, "x")], model.config, _identity_augment(32),
                          samples_per_epoch=3, seed=1)
    whole = norm.apply(np.moveaxis(image, -1, 0), norm.fit(np.moveaxis(image, -1, 0)))  # what inference sees
    for k in range(3):
        x = dataset[k][0].numpy()
        hits = [(y, x0) for y in range(40 - 32 + 1) for x0 in range(44 - 32 + 1)
                if np.allclose(whole[:, y:y + 32, x0:x0 + 32], x, rtol=0, atol=1e-6)]
        assert len(hits) == 1  # the crop is exactly the inference input at one place


def test_legacy_medical_training_input_is_reproduced_from_raw_sources():
    from smallseg.train.data import normalized_input, synthetic_images

    config = read_checkpoint_config(WEIGHTS / "medical.safetensors")
    for kind, options in (("nuclei", {}), ("ct", {"slices": 12})):
        raw = synthetic_images(kind, count=1, size=64, seed=3, raw=True, **options)
        mapped = synthetic_images(kind, count=1, size=64, seed=3, **options)
        assert raw[0].image.dtype != np.float32 and mapped[0].image.dtype == np.float32
        assert raw[0].modality == ("CT" if kind == "ct" else "")
        # today: pre-mapped images through config.normalise; now: raw images through the normalisation
        for r, m in zip(raw, mapped):
            assert np.array_equal(normalized_input(r, config), config.normalise(np.moveaxis(m.image, -1, 0)))


def _write_scene(folder, seed, size=96):
    """A small uint8 RGB GeoTIFF with squares (class 1) and bars (class 2), its instance and class rasters."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 8, (3, size, size)).clip(0, 255)
    instances = np.zeros((size, size), np.uint32)
    classes = np.zeros((size, size), np.uint8)
    for k, (y, x) in enumerate(((y, x) for y in range(4, size - 10, 14) for x in range(4, size - 10, 14)), 1):
        h, w = (5, 5) if k % 2 else (3, 8)
        instances[y:y + h, x:x + w], classes[y:y + h, x:x + w] = k, 1 if k % 2 else 2
        image[:, y:y + h, x:x + w] = 220 if k % 2 else 30
    paths = {}
    for name, data, dtype in (("image", image, "uint8"), ("instances", instances[None], "uint32"),
                              ("classes", classes[None], "uint8")):
        paths[name] = f"scene{seed}.{name}.tif"
        with rasterio.open(folder / paths[name], "w", driver="GTiff", width=size, height=size, count=data.shape[0],
                           dtype=dtype, crs="EPSG:32633", transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000)) as dst:
            dst.write(data.astype(dtype))
    return paths


def _percentile_config(folder, normalize):
    import yaml

    config = {
        "name": "tiny-p",
        "model": {"encoder_name": "resnet18", "encoder_depth": 3, "encoder_output_stride": 8, "classes": 2,
                  "decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32, "refine_channels": [8, 8],
                  "max_distance_px": 8, "band_names": ["red", "green", "blue"]},
        "data": {"train": [{"geotiff": _write_scene(folder, 1)}], "val": [{"geotiff": _write_scene(folder, 3, 64)}]},
        "augment": {"crop_size": 48, "mosaic_p": 0.5},
        "optim": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "warmup_steps": 1},
        "seed": 1, "device": "cpu", "tune_decode": True,
        "normalize": normalize,
    }
    path = folder / "p.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_training_config_declares_percentile_normalisation_and_the_checkpoint_keeps_it(tmp_path):
    from smallseg.models import load_checkpoint
    from smallseg.train.loop import load_train_config, train

    path = _percentile_config(tmp_path, {"kind": "percentile", "lo": 1, "hi": 99.8})
    result = train(load_train_config(path), tmp_path / "run", progress=False)  # includes tune-decode
    config = load_checkpoint(result.best_checkpoint).config
    norm = normalization_for(config)
    assert norm.kind == "percentile" and (norm.lo, norm.hi) == (1.0, 99.8) and len(norm.mean) == 3
    assert config.training["band_names"] == ["red", "green", "blue"] and config.input_scale == 1.0
    assert list(norm.mean) == config.norm_mean and 0.0 < min(norm.mean) < max(norm.mean) < 1.0
    assert "decode_tuned_on" in config.training  # tune-decode ran on the same normalised input


@pytest.mark.parametrize("normalize, words", [
    ({"kind": "percentile", "lo": 1, "hi": 120}, "normalize: normalization: percentiles need"),
    ({"kind": "zscore"}, "unknown kind"),
    ("percentile", "expected a mapping"),
])
def test_a_bad_normalize_section_is_one_line_naming_it(tmp_path, normalize, words):
    from smallseg.train.loop import load_train_config

    with pytest.raises(SmallsegError) as info:
        load_train_config(_percentile_config(tmp_path, normalize))
    assert words in str(info.value) and "p.yaml" in str(info.value)


def test_medical_sources_give_a_default_and_a_ct_normalisation(tmp_path):
    from smallseg.train.loop import _resolve_model_config, load_source, load_train_config

    path = _percentile_config(tmp_path, None)
    config = load_train_config(path)
    config.model.update(in_channels=1, band_names=["grey"])
    images = [*load_source({"synthetic": "nuclei", "count": 1, "size": 64, "seed": 1}, tmp_path),
              *load_source({"synthetic": "ct", "count": 1, "size": 64, "seed": 1, "options": {"slices": 8}}, tmp_path)]
    model_config = _resolve_model_config(config, images)
    default = normalization_for(model_config)
    ct = normalization_for(model_config, "CT")
    assert default.kind == "percentile" and (default.lo, default.hi) == (1.0, 99.5)
    assert ct.kind == "window" and ct.windows == ((-600.0, 1500.0),) and ct.mean == default.mean
    assert model_config.norm_mean == list(default.mean) and model_config.input_scale == 1.0


def test_declaring_the_input_of_a_checkpoint_keeps_its_weights(tmp_path, tiny_model):
    import torch

    from smallseg.bands import model_band_names
    from smallseg.models import load_checkpoint, save_checkpoint
    from smallseg.train.declare import declare_input

    model = tiny_model(in_channels=1, input_scale=1.0, norm_mean=[0.4], norm_std=[0.27])
    src = save_checkpoint(model, tmp_path / "m.safetensors")
    legacy = model.config
    default = MICROSCOPY.with_standardisation(legacy.norm_mean, legacy.norm_std)
    ct = CT_WINDOWS["lung_nodule"].with_standardisation(legacy.norm_mean, legacy.norm_std)
    out = declare_input(src, tmp_path / "d.safetensors", normalization=default, by_modality={"ct": ct},
                        band_names=["grey"])
    declared = load_checkpoint(out)
    assert normalization_for(declared.config) == default and normalization_for(declared.config, "CT") == ct
    assert model_band_names(declared.config) == ("grey",)
    for a, b in zip(model.state_dict().values(), declared.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(SmallsegError, match="standardises 3 channels, the model takes 1"):
        declare_input(src, tmp_path / "x.safetensors", normalization=Normalization.fixed(1, [0] * 3, [1] * 3))


def test_user_choices_map_to_one_normalisation_each():
    from smallseg.normalize import choose_normalization

    config = read_checkpoint_config(WEIGHTS / "remote-sensing.safetensors")
    model = choose_normalization(config)
    assert model == choose_normalization(config, "fixed") == Normalization.fixed(
        config.input_scale, config.norm_mean, config.norm_std)
    p = choose_normalization(config, "percentile", percentiles=(2, 98))
    assert p.kind == "percentile" and (p.lo, p.hi) == (2.0, 98.0) and p.mean == tuple(config.norm_mean)
    assert choose_normalization(config, "none").apply(np.array([[[7]]], np.uint16))[0, 0, 0] == 7.0
    with pytest.raises(SmallsegError, match="normalize='percentile'"):
        choose_normalization(config, "model", percentiles=(1, 99))
    with pytest.raises(SmallsegError, match="choose one of model, percentile, fixed, none"):
        choose_normalization(config, "auto")
    with pytest.raises(SmallsegError, match="lo < hi"):
        choose_normalization(config, "percentile", percentiles=(99, 1))


def test_a_volume_is_fitted_over_all_its_voxels_and_applied_per_slice():
    vol = np.random.default_rng(8).normal(300, 80, (6, 32, 40)).astype(np.int16)
    norm = Normalization.percentile(1, 99.5)
    stats = norm.fit(vol[None])
    np.testing.assert_allclose(stats.lo, np.percentile(vol.astype(np.float64), 1))
    assert stats.sampled_pixels == vol.size
    slices = np.stack([norm.apply(vol[z][None], stats)[0] for z in range(6)])
    assert slices.min() == 0.0 and slices.max() == 1.0
    masked = norm.fit(vol[None], vol > 300)
    assert masked.lo[0] > 300
