"""Object-level precision / recall / F1 at one IoU threshold, and counting error.

The matching is COCO's own: the greedy, score-ordered matching pycocotools' ``evaluateImg`` did at that
threshold (area range "all", every evaluated detection — no maxDets=100 cap), read from the records of
:func:`smallseg.metrics.coco.coco_evaluate`. A detection matched to a crowd region is neither a true nor a
false positive (COCO ignores it); crowd regions are not counted as ground truth.

Undefined values are None: precision without detections, recall without ground truth, F1 when there are
neither.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from smallseg.metrics.coco import CocoEvaluation

__all__ = ["DetectionCounts", "detection_counts", "matched_pairs", "count_error"]


@dataclass
class DetectionCounts:
    """True/false positives and misses at one IoU threshold.

    Attributes:
        tp: detections matched to a ground-truth object.
        fp: detections matched to nothing (and not to a crowd region).
        fn: ground-truth objects (non-crowd) matched by no detection.
        precision: ``tp / (tp + fp)``, None without (non-ignored) detections.
        recall: ``tp / (tp + fn)``, None without ground truth.
        f1: ``2 tp / (2 tp + fp + fn)``, None when there is neither.
    """

    tp: int
    fp: int
    fn: int
    precision: float | None
    recall: float | None
    f1: float | None

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int) -> "DetectionCounts":
        return cls(
            tp=tp,
            fp=fp,
            fn=fn,
            precision=tp / (tp + fp) if tp + fp else None,
            recall=tp / (tp + fn) if tp + fn else None,
            f1=2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _threshold_index(result: CocoEvaluation, iou_threshold: float) -> int:
    hit = np.flatnonzero(np.isclose(result.iou_thresholds, iou_threshold, rtol=0, atol=1e-12))
    if hit.size == 0:
        raise ValueError(f"IoU threshold {iou_threshold} is not among the evaluated thresholds")
    return int(hit[0])


def detection_counts(result: CocoEvaluation, iou_threshold: float = 0.5) -> tuple[DetectionCounts, dict[int, DetectionCounts]]:
    """TP / FP / FN with COCO's matching at ``iou_threshold`` (area range "all").

    Args:
        result: a mask evaluation from :func:`~smallseg.metrics.coco.coco_evaluate`.
        iou_threshold: one of its IoU thresholds.

    Returns:
        ``(total, per_category)``: summed over images and categories, and per category id.
    """
    t = _threshold_index(result, iou_threshold)
    per_category: dict[int, DetectionCounts] = {}
    total = np.zeros(3, np.int64)
    for k in result.category_ids:
        tp = fp = n_gt = 0
        for image_id in result.image_ids:
            record = result.records.get((k, 0, image_id))
            if record is None:
                continue
            matched = np.asarray(record["dtMatches"][t]) != 0  # pycocotools' own truth test (accumulate)
            ignored = np.asarray(record["dtIgnore"][t], bool)
            tp += int(np.count_nonzero(matched & ~ignored))
            fp += int(np.count_nonzero(~matched & ~ignored))
            n_gt += int(np.count_nonzero(np.asarray(record["gtIgnore"]) == 0))
        per_category[k] = DetectionCounts.from_counts(tp, fp, n_gt - tp)
        total += (tp, fp, n_gt - tp)
    return DetectionCounts.from_counts(*(int(v) for v in total)), per_category


def matched_pairs(result: CocoEvaluation, iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Detection and ground-truth ids of the pairs COCO matched at ``iou_threshold`` (area "all").

    Pairs with a crowd region are left out.

    Returns:
        ``(dt_ids, gt_ids)``: equal-length int64 arrays.
    """
    t = _threshold_index(result, iou_threshold)
    dt_ids: list[np.ndarray] = []
    gt_ids: list[np.ndarray] = []
    for (k, a, image_id), record in result.records.items():
        if a != 0 or record is None:
            continue
        matches = np.asarray(record["dtMatches"][t])
        keep = (matches != 0) & ~np.asarray(record["dtIgnore"][t], bool)
        dt_ids.append(np.asarray(record["dtIds"], np.int64)[keep])
        gt_ids.append(matches[keep].astype(np.int64))
    if not dt_ids:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(dt_ids), np.concatenate(gt_ids)


def count_error(n_gt: int, n_pred: int) -> dict[str, float | int | None]:
    """Counting error of a prediction.

    Returns:
        ``{"count_gt", "count_pred", "count_error" (|pred - gt|), "count_error_signed" (pred - gt),
        "count_error_relative" (|pred - gt| / gt, None when gt == 0)}``.
    """
    return {
        "count_gt": int(n_gt),
        "count_pred": int(n_pred),
        "count_error": abs(int(n_pred) - int(n_gt)),
        "count_error_signed": int(n_pred) - int(n_gt),
        "count_error_relative": abs(int(n_pred) - int(n_gt)) / n_gt if n_gt else None,
    }
