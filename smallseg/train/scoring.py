"""Scoring predictions on labelled images the way their labels allow (validation, tune-decode, finetune).

- Images with masks (instance labels, vector polygons): COCO mask metrics over all of them together
  (:func:`smallseg.metrics.multi.evaluate_images`). Where an image has a labelled area, a predicted object
  whose pixels lie mostly (more than half) outside it is dropped before scoring: nobody said whether there
  is an object there, so it is neither a true nor a false positive. Ground-truth pixels outside the area are
  not objects.
- Images with box labels (``LabeledImage.boxes_only``): box-level matching at IoU 0.4 (the NEON tree-crown
  benchmark's threshold), giving ``box_F1``, ``box_precision``, ``box_recall``; the predicted objects' boxes are
  their masks' bounding boxes. When every image has boxes only, ``F1`` is ``box_F1``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from smallseg.data.labels.boxes import match_boxes
from smallseg.data.labels.common import LabeledImage
from smallseg.errors import SmallsegError
from smallseg.instances import Instances
from smallseg.metrics.multi import evaluate_images

BOX_IOU = 0.4


def inside_labelled(pred: Instances, not_labelled: np.ndarray) -> Instances:
    """``pred`` without the objects whose pixels are mostly in ``not_labelled`` ((H, W) bool)."""
    if not len(pred) or not not_labelled.any():
        return pred
    labels = np.asarray(pred.labels).astype(np.int64)
    size = int(labels.max()) + 1
    total = np.bincount(labels.ravel(), minlength=size)
    outside = np.bincount(labels[not_labelled].ravel(), minlength=size)
    ids = np.asarray(pred.ids, np.int64)
    keep = outside[ids] * 2 <= total[ids]
    if keep.all():
        return pred
    lookup = np.zeros(size, np.int64)
    lookup[ids[keep]] = ids[keep]
    return Instances(labels=lookup[labels].astype(np.int32), ids=ids[keep], class_ids=pred.class_ids[keep],
                     scores=pred.scores[keep], centroids_yx=pred.centroids_yx[keep])


def _box_mask(item: LabeledImage) -> np.ndarray:
    mask = np.zeros(item.instances.shape, bool)
    for r0, c0, r1, c1 in item.boxes if item.boxes is not None else []:
        mask[max(int(np.floor(r0)), 0):int(np.ceil(r1)), max(int(np.floor(c0)), 0):int(np.ceil(c1))] = True
    return mask


def predicted_boxes(pred: Instances) -> np.ndarray:
    """(N, 4) ``(row0, col0, row1, col1)`` pixel-edge bounding boxes of ``pred``'s objects, in ``pred.ids`` order."""
    labels = np.asarray(pred.labels)
    slices = ndimage.find_objects(labels.astype(np.int64))
    out = np.zeros((len(pred), 4), np.float64)
    for k, i in enumerate(pred.ids):
        box = slices[int(i) - 1] if int(i) - 1 < len(slices) else None
        if box is not None:
            out[k] = (box[0].start, box[1].start, box[0].stop, box[1].stop)
    return out


def score_predictions(images: Sequence[LabeledImage], predictions: Sequence[Instances]) -> dict[str, float]:
    """Numeric metrics of ``predictions[i]`` against ``images[i]`` (module docstring).

    Returns:
        The mask scorer's metrics (``AP``, ``AP_small``, ``F1``, ...) when any image has masks, plus ``box_*``
        when any has boxes (``F1`` = ``box_F1`` when all have boxes only).
    """
    if len(images) != len(predictions) or not images:
        raise SmallsegError(f"scoring: {len(predictions)} predictions for {len(images)} images")

    metrics: dict[str, float] = {}
    masks = [(item, pred) for item, pred in zip(images, predictions) if not item.boxes_only]
    boxes = [(item, pred) for item, pred in zip(images, predictions) if item.boxes_only]
    if masks:
        items = [(item.instances, item.classes, inside_labelled(pred, item.instances < 0)) for item, pred in masks]
        report = evaluate_images(items)
        metrics.update({k: float(v) for k, v in report.metrics.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if boxes:
        tp = fp = fn = 0
        for item, pred in boxes:
            kept = inside_labelled(pred, (item.instances < 0) & ~_box_mask(item))
            t, f, n = match_boxes(item.boxes, predicted_boxes(kept), kept.scores, BOX_IOU)
            tp, fp, fn = tp + t, fp + f, fn + n
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        metrics.update({"box_precision": precision, "box_recall": recall,
                        "box_F1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
                        "box_count_gt": float(tp + fn), "box_count_pred": float(tp + fp)})
        if not masks:
            metrics["F1"] = metrics["box_F1"]
            metrics["count_gt"], metrics["count_pred"] = metrics["box_count_gt"], metrics["box_count_pred"]
    return metrics

