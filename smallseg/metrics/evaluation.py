"""``evaluate(gt, pred)``: score an instance prediction against ground truth, for small objects.

One call gives COCO mask AP / AP50 / AP75 / AP_small / AP_medium / AP_large and AR (pycocotools, split by
overlap components so 20,000-object scenes take seconds — :mod:`smallseg.metrics.coco`), Boundary AP and
mean Boundary IoU (:mod:`smallseg.metrics.boundary`), object-level precision / recall / F1 at IoU 0.5 and
the counting error (:mod:`smallseg.metrics.counting`).

Inputs (ground truth and prediction in the same form):

- instance label rasters: file paths (GeoTIFF, NIfTI / MHA / NRRD, PNG / TIFF), (H, W) integer arrays, or
  :class:`smallseg.instances.Instances`; with optional class rasters and object tables (CSV: ``id,score``
  plus optional ``class_id``; ground truth: ``id`` plus optional ``class_id``, ``iscrowd``). A prediction
  raster ``STEM.instances.tif`` finds its scores in ``STEM.objects.csv`` beside it;
- or COCO JSON: the ground truth as a dataset (``images``, ``annotations``, ``categories``), the prediction
  as a results list (``image_id``, ``category_id``, ``segmentation`` RLE, ``score``).

Undefined numbers are None (``null`` in JSON) with the reason in ``Evaluation.undefined`` — e.g. AP_large
when the ground truth has no large object (pycocotools' -1), precision without detections, any AP when the
ground truth is empty. They are never silently 0 or -1.
"""

from __future__ import annotations

import dataclasses
import contextlib
import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycocotools
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from smallseg.data.coco_json import describe_unknown_categories, unknown_categories
from smallseg.errors import SmallsegError, one_line
from smallseg.instances import Instances
from smallseg.io.atomic import write_text_atomic
from smallseg.io.geo import ground_units
from smallseg.io.labels import check_same_grid, label_raster_from_array, read_label_raster
from smallseg.io.tables import ObjectAttributes, default_object_table_path, read_object_table
from smallseg.metrics.boundary import boundary_rles
from smallseg.metrics.coco import (DEFAULT_IOU_THRESHOLDS, CocoEvaluation, _largest_list, cap_detections,
                                   coco_evaluate, summarize)
from smallseg.metrics.counting import count_error, detection_counts, matched_pairs
from smallseg.metrics.objects import ObjectSet, crop_from_rle, objects_from_labels, overlap_components
from smallseg.metrics.settings import (  # the settings' public names stay importable from here
    _AREA_UNITS_M2,
    _LENGTH_UNITS_M,
    BoundaryWidth,
    SizeBuckets,
    parse_boundary_width,
    parse_length,
    parse_size_buckets,
)

__all__ = [
    "SizeBuckets",
    "BoundaryWidth",
    "Evaluation",
    "evaluate",
    "parse_size_buckets",
    "parse_boundary_width",
    "parse_length",
]


# --------------------------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------------------------

METRIC_KEYS = (
    "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR", "AR_small", "AR_medium", "AR_large",
    "boundary_AP", "boundary_AP50", "boundary_AP75", "boundary_AP_small", "boundary_AP_medium",
    "boundary_AP_large", "boundary_IoU", "precision", "recall", "F1", "TP", "FP", "FN", "count_gt",
    "count_pred", "count_error", "count_error_signed", "count_error_relative",
)


