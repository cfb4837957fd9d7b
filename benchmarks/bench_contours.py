"""Issue #17 ablation: the contour-refinement stage (boundary head + edge re-placement) on nuclei.

Two rows, same encoder, same data, same training budget (epochs x steps x batch), same seeds:

    without   the microscopy-v2 architecture (semantic + centroid + distance heads, falling LFE)
    with      the same + ``boundary_head: signed_distance`` (its loss term, and the decoder's edge re-placement)

The "with" model is also scored with its boundary output dropped before decoding ("head, no refine"), which
separates what the extra training signal does to the shared features from what the edge re-placement does.
Each row: checkpoint chosen on the validation images (AP), decode tuned on them after training (train()
does both), then scored with the tiled pipeline (``predict_array``) on held-out synthetic nuclei and on the
real DSB2018 image (tests/data, never used in training or tuning). Columns: AP (IoU .5:.95), AP_small,
Boundary AP, F1@0.5; forward and forward + decode ms per 256² tile (batch 1, this CPU).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_contours.py --epochs 6 --steps 40 --out runs/contours
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_contours.py --score-only --out runs/contours

Each row resumes its run (``--resume``) if its folder holds one, so an interrupted benchmark continues.
Writes OUT/contours.md and OUT/contours.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
import yaml

from smallseg.decode.components import decode_outputs
from smallseg.metrics.multi import evaluate_images
from smallseg.models import load_checkpoint
from smallseg.pipeline.array import decode_config_for, predict_array
from smallseg.train.loop import load_source, load_train_config, train

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"without": {}, "with": {"boundary_head": "signed_distance"}}


def base_config(args) -> dict:
    realistic = {"style": "realistic"}
    return {
        "name": "contours",
        "model": {"encoder_name": "tu-mobilenetv3_small_100", "encoder_output_stride": 16, "in_channels": 1,
                  "classes": 1, "class_names": ["nucleus"], "decoder_pyramid_channels": 64,
                  "decoder_segmentation_channels": 64, "refine_channels": [32, 16], "lfe": "falling",
                  "lfe_dilations": [4, 2, 1], "heads": ["semantic", "centroid", "distance"], "max_distance_px": 24},
        "normalize": {"kind": "percentile", "lo": 1.0, "hi": 99.5, "clip": True},
        "data": {
            "train": [
                {"synthetic": "nuclei", "count": 24, "size": 256, "seed": 11000,
                 "options": {**realistic, "mean_diameter_px": 18}},
                {"synthetic": "nuclei", "count": 16, "size": 256, "seed": 12000,
                 "options": {**realistic, "mean_diameter_px": 24}},
                {"synthetic": "nuclei", "count": 12, "size": 256, "seed": 13000,
                 "options": {**realistic, "mean_diameter_px": 13, "dtype": "uint8"}},
                {"synthetic": "nuclei", "count": 12, "size": 256, "seed": 15000,
                 "options": {**realistic, "mean_diameter_px": 20, "dtype": "uint8", "cluster_fraction": 0.8}},
            ],
            "val": [{"synthetic": "nuclei", "count": 4, "size": 256, "seed": 19000,
                     "options": {**realistic, "mean_diameter_px": 20}}],
        },
        "augment": {"crop_size": args.crop, "scale_range": [0.7, 1.5], "mosaic_p": 0.3, "brightness": 0.15,
                    "contrast": 0.3, "noise_std": 0.03, "blur_p": 0.3},
        "loss": {"semantic_weight": 1.0, "centroid_weight": 2.0, "distance_weight": 1.0},
        "decode": {"fg_threshold": 0.5, "min_score": 0.1},
        "optim": {"epochs": args.epochs, "steps_per_epoch": args.steps, "batch_size": args.batch_size,
                  "lr": 0.002, "weight_decay": 0.0001, "warmup_steps": 20},
        "seed": args.seed,
        "device": "cpu",
        "select_metric": "AP",
    }


def test_sets(args) -> dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]]:
    """{name: [(raw image (H, W), gt instances, gt classes)]}: held-out synthetic nuclei and DSB2018."""
    synthetic = []
    for spec in ({"synthetic": "nuclei", "count": args.test_images, "size": 256, "seed": 70000,
                  "options": {"style": "realistic", "mean_diameter_px": 18}},
                 {"synthetic": "nuclei", "count": args.test_images, "size": 256, "seed": 71000,
                  "options": {"style": "realistic", "mean_diameter_px": 13, "dtype": "uint8"}}):
        for im in load_source(spec, ROOT):
            synthetic.append((im.image[..., 0], im.instances, None))
    image = tifffile.imread(ROOT / "tests" / "data" / "dsb2018_nuclei_image.tif")
    labels = tifffile.imread(ROOT / "tests" / "data" / "dsb2018_nuclei_labels.tif").astype(np.int64)
    return {"synthetic nuclei": synthetic, "DSB2018 (real)": [(image, labels, None)]}


class _DropBoundary(torch.nn.Module):
    """The same trained model with its ``boundary`` output removed (decoding then does no refinement)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, x):
        return {k: v for k, v in self.model(x).items() if k != "boundary"}


