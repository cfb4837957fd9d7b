"""Real inputs (#13): the shipped models through ``smallseg tile-and-predict`` vs the Python API.

Measures (numbers go to benchmarks/RESULTS.md, section "Real inputs"):

1. DSB2018 (tests/data): F1@0.5 of ``tile-and-predict --model medical`` and of ``predict_array``; whether
   the label rasters are identical.
2. ../shared/data/real-nuclei-dev (BBBC007 uint8, laptrack uint16; silver labels): F1@0.5 via the CLI, per
   folder (all images of a folder scored together), and via the API.
3. ../shared/data/rasterio-cc0: object counts and ``reliable`` of cogeo.tif (uint8 RGB, EPSG:3857),
   RGBA.uint16.tif (B, G, R, alpha; constant 10000) and shade.tif (1 band) with the remote-sensing model,
   as now and as before #13 (``--normalize fixed`` with the file's bands in file order, which is what
   the pipeline did then; shade.tif was refused then, ``--bands 1,1,1`` was the way round).

Usage (dev machine; reads ../shared, writes only under runs/)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_real_inputs.py --out runs/bench_real_inputs
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio
import tifffile

from smallseg.cli import main
from smallseg.metrics.multi import evaluate_images
from smallseg.models.registry import load_model
from smallseg.pipeline.array import predict_array

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["tile-and-predict", *map(str, args), "--quiet"])
    return code, out.getvalue(), err.getvalue()


def labels_of(path: Path):
    """A tile-and-predict result as Instances: its instance raster with the scores of its objects.csv."""
    from smallseg.instances import Instances
    from smallseg.io.tables import read_objects_csv

    with rasterio.open(path) as ds:
        labels = ds.read(1).astype(np.int64)
    with rasterio.open(str(path).replace(".instances.tif", ".classes.tif")) as ds:
        classes = ds.read(1)
    classes = np.where(classes == 255, 0, classes).astype(np.int64)
    table = read_objects_csv(Path(str(path).replace(".instances.tif", ".objects.csv")))
    return Instances.from_labels(labels, classes, scores=dict(zip(table.ids.tolist(), table.scores.tolist())))


def f1(pairs) -> dict:
    """pairs: [(gt labels, predicted Instances or labels)] -> F1 / precision / recall at IoU 0.5, counts."""
    from smallseg.instances import Instances

    items = []
    for gt, pred in pairs:
        pred = pred if isinstance(pred, Instances) else Instances.from_labels(pred)
        items.append((gt, (gt > 0).astype(np.int32), pred))
    m = evaluate_images(items).metrics
    return {k: round(float(m[k]), 4) for k in ("F1", "precision", "recall", "count_gt", "count_pred") if k in m}


def nuclei(out: Path) -> dict:
    model = load_model("medical")
    results = {}
    image = ROOT / "tests" / "data" / "dsb2018_nuclei_image.tif"
    gt = tifffile.imread(ROOT / "tests" / "data" / "dsb2018_nuclei_labels.tif").astype(np.int64)
    t = time.perf_counter()
    code, _, _ = cli(image, "--out", out / "dsb", "--model", "medical", "--overwrite")
    t_cli = time.perf_counter() - t
    assert code == 0
    via_cli = labels_of(out / "dsb" / "dsb2018_nuclei_image.instances.tif")
    via_api = predict_array(tifffile.imread(image), model)
    results["dsb2018"] = {"cli": f1([(gt, via_cli)]), "api": f1([(gt, via_api)]),
                          "identical_labels": bool(np.array_equal(via_cli.labels, via_api.labels)),
                          "cli_s": round(t_cli, 1)}
    for folder in ("bbbc007", "laptrack"):
        src = SHARED / "real-nuclei-dev" / folder
        images = sorted(src.glob("*_image.tif"))
        inputs = out / f"in_{folder}"
        inputs.mkdir(parents=True, exist_ok=True)
        for p in images:  # the folder also holds the labels: predict the images only
            target = inputs / p.name
            if not target.exists():
                target.symlink_to(p)
        code, _, err = cli(inputs, "--out", out / folder, "--model", "medical", "--overwrite")
        pairs_cli, pairs_api = [], []
        for p in images:
            gt = tifffile.imread(p.with_name(p.name.replace("_image", "_labels"))).astype(np.int64)
            pairs_cli.append((gt, labels_of(out / folder / f"{p.stem}.instances.tif")))
            pairs_api.append((gt, predict_array(tifffile.imread(p), model)))
        results[folder] = {"images": len(images), "dtype": str(tifffile.imread(images[0]).dtype), "exit": code,
                           "cli": f1(pairs_cli), "api": f1(pairs_api),
                           "identical_labels": all(np.array_equal(a[1].labels, b[1].labels)
                                                   for a, b in zip(pairs_cli, pairs_api))}
    return results


def scenes(out: Path) -> dict:
    results = {}
    src = SHARED / "rasterio-cc0"
    for name, before_bands in (("cogeo.tif", "1,2,3"), ("RGBA.uint16.tif", "1,2,3"), ("shade.tif", "1,1,1")):
        row = {}
        for label, extra in (("now", []), ("before (fixed, file order)", ["--normalize", "fixed", "--bands", before_bands])):
            folder = out / "scenes" / ("now" if label == "now" else "before") / name.split(".")[0]
            code, stdout, err = cli(src / name, "--out", folder, "--model", "remote-sensing", "--overwrite",
                                    "--formats", "json", *extra)
            run_path = folder / f"{Path(name).stem}.run.json"
            if code != 0 or not run_path.exists():
                row[label] = {"exit": code, "error": err.strip().splitlines()[-1:] if err else ""}
                continue
            run = json.loads(run_path.read_text(encoding="utf-8"))
            row[label] = {"objects": run["counts"]["objects"], "reliable": run.get("reliable"),
                          "reason": run.get("reliable_reason", ""), "bands": run["input"]["bands"],
                          "normalization": run["input"]["normalization"]["described"]}
        results[name] = row
    return results


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_real_inputs"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")
    report = {"nuclei": nuclei(out), "scenes": scenes(out)}
    text = json.dumps(report, indent=1)
    (out / "results.json").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    run()
