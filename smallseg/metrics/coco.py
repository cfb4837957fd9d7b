"""COCO mask AP / AR and Boundary AP with pycocotools, split by overlap components so dense scenes scale.

pycocotools' ``computeIoU`` + ``evaluateImg`` are quadratic in the objects of one image (3,600 objects took
223 s; a 20,000-object scene would take hours and a 3.2 GB IoU matrix). This module gives the *same numbers*
at a cost that grows with the number of overlapping pairs:

1. Objects whose bounding boxes share no pixel have mask IoU exactly 0 and can never match at an IoU
   threshold above 0. So each image is split into connected components of the GT-detection box-overlap
   graph (same image, same class) — :func:`smallseg.metrics.objects.overlap_components`.
2. Each component is given to pycocotools as an image of its own (full image size, full-size RLEs), and
   pycocotools' own ``computeIoU`` / ``evaluateImg`` do the greedy matching in it. A detection's match
   depends only on the ground truth it overlaps and on the higher-scored detections that overlap that
   ground truth, all in its component, visited in the same relative order as in the whole image.
   Small components of the same image and class are packed together into pseudo-images of up to ~10
   objects (never splitting a component): still exact, since objects of different components have IoU 0
   wherever they sit, and it spares pycocotools' per-image overhead.
3. The per-component records of one (image, category, area range) are merged into the record
   ``evaluateImg`` would have produced for the whole image: fields concatenated, detections re-sorted by
   score with a stable sort on the original detection order (exactly ``evaluateImg``'s mergesort, so tied
   scores keep their order), ground truth re-sorted ignore-last.
4. pycocotools' own ``accumulate`` turns the merged records into precision / recall arrays.

The detection cap (``maxDets``) is applied per image before splitting (top K by score, stable), and
pycocotools is run with ``maxDets=[K]`` where K is at least the number of detections of any image, so
nothing is truncated silently. ``COCOeval.summarize`` hard-codes maxDets=100 in its look-ups, so
:func:`summarize` reads ``eval["precision"]`` / ``eval["recall"]`` directly, the way ``summarize`` averages
them (mean over entries > -1).

Boundary AP (faster-coco-eval's ``iouType="boundary"``, boundary-iou-api): the pair score is
``min(mask IoU, boundary IoU)`` for non-crowd ground truth and mask IoU for crowd ground truth; everything
else is COCO AP. Boundaries come from :mod:`smallseg.metrics.boundary`.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from smallseg.metrics.objects import ObjectSet, overlap_components

__all__ = [
    "COCO_AREA_RANGES_PX",
    "DEFAULT_IOU_THRESHOLDS",
    "CocoEvaluation",
    "cap_detections",
    "coco_evaluate",
    "summarize",
    "BoundaryCOCOeval",
]

# pycocotools' defaults: all, small < 32^2, medium < 96^2, large; upper bound 1e5^2 px.
COCO_AREA_RANGES_PX = ((0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))
AREA_LABELS = ("all", "small", "medium", "large")
DEFAULT_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)


class BoundaryCOCOeval(COCOeval):
    """pycocotools' COCOeval scoring a pair by ``min(mask IoU, boundary IoU)`` (crowd GT: mask IoU).

    Annotations carry their boundary RLE under ``"boundary"``. Only :meth:`computeIoU` differs from
    COCOeval; matching and accumulation are pycocotools' own.
    """

    def computeIoU(self, imgId, catId):  # noqa: N802, N803 (pycocotools' names)
        ious = super().computeIoU(imgId, catId)
        if len(ious) == 0:
            return ious
        gt = self._gts[imgId, catId]
        dt = self._dts[imgId, catId]
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")  # as COCOeval.computeIoU
        dt = [dt[i] for i in order][: self.params.maxDets[-1]]
        iscrowd = [int(g["iscrowd"]) for g in gt]
        boundary = np.asarray(mask_utils.iou([d["boundary"] for d in dt], [g["boundary"] for g in gt], iscrowd))
        ious = np.array(ious, dtype=np.float64)
        non_crowd = ~np.asarray(iscrowd, bool)
        ious[:, non_crowd] = np.minimum(ious[:, non_crowd], boundary[:, non_crowd])
        return ious


@dataclass
class CocoEvaluation:
    """What pycocotools computed, for one IoU type.

    Attributes:
        eval: ``COCOeval.eval`` from pycocotools' ``accumulate``: ``precision`` (T, R, K, A, M),
            ``recall`` (T, K, A, M), ``scores``, ``params``; -1 marks undefined entries.
        records: ``{(category id, area index, image id): evaluateImg record}`` for the whole image (merged
            from its components), or None where the image has neither GT nor detections of that category.
        category_ids: the K category ids, in the order of the K axis.
        image_ids: the evaluated image ids.
        iou_thresholds: (T,) IoU thresholds.
        area_ranges_px: A (low, high) ranges in pixels, "all" first.
        max_dets: the detection limit per image (M == 1).
        n_components: number of connected components of the box-overlap graph.
        n_pieces: number of pseudo-images pycocotools was run on (components packed together).
    """

    eval: dict
    records: dict
    category_ids: list[int]
    image_ids: list[int]
    iou_thresholds: np.ndarray
    area_ranges_px: list[tuple[float, float]]
    max_dets: int
    n_components: int
    n_pieces: int


def cap_detections(dt: ObjectSet, max_dets: int) -> ObjectSet:
    """Keep the ``max_dets`` highest-scored detections of each (image, category).

    This is exactly the set pycocotools keeps with ``params.maxDets = [max_dets]``: it sorts each
    (image, category) list by -score with a stable mergesort and truncates it.

    Args:
        dt: detections.
        max_dets: limit per image and category, >= 1.

    Returns:
        The kept detections, in their original order.
    """
    keep = np.zeros(len(dt), bool)
    for image_id in np.unique(dt.image_ids):
        for class_id in np.unique(dt.class_ids[dt.image_ids == image_id]):
            # pycocotools caps each (image, category) list: mirror that exactly.
            index = np.flatnonzero((dt.image_ids == image_id) & (dt.class_ids == class_id))
            order = np.argsort(-dt.scores[index], kind="mergesort")
            keep[index[order[:max_dets]]] = True
    return dt.subset(keep)


def _quiet_coco(images: list[dict], annotations: list[dict], category_ids: list[int]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": [{"id": int(k)} for k in category_ids]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _merge_records(records: list[dict], gt_position: dict[int, int]) -> dict:
    """One image's ``evaluateImg`` record from the records of its components (see module doc)."""
    dt_ids = np.concatenate([np.asarray(r["dtIds"], np.int64) for r in records])
    dt_scores = np.concatenate([np.asarray(r["dtScores"], np.float64) for r in records])
    # evaluateImg: argsort(-score, kind="mergesort") over detections in original order (= ascending id).
    dt_order = np.lexsort((dt_ids, -dt_scores))
    gt_ids = np.concatenate([np.asarray(r["gtIds"], np.int64) for r in records])
    gt_ignore = np.concatenate([np.asarray(r["gtIgnore"]).reshape(-1) for r in records])
    positions = np.asarray([gt_position[int(g)] for g in gt_ids], np.int64)
    gt_order = np.lexsort((positions, gt_ignore))
    first = records[0]
    return {
        "image_id": first["image_id"],
        "category_id": first["category_id"],
        "aRng": first["aRng"],
        "maxDet": first["maxDet"],
        "dtIds": dt_ids[dt_order].tolist(),
        "gtIds": gt_ids[gt_order].tolist(),
        "dtMatches": np.concatenate([r["dtMatches"] for r in records], axis=1)[:, dt_order],
        "gtMatches": np.concatenate([r["gtMatches"] for r in records], axis=1)[:, gt_order],
        "dtScores": dt_scores[dt_order].tolist(),
        "gtIgnore": gt_ignore[gt_order],
        "dtIgnore": np.concatenate([r["dtIgnore"] for r in records], axis=1)[:, dt_order],
    }


