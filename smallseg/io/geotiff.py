"""Streaming GeoTIFF I/O: raster geometry, windowed reads with nodata masks, band statistics.

Reading (:class:`GeoTiffReader`, via :func:`open_raster`)::

    with open_raster("scene.tif", bands=[1, 2, 3], expected_bands=3) as src:
        src.require_valid_pixels()                       # "no valid pixels" instead of an empty result
        for r in range(grid.n_rows):
            band, valid = src.read_with_mask(grid.row_window(r))   # one tile row, boundless

Any window may run past the raster (edge tiles, scenes smaller than a tile): outside pixels are filled with
the nodata value (0 without one) and marked invalid. Files without georeferencing (plain TIFF, PNG) are
read in pixel units after one warning. Everything a user can get wrong (missing file, not a raster,
undecodable pixels, a band that does not exist, a band count the model does not take, no valid pixel)
raises :class:`~smallseg.errors.SmallsegError` with one line.

Writing: :mod:`smallseg.io.raster_writer` (:func:`label_writer`, :func:`class_writer`, re-exported here).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from smallseg.errors import SmallsegError, one_line
from smallseg.io.geo import GroundUnits, ground_units
from smallseg.io.resample import ResampledGrid, warped_vrt



# -------------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class RasterGeometry:
    """Where a raster's pixels are: size, CRS and affine transform (pixel -> CRS coordinates).

    Attributes:
        width, height: size in px.
        crs: coordinate reference system, or None (pixel units).
        transform: affine transform of the top-left pixel corner; identity when not georeferenced.
    """

    width: int
    height: int
    crs: CRS | None
    transform: Affine

    @property
    def georeferenced(self) -> bool:
        """True when the raster has a CRS or a non-identity transform."""
        return self.crs is not None or not self.transform.is_identity

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in squared CRS units (m² for projected metric CRSs; 1.0 in pixel units)."""
        return abs(self.transform.determinant)

    @property
    def metres_per_unit(self) -> float | None:
        """Metres per CRS unit for a projected CRS (1 for UTM, 0.3048 for US feet); None without a CRS or
        for an angular one (degrees are not a length)."""
        if self.crs is None or not self.crs.is_projected:
            return None
        try:
            return float(self.crs.linear_units_factor[1])
        except Exception:  # noqa: BLE001 - CRS without a usable unit
            return None

    @property
    def ground(self) -> GroundUnits:
        """Square metres of the Earth per pixel over this grid (:func:`smallseg.io.geo.ground_units`: the one
        function behind every m² smallseg reports; cached per geometry)."""
        return ground_units(self.crs, self.transform, self.width, self.height)

    @property
    def pixel_area_m2(self) -> float | None:
        """Ground area of one pixel at the scene centre in m² (:func:`smallseg.io.geo.ground_units`: map units
        for UTM-like grids, the Earth's area element for Web Mercator or degrees), or None without a CRS."""
        return self.ground.pixel_area_m2

    @property
    def pixel_size_m(self) -> float | None:
        """Side of a square pixel of the same ground area, in m, or None without a CRS."""
        return self.ground.pixel_size_m

    @property
    def linear_units(self) -> str:
        """Units of the CRS axes (``"metre"``, ``"degree"``, ...) or ``"px"``."""
        if self.crs is None:
            return "px"
        try:
            return self.crs.linear_units or "unknown"
        except Exception:  # noqa: BLE001 - some CRSs have no single linear unit
            return "unknown"


@dataclass(frozen=True)
class BandStats:
    """Per-band statistics over valid pixels (C = selected bands).

    Attributes:
        mean, std, min, max: (C,) float64, in the raster's pixel values.
        valid_px: valid pixels counted.
        sampled_px: pixels read (valid or not).
        total_px: pixels in the raster.
        windows: number of windows read.
    """

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    valid_px: int
    sampled_px: int
    total_px: int
    windows: int

    @property
    def valid_fraction(self) -> float:
        """Share of the sampled pixels that are valid."""
        return self.valid_px / self.sampled_px if self.sampled_px else 0.0


