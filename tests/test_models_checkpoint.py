"""Checkpoints: bit-exact round trip, float16 storage, and one-line errors for bad files."""

from __future__ import annotations

import os
import pickle

import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from smallseg.errors import SmallsegError
from smallseg.models import build_model, load_checkpoint, load_weights, read_checkpoint_config, save_checkpoint, wrap


def _trained_a_bit(model):
    """Non-default weights and BN statistics, so a round trip that dropped anything would show."""
    torch.manual_seed(3)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    out = model(torch.randn(2, model.config.in_channels, 32, 32))
    sum(v.square().mean() for v in out.values()).backward()
    opt.step()
    return model.eval()


@pytest.mark.parametrize("kind", ["fpn", "wrapped-unet"])
def test_round_trip_is_bit_exact(tmp_path, kind):
    torch.manual_seed(0)
    if kind == "fpn":
        model = build_model("resnet18", classes=3, in_channels=4, class_names=["a", "b", "c"], norm_mean=[0.0] * 4,
                            norm_std=[1.0] * 4, training={"epochs": 1})
    else:
        model = wrap(smp.Unet("resnet18", encoder_weights=None, in_channels=4), classes=3, lfe="constant")
    model = _trained_a_bit(model)
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    assert path.is_file() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    assert not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    x = torch.randn(1, 4, 48, 40)
    with torch.no_grad():
        out_a, out_b = model(x), loaded(x)
    for k in out_a:
        assert torch.isfinite(out_a[k]).all() and torch.equal(out_a[k], out_b[k])
    assert read_checkpoint_config(path) == model.config


def test_float16_storage_is_half_the_size_and_rounds_only(tmp_path):
    torch.manual_seed(0)
    model = _trained_a_bit(build_model("resnet18", classes=1))
    full = save_checkpoint(model, tmp_path / "f32.safetensors")
    half = save_checkpoint(model, tmp_path / "f16.safetensors", storage_dtype="float16")
    assert half.stat().st_size < 0.55 * full.stat().st_size
    with safe_open(str(half), "pt") as f:
        assert f.metadata()["smallseg_storage_dtype"] == "float16"
        assert f.get_tensor("encoder.conv1.weight").dtype == torch.float16
    loaded = load_checkpoint(half)
    for k, v in model.state_dict().items():
        w = loaded.state_dict()[k]
        assert w.dtype == v.dtype
        expected = v.half().to(v.dtype) if v.is_floating_point() else v
        assert torch.equal(w, expected), k


def test_corrupt_truncated_and_foreign_files_are_rejected(tmp_path):
    model = build_model("resnet18", classes=1, encoder_output_stride=32)
    good = save_checkpoint(model, tmp_path / "good.safetensors")
    data = good.read_bytes()

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file at all" * 10)
    for bad in (truncated, garbage):
        with pytest.raises(SmallsegError, match="truncated or corrupt") as info:
            load_checkpoint(bad)
        assert "\n" not in str(info.value) and str(bad) in str(info.value)

    foreign = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(SmallsegError, match="not a smallseg checkpoint"):
        load_checkpoint(foreign)

    with pytest.raises(SmallsegError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


def _makedirs_pickle(path) -> bytes:
    """A protocol-0 pickle whose loading calls os.makedirs(path)."""
    return b"cos\nmakedirs\n(V" + str(path).encode() + b"\ntR."


def test_a_pickle_posing_as_a_checkpoint_is_never_executed(tmp_path):
    probe = tmp_path / "probe"
    pickle.loads(_makedirs_pickle(probe))
    assert probe.is_dir()  # the payload is live
    target = tmp_path / "pwned"
    for name in ("evil.safetensors", "evil.pt"):
        evil = tmp_path / name
        evil.write_bytes(_makedirs_pickle(target))
        with pytest.raises(SmallsegError):
            load_checkpoint(evil)
    assert not target.exists()


def test_architecture_mismatch_names_the_difference(tmp_path):
    four = build_model("resnet18", classes=2, in_channels=4, encoder_output_stride=32)
    path = save_checkpoint(four, tmp_path / "four.safetensors")
    three = build_model("resnet18", classes=2, in_channels=3, encoder_output_stride=32)
    with pytest.raises(SmallsegError, match="checkpoint expects 4 input bands, model has 3"):
        load_checkpoint(path, expected_config=three.config)
    with pytest.raises(SmallsegError, match="checkpoint expects 4 input bands, model has 3"):
        load_weights(three, path)
    other_heads = build_model("resnet18", classes=2, in_channels=4, encoder_output_stride=32, heads=("semantic",))
    with pytest.raises(SmallsegError, match="heads"):
        load_weights(other_heads, path)
    # Matching architecture (only bookkeeping differs): loads, weights equal.
    same = build_model("resnet18", classes=2, in_channels=4, encoder_output_stride=32, class_names=["x", "y"])
    load_weights(same, path)
    assert all(torch.equal(v, four.state_dict()[k]) for k, v in same.state_dict().items())
    # A checkpoint whose tensors do not fit its own config (tampered file) fails strictly, in one line.
    tampered = tmp_path / "tampered.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("heads.distance")}
    save_file(tensors, str(tampered), metadata=meta)
    with pytest.raises(SmallsegError, match="missing"):
        load_checkpoint(tampered)


def test_save_refuses_models_without_a_config(tmp_path):
    with pytest.raises(SmallsegError, match="ModelConfig"):
        save_checkpoint(torch.nn.Conv2d(1, 1, 1), tmp_path / "x.safetensors")
