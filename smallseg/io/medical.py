"""Medical image I/O through SimpleITK: DICOM series and files, NIfTI, MHA/MHD, NRRD, 2-D TIFF/PNG.

Conventions (used by every function here, and by anything built on :class:`Volume`):

- ``Volume.array`` is a numpy array indexed ``[z, y, x]`` (3-D) or ``[y, x]`` (2-D), with an optional trailing
  channel axis for multi-component images (RGB microscopy, colour DICOM).  This is SimpleITK's
  ``GetArrayFromImage`` order.
- ``spacing_zyx_mm`` is given **in array axis order** (z, y, x) — the reverse of SimpleITK's ``GetSpacing()``.
- ``origin_lps_mm`` is the physical position (DICOM patient coordinates: x → Left, y → Posterior,
  z → Superior, in mm) of the *centre* of voxel ``[0, 0, 0]``: SimpleITK's ``GetOrigin()``.
- ``direction_lps`` is SimpleITK's flattened row-major direction matrix ``D`` (9 numbers in 3-D): column ``i``
  of ``D`` is the physical (L, P, S) unit vector of SimpleITK index axis ``i`` (x, then y, then z).
  A (continuous) voxel index ``(x, y, z)`` maps to ``origin + D @ (spacing_xyz * index_xyz)``, exactly
  ``TransformContinuousIndexToPhysicalPoint``.

DICOM discovery and stacking live in :mod:`smallseg.io.dicom` (:func:`find_series` splits each series into
stacks by orientation, position and size, as dcm2niix does; headers are parsed in
:mod:`smallseg.io.dicom_header`); they are re-exported here. :func:`read_volume` reads one DICOM stack, a
DICOM file or folder, or a NIfTI/MHA/NRRD/TIFF/PNG file into a :class:`Volume`, raising
:class:`~smallseg.errors.SmallsegError` with a one-line message for anything a user must fix, collecting
recoverable problems (missing slices, uneven spacing) in ``Volume.warnings`` and geometry it had to assume
(missing pixel spacing, the third axis of a single slice) in ``Volume.assumed``.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from smallseg.errors import SmallsegError, one_line
from smallseg.io.atomic import atomic_path
from smallseg.io.dicom import SeriesInfo, check_size, find_series, group_files, itk_reason, read_stack
from smallseg.io.dicom_header import VOLUME_EXTENSIONS, inspect_file

__all__ = [
    "Volume",
    "SeriesInfo",
    "IntensityPreset",
    "PRESETS",
    "get_preset",
    "find_series",
    "read_volume",
    "from_sitk",
    "to_sitk",
    "index_to_lps_mm",
    "lps_mm_to_index",
    "write_volume",
    "write_labels_nifti",
    "WriteError",
]

# --------------------------------------------------------------------------------------------------------------
# Value objects
# --------------------------------------------------------------------------------------------------------------


@dataclass(eq=False)  # holds a numpy array: compare fields explicitly
class Volume:
    """An image with its physical geometry and provenance.

    Attributes:
        array: ``(Z, Y, X)`` or ``(Y, X)`` numpy array (plus a trailing channel axis for multi-component
            images). Dtype as stored: CT in Hounsfield units is ``int16`` when the values fit.
        spacing_zyx_mm: voxel size per spatial array axis, in array order (z, y, x) or (y, x), in mm.
        origin_lps_mm: physical (L, P, S) position of the centre of voxel 0, in mm, in SimpleITK order
            (x, y, z) — *not* array order.
        direction_lps: SimpleITK direction matrix, flattened row-major (9 or 4 floats); column i is the
            physical unit vector of SimpleITK index axis i (x, y, z).
        modality: DICOM Modality (``"CT"``, ``"MR"``...), ``""`` when unknown.
        series_uid, study_uid: DICOM Series / Study Instance UIDs, ``""`` when unknown.
        source_paths: files the volume was read from (DICOM slices in slice order).
        meta: selected DICOM tags by keyword (no patient identifiers), all values as stripped strings.
        warnings: recoverable problems found while reading (missing slices, uneven spacing...).
        assumed: what had to be assumed about the geometry, one line each (``"pixel spacing missing: 1 mm
            assumed"``); empty when every spacing came from the file.
    """

    array: np.ndarray
    spacing_zyx_mm: tuple[float, ...]
    origin_lps_mm: tuple[float, ...]
    direction_lps: tuple[float, ...]
    modality: str = ""
    series_uid: str = ""
    study_uid: str = ""
    source_paths: tuple[str, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    assumed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.spacing_zyx_mm = tuple(float(v) for v in self.spacing_zyx_mm)
        self.origin_lps_mm = tuple(float(v) for v in self.origin_lps_mm)
        self.direction_lps = tuple(float(v) for v in self.direction_lps)
        n = len(self.spacing_zyx_mm)
        if n not in (2, 3):
            raise ValueError(f"spacing_zyx_mm must have 2 or 3 entries, got {n}")
        if self.array.ndim not in (n, n + 1):
            raise ValueError(f"array has {self.array.ndim} dims but spacing_zyx_mm has {n} (one trailing "
                             "channel axis at most)")
        if len(self.origin_lps_mm) != n or len(self.direction_lps) != n * n:
            raise ValueError(f"origin_lps_mm needs {n} and direction_lps {n * n} entries for a {n}-D volume")
        if any(not (s > 0) for s in self.spacing_zyx_mm):
            raise ValueError(f"spacing_zyx_mm must be positive, got {self.spacing_zyx_mm}")

    @property
    def ndim_spatial(self) -> int:
        """Number of spatial axes: 3 for a volume, 2 for a 2-D image."""
        return len(self.spacing_zyx_mm)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Array shape without a channel axis, array order (z, y, x) or (y, x)."""
        return tuple(self.array.shape[: self.ndim_spatial])

    @property
    def direction_matrix(self) -> np.ndarray:
        """``direction_lps`` as an ``(n, n)`` float64 matrix (column i = direction of SimpleITK axis i)."""
        n = self.ndim_spatial
        return np.asarray(self.direction_lps, dtype=np.float64).reshape(n, n)

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm³ (area in mm² for 2-D images)."""
        return float(np.prod(self.spacing_zyx_mm))


# --------------------------------------------------------------------------------------------------------------
# Intensity presets
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntensityPreset:
    """How raw intensities become float32 in [0, 1] before a model sees them. JSON-serialisable.

    - ``kind="window"``: linear map of ``[low, high]`` (input units: HU for CT) to ``[0, 1]``, clipped.
    - ``kind="percentile"``: the same, with ``low``/``high`` taken as the ``p_low``/``p_high`` percentiles
      (0–100) of the array it is applied to (MR, microscopy: units are arbitrary per acquisition).

    For tiled inference compute the percentiles once on the whole image with :meth:`resolve` and apply the
    returned window to every tile, so neighbouring tiles share one mapping.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    p_low: float | None = None
    p_high: float | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind == "window":
            if self.low is None or self.high is None or not (math.isfinite(self.low) and math.isfinite(self.high)):
                raise SmallsegError(f"intensity preset {self.name or 'window'}: a window needs finite low and high")
            if not self.low < self.high:
                raise SmallsegError(f"intensity preset {self.name or 'window'}: low ({self.low}) must be below "
                                    f"high ({self.high})")
        elif self.kind == "percentile":
            if self.p_low is None or self.p_high is None or not (0.0 <= self.p_low < self.p_high <= 100.0):
                raise SmallsegError(f"intensity preset {self.name or 'percentile'}: needs 0 <= p_low < p_high "
                                    f"<= 100, got p_low={self.p_low}, p_high={self.p_high}")
        else:
            raise SmallsegError(f"intensity preset: unknown kind {self.kind!r}; use 'window' or 'percentile'")

    @classmethod
    def window(cls, low: float, high: float, name: str = "") -> IntensityPreset:
        """A fixed window from ``low`` to ``high`` (input units)."""
        return cls(kind="window", low=float(low), high=float(high), name=name)

    @classmethod
    def from_width_level(cls, width: float, level: float, name: str = "") -> IntensityPreset:
        """A radiology window given as width W and level (centre) L: ``[L - W/2, L + W/2]``."""
        return cls.window(level - width / 2.0, level + width / 2.0, name=name)

    @classmethod
    def percentile(cls, p_low: float = 1.0, p_high: float = 99.5, name: str = "") -> IntensityPreset:
        """Normalise between two percentiles (0–100) of the image it is applied to."""
        return cls(kind="percentile", p_low=float(p_low), p_high=float(p_high), name=name)

    def resolve(self, array: np.ndarray) -> IntensityPreset:
        """The fixed window this preset means for ``array`` (a window preset returns itself).

        Percentiles ignore NaNs. A constant array gives the window ``[v, v + 1]`` so that it maps to 0.
        """
        if self.kind == "window":
            return self
        lo, hi = np.nanpercentile(np.asarray(array, dtype=np.float64), [self.p_low, self.p_high])
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise SmallsegError(f"intensity preset {self.name or 'percentile'}: the image has no finite values")
        if hi <= lo:
            hi = lo + 1.0
        return IntensityPreset.window(float(lo), float(hi), name=self.name)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Map ``array`` (any shape, any real dtype) to float32 in [0, 1], clipping outside the window."""
        win = self.resolve(array)
        out = np.asarray(array, dtype=np.float32) - np.float32(win.low)
        out *= np.float32(1.0 / (win.high - win.low))
        return np.clip(out, 0.0, 1.0, out=out)

    def to_dict(self) -> dict:
        """Plain dict for JSON (model checkpoints store this)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and v != ""}

    @classmethod
    def from_dict(cls, data: dict) -> IntensityPreset:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a checkpoint from a newer version)."""
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - allowed
        if unknown:
            raise SmallsegError(f"intensity preset: unknown field(s) {sorted(unknown)}; expected some of "
                                f"{sorted(allowed)}")
        return cls(**data)


# Standard radiology windows (width/level as commonly published, e.g. Radiopaedia "Windowing (CT)").
PRESETS: dict[str, IntensityPreset] = {
    "lung": IntensityPreset.from_width_level(1500, -600, name="lung"),
    "soft_tissue": IntensityPreset.from_width_level(400, 40, name="soft_tissue"),
    "mediastinum": IntensityPreset.from_width_level(350, 50, name="mediastinum"),
    "bone": IntensityPreset.from_width_level(1800, 400, name="bone"),
    "brain": IntensityPreset.from_width_level(80, 40, name="brain"),
    "percentile": IntensityPreset.percentile(1.0, 99.5, name="percentile"),
}


def get_preset(name: str) -> IntensityPreset:
    """A named preset from :data:`PRESETS` (``lung``, ``soft_tissue``, ``mediastinum``, ``bone``, ``brain``,
    ``percentile``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise SmallsegError(f"intensity preset {name!r}: unknown; choose one of {', '.join(PRESETS)}") from None


# --------------------------------------------------------------------------------------------------------------
# SimpleITK conversions and index <-> physical helpers
# --------------------------------------------------------------------------------------------------------------


def from_sitk(image: sitk.Image, **fields) -> Volume:
    """A :class:`Volume` holding a copy of ``image``'s pixels and its exact geometry.

    ``fields`` are passed on to :class:`Volume` (``modality``, ``series_uid``, ``meta``, ``warnings``...).
    """
    array = sitk.GetArrayFromImage(image)
    return Volume(array=array, spacing_zyx_mm=tuple(reversed(image.GetSpacing())),
                  origin_lps_mm=image.GetOrigin(), direction_lps=image.GetDirection(), **fields)


def to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image with ``volume``'s pixels and exactly its spacing, origin and direction."""
    is_vector = volume.array.ndim == volume.ndim_spatial + 1
    image = sitk.GetImageFromArray(volume.array, isVector=is_vector)
    image.SetSpacing(tuple(reversed(volume.spacing_zyx_mm)))
    image.SetOrigin(volume.origin_lps_mm)
    image.SetDirection(volume.direction_lps)
    return image


def index_to_lps_mm(volume: Volume, index_zyx: np.ndarray | Sequence[float]) -> np.ndarray:
    """Physical positions of (continuous) voxel indices, e.g. object centroids.

    Args:
        volume: supplies the geometry.
        index_zyx: ``(N, D)`` or ``(D,)`` indices in array order (z, y, x) / (y, x); voxel centres are integers.

    Returns:
        float64 ``(N, D)`` or ``(D,)`` physical points in mm, SimpleITK order (x, y, z) = (L, P, S);
        identical to ``TransformContinuousIndexToPhysicalPoint``.
    """
    idx = np.asarray(index_zyx, dtype=np.float64)
    idx_xyz = idx[..., ::-1]
    scaled = idx_xyz * np.asarray(volume.spacing_zyx_mm[::-1])
    return np.asarray(volume.origin_lps_mm) + scaled @ volume.direction_matrix.T


def lps_mm_to_index(volume: Volume, points_lps_mm: np.ndarray | Sequence[float]) -> np.ndarray:
    """Inverse of :func:`index_to_lps_mm`: continuous indices (array order z, y, x) of physical points.

    Args:
        points_lps_mm: ``(N, D)`` or ``(D,)`` points in mm, order (x, y, z) = (L, P, S).

    Returns:
        float64 continuous indices, same leading shape, array order; round to get the nearest voxel.
    """
    pts = np.asarray(points_lps_mm, dtype=np.float64) - np.asarray(volume.origin_lps_mm)
    idx_xyz = np.linalg.solve(volume.direction_matrix, pts.T).T / np.asarray(volume.spacing_zyx_mm[::-1])
    return idx_xyz[..., ::-1]


def _nifti_expected_bytes(header: bytes) -> int | None:
    """vox_offset + voxel bytes described by a NIfTI-1/-2 header, or None if the header is not recognisable."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack_from(endian + "i", header, 0)[0] == 348:
            dims = struct.unpack_from(endian + "8h", header, 40)
            bitpix = struct.unpack_from(endian + "h", header, 72)[0]
            vox_offset = int(struct.unpack_from(endian + "f", header, 108)[0])
            break
        if len(header) >= 540 and struct.unpack_from(endian + "i", header, 0)[0] == 540:
            dims = struct.unpack_from(endian + "8q", header, 16)
            bitpix = struct.unpack_from(endian + "h", header, 14)[0]
            vox_offset = int(struct.unpack_from(endian + "q", header, 168)[0])
            break
    else:
        return None
    if not 1 <= dims[0] <= 7 or bitpix <= 0:
        return None
    return vox_offset + math.prod(int(d) for d in dims[1: dims[0] + 1]) * bitpix // 8


def _check_nifti_complete(path: str) -> None:
    """ITK's NIfTI reader zero-fills a truncated file without any error: check the byte count first."""
    if path.lower().endswith(".nii"):
        with open(path, "rb") as fh:
            expected = _nifti_expected_bytes(fh.read(540))
        actual = os.path.getsize(path)
    else:
        try:
            with gzip.open(path, "rb") as fh:
                expected = _nifti_expected_bytes(fh.read(540))
        except (OSError, EOFError) as exc:
            raise SmallsegError(f"{path}: cannot decompress the NIfTI header ({one_line(exc)}): the file is "
                                "truncated or not gzip-compressed") from None
        if expected is None:
            return
        with open(path, "rb") as fh:  # gzip trailer: uncompressed size mod 2**32, O(1) to check
            fh.seek(-4, os.SEEK_END)
            (isize,) = struct.unpack("<I", fh.read(4))
        if isize == expected % 2**32:
            return
        # Trailer disagrees (truncated, or multi-member gzip): count the decompressed bytes to be sure.
        actual = 0
        try:
            with gzip.open(path, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    actual += len(chunk)
        except (OSError, EOFError):
            pass  # a stream cut short ends here; `actual` holds what could be decompressed
    if expected is not None and actual < expected:
        raise SmallsegError(f"{path}: truncated: the NIfTI header describes {expected:,} bytes but the file holds "
                            f"{actual:,}; re-copy or re-export it")


def _read_other_format(path: str, max_gb: float | None) -> Volume:
    if path.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_complete(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise SmallsegError(f"{path}: SimpleITK cannot read this file ({itk_reason(exc)}); is it a complete "
                            "NIfTI/MHA/NRRD/TIFF/PNG image?") from None
    size = reader.GetSize()
    if len(size) > 3:
        shape = " x ".join(str(v) for v in size)
        raise SmallsegError(f"{path}: a {len(size)}-D image ({shape}, x y z t); read_volume reads 2-D and 3-D "
                            "images: split the 4th axis (time points, channels) into 3-D files first (e.g. "
                            "fslsplit, or SimpleITK's image[:, :, :, t])")
    check_size(path, int(np.prod(size)), reader.GetPixelID(), reader.GetNumberOfComponents(), max_gb)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise SmallsegError(f"{path}: pixel data cannot be read ({itk_reason(exc)}); the file may be truncated "
                            "or corrupt") from None
    # A 3-D file with a single slice stays 3-D; a 2-D file (PNG, one-page TIFF) stays 2-D.
    return from_sitk(image, source_paths=(path,))


def read_image_file(path: str | os.PathLike, what: str) -> sitk.Image:
    """One image file (NIfTI, NRRD, MHA...) as SimpleITK reads it, grid and pixel type as stored: for readers
    that compare two files' grids (label volumes for training and for scoring). A missing, truncated or
    unreadable file is one line naming ``what`` (``"label volume"``...)."""
    path = os.fspath(path)
    if not Path(path).is_file():
        raise SmallsegError(f"{path}: no such {what} file")
    if path.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_complete(path)
    try:
        return sitk.ReadImage(path)
    except RuntimeError as exc:
        raise SmallsegError(f"{path}: cannot read the {what} ({itk_reason(exc)})") from None


def _is_other_format(path: str) -> bool:
    return path.lower().endswith(VOLUME_EXTENSIONS)


def read_volume(source: str | os.PathLike | Sequence[str | os.PathLike] | SeriesInfo, *,
                series_uid: str | None = None, max_gb: float | None = 8.0) -> Volume:
    """Read a DICOM series, a DICOM file, or a NIfTI/MHA/MHD/NRRD/TIFF/PNG file into a :class:`Volume`.

    Args:
        source: a folder (searched recursively; must hold exactly one image series unless ``series_uid`` is
            given), a list of DICOM files forming one series, a :class:`SeriesInfo` from :func:`find_series`,
            or a single file.
        series_uid: pick this Series Instance UID when a folder holds several series.
        max_gb: refuse (with the size in GB) images whose pixel data would take more memory than this;
            ``None`` reads anything.

    Returns:
        A Volume; DICOM files give ``(Z, Y, X)`` arrays (Z = 1 for one slice), DICOM projections (CR, DX,
        MG, localizers) and 2-D formats ``(Y, X)``. Recoverable problems (missing slices, uneven spacing, gantry
        tilt, dropped unreadable files) are in ``Volume.warnings``, assumed geometry in ``Volume.assumed``.

    Raises:
        SmallsegError: nothing to read, several series or stacks without ``series_uid``, non-image DICOM
            objects (SEG, SR...), truncated or unreadable files (named), 4-D images, images over ``max_gb``.
    """
    if isinstance(source, SeriesInfo):
        if not source.is_image:
            raise SmallsegError(f"{source.summary()}")
        return read_stack(source, max_gb)
    if isinstance(source, (list, tuple)):
        paths = [os.fspath(p) for p in source]
        if not paths:
            raise SmallsegError("read_volume: empty file list; pass a folder, a file or a non-empty list of files")
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise SmallsegError(f"{missing[0]}: no such file")
        entries = group_files([inspect_file(p, try_bare_dataset=True) for p in paths])
        return _read_from_entries(entries, f"the {len(paths)} given files", series_uid, max_gb)

    path = os.fspath(source)
    if os.path.isdir(path):
        return _read_from_entries(find_series(path), path, series_uid, max_gb)
    if not os.path.exists(path):
        raise SmallsegError(f"{path}: no such file or folder")
    if _is_other_format(path):
        info = inspect_file(path)
        if info.kind == "not_dicom":  # a real .tif/.png/.nii; DICOM/TIFF dual files go the DICOM way
            return _read_other_format(path, max_gb)
    info = inspect_file(path, try_bare_dataset=True)
    if info.kind == "image":
        return _read_from_entries(group_files([info]), path, series_uid, max_gb)
    if info.kind == "not_dicom":
        # Maybe a format SimpleITK recognises by content (e.g. an extension-less MHA).
        try:
            return _read_other_format(path, max_gb)
        except SmallsegError:
            raise SmallsegError(
                f"{path}: not readable: no DICOM file meta header ('DICM' at byte 128) and neither GDCM nor "
                "SimpleITK's other readers can parse it; if it is a DICOM data set without its header, re-save "
                "it with a DICOM tool (e.g. gdcmconv or dcmconv) to add one") from None
    if info.kind == "not_image":
        raise SmallsegError(f"{path} is a {info.reason}; pass an image series (find_series lists them)")
    raise SmallsegError(f"{path}: {info.reason}")


def _read_from_entries(entries: list[SeriesInfo], where: str, series_uid: str | None,
                       max_gb: float | None) -> Volume:
    images = [e for e in entries if e.is_image]
    skipped = [e for e in entries if not e.is_image]
    if series_uid is not None:
        chosen = [e for e in images if e.series_uid == series_uid]
        if not chosen:
            broken = [e for e in skipped if e.series_uid == series_uid]
            if broken:
                raise SmallsegError(f"series {series_uid}: {broken[0].reason}")
            known = ", ".join(e.series_uid for e in images[:10]) or "none"
            raise SmallsegError(f"{where}: no image series with UID {series_uid}; image series found: {known}")
        images = chosen
    unreadable = [e for e in skipped if e.kind == "unreadable"]
    if series_uid is None and unreadable and images:
        # A broken series may be the one the user wanted: do not silently read "the other" one.
        raise SmallsegError(f"{where}: {len(unreadable)} unreadable DICOM series/file(s) beside {len(images)} "
                            f"image series ({unreadable[0].summary()}); pass series_uid=... to read a readable "
                            "series anyway")
    if not images:
        if unreadable:
            raise SmallsegError(f"{where}: no readable DICOM image series; {unreadable[0].summary()}")
        detail = f" (skipped {len(skipped)}: {skipped[0].summary()}{' ...' if len(skipped) > 1 else ''})" \
            if skipped else ""
        raise SmallsegError(f"no DICOM image series found under {where}{detail}")
    if len(images) > 1:
        listed = "; ".join(e.summary() for e in images[:5])
        more = f"; and {len(images) - 5} more" if len(images) > 5 else ""
        if len({e.series_uid for e in images}) == 1:
            raise SmallsegError(f"{where}: series {images[0].series_uid} holds {len(images)} image stacks (split by "
                                f"orientation, position or size): {listed}{more}; pass one entry of "
                                "find_series(...) to read_volume")
        raise SmallsegError(f"{where}: {len(images)} DICOM image stacks: {listed}{more}; pick a series with "
                            "series_uid=..., or pass one entry of find_series(...) to read_volume")
    return read_stack(images[0], max_gb)


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------

_WRITE_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".nrrd")


def _split_ext(path: Path) -> tuple[str, str]:
    name = path.name
    for ext in _WRITE_EXTENSIONS + (".mhd", ".nhdr"):
        if name.lower().endswith(ext):
            return name[: -len(ext)], name[-len(ext):]
    return path.stem, path.suffix


def _write_atomic(image: sitk.Image, path: Path, compress: bool) -> Path:
    stem, ext = _split_ext(path)
    if ext.lower() not in _WRITE_EXTENSIONS:
        raise SmallsegError(f"{path}: cannot write {ext or 'files without extension'}; use .nii.gz, .nii, .mha "
                            "or .nrrd (single-file formats, so the write can be atomic)")
    if not path.parent.is_dir():
        raise SmallsegError(f"{path}: folder {path.parent} does not exist")
    # Same folder and same extension (SimpleITK picks the format from it); renamed only once complete.
    try:
        with atomic_path(path) as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
            if not _is_complete(tmp, ext):
                raise WriteError(f"{path}: writing failed: the file came out incomplete (disk full or a file size "
                                 f"limit reached){_disk_hint(path.parent)}")
    except RuntimeError as exc:
        raise WriteError(f"{path}: writing failed ({itk_reason(exc)}){_disk_hint(path.parent)}") from None
    except OSError as exc:
        raise WriteError(f"{path}: writing failed ({one_line(exc)}){_disk_hint(path.parent)}") from None
    return path


class WriteError(SmallsegError):
    """An output could not be written completely (disk full, file size limit, read-only folder): every later
    output on that disk would fail the same way, so a batch stops at the first one."""


def _is_complete(tmp: Path, ext: str) -> bool:
    """ITK ignores failed writes (a full disk, a file size limit): it leaves a cut-off file and no error.
    Checked before the file is renamed to its final name."""
    try:
        if ext.lower() in (".nii", ".nii.gz"):
            _check_nifti_complete(str(tmp))
        else:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(tmp))
            reader.ReadImageInformation()
    except (SmallsegError, RuntimeError):
        return False
    return True


def _disk_hint(folder: Path) -> str:
    """ITK reports a full disk as a bare write failure: say so when the folder's disk is (nearly) full."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    return f"; the disk holding {folder} is full ({free:,} bytes free)" if free < 1 << 20 else ""


def write_volume(volume: Volume, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write ``volume`` with its geometry to ``.nii.gz``, ``.nii``, ``.mha`` or ``.nrrd``, atomically.

    NIfTI stores the geometry as float32 (sub-micrometre rounding); MHA/NRRD keep it to ~15 digits.
    Returns the written path.
    """
    return _write_atomic(to_sitk(volume), Path(path), compress)


def _label_dtype(labels: np.ndarray) -> np.dtype:
    if labels.dtype == bool:
        return np.dtype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise SmallsegError(f"labels: dtype {labels.dtype} is not integer; pass integer instance/class ids")
    lo, hi = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    for dtype in (np.uint8, np.uint16, np.uint32, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    raise SmallsegError(f"labels: values {lo}..{hi} do not fit a 32-bit NIfTI label image")


def write_labels_nifti(labels: np.ndarray, like: Volume, path: str | os.PathLike) -> Path:
    """Write a label image on ``like``'s grid as NIfTI (``.nii.gz`` or ``.nii``), atomically.

    Args:
        labels: integer (or bool) array with ``like``'s spatial shape, ``(Z, Y, X)`` or ``(Y, X)``; 0 is
            background. Stored as the smallest unsigned type that holds the ids (uint8/16/32).
        like: the image the labels belong to; its spacing, origin and direction are copied.
        path: output file; written under a temporary name and renamed when complete.

    Returns:
        The written path.
    """
    labels = np.asarray(labels)
    if labels.shape != like.spatial_shape:
        raise SmallsegError(f"{path}: labels have shape {labels.shape} but the image has {like.spatial_shape}; "
                            "labels must be on the image grid")
    if not str(path).lower().endswith((".nii", ".nii.gz")):
        raise SmallsegError(f"{path}: write_labels_nifti writes .nii.gz or .nii; use write_volume for other formats")
    grid = dataclasses.replace(like, array=labels.astype(_label_dtype(labels), copy=False), meta={}, warnings=[])
    return write_volume(grid, path, compress=True)
