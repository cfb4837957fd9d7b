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


def _test_scores(model, tests: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Predict each (image (H, W, C), labels (H, W)) pair with the tiled pipeline and score them together."""
    from smallseg.metrics.multi import evaluate_images
    from smallseg.pipeline.array import predict_array

    items = []
    for image, labels in tests:
        pred = predict_array(np.moveaxis(image, -1, 0), model, device="cpu")
        # one-class ground truth; the model's predicted class is ignored (any predicted object may match)
        pred_one = type(pred)(labels=pred.labels, ids=pred.ids, class_ids=np.ones_like(pred.class_ids),
                              scores=pred.scores, centroids_yx=pred.centroids_yx)
        items.append((labels, None, pred_one))
    metrics = evaluate_images(items).metrics
    return {k: (round(float(metrics[k]), 4) if metrics.get(k) is not None else None)
            for k in ("F1", "precision", "recall", "AP", "AP50", "count_gt", "count_pred")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=("dsb2018", "bbbc007"), default="dsb2018")
    parser.add_argument("--minutes", type=float, default=14.0)
    parser.add_argument("--out", default="runs/fewshot-dsb")
    parser.add_argument("--init", default="medical")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--lr", type=float, default=None)
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
    options = FinetuneOptions(images=tuple(images), labels=tuple(label_files), out=str(out / "model.safetensors"),
                              init=args.init, area=area, minutes=args.minutes, class_name="nucleus",
                              resume=args.resume, **extra)
    result = finetune(options, progress=lambda msg: print(msg, flush=True))
    after = _test_scores(load_checkpoint(result.checkpoint), tests)
    total_min = (time.perf_counter() - started) / 60
    row = {"data": args.data, "init": args.init, "minutes_budget": args.minutes, "wall_minutes": round(total_min, 2),
           "threads": os.environ.get("OMP_NUM_THREADS"), "epochs": result.epochs, "stopped": result.stopped,
           "val_before": result.before, "val_after": result.after, "test_before": before, "test_after": after}
    (out / "result.json").write_text(json.dumps(row, indent=1) + "\n")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
