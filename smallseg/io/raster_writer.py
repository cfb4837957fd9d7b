"""Atomic, streaming raster writers: label and class GeoTIFFs (or COGs) written row band by row band.

Writing (:class:`RasterWriter`, via :func:`label_writer` / :func:`class_writer`)::

    with label_writer("labels.tif", src.geometry, cog=True) as dst:
        for band in stitched_bands:
            dst.write_rows(band.row0, band.labels)

Rows arrive top to bottom in any band heights; they are buffered to whole block rows so every compressed
block is written once. The file is written under a temporary name (:func:`smallseg.io.atomic.partial_path`:
``.NAME.partial-XXXXXXXX.tif``) and renamed to its final name only when every row was written and the
file closed cleanly; an exception or Ctrl-C removes the partial file,
so a file with the final name is always complete. COG output is GDAL's ``COG`` driver (part of the GDAL
in rasterio's wheels) copying the finished temporary GeoTIFF.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from smallseg.errors import SmallsegError, one_line
from smallseg.io.atomic import partial_path

if TYPE_CHECKING:  # the geometry's module re-exports this one
    from smallseg.io.geotiff import RasterGeometry

LABEL_DTYPE = "uint32"
CLASS_DTYPE = "uint8"
CLASS_NODATA = 255


class RasterWriter:
    """Write a raster row band by row band, atomically (see module docstring). Use as a context manager.

    Args:
        path: final file name.
        geometry: size, CRS and transform to copy (e.g. ``reader.geometry``).
        count: bands to write.
        dtype: numpy dtype name.
        nodata: nodata value to record, or None.
        compress: ``"deflate"``, ``"zstd"``, ``"lzw"`` or ``"none"``.
        blocksize: internal tile side in px (multiple of 16; 256 or 512 are usual).
        cog: also convert to a Cloud Optimized GeoTIFF (overviews, nearest resampling) before renaming.
        tags: metadata tags for the file (e.g. what produced it).
        band_descriptions: one description per band.
        overwrite: replace an existing file (only on success); False raises if it exists.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        geometry: RasterGeometry,
        *,
        count: int = 1,
        dtype: str = LABEL_DTYPE,
        nodata: float | None = None,
        compress: str = "deflate",
        blocksize: int = 512,
        cog: bool = False,
        tags: dict | None = None,
        band_descriptions: Sequence[str] | None = None,
        overwrite: bool = True,
    ) -> None:
        self.path = Path(path)
        self.geometry = geometry
        self.count = int(count)
        self.dtype = np.dtype(dtype).name
        self.nodata = nodata
        self.compress = compress.lower()
        self.blocksize = int(blocksize)
        self.cog = cog
        self.tags = dict(tags or {})
        self.band_descriptions = list(band_descriptions) if band_descriptions else None
        if self.compress not in ("deflate", "zstd", "lzw", "none"):
            raise SmallsegError(f"compress {compress!r}: use deflate, zstd, lzw or none")
        if self.blocksize < 16 or self.blocksize % 16:
            raise SmallsegError(f"blocksize {blocksize}: must be a positive multiple of 16 (e.g. 256 or 512)")
        if not self.path.parent.is_dir():
            raise SmallsegError(f"{self.path}: folder {self.path.parent} does not exist; create it first")
        if self.path.exists() and not overwrite:
            raise SmallsegError(f"{self.path}: exists; remove it or allow overwriting")
        self.partial_path = partial_path(self.path)  # smallseg.io.atomic's one naming scheme
        self._cog_path = partial_path(self.path)
        self.rows_written = 0
        self._ds = None
        self._buffer = None
        self._buffer_row0 = 0
        self._buffer_rows = 0

    # -- lifecycle --------------------------------------------------------------------------------------

    def __enter__(self) -> "RasterWriter":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def open(self) -> None:
        """Create the temporary file."""
        g = self.geometry
        profile = dict(
            driver="GTiff",
            width=g.width,
            height=g.height,
            count=self.count,
            dtype=self.dtype,
            nodata=self.nodata,
            tiled=True,
            blockxsize=self.blocksize,
            blockysize=self.blocksize,
            compress=self.compress,
            BIGTIFF="IF_SAFER",
        )
        if g.crs is not None:
            profile["crs"] = g.crs
        if g.georeferenced:
            profile["transform"] = g.transform
        if self.compress != "none" and np.dtype(self.dtype).kind in "iu":
            profile["predictor"] = 2  # horizontal differencing: label runs compress better
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = rasterio.open(self.partial_path, "w", **profile)
        except RasterioError as exc:
            raise SmallsegError(f"{self.path}: cannot create the output ({one_line(exc)})") from None
        if self.tags:
            self._ds.update_tags(**self.tags)
        if self.band_descriptions:
            for i, text in enumerate(self.band_descriptions, start=1):
                self._ds.set_band_description(i, text)
        self._buffer = np.zeros((self.count, self.blocksize, g.width), self.dtype)

    def write_rows(self, row0: int, data: np.ndarray) -> None:
        """Write the next rows.

        Args:
            row0: first scene row of ``data``; must be the next unwritten row (rows go top to bottom).
            data: (h, W) for one band or (count, h, W), any integer/float dtype castable to the file's.
        """
        if self._ds is None:
            raise RuntimeError("RasterWriter is not open; use it as a context manager")
        data = np.asarray(data)
        if data.ndim == 2:
            data = data[None]
        g = self.geometry
        if data.shape[0] != self.count or data.shape[2] != g.width:
            raise ValueError(f"rows of shape {data.shape[1:]} x {data.shape[0]} bands, expected (h, {g.width}) x "
                             f"{self.count}")
        if row0 != self.rows_written:
            raise ValueError(f"rows must come in order: got row {row0}, next unwritten row is {self.rows_written}")
        if row0 + data.shape[1] > g.height:
            raise ValueError(f"rows {row0}..{row0 + data.shape[1] - 1} run past the raster height {g.height}")
        if np.dtype(self.dtype).kind in "iu" and data.size and data.dtype.kind in "iuf":
            info = np.iinfo(self.dtype)
            if data.min() < info.min or data.max() > info.max:
                raise ValueError(f"values {data.min()}..{data.max()} do not fit {self.dtype}")
        self.rows_written += data.shape[1]
        pos = 0
        while pos < data.shape[1]:
            take = min(self.blocksize - self._buffer_rows, data.shape[1] - pos)
            self._buffer[:, self._buffer_rows : self._buffer_rows + take] = data[:, pos : pos + take]
            self._buffer_rows += take
            pos += take
            if self._buffer_rows == self.blocksize:
                self._flush()

    def _flush(self) -> None:
        if self._buffer_rows == 0:
            return
        window = Window(0, self._buffer_row0, self.geometry.width, self._buffer_rows)
        self._ds.write(self._buffer[:, : self._buffer_rows], window=window)
        self._buffer_row0 += self._buffer_rows
        self._buffer_rows = 0

    def close(self) -> Path:
        """Finish: flush, check every row was written, close, (convert to COG,) rename to the final name.

        Returns:
            The final path.
        """
        if self._ds is None:
            return self.path
        try:
            if self.rows_written != self.geometry.height:
                raise SmallsegError(
                    f"{self.path}: only {self.rows_written} of {self.geometry.height} rows were written; "
                    f"the output was discarded"
                )
            self._flush()
            self._ds.close()
            self._ds = None
            if self.cog:
                cog_path = self._cog_path
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", NotGeoreferencedWarning)
                        rasterio.shutil.copy(
                            self.partial_path,
                            cog_path,
                            driver="COG",
                            COMPRESS=self.compress.upper(),
                            BLOCKSIZE=self.blocksize,
                            OVERVIEW_RESAMPLING="NEAREST",
                            BIGTIFF="IF_SAFER",
                            **({"PREDICTOR": "YES"} if self.compress != "none" else {}),
                        )
                except RasterioError as exc:
                    cog_path.unlink(missing_ok=True)
                    raise SmallsegError(f"{self.path}: COG conversion failed ({one_line(exc)})") from None
                os.replace(cog_path, self.path)
                self.partial_path.unlink(missing_ok=True)
            else:
                os.replace(self.partial_path, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Discard everything written: close and delete the temporary file(s). The final name is untouched."""
        if self._ds is not None:
            try:
                self._ds.close()
            except Exception:  # noqa: BLE001 - discarding anyway
                pass
            self._ds = None
        self.partial_path.unlink(missing_ok=True)
        self._cog_path.unlink(missing_ok=True)


def label_writer(path: str | os.PathLike, geometry: RasterGeometry, **kwargs) -> RasterWriter:
    """Writer for an instance label raster: 1 band uint32, 0 = background (no nodata unless given).

    Args:
        path: final file name.
        geometry: from the input reader (``reader.geometry``) so CRS, transform and size match.
        **kwargs: :class:`RasterWriter` options (``compress``, ``blocksize``, ``cog``, ``nodata``, ``tags``).
    """
    kwargs.setdefault("band_descriptions", ["object id"])
    return RasterWriter(path, geometry, count=1, dtype=LABEL_DTYPE, **kwargs)


def class_writer(path: str | os.PathLike, geometry: RasterGeometry, **kwargs) -> RasterWriter:
    """Writer for a class raster: 1 band uint8, 0 = background, 255 = nodata (input had no data there)."""
    kwargs.setdefault("nodata", CLASS_NODATA)
    kwargs.setdefault("band_descriptions", ["class id"])
    return RasterWriter(path, geometry, count=1, dtype=CLASS_DTYPE, **kwargs)
