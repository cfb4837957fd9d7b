"""``smallseg evaluate`` against the label formats labels come in: vector polygons, boxes, a labelled area.

:func:`smallseg.metrics.evaluation.evaluate` scores a prediction raster against a GT label raster (or COCO
JSON). This module turns the other ground truths into what it scores, or scores them at their own level:

- **Vector GT** (GPKG / GeoJSON / Shapefile / FlatGeobuf): the polygons are reprojected to the prediction's CRS
  and rasterised onto its grid (:func:`smallseg.data.labels.vector.read_vector_labels`: one object per
  feature, the smaller on top where they overlap, a CRS with no overlap refused), written as a label GeoTIFF
  on that grid (plus a class raster with ``class_field``), and scored by ``evaluate`` exactly as a raster GT
  would be: the numbers are those of ``evaluate`` with the equivalent raster.
- **Box GT** (COCO ``bbox`` JSON, DeepForest CSV, Pascal VOC XML): box-level scoring. The predicted objects'
  boxes are their masks' bounding boxes; greedy one-to-one matching by descending score at ``box_iou`` (0.4
  by default, as the NEON tree-crown benchmark) gives TP / FP / FN, precision, recall and F1
  (:func:`smallseg.data.labels.boxes.match_boxes`); box AP at that IoU is pycocotools' ``bbox`` COCOeval with
  that single IoU threshold (101-point interpolated, all detections, class-agnostic).
- **Label volumes** (NIfTI / NRRD / MHA with several slices, e.g. dicom-batch's ``labels.nii.gz``): 3-D
  matching by voxel IoU, sizes in mm³ (:mod:`smallseg.metrics.evaluation_volume`).
- **Labelled area** (``area``: a pixel box ``rows=0:256``, a mask raster or a vector file): predicted objects
  whose pixels lie mostly outside it, and GT objects with no pixel inside it, are dropped before scoring
  (nobody said whether there is an object there), as validation does (:mod:`smallseg.train.scoring`). For
  boxes: those whose centre lies outside.

:func:`write_quicklook` draws TP / FP / FN outlines (IoU 0.5) as a PNG (``--plot FILE.png``). ``--plot DIR``
writes that quick-look and, from pycocotools' own arrays (:mod:`smallseg.metrics.plots`), precision-recall
curves per size bucket at IoU 0.5 (``--box-iou`` for boxes; PNG + CSV of the numbers) and a histogram of the
scores of true vs false positives (:func:`write_plots`; matplotlib, optional).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import rasterio
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage

from smallseg.data.labels import ClassMapping
from smallseg.data.labels import boxes as box_io
from smallseg.data.labels.area import labelled_area
from smallseg.data.labels.auto import label_kind
from smallseg.data.labels.boxes import match_boxes
from smallseg.data.labels.vector import read_vector_labels
from smallseg.errors import SmallsegError
from smallseg.instances import Instances
from smallseg.io import plots as charts
from smallseg.io.atomic import atomic_path, write_json_atomic
from smallseg.io.labels import check_same_grid, read_label_raster
from smallseg.io.plots import require_matplotlib
from smallseg.io.tables import default_object_table_path, read_object_table
from smallseg.metrics.evaluation import evaluate
from smallseg.metrics.evaluation_volume import evaluate_volumes, is_volume
from smallseg.metrics.plots import pr_curves, records_of_all, tp_fp_scores
from smallseg.train.scoring import inside_labelled, predicted_boxes


@dataclass
class BoxEvaluation:
    """Box-level scores of a prediction against box GT.

    Attributes:
        metrics: ``box_AP`` (pycocotools bbox AP at ``iou``), ``precision``, ``recall``, ``F1``, ``TP``, ``FP``,
            ``FN``, ``count_gt``, ``count_pred``.
        settings: the inputs, the IoU threshold, the image, the labelled area, how boxes were made.
        warnings: notes for the user (boxes outside the image or area).
    """

    metrics: dict[str, Any]
    settings: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    coco: Any = field(default=None, repr=False, compare=False)  # (COCOeval.eval, evalImgs) of box_AP, for plots

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: metrics at the top level (as :class:`~smallseg.metrics.evaluation.Evaluation`'s),
        then ``settings`` and ``warnings``."""
        return {**self.metrics, "settings": self.settings, "warnings": self.warnings}

    def format_table(self) -> str:
        m, s = self.metrics, self.settings
        fmt = lambda v: "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
        lines = [f"box-level scores of {s['inputs']['pred']} against {s['inputs']['gt']} ({s['image']})",
                 f"IoU threshold {s['iou']:g}; predicted boxes: {s['pred_boxes']}",
                 f"{'box_AP':<12}{fmt(m['box_AP'])}", f"{'precision':<12}{fmt(m['precision'])}",
                 f"{'recall':<12}{fmt(m['recall'])}", f"{'F1':<12}{fmt(m['F1'])}",
                 f"{'TP/FP/FN':<12}{m['TP']}/{m['FP']}/{m['FN']}",
                 f"{'GT / pred':<12}{m['count_gt']} / {m['count_pred']}"]
        if s.get("area"):
            lines.append(f"labelled area: {s['area']} (boxes whose centre is outside it are not scored)")
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON, atomically; returns the path."""
        write_json_atomic(path, self.to_dict())
        return Path(path)


def read_prediction(pred: str | os.PathLike, pred_objects: str | os.PathLike | None = None):
    """A prediction label raster with its object table as (Instances, LabelRaster, table path or None).

    Scores and classes come from ``pred_objects`` (default: the table beside the raster, as ``evaluate``
    finds it); without a table every object scores 1.0 and is class 1.
    """
    raster = read_label_raster(pred)
    labels = raster.array
    ids = np.unique(labels[labels > 0]).astype(np.int64)
    scores = np.ones(len(ids), np.float32)
    class_ids = np.ones(len(ids), np.int32)
    table = Path(pred_objects) if pred_objects is not None else default_object_table_path(pred)
    if table is not None and Path(table).is_file():
        parsed = read_object_table(table, require=("id", "score"))
        by_id = {int(i): k for k, i in enumerate(parsed.ids.tolist())}
        missing = [int(i) for i in ids if int(i) not in by_id]
        if missing:
            raise SmallsegError(f"{table}: no score for {len(missing)} object id(s) of {pred} (e.g. {missing[:5]})")
        rows = np.array([by_id[int(i)] for i in ids], np.int64)
        scores = np.asarray(parsed.scores, np.float32)[rows] if len(rows) else scores
        if parsed.class_ids is not None and len(rows):
            class_ids = np.asarray(parsed.class_ids, np.int32)[rows]
    else:
        table = None

    centroids = np.array(ndimage.center_of_mass(np.ones_like(labels), labels, ids), np.float64).reshape(-1, 2)
    instances = Instances(labels=labels.astype(np.int32), ids=ids, class_ids=class_ids, scores=scores,
                          centroids_yx=centroids)
    return instances, raster, table


def _write_like(path: Path, array: np.ndarray, raster) -> Path:
    """``array`` as a single-band int32 GeoTIFF on ``raster``'s grid (its CRS and transform)."""
    profile = dict(driver="GTiff", width=array.shape[1], height=array.shape[0], count=1, dtype="int32",
                   compress="deflate")
    if raster.crs is not None:
        profile["crs"] = raster.crs
    if raster.transform is not None:
        profile["transform"] = raster.transform
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array.astype(np.int32), 1)
    return path


