"""DICOM series discovery and stacking: a folder tree becomes image *stacks*, each read into one Volume.

:func:`find_series` walks a tree once, reads each file's header (:mod:`smallseg.io.dicom_header`) and groups
image files by Series Instance UID. A series is then split into stacks the way dcm2niix does, because one series
often holds several things that are not one 3-D grid:

1. files of different size or pixel type are separate stacks, and so is each multi-frame file;
2. projection images (CR, DX, MG, XA, RF..., and Image Type LOCALIZER or PROJECTION IMAGE: a scout, a MIP of a
   radial MR) have no 3-D geometry: each file is a 2-D image of its own;
3. the other files are grouped by Image Orientation (Patient) (direction cosines within 1e-3): a 3-plane
   localizer gives three stacks;
4. within one orientation, files are sorted along the slice normal and split where the step exceeds
   :data:`SPLIT_GAP_FACTOR` times the usual one (a lone slice 200 mm from a contiguous block is its own stack;
   one or two missing slices only give a warning); slices sharing positions are split by EchoNumbers,
   TemporalPositionIdentifier and AcquisitionNumber (one stack per echo or time point) when those tell them
   apart, else the group is not processed, with the reason.

A file of the series that cannot be read (truncated, corrupt) is dropped with a note when the remaining files
still form a stack. Everything that is not an image stack (SEG, SR, RTSTRUCT, presentation states, pixel-less
data sets, non-DICOM files) is listed too, one entry per series (or per file when it has no UID), with the reason.

:func:`read_stack` reads one stack into a :class:`~smallseg.io.medical.Volume`, saying in ``Volume.assumed``
what geometry it had to assume (pixel spacing missing, slice thickness for a single slice) and in
``Volume.warnings`` the recoverable problems (missing slices, uneven spacing, gantry tilt).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from smallseg.errors import SmallsegError, one_line
from smallseg.io.dicom_header import FileInfo, floats, inspect_file, truncation_note

__all__ = ["SeriesInfo", "find_series", "group_files", "read_stack", "PROJECTION_MODALITIES", "SPLIT_GAP_FACTOR"]

# Modalities whose images are projections (no slice geometry): areas, not volumes.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "XA", "RF", "IO", "PX", "DG", "RG", "XC"})
# A step along the slice normal this many times the median step starts a new stack.
SPLIT_GAP_FACTOR = 5.0
_ORIENTATION_TOL = 1e-3


@dataclass(frozen=True)
class SeriesInfo:
    """One entry of :func:`find_series`: an image stack, or something skipped and why.

    Attributes:
        kind: ``"image"`` (a readable image stack), ``"not_image"`` (DICOM object that holds no image: SEG, SR,
            RTSTRUCT, presentation state, a data set without pixel data...), ``"not_dicom"`` or ``"unreadable"``
            (truncated/corrupt DICOM, or an image series that cannot be stacked).
        files: the files; for an image stack ordered along the slice normal (increasing position).
        series_uid, study_uid, modality, description: DICOM tags (``""`` when unknown). For non-image objects
            ``modality`` is their short name (``SEG``, ``RTSTRUCT``, ``SR``, ``DICOMDIR``...).
        n_slices: number of 2-D slices (frames) of an image stack, 0 otherwise.
        slice_shape_yx: rows, columns of one slice (0, 0 when not an image).
        slice_positions_mm: position of each file along the slice normal, same order as ``files``; empty when
            the files carry no Image Position (Patient).
        sop_class: human name of the SOP Class (e.g. ``"DICOM Segmentation Storage object"``) when known.
        reason: why this entry is not a readable image stack; ``""`` for ``kind == "image"``.
        stack, n_stacks: this stack's number (1-based) among the ``n_stacks`` stacks of its series.
        geometry: ``"volume"`` (slices on a 3-D grid, also a single cross-sectional slice) or ``"projection"``
            (a 2-D image without slice geometry: radiograph, localizer, projection image).
        notes: what was done to form the stack (files dropped, why the series was split), one line each.
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
    stack: int = 1
    n_stacks: int = 1
    geometry: str = "volume"
    notes: tuple[str, ...] = ()

    @property
    def is_image(self) -> bool:
        """True for a readable DICOM image stack."""
        return self.kind == "image"

    @property
    def stack_label(self) -> str:
        """``"2/3"`` (stack 2 of 3), ``""`` for a series that is one stack or for non-images."""
        return f"{self.stack}/{self.n_stacks}" if self.is_image and self.n_stacks > 1 else ""

    def summary(self) -> str:
        """One line for logs and error messages."""
        if self.is_image:
            desc = f" '{self.description}'" if self.description else ""
            stack = f" stack {self.stack_label}" if self.stack_label else ""
            return (f"{self.series_uid}{stack} ({self.modality or '?'}{desc}, {self.n_slices} slice(s) of "
                    f"{self.slice_shape_yx[0]}x{self.slice_shape_yx[1]}, {len(self.files)} file(s))")
        where = self.files[0] if len(self.files) == 1 else f"{len(self.files)} files in {common_dir(self.files)}"
        return f"{where}: {self.reason}"