@dataclass
class Evaluation:
    """Scores of one prediction against one ground truth.

    Attributes:
        metrics: ``{name: value}`` for :data:`METRIC_KEYS`; AP/AR/IoU/precision/recall/F1 on a 0-1 scale,
            counts as integers; None where undefined.
        undefined: ``{name: reason}`` for every None in ``metrics``.
        per_class: ``{class id: {"AP", "AP50", "boundary_AP", "precision", "recall", "F1", "count_gt",
            "count_pred"}}``.
        settings: everything the numbers depend on (buckets with units and in px, boundary mode and d,
            maxDets, IoU thresholds, inputs, method).
        warnings: things the user should know (missing scores, capped detections...).
        coco: the mask :class:`~smallseg.metrics.coco.CocoEvaluation` behind the numbers (pycocotools' arrays,
            for plots); not part of the JSON.
    """

    metrics: dict
    undefined: dict
    per_class: dict
    settings: dict
    warnings: list = field(default_factory=list)
    coco: CocoEvaluation | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """The JSON document: metrics at the top level, then ``undefined``, ``per_class``, ``settings``."""
        return {**self.metrics, "undefined": self.undefined, "per_class": self.per_class,
                "settings": self.settings, "warnings": self.warnings}

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON, atomically (a temporary file renamed when complete)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path

    def format_table(self) -> str:
        """A plain-text report: settings, then one metric per line with its note."""
        s, m = self.settings, self.metrics
        buckets = s["size_buckets"]
        boundary = s["boundary"]
        lines = [
            f"ground truth  {s['inputs']['gt']}",
            f"prediction    {s['inputs']['pred']}" + (f"  (scores: {s['inputs']['scores']})" if s["inputs"].get("scores") else ""),
            f"images        {len(s['images'])}, " + ", ".join(f"{h} x {w} px" for h, w in list(s["images"].values())[:3])
            + (" ..." if len(s["images"]) > 3 else ""),
            _classes_line(s),
            f"max dets      {s['maxDets']} per image and class ({s['maxDets_source']})",
            f"size buckets  small < {buckets['small_max']:g} {buckets['unit']} <= medium < {buckets['medium_max']:g} "
            f"{buckets['unit']} <= large" + ("" if buckets["unit"] == "px" else
                                            f"  (= {buckets['small_max_px']:.6g} / {buckets['medium_max_px']:.6g} px; "
                                            f"pixel area {buckets['pixel_area']:.6g} {buckets['unit']}: "
                                            f"{buckets['pixel_area_source']})"),
            f"boundary      {boundary['mode']}: d = {boundary['d_px_text']} px ({boundary['width']})",
            f"IoU           AP over {s['iou_thresholds_text']}; F1 and boundary IoU at {s['f1_iou_threshold']}",
            "",
            f"{'metric':<22}{'value':>10}  note",
            f"{'-' * 22}{'-' * 10}  {'-' * 40}",
        ]
        for key in METRIC_KEYS:
            value = m[key]
            if value is None:
                text, note = "n/a", self.undefined.get(key, "undefined")
            elif isinstance(value, int):
                text, note = f"{value:d}", ""
            else:
                text, note = f"{value:.4f}", ""
            if key == "boundary_IoU" and value is not None:
                note = f"mean over {m.get('boundary_IoU_pairs', 0)} pairs matched at mask IoU {s['f1_iou_threshold']}"
            if key == "count_error_relative" and value is not None:
                text = f"{100 * value:.2f} %"
            lines.append(f"{key:<22}{text:>10}  {note}".rstrip())
        if len(self.per_class) > 1:
            lines += ["", f"{'class':<8}{'AP':>8}{'AP50':>8}{'bAP':>8}{'F1':>8}{'GT':>8}{'pred':>8}"]
            for k, row in self.per_class.items():
                def fmt(v):
                    return "n/a" if v is None else f"{v:.3f}"
                lines.append(f"{k!s:<8}{fmt(row['AP']):>8}{fmt(row['AP50']):>8}{fmt(row['boundary_AP']):>8}"
                             f"{fmt(row['F1']):>8}{row['count_gt']:>8}{row['count_pred']:>8}")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Side:
    """One side (GT or prediction) turned into objects."""

    objects: object  # ObjectSet
    source: str
    pixel_area_m2: float | None = None
    pixel_area_note: str = "unknown"
    raster: object | None = None  # LabelRaster
    scores_source: str | None = None
    class_source: str | None = None  # where the classes came from; None: none (every object is class 1)
    class_names: dict[int, str] = field(default_factory=dict)  # class id -> name, where a table names them


def _is_coco_path(value) -> bool:
    return isinstance(value, str | os.PathLike) and os.fspath(value).lower().endswith(".json")


def _load_json(path, what: str):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SmallsegError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SmallsegError(f"{path}: cannot read {what} JSON ({one_line(exc)})") from None


def _raster(value, what: str, pixel_size_m: float | None):
    if isinstance(value, str | os.PathLike):
        return read_label_raster(value)
    return label_raster_from_array(value, f"<{what} array>", pixel_size_m=pixel_size_m)


def _class_raster(value, what: str, like) -> np.ndarray:
    raster = _raster(value, what, None)
    if isinstance(value, str | os.PathLike):
        check_same_grid(like, raster)
    elif raster.shape != like.shape:  # an in-memory array has no geometry to compare, only its shape
        raise SmallsegError(f"{what}: shape {raster.shape[0]} x {raster.shape[1]} differs from {like.source} "
                            f"({like.shape[0]} x {like.shape[1]})")
    return raster.array


