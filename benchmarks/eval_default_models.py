"""Scores of the shipped models on held-out data (nothing here was seen in training).

- remote-sensing: synthetic aerial scenes from seeds outside every training/validation range, at three
  ground sampling distances, predicted with the tiled pipeline (``predict_array``).
- medical: synthetic nuclei images and CT slices from held-out seeds, and a REAL fluorescence image of
  nuclei from the 2018 Data Science Bowl with its ground truth (``tests/data/dsb2018_*``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_default_models.py [--rs MODEL] [--medical MODEL]

Prints one Markdown table (AP, AP50, AP_small, Boundary AP, F1@0.5, count error) per model and data set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile
import torch

from smallseg.data.remote_sensing import CLASS_NAMES, make_remote_sensing_scene
from smallseg.io.medical import IntensityPreset
from smallseg.metrics.multi import evaluate_images
from smallseg.models.registry import load_model
from smallseg.pipeline.array import decode_config_for, predict_array
from smallseg.train.data import MEDICAL_PRESETS, synthetic_images

ROOT = Path(__file__).resolve().parents[1]


def medical_input(image01: np.ndarray, model) -> np.ndarray:
    """A [0, 1] image as the raw input ``predict_array`` expects (``normalise`` multiplies by input_scale)."""
    return image01 / np.float32(model.config.input_scale)


def rows_remote_sensing(model, n_scenes: int, world: str = "v1") -> list[tuple[str, dict, dict]]:
    """(name, metrics, per-class metrics by class name) per ground sampling distance. ``world`` v1: cars and
    buildings on the classic ground; v2: every landscape with trees (a class), canopy, water, soils, snow."""
    rows = []
    names = CLASS_NAMES  # {class id: name} of the scenes (1 car, 2 building, 3 tree); models share the order
    for gsd in (0.3, 0.4, 0.5):
        scenes = [make_remote_sensing_scene(512, 512, seed=70_000 + 100 * i + int(gsd * 10), pixel_size_m=gsd,
                                            world=world)
                  for i in range(n_scenes)]
        items = [(s.instances, s.classes, predict_array(s.image, model)) for s in scenes]
        ev = evaluate_images(items)
        per_class = {names.get(int(k), str(k)): v for k, v in ev.per_class.items()}
        rows.append((f"synthetic aerial {world}, {gsd} m/px, {n_scenes} x 512²", ev.metrics, per_class))
    return rows


def per_class_table(title: str, rows: list[tuple[str, dict, dict]]) -> str:
    f = lambda v: "n/a" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = [f"**{title}, per class**", "", "| data | class | AP | AP50 | Boundary AP | F1@0.5 | GT | pred |",
             "|" + " --- |" * 8]
    for name, _, per_class in rows:
        for cls, m in per_class.items():
            lines.append(f"| {name} | {cls} | {f(m.get('AP'))} | {f(m.get('AP50'))} | {f(m.get('boundary_AP'))} | "
                         f"{f(m.get('F1'))} | {m.get('count_gt')} | {m.get('count_pred')} |")
    return "\n".join(lines)


def rows_medical(model, n_images: int, n_ct_volumes: int = 8) -> list[tuple[str, dict]]:
    rows = []
    nuclei = synthetic_images("nuclei", count=n_images, size=256, seed=80_000, class_id=1)
    items = [(im.instances, im.classes, predict_array(medical_input(im.image[..., 0], model), model)) for im in nuclei]
    rows.append((f"synthetic nuclei, {n_images} x 256²", evaluate_images(items).metrics))
    # CT: decoded with the settings the model stores for CT (what dicom-batch uses for CT series), and, for
    # comparison, with its default (microscopy-tuned) settings.
    ct = [im for im in synthetic_images("ct", count=n_ct_volumes, size=256, seed=81_000, class_id=2, slices=40)]
    for settings, modality in (("CT settings", "CT"), ("default settings", None)):
        decode = decode_config_for(model, modality=modality)
        items = [(im.instances, im.classes, predict_array(medical_input(im.image[..., 0], model), model, decode=decode))
                 for im in ct]
        rows.append((f"synthetic CT slices (lung window), {n_ct_volumes} volumes, {len(ct)} slices, {settings}",
                     evaluate_images(items).metrics))
    image = tifffile.imread(ROOT / "tests" / "data" / "dsb2018_nuclei_image.tif")
    labels = tifffile.imread(ROOT / "tests" / "data" / "dsb2018_nuclei_labels.tif").astype(np.int64)
    preset = IntensityPreset.from_dict(MEDICAL_PRESETS["microscopy"]).resolve(image)
    pred = predict_array(medical_input(preset.apply(image), model), model)
    rows.append(("REAL: DSB2018 fluorescence nuclei, 512² (183 nuclei)",
                 evaluate_images([(labels, (labels > 0).astype(np.int32), pred)]).metrics))
    return rows


def table(title: str, rows: list[tuple[str, dict]]) -> str:
    f = lambda v: "n/a" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = [f"**{title}**", "", "| data | AP | AP50 | AP_small | Boundary AP | F1@0.5 | count error | GT | pred |",
             "|" + " --- |" * 9]
    for name, m in rows:
        lines.append(f"| {name} | {f(m['AP'])} | {f(m['AP50'])} | {f(m['AP_small'])} | {f(m['boundary_AP'])} | "
                     f"{f(m['F1'])} | {f(m['count_error_relative'])} % | {m['count_gt']} | {m['count_pred']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rs", default="remote-sensing", help="remote-sensing model name or checkpoint")
    parser.add_argument("--medical", default="medical", help="medical model name or checkpoint")
    parser.add_argument("--scenes", type=int, default=3, help="aerial scenes per ground sampling distance")
    parser.add_argument("--world", default="v1", choices=("v1", "v2"),
                        help="synthetic aerial world: v1 (cars, buildings) or v2 (with trees, canopy, water, snow)")
    parser.add_argument("--images", type=int, default=6, help="synthetic nuclei images")
    parser.add_argument("--skip", default="", help="comma list of rs,medical to skip")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    skip = set(filter(None, args.skip.split(",")))
    if "rs" not in skip:
        rows = rows_remote_sensing(load_model(args.rs), args.scenes, args.world)
        print(table(f"remote-sensing model ({args.rs})", [r[:2] for r in rows]), "\n", flush=True)
        print(per_class_table(f"remote-sensing model ({args.rs})", rows), "\n", flush=True)
    if "medical" not in skip:
        print(table(f"medical model ({args.medical})", rows_medical(load_model(args.medical), args.images)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
