"""Benchmark the small-object scorer: `smallseg evaluate` vs faster-coco-eval vs plain pycocotools.

One synthetic dense scene (default 10,000 x 10,000 px, ~20,000 small ellipses and rectangles in 2 classes) and a
prediction made from it (shifted / grown / shrunk copies, ~8 % misses, ~5 % false positives, scores rounded to
0.01 so there are ties). Each method runs in its own subprocess and reports its own peak RSS (``VmHWM``, which restarts at exec):

- ``smallseg (rasters)``  smallseg.evaluate on the label arrays: object extraction, crop RLEs, COCO mask AP,
                          Boundary AP (fixed 2 px), boundary IoU, F1, counts — everything;
- ``smallseg (COCO json)`` smallseg.evaluate on the same COCO JSON files faster-coco-eval reads;
- ``faster-coco-eval``    COCOeval_faster(iouType="segm") on the JSON files, maxDets = all detections;
- ``pycocotools (crop)``  plain single-image COCOeval on a crop of the scene (the full scene would take hours:
                          it is quadratic in objects per image), with smallseg on the same crop; the full-scene
                          time is extrapolated as t_crop * (N_full / N_crop)^2 and labelled as such.
- ``*-boundary (crop)``   faster-coco-eval iouType="boundary" vs smallseg --boundary reference on the crop.

Numbers are checked for equality (AP, AP50, AP75, AP_small/medium/large, AR; |diff| <= 1e-9).

    .venv/bin/python benchmarks/bench_evaluate.py                       # 10,000 px, 20,000 objects
    .venv/bin/python benchmarks/bench_evaluate.py --size 3000 --objects 2000 --crop 1000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR")


# ---------------------------------------------------------------------------------------------------------------
# Scene
# ---------------------------------------------------------------------------------------------------------------


def _paint(target, classes, value, cls, r, c, h, w, ellipse):
    """Paint a rectangle or ellipse with top-left (r, c), size (h, w), clipped to the image."""
    height, width = target.shape
    r0, c0, r1, c1 = max(r, 0), max(c, 0), min(r + h, height), min(c + w, width)
    if r1 <= r0 or c1 <= c0:
        return
    if ellipse:
        yy, xx = np.mgrid[r0:r1, c0:c1]
        inside = ((yy + 0.5 - (r + h / 2)) / (h / 2)) ** 2 + ((xx + 0.5 - (c + w / 2)) / (w / 2)) ** 2 <= 1
    else:
        inside = np.ones((r1 - r0, c1 - c0), bool)
    target[r0:r1, c0:c1][inside] = value
    classes[r0:r1, c0:c1][inside] = cls


def make_scene(size: int, n_objects: int, seed: int = 0):
    """(gt labels, gt classes, pred labels, pred classes, scores by pred id) for a size x size scene."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    gt = np.zeros((size, size), np.int32)
    gt_cls = np.zeros((size, size), np.uint8)
    for k in range(1, n_objects + 1):
        big = rng.random() < 0.1  # some medium/large objects (buildings), most small (cars)
        h, w = (rng.integers(20, 110, 2) if big else rng.integers(4, 30, 2))
        r, c = rng.integers(-5, size - 5, 2)
        _paint(gt, gt_cls, k, 2 if big else 1, int(r), int(c), int(h), int(w), rng.random() < 0.5)

    pred = np.zeros_like(gt)
    pred_cls = np.zeros_like(gt_cls)
    scores: dict[int, float] = {}
    next_id = 1
    for k, sl in enumerate(ndimage.find_objects(gt), start=1):
        if sl is None or rng.random() < 0.08:
            continue  # missed
        mask = np.pad(gt[sl] == k, 2)
        change = rng.random()
        if change < 0.15:
            mask = ndimage.binary_dilation(mask)
        elif change < 0.3:
            mask = ndimage.binary_erosion(mask) if mask.sum() > 30 else mask
        dy, dx = (int(v) for v in rng.integers(-2, 3, 2))
        r0, c0 = sl[0].start - 2 + dy, sl[1].start - 2 + dx
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + mask.shape[0], size), min(c0 + mask.shape[1], size)
        if rr1 <= rr0 or cc1 <= cc0:
            continue
        part = mask[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0]
        region = pred[rr0:rr1, cc0:cc1]
        paint = part & (region == 0)
        if not paint.any():
            continue
        region[paint] = next_id
        pred_cls[rr0:rr1, cc0:cc1][paint] = int(gt_cls[sl][gt[sl] == k][0])
        quality = 1.0 - 0.2 * (abs(dy) + abs(dx)) / 4 - (0.1 if change < 0.3 else 0.0)
        scores[next_id] = float(np.clip(np.round(0.3 + 0.6 * quality + rng.normal(0, 0.1), 2), 0.01, 1.0))
        next_id += 1
    for _ in range(int(0.05 * n_objects)):  # false positives in free space
        h, w = (int(v) for v in rng.integers(4, 25, 2))
        r, c = (int(v) for v in rng.integers(0, size - 25, 2))
        if pred[r:r + h, c:c + w].any():
            continue
        _paint(pred, pred_cls, next_id, int(rng.integers(1, 3)), r, c, h, w, rng.random() < 0.5)
        if (pred[r:r + h, c:c + w] == next_id).any():
            scores[next_id] = float(np.clip(np.round(rng.uniform(0.05, 0.7), 2), 0.01, 1.0))
            next_id += 1
    # drop ids whose pixels were all painted over
    present = np.unique(pred)[1:]
    scores = {int(k): scores[int(k)] for k in present}
    return gt, gt_cls, pred, pred_cls, scores


