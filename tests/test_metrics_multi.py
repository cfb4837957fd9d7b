"""Scoring several images at once equals pycocotools' own multi-image evaluation."""

import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from smallseg.errors import SmallsegError
from smallseg.instances import Instances
from smallseg.metrics.multi import evaluate_images


def _scene(seed, h, w):
    rng = np.random.default_rng(seed)
    gt = np.zeros((h, w), np.int32)
    pred = np.zeros((h, w), np.int32)
    for k in range(1, 9):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        gt[y:y + rng.integers(3, 8), x:x + rng.integers(3, 8)] = k
        dy, dx = rng.integers(-1, 2, 2)
        if rng.random() < 0.85:
            pred[max(y + dy, 0):y + dy + 5, max(x + dx, 0):x + dx + 5] = k
    ids = np.unique(pred[pred > 0])
    scores = rng.random(len(ids)).astype(np.float32)
    inst = Instances(pred, ids.astype(np.int64), np.ones(len(ids), np.int32), scores, np.zeros((len(ids), 2)))
    return gt, inst


def _pycocotools(scenes):
    images, gts, dts = [], [], []
    for img_id, (gt, inst) in enumerate(scenes, start=1):
        h, w = gt.shape
        images.append({"id": img_id, "height": h, "width": w})
        for k in np.unique(gt[gt > 0]):
            rle = mask_utils.encode(np.asfortranarray(gt == k).astype(np.uint8))
            gts.append({"id": len(gts) + 1, "image_id": img_id, "category_id": 1, "segmentation": rle,
                        "area": float((gt == k).sum()), "bbox": list(mask_utils.toBbox(rle)), "iscrowd": 0})
        for k, s in zip(inst.ids, inst.scores):
            rle = mask_utils.encode(np.asfortranarray(inst.labels == k).astype(np.uint8))
            dts.append({"image_id": img_id, "category_id": 1, "segmentation": rle, "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": gts, "categories": [{"id": 1, "name": "x"}]}
        coco.createIndex()
        e = COCOeval(coco, coco.loadRes(dts), "segm")
        e.params.maxDets = [1000]
        e.params.areaRngLbl = ["all"]
        e.params.areaRng = [[0, 1e10]]
        e.evaluate()
        e.accumulate()
    p = e.eval["precision"][:, :, 0, 0, 0]
    return float(np.mean(p[p > -1]))


def test_equals_pycocotools_over_several_images():
    scenes = [_scene(1, 40, 50), _scene(2, 64, 30), _scene(3, 30, 30)]
    report = evaluate_images([(gt, None, inst) for gt, inst in scenes])
    assert report.metrics["AP"] == pytest.approx(_pycocotools(scenes), abs=1e-9)
    assert report.metrics["count_gt"] == sum(len(np.unique(gt[gt > 0])) for gt, _ in scenes)


def test_reference_boundary_is_refused():
    gt, inst = _scene(1, 40, 50)
    with pytest.raises(SmallsegError, match="reference"):
        evaluate_images([(gt, None, inst)], boundary="reference")
