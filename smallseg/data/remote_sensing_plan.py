"""Planning a synthetic aerial scene: the whole scene as vectors, from its settings and seed only.

:func:`_plan_scene` draws, from :class:`~smallseg.data.remote_sensing.SceneSettings` alone, a road grid at a
random angle, a land use per city block, every labelled object (cars, buildings, v2 trees: footprint, height,
style, colour, context), unlabelled clutter, the sun, haze and noise levels, and returns them as a
:class:`_Plan` in an internal (x right, y down) metre frame. Nothing here touches pixels; rendering
(:mod:`smallseg.data.remote_sensing_render`) reads only the plan, window by window. The public API is
:mod:`smallseg.data.remote_sensing`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from smallseg.data import landscape as _ls
from smallseg.data.geometry import SpatialHash, convex_hull, inside_convex, rect_corners

if TYPE_CHECKING:  # the settings class lives with the public API, which imports this module
    from smallseg.data.remote_sensing import SceneSettings

CLASS_NAMES = {1: "car", 2: "building", 3: "tree"}  # trees only in world "v2"
CAR, BUILDING, TREE = 1, 2, _ls.TREE

# Land uses of a block (FOREST and WATER only in world "v2").
FIELD, PARK, RESIDENTIAL, PARKING, COMMERCIAL, FARM = range(6)
FOREST, WATER = _ls.FOREST, _ls.WATER

# Object render styles.
_STYLE_CAR, _STYLE_GABLE, _STYLE_HIP, _STYLE_FLAT = 0, 1, 2, 3

# Object colours (reflectance, bands R, G, B, NIR) drawn when an object is placed.
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
