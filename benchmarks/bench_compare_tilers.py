"""Side by side: smallseg vs SAHI sliced prediction vs MONAI ``sliding_window_inference`` (issue #4, benchmark 3).

All tools drive the same model (the shipped ``remote-sensing`` smallseg model) on the same synthetic aerial
scene (:func:`smallseg.data.remote_sensing.write_remote_sensing_scene`, 0.4 m/px, seed 11, ``--size`` square,
written once to ``--work``). Needs the ``bench`` extra (``pip install -e .[bench]``: sahi, monai).

Methods (each runs in its own fresh subprocess, torch 1 thread, ``OMP_NUM_THREADS=1``, ``GDAL_CACHEMAX=64``):

- ``reference``: the whole scene in ONE forward pass (fully convolutional; normalised input padded with 0 =
  the training mean to a multiple of 32, outputs cropped back), decoded once with smallseg's decoder
  (:func:`smallseg.decode.components.decode_outputs`). Not a tiler: the yardstick for the seam columns.
- ``smallseg-array``: :func:`smallseg.predict_array` on the image read with rasterio (default tile = the
  model's 256 px, default overlap 68 px, core ownership stitching).
- ``smallseg-geotiff``: :func:`smallseg.predict_geotiff` on the GeoTIFF (streaming, ALL outputs written:
  label/class GeoTIFFs, GeoPackage, GeoJSON, CSV, quicklook PNG, run report).
- ``sahi-default``: ``sahi.predict.get_sliced_prediction`` with a ``sahi.models.base.DetectionModel`` subclass
  wrapping the smallseg model (per slice: ``model.config.normalise``, forward, smallseg's decoder; each
  instance becomes an ``ObjectPrediction`` with its mask as SAHI's COCO polygons
  (``get_coco_segmentation_from_bool_mask``, as SAHI's own model wrappers do), score and category).
  Slices = the model's tile; everything else SAHI's defaults: overlap ratios 0.2 / 0.2,
  ``perform_standard_pred=True`` (SAHI also predicts the whole image at once and merges it in),
  postprocess GREEDYNMM / IOS / 0.5, not class-agnostic. ``confidence_threshold`` = the model's decode
  ``min_score`` (0.1; the decoder already drops lower scores; SAHI switches to NMS only below 0.1).
- ``sahi-sliced``: the same with ``perform_standard_pred=False`` (slices only: the part that scales to
  scenes too big for one forward pass).
- ``sahi-whole`` (diagnostic, not a tiler): the same call with ONE slice = the whole scene, so the model
  sees what ``reference`` sees and only SAHI's polygon conversion and GREEDYNMM merge act: shows how much
  of SAHI's score comes from merging the model's own fragments rather than from slicing.
- ``monai``: ``monai.inferers.sliding_window_inference`` with its default overlap (0.25) and mode
  (``constant``), ``roi_size`` = the model's tile, predictor returning the concatenation of
  softmax(semantic), centroid vectors and sigmoid(distance) (centroid vectors are offsets to the object
  centre, translation invariant, so averaging them across windows is legitimate); then ONE
  :func:`smallseg.decode.decode_instances` of the whole blended scene.

Batch size ``--batch-size`` (default 4) for smallseg (``batch_size``), SAHI (``batch_size``; the wrapper
batches slices in one forward) and MONAI (``sw_batch_size``). The reference and SAHI's standard pass are one
image. Every child does one warm-up forward of one tile before the clock starts.

Measured per method:

- wall s: the prediction call, including reading the image from the GeoTIFF (rasterio, for all but
  ``smallseg-geotiff``, which reads it itself), SAHI's slicing, polygon conversion and merging, MONAI's
  blending and final decode. Excluded: imports, model load, warm-up, and turning the output into masks for
  scoring (SAHI polygons -> pixel masks with ``cv2.fillPoly``, what SAHI's ``Mask.bool_mask`` does).
- baseline RSS MB: ``VmRSS`` after imports, model load and the warm-up; peak RSS MB: ``VmHWM`` right after
  the prediction call (the process's high-water mark, so it includes the baseline).
- AP, AP50, AP_small, count: :func:`smallseg.metrics.evaluate` (pycocotools underneath) of the method's
  objects (COCO results with full-image RLE masks, so SAHI's possibly overlapping masks are scored as they
  are) against the scene's ground truth (COCO size buckets 32², 96² px; all detections kept). The class-mean
  AP weighs the scene's few hundred buildings as much as its thousands of cars, so the car class is also
  scored alone (car AP, AP50, F1 at IoU 0.5).

Seam columns (defined without reference to any tool):

- Tile border lines of a method: every edge of every model-input window of that method's own grid that is
  not on the scene border (smallseg: :func:`smallseg.tiling.grid.tile_windows` with its plan; SAHI:
  ``sahi.slicing.get_slice_bboxes`` with the call's settings; MONAI: ``monai.data.utils.dense_patch_slices``
  with ``_get_scan_interval``; each returned by the method's own process). A line at row ``p`` lies between
  pixel rows ``p - 1`` and ``p``.
- Seam objects: reference objects (see ``reference``) with pixels on both sides of at least one such line
  (box ``row0 < p < row1`` for a row line, same for columns). The other reference objects are "away".
- For each reference object, against the method's predictions (class-agnostic mask IoU):
  **split** = 2 or more predictions overlap it with IoU >= 0.1 (broken in pieces or duplicated);
  **cut** = exactly one prediction with IoU >= 0.1 and that IoU is < 0.5 (only part of it found);
  **lost** = no prediction with IoU >= 0.1. Otherwise it is whole (one prediction, IoU >= 0.5).
  Reported for seam objects and, as a control for differences that have nothing to do with seams (the
  decoding of a blended map, polygon rounding, context at a tile's edge), for the objects away from seams.
- **dup pairs** = pairs of the method's own predictions whose masks overlap with intersection over the
  smaller mask >= 0.5 (anywhere in the scene). Label-raster outputs (smallseg, MONAI, reference) cannot
  overlap, so they are 0 by construction; SAHI returns separate, possibly overlapping masks.
- **seam excess pp** = (split + cut + lost) / objects at seams minus the same share away from seams, in
  percentage points: what the tile borders add on top of the method's other differences from the reference.
  (The shipped model's encoder has squeeze-and-excitation blocks, i.e. global average pooling over the
  input, so ANY tiling changes its outputs everywhere, not only at borders; the "away" share measures that.)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_compare_tilers.py --size 2048
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_compare_tilers.py --size 768 --work /tmp/bench_compare_quick

Prints a Markdown table and writes it with the settings to ``--work``/compare.md (``compare_<size>.md`` too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

METHODS = ("reference", "smallseg-array", "smallseg-geotiff", "sahi-default", "sahi-sliced", "monai", "sahi-whole")
SEED = 11
PIXEL_SIZE_M = 0.4
MODEL_NAME = "remote-sensing"
CATEGORIES = [{"id": 1, "name": "car"}, {"id": 2, "name": "building"}]


# ----------------------------------------------------------------------------------------------------------
# Child process: one method
# ----------------------------------------------------------------------------------------------------------


def _proc_status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _read_image(path: Path) -> np.ndarray:
    """(C, H, W) raw pixels of the whole GeoTIFF."""
    import rasterio

    with rasterio.open(path) as src:
        return src.read()


def _forward_padded(model, x_chw: np.ndarray) -> dict:
    """Model outputs for one normalised (C, H, W) image of any size: padded with 0 (the training mean) to a
    multiple of 32 at the bottom/right, cropped back. Returns a dict of (1, k, H, W) float tensors."""
    import torch

    _, h, w = x_chw.shape
    ph, pw = (-h) % 32, (-w) % 32
    x = np.pad(x_chw, ((0, 0), (0, ph), (0, pw))) if (ph or pw) else x_chw
    with torch.inference_mode():
        out = model(torch.from_numpy(np.ascontiguousarray(x))[None])
    return {k: v[..., :h, :w].float() for k, v in out.items()}


def _objects_from_instances(labels: np.ndarray, ids, class_ids, scores) -> dict:
    """Per-object crops of a label raster: boxes (N, 4) (row0, col0, row1, col1), classes, scores, crops."""
    from scipy import ndimage

    labels = np.asarray(labels)
    found = ndimage.find_objects(labels.astype(np.int64, copy=False))
    boxes, crops, cls, sc = [], [], [], []
    for i, c, s in zip(np.asarray(ids), np.asarray(class_ids), np.asarray(scores)):
        sl = found[int(i) - 1] if int(i) - 1 < len(found) else None
        if sl is None:
            continue
        crop = labels[sl] == int(i)
        boxes.append((sl[0].start, sl[1].start, sl[0].stop, sl[1].stop))
        crops.append(crop)
        cls.append(int(c))
        sc.append(float(s))
    return _pack(boxes, crops, cls, sc)


def _pack(boxes, crops, classes, scores) -> dict:
    return {
        "boxes": np.asarray(boxes, np.int64).reshape(-1, 4),
        "classes": np.asarray(classes, np.int64),
        "scores": np.asarray(scores, np.float64),
        "crops_flat": np.concatenate([c.ravel() for c in crops]) if crops else np.zeros(0, bool),
    }


def _unpack(npz) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    boxes, flat = npz["boxes"], npz["crops_flat"]
    sizes = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    crops = [flat[offsets[i]:offsets[i + 1]].reshape(boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1])
             for i in range(len(boxes))]
    return boxes, npz["classes"], npz["scores"], crops


def _run_reference(image_path: Path, model, decode, batch_size: int, out: Path) -> dict:
    from smallseg.decode.components import decode_outputs

    img = _read_image(image_path)
    inst = decode_outputs(_forward_padded(model, model.config.normalise(img)), decode)[0]
    h, w = img.shape[1:]
    return {"result": inst, "windows": [(0, 0, h, w)], "settings": "whole scene, one forward, one decode"}


def _run_smallseg_array(image_path: Path, model, decode, batch_size: int, out: Path) -> dict:
    from smallseg.pipeline.array import plan_tiling, predict_array
    from smallseg.tiling.grid import tile_windows

    img = _read_image(image_path)
    inst = predict_array(img, model, batch_size=batch_size, decode=decode)
    plan = plan_tiling(model, decode=decode)
    grid = tile_windows(img.shape[1], img.shape[2], plan.tile_size_px, plan.overlap_px)
    return {"result": inst, "windows": _grid_windows(grid),
            "settings": f"predict_array, tile {plan.tile_size_px}, overlap {plan.overlap_px} px, batch {batch_size}"}


def _grid_windows(grid) -> list[tuple[int, int, int, int]]:
    return [(int(t.window.row_off), int(t.window.col_off), int(t.window.row_off + t.window.height),
             int(t.window.col_off + t.window.width)) for t in grid]


def _run_smallseg_geotiff(image_path: Path, model, decode, batch_size: int, out: Path) -> dict:
    from smallseg.pipeline.array import plan_tiling
    from smallseg.pipeline.geotiff import predict_geotiff
    from smallseg.tiling.grid import tile_windows

    res = predict_geotiff(image_path, out.parent / "geotiff_out", model, batch_size=batch_size, device="cpu",
                          decode=decode, overwrite=True, progress=False)
    stop = time.perf_counter()
    import rasterio

    with rasterio.open(res.paths["instances"]) as src:
        labels = src.read(1)
    plan = plan_tiling(model, decode=decode)
    grid = tile_windows(labels.shape[0], labels.shape[1], plan.tile_size_px, plan.overlap_px)
    t = res.objects
    return {"stop": stop, "objects": _objects_from_instances(labels, t.ids, t.class_ids, t.scores),
            "windows": _grid_windows(grid),
            "settings": f"predict_geotiff (all outputs: {', '.join(sorted(res.paths))}), tile {plan.tile_size_px}, "
                        f"overlap {plan.overlap_px} px, batch {batch_size}"}


def _sahi_model_class():
    """A SAHI DetectionModel that runs a smallseg model and decodes with smallseg's decoder."""
    from sahi.models.base import DetectionModel
    from sahi.prediction import ObjectPrediction
    from sahi.utils.compatibility import fix_full_shape_list, fix_shift_amount_list
    import cv2
    from sahi.utils.cv import get_coco_segmentation_from_bool_mask
    from scipy import ndimage

    class SmallsegDetectionModel(DetectionModel):
        def __init__(self, net, decode, **kwargs):
            self.decode = decode
            self.dropped_zero_area = 0
            super().__init__(model=net, **kwargs)

        def load_model(self):  # the model is always passed in loaded
            raise NotImplementedError("pass model=")

        def set_model(self, model, **kwargs):
            self.model = model.eval()
            names = model.config.class_names
            self.category_mapping = {str(i + 1): n for i, n in enumerate(names)}

        def _predict(self, images_hwc: list[np.ndarray]) -> list:
            import torch

            from smallseg.decode.components import decode_outputs

            cfg = self.model.config
            chw = [cfg.normalise(np.moveaxis(im, -1, 0)) for im in images_hwc]
            if len({c.shape for c in chw}) == 1 and all(s % 32 == 0 for s in chw[0].shape[1:]):
                with torch.inference_mode():
                    out = self.model(torch.from_numpy(np.stack(chw)))
                return decode_outputs({k: v.float() for k, v in out.items()}, self.decode)
            return [decode_outputs(_forward_padded(self.model, c), self.decode)[0] for c in chw]

        def perform_inference(self, image: np.ndarray) -> None:
            self._original_predictions = self._predict([image])

        def perform_batch_inference(self, images: list[np.ndarray]) -> None:
            # One forward for the whole batch of slices (like SAHI's Ultralytics wrapper).
            self._batch_images = None
            self._original_shapes = [im.shape for im in images]
            self._original_predictions = self._predict(images)

        def _create_object_prediction_list_from_original_predictions(self, shift_amount_list=[[0, 0]],
                                                                      full_shape_list=None):
            shifts = fix_shift_amount_list(shift_amount_list)
            shapes = fix_full_shape_list(full_shape_list)
            per_image = []
            for k, inst in enumerate(self._original_predictions):
                full_shape = None if shapes is None else [int(v) for v in shapes[k]]
                found = ndimage.find_objects(inst.labels)
                preds = []
                for i, c, s in zip(inst.ids, inst.class_ids, inst.scores):
                    if s < self.confidence_threshold:
                        continue
                    sl = found[int(i) - 1]
                    r0, c0 = sl[0].start, sl[1].start
                    polys = get_coco_segmentation_from_bool_mask(inst.labels[sl] == int(i))
                    # SAHI's merge (shapely union) raises "Invalid segmentation mask" when two merged masks
                    # have only zero-area rings (objects 1 px wide): keep rings with area, drop the rest.
                    polys = [p for p in polys if cv2.contourArea(np.asarray(p, np.float32).reshape(-1, 2)) > 0]
                    if not polys:  # SAHI's own wrappers also drop masks without a polygon
                        self.dropped_zero_area += 1
                        continue
                    polys = [[v + (c0 if j % 2 == 0 else r0) for j, v in enumerate(p)] for p in polys]
                    preds.append(ObjectPrediction(
                        bbox=[c0, r0, sl[1].stop, sl[0].stop], category_id=int(c),
                        category_name=self.category_mapping[str(int(c))], segmentation=polys, score=float(s),
                        shift_amount=list(shifts[k]),
                        full_shape=full_shape if full_shape is not None else list(inst.labels.shape)))
                per_image.append(preds)
            self._object_prediction_list_per_image = per_image

    return SmallsegDetectionModel


