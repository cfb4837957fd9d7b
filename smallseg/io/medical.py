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

DICOM handling: :func:`find_series` walks a folder tree once, reads each file's header (the file meta group is
parsed directly; image headers through GDCM's ``ReadImageInformation``), and groups image files by Series
Instance UID, ordered along the slice normal.  Things that are not image series (SEG, SR, RTSTRUCT,
presentation states, non-DICOM files, truncated files) are listed too, each with the reason it is skipped.
:func:`read_volume` reads one series (or a NIfTI/MHA/NRRD/TIFF/PNG file) into a :class:`Volume`, raising
:class:`~smallseg.errors.SmallsegError` with a one-line message for anything a user must fix and collecting
recoverable problems (missing slices, uneven spacing) in ``Volume.warnings``.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import mmap
import os
import re
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from smallseg.errors import SmallsegError, one_line

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


@dataclass(frozen=True)
class SeriesInfo:
    """One entry of :func:`find_series`: a DICOM image series, or something skipped and why.

    Attributes:
        kind: ``"image"`` (readable image series), ``"not_image"`` (DICOM object that holds no image: SEG, SR,
            RTSTRUCT, presentation state...), ``"not_dicom"`` or ``"unreadable"`` (truncated/corrupt DICOM,
            or an image series that cannot be stacked into one volume).
        files: the files; for an image series ordered along the slice normal (increasing position).
        series_uid, study_uid, modality, description: DICOM tags (``""`` when unknown).
        n_slices: number of 2-D slices (frames) of an image series, 0 otherwise.
        slice_shape_yx: rows, columns of one slice (0, 0 when not an image).
        slice_positions_mm: position of each file along the slice normal, same order as ``files``; empty when
            the files carry no Image Position (Patient).
        sop_class: human name of the SOP Class (e.g. ``"Segmentation Storage"``) when known.
        reason: why this entry is not a readable image series; ``""`` for ``kind == "image"``.
    """

    kind: str
    files: tuple[str, ...]
    series_uid: str = ""
    study_uid: str = ""
    modality: str = ""
    description: str = ""
    n_slices: int = 0
    slice_shape_yx: tuple[int, int] = (0, 0)
    slice_positions_mm: tuple[float, ...] = ()
    sop_class: str = ""
    reason: str = ""

    @property
    def is_image(self) -> bool:
        """True for a readable DICOM image series."""
        return self.kind == "image"

    def summary(self) -> str:
        """One line for logs and error messages."""
        if self.is_image:
            desc = f" '{self.description}'" if self.description else ""
            return (f"{self.series_uid} ({self.modality or '?'}{desc}, {self.n_slices} slice(s) of "
                    f"{self.slice_shape_yx[0]}x{self.slice_shape_yx[1]}, {len(self.files)} file(s))")
        where = self.files[0] if len(self.files) == 1 else f"{len(self.files)} files in {_common_dir(self.files)}"
        return f"{where}: {self.reason}"


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


# --------------------------------------------------------------------------------------------------------------
# DICOM header inspection
# --------------------------------------------------------------------------------------------------------------

