"""Score several images at once (validation sets, benchmark test scenes).

COCO evaluates images independently and accumulates precision over all detections of all images. Stacking
the images top to bottom into one canvas gives the same matching (objects of different images never
overlap, so they never match) and the same accumulation, and lets :func:`evaluate` do the work.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from smallseg.errors import SmallsegError
from smallseg.instances import Instances
from smallseg.metrics.evaluation import evaluate


def evaluate_images(
    items: Sequence[tuple[np.ndarray, np.ndarray | None, Instances]],
    **evaluate_kwargs,
):
    """Score predictions of several images together.

    Args:
        items: per image ``(gt_labels (H, W) int, gt_classes (H, W) int or None (all class 1),
            prediction Instances)``; images may differ in size. Negative GT ids (ignore) count as background.
        **evaluate_kwargs: passed to :func:`smallseg.metrics.evaluate` (size buckets, max_dets, ...).
            ``boundary="reference"`` is refused: its width depends on each image's diagonal.

    Returns:
        The :class:`~smallseg.metrics.evaluation.Evaluation` over all images.
    """
    if not items:
        raise SmallsegError("evaluate_images: no images to score")
    if evaluate_kwargs.get("boundary") == "reference":
        raise SmallsegError("evaluate_images: boundary='reference' depends on each image's size; score images one by one")
    gt_parts, gt_class_parts, pred_parts, pred_class_parts, scores = [], [], [], [], {}
    gt_offset = pred_offset = 0
    for gt, gt_classes, pred in items:
        gt = np.clip(np.asarray(gt), 0, None).astype(np.int64)
        if pred.labels.shape != gt.shape:
            raise SmallsegError(f"evaluate_images: prediction shape {pred.labels.shape} differs from GT {gt.shape}")
        gt_parts.append(np.where(gt > 0, gt + gt_offset, 0))
        gt_class_parts.append((gt > 0).astype(np.int32) if gt_classes is None else np.asarray(gt_classes, np.int32))
        gt_offset += int(gt.max())
        lookup = np.zeros(int(pred.labels.max()) + 1, np.int64)
        class_lookup = np.zeros(len(lookup), np.int32)
        lookup[pred.ids] = pred.ids + pred_offset
        class_lookup[pred.ids] = pred.class_ids
        pred_parts.append(lookup[pred.labels])
        pred_class_parts.append(class_lookup[pred.labels])
        scores.update({int(i) + pred_offset: float(s) for i, s in zip(pred.ids, pred.scores)})
        pred_offset += int(pred.labels.max())
    width = max(p.shape[1] for p in gt_parts)

    def stack(parts):
        return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]))) for p in parts])

    return evaluate(stack(gt_parts), stack(pred_parts), gt_classes=stack(gt_class_parts),
                    pred_classes=stack(pred_class_parts), pred_objects=scores, **evaluate_kwargs)
