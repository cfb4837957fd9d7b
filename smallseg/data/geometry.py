"""Small planar geometry helpers for the scene generators: rotated rectangles, convex hulls, overlap tests.

Coordinates are (x, y) in metres in the generator's internal frame (x to the right, y down the image).
"""

from __future__ import annotations

import math

import numpy as np


def rect_corners(cx: float, cy: float, length: float, width: float, angle_rad: float) -> np.ndarray:
    """(4, 2) corners of a rectangle centred at (cx, cy) whose ``length`` side points along ``angle_rad``."""
    ca, sa = math.cos(angle_rad), math.sin(angle_rad)
    hl, hw = length / 2.0, width / 2.0
    local = np.array([[hl, hw], [-hl, hw], [-hl, -hw], [hl, -hw]])
    return np.stack([cx + local[:, 0] * ca - local[:, 1] * sa, cy + local[:, 0] * sa + local[:, 1] * ca], 1)


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull of (N, 2) points (Andrew's monotone chain), (M, 2) in counter-clockwise order
    for a y-up frame (i.e. positive signed area by the usual cross-product formula)."""
    pts = sorted(map(tuple, np.asarray(points, float)))
    if len(pts) <= 2:
        return np.array(pts)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def inside_convex(hull: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of points (broadcast ``x``, ``y``) inside or on a convex polygon from :func:`convex_hull`."""
    inside = np.ones(np.broadcast(x, y).shape, bool)
    n = len(hull)
    for i in range(n):
        ax, ay = hull[i]
        bx, by = hull[(i + 1) % n]
        inside &= (bx - ax) * (y - ay) - (by - ay) * (x - ax) >= 0
    return inside


def polygons_overlap(a: np.ndarray, b: np.ndarray, tolerance: float = 1e-6) -> bool:
    """Separating-axis test for two convex polygons (K, 2): True if they overlap by more than ``tolerance``
    (in metres along some axis). Polygons that only touch along an edge do not overlap."""
    for poly in (a, b):
        n = len(poly)
        for i in range(n):
            ex, ey = poly[(i + 1) % n] - poly[i]
            norm = math.hypot(ex, ey)
            if norm == 0:
                continue
            axis = np.array([-ey / norm, ex / norm])
            pa, pb = a @ axis, b @ axis
            if pa.max() <= pb.min() + tolerance or pb.max() <= pa.min() + tolerance:
                return False
    return True


def point_segment_distance(
    px: np.ndarray, py: np.ndarray, ax: float, ay: float, bx: float, by: float
) -> np.ndarray:
    """Distance from points to the segment a-b (broadcast arrays)."""
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    if length2 == 0:
        return np.hypot(px - ax, py - ay)
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / length2, 0.0, 1.0)
    return np.hypot(px - (ax + t * dx), py - (ay + t * dy))


class SpatialHash:
    """Grid buckets of convex polygons for rejection sampling without overlaps (pure Python, seeded callers)."""

    def __init__(self, cell: float):
        self.cell = float(cell)
        self.buckets: dict[tuple[int, int], list[int]] = {}
        self.polygons: list[np.ndarray] = []

    def _cells(self, poly: np.ndarray):
        x0, y0 = np.floor(poly.min(0) / self.cell).astype(int)
        x1, y1 = np.floor(poly.max(0) / self.cell).astype(int)
        for i in range(x0, x1 + 1):
            for j in range(y0, y1 + 1):
                yield (i, j)

    def overlaps(self, poly: np.ndarray, tolerance: float = 0.02) -> bool:
        """True if ``poly`` overlaps (beyond ``tolerance`` m) any polygon already added."""
        seen: set[int] = set()
        lo, hi = poly.min(0), poly.max(0)
        for key in self._cells(poly):
            for k in self.buckets.get(key, ()):
                if k in seen:
                    continue
                seen.add(k)
                other = self.polygons[k]
                if (other.min(0) >= hi).any() or (other.max(0) <= lo).any():
                    continue
                if polygons_overlap(poly, other, tolerance):
                    return True
        return False

    def add(self, poly: np.ndarray) -> None:
        k = len(self.polygons)
        self.polygons.append(np.asarray(poly, float))
        for key in self._cells(poly):
            self.buckets.setdefault(key, []).append(k)
