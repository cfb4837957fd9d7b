"""Synthetic chest-CT-like volumes with lung nodules of known centre, size and volume.

The phantom is an axial slab of a chest: air, a body ellipse (fat rim, muscle), two lungs at about
-850 HU with parenchymal texture and branching vessels, mediastinum and aorta, a vertebra with spinal
canal, ribs, the scanner table, correlated noise. Nodules (3-15 mm, solid or ground-glass, spheres or
rotated ellipsoids) sit inside the lungs, sometimes touching a vessel.

Geometry follows SimpleITK/DICOM: physical points are patient LPS millimetres,
``p = origin + direction @ (index * spacing)`` with index (i, j, k) = (column, row, slice). Arrays are
(z, y, x) as ``sitk.GetArrayFromImage`` returns them.

Ground truth:

- label volume (uint16, same geometry): 0 = background, nodule ``k`` has value ``k``; a voxel belongs to a
  nodule when its centre lies inside the nodule's ellipsoid;
- one :class:`Nodule` per nodule: centre (LPS mm), semi-axes and equivalent-sphere diameter (mm),
  analytic volume ``4/3 pi a b c`` (mm³), and its voxel count and voxel volume in the label.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from smallseg.data.lung import LungAnatomy, add_lung_anatomy
from smallseg.errors import SmallsegError
from smallseg.io.atomic import atomic_path, partial_path, write_text_atomic

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass
class Nodule:
    """One nodule of the ground truth.

    Attributes:
        id: label value in the label volume.
        center_lps_mm: (x, y, z) centre in patient LPS mm.
        center_index: (i, j, k) continuous voxel index of the centre (column, row, slice).
        semi_axes_mm: (a, b, c) ellipsoid semi-axes in mm (equal for spheres).
        rotation: 3x3 row-major rotation from nodule axes to the image's index-aligned axes.
        diameter_mm: equivalent-sphere diameter ``2 * (a b c) ** (1/3)``.
        volume_mm3: analytic volume ``4/3 * pi * a * b * c``.
        volume_voxels: number of voxels with this id in the label volume.
        volume_voxels_mm3: ``volume_voxels`` times the voxel volume.
        hu: mean attenuation of the nodule (HU).
        kind: ``"solid"`` or ``"ground_glass"``.
        shape: ``"sphere"`` or ``"ellipsoid"``.
    """

    id: int
    center_lps_mm: tuple[float, float, float]
    center_index: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    rotation: tuple[float, ...]
    diameter_mm: float
    volume_mm3: float
    volume_voxels: int
    volume_voxels_mm3: float
    hu: float
    kind: str
    shape: str


@dataclass
class CTVolume:
    """An in-memory synthetic CT.

    Attributes:
        image: SimpleITK image, int16 HU, 3D, geometry (spacing, origin, direction) in LPS mm.
        labels: SimpleITK image, uint16 nodule ids, same geometry.
        nodules: one :class:`Nodule` per label value 1..N.
    """

    image: object
    labels: object
    nodules: list[Nodule]

    @property
    def hu_zyx(self) -> np.ndarray:
        """(Z, Y, X) int16 HU array."""
        return sitk.GetArrayFromImage(self.image)

    @property
    def labels_zyx(self) -> np.ndarray:
        """(Z, Y, X) uint16 label array."""
        return sitk.GetArrayFromImage(self.labels)


def _uid(seed: int, *names: object) -> str:
    """A deterministic DICOM UID under the UUID-derived root 2.25 (ISO/IEC 9834-8)."""
    digest = hashlib.sha256(repr((int(seed), *map(str, names))).encode()).digest()[:16]
    return "2.25." + str(int.from_bytes(digest, "big") >> 1)  # 127-bit: always <= 39 digits


def _rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


class _Chest:
    """Analytic chest anatomy in the image's local frame: mm from the volume centre, (x, y, z) index-aligned."""

    def __init__(self, rng, fov_x: float, fov_y: float, depth_z: float):
        self.bx, self.by = 0.44 * fov_x, 0.30 * fov_y
        self.cy = -0.02 * fov_y
        self.fat = rng.uniform(0.05, 0.10) * self.by
        self.lung_x = 0.20 * fov_x
        self.lx, self.ly = 0.16 * fov_x, 0.23 * fov_y
        self.lung_cy = self.cy - 0.01 * fov_y
        self.lung_phase = rng.uniform(0, 2 * math.pi, 4)
        self.depth_z = depth_z
        self.scale = min(fov_x, fov_y) / 350.0  # anatomy is drawn for a ~350 mm field of view

    def lung_value(self, x, y, z):
        """< 1 inside a lung (superellipse, slightly wobbly along z and around)."""
        best = None
        for side in (-1, 1):
            dx = (x - side * self.lung_x) / self.lx
            dy = (y - self.lung_cy) / self.ly
            ang = np.arctan2(dy, dx)
            wobble = 1 + 0.06 * np.sin(2 * ang + self.lung_phase[side + 1]) + 0.03 * np.sin(
                3 * ang + self.lung_phase[side + 2]) + 0.04 * np.sin(2 * np.pi * z / max(self.depth_z, 1) * 0.5)
            # flatten the medial side (mediastinum) a little
            medial = np.where(dx * side < 0, 1.25, 1.0)
            r = (np.abs(dx * medial) ** 2.4 + np.abs(dy) ** 2.4) ** (1 / 2.4) / wobble
            best = r if best is None else np.minimum(best, r)
        return best


