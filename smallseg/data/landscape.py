"""Land cover of the synthetic aerial worlds (``world="v2"``): trees as objects, forests, water, snow, soil.

What this adds to the classic world of :mod:`smallseg.data.remote_sensing` (cars and buildings on a road
grid):

- **Trees are class 3.** Each crown with radius >= :data:`MIN_TREE_RADIUS_M` is an instance: isolated
  garden / field trees, street-tree rows along kerbs (crowns overhang roads, parked cars and roofs), park
  clusters, hedgerows and **dense forest patches** (a jittered hexagonal packing of touching and overlapping
  crowns). Crowns are drawn in order of height; a pixel belongs to the topmost crown whose outline holds
  its centre, so each tree is labelled with its *visible* crown, and a car or roof under a crown keeps only
  its visible part. Planning guarantees that every listed object keeps visible pixels: a crown may not
  cover a car's or roof's centre nor more than half of its pixels, and a lower crown keeps its core (the
  disk of :data:`CORE` radii around its centre, holding at least one pixel centre) clear of every taller
  crown.
- Crowns have clumped leaf texture (coordinate-hashed noise at leaf-clump scale), self-shadowing (sphere or
  cone normals against the sun), dark inter-clump gaps and a cast shadow (a capsule or a tapering cone
  along the sun's shadow direction). Conifers (dark, conical), broadleaves (lighter, rounded) and, in
  winter, leaf-off broadleaves (grey-brown, see-through).
- Unlabelled confusers: shrubs (crowns under 1.5 m radius), lawns, bare soil, ploughed soil (fine furrow
  stripes), forest floor, water (dark, NIR-absorbing, wind ripples), snow cover in winter scenes (open
  ground white, roads ploughed, snow on roofs, long blue shadows from a low sun).

Everything here is a pure function of the plan and of global pixel positions (coordinate-hashed noise),
so windows render bit-identically to the whole scene.

Conventions: coordinates in metres in the generator's internal frame (x right, y down); ``img`` is
(B, h, w) float32 reflectance with bands R, G, B, NIR (B = 3 or 4); masks are (h, w).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from smallseg.data.geometry import inside_convex
from smallseg.data.noise import fractal_noise, salt_of, value_noise
from smallseg.data.sensor import SensorParams, draw_sensor

TREE = 3
FOREST, WATER = 6, 7  # block land uses added to FIELD..FARM (0..5) of the classic world
STYLE_CONIFER, STYLE_BROADLEAF, STYLE_LEAFOFF = 4, 5, 6
TREE_STYLES = (STYLE_CONIFER, STYLE_BROADLEAF, STYLE_LEAFOFF)
MIN_TREE_RADIUS_M = 1.5  # smaller woody plants are shrubs (not labelled)
CROWN_REACH = 1.25  # crown outline lies between (2 - CROWN_REACH) and CROWN_REACH radii
CORE = 0.35  # radii around a crown's centre kept clear of taller crowns (its guaranteed visible core)
FIELD_CROP, FIELD_PLOUGHED, FIELD_BARE = 0, 1, 2

LANDSCAPES = ("auto", "urban", "suburban", "rural", "forest")
SEASONS = ("auto", "summer", "winter")

# Reflectance, bands (R, G, B, NIR).
_CONIFER = np.array([0.030, 0.055, 0.040, 0.30], np.float32)
_BROADLEAF = np.array([0.055, 0.095, 0.040, 0.45], np.float32)
_LEAFOFF = np.array([0.100, 0.075, 0.060, 0.20], np.float32)
_SHRUB_V2 = np.array([0.050, 0.080, 0.035, 0.36], np.float32)
_SNOW = np.array([0.80, 0.82, 0.86, 0.72], np.float32)
_WATER = np.array([0.030, 0.045, 0.055, 0.015], np.float32)
_LITTER = np.array([0.060, 0.055, 0.040, 0.22], np.float32)
_BARE = np.array([0.230, 0.190, 0.140, 0.27], np.float32)
_PLOUGH = np.array([0.150, 0.120, 0.090, 0.20], np.float32)


@dataclass(frozen=True)
class WorldParams:
    """Scene-wide choices of a v2 world, drawn from the seed (:func:`draw_world`).

    Attributes:
        landscape: ``urban``, ``suburban``, ``rural`` or ``forest``.
        urban: 0-1, how built-up (road spacing, land-use mix).
        winter: snow season (low sun, snow cover, leaf-off broadleaves).
        snow_cover: fraction of open ground under snow in winter (0 otherwise).
        conifer_share: probability that a tree is a conifer.
        forest_p, water_p: probability that a block is forest / water.
        sensor: how the scene is imaged (:class:`smallseg.data.sensor.SensorParams`).
    """

    landscape: str
    urban: float
    winter: bool
    snow_cover: float
    conifer_share: float
    forest_p: float
    water_p: float
    sensor: SensorParams


def draw_world(rng: np.random.Generator, landscape: str, season: str, density: float) -> WorldParams:
    """Draw a scene's world parameters (``rng``: the scene's v2 generator, independent of the classic one)."""
    if landscape == "auto":
        landscape = str(rng.choice(["forest", "rural", "suburban", "urban"], p=[0.25, 0.30, 0.30, 0.15]))
    lo, hi = {"forest": (0.0, 0.1), "rural": (0.05, 0.3), "suburban": (0.35, 0.7), "urban": (0.75, 1.0)}[landscape]
    urban = float(np.clip(rng.uniform(lo, hi) * density, 0.0, 1.0))
    p_winter = 0.4 if landscape == "forest" else 0.25
    winter = bool(rng.random() < p_winter) if season == "auto" else season == "winter"
    forest_p = {"forest": 0.6, "rural": 0.25, "suburban": 0.08, "urban": 0.03}[landscape]
    water_p = 0.04 if landscape in ("forest", "rural") else 0.02
    conifer = float(rng.uniform(0.3, 0.95) if landscape == "forest" else rng.uniform(0.05, 0.5))
    return WorldParams(
        landscape=landscape, urban=urban, winter=winter, snow_cover=float(rng.uniform(0.7, 1.0)) if winter else 0.0,
        conifer_share=conifer, forest_p=forest_p, water_p=water_p, sensor=draw_sensor(rng, winter=winter),
    )


def reassign_blocks(block_use: np.ndarray, world: WorldParams, rng: np.random.Generator):
    """Turn some blocks into forest or water; choose each field's surface. Returns (block_use, block_kind)."""
    u = rng.random(block_use.shape)
    use = block_use.copy()
    use[u < world.forest_p] = FOREST
    use[(u >= world.forest_p) & (u < world.forest_p + world.water_p)] = WATER
    kind = rng.choice(3, size=block_use.shape, p=[0.45, 0.30, 0.25]).astype(np.int8)
    return use, kind


