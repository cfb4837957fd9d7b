"""smallseg.metrics.coco / objects: the component method against plain single-image pycocotools.

The reference is pycocotools' COCOeval run the ordinary way: one image, full-size masks encoded with
``pycocotools.mask.encode``, results loaded with ``loadRes``, ``params.maxDets = [K]``. Its precision and
recall arrays must equal ours to 1e-9 (in practice: bit for bit).
"""

from __future__ import annotations

import contextlib
import io
import time

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from smallseg.metrics.coco import coco_evaluate, summarize
from smallseg.metrics.objects import (
    ObjectSet,
    crop_from_rle,
    objects_from_labels,
    overlap_components,
    overlapping_box_pairs,
    rle_counts,
    rles_from_crops,
)


# ---------------------------------------------------------------------------------------------------------------
# Scenes and the plain pycocotools reference
# ---------------------------------------------------------------------------------------------------------------


def planted_scene(rng, shape, n_objects, n_classes=2, max_side=30):
    """Rectangles and ellipses painted in order (later ones overwrite), ids 1..n, random classes."""
    height, width = shape
    labels = np.zeros(shape, np.int32)
    classes = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[0:height, 0:width]
    for k in range(1, n_objects + 1):
        h, w = rng.integers(2, max_side, 2)
        r, c = rng.integers(-3, height - 2), rng.integers(-3, width - 2)  # some cut by the image edge
        cls = rng.integers(1, n_classes + 1)
        r0, r1, c0, c1 = max(r, 0), min(r + h, height), max(c, 0), min(c + w, width)
        if rng.random() < 0.5:
            labels[r0:r1, c0:c1] = k
            classes[r0:r1, c0:c1] = cls
        else:
            sub = ((yy[r0:r1, c0:c1] - (r + h / 2)) / (h / 2)) ** 2 + ((xx[r0:r1, c0:c1] - (c + w / 2)) / (w / 2)) ** 2 <= 1
            labels[r0:r1, c0:c1][sub] = k
            classes[r0:r1, c0:c1][sub] = cls
    return labels, classes


def perturbed_prediction(rng, gt_labels, gt_classes, *, n_false=10, miss_rate=0.15, score_levels=5):
    """Shifted copies of GT objects (some cut by neighbours), misses, false positives, tied scores."""
    from scipy import ndimage

    height, width = gt_labels.shape
    pred = np.zeros_like(gt_labels)
    pred_classes = np.zeros_like(gt_classes)
    next_id = 1
    for k, sl in enumerate(ndimage.find_objects(gt_labels), start=1):
        if sl is None or rng.random() < miss_rate:
            continue
        mask = gt_labels[sl] == k
        cls = int(gt_classes[sl][mask][0])
        if rng.random() < 0.1:
            cls = 3 - cls if cls in (1, 2) else cls  # wrong class
        dy, dx = (int(v) for v in rng.integers(-2, 3, 2))
        r0, c0 = sl[0].start + dy, sl[1].start + dx
        top, left = max(0, -r0), max(0, -c0)
        r0c, c0c = max(r0, 0), max(c0, 0)
        r1c, c1c = min(r0 + mask.shape[0], height), min(c0 + mask.shape[1], width)
        if r1c <= r0c or c1c <= c0c:
            continue  # shifted off the image
        part = mask[top:top + r1c - r0c, left:left + c1c - c0c]
        region = pred[r0c:r1c, c0c:c1c]
        paint = part & (region == 0)
        region[paint] = next_id
        pred_classes[r0c:r1c, c0c:c1c][paint] = cls
        next_id += 1
    extra, extra_classes = planted_scene(rng, (height, width), n_false)
    free = (pred == 0) & (extra > 0)
    pred[free] = extra[free] + next_id
    pred_classes[free] = extra_classes[free]
    # renumber densely (objects may have been erased by neighbours)
    ids = np.unique(pred)[1:]
    remap = np.zeros(pred.max() + 1, np.int32)
    remap[ids] = np.arange(1, len(ids) + 1)
    pred = remap[pred]
    scores = np.round(rng.random(len(ids)) * score_levels) / score_levels  # many ties
    return pred, pred_classes, scores


