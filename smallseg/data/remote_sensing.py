"""Synthetic aerial / satellite scenes with exact small-object ground truth (cars and small buildings).

A scene is planned once, as vectors, from its seed: a road grid at a random angle, city blocks with a land
use each (residential rows of houses, parking lots, commercial lots, parks, fields, farms), cars parked in
lots and along kerbs or driving in lanes, trees, unlabelled clutter (sheds, pools), a sun position for
shadows, haze and sensor noise levels. Pixels are then rendered from that plan window by window; every
random texture is a pure function of the pixel's global position (:mod:`smallseg.data.noise`), so a scene
written in windows is identical to the same scene rendered in one piece, and memory is bounded by the
window size, not the scene size.

Ground truth:

- ``instances``: (H, W) uint32, 0 = background, object ``k`` has id ``k`` (unique in the scene).
- ``classes``: (H, W) uint8, 0 = background, 1 = car, 2 = building.
- A pixel belongs to an object when its centre lies inside the object's footprint (a rotated rectangle);
  objects never overlap (they may touch: row houses, tight parking), ties on a shared edge go to the
  object listed first.
- The object table gives each footprint (centre, length, width, angle in map units) and its analytic area,
  plus the rendered pixel count ``area_px`` and ``area_m2 = area_px * pixel_size_m**2``.

Image: (bands, H, W), bands R, G, B (and NIR when ``bands=4``); uint8 is a display-like stretch of
reflectance (gamma 1/1.6, reflectance 0.5 -> 255), uint16 is linear 12-bit (reflectance 0.6 -> 4095).
With ``nodata_collar=True`` the valid footprint is a rotated quadrilateral, pixels outside it are the
nodata value 0 (valid pixels are never 0) and carry no objects.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from smallseg.data import landscape as _ls
from smallseg.data import sensor as _sensor
from smallseg.data.geometry import SpatialHash, convex_hull, inside_convex, rect_corners
from smallseg.data.noise import fractal_noise, pixel_gaussian, salt_of, value_noise
from smallseg.errors import SmallsegError
from smallseg.io.tables import SceneObjects

CLASS_NAMES = {1: "car", 2: "building", 3: "tree"}  # trees only in world "v2"
CAR, BUILDING, TREE = 1, 2, _ls.TREE
WORLDS = ("v1", "v2")

# Land uses of a block (FOREST and WATER only in world "v2").
FIELD, PARK, RESIDENTIAL, PARKING, COMMERCIAL, FARM = range(6)
FOREST, WATER = _ls.FOREST, _ls.WATER

# Reflectance palettes, bands (R, G, B, NIR).
_GRASS = np.array([0.075, 0.115, 0.050, 0.40], np.float32)
_DRYGRASS = np.array([0.170, 0.160, 0.100, 0.30], np.float32)
_SOIL = np.array([0.240, 0.200, 0.150, 0.28], np.float32)
_CROP = np.array([0.070, 0.125, 0.050, 0.46], np.float32)
_SHRUB = np.array([0.040, 0.070, 0.030, 0.33], np.float32)
_ASPHALT = np.array([0.110, 0.110, 0.115, 0.13], np.float32)
_CONCRETE = np.array([0.300, 0.290, 0.270, 0.31], np.float32)
_PAVING = np.array([0.220, 0.200, 0.180, 0.24], np.float32)
_TREE = np.array([0.050, 0.085, 0.040, 0.42], np.float32)
_MARKING = np.array([0.60, 0.60, 0.58, 0.55], np.float32)
_HAZE = np.array([0.50, 0.52, 0.56, 0.45], np.float32)
_SHADOW_TINT = np.array([0.36, 0.39, 0.48, 0.30], np.float32)

_CAR_COLOURS = np.array(
    [
        [0.55, 0.55, 0.55, 0.50],  # white
        [0.62, 0.62, 0.62, 0.55],  # white
        [0.04, 0.04, 0.045, 0.06],  # black
        [0.06, 0.06, 0.07, 0.08],  # black
        [0.25, 0.25, 0.26, 0.26],  # silver
        [0.16, 0.16, 0.17, 0.18],  # grey
        [0.32, 0.05, 0.05, 0.30],  # red
        [0.05, 0.10, 0.25, 0.18],  # blue
        [0.08, 0.14, 0.10, 0.20],  # dark green
        [0.40, 0.33, 0.12, 0.40],  # beige
    ],
    np.float32,
)
_CAR_COLOUR_P = np.array([0.14, 0.12, 0.12, 0.10, 0.16, 0.13, 0.08, 0.08, 0.03, 0.04])
_ROOF_COLOURS = np.array(
    [
        [0.30, 0.12, 0.08, 0.30],  # terracotta
        [0.36, 0.16, 0.10, 0.33],  # terracotta light
        [0.12, 0.12, 0.13, 0.14],  # dark slate
        [0.22, 0.22, 0.23, 0.24],  # grey concrete tile
        [0.40, 0.40, 0.40, 0.40],  # light membrane
        [0.20, 0.15, 0.11, 0.22],  # brown
        [0.16, 0.20, 0.18, 0.20],  # green metal
    ],
    np.float32,
)
_ROOF_COLOUR_P = np.array([0.25, 0.15, 0.17, 0.15, 0.12, 0.10, 0.06])
_CLUTTER_COLOURS = np.array(
    [
        [0.10, 0.35, 0.45, 0.08],  # pool
        [0.30, 0.28, 0.25, 0.30],  # shed, light
        [0.12, 0.10, 0.09, 0.14],  # shed, dark
        [0.45, 0.44, 0.42, 0.42],  # container / tarp
        [0.05, 0.06, 0.05, 0.10],  # dark patch
    ],
    np.float32,
)

# Rendering halo (px) around a window: covers the PSF blur (truncate 4 sigma, sigma <= 0.9).
_HALO_PX = 6
_STYLE_CAR, _STYLE_GABLE, _STYLE_HIP, _STYLE_FLAT = 0, 1, 2, 3


@dataclass
class RemoteSensingScene:
    """A rendered scene held in memory.

    Attributes:
        image: (bands, H, W) uint8 or uint16 image, bands R, G, B(, NIR).
        instances: (H, W) uint32 instance ids, 0 = background.
        classes: (H, W) uint8 class ids, 0 = background, 1 = car, 2 = building.
        transform: rasterio ``Affine`` pixel -> map transform (north up, square pixels).
        crs: rasterio ``CRS`` of the map coordinates.
        nodata: image nodata value (0) when the scene has a nodata collar, else None.
        pixel_size_m: ground sampling distance, metres per pixel.
        objects: the :class:`SceneObjects` of every object in ``instances``.
    """

    image: np.ndarray
    instances: np.ndarray
    classes: np.ndarray
    transform: object
    crs: object
    nodata: int | None
    pixel_size_m: float
    objects: SceneObjects

    def to_instances(self):
        """Ground truth as :class:`smallseg.instances.Instances` (ids = table ids, class_ids 1 car / 2 building)."""
        from smallseg.instances import Instances

        present = self.objects.area_px > 0
        ids = self.objects.id[present].astype(np.int64)
        centroids = np.zeros((len(ids), 2))
        if len(ids):
            centroids = np.asarray(ndimage.center_of_mass(np.ones(self.instances.shape, np.uint8),
                                                          self.instances, ids)).reshape(-1, 2)
        return Instances(labels=self.instances, ids=ids, class_ids=self.objects.class_id[present].astype(np.int32),
                         scores=np.ones(len(ids), np.float32), centroids_yx=centroids)


@dataclass(frozen=True)
class SceneSettings:
    """Everything that defines a scene; equal settings give bit-identical scenes.

    Attributes:
        height, width: scene size in pixels.
        seed: master seed.
        pixel_size_m: ground sampling distance, 0.1 to 2 m.
        bands: 3 (RGB) or 4 (RGB + NIR).
        dtype: ``"uint8"`` or ``"uint16"``.
        nodata_collar: surround the valid area with a nodata collar.
        crs: any CRS string rasterio accepts; should be projected with metre units.
        origin_xy: map coordinates of the scene's upper-left corner (metres).
        density: multiplies how built-up the scene is (0.3 sparse rural ... 1.5 dense urban); 1 = as drawn
            from the seed.
        world: ``"v1"`` the classic world (cars and buildings; bit-identical to earlier releases) or ``"v2"``
            (:mod:`smallseg.data.landscape`: trees as class 3, forests, water, snow, soil, roof detail,
            occlusion by crowns, and :mod:`smallseg.data.sensor` effects: PSF, noise, haze, radiometric
            jitter, JPEG).
        landscape: v2 only: ``"auto"`` (drawn from the seed), ``"urban"``, ``"suburban"``, ``"rural"``, ``"forest"``.
        season: v2 only: ``"auto"``, ``"summer"`` or ``"winter"`` (snow, low sun, leaf-off broadleaves).
    """

    height: int
    width: int
    seed: int
    pixel_size_m: float = 0.5
    bands: int = 3
    dtype: str = "uint8"
    nodata_collar: bool = False
    crs: str = "EPSG:32633"
    origin_xy: tuple[float, float] = (389_000.0, 5_819_000.0)
    density: float = 1.0
    world: str = "v1"
    landscape: str = "auto"
    season: str = "auto"

    def validate(self) -> None:
        if self.height < 16 or self.width < 16:
            raise SmallsegError(f"--size {self.height}x{self.width}: scenes must be at least 16x16 pixels")
        if not 0.1 <= self.pixel_size_m <= 2.0:
            raise SmallsegError(f"--pixel-size-m {self.pixel_size_m}: use 0.1 to 2 m (cars must span pixels)")
        if self.bands not in (1, 3, 4):
            raise SmallsegError(f"--bands {self.bands}: use 1 (panchromatic), 3 (RGB) or 4 (RGB+NIR)")
        if self.world not in WORLDS:
            raise SmallsegError(f"world {self.world!r}: use one of {', '.join(WORLDS)}")
        if self.landscape not in _ls.LANDSCAPES:
            raise SmallsegError(f"landscape {self.landscape!r}: use one of {', '.join(_ls.LANDSCAPES)}")
        if self.season not in _ls.SEASONS:
            raise SmallsegError(f"season {self.season!r}: use one of {', '.join(_ls.SEASONS)}")
        if self.world == "v1" and (self.landscape, self.season) != ("auto", "auto"):
            raise SmallsegError("landscape and season choose parts of world 'v2'; pass world='v2' as well")
        if self.dtype not in ("uint8", "uint16"):
            raise SmallsegError(f"--dtype {self.dtype}: use uint8 or uint16")
        if not 0.0 <= self.density <= 3.0:
            raise SmallsegError(f"--density {self.density}: use 0 to 3")
        import rasterio.crs
        import rasterio.errors

        try:
            crs = rasterio.crs.CRS.from_user_input(self.crs)
        except rasterio.errors.CRSError:
            raise SmallsegError(f"--crs {self.crs}: not a CRS rasterio knows; use e.g. EPSG:32633") from None
        if not crs.is_projected:
            raise SmallsegError(f"--crs {self.crs}: not a projected CRS; pixel sizes are in metres, use a UTM zone")

    @property
    def transform(self):
        from rasterio.transform import Affine

        x0, y0 = self.origin_xy
        return Affine(self.pixel_size_m, 0.0, x0, 0.0, -self.pixel_size_m, y0)

    @property
    def nodata(self) -> int | None:
        return 0 if self.nodata_collar else None


# ----------------------------------------------------------------------------------------------------------
# Planning: the whole scene as vectors, from the seed only.


@dataclass
class _Plan:
    settings: SceneSettings
    grid_angle: float
    road_s: np.ndarray  # positions of roads of constant s (m), with +-inf sentinels
    road_s_width: np.ndarray
    road_t: np.ndarray
    road_t_width: np.ndarray
    sidewalk_m: float
    block_use: np.ndarray  # (len(road_s) - 1, len(road_t) - 1) land use
    block_tone: np.ndarray  # same shape, float brightness factor
    block_angle: np.ndarray  # same shape, field stripe / lot direction (rad)
    block_period: np.ndarray  # same shape, field stripe period (m)
    block_lot: np.ndarray  # (..., 5) parking lot layout: along_s, slot width, slot origin, row origin, row period
    sun_dir: np.ndarray  # (2,) unit vector towards the sun in the (x, y-down) frame
    shadow_per_m: float  # horizontal shadow length per metre of height
    haze: float
    blur_px: float
    noise_level: float
    collar: np.ndarray | None  # (4, 2) convex valid polygon (m) or None
    # objects (N rows), geometry in metres, internal frame
    obj_cx: np.ndarray = field(default_factory=lambda: np.zeros(0))
    obj_cy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    obj_len: np.ndarray = field(default_factory=lambda: np.zeros(0))
    obj_wid: np.ndarray = field(default_factory=lambda: np.zeros(0))
    obj_ang: np.ndarray = field(default_factory=lambda: np.zeros(0))
    obj_height: np.ndarray = field(default_factory=lambda: np.zeros(0))
    obj_class: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    obj_style: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    obj_colour: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    obj_context: np.ndarray = field(default_factory=lambda: np.zeros(0, object))
    obj_bbox_m: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # x0, y0, x1, y1 incl. shadow
    clutter: list = field(default_factory=list)  # (cx, cy, length, width, angle, colour, round)
    tree_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tree_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tree_r: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tree_h: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tree_tone: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # world "v2" only: scene-wide choices, field surfaces per block, unlabelled shrubs (x, y, r, h, colour)
    world: "_ls.WorldParams | None" = None
    block_kind: np.ndarray | None = None
    shrubs: list = field(default_factory=list)
    shrub_array: np.ndarray = field(default_factory=lambda: np.zeros((0, 8)))  # x, y, r, h, colour (4)


def _road_positions(rng, lo, hi, spacing, drop_p):
    positions = []
    pos = lo - rng.uniform(0, spacing)
    while pos < hi + spacing:
        if rng.random() >= drop_p:
            positions.append(pos)
        pos += spacing * rng.uniform(0.7, 1.3)
    return np.array(positions, float)


def _plan_scene(s: SceneSettings) -> _Plan:
    rng = np.random.default_rng(np.random.SeedSequence([s.seed, 0x5CE7E]))
    W_m, H_m = s.width * s.pixel_size_m, s.height * s.pixel_size_m
    urban = float(np.clip(rng.beta(2.0, 1.6) * s.density, 0.0, 1.0))
    world = block_kind = None
    if s.world == "v2":  # v2 draws come from their own stream, so the classic world stays bit-identical
        rng2 = np.random.default_rng(np.random.SeedSequence([s.seed, 0x1A2D5]))
        world = _ls.draw_world(rng2, s.landscape, s.season, s.density)
        urban = world.urban
    theta = rng.uniform(-math.pi / 4, math.pi / 4) if rng.random() < 0.85 else 0.0
    ct, st = math.cos(theta), math.sin(theta)
    corners = np.array([[0, 0], [W_m, 0], [0, H_m], [W_m, H_m]], float)
    s_all = corners[:, 0] * ct + corners[:, 1] * st
    t_all = -corners[:, 0] * st + corners[:, 1] * ct
    spacing = 230.0 - 150.0 * urban
    road_s = _road_positions(rng, s_all.min(), s_all.max(), spacing * rng.uniform(0.8, 1.3), 0.45 * (1 - urban))
    road_t = _road_positions(rng, t_all.min(), t_all.max(), spacing * rng.uniform(0.8, 1.3), 0.45 * (1 - urban))

    def widths(n):
        main = rng.random(n) < 0.2
        return np.where(main, rng.uniform(11, 16, n), rng.uniform(6, 10, n))

    road_s_width, road_t_width = widths(len(road_s)), widths(len(road_t))
    inf = np.array([-1e12]), np.array([1e12])
    road_s = np.concatenate([inf[0], road_s, inf[1]])
    road_t = np.concatenate([inf[0], road_t, inf[1]])
    road_s_width = np.concatenate([[0.0], road_s_width, [0.0]])
    road_t_width = np.concatenate([[0.0], road_t_width, [0.0]])
    nb_s, nb_t = len(road_s) - 1, len(road_t) - 1
    p_use = np.array([
        0.30 * (1 - urban) + 0.02,  # field
        0.10 + 0.05 * urban,  # park
        0.15 + 0.45 * urban,  # residential
        0.05 + 0.15 * urban,  # parking
        0.02 + 0.12 * urban,  # commercial
        0.25 * (1 - urban) + 0.02,  # farm
    ])
    block_use = rng.choice(6, size=(nb_s, nb_t), p=p_use / p_use.sum())
    sun_az = rng.uniform(0, 2 * math.pi)
    zenith = math.radians(rng.uniform(25, 60))
    if world is not None:
        block_use, block_kind = _ls.reassign_blocks(block_use, world, rng2)
        if world.winter:  # a low winter sun: long shadows
            zenith = math.radians(rng2.uniform(50, 66))
    collar = None
    if s.nodata_collar:
        m = rng.uniform(0.01, 0.04, 4)
        f = rng.uniform(0.05, 0.25, 4)
        collar = np.array([
            [f[0] * W_m, m[0] * H_m], [W_m * (1 - m[1]), f[1] * H_m],
            [W_m * (1 - f[2]), H_m * (1 - m[2])], [m[3] * W_m, H_m * (1 - f[3])],
        ])
        collar = convex_hull(collar)
    plan = _Plan(
        settings=s, grid_angle=theta, road_s=road_s, road_s_width=road_s_width, road_t=road_t,
        road_t_width=road_t_width, sidewalk_m=rng.uniform(1.5, 3.0) if urban > 0.3 else 0.0,
        block_use=block_use, block_tone=rng.uniform(0.85, 1.15, (nb_s, nb_t)),
        block_angle=rng.uniform(0, math.pi, (nb_s, nb_t)), block_period=rng.uniform(2.5, 7.0, (nb_s, nb_t)),
        block_lot=np.zeros((nb_s, nb_t, 5)),
        sun_dir=np.array([math.cos(sun_az), math.sin(sun_az)]), shadow_per_m=math.tan(zenith),
        haze=float(rng.uniform(0.0, 0.22)), blur_px=float(rng.uniform(0.45, 0.85)),
        noise_level=float(rng.uniform(0.003, 0.012)), collar=collar,
    )
    plan.world, plan.block_kind = world, block_kind
    _place_objects(plan, rng, W_m, H_m, urban)
    return plan


class _Placer:
    """Collects non-overlapping objects, clutter and trees in the internal (x, y-down) metre frame."""

    def __init__(self, plan: _Plan, rng, W_m: float, H_m: float):
        self.plan, self.rng, self.W, self.H = plan, rng, W_m, H_m
        self.hash = SpatialHash(12.0)
        self.rows: list[tuple] = []
        self.clutter: list[tuple] = []
        self.trees: list[tuple] = []
        ct, st = math.cos(plan.grid_angle), math.sin(plan.grid_angle)
        self.ct, self.st = ct, st
        self.tree_context = "tree"  # v2: context of trees placed by the classic block functions
        self.shrubs: list[tuple] = []

    def to_xy(self, s: float, t: float) -> tuple[float, float]:
        return s * self.ct - t * self.st, s * self.st + t * self.ct

    def _inside_scene(self, poly: np.ndarray, margin: float = 0.5) -> bool:
        if (poly.min(0) < margin).any() or poly[:, 0].max() > self.W - margin or poly[:, 1].max() > self.H - margin:
            return False
        if self.plan.collar is not None and not inside_convex(self.plan.collar, poly[:, 0], poly[:, 1]).all():
            return False
        return True

    def _on_road(self, poly: np.ndarray, kerb: float = 0.0) -> bool:
        """True if any corner lies on a road (+kerb m) — buildings and clutter stay off roads."""
        plan = self.plan
        sc = poly[:, 0] * self.ct + poly[:, 1] * self.st
        tc = -poly[:, 0] * self.st + poly[:, 1] * self.ct
        for pos, width, vals in ((plan.road_s, plan.road_s_width, sc), (plan.road_t, plan.road_t_width, tc)):
            idx = np.searchsorted(pos, vals)
            for j in (idx - 1, idx):
                if (np.abs(vals - pos[j]) < width[j] / 2 + kerb).any():
                    return True
        return False

    def add_object(self, s, t, length, width, local_angle, cls, style, colour, height, context,
                   frame_angle=None, allow_road=False) -> bool:
        x, y = self.to_xy(s, t)
        angle = (self.plan.grid_angle if frame_angle is None else frame_angle) + local_angle
        poly = rect_corners(x, y, length, width, angle)
        if not self._inside_scene(poly):
            return False
        if not allow_road and self._on_road(poly, kerb=0.3):
            return False
        if self.hash.overlaps(poly):
            return False
        if not self._covers_a_pixel_centre(x, y, length, width, angle):
            return False
        self.hash.add(poly)
        self.rows.append((x, y, length, width, angle, height, cls, style, colour, context))
        return True

    def _covers_a_pixel_centre(self, x, y, length, width, angle) -> bool:
        """At coarse pixel sizes a thin object can fall between pixel centres: such an object would have no
        pixels, so it is not placed (every listed object has area_px >= 1)."""
        px = self.plan.settings.pixel_size_m
        if width >= 1.5 * px:  # a strip wider than 1.5 px always holds a pixel centre along a long side
            return True
        rad = 0.5 * math.hypot(length, width)
        cols = (np.arange(math.floor((x - rad) / px), math.ceil((x + rad) / px) + 1) + 0.5) * px
        rows = (np.arange(math.floor((y - rad) / px), math.ceil((y + rad) / px) + 1) + 0.5) * px
        X, Y = cols[None, :] - x, rows[:, None] - y
        u = X * math.cos(angle) + Y * math.sin(angle)
        v = -X * math.sin(angle) + Y * math.cos(angle)
        return bool(((np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)).any())

    def add_clutter(self, s, t, length, width, local_angle, colour, round_=False) -> bool:
        x, y = self.to_xy(s, t)
        poly = rect_corners(x, y, length, width, self.plan.grid_angle + local_angle)
        if not self._inside_scene(poly) or self._on_road(poly, 0.5) or self.hash.overlaps(poly, 0.0):
            return False
        self.hash.add(poly)
        self.clutter.append((x, y, length, width, self.plan.grid_angle + local_angle, colour, round_))
        return True

    def add_tree(self, s, t, radius, height, context=None) -> bool:
        if self.plan.world is not None:
            return self._add_tree_v2(s, t, radius, height, context or self.tree_context)
        x, y = self.to_xy(s, t)
        square = rect_corners(x, y, 2 * radius, 2 * radius, 0.0)
        if not self._inside_scene(square, 0.0) or self._on_road(square, 0.2):
            return False
        # Trees may overlap each other but never an object (no occluded ground truth).
        if self.hash.overlaps(square, 0.0):
            return False
        self.trees.append((x, y, radius, height, self.rng.uniform(0.75, 1.25)))
        return True

    def _add_tree_v2(self, s, t, radius, height, context) -> bool:
        """World v2: a crown may overhang roads, cars and roofs (the visible part of each is labelled, see
        :func:`smallseg.data.landscape.finalize_trees`); its trunk stands on open ground. Crowns under
        :data:`~smallseg.data.landscape.MIN_TREE_RADIUS_M` are shrubs: unlabelled, and kept off objects."""
        x, y = self.to_xy(s, t)
        shrub = radius < _ls.MIN_TREE_RADIUS_M
        if not (0.0 <= x <= self.W and 0.0 <= y <= self.H):
            return False
        if self.plan.collar is not None and not inside_convex(self.plan.collar, np.array([x]), np.array([y]))[0]:
            return False
        foot = rect_corners(x, y, 2 * radius * _ls.CROWN_REACH if shrub else 0.8,
                            2 * radius * _ls.CROWN_REACH if shrub else 0.8, 0.0)
        if self._on_road(foot, 0.3) or self.hash.overlaps(foot, 0.0):
            return False
        rng = self.rng
        style = _ls.tree_style(rng, self.plan.world)
        tone = rng.uniform(0.75, 1.25)
        if style == _ls.STYLE_CONIFER:
            radius = max(radius * 0.8, _ls.MIN_TREE_RADIUS_M) if not shrub else radius
        colour = _ls.tree_colour(style if not shrub else -1, tone, rng)
        if shrub:
            self.shrubs.append((x, y, radius, height, colour))
        else:
            self.trees.append((x, y, radius, height, style, colour, context))
        return True


def _car_dims(rng):
    length = rng.uniform(3.6, 4.9)
    return length, rng.uniform(1.65, 1.95) if length > 4.0 else rng.uniform(1.55, 1.8)


def _car_colour(rng):
    base = _CAR_COLOURS[rng.choice(len(_CAR_COLOURS), p=_CAR_COLOUR_P)]
    return (base * rng.uniform(0.9, 1.1)).astype(np.float32)


def _roof_colour(rng):
    base = _ROOF_COLOURS[rng.choice(len(_ROOF_COLOURS), p=_ROOF_COLOUR_P)]
    return (base * rng.uniform(0.85, 1.15)).astype(np.float32)


def _place_objects(plan: _Plan, rng, W_m: float, H_m: float, urban: float) -> None:
    P = _Placer(plan, rng, W_m, H_m)
    rs, rt = plan.road_s, plan.road_t
    sw = plan.sidewalk_m
    # Scene extent in grid coordinates, to skip blocks and roads outside it.
    corners = np.array([[0, 0], [W_m, 0], [0, H_m], [W_m, H_m]], float)
    s_lo = (corners[:, 0] * P.ct + corners[:, 1] * P.st).min()
    s_hi = (corners[:, 0] * P.ct + corners[:, 1] * P.st).max()
    t_lo = (-corners[:, 0] * P.st + corners[:, 1] * P.ct).min()
    t_hi = (-corners[:, 0] * P.st + corners[:, 1] * P.ct).max()

    for i in range(len(rs) - 1):
        a_s = max(rs[i] + plan.road_s_width[i] / 2 + sw, s_lo - 5)
        b_s = min(rs[i + 1] - plan.road_s_width[i + 1] / 2 - sw, s_hi + 5)
        if b_s - a_s < 8:
            continue
        for j in range(len(rt) - 1):
            a_t = max(rt[j] + plan.road_t_width[j] / 2 + sw, t_lo - 5)
            b_t = min(rt[j + 1] - plan.road_t_width[j + 1] / 2 - sw, t_hi + 5)
            if b_t - a_t < 8:
                continue
            use = plan.block_use[i, j]
            box = (a_s, b_s, a_t, b_t)
            if plan.world is not None:
                P.tree_context = _V2_TREE_CONTEXT.get(int(use), "tree")
            if use == RESIDENTIAL:
                _residential(P, rng, box)
            elif use == PARKING:
                plan.block_lot[i, j] = _parking_lot(P, rng, box)
            elif use == COMMERCIAL:
                _commercial(P, rng, box)
            elif use == FARM:
                _farm(P, rng, box)
            elif use == PARK:
                _park(P, rng, box)
            elif use == FIELD:
                _hedgerow(P, rng, box)
            elif use == FOREST:
                _ls.place_forest(P, rng, box, plan.world)
            if plan.world is not None and use in (RESIDENTIAL, COMMERCIAL, PARKING):
                _ls.place_street_trees(P, rng, box, sw)
            if plan.world is not None and use in _V2_SCATTER:
                _ls.place_scattered(P, rng, box, _V2_SCATTER[int(use)], P.tree_context)
    _road_cars(P, rng, urban, (s_lo, s_hi, t_lo, t_hi))
    if plan.world is not None:
        _finish_trees_v2(P)

    rows = P.rows
    n = len(rows)
    plan.obj_cx = np.array([r[0] for r in rows], float)
    plan.obj_cy = np.array([r[1] for r in rows], float)
    plan.obj_len = np.array([r[2] for r in rows], float)
    plan.obj_wid = np.array([r[3] for r in rows], float)
    plan.obj_ang = np.array([r[4] for r in rows], float)
    plan.obj_height = np.array([r[5] for r in rows], float)
    plan.obj_class = np.array([r[6] for r in rows], np.uint8)
    plan.obj_style = np.array([r[7] for r in rows], np.int8)
    plan.obj_colour = np.array([r[8] for r in rows], np.float32).reshape(n, 4)
    plan.obj_context = np.array([r[9] for r in rows], object)
    radius = 0.5 * np.hypot(plan.obj_len, plan.obj_wid)
    shadow = plan.obj_height * plan.shadow_per_m
    sx, sy = -plan.sun_dir[0] * shadow, -plan.sun_dir[1] * shadow
    plan.obj_bbox_m = np.stack([
        plan.obj_cx - radius + np.minimum(sx, 0), plan.obj_cy - radius + np.minimum(sy, 0),
        plan.obj_cx + radius + np.maximum(sx, 0), plan.obj_cy + radius + np.maximum(sy, 0),
    ], 1).reshape(n, 4)
    plan.clutter = P.clutter
    plan.shrubs = P.shrubs
    plan.shrub_array = np.array([(x, y, r, h, *c) for x, y, r, h, c in P.shrubs], float).reshape(-1, 8)
    trees = np.array(P.trees, float).reshape(-1, 5)
    plan.tree_x, plan.tree_y, plan.tree_r, plan.tree_h, plan.tree_tone = trees.T


# World v2: context of trees by the block they grow in, and isolated trees / shrubs per hectare.
_V2_TREE_CONTEXT = {FIELD: "field", PARK: "park", RESIDENTIAL: "garden", PARKING: "street", COMMERCIAL: "street",
                    FARM: "farm", FOREST: "forest"}
_V2_SCATTER = {FIELD: 1.5, FARM: 3.0, PARK: 12.0, RESIDENTIAL: 6.0}


def _finish_trees_v2(P: _Placer) -> None:
    """Keep the crowns that leave every object visible (landscape.finalize_trees) and list them as class-3
    objects after the cars and buildings, lowest first (the drawing order: a taller crown covers a lower)."""
    plan = P.plan
    rects = np.array([r[:5] for r in P.rows], float).reshape(-1, 5)
    collar = plan.collar
    valid_fn = None if collar is None else (lambda X, Y: inside_convex(collar, X, Y))
    for x, y, r, h, style, colour, context in _ls.finalize_trees(P.trees, rects, plan.settings.pixel_size_m,
                                                                  P.W, P.H, valid_fn):
        P.rows.append((x, y, 2 * r, 2 * r, 0.0, h, TREE, style, colour, context))
    P.trees = []


def _residential(P: _Placer, rng, box) -> None:
    a_s, b_s, a_t, b_t = box
    setback = rng.uniform(2.5, 8.0)
    row_houses = rng.random() < 0.4
    roof_style = rng.choice([_STYLE_GABLE, _STYLE_HIP, _STYLE_FLAT], p=[0.55, 0.25, 0.20])
    jitter = math.radians(rng.uniform(0, 12)) if rng.random() < 0.3 else 0.0
    # Four edges: (start, end, fixed coordinate, inward sign, along-s?)
    edges = [
        (a_s, b_s, a_t, +1, True), (a_s, b_s, b_t, -1, True),
        (a_t, b_t, a_s, +1, False), (a_t, b_t, b_s, -1, False),
    ]
    max_depth = 14.0
    for lo, hi, fixed, sign, along_s in edges:
        pos = lo + (setback + max_depth if not along_s else 0.5)
        end = hi - (setback + max_depth if not along_s else 0.5)
        run = 0
        colour = _roof_colour(rng)
        height = rng.uniform(5, 10)
        while pos < end:
            front = rng.uniform(6.0, 9.0) if row_houses else rng.uniform(8.0, 16.0)
            depth = rng.uniform(8.0, 12.0) if row_houses else rng.uniform(7.0, 14.0)
            if pos + front > end:
                break
            centre_along = pos + front / 2
            centre_across = fixed + sign * (setback + depth / 2)
            s, t = (centre_along, centre_across) if along_s else (centre_across, centre_along)
            # length along the frontage when wider, keep length >= width
            local = 0.0 if along_s else math.pi / 2
            length, width = front, depth
            if depth > front:
                length, width, local = depth, front, local + math.pi / 2
            if not row_houses:
                colour = _roof_colour(rng)
                height = rng.uniform(3.5, 9.0)
                local += rng.uniform(-jitter, jitter)
            style = roof_style if row_houses else rng.choice([_STYLE_GABLE, _STYLE_HIP, _STYLE_FLAT], p=[0.5, 0.3, 0.2])
            placed = P.add_object(s, t, length, width, local, BUILDING, style, colour, height,
                                  "house_row" if row_houses else "detached_house")
            # driveway car in front of some detached houses
            if placed and not row_houses and setback > 5.5 and rng.random() < 0.45:
                cl, cw = _car_dims(rng)
                off = rng.uniform(-front / 2 + cw, front / 2 - cw)
                cs_along, cs_across = pos + front / 2 + off, fixed + sign * (setback / 2)
                cs, ctt = (cs_along, cs_across) if along_s else (cs_across, cs_along)
                car_local = (math.pi / 2 if along_s else 0.0) + rng.uniform(-0.1, 0.1) + (math.pi if rng.random() < 0.5 else 0)
                P.add_object(cs, ctt, cl, cw, car_local, CAR, _STYLE_CAR, _car_colour(rng), 1.5, "driveway")
            # garden clutter and trees behind the house
            if placed and rng.random() < 0.35:
                back = fixed + sign * (setback + depth + rng.uniform(2.0, 6.0))
                along = pos + rng.uniform(0, front)
                cs, ctt = (along, back) if along_s else (back, along)
                kind = rng.choice(len(_CLUTTER_COLOURS))
                size = rng.uniform(2.0, 6.0) if kind == 0 else rng.uniform(1.5, 3.0)
                P.add_clutter(cs, ctt, size * rng.uniform(1.0, 1.6), size, rng.uniform(-0.2, 0.2),
                              _CLUTTER_COLOURS[kind], round_=bool(kind == 4))
            if rng.random() < 0.5:
                back = fixed + sign * (setback + depth + rng.uniform(3.0, 12.0))
                along = pos + rng.uniform(0, front)
                cs, ctt = (along, back) if along_s else (back, along)
                P.add_tree(cs, ctt, rng.uniform(1.5, 4.0), rng.uniform(4, 12))
            run += 1
            gap = 0.0 if row_houses and (run % rng.integers(3, 8)) else rng.uniform(2.5, 9.0)
            pos += front + gap


def _parking_lot(P: _Placer, rng, box, fill: float | None = None) -> tuple:
    """Rows of slots (pairs back to back, then an aisle) filled with cars; returns the lot layout
    (along_s, slot width, slot origin, row origin, row period) for painting slot lines."""
    a_s, b_s, a_t, b_t = box
    margin = rng.uniform(1.0, 4.0)
    a_s, b_s, a_t, b_t = a_s + margin, b_s - margin, a_t + margin, b_t - margin
    along_s = rng.random() < 0.5
    slot_w = rng.uniform(1.9, 2.15) if rng.random() < 0.3 else rng.uniform(2.3, 2.7)  # tight lots: cars touch
    occupancy = fill if fill is not None else rng.uniform(0.35, 0.95)
    slot_depth = 5.0
    aisle = rng.uniform(5.5, 7.0)
    lo_a, hi_a = (a_t, b_t) if along_s else (a_s, b_s)  # across rows
    lo_r, hi_r = (a_s, b_s) if along_s else (a_t, b_t)  # along rows
    pos = lo_a
    row = 0
    while pos + slot_depth <= hi_a:
        centre_across = pos + slot_depth / 2
        q = lo_r + slot_w / 2
        while q + slot_w / 2 <= hi_r:
            if rng.random() < occupancy:
                cl, cw = _car_dims(rng)
                cw = min(cw, slot_w)  # never wider than the slot
                across = centre_across + rng.uniform(-0.3, 0.3) * (slot_depth - cl) / 2
                s, t = (q, across) if along_s else (across, q)
                local = (math.pi / 2 if along_s else 0.0) + rng.normal(0, 0.03) + (math.pi if rng.random() < 0.5 else 0)
                P.add_object(s, t, cl, cw, local, CAR, _STYLE_CAR, _car_colour(rng), 1.5, "parking_lot")
            q += slot_w
        row += 1
        pos += slot_depth + (aisle if row % 2 == 0 else 0.0)
    return (1.0 if along_s else 0.0, slot_w, lo_r, lo_a, 2 * slot_depth + aisle)


def _commercial(P: _Placer, rng, box) -> None:
    a_s, b_s, a_t, b_t = box
    mid = a_s + (b_s - a_s) * rng.uniform(0.35, 0.6)
    # buildings 12-20 m (small-building range), in a loose grid on one side
    s = a_s + 2.0
    while s + 12 < mid:
        t = a_t + 2.0
        size_s = rng.uniform(12, 20)
        while t + 12 < b_t - 2:
            size_t = rng.uniform(12, 20)
            length, width, local = (size_s, size_t, 0.0) if size_s >= size_t else (size_t, size_s, math.pi / 2)
            P.add_object(s + size_s / 2, t + size_t / 2, length, width, local, BUILDING, _STYLE_FLAT,
                         _roof_colour(rng) * 1.1, rng.uniform(4, 12), "commercial")
            t += size_t + rng.uniform(3, 10)
        s += size_s + rng.uniform(3, 10)
    _parking_lot(P, rng, (mid + 2, b_s, a_t, b_t))


def _farm(P: _Placer, rng, box) -> None:
    a_s, b_s, a_t, b_t = box
    # a cluster of 2-5 buildings at an arbitrary angle, a few cars and trees around
    cs, ct = rng.uniform(a_s + 20, max(a_s + 21, b_s - 20)), rng.uniform(a_t + 20, max(a_t + 21, b_t - 20))
    angle = rng.uniform(-math.pi / 2, math.pi / 2)
    ca, sa = math.cos(angle), math.sin(angle)
    for _ in range(rng.integers(2, 6)):
        du, dv = rng.uniform(-18, 18, 2)
        length, width = sorted(rng.uniform(6, 20, 2))[::-1]
        P.add_object(cs + du * ca - dv * sa, ct + du * sa + dv * ca, length, width, angle + (math.pi / 2 if rng.random() < 0.3 else 0),
                     BUILDING, rng.choice([_STYLE_GABLE, _STYLE_FLAT]), _roof_colour(rng), rng.uniform(4, 9), "farm")
    for _ in range(rng.integers(0, 4)):
        du, dv = rng.uniform(-22, 22, 2)
        cl, cw = _car_dims(rng)
        P.add_object(cs + du * ca - dv * sa, ct + du * sa + dv * ca, cl, cw, rng.uniform(0, math.pi), CAR, _STYLE_CAR,
                     _car_colour(rng), 1.5, "farm")
    for _ in range(rng.integers(3, 15)):
        P.add_tree(cs + rng.normal(0, 20), ct + rng.normal(0, 20), rng.uniform(2, 5), rng.uniform(6, 15))
    _hedgerow(P, rng, box)


def _park(P: _Placer, rng, box) -> None:
    a_s, b_s, a_t, b_t = box
    area = (b_s - a_s) * (b_t - a_t)
    for _ in range(int(rng.integers(1, 5) + area / 2500)):
        cs, ct = rng.uniform(a_s, b_s), rng.uniform(a_t, b_t)
        spread = rng.uniform(5, 25)
        for _ in range(rng.integers(3, 25)):
            P.add_tree(cs + rng.normal(0, spread), ct + rng.normal(0, spread), rng.uniform(1.5, 5.0), rng.uniform(5, 18))


def _hedgerow(P: _Placer, rng, box) -> None:
    if rng.random() < 0.5:
        return
    a_s, b_s, a_t, b_t = box
    t = a_t + 3 if rng.random() < 0.5 else b_t - 3
    s = a_s
    while s < b_s:
        P.add_tree(s, t + rng.normal(0, 0.6), rng.uniform(1.5, 3.5), rng.uniform(4, 10))
        s += rng.uniform(2.5, 12)


def _road_cars(P: _Placer, rng, urban: float, extent) -> None:
    plan = P.plan
    s_lo, s_hi, t_lo, t_hi = extent
    families = (
        (plan.road_s, plan.road_s_width, plan.road_t, plan.road_t_width, t_lo, t_hi, False),
        (plan.road_t, plan.road_t_width, plan.road_s, plan.road_s_width, s_lo, s_hi, True),
    )
    for pos, width, cross, cross_w, lo, hi, along_s in families:
        for k in range(1, len(pos) - 1):
            c, w = pos[k], width[k]
            lanes = [(-w / 4, 0.0), (w / 4, math.pi)]
            kerb = [(-(w / 2 - 1.1), 0.0), (w / 2 - 1.1, math.pi)] if w >= 8 and urban > 0.25 else []
            traffic = rng.uniform(0.0, 0.04) * (0.3 + urban)
            parked = rng.uniform(0.2, 0.85) if kerb else 0.0
            for offset, heading in lanes + kerb:
                is_kerb = (offset, heading) in kerb
                if is_kerb and kerb and abs(offset) < 2.5:
                    continue
                q = lo - rng.uniform(0, 10)
                while q < hi:
                    step = rng.uniform(5.6, 7.0) if is_kerb else rng.exponential(1 / max(traffic, 1e-3))
                    q += step
                    if is_kerb and rng.random() > parked:
                        continue
                    # skip intersections
                    j = np.searchsorted(cross, q)
                    if min(abs(q - cross[j - 1]) - cross_w[j - 1] / 2, abs(cross[j] - q) - cross_w[j] / 2) < 4:
                        continue
                    cl, cw = _car_dims(rng)
                    along_angle = (0.0 if along_s else math.pi / 2) + heading + rng.normal(0, 0.02)
                    s, t = (q, c + offset) if along_s else (c + offset, q)
                    P.add_object(s, t, cl, cw, along_angle, CAR, _STYLE_CAR, _car_colour(rng), 1.5,
                                 "kerbside" if is_kerb else "lane", allow_road=True)


# ----------------------------------------------------------------------------------------------------------
# Rendering: one window at a time, from the plan only.


def _nearest_road(coord: np.ndarray, positions: np.ndarray, widths: np.ndarray):
    """Distance (m) to the nearest road of one family, its half width, and the block index (searchsorted)."""
    idx = np.searchsorted(positions.astype(np.float32), coord).astype(np.int32)
    d_lo = coord - positions.astype(np.float32)[idx - 1]
    d_hi = positions.astype(np.float32)[idx] - coord
    lower = d_lo < d_hi
    half = (widths.astype(np.float32) / 2)
    return np.where(lower, d_lo, d_hi), np.where(lower, half[idx - 1], half[idx]), idx


def _render_window(plan: _Plan, row0: int, row1: int, col0: int, col1: int):
    """Render rows [row0, row1) x cols [col0, col1): returns (image float32 (B, h, w) reflectance,
    instances uint32 (h, w), valid bool (h, w) or None)."""
    s = plan.settings
    px = s.pixel_size_m
    halo = _HALO_PX
    rows = np.arange(row0 - halo, row1 + halo)
    cols = np.arange(col0 - halo, col1 + halo)
    ys = (rows + 0.5) * px
    xs = (cols + 0.5) * px
    h, w = len(rows), len(cols)
    nb = 4 if s.bands == 1 else s.bands  # pan is rendered from R, G, B, NIR
    ct, st = math.cos(plan.grid_angle), math.sin(plan.grid_angle)
    # float32 grid coordinates: ~2 mm resolution at 20 km, plenty for textures and road edges
    S = xs.astype(np.float32)[None, :] * np.float32(ct) + ys.astype(np.float32)[:, None] * np.float32(st)
    T = ys.astype(np.float32)[:, None] * np.float32(ct) - xs.astype(np.float32)[None, :] * np.float32(st)
    seed = s.seed

    # --- land use per pixel and road distances
    dist_s, half_s, i_s = _nearest_road(S, plan.road_s, plan.road_s_width)
    dist_t, half_t, i_t = _nearest_road(T, plan.road_t, plan.road_t_width)
    block = (i_s - 1) * np.int32(plan.block_use.shape[1]) + (i_t - 1)
    use = plan.block_use.ravel().astype(np.uint8)[block]
    tone = plan.block_tone.ravel().astype(np.float32)[block]

    # --- ground texture
    n_large = fractal_noise(ys, xs, 90.0, salt_of(seed, "large"), octaves=3)
    n_mid = fractal_noise(ys, xs, 12.0, salt_of(seed, "mid"), octaves=3)
    n_fine = value_noise(ys, xs, 1.3, salt_of(seed, "fine"))
    mix = np.clip(0.5 + 1.6 * n_large + 0.8 * n_mid, 0, 1)
    img = np.empty((nb, h, w), np.float32)
    # by land use (FOREST and WATER, v2 only, are repainted by landscape.ground)
    lo_pal = np.stack([_CROP, _GRASS, _GRASS, _ASPHALT * 1.3, _PAVING, _CROP, _SHRUB, _ASPHALT])
    hi_pal = np.stack([_SOIL, _DRYGRASS, _PAVING, _ASPHALT * 1.6, _CONCRETE, _DRYGRASS, _SOIL, _ASPHALT])
    for b in range(nb):
        lo_b, hi_b = lo_pal[:, b][use], hi_pal[:, b][use]
        img[b] = lo_b + (hi_b - lo_b) * mix
    # crop stripes in fields and farms
    field_mask = (use == FIELD) | (use == FARM)
    phase = None
    if field_mask.any():
        ang = plan.block_angle.ravel().astype(np.float32)[block]
        period = plan.block_period.ravel().astype(np.float32)[block]
        phase = (S * np.cos(ang) + T * np.sin(ang)) / period
        stripe = np.where(field_mask, 0.8 + 0.35 * (0.5 + 0.5 * np.cos(np.float32(2 * np.pi) * phase)), 1)
        img *= stripe.astype(np.float32)
    # vegetation patches (shrubs, hedges, unkempt grass)
    veg_thr = np.array([0.35, 0.12, 0.22, 0.6, 0.5, 0.3, 0.15, 9.0], np.float32)[use]
    n_veg = fractal_noise(ys, xs, 25.0, salt_of(seed, "veg"), octaves=4)
    veg = np.clip((n_veg - veg_thr) * 8.0, 0, 1)
    texture = (1.0 + 0.16 * n_mid + 0.10 * n_fine) * tone
    for b in range(nb):
        img[b] = (img[b] * (1 - veg) + _SHRUB[b] * (0.8 + 0.4 * n_fine) * veg) * texture

    if plan.world is not None:  # forest floor, water, ploughed and bare fields
        edge_m = np.minimum(np.abs(dist_s - half_s), np.abs(dist_t - half_t))
        kind = plan.block_kind.ravel()[block]
        _ls.ground(img, use, kind, phase, edge_m, n_large, n_mid, n_fine, ys, xs, seed)

    # --- roads, kerbs/sidewalks, markings
    road = (dist_s < half_s) | (dist_t < half_t)
    walk = plan.sidewalk_m
    sidewalk = ~road & (((dist_s < half_s + walk) & (half_s > 0)) | ((dist_t < half_t + walk) & (half_t > 0)))
    road_tone = (1.0 + 0.25 * value_noise(ys, xs, 400.0, salt_of(seed, "roadtone"))).astype(np.float32)
    for b in range(nb):
        img[b] = np.where(road, _ASPHALT[b] * road_tone * (1 + 0.08 * n_mid + 0.07 * n_fine), img[b])
        img[b] = np.where(sidewalk, _CONCRETE[b] * (1 + 0.05 * n_fine), img[b])
    # dashed centre lines (sub-pixel width: painted with area coverage)
    line_w = 0.15
    cov_s = np.clip((line_w / 2 + px / 2 - dist_s) / px, 0, 1) * min(1.0, line_w / px)
    cov_s *= (np.mod(T, 9.0) < 3.0) & (half_s >= 4) & (dist_t > half_t)
    cov_t = np.clip((line_w / 2 + px / 2 - dist_t) / px, 0, 1) * min(1.0, line_w / px)
    cov_t *= (np.mod(S, 9.0) < 3.0) & (half_t >= 4) & (dist_s > half_s)
    mark = np.maximum(cov_s, cov_t).astype(np.float32)
    # parking slot lines, aligned with the lot's slots and rows
    lot = (use == PARKING) & ~road & ~sidewalk
    if lot.any():
        lots = plan.block_lot.reshape(-1, 5).astype(np.float32)
        along_s, slot_w, q0, a0, period = (lots[:, i][block] for i in range(5))
        q = np.where(along_s > 0, S, T)
        a = np.where(along_s > 0, T, S)
        in_rows = (np.mod(a - a0, np.maximum(period, 1)) < 10.0) & (slot_w > 0)
        d_line = np.abs(np.mod(q - q0 + slot_w / 2, np.maximum(slot_w, 1)) - slot_w / 2)
        slot_cov = np.clip((line_w / 2 + px / 2 - d_line) / px, 0, 1) * min(1.0, line_w / px)
        mark = np.maximum(mark, np.where(lot & in_rows, slot_cov * 0.8, 0).astype(np.float32))
    for b in range(nb):
        img[b] += (_MARKING[b] - img[b]) * mark
    if plan.world is not None and plan.world.winter:
        _ls.snow(img, road, use, edge_m, plan.world.snow_cover, n_fine, ys, xs, seed)

    # --- objects, clutter, shadows
    instances = np.zeros((h, w), np.uint32)
    shadow = np.ones((h, w), np.float32)
    x_lo, x_hi = xs[0] - px, xs[-1] + px
    y_lo, y_hi = ys[0] - px, ys[-1] + px
    bb = plan.obj_bbox_m
    sel = np.flatnonzero((bb[:, 2] >= x_lo) & (bb[:, 0] <= x_hi) & (bb[:, 3] >= y_lo) & (bb[:, 1] <= y_hi))
    tsel = np.flatnonzero(
        (plan.tree_x + plan.tree_r * 4 + plan.tree_h * plan.shadow_per_m >= x_lo)
        & (plan.tree_x - plan.tree_r * 4 - plan.tree_h * plan.shadow_per_m <= x_hi)
        & (plan.tree_y + plan.tree_r * 4 + plan.tree_h * plan.shadow_per_m >= y_lo)
        & (plan.tree_y - plan.tree_r * 4 - plan.tree_h * plan.shadow_per_m <= y_hi)
    )
    sun = plan.sun_dir
    off_per_m = -sun * plan.shadow_per_m

    def sub_range(lo_m, hi_m, coords):
        a = int(np.searchsorted(coords, lo_m, side="left"))
        b_ = int(np.searchsorted(coords, hi_m, side="right"))
        return a, b_

    # shadows of objects (on ground and on cars; roofs and crowns are drawn over them)
    for k in sel:
        if plan.obj_class[k] != BUILDING:  # cars: short shadows below; trees (v2): crown shadows below
            continue
        corners = rect_corners(plan.obj_cx[k], plan.obj_cy[k], plan.obj_len[k], plan.obj_wid[k], plan.obj_ang[k])
        hull = convex_hull(np.concatenate([corners, corners + off_per_m * plan.obj_height[k]]))
        r0, r1 = sub_range(hull[:, 1].min(), hull[:, 1].max(), ys)
        c0, c1 = sub_range(hull[:, 0].min(), hull[:, 0].max(), xs)
        if r1 <= r0 or c1 <= c0:
            continue
        m = inside_convex(hull, xs[None, c0:c1], ys[r0:r1, None])
        shadow[r0:r1, c0:c1][m] *= 0.42
    for k in tsel:
        tx, ty, tr = plan.tree_x[k], plan.tree_y[k], plan.tree_r[k]
        ex, ey = tx + off_per_m[0] * plan.tree_h[k] * 0.7, ty + off_per_m[1] * plan.tree_h[k] * 0.7
        r0, r1 = sub_range(min(ty, ey) - tr, max(ty, ey) + tr, ys)
        c0, c1 = sub_range(min(tx, ex) - tr, max(tx, ex) + tr, xs)
        if r1 <= r0 or c1 <= c0:
            continue
        X, Y = xs[None, c0:c1], ys[r0:r1, None]
        dx, dy = ex - tx, ey - ty
        tt = np.clip(((X - tx) * dx + (Y - ty) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
        d = np.hypot(X - (tx + tt * dx), Y - (ty + tt * dy))
        shadow[r0:r1, c0:c1][d < tr * 0.9] *= 0.5
    veg = _vegetation_in_window(plan, sel, x_lo, x_hi, y_lo, y_hi)
    if veg is not None:
        outline, leaf = n_fine, _ls.crown_noise(ys, xs, px, seed)
        _ls.crown_shadows(shadow, veg, off_per_m, xs, ys, outline)
    ground_shadow = shadow.copy()
    for k in sel:  # car shadows (short) on the ground only
        if plan.obj_class[k] != CAR:
            continue
        corners = rect_corners(plan.obj_cx[k], plan.obj_cy[k], plan.obj_len[k], plan.obj_wid[k], plan.obj_ang[k])
        hull = convex_hull(np.concatenate([corners, corners + off_per_m * plan.obj_height[k]]))
        r0, r1 = sub_range(hull[:, 1].min(), hull[:, 1].max(), ys)
        c0, c1 = sub_range(hull[:, 0].min(), hull[:, 0].max(), xs)
        if r1 > r0 and c1 > c0:
            ground_shadow[r0:r1, c0:c1][inside_convex(hull, xs[None, c0:c1], ys[r0:r1, None])] *= 0.55
    tint = _SHADOW_TINT / _SHADOW_TINT.mean()
    for b in range(nb):
        gs = ground_shadow
        img[b] *= gs * (1 + (tint[b] - 1) * (1 - gs))

    # clutter (unlabelled): pools, sheds, tarps
    for cx, cy, cl, cw, ca, colour, round_ in plan.clutter:
        rad = 0.5 * math.hypot(cl, cw) + px
        r0, r1 = sub_range(cy - rad, cy + rad, ys)
        c0, c1 = sub_range(cx - rad, cx + rad, xs)
        if r1 <= r0 or c1 <= c0:
            continue
        X, Y = xs[None, c0:c1] - cx, ys[r0:r1, None] - cy
        u = X * math.cos(ca) + Y * math.sin(ca)
        v = -X * math.sin(ca) + Y * math.cos(ca)
        if round_:
            sd = (0.5 * cw - np.hypot(u * cw / cl, v))
        else:
            sd = np.minimum(cl / 2 - np.abs(u), cw / 2 - np.abs(v))
        alpha = np.clip(0.5 + sd / px, 0, 1).astype(np.float32)
        edge = np.where(sd < 0.3, 0.8, 1.0).astype(np.float32)
        for b in range(nb):
            img[b, r0:r1, c0:c1] += (colour[b] * edge - img[b, r0:r1, c0:c1]) * alpha

    # labelled objects, in table order (first listed wins a shared edge pixel)
    for k in sel:
        if plan.obj_class[k] == TREE:  # v2 crowns: painted over everything below
            continue
        cx, cy, L, Wd, ang = plan.obj_cx[k], plan.obj_cy[k], plan.obj_len[k], plan.obj_wid[k], plan.obj_ang[k]
        rad = 0.5 * math.hypot(L, Wd) + px
        r0, r1 = sub_range(cy - rad, cy + rad, ys)
        c0, c1 = sub_range(cx - rad, cx + rad, xs)
        if r1 <= r0 or c1 <= c0:
            continue
        X, Y = xs[None, c0:c1] - cx, ys[r0:r1, None] - cy
        ca_, sa_ = math.cos(ang), math.sin(ang)
        u = X * ca_ + Y * sa_
        v = -X * sa_ + Y * ca_
        sd = np.minimum(L / 2 - np.abs(u), Wd / 2 - np.abs(v))
        inside = sd >= 0
        sub = instances[r0:r1, c0:c1]
        sub[inside & (sub == 0)] = k + 1
        alpha = np.clip(0.5 + sd / px, 0, 1).astype(np.float32)
        colour = plan.obj_colour[k]
        style = plan.obj_style[k]
        if style == _STYLE_CAR:
            un = u / L  # -0.5 (rear) .. 0.5 (front)
            glass = ((un > 0.12) & (un < 0.27)) | ((un > -0.40) & (un < -0.28))
            side = np.abs(v) > 0.38 * Wd
            factor = np.where(glass, 0.0, np.where(side, 0.8, 1.05)).astype(np.float32)
            glass_val = np.float32(0.05)
            env = shadow[r0:r1, c0:c1]
            for b in range(nb):
                val = np.where(glass, glass_val, colour[b] * factor) * env
                img[b, r0:r1, c0:c1] += (val - img[b, r0:r1, c0:c1]) * alpha
        else:
            # roof facets: light depends on the facet's horizontal normal against the sun direction
            nu = np.float32(0.0)
            if style == _STYLE_GABLE:
                normal_sign = np.sign(v)
                n_x, n_y = -sa_ * normal_sign, ca_ * normal_sign
            elif style == _STYLE_HIP:
                end = np.abs(u) - (L - Wd) / 2 > np.abs(v)
                n_x = np.where(end, ca_ * np.sign(u), -sa_ * np.sign(v))
                n_y = np.where(end, sa_ * np.sign(u), ca_ * np.sign(v))
            else:
                n_x = n_y = nu
            light = (0.85 + 0.35 * (n_x * sun[0] + n_y * sun[1])).astype(np.float32)
            rim = np.where(sd < 0.35, 0.75, 1.0).astype(np.float32)
            grain = 1 + 0.06 * n_fine[r0:r1, c0:c1]
            roof_snow = None
            if plan.world is not None:  # ridge lines / rooftop units, snow on roofs in winter
                grain = grain * _ls.roof_details(u, v, L, Wd, int(style), int(k), seed, px)
                if plan.world.winter:
                    roof_snow = _ls.roof_snow(n_x, n_y, sun, plan.world.snow_cover)
            for b in range(nb):
                val = colour[b] * light * rim * grain
                if roof_snow is not None:
                    val = val + (_ls.SNOW[b] * light * grain - val) * roof_snow
                img[b, r0:r1, c0:c1] += (val - img[b, r0:r1, c0:c1]) * alpha

    # tree crowns: irregular, sun-lit spheres with clumpy texture
    if len(tsel):
        crown_noise = fractal_noise(ys, xs, 1.6, salt_of(seed, "crown"), octaves=2)
    for k in tsel:
        tx, ty, tr = plan.tree_x[k], plan.tree_y[k], plan.tree_r[k]
        r0, r1 = sub_range(ty - tr * 1.3, ty + tr * 1.3, ys)
        c0, c1 = sub_range(tx - tr * 1.3, tx + tr * 1.3, xs)
        if r1 <= r0 or c1 <= c0:
            continue
        dx, dy = (xs[None, c0:c1] - tx) / tr, (ys[r0:r1, None] - ty) / tr
        cn = crown_noise[r0:r1, c0:c1]
        rho = np.hypot(dx, dy) - 0.3 * cn
        alpha = np.clip((1.0 - rho) * tr / px + 0.5, 0, 1).astype(np.float32)
        zz = np.sqrt(np.clip(1 - dx * dx - dy * dy, 0, 1))
        lit = (0.45 + 0.55 * np.clip(dx * sun[0] + dy * sun[1] + 0.6 * zz, 0, None)) * (0.8 + 0.5 * cn)
        lit = (lit * plan.tree_tone[k]).astype(np.float32)
        for b in range(nb):
            img[b, r0:r1, c0:c1] += (_TREE[b] * lit - img[b, r0:r1, c0:c1]) * alpha

    # v2 vegetation: shrubs (unlabelled), then crowns lowest first, each labelling its visible pixels
    if veg is not None:
        _ls.paint_crowns(img, instances, veg, xs, ys, px, _sensor.sun_vector(sun, plan.shadow_per_m), outline, leaf)

    # --- atmosphere, optics, sensor
    if plan.world is not None:
        if s.bands == 1:
            img = _sensor.to_pan(img)
        img = _sensor.apply_optics(img, plan.world.sensor, ys, xs, rows, cols, seed)
    else:
        if plan.haze > 0:
            hz = (plan.haze * (0.6 + 0.4 * value_noise(ys, xs, 600.0, salt_of(seed, "haze")))).astype(np.float32)
            for b in range(nb):
                img[b] += (_HAZE[b] - img[b]) * hz
        for b in range(nb):
            img[b] = ndimage.gaussian_filter(img[b], plan.blur_px, truncate=4.0, mode="nearest")
            sigma = np.sqrt(plan.noise_level**2 + 0.004 * np.clip(img[b], 0, None) * plan.noise_level)
            img[b] += sigma * pixel_gaussian(rows, cols, salt_of(seed, "sensor", b))
        if s.bands == 1:
            img = _sensor.to_pan(img)

    valid = None
    if plan.collar is not None:
        valid = inside_convex(plan.collar, xs[None, :], ys[:, None])[halo:-halo, halo:-halo]
    return img[: s.bands, halo:-halo, halo:-halo], instances[halo:-halo, halo:-halo], valid


def _vegetation_in_window(plan: _Plan, sel: np.ndarray, x_lo: float, x_hi: float, y_lo: float, y_hi: float):
    """v2: the shrubs near the window, then the trees among ``sel`` (table order: lowest first), as
    :class:`smallseg.data.landscape.Crowns` (shrubs with label 0); None when there are none."""
    if plan.world is None:
        return None
    sh = plan.shrub_array
    margin = sh[:, 2] * _ls.CROWN_REACH + sh[:, 3] * plan.shadow_per_m
    near = ((sh[:, 0] + margin >= x_lo) & (sh[:, 0] - margin <= x_hi) & (sh[:, 1] + margin >= y_lo)
            & (sh[:, 1] - margin <= y_hi))
    k = sel[plan.obj_class[sel] == TREE]
    if not near.any() and not len(k):
        return None
    sh = sh[near]
    return _ls.Crowns(
        x=np.concatenate([sh[:, 0], plan.obj_cx[k]]), y=np.concatenate([sh[:, 1], plan.obj_cy[k]]),
        radius=np.concatenate([sh[:, 2], plan.obj_len[k] / 2]), height=np.concatenate([sh[:, 3], plan.obj_height[k]]),
        style=np.concatenate([np.full(len(sh), -1), plan.obj_style[k]]).astype(np.int64),
        colour=np.concatenate([sh[:, 4:8], plan.obj_colour[k]]).astype(np.float32),
        label=np.concatenate([np.zeros(len(sh), np.int64), k + 1]).astype(np.uint32),
    )


def _finish_window(plan: _Plan, reflectance: np.ndarray, valid: np.ndarray | None, row0: int, col0: int):
    """Rendered reflectance of the window at (row0, col0) -> image counts (B, h, w) in the scene's dtype."""
    s = plan.settings
    if plan.world is None:
        return _to_dtype(reflectance, s.dtype, valid)
    sp = plan.world.sensor
    out = _sensor.to_counts(reflectance, sp, s.dtype)
    if sp.jpeg_quality and s.dtype == "uint8" and s.bands in (1, 3):
        out = _sensor.jpeg_roundtrip(out, sp.jpeg_quality, row0, col0)
    if valid is not None:
        out[:, ~valid] = 0
    return out


