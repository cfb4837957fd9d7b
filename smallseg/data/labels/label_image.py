"""Plain image + instance label image (microscopy: Cellpose ``*_masks``, StarDist, QuPath label exports).

The label image holds one integer id per object (0 = background) on the image's grid; an optional class image
holds 1-based model class ids (0 = background). TIFF through rasterio, PNG and other formats through PIL.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from smallseg.errors import SmallsegError
from smallseg.data.labels.area import apply_area, labelled_area
from smallseg.data.labels.common import ClassMapping, LabeledImage, read_image_file, read_label_file


def read_label_image(image: str | os.PathLike, labels: str | os.PathLike, *, classes: ClassMapping,
                     class_labels: str | os.PathLike | None = None, area: Any = None,
                     bands: Sequence[int] | None = None) -> LabeledImage:
    """An image with its instance label image, as one :class:`LabeledImage`.

    Args:
        image: the image file (H, W) or (H, W, C).
        labels: instance ids (H, W), integer (or whole-valued float), 0 = background.
        classes: model class names; objects get ``classes.default_id`` unless ``class_labels`` is given.
        class_labels: optional (H, W) image of 1-based model class ids.
        area: the labelled area (see :mod:`smallseg.data.labels.area`).
        bands: 1-based bands of ``image`` (None: all).

    Raises:
        SmallsegError: a label image on another grid (size), non-integer labels, or class ids the model lacks.
    """
    pixels, geo = read_image_file(image, bands=bands)
    shape = pixels.shape[:2]
    instances = read_label_file(labels, shape, str(image))
    if class_labels is None:
        class_raster = np.where(instances > 0, classes.default_id(str(labels)), 0).astype(np.int32)
    else:
        class_raster = read_label_file(class_labels, shape, str(image))
        bad = np.unique(class_raster[(instances > 0) & ((class_raster < 1) | (class_raster > len(classes.names)))])
        if len(bad):
            raise SmallsegError(f"{class_labels}: class value(s) {bad[:8].tolist()} on objects; the model's classes "
                                f"are 1..{len(classes.names)} ({', '.join(classes.names)})")
        class_raster = np.where(instances > 0, class_raster, 0).astype(np.int32)
    if not (instances > 0).any():
        raise SmallsegError(f"{labels}: no object (every pixel is 0); nothing to learn from")
    mask = None if area is None else labelled_area(area, shape, geo, where=f"area {area}")
    return LabeledImage(image=pixels, instances=apply_area(instances, mask), classes=class_raster,
                        name=Path(image).name)