def score(model, sets) -> dict:
    out = {}
    for name, items in sets.items():
        ev = evaluate_images([(gt, cls, predict_array(img, model, tile_size_px=256)) for img, gt, cls in items])
        out[name] = {k: ev.metrics.get(k) for k in ("AP", "AP50", "AP_small", "boundary_AP", "F1", "count_gt")}
    return out


def timing(model, repeats: int = 8) -> dict:
    """Forward and forward + decode ms per 256² tile (batch 1) on a real-looking synthetic nuclei tile."""
    im = load_source({"synthetic": "nuclei", "count": 1, "size": 256, "seed": 72000,
                      "options": {"style": "realistic", "mean_diameter_px": 18}}, ROOT)[0].image[..., 0]
    x = torch.from_numpy(((im - np.percentile(im, 1)) / (np.percentile(im, 99.5) - np.percentile(im, 1) + 1e-6))
                         .clip(0, 1).astype(np.float32))[None, None]
    decode = decode_config_for(model)
    with torch.inference_mode():
        decode_outputs(model(x), decode)  # warm-up (numba compile)
        fwd, total = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            outputs = model(x)
            t1 = time.perf_counter()
            decode_outputs(outputs, decode)
            t2 = time.perf_counter()
            fwd.append(t1 - t0)
            total.append(t2 - t0)
    return {"forward_ms": 1000 * float(np.median(fwd)), "forward_decode_ms": 1000 * float(np.median(total))}


def interleaved_timing(models: dict, repeats: int = 30) -> dict:
    """Forward and forward + decode ms per 256² tile, the models timed in turn (A, B, A, B, ...) so the load
    of a shared machine hits each alike; medians."""
    im = load_source({"synthetic": "nuclei", "count": 1, "size": 256, "seed": 72000,
                      "options": {"style": "realistic", "mean_diameter_px": 18}}, ROOT)[0].image[..., 0]
    lo, hi = np.percentile(im, 1), np.percentile(im, 99.5)
    x = torch.from_numpy(((im - lo) / (hi - lo + 1e-6)).clip(0, 1).astype(np.float32))[None, None]
    times = {name: ([], []) for name in models}
    with torch.inference_mode():
        for name, m in models.items():
            decode_outputs(m(x), decode_config_for(m))
        for _ in range(repeats):
            for name, m in models.items():
                t0 = time.perf_counter()
                outputs = m(x)
                t1 = time.perf_counter()
                decode_outputs(outputs, decode_config_for(m))
                t2 = time.perf_counter()
                times[name][0].append(t1 - t0)
                times[name][1].append(t2 - t0)
    return {name: {"forward_ms": 1000 * float(np.median(f)), "forward_decode_ms": 1000 * float(np.median(t))}
            for name, (f, t) in times.items()}


