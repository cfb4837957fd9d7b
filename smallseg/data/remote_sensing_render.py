"""Rendering a planned synthetic aerial scene: one window at a time, from the plan only.

:func:`_render_window` turns a :class:`~smallseg.data.remote_sensing_plan._Plan` into the reflectance,
instance ids and valid mask of rows ``[row0, row1)`` x cols ``[col0, col1)``; every random texture is a pure
function of the pixel's global position (:mod:`smallseg.data.noise`), so windows tile the scene exactly.
:func:`_finish_window` maps reflectance to the scene's dtype (with world v2's sensor effects). The public API
is :mod:`smallseg.data.remote_sensing`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from smallseg.data import landscape as _ls
from smallseg.data import sensor as _sensor
from smallseg.data.geometry import convex_hull, inside_convex, rect_corners
from smallseg.data.noise import fractal_noise, pixel_gaussian, salt_of, value_noise
from smallseg.data.remote_sensing_plan import (
    _STYLE_CAR,
    _STYLE_GABLE,
    _STYLE_HIP,
    BUILDING,
    CAR,
    FARM,
    FIELD,
    PARKING,
    TREE,
    _Plan,
)

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

# Rendering halo (px) around a window: covers the PSF blur (truncate 4 sigma, sigma <= 0.9).
_HALO_PX = 6


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

    def rect_crop(cx, cy, length, width, angle):
        """The window's crop around a rotated rectangle (its circumcircle plus one pixel) as (r0, r1, c0, c1),
        and the crop's (h, w) coordinates along (u) and across (v) the rectangle's long side, metres from its
        centre; None when the crop is empty."""
        rad = 0.5 * math.hypot(length, width) + px
        r0, r1 = sub_range(cy - rad, cy + rad, ys)
        c0, c1 = sub_range(cx - rad, cx + rad, xs)
        if r1 <= r0 or c1 <= c0:
            return None
        X, Y = xs[None, c0:c1] - cx, ys[r0:r1, None] - cy
        ca, sa = math.cos(angle), math.sin(angle)
        return r0, r1, c0, c1, X * ca + Y * sa, -X * sa + Y * ca

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
        crop = rect_crop(cx, cy, cl, cw, ca)
        if crop is None:
            continue
        r0, r1, c0, c1, u, v = crop
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
        crop = rect_crop(cx, cy, L, Wd, ang)
        if crop is None:
            continue
        r0, r1, c0, c1, u, v = crop
        ca_, sa_ = math.cos(ang), math.sin(ang)
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
