"""SmallObjectNet: shapes, LFE dilations and parameter matching, gradient flow, training, wrap()."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file
from torch import nn

from smallseg.errors import SmallsegError
from smallseg.models import ModelConfig, build_model, count_parameters, wrap
from smallseg.train.losses import head_losses
from smallseg.train.targets import collate_targets, encode_targets

HEADS = ("semantic", "centroid", "distance")


def expected_channels(head: str, classes: int) -> int:
    return {"semantic": classes + 1, "centroid": 2, "distance": 1}[head]


@pytest.mark.parametrize(
    "heads", [c for r in (1, 2, 3) for c in itertools.combinations(HEADS, r)], ids=lambda h: "+".join(h)
)
def test_forward_returns_exactly_the_enabled_heads_at_full_resolution(heads):
    torch.manual_seed(0)
    model = build_model("resnet18", classes=3, heads=heads).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert set(out) == set(heads)
    for name, t in out.items():
        assert t.shape == (1, expected_channels(name, 3), 64, 64)
        assert torch.isfinite(t).all()


@pytest.mark.parametrize(
    "encoder,lfe",
    [("resnet18", "falling"), ("resnet18", "constant"), ("resnet18", None), ("tu-mobilenetv3_small_100", "falling"),
     ("tu-resnet18", "constant")],
)
def test_encoders_and_lfe_modes_with_odd_input_size(encoder, lfe):
    model = build_model(encoder, classes=2, in_channels=4, lfe=lfe).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 4, 50, 37))  # not a multiple of the stride: padded inside, cropped back
    assert out["semantic"].shape == (2, 3, 50, 37)
    assert out["centroid"].shape == (2, 2, 50, 37)
    assert out["distance"].shape == (2, 1, 50, 37)


def test_odd_sizes_equal_explicit_zero_padding_then_crop():
    torch.manual_seed(0)
    model = build_model("resnet18", classes=1).eval()
    assert model.input_multiple == 16  # output stride 16: the dilated encoder's coarsest grid
    x = torch.randn(1, 3, 40, 27)
    with torch.no_grad():
        direct = model(x)
        padded = model(torch.nn.functional.pad(x, (0, 5, 0, 8)))  # to 48 x 32 by hand
    for name in direct:
        torch.testing.assert_close(direct[name], padded[name][..., :40, :27])


def _lfe_convs(model):
    return [m for m in model.lfe.modules() if isinstance(m, nn.Conv2d)]


def test_lfe_falling_and_constant_are_parameter_matched():
    falling = build_model("resnet18", lfe="falling")
    constant = build_model("resnet18", lfe="constant")
    constant2 = build_model("resnet18", lfe="constant", lfe_dilations=(2, 2, 2))
    none = build_model("resnet18", lfe=None)
    assert [c.dilation for c in _lfe_convs(falling)] == [(4, 4), (2, 2), (1, 1)]
    assert [c.dilation for c in _lfe_convs(constant)] == [(1, 1)] * 3
    assert [c.dilation for c in _lfe_convs(constant2)] == [(2, 2)] * 3
    assert count_parameters(falling) == count_parameters(constant) == count_parameters(constant2)
    assert count_parameters(falling.lfe) == count_parameters(constant.lfe) > 0
    assert none.lfe is None and count_parameters(none) == count_parameters(falling) - count_parameters(falling.lfe)
    # Same shapes everywhere: the state dicts are interchangeable.
    assert {k: v.shape for k, v in falling.state_dict().items()} == {
        k: v.shape for k, v in constant.state_dict().items()
    }


def test_front_end_is_dilated_with_rising_rates():
    model = build_model("resnet18", encoder_output_stride=8)
    dil = {name: m.dilation for name, m in model.encoder.named_modules() if isinstance(m, nn.Conv2d)}
    assert dil["layer3.0.conv2"] == (2, 2) and dil["layer4.0.conv2"] == (4, 4)
    assert dil["layer2.0.conv2"] == (1, 1)


def test_invalid_settings_raise_smallseg_errors():
    with pytest.raises(SmallsegError, match="lfe_dilations"):
        build_model("resnet18", lfe="falling", lfe_dilations=(1, 2, 4))
    with pytest.raises(SmallsegError, match="lfe_dilations"):
        build_model("resnet18", lfe="constant", lfe_dilations=(2, 1, 1))
    with pytest.raises(SmallsegError, match="heads"):
        build_model("resnet18", heads=("semantic", "boxes"))
    with pytest.raises(SmallsegError, match="multiple of 32"):
        build_model("resnet18", decoder_segmentation_channels=48)
    with pytest.raises(SmallsegError, match="encoder_name"):
        build_model("no-such-encoder")
    model = build_model("resnet18", in_channels=4)
    with pytest.raises(SmallsegError, match=r"expected \(B, 4, H, W\)"):
        model(torch.zeros(1, 3, 32, 32))


def planted_squares(n=4, size=64, seed=0):
    """Images with bright squares (2..8 px) on noise, and their instance labels."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(n):
        img = rng.normal(0, 0.1, (3, size, size)).astype(np.float32)
        lab = np.zeros((size, size), np.int32)
        for k in range(1, 9):
            s = int(rng.integers(2, 9))
            y, x = rng.integers(0, size - s, 2)
            if lab[y : y + s, x : x + s].any():
                continue
            lab[y : y + s, x : x + s] = k
            img[:, y : y + s, x : x + s] += 1.0
        images.append(img)
        targets.append(encode_targets(lab, None, max_distance_px=16.0))
    return torch.from_numpy(np.stack(images)), collate_targets(targets)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = build_model("resnet18", classes=1, max_distance_px=16.0).train()
    x, targets = planted_squares(n=2)
    losses = head_losses(model(x), targets)
    losses["total"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert no_grad == []
    assert set(losses) == {"total", "semantic", "centroid", "distance"}


def test_loss_decreases_on_a_tiny_fixed_set(one_torch_thread):
    torch.manual_seed(0)
    model = build_model("resnet18", classes=1, max_distance_px=16.0, encoder_output_stride=32).train()
    x, targets = planted_squares(n=4, size=48)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        opt.zero_grad()
        losses = head_losses(model(x), targets)
        losses["total"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    first, last = history[0], history[-1]
    assert last["total"] < 0.5 * first["total"], (first, last)
    for part in ("semantic", "centroid", "distance"):
        assert last[part] < first[part], (part, first, last)


@pytest.mark.parametrize("arch", ["Unet", "FPN", "DeepLabV3Plus"])
def test_wrap_keeps_the_smp_weights_and_trains(arch):
    torch.manual_seed(0)
    base = getattr(smp, arch)("resnet18", encoder_weights=None, classes=5, in_channels=3)
    before = {k: v.clone() for k, v in base.encoder.state_dict().items()}
    model = wrap(base, classes=2, max_distance_px=16.0)
    assert model.config.decoder == "smp" and model.config.smp_arch == arch
    assert model.encoder is base.encoder and model.decoder is base.decoder
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    x, targets = planted_squares(n=2)
    targets["semantic"] = targets["semantic"] * 2  # class 2 of 2
    out = model.train()(x)
    assert out["semantic"].shape == (2, 3, 64, 64) and out["centroid"].shape == (2, 2, 64, 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = head_losses(out, targets)["total"]
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    after = model.encoder.state_dict()
    changed = [k for k, v in after.items() if v.is_floating_point() and not torch.equal(before[k], v)]
    assert changed, "one training step changed no encoder weight"
    # The config alone rebuilds the same architecture.
    from smallseg.models import build_from_config

    rebuilt = build_from_config(ModelConfig.from_json(model.config.to_json()))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_wrap_rejects_non_smp_models():
    with pytest.raises(SmallsegError, match="SegmentationModel"):
        wrap(nn.Conv2d(3, 3, 1), classes=1)


def test_encoder_weights_from_a_local_file(tmp_path):
    torch.manual_seed(1)
    donor = smp.Unet("resnet18", encoder_weights=None, in_channels=3)
    # A whole smp model's weights, as users keep them: encoder.* keys are picked out.
    full = tmp_path / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(full))
    pt = tmp_path / "encoder.pt"
    torch.save(donor.encoder.state_dict(), pt)
    for path in (full, pt):
        model = build_model("resnet18", encoder_weights=path, encoder_output_stride=32)
        for k, v in donor.encoder.state_dict().items():
            assert torch.equal(model.encoder.state_dict()[k], v), k
    with pytest.raises(SmallsegError, match="does not fit"):
        build_model("resnet18", encoder_weights=pt, in_channels=4)
    with pytest.raises(SmallsegError, match="not found"):
        build_model("resnet18", encoder_weights=tmp_path / "missing.safetensors")


def test_model_config_json_round_trip_and_normalise():
    cfg = ModelConfig(
        classes=2,
        class_names=["car", "building"],
        in_channels=4,
        band_indices=[3, 2, 1, 4],
        input_scale=1 / 10000,
        norm_mean=[0.1, 0.2, 0.3, 0.4],
        norm_std=[0.5, 0.5, 0.5, 2.0],
        training={"dataset": "synthetic", "images": 12},
    )
    again = ModelConfig.from_json(cfg.to_json())
    assert again == cfg
    raw = np.full((4, 2, 3), 10000, np.uint16)
    out = cfg.normalise(raw)
    assert out.dtype == np.float32
    expected = [(1 - 0.1) / 0.5, (1 - 0.2) / 0.5, (1 - 0.3) / 0.5, (1 - 0.4) / 2.0]
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=1e-6)
    with pytest.raises(SmallsegError, match="unknown keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "typo_field": 1})
    with pytest.raises(SmallsegError, match="norm_mean"):
        ModelConfig(in_channels=3, norm_mean=[0.0, 0.0])
