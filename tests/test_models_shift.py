"""Tile independence of the shift-stable architecture (issue #14), on untrained models.

A model is tile-independent when an output pixel depends only on the input pixels within its receptive field,
not on where the tile starts or how large it is. Check: predict one image and a crop of it whose top-left corner
moves by a multiple of the model's input stride (so the strided grids line up); at every pixel further than the
receptive-field radius from the crop's new border the two predictions must agree up to float noise. The
receptive field is measured, not assumed: the support of the gradient of one output pixel w.r.t. the input.

The new settings (MobileNetV4 without squeeze-and-excitation, BlurPool, BatchNorm and half-pixel upsampling in
the FPN) pass; the old settings (MobileNetV3 with SE, GroupNorm, align_corners=True) fail the same check.
"""

from __future__ import annotations

import math

import pytest
import torch

from smallseg.errors import SmallsegError
from smallseg.models import build_model
from smallseg.models.checkpoint import load_checkpoint, save_checkpoint
from smallseg.models.config import ModelConfig

SHIFT_STABLE = dict(encoder_name="tu-mobilenetv4_conv_small", encoder_antialias="blurpc", decoder_norm="batch",
                    decoder_align_corners=False)
OLD = dict(encoder_name="tu-mobilenetv3_small_100")
# Depth 4 keeps the receptive field (and so the images) small enough for a test of a few seconds; the
# shipped depth-5 model differs only by one more stage of the same kinds of layers.
COMMON = dict(classes=2, encoder_depth=4, decoder_pyramid_channels=32, decoder_segmentation_channels=32,
              refine_channels=(16, 8))


def _model(**fields) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(**COMMON, **fields)
    # Non-trivial eval-mode BatchNorm statistics: an identity norm would hide nothing.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
    return model.eval()


def _receptive_radius(model: torch.nn.Module, size: int) -> int:
    """Largest per-axis distance (px) from the centre output pixel of a ``size``² input to an input pixel with
    a non-zero gradient (``size // 2`` or more: the receptive field reaches the border, i.e. is not local)."""
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    c = size // 2
    out = model(x)
    sum(v[0, :, c, c].sum() for v in out.values()).backward()
    rows, cols = torch.nonzero(x.grad.abs().sum(1)[0] > 0, as_tuple=True)
    return int(max(c - rows.min(), rows.max() - c, c - cols.min(), cols.max() - c))


def _crop_difference(model: torch.nn.Module, size: int, offset: tuple[int, int], margin: int) -> tuple[float, float]:
    """(max |full - crop| over all heads at crop pixels more than ``margin`` px from the crop's top/left edge,
    max |full| there). The crop's bottom/right edges are the image's, as in the full prediction."""
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(3))
    oy, ox = offset
    with torch.no_grad():
        full = model(x)
        crop = model(x[..., oy:, ox:])
    ref = {k: v[..., oy + margin:, ox + margin:] for k, v in full.items()}
    return (max(float((ref[k] - crop[k][..., margin:, margin:]).abs().max()) for k in ref),
            max(float(v.abs().max()) for v in ref.values()))


@pytest.fixture(scope="module")
def shift_stable():
    """(untrained shift-stable model, its measured receptive-field radius in px)."""
    model = _model(**SHIFT_STABLE)
    return model, _receptive_radius(model, 448)


def test_shift_stable_settings_make_outputs_independent_of_the_tile(shift_stable):
    model, radius = shift_stable
    assert 32 < radius < 224  # local: a global operation would make it reach the image border
    offset = (3 * model.input_multiple, 5 * model.input_multiple)
    diff, scale = _crop_difference(model, 2 * radius + 96, offset, radius + 1)
    assert scale > 0.1
    assert diff <= 1e-5 * scale, (diff, scale)
    # Closer to the crop's edge the zero padding is within reach and the outputs do differ: the check can fail.
    near, _ = _crop_difference(model, 2 * radius + 96, offset, 8)
    assert near > 1e-3


def test_old_settings_depend_on_the_tile(shift_stable):
    new, radius = shift_stable
    old = _model(**OLD)
    assert _receptive_radius(old, 192) >= 96  # squeeze-and-excitation: the whole tile
    offset = (3 * old.input_multiple, 5 * old.input_multiple)
    # The same pixels that agree for the new settings differ for the old ones.
    diff, scale = _crop_difference(old, 2 * radius + 96, offset, radius + 1)
    assert diff > 1e-3 * scale


