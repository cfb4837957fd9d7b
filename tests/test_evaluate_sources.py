"""smallseg evaluate against vector GT (== the equivalent raster GT), box GT (box-level scores against a hand
computation), a labelled area (== scoring the area's crop) and the TP/FP/FN quick-look."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import shapely
from PIL import Image
from pyogrio.raw import write as pyogrio_write
from rasterio.transform import from_origin

from smallseg.cli import main
from smallseg.metrics.evaluation import evaluate
from smallseg.metrics.evaluation_sources import evaluate_sources

CRS = "EPSG:32633"
TRANSFORM = from_origin(500000.0, 4000000.0, 0.5, 0.5)


def _write_raster(path, array, crs=CRS):
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
                       dtype="int32", crs=crs, transform=TRANSFORM) as dst:
        dst.write(array.astype(np.int32), 1)
    return path


def _write_prediction(tmp_path, labels, scores, classes=None):
    pred = _write_raster(tmp_path / "pred.instances.tif", labels)
    ids = sorted(int(i) for i in np.unique(labels[labels > 0]))
    classes = classes or {i: 1 for i in ids}
    (tmp_path / "pred.objects.csv").write_text("id,score,class_id\n" + "".join(
        f"{i},{scores[i]},{classes[i]}\n" for i in ids))
    return pred


def _rect_box(r0, c0, r1, c1):
    """The map-coordinate polygon of pixel rows r0:r1, cols c0:c1."""
    x0, y0 = TRANSFORM * (c0, r0)
    x1, y1 = TRANSFORM * (c1, r1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _scene(tmp_path):
    """GT: 8 rectangles and an L-shaped object (as a raster and as GPKG polygons); a prediction that finds
    some of them well, some badly, misses one and adds two."""
    h, w = 96, 128
    gt = np.zeros((h, w), np.int32)
    rects = [(4, 4, 14, 16), (4, 30, 16, 40), (4, 60, 12, 76), (20, 10, 30, 24),
             (60, 8, 72, 20), (62, 40, 70, 60), (76, 80, 90, 96), (56, 100, 64, 120)]
    polys = []
    for k, (r0, c0, r1, c1) in enumerate(rects, start=1):
        gt[r0:r1, c0:c1] = k
        polys.append(_rect_box(r0, c0, r1, c1))
    gt[20:36, 90:96] = 9
    gt[30:36, 96:110] = 9
    polys.append(shapely.union(_rect_box(20, 90, 36, 96), _rect_box(30, 96, 36, 110)))
    pred = np.zeros_like(gt)
    pred[4:14, 4:16] = 1            # exact
    pred[5:16, 31:41] = 2           # shifted by a pixel
    pred[4:12, 60:68] = 3           # half of GT 3
    pred[60:72, 8:20] = 4           # exact, bottom half
    pred[62:70, 44:60] = 5          # most of GT 6
    pred[40:50, 40:50] = 6          # false positive, top half
    pred[80:86, 20:30] = 7          # false positive, bottom half
    pred[20:36, 90:96] = 8          # the L's long arm only
    scores = {1: 0.95, 2: 0.9, 3: 0.5, 4: 0.85, 5: 0.6, 6: 0.7, 7: 0.3, 8: 0.55}
    gt_tif = _write_raster(tmp_path / "gt.tif", gt)
    gpkg = tmp_path / "gt.gpkg"
    pyogrio_write(gpkg, geometry=shapely.to_wkb(np.array(polys, dtype=object)),
                  field_data=[np.array(["car"] * len(polys), dtype=object)], fields=["cls"], crs=CRS, driver="GPKG",
                  geometry_type="Polygon")
    return gt, pred, scores, gt_tif, gpkg, _write_prediction(tmp_path, pred, scores)


def test_vector_gt_scores_exactly_as_the_equivalent_raster_gt(tmp_path):
    gt, _pred, _scores, gt_tif, gpkg, pred_tif = _scene(tmp_path)
    from_vector = evaluate_sources(gpkg, pred_tif)
    from_raster = evaluate(gt_tif, pred_tif)
    assert from_vector.metrics == from_raster.metrics
    assert from_vector.metrics["count_gt"] == 9 and from_vector.metrics["TP"] > 0
    assert from_vector.settings["inputs"]["gt"] == str(gpkg)
    # the same through the command line, in metres-squared buckets as well
    out = tmp_path / "v.json"
    assert main(["evaluate", str(gpkg), str(pred_tif), "--json", str(out), "--size-buckets", "10,30m2"]) == 0
    ref = evaluate(gt_tif, pred_tif, size_buckets="10,30m2")
    written = json.loads(out.read_text())
    assert {k: written[k] for k in ref.metrics} == json.loads(json.dumps(ref.metrics))


def test_vector_gt_in_a_crs_that_does_not_overlap_is_one_line(tmp_path, capsys):
    _gt, _pred, _scores, _gt_tif, _gpkg, pred_tif = _scene(tmp_path)
    far = tmp_path / "far.geojson"
    pyogrio_write(far, geometry=shapely.to_wkb(np.array([shapely.box(10, 10, 11, 11)], dtype=object)),
                  field_data=[np.array(["car"], dtype=object)], fields=["cls"], crs="EPSG:4326", driver="GeoJSON",
                  geometry_type="Polygon")
    assert main(["evaluate", str(far), str(pred_tif)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "far.geojson" in err[0] and "Traceback" not in err[0]


def test_labelled_area_scores_as_the_crop_of_the_area(tmp_path):
    """--area rows=0:48: GT objects below and predictions mostly below are not scored; that is scoring the top
    half's crop (no object crosses row 48 in this scene)."""
    gt, pred, scores, gt_tif, gpkg, pred_tif = _scene(tmp_path)
    top = 48
    with_area = evaluate_sources(gt_tif, pred_tif, area=f"rows=0:{top}")
    top_ids = [int(i) for i in np.unique(pred[:top]) if i]
    cropped = evaluate(gt[:top], _instances(pred[:top], scores, top_ids))
    for key in ("AP", "AP50", "F1", "precision", "recall", "TP", "FP", "FN", "count_gt", "count_pred"):
        assert with_area.metrics[key] == cropped.metrics[key], key
    assert with_area.metrics["count_gt"] == 5 and with_area.metrics["count_pred"] == 5
    # vector GT with the same area: same numbers
    assert evaluate_sources(gpkg, pred_tif, area=f"rows=0:{top}").metrics == with_area.metrics


