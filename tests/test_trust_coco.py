"""COCO annotations whose category the file does not declare are never dropped silently (#11): training
refuses the file in one line naming the ids, evaluate scores as pycocotools does and says how many it left out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from smallseg.cli import main
from smallseg.data.coco_json import describe_unknown_categories, unknown_categories
from smallseg.errors import SmallsegError
from smallseg.metrics.evaluation import evaluate
from smallseg.train.data import read_coco


def _rle(y: int, x: int, size: int = 32) -> dict:
    m = np.zeros((size, size), np.uint8, order="F")
    m[y:y + 5, x:x + 5] = 1
    r = mask_utils.encode(m)
    r["counts"] = r["counts"].decode("ascii")
    return r


def _dataset(folder: Path, categories_of_annotations=(1, 7, 7, 9)) -> Path:
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "im.png")
    anns = [{"id": i + 1, "image_id": 1, "category_id": cat, "segmentation": _rle(1 + 7 * i, 1 + 7 * i), "area": 25,
             "bbox": [1 + 7 * i, 1 + 7 * i, 5, 5], "iscrowd": 0} for i, cat in enumerate(categories_of_annotations)]
    path = folder / "gt.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "im.png", "height": 32, "width": 32}],
                                "annotations": anns, "categories": [{"id": 1, "name": "car"}]}))
    return path


def test_unknown_categories_counts_each_undeclared_id(tmp_path):
    data = json.loads(_dataset(tmp_path).read_text())
    assert unknown_categories(data) == {7: 2, 9: 1}
    data["categories"] += [{"id": 7}, {"id": 9}]
    assert unknown_categories(data) == {}
    line = describe_unknown_categories({7: 2, 9: 1}, "gt.json")
    assert line == ("gt.json: 3 annotation(s) have category ids not declared in its categories: 7 (2 annotations), "
                    "9 (1 annotation)")


def test_training_refuses_annotations_of_undeclared_categories(tmp_path):
    path = _dataset(tmp_path)
    with pytest.raises(SmallsegError, match=r"gt.json: 3 annotation\(s\) have category ids not declared .*7 "
                                            r"\(2 annotations\), 9 \(1 annotation\); declare them"):
        read_coco(path, tmp_path)
    assert len(read_coco(_dataset(tmp_path, (1, 1)), tmp_path)) == 1  # a consistent file still reads


def test_train_cli_names_the_ids_in_one_line(tmp_path, capsys):
    import yaml

    _dataset(tmp_path)
    config = tmp_path / "coco.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"encoder_name": "resnet18", "encoder_depth": 3, "encoder_output_stride": 8, "classes": 1},
        "data": {"train": [{"coco": {"annotations": "gt.json", "images": "."}}]}, "device": "cpu"}))
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "category ids not declared" in err and "7 (2 annotations)" in err


def test_evaluate_says_how_many_ground_truth_annotations_it_did_not_score(tmp_path):
    gt = _dataset(tmp_path)
    data = json.loads(gt.read_text())
    results = [{"image_id": 1, "category_id": 1, "segmentation": data["annotations"][0]["segmentation"], "score": 0.9}]
    result = evaluate(str(gt), results)
    assert any("3 annotation(s) have category ids not declared" in w and "not scored" in w for w in result.warnings)
    # scored as pycocotools scores it: only the declared category's one object
    assert result.metrics["count_gt"] == 1 and result.metrics["recall"] == pytest.approx(1.0)
