"""``smallseg evaluate --plot DIR``: the PR curves' numbers are pycocotools' own precision array (checked against
a direct COCOeval run, and for boxes against a hand computation), the histogram's TP / FP scores are the hand
count, the PNGs are written, ``--plot FILE.png`` still writes the quick-look alone, and without matplotlib the
folder form is one line."""

from __future__ import annotations

import contextlib
import csv
import io
import sys

import numpy as np
import pytest
import rasterio
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from rasterio.transform import from_origin

from smallseg.cli import main
from smallseg.metrics.evaluation_sources import evaluate_sources

TRANSFORM = from_origin(500000.0, 4000000.0, 0.5, 0.5)


def _write_raster(path, array):
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
                       dtype="int32", crs="EPSG:32633", transform=TRANSFORM) as dst:
        dst.write(array.astype(np.int32), 1)
    return path


def _scene(tmp_path):
    """Objects in all three COCO size buckets. At IoU 0.5: TP = GT 1 (small, exact), GT 3 (medium, exact),
    GT 4 (large, IoU 0.8); FP = a half-overlap of GT 2 (IoU 1/3) and a lone small object."""
    gt = np.zeros((160, 200), np.int32)
    gt[5:15, 5:15] = 1        # small, 100 px
    gt[5:15, 30:40] = 2       # small
    gt[30:70, 5:45] = 3       # medium, 1600 px
    gt[50:150, 90:190] = 4    # large, 10000 px
    pred = np.zeros_like(gt)
    pred[5:15, 5:15] = 1
    pred[5:15, 35:45] = 2     # IoU 50 / 150
    pred[30:70, 5:45] = 3
    pred[50:150, 90:170] = 4  # IoU 8000 / 10000
    pred[140:150, 10:20] = 5  # nothing there
    scores = {1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6, 5: 0.95}
    gt_tif = _write_raster(tmp_path / "gt.tif", gt)
    pred_tif = _write_raster(tmp_path / "pred.instances.tif", pred)
    (tmp_path / "pred.objects.csv").write_text("id,score,class_id\n" + "".join(
        f"{i},{s},1\n" for i, s in scores.items()), encoding="utf-8")
    return gt, pred, scores, gt_tif, pred_tif


def _direct_cocoeval(gt, pred, scores):
    """pycocotools' segm COCOeval run directly on the whole image (COCO's default area ranges, maxDets 100)."""
    def rle(mask):
        r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        r["counts"] = r["counts"].decode("ascii")
        return r

    h, w = gt.shape
    anns = [{"id": int(g), "image_id": 1, "category_id": 1, "segmentation": rle(gt == g),
             "area": float((gt == g).sum()), "bbox": list(mask_utils.toBbox(rle(gt == g))), "iscrowd": 0}
            for g in range(1, int(gt.max()) + 1)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": [{"id": 1, "height": h, "width": w}], "categories": [{"id": 1}],
                           "annotations": anns}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([{"image_id": 1, "category_id": 1, "segmentation": rle(pred == p),
                                    "score": s} for p, s in scores.items()])
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.params.maxDets = [100]
        ev.evaluate()
        ev.accumulate()
    return ev


def _read_curves(path):
    out: dict[str, list[tuple[float, float]]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["bucket"], []).append((float(row["recall"]), float(row["precision"])))
    return out


def test_plot_dir_writes_pr_curves_equal_to_pycocotools_and_the_tp_fp_histogram(tmp_path):
    pytest.importorskip("matplotlib")
    gt, pred, scores, gt_tif, pred_tif = _scene(tmp_path)
    folder = tmp_path / "plots"
    result = evaluate_sources(gt_tif, pred_tif, plot=folder)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["pr_curves.csv", "pr_curves.png", "quicklook.png", "score_histogram.png"]
    assert sorted(result.settings["plots"]) == sorted(str(folder / n) for n in names)
    for name in ("pr_curves.png", "score_histogram.png"):
        assert Image.open(folder / name).size == (600, 450)
    assert Image.open(folder / "quicklook.png").size == (200, 160)

    ev = _direct_cocoeval(gt, pred, scores)
    t = int(np.flatnonzero(np.isclose(ev.params.iouThrs, 0.5))[0])
    curves = _read_curves(folder / "pr_curves.csv")
    assert sorted(curves) == ["all", "large", "medium", "small"]
    for a, label in enumerate(ev.params.areaRngLbl):
        recall, precision = (np.array(v) for v in zip(*curves[label]))
        np.testing.assert_array_equal(recall, ev.params.recThrs)
        np.testing.assert_allclose(precision, ev.eval["precision"][t, :, 0, a, 0], rtol=0, atol=1e-12)
    # the curve of "all" by hand: by score FP(.95) TP(.9) FP(.8) TP(.7) TP(.6) of 4 GT -> interpolated
    # precision 3/5 up to recall 0.75 (76 points), 0 above
    np.testing.assert_allclose(np.array([p for _, p in curves["all"]]),
                               np.r_[np.full(76, 3 / 5), np.zeros(25)], atol=1e-12)

    from smallseg.metrics.plots import pr_curves, records_of_all, tp_fp_scores

    tp, fp = tp_fp_scores(records_of_all(result.coco.records), result.coco.iou_thresholds, 0.5)
    assert sorted(tp.tolist()) == pytest.approx([0.6, 0.7, 0.9])
    assert sorted(fp.tolist()) == pytest.approx([0.8, 0.95])
    assert (len(tp), len(fp)) == (result.metrics["TP"], result.metrics["FP"])
    # each curve's mean is that bucket's AP at IoU 0.5 as pycocotools' summarize averages it
    by_bucket = {c.bucket: c for c in pr_curves(result.coco.eval, 0.5)}
    assert by_bucket["all"].ap == pytest.approx(result.metrics["AP50"], abs=1e-12)