def _objects_from_raster_side(
    value, *, is_gt: bool, classes, table, pixel_size_m: float | None, warnings: list[str]
) -> _Side:
    what = "ground truth" if is_gt else "prediction"
    class_by_id: dict[int, int] | None = None
    score_by_id: dict[int, float] | None = None
    crowd_ids: set[int] = set()
    scores_source = None
    class_source = None
    if isinstance(value, Instances):
        raster = _raster(value.labels, what, pixel_size_m)
        class_by_id = dict(zip(value.ids.tolist(), value.class_ids.tolist()))
        class_source = "Instances.class_ids"
        if not is_gt:
            score_by_id = dict(zip(value.ids.tolist(), value.scores.astype(np.float64).tolist()))
            scores_source = "Instances.scores"
    else:
        raster = _raster(value, what, pixel_size_m)
    if _is_table_path(classes):  # a class table (CSV with id, class_id) given as the classes
        if table is not None:
            raise SmallsegError(f"{what}: give the object table once (as the classes or as the object table)")
        table, classes = classes, None
    class_raster = None if classes is None else _class_raster(classes, f"{what} classes", raster)
    if class_raster is not None:
        class_source = f"class raster {_describe(classes) if isinstance(classes, str | os.PathLike) else '<array>'}"

    # Object table: explicit path or mapping, else the table beside the raster (STEM.objects.csv beside
    # STEM.instances.tif, STEM_objects.csv beside the scene generator's STEM_instances.tif).
    table_given = table is not None
    if table is None and isinstance(value, str | os.PathLike):
        candidate = default_object_table_path(value)
        if candidate.is_file():
            table = candidate
    if isinstance(table, Mapping):
        if is_gt:
            raise SmallsegError("gt_objects: pass a CSV path (columns id[,class_id][,iscrowd])")
        score_by_id = {int(k): float(v) for k, v in table.items()}
        scores_source = "given scores"
        table = None
    parsed: ObjectAttributes | None = None
    table_source = None
    if table is not None:
        table_source = os.fspath(table)
        parsed = read_object_table(table, require=("id",) if is_gt else ("id", "score"))
        if parsed.class_ids is not None and class_raster is None:
            class_by_id = dict(zip(parsed.ids.tolist(), parsed.class_ids.tolist()))
            class_source = f"class_id of {table_source}"
        if is_gt and parsed.iscrowd is not None:
            crowd_ids = set(parsed.ids[parsed.iscrowd].tolist())
        if not is_gt:
            score_by_id = dict(zip(parsed.ids.tolist(), parsed.scores.tolist()))
            scores_source = table_source

    objects = objects_from_labels(
        raster.array,
        class_raster=class_raster,
        class_by_id=class_by_id,
        score_by_id=score_by_id,
        crowd_ids=crowd_ids,
        detection_ids=not is_gt,
    )
    labels_present = objects.source_ids
    if score_by_id is not None:
        missing = [int(i) for i in labels_present.tolist() if int(i) not in score_by_id]
        if missing:
            src = scores_source or "scores"
            raise SmallsegError(
                f"{src}: no score for {len(missing)} object id(s) of {raster.source} (e.g. "
                f"{', '.join(str(i) for i in missing[:5])}); the table must list every object of the raster")
        extra = len(set(score_by_id) - set(labels_present.tolist()))
        if extra and scores_source:
            warnings.append(f"{scores_source}: {extra} id(s) are not in {raster.source} (ignored)")
    elif not is_gt and len(objects):
        where = (f"no object table at {default_object_table_path(value)}"
                 if isinstance(value, str | os.PathLike) else "none given")
        warnings.append(f"no scores for {raster.source} ({where}): every detection scores 1.0, so AP ranks them "
                        "by label id")
    if table_given and parsed is not None and parsed.class_ids is not None and class_raster is not None:
        warnings.append(f"{table_source}: class_id column ignored, the class raster is used")
    area, note = raster.pixel_area_m2, raster.pixel_area_note
    if pixel_size_m is not None and isinstance(value, str | os.PathLike):
        if area is not None and not math.isclose(area, pixel_size_m**2, rel_tol=1e-6):
            warnings.append(f"pixel_size {pixel_size_m:g} m overrides the pixel area of {raster.source} "
                            f"({area:.6g} m2 from {note})")
        area, note = pixel_size_m**2, f"given pixel size {pixel_size_m:g} m"
    return _Side(objects=objects, source=raster.source, pixel_area_m2=area, pixel_area_note=note, raster=raster,
                 scores_source=scores_source, class_source=class_source,
                 class_names=parsed.class_name_map() if parsed is not None else {})


def _is_table_path(value) -> bool:
    return isinstance(value, str | os.PathLike) and os.fspath(value).lower().endswith(".csv")


