"""Boundaries, Boundary IoU and Boundary AP: hand-computed cases, the boundary-iou-api definition (OpenCV) and
faster-coco-eval's ``iouType="boundary"`` as independent references."""

from __future__ import annotations

import contextlib
import io
import logging

import cv2
import numpy as np
import pytest
from faster_coco_eval import COCO as FastCOCO
from faster_coco_eval import COCOeval_faster
from pycocotools import mask as mask_utils

from smallseg.metrics.boundary import boundary_rles, mask_boundary, reference_boundary_width_px
from smallseg.metrics.coco import coco_evaluate, summarize
from smallseg.metrics.evaluation import evaluate
from smallseg.metrics.objects import objects_from_labels

from test_metrics_coco import perturbed_prediction, planted_scene


def boundary_iou_api_boundary(mask: np.ndarray, dilation: int) -> np.ndarray:
    """boundary-iou-api's mask_to_boundary (Cheng et al.) on the FULL image, with a given d."""
    h, w = mask.shape
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=dilation)[1:h + 1, 1:w + 1]
    return (mask.astype(np.uint8) - eroded).astype(bool)


def test_boundary_of_a_square_by_hand():
    square = np.ones((10, 10), bool)
    assert mask_boundary(square, 1).sum() == 100 - 8 * 8
    assert mask_boundary(square, 2).sum() == 100 - 6 * 6
    assert mask_boundary(square, 5).sum() == 100  # no 11 x 11 square fits: all boundary
    thin = np.ones((3, 40), bool)
    assert mask_boundary(thin, 1).sum() == 120 - 38


def test_boundary_iou_of_two_shifted_squares_by_hand():
    # A = rows 0-9, cols 0-9; B = rows 0-9, cols 1-10 (30 x 30 image), d = 1.
    # Boundaries: 36 px each (rings). Shared: rows 0 and 9 over cols 1-9 = 18 px. IoU = 18 / (36+36-18) = 1/3.
    labels = np.zeros((30, 30), np.int32)
    labels[0:10, 0:10] = 1
    pred = np.zeros_like(labels)
    pred[0:10, 1:11] = 1
    gt = objects_from_labels(labels)
    dt = objects_from_labels(pred, detection_ids=True)
    gb = boundary_rles(gt, {1: 1})[0]
    db = boundary_rles(dt, {1: 1})[0]
    assert mask_utils.area(gb) == 36 and mask_utils.area(db) == 36
    assert mask_utils.iou([db], [gb], [0])[0, 0] == pytest.approx(1 / 3)
    assert mask_utils.iou([dt.rles[0]], [gt.rles[0]], [0])[0, 0] == pytest.approx(90 / 110)
    # End to end: the one matched pair's boundary IoU is the summary.
    result = evaluate(labels, pred, boundary_width="1px")
    assert result.metrics["boundary_IoU"] == pytest.approx(1 / 3)
    assert result.metrics["F1"] == 1.0
    # Boundary AP: pair score min(9/11, 1/3) = 1/3 < 0.5, so no match at any threshold.
    assert result.metrics["boundary_AP"] == 0.0
    assert result.metrics["AP50"] == pytest.approx(1.0)  # pycocotools: tp / (tp + fp + eps)


def test_crop_boundaries_equal_boundary_iou_api_on_the_full_image():
    rng = np.random.default_rng(2)
    labels, _ = planted_scene(rng, (70, 90), 25)  # several objects cut by the image edge
    objects = objects_from_labels(labels)
    for d in (1, 2, 3, 7):
        rles = boundary_rles(objects, {1: d})
        for k, rle in zip(objects.ids.tolist(), rles):
            expected = boundary_iou_api_boundary(labels == k, d)
            assert np.array_equal(mask_utils.decode(rle).astype(bool), expected), (k, d)


