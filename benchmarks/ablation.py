"""Ablation: what the centroid heads and the LFE module add, on held-out synthetic aerial scenes.

Same encoder, same data, same training budget, same test scenes for every row:

    baseline          semantic head only, no LFE, connected components   (= smp FPN + CC)
    + centroid heads  semantic + centroid + distance heads, centroid-vote decoding
    + LFE             semantic head only, falling-dilation LFE (4, 2, 1), connected components
    + both            heads + falling LFE                                (smallseg's default)
    constant control  heads + constant-dilation LFE (1, 1, 1), same parameter count as falling

Columns: AP, AP50, AP_small, Boundary AP, F1@0.5, count error (relative), the car class alone (AP, AP50,
F1@0.5: the many small objects; the class-mean AP also weighs the few buildings of the test scenes as
much as all the cars), parameters, ms per tile (forward only, batch 1, this CPU). Each row is scored with its best checkpoint on the validation scenes and
with decode thresholds tuned on them (``tune_decode`` after training), as a user would ship it. Run (each row trains from scratch; time grows with --epochs/--steps):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ablation.py --epochs 6 --steps 40 --out runs/ablation

Prints a Markdown table and writes it with the settings to OUT/ablation.md and OUT/ablation.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

from smallseg.data.remote_sensing import make_remote_sensing_scene
from smallseg.metrics.multi import evaluate_images
from smallseg.models import count_parameters, load_checkpoint
from smallseg.pipeline.array import predict_array
from smallseg.train.loop import load_source, load_train_config, train
from smallseg.train.tune import write_tuned_checkpoint

ROWS = {
    "baseline (FPN + CC)": {"heads": ["semantic"], "lfe": None},
    "+ centroid heads": {"heads": ["semantic", "centroid", "distance"], "lfe": None},
    "+ LFE": {"heads": ["semantic"], "lfe": "falling", "lfe_dilations": [4, 2, 1]},
    "+ both (default)": {"heads": ["semantic", "centroid", "distance"], "lfe": "falling", "lfe_dilations": [4, 2, 1]},
    "constant-dilation control": {"heads": ["semantic", "centroid", "distance"], "lfe": "constant",
                                  "lfe_dilations": [1, 1, 1]},
}


def base_config(args) -> dict:
    return {
        "name": "ablation",
        "model": {"encoder_name": args.encoder, "encoder_output_stride": 16, "classes": 2,
                  "class_names": ["car", "building"], "decoder_pyramid_channels": 64,
                  "decoder_segmentation_channels": 64, "refine_channels": [32, 16], "max_distance_px": 32,
                  "input_scale": "auto", "norm_mean": "auto", "norm_std": "auto"},
        "data": {"train": [{"synthetic": "remote-sensing", "count": args.train_scenes, "size": 640,
                            "seed": 1000, "options": {"pixel_size_m": 0.4}}],
                 # Validation scenes (neither training nor test): per-epoch checkpoint selection and the
                 # decode thresholds tuned after training, so no row is judged at untuned defaults.
                 "val": [{"synthetic": "remote-sensing", "count": args.val_scenes, "size": 384,
                          "seed": 9000, "options": {"pixel_size_m": 0.4}}] if args.val_scenes else []},
        "augment": {"crop_size": args.crop, "scale_range": [0.75, 1.33], "mosaic_p": 0.3},
        "loss": {"semantic_weight": 1.0, "centroid_weight": 2.0, "distance_weight": 1.0},
        "decode": {"fg_threshold": 0.5, "min_score": 0.1},
        "optim": {"epochs": args.epochs, "steps_per_epoch": args.steps, "batch_size": args.batch_size,
                  "lr": 0.002, "warmup_steps": 20},
        "seed": 0,
        "device": "cpu",
    }


def score(model, scenes, groups: int = 1) -> tuple[dict, dict, list[float]]:
    """Predict each test scene with the tiled pipeline and score all scenes together.

    Returns (metrics, car metrics, AP_small of each of ``groups`` disjoint equal groups of the scenes)."""
    items = [(scene.instances, scene.classes, predict_array(scene.image, model, tile_size_px=256)) for scene in scenes]
    evaluation = evaluate_images(items)
    per_class = {str(k): v for k, v in evaluation.per_class.items()}
    size = len(items) // groups
    by_group = [evaluate_images(items[g * size:(g + 1) * size]).metrics["AP_small"] for g in range(groups)] if groups > 1 else []
    return evaluation.metrics, per_class.get("1", {}), by_group


def ms_per_tile(model, tile: int = 256, repeats: int = 5) -> float:
    x = torch.randn(1, model.config.in_channels, tile, tile)
    with torch.inference_mode():
        model(x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return (time.perf_counter() - t0) / repeats * 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/ablation", help="folder for the runs and the table")
    parser.add_argument("--encoder", default="tu-mobilenetv3_small_100", help="encoder of every row")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per row")
    parser.add_argument("--steps", type=int, default=40, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=8, help="crops per step")
    parser.add_argument("--crop", type=int, default=192, help="training crop side, px")
    parser.add_argument("--train-scenes", type=int, default=16, help="640 px training scenes")
    parser.add_argument("--val-scenes", type=int, default=2,
                        help="384 px validation scenes for checkpoint selection and decode tuning (0: none)")
    parser.add_argument("--test-scenes", type=int, default=64,
                        help="held-out 512 px test scenes (a few scenes hold too few buildings for a stable "
                             "class-mean AP: 4 scenes gave the opposite sign of 64)")
    parser.add_argument("--groups", type=int, default=4,
                        help="also score AP_small on this many disjoint equal groups of the test scenes (the "
                             "spread between groups shows how much of a difference is test-set noise)")
    parser.add_argument("--rows", default=None, help="comma-separated subset of row numbers (1-5)")
    parser.add_argument("--score-only", action="store_true",
                        help="do not train: re-tune the decode settings of the runs already in --out (with the "
                             "current tune-decode) and score them")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    test_scenes = [make_remote_sensing_scene(512, 512, seed=50_000 + i, pixel_size_m=0.4) for i in range(args.test_scenes)]
    chosen = list(ROWS.items())
    if args.rows:
        chosen = [chosen[int(k) - 1] for k in args.rows.split(",")]
    results = {}
    for name, change in chosen:
        config = base_config(args)
        config["model"].update(change)
        slug = name.split(" (")[0].replace("+ ", "plus-").replace(" ", "-")
        config_path = out / f"{slug}.yaml"
        config_path.write_text(yaml.safe_dump(config))
        if args.score_only:
            history = [json.loads(line) for line in (out / slug / "history.jsonl").read_text().splitlines()]
            train_s = sum(h["seconds"] for h in history)  # training epochs only (no validation, no tuning)
            train_config = load_train_config(config_path)
            val_images = [im for spec in train_config.data["val"] for im in load_source(spec, train_config.source_dir)]
            checkpoint, _, _ = write_tuned_checkpoint(out / slug / "best.safetensors", val_images,
                                                      out / slug / "retuned.safetensors",
                                                      metric=train_config.select_metric)
            model = load_checkpoint(checkpoint)
            final_loss = history[-1]["loss_total"]
        else:
            t0 = time.perf_counter()
            run = train(load_train_config(config_path), out / slug, progress=False, overwrite=True)  # unfinished: redo
            train_s = time.perf_counter() - t0
            # best = selected on validation AP, decode thresholds tuned on validation (last without validation)
            model = load_checkpoint(run.best_checkpoint if args.val_scenes else run.last_checkpoint)
            final_loss = run.history[-1]["loss_total"]
        metrics, car, by_group = score(model, test_scenes, args.groups)
        results[name] = {**{k: metrics.get(k) for k in ("AP", "AP50", "AP_small", "boundary_AP", "F1",
                                                         "count_error_relative", "count_gt", "count_pred")},
                         **{f"car_{k}": car.get(k) for k in ("AP", "AP50", "F1", "count_gt")},
                         "AP_small_by_group": by_group, "params_M": count_parameters(model) / 1e6, "ms_per_tile": ms_per_tile(model),
                         "train_s": train_s, "final_loss": final_loss,
                         "decode": (model.config.training or {}).get("decode")}
        print(name, json.dumps(results[name]), flush=True)
    header = ("| row | AP | AP50 | AP_small | Boundary AP | F1@0.5 | count error | car AP | car AP50 | car F1@0.5 "
              "| params | ms/256² tile | train s |")
    lines = [header, "|" + " --- |" * 13]
    for name, r in results.items():
        f = lambda v: "n/a" if v is None else f"{100 * v:.1f}"  # noqa: E731
        lines.append(f"| {name} | {f(r['AP'])} | {f(r['AP50'])} | {f(r['AP_small'])} | {f(r['boundary_AP'])} | "
                     f"{f(r['F1'])} | {f(r['count_error_relative'])} % | {f(r['car_AP'])} | {f(r['car_AP50'])} | "
                     f"{f(r['car_F1'])} | {r['params_M']:.2f} M | "
                     f"{r['ms_per_tile']:.0f} | {r['train_s']:.0f} |")
    if args.groups > 1:
        base = next(iter(results.values()))["AP_small_by_group"]
        lines += ["", f"AP_small on {args.groups} disjoint groups of {args.test_scenes // args.groups} test scenes "
                  f"(difference to the first row):", "",
                  "| row | " + " | ".join(f"group {g + 1}" for g in range(args.groups)) + " |",
                  "|" + " --- |" * (args.groups + 1)]
        for name, r in results.items():
            cells = [f"{100 * v:.1f} ({100 * (v - b):+.1f})" for v, b in zip(r["AP_small_by_group"], base)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    settings = {k: v for k, v in vars(args).items()}
    (out / ("ablation-rescored.md" if args.score_only else "ablation.md")).write_text(f"command: {' '.join(sys.argv)}\nsettings: {settings}\n\n{table}\n")
    (out / ("ablation-rescored.json" if args.score_only else "ablation.json")).write_text(json.dumps({"settings": settings, "rows": results}, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