def common_dir(paths: Sequence[str]) -> str:
    """The deepest folder holding all ``paths`` (``"."`` when they share none)."""
    try:
        return os.path.commonpath([os.path.dirname(p) for p in paths]) or "."
    except ValueError:
        return "."


# --------------------------------------------------------------------------------------------------------------
# Grouping and stacking
# --------------------------------------------------------------------------------------------------------------


def _slice_normal(orientation: Sequence[float]) -> np.ndarray:
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    return np.cross(row, col)


def _is_projection(info: FileInfo) -> bool:
    kinds = info.image_type
    return (info.modality.upper() in PROJECTION_MODALITIES or "LOCALIZER" in kinds
            or any("PROJECTION" in k for k in kinds))


def group_files(infos: list[FileInfo]) -> list[SeriesInfo]:
    """Group inspected files into entries: image stacks (see the module docstring), then the rest."""
    out: list[SeriesInfo] = []
    by_uid: dict[str, list[FileInfo]] = {}
    for info in infos:
        if info.kind == "image":
            # Files without a Series Instance UID are grouped per folder rather than merged across folders.
            key = info.series_uid or f"<no uid>{os.path.dirname(info.path)}"
            by_uid.setdefault(key, []).append(info)
    broken_by_uid: dict[str, list[FileInfo]] = {}
    for info in infos:
        if info.kind == "unreadable" and info.series_uid in by_uid:
            broken_by_uid.setdefault(info.series_uid, []).append(info)
    for key, members in by_uid.items():
        out.extend(_stacks_of_series(members, broken_by_uid.get(key, [])))
    attributed = {id(i) for lst in broken_by_uid.values() for i in lst}
    # One entry per series for everything else (50 pixel-less files of one series are one entry).
    grouped: dict[tuple[str, str, str], list[FileInfo]] = {}
    for info in infos:
        if info.kind == "image" or id(info) in attributed:
            continue
        if info.series_uid and info.kind in ("not_image", "unreadable"):
            grouped.setdefault((info.kind, info.series_uid, info.reason), []).append(info)
        else:
            out.append(SeriesInfo(kind=info.kind, files=(info.path,), series_uid=info.series_uid,
                                  modality=info.sop_code or info.modality, sop_class=info.sop_name,
                                  reason=info.reason))
    for (kind, uid, reason), members in grouped.items():
        first = members[0]
        out.append(SeriesInfo(kind=kind, files=tuple(m.path for m in members), series_uid=uid,
                              study_uid=first.study_uid, modality=first.sop_code or first.modality,
                              description=first.description, sop_class=first.sop_name, reason=reason))
    order = {"image": 0, "unreadable": 1, "not_image": 2, "not_dicom": 3}
    out.sort(key=lambda s: (order[s.kind], s.files[0], s.stack))
    return out


