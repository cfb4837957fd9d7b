"""Instance label rasters and object tables: what ``smallseg evaluate`` reads.

- A *label raster* is a 2-D integer image, 0 = background, k = object k: a GeoTIFF (CRS and transform kept,
  so areas can be given in m²), a NIfTI / MHA / NRRD image (spacing kept, areas in mm²), or a PNG / TIFF.
  Float files are accepted only when every value is a whole number (some tools save labels as float32).
- An *object table* is a CSV with a header and one row per object: column ``id`` (the label value) plus any
  of ``score``, ``class_id``, ``class``, ``iscrowd``. ``smallseg tile-and-predict`` writes ``STEM.objects.csv``
  next to ``STEM.instances.tif``; the scene generator writes ``STEM_objects.csv`` next to
  ``STEM_instances.tif``. Its reader lives with the other object tables, in :mod:`smallseg.io.tables`
  (re-exported here: :func:`read_object_table`, :func:`default_object_table_path`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from smallseg.errors import SmallsegError, one_line
from smallseg.io.geo import ground_units
from smallseg.io.medical import read_volume
from smallseg.io.tables import default_object_table_path, read_object_table

__all__ = [
    "LabelRaster",
    "read_label_raster",
    "label_raster_from_array",
    "check_same_grid",
    "read_object_table",
    "default_object_table_path",
]

_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")


@dataclass(eq=False)  # holds an array: compare fields explicitly
class LabelRaster:
    """A 2-D label (or class) raster with its geometry.

    Attributes:
        array: (H, W) non-negative integer array.
        source: file path, or ``"<array>"``.
        crs: rasterio CRS of a GeoTIFF, else None.
        transform: rasterio Affine of a GeoTIFF (pixel -> CRS coordinates), else None.
        spacing_yx_mm: (row, column) pixel spacing in mm of a medical image, else None.
        pixel_area_m2: ground area of one pixel in m² when known (a CRS: at the scene centre, see
            :mod:`smallseg.io.geo`; or medical spacing), else None.
        pixel_area_note: where ``pixel_area_m2`` came from, for reports.
    """

    array: np.ndarray
    source: str
    crs: object | None = None
    transform: object | None = None
    spacing_yx_mm: tuple[float, float] | None = None
    pixel_area_m2: float | None = None
    pixel_area_note: str = "unknown (no CRS or spacing)"

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.array.shape[0]), int(self.array.shape[1]))


def _as_labels(array: np.ndarray, source: str) -> np.ndarray:
    """Check that ``array`` holds non-negative whole numbers; return it as an integer array."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        fractional = ~np.isfinite(array) | (array != np.floor(array))
        if fractional.any():
            r, c = np.argwhere(fractional)[0]
            raise SmallsegError(
                f"{source}: not an integer label raster (value {array[r, c].item()!r} at row {r}, col {c}); label rasters "
                "hold whole-number object ids (0 = background); pass the instance raster, not a probability map")
        if array.size and array.max() > 2**31 - 1:
            raise SmallsegError(f"{source}: label values above 2^31-1; renumber the objects")
        array = array.astype(np.int64 if array.size and array.max() > 2**24 else np.int32)
    elif not np.issubdtype(array.dtype, np.integer):
        raise SmallsegError(f"{source}: pixel type {array.dtype} is not an integer label type; "
                            "label rasters hold whole-number object ids (0 = background)")
    if np.issubdtype(array.dtype, np.signedinteger) and array.size and array.min() < 0:
        raise SmallsegError(f"{source}: negative label values (min {array.min().item()}); labels must be 0 (background) "
                            "or positive object ids")
    if array.dtype == np.uint64:
        if array.size and array.max() > 2**63 - 1:
            raise SmallsegError(f"{source}: label values above 2^63-1; renumber the objects")
        array = array.astype(np.int64)
    return array


