"""Do predictions depend on where the tile seams fall? Matched fractions under shifts, and tiled vs whole.

For each held-out synthetic scene of a modality, the model predicts

- the scene, tiled as the pipeline does (``predict_array`` with the model's tile and overlap),
- the same scene cropped by ``s`` px at the top and left (every tile seam moves by ``s`` relative to the
  content) for each shift ``s``,
- the whole scene as one tile (no seams at all).

Objects of the reference prediction inside the common region (not touching its border, where the shifted
crop lacks context) are matched one to one to the other prediction's objects by mask IoU; the table gives
the fraction matched at IoU >= 0.5 and >= 0.9. A tile-independent, shift-stable model scores ~1.0 everywhere.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_shift_stability.py --scenes 3 --size 1280
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_shift_stability.py --modality nuclei --model medical

Prints one Markdown table per model: modality, comparison, objects compared, matched at 0.5 / 0.9.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from smallseg.data.remote_sensing import make_remote_sensing_scene
from smallseg.models.registry import load_model
from smallseg.pipeline.array import predict_array
from smallseg.train.data import synthetic_images


def matched_fractions(ref: np.ndarray, other: np.ndarray, thresholds=(0.5, 0.9)) -> tuple[int, list[float]]:
    """Fraction of ``ref``'s objects (not touching the border) whose best one-to-one partner in ``other`` has
    mask IoU >= each threshold. ``ref``, ``other``: (H, W) label images of the same region, 0 = background."""
    ref = ref.astype(np.int64)
    other = other.astype(np.int64)
    border = np.unique(np.concatenate([ref[0], ref[-1], ref[:, 0], ref[:, -1]]))
    ref_ids, ref_area = np.unique(ref[ref > 0], return_counts=True)
    keep = ~np.isin(ref_ids, border)
    n = int(keep.sum())
    if n == 0:
        return 0, [float("nan")] * len(thresholds)
    oth_ids, oth_area = np.unique(other[other > 0], return_counts=True)
    both = (ref > 0) & (other > 0)
    pair_key = ref[both] * (int(other.max()) + 1) + other[both]
    keys, inter = np.unique(pair_key, return_counts=True)
    a = keys // (int(other.max()) + 1)
    b = keys % (int(other.max()) + 1)
    area_a = ref_area[np.searchsorted(ref_ids, a)]
    area_b = oth_area[np.searchsorted(oth_ids, b)]
    iou = inter / (area_a + area_b - inter)
    # IoU > 0.5 pairs are unique on both sides; for 0.5 itself take the best partner of each ref object.
    best = {}
    for ai, bi, v in zip(a.tolist(), b.tolist(), iou.tolist()):
        if v > best.get(ai, (0.0, None))[0]:
            best[ai] = (v, bi)
    kept_ids = set(ref_ids[keep].tolist())
    fractions = [sum(1 for k in kept_ids if best.get(k, (0.0,))[0] >= t) / n for t in thresholds]
    return n, fractions


def scenes(modality: str, count: int, size: int, seed: int, model, world: str = "v1"):
    if modality == "remote-sensing":
        for i in range(count):
            gsd = (0.3, 0.4, 0.5)[i % 3]
            options = {} if world == "v1" else {"world": world}
            yield make_remote_sensing_scene(size, size, seed=seed + i, pixel_size_m=gsd, **options).image
    else:
        for im in synthetic_images(modality, count=count, size=size, seed=seed, class_id=1):
            image01 = im.image[..., 0]
            yield (image01 / np.float32(model.config.input_scale))[None]


def run(model_name: str, modality: str, count: int, size: int, shifts: list[int], seed: int, *,
        world: str = "v1", tile: int | None = None, overlap: int | None = None, tta: str | None = None) -> list[tuple]:
    model = load_model(model_name)
    rows = []
    totals: dict[str, list] = {}
    tiling = dict(tile_size_px=tile, overlap_px=overlap, tta=tta)
    for image in scenes(modality, count, size, seed, model, world):
        tiled = predict_array(image, model, **tiling).labels
        whole = _predict_whole(image, model, tta)
        comparisons = {"tiled vs whole scene": (tiled, whole)}
        for s in shifts:
            shifted = predict_array(np.ascontiguousarray(image[:, s:, s:]), model, **tiling).labels
            comparisons[f"shift {s} px"] = (tiled[s:, s:], shifted)
        for name, (ref, other) in comparisons.items():
            n, (f5, f9) = matched_fractions(ref, other)
            acc = totals.setdefault(name, [0, 0.0, 0.0])
            acc[0] += n
            acc[1] += f5 * n
            acc[2] += f9 * n
    for name, (n, m5, m9) in totals.items():
        rows.append((model_name, modality, name, n, m5 / max(n, 1), m9 / max(n, 1)))
    return rows


def context_report(model_name: str, modality: str, size: int, seed: int, world: str) -> None:
    """Print how far the model looks (models/receptive_field.py) and the tiling that follows for 1.3x."""
    from smallseg.models.receptive_field import context_radius_px, receptive_field_radius, tiling_for

    model = load_model(model_name).eval()
    image = next(iter(scenes(modality, 1, size, seed, model, world)))
    x = torch.from_numpy(model.config.normalise(image))
    t0 = time.perf_counter()
    rf = receptive_field_radius(model, size=min(size, 1024))
    with torch.no_grad():
        ctx = {tol: context_radius_px(model, x, tol=tol) for tol in (0.02, 0.005)}
    print(f"{model_name}: theoretical receptive-field radius {rf} px (input {min(size, 1024)}²); context radius "
          + ", ".join(f"{d} px at tol {tol}" for tol, d in ctx.items()) + f" ({time.perf_counter() - t0:.0f} s)")
    for tol, d in ctx.items():
        try:
            print(f"  tol {tol}: " + tiling_for(model, d, vote_error_px=4.0).describe())
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"  tol {tol}: {exc}")


def _predict_whole(image: np.ndarray, model, tta: str | None = None) -> np.ndarray:
    """The scene as a single tile (padded to the encoder's stride by the pipeline): no seams at all."""
    side = int(np.ceil(max(image.shape[1:]) / 32) * 32)
    return predict_array(image, model, tile_size_px=side, overlap_px=0, batch_size=1, tta=tta).labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="remote-sensing", help="shipped model name or checkpoint path")
    parser.add_argument("--modality", default="remote-sensing", choices=("remote-sensing", "nuclei", "ct"),
                        help="which held-out synthetic scenes to use")
    parser.add_argument("--scenes", type=int, default=3, help="scenes per modality")
    parser.add_argument("--size", type=int, default=1280, help="scene side in px")
    parser.add_argument("--shifts", default="32,100,128", help="comma-separated shifts in px")
    parser.add_argument("--seed", type=int, default=95_000, help="first seed (held out: above training seeds)")
    parser.add_argument("--world", default="v1", choices=("v1", "v2"), help="remote-sensing synthetic world")
    parser.add_argument("--tile", type=int, default=None, help="tile side (default: the model's)")
    parser.add_argument("--overlap", type=int, default=None, help="tile overlap (default: the pipeline's)")
    parser.add_argument("--tta", default=None, choices=("d4", "flips"), help="test-time augmentation")
    parser.add_argument("--context", action="store_true",
                        help="instead: the model's theoretical receptive-field radius and its measured context radius "
                             "(tol 0.02 and 0.005) on the first scene, and the tile/overlap these give for 1.3x")
    args = parser.parse_args()
    if args.context:
        context_report(args.model, args.modality, args.size, args.seed, args.world)
        return
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    rows = run(args.model, args.modality, args.scenes, args.size, [int(s) for s in args.shifts.split(",")], args.seed,
               world=args.world, tile=args.tile, overlap=args.overlap, tta=args.tta)
    print("| model | scenes | comparison | objects | matched IoU>=0.5 | matched IoU>=0.9 |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for model_name, modality, name, n, f5, f9 in rows:
        print(f"| {model_name} | {modality} {args.scenes} x {args.size}² | {name} | {n} | {f5:.3f} | {f9:.3f} |")
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