def _annotations(objects: ObjectSet, component: np.ndarray, boundaries: list[dict] | None, is_gt: bool) -> list[dict]:
    anns = []
    for i in range(len(objects)):
        ann = {
            "id": int(objects.ids[i]),
            "image_id": int(component[i]) + 1,
            "category_id": int(objects.class_ids[i]),
            "segmentation": objects.rles[i],
            "area": float(objects.area_px[i]),
            "iscrowd": int(objects.iscrowd[i]) if is_gt else 0,
        }
        if not is_gt:
            ann["score"] = float(objects.scores[i])
        if boundaries is not None:
            ann["boundary"] = boundaries[i]
        anns.append(ann)
    return anns


def coco_evaluate(
    gt: ObjectSet,
    dt: ObjectSet,
    *,
    category_ids: list[int] | None = None,
    area_ranges_px: tuple[tuple[float, float], ...] = COCO_AREA_RANGES_PX,
    iou_thresholds: np.ndarray = DEFAULT_IOU_THRESHOLDS,
    max_dets: int | None = None,
    gt_boundaries: list[dict] | None = None,
    dt_boundaries: list[dict] | None = None,
    components: tuple[np.ndarray, np.ndarray] | None = None,
    pack_objects: int = 10,
) -> CocoEvaluation:
    """COCO evaluation of instance masks with pycocotools, one overlap component at a time.

    Equal (to floating-point identity) to running pycocotools' ``COCOeval(iouType="segm")`` on the whole
    images with ``params.maxDets = [max_dets]`` — see the module doc for why.

    Args:
        gt: ground-truth objects (crowd flags honoured).
        dt: detections; more than ``max_dets`` per image and category are cut to the top-scored
            ``max_dets`` first (call :func:`cap_detections` to do it explicitly).
        category_ids: categories to evaluate (pycocotools: the GT file's categories); default: every class
            present in ``gt`` or ``dt``.
        area_ranges_px: A (low, high) area ranges in pixels, the first being "all".
        iou_thresholds: (T,) IoU thresholds, each in (0, 1].
        max_dets: detections kept per image; default the largest per-image, per-category detection count
            (at least 100): no cap.
        gt_boundaries, dt_boundaries: boundary RLEs of every object: given, the pair score is
            ``min(mask IoU, boundary IoU)`` (Boundary AP); omitted, plain mask IoU.
        components: ``(gt_component, dt_component)`` from :func:`overlap_components`, to reuse between the
            mask and boundary runs; computed when omitted.
        pack_objects: small components of the same image and class are packed into one pseudo-image of up
            to this many objects (a component is never split). Exact for any value — objects of different
            components have IoU 0 whether or not they share a pseudo-image, and their relative order is kept —
            and it saves pycocotools' per-image overhead (its cost per pseudo-image grows with
            detections x ground truth, so ~10 objects is the sweet spot). 1 = one component per image.

    Returns:
        :class:`CocoEvaluation`.
    """
    iou_thresholds = np.asarray(iou_thresholds, np.float64)
    if np.any(iou_thresholds <= 0) or np.any(iou_thresholds > 1):
        raise ValueError("IoU thresholds must lie in (0, 1]: pairs with IoU 0 are never scored")
    if category_ids is None:
        category_ids = sorted({int(k) for k in gt.class_ids} | {int(k) for k in dt.class_ids}) or [1]
    category_ids = [int(k) for k in category_ids]
    image_ids = sorted(int(i) for i in set(gt.image_shapes) | set(dt.image_shapes))
    shapes = {**dt.image_shapes, **gt.image_shapes}
    if max_dets is None:
        max_dets = _largest_list(dt)
    max_dets = int(max_dets)
    if _largest_list(dt, floor=0) > max_dets:
        if components is not None:
            raise ValueError("cap detections before computing components")
        dt_index = np.flatnonzero(np.isin(dt.ids, cap_detections(dt, max_dets).ids))
        dt = dt.subset(dt_index)
        if dt_boundaries is not None:
            dt_boundaries = [dt_boundaries[i] for i in dt_index.tolist()]
    boundary = gt_boundaries is not None or dt_boundaries is not None
    if boundary and (gt_boundaries is None or dt_boundaries is None):
        raise ValueError("give boundaries for both ground truth and detections")

    gt_comp, dt_comp = components if components is not None else overlap_components(gt, dt)
    n_comp = int(max(gt_comp.max(initial=-1), dt_comp.max(initial=-1))) + 1
    comp_image = np.zeros(n_comp, np.int64)
    comp_class = np.zeros(n_comp, np.int64)
    comp_image[gt_comp], comp_class[gt_comp] = gt.image_ids, gt.class_ids
    comp_image[dt_comp], comp_class[dt_comp] = dt.image_ids, dt.class_ids
    comp_size = np.bincount(gt_comp, minlength=n_comp) + np.bincount(dt_comp, minlength=n_comp)
    piece_of_comp, piece_image, piece_class = _pack_components(comp_image, comp_class, comp_size, pack_objects)
    gt_piece, dt_piece = piece_of_comp[gt_comp], piece_of_comp[dt_comp]
    n_piece = len(piece_image)

    images = [
        {"id": c + 1, "height": shapes[int(piece_image[c])][0], "width": shapes[int(piece_image[c])][1]}
        for c in range(n_piece)
    ]
    coco_gt = _quiet_coco(images, _annotations(gt, gt_piece, gt_boundaries, True), category_ids)
    coco_dt = _quiet_coco(images, _annotations(dt, dt_piece, dt_boundaries, False), category_ids)
    evaluator = (BoundaryCOCOeval if boundary else COCOeval)(coco_gt, coco_dt, iouType="segm")
    params = evaluator.params
    params.imgIds = list(range(1, n_piece + 1))
    params.catIds = category_ids
    params.iouThrs = iou_thresholds
    params.areaRng = [list(r) for r in area_ranges_px]
    params.areaRngLbl = list(AREA_LABELS[: len(area_ranges_px)]) + [
        f"range{i}" for i in range(len(AREA_LABELS), len(area_ranges_px))
    ]
    params.maxDets = [max_dets]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator._prepare()
    category_set = set(category_ids)

    # Per piece: pycocotools' own IoU and matching (each piece holds one image and one class).
    per_group: dict[tuple[int, int, int], list[dict]] = {}
    for c in range(n_piece):
        image_id, class_id = int(piece_image[c]), int(piece_class[c])
        if class_id not in category_set:
            continue  # pycocotools never loads annotations of categories outside params.catIds
        evaluator.ious[c + 1, class_id] = evaluator.computeIoU(c + 1, class_id)
        for a, area_range in enumerate(params.areaRng):
            record = evaluator.evaluateImg(c + 1, class_id, area_range, max_dets)
            if record is not None:
                per_group.setdefault((class_id, a, image_id), []).append(record)

    gt_position = {int(g): i for i, g in enumerate(gt.ids.tolist())}
    records: dict[tuple[int, int, int], dict | None] = {}
    for k in category_ids:
        for a in range(len(params.areaRng)):
            for image_id in image_ids:
                parts = per_group.get((k, a, image_id))
                records[k, a, image_id] = None if not parts else _merge_records(parts, gt_position)
                if records[k, a, image_id] is not None:
                    records[k, a, image_id]["image_id"] = image_id

    # pycocotools' accumulate over the merged (whole-image) records.
    accumulator = COCOeval(iouType="segm")
    acc_params = accumulator.params
    acc_params.imgIds = image_ids
    acc_params.catIds = category_ids
    acc_params.iouThrs = iou_thresholds
    acc_params.areaRng = params.areaRng
    acc_params.areaRngLbl = params.areaRngLbl
    acc_params.maxDets = [max_dets]
    accumulator._paramsEval = copy.deepcopy(acc_params)
    accumulator.evalImgs = [
        records[k, a, i] for k in category_ids for a in range(len(params.areaRng)) for i in image_ids
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        accumulator.accumulate()
    return CocoEvaluation(
        eval=accumulator.eval,
        records=records,
        category_ids=category_ids,
        image_ids=image_ids,
        iou_thresholds=iou_thresholds,
        area_ranges_px=[tuple(r) for r in params.areaRng],
        max_dets=max_dets,
        n_components=n_comp,
        n_pieces=n_piece,
    )


def _pack_components(
    comp_image: np.ndarray, comp_class: np.ndarray, comp_size: np.ndarray, max_objects: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy packing of consecutive components of one (image, class) into pieces of <= max_objects objects.

    Returns:
        ``(piece_of_component, piece_image, piece_class)``.
    """
    n = len(comp_image)
    order = np.lexsort((np.arange(n), comp_class, comp_image))
    piece_of = np.empty(n, np.int64)
    piece_image: list[int] = []
    piece_class: list[int] = []
    filled = 0
    for c in order.tolist():
        key = (int(comp_image[c]), int(comp_class[c]))
        size = int(comp_size[c])
        if not piece_image or key != (piece_image[-1], piece_class[-1]) or filled + size > max_objects:
            piece_image.append(key[0])
            piece_class.append(key[1])
            filled = 0
        piece_of[c] = len(piece_image) - 1
        filled += size
    return piece_of, np.asarray(piece_image, np.int64), np.asarray(piece_class, np.int64)


def _largest_list(dt: ObjectSet, floor: int = 100) -> int:
    """Largest number of detections of one (image, category): the maxDets that cuts nothing."""
    if len(dt) == 0:
        return floor
    _, counts = np.unique(np.stack([dt.image_ids, dt.class_ids], axis=1), axis=0, return_counts=True)
    return max(floor, int(counts.max()))


def _mean_defined(values: np.ndarray) -> float | None:
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else None


def summarize(result: CocoEvaluation) -> dict[str, float | None]:
    """AP / AR numbers from the accumulated arrays, averaged the way ``COCOeval.summarize`` does.

    Reads ``eval["precision"]`` (T, R, K, A, M) and ``eval["recall"]`` (T, K, A, M) at the one maxDets
    used (``summarize`` itself would look up maxDets=100). A value is None when pycocotools marks every
    entry -1 (no ground truth in that setting).

    Returns:
        ``{"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR", "AR_small", "AR_medium",
        "AR_large"}`` on a 0-1 scale or None.
    """
    precision = result.eval["precision"]
    recall = result.eval["recall"]
    thresholds = result.iou_thresholds
    out: dict[str, float | None] = {"AP": _mean_defined(precision[:, :, :, 0, -1])}
    for name, t in (("AP50", 0.5), ("AP75", 0.75)):
        hit = np.flatnonzero(np.isclose(thresholds, t, rtol=0, atol=1e-12))
        out[name] = _mean_defined(precision[hit, :, :, 0, -1]) if hit.size else None
    for a, label in enumerate(AREA_LABELS[1: len(result.area_ranges_px)], start=1):
        out[f"AP_{label}"] = _mean_defined(precision[:, :, :, a, -1])
    out["AR"] = _mean_defined(recall[:, :, 0, -1])
    for a, label in enumerate(AREA_LABELS[1: len(result.area_ranges_px)], start=1):
        out[f"AR_{label}"] = _mean_defined(recall[:, :, a, -1])
    return out
