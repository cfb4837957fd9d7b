"""Image statistics of real aerial scenes next to synthetic ones: are the synthetic worlds in the real range?

For each image: per-band intensity quantiles (1, 5, 25, 50, 75, 95, 99 %), the slope of the radially
averaged power spectrum of the grey image (log power vs log frequency, 1/64 to 1/4 cycles per pixel; natural
aerial images sit near -2 to -3, a smooth cartoon is steeper, white noise is 0), the share of spectral power
above 1/4 cycle per pixel (blur and noise), the mean absolute 1-px gradient, and, for synthetic scenes, the
objects per hectare by class.

Real scenes (nobody here made them): ``../shared/data/rasterio-cc0/cogeo.tif`` (0.6 m aerial, snowy forest and a
highway) and ``RGB.byte.tif`` (30 m Landsat, shown for reference only: outside the generator's 0.1-2 m).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compare_synthetic_statistics.py --scenes 4 --size 768 \\
        --quicklook /tmp/quicklooks

Prints one table row per image and, per group, the median over scenes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smallseg.data.remote_sensing import make_remote_sensing_scene  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "rasterio-cc0"
QUANTILES = (1, 5, 25, 50, 75, 95, 99)


def spectrum_stats(grey: np.ndarray, tile: int = 256) -> tuple[float, float]:
    """(spectral slope, high-frequency power share) of a (H, W) float image, medians over Hann tiles."""
    slopes, highs = [], []
    win = np.outer(np.hanning(tile), np.hanning(tile))
    fy = np.fft.fftfreq(tile)[:, None]
    fx = np.fft.fftfreq(tile)[None, :]
    f = np.hypot(fy, fx)
    band = (f >= 1 / 64) & (f <= 1 / 4)
    bins = np.logspace(np.log10(1 / 64), np.log10(1 / 4), 12)
    for y in range(0, grey.shape[0] - tile + 1, tile):
        for x in range(0, grey.shape[1] - tile + 1, tile):
            t = grey[y:y + tile, x:x + tile].astype(np.float64)
            if t.std() < 1e-6:
                continue
            p = np.abs(np.fft.fft2((t - t.mean()) * win)) ** 2
            idx = np.digitize(f[band], bins)
            radial = [(f[band][idx == i].mean(), p[band][idx == i].mean()) for i in range(1, len(bins))
                      if (idx == i).any()]
            fr, pr = np.array(radial).T
            slopes.append(np.polyfit(np.log(fr), np.log(pr), 1)[0])
            highs.append(p[f > 0.25].sum() / p[f > 0].sum())
    return float(np.median(slopes)), float(np.median(highs))


def image_stats(image: np.ndarray) -> dict:
    """image: (B, H, W) uint8."""
    grey = image[:3].astype(np.float32).mean(0)
    slope, high = spectrum_stats(grey)
    q = {b: np.percentile(image[b], QUANTILES) for b in range(min(3, image.shape[0]))}
    grad = float(np.abs(np.diff(grey, axis=1)).mean() + np.abs(np.diff(grey, axis=0)).mean()) / 2
    return {"q": q, "slope": slope, "high": high, "grad": grad}


def fmt_row(name: str, st: dict, density: str = "") -> str:
    qs = " | ".join("/".join(f"{v:.0f}" for v in st["q"][b][[1, 3, 5]]) for b in sorted(st["q"]))
    return (f"{name:34s} | {qs} | {st['slope']:6.2f} | {st['high']:.4f} | {st['grad']:5.1f} | {density}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=4, help="synthetic scenes per group")
    ap.add_argument("--size", type=int, default=768, help="synthetic scene side, px")
    ap.add_argument("--pixel-size-m", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=80_000)
    ap.add_argument("--quicklook", type=Path, default=None, help="folder for PNG quick-looks of every image")
    args = ap.parse_args(argv)
    import rasterio

    print("image | R p5/p50/p95 | G p5/p50/p95 | B p5/p50/p95 | spectral slope | power > 1/4 cyc/px | "
          "mean |grad| | objects / ha (car, building, tree) | ms")
    real = {}
    for name in ("cogeo.tif", "RGB.byte.tif"):
        path = REAL / name
        if not path.exists():
            print(f"{name}: not found at {path}")
            continue
        with rasterio.open(path) as src:
            img = src.read()
            valid = img[:3].any(0) if src.nodata is not None else None
        if valid is not None:  # Landsat collar: statistics of the valid pixels only
            ys, xs = np.nonzero(valid)
            img = img[:, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        real[name] = image_stats(img)
        print(fmt_row(f"real {name}", real[name]))
        if args.quicklook:
            _save(args.quicklook / f"real_{name}.png", img)
    groups = {
        "v1 (classic)": dict(world="v1"),
        "v2 auto": dict(world="v2"),
        "v2 forest winter": dict(world="v2", landscape="forest", season="winter"),
        "v2 rural summer": dict(world="v2", landscape="rural", season="summer"),
    }
    for group, kw in groups.items():
        rows = []
        for i in range(args.scenes):
            seed = args.seed + i
            t0 = time.perf_counter()
            s = make_remote_sensing_scene(args.size, args.size, seed=seed, pixel_size_m=args.pixel_size_m, **kw)
            ms = 1000 * (time.perf_counter() - t0)
            st = image_stats(s.image)
            ha = args.size * args.size * args.pixel_size_m ** 2 / 10_000
            counts = np.bincount(s.objects.class_id, minlength=4)[1:] / ha
            st["density"] = counts
            rows.append(st)
            print(fmt_row(f"{group} seed {seed}", st, " / ".join(f"{c:.0f}" for c in counts)) + f" | {ms:.0f}")
            if args.quicklook:
                _save(args.quicklook / f"{group.replace(' ', '_').replace('(', '').replace(')', '')}_{seed}.png",
                      s.image)
        med = {"q": {b: np.median([r["q"][b] for r in rows], 0) for b in rows[0]["q"]},
               "slope": float(np.median([r["slope"] for r in rows])),
               "high": float(np.median([r["high"] for r in rows])), "grad": float(np.median([r["grad"] for r in rows]))}
        dens = np.median([r["density"] for r in rows], 0)
        print(fmt_row(f"{group} MEDIAN", med, " / ".join(f"{c:.0f}" for c in dens)))
    return 0


def _save(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.moveaxis(image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, 0), 0, -1)
    Image.fromarray(np.ascontiguousarray(rgb)).save(path)


if __name__ == "__main__":
    raise SystemExit(main())