def write_coco(path_gt: Path, path_res: Path, gt, gt_cls, pred, pred_cls, scores) -> int:
    """COCO dataset + results JSON of the scene (RLEs built from crops: no full-size mask per object)."""
    from smallseg.metrics.objects import objects_from_labels

    g = objects_from_labels(gt, class_raster=gt_cls)
    d = objects_from_labels(pred, class_raster=pred_cls, score_by_id=scores, detection_ids=True)
    height, width = gt.shape

    def rle(r):
        return {"size": list(r["size"]), "counts": r["counts"].decode() if isinstance(r["counts"], bytes) else r["counts"]}

    anns = [{"id": int(g.ids[i]), "image_id": 1, "category_id": int(g.class_ids[i]), "segmentation": rle(g.rles[i]),
             "area": float(g.area_px[i]), "iscrowd": 0} for i in range(len(g))]
    path_gt.write_text(json.dumps({"images": [{"id": 1, "height": height, "width": width}], "annotations": anns,
                                   "categories": [{"id": 1, "name": "small"}, {"id": 2, "name": "large"}]}))
    res = [{"image_id": 1, "category_id": int(d.class_ids[i]), "segmentation": rle(d.rles[i]),
            "score": float(d.scores[i])} for i in range(len(d))]
    path_res.write_text(json.dumps(res))
    return len(g)


# ---------------------------------------------------------------------------------------------------------------
# Methods (each runs in a child process)
# ---------------------------------------------------------------------------------------------------------------


def _summary_from_precision(precision, recall, thresholds) -> dict:
    def mean(v):
        v = v[v > -1]
        return float(v.mean()) if v.size else None

    t50 = int(np.flatnonzero(np.isclose(thresholds, 0.5))[0])
    t75 = int(np.flatnonzero(np.isclose(thresholds, 0.75))[0])
    return {"AP": mean(precision[:, :, :, 0, -1]), "AP50": mean(precision[t50, :, :, 0, -1]),
            "AP75": mean(precision[t75, :, :, 0, -1]), "AP_small": mean(precision[:, :, :, 1, -1]),
            "AP_medium": mean(precision[:, :, :, 2, -1]), "AP_large": mean(precision[:, :, :, 3, -1]),
            "AR": mean(recall[:, :, 0, -1])}


def run_method(name: str, work: Path) -> dict:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    meta = json.loads((work / "meta.json").read_text())
    t0 = time.perf_counter()
    if name.startswith("smallseg"):
        from smallseg.metrics.evaluation import evaluate

        if name == "smallseg-rasters":
            scores = {int(k): v for k, v in json.loads((work / "scores.json").read_text()).items()}
            result = evaluate(np.load(work / "gt.npy"), np.load(work / "pred.npy"),
                              gt_classes=np.load(work / "gt_cls.npy"), pred_classes=np.load(work / "pred_cls.npy"),
                              pred_objects=scores)
        elif name == "smallseg-coco":
            result = evaluate(work / "gt.json", work / "res.json")
        elif name == "smallseg-crop":
            result = evaluate(work / "crop_gt.json", work / "crop_res.json")
        elif name == "smallseg-boundary-crop":
            result = evaluate(work / "crop_gt.json", work / "crop_res.json", boundary="reference")
        else:
            raise SystemExit(f"unknown method {name}")
        seconds = time.perf_counter() - t0
        out = {k: result.metrics[k] for k in KEYS}
        out["boundary_AP"] = result.metrics["boundary_AP"]
        out["maxDets"] = result.settings["maxDets"]
        out["d_px"] = result.settings["boundary"]["d_px"]
        return {"seconds": seconds, "metrics": out}

    gt_json, res_json = ("crop_gt.json", "crop_res.json") if "crop" in name else ("gt.json", "res.json")
    max_dets = meta["crop_max_dets"] if "crop" in name else meta["max_dets"]
    if name.startswith("faster"):
        import logging

        from faster_coco_eval import COCO, COCOeval_faster

        logging.getLogger("faster_coco_eval").setLevel(logging.ERROR)
        coco_gt = COCO(str(work / gt_json))
        coco_dt = coco_gt.loadRes(str(work / res_json))
        evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="boundary" if "boundary" in name else "segm")
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(str(work / gt_json))
            coco_dt = coco_gt.loadRes(str(work / res_json))
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
    evaluator.params.maxDets = [max_dets]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    seconds = time.perf_counter() - t0
    summary = _summary_from_precision(evaluator.eval["precision"], evaluator.eval["recall"], evaluator.params.iouThrs)
    if "boundary" in name:
        summary = {"boundary_AP": summary["AP"]}
    return {"seconds": seconds, "metrics": summary}