def _class_mode(gt: _Side, pred: _Side, class_agnostic: bool, coco: bool) -> tuple[bool, str, list[str]]:
    """Per-class or class-agnostic scoring: (agnostic, why, warning lines on mismatched classes)."""
    if class_agnostic:
        return True, "class-agnostic as asked (class_agnostic=True): every object is one class", []
    if coco:
        return False, "per class: COCO categories", []
    if gt.class_source is None:
        return True, ("class-agnostic: the ground truth has no classes (give gt_classes= a class raster or a table "
                      "with class_id, or put STEM.objects.csv with class_id beside it)"), []
    if pred.class_source is None:
        return True, ("class-agnostic: the prediction has no classes (no class raster, no class_id in its object "
                      "table)"), []
    notes = []
    shared = sorted(set(gt.class_names) & set(pred.class_names))
    differ = [k for k in shared if gt.class_names[k] != pred.class_names[k]]
    if differ:
        notes.append("class names differ between ground truth and prediction: "
                     + ", ".join(f"{k} = {gt.class_names[k]!r} vs {pred.class_names[k]!r}" for k in differ)
                     + "; per-class scores compare unlike classes (relabel one side, or pass class_agnostic=True)")
    gt_ids = set(np.unique(gt.objects.class_ids).tolist())
    pred_ids = set(np.unique(pred.objects.class_ids).tolist())
    if pred_ids and gt_ids and not pred_ids & gt_ids:
        notes.append(f"the prediction's classes {sorted(pred_ids)} share none with the ground truth's "
                     f"{sorted(gt_ids)}: every detection is a false positive (class_agnostic=True scores outlines only)")
    return False, f"per class: ground truth from {gt.class_source}, prediction from {pred.class_source}", notes


def _ground_area_px(objects, units):
    """The same objects with ``area_px`` = ground area in scene-centre pixels (box centre's pixel area)."""
    if not len(objects):
        return objects
    boxes = objects.boxes.astype(np.float64)
    rows, cols = (boxes[:, 0] + boxes[:, 2] - 1) / 2, (boxes[:, 1] + boxes[:, 3] - 1) / 2
    factor = units.pixel_area_at(rows, cols) / units.pixel_area_m2
    return dataclasses.replace(objects, area_px=objects.area_px * factor)


def _one_class(objects):
    """The same objects, all of class 1 (class-agnostic scoring)."""
    return dataclasses.replace(objects, class_ids=np.ones_like(objects.class_ids))


