"""Synthetic 2D fluorescence-microscopy nuclei (DAPI/Hoechst-like) with exact instance labels.

Nuclei are irregular ellipses (an ellipse whose radius is modulated by a few low Fourier harmonics),
some isolated, many in touching clusters; a few are small and bright (mitotic-looking), a few lie out of
the focal plane (blurred, dimmer). The image adds chromatin texture, an uneven background (illumination
gradient, vignetting, haze), optical blur, Poisson photon noise and Gaussian read noise.

Labels: (H, W) uint16, 0 = background, nucleus ``k`` has id ``k`` (ids 1..N, each one 4-connected
region). Where two nuclei overlap, each pixel goes to the nucleus in whose normalised radius it lies
deeper, which is how touching nuclei get a shared boundary. The image is rendered from these labels, so
the labels are exactly what the image shows (out-of-focus nuclei are labelled with their in-focus
footprint; their table row says ``in_focus = False``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from smallseg.errors import SmallsegError
from smallseg.instances import Instances
from smallseg.io.atomic import atomic_path
from smallseg.io.tables import NucleiTable


@dataclass
class NucleiImage:
    """A synthetic fluorescence image.

    Attributes:
        image: (H, W) uint8 or uint16 single-channel intensities (uint16: raw camera counts).
        labels: (H, W) uint16 instance ids, 0 = background.
        nuclei: the :class:`NucleiTable`.
    """

    image: np.ndarray
    labels: np.ndarray
    nuclei: NucleiTable

    def to_instances(self):
        """Labels as :class:`smallseg.instances.Instances` (one class, ids as in the table)."""
        return Instances.from_labels(self.labels)


def make_nuclei_image(
    height: int = 256,
    width: int = 256,
    *,
    seed: int,
    mean_diameter_px: float = 16.0,
    nuclei_count: int | None = None,
    cluster_fraction: float = 0.6,
    out_of_focus_fraction: float = 0.1,
    dtype: str = "uint16",
    photons_per_unit: float = 400.0,
    read_noise: float = 3.0,
    style: str = "classic",
) -> NucleiImage:
    """Render one nuclei image.

    Args:
        height, width: image size in px.
        seed: any int; equal arguments give identical images and labels.
        mean_diameter_px: typical nucleus diameter (px); individual nuclei vary about +-35 %.
        nuclei_count: how many nuclei to try to place; default fills about 25 % of the area (``realistic``:
            0.5-1.5x that, drawn per image).
        cluster_fraction: share of nuclei placed in touching clusters.
        out_of_focus_fraction: share of nuclei rendered out of focus.
        dtype: ``"uint16"`` (camera counts, offset 100) or ``"uint8"`` (scaled to the 0-255 range).
        photons_per_unit: photons per unit of relative intensity; lower is noisier (Poisson).
        read_noise: Gaussian camera read noise, counts (std).
        style: ``"classic"`` (the shipped medical model's training data: even texture, mild illumination
            changes, sizes +-30 %) or ``"realistic"`` (:mod:`smallseg.data.microscopy_realistic`: uneven
            illumination, background texture and debris, defocus varying over the field, several-fold
            brightness spread, chromatin spots, mitoses, Poisson-Gaussian noise over a wide photon range).
            In ``realistic``, ``photons_per_unit`` and ``read_noise`` are the centres of per-image ranges.

    Returns:
        :class:`NucleiImage` with image (H, W), labels (H, W) uint16 and the nuclei table.
    """
    if height < 16 or width < 16:
        raise SmallsegError(f"height x width {height}x{width}: images must be at least 16x16 px")
    if dtype not in ("uint8", "uint16"):
        raise SmallsegError(f"dtype {dtype}: use uint8 or uint16")
    if style not in ("classic", "realistic"):
        raise SmallsegError(f"style={style!r}: use 'classic' or 'realistic'")
    if not 3 <= mean_diameter_px <= min(height, width) / 2:
        raise SmallsegError(f"mean_diameter_px {mean_diameter_px}: use 3 px up to half the image side")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x9C1]))
    r_mean = mean_diameter_px / 2
    auto_count = nuclei_count is None
    if auto_count:
        nuclei_count = max(1, int(0.25 * height * width / (math.pi * r_mean**2)))

    if style == "classic":
        shapes = _place_classic(rng, height, width, r_mean, nuclei_count, cluster_fraction)
    else:
        from smallseg.data.microscopy_realistic import place_nuclei, render_nuclei  # it imports this module

        shapes, kinds = place_nuclei(rng, height, width, r_mean, nuclei_count, cluster_fraction,
                                     vary_density=auto_count)
    labels, kept = rasterise_shapes(shapes, height, width)
    shapes = [shapes[i] for i in kept]
    n = len(shapes)
    if style == "classic":
        image, in_focus, brightness = _render_classic(rng, labels, shapes, r_mean, out_of_focus_fraction, dtype,
                                                      photons_per_unit, read_noise)
    else:
        image, in_focus, brightness = render_nuclei(rng, labels, shapes, kinds[kept], out_of_focus_fraction, dtype,
                                                    photons_per_unit, read_noise)

    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    table = NucleiTable(
        id=np.arange(1, n + 1, dtype=np.int64),
        center_row_px=np.array([s[0] for s in shapes], float), center_col_px=np.array([s[1] for s in shapes], float),
        semi_axes_px=np.array([[s[2], s[3]] for s in shapes], float).reshape(n, 2),
        angle_deg=np.degrees([s[4] for s in shapes]).astype(float), area_px=area.astype(np.int64),
        in_focus=in_focus, brightness=brightness, cluster=np.array([s[6] for s in shapes], np.int64),
    )
    return NucleiImage(image=image, labels=labels, nuclei=table)


def _place_classic(rng, height, width, r_mean, nuclei_count, cluster_fraction) -> list:
    """Shapes of the ``classic`` style: sizes +-30 %, clusters of 2-7 overlapping nuclei, then isolated ones."""
    shapes = []  # (cy, cx, a, b, angle, harmonics, cluster)

    def new_shape(cy, cx, cluster, scale=1.0):
        r = r_mean * scale * rng.uniform(0.7, 1.3)
        ecc = rng.uniform(1.0, 1.6)
        a, b = r * math.sqrt(ecc), r / math.sqrt(ecc)
        harmonics = [(k, rng.uniform(0, 0.07 / (k - 1)), rng.uniform(0, 2 * math.pi)) for k in range(2, 6)]
        return (cy, cx, a, b, rng.uniform(0, math.pi), harmonics, cluster)

    n_cluster = int(round(nuclei_count * cluster_fraction))
    cluster_id = 0
    placed = 0
    attempts = 0
    while placed < n_cluster and attempts < 50 * nuclei_count:
        attempts += 1
        size = int(rng.integers(2, 8))
        cy, cx = rng.uniform(r_mean, height - r_mean), rng.uniform(r_mean, width - r_mean)
        members = [new_shape(cy, cx, cluster_id)]
        for _ in range(size - 1):
            base = members[rng.integers(len(members))]
            s = new_shape(0, 0, cluster_id)
            ang = rng.uniform(0, 2 * math.pi)
            # overlap a little (distance 0.75-0.95 of summed mean radii): they touch after the split
            d = rng.uniform(0.75, 0.95) * (math.sqrt(base[2] * base[3]) + math.sqrt(s[2] * s[3]))
            s = (base[0] + d * math.sin(ang), base[1] + d * math.cos(ang)) + s[2:]
            members.append(s)
        members = [m for m in members if r_mean * 0.5 < m[0] < height - r_mean * 0.5
                   and r_mean * 0.5 < m[1] < width - r_mean * 0.5]
        if len(members) < 2 or _collides(members, shapes, margin=0.6):
            continue
        shapes += members
        placed += len(members)
        cluster_id += 1
    attempts = 0
    while len(shapes) < nuclei_count and attempts < 50 * nuclei_count:
        attempts += 1
        scale = 0.6 if rng.random() < 0.05 else 1.0
        s = new_shape(rng.uniform(0, height), rng.uniform(0, width), -1, scale)
        if _collides([s], shapes, margin=1.1):
            continue
        shapes.append(s)

    return shapes


def _render_classic(rng, labels, shapes, r_mean, out_of_focus_fraction, dtype, photons_per_unit, read_noise):
    """Image of the ``classic`` style (the shipped medical model's training data): (image, in_focus, brightness)."""
    height, width = labels.shape
    n = len(shapes)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    in_focus = rng.random(n) >= out_of_focus_fraction
    brightness = np.exp(rng.normal(0, 0.3, n))
    small = np.array([math.sqrt(s[2] * s[3]) < 0.75 * r_mean for s in shapes], bool)
    brightness[small] *= 1.8  # condensed chromatin: small, bright
    chromatin = ndimage.gaussian_filter(rng.normal(0, 1, (height, width)).astype(np.float32), 1.2)
    chromatin /= max(float(chromatin.std()), 1e-6)
    sharp = np.zeros((height, width), np.float32)
    blurred = np.zeros((height, width), np.float32)
    for k, sl, mask, rho in _nucleus_crops(labels, shapes, ys, xs):
        dome = np.sqrt(np.clip(1 - rho**2, 0, 1)) ** 0.5  # brighter in the middle
        value = brightness[k] * (0.55 + 0.45 * dome) * (1 + 0.18 * chromatin[sl])
        target = sharp if in_focus[k] else blurred
        target[sl][mask] = (value * (1.0 if in_focus[k] else 0.5))[mask]
    sharp = ndimage.gaussian_filter(sharp, 0.9)
    blurred = ndimage.gaussian_filter(blurred, rng.uniform(2.5, 4.0))
    gy, gx = rng.normal(0, 1, 2)
    plane = 1 + 0.25 * (gy * (ys / height - 0.5) + gx * (xs / width - 0.5))
    vignette = 1 - 0.25 * (((ys / height - 0.5) ** 2 + (xs / width - 0.5) ** 2) / 0.5)
    haze = ndimage.gaussian_filter(rng.normal(0, 1, (height, width)).astype(np.float32), min(height, width) / 8)
    haze *= 0.03 / max(float(haze.std()), 1e-9)
    background = rng.uniform(0.04, 0.10) * plane + haze
    intensity = np.clip((sharp + blurred + background) * vignette, 0, None)
    counts = rng.poisson(intensity * photons_per_unit).astype(np.float32)
    counts += rng.normal(0, read_noise, counts.shape).astype(np.float32) + 100.0  # camera offset
    if dtype == "uint16":
        image = np.clip(np.rint(counts), 0, 65535).astype(np.uint16)
    else:
        scale = 230.0 / max(float(np.percentile(counts, 99.9)), 1.0)
        image = np.clip(np.rint(counts * scale), 0, 255).astype(np.uint8)

    return image, in_focus, brightness


def rasterise_shapes(shapes, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Label image of nucleus shapes ``(cy, cx, a, b, angle, harmonics, cluster)`` (px, radians).

    Each pixel goes to the nucleus in whose normalised radius it lies deepest; each nucleus keeps its
    largest 4-connected piece; ids are made dense in shape order.

    Returns:
        labels (H, W) uint16 (0 = background, 1..N) and the (N,) int64 indices into ``shapes`` of the
        nuclei that kept pixels (label ``k`` is ``shapes[kept[k - 1]]``).
    """
    # --- labels: each pixel to the nucleus whose normalised radius it is deepest in
    labels = np.zeros((height, width), np.int32)
    depth = np.full((height, width), np.inf)
    for n, (cy, cx, a, b, ang, harmonics, _) in enumerate(shapes, start=1):
        reach = max(a, b) * 1.3 + 1
        r0, r1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, height)
        c0, c1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, width)
        if r1 <= r0 or c1 <= c0:
            continue
        rho = _normalised_radius(np.arange(r0, r1)[:, None] - cy, np.arange(c0, c1)[None, :] - cx, a, b, ang,
                                 harmonics)
        sub_d, sub_l = depth[r0:r1, c0:c1], labels[r0:r1, c0:c1]
        take = (rho < 1.0) & (rho < sub_d)
        sub_d[take] = rho[take]
        sub_l[take] = n
    # keep one 4-connected piece per nucleus (the overlap split can leave slivers), then make ids dense
    for n, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        mask = labels[sl] == n
        comp, k = ndimage.label(mask)
        if k > 1:
            largest = 1 + int(np.argmax(np.bincount(comp.ravel())[1:]))
            labels[sl][mask & (comp != largest)] = 0
    present = np.unique(labels)
    present = present[present > 0]
    remap = np.zeros(len(shapes) + 1, np.int32)
    remap[present] = np.arange(1, len(present) + 1)
    labels = remap[labels].astype(np.uint16)
    return labels, (present - 1).astype(np.int64)


def _nucleus_crops(labels: np.ndarray, shapes: list, ys: np.ndarray, xs: np.ndarray):
    """Per nucleus (label ``k + 1``, shape ``shapes[k]``), in label order: ``(k, sl, mask, rho)`` with ``sl`` its
    bounding slices in ``labels``, ``mask`` its (h, w) bool pixels there and ``rho`` the (h, w) float32
    :func:`_normalised_radius` of every pixel of the crop (< 1 inside). ``ys``, ``xs``: (H, W) pixel coordinates.
    Nuclei without a pixel are skipped."""
    for k, sl in enumerate(ndimage.find_objects(labels)):
        if sl is None:
            continue
        cy, cx, a, b, ang, harmonics, _ = shapes[k]
        yield k, sl, labels[sl] == k + 1, _normalised_radius(ys[sl] - cy, xs[sl] - cx, a, b, ang, harmonics)


def _normalised_radius(dy, dx, a, b, angle, harmonics):
    """|p| in units of the (wobbly) boundary radius along p's direction: < 1 inside."""
    ca, sa = math.cos(angle), math.sin(angle)
    u = (dx * ca + dy * sa) / a
    v = (-dx * sa + dy * ca) / b
    theta = np.arctan2(v, u)
    wobble = 1.0
    for k, amp, phase in harmonics:
        wobble = wobble + amp * np.cos(k * theta + phase)
    return np.sqrt(u * u + v * v) / wobble


def _collides(new, existing, margin: float) -> bool:
    """True if any new shape's centre is closer than ``margin`` x (summed mean radii) to an existing one."""
    for s in new:
        rs = math.sqrt(s[2] * s[3])
        for e in existing:
            if math.hypot(s[0] - e[0], s[1] - e[1]) < margin * (rs + math.sqrt(e[2] * e[3])) + 1:
                return True
    return False


def write_nuclei_image(nuclei: NucleiImage, path_stem: str | os.PathLike) -> dict[str, Path]:
    """Write ``<stem>_image.tif``, ``<stem>_labels.tif`` (uint16 ids) and ``<stem>_nuclei.csv``.

    Returns:
        ``{"image": ..., "labels": ..., "csv": ...}`` paths.
    """
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {"image": stem.with_name(stem.name + "_image.tif"), "labels": stem.with_name(stem.name + "_labels.tif"),
             "csv": stem.with_name(stem.name + "_nuclei.csv")}
    for key, data in (("image", nuclei.image), ("labels", nuclei.labels)):
        with atomic_path(paths[key]) as tmp:
            tifffile.imwrite(tmp, data, compression="zlib", photometric="minisblack")
    nuclei.nuclei.write_csv(paths["csv"])
    return paths
