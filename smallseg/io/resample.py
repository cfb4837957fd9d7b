"""A raster seen at another pixel size: the resampled grid, its pixels, and labels mapped back to the input.

A model trained at 0.2-0.9 m finds nothing useful in a 0.1 m or a 1.5 m scene: objects are the wrong number
of pixels. :class:`ResampledGrid` describes the same ground at a pixel ``factor`` times the input's
(``factor`` > 1: coarser), in the same CRS, with the transform ``input.transform * scale(factor)`` and
``round(size / factor)`` px per side (the last pixel's centre stays inside the input). The reader
(:meth:`smallseg.io.geotiff.GeoTiffReader.resample`) reads pixels there through a GDAL ``WarpedVRT``
(:func:`warped_vrt`: area average when the grid is coarser, bilinear when finer); the warper computes each
output pixel from the source pixels under it alone, so a window of the virtual raster equals the same part
of a whole read and tiling stays exact. Validity (nodata, alpha, internal masks) is taken from the input
grid by nearest neighbour (:meth:`ResampledGrid.input_pixels`): a mask is never blended.

Predictions made on the resampled grid come back to the input grid by nearest neighbour
(:meth:`ResampledGrid.band_to_input`): each input pixel takes the label of the resampled pixel its centre
falls in, unless the input pixel itself is nodata (then no object, class 255), so the output rasters have the input's size, transform and CRS, and the object table's pixel
columns are input px (``area_px`` counts the object's pixels in the output raster, so ``area_m2`` is the
ground area of what the raster shows).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

__all__ = ["ResampledGrid", "warped_vrt"]


@dataclass(frozen=True)
class ResampledGrid:
    """The input grid (``height`` x ``width`` px, ``transform``) seen at ``factor`` x its pixel size.

    Attributes:
        factor: resampled pixel side / input pixel side (> 1: fewer, larger pixels).
        height, width: the input's size in px.
        transform: the input's affine transform.
    """

    factor: float
    height: int
    width: int
    transform: Affine

    @property
    def out_height(self) -> int:
        return max(1, int(round(self.height / self.factor)))

    @property
    def out_width(self) -> int:
        return max(1, int(round(self.width / self.factor)))

    @property
    def out_transform(self) -> Affine:
        return self.transform @ Affine.scale(self.factor)

    @property
    def method(self) -> str:
        """GDAL resampling of the image: area average onto a coarser grid (no aliasing), bilinear onto a
        finer one."""
        return "average" if self.factor > 1 else "bilinear"

    # -- input pixel <-> resampled pixel (nearest neighbour) ---------------------------------------------

    def input_pixels(self, start: int, stop: int, axis: int) -> np.ndarray:
        """Input row (axis 0) / column (axis 1) under the centre of resampled pixels ``start..stop-1``
        (clipped to the input; pixels outside the resampled grid give -1)."""
        n_in = self.height if axis == 0 else self.width
        n_out = self.out_height if axis == 0 else self.out_width
        k = np.arange(start, stop, dtype=np.float64)
        out = np.minimum(np.floor((k + 0.5) * self.factor), n_in - 1).astype(np.int64)
        out[(k < 0) | (k >= n_out)] = -1
        return out

    def _source(self, axis: int) -> np.ndarray:
        """For every input row / column, the resampled one whose pixel its centre falls in (non-decreasing)."""
        return self._sources[axis]

    @functools.cached_property
    def _sources(self) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for n_in, n_out in ((self.height, self.out_height), (self.width, self.out_width)):
            i = np.arange(n_in, dtype=np.float64)
            out.append(np.minimum(np.floor((i + 0.5) / self.factor), n_out - 1).astype(np.int64))
        return tuple(out)

    def input_start(self, k, axis: int):
        """First input row / column whose resampled pixel is ``k`` or later (``k`` int or array)."""
        return np.searchsorted(self._source(axis), k, side="left")

    # -- finished bands back to the input grid -------------------------------------------------------------

    def band_to_input(self, arrays: dict, seen: dict[int, list[int]], valid=None) -> dict:
        """One finished band of the resampled grid (a band checkpoint's arrays: ``rows``, ``labels``,
        ``classes``, ``counters``, ``keep_from``, ``obj_*``) as the band of input rows its rows cover.

        Args:
            seen: per object id, ``[pixels, row0, col0, row1, col1]`` on the input grid of the pixels that came
                in earlier bands (updated here; an object's entry goes when its table row comes, which then
                carries the exact pixel count and box of the object in the output raster).
            valid: a function of (input row0, row1) -> (rows, width) bool, the input's own valid mask (or
                None: all valid), or None: an input pixel that is nodata carries no object and class
                255 whatever its resampled pixel was (edges of a nodata area, where nearest neighbour both
                ways would otherwise spill objects onto nodata).

        Objects left without an input pixel (a 1-px object on a grid finer than the input, or one wholly on
        nodata) are dropped from the table.
        """
        src_r, src_c = self._source(0), self._source(1)
        row0, row1 = (int(v) for v in arrays["rows"])
        in0, in1 = (int(v) for v in np.searchsorted(src_r, [row0, row1], side="left"))
        pick_r = src_r[in0:in1] - row0
        labels = np.asarray(arrays["labels"])[pick_r][:, src_c]
        classes = np.asarray(arrays["classes"])[pick_r][:, src_c]
        ok = valid(in0, in1) if valid is not None and in1 > in0 else None
        if ok is not None:
            labels[~ok] = 0
            classes[~ok] = 255
        _accumulate(seen, labels, in0)
        out = dict(arrays)
        out["rows"] = np.array([in0, in1], np.int64)
        out["labels"], out["classes"] = labels, classes
        counters = np.array(arrays["counters"], np.int64)
        counters[0] = int(np.count_nonzero(classes != 255))  # valid input px (255: nodata in the class raster)
        out["counters"] = counters
        if "keep_from" in arrays:
            out["keep_from"] = np.array([self.input_start(int(arrays["keep_from"][0]), 0)], np.int64)
        ids = np.asarray(arrays["obj_ids"], np.int64)
        found = np.array([seen.pop(int(i), [0, 0, 0, 0, 0]) for i in ids.tolist()], np.int64).reshape(-1, 5)
        keep = found[:, 0] > 0
        f = self.factor
        moved = {
            "obj_area_px": found[:, 0],
            "obj_bbox": found[:, 1:],
            # the continuous position of the centre: pixel centres at integers on both grids
            "obj_centroids_yx": (np.asarray(arrays["obj_centroids_yx"], np.float64).reshape(-1, 2) + 0.5) * f - 0.5,
        }
        for name in [k for k in arrays if k.startswith("obj_")]:
            value = moved.get(name, np.asarray(arrays[name]))
            out[name] = value[keep]
        return out

    def to_dict(self) -> dict:
        return {"factor": round(self.factor, 9), "width": self.out_width, "height": self.out_height,
                "transform": list(self.out_transform)[:6], "method": self.method}


def _accumulate(seen: dict[int, list[int]], labels: np.ndarray, row0: int) -> None:
    """Add the pixels of each object in ``labels`` (input rows from ``row0``) to ``seen``: count and box."""
    rows, cols = np.nonzero(labels)
    if not len(rows):
        return
    ids = labels[rows, cols]
    order = np.argsort(ids, kind="stable")
    ids, rows, cols = ids[order], rows[order] + row0, cols[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    counts = np.diff(np.r_[starts, len(ids)])
    r0, r1 = np.minimum.reduceat(rows, starts), np.maximum.reduceat(rows, starts) + 1
    c0, c1 = np.minimum.reduceat(cols, starts), np.maximum.reduceat(cols, starts) + 1
    for i, n, a, b, c, d in zip(ids[starts].tolist(), counts.tolist(), r0.tolist(), c0.tolist(), r1.tolist(),
                                c1.tolist()):
        old = seen.get(i)
        seen[i] = [n, a, b, c, d] if old is None else [old[0] + n, min(old[1], a), min(old[2], b),
                                                       max(old[3], c), max(old[4], d)]


def warped_vrt(dataset, grid: ResampledGrid, nodata: float | None):
    """A GDAL ``WarpedVRT`` of ``dataset`` on ``grid``'s resampled pixels (same CRS, bands and band order).

    ``nodata`` (the file's or the user's): source pixels equal to it are left out of every average, and
    output pixels without a valid source pixel take it. ``XSCALE`` / ``YSCALE`` fix the kernel's scale to
    the grid's, so it does not vary with the window a read asks for.
    """
    scale = 1.0 / grid.factor
    extra = {} if nodata is None else {"src_nodata": nodata, "nodata": nodata}
    if nodata is not None and isinstance(nodata, float) and math.isnan(nodata):
        extra = {"src_nodata": float("nan"), "nodata": float("nan")}
    return WarpedVRT(dataset, crs=dataset.crs, transform=grid.out_transform, width=grid.out_width,
                     height=grid.out_height, resampling=Resampling[grid.method], XSCALE=scale, YSCALE=scale,
                     **extra)
