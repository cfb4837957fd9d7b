"""Lung anatomy for the synthetic chest CT (``make_ct_volume(..., anatomy="realistic")``).

Real lungs are full of things that look like nodules in one axial slice: vessels cut across are bright
round dots, 1-5 mm, dozens per slice, larger near the hilum. A detector trained on lungs without them
marks every vessel (438 objects in one real scan). This module draws what the nodules must be told from,
none of which is labelled:

- **vessel trees**: tubes of decreasing radius (Murray's law at each bifurcation, r³ = r₁³ + r₂³) grown
  from each hilum towards the periphery, plus peripheral trees entering the slab from above and below
  running mostly cranio-caudally (round cross-sections in axial slices); blood about +40 HU, thin
  vessels dimmer by partial volume;
- **airways**: bronchi from the hilum, dark lumen (-1000 HU) inside a bright wall (about -50 HU), a few
  generations down to 1 mm;
- **pleura**: a thin brighter rim on the lung surface; **fissures**: one thin oblique sheet per lung
  (two on the right), -300 to -100 HU;
- **parenchyma**: gravity-dependent density (posterior denser than anterior by 20-60 HU); the caller
  varies the noise level per volume (:attr:`LungAnatomy.noise_scale`).

Geometry: local millimetres from the volume centre, index-aligned, as in :mod:`smallseg.data.medical`
(``x`` columns, ``y`` rows, ``z`` slices; arrays are (z, y, x)). Everything is drawn from a random
stream of its own (seeded from the volume's seed), so nodule placement, which uses the volume's main
stream, is the same with or without this anatomy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from smallseg.errors import SmallsegError


@dataclass(frozen=True)
class LungAnatomy:
    """What :func:`add_lung_anatomy` draws (all counts per lung).

    Counts and root calibres are those of a 175 mm field of view (256 px at 0.7 mm, the training
    phantoms); other fields of view scale the number of peripheral trees with the lung area and the
    calibres with its square root (clipped to 0.6-1.4x).

    Attributes:
        hilar_trees: vessel trees grown from the hilum (root radius 2-3.5 mm).
        peripheral_trees: vessel trees entering the slab from above or below (root radius 0.6-1.6 mm).
        vessel_min_radius_mm: branches stop below this radius (mm).
        airways: bronchial trees from the hilum (0 = none).
        fissures: draw the interlobar fissures.
        pleura: draw the bright pleural rim.
        gravity_hu: (low, high) range of the posterior-minus-anterior parenchymal density (HU).
        noise_scale: (low, high) range of the per-volume factor on the image noise.
        max_segments: cap on tube segments per volume (bounds the cost).
    """

    hilar_trees: int = 6
    peripheral_trees: int = 80
    vessel_min_radius_mm: float = 0.45
    airways: int = 2
    fissures: bool = True
    pleura: bool = True
    gravity_hu: tuple[float, float] = (20.0, 60.0)
    noise_scale: tuple[float, float] = (0.7, 1.8)
    max_segments: int = 6000

    def __post_init__(self) -> None:
        for name in ("hilar_trees", "peripheral_trees", "airways", "max_segments"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise SmallsegError(f"LungAnatomy.{name}={value!r}: use a whole number >= 0")
        if not 0.1 <= self.vessel_min_radius_mm <= 5:
            raise SmallsegError(f"LungAnatomy.vessel_min_radius_mm={self.vessel_min_radius_mm}: use 0.1-5 mm")
        for name in ("gravity_hu", "noise_scale"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise SmallsegError(f"LungAnatomy.{name}={getattr(self, name)!r}: need 0 <= low <= high")

    @classmethod
    def resolve(cls, anatomy) -> LungAnatomy | None:
        """``"classic"`` -> None (the phantom's original sparse vessels), ``"realistic"`` -> the defaults, a
        :class:`LungAnatomy` -> itself, a dict -> ``LungAnatomy(**dict)`` (from a YAML config)."""
        if anatomy == "classic":
            return None
        if anatomy == "realistic":
            return cls()
        if isinstance(anatomy, cls):
            return anatomy
        if isinstance(anatomy, dict):
            unknown = set(anatomy) - set(cls.__dataclass_fields__)
            if unknown:
                raise SmallsegError(f"anatomy: unknown field(s) {sorted(unknown)}; expected some of "
                                    f"{sorted(cls.__dataclass_fields__)}")
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in anatomy.items()})
        raise SmallsegError(f"anatomy={anatomy!r}: use 'classic', 'realistic' or a LungAnatomy")


class TubeCanvas:
    """Partial-volume coverage (0-1) of tubes, drawn segment by segment into a (z, y, x) float32 array."""

    def __init__(self, coords: tuple[np.ndarray, np.ndarray, np.ndarray], spacing: np.ndarray):
        self.x, self.y, self.z = (np.asarray(c, np.float32) for c in coords)
        self.spacing = np.asarray(spacing, float)
        self.n = np.array([len(self.x), len(self.y), len(self.z)])
        self.fine = float(self.spacing.min())
        self.cover = np.zeros((self.n[2], self.n[1], self.n[0]), np.float32)

    def capsule(self, a: np.ndarray, b: np.ndarray, radius: float, out: np.ndarray | None = None) -> None:
        """Cover of the capsule from ``a`` to ``b`` (mm, (x, y, z)) with ``radius`` (mm), max-combined into
        ``out`` (default :attr:`cover`); a voxel is covered by the share of it within ``radius``."""
        out = self.cover if out is None else out
        lo = np.floor((np.minimum(a, b) - radius - 1) / self.spacing + (self.n - 1) / 2).astype(int)
        hi = np.ceil((np.maximum(a, b) + radius + 1) / self.spacing + (self.n - 1) / 2).astype(int) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, self.n)
        if (hi <= lo).any():
            return
        px = self.x[lo[0]:hi[0]][None, None, :] - np.float32(a[0])
        py = self.y[lo[1]:hi[1]][None, :, None] - np.float32(a[1])
        pz = self.z[lo[2]:hi[2]][:, None, None] - np.float32(a[2])
        ab = (b - a).astype(np.float32)
        t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / max(float(ab @ ab), 1e-9), 0, 1)
        d2 = (px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2
        cover = np.clip((np.float32(radius) - np.sqrt(d2)) / np.float32(self.fine) + np.float32(0.5), 0, 1)
        region = out[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
        np.maximum(region, cover, out=region)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _perpendicular(rng, v: np.ndarray) -> np.ndarray:
    w = rng.normal(size=3)
    return _unit(w - (w @ v) * v)


def grow_tree(rng, root: np.ndarray, heading: np.ndarray, radius: float, *, inside, outward, r_min: float,
              z_limit: float, budget: int, daughters_ratio: tuple[float, float] = (0.72, 0.92)) -> list:
    """Segments ``(a, b, radius)`` (mm) of one branching tube tree.

    A branch is a chain of short segments with a slowly wandering heading, pulled towards ``outward(p)``
    (a unit vector at point ``p``); it ends at a bifurcation into two daughters whose radii follow
    Murray's law, or where it leaves the lung (``inside(p)`` False) or the slab's neighbourhood
    (``|z| > z_limit``). ``budget`` caps the number of segments.
    """
    segments: list = []
    stack = [(np.asarray(root, float), _unit(np.asarray(heading, float)), float(radius))]
    while stack and len(segments) < budget:
        pos, head, r = stack.pop()
        length = float(np.clip(rng.uniform(5.0, 10.0) * r, 4.0, 40.0))
        step = max(2.0, 2.0 * r)
        travelled = 0.0
        alive = True
        while travelled < length and len(segments) < budget:
            head = _unit(head + rng.normal(0, 0.12, 3) + 0.15 * outward(pos))
            end = pos + head * step
            if not inside(end) or abs(end[2]) > z_limit:
                alive = False
                break
            segments.append((pos, end, r))
            pos, travelled = end, travelled + step
        if not alive:
            continue
        # bifurcation: the larger daughter keeps closer to the parent's direction
        f1 = rng.uniform(*daughters_ratio)
        r1 = r * f1
        r2 = r * max(1 - f1**3, 1e-3) ** (1 / 3)
        axis = _perpendicular(rng, head)
        for rd, angle in ((r1, rng.uniform(15, 35)), (r2, -rng.uniform(30, 60))):
            if rd < r_min:
                continue
            rad = math.radians(angle)
            stack.append((pos, _unit(math.cos(rad) * head + math.sin(rad) * axis), rd))
    return segments


def add_lung_anatomy(vol: np.ndarray, lung_mask: np.ndarray, chest, coords, spacing, anatomy: LungAnatomy,
                     seed: int) -> float:
    """Draw vessels, airways, pleura, fissures and parenchymal density into ``vol`` in place.

    Args:
        vol: (Z, Y, X) float32 HU, lungs already at their base value (about -850 HU).
        lung_mask: (Z, Y, X) bool, True inside the lungs.
        chest: the phantom's analytic chest (``lung_value(x, y, z)`` < 1 inside a lung, ``lung_x``,
            ``lx``, ``ly``, ``lung_cy``).
        coords: (x, y, z) 1D coordinate vectors, local mm from the volume centre.
        spacing: (sx, sy, sz) mm.
        anatomy: what to draw.
        seed: the volume's seed (this function draws from a stream of its own).

    Returns:
        The factor to apply to the image noise of this volume.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC7, 0x1A9]))
    x, y, z = coords
    half_depth = (len(z) * float(spacing[2])) / 2
    z_limit = half_depth + 25.0
    in_lung_or_near = ndimage.binary_dilation(lung_mask, iterations=1)

    # --- parenchyma: denser posteriorly (dependent lung)
    gravity = rng.uniform(*anatomy.gravity_hu)
    rows = np.clip((y - chest.lung_cy) / chest.ly, -1, 1).astype(np.float32)
    vol += np.where(lung_mask, gravity * 0.5 * rows[None, :, None], 0).astype(np.float32)  # mean unchanged
    shape_zyx = np.array(lung_mask.shape)
    sp = np.asarray(spacing, float)

    def inside(p) -> bool:
        # the lung mask at the nearest voxel; above and below the slab, its first or last slice
        i = np.rint(p / sp + (shape_zyx[::-1] - 1) / 2).astype(int)
        if not (0 <= i[0] < shape_zyx[2] and 0 <= i[1] < shape_zyx[1]):
            return False
        return bool(lung_mask[min(max(i[2], 0), shape_zyx[0] - 1), i[1], i[0]])

    def centre_of(side):
        return np.array([side * chest.lung_x, chest.lung_cy, 0.0])

    canvas = TubeCanvas((x, y, z), spacing)
    budget = anatomy.max_segments
    # Counts and root calibres are set for a 175 mm field of view (256 px at 0.7 mm); smaller or larger
    # phantoms scale their lungs, so trees scale in number with the lung area and in calibre more gently.
    ref = chest.scale / 0.5
    calibre = float(np.clip(math.sqrt(ref), 0.6, 1.4))
    n_peripheral = int(round(anatomy.peripheral_trees * ref**2))
    vessels: list = []
    for side in (-1, 1):
        centre = centre_of(side)
        side_end = len(vessels) + budget // 2 if side < 0 else budget

        def outward(p, centre=centre):
            d = p - centre
            d[2] *= 0.3  # mostly in-plane spread from the hilum
            return _unit(d)

        hilum = np.array([side * (chest.lung_x - 0.55 * chest.lx), chest.lung_cy, 0.0])
        for _ in range(anatomy.hilar_trees):
            root = hilum + np.array([0.0, rng.normal(0, 0.15) * chest.ly, rng.uniform(-0.6, 0.6) * half_depth])
            heading = _unit(np.array([side * 1.0, rng.normal(0, 0.6), rng.normal(0, 0.6)]))
            vessels += grow_tree(rng, root, heading, calibre * rng.uniform(2.0, 3.5), inside=inside,
                                 outward=outward, r_min=anatomy.vessel_min_radius_mm, z_limit=z_limit,
                                 budget=max(side_end - len(vessels), 0))

        def no_pull(p):
            return np.zeros(3)

        for _ in range(n_peripheral):
            # a point inside this lung, entering from above or below the slab
            for _try in range(20):
                p = centre + np.array([rng.uniform(-1, 1) * chest.lx, rng.uniform(-1, 1) * chest.ly, 0.0])
                if inside(p):
                    break
            else:
                continue
            up = rng.random() < 0.5
            p[2] = (half_depth + rng.uniform(0, 15)) * (1 if up else -1)
            if not inside(p):
                continue
            heading = _unit(np.array([rng.normal(0, 0.35), rng.normal(0, 0.35), -1.0 if up else 1.0]))
            vessels += grow_tree(rng, p, heading, calibre * rng.uniform(0.6, 1.6), inside=inside,
                                 outward=no_pull, r_min=anatomy.vessel_min_radius_mm, z_limit=z_limit,
                                 budget=max(side_end - len(vessels), 0), daughters_ratio=(0.8, 0.95))
    for a, b, r in vessels:
        canvas.capsule(a, b, r)
    vessel = canvas.cover * in_lung_or_near
    vol += vessel * (40.0 - vol)

    # --- airways: bright wall around a dark lumen
    if anatomy.airways:
        wall = np.zeros_like(canvas.cover)
        lumen = np.zeros_like(canvas.cover)
        for side in (-1, 1):
            centre = centre_of(side)
            hilum = np.array([side * (chest.lung_x - 0.6 * chest.lx), chest.lung_cy - 0.1 * chest.ly, 0.0])
            for _ in range(anatomy.airways):
                root = hilum + np.array([0.0, 0.0, rng.uniform(-0.5, 0.5) * half_depth])
                heading = _unit(np.array([side * 1.0, rng.normal(0, 0.5), rng.normal(0, 0.7)]))
                for a, b, r in grow_tree(rng, root, heading, calibre * rng.uniform(2.0, 3.5), inside=inside,
                                         outward=lambda p, c=centre: _unit(p - c), r_min=0.9, z_limit=z_limit,
                                         budget=400):
                    canvas.capsule(a, b, r + max(0.15 * r, 0.5), out=wall)
                    canvas.capsule(a, b, r, out=lumen)
        wall *= in_lung_or_near
        lumen *= in_lung_or_near
        vol += wall * (-50.0 - vol)
        vol += lumen * (-1000.0 - vol)

    # --- fissures: thin oblique sheets (one on the left, two on the right)
    if anatomy.fissures:
        zz, yy = (np.asarray(v, np.float32) for v in np.meshgrid(z, y, indexing="ij", sparse=True))
        half = len(x) // 2
        for side, count in ((-1, 1), (1, 2)):
            cols = slice(0, half) if side < 0 else slice(half, len(x))
            xx = np.asarray(x[cols], np.float32)[None, None, :]
            side_mask = lung_mask[:, :, cols]
            sub = vol[:, :, cols]
            for _ in range(count):
                normal = _unit(np.array([rng.normal(0, 0.2), rng.uniform(0.5, 1.0), rng.uniform(0.6, 1.2)]))
                offset = rng.uniform(-0.3, 0.3) * chest.ly
                d = np.abs(np.float32(normal[0]) * (xx - np.float32(side * chest.lung_x))
                           + np.float32(normal[1]) * (yy[..., None] - np.float32(chest.lung_cy + offset))
                           + np.float32(normal[2]) * zz[..., None])
                sheet = np.clip(1 - d / np.float32(0.6 * float(min(spacing))), 0, 1) * side_mask
                sub += sheet * (np.float32(rng.uniform(-300, -100)) - sub) * np.float32(0.8)

    # --- pleura: the lung surface one voxel in (in-plane), brighter
    if anatomy.pleura:
        in_plane = np.zeros((3, 3, 3), bool)
        in_plane[1] = ndimage.generate_binary_structure(2, 1)
        rim = lung_mask & ~ndimage.binary_erosion(lung_mask, structure=in_plane, border_value=1)
        vol[rim] += 0.5 * (rng.uniform(-250, -100) - vol[rim])
    return float(rng.uniform(*anatomy.noise_scale))