def _stacks_of_series(members: list[FileInfo], broken: list[FileInfo]) -> list[SeriesInfo]:
    first = members[0]
    common = dict(series_uid=first.series_uid, study_uid=first.study_uid, modality=first.modality,
                  description=first.description)
    notes: list[str] = []
    if broken:
        listed = "; ".join(f"{b.path}: {b.reason}" for b in broken[:3])
        more = f" (and {len(broken) - 3} more)" if len(broken) > 3 else ""
        notes.append(f"dropped {len(broken)} unreadable file(s) of this series: {listed}{more}")

    # (files, geometry, positions) per stack, or a SeriesInfo for a part that cannot be stacked.
    stacks: list[tuple[list[FileInfo], str, tuple[float, ...]]] = []
    problems: list[SeriesInfo] = []
    by_shape: dict[tuple, list[FileInfo]] = {}
    for m in members:
        by_shape.setdefault((m.rows, m.cols, m.components, m.pixel_id), []).append(m)
    for part in by_shape.values():
        singles = [m for m in part if m.frames > 1 or _is_projection(m)]
        stacks.extend(([m], "projection" if _is_projection(m) and m.frames == 1 else "volume", ())
                      for m in singles)
        rest = [m for m in part if not (m.frames > 1 or _is_projection(m))]
        if not rest:
            continue
        if all(m.position is not None and m.orientation is not None for m in rest):
            for group in _orientation_groups(rest):
                result = _split_along_normal(group)
                if isinstance(result, str):
                    result = _split_by_acquisition(group) or result
                if isinstance(result, str):
                    problems.append(SeriesInfo(kind="unreadable", files=tuple(m.path for m in group),
                                               reason=result, **common))
                else:
                    stacks.extend(result)
        else:
            # No geometry to sort by: fall back on Instance Number, then file name.
            rest.sort(key=lambda m: (m.instance_number is None, m.instance_number or 0, m.path))
            stacks.append((rest, "volume", ()))
    if len(by_shape) > 1:
        sizes = ", ".join(sorted({f"{r}x{c}" for r, c, _, _ in by_shape}))
        notes.append(f"series split by slice size or pixel type ({sizes})")
    stacks.sort(key=lambda s: (s[0][0].path, s[2][:1]))
    if len(stacks) > 1:
        notes.append(f"series split into {len(stacks)} stacks (by slice orientation, position, size and echo, as "
                     "dcm2niix does)")
    out = []
    for k, (files, geometry, positions) in enumerate(stacks, start=1):
        out.append(SeriesInfo(kind="image", files=tuple(m.path for m in files), n_slices=sum(m.frames for m in files),
                              slice_shape_yx=(files[0].rows, files[0].cols), slice_positions_mm=positions,
                              stack=k, n_stacks=len(stacks), geometry=geometry, notes=tuple(notes), **common))
    if not out and broken:  # nothing readable left: the whole series fails, naming its broken files
        return [SeriesInfo(kind="unreadable", files=tuple(m.path for m in members + broken),
                           reason=notes[0], **common)]
    return out + problems


def _orientation_groups(members: list[FileInfo]) -> list[list[FileInfo]]:
    groups: list[tuple[np.ndarray, list[FileInfo]]] = []
    for m in members:
        ori = np.asarray(m.orientation, dtype=np.float64)
        for ref, group in groups:
            if np.abs(ori - ref).max() <= _ORIENTATION_TOL:
                group.append(m)
                break
        else:
            groups.append((ori, [m]))
    return [g for _, g in groups]


def _split_along_normal(members: list[FileInfo]) -> list[tuple[list[FileInfo], str, tuple[float, ...]]] | str:
    """Sort one orientation group along its normal and cut it at large gaps; a reason string when slices
    share positions (several echoes or time points that the headers do not tell apart)."""
    normal = _slice_normal(members[0].orientation)
    proj = np.array([float(np.dot(normal, m.position)) for m in members])
    order = np.argsort(proj, kind="stable")
    members = [members[i] for i in order]
    positions = proj[order]
    if len(members) == 1:
        return [(members, "volume", (float(positions[0]),))]
    steps = np.diff(positions)
    tol = max(1e-3, 1e-3 * float(np.median(np.abs(steps))))
    dup = int(np.sum(steps < tol))
    if dup:
        return (f"{dup + 1} or more slices share a position along the slice normal (several acquisitions, echoes "
                "or time points in one series that EchoNumbers / AcquisitionNumber do not tell apart); not "
                "processed: export each acquisition as its own series")
    cuts = [0]
    if len(steps) >= 2:
        median = float(np.median(steps))
        cuts += [i + 1 for i in np.nonzero(steps > SPLIT_GAP_FACTOR * median)[0]]
    cuts.append(len(members))
    return [(members[a:b], "volume", tuple(float(p) for p in positions[a:b])) for a, b in zip(cuts, cuts[1:])]