def _to_dtype(reflectance: np.ndarray, dtype: str, valid: np.ndarray | None) -> np.ndarray:
    if dtype == "uint8":
        out = 255.0 * np.clip(reflectance / 0.5, 0, 1) ** (1 / 1.6)
        lo, hi = 1, 255
    else:
        out = reflectance * (4095.0 / 0.6)
        lo, hi = 1, 4095
    out = np.clip(np.rint(out), lo, hi).astype(dtype)
    if valid is not None:
        out[:, ~valid] = 0
    return out


# ----------------------------------------------------------------------------------------------------------
# Public API


def _settings(height, width, seed, pixel_size_m, bands, dtype, nodata_collar, crs, origin_xy, density,
              world="v1", landscape="auto", season="auto"):
    s = SceneSettings(int(height), int(width), int(seed), float(pixel_size_m), int(bands), str(dtype),
                      bool(nodata_collar), str(crs), (float(origin_xy[0]), float(origin_xy[1])), float(density),
                      str(world), str(landscape), str(season))
    s.validate()
    return s


def _object_table(plan: _Plan, area_px: np.ndarray, bbox_px: np.ndarray) -> SceneObjects:
    s = plan.settings
    px = s.pixel_size_m
    n = len(plan.obj_cx)
    x0, y0 = s.origin_xy
    angle = -np.degrees(plan.obj_ang)  # internal frame has y down; map angles count counter-clockwise
    angle = (angle + 90.0) % 180.0 - 90.0
    angle[angle == -90.0] = 90.0
    return SceneObjects(
        id=np.arange(1, n + 1, dtype=np.uint32), class_id=plan.obj_class.copy(),
        center_x=x0 + plan.obj_cx, center_y=y0 - plan.obj_cy,
        center_row_px=plan.obj_cy / px - 0.5, center_col_px=plan.obj_cx / px - 0.5,
        length_m=plan.obj_len.copy(), width_m=plan.obj_wid.copy(), angle_deg=angle,
        height_m=plan.obj_height.copy(), footprint_area_m2=plan.obj_len * plan.obj_wid,
        area_px=area_px.astype(np.int64), area_m2=area_px * px * px, bbox_px=bbox_px.astype(np.int64),
        context=np.array([str(c) for c in plan.obj_context], dtype=str),
    )