def _objects_from_coco(gt_value, pred_value, warnings: list[str]):
    """GT dataset + results list -> (gt ObjectSet, dt ObjectSet, category ids), as pycocotools loads them."""
    gt_source = os.fspath(gt_value) if isinstance(gt_value, str | os.PathLike) else "<gt COCO dataset>"
    pred_source = os.fspath(pred_value) if isinstance(pred_value, str | os.PathLike) else "<pred COCO results>"
    gt_data = _load_json(gt_value, "COCO dataset") if isinstance(gt_value, str | os.PathLike) else gt_value
    results = _load_json(pred_value, "COCO results") if isinstance(pred_value, str | os.PathLike) else pred_value
    if not isinstance(gt_data, dict) or not all(k in gt_data for k in ("images", "annotations", "categories")):
        raise SmallsegError(f"{gt_source}: not a COCO dataset (needs 'images', 'annotations' and 'categories')")
    if isinstance(results, dict) and "annotations" in results:
        results = results["annotations"]
    if not isinstance(results, list):
        raise SmallsegError(f"{pred_source}: not a COCO results list ([{{image_id, category_id, segmentation, score}}])")
    images = {}
    for img in gt_data["images"]:
        try:
            images[int(img["id"])] = (int(img["height"]), int(img["width"]))
        except (KeyError, TypeError, ValueError):
            raise SmallsegError(f"{gt_source}: image entry {str(img)[:80]} lacks id/height/width") from None
    for n, ann in enumerate(gt_data["annotations"]):
        for key in ("id", "image_id", "category_id", "segmentation", "area"):
            if key not in ann:
                raise SmallsegError(f"{gt_source}: annotation #{n} has no '{key}'")
        if int(ann["image_id"]) not in images:
            raise SmallsegError(f"{gt_source}: annotation {ann['id']} refers to unknown image {ann['image_id']}")
    for n, res in enumerate(results):
        for key in ("image_id", "category_id", "segmentation", "score"):
            if key not in res:
                raise SmallsegError(f"{pred_source}: result #{n} has no '{key}' (instance-segmentation results "
                                    "need image_id, category_id, segmentation, score)")
        if int(res["image_id"]) not in images:
            raise SmallsegError(f"{pred_source}: result #{n} refers to image {res['image_id']}, not in {gt_source}")
        if not isinstance(res["segmentation"], dict):
            raise SmallsegError(f"{pred_source}: result #{n}: segmentation must be an RLE dict (size, counts)")
        score = res["score"]
        if not isinstance(score, int | float) or not math.isfinite(score):
            raise SmallsegError(f"{pred_source}: result #{n}: score {score!r} is not a finite number")
    if results and "bbox" in results[0] and results[0]["bbox"] != []:
        warnings.append(f"{pred_source}: results carry 'bbox', so pycocotools takes each detection's area (for "
                        "the size buckets) from its box, not its mask; smallseg does the same to match it")

    coco_gt = COCO()
    coco_gt.dataset = {"images": gt_data["images"], "annotations": [dict(a) for a in gt_data["annotations"]],
                       "categories": gt_data["categories"]}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes([dict(r) for r in results]) if results else None
    except Exception as exc:  # pycocotools asserts / decoding errors
        raise SmallsegError(f"{pred_source}: pycocotools cannot load it against {gt_source} ({one_line(exc)})") from None
    category_ids = sorted(coco_gt.getCatIds())

    def to_objects(coco, anns, is_gt: bool, source: str):
        if not anns:
            return ObjectSet.empty(images)
        rles, boxes, crops = [], [], []
        for ann in anns:
            try:
                rle = coco.annToRLE(ann)
                box, crop = crop_from_rle(rle)
            except Exception as exc:
                raise SmallsegError(f"{source}: annotation {ann.get('id')}: unreadable segmentation "
                                    f"({one_line(exc)})") from None
            if list(rle["size"]) != list(images[int(ann["image_id"])]):
                raise SmallsegError(f"{source}: annotation {ann.get('id')}: RLE size {rle['size']} differs from "
                                    f"image {ann['image_id']}'s {list(images[int(ann['image_id'])])}")
            rles.append(rle)
            boxes.append(box)
            crops.append(crop)
        return ObjectSet(
            image_shapes=dict(images),
            ids=np.asarray([a["id"] for a in anns], np.int64),
            image_ids=np.asarray([a["image_id"] for a in anns], np.int64),
            class_ids=np.asarray([a["category_id"] for a in anns], np.int64),
            scores=np.asarray([a.get("score", 1.0) for a in anns], np.float64),
            iscrowd=np.asarray([bool(a.get("iscrowd", 0)) for a in anns], bool) if is_gt else np.zeros(len(anns), bool),
            area_px=np.asarray([a["area"] for a in anns], np.float64),
            boxes=np.asarray(boxes, np.int64).reshape(-1, 4),
            crops=crops,
            rles=rles,
            source_ids=np.asarray([a["id"] for a in anns], np.int64),
        )

    unknown_gt = unknown_categories(gt_data)
    if unknown_gt:  # pycocotools scores only declared categories: say so rather than drop them silently
        warnings.append(describe_unknown_categories(unknown_gt, gt_source) + " (not scored, as pycocotools does)")
    gt = to_objects(coco_gt, coco_gt.dataset["annotations"], True, gt_source)
    dt = to_objects(coco_dt, coco_dt.dataset["annotations"] if coco_dt else [], False, pred_source)
    unknown = ~np.isin(dt.class_ids, category_ids)
    if unknown.any():
        warnings.append(f"{pred_source}: {int(unknown.sum())} result(s) have categories not in {gt_source} "
                        "(pycocotools ignores them; so does smallseg)")
        dt = dt.subset(~unknown)
    return (_Side(objects=gt, source=gt_source), _Side(objects=dt, source=pred_source, scores_source=pred_source),
            category_ids)


# --------------------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------------------


