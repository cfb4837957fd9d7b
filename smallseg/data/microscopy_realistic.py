"""The ``realistic`` style of the synthetic nuclei generator: fluorescence images that look like real ones.

Built by looking at, and measuring against, real DAPI/Hoechst images (the DSB2018 image in ``tests/data``,
BBBC007 and laptrack frames; ``benchmarks/compare_synthetic_statistics_medical.py`` prints the statistics
side by side). What the ``classic`` style lacked, and this one draws per image:

- sizes: equivalent radius log-normal (sigma 0.2) about the mean, eccentricity up to 2, stronger outline
  wobble; density between 0.5x and 1.5x the requested one when the count is left to the generator;
- clusters of 2-10 nuclei at 0.88-1.2 summed radii: some share an outline, many are separated by a
  1-3 px gap (real labels touch less often than the classic style's: 12-29 % vs 61 % of nuclei);
- brightness several-fold between nuclei (log-normal, sigma 0.2-0.45 per image); mitoses (4 %):
  small, bright, condensed and elongated (metaphase plates seen edge-on) or anaphase pairs of short
  parallel bars, each bar one nucleus;
- texture: fine chromatin grain, chromatin foci (bright spots), dark nucleoli, a brighter envelope rim,
  each with a per-image strength (smooth DSB-like to spotty BBBC007-like nuclei);
- optics: defocus blur varying over the field (a tilt ramp plus a slow random field, sigma 0.8-3 px),
  out-of-focus nuclei (labelled, blurred 2.5-5 px and dimmer), uneven illumination (vignetting and a
  gradient, multiplicative: it dims nuclei and background alike);
- background: offset, autofluorescence texture, cytoplasm glow around nuclei in some images, debris
  (bright specks and faint blobs, never labelled);
- camera: Poisson photon noise over 0.1-3x the requested photon level and Gaussian read noise over
  0.3-2x the requested one; sometimes the brightest nuclei saturate.

Relative intensity units: a typical in-focus nucleus is about 1. Everything is drawn from the generator's
one random stream, so equal arguments give identical images.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from smallseg.data.microscopy import _nucleus_crops

#: kinds of nuclei (the ``kinds`` array of :func:`place_nuclei`)
INTERPHASE, MITOTIC, ANAPHASE = 0, 1, 2
MITOSIS_FRACTION = 0.04


def place_nuclei(rng: np.random.Generator, height: int, width: int, r_mean: float, nuclei_count: int,
                 cluster_fraction: float, *, vary_density: bool = True) -> tuple[list, np.ndarray]:
    """Nucleus shapes for one image.

    Args:
        rng: the generator's random stream.
        height, width: image size, px.
        r_mean: typical nucleus radius, px.
        nuclei_count: how many nuclei to try to place (scaled by a per-image density factor of 0.5-1.5
            when ``vary_density``).
        cluster_fraction: share of nuclei placed in clusters.

    Returns:
        ``shapes``: list of ``(cy, cx, a, b, angle, harmonics, cluster)`` (px, radians; cluster -1 =
        isolated) as :func:`smallseg.data.microscopy.rasterise_shapes` takes them, and ``kinds``: (N,)
        int64 :data:`INTERPHASE` / :data:`MITOTIC` / :data:`ANAPHASE` per shape.
    """
    if vary_density:
        nuclei_count = max(1, int(round(nuclei_count * rng.uniform(0.5, 1.5))))
    shapes: list = []
    kinds: list[int] = []

    def new_shape(cy, cx, cluster, kind=INTERPHASE):
        r = r_mean * float(np.clip(math.exp(rng.normal(0, 0.2)), 0.55, 1.7))
        ecc = 1.0 + rng.gamma(2.0, 0.15)
        wobble = rng.uniform(0.5, 1.5)
        if kind == MITOTIC:  # condensed chromatin: small, often a bar (a metaphase plate seen edge-on)
            r *= rng.uniform(0.5, 0.75)
            ecc = rng.uniform(1.3, 3.5)
        elif kind == ANAPHASE:
            r *= rng.uniform(0.4, 0.55)
            ecc = rng.uniform(2.0, 4.0)
        ecc = min(ecc, 4.0)
        a, b = r * math.sqrt(ecc), r / math.sqrt(ecc)
        harmonics = [(k, wobble * rng.uniform(0, 0.08 / (k - 1)), rng.uniform(0, 2 * math.pi)) for k in range(2, 6)]
        return (cy, cx, a, b, rng.uniform(0, math.pi), harmonics, cluster)

    def reach(s):  # between the mean and the long semi-axis: elongated nuclei keep their distance too
        return 0.5 * (math.sqrt(s[2] * s[3]) + max(s[2], s[3]))

    # centres and reaches of the placed shapes, for a vectorised distance check (rows 0..len(shapes)-1)
    placed_at = np.zeros((max(4 * nuclei_count, 16), 3))

    def fits(s, margin):
        r_s = math.sqrt(s[2] * s[3])
        if not (0.3 * r_s < s[0] < height - 0.3 * r_s and 0.3 * r_s < s[1] < width - 0.3 * r_s):
            return False
        e = placed_at[:len(shapes)]
        return bool(np.all(np.hypot(e[:, 0] - s[0], e[:, 1] - s[1]) >= margin * (reach(s) + e[:, 2])))

    def add(new_shapes, kind_list):
        nonlocal placed_at
        if len(shapes) + len(new_shapes) > len(placed_at):
            placed_at = np.concatenate([placed_at, np.zeros_like(placed_at)])
        for s in new_shapes:
            placed_at[len(shapes)] = (s[0], s[1], reach(s))
            shapes.append(s)
        kinds.extend(kind_list)

    # mitoses first (rare, so they must not be crowded out): condensed ones and anaphase pairs
    n_mitoses = int(rng.binomial(nuclei_count, MITOSIS_FRACTION))
    for _ in range(n_mitoses):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        if rng.random() < 0.6:
            s = new_shape(cy, cx, -1, MITOTIC)
            if fits(s, 1.0):
                add([s], [MITOTIC])
            continue
        first = new_shape(cy, cx, -1, ANAPHASE)
        ang, gap = first[4], r_mean * rng.uniform(0.6, 1.3)  # daughters move apart across the bars
        dy, dx = gap * math.cos(ang), -gap * math.sin(ang)
        pair = [first[:0] + (cy + dy, cx + dx) + first[2:],
                new_shape(cy - dy, cx - dx, -1, ANAPHASE)[:4] + (ang + rng.normal(0, 0.15),) + first[5:]]
        if all(fits(p, 1.0) for p in pair) and math.hypot(2 * dy, 2 * dx) > pair[0][3] + pair[1][3] + 2:
            add(pair, [ANAPHASE, ANAPHASE])

    n_cluster = int(round(nuclei_count * cluster_fraction))
    cluster_id, placed, attempts = 0, 0, 0
    while placed < n_cluster and attempts < 50 * nuclei_count:
        attempts += 1
        size = int(min(2 + rng.geometric(0.3), 10))
        members = [new_shape(rng.uniform(0, height), rng.uniform(0, width), cluster_id)]
        for _ in range(size - 1):
            base = members[int(rng.integers(len(members)))]
            s = new_shape(0, 0, cluster_id)
            ang = rng.uniform(0, 2 * math.pi)
            # below 1: the two share an outline after the split; above: a gap of a few px
            d = rng.uniform(0.88, 1.2) * (math.sqrt(base[2] * base[3]) + math.sqrt(s[2] * s[3]))
            members.append((base[0] + d * math.sin(ang), base[1] + d * math.cos(ang)) + s[2:])
        # drop members that overlap a non-neighbour of their own cluster too deeply (no nucleus swallowed)
        kept: list = []
        for m in members:
            r_m = math.sqrt(m[2] * m[3])
            if all(math.hypot(m[0] - k[0], m[1] - k[1]) > 0.75 * (r_m + math.sqrt(k[2] * k[3])) for k in kept):
                kept.append(m)
        kept = [m for m in kept if fits(m, 1.05)]
        if len(kept) < 2:
            continue
        add(kept, [INTERPHASE] * len(kept))
        placed += len(kept)
        cluster_id += 1
    attempts = 0
    while len(shapes) < nuclei_count and attempts < 50 * nuclei_count:
        attempts += 1
        s = new_shape(rng.uniform(0, height), rng.uniform(0, width), -1)
        if fits(s, 1.15):
            add([s], [INTERPHASE])
    return shapes, np.asarray(kinds, np.int64)


def _unit_std(field: np.ndarray) -> np.ndarray:
    field -= field.mean()
    field /= max(float(field.std()), 1e-6)
    return field


def _smooth_noise(rng, shape, sigma) -> np.ndarray:
    """Gaussian-filtered white noise, zero mean and unit std, float32 (H, W).

    Wide fields (sigma > 3 px) are made on a grid ``sigma / 1.5`` times coarser and interpolated up: the
    same spectrum to the eye at a fraction of the cost of a wide kernel.
    """
    if sigma <= 3:
        return _unit_std(ndimage.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), sigma, mode="reflect"))
    step = sigma / 1.5
    coarse = (int(math.ceil(shape[0] / step)) + 3, int(math.ceil(shape[1] / step)) + 3)
    small = ndimage.gaussian_filter(rng.normal(0, 1, coarse).astype(np.float32), 1.5, mode="reflect")
    rows = np.linspace(1, 1 + (shape[0] - 1) / step, shape[0])
    cols = np.linspace(1, 1 + (shape[1] - 1) / step, shape[1])
    field = ndimage.map_coordinates(small, np.meshgrid(rows, cols, indexing="ij"), order=1)
    return _unit_std(field.astype(np.float32))


def _varying_blur(image: np.ndarray, sigma_map: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Blur with a per-pixel sigma: linear blend between ``image`` blurred at each of the sorted ``levels``.

    ``sigma_map`` (H, W) px must lie within ``[levels[0], levels[-1]]``.
    """
    stack = [ndimage.gaussian_filter(image, float(s)) for s in levels]
    pos = np.interp(sigma_map, levels, np.arange(len(levels))).astype(np.float32)
    lo = np.minimum(pos.astype(np.int64), len(levels) - 2)
    t = pos - lo
    out = np.zeros_like(image)
    for i in range(len(levels) - 1):
        sel = lo == i
        out[sel] = stack[i][sel] * (1 - t[sel]) + stack[i + 1][sel] * t[sel]
    return out