def majority_classes(labels, classes):
    ids = np.unique(labels)[1:]
    out = []
    for k in ids:
        values = classes[labels == k]
        counts = np.bincount(values)
        counts[0] = 0
        out.append(int(np.argmax(counts)) if counts.any() else 0)
    return ids, np.asarray(out)


def plain_pycocotools(gt_labels, gt_classes, pred_labels, pred_classes, scores, max_dets, crowd=(), area_rng=None):
    """pycocotools the ordinary way on one full image. Returns COCOeval.eval."""
    height, width = gt_labels.shape
    gt_ids, gt_cls = majority_classes(gt_labels, gt_classes)
    dt_ids, dt_cls = majority_classes(pred_labels, pred_classes)
    categories = sorted(set(gt_cls.tolist()) | set(dt_cls.tolist())) or [1]
    annotations = []
    for k, cls in zip(gt_ids.tolist(), gt_cls.tolist()):
        mask = np.asfortranarray((gt_labels == k).astype(np.uint8))
        annotations.append({"id": k, "image_id": 1, "category_id": cls, "segmentation": mask_utils.encode(mask),
                            "area": float(mask.sum()), "iscrowd": int(k in crowd)})
    coco_gt = COCO()
    coco_gt.dataset = {"images": [{"id": 1, "height": height, "width": width}], "annotations": annotations,
                       "categories": [{"id": k} for k in categories]}
    results = []
    for n, (k, cls) in enumerate(zip(dt_ids.tolist(), dt_cls.tolist())):
        mask = np.asfortranarray((pred_labels == k).astype(np.uint8))
        results.append({"image_id": 1, "category_id": cls, "segmentation": mask_utils.encode(mask),
                        "score": float(scores[n])})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results) if results else COCO()
        if not results:
            coco_dt.dataset = {"images": coco_gt.dataset["images"], "annotations": [],
                               "categories": coco_gt.dataset["categories"]}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        evaluator.params.maxDets = [max_dets]
        if area_rng is not None:
            evaluator.params.areaRng = area_rng
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval, categories


def ours(gt_labels, gt_classes, pred_labels, pred_classes, scores, crowd=(), max_dets=None, pack_objects=10):
    pred_ids = np.unique(pred_labels)[1:]
    gt = objects_from_labels(gt_labels, class_raster=gt_classes, crowd_ids=set(crowd))
    dt = objects_from_labels(pred_labels, class_raster=pred_classes,
                             score_by_id=dict(zip(pred_ids.tolist(), np.asarray(scores, float).tolist())),
                             detection_ids=True)
    return coco_evaluate(gt, dt, max_dets=max_dets, pack_objects=pack_objects)


def assert_same(result, reference):
    np.testing.assert_allclose(result.eval["precision"], reference["precision"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.eval["recall"], reference["recall"], rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# RLE from crops
# ---------------------------------------------------------------------------------------------------------------


def test_crop_rles_equal_pycocotools_encode_of_full_masks():
    rng = np.random.default_rng(3)
    for trial in range(200):
        height, width = (int(v) for v in rng.integers(1, 25, 2))
        full = rng.random((height, width)) < rng.random()
        if trial % 4 == 0:  # full-height columns: runs that join across a column break
            full[:] = False
            full[:, 1: 1 + int(rng.integers(1, width + 1))] = True
        if trial % 7 == 0:  # ends on the very last pixel
            full[-1, -1] = True
        if not full.any():
            continue
        rows, cols = np.flatnonzero(full.any(1)), np.flatnonzero(full.any(0))
        box = np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1])
        crop = full[box[0]:box[2], box[1]:box[3]]
        ours_rle = rles_from_crops([crop], box[None], (height, width))[0]
        reference = mask_utils.encode(np.asfortranarray(full.astype(np.uint8)))
        assert ours_rle["counts"] == reference["counts"]
        assert ours_rle["size"] == reference["size"]
        assert mask_utils.area(ours_rle) == full.sum()
        decoded_box, decoded_crop = crop_from_rle(reference)
        assert decoded_box.tolist() == box.tolist()
        assert np.array_equal(decoded_crop, crop)
        assert rle_counts(reference).sum() == height * width