def quicklook(models: dict, path: Path, windows=((150, 40), (300, 300), (40, 380)), size: int = 64, zoom: int = 4):
    """PNG: DSB2018 crops (rows) x [image, truth, each model] (columns), outlines drawn on the image, zoomed."""
    from PIL import Image

    from smallseg.decode.refine import edge_pixels

    image = tifffile.imread(ROOT / "tests" / "data" / "dsb2018_nuclei_image.tif").astype(np.float32)
    truth = tifffile.imread(ROOT / "tests" / "data" / "dsb2018_nuclei_labels.tif").astype(np.int64)
    grey = ((image - image.min()) / (np.percentile(image, 99.5) - image.min() + 1e-6)).clip(0, 1)
    labels = {"truth": truth, **{name: predict_array(image, m, tile_size_px=256).labels for name, m in models.items()}}
    colours = {"truth": (0, 255, 0)}
    palette = [(255, 60, 60), (60, 160, 255), (255, 200, 0)]
    rows = []
    for r0, c0 in windows:
        crop = (grey[r0:r0 + size, c0:c0 + size] * 255).astype(np.uint8)
        panels = [np.stack([crop] * 3, -1)]
        for i, (name, lab) in enumerate(labels.items()):
            rgb = np.stack([crop] * 3, -1).copy()
            edge = edge_pixels(lab[r0:r0 + size, c0:c0 + size]) & (lab[r0:r0 + size, c0:c0 + size] > 0)
            rgb[edge] = colours.get(name, palette[(i - 1) % len(palette)])
            panels.append(rgb)
        rows.append(np.concatenate([np.pad(p, ((2, 2), (2, 2), (0, 0)), constant_values=255) for p in panels], 1))
    sheet = np.concatenate(rows, 0).repeat(zoom, 0).repeat(zoom, 1)
    Image.fromarray(sheet).save(path, optimize=True)
    return list(labels)


def outline_speed() -> dict:
    """Outlines of the DSB2018 truth and of a dense synthetic aerial scene's truth: ms per object, vertices
    kept, area change, for tolerances 0 / 0.5 / 1 / 2 px."""
    import shapely

    from smallseg.data.remote_sensing import make_remote_sensing_scene
    from smallseg.outline import OutlineOptions, outline_polygons

    scene = make_remote_sensing_scene(512, 512, seed=50_000, pixel_size_m=0.4)
    truth = tifffile.imread(ROOT / "tests" / "data" / "dsb2018_nuclei_labels.tif").astype(np.int64)
    out = {}
    for name, labels in (("DSB2018 truth", truth), ("aerial scene truth", np.asarray(scene.instances, np.int64))):
        exact = outline_polygons(labels)[1]
        n0 = sum(len(shapely.get_coordinates(p)) for p in exact)
        for tol in (0.0, 0.5, 1.0, 2.0):
            t0 = time.perf_counter()
            _, polys = outline_polygons(labels, OutlineOptions(simplify_px=tol))
            dt = time.perf_counter() - t0
            n = sum(len(shapely.get_coordinates(p)) for p in polys)
            darea = sum(abs(p.area - q.area) for p, q in zip(polys, exact)) / sum(q.area for q in exact)
            out[f"{name}, simplify {tol:g} px"] = {"objects": len(polys), "ms_per_object": 1000 * dt / len(polys),
                                                   "vertices_kept": n / n0, "area_change": darea}
    return out


def subpixel_accuracy(n_discs: int = 40, seed: int = 0) -> dict:
    """Analytic discs (radius 3-15 px, random sub-pixel centres, alone in a window): area error and largest
    outline distance to the true circle, pixel outline vs :func:`coverage_subpixel_outlines` on a perfect
    signed distance (level 0), a perfect one-pixel-blurred probability (0.5), and the signed distance with
    Gaussian noise of 0.1 and 0.3 px per pixel (a model is not perfect); ms per object on the DSB2018 truth
    (a signed distance of the truth labels as the field: the cost, not an accuracy)."""
    import shapely
    from scipy import ndimage

    from smallseg.outline import coverage_subpixel_outlines, outline_polygons

    rng = np.random.default_rng(seed)
    rows: dict[str, dict[str, list]] = {}
    for _ in range(n_discs):
        radius = float(rng.uniform(3, 15))
        size = int(2 * radius) + 12
        cy, cx = rng.uniform(size / 2 - 0.5, size / 2 + 0.5, 2)
        yy, xx = np.mgrid[:size, :size] + 0.5
        sdf = radius - np.hypot(yy - cy, xx - cx)
        labels = (sdf > 0).astype(np.int32)
        true_area = np.pi * radius**2
        fields = {"pixel outline": None, "sub-pixel, perfect signed distance": (sdf, 0.0),
                  "sub-pixel, perfect probability": (np.clip(sdf + 0.5, 0, 1), 0.5),
                  "sub-pixel, signed distance + 0.1 px noise": (sdf + 0.1 * rng.standard_normal(sdf.shape), 0.0),
                  "sub-pixel, signed distance + 0.3 px noise": (sdf + 0.3 * rng.standard_normal(sdf.shape), 0.0)}
        for name, field in fields.items():
            poly = outline_polygons(labels)[1][0] if field is None else \
                coverage_subpixel_outlines(field[0], labels, level=field[1])[1][0]
            xy = shapely.get_coordinates(shapely.segmentize(poly.boundary, 0.05))
            row = rows.setdefault(name, {"area": [], "dist": [], "mean": []})
            row["area"].append(abs(poly.area - true_area) / true_area)
            d = np.abs(np.hypot(xy[:, 0] - cx, xy[:, 1] - cy) - radius)
            row["dist"].append(float(d.max()))
            row["mean"].append(float(d.mean()))
    out = {k: {"area_error": float(np.mean(v["area"])), "max_dist_px": float(np.mean(v["dist"])),
               "mean_dist_px": float(np.mean(v["mean"]))} for k, v in rows.items()}
    truth = tifffile.imread(ROOT / "tests" / "data" / "dsb2018_nuclei_labels.tif").astype(np.int64)
    field = ndimage.distance_transform_edt(truth > 0) - ndimage.distance_transform_edt(truth == 0)
    t0 = time.perf_counter()
    ids, _ = outline_polygons(truth)
    t1 = time.perf_counter()
    coverage_subpixel_outlines(field, truth, level=0.0)
    t2 = time.perf_counter()
    out["timing"] = {"objects": len(ids), "pixel_ms": 1000 * (t1 - t0) / len(ids), "subpixel_ms": 1000 * (t2 - t1) / len(ids)}
    return out