# Storage SOP classes that hold no image we could segment. Prefix entries (ending in ".") cover families.
_NON_IMAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.66.4": "DICOM Segmentation Storage object",
    "1.2.840.10008.5.1.4.1.1.66.7": "DICOM Label Map Segmentation Storage object",
    "1.2.840.10008.5.1.4.1.1.66.5": "DICOM Surface Segmentation Storage object",
    "1.2.840.10008.5.1.4.1.1.66": "DICOM Raw Data Storage object",
    "1.2.840.10008.5.1.4.1.1.66.1": "DICOM Spatial Registration Storage object",
    "1.2.840.10008.5.1.4.1.1.66.2": "DICOM Spatial Fiducials Storage object",
    "1.2.840.10008.5.1.4.1.1.66.3": "DICOM Deformable Spatial Registration Storage object",
    "1.2.840.10008.5.1.4.1.1.481.2": "DICOM RT Dose Storage object (a dose grid)",
    "1.2.840.10008.5.1.4.1.1.481.3": "DICOM RT Structure Set Storage object",
    "1.2.840.10008.5.1.4.1.1.481.5": "DICOM RT Plan Storage object",
    "1.2.840.10008.5.1.4.1.1.104.1": "DICOM Encapsulated PDF Storage object",
    "1.2.840.10008.5.1.4.1.1.104.2": "DICOM Encapsulated CDA Storage object",
    "1.2.840.10008.1.3.10": "DICOMDIR (media storage directory index)",
    "1.2.840.10008.5.1.4.1.1.88.": "DICOM Structured Report object",
    "1.2.840.10008.5.1.4.1.1.11.": "DICOM Presentation State object",
    "1.2.840.10008.5.1.4.1.1.9.": "DICOM Waveform object",
    "1.2.840.10008.5.1.4.1.1.481.": "DICOM RT (non-image) object",
}
_IMAGE_SOP_EXCEPTIONS = {"1.2.840.10008.5.1.4.1.1.481.1"}  # RT Image Storage: a real (portal) image
_NON_IMAGE_MODALITIES = {"SEG": "DICOM Segmentation object", "SR": "DICOM Structured Report object",
                         "RTSTRUCT": "DICOM RT Structure Set object", "RTPLAN": "DICOM RT Plan object",
                         "RTDOSE": "DICOM RT Dose object (a dose grid)", "PR": "DICOM Presentation State object",
                         "KO": "DICOM Key Object Selection object", "REG": "DICOM Registration object",
                         "FID": "DICOM Spatial Fiducials object", "DOC": "DICOM encapsulated document"}

# Tags copied into Volume.meta. Deliberately no patient identifiers: meta ends up in logs and outputs.
_META_TAGS = {
    "0008|0016": "SOPClassUID", "0008|0060": "Modality", "0008|0070": "Manufacturer",
    "0008|1090": "ManufacturerModelName", "0008|0020": "StudyDate", "0008|1030": "StudyDescription",
    "0008|103e": "SeriesDescription", "0020|0011": "SeriesNumber", "0018|0015": "BodyPartExamined",
    "0018|0050": "SliceThickness", "0018|0088": "SpacingBetweenSlices", "0018|0060": "KVP",
    "0018|1210": "ConvolutionKernel", "0018|5100": "PatientPosition", "0028|0004": "PhotometricInterpretation",
    "0028|0101": "BitsStored", "0028|0103": "PixelRepresentation", "0028|1050": "WindowCenter",
    "0028|1051": "WindowWidth", "0028|1052": "RescaleIntercept", "0028|1053": "RescaleSlope",
    "0028|1054": "RescaleType", "0018|0087": "MagneticFieldStrength", "0018|0081": "EchoTime",
    "0018|0080": "RepetitionTime",
}

_HEAD_BYTES = 64 * 1024
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


@dataclass
class _FileInfo:
    path: str
    kind: str  # image | not_image | not_dicom | unreadable
    reason: str = ""
    sop_class_uid: str = ""
    sop_name: str = ""
    series_uid: str = ""
    study_uid: str = ""
    modality: str = ""
    description: str = ""
    rows: int = 0
    cols: int = 0
    frames: int = 1
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, ...] | None = None
    instance_number: int | None = None
    pixel_id: int = -1
    components: int = 1
    tags: dict[str, str] = field(default_factory=dict)


def _non_image_name(sop_class_uid: str, modality: str = "") -> str:
    """Human name when the SOP class / modality is a non-image object, else ``""``."""
    if sop_class_uid and sop_class_uid not in _IMAGE_SOP_EXCEPTIONS:
        if sop_class_uid in _NON_IMAGE_SOP_CLASSES and not sop_class_uid.endswith("."):
            return _NON_IMAGE_SOP_CLASSES[sop_class_uid]
        for prefix, name in _NON_IMAGE_SOP_CLASSES.items():
            if prefix.endswith(".") and sop_class_uid.startswith(prefix):
                return name
    return _NON_IMAGE_MODALITIES.get(modality.strip().upper(), "")


