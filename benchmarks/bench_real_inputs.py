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
4. Resolution (item 5): one synthetic aerial scene at 0.4 m, rewritten by GDAL at 0.1 / 0.2 m (bilinear) and
   0.8 / 1.6 m (area average), through tile-and-predict as is, with ``--no-resample`` and with
   ``--resample-to 0.4``: objects, F1@0.5
   against the scene's ground truth (moved to each grid by nearest neighbour), total area in m² against the
   ground truth's, time (``--only resolution`` runs just this part; no ../shared needed).

Usage (dev machine; reads ../shared, writes only under runs/)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_real_inputs.py --out runs/bench_real_inputs
    # parts 1-2 only, with another model (a shipped name or a checkpoint path):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_real_inputs.py --only nuclei --nuclei-model microscopy \
        --out runs/bench_real_inputs_microscopy
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
from affine import Affine

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


def nuclei(out: Path, model_name: str = "medical") -> dict:
    model = load_model(model_name)
    results = {}
    image = ROOT / "tests" / "data" / "dsb2018_nuclei_image.tif"
    gt = tifffile.imread(ROOT / "tests" / "data" / "dsb2018_nuclei_labels.tif").astype(np.int64)
    t = time.perf_counter()
    code, _, _ = cli(image, "--out", out / "dsb", "--model", model_name, "--overwrite")
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
        code, _, err = cli(inputs, "--out", out / folder, "--model", model_name, "--overwrite")
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


def _rewrite(src: Path, dst: Path, pixel_m: float, resampling) -> None:
    """``src`` (a GeoTIFF) on a grid of ``pixel_m`` m over the same extent, resampled by GDAL."""
    from rasterio.warp import reproject

    with rasterio.open(src) as ds:
        k = ds.transform.a / pixel_m
        h, w = int(round(ds.height * k)), int(round(ds.width * k))
        transform = ds.transform @ Affine.scale(1 / k)
        profile = {**ds.profile, "width": w, "height": h, "transform": transform}
        profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
        with rasterio.open(dst, "w", **profile) as out:
            for b in ds.indexes:
                data = np.zeros((h, w), ds.dtypes[b - 1])
                reproject(ds.read(b), data, src_transform=ds.transform, src_crs=ds.crs, dst_transform=transform,
                          dst_crs=ds.crs, resampling=resampling)
                out.write(data, b)


def resolution(out: Path, size: int = 512) -> dict:
    from rasterio.enums import Resampling

    from smallseg.data.remote_sensing import make_remote_sensing_scene

    folder = out / "resolution"
    folder.mkdir(parents=True, exist_ok=True)
    scene = make_remote_sensing_scene(size, size, seed=1, pixel_size_m=0.4)
    base = folder / "scene_0.4.tif"
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": scene.crs,
               "transform": scene.transform, "photometric": "RGB"}
    with rasterio.open(base, "w", **profile) as ds:
        ds.write(np.ascontiguousarray(scene.image))
    gt_path = folder / "gt_0.4.tif"
    with rasterio.open(gt_path, "w", **{**profile, "count": 1, "dtype": "int32", "photometric": "MINISBLACK"}) as ds:
        ds.write(scene.instances.astype(np.int32)[None])
    gt_area_m2 = float(np.count_nonzero(scene.instances)) * 0.4**2
    rows = {"scene": f"{size}x{size} px at 0.4 m, seed 1, {len(np.unique(scene.instances)) - 1} objects, "
                     f"{gt_area_m2:.0f} m2 of objects", "runs": []}
    for pixel_m in (0.1, 0.2, 0.4, 0.8, 1.6):
        image, gt = folder / f"scene_{pixel_m}.tif", folder / f"gt_{pixel_m}.tif"
        if pixel_m != 0.4:
            _rewrite(base, image, pixel_m, Resampling.bilinear if pixel_m < 0.4 else Resampling.average)
            _rewrite(gt_path, gt, pixel_m, Resampling.nearest)
        with rasterio.open(gt if pixel_m != 0.4 else gt_path) as ds:
            gt_labels = ds.read(1).astype(np.int64)
        for flags in ((), ("--no-resample",), ("--resample-to", "0.4")):
            dest = folder / f"out_{pixel_m}{'_' + flags[0].strip('-') if flags else ''}"
            t = time.perf_counter()
            code, _, err = cli(image, "--out", dest, "--model", "remote-sensing", "--overwrite",
                               "--formats", "tif,csv,json", *flags)
            seconds = time.perf_counter() - t
            stem = image.stem
            if code != 0:
                rows["runs"].append({"pixel_m": pixel_m, "flags": list(flags), "exit": code, "error": err[-300:]})
                continue
            run = json.loads((dest / f"{stem}.run.json").read_text(encoding="utf-8"))
            pred = labels_of(dest / f"{stem}.instances.tif")
            table = np.genfromtxt(dest / f"{stem}.objects.csv", delimiter=",", names=True, dtype=None,
                                  encoding="utf-8")
            area = float(np.sum(np.atleast_1d(table["area_m2"]))) if table.size else 0.0
            # class-agnostic: the model's car/building split is not what is measured here
            pred_agnostic = type(pred).from_labels(pred.labels)
            rows["runs"].append({
                "pixel_m": pixel_m, "flags": list(flags), "resample": run["input"]["resample"],
                "objects": run["counts"]["objects"], "per_class": run["counts"]["objects_per_class"],
                **f1([(gt_labels, pred_agnostic)]), "area_m2": round(area, 1),
                "area_vs_gt": round(area / gt_area_m2, 3), "reliable": run["reliable"], "seconds": round(seconds, 1)})
    return rows


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_real_inputs"))
    parser.add_argument("--only", choices=["resolution", "nuclei"], default=None, help="run just this part")
    parser.add_argument("--nuclei-model", default="medical",
                        help="model for the nuclei part: a shipped name or a .safetensors path (default: medical)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")
    if args.only == "resolution":
        report = {"resolution": resolution(out)}
    elif args.only == "nuclei":
        report = {"nuclei": nuclei(out, args.nuclei_model)}
    else:
        report = {"nuclei": nuclei(out, args.nuclei_model), "scenes": scenes(out), "resolution": resolution(out)}
    text = json.dumps(report, indent=1)
    (out / (f"results_{args.only}.json" if args.only else "results.json")).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    run()