def label_raster_from_array(array, source: str = "<array>", *, pixel_size_m: float | None = None) -> LabelRaster:
    """Wrap an in-memory (H, W) integer array as a :class:`LabelRaster` (optional square pixel size in m)."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise SmallsegError(f"{source}: expected a 2-D (H, W) label array, got shape {array.shape}")
    area = None if pixel_size_m is None else float(pixel_size_m) ** 2
    return LabelRaster(array=_as_labels(array, source), source=source, pixel_area_m2=area,
                       pixel_area_note="unknown" if area is None else f"given pixel size {pixel_size_m} m")


def read_label_raster(path: str | os.PathLike) -> LabelRaster:
    """Read a 2-D label or class raster with its geometry.

    Args:
        path: GeoTIFF / TIFF / PNG (rasterio, band 1 of a one-band file) or NIfTI / MHA / NRRD (SimpleITK;
            a 3-D image must have a single slice).

    Returns:
        :class:`LabelRaster`. For a georeferenced GeoTIFF, ``pixel_area_m2`` is the ground area of a pixel
        at the scene centre (:func:`smallseg.io.geo.ground_units`: map units for UTM-like grids, the
        Earth's area element for Web Mercator or degrees); for medical images, the product of the row and
        column spacing (mm²) in m².

    Raises:
        SmallsegError: missing or unreadable file, several bands, 3-D volume, non-integer values.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SmallsegError(f"{path}: no such file")
    if os.path.isdir(path):
        raise SmallsegError(f"{path}: is a folder; pass a label raster file")
    if path.lower().endswith(_VOLUME_SUFFIXES):
        return _read_medical(path)
    return _read_rasterio(path)


def _read_rasterio(path: str) -> LabelRaster:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                if src.count != 1:
                    raise SmallsegError(f"{path}: {src.count} bands; a label raster has one band of object ids")
                array = src.read(1)
                crs = src.crs
                transform = src.transform
    except SmallsegError:
        raise
    except Exception as exc:  # rasterio/GDAL raise several types for unreadable files
        raise SmallsegError(f"{path}: cannot read as a raster ({one_line(exc)}); is it a complete GeoTIFF/TIFF/PNG "
                            "label image?") from None
    georeferenced = crs is not None and not transform.is_identity
    area, note = None, "unknown (no CRS)"
    if georeferenced:
        units = ground_units(crs, transform, array.shape[1], array.shape[0])
        area, note = units.pixel_area_m2, units.note  # ground m² at the scene centre (Web Mercator, degrees...)
    return LabelRaster(
        array=_as_labels(array, path),
        source=path,
        crs=crs if georeferenced else None,
        transform=transform if georeferenced else None,
        pixel_area_m2=area,
        pixel_area_note=note,
    )


def _read_medical(path: str) -> LabelRaster:
    volume = read_volume(path)
    array = volume.array
    spacing = tuple(float(s) for s in volume.spacing_zyx_mm)
    if array.ndim == 3 and array.shape[0] == 1:
        array, spacing = array[0], spacing[1:]
    if array.ndim != 2:
        raise SmallsegError(f"{path}: a {array.ndim}-D image of shape {array.shape}; smallseg evaluate scores 2-D "
                            "label rasters (one slice)")
    row_mm, col_mm = spacing[-2], spacing[-1]
    return LabelRaster(
        array=_as_labels(array, path),
        source=path,
        spacing_yx_mm=(row_mm, col_mm),
        pixel_area_m2=row_mm * col_mm * 1e-6,
        pixel_area_note=f"spacing {row_mm:g} x {col_mm:g} mm",
    )


def check_same_grid(gt: LabelRaster, pred: LabelRaster) -> None:
    """Raise :class:`SmallsegError` unless GT and prediction share shape, CRS, transform and spacing."""
    if gt.shape != pred.shape:
        raise SmallsegError(f"{pred.source}: shape {pred.shape[0]} x {pred.shape[1]} differs from the ground truth "
                            f"{gt.source} ({gt.shape[0]} x {gt.shape[1]}); both must cover the same pixel grid")
    if (gt.crs is None) != (pred.crs is None) or (gt.crs is not None and gt.crs != pred.crs):
        raise SmallsegError(
            f"{pred.source}: CRS {_crs_text(pred.crs)} differs from the ground truth {gt.source} "
            f"({_crs_text(gt.crs)}); reproject the prediction onto the ground-truth grid (e.g. gdalwarp)")
    if gt.transform is not None and pred.transform is not None:
        if not gt.transform.almost_equals(pred.transform, precision=1e-9 * max(1.0, abs(gt.transform.a))):
            raise SmallsegError(
                f"{pred.source}: geotransform {tuple(pred.transform)[:6]} differs from the ground truth {gt.source} "
                f"({tuple(gt.transform)[:6]}); both must cover the same pixel grid")
    if gt.spacing_yx_mm is not None and pred.spacing_yx_mm is not None:
        if not np.allclose(gt.spacing_yx_mm, pred.spacing_yx_mm, rtol=1e-6):
            raise SmallsegError(f"{pred.source}: spacing {pred.spacing_yx_mm} mm differs from the ground truth "
                                f"{gt.source} ({gt.spacing_yx_mm} mm)")


def _crs_text(crs) -> str:
    return "none" if crs is None else crs.to_string()