def spawn(name: str, work: Path, timeout_s: float) -> dict:
    """Run one method in a child process; return its time, peak RSS and numbers."""
    out_file = work / f"result_{name}.json"
    cmd = [sys.executable, __file__, "--run-method", name, "--work", str(work), "--out", str(out_file)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.time() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.time() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            return {"seconds": None, "peak_rss_mb": usage.ru_maxrss / 1024, "metrics": {}, "note": f"> {timeout_s:.0f} s"}
        time.sleep(0.2)
    if status != 0 or not out_file.exists():
        return {"seconds": None, "peak_rss_mb": usage.ru_maxrss / 1024, "metrics": {}, "note": f"failed ({status})"}
    result = json.loads(out_file.read_text())
    result.setdefault("peak_rss_mb", usage.ru_maxrss / 1024)  # Linux: kilobytes
    return result


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------


def compare(a: dict, b: dict, keys) -> str:
    diffs = []
    for k in keys:
        x, y = a.get(k), b.get(k)
        if x is None and y is None:
            continue
        if x is None or y is None:
            return f"differ ({k}: {x} vs {y})"
        diffs.append(abs(x - y))
    if not diffs:
        return "n/a"
    worst = max(diffs)
    return f"identical (max |diff| {worst:.1e})" if worst <= 1e-9 else f"DIFFER (max |diff| {worst:.2e})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10000, help="scene side in px (default 10000)")
    parser.add_argument("--objects", type=int, default=20000, help="planted GT objects (default 20000)")
    parser.add_argument("--crop", type=int, default=2500,
                        help="side of the crop scored by plain pycocotools and boundary methods (default 2500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600, help="per-method time limit in s (default 3600)")
    parser.add_argument("--skip", default="", help="comma-separated methods to skip")
    parser.add_argument("--run-method", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run_method:
        result = run_method(args.run_method, Path(args.work))
        # Peak RSS of this process image: VmHWM restarts at exec, unlike ru_maxrss, which inherits the
        # parent's peak through fork + exec.
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                result["peak_rss_mb"] = int(line.split()[1]) / 1024
        Path(args.out).write_text(json.dumps(result))
        return 0

    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        gt, gt_cls, pred, pred_cls, scores = make_scene(args.size, args.objects, args.seed)
        n_gt = len(np.unique(gt)) - 1
        print(f"scene {args.size} x {args.size} px: {n_gt} GT objects, {len(scores)} predicted "
              f"(made in {time.perf_counter() - t0:.1f} s)", flush=True)
        np.save(work / "gt.npy", gt)
        np.save(work / "pred.npy", pred)
        np.save(work / "gt_cls.npy", gt_cls)
        np.save(work / "pred_cls.npy", pred_cls)
        (work / "scores.json").write_text(json.dumps(scores))
        write_coco(work / "gt.json", work / "res.json", gt, gt_cls, pred, pred_cls, scores)
        crop = (slice(0, args.crop), slice(0, args.crop))
        crop_pred = pred[crop]
        crop_scores = {int(k): scores[int(k)] for k in np.unique(crop_pred)[1:]}
        n_crop = write_coco(work / "crop_gt.json", work / "crop_res.json", gt[crop], gt_cls[crop], crop_pred,
                            pred_cls[crop], crop_scores)
        # maxDets = every detection (the largest per-class count, at least 100), as smallseg's default
        from smallseg.metrics.objects import objects_from_labels

        def largest(labels, classes, by_id):
            objs = objects_from_labels(labels, class_raster=classes, score_by_id=by_id, detection_ids=True)
            return max(100, int(np.bincount(objs.class_ids).max()) if len(objs) else 100)

        meta = {"max_dets": largest(pred, pred_cls, scores), "crop_max_dets": largest(crop_pred, pred_cls[crop], crop_scores)}
        (work / "meta.json").write_text(json.dumps(meta))
        del gt, gt_cls, pred, pred_cls

        skip = set(filter(None, args.skip.split(",")))
        plan = [
            ("smallseg-rasters", "smallseg (label rasters)", "full"),
            ("smallseg-coco", "smallseg (COCO json)", "full"),
            ("faster-segm", "faster-coco-eval segm", "full"),
            ("smallseg-crop", "smallseg (COCO json)", "crop"),
            ("pycocotools-crop", "pycocotools COCOeval", "crop"),
            ("smallseg-boundary-crop", "smallseg --boundary reference", "crop"),
            ("faster-boundary-crop", "faster-coco-eval boundary", "crop"),
        ]
        results = {}
        for key, label, scope in plan:
            if key in skip:
                continue
            print(f"running {label} ({scope}) ...", flush=True)
            results[key] = spawn(key, work, args.timeout)
            r = results[key]
            print(f"  {r['seconds'] if r['seconds'] is None else round(r['seconds'], 2)} s, "
                  f"{r['peak_rss_mb']:.0f} MB peak RSS {r.get('note', '')}", flush=True)

    def row(key, label, scope, baseline_key, objects, note=""):
        r = results.get(key)
        if r is None:
            return None
        base = results.get(baseline_key, {}).get("seconds")
        ratio = f"{base / r['seconds']:.2f}x" if base and r["seconds"] else "-"
        secs = "-" if r["seconds"] is None else f"{r['seconds']:.2f}"
        return f"| {label} | {scope} | {objects} | {secs} | {r['peak_rss_mb']:.0f} | {ratio} | {note or r.get('note', '')} |"

    print()
    print(f"scene {args.size} x {args.size} px, {n_gt} GT objects, {len(scores)} predictions; crop {args.crop} x "
          f"{args.crop} px, {n_crop} GT objects; maxDets {meta['max_dets']} (crop {meta['crop_max_dets']})")
    print()
    print("| method | scope | GT objects | time s | peak RSS MB | speed vs baseline | note |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    lines = [
        row("faster-segm", "faster-coco-eval segm (baseline)", "full scene", "faster-segm", n_gt, "mask AP only"),
        row("smallseg-coco", "smallseg evaluate, COCO json", "full scene", "faster-segm", n_gt,
            "mask AP + Boundary AP (2 px) + F1 + counts"),
        row("smallseg-rasters", "smallseg evaluate, label rasters", "full scene", "faster-segm", n_gt,
            "incl. object extraction from 2 label rasters"),
        row("pycocotools-crop", "pycocotools COCOeval (baseline)", "crop", "pycocotools-crop", n_crop, "mask AP only"),
        row("smallseg-crop", "smallseg evaluate, COCO json", "crop", "pycocotools-crop", n_crop, ""),
        row("faster-boundary-crop", "faster-coco-eval boundary (baseline)", "crop", "faster-boundary-crop", n_crop,
            "reference d"),
        row("smallseg-boundary-crop", "smallseg --boundary reference", "crop", "faster-boundary-crop", n_crop,
            "reference d, + mask AP"),
    ]
    print("\n".join(line for line in lines if line))
    plain = results.get("pycocotools-crop", {}).get("seconds")
    if plain:
        print(f"\nplain pycocotools on the full scene, extrapolated (quadratic in objects per image): "
              f"{plain * (n_gt / n_crop) ** 2:.0f} s (~{plain * (n_gt / n_crop) ** 2 / 3600:.1f} h) — not run")
    print()
    checks = [
        ("smallseg (COCO json) vs faster-coco-eval, full scene", "smallseg-coco", "faster-segm", KEYS),
        ("smallseg (label rasters) vs faster-coco-eval, full scene", "smallseg-rasters", "faster-segm", KEYS),
        ("smallseg vs pycocotools, crop", "smallseg-crop", "pycocotools-crop", KEYS),
        ("smallseg vs faster-coco-eval Boundary AP (reference d), crop", "smallseg-boundary-crop",
         "faster-boundary-crop", ("boundary_AP",)),
    ]
    for text, a, b, keys in checks:
        if a in results and b in results:
            print(f"{text}: {compare(results[a]['metrics'], results[b]['metrics'], keys)}")
    for key in ("smallseg-coco", "smallseg-rasters"):
        if key in results and results[key]["metrics"]:
            m = results[key]["metrics"]
            print(f"{key}: " + ", ".join(f"{k} {m[k]:.4f}" for k in KEYS + ("boundary_AP",) if m.get(k) is not None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
