"""A checkpoint is data: attack checkpoints, built here, are refused in one line before anything is built.

Each attack file is a real safetensors checkpoint of a real (tiny) wrapped smp model whose config JSON was
edited the way an attacker would: the loader must refuse it naming the field, without unpickling, opening
a file the config names, or touching the network (watched with Python's audit hooks, not mocks).
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from smallseg.errors import SmallsegError
from smallseg.models import ModelConfig, build_from_config, load_checkpoint, read_checkpoint_config, save_checkpoint, wrap
from smallseg.models.registry import WEIGHTS_DIR, load_model, weights_fingerprint
from smallseg.models.validate import check_encoder_name, check_smp_kwargs

# ---- helpers ------------------------------------------------------------------------------------------------

_EVENTS: list[tuple[str, tuple]] = []
_WATCHING = False


def _audit(event: str, args: tuple) -> None:
    if _WATCHING and (event.startswith("socket.") or event in ("open", "os.listdir", "os.scandir", "pickle.find_class")):
        _EVENTS.append((event, args))


sys.addaudithook(_audit)  # hooks cannot be removed; this one records only inside watch()


@contextmanager
def watch():
    """Record socket use, file opens, directory listings and pickle global look-ups in the block."""
    global _WATCHING
    _EVENTS.clear()
    _WATCHING = True
    try:
        yield _EVENTS
    finally:
        _WATCHING = False


class _Payload:
    """Unpickling this writes ``marker``: the stand-in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def _evil_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(tensors, metadata) of a real checkpoint: a wrapped smp Unet on a timm encoder (the attacked path)."""
    torch.manual_seed(0)
    model = wrap(smp.Unet("tu-resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8)),
                 classes=1, lfe=None)
    path = save_checkpoint(model, tmp_path_factory.mktemp("base") / "base.safetensors")
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def _attack(tmp_path: Path, base, edit, name: str = "attack.safetensors") -> Path:
    """A copy of the base checkpoint whose config dict went through ``edit`` (which may also return text)."""
    tensors, metadata = base
    config = json.loads(metadata["smallseg_config"])
    edited = edit(config)
    text = edited if isinstance(edited, str) else json.dumps(config)
    path = tmp_path / name
    save_file(tensors, str(path), metadata={**metadata, "smallseg_config": text})
    return path


def _refused(path: Path, *fields: str, seconds: float = 2.0) -> str:
    """Loading ``path`` (config only and whole model) fails fast in one line naming each of ``fields``."""
    for load in (read_checkpoint_config, load_checkpoint, load_model):
        start = time.perf_counter()
        with pytest.raises(SmallsegError) as info:
            load(path)
        elapsed = time.perf_counter() - start
        message = str(info.value)
        assert "\n" not in message and str(path) in message, message
        for field in fields:
            assert field in message, message
        assert elapsed < seconds, (load.__name__, elapsed)
    return message


# ---- the control: the unedited file loads ----------------------------------------------------------------


def test_the_base_checkpoint_loads(tmp_path, base):
    model = load_checkpoint(_attack(tmp_path, base, lambda c: None))
    assert model.config.smp_arch == "Unet" and model.config.smp_kwargs["encoder_name"] == "tu-resnet18"
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32))["semantic"].shape == (1, 2, 32, 32)


def test_shipped_checkpoints_validate_and_keep_their_exact_config_json():
    for path in sorted(WEIGHTS_DIR.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            stored = f.metadata()["smallseg_config"]
        # Validation changes nothing: same JSON, so the same fingerprint in every resume marker.
        assert ModelConfig.from_json(stored).to_json() == stored, path.name


# ---- code execution through smp_kwargs -> timm.create_model ------------------------------------------------


def test_checkpoint_path_to_a_pickle_is_refused_and_never_unpickled(tmp_path, base):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.is_file()  # the payload is live
    marker = tmp_path / "pwned"
    evil = _evil_pickle(tmp_path / "evil.pt", marker)

    def edit(config):
        config["smp_kwargs"]["checkpoint_path"] = str(evil)

    with watch() as events:
        message = _refused(_attack(tmp_path, base, edit), "smp_kwargs.checkpoint_path")
    assert "not an allowed argument" in message
    assert not marker.exists()
    assert not [e for e in events if e[0] == "open" and str(evil) in str(e[1][0])], events


@pytest.mark.parametrize("key, value", [
    ("pretrained", True),
    ("pretrained_cfg", {"file": "/etc/passwd", "url": "https://example.com/w.pth"}),
    ("pretrained_cfg_overlay", {"hf_hub_id": "org/repo"}),
    ("encoder_weights", "imagenet"),
    ("__class__", "os.system"),
    ("act_layer", "builtins.eval"),
    ("activation", "builtins.eval"),
])
def test_keys_naming_weights_files_urls_or_callables_are_refused(tmp_path, base, key, value):
    def edit(config):
        config["smp_kwargs"][key] = value

    with watch() as events:
        _refused(_attack(tmp_path, base, edit), f"smp_kwargs.{key}")
    assert not [e for e in events if e[0].startswith("socket.")]


def test_a_keyword_of_another_architecture_cannot_fall_through_to_the_encoder():
    # Linknet has no decoder_attention_type: smp would pass it on in **kwargs to the encoder / timm.
    with pytest.raises(SmallsegError, match="smp_kwargs.decoder_attention_type: not an allowed argument of smp Linknet"):
        check_smp_kwargs("Linknet", {"encoder_name": "resnet18", "decoder_attention_type": "scse"})
    assert check_smp_kwargs("Unet", {"encoder_name": "resnet18", "decoder_attention_type": "scse"})


def test_unknown_architectures_and_top_level_keys_are_refused(tmp_path, base):
    def arch(config):
        config["smp_arch"] = "torch.nn.Module"

    _refused(_attack(tmp_path, base, arch, "arch.safetensors"), "smp_arch", "not an smp architecture")

    def dunder(config):
        config["__class__"] = "os.system"

    _refused(_attack(tmp_path, base, dunder, "dunder.safetensors"), "unknown keys", "__class__")

    def training_dunder(config):
        config["training"] = {"__reduce__": ["os.system", "id"]}

    _refused(_attack(tmp_path, base, training_dunder, "training.safetensors"), "training", "__reduce__")


# ---- network and local files through the encoder name ----------------------------------------------------


@pytest.mark.parametrize("where", ["encoder_name", "smp_kwargs.encoder_name"])
def test_a_hub_encoder_name_is_refused_without_network(tmp_path, base, where):
    def edit(config):
        config["smp_kwargs"]["encoder_name"] = "tu-hf-hub:org/repo"
        config["encoder_name"] = "tu-hf-hub:org/repo" if where == "encoder_name" else config["encoder_name"]

    with watch() as events:
        message = _refused(_attack(tmp_path, base, edit), where)
    assert "hub, path and URL forms are not loaded" in message
    assert not [e for e in events if e[0].startswith("socket.")], events


def test_a_local_dir_encoder_name_is_refused_without_reading_the_folder(tmp_path, base):
    folder = tmp_path / "localdir"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 1}))
    marker = tmp_path / "pwned"
    _evil_pickle(folder / "pytorch_model.bin", marker)
    name = f"tu-local-dir:{folder}"

    def edit(config):
        config["encoder_name"] = config["smp_kwargs"]["encoder_name"] = name

    with watch() as events:
        _refused(_attack(tmp_path, base, edit), "encoder_name")
    touched = [e for e in events if e[0] in ("open", "os.listdir", "os.scandir") and str(folder) in str(e[1][0])]
    assert not touched and not marker.exists()


@pytest.mark.parametrize("name", ["tu-../resnet18", "tu-resnet18/x", "hf_hub:org/repo", "file:resnet18",
                                  "tu-resnet18\\x", "tu-not_a_timm_model", "not-an-smp-encoder", "tu-", ""])
def test_encoder_names_outside_the_registries_are_refused(name):
    with pytest.raises(SmallsegError, match="model config encoder_name"):
        check_encoder_name("encoder_name", name)


def test_registry_names_pass_including_timm_pretrained_tags():
    for name in ("resnet18", "efficientnet-b0", "tu-mobilenetv3_small_100", "tu-resnet18.a1_in1k"):
        assert check_encoder_name("encoder_name", name) == name


# ---- wrongly typed, oversized, deep and non-finite values: one line at load time ----------------------------


@pytest.mark.parametrize("field, value, expected", [
    ("input_scale", "abc", "input_scale: 'abc' is not a number"),
    ("training", 5, "training: 5 is not a JSON object"),
    ("norm_mean", [0.5, 0.5], "norm_mean: 2 values; need 3"),
    ("norm_std", [1.0, 0.0, 1.0], "norm_std[1]: 0.0; must be > 0"),
    ("classes", True, "classes: True is not an integer"),
    ("tile_size_px", 1_000_000_000, "tile_size_px: 1000000000 is outside"),
    ("max_distance_px", 1e12, "max_distance_px"),
    ("heads", "semantic", "heads"),
    ("lfe_dilations", [4, 2, "1"], "lfe_dilations[2]"),
    ("class_names", ["x" * 100_000], "class_names[0]"),
    ("class_names", ["car\nbuilding"], "class_names[0]"),  # a line break would split CSV rows and messages
    ("band_indices", [1, 2, -3], "band_indices[2]"),
])
def test_wrong_types_and_sizes_name_the_field(tmp_path, base, field, value, expected):
    def edit(config):
        config[field] = value

    _refused(_attack(tmp_path, base, edit), expected)


@pytest.mark.parametrize("key, value, expected", [
    ("train_pixel_size_m", "abc", "training.train_pixel_size_m"),
    ("train_pixel_size_m", [2.0, 1.0], "training.train_pixel_size_m"),
    ("decode", {"min_score": "high"}, "training.decode.min_score"),
    ("decode_by_modality", {"CT": {"fg_threshold": [1]}}, "training.decode_by_modality.CT.fg_threshold"),
    ("intensity_preset", {"kind": "window", "low": "-1000", "high": 400}, "training.intensity_preset.low"),
    ("intensity_preset", {"kind": "window", "command": "rm"}, "training.intensity_preset.command"),
    ("notes", "x" * 100_000, "training.notes"),
    ("history", list(range(5000)), "training.history"),
])
def test_training_metadata_the_pipelines_read_is_typed(tmp_path, base, key, value, expected):
    def edit(config):
        config["training"] = {**config["training"], key: value}

    _refused(_attack(tmp_path, base, edit), expected)


def test_deep_training_json_is_refused(tmp_path, base):
    def deep(config):
        nested = {}
        for _ in range(50):
            nested = {"a": nested}
        config["training"] = nested

    _refused(_attack(tmp_path, base, deep, "deep.safetensors"), "training", "nested deeper than")

    def very_deep(config):  # deeper than Python's JSON parser can recurse
        return json.dumps(config)[:-1] + ', "training": ' + "[" * 200_000 + "]" * 200_000 + "}"

    _refused(_attack(tmp_path, base, very_deep, "very_deep.safetensors"), "not valid JSON")

    def huge(config):
        return json.dumps({**config, "training": {"pad": ["x" * 4000] * 300}})

    _refused(_attack(tmp_path, base, huge, "huge.safetensors"), "characters of JSON")


@pytest.mark.parametrize("text_edit, expected", [
    (lambda t: t.replace('"input_scale": 1.0', '"input_scale": NaN'), "NaN is not a JSON number"),
    (lambda t: t.replace('"max_distance_px": 48.0', '"max_distance_px": Infinity'), "Infinity is not a JSON number"),
    (lambda t: t.replace('"classes": 1,', '"classes": 1' + "0" * 5000 + ","), "not valid JSON"),
])
def test_non_finite_and_absurd_numbers_are_refused(tmp_path, base, text_edit, expected):
    def edit(config):
        text = json.dumps(config)
        edited = text_edit(text)
        assert edited != text
        return edited

    _refused(_attack(tmp_path, base, edit), expected)


def test_values_from_python_are_checked_too():
    with pytest.raises(SmallsegError, match=r"classes: an integer of \d+ bits is outside 1..256"):
        ModelConfig(classes=10**5000)  # too long for Python to print: the message must not crash
    assert ModelConfig(input_scale=np.float32(0.5), norm_mean=list(np.zeros(3))).to_json()  # numpy scalars welcome


def test_non_finite_floats_from_python_are_refused_too():
    with pytest.raises(SmallsegError, match=r"input_scale: nan is not finite"):
        ModelConfig(input_scale=float("nan"))
    with pytest.raises(SmallsegError, match=r"training.decode.min_score: inf is not finite"):
        ModelConfig(training={"decode": {"min_score": float("inf")}})


def test_a_config_edited_after_construction_is_checked_again_by_build_from_config(base):
    config = ModelConfig.from_json(base[1]["smallseg_config"])
    config.smp_kwargs["checkpoint_path"] = "evil.pt"
    with pytest.raises(SmallsegError, match="smp_kwargs.checkpoint_path"):
        build_from_config(config)


# ---- pickles given as a model ------------------------------------------------------------------------------


def test_a_pickled_model_is_named_as_such_and_never_unpickled(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")  # torch.save's zip format
    marker = tmp_path / "pwned"
    _evil_pickle(tmp_path / "evil.pt", marker)
    _evil_pickle(tmp_path / "evil.safetensors", marker)  # a pickle posing as safetensors, protocol 2
    (tmp_path / "legacy.pth").write_bytes(pickle.dumps({"w": [1.0]}, protocol=0))
    for name in ("model.pt", "evil.pt", "evil.safetensors", "legacy.pth"):
        with watch() as events:
            with pytest.raises(SmallsegError) as info:
                load_model(str(tmp_path / name))
        message = str(info.value)
        assert "not a safetensors checkpoint (pickled models are not loaded: they can run code)" in message, name
        assert "truncated" not in message and "\n" not in message
        assert not [e for e in events if e[0] == "pickle.find_class"]
    assert not marker.exists()


def test_truncated_or_tampered_safetensors_give_one_line(tmp_path, base):
    good = _attack(tmp_path, base, lambda c: None, "good.safetensors")
    data = good.read_bytes()
    cases = {
        "truncated.safetensors": data[: len(data) // 3],
        "short.safetensors": data[:5],
        "header.safetensors": data[:8] + b"{" + b"\x00" * 40 + data[49:],
        "empty.safetensors": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SmallsegError, match="truncated or corrupt") as info:
            load_model(str(tmp_path / name))
        assert "\n" not in str(info.value) and name in str(info.value)
    # Valid safetensors whose tensors were swapped for others of another shape: strict loading says so.
    tensors, metadata = base
    k = next(iter(tensors))
    swapped = tmp_path / "swapped.safetensors"
    save_file({**tensors, k: torch.zeros(3)}, str(swapped), metadata=metadata)
    with pytest.raises(SmallsegError, match="differ in shape") as info:
        load_model(str(swapped))
    assert "\n" not in str(info.value)


# ---- one model identity ------------------------------------------------------------------------------------


def test_weights_fingerprint_changes_with_weights_or_config_only(tmp_path, base):
    model = load_checkpoint(_attack(tmp_path, base, lambda c: None))
    a = weights_fingerprint(model)
    assert len(a) == 64 and a == weights_fingerprint(load_checkpoint(tmp_path / "attack.safetensors"))
    if torch.cuda.is_available():  # the same model on a GPU is the same model
        assert weights_fingerprint(load_checkpoint(tmp_path / "attack.safetensors", device="cuda")) == a
    model.config.training = {**model.config.training, "decode": {"min_score": 0.5}}
    b = weights_fingerprint(model)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    c = weights_fingerprint(model)
    assert len({a, b, c}) == 3
    assert weights_fingerprint(model.to(torch.bfloat16)) != c  # other bytes, and bfloat16 (no numpy dtype) hashes


def test_save_refuses_a_config_that_would_not_load_again(tmp_path):
    model = wrap(smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8)), classes=1)
    model.config.training = {"decode": {"min_score": "high"}}
    with pytest.raises(SmallsegError, match="training.decode.min_score"):
        save_checkpoint(model, tmp_path / "m.safetensors")
    assert not os.listdir(tmp_path)