def _class_mapping(class_names: Sequence[str] | None, table: Path | None):
    """The class names GT class values are mapped to: given, else those the prediction's table names."""
    if class_names:
        return ClassMapping(tuple(class_names))
    if table is not None:
        names = read_object_table(table, require=("id",)).class_name_map()
        if names:
            top = max(names)
            return ClassMapping(tuple(names.get(k, f"class{k}") for k in range(1, top + 1)))
    return ClassMapping.of(None, 1)


def _area_mask(area: Any, shape: tuple[int, int], raster) -> np.ndarray | None:
    if area is None:
        return None
    geo = (raster.crs, raster.transform) if raster.crs is not None else None
    return labelled_area(area, shape, geo, where=f"area {area}")


def evaluate_sources(gt: str | os.PathLike, pred: str | os.PathLike, *, area: Any = None,
                     class_field: str | None = None, class_names: Sequence[str] | None = None,
                     layer: str | None = None, box_iou: float = 0.4, image: str | None = None,
                     plot: str | os.PathLike | None = None, **evaluate_kwargs):
    """Score a prediction raster against ground truth in any supported format (module docstring).

    Args:
        gt: a label raster, COCO JSON, vector file, or box file (``.csv`` / ``.xml`` / a folder of ``.xml``;
            COCO JSON whose annotations have no ``segmentation`` is scored as boxes).
        pred: the prediction's instance raster (its object table beside it, or ``pred_objects=``).
        area: labelled area (pixel box, mask raster, vector file).
        class_field: vector GT attribute with each polygon's class name, mapped to ``class_names`` (default:
            the class names of the prediction's object table).
        class_names: the model's class names, in class-id order.
        layer: layer of a multi-layer vector file.
        box_iou: IoU threshold of box-level matching.
        image: for box files listing several images, the image whose boxes to score (default: the only one,
            else the one named like the prediction).
        plot: ``FILE.png``: write the TP / FP / FN quick-look there; any other path is a folder that gets the
            quick-look, the PR curves per size bucket and the TP / FP score histogram (:func:`write_plots`).
        **evaluate_kwargs: passed to :func:`smallseg.metrics.evaluation.evaluate` (size buckets, boundary, ...).

    Returns:
        :class:`~smallseg.metrics.evaluation.Evaluation` for masks, :class:`BoxEvaluation` for boxes.
    """
    if plot is not None and not _is_png(plot):
        require_matplotlib(f"plot {plot}")  # before any scoring: one line, not a traceback at the end
    gt_path = Path(gt)
    kind = label_kind(gt_path) if isinstance(gt, (str, os.PathLike)) else "label_image"
    if kind == "boxes" and gt_path.suffix.lower() == ".json" and _coco_has_masks(gt_path):
        kind = "coco"
    if class_field is not None and kind != "vector":
        raise SmallsegError(f"class_field applies to vector ground truth (GPKG / GeoJSON / ...), not {gt}")
    if kind == "coco" or (kind in ("label_image", "volume") and area is None and plot is None
                          and not _is_3d(gt)):
        if area is not None:
            raise SmallsegError("area: give the ground truth as a label raster or vector file (COCO JSON carries "
                                "its own images)")
        if plot is not None and _is_png(plot):
            raise SmallsegError(f"plot: the TP/FP/FN quick-look ({Path(plot).name}) needs a label raster or vector "
                                "ground truth (a COCO file may hold many images); give a folder for the PR curves and "
                                "the score histogram")
        result = evaluate(gt, pred, **evaluate_kwargs)
        if plot is not None:  # COCO: the curves and the histogram, over all its images (no quick-look)
            coco = (result.coco.eval, _records_of_all(result.coco.records))
            result.settings["plots"] = [str(p) for p in write_plots(plot, None, coco, iou=0.5, level="mask")]
        return result
    if kind == "volume":
        if is_volume(gt):  # 3-D: objects matched by voxel IoU, sizes in mm3
            if plot is not None:
                raise SmallsegError("plot: the quick-look is 2-D; leave it out for label volumes")
            return evaluate_volumes(gt, pred, pred_objects=evaluate_kwargs.get("pred_objects"), area=area)
        kind = "label_image"  # a one-slice volume is a 2-D label raster
    pred_objects = evaluate_kwargs.pop("pred_objects", None)
    instances, raster, table = read_prediction(pred, pred_objects)
    if kind == "boxes":
        result = _evaluate_boxes(gt_path, pred, instances, raster, area=area, iou=box_iou, image=image, table=table)
        gt_boxes = result.settings.pop("_gt_boxes")
        if plot is not None:
            draw = lambda path: write_quicklook(path, None, instances, raster.array.shape,  # noqa: E731
                                                gt_boxes=gt_boxes, box_iou=box_iou,
                                                mask=_area_mask(area, raster.shape, raster))
            result.settings["plots"] = _write_plot_or_plots(plot, draw, result.coco, box_iou, "box",
                                                            result.warnings)
        return result

    shape = raster.shape
    warnings: list[str] = []
    gt_classes = None
    if kind == "vector":
        mapping = _class_mapping(class_names, table)
        item = read_vector_labels(pred, gt_path, classes=mapping, class_field=class_field, layer=layer)
        gt_ids = item.instances.astype(np.int64)
        gt_classes = item.classes if class_field is not None else None
        warnings.extend(item.notes)
    else:
        gt_raster = read_label_raster(gt_path)
        check_same_grid(gt_raster, raster)
        gt_ids = gt_raster.array.astype(np.int64)
    mask = _area_mask(area, shape, raster)
    pred_eval = Path(pred)
    with tempfile.TemporaryDirectory(prefix="smallseg-evaluate-") as tmp:
        tmp = Path(tmp)
        if mask is not None:
            # GT objects with no pixel inside the area are not scored; predictions mostly outside are dropped.

            inside_ids = np.unique(gt_ids[mask & (gt_ids > 0)])
            gt_ids = np.where(np.isin(gt_ids, inside_ids), gt_ids, 0)
            kept = inside_labelled(instances, ~mask)
            dropped = len(instances) - len(kept)
            if dropped:
                warnings.append(f"area: {dropped} predicted object(s) mostly outside the labelled area not scored")
            instances = kept
            pred_eval = _write_like(tmp / "pred.tif", np.asarray(kept.labels), raster)
            csv = tmp / "pred.objects.csv"
            csv.write_text("id,score,class_id\n" + "".join(
                f"{int(i)},{float(s)!r},{int(c)}\n" for i, s, c in zip(kept.ids, kept.scores, kept.class_ids)))
            pred_objects = csv if table is not None else None
        gt_eval = _write_like(tmp / "gt.tif", gt_ids, raster)
        if gt_classes is not None:
            evaluate_kwargs["gt_classes"] = _write_like(tmp / "gt.classes.tif", np.where(gt_ids > 0, gt_classes, 0),
                                                        raster)
        if pred_objects is None and table is not None:
            pred_objects = table
        result = evaluate(gt_eval, pred_eval, pred_objects=pred_objects, **evaluate_kwargs)
    result.settings["inputs"]["gt"] = str(gt)
    result.settings["inputs"]["pred"] = str(pred)
    if kind == "vector":
        result.settings["inputs"]["gt_rasterised"] = ("polygons reprojected to the prediction's CRS and rasterised "
                                                      "onto its grid (pixel centres inside, smaller on top)")
    if area is not None:
        result.settings["area"] = {"spec": str(area), "rule": "GT objects with no pixel inside and predicted "
                                   "objects with more than half their pixels outside are not scored"}
    result.warnings.extend(warnings)
    if plot is not None:
        coco = None if result.coco is None else (result.coco.eval, _records_of_all(result.coco.records))
        draw = lambda path: write_quicklook(path, gt_ids, instances, shape, mask=mask)  # noqa: E731
        result.settings["plots"] = _write_plot_or_plots(plot, draw, coco, 0.5, "mask", result.warnings)
    return result


