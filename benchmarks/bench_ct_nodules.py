"""Nodules in synthetic chest CT with vessels: how many are found, at how many false positives per scan?

Held-out volumes of ``make_ct_volume(anatomy="realistic")`` (dense branching vessel trees, airways, pleura,
fissures; none of it labelled, so every vessel cross-section a model marks is a false positive) go through
``predict_volume`` as ``dicom-batch`` runs it (the model's CT window and CT decode settings, objects linked over
slices, only the classes the model has for CT). Seeds 85000+ are used by no training config.

Per model, over all volumes:

- **detection** (LUNA16-style hit): a predicted 3-D object *hits* a nodule when its centroid lies within the
  nodule's equivalent radius (mm) of the nodule's centre; a nodule is found when some object hits it; every
  object that hits none is a false positive. Sensitivity (also for nodules of >= 6 mm, the size from which
  follow-up is recommended), FP per scan, and the FROC points: sensitivity at
  1 / 2 / 4 / 8 FP per scan when only the objects above a score threshold are kept (the threshold chosen on
  these volumes, so it says where the operating point *could* be, not what the default gives);
- **segmentation**: 3-D voxel-IoU matching at 0.5 and AP (``smallseg.metrics.evaluation_volume``,
  pycocotools' matching), sizes in mm³.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ct_nodules.py medical runs/s12/ct-v2/best.safetensors --volumes 8
    # choosing an operating point on volumes of the validation seeds (29000+), never on the held-out ones:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ct_nodules.py runs/s12/ct-v3/best.safetensors --seed 29000 --slices 40 --min-scores 0.1,0.3,0.5
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FP_RATES = (1, 2, 4, 8)


def hits(objects, nodules) -> np.ndarray:
    """(N objects,) index of the nodule each predicted object hits, -1 for none (nearest centre wins)."""
    if not len(objects.ids) or not nodules:
        return np.full(len(objects.ids), -1, np.int64)
    pred = np.asarray(objects.centroid_lps_mm, np.float64)                     # (N, 3) x, y, z mm
    centres = np.array([n.center_lps_mm for n in nodules], np.float64)        # (K, 3)
    radii = np.array([n.diameter_mm / 2.0 for n in nodules], np.float64)     # (K,)
    dist = np.linalg.norm(pred[:, None, :] - centres[None, :, :], axis=2)     # (N, K) mm
    nearest = dist.argmin(1)
    inside = dist[np.arange(len(pred)), nearest] <= radii[nearest]
    return np.where(inside, nearest, -1)


def froc(per_volume: list[tuple[np.ndarray, np.ndarray, int]], n_nodules: int) -> dict:
    """Sensitivity at each FP rate of FP_RATES: keep objects with score >= t for the t that allows it.

    per_volume: [(scores (N,), hit nodule index (N,) or -1, number of nodules)].
    """
    scores = np.concatenate([s for s, _, _ in per_volume]) if per_volume else np.zeros(0)
    out = {}
    for rate in FP_RATES:
        best = 0.0
        for t in np.unique(np.concatenate([scores, [np.inf]])):
            fp = found = 0
            for s, h, _ in per_volume:
                keep = s >= t
                fp += int(np.sum(keep & (h < 0)))
                found += len(np.unique(h[keep & (h >= 0)]))
            if fp <= rate * len(per_volume):
                best = max(best, found / max(n_nodules, 1))
        out[f"sens@{rate}FP"] = round(best, 3)
    return out


def run_model(name: str, volumes, threads: int, min_score: float | None = None,
              fg_threshold: float | None = None, min_slices: int | None = None) -> dict:
    import SimpleITK as sitk
    import torch

    from smallseg.io.medical import from_sitk, write_labels_nifti
    from smallseg.metrics.evaluation_volume import evaluate_volumes
    from smallseg.models.registry import load_model
    from smallseg.pipeline.volume import predict_volume

    torch.set_num_threads(threads)
    model = load_model(name)
    per_volume, seg = [], []
    found = fp = n_nodules = n_objects = 0
    sizes_found, sizes_missed = [], []
    seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i, ct in enumerate(volumes):
            vol = from_sitk(ct.image, modality="CT")
            t0 = time.perf_counter()
            decode = {} if fg_threshold is None else {"fg_threshold": fg_threshold}
            pred = predict_volume(vol, model, progress=False, min_score=min_score, decode=decode,
                                  min_slices=min_slices)
            seconds += time.perf_counter() - t0
            h = hits(pred.objects, ct.nodules)
            per_volume.append((np.asarray(pred.objects.scores, np.float64), h, len(ct.nodules)))
            hit_set = set(h[h >= 0].tolist())
            found += len(hit_set)
            fp += int(np.sum(h < 0))
            n_objects += len(h)
            n_nodules += len(ct.nodules)
            for k, n in enumerate(ct.nodules):
                (sizes_found if k in hit_set else sizes_missed).append(n.diameter_mm)
            gt_path = write_labels_nifti(sitk.GetArrayFromImage(ct.labels), vol, Path(tmp) / f"gt{i}.nii.gz")
            pred_path = write_labels_nifti(pred.labels, vol, Path(tmp) / f"pred{i}.nii.gz")
            pred.objects.write_csv(Path(tmp) / f"pred{i}.objects.csv")
            seg.append((gt_path, pred_path))
        m = [evaluate_volumes(g, p).metrics for g, p in seg]
    tp50 = sum(x["TP"] for x in m)
    fp50 = sum(x["FP"] for x in m)
    fn50 = sum(x["FN"] for x in m)
    return {
        "model": name, "fg_threshold": "model's" if fg_threshold is None else fg_threshold,
        "min_score": "model's" if min_score is None else min_score, "min_slices": "model's" if min_slices is None else min_slices,
        "volumes": len(volumes),
        "nodules": n_nodules,
        "sensitivity": round(found / max(n_nodules, 1), 3), "fp_per_scan": round(fp / len(volumes), 1),
        # >= 6 mm: the size from which the Fleischner Society guidelines recommend follow-up of a solid nodule
        "sensitivity_6mm": round(sum(d >= 6.0 for d in sizes_found)
                                 / max(sum(d >= 6.0 for d in sizes_found + sizes_missed), 1), 3),
        "nodules_6mm": sum(d >= 6.0 for d in sizes_found + sizes_missed),
        "objects_per_scan": round(n_objects / len(volumes), 1),
        **froc(per_volume, n_nodules),
        "F1@IoU0.5_3d": round(2 * tp50 / max(2 * tp50 + fp50 + fn50, 1), 3),
        "mean_AP_3d": round(float(np.mean([x["AP"] for x in m])), 3),
        "missed_diameters_mm": sorted(round(d, 1) for d in sizes_missed),
        "s_per_volume": round(seconds / len(volumes), 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="shipped model names or checkpoint paths")
    p.add_argument("--volumes", type=int, default=8, help="held-out volumes (default 8)")
    p.add_argument("--seed", type=int, default=85_000, help="first volume seed (default 85000)")
    p.add_argument("--size", type=int, default=256, help="voxels per row / column (default 256)")
    p.add_argument("--slices", type=int, default=48, help="slices per volume (default 48)")
    p.add_argument("--anatomy", default="realistic", choices=("realistic", "classic"),
                   help="lung anatomy of the synthetic CT (default realistic: vessels, airways, fissures)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--fg-thresholds", default=None,
                   help="comma-separated decoder fg_threshold values to sweep (default: each model's own setting)")
    p.add_argument("--min-slices", default=None,
                   help="comma-separated min_slices values to sweep: shortest 3-D object kept (default: each "
                        "model's own, training.volume_min_slices, else 1)")
    p.add_argument("--min-scores", default=None,
                   help="comma-separated decoder min_score values to sweep (default: each model's own setting)")
    p.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = p.parse_args(argv)

    from smallseg.data.medical import make_ct_volume

    volumes = [make_ct_volume((args.size, args.size, args.slices), seed=args.seed + i, anatomy=args.anatomy)
               for i in range(args.volumes)]
    min_scores = [float(v) for v in args.min_scores.split(",")] if args.min_scores else [None]
    fgs = [float(v) for v in args.fg_thresholds.split(",")] if args.fg_thresholds else [None]
    slices = [int(v) for v in args.min_slices.split(",")] if args.min_slices else [None]
    rows = [run_model(name, volumes, args.threads, m, fg, k) for name in args.models for fg in fgs
            for m in min_scores for k in slices]
    cols = ["model", "fg_threshold", "min_score", "min_slices", "nodules", "objects_per_scan", "sensitivity", "sensitivity_6mm", "fp_per_scan", *(f"sens@{r}FP" for r in FP_RATES),
            "F1@IoU0.5_3d", "mean_AP_3d", "s_per_volume"]
    print(f"{args.volumes} synthetic CT volumes ({args.anatomy} anatomy, {args.size}² x {args.slices}, "
          f"seeds {args.seed}+)")
    print("| " + " | ".join(cols) + " |")
    print("| " + " | ".join("---" for _ in cols) + " |")
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    for r in rows:
        print(f"{r['model']} (fg {r['fg_threshold']}, min_score {r['min_score']}): missed nodule diameters (mm) "
              f"{r['missed_diameters_mm']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
