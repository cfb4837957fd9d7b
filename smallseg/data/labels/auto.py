"""One entry point for "an image and its labels, whatever format the labels are in" (``smallseg finetune``,
``smallseg evaluate``): the label file's suffix picks the reader.

=============================================  ============================================================
labels suffix                                  reader
=============================================  ============================================================
``.gpkg .geojson .shp .fgb .gml .kml .sqlite``  :func:`~smallseg.data.labels.vector.read_vector_labels`
``.csv``, ``.xml``, a folder of ``.xml``        :func:`~smallseg.data.labels.boxes.read_boxes` (boxes)
``.json``                                       COCO: boxes (:func:`read_boxes`, the image's boxes)
``.nii .nii.gz .nrrd .nhdr .mha .mhd``          :func:`~smallseg.data.labels.volume.read_label_volume`
``.dcm`` (a DICOM SEG object)                   :func:`~smallseg.data.labels.dicom_seg.read_dicom_seg`
anything else (``.tif .png ...``)               :func:`~smallseg.data.labels.label_image.read_label_image`
=============================================  ============================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from smallseg.data.labels.common import ClassMapping, LabeledImage
from smallseg.errors import SmallsegError

VECTOR_SUFFIXES = (".gpkg", ".geojson", ".shp", ".fgb", ".gml", ".kml", ".sqlite")
BOX_SUFFIXES = (".csv", ".xml", ".json")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def label_kind(labels: str | os.PathLike) -> str:
    """``"vector"``, ``"boxes"``, ``"volume"``, ``"dicom_seg"`` or ``"label_image"`` for a label path."""
    path = Path(labels)
    name = path.name.lower()
    if path.is_dir():
        return "boxes"  # a folder of Pascal VOC XML files
    if name.endswith(VECTOR_SUFFIXES):
        return "vector"
    if name.endswith(BOX_SUFFIXES):
        return "boxes"
    if name.endswith(VOLUME_SUFFIXES):
        return "volume"
    if name.endswith(".dcm"):
        return "dicom_seg"
    return "label_image"


def read_labels(image: str | os.PathLike, labels: str | os.PathLike, *, classes: ClassMapping,
                area: Any = None, class_field: str | None = None, layer: str | None = None,
                modality: str = "") -> list[LabeledImage]:
    """``image`` with ``labels`` (any supported format, see the module table) as LabeledImages.

    Args:
        image: the image the labels belong to (raster, plain image, image volume or DICOM series folder).
        labels: the label file.
        classes: how the labels' class names become model class ids.
        area: the labelled area (pixel box, raster mask or vector file; see :mod:`.area`).
        class_field: attribute with each polygon's class (vector labels only).
        layer: layer of a multi-layer vector file.
        modality: DICOM modality of a volume's image (``"CT"``), else ``""``.

    Returns:
        One LabeledImage for a 2-D image, one per chosen slice for a volume.
    """
    from smallseg.data.labels import boxes, label_image, vector, volume

    if not Path(labels).exists():
        raise SmallsegError(f"{labels}: no such label file")
    kind = label_kind(labels)
    if class_field is not None and kind != "vector":
        raise SmallsegError(f"{labels}: class_field applies to vector labels (GPKG / GeoJSON / ...), not {kind}")
    if kind == "vector":
        return [vector.read_vector_labels(image, labels, classes=classes, class_field=class_field, layer=layer,
                                          area=area)]
    if kind == "boxes":
        return boxes.read_boxes(labels, classes=classes, area=area, image=image)
    if kind == "volume":
        return volume.read_label_volume(image, labels, classes=classes, area=area, modality=modality)
    if kind == "dicom_seg":
        from smallseg.data.labels.dicom_seg import read_dicom_seg

        return read_dicom_seg(image, labels, classes=classes, area=area)
    return [label_image.read_label_image(image, labels, classes=classes, area=area)]