def _accumulate_objects(instances: np.ndarray, row0: int, col0: int, area_px, bbox_px) -> None:
    """Add one window's pixel counts and bounding boxes into the scene-wide columns (index = id - 1)."""
    fg = np.flatnonzero(instances.ravel())
    if len(fg) == 0:
        return
    ids = instances.ravel()[fg].astype(np.int64) - 1
    rr, cc = np.divmod(fg, instances.shape[1])
    order = np.argsort(ids, kind="stable")
    ids, rr, cc = ids[order], rr[order] + row0, cc[order] + col0
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    uid = ids[starts]
    area_px[uid] += np.diff(np.r_[starts, len(ids)])
    for col, fn, off in ((0, np.minimum, 0), (1, np.minimum, 0), (2, np.maximum, 1), (3, np.maximum, 1)):
        src = rr if col in (0, 2) else cc
        red = (np.minimum if fn is np.minimum else np.maximum).reduceat(src, starts) + off
        cur = bbox_px[uid, col]
        bbox_px[uid, col] = np.where(cur < 0, red, fn(cur, red))


def make_remote_sensing_scene(
    height: int,
    width: int,
    *,
    seed: int,
    pixel_size_m: float = 0.5,
    bands: int = 3,
    dtype: str = "uint8",
    nodata_collar: bool = False,
    crs: str = "EPSG:32633",
    origin_xy: tuple[float, float] = (389_000.0, 5_819_000.0),
    density: float = 1.0,
    world: str = "v1",
    landscape: str = "auto",
    season: str = "auto",
) -> RemoteSensingScene:
    """Render a whole scene in memory.

    Args:
        height, width: scene size in pixels (keep to a few thousand; use :func:`write_remote_sensing_scene`
            for big scenes).
        seed: any int; equal arguments give bit-identical output.
        pixel_size_m: ground sampling distance in metres (0.1-2; cars 3.6-4.9 m and buildings 6-20 m
            keep their physical size, so they span fewer pixels at coarser resolution).
        bands: 1 (panchromatic), 3 (R, G, B) or 4 (R, G, B, NIR).
        dtype: ``"uint8"`` (display stretch) or ``"uint16"`` (linear 12-bit).
        nodata_collar: surround the valid area with a nodata (0) collar, as in orthorectified scenes.
        crs: projected CRS (metre units) written to the GeoTIFF.
        origin_xy: map coordinates (m) of the upper-left corner.
        density: scales how built-up the scene is (1 = as drawn from the seed).
        world: ``"v1"`` (classic: cars and buildings) or ``"v2"`` (adds trees as class 3, forests, water, snow,
            soils, roof detail, occlusion by crowns and sensor effects; see :class:`SceneSettings`).
        landscape, season: v2 only, ``"auto"`` or a choice (:data:`smallseg.data.landscape.LANDSCAPES`,
            :data:`~smallseg.data.landscape.SEASONS`).

    Returns:
        :class:`RemoteSensingScene` with image (bands, H, W), instances (H, W) uint32, classes (H, W) uint8,
        transform, crs, nodata and the object table (areas counted from the rendered raster).
    """
    import rasterio.crs

    s = _settings(height, width, seed, pixel_size_m, bands, dtype, nodata_collar, crs, origin_xy, density,
                  world, landscape, season)
    plan = _plan_scene(s)
    refl, instances, valid = _render_window(plan, 0, s.height, 0, s.width)
    image = _finish_window(plan, refl, valid, 0, 0)
    n = len(plan.obj_cx)
    area_px = np.zeros(n, np.int64)
    bbox_px = np.full((n, 4), -1, np.int64)
    _accumulate_objects(instances, 0, 0, area_px, bbox_px)
    lut = np.concatenate([[0], plan.obj_class]).astype(np.uint8)
    return RemoteSensingScene(
        image=image, instances=instances, classes=lut[instances], transform=s.transform,
        crs=rasterio.crs.CRS.from_user_input(s.crs), nodata=s.nodata, pixel_size_m=s.pixel_size_m,
        objects=_object_table(plan, area_px, bbox_px),
    )


