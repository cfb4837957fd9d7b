"""Series per minute of ``smallseg dicom-batch`` and the share of wall time spent outside the model's forward.

    .venv/bin/python benchmarks/bench_dicom_batch.py [--series 5] [--slices 32] [--size 256] [--encoder resnet18]
        [--threads N]

Writes ``--series`` synthetic chest-CT DICOM series (``smallseg.data.medical``: lungs, vessels, nodules; one
file per slice) of ``--slices`` x ``--size`` x ``--size`` voxels, saves a randomly initialised model of the
default architecture (``build_model(encoder, in_channels=1, classes=1)``: output stride 16, falling LFE, three
heads) as a checkpoint, and runs :func:`smallseg.pipeline.dicom_batch.run_dicom_batch` on the tree exactly as the
CLI does (model loaded from the file, summary, done markers, NIfTI + CSV outputs).

Measured in the same run:

- ``forward``: wall time inside ``model.forward`` (forward pre/post hooks), the floor of any pipeline;
- ``decode``: ``decode_outputs`` (centroid voting) and ``read``: ``read_volume``, ``write``: NIfTI + CSV writers,
  timed by wrapping those functions where the pipeline looks them up;
- ``other``: the rest (intensity mapping, tiling, stitching, 3-D linking, measuring, discovery, summary).

The weights are random, so the decoder sees a worst case (dense chaotic votes; see RESULTS.md "Decoding time");
a trained model's maps decode faster. Goal: everything but ``forward`` under 15 % of the wall time.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import time
from pathlib import Path

import torch

import smallseg.pipeline.array as array_mod
import smallseg.pipeline.dicom_batch as batch_mod
from smallseg.data.medical import make_ct_volume, write_dicom_series
from smallseg.io.tables import VolumeObjects
from smallseg.models import build_model, load_checkpoint, save_checkpoint


def timed(fn, bucket: dict, key: str):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            bucket[key] = bucket.get(key, 0.0) + time.perf_counter() - t0
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=5, help="number of series (default 5)")
    parser.add_argument("--slices", type=int, default=32, help="slices per series (default 32)")
    parser.add_argument("--size", type=int, default=256, help="slice side in voxels (default 256)")
    parser.add_argument("--encoder", default="resnet18", help="model encoder (default resnet18)")
    parser.add_argument("--model", default=None,
                        help="a trained model (built-in name such as 'medical', or checkpoint path) instead of a "
                             "randomly initialised --encoder model")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default 4)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's). On a machine shared with other jobs, 1 thread "
                             "avoids OpenMP spin-waiting, which can make a 2-thread forward 10x slower")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="bench_dicom_batch_"))
    try:
        root = work / "in"
        for s in range(args.series):
            ct = make_ct_volume((args.size, args.size, args.slices), seed=100 + s)
            write_dicom_series(ct.image, root / f"case{s:02d}", seed=100 + s)
        torch.manual_seed(0)
        if args.model:
            from smallseg.models.registry import load_model

            model = load_model(args.model)
            args.encoder = f"{model.config.encoder_name} (trained: {args.model})"
        else:
            model = build_model(args.encoder, in_channels=1, classes=1, class_names=["nodule"])
            model = load_checkpoint(save_checkpoint(model, work / "model.safetensors"))

        times: dict[str, float] = {}
        start: list[float] = []
        model.register_forward_pre_hook(lambda m, a: start.append(time.perf_counter()))
        model.register_forward_hook(
            lambda m, a, o: times.__setitem__("forward", times.get("forward", 0.0) + time.perf_counter() - start.pop()))
        patches = [(array_mod, "decode_outputs", "decode"), (batch_mod, "read_volume", "read"),
                   (batch_mod, "write_labels_nifti", "write"), (VolumeObjects, "write_csv", "write")]
        originals = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
        for mod, name, key in patches:
            setattr(mod, name, timed(getattr(mod, name), times, key))
        try:
            t0 = time.perf_counter()
            result = batch_mod.run_dicom_batch(root, work / "out", model, progress=False, batch_size=args.batch_size)
            wall = time.perf_counter() - t0
        finally:
            for mod, name, fn in originals:
                setattr(mod, name, fn)
        assert result.count("ok") == args.series, [r.message for r in result.results]

        n_slices = args.series * args.slices
        other = wall - sum(times.get(k, 0.0) for k in ("forward", "decode", "read", "write"))
        print(f"{args.series} series of {args.slices} x {args.size} x {args.size}, encoder {args.encoder}, "
              f"{torch.get_num_threads()} threads, {sum(r.objects for r in result.results)} objects found")
        print()
        print("| stage | seconds | ms / slice | share of wall time |")
        print("| --- | --- | --- | --- |")
        for key in ("forward", "decode", "read", "write"):
            v = times.get(key, 0.0)
            print(f"| {key} | {v:.2f} | {1000 * v / n_slices:.1f} | {100 * v / wall:.1f}% |")
        print(f"| other | {other:.2f} | {1000 * other / n_slices:.1f} | {100 * other / wall:.1f}% |")
        print(f"| **total** | {wall:.2f} | {1000 * wall / n_slices:.1f} | 100% |")
        print()
        outside = wall - times.get("forward", 0.0)
        print(f"series per minute: {60 * args.series / wall:.2f}  (forward-only floor: "
              f"{60 * args.series / times['forward']:.2f})")
        print(f"time outside the model forward: {100 * outside / wall:.1f}% (goal < 15%); "
              f"without decoding: {100 * (outside - times.get('decode', 0.0)) / wall:.1f}%")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
