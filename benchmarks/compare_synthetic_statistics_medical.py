"""Real vs synthetic fluorescence nuclei: image and object statistics side by side.

Real sets (nobody here made them): the DSB2018 image in ``tests/data`` and, when present, the
``real-nuclei-dev`` images (BBBC007, laptrack) in ``../shared/data``. Synthetic sets: the nuclei generator
in its ``classic`` style (the training data of the shipped medical model) and its ``realistic`` style
(configs/microscopy-v2.yaml), at the diameters the training configs use.

Every image is first mapped as inference maps microscopy (the 1-99.5 percentile preset of
``MEDICAL_PRESETS``); statistics are medians over the images of a set, except the pooled quantiles
(intensity, area, nearest-neighbour distance), which pool the pixels / objects of the set.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compare_synthetic_statistics_medical.py [--images 6]

Columns:
  q01..q99       intensity quantiles after the preset (0-1)
  bg, fg         median background (>= 3 px from any nucleus) and nucleus intensity
  bg_sd          background standard deviation (noise + texture + illumination)
  fg/bg spread   per-nucleus mean intensity above background, 90th / 10th percentile ratio
  tex            within-nucleus texture: median over nuclei of std / mean (1 px eroded)
  edge           boundary sharpness: median |gradient| on nucleus outlines / (fg - bg), per px
  area p10/50/90 nucleus areas, px
  dens           nuclei per 10,000 px; fg% foreground share
  nn p10/50      centroid nearest-neighbour distance in units of the median equivalent diameter
  touch          share of nuclei sharing an outline with another nucleus
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage
from scipy.spatial import cKDTree

from smallseg.io.medical import IntensityPreset
from smallseg.train.data import MEDICAL_PRESETS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "real-nuclei-dev"


def image_statistics(image: np.ndarray, labels: np.ndarray) -> dict:
    """Statistics of one (H, W) image (any dtype) with its (H, W) instance labels (0 = background)."""
    x = IntensityPreset.from_dict(MEDICAL_PRESETS["microscopy"]).apply(image).astype(np.float64)
    labels = labels.astype(np.int64)
    fg = labels > 0
    bg = ~ndimage.binary_dilation(fg, iterations=3)
    bg_med = float(np.median(x[bg])) if bg.any() else float("nan")
    fg_med = float(np.median(x[fg])) if fg.any() else float("nan")
    ids = np.unique(labels[fg])
    n = len(ids)
    means = ndimage.mean(x, labels, ids) - bg_med
    eroded = ndimage.grey_erosion(labels, size=3) == labels
    inner = np.where(eroded, labels, 0)
    m_in = ndimage.mean(x, inner, ids)
    sd_in = ndimage.standard_deviation(x, inner, ids)
    tex = np.nanmedian(sd_in / np.maximum(m_in, 1e-6))
    gy, gx = np.gradient(ndimage.gaussian_filter(x, 0.7))
    outline = fg & (ndimage.grey_erosion(labels, size=3) != labels)
    edge = float(np.median(np.hypot(gy, gx)[outline]) / max(fg_med - bg_med, 1e-6))
    areas = np.bincount(labels.ravel())[ids]
    centres = np.array(ndimage.center_of_mass(np.ones_like(x), labels, ids)) if n else np.zeros((0, 2))
    diam = 2 * np.sqrt(np.median(areas) / np.pi) if n else float("nan")
    nn = cKDTree(centres).query(centres, k=2)[0][:, 1] / diam if n > 1 else np.array([np.nan])
    touching = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        both = (a > 0) & (b > 0) & (a != b)
        touching |= set(a[both].tolist()) | set(b[both].tolist())
    p10, p90 = np.percentile(means, [10, 90]) if n else (np.nan, np.nan)
    return {
        "pixels": x.ravel()[:: max(x.size // 50_000, 1)], "areas": areas, "nn": nn,
        "bg": bg_med, "fg": fg_med, "bg_sd": float(x[bg].std()) if bg.any() else float("nan"),
        "spread": float(p90 / max(p10, 1e-3)), "tex": float(tex), "edge": edge,
        "dens": 1e4 * n / labels.size, "fgpct": 100 * float(fg.mean()), "touch": len(touching) / max(n, 1),
    }


def set_statistics(pairs) -> dict:
    """Pool / median the per-image statistics of ``pairs`` (iterable of (image, labels))."""
    with np.errstate(invalid="ignore", divide="ignore"):  # nuclei too small to erode give NaN texture (skipped)
        rows = [image_statistics(img, lab) for img, lab in pairs]
    pix = np.concatenate([r["pixels"] for r in rows])
    areas = np.concatenate([r["areas"] for r in rows])
    nn = np.concatenate([r["nn"] for r in rows])
    out = {f"q{q:02d}": float(np.percentile(pix, q)) for q in (1, 10, 50, 90, 99)}
    for key in ("bg", "fg", "bg_sd", "spread", "tex", "edge", "dens", "fgpct", "touch"):
        out[key] = float(np.nanmedian([r[key] for r in rows]))
    out.update({f"area p{q}": float(np.percentile(areas, q)) for q in (10, 50, 90)})
    out.update({f"nn p{q}": float(np.nanpercentile(nn, q)) for q in (10, 50)})
    out["images"] = len(rows)
    out["nuclei"] = len(areas)
    return out


def real_sets() -> list[tuple[str, list]]:
    def pairs(pattern):
        out = []
        for image_path in sorted(glob.glob(pattern)):
            labels_path = image_path.replace("_image.tif", "_labels.tif")
            out.append((tifffile.imread(image_path), tifffile.imread(labels_path)))
        return out

    sets = [("REAL DSB2018 (tests/data)", pairs(str(ROOT / "tests" / "data" / "dsb2018_nuclei_image.tif")))]
    for name in ("bbbc007", "laptrack"):
        found = pairs(str(SHARED / name / "*_image.tif"))
        if found:
            sets.append((f"REAL {name} (shared)", found))
    return sets


def synthetic_sets(n_images: int, styles: list[str]) -> list[tuple[str, list]]:
    from smallseg.data.microscopy import make_nuclei_image

    sets = []
    for style in styles:
        for diameter, extra in ((10, {"dtype": "uint8"}), (16, {}), (24, {})):
            items = [make_nuclei_image(256, 256, seed=80_000 + i, mean_diameter_px=diameter, style=style, **extra)
                     for i in range(n_images)]
            sets.append((f"synthetic {style} {diameter} px", [(it.image, it.labels) for it in items]))
    return sets


COLUMNS = ["q01", "q10", "q50", "q90", "q99", "bg", "fg", "bg_sd", "spread", "tex", "edge", "area p10",
           "area p50", "area p90", "dens", "fgpct", "nn p10", "nn p50", "touch", "nuclei"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6, help="synthetic images per set (default 6)")
    parser.add_argument("--styles", default="classic,realistic", help="comma list of generator styles")
    args = parser.parse_args(argv)
    sets = real_sets() + synthetic_sets(args.images, [s for s in args.styles.split(",") if s])
    print("| set | " + " | ".join(COLUMNS) + " |")
    print("|" + " --- |" * (len(COLUMNS) + 1))
    for name, pairs in sets:
        s = set_statistics(pairs)
        cells = [f"{s[c]:.0f}" if c.startswith("area") or c == "nuclei" else f"{s[c]:.2f}" for c in COLUMNS]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
