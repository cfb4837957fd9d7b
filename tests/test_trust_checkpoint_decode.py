"""A checkpoint's stored decoding settings are data like the rest of it (#11): an unknown key in
``training.decode`` / ``training.decode_by_modality`` is refused in one line when the model is loaded, instead
of being dropped without a word each time the model decodes."""

from __future__ import annotations

import json

import pytest
from conftest import make_tiny_model

from safetensors import safe_open
from safetensors.torch import save_file

from smallseg.errors import SmallsegError
from smallseg.models import load_checkpoint, read_checkpoint_config, save_checkpoint
from smallseg.pipeline.array import decode_config_for


def _saved(tmp_path, training: dict):
    """A real tiny checkpoint whose stored config JSON was then edited (save_checkpoint itself refuses bad
    settings, so a hand-edited or foreign file is the case to guard)."""
    path = save_checkpoint(make_tiny_model(), tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    config = json.loads(metadata["smallseg_config"])
    config["training"] = {**(config.get("training") or {}), **training}
    save_file(tensors, str(path), metadata={**metadata, "smallseg_config": json.dumps(config)})
    return path


def test_known_decode_settings_load_and_are_used(tmp_path):
    model = load_checkpoint(_saved(tmp_path, {"decode": {"fg_threshold": 0.3},
                                              "decode_by_modality": {"CT": {"min_score": 0.2}}}))
    assert decode_config_for(model).fg_threshold == 0.3
    assert decode_config_for(model, modality="ct").min_score == 0.2


@pytest.mark.parametrize("training, needle", [
    ({"decode": {"fg_treshold": 0.3}}, "training.decode: unknown decoding setting(s) 'fg_treshold'"),
    ({"decode_by_modality": {"CT": {"min_scor": 0.2}}},
     "training.decode_by_modality.CT: unknown decoding setting(s) 'min_scor'"),
])
def test_unknown_decode_settings_are_refused_at_load_time(tmp_path, training, needle):
    path = _saved(tmp_path, training)
    for load in (read_checkpoint_config, load_checkpoint):
        with pytest.raises(SmallsegError) as info:
            load(path)
        message = str(info.value)
        assert needle in message and "known: " in message and "fg_threshold" in message, message
        assert "\n" not in message
    with pytest.raises(SmallsegError, match="unknown decoding setting"):  # nor can one be written
        model = make_tiny_model()
        model.config.training = {**(model.config.training or {}), **training}
        save_checkpoint(model, tmp_path / "again.safetensors")