def make_ct_volume(
    size_xyz: tuple[int, int, int] = (256, 256, 64),
    *,
    seed: int,
    spacing_mm: tuple[float, float, float] = (0.7, 0.7, 1.25),
    origin_mm: tuple[float, float, float] | None = None,
    direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
    nodule_count: int = 6,
    diameter_range_mm: tuple[float, float] = (3.0, 15.0),
    ellipsoid_fraction: float = 0.3,
    ground_glass_fraction: float = 0.15,
    noise_hu: float = 15.0,
    anatomy="classic",
) -> CTVolume:
    """Render a chest-like CT volume with nodules.

    Args:
        size_xyz: voxels along x (columns), y (rows), z (slices).
        seed: any int; equal arguments give identical volumes.
        spacing_mm: voxel size (x, y, z) in mm; anisotropic spacing is fine.
        origin_mm: LPS position (mm) of the first voxel's centre; default centres the volume on (0, 0, 0)
            in x/y with slices going up from z = 0.
        direction: row-major 3x3 direction cosines (columns are the x, y, z index axes in LPS).
        nodule_count: nodules to place (fewer if the lungs have no room left).
        diameter_range_mm: range of equivalent-sphere diameters (mm).
        ellipsoid_fraction: share of nodules that are rotated ellipsoids (semi-axis ratios 0.7-1.3).
        ground_glass_fraction: share of ground-glass (-650..-350 HU) instead of solid nodules.
        noise_hu: standard deviation of the image noise (HU).
        anatomy: ``"classic"`` (sparse vessel trees; the shipped medical model's training data),
            ``"realistic"`` (:mod:`smallseg.data.lung`: dense vessel trees, airways, pleura, fissures,
            dependent density, noise level varying per volume; none of it labelled) or a
            :class:`smallseg.data.lung.LungAnatomy` (or its fields as a dict) choosing what is drawn.

    Returns:
        :class:`CTVolume` with an int16 HU image, a uint16 label image on the same geometry and the
        nodule list (volumes counted from the label).
    """
    nx, ny, nz = (int(v) for v in size_xyz)
    if min(nx, ny) < 32 or nz < 1:
        raise SmallsegError(f"size_xyz {nx}x{ny}x{nz}: need at least 32x32 voxels per slice and one slice")
    sx, sy, sz = (float(v) for v in spacing_mm)
    if min(sx, sy, sz) <= 0:
        raise SmallsegError(f"spacing_mm {spacing_mm}: spacings must be positive")
    dmin, dmax = diameter_range_mm
    if not 0 < dmin <= dmax:
        raise SmallsegError(f"diameter_range_mm {diameter_range_mm}: need 0 < min <= max")
    D = np.asarray(direction, float).reshape(3, 3)
    if not np.allclose(D @ D.T, np.eye(3), atol=1e-6):
        raise SmallsegError("direction: not an orthonormal 3x3 matrix (row-major, 9 numbers)")

    anat = LungAnatomy.resolve(anatomy)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC7]))
    fov_x, fov_y, depth = nx * sx, ny * sy, nz * sz
    chest = _Chest(rng, fov_x, fov_y, depth)

    # local coordinates (mm) relative to the volume centre, index-aligned
    x = (np.arange(nx) - (nx - 1) / 2) * sx
    y = (np.arange(ny) - (ny - 1) / 2) * sy
    z = (np.arange(nz) - (nz - 1) / 2) * sz
    X, Y = np.meshgrid(x.astype(np.float32), y.astype(np.float32))
    vol = np.empty((nz, ny, nx), np.float32)
    lung_mask = np.zeros((nz, ny, nx), bool)
    rib_phase = rng.uniform(0, 2 * math.pi)
    n_ribs = 9
    for k, zk in enumerate(z):
        sl = np.full((ny, nx), -1000.0, np.float32)
        breath = 1 + 0.02 * math.sin(zk / 40.0)
        body = ((X / (chest.bx * breath)) ** 2 + ((Y - chest.cy) / chest.by) ** 2)
        sl[body <= 1] = -100.0  # fat
        inner = ((X / (chest.bx * breath - chest.fat)) ** 2 + ((Y - chest.cy) / (chest.by - chest.fat)) ** 2)
        sl[inner <= 1] = 45.0  # muscle / soft tissue
        # table under the patient
        table_y = chest.cy + chest.by + 8 * chest.scale
        sl[(Y > table_y) & (Y < table_y + 6 * chest.scale) & (np.abs(X) < 0.45 * fov_x)] = 150.0
        # ribs: bone ellipses on a ring inside the fat, shifting with z (ribs run obliquely)
        for r in range(n_ribs):
            ang = rib_phase + 2 * math.pi * r / n_ribs + zk / 60.0
            if math.sin(ang) > 0.85:
                continue  # no ribs in front of the sternum region
            rx = (chest.bx * breath - chest.fat * 1.6) * math.cos(ang)
            ry = chest.cy + (chest.by - chest.fat * 1.6) * math.sin(ang)
            rib = ((X - rx) / (6 * chest.scale)) ** 2 + ((Y - ry) / (4 * chest.scale)) ** 2
            if (zk / 9.0 + r) % 3 < 2.0:
                sl[rib <= 1] = 650.0
        lv = chest.lung_value(X, Y, zk)
        lung = lv < 1
        lung_mask[k] = lung
        sl[lung] = -850.0
        # mediastinum, heart and aorta
        heart = ((X + 0.03 * fov_x) / (0.12 * fov_x)) ** 2 + ((Y - chest.cy + 0.08 * fov_y) / (0.11 * fov_y)) ** 2
        sl[(heart <= 1) & ~lung] = 40.0
        aorta = (X - 0.05 * fov_x) ** 2 + (Y - chest.cy - 0.08 * fov_y) ** 2
        sl[aorta <= (12 * chest.scale) ** 2] = 45.0
        # vertebra with cortical rim and spinal canal
        vy = chest.cy + chest.by - 0.10 * fov_y
        vert = X**2 + (Y - vy) ** 2
        sl[vert <= (17 * chest.scale) ** 2] = 900.0
        sl[vert <= (14 * chest.scale) ** 2] = 350.0
        canal = X**2 + (Y - vy - 24 * chest.scale) ** 2
        sl[canal <= (8 * chest.scale) ** 2] = 20.0
        vol[k] = sl

    # lung parenchyma texture
    tex = ndimage.gaussian_filter(rng.normal(0, 1, vol.shape).astype(np.float32), (0.8, 1.5, 1.5))
    vol[lung_mask] += 25.0 * tex[lung_mask] / max(float(tex.std()), 1e-6)

    # vessel trees from each hilum: capsules with partial-volume edges
    vessel = np.zeros(vol.shape, np.float32)
    spacing = np.array([sx, sy, sz])

    def draw_capsule(a, b, radius):
        lo = np.floor((np.minimum(a, b) - radius - 1) / spacing + np.array([nx, ny, nz]) / 2 - 0.5).astype(int)
        hi = np.ceil((np.maximum(a, b) + radius + 1) / spacing + np.array([nx, ny, nz]) / 2 - 0.5).astype(int) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, [nx, ny, nz])
        if (hi <= lo).any():
            return
        gx, gy, gz = x[lo[0]:hi[0]], y[lo[1]:hi[1]], z[lo[2]:hi[2]]
        P = np.stack(np.meshgrid(gz, gy, gx, indexing="ij")[::-1], -1)  # (z, y, x, 3) as (x, y, z)
        ab = b - a
        t = np.clip(((P - a) @ ab) / max(ab @ ab, 1e-9), 0, 1)
        d = np.linalg.norm(P - (a + t[..., None] * ab), axis=-1)
        cover = np.clip((radius - d) / min(sx, sy, sz) + 0.5, 0, 1)
        region = vessel[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
        np.maximum(region, cover, out=region)

    noise_factor = 1.0
    if anat is None:
        for side in (-1, 1):
            # several roots at the hilum (medial side of each lung), spread over the slab
            stack = []
            for _ in range(5):
                root = np.array([side * (chest.lung_x - 0.55 * chest.lx), chest.lung_cy + rng.normal(0, 0.1) * chest.ly,
                                 rng.uniform(-0.5, 0.5) * depth])
                heading = rng.normal(size=3) + np.array([1.5 * side, 0, 0])
                stack.append((root, heading, rng.uniform(2.5, 4.0), 0))
            while stack:
                start, heading, radius, level = stack.pop()
                heading = heading / np.linalg.norm(heading)
                length = rng.uniform(8, 20) * max(radius / 2.5, 0.6)
                end = start + heading * length
                draw_capsule(start, end, radius)
                if radius > 0.6 and level < 9:
                    for _ in range(2):
                        stack.append((end, heading + rng.normal(0, 0.6, 3), radius * rng.uniform(0.65, 0.85),
                                      level + 1))
        inside_lung_or_near = ndimage.binary_dilation(lung_mask, iterations=1)
        vessel *= inside_lung_or_near
        vol += vessel * (40.0 - vol) * (vessel > 0)
    else:  # realistic lungs: dense vessel trees, airways, fissures, pleura (unlabelled confusers)

        noise_factor = add_lung_anatomy(vol, lung_mask, chest, (x, y, z), spacing, anat, seed)

    # nodules
    labels = np.zeros(vol.shape, np.uint16)
    eroded = ndimage.distance_transform_edt(lung_mask, sampling=(sz, sy, sx))
    nodules_geo = []
    tries = 0
    while len(nodules_geo) < nodule_count and tries < 400 * max(nodule_count, 1):
        tries += 1
        diameter = float(np.exp(rng.uniform(math.log(dmin), math.log(dmax))))
        r = diameter / 2
        if rng.random() < ellipsoid_fraction:
            ratios = rng.uniform(0.7, 1.3, 3)
            ratios /= np.prod(ratios) ** (1 / 3)  # keep the equivalent diameter
            axes = r * ratios
            rot = _rotation(rng)
            shape = "ellipsoid"
        else:
            axes = np.array([r, r, r])
            rot = np.eye(3)
            shape = "sphere"
        centre = np.array([rng.uniform(x[0], x[-1]), rng.uniform(y[0], y[-1]), rng.uniform(z[0], z[-1])])
        ci = centre / spacing + (np.array([nx, ny, nz]) - 1) / 2
        idx = tuple(int(round(v)) for v in ci[::-1])
        if not all(0 <= idx[a] < (nz, ny, nx)[a] for a in range(3)):
            continue
        # whole ellipsoid (plus 1.5 mm) inside lung and inside the slab; no other nodule within 3 mm
        if eroded[idx] < axes.max() + 1.5:
            continue
        if centre[2] - axes.max() < z[0] - sz / 2 or centre[2] + axes.max() > z[-1] + sz / 2:
            continue
        if any(np.linalg.norm(centre - c) < axes.max() + a.max() + 3 for c, a, _, _ in nodules_geo):
            continue
        nodules_geo.append((centre, axes, rot, shape))

    origin = (np.array([-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, 0.0]) if origin_mm is None
              else np.asarray(origin_mm, float))
    nodules: list[Nodule] = []
    fine = min(sx, sy, sz)
    for n, (centre, axes, rot, shape) in enumerate(nodules_geo, start=1):
        reach = axes.max() + 2 * fine
        lo = np.maximum(np.floor((centre - reach) / spacing + (np.array([nx, ny, nz]) - 1) / 2).astype(int), 0)
        hi = np.minimum(np.ceil((centre + reach) / spacing + (np.array([nx, ny, nz]) - 1) / 2).astype(int) + 1,
                        [nx, ny, nz])
        gz, gy, gx = np.meshgrid(z[lo[2]:hi[2]], y[lo[1]:hi[1]], x[lo[0]:hi[0]], indexing="ij")
        P = np.stack([gx, gy, gz], -1) - centre
        local = P @ rot  # coordinates along the nodule's axes
        q = np.sqrt(((local / axes) ** 2).sum(-1))  # 1 on the surface
        inside = q <= 1.0
        region = labels[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
        region[inside] = n
        solid = rng.random() >= ground_glass_fraction
        hu = float(rng.uniform(-10, 70) if solid else rng.uniform(-650, -350))
        # soft edge about one voxel wide (partial volume), lobulated by a small texture
        radial_mm = (q - 1.0) * axes.min()
        cover = np.clip(0.5 - radial_mm / fine, 0, 1).astype(np.float32)
        vreg = vol[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
        vreg += cover * (hu - vreg)
        count = int(inside.sum())
        ci = centre / spacing + (np.array([nx, ny, nz]) - 1) / 2
        lps = origin + D @ (ci * spacing)
        nodules.append(Nodule(
            id=n, center_lps_mm=tuple(float(v) for v in lps), center_index=tuple(float(v) for v in ci),
            semi_axes_mm=tuple(float(v) for v in axes), rotation=tuple(float(v) for v in rot.ravel()),
            diameter_mm=float(2 * np.prod(axes) ** (1 / 3)), volume_mm3=float(4 / 3 * math.pi * np.prod(axes)),
            volume_voxels=count, volume_voxels_mm3=float(count * sx * sy * sz), hu=hu,
            kind="solid" if solid else "ground_glass", shape=shape,
        ))

    # scanner blur and correlated noise
    vol = ndimage.gaussian_filter(vol, (0.4, 0.6, 0.6))
    noise = ndimage.gaussian_filter(rng.normal(0, 1, vol.shape).astype(np.float32), (0.3, 0.7, 0.7))
    vol += noise * (noise_hu * noise_factor / max(float(noise.std()), 1e-6))
    hu = np.clip(np.rint(vol), -1024, 3071).astype(np.int16)

    image = sitk.GetImageFromArray(hu)
    label_img = sitk.GetImageFromArray(labels)
    for img in (image, label_img):
        img.SetSpacing((sx, sy, sz))
        img.SetOrigin(tuple(float(v) for v in origin))
        img.SetDirection(tuple(float(v) for v in D.ravel()))
    return CTVolume(image=image, labels=label_img, nodules=nodules)


def write_dicom_series(
    image,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    series_description: str = "smallseg synthetic chest CT",
    patient_id: str = "SYNTH0001",
) -> list[Path]:
    """Write a 3D int16 HU SimpleITK image as a DICOM CT series, one file per slice.

    Tags written per slice: Modality CT, SOP Class CT Image Storage, Study/Series/FrameOfReference/SOP
    Instance UIDs (deterministic from ``seed``, under the 2.25 UUID root), ImagePositionPatient (0020|0032)
    from the slice's origin, ImageOrientationPatient (0020|0037) from the direction's first two columns,
    PixelSpacing (0028|0030, written by GDCM from the image spacing, row\\column), SliceThickness
    (0018|0050) = z spacing, SpacingBetweenSlices, InstanceNumber (0020|0013, 1-based in slice order),
    SliceLocation, RescaleIntercept 0 / RescaleSlope 1 / RescaleType HU, fixed dates (byte-reproducible).
    Files are ``slice_0001.dcm``...; the folder is written under a temporary name and renamed when complete.

    Args:
        image: 3D SimpleITK image, pixel type int16 (HU).
        out_dir: output folder (must not exist or be empty).
        seed: seed for the UIDs (same seed and image -> identical bytes).
        series_description, patient_id: written to 0008|103e and 0010|0020/0010|0010.

    Returns:
        Paths of the written files in slice order.
    """
    if image.GetDimension() != 3:
        raise SmallsegError(f"write_dicom_series: need a 3D image, got {image.GetDimension()}D")
    if image.GetPixelID() != sitk.sitkInt16:
        raise SmallsegError(f"write_dicom_series: need int16 HU, got {image.GetPixelIDTypeAsString()}; "
                            "cast with sitk.Cast(image, sitk.sitkInt16)")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise SmallsegError(f"{out_dir}: folder exists and is not empty; choose a new folder")
    # The whole folder is written under a temporary hidden name (io.atomic's scheme) and renamed when complete.
    tmp_dir = partial_path(out_dir)
    tmp_dir.mkdir(parents=True)
    try:
        paths = _write_slices(image, tmp_dir, out_dir, seed, series_description, patient_id)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp_dir, out_dir)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
    return paths


def _write_slices(image, tmp_dir: Path, out_dir: Path, seed: int, series_description: str,
                  patient_id: str) -> list[Path]:
    """The slice files of :func:`write_dicom_series` into ``tmp_dir``; returns their final paths."""
    direction = image.GetDirection()
    iop = "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6],
                                          direction[1], direction[4], direction[7]))
    sz = image.GetSpacing()[2]
    common = {
        "0008|0008": "ORIGINAL\\PRIMARY\\AXIAL",
        "0008|0016": CT_IMAGE_STORAGE,
        "0008|0020": "20000101", "0008|0021": "20000101", "0008|0023": "20000101",
        "0008|0030": "120000", "0008|0031": "120000", "0008|0033": "120000",
        "0008|0012": "20000101", "0008|0013": "120000",
        "0008|0060": "CT",
        "0008|0070": "smallseg",
        "0008|103e": series_description,
        "0010|0010": f"Synthetic^{patient_id}",
        "0010|0020": patient_id,
        "0018|0050": f"{sz:.6g}",
        "0018|0088": f"{sz:.6g}",
        "0020|000d": _uid(seed, "study"),
        "0020|000e": _uid(seed, "series"),
        "0020|0052": _uid(seed, "frame-of-reference"),
        "0020|0011": "1",
        "0020|0037": iop,
        "0028|1052": "0",
        "0028|1053": "1",
        "0028|1054": "HU",
        "0028|1050": "-600", "0028|1051": "1500",  # lung window
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # use our SOP Instance UIDs, not fresh random ones
    paths = []
    normal = np.array(direction, float).reshape(3, 3)[:, 2]
    for k in range(image.GetDepth()):
        sl = image[:, :, k]
        for tag, value in common.items():
            sl.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in position))
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0020|1041", f"{float(np.dot(position, normal)):.6f}")
        sl.SetMetaData("0008|0018", _uid(seed, "sop", k))
        path = tmp_dir / f"slice_{k + 1:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(sl)
        paths.append(out_dir / path.name)
    return paths


