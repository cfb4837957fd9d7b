"""Decoding time per tile vs the model's forward time on the same tile (goal: decode <= 10 % of forward).

    .venv/bin/python benchmarks/bench_decode.py [--tile 512] [--encoder resnet18] [--repeats 5] [--threads N]

Decodes three kinds of head maps for one tile:

- ``gt-clean``: exact head maps of a dense synthetic scene (hundreds of 2-30 px objects, many touching),
  from ``encode_targets``: every vote lands on its centre.
- ``gt-noisy``: the same maps with the errors a trained model makes (vector error growing with the distance
  spanned, softened probabilities, noisy distance map): exercises candidate merging and watershed fill.
- ``untrained-model``: the real output of a randomly initialised model on a random image: dense, chaotic
  votes, a worst case for the decoder.
- ``trained-model`` (with ``--model``): a shipped model or checkpoint on a tile of a held-out synthetic aerial
  scene (0.4 m/px, as dense as the training scenes), decoded with the model's own (tuned) settings; the
  forward times are then this model's. This is the working condition.

    .venv/bin/python benchmarks/bench_decode.py --model remote-sensing --tile 256 --threads 1

Forward time is the model's ``forward`` in ``torch.inference_mode`` on the same tile size, per tile, at
batch 1 and batch 4 (the pipeline predicts in batches), measured in the same run, interleaved with the
decoding rounds; every number is the best of ``--repeats`` rounds (robust to other load on the machine).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from skimage.draw import ellipse, polygon

from smallseg.decode import DecodeConfig, decode_batch, decode_instances
from smallseg.models import build_model
from smallseg.train.targets import encode_targets


def dense_scene(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rotated rectangles and ellipses on a jittered grid, radii 1-14 px, touching where they meet."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((size, size), np.int32)
    cls = np.zeros_like(lab)
    next_id = 1
    step = 16
    for cy in range(step // 2, size, step):
        for cx in range(step // 2, size, step):
            a = rng.choice([1.0, 1.5, 3.0, 5.0, 8.0, 12.0], p=[0.2, 0.2, 0.25, 0.2, 0.1, 0.05])
            b = max(1.0, a * rng.uniform(0.4, 1.0))
            y, x = cy + rng.uniform(-4, 4), cx + rng.uniform(-4, 4)
            angle = rng.uniform(0, np.pi)
            if rng.random() < 0.5:
                rr, cc = ellipse(y, x, a, b, lab.shape, rotation=angle)
            else:
                ca, sa = np.cos(angle), np.sin(angle)
                corners = np.array([[-a, -b], [-a, b], [a, b], [a, -b]])
                py = y + corners[:, 0] * ca - corners[:, 1] * sa
                px = x + corners[:, 0] * sa + corners[:, 1] * ca
                rr, cc = polygon(py, px, lab.shape)
            free = lab[rr, cc] == 0
            if free.sum() < 2:
                continue
            lab[rr[free], cc[free]] = next_id
            cls[rr[free], cc[free]] = rng.integers(1, 4)
            next_id += 1
    return lab, cls


def head_maps(lab, cls, max_distance_px, rng=None):
    t = encode_targets(lab, cls, max_distance_px)
    probs = np.stack([(t["semantic"] == c) for c in range(4)]).astype(np.float32)
    vectors, dist = t["centroid"], t["distance"]
    if rng is not None:
        probs = probs * 0.8 + 0.05
        span = np.hypot(vectors[0], vectors[1])[None]
        vectors = (vectors + rng.normal(0, 1, vectors.shape) * (0.1 * span + 0.3 / max_distance_px)).astype(np.float32)
        dist = np.clip(dist + rng.normal(0, 0.05, dist.shape), 0, 1).astype(np.float32)
    return probs, vectors, dist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=512, help="tile edge, px")
    parser.add_argument("--encoder", default="resnet18", help="smp encoder of the model whose forward is timed")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (best is reported)")
    parser.add_argument("--model", default=None,
                        help="built-in model name or checkpoint: time its forward and decode its real output "
                             "(default: an untrained --encoder model)")
    parser.add_argument(
        "--threads", type=int, default=0,
        help="torch threads for the forward pass (0 = torch's default); decoding runs on one thread "
             "(numpy and numba loops)",
    )
    parser.add_argument(
        "--decode-threads", default="",
        help="also time decoding throughput with these numbers of threads, comma list (e.g. 1,2): the "
             "pipelines' --decode-workers; tiles are decoded in parallel where the decoder releases the GIL",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    if args.model:
        from smallseg.models.registry import load_model
        from smallseg.pipeline.array import decode_config_for

        model = load_model(args.model).eval()
        args.encoder = model.config.encoder_name
    else:
        model = build_model(args.encoder, classes=3).eval()
    max_d = model.config.max_distance_px
    cfg = DecodeConfig(max_distance_px=max_d)
    size = args.tile

    channels = model.config.in_channels
    with torch.inference_mode():
        x1 = torch.randn(1, channels, size, size)
        x4 = torch.randn(4, channels, size, size)
        untrained = model(x1)
    if args.model:
        from smallseg.data.remote_sensing import make_remote_sensing_scene

        scene = make_remote_sensing_scene(4 * size, 4 * size, seed=60_000, pixel_size_m=0.4)
        tiles = [scene.image[:, y:y + size, x:x + size] for y in range(0, 4 * size, size)
                 for x in range(0, 4 * size, size)]
        x4 = torch.from_numpy(np.stack([model.config.normalise(t) for t in tiles[:4]]))
        x1 = x4[:1]
        with torch.inference_mode():
            real = model(torch.from_numpy(np.stack([model.config.normalise(t) for t in tiles])))
        real_cfg = decode_config_for(model)

    lab, cls = dense_scene(size)
    n_objects = len(np.unique(lab)) - 1
    clean = head_maps(lab, cls, max_d)
    noisy = head_maps(lab, cls, max_d, rng=np.random.default_rng(1))
    cases = {
        "gt-clean": lambda: decode_instances(*clean, **vars(cfg)),
        "gt-noisy": lambda: decode_instances(*noisy, **vars(cfg)),
        "untrained-model": lambda: decode_batch(untrained, cfg),
    }
    found = {"gt-clean": len(cases["gt-clean"]()), "gt-noisy": len(cases["gt-noisy"]()),
             "untrained-model": len(cases["untrained-model"]()[0])}
    if args.model:
        # 16 tiles of the scene decoded one by one: time per tile = total / 16
        cases["trained-model"] = lambda: [decode_batch({k: v[i:i + 1] for k, v in real.items()}, real_cfg)
                                          for i in range(len(tiles))]
        found["trained-model"] = sum(len(r[0]) for r in cases["trained-model"]()) / len(tiles)

    def forward1():
        with torch.inference_mode():
            model(x1)

    def forward4():
        with torch.inference_mode():
            model(x4)

    # Interleaved rounds, best of each: forward and decode see the same machine load (CPU shared).
    timed = {"forward1": forward1, "forward4": forward4, **cases}
    best = {name: float("inf") for name in timed}
    for fn in timed.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in timed.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    fwd1, fwd4 = best["forward1"], best["forward4"] / 4
    if "trained-model" in best:
        best["trained-model"] /= len(tiles)

    print(f"tile {size}x{size}, encoder {args.encoder} (output stride {model.config.encoder_output_stride}, "
          f"LFE {model.config.lfe}), torch threads {torch.get_num_threads()}, scene objects {n_objects}")
    print(f"forward per tile: batch 1 {fwd1 * 1000:.0f} ms, batch 4 {fwd4 * 1000:.0f} ms")
    print()
    print("| head maps | objects decoded | decode ms | / forward (batch 1) | / forward (batch 4 per tile) |")
    print("| --- | --- | --- | --- | --- |")
    for name in cases:
        t = best[name]
        print(f"| {name} | {found[name]:g} | {t * 1000:.1f} | {t / fwd1:.1%} | {t / fwd4:.1%} |")

    if args.decode_threads:
        from concurrent.futures import ThreadPoolExecutor

        # Throughput of decoding many tiles in batches of 4 by a pool of threads, as the pipelines do.
        name = "trained-model" if args.model else "gt-noisy"
        if args.model:
            batches = [{k: v[i:i + 4] for k, v in real.items()} for i in range(0, len(tiles), 4)] * 4
            one_batch = lambda b: decode_batch(b, real_cfg)  # noqa: E731
        else:
            batches = [None] * 16
            one_batch = lambda b: [cases["gt-noisy"]() for _ in range(4)]  # noqa: E731
        print()
        print(f"Decoding throughput ({name}, {4 * len(batches)} tiles in batches of 4, best of {args.repeats}):")
        print()
        print("| decode threads | ms per tile | speed-up |")
        print("| --- | --- | --- |")
        base = None
        for n in (int(t) for t in args.decode_threads.split(",") if t.strip()):
            per_tile = float("inf")
            with ThreadPoolExecutor(max_workers=n) as pool:
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    list(pool.map(one_batch, batches))
                    per_tile = min(per_tile, (time.perf_counter() - t0) / (4 * len(batches)))
            base = base or per_tile
            print(f"| {n} | {per_tile * 1000:.2f} | {base / per_tile:.2f}x |")


if __name__ == "__main__":
    main()
