"""Nuclei models side by side on real images and held-out synthetic ones: which one should ship?

For each model (a shipped name or a checkpoint path):

- **DSB2018** (tests/data, 512², never used for training, selection or tuning by any model here) through
  ``smallseg tile-and-predict``, without and with ``--tta d4``;
- **real-nuclei-dev** (../shared/data/real-nuclei-dev, BBBC007 + laptrack, silver labels), split into the four
  images ``configs/microscopy-v2-devval.yaml`` validates on ("devval": used for checkpoint selection and
  decode tuning by the devval runs) and the other 16 ("other": unseen by a model trained from that config;
  the shipped ``microscopy`` model was fine-tuned on 80 % of the rows of all 20), through ``predict_array``;
- **synthetic**: 8 + 8 held-out realistic synthetic nuclei images (seeds 70000 at 18 px, 71000 at 13 px uint8,
  as ``bench_contours.py``), through ``predict_array``.

All objects are one class (the model's class is ignored); F1 / precision / recall at IoU 0.5 and COCO AP
(pycocotools) over each set's images together.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/compare_nuclei_models.py microscopy runs/s11/micro-v2/best.safetensors \
        --out runs/s11/compare
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compare_nuclei_models.py medical runs/old-microscopy.safetensors microscopy --time-only
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # bench_real_inputs.labels_of reads a tile-and-predict result


def _score(pairs) -> dict:
    """pairs: [(gt labels (H, W), predicted Instances)] -> F1, precision, recall, AP, counts (one class)."""
    from smallseg.instances import Instances
    from smallseg.metrics.multi import evaluate_images

    items = []
    for gt, pred in pairs:
        one = Instances(labels=pred.labels, ids=pred.ids, class_ids=np.ones_like(pred.class_ids),
                        scores=pred.scores, centroids_yx=pred.centroids_yx)
        items.append((gt, None, one))
    m = evaluate_images(items).metrics
    return {k: round(float(m[k]), 4) for k in ("F1", "precision", "recall", "AP", "count_gt", "count_pred")
            if m.get(k) is not None}


def _devval_images() -> set[str]:
    config = yaml.safe_load((ROOT / "configs" / "microscopy-v2-devval.yaml").read_text())
    return {Path(s["geotiff"]["image"]).name for s in config["data"]["val"] if "geotiff" in s}


def _dsb_cli(model: str, out: Path, tta: str | None) -> dict:
    from bench_real_inputs import labels_of

    from smallseg.cli import main

    dest = out / f"dsb-{'tta-' + tta if tta else 'plain'}"
    args = ["tile-and-predict", str(ROOT / "tests/data/dsb2018_nuclei_image.tif"), "--out", str(dest), "--model",
            model, "--overwrite", "--quiet", "--device", "cpu"] + (["--tta", tta] if tta else [])
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(args)
    seconds = time.perf_counter() - t
    if code != 0:
        return {"exit": code}
    gt = tifffile.imread(ROOT / "tests/data/dsb2018_nuclei_labels.tif").astype(np.int64)
    return {**_score([(gt, labels_of(dest / "dsb2018_nuclei_image.instances.tif"))]), "cli_s": round(seconds, 1)}


def compare(models: list[str], out: Path, synthetic_count: int = 8) -> dict:
    from smallseg.models.registry import load_model
    from smallseg.pipeline.array import predict_array
    from smallseg.train.loop import load_source

    devval = _devval_images()
    real = {"devval": [], "other": []}
    for folder in ("bbbc007", "laptrack"):
        for p in sorted((SHARED / "real-nuclei-dev" / folder).glob("*_image.tif")):
            gt = tifffile.imread(p.with_name(p.name.replace("_image", "_labels"))).astype(np.int64)
            real["devval" if p.name in devval else "other"].append((tifffile.imread(p), gt))
    synthetic = []
    for spec in ({"synthetic": "nuclei", "count": synthetic_count, "size": 256, "seed": 70000,
                  "options": {"style": "realistic", "mean_diameter_px": 18}},
                 {"synthetic": "nuclei", "count": synthetic_count, "size": 256, "seed": 71000,
                  "options": {"style": "realistic", "mean_diameter_px": 13, "dtype": "uint8"}}):
        synthetic += [(im.image[..., 0], im.instances) for im in load_source(spec, ROOT)]
    rows = {}
    for name in models:
        model = load_model(name)
        folder = out / Path(name).stem.replace(".", "_")
        row = {"dsb2018": _dsb_cli(name, folder, None), "dsb2018_tta_d4": _dsb_cli(name, folder, "d4")}
        for part, pairs in (("real_devval", real["devval"]), ("real_other", real["other"]),
                            ("synthetic", synthetic)):
            row[part] = _score([(gt, predict_array(image, model, device="cpu")) for image, gt in pairs])
        rows[name] = row
        print(json.dumps({name: row}), flush=True)
    return rows


def forward_ms(models: list[str], repeats: int = 20, size: int = 256) -> dict[str, float]:
    """Median ms of one forward pass over a (1, C, size, size) tile per model, the models timed in turn (so a
    change of machine load hits them alike)."""
    import torch

    from smallseg.models.registry import load_model

    loaded = {name: load_model(name) for name in models}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for i in range(repeats + 2):
            for name, model in loaded.items():
                x = torch.rand(1, model.config.in_channels, size, size)
                t = time.perf_counter()
                model(x)
                if i >= 2:  # two warm-up rounds
                    times[name].append((time.perf_counter() - t) * 1000)
    return {name: round(float(np.median(v)), 1) for name, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="shipped model names or checkpoint paths")
    parser.add_argument("--out", default=str(ROOT / "runs" / "compare_nuclei_models"))
    parser.add_argument("--synthetic-count", type=int, default=8, help="held-out synthetic images per size")
    parser.add_argument("--time-only", action="store_true",
                        help="only the median forward ms per 256² tile of each model (timed in turn)")
    args = parser.parse_args(argv)
    if args.time_only:
        print(json.dumps(forward_ms(args.models)))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = compare(args.models, out, args.synthetic_count)
    (out / "result.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("| model | DSB2018 F1 (AP) | + TTA d4 | real devval (4) F1 | real other (16) F1 | synthetic F1 (AP) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        def cell(d):
            return f"{d['F1']:.3f} ({d['AP']:.3f})" if "F1" in d else f"exit {d.get('exit')}"
        print(f"| {name} | {cell(r['dsb2018'])} | {cell(r['dsb2018_tta_d4'])} | {cell(r['real_devval'])} | "
              f"{cell(r['real_other'])} | {cell(r['synthetic'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
