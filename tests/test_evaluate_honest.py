"""Honest `evaluate`: the ground truth's classes come from where they are (a class raster or table given, else the
object table beside the GT raster), otherwise scoring is class-agnostic and the report says so (issue 13.6).

The files are the demo's own: `smallseg demo` on a small scene with the shipped model writes the ground truth
(scene_instances.tif + scene_objects.csv) and the prediction (prediction/scene_image.instances.tif +
.objects.csv) and scores them; the README's evaluate example run on those files must give the demo's AP.
"""

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from smallseg.cli import main
from smallseg.metrics.evaluation import evaluate

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", "--out", str(out), "--size", "192", "--device", "cpu", "--quiet"]) == 0
    return {"out": out, "gt": out / "scene_instances.tif", "gt_table": out / "scene_objects.csv",
            "pred": out / "prediction" / "scene_image.instances.tif",
            "pred_table": out / "prediction" / "scene_image.objects.csv",
            "report": json.loads((out / "evaluation.json").read_text(encoding="utf-8"))}


def readme_evaluate_args(gt: Path, pred: Path, json_out: Path) -> list[str]:
    """The README's `smallseg evaluate GT PRED OPTIONS...` line with the demo's files substituted."""
    lines = README.read_text(encoding="utf-8").splitlines()
    line = next(ln for ln in lines if ln.strip().startswith("smallseg evaluate "))
    words = line.split("#")[0].split()[2:]
    positional = [i for i, w in enumerate(words)
                  if not w.startswith("-") and (i == 0 or not words[i - 1].startswith("--"))]
    assert len(positional) >= 2, line
    words[positional[0]], words[positional[1]] = str(gt), str(pred)
    if "--json" in words:
        words[words.index("--json") + 1] = str(json_out)
    return words


def test_readme_evaluate_example_on_the_demo_files_gives_the_demos_ap(demo, tmp_path, capsys):
    assert demo["report"]["count_gt"] > 10 and demo["report"]["AP"] > 0.05  # a real score to compare
    args = readme_evaluate_args(demo["gt"], demo["pred"], tmp_path / "scores.json")
    assert main(["evaluate", *args]) == 0
    printed = capsys.readouterr().out
    scores = json.loads((tmp_path / "scores.json").read_text(encoding="utf-8"))
    for key in ("AP", "AP50", "F1", "count_gt", "count_pred"):
        assert scores[key] == pytest.approx(demo["report"][key], abs=1e-12), key
    classes = scores["settings"]["classes"]
    assert classes["mode"] == "per-class" and "scene_objects.csv" in classes["gt"]
    assert classes["names"] == {"1": "car", "2": "building"}
    assert re.search(r"classes\s+1 \(car\), 2 \(building\)", printed)
    # What the README example gave before: GT objects all class 1 while predictions keep their classes.
    all_car = evaluate(demo["gt"], demo["pred"], gt_classes=(np.asarray(_labels(demo["gt"])) > 0).astype(np.uint8))
    assert all_car.metrics["AP"] < 0.8 * scores["AP"]


def test_gt_without_any_classes_is_scored_class_agnostic_and_says_so(demo, tmp_path, capsys):
    bare = tmp_path / "gt.tif"  # the GT raster alone: no table beside it
    shutil.copy(demo["gt"], bare)
    assert main(["evaluate", str(bare), str(demo["pred"]), "--json", str(tmp_path / "a.json")]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))
    assert report["settings"]["classes"]["mode"] == "class-agnostic"
    assert "class-agnostic: the ground truth has no classes" in printed
    forced = evaluate(demo["gt"], demo["pred"], class_agnostic=True)
    assert forced.settings["classes"]["mode"] == "class-agnostic" and "as asked" in forced.settings["classes"]["why"]
    assert report["AP"] == pytest.approx(forced.metrics["AP"], abs=1e-12)
    assert report["count_gt"] == demo["report"]["count_gt"]
    # --class-agnostic on the CLI is the same switch.
    assert main(["evaluate", str(demo["gt"]), str(demo["pred"]), "--class-agnostic", "--json",
                 str(tmp_path / "b.json")]) == 0
    forced_cli = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))
    assert forced_cli["AP"] == pytest.approx(forced.metrics["AP"], abs=1e-12)


