"""A DICOM series + a DICOM Segmentation (SEG) object that references it, as training / scoring slices.

The SEG's frames are matched to the series' slices by the SOP Instance UIDs they reference (highdicom's
``get_pixels_by_source_instance``), so the slice order and geometry are the series' own. A SEG holds *segments*
(classes), not objects: objects are the 3-D connected components (6-connected) of each segment, numbered
1..N across segments. Each segment's label (``SegmentLabel``) is mapped to a model class by name (``class_map``
renames); a label that is no model class gets the mapping's ``default`` class if one is set, else it is
refused in one line. The series' modality is kept, so a CT series gets the model's CT normalisation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from smallseg.data.labels.area import apply_area, labelled_area
from smallseg.data.labels.common import ClassMapping, LabeledImage
from smallseg.data.labels.volume import training_slices
from smallseg.errors import SmallsegError, one_line
from smallseg.io.dicom import find_series, read_stack


def read_dicom_seg(series: str | os.PathLike, seg: str | os.PathLike, *, classes: ClassMapping, area: Any = None,
                   empty_slices: bool = True) -> list[LabeledImage]:
    """Slices of the DICOM series in folder ``series`` with the objects of the DICOM SEG file ``seg``.

    Args:
        series: a folder holding the referenced series (other series in it are ignored).
        seg: the DICOM Segmentation file.
        classes: how segment labels become model class ids (module docstring).
        area: a per-slice labelled area (pixel box or 2-D mask).
        empty_slices: also return object-free slices (as many as slices with objects, evenly spaced).

    Returns:
        One LabeledImage per chosen slice: ``image`` (H, W, 1) raw values, ``pixel_area`` in mm².

    Raises:
        SmallsegError: highdicom missing, not a SEG, a SEG that references no series in the folder, segment
            labels the model lacks.
    """
    try:
        import highdicom as hd
    except ImportError:
        raise SmallsegError("DICOM SEG labels need the highdicom package (pip install highdicom)") from None
    import pydicom

    seg_path = Path(seg)
    try:
        segmentation = hd.seg.segread(seg_path)
    except Exception as exc:  # noqa: BLE001 - pydicom/highdicom raise many types for a file that is not a SEG
        raise SmallsegError(f"{seg_path}: not a readable DICOM Segmentation ({one_line(exc)[:160]})") from None
    referenced = {str(item.SeriesInstanceUID) for item in getattr(segmentation, "ReferencedSeriesSequence", [])}
    candidates = [s for s in find_series(series) if s.is_image and (not referenced or s.series_uid in referenced)]
    if not candidates:
        raise SmallsegError(f"{seg_path}: references series {', '.join(sorted(referenced)) or '(none)'}, which is "
                            f"not in {series}")
    volume = read_stack(candidates[0], None)
    if volume.array.ndim != 3 or not volume.source_paths:
        raise SmallsegError(f"{series}: DICOM SEG labels need a cross-sectional series (slices), not a projection")
    uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in volume.source_paths]
    try:
        segments = segmentation.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, combine_segments=True, assert_missing_frames_are_empty=True)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise SmallsegError(f"{seg_path}: its frames do not match the slices of {series} ({one_line(exc)[:160]})") \
            from None
    segments = np.asarray(segments)
    if segments.shape != volume.array.shape:
        raise SmallsegError(f"{seg_path}: frames of {segments.shape[1]} x {segments.shape[2]} px, the series' slices "
                            f"are {volume.array.shape[1]} x {volume.array.shape[2]}")
    instances = np.zeros(segments.shape, np.int32)
    class_raster = np.zeros(segments.shape, np.int32)
    next_id = 0
    for number in [int(n) for n in np.unique(segments) if n]:
        label = str(segmentation.get_segment_description(number).segment_label)
        try:
            class_id = classes.id_of(label, f"{seg_path} segment {number}")
        except SmallsegError:
            if classes.default is None:
                raise
            class_id = classes.default_id(str(seg_path))
        components, n = ndimage.label(segments == number)
        inside = components > 0
        instances[inside] = components[inside] + next_id
        class_raster[inside] = class_id
        next_id += int(n)
    if not next_id:
        raise SmallsegError(f"{seg_path}: no segmented voxel on the slices of {series}; nothing to learn from")
    chosen = training_slices(instances, empty_slices)
    shape = instances.shape[1:]
    mask = None if area is None else labelled_area(area, shape, None, where=f"area {area}")
    dy, dx = (float(v) for v in volume.spacing_zyx_mm[1:3])
    return [LabeledImage(image=volume.array[z][:, :, None], instances=apply_area(instances[z], mask),
                         classes=class_raster[z], name=f"{seg_path.name} slice {z}", pixel_area=dy * dx,
                         pixel_unit="mm", modality=str(volume.modality or "").upper())
            for z in chosen]