def test_objects_from_labels_areas_boxes_and_majority_class():
    labels = np.zeros((10, 12), np.uint16)
    labels[1:4, 2:7] = 5  # 15 px
    labels[6:10, 0:2] = 2  # 8 px, touches the image corner
    classes = np.zeros_like(labels)
    classes[1:4, 2:7] = 3
    classes[1, 2:4] = 1  # minority class
    classes[6:10, 0:2] = 2
    objects = objects_from_labels(labels, class_raster=classes)
    assert objects.ids.tolist() == [2, 5]
    assert objects.area_px.tolist() == [8.0, 15.0]
    assert objects.boxes.tolist() == [[6, 0, 10, 2], [1, 2, 4, 7]]
    assert objects.class_ids.tolist() == [2, 3]
    for rle, k in zip(objects.rles, [2, 5]):
        assert rle["counts"] == mask_utils.encode(np.asfortranarray((labels == k).astype(np.uint8)))["counts"]


def test_box_pairs_equal_brute_force():
    rng = np.random.default_rng(5)
    a0 = rng.integers(0, 200, (300, 2))
    a = np.concatenate([a0, a0 + rng.integers(1, 40, (300, 2))], axis=1)
    b0 = rng.integers(0, 200, (250, 2))
    b = np.concatenate([b0, b0 + rng.integers(1, 25, (250, 2))], axis=1)
    ga, gb = rng.integers(0, 2, 300), rng.integers(0, 2, 250)
    ia, ib = overlapping_box_pairs(a, ga, b, gb)
    brute = {(i, j) for i in range(300) for j in range(250)
             if ga[i] == gb[j] and a[i, 0] < b[j, 2] and b[j, 0] < a[i, 2] and a[i, 1] < b[j, 3] and b[j, 1] < a[i, 3]}
    assert set(zip(ia.tolist(), ib.tolist())) == brute
    assert len(brute) > 50  # the scene really has overlaps


# ---------------------------------------------------------------------------------------------------------------
# Equality with plain pycocotools
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,pack_objects", [(0, 1), (1, 10), (2, 3), (3, 40)])
def test_component_method_equals_plain_pycocotools(seed, pack_objects):
    rng = np.random.default_rng(seed)
    gt, gt_cls = planted_scene(rng, (160, 220), 90)
    pred, pred_cls, scores = perturbed_prediction(rng, gt, gt_cls)
    result = ours(gt, gt_cls, pred, pred_cls, scores, pack_objects=pack_objects)
    assert result.n_pieces < result.n_components or pack_objects == 1
    reference, categories = plain_pycocotools(gt, gt_cls, pred, pred_cls, scores, result.max_dets)
    assert result.category_ids == categories
    assert result.n_components > 10  # really split
    assert len(np.unique(scores)) < len(scores)  # ties present
    assert_same(result, reference)
    summary = summarize(result)
    assert 0 < summary["AP"] < 1
    # summarize's own arithmetic on the reference arrays
    p = reference["precision"][:, :, :, 0, -1]
    assert summary["AP"] == pytest.approx(np.mean(p[p > -1]), abs=1e-12)
    p50 = reference["precision"][0, :, :, 0, -1]
    assert summary["AP50"] == pytest.approx(np.mean(p50[p50 > -1]), abs=1e-12)
    small = reference["precision"][:, :, :, 1, -1]
    assert summary["AP_small"] == pytest.approx(np.mean(small[small > -1]), abs=1e-12)


def test_crowd_ground_truth_equals_plain_pycocotools():
    rng = np.random.default_rng(11)
    gt, gt_cls = planted_scene(rng, (120, 160), 50, n_classes=1)
    pred, pred_cls, scores = perturbed_prediction(rng, gt, gt_cls, n_false=15)
    pred_cls[pred > 0] = 1
    crowd = tuple(int(k) for k in np.unique(gt)[1:][::6])
    reference, _ = plain_pycocotools(gt, gt_cls, pred, pred_cls, scores, 1000, crowd=crowd)
    for pack_objects in (1, 10):
        result = ours(gt, gt_cls, pred, pred_cls, scores, crowd=crowd, max_dets=1000, pack_objects=pack_objects)
        assert_same(result, reference)