def test_gt_classes_given_as_a_table_equal_the_table_found_beside_the_raster(demo, tmp_path):
    bare = tmp_path / "gt.tif"
    shutil.copy(demo["gt"], bare)
    given = evaluate(bare, demo["pred"], gt_classes=demo["gt_table"])
    assert given.metrics["AP"] == pytest.approx(demo["report"]["AP"], abs=1e-12)
    assert given.settings["classes"]["mode"] == "per-class"
    # and as a class raster (the demo's own call)
    raster = evaluate(bare, demo["pred"], gt_classes=demo["out"] / "scene_classes.tif")
    assert raster.metrics["AP"] == pytest.approx(demo["report"]["AP"], abs=1e-12)
    assert "class raster" in raster.settings["classes"]["gt"]


def test_class_names_that_differ_between_gt_and_prediction_are_reported_in_one_line(demo, tmp_path):
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    shutil.copy(demo["pred"], pred_dir / "scene_image.instances.tif")
    rows = list(csv.reader(demo["pred_table"].open(newline="", encoding="utf-8")))
    k = rows[0].index("class")
    swap = {"car": "building", "building": "car"}
    for row in rows[1:]:
        row[k] = swap[row[k]]
    with (pred_dir / "scene_image.objects.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    report = evaluate(demo["gt"], pred_dir / "scene_image.instances.tif")
    lines = [w for w in report.warnings if "class names differ" in w]
    assert len(lines) == 1 and "'car' vs 'building'" in lines[0] and "\n" not in lines[0]
    assert f"warning: {lines[0]}" in report.format_table()


def test_prediction_without_classes_is_scored_class_agnostic(demo, tmp_path):
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    shutil.copy(demo["pred"], pred_dir / "p.tif")
    rows = list(csv.DictReader(demo["pred_table"].open(newline="", encoding="utf-8")))
    with (pred_dir / "p.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "score"])
        w.writerows([r["id"], r["score"]] for r in rows)
    report = evaluate(demo["gt"], pred_dir / "p.tif", pred_objects=pred_dir / "p.csv")
    assert report.settings["classes"]["mode"] == "class-agnostic"
    assert "the prediction has no classes" in report.settings["classes"]["why"]
    assert report.metrics["AP"] == pytest.approx(evaluate(demo["gt"], demo["pred"], class_agnostic=True).metrics["AP"])


def _labels(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def test_coco_class_agnostic_equals_pycocotools_with_one_category(tmp_path):
    import contextlib
    import io

    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from test_metrics_coco import perturbed_prediction, planted_scene

    rng = np.random.default_rng(11)
    gt, gt_cls = planted_scene(rng, (64, 80), 14)
    pred, pred_cls, scores = perturbed_prediction(rng, gt, gt_cls)
    pred_cls = 3 - pred_cls  # every class swapped: per class nothing matches, class-agnostic all does

    def rle(mask):
        r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": r["size"], "counts": r["counts"].decode()}

    annotations = [{"id": int(k), "image_id": 1, "category_id": int(gt_cls[gt == k][0]), "segmentation": rle(gt == k),
                    "area": float((gt == k).sum()), "iscrowd": 0} for k in np.unique(gt)[1:]]
    results = [{"image_id": 1, "category_id": int(pred_cls[pred == k][0]), "segmentation": rle(pred == k),
                "score": float(scores[n])} for n, k in enumerate(np.unique(pred)[1:])]
    gt_json, res_json = tmp_path / "gt.json", tmp_path / "res.json"
    gt_json.write_text(json.dumps({"images": [{"id": 1, "height": 64, "width": 80}], "annotations": annotations,
                                   "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    res_json.write_text(json.dumps(results))
    per_class = evaluate(gt_json, res_json)
    agnostic = evaluate(gt_json, res_json, class_agnostic=True)
    assert agnostic.settings["classes"]["mode"] == "class-agnostic" and per_class.metrics["AP"] < 0.05
    # Reference: pycocotools on the same files with every category set to one.
    one = tmp_path / "one"
    one.mkdir()
    (one / "gt.json").write_text(json.dumps({"images": [{"id": 1, "height": 64, "width": 80}],
                                             "annotations": [{**a, "category_id": 1} for a in annotations],
                                             "categories": [{"id": 1, "name": "object"}]}))
    (one / "res.json").write_text(json.dumps([{**r, "category_id": 1} for r in results]))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(one / "gt.json"))
        ev = COCOeval(coco_gt, coco_gt.loadRes(str(one / "res.json")), iouType="segm")
        ev.params.maxDets = [agnostic.settings["maxDets"]]
        ev.evaluate()
        ev.accumulate()
    p = ev.eval["precision"][:, :, 0, 0, -1]
    assert agnostic.metrics["AP"] == pytest.approx(float(p[p > -1].mean()), abs=1e-12)
    assert agnostic.metrics["AP"] > per_class.metrics["AP"] + 0.05
