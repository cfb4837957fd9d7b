"""What every label source returns (:class:`LabeledImage`), class-name mapping, and plain image reading."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import rasterio
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning

from smallseg.errors import SmallsegError, one_line

# Classes at or below this value mark *centroid-only* object pixels (box labels: the ring of an inscribed
# ellipse whose extent is not known): class ``c`` is stored as ``WEAK_CLASS_OFFSET - c``. The centroid head
# learns there; the semantic and distance heads do not (see smallseg.train.targets).
WEAK_CLASS_OFFSET = -1000


@dataclass
class LabeledImage:
    """One training/validation image with its labels, as every label source returns it.

    Attributes:
        image: (H, W, C) raw pixel values (any numeric dtype, as read from the file).
        instances: (H, W) int32 instance ids, 0 = background, < 0 = ignore (not labelled: no loss, no scoring).
        classes: (H, W) int32 class ids (1-based on objects; ``<= WEAK_CLASS_OFFSET``: centroid-only pixels of
            class ``WEAK_CLASS_OFFSET - value``), or None for a single class.
        name: where it came from (file name or generator + seed), for messages and logs.
        pixel_area: area of one pixel in physical units (``pixel_unit``²), or None if unknown.
        pixel_unit: ``"m"`` (map imagery) or ``"mm"`` (medical), None if unknown.
        modality: upper-case DICOM modality code (``"CT"``) when the image is one, else ``""``; a model's
            ``normalization_by_modality`` entry for it applies.
        normalization: how this source's raw values are meant to be mapped when neither the training config
            nor the model says (synthetic nuclei: per-image percentiles; synthetic CT: the lung window), or None.
        notes: what the reader decided that a user should know (overlaps resolved, features outside), one line
            each.
        boxes_only: the objects are boxes (centroid supervision only; scored at box level, not by masks).
        boxes: for box labels, (N, 4) float64 ``(row0, col0, row1, col1)`` pixel-edge boxes, else None.
        box_classes: (N,) int32 1-based class of each box, else None.
    """

    image: np.ndarray
    instances: np.ndarray
    classes: np.ndarray | None
    name: str
    pixel_area: float | None = None
    pixel_unit: str | None = None
    modality: str = ""
    normalization: Any = None
    notes: list[str] = field(default_factory=list)
    boxes_only: bool = False
    boxes: np.ndarray | None = None
    box_classes: np.ndarray | None = None

    @property
    def labelled(self) -> np.ndarray:
        """(H, W) bool: pixels whose label is known (not ignored)."""
        return self.instances >= 0

    def crop_rows(self, row0: int, row1: int, suffix: str) -> "LabeledImage":
        """Rows ``row0:row1`` as an image of their own (a spatial split), named ``name + suffix``."""
        rows = slice(int(row0), int(row1))
        boxes, box_classes = self.boxes, self.box_classes
        if boxes is not None:
            # Boxes whose centre falls in the rows go with them, clipped to them.
            centre = (boxes[:, 0] + boxes[:, 2]) / 2
            keep = (centre >= row0) & (centre < row1)
            boxes = boxes[keep].copy()
            boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]] - row0, 0, row1 - row0)
            box_classes = box_classes[keep]
        return LabeledImage(
            image=self.image[rows], instances=self.instances[rows],
            classes=None if self.classes is None else self.classes[rows], name=self.name + suffix,
            pixel_area=self.pixel_area, pixel_unit=self.pixel_unit, modality=self.modality,
            normalization=self.normalization, notes=list(self.notes), boxes_only=self.boxes_only,
            boxes=boxes, box_classes=box_classes,
        )


@dataclass(frozen=True)
class ClassMapping:
    """How class names in label files become the model's 1-based class ids.

    Attributes:
        names: the model's class names (index 0 = class 1), e.g. ``("car", "building")``.
        renames: ``{name in the labels: model class name}`` for labels that call a class otherwise
            (``{"bldg": "building"}``); names not listed must be model class names themselves.
        default: the model class name given to objects of a source with no class attribute / class raster
            (None: the model's only class, and an error if it has several).
    """

    names: tuple[str, ...]
    renames: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "renames", {str(k): str(v) for k, v in dict(self.renames or {}).items()})
        if not self.names:
            raise SmallsegError("class mapping: the model has no class names")
        for source, target in self.renames.items():
            if target not in self.names:
                raise SmallsegError(f"class_map: {source!r} -> {target!r}, but the model's classes are "
                                    f"{', '.join(self.names)}")
        if self.default is not None and self.default not in self.names:
            raise SmallsegError(f"class {self.default!r}: the model's classes are {', '.join(self.names)}")

    @classmethod
    def of(cls, names: Sequence[str] | None, classes: int = 1, renames: Mapping[str, str] | None = None,
           default: str | None = None) -> "ClassMapping":
        """A mapping for a model with ``classes`` classes named ``names`` (None: ``class1``, ``class2``, ...)."""
        names = tuple(names) if names else tuple(f"class{k}" for k in range(1, int(classes) + 1))
        return cls(names, renames or {}, default)

    def id_of(self, name: Any, where: str) -> int:
        """1-based model class id of label class ``name``; one line naming the known classes if unknown."""
        text = str(name).strip() if name is not None else ""
        text = self.renames.get(text, text)
        if text in self.names:
            return self.names.index(text) + 1
        # Integer class codes (1 = the model's first class) are accepted when they are in range.
        if text.lstrip("-").isdigit() and 1 <= int(text) <= len(self.names):
            return int(text)
        renames = f" (renames: {dict(self.renames)})" if self.renames else ""
        raise SmallsegError(f"{where}: class {text!r} is not one of the model's classes {', '.join(self.names)}"
                            f"{renames}; map it with class_map={{{text!r}: <model class>}}")

    def default_id(self, where: str) -> int:
        """The class of objects from a source that names none."""
        if self.default is not None:
            return self.names.index(self.default) + 1
        if len(self.names) == 1:
            return 1
        raise SmallsegError(f"{where}: the labels name no class and the model has {len(self.names)} "
                            f"({', '.join(self.names)}); say which with class_name=")


def read_image_file(path: str | os.PathLike, *, bands: Sequence[int] | None = None) -> tuple[np.ndarray, Any]:
    """Read an image file as (H, W, C) raw values, with its rasterio geometry when it has one.

    TIFF (incl. GeoTIFF) through rasterio, other formats (PNG, JPEG, ...) through PIL.

    Returns:
        (image (H, W, C) as stored, ``(crs, transform)`` for a georeferenced raster else None).
    """
    path = Path(path)
    if not path.is_file():
        raise SmallsegError(f"{path}: no such image file")
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    data = src.read(list(bands) if bands else None)
                    geo = (src.crs, src.transform) if (src.crs is not None or not src.transform.is_identity) else None
        except rasterio.errors.RasterioIOError as exc:
            raise SmallsegError(f"{path}: cannot read image ({one_line(exc)})") from None
        return np.moveaxis(data, 0, -1), geo

    try:
        with Image.open(path) as im:
            data = np.asarray(im)
    except OSError as exc:
        raise SmallsegError(f"{path}: cannot read image ({one_line(exc)})") from None
    if data.ndim == 2:
        data = data[:, :, None]
    if bands:
        data = data[:, :, [b - 1 for b in bands]]
    return data, None


def read_label_file(path: str | os.PathLike, shape: tuple[int, int], like: str) -> np.ndarray:
    """A 2-D integer label image (instance ids or classes) on the grid of an (H, W) = ``shape`` image.

    Float files whose values are all whole numbers are accepted (some tools save labels as float32).
    """
    data, _ = read_image_file(path)
    if data.shape[-1] != 1:
        raise SmallsegError(f"{path}: a label image has one band, this one has {data.shape[-1]}")
    labels = data[:, :, 0]
    if labels.shape != tuple(shape):
        raise SmallsegError(f"{path}: label image is {labels.shape[0]} x {labels.shape[1]} px, the image {like} is "
                            f"{shape[0]} x {shape[1]}; labels must be on the image's grid")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise SmallsegError(f"{path}: label values must be whole numbers (got {labels.dtype} with fractions)")
    if labels.max(initial=0) > np.iinfo(np.int32).max or labels.min(initial=0) < 0:
        raise SmallsegError(f"{path}: label values must be 0 (background) .. 2**31-1")
    return labels.astype(np.int32)