def test_user_max_dets_cap_equals_plain_pycocotools():
    rng = np.random.default_rng(4)
    gt, gt_cls = planted_scene(rng, (150, 150), 70, n_classes=1)
    pred, pred_cls, scores = perturbed_prediction(rng, gt, gt_cls)
    pred_cls[pred > 0] = 1
    result = ours(gt, gt_cls, pred, pred_cls, scores, max_dets=20)
    reference, _ = plain_pycocotools(gt, gt_cls, pred, pred_cls, scores, 20)
    assert_same(result, reference)
    uncapped = ours(gt, gt_cls, pred, pred_cls, scores)
    assert summarize(uncapped)["AR"] > summarize(result)["AR"]  # the cap really removed detections


def test_empty_prediction_and_empty_ground_truth_equal_plain_pycocotools():
    rng = np.random.default_rng(7)
    gt, gt_cls = planted_scene(rng, (80, 90), 12)
    empty = np.zeros_like(gt)
    result = ours(gt, gt_cls, empty, empty, [])
    reference, _ = plain_pycocotools(gt, gt_cls, empty, empty, [], result.max_dets)
    assert_same(result, reference)
    assert summarize(result)["AP"] == 0.0

    pred, pred_cls, scores = perturbed_prediction(rng, gt, gt_cls)
    result = ours(empty, empty, pred, pred_cls, scores)
    reference, _ = plain_pycocotools(empty, empty, pred, pred_cls, scores, result.max_dets)
    assert_same(result, reference)
    assert summarize(result)["AP"] is None  # pycocotools: -1 everywhere


def test_dense_scene_scored_whole_and_equal_to_plain_pycocotools_on_a_crop():
    # ~2,100 objects on 2,000 x 2,000 px. Plain pycocotools needs ~70 s on this scene (quadratic in objects per
    # image), so the equality check runs on a crop holding ~500 objects; the whole scene goes through the
    # component method only (a few seconds).
    rng = np.random.default_rng(21)
    gt = np.zeros((2000, 2000), np.int32)
    gt_cls = np.zeros_like(gt)
    k = 0
    for r in range(0, 2000, 44):
        for c in range(0, 2000, 44):
            k += 1
            h, w = rng.integers(4, 36, 2)
            dr, dc = rng.integers(0, 10, 2)
            gt[r + dr:r + dr + h, c + dc:c + dc + w] = k
            gt_cls[r + dr:r + dr + h, c + dc:c + dc + w] = 1 + (k % 2)
    pred, pred_cls, scores = perturbed_prediction(rng, gt, gt_cls, n_false=60, score_levels=20)
    assert len(np.unique(gt)) - 1 >= 2000

    t0 = time.perf_counter()
    whole = ours(gt, gt_cls, pred, pred_cls, scores)
    print(f"component method, whole scene: {time.perf_counter() - t0:.2f} s")
    fg = pred > 0
    pairs = np.unique(np.stack([pred[fg], pred_cls[fg]]), axis=1)  # each predicted object has one class here
    assert pairs.shape[1] == len(np.unique(pred)) - 1
    per_class = np.bincount(pairs[1])
    assert whole.max_dets == per_class.max() > 100  # every detection kept, no silent cap at 100
    assert whole.n_components > 1500

    crop = (slice(0, 480), slice(0, 2000))
    gt_c, gt_cls_c, pred_c, pred_cls_c = gt[crop], gt_cls[crop], pred[crop], pred_cls[crop]
    kept = np.unique(pred_c)[1:]
    scores_c = scores[kept - 1]
    result = ours(gt_c, gt_cls_c, pred_c, pred_cls_c, scores_c)
    reference, _ = plain_pycocotools(gt_c, gt_cls_c, pred_c, pred_cls_c, scores_c, result.max_dets)
    assert len(np.unique(gt_c)) - 1 > 400
    assert_same(result, reference)


