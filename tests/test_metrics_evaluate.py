"""smallseg.evaluate / `smallseg evaluate`: real GeoTIFF / NIfTI / COCO JSON inputs, object tables, physical size
buckets, counting, undefined values and one-line errors."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import SimpleITK as sitk
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from rasterio.crs import CRS
from rasterio.transform import from_origin

import smallseg
from smallseg.cli import main
from smallseg.errors import SmallsegError
from smallseg.instances import Instances
from smallseg.io.labels import default_object_table_path, read_label_raster, read_object_table
from smallseg.metrics.evaluation import evaluate, parse_size_buckets
from smallseg.metrics.settings import SizeBuckets

from test_metrics_coco import perturbed_prediction, plain_pycocotools, planted_scene

from conftest import DATA_DIR as DATA
REPO = Path(__file__).resolve().parents[1]


def write_geotiff(path, array, *, crs="EPSG:32618", transform=None):
    transform = transform or from_origin(500000.0, 4100000.0, 0.5, 0.5)
    with rasterio.open(path, "w", driver="GTiff", height=array.shape[0], width=array.shape[1], count=1,
                       dtype=array.dtype, crs=CRS.from_string(crs) if crs else None, transform=transform) as dst:
        dst.write(array, 1)
    return path


def write_table(path, ids, scores=None, class_ids=None):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        header = ["id"] + (["score"] if scores is not None else []) + (["class_id"] if class_ids is not None else [])
        writer.writerow(header + ["area_px"])
        for n, k in enumerate(ids):
            row = [int(k)]
            if scores is not None:
                row.append(float(scores[n]))
            if class_ids is not None:
                row.append(int(class_ids[n]))
            writer.writerow(row + [0])
    return path


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(10)
    gt, gt_cls = planted_scene(rng, (128, 160), 45, max_side=24)
    pred, pred_cls, scores = perturbed_prediction(rng, gt, gt_cls)
    return gt, gt_cls, pred, pred_cls, scores


def test_geotiff_scene_with_object_table_and_m2_buckets_equals_pycocotools(tmp_path, scene):
    gt, gt_cls, pred, pred_cls, scores = scene
    gt_path = write_geotiff(tmp_path / "gt.tif", gt.astype(np.uint16))
    pred_path = write_geotiff(tmp_path / "scene.instances.tif", pred.astype(np.uint32))
    cls_path = write_geotiff(tmp_path / "gt_classes.tif", gt_cls.astype(np.uint8))
    pred_ids = np.unique(pred)[1:]
    # class_id from the object table: the class raster's value under each predicted object
    table_classes = [int(np.bincount(pred_cls[pred == k]).argmax()) for k in pred_ids]
    write_table(tmp_path / "scene.objects.csv", pred_ids, scores, table_classes)

    # 0.5 m pixels: 0.25 m2 each. Buckets 4 m2 / 16 m2 are 16 px / 64 px.
    result = evaluate(gt_path, pred_path, gt_classes=cls_path, size_buckets="4,16m2")
    reference, _ = plain_pycocotools(gt, gt_cls, pred, pred_cls, scores, result.settings["maxDets"],
                                     area_rng=[[0, 1e10], [0, 16], [16, 64], [64, 1e10]])
    precision = reference["precision"]
    for key, a in (("AP", 0), ("AP_small", 1), ("AP_medium", 2), ("AP_large", 3)):
        p = precision[:, :, :, a, -1]
        assert result.metrics[key] == pytest.approx(float(np.mean(p[p > -1])), abs=1e-12), key
    r = reference["recall"][:, :, 0, -1]
    assert result.metrics["AR"] == pytest.approx(float(np.mean(r[r > -1])), abs=1e-12)
    buckets = result.settings["size_buckets"]
    assert buckets["unit"] == "m2" and buckets["small_max_px"] == pytest.approx(16.0)
    assert buckets["pixel_area_m2"] == pytest.approx(0.25)
    assert result.settings["inputs"]["scores"] == str(tmp_path / "scene.objects.csv")  # found beside the raster
    assert not result.warnings
    # m2 buckets and the equivalent px buckets give the same numbers
    px = evaluate(gt_path, pred_path, gt_classes=cls_path, size_buckets="16,64px")
    assert px.metrics == result.metrics


def test_cli_writes_json_and_table(tmp_path, scene, capsys):
    gt, gt_cls, pred, pred_cls, scores = scene
    gt_path = write_geotiff(tmp_path / "gt.tif", gt.astype(np.int32))
    pred_path = write_geotiff(tmp_path / "p.instances.tif", pred.astype(np.int32))
    write_table(tmp_path / "p.objects.csv", np.unique(pred)[1:], scores)
    out = tmp_path / "out" / "scores.json"
    code = main(["evaluate", str(gt_path), str(pred_path), "--json", str(out), "--boundary-width", "1px"])
    printed = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out.read_text())
    for key in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR", "boundary_AP", "boundary_IoU",
                "precision", "recall", "F1", "count_gt", "count_pred", "count_error"):
        assert key in doc
    for key in ("AP", "AP50", "boundary_AP", "boundary_IoU", "precision", "recall", "F1"):
        assert 0.0 <= doc[key] <= 1.0
    settings = doc["settings"]
    assert settings["boundary"] == {**settings["boundary"], "mode": "fixed", "width": "1px", "d_px": 1}
    assert settings["size_buckets"]["unit"] == "px" and settings["size_buckets"]["small_max"] == 1024
    assert settings["maxDets"] >= doc["count_pred"]
    assert len(settings["iou_thresholds"]) == 10
    assert doc["count_gt"] == len(np.unique(gt)) - 1
    assert doc["count_pred"] == len(np.unique(pred)) - 1
    assert f"{doc['AP']:.4f}" in printed and "boundary_IoU" in printed and "fixed: d = 1 px" in printed
    assert not list(out.parent.glob("*.tmp"))  # no temporary left behind


def test_counting_and_f1_by_hand():
    gt = np.zeros((60, 60), np.int32)
    gt[2:12, 2:12] = 1  # A
    gt[20:30, 20:30] = 2  # B
    gt[40:50, 40:50] = 3  # C, missed
    pred = np.zeros_like(gt)
    pred[2:12, 2:12] = 7  # = A
    pred[21:31, 20:30] = 8  # B shifted one row: IoU 90/110
    pred[40:45, 2:7] = 9  # false positive
    pred[50:55, 50:55] = 4  # false positive
    result = evaluate(gt, pred, pred_objects={7: 0.9, 8: 0.8, 9: 0.7, 4: 0.6})
    m = result.metrics
    assert (m["TP"], m["FP"], m["FN"]) == (2, 2, 1)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["F1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert (m["count_gt"], m["count_pred"], m["count_error"]) == (3, 4, 1)
    assert m["count_error_relative"] == pytest.approx(1 / 3)
    # AP50: precision 1 at recall 1/3, 2/3 (two top-scored are hits), recall 1 never reached:
    # 67 of 101 recall thresholds (0..0.66) get precision 1.
    assert m["AP50"] == pytest.approx(67 / 101, abs=1e-6)


def test_perfect_prediction_scores_one():
    labels = np.zeros((50, 50), np.int32)
    labels[5:15, 5:20] = 3
    labels[30:33, 30:33] = 8
    result = evaluate(labels, labels)
    for key in ("AP", "AP50", "AP75", "AP_small", "boundary_AP", "boundary_IoU", "precision", "recall", "F1", "AR"):
        assert result.metrics[key] == pytest.approx(1.0), key
    assert result.metrics["count_error"] == 0
    assert result.metrics["AP_medium"] is None and "medium bucket" in result.undefined["AP_medium"]


def test_empty_inputs_have_documented_values(tmp_path):
    labels = np.zeros((30, 40), np.int32)
    labels[3:9, 3:9] = 1
    empty = np.zeros_like(labels)
    no_pred = evaluate(labels, empty)
    assert no_pred.metrics["AP"] == 0.0 and no_pred.metrics["recall"] == 0.0 and no_pred.metrics["F1"] == 0.0
    assert no_pred.metrics["precision"] is None and no_pred.undefined["precision"] == "no predicted objects"
    assert no_pred.metrics["boundary_IoU"] is None

    no_gt = evaluate(empty, labels)
    assert no_gt.metrics["AP"] is None and "no ground-truth objects" in no_gt.undefined["AP"]
    assert no_gt.metrics["precision"] == 0.0 and no_gt.metrics["F1"] == 0.0 and no_gt.metrics["recall"] is None
    assert no_gt.metrics["count_error_relative"] is None

    neither = evaluate(empty, empty)
    assert neither.metrics["F1"] is None and neither.metrics["count_error"] == 0
    path = neither.write_json(tmp_path / "e.json")
    doc = json.loads(path.read_text())  # strict JSON: no NaN
    assert doc["AP"] is None and doc["undefined"]["AP"].startswith("no ground-truth objects")
    assert "n/a" in neither.format_table()


def test_instances_prediction_carries_scores_and_classes():
    rng = np.random.default_rng(3)
    gt, gt_cls = planted_scene(rng, (90, 90), 20)
    pred, pred_cls, scores = perturbed_prediction(rng, gt, gt_cls)
    ids = np.unique(pred)[1:]
    classes = np.array([np.bincount(pred_cls[pred == k]).argmax() for k in ids], np.int32)
    inst = Instances(labels=pred, ids=ids.astype(np.int64), class_ids=classes, scores=scores.astype(np.float32),
                     centroids_yx=np.zeros((len(ids), 2)))
    via_instances = smallseg.evaluate(gt, inst, gt_classes=gt_cls)
    via_arrays = evaluate(gt, pred, gt_classes=gt_cls, pred_classes=pred_cls,
                          pred_objects=dict(zip(ids.tolist(), scores.astype(np.float32).astype(float).tolist())))
    assert via_instances.metrics == via_arrays.metrics
    assert len(via_instances.per_class) == 2


def test_coco_json_inputs_equal_pycocotools_on_the_same_files(tmp_path):
    rng = np.random.default_rng(5)
    images, annotations, results = [], [], []
    ann_id = 100
    for image_id, shape in ((3, (60, 80)), (9, (50, 70))):
        gt, gt_cls = planted_scene(rng, shape, 15)
        pred, pred_cls, scores = perturbed_prediction(rng, gt, gt_cls)
        images.append({"id": image_id, "height": shape[0], "width": shape[1], "file_name": f"{image_id}.png"})
        for k in np.unique(gt)[1:]:
            m = np.asfortranarray((gt == k).astype(np.uint8))
            rle = mask_utils.encode(m)
            rle["counts"] = rle["counts"].decode()
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": int(gt_cls[gt == k][0]),
                                "segmentation": rle, "area": float(m.sum()), "iscrowd": int(ann_id % 7 == 0)})
            ann_id += 1
        for n, k in enumerate(np.unique(pred)[1:]):
            rle = mask_utils.encode(np.asfortranarray((pred == k).astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            results.append({"image_id": image_id, "category_id": int(pred_cls[pred == k][0]), "segmentation": rle,
                            "score": float(scores[n])})
    # a polygon GT annotation too
    annotations.append({"id": 999, "image_id": 3, "category_id": 1, "segmentation": [[40, 40, 55, 40, 55, 52, 40, 52]],
                        "area": 180.0, "iscrowd": 0})
    gt_json = tmp_path / "gt.json"
    gt_json.write_text(json.dumps({"images": images, "annotations": annotations,
                                   "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    res_json = tmp_path / "res.json"
    res_json.write_text(json.dumps(results))

    result = evaluate(gt_json, res_json)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_json))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(res_json)), iouType="segm")
        evaluator.params.maxDets = [result.settings["maxDets"]]
        evaluator.evaluate()
        evaluator.accumulate()
    p = evaluator.eval["precision"]
    for key, t, a in (("AP", slice(None), 0), ("AP50", 0, 0), ("AP75", 5, 0), ("AP_small", slice(None), 1)):
        values = p[t, :, :, a, -1]
        assert result.metrics[key] == pytest.approx(float(np.mean(values[values > -1])), abs=1e-12), key
    assert result.metrics["count_gt"] == sum(1 for a in annotations if not a["iscrowd"])
    assert result.metrics["count_pred"] == len(results)
    assert set(result.settings["images"]) == {"3", "9"}


def test_nifti_labels_with_mm2_buckets(tmp_path):
    labels = np.zeros((64, 64), np.int16)
    labels[4:8, 4:8] = 1  # 16 px = 4 mm2 at 0.5 mm spacing: small (< 5 mm2)
    labels[20:30, 20:30] = 2  # 100 px = 25 mm2: medium (< 50 mm2)
    labels[40:60, 40:60] = 3  # 400 px = 100 mm2: large
    paths = []
    for name in ("gt.nii.gz", "pred.nii.gz"):
        image = sitk.GetImageFromArray(labels)
        image.SetSpacing((0.5, 0.5))
        sitk.WriteImage(image, str(tmp_path / name))
        paths.append(tmp_path / name)
    raster = read_label_raster(paths[0])
    assert raster.pixel_area_m2 == pytest.approx(0.25e-6)
    result = evaluate(*paths, size_buckets="5,50mm2", boundary_width="1mm")
    for key in ("AP_small", "AP_medium", "AP_large"):
        assert result.metrics[key] == pytest.approx(1.0)
    assert result.settings["boundary"]["d_px"] == 2
    # the same rasters with COCO's px buckets: everything is small
    coco = evaluate(*paths)
    assert coco.metrics["AP_medium"] is None and coco.metrics["AP_large"] is None


def test_default_object_table_paths():
    assert default_object_table_path("/a/scene.instances.tif") == Path("/a/scene.objects.csv")
    assert default_object_table_path("/a/tile_3_instances.tif") == Path("/a/tile_3_objects.csv")
    assert default_object_table_path("/a/pred.tif") == Path("/a/pred.objects.csv")
    assert default_object_table_path("/a/pred.nii.gz") == Path("/a/pred.objects.csv")


def test_size_bucket_parsing():
    assert parse_size_buckets("32^2,96^2px") == parse_size_buckets("1024,9216")
    assert parse_size_buckets("25,100m2").unit == "m2"
    # The library names its argument; smallseg evaluate says --size-buckets (tests/test_cli_flag_messages.py).
    with pytest.raises(SmallsegError, match=r"^size_buckets 100,25px: need 0 < small maximum < medium maximum$"):
        parse_size_buckets("100,25px")
    with pytest.raises(SmallsegError, match="^size_buckets 10px: expected SMALL_MAX,MEDIUM_MAX"):
        parse_size_buckets("10px")
    with pytest.raises(SmallsegError, match="^size_buckets 50,10m2: need 0 < small"):  # checked when built
        SizeBuckets(50, 10, "m2")


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one clear line each
# ---------------------------------------------------------------------------------------------------------------


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(SmallsegError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_inputs_raise_one_line(tmp_path, scene):
    gt, _, pred, _, scores = scene
    gt_path = write_geotiff(tmp_path / "gt.tif", gt.astype(np.int32))
    small = write_geotiff(tmp_path / "small.tif", gt[:100].astype(np.int32))
    shifted = write_geotiff(tmp_path / "shifted.tif", pred.astype(np.int32),
                            transform=from_origin(500010.0, 4100000.0, 0.5, 0.5))
    floats = write_geotiff(tmp_path / "prob.tif", (pred > 0).astype(np.float32) * 0.5)
    assert "shape 100 x 160" in one_line_error(evaluate, gt_path, small)
    assert "geotransform" in one_line_error(evaluate, gt_path, shifted)
    assert "not an integer label raster" in one_line_error(evaluate, gt_path, floats)
    assert "no such file" in one_line_error(evaluate, gt_path, tmp_path / "missing.tif")
    assert "corrupt.tif" in one_line_error(evaluate, gt_path, DATA / "rasterio-cc0" / "corrupt.tif")
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    assert "garbage.tif: cannot read as a raster" in one_line_error(evaluate, gt_path, garbage)
    assert "3 bands" in one_line_error(evaluate, DATA / "rasterio-cc0" / "RGB.byte.tif", gt_path)

    pred_path = write_geotiff(tmp_path / "p.instances.tif", pred.astype(np.int32))
    ids = np.unique(pred)[1:]
    write_table(tmp_path / "p.objects.csv", ids[:-3], scores[:-3])  # three ids missing
    message = one_line_error(evaluate, gt_path, pred_path)
    assert "p.objects.csv" in message and "no score for 3 object id(s)" in message
    write_table(tmp_path / "noscore.csv", ids)
    assert "no column 'score'" in one_line_error(evaluate, gt_path, pred_path, pred_objects=tmp_path / "noscore.csv")
    assert "pixel size is unknown" in one_line_error(evaluate, gt, pred, size_buckets="4,16m2")  # plain arrays
    # (A geographic CRS has a ground pixel area now: tests/test_ground_units.py.)
    assert one_line_error(evaluate, gt, pred, boundary="reference", boundary_width="2px").startswith(
        "boundary_width: the reference mode")
    assert "both be COCO JSON" in one_line_error(evaluate, tmp_path / "gt.json", pred)


def test_mismatched_crs_via_cli_exits_2_with_one_line(tmp_path, scene):
    gt, _, pred, _, _ = scene
    gt_path = write_geotiff(tmp_path / "gt.tif", gt.astype(np.int32), crs="EPSG:32618")
    pred_path = write_geotiff(tmp_path / "pred.tif", pred.astype(np.int32), crs="EPSG:32619")
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "smallseg", "evaluate", str(gt_path), str(pred_path),
                           "--json", str(tmp_path / "out.json")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "pred.tif" in lines[0] and "CRS" in lines[0] and "EPSG:32619" in lines[0]
    assert not (tmp_path / "out.json").exists()


def test_object_table_reader_rejects_bad_scores(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,score\n1,0.5\n2,1.5\n")
    with pytest.raises(SmallsegError, match="line 3: score 1.5"):
        read_object_table(path, require=("id", "score"))
    path.write_text("id,score\n1,0.5\n1,0.4\n")
    with pytest.raises(SmallsegError, match="id 1 appears 2 times"):
        read_object_table(path)