def _run_sahi(image_path: Path, model, decode, batch_size: int, out: Path, standard_pred: bool,
              whole: bool = False) -> dict:
    from sahi.predict import get_sliced_prediction
    from sahi.slicing import get_slice_bboxes

    wrapper = _sahi_model_class()(model, decode, device="cpu", confidence_threshold=decode.min_score)
    img = np.ascontiguousarray(np.moveaxis(_read_image(image_path), 0, -1))  # SAHI takes (H, W, C)
    # whole: one slice = the whole scene, so only SAHI's merge acts (a diagnostic, not a tiler).
    tile = int(model.config.tile_size_px)
    slice_h, slice_w = img.shape[:2] if whole else (tile, tile)
    result = get_sliced_prediction(img, wrapper, slice_height=slice_h, slice_width=slice_w,
                                   perform_standard_pred=standard_pred, batch_size=batch_size, verbose=0)
    stop = time.perf_counter()
    h, w = img.shape[:2]
    del img
    import cv2

    boxes, crops, cls, sc = [], [], [], []
    for p in result.object_prediction_list:
        # Rasterise each final polygon set as SAHI's Mask.bool_mask does (cv2.fillPoly), inside its box.
        pts = [np.array(s).reshape(-1, 2).round().astype(int) for s in p.mask.segmentation]
        allp = np.concatenate(pts)
        c0, r0 = np.maximum(allp.min(0), 0)
        c1, r1 = np.minimum(allp.max(0) + 1, (w, h))
        m = np.zeros((r1 - r0, c1 - c0), np.uint8)
        cv2.fillPoly(m, [q - (c0, r0) for q in pts], (1,))
        if not m.any():
            continue
        boxes.append((r0, c0, r1, c1))
        crops.append(m.astype(bool))
        cls.append(int(p.category.id))
        sc.append(float(p.score.value))
    windows = [(y0, x0, y1, x1) for x0, y0, x1, y1 in get_slice_bboxes(h, w, slice_h, slice_w, False, 0.2, 0.2)]
    if standard_pred and len(windows) > 1:
        windows.append((0, 0, h, w))
    return {"stop": stop, "objects": _pack(boxes, crops, cls, sc), "windows": windows,
            "settings": f"get_sliced_prediction, slices {slice_h} x {slice_w}, overlap ratio 0.2 ({int(0.2 * slice_h)} px), "
                        f"perform_standard_pred={standard_pred}, GREEDYNMM/IOS/0.5, batch {batch_size}, "
                        f"confidence_threshold {decode.min_score:g}; {wrapper.dropped_zero_area} decoded objects (over all "
                        f"slices and passes) had only zero-area polygons and were dropped; SAHI durations s: "
                        f"{ {k: round(v, 1) for k, v in result.durations_in_seconds.items()} }"}


