"""The data behind ``smallseg evaluate --plot DIR``: precision-recall curves per size bucket and the scores of
true and false positives, read from pycocotools' own arrays (nothing is re-matched or re-interpolated here).

- **PR curves**: ``eval["precision"]`` (T, R, K, A, M) of pycocotools' ``accumulate`` holds, per IoU threshold
  T, recall threshold R (``params.recThrs``, 0:0.01:1), category K, area range A ("all", "small", "medium",
  "large") and maxDets M, the interpolated precision; -1 where undefined (no GT of that category in that
  bucket). A curve is the row at one IoU threshold and area range, averaged over the categories where it is
  defined, as ``COCOeval.summarize`` averages AP (so the mean of a curve is that bucket's AP at that IoU).
- **Scores of TP / FP**: the ``evaluateImg`` records of area "all": a detection is a true positive when
  ``dtMatches`` at the threshold is non-zero and it is not ignored (pycocotools' own test in ``accumulate``,
  the same that gives evaluate's TP / FP / F1).

The rendering (matplotlib, optional) is :mod:`smallseg.io.plots`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np


@dataclass(frozen=True)
class PRCurve:
    """One precision-recall curve.

    Attributes:
        bucket: pycocotools' area-range label ("all", "small", "medium", "large").
        iou: the IoU threshold of a match.
        recall: (R,) recall thresholds (pycocotools' ``recThrs``).
        precision: (R,) interpolated precision, averaged over the categories defined in this bucket; None when
            no category is (no GT object of that size).
        area_range_px: the bucket's (low, high) area in pixels.
    """

    bucket: str
    iou: float
    recall: np.ndarray
    precision: np.ndarray | None
    area_range_px: tuple[float, float]

    @property
    def ap(self) -> float | None:
        """The mean of the curve: this bucket's AP at :attr:`iou` (None when undefined)."""
        return None if self.precision is None else float(self.precision.mean())


def _iou_index(iou_thresholds: np.ndarray, iou: float) -> int:
    hit = np.flatnonzero(np.isclose(np.asarray(iou_thresholds, np.float64), iou, rtol=0, atol=1e-9))
    if not hit.size:
        raise ValueError(f"IoU {iou} is not among the evaluated thresholds {list(iou_thresholds)}")
    return int(hit[0])


def pr_curves(coco_eval: dict, iou: float = 0.5) -> list[PRCurve]:
    """The PR curve of every area range at IoU ``iou`` from ``coco_eval`` (``COCOeval.eval`` after
    ``accumulate``), in pycocotools' area-range order. The last maxDets entry is used (smallseg runs one)."""
    params = coco_eval["params"]
    t = _iou_index(params.iouThrs, iou)
    precision = np.asarray(coco_eval["precision"], np.float64)
    recall = np.asarray(params.recThrs, np.float64)
    curves = []
    for a, label in enumerate(params.areaRngLbl):
        rows = precision[t, :, :, a, -1]  # (R, K)
        defined = [k for k in range(rows.shape[1]) if (rows[:, k] > -1).all()]
        curve = rows[:, defined].mean(axis=1) if defined else None
        curves.append(PRCurve(str(label), float(params.iouThrs[t]), recall, curve,
                              tuple(float(v) for v in params.areaRng[a])))
    return curves


def tp_fp_scores(records: Iterable[dict | None], iou_thresholds: np.ndarray,
                 iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the true and of the false positives at IoU ``iou``.

    Args:
        records: ``evaluateImg`` records of area range "all" (None entries skipped).
        iou_thresholds: the thresholds the records' ``dtMatches`` rows follow.
        iou: the threshold of a match.

    Returns:
        ``(tp_scores, fp_scores)``: float64 arrays; ignored detections (crowd matches) are in neither.
    """
    t = _iou_index(iou_thresholds, iou)
    tp, fp = [], []
    for record in records:
        if record is None:
            continue
        scores = np.asarray(record["dtScores"], np.float64)
        matched = np.asarray(record["dtMatches"][t]) != 0
        ignored = np.asarray(record["dtIgnore"][t], bool)
        tp.append(scores[matched & ~ignored])
        fp.append(scores[~matched & ~ignored])
    join = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.float64)  # noqa: E731
    return join(tp), join(fp)


def records_of_all(records: dict) -> list[dict | None]:
    """The area-"all" records of :attr:`smallseg.metrics.coco.CocoEvaluation.records`."""
    return [r for (_, a, _), r in records.items() if a == 0]