def tree_style(rng: np.random.Generator, world: WorldParams) -> int:
    if rng.random() < world.conifer_share:
        return STYLE_CONIFER
    return STYLE_LEAFOFF if world.winter else STYLE_BROADLEAF


def tree_colour(style: int, tone: float, rng: np.random.Generator) -> np.ndarray:
    base = {STYLE_CONIFER: _CONIFER, STYLE_BROADLEAF: _BROADLEAF, STYLE_LEAFOFF: _LEAFOFF}.get(style, _SHRUB_V2)
    jitter = rng.uniform(0.9, 1.1, 4).astype(np.float32)  # a yellower or bluer tree now and then
    return (base * np.float32(tone) * jitter).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Placement (called with the generator's placer ``P``: P.add_tree(s, t, radius, height, context), P.rng ...)


def place_forest(P, rng: np.random.Generator, box: tuple, world: WorldParams) -> None:
    """Dense canopy: crowns on a jittered hexagonal lattice (touching and overlapping), with clearings.

    ``box`` (s0, s1, t0, t1) is a block inside its roads, so trunks need no road test; the lattice is
    drawn in one go (vectorised) and appended to ``P.trees`` / ``P.shrubs`` directly.
    """
    a_s, b_s, a_t, b_t = box
    spacing = rng.uniform(3.4, 6.5)
    area = (b_s - a_s) * (b_t - a_t)
    n_clear = int(rng.poisson(area / 15000.0))
    clear = np.stack([rng.uniform(a_s, b_s, n_clear), rng.uniform(a_t, b_t, n_clear),
                      rng.uniform(6.0, 22.0, n_clear)], 1)
    edge = rng.uniform(0.0, 6.0)  # ragged forest edge: the outer rows are thinned
    tt = np.arange(a_t + spacing / 2, b_t, spacing * 0.866)
    ss = np.arange(a_s + spacing / 2, b_s + spacing / 2, spacing)
    S = ss[None, :] + np.where(np.arange(len(tt)) % 2, spacing / 2, 0.0)[:, None]
    T = np.broadcast_to(tt[:, None], S.shape)
    S, T = S.ravel(), T.ravel()
    S = S + rng.uniform(-0.35, 0.35, len(S)) * spacing
    T = T + rng.uniform(-0.35, 0.35, len(T)) * spacing
    margin = np.minimum.reduce([S - a_s, b_s - S, T - a_t, b_t - T])
    keep = (margin > 0) & ~((margin < edge) & (rng.random(len(S)) < 0.5)) & (rng.random(len(S)) >= 0.05)
    in_clear = np.zeros(len(S), bool)
    for cs, ct, cr in clear:
        in_clear |= np.hypot(S - cs, T - ct) < cr
    shrub = keep & in_clear & (rng.random(len(S)) < 0.04)
    tree = keep & ~in_clear
    x = S * P.ct - T * P.st
    y = S * P.st + T * P.ct
    inside = (x >= 0) & (x <= P.W) & (y >= 0) & (y <= P.H)
    if P.plan.collar is not None:
        inside &= inside_convex(P.plan.collar, x, y)
    n = len(S)
    radius = np.clip(rng.normal(0.6 * spacing, 0.08 * spacing, n), MIN_TREE_RADIUS_M, 5.5)
    height = rng.uniform(8.0, 24.0, n)
    conifer = rng.random(n) < world.conifer_share
    tone = rng.uniform(0.75, 1.25, n)
    jitter = rng.uniform(0.9, 1.1, (n, 4)).astype(np.float32)
    broad = STYLE_LEAFOFF if world.winter else STYLE_BROADLEAF
    for i in np.flatnonzero(tree & inside):
        style = STYLE_CONIFER if conifer[i] else broad
        base = _CONIFER if conifer[i] else (_LEAFOFF if world.winter else _BROADLEAF)
        P.trees.append((float(x[i]), float(y[i]), float(radius[i]), float(height[i]), style,
                        (base * np.float32(tone[i]) * jitter[i]).astype(np.float32), "forest"))
    for i in np.flatnonzero(shrub & inside):
        P.shrubs.append((float(x[i]), float(y[i]), float(radius[i]) * 0.3, 1.0,
                         (_SHRUB_V2 * np.float32(tone[i]) * jitter[i]).astype(np.float32)))


def place_street_trees(P, rng: np.random.Generator, box: tuple, sidewalk_m: float) -> None:
    """Rows of street trees just inside a block's edges: crowns overhang the kerb, parked cars and roofs."""
    a_s, b_s, a_t, b_t = box
    out = sidewalk_m / 2 if sidewalk_m > 0 else -1.0  # trunks mid-sidewalk, else 1 m inside the block
    edges = [(a_s, b_s, a_t - out, True), (a_s, b_s, b_t + out, True),
             (a_t, b_t, a_s - out, False), (a_t, b_t, b_s + out, False)]
    for lo, hi, fixed, along_s in edges:
        if rng.random() > 0.45:
            continue
        step, radius = rng.uniform(7.0, 14.0), rng.uniform(1.8, 4.0)
        q = lo + rng.uniform(2.0, step)
        while q < hi - 2.0:
            s, t = (q, fixed) if along_s else (fixed, q)
            P.add_tree(s, t, radius * rng.uniform(0.85, 1.15), rng.uniform(6.0, 14.0), "street")
            q += step * rng.uniform(0.9, 1.1)


def place_scattered(P, rng: np.random.Generator, box: tuple, per_ha: float, context: str) -> None:
    """Isolated trees and shrubs at random in a block (field trees, lawn shrubs)."""
    a_s, b_s, a_t, b_t = box
    n = int(rng.poisson(max((b_s - a_s) * (b_t - a_t), 0.0) / 10000.0 * per_ha))
    for _ in range(n):
        s, t = rng.uniform(a_s, b_s), rng.uniform(a_t, b_t)
        if rng.random() < 0.5:
            P.add_tree(s, t, rng.uniform(0.5, 1.3), rng.uniform(0.5, 2.5), "shrub")
        else:
            P.add_tree(s, t, rng.uniform(1.6, 5.0), rng.uniform(5.0, 18.0), context)


def finalize_trees(trees: list, rects: np.ndarray, px: float, width_m: float, height_m: float,
                   valid_fn=None) -> list:
    """Drop crowns that would hide too much: the visibility rules of the module docstring.

    Args:
        trees: tuples ``(x, y, radius, height, ...)`` in placement order.
        rects: (N, 5) cars and buildings as (cx, cy, length, width, angle).
        px: pixel size, m (visibility is counted on pixel centres).
        width_m, height_m: scene extent, m.
        valid_fn: optional ``f(x, y) -> bool mask`` of the valid (non-collar) area.

    Returns:
        The kept trees sorted by (height, placement order): the drawing order, lowest first.
    """
    n = len(trees)
    if n == 0:
        return []

    arr = np.array([t[:4] for t in trees], float)
    tx, ty, tr, th = arr.T
    reach = CROWN_REACH * tr
    max_reach = float(reach.max())
    keep = np.ones(n, bool)
    kd = cKDTree(arr[:, :2])
    n_cols, n_rows = round(width_m / px), round(height_m / px)

    def centres(x0, y0, x1, y1):
        c = (np.arange(max(math.floor(x0 / px), 0), min(math.ceil(x1 / px), n_cols)) + 0.5) * px
        r = (np.arange(max(math.floor(y0 / px), 0), min(math.ceil(y1 / px), n_rows)) + 0.5) * px
        X, Y = np.meshgrid(c, r)
        return X.ravel(), Y.ravel()

    def covered_by(X, Y, idx):
        if len(idx) == 0:
            return np.zeros(len(X), bool)
        d2 = (X[:, None] - tx[idx][None, :]) ** 2 + (Y[:, None] - ty[idx][None, :]) ** 2
        return (d2 < (reach[idx] ** 2)[None, :]).any(1)

    # 1. Cars and roofs: no trunk inside, centre never under a crown, at least half of the pixels visible.
    if len(rects):
        radii = 0.5 * np.hypot(rects[:, 2], rects[:, 3])
        near_lists = kd.query_ball_point(rects[:, :2], radii + max_reach)
        for (cx, cy, L, Wd, ang), rad, cand in zip(rects, radii, near_lists):
            if not cand:
                continue
            cand = np.array(sorted(cand), np.int64)
            cand = cand[keep[cand]]
            dist = np.hypot(tx[cand] - cx, ty[cand] - cy)
            close = dist < rad + reach[cand]
            cand, dist = cand[close], dist[close]
            if len(cand) == 0:
                continue
            ca, sa = math.cos(ang), math.sin(ang)
            u = (tx[cand] - cx) * ca + (ty[cand] - cy) * sa
            v = -(tx[cand] - cx) * sa + (ty[cand] - cy) * ca
            bad = ((np.abs(u) <= L / 2 + 0.3) & (np.abs(v) <= Wd / 2 + 0.3)) | (dist < reach[cand] + px)
            keep[cand[bad]] = False
            cand = cand[~bad]
            if len(cand) == 0:
                continue
            X, Y = centres(cx - rad, cy - rad, cx + rad, cy + rad)
            U = (X - cx) * ca + (Y - cy) * sa
            V = -(X - cx) * sa + (Y - cy) * ca
            inside = (np.abs(U) <= L / 2) & (np.abs(V) <= Wd / 2)
            if (~covered_by(X[inside], Y[inside], cand)).sum() < 0.5 * inside.sum():
                keep[cand] = False

    # 2. Crowns, tallest first: the disk of CORE radii around a crown's centre stays clear of every taller
    #    kept crown's outline, and holds a pixel centre of the scene, so at least that pixel is its own.
    order = np.lexsort((np.arange(n), th))  # drawing order: lowest first
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    pairs = kd.query_pairs(max_reach + CORE * float(tr.max()), output_type="ndarray")
    blockers: list[list[int]] = [[] for _ in range(n)]
    if len(pairs):
        a, b = pairs[:, 0], pairs[:, 1]
        lower = np.where(rank[a] < rank[b], a, b)
        upper = np.where(rank[a] < rank[b], b, a)
        d = np.hypot(tx[a] - tx[b], ty[a] - ty[b])
        hit = d < reach[upper] + CORE * tr[lower]
        for lo, up in zip(lower[hit].tolist(), upper[hit].tolist()):
            blockers[lo].append(up)
    # the pixel centre nearest to each crown centre must lie in its core disk (and in the valid area)
    px_x = (np.clip(np.floor(tx / px), 0, n_cols - 1) + 0.5) * px
    px_y = (np.clip(np.floor(ty / px), 0, n_rows - 1) + 0.5) * px
    own = np.hypot(px_x - tx, px_y - ty) < CORE * tr
    if valid_fn is not None:
        own &= valid_fn(px_x, px_y)
    keep &= own
    keep_list = keep.tolist()
    for i in order[::-1].tolist():
        if keep_list[i] and any(keep_list[j] for j in blockers[i]):
            keep_list[i] = False
    return [trees[i] for i in order.tolist() if keep_list[i]]


# ----------------------------------------------------------------------------------------------------------
# Rendering


def ground(img: np.ndarray, use: np.ndarray, kind: np.ndarray, stripe_phase: np.ndarray | None,
           road_edge_m: np.ndarray, n_large: np.ndarray, n_mid: np.ndarray, n_fine: np.ndarray,
           ys: np.ndarray, xs: np.ndarray, seed: int) -> None:
    """Forest floor, water, ploughed and bare fields over the classic ground texture (in place).

    Args:
        img: (B, h, w) reflectance after the classic ground pass.
        use: (h, w) uint8 block land use; kind: (h, w) int8 field surface (FIELD_*).
        stripe_phase: (h, w) float32 field stripe phase (cycles) or None when no field is in the window.
        road_edge_m: (h, w) distance to the nearest road edge, m (water keeps a shore from roads).
        n_large, n_mid, n_fine: the classic ground noise fields (90 m, 12 m, 1.3 m).
        ys, xs: pixel-centre coordinates, m; seed: scene seed.
    """
    nb = img.shape[0]
    forest = use == FOREST
    if forest.any():
        floor = (0.75 + 0.5 * (0.5 + 0.5 * n_mid)) * (1 + 0.15 * n_fine)
        for b in range(nb):
            img[b] = np.where(forest, _LITTER[b] * floor, img[b])
    if stripe_phase is not None:
        ploughed = (use == 0) & (kind == FIELD_PLOUGHED)
        bare = (use == 0) & (kind == FIELD_BARE)
        if ploughed.any() or bare.any():
            # furrows: a fine stripe 3x the crop stripe frequency, with a dark moist trough
            furrow = 0.5 + 0.5 * np.cos(np.float32(6 * np.pi) * stripe_phase)
            moist = 0.85 + 0.3 * (0.5 + 0.5 * n_large)
            for b in range(nb):
                p_val = _PLOUGH[b] * moist * (0.6 + 0.7 * furrow) * (1 + 0.1 * n_fine)
                b_val = _BARE[b] * (0.85 + 0.3 * (0.5 + 0.5 * n_mid)) * (1 + 0.06 * n_fine)
                img[b] = np.where(ploughed, p_val, np.where(bare, b_val, img[b]))
    water_block = use == WATER
    if water_block.any():
        shore = 6.0 + 10.0 * (0.5 + 0.5 * n_large) + 4.0 * n_mid
        water = water_block & (road_edge_m > shore)
        if water.any():
            ripple = 1 + 0.12 * value_noise(ys, xs, 3.0, salt_of(seed, "ripple")) + 0.05 * n_fine
            for b in range(nb):
                img[b] = np.where(water, _WATER[b] * ripple, img[b])


def snow(img: np.ndarray, road: np.ndarray, use: np.ndarray, road_edge_m: np.ndarray, cover: float,
         n_fine: np.ndarray, ys: np.ndarray, xs: np.ndarray, seed: int) -> None:
    """Snow on open ground (patchy where ``cover`` < 1); roads ploughed with slushy edges; water open."""
    if cover <= 0:
        return
    n_snow = fractal_noise(ys, xs, 30.0, salt_of(seed, "snow"), octaves=3)
    amount = np.clip((n_snow + 2.0 * cover - 1.0) * 3.0, 0, 1)
    amount = np.where(road, np.clip(0.6 - road_edge_m, 0, 0.6) * amount, amount)  # slush at the kerb
    amount = np.where(use == WATER, 0.0, amount).astype(np.float32)
    # under a closed canopy the snow gets little direct light (the crowns' own shadows come on top)
    tex = ((0.94 + 0.06 * n_fine) * np.where(use == FOREST, 0.35, 1.0)).astype(np.float32)
    for b in range(img.shape[0]):
        img[b] += (_SNOW[b] * tex - img[b]) * amount


def crown_noise(ys: np.ndarray, xs: np.ndarray, px: float, seed: int) -> np.ndarray:
    """Leaf-clump noise (h, w) float32 in about [-1, 1] (crown outlines use the ground's 1.3 m noise)."""
    return value_noise(ys, xs, max(0.4, 0.9 * px), salt_of(seed, "v2-leaf"))


@dataclass(frozen=True)
class Crowns:
    """Crowns to draw in one window, in drawing order (lowest first), as (n,) columns.

    ``x``, ``y``, ``radius``, ``height`` in metres; ``style`` (STYLE_* or -1 for a shrub); ``colour`` (n, 4)
    reflectance; ``label`` the instance id to write (0 for unlabelled shrubs).
    """

    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    height: np.ndarray
    style: np.ndarray
    colour: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


_MAX_PAIRS = 1_500_000  # (crown, pixel) pairs per batch: bounds memory to ~100 MB in dense forest


def _gather(xs: np.ndarray, ys: np.ndarray, lo_x, hi_x, lo_y, hi_y):
    """For boxes (n,) in metres: (box index, row, col) of every pixel centre inside each box, in batches."""
    c0 = np.searchsorted(xs, lo_x, side="left")
    c1 = np.searchsorted(xs, hi_x, side="right")
    r0 = np.searchsorted(ys, lo_y, side="left")
    r1 = np.searchsorted(ys, hi_y, side="right")
    w = np.maximum(c1 - c0, 0)
    sizes = w * np.maximum(r1 - r0, 0)
    start = 0
    n = len(sizes)
    while start < n:
        stop = start + 1
        total = sizes[start]
        while stop < n and total + sizes[stop] <= _MAX_PAIRS:
            total += sizes[stop]
            stop += 1
        sz = sizes[start:stop]
        idx = np.repeat(np.arange(start, stop), sz)
        offsets = np.arange(int(sz.sum())) - np.repeat(np.cumsum(sz) - sz, sz)
        ww = w[idx]
        yield idx, r0[idx] + offsets // np.maximum(ww, 1), c0[idx] + offsets % np.maximum(ww, 1)
        start = stop


def _capsule_rows(xs: np.ndarray, ys: np.ndarray, p0x, p0y, p1x, p1y, radius):
    """Pixels near capsules (segment p0-p1 with ``radius``, all (n,) m), by row, in batches.

    Each capsule's rows get the column interval of its bounding band (along the segment +- radius,
    across it +- radius), so a long diagonal shadow costs its area, not its bounding box.
    Yields (capsule index, row, col) arrays.
    """
    dx, dy = p1x - p0x, p1y - p0y
    length = np.maximum(np.hypot(dx, dy), 1e-9)
    ux, uy = dx / length, dy / length
    r0 = np.searchsorted(ys, np.minimum(p0y, p1y) - radius, side="left")
    r1 = np.searchsorted(ys, np.maximum(p0y, p1y) + radius, side="right")
    n_rows = np.maximum(r1 - r0, 0)
    seg_k = np.repeat(np.arange(len(p0x)), n_rows)
    seg_row = r0[seg_k] + np.arange(int(n_rows.sum())) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
    k = seg_k
    Y = ys[seg_row] - p0y[k]
    lo = np.full(len(k), -np.inf)
    hi = np.full(len(k), np.inf)
    for slope, offset, a_lo, a_hi in ((ux[k], Y * uy[k], -radius[k], length[k] + radius[k]),
                                      (-uy[k], Y * ux[k], -radius[k], radius[k])):
        # a_lo <= X' * slope + offset <= a_hi for X' = X - p0x
        with np.errstate(divide="ignore", invalid="ignore"):
            e0, e1 = (a_lo - offset) / slope, (a_hi - offset) / slope
        flat = np.abs(slope) < 1e-9
        inside_flat = (offset >= a_lo) & (offset <= a_hi)
        e_lo = np.where(flat, np.where(inside_flat, -np.inf, np.inf), np.minimum(e0, e1))
        e_hi = np.where(flat, np.where(inside_flat, np.inf, -np.inf), np.maximum(e0, e1))
        lo, hi = np.maximum(lo, e_lo), np.minimum(hi, e_hi)
    c0 = np.searchsorted(xs, np.clip(lo + p0x[k], xs[0] - 1, xs[-1] + 1), side="left")
    c1 = np.searchsorted(xs, np.clip(hi + p0x[k], xs[0] - 1, xs[-1] + 1), side="right")
    w = np.maximum(c1 - c0, 0)
    start, n = 0, len(w)
    csum = np.cumsum(w)
    while start < n:
        base = csum[start - 1] if start else 0
        stop = max(int(np.searchsorted(csum, base + _MAX_PAIRS, side="right")), start + 1)
        sz = w[start:stop]
        seg = np.repeat(np.arange(start, stop), sz)
        offsets = np.arange(int(sz.sum())) - np.repeat(np.cumsum(sz) - sz, sz)
        yield k[seg], seg_row[seg], c0[seg] + offsets
        start = stop


def crown_shadows(shadow: np.ndarray, crowns: Crowns, off_per_m: np.ndarray, xs: np.ndarray, ys: np.ndarray,
                  outline: np.ndarray) -> None:
    """Cast shadows of crowns (and trunks) onto ``shadow`` (h, w) float32, as ``min(shadow, factor)``.

    Broadleaf crowns (a sphere from ``height - 2 r`` to ``height``) cast a capsule, conifers (a cone from
    0.1 height to the top) a tapering one; ``off_per_m`` is metres of shadow per metre of height along the
    shadow direction. Shadows of shrubs are fainter, leaf-off crowns cast a half shadow.
    """
    if len(crowns) == 0:
        return
    conifer = crowns.style == STYLE_CONIFER
    r, h = crowns.radius, crowns.height
    base = np.where(conifer, 0.1 * h, np.maximum(h - 2 * r, 0.3 * h))
    top = h - np.where(conifer, 0.0, 0.4 * r)
    p0x, p0y = crowns.x + off_per_m[0] * base, crowns.y + off_per_m[1] * base
    p1x, p1y = crowns.x + off_per_m[0] * top, crowns.y + off_per_m[1] * top
    factor = np.where(r < MIN_TREE_RADIUS_M, 0.6, np.where(crowns.style == STYLE_LEAFOFF, 0.72, 0.42))
    flat = shadow.reshape(-1)
    w = shadow.shape[1]
    # float32 in the scene frame (never a window's own origin: every window must round alike); 1 mm at 16 km
    xs32, ys32 = xs.astype(np.float32), ys.astype(np.float32)
    for k, rows, cols in _capsule_rows(xs, ys, p0x, p0y, p1x, p1y, r * 0.95 * 1.2):
        ax, ay = p0x[k].astype(np.float32), p0y[k].astype(np.float32)
        dx, dy = (p1x[k] - p0x[k]).astype(np.float32), (p1y[k] - p0y[k]).astype(np.float32)
        X, Y = xs32[cols] - ax, ys32[rows] - ay
        tt = np.clip((X * dx + Y * dy) / np.maximum(dx * dx + dy * dy, np.float32(1e-9)), 0, 1)
        ex, ey = X - tt * dx, Y - tt * dy
        taper = np.where(conifer[k], 1 - 0.7 * tt, 0.95)  # conifer shadows narrow towards the tip
        rad = (r[k] * taper).astype(np.float32) * (1 + np.float32(0.2) * outline[rows, cols])
        m = ex * ex + ey * ey < rad * rad
        pix, f = rows[m] * w + cols[m], factor[k[m]]
        for value in np.unique(f):  # min with one value per pass: repeated pixels write the same result
            p = pix[f == value]
            flat[p] = np.minimum(flat[p], np.float32(value))


def paint_crowns(img: np.ndarray, instances: np.ndarray, crowns: Crowns, xs: np.ndarray, ys: np.ndarray,
                 px: float, sun3: np.ndarray, outline: np.ndarray, leaf: np.ndarray) -> None:
    """Paint crowns over ``img`` (B, h, w) in order and label their pixels in ``instances`` (h, w) uint32.

    A pixel is in crown k when its centre lies inside the outline ``d < r (1 + 0.25 outline)``; a later
    (taller) crown overwrites the label of an earlier one, so each keeps its visible part. The image gets
    an anti-aliased edge, shading from the crown's normals (sphere; cone for conifers) against the sun
    (``sun3``: unit vector towards the sun), and clumped leaf texture with shaded gaps. Pixels covered by
    several crowns are composited layer by layer in drawing order, as one crown at a time would.
    """
    if len(crowns) == 0:
        return
    nb, h, w = img.shape
    flat_img = img.reshape(nb, -1)
    flat_ins = instances.reshape(-1)
    reach = crowns.radius * CROWN_REACH
    for k, rows, cols in _gather(xs, ys, crowns.x - reach, crowns.x + reach, crowns.y - reach, crowns.y + reach):
        r = crowns.radius[k]
        dx = ((xs[cols] - crowns.x[k]) / r).astype(np.float32)
        dy = ((ys[rows] - crowns.y[k]) / r).astype(np.float32)
        edge = 1 + np.float32(0.25) * outline[rows, cols]
        dist = np.sqrt(dx * dx + dy * dy)
        rho = dist / edge
        alpha = np.clip((1 - rho) * (r / px).astype(np.float32) + np.float32(0.5), 0, 1)
        keep = alpha > 0
        k, rows, cols, dx, dy, edge, dist, rho, alpha = (
            a[keep] for a in (k, rows, cols, dx, dy, edge, dist, rho, alpha))
        style = crowns.style[k]
        lf = leaf[rows, cols]
        conifer = style == STYLE_CONIFER
        # cone: the normal tilts away from the axis by a constant angle; sphere otherwise
        inv = np.float32(0.55) / np.maximum(dist, np.float32(1e-3))
        zz = np.sqrt(np.clip(1 - rho * rho, 0, 1))
        nx = np.where(conifer, dx * inv, dx / edge)
        ny = np.where(conifer, dy * inv, dy / edge)
        nz = np.where(conifer, np.float32(0.83), zz)
        lit = np.float32(0.28) + np.float32(0.9) * np.clip(nx * sun3[0] + ny * sun3[1] + nz * sun3[2], 0, None)
        tex = np.where(conifer, (1 + np.float32(0.55) * lf) * (np.float32(1.1) - np.float32(0.35) * rho),
                       1 + np.float32(0.45) * lf)
        tex = np.where(lf < -0.3, tex * np.float32(0.55), tex)  # gaps between leaf clumps are in shade
        shade = (lit * tex).astype(np.float32)
        leafoff = style == STYLE_LEAFOFF  # bare branches: the ground shows through
        alpha = np.where(leafoff, alpha * np.float32(0.75) * (np.float32(0.8) + np.float32(0.3) * (lf > 0)),
                         alpha).astype(np.float32)
        pix = rows * w + cols
        order = np.lexsort((k, pix))  # by pixel, then drawing order
        pix, k, shade, alpha, rho = pix[order], k[order], shade[order], alpha[order], rho[order]
        first = np.r_[True, pix[1:] != pix[:-1]]
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(pix)), 0))
        rank = np.arange(len(pix)) - group_start
        colour = crowns.colour[k]
        for layer in range(int(rank.max()) + 1 if len(rank) else 0):
            sel = rank == layer
            p = pix[sel]
            a = alpha[sel]
            for b in range(nb):
                cur = flat_img[b, p]
                flat_img[b, p] = cur + (colour[sel, b] * shade[sel] - cur) * a
        inside = rho < 1
        labels = crowns.label[k]
        lab = inside & (labels > 0)
        # the last labelled crown (in drawing order) holding a pixel owns it
        p_in, l_in = pix[lab], labels[lab]
        last = np.r_[p_in[1:] != p_in[:-1], True] if len(p_in) else np.zeros(0, bool)
        flat_ins[p_in[last]] = l_in[last]


