"""Bands by meaning (smallseg.bands) on real GeoTIFFs written by rasterio with their colour interpretation."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import RASTERIO_DATA
from rasterio.enums import ColorInterp as CI

from smallseg.bands import model_band_names, plan_for_dataset, resolve_bands
from smallseg.errors import SmallsegError
from smallseg.normalize import Normalization, sample_raster

RGB = ("red", "green", "blue")


def _write(path, data, interp=None):
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype, crs="EPSG:32633", transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if interp is not None:
            dst.colorinterp = interp
    return path


@pytest.fixture(scope="module")
def scene():
    """A real RGB scene (rasterio's Landsat RGB.byte.tif cut-out) as uint16 12-bit, plus an alpha band."""
    with rasterio.open(RASTERIO_DATA / "RGB.byte.tif") as src:
        rgb = src.read(window=((250, 378), (250, 410))).astype(np.uint16) * 16  # 0..4080: 12-bit data
    alpha = np.full(rgb.shape[1:], 255, np.uint16)
    alpha[:, :20] = 0  # a no-data strip, marked only by alpha
    return rgb, alpha


def test_bgra_file_feeds_rgb_in_order_and_its_alpha_is_the_valid_mask(tmp_path, scene):
    rgb, alpha = scene
    bgra = _write(tmp_path / "bgra.tif", np.concatenate([rgb[::-1], alpha[None]]),
                  [CI.blue, CI.green, CI.red, CI.alpha])
    plain = _write(tmp_path / "rgb.tif", rgb, [CI.red, CI.green, CI.blue])
    with rasterio.open(bgra) as src:
        plan = plan_for_dataset(src, RGB)
        assert plan.indices == (3, 2, 1) and plan.alpha_index == 4 and not plan.replicate_grey
        assert plan.note == ("file band 3 (red) -> red, band 2 (green) -> green, band 1 (blue) -> blue "
                             "(by colour interpretation); band 4 (alpha) is the valid mask")
        data = src.read(list(plan.indices))
        valid = src.read(plan.alpha_index) > 0
        sample, sample_valid = sample_raster(src, plan.indices, alpha_index=plan.alpha_index)
    with rasterio.open(plain) as src:
        assert plan_for_dataset(src, RGB).indices == (1, 2, 3)
        assert np.array_equal(data, src.read())
    assert not valid[:, :20].any() and valid[:, 20:].all() and not sample_valid[:, :20].any()
    # The alpha strip is excluded from the statistics: same percentiles as the RGB file's valid part.
    norm = Normalization.percentile(1, 99.8)
    expected = norm.fit(rgb[:, :, 20:])
    np.testing.assert_allclose(norm.fit(sample, sample_valid).lo, expected.lo)


def test_real_rgba_uint16_file_maps_by_colour_interpretation():
    with rasterio.open(RASTERIO_DATA / "RGBA.uint16.tif") as src:  # rasterio's test file: B, G, R, alpha
        plan = plan_for_dataset(src, RGB)
    assert plan.indices == (3, 2, 1) and plan.alpha_index == 4


def test_grey_file_to_rgb_model_is_replicated_with_a_note_or_refused_naming_the_fix(tmp_path, scene):
    grey = _write(tmp_path / "grey.tif", scene[0][:1], [CI.gray])
    with rasterio.open(grey) as src:
        plan = plan_for_dataset(src, RGB)
        assert plan.indices == (1, 1, 1) and plan.replicate_grey and plan.alpha_index is None
        assert plan.note == "1-band image: band 1 replicated to red, green, blue"
        with pytest.raises(SmallsegError) as info:
            plan_for_dataset(src, RGB, replicate_grey=False)
        assert "bands=(1, 1, 1)" in str(info.value)
        assert plan_for_dataset(src, ("grey",)).indices == (1,)


def test_rgb_file_and_explicit_bands_win(tmp_path, scene):
    path = _write(tmp_path / "rgb.tif", scene[0], [CI.red, CI.green, CI.blue])
    with rasterio.open(path) as src:
        assert [c.name for c in src.colorinterp] == ["red", "green", "blue"]
        plan = plan_for_dataset(src, RGB)
        assert plan.indices == (1, 2, 3) and "by colour interpretation" in plan.note
        mine = plan_for_dataset(src, RGB, bands=(3, 3, 1))
        assert mine.indices == (3, 3, 1) and "as given by bands" in mine.note
        with pytest.raises(SmallsegError, match=r"bands=\(1, 2\): 2 bands, but the model takes 3"):
            plan_for_dataset(src, RGB, bands=(1, 2))
        with pytest.raises(SmallsegError, match=r"has bands 1..3; \[5\] do not exist"):
            plan_for_dataset(src, RGB, bands=(1, 2, 5))
        with pytest.raises(SmallsegError, match=r"model takes 1 \(grey\); choose them with bands=\(1,\)"):
            plan_for_dataset(src, ("grey",))


def test_undefined_four_band_file_asks_which_bands(tmp_path, scene):
    rgb = scene[0]
    path = _write(tmp_path / "four.tif", np.concatenate([rgb, rgb[:1]]), [CI.undefined] * 4)
    with rasterio.open(path) as src:
        # GDAL keeps band 1 of an uninterpreted file as "gray": it says nothing about the image
        assert [c.name for c in src.colorinterp] == ["gray", "undefined", "undefined", "undefined"]
        with pytest.raises(SmallsegError) as info:
            plan_for_dataset(src, RGB)
        message = str(info.value)
        assert "4 data band(s)" in message and "bands=(1, 2, 3)" in message and "\n" not in message
        assert plan_for_dataset(src, RGB, bands=(1, 2, 3)).indices == (1, 2, 3)
    three = _write(tmp_path / "three.tif", rgb, [CI.undefined] * 3)
    with rasterio.open(three) as src:
        plan = plan_for_dataset(src, RGB)
    assert plan.indices == (1, 2, 3) and "file order: no colour interpretation" in plan.note


def test_interpretations_that_contradict_the_model_are_refused():
    with pytest.raises(SmallsegError, match=r"bands are 1 \(nir\), 2 \(red\), 3 \(green\), the model takes red"):
        resolve_bands(RGB, [CI.nir, CI.red, CI.green])
    with pytest.raises(SmallsegError, match="palette indices"):
        resolve_bands(RGB, ["palette"])
    plan = resolve_bands(("red", "green", "blue", "nir"), ["nir", "blue", "green", "red"])
    assert plan.indices == (4, 3, 2, 1)


def test_model_band_names_default_and_declared(tiny_model):
    assert model_band_names(tiny_model(in_channels=3).config) == RGB
    assert model_band_names(tiny_model(in_channels=1).config) == ("grey",)
    config = tiny_model(in_channels=2).config
    assert model_band_names(config) is None
    config.training = {"band_names": ["Red", "NIR"]}
    assert model_band_names(config) == ("red", "nir")
    config.training = {"band_names": ["red", "ultraviolet"]}
    with pytest.raises(SmallsegError, match="unknown"):
        model_band_names(config)