def _run_monai(image_path: Path, model, decode, batch_size: int, out: Path) -> dict:
    import torch
    from monai.data.utils import dense_patch_slices
    from monai.inferers import sliding_window_inference
    from monai.inferers.utils import _get_scan_interval

    from smallseg.decode.centroids import decode_instances

    tile = int(model.config.tile_size_px)

    def predictor(x: torch.Tensor) -> torch.Tensor:
        o = model(x)
        return torch.cat([torch.softmax(o["semantic"], 1), o["centroid"], torch.sigmoid(o["distance"])], 1)

    img = _read_image(image_path)
    n_sem = 1 + len(model.config.class_names)
    with torch.inference_mode():
        x = torch.from_numpy(model.config.normalise(img))[None]
        blended = sliding_window_inference(x, roi_size=(tile, tile), sw_batch_size=batch_size, predictor=predictor)
        del x
        maps = blended[0].numpy()
        inst = decode_instances(maps[:n_sem], maps[n_sem:n_sem + 2], maps[n_sem + 2], **asdict(decode))
    h, w = img.shape[1:]
    interval = _get_scan_interval((h, w), (tile, tile), 2, (0.25, 0.25))
    windows = [(s[0].start, s[1].start, s[0].stop, s[1].stop)
               for s in dense_patch_slices((h, w), (tile, tile), interval)]
    return {"result": inst, "windows": windows,
            "settings": f"sliding_window_inference, roi {tile}, overlap 0.25 (interval {interval[0]} px), "
                        f"mode constant, sw_batch_size {batch_size}, one decode of the blended scene"}


