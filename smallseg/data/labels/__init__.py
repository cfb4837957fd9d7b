"""Label sources: the formats labels come in, each read into what training, tuning and scoring see.

Every reader returns :class:`~smallseg.data.labels.common.LabeledImage` objects: the raw image (H, W, C), its
instance ids (H, W) int32 (0 = background, > 0 = object, -1 = *not labelled*: ignored by every loss and by
validation scoring) and 1-based classes named as the model names them.

- :func:`read_vector_labels` (:mod:`.vector`): GeoTIFF + GPKG / GeoJSON / Shapefile / FlatGeobuf polygons,
  reprojected to the raster's CRS and rasterised onto its grid, one instance per feature.
- :func:`read_boxes` (:mod:`.boxes`): boxes from COCO ``bbox`` JSON, DeepForest-style CSV or Pascal VOC XML,
  turned into centroid supervision (see that module for what each head learns from a box).
- :func:`read_label_image` (:mod:`.label_image`): a plain TIFF / PNG image + its instance label image
  (Cellpose, StarDist, QuPath exports).
- :func:`read_label_volume` (:mod:`.volume`): an image volume + its NIfTI / NRRD / MHA label volume, as slices.
- :func:`read_dicom_seg` (:mod:`.dicom_seg`): a DICOM series + a DICOM SEG referencing it (highdicom), as slices.
- :func:`read_labels` (:mod:`.auto`): any of these, chosen by the label file's suffix (``smallseg finetune``).
- :func:`labelled_area` (:mod:`.area`): the optional labelled area (raster mask, vector file or pixel box
  ``rows=0:256``): outside it, pixels that are not part of a labelled object are ignored.

Bad labels (a vector file in a CRS that does not overlap the raster, a class the model does not have, an empty
layer, a label raster on another grid) raise :class:`~smallseg.errors.SmallsegError` in one line; what a reader
had to decide (overlapping polygons: the smaller on top) is said in ``LabeledImage.notes``.
"""

from smallseg.data.labels.area import apply_area, labelled_area
from smallseg.data.labels.auto import read_labels
from smallseg.data.labels.boxes import read_boxes
from smallseg.data.labels.common import WEAK_CLASS_OFFSET, ClassMapping, LabeledImage
from smallseg.data.labels.dicom_seg import read_dicom_seg
from smallseg.data.labels.label_image import read_label_image
from smallseg.data.labels.vector import read_vector_labels
from smallseg.data.labels.volume import read_label_volume

__all__ = [
    "WEAK_CLASS_OFFSET",
    "ClassMapping",
    "LabeledImage",
    "apply_area",
    "labelled_area",
    "read_boxes",
    "read_dicom_seg",
    "read_label_image",
    "read_label_volume",
    "read_labels",
    "read_vector_labels",
]