def subpixel_scene_timing(out: Path, model: Path, repeats: int = 2) -> dict:
    """tile-and-predict (``predict_geotiff``, GeoPackage + rasters, 256 px tiles) of the real DSB2018 image
    with a boundary-head model (``--subpixel`` refuses others), without and with ``OutlineOptions(subpixel=True)``,
    runs interleaved: the fastest of ``repeats`` each (s); per decoded object matched to a true nucleus
    (largest overlap), the polygon's IoU with the true pixel mask and its area / the truth's, pixel vs
    sub-pixel (the truth is a pixel mask itself: this says whether the edges move towards it, not 0.1 px)."""
    import pyogrio.raw
    import shapely

    from smallseg.outline import OutlineOptions, outline_polygons
    from smallseg.pipeline.geotiff import predict_geotiff

    image = ROOT / "tests" / "data" / "dsb2018_nuclei_image.tif"
    truth = tifffile.imread(ROOT / "tests" / "data" / "dsb2018_nuclei_labels.tif").astype(np.int64)
    _, true_polys = outline_polygons(truth)
    tree = shapely.STRtree(true_polys)
    times: dict[str, list[float]] = {"pixel outlines": [], "subpixel": []}
    scores = {}
    for i in range(repeats):
        for name, outline in (("pixel outlines", None), ("subpixel", OutlineOptions(subpixel=True))):
            t0 = time.perf_counter()
            res = predict_geotiff(image, out / f"subpixel_run_{name[:3]}_{i}", str(model), outline=outline,
                                  formats="tif,gpkg", progress=False, overwrite=True, tile_size_px=256)
            times[name].append(time.perf_counter() - t0)
            _, _, geometry, _ = pyogrio.raw.read(res.paths["gpkg"])
            polys = shapely.from_wkb(geometry)  # identity transform (no georeferencing): pixel coordinates
            ious, ratios = [], []
            for p in polys:
                hits = tree.query(p, predicate="intersects")
                if not len(hits):
                    continue
                t = max((true_polys[h] for h in hits), key=lambda q: q.intersection(p).area)
                ious.append(t.intersection(p).area / t.union(p).area)
                ratios.append(p.area / t.area)
            scores[name] = (float(np.mean(ious)), float(np.median(ratios)), len(ious))
    return {"objects": scores["subpixel"][2], "pixel_s": min(times["pixel outlines"]),
            "subpixel_s": min(times["subpixel"]), "scores": scores}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/contours")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--test-images", type=int, default=8, help="held-out synthetic images per style (2 styles)")
    parser.add_argument("--rows", default="without,with")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed (initial weights, crop and augmentation draws); the data stay the same")
    parser.add_argument("--score-only", action="store_true", help="score the runs already in --out")
    parser.add_argument("--timing-only", action="store_true",
                        help="only time the trained rows in turn (interleaved) and draw the DSB2018 quick-look")
    parser.add_argument("--outlines-only", action="store_true", help="only time the outline simplification")
    parser.add_argument("--subpixel-model", default=None,
                        help="with --subpixel-only: a boundary-head checkpoint to time tile-and-predict --subpixel with")
    parser.add_argument("--subpixel-only", action="store_true",
                        help="only the sub-pixel outline accuracy on analytic discs and its cost per object")
    parser.add_argument("--quicklook", default=None, help="PNG path of the DSB2018 quick-look (--timing-only)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.subpixel_only:
        rows = subpixel_accuracy()
        timing = rows.pop("timing")
        for k, v in rows.items():
            print(f"| {k} | {100 * v['area_error']:.2f} % | {v['mean_dist_px']:.3f} | {v['max_dist_px']:.3f} |")
        print(f"DSB2018 truth, {timing['objects']} objects: pixel outline {timing['pixel_ms']:.2f} ms/object, "
              f"coverage sub-pixel {timing['subpixel_ms']:.2f} ms/object")
        if args.subpixel_model:
            scene = subpixel_scene_timing(out, Path(args.subpixel_model))
            print(f"tile-and-predict, DSB2018 512x512: {scene['pixel_s']:.2f} s pixel outlines, {scene['subpixel_s']:.2f} s "
                  f"--subpixel (+{100 * (scene['subpixel_s'] / scene['pixel_s'] - 1):.0f} %)")
            for name, (iou, ratio, n) in scene["scores"].items():
                print(f"  {name}: {n} matched objects, mean IoU with the true mask {iou:.4f}, median area / true {ratio:.3f}")
        return 0
    if args.outlines_only:
        rows = outline_speed()
        for k, v in rows.items():
            print(f"| {k} | {v['objects']} | {v['ms_per_object']:.2f} | {100 * v['vertices_kept']:.0f} % | "
                  f"{100 * v['area_change']:.2f} % |")
        return 0
    if args.timing_only:
        models = {"without": load_checkpoint(out / "without" / "best.safetensors").eval(),
                  "with": load_checkpoint(out / "with" / "best.safetensors").eval()}
        models["with: head, no refine"] = _DropBoundary(models["with"])
        timing_rows = interleaved_timing(models)
        print(json.dumps(timing_rows, indent=1))
        if args.quicklook:
            print("quick-look columns: image,", ", ".join(quicklook(models, Path(args.quicklook))))
        (out / "timing.json").write_text(json.dumps(timing_rows, indent=2))
        return 0
    sets = test_sets(args)
    results = {}
    for name in args.rows.split(","):
        config = base_config(args)
        config["model"].update(ROWS[name])
        config_path = out / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump(config))
        run_dir = out / name
        if not args.score_only:
            t0 = time.perf_counter()
            train(load_train_config(config_path), run_dir, progress=False,
                  resume=(run_dir / "history.jsonl").exists())
            print(f"{name}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
        history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
        model = load_checkpoint(run_dir / "best.safetensors").eval()
        variants = {name: model}
        if name == "with":
            variants["with: head, no refine"] = _DropBoundary(model)
        for label, m in variants.items():
            results[label] = {"scores": score(m, sets), **timing(m),
                              "train_s": sum(h.get("seconds", 0) for h in history)}
            print(label, json.dumps(results[label]), flush=True)
    f = lambda v: "n/a" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = []
    for set_name in sets:
        lines += [f"{set_name}:", "", "| row | AP | AP50 | AP_small | Boundary AP | F1@0.5 | fwd ms | fwd+decode ms | train s |",
                  "|" + " --- |" * 9]
        for label, r in results.items():
            s = r["scores"][set_name]
            lines.append(f"| {label} | {f(s['AP'])} | {f(s['AP50'])} | {f(s['AP_small'])} | {f(s['boundary_AP'])} | "
                         f"{f(s['F1'])} | {r['forward_ms']:.1f} | {r['forward_decode_ms']:.1f} | {r['train_s']:.0f} |")
        lines.append("")
    table = "\n".join(lines)
    (out / "contours.md").write_text(f"command: {' '.join(sys.argv)}\n\n{table}\n", encoding="utf-8")
    (out / "contours.json").write_text(json.dumps({"settings": vars(args), "rows": results}, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
