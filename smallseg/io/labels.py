"""Instance label rasters and object tables: what ``smallseg evaluate`` reads.

- A *label raster* is a 2-D integer image, 0 = background, k = object k: a GeoTIFF (CRS and transform kept,
  so areas can be given in m²), a NIfTI / MHA / NRRD image (spacing kept, areas in mm²), or a PNG / TIFF.
  Float files are accepted only when every value is a whole number (some tools save labels as float32).
- An *object table* is a CSV with a header and one row per object: column ``id`` (the label value) plus any
  of ``score``, ``class_id``, ``iscrowd``. ``smallseg tile-and-predict`` writes ``STEM.objects.csv`` next to
  ``STEM.instances.tif``; the scene generator writes ``STEM_objects.csv`` next to ``STEM_instances.tif``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smallseg.errors import SmallsegError, one_line

__all__ = [
    "LabelRaster",
    "ObjectTable",
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
        pixel_area_m2: area of one pixel in m² when known (projected CRS with a linear unit, or medical
            spacing), else None.
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
        :class:`LabelRaster`. For a GeoTIFF in a projected CRS, ``pixel_area_m2 = |det(transform)|`` times
        the CRS's linear unit in metres squared; for medical images, the product of the row and column
        spacing (mm²) in m².

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
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

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
        if crs.is_projected:
            from smallseg.io.geotiff import RasterGeometry

            area = RasterGeometry(array.shape[1], array.shape[0], crs, transform).pixel_area_m2
            note = f"|det(transform)| in {crs.linear_units_factor[0]} of {crs.to_string()}"
        else:
            note = f"unknown (CRS {crs.to_string()} is not projected: degrees are not an area unit)"
    return LabelRaster(
        array=_as_labels(array, path),
        source=path,
        crs=crs if georeferenced else None,
        transform=transform if georeferenced else None,
        pixel_area_m2=area,
        pixel_area_note=note,
    )


def _read_medical(path: str) -> LabelRaster:
    from smallseg.io.medical import read_volume

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


@dataclass(eq=False)
class ObjectTable:
    """Per-object columns read from an object table CSV (row ``i`` describes label ``ids[i]``).

    Attributes:
        ids: (N,) int64 label values.
        scores: (N,) float64 confidences, or None without a ``score`` column.
        class_ids: (N,) int64 classes, or None without a ``class_id`` column.
        iscrowd: (N,) bool crowd flags, or None without an ``iscrowd`` column.
        source: the CSV path.
    """

    ids: np.ndarray
    scores: np.ndarray | None
    class_ids: np.ndarray | None
    iscrowd: np.ndarray | None
    source: str


def read_object_table(path: str | os.PathLike, *, require: tuple[str, ...] = ("id",)) -> ObjectTable:
    """Read an object table CSV (header row; column ``id`` plus optional ``score``, ``class_id``, ``iscrowd``).

    Args:
        path: CSV file.
        require: columns that must be present (e.g. ``("id", "score")`` for a prediction's scores).

    Raises:
        SmallsegError: missing file, missing columns, unparsable or duplicate values, scores outside [0, 1]
            or not finite.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SmallsegError(f"{path}: no such object table (CSV with columns id,score[,class_id])")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SmallsegError(f"{path}: cannot read as CSV ({one_line(exc)})") from None
    missing = [c for c in require if c not in header]
    if missing:
        raise SmallsegError(f"{path}: no column {', '.join(repr(m) for m in missing)} in the header "
                            f"({', '.join(header) or 'empty'}); an object table needs columns {', '.join(require)}")

    def column(name: str, parse, kind: str):
        if name not in header:
            return None
        key = reader.fieldnames[header.index(name)]
        values = []
        for line, row in enumerate(rows, start=2):
            text = (row.get(key) or "").strip()
            try:
                values.append(parse(text))
            except ValueError:
                raise SmallsegError(f"{path}: line {line}: {name} {text!r} is not {kind}") from None
        return values

    def parse_int(text: str) -> int:
        value = float(text)
        if not value.is_integer():
            raise ValueError(text)
        return int(value)

    ids = np.asarray(column("id", parse_int, "an integer object id"), np.int64)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise SmallsegError(f"{path}: id {unique[counts > 1][0].item()} appears {counts.max().item()} times; ids must be unique")
    scores = column("score", float, "a number")
    if scores is not None:
        scores = np.asarray(scores, np.float64)
        bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SmallsegError(f"{path}: line {i + 2}: score {scores[i].item()!r} is not a confidence in [0, 1]")
    class_ids = column("class_id", parse_int, "an integer class id")
    iscrowd = column("iscrowd", parse_int, "0 or 1")
    return ObjectTable(
        ids=ids,
        scores=scores,
        class_ids=None if class_ids is None else np.asarray(class_ids, np.int64),
        iscrowd=None if iscrowd is None else np.asarray(iscrowd, bool),
        source=path,
    )


def default_object_table_path(raster_path: str | os.PathLike) -> Path:
    """Where the object table of a label raster is expected.

    ``STEM.instances.tif`` -> ``STEM.objects.csv`` (tile-and-predict), ``STEM_instances.tif`` ->
    ``STEM_objects.csv`` (scene generator), anything else ``NAME.tif`` -> ``NAME.objects.csv``.
    """
    path = Path(raster_path)
    name = path.name
    for suffix in (".nii.gz", ".tif", ".tiff", ".png", ".nii", ".mha", ".nrrd"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = path.stem
    for marker, table in ((".instances", ".objects.csv"), ("_instances", "_objects.csv")):
        if name.endswith(marker):
            return path.with_name(name[: -len(marker)] + table)
    return path.with_name(name + ".objects.csv")

