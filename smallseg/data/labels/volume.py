"""Image volume + label volume (NIfTI, NRRD, MHA via SimpleITK): the slices become 2-D training images.

Both volumes must share their grid (size, and spacing / origin / direction within 1e-3): a label volume
resampled elsewhere is refused rather than silently misaligned. Slices are axial (the volume's first array axis,
z). Which slices: every slice that holds an object, plus as many object-free slices (evenly spaced) so that the
model also sees slices with nothing in them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from smallseg.errors import SmallsegError
from smallseg.io.medical import read_image_file
from smallseg.data.labels.area import apply_area, labelled_area
from smallseg.data.labels.common import ClassMapping, LabeledImage


def training_slices(instances: np.ndarray, empty_slices: bool = True) -> list[int]:
    """The slices of a (Z, Y, X) label volume to train on, in order: every slice that holds an object, and with
    ``empty_slices`` as many object-free slices (evenly spaced, fewer when there are fewer), so that the model
    also sees slices with nothing in them."""
    with_objects = np.nonzero(instances.reshape(len(instances), -1).max(1) > 0)[0]
    chosen = list(with_objects)
    if empty_slices:
        without = np.setdiff1d(np.arange(len(instances)), with_objects)
        if len(without):
            take = np.linspace(0, len(without) - 1, min(len(without), len(with_objects))).round().astype(int)
            chosen += list(without[np.unique(take)])
    return sorted(int(z) for z in chosen)


def read_label_volume(image: str | os.PathLike, labels: str | os.PathLike, *, classes: ClassMapping,
                      area: Any = None, modality: str = "", empty_slices: bool = True) -> list[LabeledImage]:
    """Slices of an image volume with their labels from a label volume on the same grid.

    Args:
        image: image volume (NIfTI / NRRD / MHA ...), one component.
        labels: label volume, integer ids per object (0 = background), same size and geometry.
        classes: model class names; every object gets ``classes.default_id``.
        area: a per-slice labelled area (pixel box or 2-D mask, see :mod:`smallseg.data.labels.area`).
        modality: DICOM modality of the image (``"CT"``: the model's CT normalisation applies), or ``""``.
        empty_slices: also return object-free slices (as many as slices with objects, evenly spaced).

    Returns:
        One LabeledImage per chosen slice: ``image`` (H, W, 1) raw values, ``pixel_area`` in mm².
    """
    img = read_image_file(image, "image volume")
    lab = read_image_file(labels, "label volume")
    if img.GetSize() != lab.GetSize():
        raise SmallsegError(f"{labels}: label volume is {lab.GetSize()} voxels, the image {img.GetSize()}; labels "
                            "must be on the image's grid")
    for what, a, b in (("spacing", img.GetSpacing(), lab.GetSpacing()), ("origin", img.GetOrigin(), lab.GetOrigin()),
                       ("direction", img.GetDirection(), lab.GetDirection())):
        if not np.allclose(a, b, atol=1e-3, rtol=1e-4):
            raise SmallsegError(f"{labels}: {what} {tuple(round(v, 4) for v in b)} differs from the image's "
                                f"{tuple(round(v, 4) for v in a)}; labels must be on the image's grid")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise SmallsegError(f"{image}: {img.GetNumberOfComponentsPerPixel()} components per voxel; give one")
    pixels = sitk.GetArrayFromImage(img)
    ids = sitk.GetArrayFromImage(lab)
    if pixels.ndim == 2:
        pixels, ids = pixels[None], ids[None]
    if not np.issubdtype(ids.dtype, np.integer):
        if np.any(ids != np.round(ids)):
            raise SmallsegError(f"{labels}: label values must be whole numbers")
    if ids.min() < 0 or ids.max() > np.iinfo(np.int32).max:
        raise SmallsegError(f"{labels}: label values must be 0 .. 2**31-1")
    ids = ids.astype(np.int32)
    if not ids.any():
        raise SmallsegError(f"{labels}: no object (every voxel is 0); nothing to learn from")
    chosen = training_slices(ids, empty_slices)
    class_id = classes.default_id(str(labels))
    spacing = img.GetSpacing()
    shape = ids.shape[1:]
    mask = None if area is None else labelled_area(area, shape, None, where=f"area {area}")
    out = []
    for z in chosen:
        out.append(LabeledImage(
            image=pixels[z][:, :, None], instances=apply_area(ids[z], mask),
            classes=np.where(ids[z] > 0, class_id, 0).astype(np.int32), name=f"{Path(image).name} slice {z}",
            pixel_area=float(spacing[0] * spacing[1]), pixel_unit="mm", modality=str(modality or "").upper(),
        ))
    return out