def evaluate(
    gt,
    pred,
    *,
    gt_classes=None,
    pred_classes=None,
    pred_objects=None,
    gt_objects=None,
    size_buckets: str | SizeBuckets = "32^2,96^2px",
    boundary: str = "fixed",
    boundary_width: str | float | None = None,
    max_dets: int | None = None,
    pixel_size: str | float | None = None,
    class_agnostic: bool = False,
) -> Evaluation:
    """Score an instance prediction against ground truth (COCO AP family, Boundary AP/IoU, F1, counts).

    Args:
        gt: ground-truth instance labels: a raster path (GeoTIFF, NIfTI/MHA/NRRD, PNG/TIFF), an (H, W) integer
            array (0 = background), an :class:`~smallseg.instances.Instances`, or a COCO dataset (``.json``
            path or dict).
        pred: the prediction in the same form (COCO: a results ``.json`` path or list).
        gt_classes, pred_classes: optional (H, W) class rasters (paths or arrays; an object takes the most
            frequent non-zero class under it) or object tables (``.csv`` with ``id,class_id``). Default: the
            ``class_id`` of the side's object table (given, or found beside the raster: ``STEM.objects.csv``
            beside ``STEM.instances.tif``, ``STEM_objects.csv`` beside ``STEM_instances.tif``). When either
            side has no classes at all, scoring is class-agnostic and the report says so (``settings
            ["classes"]``); class names that differ between the two tables are reported in a warning.
        pred_objects: the prediction's object table CSV (``id,score[,class_id]``) or a ``{label: score}``
            mapping; default ``STEM.objects.csv`` beside a ``STEM.instances.tif`` (or ``NAME.objects.csv``
            beside ``NAME.tif``) when it exists. Without scores every detection scores 1.0 (warned).
        gt_objects: optional ground-truth object table (``id[,class_id][,iscrowd]``); default the table
            beside the GT raster, as for the prediction.
        size_buckets: ``"SMALL_MAX,MEDIUM_MAX UNIT"`` with unit px (default ``"32^2,96^2px"`` = COCO),
            m2 or mm2 (from the GT raster's CRS/transform or spacing, or ``pixel_size``).
        boundary: ``"fixed"`` (default) or ``"reference"`` (d = 2 % of the image diagonal, as
            boundary-iou-api / faster-coco-eval).
        boundary_width: fixed-mode width: ``"2px"`` (default), ``"0.6m"``, ``"1mm"``, or a number of pixels.
        max_dets: detections kept per image and class (top by score); default all of them (at least 100).
        pixel_size: square pixel side, e.g. ``"0.3m"`` / ``"0.5mm"`` / metres as a float, for inputs without
            georeferencing (overrides the files' own when given).
        class_agnostic: score every object as one class (outlines only), whatever the classes say.

    Returns:
        :class:`Evaluation` (``.metrics``, ``.undefined``, ``.to_dict()``, ``.format_table()``).

    Raises:
        SmallsegError: unreadable or missing inputs, GT and prediction on different grids (shape, CRS,
            transform, spacing), non-integer label rasters, object tables missing ids, bad options.
    """
    buckets = parse_size_buckets(size_buckets)
    boundary_setting = parse_boundary_width(boundary, boundary_width)
    pixel_size_m = None
    if pixel_size is not None:
        value, unit = parse_length(pixel_size if isinstance(pixel_size, str) else f"{pixel_size}m", "pixel_size")
        if unit == "px":
            raise SmallsegError(f"pixel_size {pixel_size}: give a physical length, e.g. 0.3m or 0.5mm")
        pixel_size_m = value * _LENGTH_UNITS_M[unit]
    if max_dets is not None and int(max_dets) < 1:
        raise SmallsegError(f"max_dets {max_dets}: must be at least 1")

    warnings: list[str] = []
    coco_mode = _is_coco_path(gt) or isinstance(gt, dict)
    if coco_mode != (_is_coco_path(pred) or isinstance(pred, list)):
        raise SmallsegError("ground truth and prediction must both be COCO JSON or both be label rasters/arrays "
                            f"(got {_describe(gt)} and {_describe(pred)})")
    if coco_mode:
        for name, value in (("gt_classes", gt_classes), ("pred_classes", pred_classes),
                            ("pred_objects", pred_objects), ("gt_objects", gt_objects)):
            if value is not None:
                raise SmallsegError(f"{name}: only for label rasters; COCO JSON carries categories and scores")
        gt_side, pred_side, category_ids = _objects_from_coco(gt, pred, warnings)
        if pixel_size_m is not None:
            gt_side.pixel_area_m2, gt_side.pixel_area_note = pixel_size_m**2, f"given pixel size {pixel_size_m:g} m"
    else:
        gt_side = _objects_from_raster_side(gt, is_gt=True, classes=gt_classes, table=gt_objects,
                                            pixel_size_m=pixel_size_m, warnings=warnings)
        pred_side = _objects_from_raster_side(pred, is_gt=False, classes=pred_classes, table=pred_objects,
                                              pixel_size_m=pixel_size_m, warnings=warnings)
        check_same_grid(gt_side.raster, pred_side.raster)
        category_ids = None
    agnostic, class_mode_note, class_warnings = _class_mode(gt_side, pred_side, bool(class_agnostic), coco_mode)
    warnings.extend(class_warnings)
    if agnostic:
        gt_side.objects, pred_side.objects = _one_class(gt_side.objects), _one_class(pred_side.objects)
        category_ids = [1] if coco_mode else None

    gt_objs, dt_all = gt_side.objects, pred_side.objects
    image_shapes = {**dt_all.image_shapes, **gt_objs.image_shapes}
    pixel_area = gt_side.pixel_area_m2 if gt_side.pixel_area_m2 is not None else pred_side.pixel_area_m2
    pixel_note = gt_side.pixel_area_note if gt_side.pixel_area_m2 is not None else pred_side.pixel_area_note
    area_ranges = buckets.ranges_px(pixel_area)
    widths = {i: boundary_setting.width_px(shape, pixel_area) for i, shape in image_shapes.items()}
    ground_scaled = False
    if buckets.unit == "m2" and gt_side.raster is not None and gt_side.raster.crs is not None and pixel_size_m is None:
        # A pixel's ground area varies over a Web Mercator / degree grid: each object's COCO area becomes its
        # ground area in centre pixels, so the m2 buckets hold for every object, not only near the centre.
        units = ground_units(gt_side.raster.crs, gt_side.raster.transform, *gt_side.raster.shape[::-1])
        if units.kind in ("projected", "geographic") and units.pixel_area_m2 == pixel_area:
            gt_objs, dt_all = _ground_area_px(gt_objs, units), _ground_area_px(dt_all, units)
            ground_scaled = True

    largest = _largest_list(dt_all, floor=0)
    if max_dets is None:
        k_dets, k_source = max(100, largest), "all detections: the largest per-image, per-class count, at least 100"
    else:
        k_dets, k_source = int(max_dets), "max_dets"
    dt = cap_detections(dt_all, k_dets) if largest > k_dets else dt_all
    if len(dt) < len(dt_all):
        warnings.append(f"max_dets {k_dets} keeps {len(dt)} of {len(dt_all)} detections (top by score per image and class)")

    components = overlap_components(gt_objs, dt)
    common = dict(category_ids=category_ids, area_ranges_px=area_ranges, iou_thresholds=DEFAULT_IOU_THRESHOLDS,
                  max_dets=k_dets, components=components)
    mask_eval = coco_evaluate(gt_objs, dt, **common)
    gt_b = boundary_rles(gt_objs, widths)
    dt_b = boundary_rles(dt, widths)
    boundary_eval = coco_evaluate(gt_objs, dt, gt_boundaries=gt_b, dt_boundaries=dt_b, **common)

    mask_summary = summarize(mask_eval)
    boundary_summary = summarize(boundary_eval)
    totals, per_cat_counts = detection_counts(mask_eval, 0.5)
    biou, n_pairs = _mean_boundary_iou(matched_pairs(mask_eval, 0.5), gt_objs, dt, gt_b, dt_b)

    evaluated = np.isin(gt_objs.class_ids, mask_eval.category_ids)
    n_gt = int(np.count_nonzero(~gt_objs.iscrowd & evaluated))
    counts = count_error(n_gt, len(dt_all))
    metrics: dict = {key: mask_summary.get(key) for key in METRIC_KEYS if key in mask_summary}
    for key in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"):
        metrics[f"boundary_{key}"] = boundary_summary.get(key)
    metrics["boundary_IoU"] = biou
    metrics["boundary_IoU_pairs"] = n_pairs
    metrics.update(precision=totals.precision, recall=totals.recall, F1=totals.f1, TP=totals.tp, FP=totals.fp,
                   FN=totals.fn)
    metrics.update(counts)
    metrics = {**{key: metrics.get(key) for key in METRIC_KEYS}, "boundary_IoU_pairs": n_pairs}

    undefined = _undefined_reasons(metrics, n_gt)
    per_class = _per_class(mask_eval, boundary_eval, per_cat_counts, gt_objs, dt_all)
    d_values = sorted(set(widths.values()))
    settings = {
        "inputs": {"gt": gt_side.source, "pred": pred_side.source, "scores": pred_side.scores_source},
        "images": {str(i): list(s) for i, s in image_shapes.items()},
        "category_ids": mask_eval.category_ids,
        "classes": {
            "mode": "class-agnostic" if agnostic else "per-class",
            "why": class_mode_note,
            "gt": gt_side.class_source,
            "pred": pred_side.class_source,
            "names": {str(k): v for k, v in sorted({**pred_side.class_names, **gt_side.class_names}.items())}
            if not agnostic else {},
        },
        "size_buckets": {
            "unit": buckets.unit,
            "small_max": buckets.small_max,
            "medium_max": buckets.medium_max,
            "small": [0.0, buckets.small_max],
            "medium": [buckets.small_max, buckets.medium_max],
            "large": [buckets.medium_max, None],
            "small_max_px": area_ranges[1][1],
            "medium_max_px": area_ranges[2][1],
            "pixel_area": None if buckets.unit == "px" else pixel_area / _AREA_UNITS_M2[buckets.unit],
            "pixel_area_m2": pixel_area,
            "pixel_area_source": pixel_note,
            "area_definition": "mask pixel count (COCO 'area')"
                               + (", as the ground area at the object's position in scene-centre pixels (the "
                                  "CRS's scale varies over the scene)" if ground_scaled else "")
                               + "; bucket edges converted to pixels; small: area < small_max, medium: small_max "
                                 "<= area < medium_max (pycocotools' closed ranges [lo, hi])",
        },
        "boundary": {
            "mode": boundary_setting.mode,
            "width": boundary_setting.text(),
            "d_px": d_values[0] if len(d_values) == 1 else {str(i): w for i, w in widths.items()},
            "d_px_text": ", ".join(str(v) for v in d_values),
            "definition": "boundary = mask minus its erosion by a (2d+1)-px square (3x3 erosion iterated d "
                          "times), outside the image = background; Boundary AP pair score = min(mask IoU, "
                          "boundary IoU), crowd GT on mask IoU",
            "boundary_IoU_definition": "mean boundary IoU over GT-prediction pairs matched by COCO's greedy "
                                       "matching at mask IoU 0.5 (area 'all', crowd matches excluded); null "
                                       "when no pair matched",
        },
        "maxDets": k_dets,
        "maxDets_source": k_source,
        "iou_thresholds": [round(float(t), 10) for t in DEFAULT_IOU_THRESHOLDS],
        "iou_thresholds_text": "0.50:0.05:0.95",
        "recall_thresholds": "0:0.01:1 (101, pycocotools)",
        "f1_iou_threshold": 0.5,
        "method": ("pycocotools COCOeval computeIoU/evaluateImg on the connected components of the GT-prediction "
                   f"box-overlap graph ({mask_eval.n_components} components in {mask_eval.n_pieces} pseudo-images), "
                   "per-image records merged, pycocotools accumulate; identical to single-image pycocotools"),
        "pycocotools_version": getattr(pycocotools, "__version__", "unknown"),
    }
    return Evaluation(metrics=metrics, undefined=undefined, per_class=per_class, settings=settings,
                      warnings=warnings, coco=mask_eval)


