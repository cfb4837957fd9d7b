"""Ground units of a georeferenced raster: how many square metres of the Earth one pixel covers.

A raster's transform gives pixel sizes in CRS units; those are ground units only where the projection
preserves area. Projected CRSs with scale distortion (Web Mercator: at 37.7 deg N a pixel's map area is
1.597x its ground area) and geographic CRSs (EPSG:4326, pixels in degrees) need the Earth's shape: one formula
serves both. The pixel's two sides are mapped to geodetic longitude/latitude of the CRS's datum (pyproj, by
central differences over one pixel), spanning ``|det J|`` square degrees, and

    ground area = |det J| * (pi / 180)² * M(phi) * N(phi) * cos(phi)

(the ellipsoid's area element at latitude phi; M, N the meridional and prime-vertical radii of curvature),
exact to second order in the pixel size: within 0.01 % of ``pyproj.Geod`` geodesic polygon areas for
sub-metre to 30 m pixels.

Everything that reports metres — the object table's ``area_m2``, the pixel-size check against a model's
training range, ``evaluate --size-buckets ...m2`` — asks :func:`ground_units` (one function, cached per
raster geometry).

Policy for nearly-true projections: when the areal scale deviates from 1 by less than
:data:`NOMINAL_TOLERANCE` everywhere in the scene (UTM: at most 0.2 %), areas stay the nominal
``|det(transform)| * metres_per_unit²`` and are constant over the scene, so UTM and other local grids report
exactly what their map units say (and what they reported before). Beyond it, areas are taken at each object's
centroid.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pyproj

__all__ = ["NOMINAL_TOLERANCE", "GroundUnits", "ground_units"]

# Largest areal-scale deviation (fraction) over a scene for which nominal map-unit areas are kept.
NOMINAL_TOLERANCE = 0.01


@dataclass(frozen=True)
class GroundUnits:
    """Square metres per pixel over one raster grid.

    Attributes:
        kind: ``"nominal"`` (projected, areas from map units; constant), ``"projected"`` (projected with
            scale distortion; areas divided by the areal scale at each point), ``"geographic"`` (degrees;
            ellipsoid area element), or ``"none"`` (no CRS / unusable unit: no metric area).
        pixel_area_m2: ground area of one pixel at the scene centre, m² (None for ``"none"``).
        note: how the area was obtained, one line for reports.
    """

    kind: str
    pixel_area_m2: float | None
    note: str
    _crs_wkt: str | None = None
    _transform: tuple[float, ...] | None = None
    _nominal_m2: float | None = None

    @property
    def pixel_size_m(self) -> float | None:
        """Side of a square pixel of the scene-centre ground area, m (None without a metric area)."""
        return None if self.pixel_area_m2 is None else math.sqrt(self.pixel_area_m2)

    def pixel_area_at(self, rows, cols) -> np.ndarray | None:
        """Ground area of one pixel, m², at scene pixel coordinates ``rows``, ``cols`` ((N,) float, pixel
        centres at integers). Returns (N,) float64, or None for kind ``"none"``."""
        rows = np.asarray(rows, np.float64)
        cols = np.asarray(cols, np.float64)
        if self.kind == "none":
            return None
        if self.kind == "nominal":
            return np.full(rows.shape, self._nominal_m2, np.float64)
        return _pixel_area_m2(self._crs_wkt, self._transform, rows, cols)

    def area_m2(self, area_px, centroids_yx) -> np.ndarray | None:
        """Ground area of objects, m²: ``area_px`` ((N,) pixel counts) times the pixel area at each object's
        centroid (``centroids_yx`` (N, 2) scene px). None for kind ``"none"``. For kind ``"nominal"`` this is
        ``area_px * pixel_area_m2`` exactly."""
        area_px = np.asarray(area_px)
        if self.kind == "none":
            return None
        if self.kind == "nominal":
            return area_px * self._nominal_m2
        centroids_yx = np.asarray(centroids_yx, np.float64).reshape(-1, 2)
        return area_px * self.pixel_area_at(centroids_yx[:, 0], centroids_yx[:, 1])


def ground_units(crs, transform, width: int, height: int) -> GroundUnits:
    """The :class:`GroundUnits` of a ``width`` x ``height`` px raster with rasterio ``crs`` (or None) and
    affine ``transform`` (pixel corner -> CRS coordinates). Cached per geometry."""
    if crs is None:
        return GroundUnits("none", None, "unknown (no CRS)")
    return _ground_units(crs.to_wkt(), tuple(float(v) for v in tuple(transform)[:6]), int(width), int(height))


@functools.lru_cache(maxsize=64)
def _ground_units(wkt: str, transform: tuple[float, ...], width: int, height: int) -> GroundUnits:
    crs = _pyproj_crs(wkt)
    name = crs.to_string()
    det = abs(transform[0] * transform[4] - transform[1] * transform[3])
    # The centre, the corners and the edge midpoints (pixel centres); the centre is index 4.
    rows = np.array([0, 0, 0, 0.5, 0.5, 0.5, 1, 1, 1]) * (height - 1)
    cols = np.array([0, 0.5, 1, 0, 0.5, 1, 0, 0.5, 1]) * (width - 1)
    if crs.is_geographic:
        area = float(_pixel_area_m2(wkt, transform, rows[4:5], cols[4:5])[0])
        return GroundUnits("geographic", area, f"ellipsoidal area of a pixel at its latitude ({name}, degrees)",
                           wkt, transform)
    if not crs.is_projected:
        return GroundUnits("none", None, f"unknown (CRS {name} is neither projected nor geographic)")
    try:
        unit_m = float(crs.axis_info[0].unit_conversion_factor)
    except (IndexError, AttributeError, TypeError, ValueError):
        return GroundUnits("none", None, f"unknown (CRS {name} has no usable linear unit)")
    nominal = det * unit_m**2
    with np.errstate(all="ignore"):
        ground = _pixel_area_m2(wkt, transform, rows, cols)
    # Map area per ground area; PROJ cannot invert some projections everywhere (inf): then map units.
    scale = nominal / ground
    if not np.all(np.isfinite(scale)) or np.max(np.abs(scale - 1.0)) < NOMINAL_TOLERANCE:
        return GroundUnits("nominal", nominal, f"|det(transform)| in {crs.axis_info[0].unit_name} of {name}",
                           wkt, transform, nominal)
    return GroundUnits("projected", float(ground[4]), f"ground area of a pixel at each point, {name} map "
                       f"area is {scale.min():.4g}-{scale.max():.4g}x it over the scene", wkt, transform, nominal)


@functools.lru_cache(maxsize=64)
def _pyproj_crs(wkt: str):
    return pyproj.CRS.from_wkt(wkt)


def _map_xy(transform: tuple[float, ...], rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b, c, d, e, f = transform
    x = a * (cols + 0.5) + b * (rows + 0.5) + c  # pixel centre -> map coordinates
    y = d * (cols + 0.5) + e * (rows + 0.5) + f
    return x, y


@functools.lru_cache(maxsize=64)
def _to_lonlat(wkt: str):
    crs = _pyproj_crs(wkt)
    return pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)


def _lonlat(wkt: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _to_lonlat(wkt).transform(x, y)


def _pixel_area_m2(wkt: str, transform: tuple[float, ...], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Ground area of one pixel, m², at pixel coordinates (rows, cols) ((N,) float, pixel centres at integers).

    The pixel's sides, mapped to geodetic (lon, lat) of the CRS's own datum by central differences over one
    pixel, span ``|det J|`` square degrees; times the ellipsoid's area element ``M N cos(phi)`` per square
    radian at the pixel centre. One formula for projected and geographic CRSs, exact to second order in the
    pixel size (a projection defined on a sphere, as Web Mercator is, is still measured on the datum's
    ellipsoid, as a geodesic polygon area would be).
    """
    crs = _pyproj_crs(wkt)
    rows = np.asarray(rows, np.float64)
    cols = np.asarray(cols, np.float64)
    h = 0.5
    probe_r = np.concatenate([rows, rows, rows - h, rows + h, rows])
    probe_c = np.concatenate([cols - h, cols + h, cols, cols, cols])
    x, y = _map_xy(transform, probe_r, probe_c)
    lon, lat = _lonlat(wkt, x, y)
    lon = np.asarray(lon, np.float64).reshape(5, -1)
    lat = np.asarray(lat, np.float64).reshape(5, -1)
    wrap = lambda d: (d + 180.0) % 360.0 - 180.0  # noqa: E731 - a pixel never spans half the globe
    dlon_dc, dlat_dc = wrap(lon[1] - lon[0]), lat[1] - lat[0]
    dlon_dr, dlat_dr = wrap(lon[3] - lon[2]), lat[3] - lat[2]
    det_deg2 = np.abs(dlon_dc * dlat_dr - dlon_dr * dlat_dc)
    ellipsoid = crs.ellipsoid
    a = ellipsoid.semi_major_metre
    inv_f = ellipsoid.inverse_flattening
    e2 = 0.0 if not inv_f or not math.isfinite(inv_f) else (2.0 - 1.0 / inv_f) / inv_f
    phi = np.radians(lat[4])
    w = 1.0 - e2 * np.sin(phi) ** 2
    m = a * (1.0 - e2) / w**1.5  # meridional radius of curvature
    n = a / np.sqrt(w)  # prime-vertical radius of curvature
    return det_deg2 * math.radians(1.0) ** 2 * m * n * np.cos(phi)