def read_dicom_series(folder: str | os.PathLike):
    """Read a DICOM series folder with SimpleITK (GDCM file ordering) into a 3D image."""
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    if not names:
        raise SmallsegError(f"{folder}: no DICOM series found")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    return reader.Execute()


def write_ct_ground_truth(volume: CTVolume, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``labels.nii.gz`` (uint16, the image's geometry), ``nodules.json`` and ``nodules.csv``.

    Returns:
        ``{"labels": ..., "json": ..., "csv": ...}`` paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"labels": out_dir / "labels.nii.gz", "json": out_dir / "nodules.json", "csv": out_dir / "nodules.csv"}
    with atomic_path(paths["labels"]) as tmp:
        sitk.WriteImage(volume.labels, str(tmp), useCompression=True)
    image = volume.image
    meta = {
        "spacing_mm": list(image.GetSpacing()), "origin_lps_mm": list(image.GetOrigin()),
        "direction": list(image.GetDirection()), "size_xyz": list(image.GetSize()),
        "nodules": [asdict(n) for n in volume.nodules],
    }
    write_text_atomic(paths["json"], json.dumps(meta, indent=1))
    with io.StringIO(newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "center_x_mm", "center_y_mm", "center_z_mm", "diameter_mm", "volume_mm3",
                    "volume_voxels", "volume_voxels_mm3", "hu", "kind", "shape"])
        for n in volume.nodules:
            w.writerow([n.id, *(f"{v:.4f}" for v in n.center_lps_mm), f"{n.diameter_mm:.4f}",
                        f"{n.volume_mm3:.4f}", n.volume_voxels, f"{n.volume_voxels_mm3:.4f}", f"{n.hu:.1f}",
                        n.kind, n.shape])
        write_text_atomic(paths["csv"], fh.getvalue())
    return paths


def write_ct_case(volume: CTVolume, out_dir: str | os.PathLike, *, seed: int = 0) -> dict[str, Path]:
    """Write one case: ``dicom/`` series, ``labels.nii.gz``, ``nodules.json``, ``nodules.csv`` under ``out_dir``."""
    out_dir = Path(out_dir)
    files = write_dicom_series(volume.image, out_dir / "dicom", seed=seed)
    paths = write_ct_ground_truth(volume, out_dir)
    paths["dicom"] = files[0].parent
    return paths