def _classes_line(settings: dict) -> str:
    """The report's line on classes: ids with names, or class-agnostic with the reason."""
    classes = settings.get("classes", {})
    if classes.get("mode") == "class-agnostic":
        return f"classes       {classes['why']}"
    names = classes.get("names", {})
    ids = ", ".join(f"{k} ({names[str(k)]})" if str(k) in names else str(k) for k in settings["category_ids"])
    return f"classes       {ids}" + (f"  [{classes['why']}]" if classes.get("why") else "")


def _describe(value) -> str:
    if isinstance(value, str | os.PathLike):
        return os.fspath(value)
    return type(value).__name__


def _mean_boundary_iou(pairs, gt, dt, gt_b, dt_b) -> tuple[float | None, int]:
    dt_ids, gt_ids = pairs
    if len(dt_ids) == 0:
        return None, 0
    dt_index = {int(i): n for n, i in enumerate(dt.ids.tolist())}
    gt_index = {int(i): n for n, i in enumerate(gt.ids.tolist())}
    values = [
        float(mask_utils.iou([dt_b[dt_index[int(d)]]], [gt_b[gt_index[int(g)]]], [0])[0, 0])
        for d, g in zip(dt_ids.tolist(), gt_ids.tolist())
    ]
    return float(np.mean(values)), len(values)