def test_plot_dir_of_box_gt_is_the_hand_computed_curve(tmp_path):
    pytest.importorskip("matplotlib")
    gt_boxes = [(10, 10, 30, 30), (10, 50, 30, 70), (50, 10, 70, 30), (50, 50, 70, 70)]
    boxes_csv = tmp_path / "crowns.csv"
    boxes_csv.write_text("image_path,xmin,ymin,xmax,ymax,label\n" + "".join(
        f"scene.tif,{c0},{r0},{c1},{r1},Tree\n" for r0, c0, r1, c1 in gt_boxes), encoding="utf-8")
    pred = np.zeros((100, 100), np.int32)
    pred[10:30, 10:30] = 1   # A: TP
    pred[80:90, 80:90] = 2   # FP
    pred[10:30, 55:75] = 3   # B shifted, IoU 0.6: TP at 0.4
    pred[50:70, 24:44] = 4   # C shifted far: FP
    pred_tif = _write_raster(tmp_path / "pred.instances.tif", pred)
    (tmp_path / "pred.objects.csv").write_text("id,score,class_id\n1,0.9,1\n2,0.8,1\n3,0.7,1\n4,0.6,1\n",
                                               encoding="utf-8")
    folder = tmp_path / "box_plots"
    assert main(["evaluate", str(boxes_csv), str(pred_tif), "--box-iou", "0.4", "--plot", str(folder)]) == 0
    curves = _read_curves(folder / "pr_curves.csv")
    assert list(curves) == ["all"]
    # TP, FP, TP, FP of 4 GT: 1.0 up to recall 0.25 (26 points), 2/3 up to 0.5 (25 points), 0 above
    np.testing.assert_allclose([p for _, p in curves["all"]], np.r_[np.ones(26), np.full(25, 2 / 3), np.zeros(50)],
                               atol=1e-12)
    assert (folder / "score_histogram.png").stat().st_size > 0 and (folder / "quicklook.png").is_file()


def test_plot_png_is_the_quicklook_alone_and_the_folder_form_without_matplotlib_is_one_line(
        tmp_path, monkeypatch, capsys):
    _gt, _pred, _scores, gt_tif, pred_tif = _scene(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    png = tmp_path / "look.png"
    assert main(["evaluate", str(gt_tif), str(pred_tif), "--plot", str(png)]) == 0
    assert Image.open(png).size == (200, 160)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".png") == ["look.png"]
    capsys.readouterr()
    folder = tmp_path / "plots"
    assert main(["evaluate", str(gt_tif), str(pred_tif), "--plot", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "matplotlib" in err[0] and "smallseg[plot]" in err[0]
    assert not folder.exists()  # refused before anything was scored or written


def test_plot_dir_of_coco_gt_draws_the_curves_of_all_its_images(tmp_path):
    pytest.importorskip("matplotlib")
    import json

    from smallseg.errors import SmallsegError

    gt, pred, scores, _gt_tif, _pred_tif = _scene(tmp_path)
    ev = _direct_cocoeval(gt, pred, scores)
    dataset = {**ev.cocoGt.dataset, "categories": [{"id": 1, "name": "object"}]}
    gt_json, res_json = tmp_path / "gt.json", tmp_path / "res.json"
    gt_json.write_text(json.dumps(dataset), encoding="utf-8")
    res_json.write_text(json.dumps([{k: a[k] for k in ("image_id", "category_id", "segmentation", "score")}
                                    for a in ev.cocoDt.dataset["annotations"]]), encoding="utf-8")
    folder = tmp_path / "coco_plots"
    evaluate_sources(gt_json, res_json, plot=folder)
    assert sorted(p.name for p in folder.iterdir()) == ["pr_curves.csv", "pr_curves.png", "score_histogram.png"]
    curves = _read_curves(folder / "pr_curves.csv")
    t = int(np.flatnonzero(np.isclose(ev.params.iouThrs, 0.5))[0])
    for a, label in enumerate(ev.params.areaRngLbl):
        np.testing.assert_allclose([p for _, p in curves[label]], ev.eval["precision"][t, :, 0, a, 0], atol=1e-12)
    with pytest.raises(SmallsegError, match=r"quick-look \(look.png\) needs a label raster"):
        evaluate_sources(gt_json, res_json, plot=tmp_path / "look.png")