@dataclass(frozen=True)
class RemoteSensingScenePaths:
    """Files of a written scene: ``<stem>_image.tif``, ``_instances.tif``, ``_classes.tif``, ``_objects.csv``."""

    image: Path
    instances: Path
    classes: Path
    objects_csv: Path

    @classmethod
    def from_stem(cls, path_stem: str | os.PathLike) -> "RemoteSensingScenePaths":
        stem = Path(path_stem)
        return cls(*(stem.with_name(stem.name + suffix) for suffix in
                     ("_image.tif", "_instances.tif", "_classes.tif", "_objects.csv")))


def _block_size(n: int) -> int:
    return 512 if n >= 512 else max(16, 16 * ((n + 15) // 16))


def geotiff_profiles(settings: SceneSettings) -> tuple[dict, dict, dict]:
    """rasterio profiles (image, instances, classes): same CRS, transform and size; tiled, deflate."""
    import rasterio.crs

    s = settings
    common = dict(
        driver="GTiff", height=s.height, width=s.width, crs=rasterio.crs.CRS.from_user_input(s.crs),
        transform=s.transform, tiled=True, blockxsize=_block_size(s.width), blockysize=_block_size(s.height),
        compress="deflate", predictor=2, BIGTIFF="IF_SAFER",
    )
    image = dict(common, count=s.bands, dtype=s.dtype, nodata=s.nodata, interleave="pixel")
    if s.bands == 3 and s.dtype == "uint8":
        image["photometric"] = "RGB"
    instances = dict(common, count=1, dtype="uint32", nodata=None)
    classes = dict(common, count=1, dtype="uint8", nodata=None)
    return image, instances, classes


def write_remote_sensing_scene(
    path_stem: str | os.PathLike,
    height: int,
    width: int,
    *,
    seed: int,
    pixel_size_m: float = 0.5,
    bands: int = 3,
    dtype: str = "uint8",
    nodata_collar: bool = False,
    crs: str = "EPSG:32633",
    origin_xy: tuple[float, float] = (389_000.0, 5_819_000.0),
    density: float = 1.0,
    world: str = "v1",
    landscape: str = "auto",
    season: str = "auto",
    window_px: int = 1024,
) -> RemoteSensingScenePaths:
    """Render and write a scene window by window, in memory bounded by ``window_px`` (not the scene size).

    Writes ``<stem>_image.tif`` (bands, dtype, nodata), ``<stem>_instances.tif`` (uint32) and
    ``<stem>_classes.tif`` (uint8) with one profile (CRS, transform, size; tiled 512 blocks, deflate), and
    ``<stem>_objects.csv`` (:class:`SceneObjects`). Output is identical to :func:`make_remote_sensing_scene`
    with the same arguments, whatever ``window_px``. Files are written under temporary names and renamed
    only when complete.

    Args:
        path_stem: output path without suffix; its folder is created.
        window_px: render window side in pixels, a multiple of 16 (blocks of 512 are filled whole when it is
            a multiple of 512). Peak memory is roughly ``80 * window_px**2`` bytes plus the object table.
        (other arguments as :func:`make_remote_sensing_scene`)

    Returns:
        :class:`RemoteSensingScenePaths` of the four files.
    """
    import rasterio

    if window_px < 16 or window_px % 16:
        raise SmallsegError(f"--window-px {window_px}: use a positive multiple of 16 (e.g. 1024)")
    s = _settings(height, width, seed, pixel_size_m, bands, dtype, nodata_collar, crs, origin_xy, density,
                  world, landscape, season)
    paths = RemoteSensingScenePaths.from_stem(path_stem)
    paths.image.parent.mkdir(parents=True, exist_ok=True)
    plan = _plan_scene(s)
    n = len(plan.obj_cx)
    area_px = np.zeros(n, np.int64)
    bbox_px = np.full((n, 4), -1, np.int64)
    lut = np.concatenate([[0], plan.obj_class]).astype(np.uint8)
    p_img, p_ins, p_cls = geotiff_profiles(s)
    tmp = {k: p.with_name(p.name + ".partial") for k, p in
           (("image", paths.image), ("instances", paths.instances), ("classes", paths.classes))}
    from rasterio.windows import Window

    try:
        with rasterio.open(tmp["image"], "w", **p_img) as d_img, \
                rasterio.open(tmp["instances"], "w", **p_ins) as d_ins, \
                rasterio.open(tmp["classes"], "w", **p_cls) as d_cls:
            for row0 in range(0, s.height, window_px):
                row1 = min(row0 + window_px, s.height)
                for col0 in range(0, s.width, window_px):
                    col1 = min(col0 + window_px, s.width)
                    refl, instances, valid = _render_window(plan, row0, row1, col0, col1)
                    win = Window(col0, row0, col1 - col0, row1 - row0)
                    d_img.write(_finish_window(plan, refl, valid, row0, col0), window=win)
                    d_ins.write(instances[None], window=win)
                    d_cls.write(lut[instances][None], window=win)
                    _accumulate_objects(instances, row0, col0, area_px, bbox_px)
        for key, final in (("image", paths.image), ("instances", paths.instances), ("classes", paths.classes)):
            os.replace(tmp[key], final)
        _object_table(plan, area_px, bbox_px).write_csv(paths.objects_csv, class_names=CLASS_NAMES)
    finally:
        for t in tmp.values():
            if t.exists():
                t.unlink()
    return paths


def save_remote_sensing_scene(scene: RemoteSensingScene, path_stem: str | os.PathLike) -> RemoteSensingScenePaths:
    """Write an in-memory scene to the same four files as :func:`write_remote_sensing_scene`."""
    import rasterio

    paths = RemoteSensingScenePaths.from_stem(path_stem)
    paths.image.parent.mkdir(parents=True, exist_ok=True)
    bands, height, width = scene.image.shape
    settings = SceneSettings(height, width, 0, scene.pixel_size_m, bands, str(scene.image.dtype),
                             scene.nodata is not None, scene.crs.to_string(),
                             (scene.transform.c, scene.transform.f))
    p_img, p_ins, p_cls = geotiff_profiles(settings)
    for profile, data, final in ((p_img, scene.image, paths.image), (p_ins, scene.instances[None], paths.instances),
                                 (p_cls, scene.classes[None], paths.classes)):
        tmp = final.with_name(final.name + ".partial")
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
        os.replace(tmp, final)
    scene.objects.write_csv(paths.objects_csv, class_names=CLASS_NAMES)
    return paths
