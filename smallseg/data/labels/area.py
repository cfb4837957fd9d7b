"""The labelled area: where a user's labels are complete. Outside it, pixels that belong to no labelled object
are *not labelled* (instance id -1): no loss is computed there and validation does not score there.

An area is given as:

- a pixel box ``"rows=0:256"``, ``"cols=100:400"`` or ``"rows=0:256,cols=0:512"`` (half-open, 0-based, either
  bound may be left out: ``"rows=:256"``);
- a raster mask on the image's grid (non-zero = labelled), any format :func:`read_image_file` reads;
- a vector file of polygons (GPKG, GeoJSON, Shapefile, FlatGeobuf), reprojected to the image's CRS and
  rasterised onto its grid (pixel centres inside);
- an (H, W) boolean array.

Objects are kept whole: a labelled object that crosses the area's edge is labelled in all its pixels (people
label the objects they see, up to the edge of the region they were given).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from smallseg.errors import SmallsegError

_BOX = re.compile(r"^\s*(rows|cols)\s*=\s*(\d*)\s*:\s*(\d*)\s*$")
_VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite")


def is_pixel_box(text: Any) -> bool:
    """True for ``"rows=a:b"`` / ``"cols=a:b"`` / both, comma-separated."""
    return isinstance(text, str) and all(_BOX.match(part) for part in text.split(","))


def labelled_area(spec: Any, shape: tuple[int, int], geo: Any = None, *, where: str = "area") -> np.ndarray:
    """The (H, W) bool mask of the labelled area ``spec`` (see the module docstring) on an image of ``shape``.

    Args:
        spec: pixel box text, raster or vector path, (H, W) bool array, or None (everything is labelled).
        shape: (H, W) of the image.
        geo: the image's ``(crs, transform)`` (needed for a vector area; None: pixel coordinates).
        where: what to call the area in messages.
    """
    h, w = (int(shape[0]), int(shape[1]))
    if spec is None:
        return np.ones((h, w), bool)
    if isinstance(spec, np.ndarray):
        if spec.shape != (h, w):
            raise SmallsegError(f"{where}: mask is {spec.shape}, the image is {(h, w)}")
        return spec.astype(bool)
    if is_pixel_box(spec):
        mask = np.zeros((h, w), bool)
        rows, cols = slice(0, h), slice(0, w)
        for part in str(spec).split(","):
            axis, lo, hi = _BOX.match(part).groups()
            size = h if axis == "rows" else w
            lo_i = int(lo) if lo else 0
            hi_i = int(hi) if hi else size
            if not 0 <= lo_i < hi_i <= size:
                raise SmallsegError(f"{where}: {axis}={lo}:{hi} is outside the image's {size} {axis} "
                                    f"(give 0 <= start < stop <= {size})")
            if axis == "rows":
                rows = slice(lo_i, hi_i)
            else:
                cols = slice(lo_i, hi_i)
        mask[rows, cols] = True
        return mask
    path = Path(os.fspath(spec))
    if not path.exists():
        raise SmallsegError(f"{where}: {spec} is neither a file nor a pixel box such as rows=0:256")
    if path.suffix.lower() in _VECTOR_SUFFIXES:
        from smallseg.data.labels.vector import read_polygons, rasterise_polygons

        polygons = read_polygons(path, geo, (h, w), where=where)
        if not len(polygons.geometries):
            raise SmallsegError(f"{path}: the area layer has no polygons")
        ids = rasterise_polygons(polygons.geometries, (h, w), geo)[0]
        mask = ids > 0
        if not mask.any():
            raise SmallsegError(f"{path}: the area covers no pixel centre of the image")
        return mask
    from smallseg.data.labels.common import read_label_file

    return read_label_file(path, (h, w), "it marks") > 0


def apply_area(instances: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``instances`` with every pixel outside ``mask`` that is not part of an object set to -1 (not labelled).

    Args:
        instances: (H, W) int32 ids (0 = background, > 0 objects, < 0 already ignored).
        mask: (H, W) bool labelled area, or None (returns ``instances`` unchanged).
    """
    if mask is None:
        return instances
    out = instances.copy()
    out[~mask & (out == 0)] = -1
    return out