# ---------------------------------------------------------------------------------------------- reader


def _open_dataset(path: Path):
    if not path.exists():
        raise SmallsegError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise SmallsegError(f"{path}: is a directory, not a raster file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as exc:
        text = one_line(exc)
        if "not recognized" in text or "supported file format" in text:
            raise SmallsegError(f"{path}: not a raster GDAL can read; pass a GeoTIFF (or TIFF/PNG)") from None
        raise SmallsegError(f"{path}: cannot be opened as a raster ({text}); is the file complete?") from None


def _gdal_reason(exc: BaseException) -> str:
    """GDAL's own message behind a rasterio error, without its "<file>, band N: " prefix."""
    cause = exc.__cause__ or exc.__context__ or exc
    return re.sub(r"^.*?, band \d+: ", "", one_line(cause))


def _intersect(window: Window, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Window ∩ raster as (row0, row1, col0, col1) in raster px, or None when they do not meet."""
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    rr0, rr1, cc0, cc1 = max(r0, 0), min(r1, height), max(c0, 0), min(c1, width)
    if rr1 <= rr0 or cc1 <= cc0:
        return None
    return rr0, rr1, cc0, cc1


class GeoTiffReader:
    """A raster opened for windowed reading. Build with :func:`open_raster`; use as a context manager.

    Attributes:
        path: the file.
        bands: selected band numbers (1-based), in output order.
        dtype: pixel dtype (numpy name).
        nodata: nodata value or None.
        geometry: :class:`RasterGeometry` (size, CRS, transform) to give to the writers.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        bands: Sequence[int] | None = None,
        expected_bands: int | None = None,
        nodata: float | None = None,
        choose_bands=None,
    ):
        self.path = Path(path)
        # How a pipeline prepares this raster's pixels (smallseg.pipeline.geotiff.run.InputPlan), or None.
        self.input_plan = None
        self._ds = _open_dataset(self.path)
        # Where pixel values come from: the file, or a WarpedVRT of it after resample().
        self._pixels = self._ds
        self.resampled: ResampledGrid | None = None
        try:
            if choose_bands is not None and bands is None:
                # By meaning (colour interpretation, alpha, grey replication): smallseg.bands decides from
                # the open dataset; its errors are one line naming the fix.
                bands = tuple(choose_bands(self._ds))
            self._setup(bands, expected_bands)
            if nodata is not None:
                self._override_nodata(nodata)
        except BaseException:
            self._ds.close()
            raise

    def _override_nodata(self, nodata: float) -> None:
        # The user's value replaces the file's nodata, mask and alpha: a pixel is invalid where every
        # selected band equals it (GDAL's per-dataset nodata rule), NaN matching NaN.
        value = float(nodata)
        dtype = np.dtype(self.dtype)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            if not (value.is_integer() and info.min <= value <= info.max):
                raise SmallsegError(
                    f"nodata {nodata:g}: does not fit the raster's {dtype.name} pixels "
                    f"({info.min}..{info.max}); pass a value of that type"
                )
        self.nodata = value
        self._nodata_override = True
        self._all_valid = False

    def _setup(self, bands: Sequence[int] | None, expected_bands: int | None) -> None:
        ds = self._ds
        self._nodata_override = False
        count = ds.count
        if count == 0:
            raise SmallsegError(f"{self.path}: has no raster bands (a vector or subdataset container?)")
        interp = list(ds.colorinterp)
        alpha = [i + 1 for i, ci in enumerate(interp) if ci == ColorInterp.alpha]
        self._alpha_band = alpha[0] if alpha else None
        # No nodata, no mask, no alpha: every pixel inside the raster is valid; no need to read a mask.
        self._all_valid = self._alpha_band is None and all(
            MaskFlags.all_valid in flags for flags in ds.mask_flag_enums
        )
        if bands is None:
            chosen = list(range(1, count + 1))
            # An alpha band says where pixels are valid; it is not image content.
            if self._alpha_band is not None and expected_bands == count - 1:
                chosen.remove(self._alpha_band)
        else:
            chosen = [int(b) for b in bands]
            if not chosen:
                raise SmallsegError(f"{self.path}: empty band selection; pass band numbers 1..{count}")
            for b in chosen:
                if not 1 <= b <= count:
                    raise SmallsegError(
                        f"{self.path}: band {b} does not exist (the file has {count} band"
                        f"{'s' if count != 1 else ''}, numbered 1..{count}); fix the band selection (bands=[...])"
                    )
        if expected_bands is not None and bands is None and count < expected_bands:
            raise SmallsegError(
                f"{self.path}: {count} band{'s' if count != 1 else ''}, but the model expects {expected_bands}; "
                f"use a model trained on {count}-band input"
            )
        if expected_bands is not None and len(chosen) != expected_bands:
            raise SmallsegError(
                f"{self.path}: {len(chosen)} band{'s' if len(chosen) != 1 else ''} "
                f"{'selected' if bands is not None else 'in the file'}, but the model expects {expected_bands}; "
                f"pass bands=[...] with {expected_bands} band numbers out of 1..{count}"
            )
        dtypes = {ds.dtypes[b - 1] for b in chosen}
        if len(dtypes) > 1:
            raise SmallsegError(f"{self.path}: selected bands mix dtypes {sorted(dtypes)}; select bands of one type")
        self.bands = tuple(chosen)
        self.dtype = dtypes.pop()
        self.nodata = ds.nodata
        self.geometry = RasterGeometry(width=ds.width, height=ds.height, crs=ds.crs, transform=ds.transform)
        self.input_geometry = self.geometry  # the file's own grid (geometry changes with resample())
        # NaN is never a pixel value a model can use: in float bands it is nodata whatever the file says.
        self._nan_is_nodata = np.dtype(self.dtype).kind == "f"
        if not self.geometry.georeferenced:
            warnings.warn(
                f"{self.path}: no georeferencing (no CRS or transform); outputs will be in pixel units",
                UserWarning,
                stacklevel=4,
            )
        elif self.geometry.crs is None:
            warnings.warn(
                f"{self.path}: a geotransform but no CRS; outputs keep the transform's coordinates without "
                f"naming a CRS, areas are not in m² and the GeoJSON is not WGS 84 - assign the CRS to the file "
                f"(e.g. gdal_edit.py -a_srs EPSG:XXXX) for georeferenced outputs",
                UserWarning,
                stacklevel=4,
            )

    # -- basics -----------------------------------------------------------------------------------------

    def __enter__(self) -> "GeoTiffReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the file."""
        if self._pixels is not self._ds:
            self._pixels.close()
        self._ds.close()

    def resample(self, factor: float) -> ResampledGrid:
        """From now on, read the raster as a virtual one on pixels ``factor`` x the file's (> 1: coarser):
        :class:`~smallseg.io.resample.ResampledGrid` (same CRS, transform scaled, ``round(size / factor)``
        px). ``geometry`` becomes that grid's (``input_geometry`` stays the file's); every read, mask and
        sample is of the virtual raster. Pixels: a GDAL WarpedVRT (area average / bilinear), window reads
        equal to the same part of a whole read; validity: the file's (nodata, alpha, mask) at the input pixel
        under each pixel centre (nearest), and NaN after resampling.
        """
        if self.resampled is not None:
            raise RuntimeError("resample() once per reader")
        geo = self.input_geometry
        grid = ResampledGrid(float(factor), geo.height, geo.width, geo.transform)
        self._pixels = warped_vrt(self._ds, grid, self.nodata)
        self.resampled = grid
        self.geometry = RasterGeometry(width=grid.out_width, height=grid.out_height, crs=geo.crs,
                                       transform=grid.out_transform)
        return grid

    @property
    def width(self) -> int:
        return self.geometry.width

    @property
    def height(self) -> int:
        return self.geometry.height

    @property
    def count(self) -> int:
        """Number of selected bands (C of every read)."""
        return len(self.bands)

    @property
    def fill_value(self):
        """Value of pixels outside the raster in boundless reads: nodata, or 0 without one."""
        return 0 if self.nodata is None else self.nodata

    def _read(self, fn, window: Window, what: str):
        try:
            return fn()
        except RasterioError as exc:
            r0, c0 = int(window.row_off), int(window.col_off)
            raise SmallsegError(
                f"{self.path}: {what} cannot be decoded in rows {r0}-{r0 + int(window.height) - 1}, "
                f"cols {c0}-{c0 + int(window.width) - 1} ({_gdal_reason(exc)}); the file is damaged: "
                f"re-export or re-download it"
            ) from None

    # -- windows ----------------------------------------------------------------------------------------

    def read(self, window: Window) -> np.ndarray:
        """Pixels of the selected bands in ``window`` (may run past the raster).

        Args:
            window: rasterio Window in raster px (integer offsets and size).

        Returns:
            (C, window.height, window.width) array of the raster's dtype; outside pixels = ``fill_value``.
        """
        h, w = int(window.height), int(window.width)
        inter = _intersect(window, self.width, self.height)
        if inter == (int(window.row_off), int(window.row_off) + h, int(window.col_off), int(window.col_off) + w):
            # Wholly inside: GDAL reads straight into the result (no second copy of a scene-wide window).
            inner = Window(int(window.col_off), int(window.row_off), w, h)
            out = np.empty((self.count, h, w), dtype=self.dtype)
            return self._read(lambda: self._pixels.read(self.bands, window=inner, out=out), inner, "pixels")
        out = np.full((self.count, h, w), self.fill_value, dtype=self.dtype)
        if inter is None:
            return out
        r0, r1, c0, c1 = inter
        inner = Window(c0, r0, c1 - c0, r1 - r0)
        data = self._read(lambda: self._pixels.read(self.bands, window=inner), inner, "pixels")
        ro, co = r0 - int(window.row_off), c0 - int(window.col_off)
        out[:, ro : ro + (r1 - r0), co : co + (c1 - c0)] = data
        return out

    def valid_mask(self, window: Window) -> np.ndarray:
        """Which pixels of ``window`` hold data.

        A pixel is valid when it is inside the raster, (alpha band > 0 if the raster has one, else GDAL's
        dataset mask: not nodata in at least one band, or set in an internal mask) and, in float bands, not
        NaN in any selected band (NaN counts as nodata even when the file declares none).

        Returns:
            (window.height, window.width) bool.
        """
        if self._nan_is_nodata:
            return self._read_with_mask(window)[1]
        return self._mask(window)

    def _mask(self, window: Window) -> np.ndarray:
        """The mask of :meth:`valid_mask` without the NaN rule."""
        if self.resampled is not None:
            return self._resampled_mask(window)
        return self._input_mask(window)

    def _resampled_mask(self, window: Window) -> np.ndarray:
        """The file's validity at the input pixel under each resampled pixel's centre (nearest: a mask is
        never blended); pixels outside the virtual raster are invalid."""
        grid = self.resampled
        r0, c0 = int(window.row_off), int(window.col_off)
        rows = grid.input_pixels(r0, r0 + int(window.height), 0)
        cols = grid.input_pixels(c0, c0 + int(window.width), 1)
        out = np.zeros((len(rows), len(cols)), bool)
        inside_r, inside_c = rows >= 0, cols >= 0
        if not inside_r.any() or not inside_c.any():
            return out
        ir0, ir1 = int(rows[inside_r].min()), int(rows[inside_r].max()) + 1
        ic0, ic1 = int(cols[inside_c].min()), int(cols[inside_c].max()) + 1
        mask = self._input_mask(Window(ic0, ir0, ic1 - ic0, ir1 - ir0))
        out[np.ix_(inside_r, inside_c)] = mask[np.ix_(rows[inside_r] - ir0, cols[inside_c] - ic0)]
        return out

    def input_valid_rows(self, row0: int, row1: int) -> np.ndarray | None:
        """The file's own valid mask (nodata, alpha, mask, NaN) of input rows ``row0..row1-1``, whole width,
        on the input grid; None when every pixel of the file is valid."""
        if self._all_valid and not self._nan_is_nodata:
            return None
        window = Window(0, row0, self._ds.width, row1 - row0)
        valid = self._input_mask(window)
        if self._nan_is_nodata:
            data = self._read(lambda: self._ds.read(self.bands, window=window), window, "pixels")
            valid &= ~np.isnan(data).any(axis=0)
        return valid

    def _input_mask(self, window: Window) -> np.ndarray:
        """:meth:`_mask` on the file's own grid."""
        h, w = int(window.height), int(window.width)
        out = np.zeros((h, w), bool)
        inter = _intersect(window, self._ds.width, self._ds.height)
        if inter is None:
            return out
        r0, r1, c0, c1 = inter
        inner = Window(c0, r0, c1 - c0, r1 - r0)
        if self._all_valid:
            valid = True
        elif self._nodata_override:
            data = self._read(lambda: self._ds.read(self.bands, window=inner), inner, "pixels")
            valid = self._valid_from_values(data)
        elif self._alpha_band is not None:
            # GDAL scales a 16-bit alpha to 0..255 for its mask, which turns small alphas into 0.
            valid = self._read(lambda: self._ds.read(self._alpha_band, window=inner), inner, "alpha band") > 0
        else:
            valid = self._read(lambda: self._ds.dataset_mask(window=inner), inner, "nodata mask") > 0
        ro, co = r0 - int(window.row_off), c0 - int(window.col_off)
        out[ro : ro + (r1 - r0), co : co + (c1 - c0)] = valid
        return out

    def read_with_mask(self, window: Window, *, nan_mask: bool = False):
        """:meth:`read` and :meth:`valid_mask` of one window: ((C, h, w) pixels, (h, w) bool valid).

        With ``nan_mask``, a third item: (h, w) bool, the pixels made invalid only because they are NaN (the
        file's own mask calls them valid; worth a warning), or None for integer bands."""
        data, valid, nan = self._read_with_mask(window)
        return (data, valid, nan) if nan_mask else (data, valid)

    def _read_with_mask(self, window: Window):
        if self._nodata_override and self.resampled is None:  # the mask comes from the pixels: read them once
            data = self.read(window)
            valid = np.zeros(data.shape[1:], bool)
            inter = _intersect(window, self.width, self.height)
            if inter is not None:
                r0, r1, c0, c1 = inter
                ro, co = r0 - int(window.row_off), c0 - int(window.col_off)
                inside = data[:, ro : ro + (r1 - r0), co : co + (c1 - c0)]
                valid[ro : ro + (r1 - r0), co : co + (c1 - c0)] = self._valid_from_values(inside)
        else:
            data, valid = self.read(window), self._mask(window)
        nan = None
        if self._nan_is_nodata:
            nan = np.isnan(data).any(axis=0) & valid
            valid &= ~nan
        return data, valid, nan

    def _valid_from_values(self, data: np.ndarray) -> np.ndarray:
        """(h, w) bool: some selected band differs from the (overriding) nodata value."""
        if math.isnan(self.nodata):
            return (~np.isnan(data)).any(axis=0)
        return (data != np.asarray(self.nodata).astype(data.dtype)).any(axis=0)

    def _row_bands(self, rows: int) -> list[Window]:
        return [Window(0, r, self.width, min(rows, self.height - r)) for r in range(0, self.height, rows)]

    # -- checks -----------------------------------------------------------------------------------------

    def require_valid_pixels(self, rows_per_read: int = 256) -> None:
        """Raise a one-line :class:`SmallsegError` when no pixel of the raster is valid.

        Scans the nodata mask in row bands and stops at the first valid pixel, so it is cheap for normal
        scenes and reads the whole mask only for (nearly) empty ones.
        """
        for window in self._row_bands(rows_per_read):
            if self.valid_mask(window).any():
                return
        why = f"every pixel is nodata = {self.nodata:g}" if self.nodata is not None else "every pixel is masked"
        raise SmallsegError(
            f"{self.path}: no valid pixels ({why}); nothing to predict - check the file, its nodata value "
            f"or the band selection"
        )

    def check_decodable(self) -> None:
        """Decode every internal block of the selected bands; raise a one-line error at the first that
        fails. Reads the whole file: use it to check a file before a long run, not on every run."""
        for _, window in self._ds.block_windows(1):
            self._read(lambda: self._ds.read(self.bands, window=window), window, "pixels")

    # -- statistics -------------------------------------------------------------------------------------

    def sample(self, max_pixels: int = 1_048_576, *, windows: int | None = None,
               whole_up_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A sample of the whole raster (selected bands) and its valid mask, for fitting a normalisation
        once per scene.

        Default: a nearest-neighbour decimated read to at most ``max_pixels`` pixels (GDAL uses overviews
        when the file has them; without, it decodes every block once - the price of percentiles that
        represent the whole scene). ``windows=N``: N full-resolution windows on an even grid, side by side,
        together about ``max_pixels``: its cost does not grow with the scene (an 8192² uint16 deflate scene
        without overviews, on a loaded 2-core machine: 7-9 s for 256 windows, 16-22 s for the decimated
        read, which grows with the scene), and its percentiles agree with the decimated read's to a few
        parts per thousand. A raster of at most ``whole_up_to`` (default
        ``max_pixels``) pixels is read whole either way. Validity follows
        :meth:`valid_mask` (alpha, nodata or its override, internal mask, NaN).

        Returns:
            ((C, h, w) array of the raster's dtype, (h, w) bool valid).
        """
        h, w = self.height, self.width
        if self.resampled is not None and windows is None:
            windows = 64  # a decimated read of a WarpedVRT would warp the whole scene: windows instead
        if self.resampled is not None and h * w <= max(max_pixels, whole_up_to or 0):
            data, valid, _ = self._read_with_mask(Window(0, 0, w, h))
            return data, valid
        if windows is not None and h * w > max(max_pixels, whole_up_to or 0):
            side = max(1, int(math.sqrt(windows)))
            size = max(1, int(math.sqrt(max_pixels / (side * side))))
            size_h, size_w = min(size, h), min(size, w)
            ys = np.linspace(0, h - size_h, side).round().astype(int)
            xs = np.linspace(0, w - size_w, side).round().astype(int)
            parts = [self._read_with_mask(Window(int(x), int(y), size_w, size_h)) for y in ys for x in xs]
            return (np.concatenate([p[0] for p in parts], axis=2), np.concatenate([p[1] for p in parts], axis=1))
        step = max(1.0, math.sqrt(h * w / max(max_pixels, whole_up_to or 0)))
        shape = (max(1, int(round(h / step))), max(1, int(round(w / step))))
        whole = Window(0, 0, w, h)
        unique = sorted(set(self.bands))

        def read(indexes):
            return self._ds.read(indexes, out_shape=(len(indexes), *shape), resampling=Resampling.nearest)

        data = self._read(lambda: read(unique), whole, "pixels")
        sample = np.stack([data[unique.index(b)] for b in self.bands])
        if self._all_valid:
            valid = np.ones(shape, bool)
        elif self._nodata_override:
            valid = self._valid_from_values(sample)
        elif self._alpha_band is not None:
            valid = self._read(lambda: read([self._alpha_band])[0], whole, "alpha band") > 0
        else:
            valid = self._read(lambda: self._ds.dataset_mask(out_shape=shape, resampling=Resampling.nearest),
                               whole, "nodata mask") > 0
        if self._nan_is_nodata:
            valid &= ~np.isnan(sample).any(axis=0)
        return sample, valid

    def band_stats(self, max_windows: int = 16, window_px: int = 512, require_valid: bool = True) -> BandStats:
        """Mean / std / min / max per selected band over valid pixels, from a sample of windows.

        Args:
            max_windows: most windows to read. When ``max_windows`` windows of ``window_px`` cover the
                raster it is read whole (exact statistics); otherwise windows are taken on an even grid
                over the scene (deterministic).
            window_px: side of each window in px.
            require_valid: raise when no sampled pixel is valid; False returns NaN statistics with
                ``valid_px == 0`` instead (a sparse scene may have valid pixels only between the samples).

        Returns:
            :class:`BandStats` (raises :class:`SmallsegError` if no sampled pixel is valid and
            ``require_valid``).
        """
        h, w = self.height, self.width
        ny, nx = math.ceil(h / window_px), math.ceil(w / window_px)
        if ny * nx <= max_windows:
            windows = [Window(x * window_px, y * window_px, min(window_px, w - x * window_px),
                              min(window_px, h - y * window_px)) for y in range(ny) for x in range(nx)]
        else:
            side = max(1, int(math.sqrt(max_windows)))
            size_h, size_w = min(window_px, h), min(window_px, w)
            ys = np.linspace(0, h - size_h, side).round().astype(int)
            xs = np.linspace(0, w - size_w, side).round().astype(int)
            windows = [Window(int(x), int(y), size_w, size_h) for y in ys for x in xs]
        c = self.count
        total = np.zeros(c)
        total_sq = np.zeros(c)
        lo = np.full(c, np.inf)
        hi = np.full(c, -np.inf)
        valid_px = sampled = 0
        for win in windows:
            data, valid, _ = self._read_with_mask(win)
            sampled += valid.size
            n = int(valid.sum())
            if n == 0:
                continue
            vals = data[:, valid].astype(np.float64)
            total += vals.sum(axis=1)
            total_sq += (vals**2).sum(axis=1)
            lo = np.minimum(lo, vals.min(axis=1))
            hi = np.maximum(hi, vals.max(axis=1))
            valid_px += n
        if valid_px == 0 and not require_valid:
            nan = np.full(c, np.nan)
            return BandStats(mean=nan, std=nan.copy(), min=nan.copy(), max=nan.copy(), valid_px=0,
                             sampled_px=sampled, total_px=h * w, windows=len(windows))
        if valid_px == 0:
            raise SmallsegError(
                f"{self.path}: no valid pixels in {len(windows)} sampled windows; check the nodata value "
                f"or the band selection"
            )
        mean = total / valid_px
        std = np.sqrt(np.maximum(total_sq / valid_px - mean**2, 0.0))
        return BandStats(mean=mean, std=std, min=lo, max=hi, valid_px=valid_px, sampled_px=sampled,
                         total_px=h * w, windows=len(windows))


def open_raster(
    path: str | os.PathLike,
    bands: Sequence[int] | None = None,
    expected_bands: int | None = None,
    nodata: float | None = None,
    choose_bands=None,
) -> GeoTiffReader:
    """Open a raster for windowed reading and validate the band selection.

    Args:
        path: GeoTIFF (or any raster GDAL reads: plain TIFF, PNG, ... in pixel units, with a warning).
        bands: band numbers to read, 1-based, in the order the model wants them; default all bands (minus
            an alpha band when that leaves ``expected_bands``).
        expected_bands: number of bands the model takes; a different count is a one-line error.
        nodata: override the file's nodata value (and its mask / alpha band): pixels where every selected
            band equals it are invalid, and boundless reads fill with it. Must fit the pixel dtype.
        choose_bands: when ``bands`` is None, a function of the open rasterio dataset returning the band
            numbers (e.g. a :func:`smallseg.bands.plan_for_dataset` closure: bands by colour interpretation).

    Returns:
        An open :class:`GeoTiffReader` (use ``with``).
    """
    return GeoTiffReader(path, bands=bands, expected_bands=expected_bands, nodata=nodata, choose_bands=choose_bands)


# The writers live in their own module; they are re-exported here, where callers have always found them.
from smallseg.io.raster_writer import (  # noqa: E402 - after RasterGeometry, which the writers take
    CLASS_DTYPE,
    CLASS_NODATA,
    LABEL_DTYPE,
    RasterWriter,
    class_writer,
    label_writer,
)