@pytest.mark.parametrize("fields", [dict(decoder_norm="group"), dict(decoder_norm="batch"),
                                    dict(decoder_norm="none", decoder_align_corners=False)])
def test_each_setting_round_trips_through_a_checkpoint(tmp_path, fields):
    model = _model(encoder_name="tu-mobilenetv4_conv_small", encoder_antialias="blurpc", **fields)
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path)
    loaded = load_checkpoint(path).eval()
    assert loaded.config.to_dict() == model.config.to_dict()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert all(torch.equal(a[k], b[k]) for k in a)
    n_blur = sum(type(m).__name__ == "BlurPool2d" for m in loaded.modules())
    assert n_blur >= 2


def test_old_configs_keep_smp_layers():
    """A config without the new keys (every checkpoint made before them) builds the same modules as before."""
    data = ModelConfig(encoder_name="tu-mobilenetv3_small_100", decoder_segmentation_channels=32).to_dict()
    # Defaults are not written: an old checkpoint's config JSON (and fingerprint) stays the same.
    assert not {"encoder_antialias", "decoder_norm", "decoder_align_corners"} & set(data)
    assert ModelConfig(**{**data, "decoder_norm": "batch"}).to_dict()["decoder_norm"] == "batch"
    config = ModelConfig.from_dict(data)
    assert (config.encoder_antialias, config.decoder_norm, config.decoder_align_corners) == (None, "group", True)
    model = build_model(**{k: v for k, v in config.to_dict().items() if k not in ("decoder", "smp_arch",
                                                                                  "smp_kwargs")})
    kinds = {type(m).__name__ for m in model.decoder.modules()}
    assert "GroupNorm" in kinds and "_Conv3x3NormReLU" not in kinds
    assert not any(type(m).__name__ == "BlurPool2d" for m in model.encoder.modules())


@pytest.mark.parametrize("fields, message", [
    (dict(encoder_antialias="blur"), "encoder_antialias"),
    (dict(encoder_antialias="blurpc", encoder_name="resnet18"), "needs a timm encoder"),
    (dict(decoder_norm="layer"), "decoder_norm"),
    (dict(decoder_align_corners=0), "decoder_align_corners"),
    (dict(decoder_norm="batch", decoder="smp", smp_arch="Unet"), "decoder='fpn'"),
])
def test_bad_settings_are_one_line_errors(fields, message):
    base = dict(encoder_name="tu-mobilenetv4_conv_small", decoder_segmentation_channels=32)
    with pytest.raises(SmallsegError, match=message) as info:
        ModelConfig(**{**base, **fields})
    assert "\n" not in str(info.value)


def test_an_encoder_without_aa_layer_is_one_line_error():
    with pytest.raises(SmallsegError, match="aa_layer") as info:
        build_model("tu-resnet18", encoder_antialias="blurpc", decoder_segmentation_channels=32)
    assert "\n" not in str(info.value)


def test_context_radius_and_tiling_defaults(shift_stable):
    from smallseg.models.receptive_field import context_radius_px, tiling_for

    model, radius = shift_stable
    image = torch.randn(3, 320, 320, generator=torch.Generator().manual_seed(4))
    d = context_radius_px(model, image, tol=0.02, max_radius=128)
    assert 0 < d <= min(radius, 128) and d % model.input_multiple == 0
    # A stricter tolerance never needs less context.
    assert context_radius_px(model, image, tol=0.002, max_radius=128) >= d

    plan = tiling_for(model, d, vote_error_px=2.0, max_cost_ratio=1.3)
    assert plan.overlap_px == 2 * math.ceil(model.config.max_distance_px + 2.0 + d)
    t, o = plan.tile_size_px, plan.overlap_px
    assert t % model.input_multiple == 0
    assert (t / (t - o)) ** 2 <= 1.3 < ((t - model.input_multiple) / (t - model.input_multiple - o)) ** 2
    with pytest.raises(SmallsegError, match="overhead"):
        tiling_for(model, 2000, max_cost_ratio=1.05)
