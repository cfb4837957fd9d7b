"""A training config says which DICOM modalities a model's classes are for (``model.classes_by_modality``), and
every pipeline reads it back from the checkpoint (smallseg.pipeline.classes)."""

from __future__ import annotations

import pytest
import yaml

from smallseg.errors import SmallsegError
from smallseg.pipeline.classes import NON_DICOM_KEY, modality_classes, trained_modalities


def _config(tmp_path, classes_by_modality):
    model = {"encoder_name": "resnet18", "encoder_depth": 3, "encoder_output_stride": 8, "in_channels": 1,
             "classes": 1, "class_names": ["nucleus"], "decoder_pyramid_channels": 32,
             "decoder_segmentation_channels": 32, "refine_channels": [8, 8], "max_distance_px": 8}
    if classes_by_modality is not None:
        model["classes_by_modality"] = classes_by_modality
    source = {"synthetic": "nuclei", "count": 1, "size": 64, "seed": 1}
    config = {"name": "one-class-nuclei", "model": model, "data": {"train": [source], "val": [source]},
              "augment": {"crop_size": 48}, "optim": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 1},
              "device": "cpu"}
    path = tmp_path / "nuclei.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _model_config(path):
    from smallseg.train.loop import _resolve_model_config, load_source, load_train_config

    config = load_train_config(path)
    images = [im for spec in config.data["train"] for im in load_source(spec, path.parent)]
    return _resolve_model_config(config, images)


def test_a_one_class_model_says_its_modalities_only_when_its_config_does(tmp_path):
    # one class named "nucleus": its name alone does not say which modalities it was trained on
    plain = _model_config(_config(tmp_path, None))
    assert "classes_by_modality" not in plain.training and trained_modalities(plain) is None
    declared = _model_config(_config(tmp_path, {NON_DICOM_KEY: ["nucleus"], "sm": ["nucleus"]}))
    assert declared.training["classes_by_modality"] == {NON_DICOM_KEY: ["nucleus"], "SM": ["nucleus"]}
    assert trained_modalities(declared) == {"", "SM"}
    assert modality_classes(declared, "") == [1] and modality_classes(declared, "SM") == [1]
    assert modality_classes(declared, "CT") is None  # not trained on CT: nothing is claimed
    any_case = _model_config(_config(tmp_path, {"NON-DICOM": ["nucleus"]}))
    assert any_case.training["classes_by_modality"] == {NON_DICOM_KEY: ["nucleus"]}


@pytest.mark.parametrize("table, words", [
    ({"CT": ["nodule"]}, "classes_by_modality.CT: need a non-empty list of the model's class names (nucleus)"),
    ({"": ["nucleus"]}, "is not a modality code"),
    ({"C T": ["nucleus"]}, "is not a modality code"),
    (["nucleus"], "need a mapping of modality codes"),
])
def test_a_bad_declaration_is_one_line(tmp_path, table, words):
    with pytest.raises(SmallsegError) as info:
        _model_config(_config(tmp_path, table))
    assert words in str(info.value) and "\n" not in str(info.value)