def test_reference_width_is_two_percent_of_the_diagonal():
    assert reference_boundary_width_px((10000, 10000)) == 283  # 0.02 * 14142.1 = 282.8
    assert reference_boundary_width_px((100, 120)) == 3  # 0.02 * 156.2 = 3.12
    assert reference_boundary_width_px((20, 20)) == 1  # 0.57 -> at least 1
    # 0.02 * 175 = 3.5 exactly: faster-coco-eval (C++ round(x - 1e-10)) gives 3, Python's round 4.
    assert reference_boundary_width_px((105, 140)) == 3


def faster_boundary_eval(labels, pred, scores, classes=None, pred_classes=None, max_dets=1000):
    """faster-coco-eval's own Boundary AP on full-image masks."""
    height, width = labels.shape
    gt_ids = np.unique(labels)[1:]
    dt_ids = np.unique(pred)[1:]

    def cls(raster, mask):
        return 1 if raster is None else int(np.bincount(raster[mask]).argmax())

    anns = []
    for k in gt_ids.tolist():
        m = labels == k
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        anns.append({"id": k, "image_id": 1, "category_id": cls(classes, m), "segmentation": rle,
                     "area": float(m.sum()), "iscrowd": 0})
    categories = sorted({a["category_id"] for a in anns} | {1, 2})
    dataset = {"images": [{"id": 1, "height": height, "width": width}], "annotations": anns,
               "categories": [{"id": c} for c in categories]}
    results = []
    for n, k in enumerate(dt_ids.tolist()):
        m = pred == k
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        results.append({"image_id": 1, "category_id": cls(pred_classes, m), "segmentation": rle,
                        "score": float(scores[n])})
    logging.getLogger("faster_coco_eval").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = FastCOCO(dataset)
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="boundary")
        evaluator.params.maxDets = [max_dets]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval, categories


@pytest.mark.parametrize("shape,seed", [((105, 140), 0), ((160, 200), 1), ((120, 90), 2)])
def test_reference_boundary_ap_equals_faster_coco_eval(shape, seed):
    rng = np.random.default_rng(seed)
    labels, classes = planted_scene(rng, shape, 40)
    pred, pred_classes, scores = perturbed_prediction(rng, labels, classes)
    reference, categories = faster_boundary_eval(labels, pred, scores, classes, pred_classes)

    gt = objects_from_labels(labels, class_raster=classes)
    dt = objects_from_labels(pred, class_raster=pred_classes, detection_ids=True,
                             score_by_id=dict(zip(np.unique(pred)[1:].tolist(), scores.tolist())))
    d = {1: reference_boundary_width_px(shape)}
    ours = coco_evaluate(gt, dt, category_ids=categories, max_dets=1000,
                         gt_boundaries=boundary_rles(gt, d), dt_boundaries=boundary_rles(dt, d))
    np.testing.assert_allclose(ours.eval["precision"], reference["precision"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.eval["recall"], reference["recall"], rtol=0, atol=1e-9)

    # The public API in reference mode reports the same Boundary AP.
    result = evaluate(labels, pred, gt_classes=classes, pred_classes=pred_classes,
                      pred_objects=dict(zip(np.unique(pred)[1:].tolist(), scores.tolist())), boundary="reference")
    p = reference["precision"][:, :, :, 0, -1]
    assert result.metrics["boundary_AP"] == pytest.approx(float(np.mean(p[p > -1])), abs=1e-12)
    assert result.settings["boundary"]["mode"] == "reference"
    assert result.settings["boundary"]["d_px"] == d[1]
    # Boundary AP is stricter than mask AP on the same matches.
    assert result.metrics["boundary_AP"] <= result.metrics["AP"]
    assert summarize(ours)["AP"] == result.metrics["boundary_AP"]


def test_fixed_width_in_metres_uses_the_pixel_size():
    labels = np.zeros((40, 40), np.int32)
    labels[5:25, 5:25] = 1
    result = evaluate(labels, labels, boundary_width="0.6m", pixel_size="0.3m")
    assert result.settings["boundary"]["d_px"] == 2
    assert result.metrics["boundary_IoU"] == 1.0
    result = evaluate(labels, labels, boundary_width="1mm", pixel_size="0.25mm")
    assert result.settings["boundary"]["d_px"] == 4