def test_multi_image_object_sets_equal_plain_pycocotools():
    # Two images in one evaluation (COCO-style datasets): records stay per image, accumulate merges them.
    rng = np.random.default_rng(8)
    parts_gt, parts_dt, plain_anns, plain_res, images = [], [], [], [], []
    next_dt = 0
    for image_id, shape in ((1, (70, 90)), (2, (60, 50))):
        gt, gt_cls = planted_scene(rng, shape, 20)
        pred, pred_cls, scores = perturbed_prediction(rng, gt, gt_cls)
        g = objects_from_labels(gt, class_raster=gt_cls, image_id=image_id)
        g.ids = g.ids + 1000 * image_id
        pred_ids = np.unique(pred)[1:]
        d = objects_from_labels(pred, class_raster=pred_cls, image_id=image_id, detection_ids=True,
                                score_by_id=dict(zip(pred_ids.tolist(), scores.tolist())))
        d.ids = d.ids + next_dt
        next_dt += len(d)
        parts_gt.append(g)
        parts_dt.append(d)
        images.append({"id": image_id, "height": shape[0], "width": shape[1]})
        for i in range(len(g)):
            plain_anns.append({"id": int(g.ids[i]), "image_id": image_id, "category_id": int(g.class_ids[i]),
                               "segmentation": mask_utils.encode(np.asfortranarray((gt == g.source_ids[i]).astype(np.uint8))),
                               "area": float(g.area_px[i]), "iscrowd": 0})
        for i in range(len(d)):
            plain_res.append({"image_id": image_id, "category_id": int(d.class_ids[i]), "score": float(d.scores[i]),
                              "segmentation": mask_utils.encode(np.asfortranarray((pred == d.source_ids[i]).astype(np.uint8)))})
    gt_all, dt_all = ObjectSet.concatenate(parts_gt), ObjectSet.concatenate(parts_dt)
    result = coco_evaluate(gt_all, dt_all)
    coco_gt = COCO()
    coco_gt.dataset = {"images": images, "annotations": plain_anns,
                       "categories": [{"id": k} for k in result.category_ids]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(plain_res), iouType="segm")
        evaluator.params.maxDets = [result.max_dets]
        evaluator.evaluate()
        evaluator.accumulate()
    assert_same(result, evaluator.eval)


def test_components_never_join_objects_whose_boxes_do_not_touch():
    labels = np.zeros((40, 40), np.int32)
    labels[0:5, 0:5] = 1
    labels[5:10, 5:10] = 2  # touches 1 only diagonally at a corner: boxes [0,5) and [5,10) do not share a pixel
    pred = np.zeros_like(labels)
    pred[2:7, 2:7] = 1  # overlaps both
    pred[30:35, 30:35] = 2  # alone
    gt = objects_from_labels(labels)
    dt = objects_from_labels(pred, detection_ids=True)
    gt_comp, dt_comp = overlap_components(gt, dt)
    assert gt_comp[0] == gt_comp[1] == dt_comp[0]
    assert dt_comp[1] != dt_comp[0]


def test_rle_counts_decode_pycocotools_strings():
    rng = np.random.default_rng(9)
    for trial in range(100):
        height, width = (int(v) for v in rng.integers(1, 300, 2))
        full = rng.random((height, width)) < rng.random() * 0.1  # long runs: multi-character, negative deltas
        if trial % 5 == 0:
            full[:] = True
        reference = mask_utils.encode(np.asfortranarray(full.astype(np.uint8)))
        counts = rle_counts(reference)
        assert counts.sum() == height * width
        assert mask_utils.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)["counts"] \
            == reference["counts"]
        if full.any():
            box, crop = crop_from_rle(reference)
            assert np.array_equal(crop, full[box[0]:box[2], box[1]:box[3]])
            assert crop.sum() == full.sum()


def test_sparse_huge_label_values_keep_their_ids():
    labels = np.zeros((20, 20), np.int64)
    labels[2:5, 2:5] = 2**40
    labels[10:12, 10:15] = 7
    objects = objects_from_labels(labels)
    assert objects.ids.tolist() == [7, 2**40]
    assert objects.area_px.tolist() == [10.0, 9.0]
    assert objects.boxes.tolist() == [[10, 10, 12, 15], [2, 2, 5, 5]]