def render_nuclei(rng: np.random.Generator, labels: np.ndarray, shapes: list, kinds: np.ndarray,
                  out_of_focus_fraction: float, dtype: str, photons_per_unit: float,
                  read_noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the fluorescence image of labelled nuclei.

    Args:
        rng: the generator's random stream.
        labels: (H, W) uint16 ids 1..N from :func:`smallseg.data.microscopy.rasterise_shapes`.
        shapes: the N shapes of those ids, in id order.
        kinds: (N,) int64 kinds (:data:`INTERPHASE`, :data:`MITOTIC`, :data:`ANAPHASE`).
        out_of_focus_fraction: share of interphase nuclei rendered out of the focal plane.
        dtype: ``"uint16"`` (camera counts with offset 100) or ``"uint8"`` (scaled, sometimes saturated).
        photons_per_unit, read_noise: centres of the per-image photon level (photons per relative unit)
            and read noise (counts, std) ranges.

    Returns:
        ``(image, in_focus, brightness)``: (H, W) image of ``dtype``, (N,) bool, (N,) float64 relative
        brightness of each nucleus.
    """
    height, width = labels.shape
    n = len(shapes)
    shape2 = (height, width)
    r_mean = float(np.median([math.sqrt(s[2] * s[3]) for s in shapes])) if n else 8.0
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)

    # --- per-image look
    texture = rng.uniform(0.1, 0.45)         # fine chromatin grain
    foci = rng.uniform(0.2, 1.2)             # chromatin foci (bright spots)
    nucleoli = rng.uniform(0.0, 0.5)         # dark nucleoli
    rim = rng.uniform(0.0, 0.25)             # brighter nuclear envelope
    dome_power = rng.uniform(0.2, 1.0)       # how much brighter the middle is
    in_focus = rng.random(n) >= out_of_focus_fraction
    in_focus[kinds != INTERPHASE] = True
    brightness = np.exp(rng.normal(0, rng.uniform(0.2, 0.45), n))
    brightness[kinds != INTERPHASE] *= rng.uniform(1.8, 3.5, int((kinds != INTERPHASE).sum()))

    grain = _smooth_noise(rng, shape2, rng.uniform(0.7, 1.3))
    spots = ndimage.gaussian_filter(
        ((rng.random(shape2) < 1 / 12) * rng.exponential(1.0, shape2)).astype(np.float32), rng.uniform(0.7, 1.3))
    spots /= max(float(np.percentile(spots, 99)), 1e-6)
    holes = ndimage.gaussian_filter((rng.random(shape2) < 1 / max(6 * r_mean**2, 30)).astype(np.float32),
                                    max(0.15 * r_mean, 1.0))
    holes /= max(float(holes.max()), 1e-6)

    sharp = np.zeros(shape2, np.float32)
    defocused = np.zeros(shape2, np.float32)
    for k, sl, mask, rho in _nucleus_crops(labels, shapes, ys, xs):
        dome = np.clip(1 - rho**2, 0, 1) ** (0.5 * dome_power)
        if kinds[k] == INTERPHASE:
            value = (0.5 + 0.5 * dome + rim * (rho > 0.8)) * np.clip(
                1 + texture * grain[sl] + foci * spots[sl] - nucleoli * holes[sl], 0.15, None)
        else:  # condensed chromatin: bright, clumpy, flat
            value = (0.75 + 0.25 * dome) * np.clip(1 + 0.4 * grain[sl], 0.3, None)
        target = sharp if in_focus[k] else defocused
        target[sl][mask] = (brightness[k] * value * (1.0 if in_focus[k] else rng.uniform(0.35, 0.7)))[mask]

    # --- debris (never labelled): bright specks and faint blobs
    area = height * width
    debris = np.zeros(shape2, np.float32)
    n_specks = rng.poisson(area / rng.uniform(1500, 10000))
    sy, sx = rng.integers(0, height, n_specks), rng.integers(0, width, n_specks)
    debris[sy, sx] += rng.lognormal(0.0, 0.7, n_specks).astype(np.float32) * 2.0
    blobs = np.zeros(shape2, np.float32)
    n_blobs = rng.poisson(area / 15000)
    by, bx = rng.integers(0, height, n_blobs), rng.integers(0, width, n_blobs)
    blobs[by, bx] = rng.uniform(0.5, 3.0, n_blobs)
    debris += ndimage.gaussian_filter(blobs, rng.uniform(1.5, 4.0)) * rng.uniform(10, 40)

    # --- optics: defocus varying over the field (tilt + slow field), out-of-focus layer
    theta = rng.uniform(0, 2 * math.pi)
    ramp = (math.cos(theta) * (xs / width - 0.5) + math.sin(theta) * (ys / height - 0.5)) + 0.5
    slow = _smooth_noise(rng, shape2, min(height, width) / 5)
    focus = np.clip(0.6 * ramp + 0.25 * slow + 0.2, 0, 1)
    s_lo = rng.uniform(0.8, 1.6)
    s_hi = s_lo + rng.uniform(0.0, 1.4)
    levels = np.linspace(s_lo, s_hi + 1e-3, 3)
    in_plane = _varying_blur(sharp + debris, s_lo + (s_hi - s_lo) * focus, levels)
    out_plane = ndimage.gaussian_filter(defocused, rng.uniform(2.5, 5.0))

    # --- background: offset, autofluorescence texture, cytoplasm glow in some images
    base = rng.uniform(0.005, 0.12)
    background = base * (1 + rng.uniform(0.1, 0.6) * _smooth_noise(rng, shape2, rng.uniform(3, 12)))
    if n and rng.random() < 0.35:
        cells = ndimage.binary_dilation(labels > 0, iterations=max(int(0.8 * r_mean), 1))
        background += ndimage.gaussian_filter(cells.astype(np.float32), 0.5 * r_mean) * rng.uniform(0.03, 0.15)
    intensity = np.clip(in_plane + out_plane + background, 0, None)

    # --- illumination (multiplicative: excitation falls off towards the corners, and tilts)
    v = rng.uniform(0.0, 0.5)
    gy, gx = rng.uniform(-0.3, 0.3, 2)
    illum = (1 - v * ((ys / height - 0.5) ** 2 + (xs / width - 0.5) ** 2) / 0.5) * (
        1 + gy * (ys / height - 0.5) + gx * (xs / width - 0.5))
    intensity *= np.clip(illum, 0.2, None)

    # --- camera: Poisson photons, Gaussian read noise, offset, sometimes saturation
    photons = photons_per_unit * math.exp(rng.uniform(math.log(0.1), math.log(3.0)))
    sigma_read = read_noise * rng.uniform(0.3, 2.0)
    counts = rng.poisson(intensity * photons).astype(np.float32)
    counts += rng.normal(0, sigma_read, shape2).astype(np.float32) + 100.0
    saturate = rng.random() < 0.15
    if dtype == "uint16":
        if saturate:
            counts = np.minimum(counts, np.percentile(counts, rng.uniform(99.0, 99.9)))
        image = np.clip(np.rint(counts), 0, 65535).astype(np.uint16)
    else:
        top = np.percentile(counts, rng.uniform(97.0, 99.5) if saturate else 99.9)
        scale = (255.0 if saturate else rng.uniform(180.0, 250.0)) / max(float(top), 1.0)
        image = np.clip(np.rint(counts * scale), 0, 255).astype(np.uint8)
    return image, in_focus, brightness