def run_child(args) -> None:
    import torch

    torch.set_num_threads(1)
    from smallseg.models.registry import load_model
    from smallseg.pipeline.array import decode_config_for

    model = load_model(MODEL_NAME).eval()
    decode = decode_config_for(model)
    tile = int(model.config.tile_size_px)
    with torch.inference_mode():  # warm-up: one tile
        model(torch.zeros(1, model.config.in_channels, tile, tile))
    if args.method.startswith("sahi"):
        import sahi  # noqa: F401  (imports count in the baseline, not the clock)
    if args.method == "monai":
        import monai  # noqa: F401
    baseline_mb = _proc_status_mb("VmRSS")
    out = Path(args.out)
    runners = {
        "reference": _run_reference, "smallseg-array": _run_smallseg_array,
        "smallseg-geotiff": _run_smallseg_geotiff, "monai": _run_monai,
        "sahi-default": lambda *a: _run_sahi(*a, standard_pred=True),
        "sahi-sliced": lambda *a: _run_sahi(*a, standard_pred=False),
        "sahi-whole": lambda *a: _run_sahi(*a, standard_pred=False, whole=True),
    }
    start = time.perf_counter()
    res = runners[args.method](Path(args.image), model, decode, args.batch_size, out)
    stop = res.get("stop", time.perf_counter())
    peak_mb = _proc_status_mb("VmHWM")
    if "result" in res:
        inst = res["result"]
        res["objects"] = _objects_from_instances(inst.labels, inst.ids, inst.class_ids, inst.scores)
    np.savez(out.with_suffix(".npz"), **res["objects"], windows=np.asarray(res["windows"], np.int64).reshape(-1, 4))
    report = {"method": args.method, "wall_s": stop - start, "baseline_rss_mb": baseline_mb, "peak_rss_mb": peak_mb,
              "settings": res["settings"], "n_windows": len(res["windows"]), "torch_threads": torch.get_num_threads()}
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))


