"""A training config can name a DICOM series + a DICOM SEG (``dicom_seg:`` source): the slices' targets are the
SEG's segments (classes by segment label, objects its 3-D components), and ``smallseg train`` runs on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from medical_helpers import random_hu, write_series

from smallseg.cli import main
from smallseg.errors import SmallsegError
from smallseg.io.medical import read_volume
from smallseg.train.run_config import class_mapping, load_source
from smallseg.train.targets import encode_targets

MODEL = {"encoder_name": "resnet18", "encoder_depth": 3, "encoder_output_stride": 8, "in_channels": 1, "classes": 2,
         "class_names": ["lesion", "nodule"], "decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32,
         "refine_channels": [8, 8], "max_distance_px": 8}


def _series_and_seg(tmp_path):
    from smallseg.pipeline.dicom_batch import write_dicom_seg  # highdicom: checked by the caller

    hu = random_hu((6, 40, 48), seed=5)
    labels = np.zeros(hu.shape, np.int32)
    labels[1:4, 4:12, 5:13] = 1    # a lesion over three slices
    labels[2, 20:27, 25:33] = 2    # a nodule on slice 2
    labels[4, 26:34, 8:15] = 3     # another nodule on slice 4
    series = tmp_path / "ct"
    write_series(series, hu)
    seg = write_dicom_seg(labels, np.array([1, 2, 2]), read_volume(series), tmp_path / "lesions.seg.dcm",
                          class_names=["Lesion", "nodule"])
    return hu, labels, series, seg


def test_dicom_seg_source_targets_are_the_segments_and_train_runs(tmp_path):
    pytest.importorskip("highdicom")
    hu, labels, series, seg = _series_and_seg(tmp_path)
    classes_of = np.array([0, 1, 2, 2])[labels]  # the class each voxel was written with
    spec = {"dicom_seg": {"series": "ct", "seg": "lesions.seg.dcm", "class_map": {"Lesion": "lesion"}}}
    slices = load_source(spec, tmp_path, class_mapping(MODEL))
    by_z = {int(item.name.rsplit(" ", 1)[1]): item for item in slices}
    assert sorted(by_z) == [0, 1, 2, 3, 4, 5]  # 4 slices with objects + the 2 without
    for z, item in by_z.items():
        assert np.array_equal(item.image[:, :, 0], hu[z]) and item.modality == "CT"
        targets = encode_targets(item.instances, item.classes, MODEL["max_distance_px"])
        assert np.array_equal(targets["semantic"], classes_of[z])  # class per pixel = the SEG's segment
        assert np.array_equal(targets["centroid_mask"], labels[z] > 0)
        # one object per written object: the segments' 3-D components
        assert len(np.unique(item.instances[item.instances > 0])) == len(np.unique(labels[z][labels[z] > 0]))
    assert len({int(by_z[z].instances[6, 8]) for z in (1, 2, 3)}) == 1  # the lesion: one object on 3 slices

    config = {"name": "seg", "model": MODEL, "data": {"train": [spec], "val": []},
              "normalize": {"kind": "window", "windows": [[-250, 1500]]},
              "augment": {"crop_size": 32, "scale_range": [0.9, 1.1], "mosaic_p": 0.0},
              "optim": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "lr": 0.003, "warmup_steps": 1},
              "seed": 3, "device": "cpu", "tune_decode": False}
    path = tmp_path / "seg.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run)]) == 0
    history = [json.loads(line) for line in (run / "history.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in history] == [1] and np.isfinite(history[0]["loss_total"])
    assert (run / "last.safetensors").is_file()


def test_dicom_seg_source_with_a_typo_or_an_unknown_segment_is_one_line(tmp_path):
    pytest.importorskip("highdicom")
    _hu, _labels, _series, _seg = _series_and_seg(tmp_path)
    with pytest.raises(SmallsegError, match="unknown key 'segmentation'; allowed: .*seg, series"):
        load_source({"dicom_seg": {"series": "ct", "segmentation": "lesions.seg.dcm"}}, tmp_path)
    with pytest.raises(SmallsegError, match="missing seg"):
        load_source({"dicom_seg": {"series": "ct"}}, tmp_path)
    # 'Lesion' is no model class and no class_map renames it
    with pytest.raises(SmallsegError, match="Lesion"):
        load_source({"dicom_seg": {"series": "ct", "seg": "lesions.seg.dcm"}}, tmp_path, class_mapping(MODEL))
