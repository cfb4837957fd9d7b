"""Few-shot fine-tuning on real nuclei: F1@0.5 before / after ``smallseg finetune`` on pixels never trained on.

``dsb2018`` (default): the DSB2018 image in tests/data (512 x 512, 183 nuclei). The labelled area is its top
half (``--area rows=0:256``); finetune holds out the bottom strip of that half for its own validation; the test
set is the bottom half (rows 256:512), which finetune never reads (its training part ends above row 256 and
the bottom half is outside the labelled area). Test predictions go through the real inference path
(:func:`smallseg.pipeline.array.predict_array` on the bottom half alone, tiled as a scene is) and are scored
with :func:`smallseg.metrics.multi.evaluate_images` (COCO matching, F1 at IoU 0.5).

``bbbc007``: ``../shared/data/real-nuclei-dev/bbbc007``: 14 image + label pairs; the first 7 (sorted by name)
train, the other 7 test.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_finetune_fewshot.py --minutes 14 --out runs/fewshot-dsb
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_finetune_fewshot.py --data bbbc007 --minutes 14 \\
        --out runs/fewshot-bbbc007

``rs``: a synthetic remote-sensing scene (1024 x 1024 px, 0.5 m, seed 77, written to OUT/scene_*.tif) whose
objects touching the top-left quarter are given as GeoPackage polygons with a ``cls`` attribute (car /
building), the labelled area being that quarter (a GeoPackage polygon too); init ``remote-sensing``; the test
set is the bottom half of the scene (class-aware scoring).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_finetune_fewshot.py --data rs --init remote-sensing \
        --minutes 10 --out runs/fewshot-rs

``rs-v2``: the same on a suburban summer scene of the ``v2`` world (seed 77): trees, forest, water, snow, soils, roof detail
and sensor effects, which the shipped model (trained on ``v1`` scenes of cars and buildings) never saw. Only
cars and buildings are labelled (tree crowns are background, in the labels and in the test set): what a user
whose scenes have canopy would give to stop trees becoming cars.

Add ``--resume`` to continue a killed run. Prints one JSON line of before/after test scores at the end and
writes it to ``OUT/result.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _test_scores(model, tests: list[tuple], tta: str | None = None) -> dict[str, float]:
    """Predict each (image (H, W, C), labels (H, W)[, classes (H, W)]) with the tiled pipeline (``tta``: its
    test-time augmentation, None for none) and score them together (class-aware where classes are given, else
    every object is one class)."""
    from smallseg.metrics.multi import evaluate_images
    from smallseg.pipeline.array import predict_array

    items = []
    for image, labels, *classes in tests:
        pred = predict_array(np.moveaxis(image, -1, 0), model, device="cpu", tta=tta)
        if classes:
            items.append((labels, classes[0], pred))
            continue
        # one-class ground truth; the model's predicted class is ignored (any predicted object may match)
        pred_one = type(pred)(labels=pred.labels, ids=pred.ids, class_ids=np.ones_like(pred.class_ids),
                              scores=pred.scores, centroids_yx=pred.centroids_yx)
        items.append((labels, None, pred_one))
    metrics = evaluate_images(items).metrics
    return {k: (round(float(metrics[k]), 4) if metrics.get(k) is not None else None)
            for k in ("F1", "precision", "recall", "AP", "AP50", "count_gt", "count_pred")}


def _remote_sensing_quarter(out: Path, world: str = "v1"):
    """The ``rs`` data: scene files, labels of the top-left quarter as GPKG, the quarter as a GPKG area.
    Only cars (class 1) and buildings (class 2) are labelled; other objects (v2 trees) are background."""
    import rasterio.features
    import shapely
    from pyogrio.raw import write as pyogrio_write

    from smallseg.data.remote_sensing import make_remote_sensing_scene, save_remote_sensing_scene

    v2 = dict(world="v2", landscape="suburban", season="summer") if world == "v2" else {}
    scene = make_remote_sensing_scene(1024, 1024, seed=77, **v2)
    paths = save_remote_sensing_scene(scene, out / "scene")
    half = 512
    class_of = dict(zip(scene.objects.id.tolist(), scene.objects.class_id.tolist()))
    ids = {i for i in np.unique(scene.instances[:half, :half]).tolist() if i and class_of[i] in (1, 2)}
    kept = np.isin(scene.classes, (1, 2))
    instances = np.where(kept, scene.instances, 0).astype(np.int32)
    classes = np.where(kept, scene.classes, 0).astype(np.int32)
    parts: dict[int, list] = {}
    labels_px = scene.instances.astype(np.int32)
    for g, v in rasterio.features.shapes(labels_px, mask=labels_px > 0, transform=scene.transform):
        if int(v) in ids:
            parts.setdefault(int(v), []).append(shapely.geometry.shape(g))
    order = sorted(parts)
    geoms = [shapely.union_all(parts[i]) for i in order]
    names = ["car" if class_of[i] == 1 else "building" for i in order]
    labels = out / "quarter_labels.gpkg"
    pyogrio_write(labels, geometry=shapely.to_wkb(np.array(geoms, dtype=object)),
                  field_data=[np.array(names, dtype=object)], fields=["cls"], crs=scene.crs.to_string(),
                  driver="GPKG", geometry_type="MultiPolygon" if any(g.geom_type == "MultiPolygon" for g in geoms)
                  else "Polygon")
    x0, y0 = scene.transform * (0, 0)
    x1, y1 = scene.transform * (half, half)
    area = out / "quarter_area.gpkg"
    pyogrio_write(area, geometry=shapely.to_wkb(np.array([shapely.box(min(x0, x1), min(y0, y1), max(x0, x1),
                                                                      max(y0, y1))], dtype=object)),
                  field_data=[], fields=[], crs=scene.crs.to_string(), driver="GPKG", geometry_type="Polygon")
    image = np.moveaxis(scene.image, 0, -1)
    tests = [(image[half:], instances[half:], classes[half:])]
    print(f"rs: {len(ids)} labelled objects in the top-left quarter ({names.count('car')} cars)", flush=True)
    return [str(paths.image)], [str(labels)], str(area), tests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=("dsb2018", "bbbc007", "rs", "rs-v2"), default="dsb2018")
    parser.add_argument("--minutes", type=float, default=14.0)
    parser.add_argument("--out", default="runs/fewshot-dsb")
    parser.add_argument("--init", default="medical")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--patience", type=int, default=None, help="finetune's patience (0: no early stopping)")
    parser.add_argument("--tta", choices=("d4", "flips"), default=None,
                        help="also score before / after with this test-time augmentation (test_*_tta in the row)")
    args = parser.parse_args(argv)

    from smallseg.data.labels.common import read_image_file, read_label_file
    from smallseg.models import load_checkpoint
    from smallseg.models.registry import resolve_model
    from smallseg.train.finetune import FinetuneOptions, finetune

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.data == "dsb2018":
        image_path = ROOT / "tests/data/dsb2018_nuclei_image.tif"
        label_path = ROOT / "tests/data/dsb2018_nuclei_labels.tif"
        image = read_image_file(image_path)[0]
        labels = read_label_file(label_path, image.shape[:2], "")
        images, label_files, area = [str(image_path)], [str(label_path)], "rows=0:256"
        tests = [(image[256:], labels[256:])]
    elif args.data in ("rs", "rs-v2"):
        images, label_files, area, tests = _remote_sensing_quarter(out, "v2" if args.data == "rs-v2" else "v1")
    else:
        folder = ROOT.parent / "shared/data/real-nuclei-dev/bbbc007"
        pairs = sorted(folder.glob("*_image.tif"))
        pairs = [(p, p.with_name(p.name.replace("_image.tif", "_labels.tif"))) for p in pairs]
        train_pairs, test_pairs = pairs[:7], pairs[7:]
        images, label_files, area = [str(p) for p, _ in train_pairs], [str(q) for _, q in train_pairs], None
        tests = []
        for p, q in test_pairs:
            image = read_image_file(p)[0]
            tests.append((image, read_label_file(q, image.shape[:2], "")))
    started = time.perf_counter()
    before = _test_scores(load_checkpoint(resolve_model(args.init)), tests)
    print(f"test before: {before}", flush=True)
    extra = {} if args.lr is None else {"lr": args.lr}
    if args.patience is not None:
        extra["patience"] = args.patience or None
    classes = dict(class_field="cls") if args.data.startswith("rs") else dict(class_name="nucleus")
    options = FinetuneOptions(images=tuple(images), labels=tuple(label_files), out=str(out / "model.safetensors"),
                              init=args.init, area=area, minutes=args.minutes, resume=args.resume, **classes, **extra)
    result = finetune(options, progress=lambda msg: print(msg, flush=True))
    after = _test_scores(load_checkpoint(result.checkpoint), tests)
    total_min = (time.perf_counter() - started) / 60
    row = {"data": args.data, "init": args.init, "minutes_budget": args.minutes, "wall_minutes": round(total_min, 2),
           "threads": os.environ.get("OMP_NUM_THREADS"), "epochs": result.epochs, "stopped": result.stopped,
           "val_before": result.before, "val_after": result.after, "test_before": before, "test_after": after}
    if args.tta:
        row["tta"] = args.tta
        row["test_before_tta"] = _test_scores(load_checkpoint(resolve_model(args.init)), tests, args.tta)
        row["test_after_tta"] = _test_scores(load_checkpoint(result.checkpoint), tests, args.tta)
    (out / "result.json").write_text(json.dumps(row, indent=1) + "\n")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