def roof_details(u: np.ndarray, v: np.ndarray, L: float, Wd: float, style: int, key: int, seed: int,
                 px: float) -> np.ndarray:
    """Multiplicative roof detail (h, w) float32: ridge lines on pitched roofs, HVAC boxes on flat roofs.

    ``u``, ``v``: pixel offsets along / across the roof (m); ``key``: the object's index (its clutter is
    drawn from ``(seed, key)``, so every window draws the same boxes).
    """
    factor = np.ones(u.shape, np.float32)
    line = max(0.12, 0.35 * px)
    if style == 1:  # gable: one ridge along the long axis
        factor = np.where(np.abs(v) < line, 0.8, factor)
    elif style == 2:  # hip: a shorter ridge plus four hips
        ridge = (np.abs(v) < line) & (np.abs(u) < (L - Wd) / 2)
        hip = np.abs(np.abs(np.abs(u) - (L - Wd) / 2) - np.abs(v)) < line
        factor = np.where(ridge | (hip & (np.abs(u) > (L - Wd) / 2)), 0.82, factor)
    else:  # flat: parapet already drawn by the caller; rooftop units with a small shadow
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(key), 0xF1A7])
        for _ in range(int(rng.integers(0, 5))):
            bl, bw = rng.uniform(0.8, 2.5), rng.uniform(0.8, 2.0)
            bu = rng.uniform(-(L - bl) / 2 + 0.5, (L - bl) / 2 - 0.5) if L > bl + 1 else 0.0
            bv = rng.uniform(-(Wd - bw) / 2 + 0.5, (Wd - bw) / 2 - 0.5) if Wd > bw + 1 else 0.0
            box = (np.abs(u - bu) < bl / 2) & (np.abs(v - bv) < bw / 2)
            shade = (np.abs(u - bu - 0.6) < bl / 2) & (np.abs(v - bv - 0.6) < bw / 2) & ~box
            factor = np.where(box, rng.uniform(0.7, 1.5), np.where(shade, 0.6, factor))
    return factor.astype(np.float32)


def roof_snow(n_x, n_y, sun2: np.ndarray, cover: float) -> np.ndarray | float:
    """Fraction of snow on a roof facet (flat and lee facets hold more than sun-facing ones)."""
    facing = n_x * sun2[0] + n_y * sun2[1]
    return np.clip(cover * (0.85 - 0.35 * facing), 0, 1)
SNOW = _SNOW  # snow reflectance (R, G, B, NIR), for roofs