# ----------------------------------------------------------------------------------------------------------
# Parent: scene, runs, scoring, seams
# ----------------------------------------------------------------------------------------------------------


def scene_paths(work: Path, size: int, seed: int = SEED):
    from smallseg.data.remote_sensing import RemoteSensingScenePaths, write_remote_sensing_scene

    stem = work / (f"scene{size}" if seed == SEED else f"scene{size}_seed{seed}")
    paths = RemoteSensingScenePaths.from_stem(stem)
    if not paths.image.exists():
        t = time.perf_counter()
        write_remote_sensing_scene(stem, size, size, seed=seed, pixel_size_m=PIXEL_SIZE_M, window_px=1024)
        print(f"generated {paths.image} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return paths


def _coco_records(boxes, classes, scores, crops, shape, gt: bool) -> list[dict]:
    from smallseg.metrics.objects import rles_from_crops

    rles = rles_from_crops(crops, boxes, shape)
    recs = []
    for n, (rle, c, s, crop) in enumerate(zip(rles, classes, scores, crops)):
        r = {"image_id": 1, "category_id": int(c), "segmentation": rle}
        if gt:
            r.update(id=n + 1, area=float(crop.sum()), iscrowd=0)
        else:
            r["score"] = float(s)
        recs.append(r)
    return recs


def _intersections(boxes_a, crops_a, boxes_b, crops_b, same: bool = False):
    """(ia, ib, intersection px) for every pair of overlapping boxes (i < j when ``same``)."""
    from smallseg.metrics.objects import overlapping_box_pairs

    ia, ib = overlapping_box_pairs(boxes_a, np.zeros(len(boxes_a), np.int64), boxes_b, np.zeros(len(boxes_b), np.int64))
    if same:
        keep = ia < ib
        ia, ib = ia[keep], ib[keep]
    inter = np.zeros(len(ia), np.int64)
    for k, (i, j) in enumerate(zip(ia, ib)):
        a, b = boxes_a[i], boxes_b[j]
        r0, c0 = max(a[0], b[0]), max(a[1], b[1])
        r1, c1 = min(a[2], b[2]), min(a[3], b[3])
        inter[k] = np.count_nonzero(crops_a[i][r0 - a[0]:r1 - a[0], c0 - a[1]:c1 - a[1]]
                                    & crops_b[j][r0 - b[0]:r1 - b[0], c0 - b[1]:c1 - b[1]])
    return ia, ib, inter


def seam_lines(windows: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column positions of window edges inside the scene (a line at p lies between p - 1 and p)."""
    h, w = shape
    rows = np.unique(np.concatenate([windows[:, 0], windows[:, 2]]))
    cols = np.unique(np.concatenate([windows[:, 1], windows[:, 3]]))
    return rows[(rows > 0) & (rows < h)], cols[(cols > 0) & (cols < w)]


def crosses(boxes: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(N,) bool: the box has pixels on both sides of at least one row or column line."""
    def any_between(lo, hi, lines):
        if len(lines) == 0:
            return np.zeros(len(lo), bool)
        # count of lines p with lo < p < hi
        return (np.searchsorted(lines, hi, side="left") - np.searchsorted(lines, lo, side="right")) > 0
    return any_between(boxes[:, 0], boxes[:, 2], rows) | any_between(boxes[:, 1], boxes[:, 3], cols)


def seam_counts(ref, pred, windows: np.ndarray, shape) -> dict:
    """split / cut / lost counts for reference objects at and away from the method's tile borders,
    and overlapping prediction pairs (see the module docstring)."""
    rb, rc = ref
    pb, pc = pred
    ra = np.array([c.sum() for c in rc], np.int64)
    pa = np.array([c.sum() for c in pc], np.int64)
    ia, ib, inter = _intersections(rb, rc, pb, pc)
    iou = inter / np.maximum(ra[ia] + pa[ib] - inter, 1)
    hit = iou >= 0.1
    n_hit = np.bincount(ia[hit], minlength=len(rb))
    best = np.zeros(len(rb))
    np.maximum.at(best, ia, iou)
    split = n_hit >= 2
    cut = (n_hit == 1) & (best < 0.5)
    lost = n_hit == 0
    rows, cols = seam_lines(windows, shape)
    at_seam = crosses(rb, rows, cols)
    sa, sb, s_inter = _intersections(pb, pc, pb, pc, same=True)
    ios = s_inter / np.maximum(np.minimum(pa[sa], pa[sb]), 1)
    out = {"seam_lines": int(len(rows) + len(cols)), "dup_pairs": int((ios >= 0.5).sum())}
    for name, sel in (("seam", at_seam), ("away", ~at_seam)):
        out[name] = {"n": int(sel.sum()), "split": int((split & sel).sum()), "cut": int((cut & sel).sum()),
                     "lost": int((lost & sel).sum())}
    return out


def _excess_pp(s: dict) -> str:
    """Share of seam objects not found whole minus the same share away from seams, percentage points."""
    def bad(part):
        return (part["split"] + part["cut"] + part["lost"]) / part["n"] if part["n"] else None
    at, away = bad(s["seam"]), bad(s["away"])
    return "n/a" if at is None or away is None else f"{100 * (at - away):+.1f}"


def run_parent(args) -> None:
    import rasterio

    from smallseg.metrics import evaluate

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    paths = scene_paths(work, args.size, args.seed)
    run_dir = work / f"runs{args.size}"
    run_dir.mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GDAL_CACHEMAX="64",
               NO_ALBUMENTATIONS_UPDATE="1")
    methods = list(dict.fromkeys(["reference", *args.methods]))
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_before = os.getloadavg()
    for m in methods:
        if args.reuse and (run_dir / f"{m}.json").exists():
            continue
        t = time.perf_counter()
        cmd = [sys.executable, __file__, "_child", m, "--image", str(paths.image), "--out", str(run_dir / m),
               "--batch-size", str(args.batch_size)]
        subprocess.run(cmd, env=env, check=True)
        print(f"{m}: done in {time.perf_counter() - t:.0f} s (process)", file=sys.stderr)
    load_after = os.getloadavg()

    with rasterio.open(paths.instances) as src:
        gt_labels = src.read(1)
    with rasterio.open(paths.classes) as src:
        gt_classes = src.read(1)
    shape = gt_labels.shape
    from smallseg.metrics.objects import objects_from_labels

    gt = objects_from_labels(gt_labels, class_raster=gt_classes)
    gt_coco = {"images": [{"id": 1, "height": shape[0], "width": shape[1]}], "categories": CATEGORIES,
               "annotations": _coco_records(gt.boxes, gt.class_ids, gt.scores, gt.crops, shape, gt=True)}
    del gt_labels, gt_classes

    loaded = {}
    for m in methods:
        with np.load(run_dir / f"{m}.npz") as z:
            boxes, classes, scores, crops = _unpack(z)
            windows = z["windows"]
        loaded[m] = (boxes, classes, scores, crops, windows, json.loads((run_dir / f"{m}.json").read_text()))
    ref = (loaded["reference"][0], loaded["reference"][3])
    base_wall = loaded["smallseg-array"][5]["wall_s"] if "smallseg-array" in loaded else None

    rows = []
    for m in methods:
        boxes, classes, scores, crops, windows, rep = loaded[m]
        ev = evaluate(gt_coco, _coco_records(boxes, classes, scores, crops, shape, gt=False))
        met = dict(ev.metrics)
        car = {str(k): v for k, v in ev.per_class.items()}.get("1", {})  # class 1 = car, the small objects
        met.update({f"car_{k}": car.get(k) for k in ("AP", "AP50", "F1", "count_gt")})
        seams = seam_counts(ref, (boxes, crops), windows, shape)
        rows.append((m, rep, met, seams))

    def f(v, fmt="{:.3f}"):
        return "n/a" if v is None else fmt.format(v)

    header = ("| method | wall s | x smallseg-array | baseline RSS MB | peak RSS MB | AP | AP50 | AP_small | "
              "car AP | car AP50 | car F1 | preds | GT | windows | seam objs | seam split / cut / lost | away objs | away split / cut / lost "
              "| seam excess pp | dup pairs |")
    lines = [header, "| " + " | ".join(["---"] * (header.count("|") - 1)) + " |"]
    for m, rep, met, s in rows:
        ratio = "" if base_wall is None else f"{rep['wall_s'] / base_wall:.2f}"
        lines.append(
            f"| {m} | {rep['wall_s']:.1f} | {ratio} | {rep['baseline_rss_mb']:.0f} | {rep['peak_rss_mb']:.0f} | "
            f"{f(met['AP'])} | {f(met['AP50'])} | {f(met['AP_small'])} | {f(met['car_AP'])} | {f(met['car_AP50'])} | "
            f"{f(met['car_F1'])} | {met['count_pred']} | {met['count_gt']} | "
            f"{rep['n_windows']} | {s['seam']['n']} | {s['seam']['split']} / {s['seam']['cut']} / {s['seam']['lost']} | "
            f"{s['away']['n']} | {s['away']['split']} / {s['away']['cut']} / {s['away']['lost']} | "
            f"{_excess_pp(s)} | {s['dup_pairs']} |")
    table = "\n".join(lines)
    settings = [
        f"scene: {paths.image} ({args.size} x {args.size} px, {PIXEL_SIZE_M} m/px, seed {args.seed}); model: {MODEL_NAME}",
        f"started {started}; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
        f"batch size {args.batch_size}; torch 1 thread per process, OMP_NUM_THREADS=1, GDAL_CACHEMAX=64",
        *[f"- {m}: {rep['settings']}" for m, rep, _, _ in rows],
    ]
    text = "\n".join(settings) + "\n\n" + table + "\n"
    print(text)
    (work / "compare.md").write_text(text)
    (work / f"compare_{args.size}.md").write_text(text)
    (work / f"compare_{args.size}.json").write_text(json.dumps(
        [{"method": m, "run": rep, "metrics": met, "seams": s} for m, rep, met, s in rows], indent=2, default=str))


def main(argv=None) -> None:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "_child":
        p = argparse.ArgumentParser(prog="bench_compare_tilers.py _child")
        p.add_argument("method", choices=METHODS)
        p.add_argument("--image", required=True)
        p.add_argument("--out", required=True, help="output path without suffix (.json and .npz are written)")
        p.add_argument("--batch-size", type=int, default=4)
        run_child(p.parse_args(argv[1:]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=2048, help="scene side in px (square scene)")
    p.add_argument("--work", default="/tmp/bench_compare", help="folder for the scene, per-method runs and compare.md")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward for every tool")
    p.add_argument("--methods", nargs="+", default=list(METHODS[1:]), choices=METHODS[1:],
                   help="methods to run (the whole-scene reference always runs)")
    p.add_argument("--seed", type=int, default=SEED, help="scene seed (another scene: how much of a difference is this scene)")
    p.add_argument("--reuse", action="store_true", help="reuse per-method results already in --work (re-score only)")
    run_parent(p.parse_args(argv))


if __name__ == "__main__":
    main()
