"""Benchmark `smallseg tile-and-predict` (:func:`smallseg.predict_geotiff`).

Two measurements, each printing a Markdown table:

``time``: end-to-end time of ``predict_geotiff`` on a synthetic GeoTIFF scene against the bare model forward
time on the same pixels, in the same run:

- *forward inside the run*: wall time spent in ``model.forward`` during the end-to-end run (forward hooks);
- *bare forward, same tiles*: the same number of tile batches, same shapes, pre-normalised in memory, nothing
  else timed (measured before and after the end-to-end run; the mean is used);
- *bare forward, scene once*: the scene cut into non-overlapping tiles of the same size: the floor for any
  tiler (shows what the overlap costs).

``memory``: peak resident memory (``ru_maxrss``) of a fresh process running ``predict_geotiff`` for each
scene size, and its baseline (after imports, model load and one warm-up forward of one batch) - the
difference is what the streaming pipeline adds. GDAL_CACHEMAX is 64 MB, as the CLI sets it.

Scenes come from :func:`smallseg.data.remote_sensing.write_remote_sensing_scene` (windowed, cached in
``--work``). The model is a checkpoint (``--model``) or, by default, an untrained model of the default
remote-sensing architecture (configs/remote-sensing.yaml: tu-mobilenetv3_small_100, output stride 16,
FPN 64/64, falling LFE, three heads, max_distance_px 32). Run with ``OMP_NUM_THREADS=1`` on a shared machine.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_tile_and_predict.py time --size 4096 --tile 512
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_tile_and_predict.py memory --sizes 4096 16384
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def default_model():
    from smallseg.models import build_model

    torch.manual_seed(0)
    return build_model(
        "tu-mobilenetv3_small_100", classes=2, encoder_output_stride=16, decoder_pyramid_channels=64,
        decoder_segmentation_channels=64, refine_channels=(32, 16), lfe="falling", max_distance_px=32,
        tile_size_px=256, input_scale=1 / 255, norm_mean=[0.48, 0.49, 0.44], norm_std=[0.2, 0.2, 0.2],
        class_names=["car", "building"],
    ).eval()


def load(model_arg: str | None):
    from smallseg.models.registry import load_model

    if model_arg:
        return load_model(model_arg), model_arg  # a built-in name (remote-sensing) or a checkpoint path
    return default_model(), "untrained, default remote-sensing architecture"


def scene_path(work: Path, size: int, width: int | None = None) -> Path:
    from smallseg.data.remote_sensing import write_remote_sensing_scene

    width = width or size
    stem = work / (f"scene{size}" if width == size else f"scene{size}x{width}")
    image = Path(f"{stem}_image.tif")
    if not image.exists():
        t = time.perf_counter()
        write_remote_sensing_scene(stem, size, width, seed=11, pixel_size_m=0.4, window_px=1024)
        print(f"generated {image} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return image


class ForwardTimer:
    """Wall time spent inside ``model.forward`` (CPU: no synchronisation needed)."""

    def __init__(self, model):
        self.seconds = 0.0
        self.calls = 0
        self._t = None
        model.register_forward_pre_hook(self._pre)
        model.register_forward_hook(self._post)

    def _pre(self, module, args):
        self._t = time.perf_counter()

    def _post(self, module, args, output):
        self.seconds += time.perf_counter() - self._t
        self.calls += 1


def bare_forward(model, image_path: Path, grid, batch_size: int, tiles_per_row: list[int]) -> tuple[float, float]:
    """Forward passes over ``tiles_per_row[r]`` tiles of tile row r (real pixels, normalised beforehand).

    Returns (wall seconds, process CPU seconds) spent in the forward calls only.
    """
    from smallseg.io.geotiff import open_raster

    total = cpu = 0.0
    config = model.config
    with open_raster(image_path) as src, torch.inference_mode():
        for r, n in enumerate(tiles_per_row):
            if n == 0:
                continue
            band = src.read(grid.row_window(r))
            tiles = grid.tile_row(r)[:n]
            xs = [config.normalise(band[:, :, t.window.col_off:t.window.col_off + grid.tile_w]) for t in tiles]
            for start in range(0, n, batch_size):
                batch = torch.from_numpy(np.stack(xs[start:start + batch_size]))
                t, c = time.perf_counter(), time.process_time()
                model(batch)
                total += time.perf_counter() - t
                cpu += time.process_time() - c
    return total, cpu


def run_time(args) -> None:
    from smallseg.pipeline.array import decode_config_for, plan_tiling
    from smallseg.pipeline.geotiff import predict_geotiff
    from smallseg.tiling.grid import tile_windows

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    image = scene_path(work, args.size)
    model, model_name = load(args.model)
    plan = plan_tiling(model, args.tile, None, decode_config_for(model))
    grid = tile_windows(args.size, args.size, plan.tile_size_px, plan.overlap_px)
    same_tiles = [grid.n_cols] * grid.n_rows
    once = tile_windows(args.size, args.size, plan.tile_size_px, 0)
    once_tiles = [once.n_cols] * once.n_rows

    with torch.inference_mode():  # warm-up: first calls allocate
        model(torch.zeros(args.batch_size, model.config.in_channels, plan.tile_size_px, plan.tile_size_px))
    # Interleaved (bare, run, bare, run, ..., bare) so that load changes on a shared machine hit both alike.
    bares, bare_cpus, runs, run_cpus, inside, results = [], [], [], [], [], []
    timer = ForwardTimer(model)
    for rep in range(args.repeats):
        wall, cpu = bare_forward(model, image, grid, args.batch_size, same_tiles)
        bares.append(wall)
        bare_cpus.append(cpu)
        timer.seconds = 0.0
        t, c = time.perf_counter(), time.process_time()
        result = predict_geotiff(image, work / "out", model, tile_size_px=plan.tile_size_px,
                                 batch_size=args.batch_size, overwrite=True, progress=False)
        runs.append(time.perf_counter() - t)
        run_cpus.append(time.process_time() - c)
        inside.append(timer.seconds)
        results.append(result)
    wall, cpu = bare_forward(model, image, grid, args.batch_size, same_tiles)
    bares.append(wall)
    bare_cpus.append(cpu)
    bare_once, bare_once_cpu = bare_forward(model, image, once, args.batch_size, once_tiles)
    k = int(np.argmin(runs))  # the fastest run, with the forward time measured inside it
    e2e, forward_in_run = runs[k], inside[k]
    bare = (bares[k] + bares[k + 1]) / 2  # the bare passes just before and after that run
    bare_before, bare_after = bares[k], bares[k + 1]
    bare_cpu = (bare_cpus[k] + bare_cpus[k + 1]) / 2
    result = results[k]
    timings = result.run["timings_s"]
    mp = args.size * args.size / 1e6

    print(f"scene {args.size} x {args.size} ({mp:.1f} MP), model: {model_name}, tile {plan.tile_size_px}, "
          f"overlap {plan.overlap_px}, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
          f"{len(grid)} tiles ({grid.n_rows} x {grid.n_cols}), {result.n_objects} objects\n")
    print("runs (s): " + ", ".join(f"{v:.1f}" for v in runs) + "; forward inside them: "
          + ", ".join(f"{v:.1f}" for v in inside) + "; bare passes: " + ", ".join(f"{v:.1f}" for v in bares) + "\n")
    print("| measurement | seconds | end-to-end / this |")
    print("| --- | --- | --- |")
    print(f"| end-to-end predict_geotiff (all outputs; fastest of {args.repeats}) | {e2e:.1f} | 1.00 |")
    print(f"| forward inside the end-to-end run | {forward_in_run:.1f} | {e2e / forward_in_run:.2f} |")
    print(f"| bare forward, same tiles (before / after: {bare_before:.1f} / {bare_after:.1f}) | {bare:.1f} | "
          f"{e2e / bare:.2f} |")
    print(f"| bare forward, scene once ({len(once)} tiles, no overlap) | {bare_once:.1f} | {e2e / bare_once:.2f} |")
    print()
    print("CPU time of the process (all threads; what counts when every core is busy):\n")
    print("| measurement | CPU seconds | end-to-end / this |")
    print("| --- | --- | --- |")
    print(f"| end-to-end predict_geotiff | {run_cpus[k]:.1f} | 1.00 |")
    print(f"| bare forward, same tiles | {bare_cpu:.1f} | {run_cpus[k] / bare_cpu:.2f} |")
    print(f"| bare forward, scene once | {bare_once_cpu:.1f} | {run_cpus[k] / bare_once_cpu:.2f} |")
    print()
    print("Stages of the end-to-end run (seconds; predict = forward + decode + nodata masking):\n")
    print("| " + " | ".join(timings) + " |")
    print("| " + " | ".join("---" for _ in timings) + " |")
    print("| " + " | ".join(f"{v:.1f}" for v in timings.values()) + " |")
    print(f"\ndecode and the rest of predict_tile_row: {timings['predict'] - forward_in_run:.1f} s; "
          f"throughput end to end {mp / e2e:.2f} MP/s")


def run_memory_child(args) -> None:
    """One size in this process: prints a JSON line with the baseline and peak RSS (MB)."""
    os.environ.setdefault("GDAL_CACHEMAX", "64")  # as `smallseg tile-and-predict` sets it
    from smallseg.pipeline.array import decode_config_for, plan_tiling
    from smallseg.pipeline.geotiff import predict_geotiff

    image = scene_path(Path(args.work), args.size, args.width)
    model, _ = load(args.model)
    plan = plan_tiling(model, args.tile, None, decode_config_for(model))
    with torch.inference_mode():
        model(torch.zeros(args.batch_size, model.config.in_channels, plan.tile_size_px, plan.tile_size_px))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    result = predict_geotiff(image, Path(args.work) / f"out{args.size}", model, tile_size_px=plan.tile_size_px,
                             batch_size=args.batch_size, overwrite=True, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"size": args.size, "width": args.width or args.size, "baseline_mb": baseline, "peak_mb": peak,
                      "seconds": time.perf_counter() - t,
                      "objects": result.n_objects, "tiles": result.run["tiling"]["tiles"]}), flush=True)


def run_memory(args) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    widths = args.widths or args.sizes
    for size, width in zip(args.sizes, widths):
        scene_path(work, size, width)  # generate outside the measured process
        cmd = [sys.executable, __file__, "memory-child", "--size", str(size), "--width", str(width),
               "--work", str(work), "--batch-size", str(args.batch_size)]
        if args.tile:
            cmd += ["--tile", str(args.tile)]
        if args.model:
            cmd += ["--model", args.model]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr)
    print("| scene | tiles | objects | seconds | baseline RSS MB | peak RSS MB | added by the run MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['size']} x {r['width']} (rows x cols) | {r['tiles']} | {r['objects']} | {r['seconds']:.0f} | "
              f"{r['baseline_mb']:.0f} | {r['peak_mb']:.0f} | {r['peak_mb'] - r['baseline_mb']:.0f} |")
    first, last = rows[0], rows[-1]
    pixels = (last["size"] * last["width"]) / (first["size"] * first["width"])
    print(f"\npeak ratio last / first: {last['peak_mb'] / first['peak_mb']:.2f} "
          f"(scene pixels x{pixels:.0f}); added-by-run ratio "
          f"{(last['peak_mb'] - last['baseline_mb']) / max(first['peak_mb'] - first['baseline_mb'], 1e-9):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["time", "memory", "memory-child"])
    parser.add_argument("--size", type=int, default=4096, help="scene side in px (time mode)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384], help="scene sides (memory mode)")
    parser.add_argument("--widths", type=int, nargs="+", default=None,
                        help="scene widths for --sizes (memory mode; default: square scenes)")
    parser.add_argument("--width", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tile", type=int, default=None, help="tile side (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="end-to-end runs (time mode), interleaved with bare")
    parser.add_argument("--model", default=None,
                        help="built-in model name or checkpoint (default: untrained default architecture)")
    parser.add_argument("--work", default="/tmp/bench_tile_and_predict", help="scenes and outputs")
    args = parser.parse_args()
    {"time": run_time, "memory": run_memory, "memory-child": run_memory_child}[args.mode](args)


if __name__ == "__main__":
    main()