def _undefined_reasons(metrics: dict, n_gt: int) -> dict[str, str]:
    reasons: dict[str, str] = {}
    no_gt = "no ground-truth objects (pycocotools returns -1)"
    for key, value in metrics.items():
        if value is not None:
            continue
        if n_gt == 0 and key.startswith(("AP", "AR", "boundary_AP")):
            reasons[key] = no_gt
        elif key in ("recall", "count_error_relative"):
            reasons[key] = "no ground-truth objects"
        elif key.endswith(("_small", "_medium", "_large")):
            bucket = key.rsplit("_", 1)[1]
            reasons[key] = f"no ground-truth objects in the {bucket} bucket (pycocotools returns -1)"
        elif key == "precision":
            reasons[key] = "no predicted objects"
        elif key == "F1":
            reasons[key] = "no ground-truth and no predicted objects"
        elif key == "boundary_IoU":
            reasons[key] = "no prediction matched a ground-truth object at mask IoU 0.5"
        else:
            reasons[key] = "undefined"
    return reasons


def _per_class(mask_eval, boundary_eval, per_cat_counts, gt, dt_all) -> dict:
    out = {}
    for k_index, k in enumerate(mask_eval.category_ids):
        p = mask_eval.eval["precision"][:, :, k_index, 0, -1]
        pb = boundary_eval.eval["precision"][:, :, k_index, 0, -1]
        t50 = np.flatnonzero(np.isclose(mask_eval.iou_thresholds, 0.5))

        def mean(values):
            v = values[values > -1]
            return float(v.mean()) if v.size else None

        counts = per_cat_counts[k]
        out[str(k)] = {
            "AP": mean(p),
            "AP50": mean(p[t50]),
            "boundary_AP": mean(pb),
            "precision": counts.precision,
            "recall": counts.recall,
            "F1": counts.f1,
            "count_gt": int(np.count_nonzero((gt.class_ids == k) & ~gt.iscrowd)),
            "count_pred": int(np.count_nonzero(dt_all.class_ids == k)),
        }
    return out
