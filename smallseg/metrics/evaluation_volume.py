"""3-D scoring of a predicted label volume (dicom-batch's ``labels.nii.gz``) against a GT label volume.

Objects are 3-D: an object is every voxel of one id, matched to GT objects by *voxel* IoU (3-D, not slice by
slice). Matching and accumulation are pycocotools' own (``COCOeval.evaluateImg`` / ``accumulate``): the IoU
matrix it would compute from 2-D masks is replaced by the 3-D one, and an object's COCO "area" is its volume
in mm³ (voxels x the voxel volume from the spacing), so size buckets are in mm³. AP is over IoU 0.50:0.05:0.95
(101-point interpolation, every detection kept), precision / recall / F1 at IoU 0.5 from the same matching.
Scoring is class-agnostic (every object one class). Scores come from the object table beside the
prediction (``STEM.objects.csv``, or dicom-batch's ``objects.csv`` in the same folder).

Both volumes must be on one grid (size, spacing, origin, direction). With ``area`` (a 2-D per-slice box /
mask, as :func:`smallseg.data.labels.area.labelled_area` reads), GT objects with no voxel inside and predicted
objects mostly outside are not scored.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from smallseg.data.labels.area import labelled_area
from smallseg.errors import SmallsegError
from smallseg.io.atomic import write_json_atomic
from smallseg.io.medical import read_image_file
from smallseg.io.tables import default_object_table_path, read_object_table

DEFAULT_BUCKETS_MM3 = (113.0, 4189.0)  # spheres of 6 mm and 20 mm diameter


@dataclass
class VolumeEvaluation:
    """3-D scores: ``metrics`` (AP, AP50, AP75, AP_small/medium/large, precision, recall, F1, TP, FP, FN,
    count_gt, count_pred), ``settings`` (inputs, spacing, buckets, method) and ``warnings``."""

    metrics: dict[str, Any]
    settings: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: metrics at the top level, then ``settings`` and ``warnings``."""
        return {**self.metrics, "settings": self.settings, "warnings": self.warnings}

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON, atomically; returns the path."""
        write_json_atomic(path, self.to_dict())
        return Path(path)

    def format_table(self) -> str:
        s = self.settings
        fmt = lambda v: "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
        lines = [f"3-D scores of {s['inputs']['pred']} against {s['inputs']['gt']}",
                 f"grid {' x '.join(str(v) for v in s['shape_zyx'])} voxels, spacing {s['spacing_zyx_mm']} mm; "
                 f"size buckets small < {s['buckets_mm3'][0]:g} mm3 <= medium < {s['buckets_mm3'][1]:g} mm3",
                 f"matching: {s['method']}", ""]
        lines += [f"{k:<14}{fmt(v):>10}" for k, v in self.metrics.items()]
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


def is_volume(path: str | os.PathLike) -> bool:
    """True for a label file SimpleITK reads as 3-D (NIfTI / NRRD / MHA with more than one slice)."""
    name = str(path).lower()
    if not name.endswith((".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")) or not Path(path).is_file():
        return False
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return False
    size = reader.GetSize()
    return len(size) == 3 and size[2] > 1


def _scores_table(pred: Path, pred_objects) -> Path | None:
    if pred_objects is not None:
        return Path(pred_objects)
    for candidate in (default_object_table_path(pred), pred.with_name("objects.csv")):
        if candidate.is_file():
            return candidate
    return None


def _ids_and_sizes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(labels.ravel())
    ids = np.nonzero(counts)[0]
    ids = ids[ids > 0]
    return ids.astype(np.int64), counts[ids].astype(np.int64)


def evaluate_volumes(gt: str | os.PathLike, pred: str | os.PathLike, *, pred_objects=None, area: Any = None,
                     buckets_mm3: tuple[float, float] = DEFAULT_BUCKETS_MM3) -> VolumeEvaluation:
    """Score the label volume ``pred`` against ``gt`` in 3-D (module docstring)."""
    gt_img = read_image_file(gt, "ground-truth label volume")
    pred_img = read_image_file(pred, "predicted label volume")
    if gt_img.GetSize() != pred_img.GetSize():
        raise SmallsegError(f"{pred}: {pred_img.GetSize()} voxels, the ground truth {gt} {gt_img.GetSize()}; both "
                            "must be on one grid")
    for what, a, b in (("spacing", gt_img.GetSpacing(), pred_img.GetSpacing()),
                       ("origin", gt_img.GetOrigin(), pred_img.GetOrigin()),
                       ("direction", gt_img.GetDirection(), pred_img.GetDirection())):
        if not np.allclose(a, b, atol=1e-3, rtol=1e-4):
            raise SmallsegError(f"{pred}: {what} {tuple(round(v, 4) for v in b)} differs from the ground truth's "
                                f"{tuple(round(v, 4) for v in a)}; both must be on one grid")
    g = sitk.GetArrayFromImage(gt_img)
    p = sitk.GetArrayFromImage(pred_img)
    for name, arr in ((gt, g), (pred, p)):
        if not np.issubdtype(arr.dtype, np.integer) or arr.min(initial=0) < 0:
            raise SmallsegError(f"{name}: a label volume holds whole-number ids >= 0 (got {arr.dtype})")
    g, p = g.astype(np.int64), p.astype(np.int64)
    spacing_zyx = tuple(float(v) for v in gt_img.GetSpacing()[::-1])
    voxel_mm3 = float(np.prod(spacing_zyx))
    warnings: list[str] = []
    if area is not None:
        mask2d = labelled_area(area, g.shape[1:], None, where=f"area {area}")
        inside = np.broadcast_to(mask2d, g.shape)
        keep_gt = np.unique(g[inside & (g > 0)])
        g = np.where(np.isin(g, keep_gt), g, 0)
        total = np.bincount(p.ravel())
        outside = np.bincount(p[~inside].ravel(), minlength=len(total))
        drop = np.nonzero((outside * 2 > total) & (np.arange(len(total)) > 0))[0]
        if len(drop):
            warnings.append(f"area: {len(drop)} predicted object(s) mostly outside the labelled area not scored")
            p = np.where(np.isin(p, drop), 0, p)
    gt_ids, gt_sizes = _ids_and_sizes(g)
    pred_ids, pred_sizes = _ids_and_sizes(p)
    table = _scores_table(Path(pred), pred_objects)
    scores = np.ones(len(pred_ids), np.float64)
    if table is not None:
        parsed = read_object_table(table, require=("id", "score"))
        by_id = dict(zip(parsed.ids.tolist(), np.asarray(parsed.scores, np.float64).tolist()))
        missing = [int(i) for i in pred_ids if int(i) not in by_id]
        if missing:
            raise SmallsegError(f"{table}: no score for {len(missing)} object id(s) of {pred} (e.g. {missing[:5]})")
        scores = np.array([by_id[int(i)] for i in pred_ids], np.float64)
    elif len(pred_ids):
        warnings.append(f"no object table beside {pred}: every detection scores 1.0")
    # 3-D IoU of every overlapping (GT, prediction) pair, from one joint histogram of the voxels
    both = (g > 0) & (p > 0)
    codes, inter = np.unique(g[both] * (int(p.max()) + 1) + p[both], return_counts=True)
    gi = np.searchsorted(gt_ids, codes // (int(p.max()) + 1))
    pi = np.searchsorted(pred_ids, codes % (int(p.max()) + 1))
    iou = np.zeros((len(pred_ids), len(gt_ids)))
    iou[pi, gi] = inter / (pred_sizes[pi] + gt_sizes[gi] - inter)

    dataset = {"images": [{"id": 1, "width": 1, "height": 1}], "categories": [{"id": 1, "name": "object"}],
               "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                                "bbox": [0, 0, float(s * voxel_mm3), 1], "area": float(s * voxel_mm3)}
                               for k, s in enumerate(gt_sizes)]}
    lo, hi = (float(v) for v in buckets_mm3)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        # bbox [0, 0, volume, 1]: loadRes sets a detection's area to w * h = its volume in mm3
        results = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, float(s * voxel_mm3), 1], "score": float(sc),
                    "obj": k} for k, (s, sc) in enumerate(zip(pred_sizes, scores))]
        coco_dt = coco_gt.loadRes(results) if results else COCO()
        if not results:
            coco_dt.dataset = {"images": dataset["images"], "categories": dataset["categories"], "annotations": []}
            coco_dt.createIndex()
        ev = _Precomputed(coco_gt, coco_dt, iou)
        ev.params.maxDets = [max(len(pred_ids), 1)]
        ev.params.areaRng = [[0, 1e15], [0, lo], [lo, hi], [hi, 1e15]]
        ev.params.areaRngLbl = ["all", "small", "medium", "large"]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"]  # (T, R, K, A, M)

    def ap(t=None, a=0):
        values = precision[:, :, 0, a, 0] if t is None else precision[[t], :, 0, a, 0]
        values = values[values > -1]
        return float(values.mean()) if values.size else None

    record = next((r for r in ev.evalImgs if r is not None and r["aRng"] == [0, 1e15]), None)
    tp = 0 if record is None else int((record["dtMatches"][0] > 0).sum())  # matches at IoU 0.5
    fp, fn = int(len(pred_ids) - tp), int(len(gt_ids) - tp)
    prec = tp / (tp + fp) if tp + fp else None
    rec = tp / (tp + fn) if tp + fn else None
    f1 = 2 * prec * rec / (prec + rec) if prec and rec else (0.0 if prec is not None and rec is not None else None)
    metrics = {"AP": ap(), "AP50": ap(0), "AP75": ap(5), "AP_small": ap(None, 1), "AP_medium": ap(None, 2),
               "AP_large": ap(None, 3), "precision": prec, "recall": rec, "F1": f1, "TP": tp, "FP": fp, "FN": fn,
               "count_gt": int(len(gt_ids)), "count_pred": int(len(pred_ids)),
               "volume_gt_mm3": float(gt_sizes.sum() * voxel_mm3), "volume_pred_mm3": float(pred_sizes.sum() * voxel_mm3)}
    settings = {"inputs": {"gt": str(gt), "pred": str(pred), "scores": None if table is None else str(table)},
                "shape_zyx": list(g.shape), "spacing_zyx_mm": [round(v, 6) for v in spacing_zyx],
                "buckets_mm3": [lo, hi], "area": None if area is None else str(area),
                "method": "3-D voxel IoU; pycocotools evaluateImg/accumulate on that IoU matrix, area = volume in mm3, "
                          "IoU 0.50:0.05:0.95, F1 at 0.5, class-agnostic"}
    return VolumeEvaluation(metrics=metrics, settings=settings, warnings=warnings)


class _Precomputed:
    """pycocotools' COCOeval with its IoU replaced by a given (n_pred, n_gt) 3-D IoU matrix."""

    def __new__(cls, coco_gt, coco_dt, iou: np.ndarray):
        class Eval(COCOeval):
            def computeIoU(self, imgId, catId):  # noqa: N802 - pycocotools' name
                gts, dts = self._gts[imgId, catId], self._dts[imgId, catId]
                if not gts or not dts:
                    return []
                order = np.argsort([-d["score"] for d in dts], kind="mergesort")
                rows = [dts[i]["obj"] for i in order[: self.params.maxDets[-1]]]
                cols = [gt["id"] - 1 for gt in gts]
                return iou[np.ix_(rows, cols)]

        return Eval(coco_gt, coco_dt, "bbox")