def _parse_file_meta(head: bytes) -> dict[int, str]:
    """The file meta group (0002,xxxx) of a Part-10 file: always explicit VR little endian after 'DICM'."""
    out: dict[int, str] = {}
    pos = 132
    while pos + 8 <= len(head):
        group, elem = struct.unpack_from("<HH", head, pos)
        if group != 0x0002:
            break
        vr = head[pos + 4: pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                break
            (length,) = struct.unpack_from("<I", head, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            start = pos + 8
        if vr == b"UI":
            out[elem] = head[start: start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = start + length
    return out


def _scan_uid(head: bytes, group: int, elem: int) -> str:
    """Best-effort UID value of tag (group, elem) found by byte search — used only for files GDCM rejects,
    to attribute a broken file to its series."""
    tag = struct.pack("<HH", group, elem)
    i = head.find(tag)
    while i >= 0:
        if head[i + 4: i + 6] == b"UI":
            (n,) = struct.unpack_from("<H", head, i + 6)
            start = i + 8
        else:  # implicit VR: 4-byte length
            (n,) = struct.unpack_from("<I", head, i + 4) if i + 8 <= len(head) else (0,)
            start = i + 8
        value = head[start: start + n].rstrip(b"\x00 ")
        if 0 < n <= 64 and re.fullmatch(rb"[0-9.]+", value):
            return value.decode("ascii")
        i = head.find(tag, i + 1)
    return ""


def _truncation_note(path: str) -> str:
    """Explain a GDCM failure when the Pixel Data element is shorter than it declares, else ``""``."""
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
            i = m.find(b"\xe0\x7f\x10\x00")
            if i < 0 or i + 12 > len(m):
                return ""
            if m[i + 4: i + 6] in (b"OB", b"OW"):
                (declared,) = struct.unpack_from("<I", m, i + 8)
                start = i + 12
            else:
                (declared,) = struct.unpack_from("<I", m, i + 4)
                start = i + 8
            available = len(m) - start
            if declared != 0xFFFFFFFF and declared > available:
                return (f"pixel data declares {declared} bytes but only {available} remain in the file: "
                        "the file is truncated")
    except (OSError, ValueError):
        return ""
    return ""


def _gdcm_info(path: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return reader


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(" ", "").split("\\") if v != "")
    except ValueError:
        return ()


def _inspect_file(path: str, try_bare_dataset: bool = False) -> _FileInfo:
    """Classify one file cheaply (headers only) and collect what grouping and sorting need."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError as exc:
        return _FileInfo(path, "unreadable", f"cannot open: {one_line(exc)}")
    if not head:
        return _FileInfo(path, "not_dicom", "empty file")
    has_preamble = head[128:132] == b"DICM"
    info = _FileInfo(path, "image")
    if has_preamble:
        file_meta = _parse_file_meta(head)
        info.sop_class_uid = file_meta.get(0x0002, "")
        info.sop_name = _non_image_name(info.sop_class_uid)
        if info.sop_name:
            # Decided from the file meta alone: no need to ask GDCM (which rejects pixel-less objects anyway).
            info.kind = "not_image"
            info.reason = f"{info.sop_name}, not an image"
            info.series_uid = _scan_uid(head, 0x0020, 0x000E)
            return info
    else:
        # A data set without the Part-10 header starts with a group-0008 (or 0002) element; GDCM can read those.
        looks_bare = len(head) >= 4 and head[0] in (0x02, 0x08) and head[1] == 0 and head[3] == 0
        if not (looks_bare or try_bare_dataset):
            return _FileInfo(path, "not_dicom", _not_dicom_reason(path))
    try:
        reader = _gdcm_info(path)
    except RuntimeError:
        if not has_preamble:
            return _FileInfo(path, "not_dicom", _not_dicom_reason(path) + "; GDCM cannot parse it as a DICOM "
                             "data set without header either")
        note = _truncation_note(path)
        return _FileInfo(path, "unreadable", f"DICOM file that GDCM cannot read ({note or 'corrupt or unsupported'})",
                         sop_class_uid=info.sop_class_uid, series_uid=_scan_uid(head, 0x0020, 0x000E))

    def tag(key: str) -> str:
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""

    info.sop_class_uid = info.sop_class_uid or tag("0008|0016")
    info.modality = tag("0008|0060")
    info.sop_name = _non_image_name(info.sop_class_uid, info.modality)
    info.series_uid = tag("0020|000e")
    info.study_uid = tag("0020|000d")
    info.description = tag("0008|103e")
    if info.sop_name:
        info.kind, info.reason = "not_image", f"{info.sop_name}, not an image"
        return info
    size = reader.GetSize()
    info.cols, info.rows = int(size[0]), int(size[1])
    info.frames = int(size[2]) if len(size) > 2 else 1
    pos = _floats(tag("0020|0032"))
    info.position = pos if len(pos) == 3 else None  # type: ignore[assignment]
    ori = _floats(tag("0020|0037"))
    info.orientation = ori if len(ori) == 6 else None
    number = tag("0020|0013")
    info.instance_number = int(float(number)) if re.fullmatch(r"[-+]?\d+(\.0*)?", number) else None
    info.pixel_id = reader.GetPixelID()
    info.components = reader.GetNumberOfComponents()
    info.tags = {name: tag(key) for key, name in _META_TAGS.items() if tag(key)}
    return info


_VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".tif", ".tiff", ".png",
                      ".jpg", ".jpeg", ".bmp")


def _not_dicom_reason(path: str) -> str:
    lower = path.lower()
    for ext in _VOLUME_EXTENSIONS:
        if lower.endswith(ext):
            return f"not DICOM (a {ext} file: read it with read_volume on the file itself)"
    return "not DICOM (no 'DICM' marker at byte 128 and no DICOM data element at the start)"


# --------------------------------------------------------------------------------------------------------------
# Series discovery
# --------------------------------------------------------------------------------------------------------------


def _slice_normal(orientation: Sequence[float]) -> np.ndarray:
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    return np.cross(row, col)


def _group_series(infos: list[_FileInfo]) -> list[SeriesInfo]:
    """Group inspected files into SeriesInfo entries (image series sorted along the slice normal)."""
    out: list[SeriesInfo] = []
    by_uid: dict[str, list[_FileInfo]] = {}
    for info in infos:
        if info.kind == "image":
            # Files without a Series Instance UID are grouped per folder rather than merged across folders.
            key = info.series_uid or f"<no uid>{os.path.dirname(info.path)}"
            by_uid.setdefault(key, []).append(info)
    broken_by_uid: dict[str, list[_FileInfo]] = {}
    for info in infos:
        if info.kind == "unreadable" and info.series_uid in by_uid:
            broken_by_uid.setdefault(info.series_uid, []).append(info)

    for key, members in by_uid.items():
        out.append(_series_from_files(members, broken_by_uid.get(key, [])))
    attributed = {id(i) for lst in broken_by_uid.values() for i in lst}
    non_image: dict[tuple[str, str], list[_FileInfo]] = {}
    for info in infos:
        if info.kind == "image" or id(info) in attributed:
            continue
        if info.kind == "not_image" and info.series_uid:
            non_image.setdefault((info.series_uid, info.reason), []).append(info)
        else:
            out.append(SeriesInfo(kind=info.kind, files=(info.path,), series_uid=info.series_uid,
                                  sop_class=info.sop_name, reason=info.reason))
    for (uid, reason), members in non_image.items():
        first = members[0]
        out.append(SeriesInfo(kind="not_image", files=tuple(m.path for m in members), series_uid=uid,
                              study_uid=first.study_uid, modality=first.modality, description=first.description,
                              sop_class=first.sop_name, reason=reason))
    order = {"image": 0, "unreadable": 1, "not_image": 2, "not_dicom": 3}
    out.sort(key=lambda s: (order[s.kind], s.files[0]))
    return out


def _series_from_files(members: list[_FileInfo], broken: list[_FileInfo]) -> SeriesInfo:
    first = members[0]
    uid = first.series_uid
    common = dict(series_uid=uid, study_uid=first.study_uid, modality=first.modality,
                  description=first.description)

    def unreadable(reason: str, files: Sequence[str]) -> SeriesInfo:
        return SeriesInfo(kind="unreadable", files=tuple(files), reason=reason, **common)

    all_files = [m.path for m in members] + [b.path for b in broken]
    if broken:
        b = broken[0]
        more = f" (and {len(broken) - 1} more broken file(s))" if len(broken) > 1 else ""
        return unreadable(f"{b.path}: {b.reason}{more}; remove it or pass the other files as a list", all_files)
    shapes = {(m.rows, m.cols, m.components, m.pixel_id) for m in members}
    if len(shapes) > 1:
        desc = ", ".join(f"{r}x{c}" for r, c, _, _ in sorted(shapes))
        return unreadable(f"series mixes slices of different size or pixel type ({desc}); pass a consistent "
                          "subset of its files as a list", all_files)
    if len(members) > 1 and any(m.frames > 1 for m in members):
        return unreadable(f"series has {len(members)} multi-frame files; read each file on its own", all_files)

    positions: tuple[float, ...] = ()
    if all(m.position is not None and m.orientation is not None for m in members):
        orientations = np.array([m.orientation for m in members])
        if np.abs(orientations - orientations[0]).max() > 1e-4:
            return unreadable("series mixes slice orientations (a localizer or several stacks?); pass the files "
                              "of one stack as a list", all_files)
        normal = _slice_normal(first.orientation)
        proj = np.array([float(np.dot(normal, m.position)) for m in members])
        order = np.argsort(proj, kind="stable")
        members = [members[i] for i in order]
        positions = tuple(float(proj[i]) for i in order)
        if len(members) > 1:
            steps = np.diff(positions)
            tol = max(1e-3, 1e-3 * float(np.median(np.abs(steps))) if steps.size else 1e-3)
            dup = int(np.sum(steps < tol))
            if dup:
                return unreadable(f"{dup + 1} or more slices share a position along the slice normal (several "
                                  "acquisitions, echoes or time points in one series?); pass the files of one "
                                  "stack as a list", all_files)
    else:
        # No geometry to sort by: fall back on Instance Number, then file name.
        members = sorted(members, key=lambda m: (m.instance_number is None, m.instance_number or 0, m.path))
    n_slices = sum(m.frames for m in members)
    return SeriesInfo(kind="image", files=tuple(m.path for m in members), n_slices=n_slices,
                      slice_shape_yx=(first.rows, first.cols), slice_positions_mm=positions, sop_class="",
                      **common)


def _common_dir(paths: Sequence[str]) -> str:
    try:
        return os.path.commonpath([os.path.dirname(p) for p in paths]) or "."
    except ValueError:
        return "."


def find_series(root: str | os.PathLike) -> list[SeriesInfo]:
    """Every DICOM image series under ``root`` (recursively), plus everything skipped with the reason.

    Reads headers only (pixel data is not decoded). Image files are grouped by Series Instance UID across
    sub-folders and ordered along the slice normal. Hidden files and folders (``.name``) are ignored.

    Returns:
        Image series first (``kind == "image"``), then unreadable series/files, non-image DICOM objects
        (SEG, SR, RTSTRUCT, presentation states..., grouped by series when the UID is known) and non-DICOM
        files, each with ``reason``. Sorted by first file path within each kind.

    Raises:
        SmallsegError: ``root`` is not a folder.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise SmallsegError(f"{root}: not a folder; pass a folder of DICOM files, or a file to read_volume")
    infos = []
    for dirpath, dirnames, filenames in os.walk(root_path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                infos.append(_inspect_file(os.path.join(dirpath, name)))
    return _group_series(infos)


# --------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------


def _bytes_per_pixel(pixel_id: int, components: int) -> int:
    probe = sitk.Image([1] * 2, pixel_id, components) if components > 1 else sitk.Image([1, 1], pixel_id)
    return int(probe.GetSizeOfPixelComponent()) * max(components, 1)


def _check_size(label: str, n_voxels: int, pixel_id: int, components: int, max_gb: float | None) -> None:
    if max_gb is None:
        return
    size_gb = n_voxels * _bytes_per_pixel(pixel_id, components) / 1e9
    if size_gb > max_gb:
        raise SmallsegError(f"{label}: {size_gb:.1f} GB in memory ({n_voxels:,} voxels of "
                            f"{sitk.GetPixelIDValueAsString(pixel_id)}), over max_gb={max_gb:g}; pass a larger "
                            "max_gb (or max_gb=None) to read it anyway")


def _compact_dtype(array: np.ndarray) -> np.ndarray:
    """GDCM widens rescaled 16-bit CT to int32 and some floats to float64; shrink when lossless."""
    if array.dtype in (np.int32, np.int64, np.uint32) and array.size:
        lo, hi = array.min(), array.max()
        if lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
            return array.astype(np.int16)
        if lo >= 0 and hi <= np.iinfo(np.uint16).max:
            return array.astype(np.uint16)
    return array


def _spacing_warnings(series: SeriesInfo) -> list[str]:
    """Missing slices and uneven spacing, from the positions along the slice normal."""
    pos = np.asarray(series.slice_positions_mm)
    if pos.size < 3:
        return []
    steps = np.diff(pos)
    median = float(np.median(steps))
    warnings = []
    gaps = np.nonzero(steps > 1.5 * median)[0]
    if gaps.size:
        missing = int(sum(round(steps[g] / median) - 1 for g in gaps))
        where = ", ".join(f"after slice {g} ({steps[g]:.3g} mm gap)" for g in gaps[:5])
        warnings.append(f"series {series.series_uid}: about {max(missing, 1)} missing slice(s) {where} where the "
                        f"usual spacing is {median:.4g} mm; slices are stacked with the average spacing "
                        f"{(pos[-1] - pos[0]) / (pos.size - 1):.4g} mm, so positions near the gap are approximate")
    regular = steps[steps <= 1.5 * median]
    if regular.size and (regular.max() - regular.min()) > max(0.01 * median, 1e-3):
        warnings.append(f"series {series.series_uid}: slice spacing varies from {regular.min():.4g} to "
                        f"{regular.max():.4g} mm; the volume uses one spacing, so physical positions are "
                        "approximate")
    return warnings


def _tilt_warning(series: SeriesInfo, first: _FileInfo) -> list[str]:
    """Slices whose positions do not run along the slice normal (gantry tilt) cannot be a plain grid."""
    if len(series.files) < 2 or first.position is None or first.orientation is None:
        return []
    last = _inspect_file(series.files[-1], try_bare_dataset=True)
    if last.position is None:
        return []
    step = np.subtract(last.position, first.position)
    norm = float(np.linalg.norm(step))
    normal = _slice_normal(first.orientation)
    if norm > 0 and abs(float(np.dot(step / norm, normal))) < 0.9999:
        angle = math.degrees(math.acos(min(1.0, abs(float(np.dot(step / norm, normal))))))
        return [f"series {series.series_uid}: slice positions run {angle:.1f} degrees off the slice normal "
                "(gantry tilt?); the volume is sheared relative to the patient"]
    return []


def _read_dicom_series(series: SeriesInfo, max_gb: float | None) -> Volume:
    first = _inspect_file(series.files[0], try_bare_dataset=True)
    if first.kind != "image":
        raise SmallsegError(f"{first.path}: {first.reason}")
    label = f"series {series.series_uid}" if series.series_uid else series.files[0]
    n_voxels = series.n_slices * series.slice_shape_yx[0] * series.slice_shape_yx[1]
    _check_size(label, n_voxels, first.pixel_id, first.components, max_gb)
    try:
        if len(series.files) == 1:
            reader = sitk.ImageFileReader()
            reader.SetImageIO("GDCMImageIO")
            reader.SetFileName(series.files[0])
            image = reader.Execute()
        else:
            reader = sitk.ImageSeriesReader()
            reader.SetImageIO("GDCMImageIO")
            reader.SetFileNames(list(series.files))
            # We report spacing problems ourselves (Volume.warnings); keep ITK from printing its own.
            if hasattr(reader, "SetSpacingWarningRelThreshold"):  # SimpleITK >= 2.4
                reader.SetSpacingWarningRelThreshold(1e9)
            image = reader.Execute()
    except RuntimeError as exc:
        raise _culprit_error(series.files, exc) from None
    warnings = _spacing_warnings(series) + _tilt_warning(series, first)
    if len(series.files) > 1 and not series.slice_positions_mm:
        warnings.append(f"series {series.series_uid}: slices carry no Image Position/Orientation (Patient); "
                        "ordered by Instance Number, and the slice spacing and origin are not physical")
    volume = from_sitk(image, modality=first.modality, series_uid=series.series_uid,
                       study_uid=series.study_uid, source_paths=tuple(series.files), meta=dict(first.tags),
                       warnings=warnings)
    del image
    volume.array = _compact_dtype(volume.array)
    return volume


def _culprit_error(files: Sequence[str], exc: Exception) -> SmallsegError:
    """Name the file that broke a series read."""
    for path in files:
        try:
            reader = sitk.ImageFileReader()
            reader.SetImageIO("GDCMImageIO")
            reader.SetFileName(path)
            reader.Execute()
        except RuntimeError as inner:
            note = _truncation_note(path)
            return SmallsegError(f"{path}: cannot read pixel data ({note or _itk_reason(inner)}); remove or "
                                 "replace this file")
    return SmallsegError(f"{_common_dir(files)}: reading the series failed ({_itk_reason(exc)})")


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


def _itk_reason(exc: Exception) -> str:
    """The informative tail of an ITK/SimpleITK exception, without source paths and object addresses."""
    text = one_line(exc)
    parts = re.split(r"(?:ITK ERROR|itk::ERROR|sitk::ERROR): (?:\w+\(0x[0-9a-fA-F]+\): )?", text)
    return (parts[-1] if len(parts) > 1 else text)[:240]


def _read_other_format(path: str, max_gb: float | None) -> Volume:
    if path.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_complete(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise SmallsegError(f"{path}: SimpleITK cannot read this file ({_itk_reason(exc)}); is it a complete "
                            "NIfTI/MHA/NRRD/TIFF/PNG image?") from None
    _check_size(path, int(np.prod(reader.GetSize())), reader.GetPixelID(), reader.GetNumberOfComponents(), max_gb)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise SmallsegError(f"{path}: pixel data cannot be read ({_itk_reason(exc)}); the file may be truncated "
                            "or corrupt") from None
    # A 3-D file with a single slice stays 3-D; a 2-D file (PNG, one-page TIFF) stays 2-D.
    return from_sitk(image, source_paths=(path,))


def _is_other_format(path: str) -> bool:
    return path.lower().endswith(_VOLUME_EXTENSIONS)


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
        A Volume; DICOM files give ``(Z, Y, X)`` arrays (Z = 1 for one slice), 2-D formats ``(Y, X)``.
        Recoverable problems (missing slices, uneven spacing, gantry tilt) are in ``Volume.warnings``.

    Raises:
        SmallsegError: nothing to read, several series without ``series_uid``, non-image DICOM objects
            (SEG, SR...), truncated or unreadable files (named), images over ``max_gb``.
    """
    if isinstance(source, SeriesInfo):
        if not source.is_image:
            raise SmallsegError(f"{source.summary()}")
        return _read_dicom_series(source, max_gb)
    if isinstance(source, (list, tuple)):
        paths = [os.fspath(p) for p in source]
        if not paths:
            raise SmallsegError("read_volume: empty file list; pass a folder, a file or a non-empty list of files")
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise SmallsegError(f"{missing[0]}: no such file")
        entries = _group_series([_inspect_file(p, try_bare_dataset=True) for p in paths])
        return _read_from_entries(entries, f"the {len(paths)} given files", series_uid, max_gb)

    path = os.fspath(source)
    if os.path.isdir(path):
        return _read_from_entries(find_series(path), path, series_uid, max_gb)
    if not os.path.exists(path):
        raise SmallsegError(f"{path}: no such file or folder")
    if _is_other_format(path):
        info = _inspect_file(path)
        if info.kind == "not_dicom":  # a real .tif/.png/.nii; DICOM/TIFF dual files go the DICOM way
            return _read_other_format(path, max_gb)
    info = _inspect_file(path, try_bare_dataset=True)
    if info.kind == "image":
        return _read_from_entries(_group_series([info]), path, series_uid, max_gb)
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
                            f"image series ({unreadable[0].summary()}); pass series_uid=... (CLI: --series-uid) "
                            "to read a readable series anyway")
    if not images:
        if unreadable:
            raise SmallsegError(f"{where}: no readable DICOM image series; {unreadable[0].summary()}")
        detail = f" (skipped {len(skipped)}: {skipped[0].summary()}{' ...' if len(skipped) > 1 else ''})" \
            if skipped else ""
        raise SmallsegError(f"no DICOM image series found under {where}{detail}")
    if len(images) > 1:
        listed = "; ".join(e.summary() for e in images[:5])
        more = f"; and {len(images) - 5} more (list them with find_series)" if len(images) > 5 else ""
        raise SmallsegError(f"{where}: {len(images)} DICOM image series: {listed}{more}; pick one with "
                            "series_uid=... (CLI: --series-uid)")
    return _read_dicom_series(images[0], max_gb)


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
    tmp = path.with_name(f".{stem}.partial-{uuid.uuid4().hex[:8]}{ext}")
    try:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
        os.replace(tmp, path)
    except RuntimeError as exc:
        raise SmallsegError(f"{path}: writing failed ({_itk_reason(exc)})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


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
