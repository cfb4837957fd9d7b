"""Held-out scores of one remote-sensing model under several decode settings, on the same scenes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_decode_settings.py "fg_threshold=0.6" "fg_threshold=0.7"

Synthetic aerial scenes of 512² from seeds outside every training / validation range (75000 + i), the
same number at each ground sampling distance (0.3 / 0.4 / 0.5 m), predicted with the tiled pipeline
(``predict_array``) and scored together (pycocotools via ``evaluate_images``), per class too. Each
positional argument is one row: comma-separated ``DecodeConfig`` overrides on top of the model's stored
settings (an empty string = the stored settings as they are).

Prints one Markdown table: AP, AP_small, Boundary AP, F1@0.5, count error, car AP / AP50 / F1, building AP /
F1, and AP_small per pixel size.
"""

from __future__ import annotations

import argparse

from smallseg.data.remote_sensing import make_remote_sensing_scene
from smallseg.decode import DecodeConfig
from smallseg.metrics.multi import evaluate_images
from smallseg.models.registry import load_model
from smallseg.pipeline.array import predict_array

PIXEL_SIZES_M = (0.3, 0.4, 0.5)


def parse_settings(text: str) -> dict[str, float]:
    """``"fg_threshold=0.7,min_score=0.05"`` -> ``{"fg_threshold": 0.7, "min_score": 0.05}``."""
    settings = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        if key not in DecodeConfig.__dataclass_fields__ or not value:
            raise SystemExit(f"{item!r}: expected <DecodeConfig field>=<number>, e.g. fg_threshold=0.7")
        settings[key] = float(value)
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="+", help="one row each: comma-separated field=value overrides")
    parser.add_argument("--model", default="remote-sensing", help="model name or checkpoint")
    parser.add_argument("--scenes", type=int, default=6, help="scenes per pixel size")
    parser.add_argument("--seed", type=int, default=75_000, help="seed of the first scene")
    args = parser.parse_args()

    model = load_model(args.model).eval()
    scenes = [make_remote_sensing_scene(512, 512, seed=args.seed + i, pixel_size_m=PIXEL_SIZES_M[i // args.scenes])
              for i in range(args.scenes * len(PIXEL_SIZES_M))]
    f = lambda v: "n/a" if v is None else f"{100 * v:.1f}"  # noqa: E731
    print(f"model {args.model}; {len(scenes)} scenes of 512², seeds {args.seed}-{args.seed + len(scenes) - 1}, "
          f"{args.scenes} at each of {' / '.join(map(str, PIXEL_SIZES_M))} m")
    print()
    print("| decode | AP | AP_small | Boundary AP | F1@0.5 | count error | car AP | car AP50 | car F1 | building AP | "
          "building F1 | " + " | ".join(f"{p} m AP_small" for p in PIXEL_SIZES_M) + " |")
    print("|" + " --- |" * (11 + len(PIXEL_SIZES_M)))
    for text in args.settings:
        preds = [predict_array(s.image, model, decode=parse_settings(text)) for s in scenes]
        items = [(s.instances, s.classes, p) for s, p in zip(scenes, preds)]
        evaluation = evaluate_images(items)
        m = evaluation.metrics
        per_class = {str(k): v for k, v in evaluation.per_class.items()}
        car, building = per_class.get("1", {}), per_class.get("2", {})
        by_size = [evaluate_images(items[k * args.scenes:(k + 1) * args.scenes]).metrics["AP_small"]
                   for k in range(len(PIXEL_SIZES_M))]
        print(f"| {text or 'stored'} | {f(m['AP'])} | {f(m['AP_small'])} | {f(m['boundary_AP'])} | {f(m['F1'])} | "
              f"{f(m['count_error_relative'])} % | {f(car.get('AP'))} | {f(car.get('AP50'))} | {f(car.get('F1'))} | "
              f"{f(building.get('AP'))} | {f(building.get('F1'))} | " + " | ".join(f(v) for v in by_size) + " |",
              flush=True)


if __name__ == "__main__":
    main()