def _is_png(path) -> bool:
    return str(path).lower().endswith(".png")


def _records_of_all(records: dict) -> list:
    return records_of_all(records)


def _write_plot_or_plots(plot, draw_quicklook, coco, iou: float, level: str, warnings: list[str]) -> list[str]:
    """``plot`` ending in .png: the quick-look only (``draw_quicklook(path)``); else a folder with all of
    :func:`write_plots`. Returns the files written."""
    if _is_png(plot):
        return [str(draw_quicklook(plot))]
    if coco is None:
        warnings.append(f"plot {plot}: no GT box or no prediction, so no curves; only the quick-look written")
    return [str(p) for p in write_plots(plot, draw_quicklook, coco, iou=iou, level=level)]


def write_plots(folder: str | os.PathLike, draw_quicklook, coco, *, iou: float = 0.5,
                level: str = "mask") -> list[Path]:
    """Write ``quicklook.png`` (``draw_quicklook(path)``), ``pr_curves.png`` + ``pr_curves.csv`` (per size
    bucket at IoU ``iou``) and ``score_histogram.png`` (TP vs FP scores at ``iou``) into ``folder``.

    Args:
        folder: created when missing.
        draw_quicklook: writes the TP / FP / FN quick-look to the path it is given (None: no quick-look, e.g.
            for a COCO ground truth of several images).
        coco: ``(COCOeval.eval, area-"all" evaluateImg records)`` of the evaluation; None: the quick-look only.
        iou: the IoU threshold of the curves and the histogram (one of the evaluated thresholds).
        level: "mask" or "box", for the titles.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SmallsegError(f"plot {folder}: not a folder (give FILE.png for the quick-look alone, or a folder)")
    folder.mkdir(parents=True, exist_ok=True)
    written = [draw_quicklook(folder / "quicklook.png")] if draw_quicklook is not None else []
    if coco is None:
        return written
    coco_eval, records = coco
    curves = pr_curves(coco_eval, iou)
    written.append(charts.write_pr_curves_png(folder / "pr_curves.png", curves,
                                              title=f"{level} precision-recall per size bucket, IoU {iou:g}"))
    written.append(charts.write_pr_curves_csv(folder / "pr_curves.csv", curves))
    tp, fp = tp_fp_scores(records, coco_eval["params"].iouThrs, iou)
    written.append(charts.write_score_histogram_png(folder / "score_histogram.png", tp, fp, iou=iou,
                                                    title=f"{level} scores of TP / FP at IoU {iou:g} (pycocotools "
                                                          "matching)"))
    return written


def _is_3d(path) -> bool:
    return isinstance(path, (str, os.PathLike)) and is_volume(path)


def _coco_has_masks(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    anns = data.get("annotations") if isinstance(data, dict) else None
    return bool(anns) and any(a.get("segmentation") for a in anns if isinstance(a, dict))


def _evaluate_boxes(gt_path: Path, pred, instances: Instances, raster, *, area, iou: float, image: str | None,
                    table) -> BoxEvaluation:
    if not 0 < float(iou) <= 1:
        raise SmallsegError(f"box_iou {iou}: give an IoU in (0, 1], e.g. 0.4")
    lenient = _AnyClass()  # any box class counts: box scoring is class-agnostic
    suffix = gt_path.suffix.lower()
    if gt_path.is_dir() or suffix == ".xml":
        by_image = box_io._read_voc(gt_path, lenient)
    elif suffix == ".csv":
        by_image = box_io._read_csv(gt_path, lenient)
    else:
        by_image = box_io._read_coco_boxes(gt_path, lenient)
    by_image = {k: v for k, v in by_image.items() if v}
    if not by_image:
        raise SmallsegError(f"{gt_path}: no boxes")
    if image is None:
        if len(by_image) == 1:
            name = next(iter(by_image))
        else:
            stem = Path(pred).name.split(".")[0]
            matches = [k for k in by_image if Path(k).name.split(".")[0] == stem]
            if len(matches) != 1:
                raise SmallsegError(f"{gt_path}: boxes of {len(by_image)} images ({', '.join(sorted(by_image)[:4])}...); "
                                    "say which with image=NAME")
            name = matches[0]
    else:
        matches = [k for k in by_image if Path(k).name == Path(image).name]
        if not matches:
            raise SmallsegError(f"{gt_path}: no boxes for image {image}")
        name = matches[0]
    gt = np.array([r[:4] for r in by_image[name]], np.float64).reshape(-1, 4)
    h, w = raster.shape
    warnings = []
    on_image = (gt[:, 2] > 0) & (gt[:, 3] > 0) & (gt[:, 0] < h) & (gt[:, 1] < w)
    if not on_image.any():
        raise SmallsegError(f"{gt_path}: none of the {len(gt)} boxes of {name} lies on the prediction ({h} x {w} px); "
                            "are they in its pixel coordinates?")
    if not on_image.all():
        warnings.append(f"{int((~on_image).sum())} GT box(es) outside the prediction's grid (not scored)")
    gt = gt[on_image]
    pred_boxes = predicted_boxes(instances)
    scores = np.asarray(instances.scores, np.float64)
    mask = _area_mask(area, raster.shape, raster)
    if mask is not None:
        def inside(b):
            r = np.clip(((b[:, 0] + b[:, 2]) / 2).astype(int), 0, h - 1)
            c = np.clip(((b[:, 1] + b[:, 3]) / 2).astype(int), 0, w - 1)
            return mask[r, c]

        keep_gt, keep_pred = inside(gt), inside(pred_boxes)
        gt, pred_boxes, scores = gt[keep_gt], pred_boxes[keep_pred], scores[keep_pred]
    tp, fp, fn = match_boxes(gt, pred_boxes, scores, iou)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (2 * precision * recall / (precision + recall) if precision and recall else
          (0.0 if (precision is not None and recall is not None) else None))
    ev = _box_cocoeval(gt, pred_boxes, scores, iou)
    metrics = {"box_AP": _box_ap_of(ev, gt, pred_boxes), "precision": precision, "recall": recall, "F1": f1,
               "TP": tp, "FP": fp, "FN": fn, "count_gt": int(len(gt)), "count_pred": int(len(pred_boxes))}
    settings = {"inputs": {"gt": str(gt_path), "pred": str(pred), "scores": None if table is None else str(table)},
                "image": name, "iou": float(iou), "area": None if area is None else str(area),
                "pred_boxes": "bounding boxes of the predicted masks (pixel edges)",
                "matching": "greedy one-to-one by descending score (match_boxes); box_AP: pycocotools bbox "
                            "COCOeval at this single IoU, 101-point interpolation, all detections, class-agnostic",
                "_gt_boxes": gt}
    coco = None if ev is None else (ev.eval, list(ev.evalImgs))
    return BoxEvaluation(metrics=metrics, settings=settings, warnings=warnings, coco=coco)


class _AnyClass:
    """The part of a ClassMapping the box readers use, taking every box label as class 1 (box scoring is
    class-agnostic)."""

    names = ("object",)

    def id_of(self, name, where):
        return 1

    def default_id(self, where):
        return 1


def box_ap(gt: np.ndarray, pred: np.ndarray, scores: np.ndarray, iou: float) -> float | None:
    """pycocotools ``bbox`` AP of ``pred`` (N, 4) ``(row0, col0, row1, col1)`` boxes with ``scores`` against ``gt``
    at the single IoU threshold ``iou`` (None when there is no GT box)."""
    return _box_ap_of(_box_cocoeval(gt, pred, scores, iou), gt, pred)


def _box_ap_of(ev, gt: np.ndarray, pred: np.ndarray) -> float | None:
    if not len(gt):
        return None
    if not len(pred):
        return 0.0
    precision = ev.eval["precision"][0, :, 0, 0, 0]
    valid = precision[precision > -1]
    return float(valid.mean()) if len(valid) else 0.0


def _box_cocoeval(gt: np.ndarray, pred: np.ndarray, scores: np.ndarray, iou: float):
    """pycocotools' ``bbox`` COCOeval of ``pred`` against ``gt`` at the single IoU ``iou``, accumulated (None
    without GT or predictions: pycocotools cannot load an empty result list)."""
    if not len(gt) or not len(pred):
        return None
    to_xywh = lambda b: [float(b[1]), float(b[0]), float(b[3] - b[1]), float(b[2] - b[0])]  # noqa: E731
    dataset = {"images": [{"id": 1, "width": 1, "height": 1}], "categories": [{"id": 1, "name": "object"}],
               "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": to_xywh(b), "iscrowd": 0,
                                "area": float((b[2] - b[0]) * (b[3] - b[1]))} for k, b in enumerate(gt)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([{"image_id": 1, "category_id": 1, "bbox": to_xywh(b), "score": float(s)}
                                   for b, s in zip(pred, scores)])
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.iouThrs = np.array([float(iou)])
        ev.params.maxDets = [max(len(pred), 1)]
        ev.params.areaRng = [[0, 1e12]]
        ev.params.areaRngLbl = ["all"]
        ev.evaluate()
        ev.accumulate()
    return ev


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def write_quicklook(path: str | os.PathLike, gt_ids: np.ndarray | None, pred: Instances, shape: tuple[int, int], *,
                    gt_boxes: np.ndarray | None = None, box_iou: float = 0.4, mask: np.ndarray | None = None,
                    max_side: int = 2048) -> Path:
    """A TP / FP / FN quick-look PNG: green = matched prediction (IoU >= 0.5 masks, ``box_iou`` boxes), red =
    false positive, blue = missed GT object; outside the labelled area ``mask`` darker grey. Written atomically;
    images larger than ``max_side`` are subsampled."""
    h, w = shape
    canvas = np.full((h, w, 3), 235, np.uint8)
    if mask is not None:
        canvas[~mask] = 150
    labels = np.asarray(pred.labels).astype(np.int64)
    order = np.argsort(-np.asarray(pred.scores), kind="stable")
    green, red, blue = (0, 150, 0), (210, 0, 0), (0, 60, 220)
    if gt_boxes is not None:
        boxes = predicted_boxes(pred)
        taken = np.zeros(len(gt_boxes), bool)
        matched_pred = np.zeros(len(pred), bool)
        for i in order:
            b = boxes[i]
            inter = np.prod(np.clip(np.minimum(b[2:], gt_boxes[:, 2:]) - np.maximum(b[:2], gt_boxes[:, :2]), 0, None),
                            axis=1) if len(gt_boxes) else np.zeros(0)
            union = np.prod(b[2:] - b[:2]) + np.prod(gt_boxes[:, 2:] - gt_boxes[:, :2], axis=1) - inter
            iou = np.where(taken, -1, inter / np.maximum(union, 1e-12))
            if len(iou) and iou.max() >= box_iou:
                taken[int(np.argmax(iou))] = True
                matched_pred[i] = True
        for k, i in enumerate(pred.ids):
            canvas[_outline(labels == i)] = green if matched_pred[k] else red
        for b, hit in zip(gt_boxes, taken):
            r0, c0 = max(int(b[0]), 0), max(int(b[1]), 0)
            r1, c1 = min(int(np.ceil(b[2])), h) - 1, min(int(np.ceil(b[3])), w) - 1
            colour = green if hit else blue
            canvas[r0, c0:c1 + 1] = canvas[r1, c0:c1 + 1] = colour
            canvas[r0:r1 + 1, c0] = canvas[r0:r1 + 1, c1] = colour
    else:
        gt = np.clip(np.asarray(gt_ids), 0, None).astype(np.int64)
        pairs, counts = np.unique(gt.ravel() * (labels.max() + 1) + labels.ravel(), return_counts=True)
        g_of, p_of = pairs // (labels.max() + 1), pairs % (labels.max() + 1)
        gt_area = np.bincount(gt.ravel())
        pred_area = np.bincount(labels.ravel(), minlength=int(labels.max()) + 1)
        taken: set[int] = set()
        matched_pred, matched_gt = set(), set()
        overlaps: dict[int, list[tuple[int, int]]] = {}
        for g, p, n in zip(g_of, p_of, counts):
            if g and p:
                overlaps.setdefault(int(p), []).append((int(g), int(n)))
        for k in order:
            p = int(pred.ids[k])
            best, best_iou = None, 0.5
            for g, n in overlaps.get(p, []):
                iou = n / (gt_area[g] + pred_area[p] - n)
                if g not in taken and iou >= best_iou:
                    best, best_iou = g, iou
            if best is not None:
                taken.add(best)
                matched_pred.add(p)
                matched_gt.add(best)
        for g in np.unique(gt[gt > 0]):
            if int(g) not in matched_gt:
                canvas[_outline(gt == g)] = blue
        for p in pred.ids:
            canvas[_outline(labels == p)] = green if int(p) in matched_pred else red
    step = max(1, int(np.ceil(max(h, w) / max_side)))
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(canvas[::step, ::step]).save(tmp, format="PNG")
    return path