# Tags that tell apart acquisitions sharing slice positions in one series (echoes, time points, repeats).
_ACQUISITION_TAGS = ("EchoNumbers", "TemporalPositionIdentifier", "AcquisitionNumber")


def _split_by_acquisition(members: list[FileInfo]) -> list[tuple[list[FileInfo], str, tuple[float, ...]]] | None:
    """Slices sharing positions: one stack per echo / time point / acquisition when those tags separate them
    into groups without shared positions, else None."""
    groups: dict[tuple[str, ...], list[FileInfo]] = {}
    for m in members:
        groups.setdefault(tuple(m.tags.get(t, "") for t in _ACQUISITION_TAGS), []).append(m)
    if len(groups) < 2:
        return None
    out = []
    for key in sorted(groups, key=lambda k: tuple((len(v), v) for v in k)):
        result = _split_along_normal(groups[key])
        if isinstance(result, str):
            return None
        out.extend(result)
    return out


def find_series(root: str | os.PathLike) -> list[SeriesInfo]:
    """Every DICOM image stack under ``root`` (recursively), plus everything skipped with the reason.

    Reads headers only (pixel data is not decoded). Image files are grouped by Series Instance UID across
    sub-folders, split into stacks (see the module docstring) and ordered along the slice normal. Hidden files
    and folders (``.name``) are ignored.

    Returns:
        Image stacks first (``kind == "image"``), then unreadable series/files, non-image DICOM objects (SEG,
        SR, RTSTRUCT, presentation states, data sets without pixel data..., one entry per series when the UID is
        known) and non-DICOM files, each with ``reason``. Sorted by first file path within each kind.

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
                infos.append(inspect_file(os.path.join(dirpath, name)))
    return group_files(infos)


# --------------------------------------------------------------------------------------------------------------
# Reading one stack
# --------------------------------------------------------------------------------------------------------------


def itk_reason(exc: Exception) -> str:
    """The informative tail of an ITK/SimpleITK exception, without source paths and object addresses."""
    text = one_line(exc)
    parts = re.split(r"(?:ITK ERROR|itk::ERROR|sitk::ERROR): (?:\w+\(0x[0-9a-fA-F]+\): )?", text)
    return (parts[-1] if len(parts) > 1 else text)[:240]


def _bytes_per_pixel(pixel_id: int, components: int) -> int:
    probe = sitk.Image([1] * 2, pixel_id, components) if components > 1 else sitk.Image([1, 1], pixel_id)
    return int(probe.GetSizeOfPixelComponent()) * max(components, 1)


def check_size(label: str, n_voxels: int, pixel_id: int, components: int, max_gb: float | None) -> None:
    """Refuse (one line with the size in GB) an image over ``max_gb`` before its pixels are read."""
    if max_gb is None:
        return
    size_gb = n_voxels * _bytes_per_pixel(pixel_id, components) / 1e9
    if size_gb > max_gb:
        raise SmallsegError(f"{label}: {size_gb:.1f} GB in memory ({n_voxels:,} voxels of "
                            f"{sitk.GetPixelIDValueAsString(pixel_id)}), over max_gb={max_gb:g}; pass a larger "
                            "max_gb (or max_gb=None) to read it anyway")


def compact_dtype(array: np.ndarray) -> np.ndarray:
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


def _tilt_warning(series: SeriesInfo, first: FileInfo) -> list[str]:
    """Slices whose positions do not run along the slice normal (gantry tilt) cannot be a plain grid."""
    if len(series.files) < 2 or first.position is None or first.orientation is None:
        return []
    last = inspect_file(series.files[-1], try_bare_dataset=True)
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


def _culprit_error(files: Sequence[str], exc: Exception) -> SmallsegError:
    """Name the file that broke a series read."""
    for path in files:
        try:
            reader = sitk.ImageFileReader()
            reader.SetImageIO("GDCMImageIO")
            reader.SetFileName(path)
            reader.Execute()
        except RuntimeError as inner:
            note = truncation_note(path)
            return SmallsegError(f"{path}: cannot read pixel data ({note or itk_reason(inner)}); remove or "
                                 "replace this file")
    return SmallsegError(f"{common_dir(files)}: reading the series failed ({itk_reason(exc)})")


def _geometry(series: SeriesInfo, first: FileInfo, image: sitk.Image) -> tuple[sitk.Image, list[str]]:
    """Fix what GDCM assumed silently and say what is still assumed (one line each)."""
    assumed: list[str] = []
    tags = first.tags
    if not floats(tags.get("PixelSpacing", "")):
        if floats(tags.get("ImagerPixelSpacing", "")):
            assumed.append("pixel spacing from ImagerPixelSpacing (at the detector, not corrected for "
                           "magnification)")
        else:
            assumed.append("pixel spacing missing: 1 mm assumed")
    if series.geometry == "projection":
        # A projection has no third axis: a 2-D image, its positions in image mm (no patient coordinates).
        plane = image[:, :, 0] if image.GetDimension() == 3 else image
        plane.SetOrigin((0.0, 0.0))
        plane.SetDirection((1.0, 0.0, 0.0, 1.0))
        assumed.append(f"{series.modality or 'projection'} projection image: a 2-D image, areas in mm2, positions "
                       "in image mm (no patient coordinates)")
        return plane, assumed
    if image.GetDimension() == 3 and image.GetSize()[2] == 1 and len(series.files) == 1:
        between = floats(tags.get("SpacingBetweenSlices", ""))
        thickness = floats(tags.get("SliceThickness", ""))
        if not between:
            spacing = list(image.GetSpacing())
            if thickness and thickness[0] > 0:
                spacing[2] = thickness[0]
                image.SetSpacing(spacing)
                assumed.append(f"single slice: SliceThickness {thickness[0]:g} mm used as the third axis")
            else:
                assumed.append("single slice without SliceThickness: 1 mm assumed for the third axis")
    elif len(series.files) > 1 and not series.slice_positions_mm:
        assumed.append("slices carry no Image Position/Orientation (Patient): slice spacing and origin are "
                       "not physical")
    return image, assumed


def read_stack(series: SeriesInfo, max_gb: float | None):
    """Read one image stack of :func:`find_series` into a :class:`~smallseg.io.medical.Volume`.

    Cross-sectional stacks give ``(Z, Y, X)`` arrays (Z = 1 for one slice, whose third axis is its
    SpacingBetweenSlices, else SliceThickness); projections give ``(Y, X)``. What had to be assumed about the
    geometry is in ``Volume.assumed``, recoverable problems and the stacking notes in ``Volume.warnings``.

    Raises:
        SmallsegError: not an image stack, over ``max_gb``, pixel data that cannot be decoded (file named).
    """
    from smallseg.io.medical import from_sitk

    if not series.is_image:
        raise SmallsegError(series.summary())
    first = inspect_file(series.files[0], try_bare_dataset=True)
    if first.kind != "image":
        raise SmallsegError(f"{first.path}: {first.reason}")
    label = f"series {series.series_uid}" if series.series_uid else series.files[0]
    n_voxels = series.n_slices * series.slice_shape_yx[0] * series.slice_shape_yx[1]
    check_size(label, n_voxels, first.pixel_id, first.components, max_gb)
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
    warnings = list(series.notes) + _spacing_warnings(series) + _tilt_warning(series, first)
    image, assumed = _geometry(series, first, image)
    volume = from_sitk(image, modality=first.modality, series_uid=series.series_uid, study_uid=series.study_uid,
                       source_paths=tuple(series.files), meta=dict(first.tags), warnings=warnings, assumed=assumed)
    del image
    volume.array = compact_dtype(volume.array)
    return volume
