"""Small GeoTIFF / GeoPackage helpers shared by the tile-and-predict output tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio
import shapely
from rasterio.transform import Affine

#: 0.5 m pixels in UTM 33N: the grid the output tests write their scenes on.
UTM_TRANSFORM = Affine(0.5, 0, 389_000, 0, -0.5, 5_819_000)


def write_noise_scene(path: Path, height: int, width: int, *, transform: Affine = UTM_TRANSFORM,
                      seed: int = 3) -> Path:
    """Write a 3-band uint8 GeoTIFF of uniform noise (EPSG:32633) and return ``path``."""
    image = np.random.default_rng(seed).integers(0, 255, (3, height, width), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=transform) as dst:
        dst.write(image)
    return path


def read_gpkg_polygons(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, polygons)`` of a smallseg GeoPackage: int64 object ids and shapely geometries in its CRS."""
    meta, _, geometry, fields = pyogrio.raw.read(path)
    ids = np.asarray(fields[list(meta["fields"]).index("id")], np.int64)
    return ids, shapely.from_wkb(geometry)


def to_pixel_edges(polygons, transform: Affine = UTM_TRANSFORM):
    """The polygons in pixel-edge coordinates (x = column, y = row) of the grid ``transform`` describes."""
    inv = ~transform
    return [shapely.transform(g, lambda xy: np.stack([inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c,
                                                      inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f], 1))
            for g in polygons]