def _instances(labels, scores, ids):
    from scipy import ndimage

    from smallseg.instances import Instances

    ids = np.array(ids, np.int64)
    return Instances(labels=labels.astype(np.int32), ids=ids, class_ids=np.ones(len(ids), np.int32),
                     scores=np.array([scores[i] for i in ids], np.float32),
                     centroids_yx=np.array(ndimage.center_of_mass(np.ones_like(labels), labels, ids)).reshape(-1, 2))


def test_box_gt_scores_at_box_level_against_a_hand_computation(tmp_path):
    h, w = 100, 100
    # GT boxes A..D as (row0, col0, row1, col1) pixel edges
    gt_boxes = [(10, 10, 30, 30), (10, 50, 30, 70), (50, 10, 70, 30), (50, 50, 70, 70)]
    csv = tmp_path / "crowns.csv"
    csv.write_text("image_path,xmin,ymin,xmax,ymax,label\n" + "".join(
        f"scene.tif,{c0},{r0},{c1},{r1},Tree\n" for r0, c0, r1, c1 in gt_boxes))
    pred = np.zeros((h, w), np.int32)
    pred[10:30, 10:30] = 1   # A exactly: IoU 1
    pred[80:90, 80:90] = 2   # far from everything: FP
    pred[10:30, 55:75] = 3   # B shifted: IoU 300 / 500 = 0.6 -> match at 0.4
    pred[50:70, 24:44] = 4   # C shifted far: IoU 120 / 680 = 0.18 -> FP, C missed
    scores = {1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6}
    pred_tif = _write_prediction(tmp_path, pred, scores)
    result = evaluate_sources(csv, pred_tif, box_iou=0.4)
    m = result.metrics
    assert (m["TP"], m["FP"], m["FN"]) == (2, 2, 2)
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["F1"] == 0.5
    # by score: TP, FP, TP, FP -> (recall, precision) = (.25, 1), (.25, .5), (.5, 2/3), (.5, .5); COCO's
    # 101-point interpolation: 1.0 for recall 0..0.25 (26 points), 2/3 for 0.26..0.50 (25 points), 0 above
    assert m["box_AP"] == pytest.approx((26 * 1.0 + 25 * 2 / 3) / 101, abs=1e-9)
    # at IoU 0.7 the shifted B no longer matches
    strict = evaluate_sources(csv, pred_tif, box_iou=0.7).metrics
    assert (strict["TP"], strict["FP"], strict["FN"]) == (1, 3, 3)
    # a labelled area (the left half: box centres at col < 50) scores A and C against predictions 1 and 4
    left = evaluate_sources(csv, pred_tif, area="cols=0:50").metrics
    assert (left["TP"], left["FP"], left["FN"], left["count_gt"]) == (1, 1, 1, 2)
    # the command line, with the quick-look
    png = tmp_path / "look.png"
    out = tmp_path / "b.json"
    assert main(["evaluate", str(csv), str(pred_tif), "--box-iou", "0.4", "--plot", str(png), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["F1"] == 0.5
    rgb = np.asarray(Image.open(png).convert("RGB"))
    colours = {tuple(c) for c in rgb.reshape(-1, 3)}
    assert {(0, 150, 0), (210, 0, 0), (0, 60, 220)} <= colours  # TP green, FP red, missed blue


def test_quicklook_of_masks_marks_tp_fp_fn(tmp_path):
    gt, pred, scores, gt_tif, _gpkg, pred_tif = _scene(tmp_path)
    png = tmp_path / "q.png"
    result = evaluate_sources(gt_tif, pred_tif, plot=png)
    assert result.metrics == evaluate(gt_tif, pred_tif).metrics
    rgb = np.asarray(Image.open(png).convert("RGB"))
    assert rgb.shape == (96, 128, 3)
    assert tuple(rgb[4, 4]) == (0, 150, 0)      # exact match: green outline
    assert tuple(rgb[40, 40]) == (210, 0, 0)    # false positive: red outline
    assert tuple(rgb[76, 80]) == (0, 60, 220)   # missed GT 7: blue outline


def test_label_volumes_are_matched_in_3d_with_sizes_in_mm3(tmp_path):
    """A prediction that covers one slice of a 4-slice GT object perfectly is a 2-D match there, but its 3-D
    IoU is 1/4: no match. Hand count at IoU 0.5: TP 1 (the exact object), FP 2, FN 1."""
    import SimpleITK as sitk

    def write(path, array):
        image = sitk.GetImageFromArray(array.astype(np.uint32))
        image.SetSpacing((0.7, 0.9, 2.5))
        image.SetOrigin((-10.0, 20.0, 30.0))
        sitk.WriteImage(image, str(path))
        return path

    gt = np.zeros((8, 40, 40), np.int32)
    gt[1:5, 5:15, 5:15] = 1       # 4 slices
    gt[2:6, 20:30, 20:30] = 2     # 4 slices
    pred = np.zeros_like(gt)
    pred[1:5, 5:15, 5:15] = 7     # GT 1 exactly
    pred[3, 20:30, 20:30] = 3     # one slice of GT 2: 2-D IoU 1 on that slice, 3-D IoU 0.25
    pred[6:8, 30:36, 2:8] = 5     # nothing there
    gt_path = write(tmp_path / "gt.nii.gz", gt)
    pred_path = write(tmp_path / "labels.nii.gz", pred)
    (tmp_path / "objects.csv").write_text("id,score\n7,0.9\n3,0.8\n5,0.7\n")  # dicom-batch's table name
    out = tmp_path / "v.json"
    assert main(["evaluate", str(gt_path), str(pred_path), "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    assert (m["TP"], m["FP"], m["FN"]) == (1, 2, 1)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == 0.5
    # by score: TP, FP, FP -> precision 1 up to recall 0.5 (51 of 101 recall points), at every IoU threshold
    assert m["AP50"] == pytest.approx(51 / 101) and m["AP"] == pytest.approx(51 / 101)
    voxel = 0.7 * 0.9 * 2.5
    assert m["volume_gt_mm3"] == pytest.approx(800 * voxel) and m["volume_pred_mm3"] == pytest.approx((400 + 100 + 72) * voxel)
    # a labelled area (rows 0:18 of every slice) leaves GT 1 and prediction 7: a perfect score
    inside = evaluate_sources(gt_path, pred_path, area="rows=0:18").metrics
    assert (inside["TP"], inside["FP"], inside["FN"]) == (1, 0, 0) and inside["AP"] == pytest.approx(1.0)
