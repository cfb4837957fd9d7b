"""Test-time augmentation (smallseg.models.tta): exact on a model equivariant by construction, centroid vectors
rotated / flipped back correctly, and usable by the tiled pipeline like the model itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from smallseg.errors import SmallsegError
from smallseg.models import build_model
from smallseg.models.config import ModelConfig
from smallseg.models.tta import TRANSFORMS, TTAModel, Transform, untransform, with_tta
from smallseg.pipeline.array import predict_array


class EquivariantNet(nn.Module):
    """Equivariant under flips and 90° rotations by construction: a D4-symmetric blur gives the scalar maps,
    and the centroid head is the blurred image's gradient (dy, dx) by central differences, which is a vector
    field (it turns with the image). Zero padding is the same on every side, so the borders are symmetric too."""

    def __init__(self):
        super().__init__()
        self.config = ModelConfig(encoder_name="tu-mobilenetv4_conv_small", classes=1,
                                  decoder_segmentation_channels=32)
        k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
        self.register_buffer("blur", k[None, None])

    def forward(self, x):
        b = F.conv2d(F.conv2d(x.mean(1, keepdim=True), self.blur, padding=1), self.blur, padding=1)
        p = F.pad(b, (1, 1, 1, 1))
        dy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2
        dx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2
        return {"semantic": torch.cat([-b, b], 1), "centroid": torch.cat([dy, dx], 1), "distance": b * b}


def _image(h=37, w=52, seed=0):
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("g", TRANSFORMS["d4"], ids=lambda g: f"k{g.k}{'f' if g.flip else ''}")
def test_each_transform_brings_an_equivariant_model_back_exactly(g):
    net = EquivariantNet()
    x = _image()
    ref = net(x)
    back = untransform(net(g.apply(x)), g)
    for name in ref:
        assert back[name].shape == ref[name].shape
        torch.testing.assert_close(back[name], ref[name], rtol=0, atol=1e-6)


def test_vectors_are_transformed_not_only_moved():
    """Moving the centroid maps back without turning the (dy, dx) components is wrong for every transform but
    the identity: the check above would catch a wrong matrix."""
    net = EquivariantNet()
    x = _image()
    ref = net(x)["centroid"]
    for g in TRANSFORMS["d4"][1:]:
        moved_only = g.invert(net(g.apply(x))["centroid"])
        assert (moved_only - ref).abs().max() > 1e-2


def test_transform_matrix_matches_where_pixels_go():
    """M maps an offset between two marked pixels to their offset after the transform, for all 8 transforms."""
    h, w = 9, 13
    for g in TRANSFORMS["d4"]:
        a, b = (2, 3), (6, 11)
        img = torch.zeros(1, 2, h, w)
        img[0, 0, a[0], a[1]] = 1
        img[0, 1, b[0], b[1]] = 1
        t = g.apply(img)[0]
        pa = torch.nonzero(t[0])[0].float()
        pb = torch.nonzero(t[1])[0].float()
        offset = torch.tensor([b[0] - a[0], b[1] - a[1]], dtype=torch.float32)
        torch.testing.assert_close(g.matrix() @ offset, pb - pa)


@pytest.mark.parametrize("kind", ["d4", "flips"])
def test_tta_of_an_equivariant_model_is_exact(kind):
    net = EquivariantNet()
    x = _image()
    ref, out = net(x), TTAModel(net, kind)(x)
    for name in ref:
        torch.testing.assert_close(out[name], ref[name], rtol=0, atol=1e-6)


def test_tta_averages_a_real_model_and_keeps_its_contract():
    torch.manual_seed(0)
    model = build_model("tu-mobilenetv4_conv_small", classes=2, encoder_depth=4, decoder_pyramid_channels=32,
                        decoder_segmentation_channels=32, refine_channels=(16, 8), encoder_antialias="blurpc",
                        decoder_norm="batch", decoder_align_corners=False).eval()
    x = _image(64, 64)
    tta = with_tta(model, "flips")
    with torch.no_grad():
        out = tta(x)
        manual = {}
        for g in TRANSFORMS["flips"]:
            for k, v in untransform(model(g.apply(x)), g).items():
                manual[k] = manual.get(k, 0) + v / 4
        plain = model(x)
    assert tta.config is model.config
    for k in plain:
        assert out[k].shape == plain[k].shape
        torch.testing.assert_close(out[k], manual[k])
    assert any((out[k] - plain[k]).abs().max() > 1e-4 for k in plain)  # an untrained net is not equivariant

    # The tiled pipeline takes the wrapped model as it takes the model: same tiling, stitched per tile.
    image = (np.random.default_rng(0).random((3, 96, 80)) * 255).astype(np.uint8)
    res = predict_array(image, tta, tile_size_px=64, overlap_px=16, normalize="none")
    assert res.labels.shape == (96, 80)


def test_with_tta_switches():
    net = EquivariantNet()
    assert with_tta(net, False) is net and with_tta(net, None) is net and with_tta(net, "none") is net
    assert with_tta(TTAModel(net), None).transforms == "d4" and with_tta(TTAModel(net), False) is net
    wrapped = with_tta(net, True)
    assert isinstance(wrapped, TTAModel) and wrapped.transforms == "d4"
    assert with_tta(wrapped, "flips").model is net  # never TTA of TTA
    with pytest.raises(SmallsegError, match="tta 'rot45'"):
        with_tta(net, "rot45")


def test_geotiff_pipeline_runs_tta_and_records_it(tmp_path, tiny_model):
    """``GeoTiffOptions(tta=...)`` (``tile-and-predict --tta``): the same labels as ``predict_array(tta=...)`` on
    the same pixels, ``tta`` in run.json, and a model fingerprint of its own (a resume cannot mix the two)."""
    import json

    import rasterio
    from rasterio.transform import from_origin

    from smallseg.pipeline.geotiff import GeoTiffOptions, predict_geotiff

    model = tiny_model("mobilenetv3", semantic_bias=[-0.5, 1.0, 0.5], classes=2, max_distance_px=6,
                       tile_size_px=64, input_scale=1 / 255, norm_mean=[0.45] * 3, norm_std=[0.25] * 3)
    image = (np.random.default_rng(1).random((3, 90, 110)) * 255).astype(np.uint8)
    path = tmp_path / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=110, height=90, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 0.5, 0.5)) as dst:
        dst.write(image)
    runs = {}
    for tta in (None, "flips"):
        options = GeoTiffOptions(tile_size_px=64, overlap_px=16, normalize="fixed", progress=False, tta=tta,
                                 formats="tif")
        result = predict_geotiff(path, tmp_path / f"out-{tta}", model=model, options=options)
        runs[tta] = json.loads(result.paths["run"].read_text())
        with rasterio.open(result.paths["instances"]) as src:
            labels = src.read(1)
        ref = predict_array(image, model, tile_size_px=64, overlap_px=16, normalize="fixed", tta=tta).labels
        assert (labels > 0).sum() > 0
        np.testing.assert_array_equal(labels > 0, ref > 0)
    assert runs["flips"]["model"].get("tta") == "flips" and "tta" not in runs[None]["model"]
    assert runs["flips"]["model"]["sha256"] != runs[None]["model"]["sha256"]
    with pytest.raises(SmallsegError, match="tta"):
        GeoTiffOptions(tta="rot45")
