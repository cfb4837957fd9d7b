"""smallseg: find and outline small objects in images far larger than a GPU tile.

Public API (stable names; import from ``smallseg`` directly; ``dir(smallseg)`` lists them):

- :func:`load_model` – a shipped model by name (``"remote-sensing"``, ``"medical"``) or a checkpoint file.
- :func:`predict_geotiff` – objects in a GeoTIFF of any size, streamed tile row by tile row in bounded memory,
  stitched exactly, written as georeferenced rasters, vectors and a CSV (resumable after a kill); returns a
  result whose ``.objects`` is an :class:`ObjectTable`.
- :func:`predict_array` – find the objects in an in-memory 2D image, tiled and stitched exactly; returns
  :class:`Instances` (``labels``, ``ids``, ``class_ids``, ``scores``, ``centroids_yx``; ``objects``: the
  :class:`ObjectTable` with areas and boxes).
- :func:`read_volume` – read a DICOM series/file, NIfTI, MHA/NRRD or 2-D TIFF/PNG into a ``Volume`` (array plus
  spacing, origin and direction); see :mod:`smallseg.io.medical`.
- :func:`predict_volume` – objects in a CT/MR volume, slice by slice, linked into 3-D objects measured in mm
  (``.objects``: a :class:`VolumeObjects` table).
- :class:`PredictOptions`, :class:`VolumeOptions`, :class:`GeoTiffOptions` – the settings of those three
  (frozen, checked when built; a bad value is one line naming the field); ``predict_array`` and
  ``predict_volume`` also take the fields as keywords.
- :func:`evaluate` – score an instance prediction against ground truth (COCO AP, small-object AP,
  Boundary IoU / Boundary AP, F1, counting error); returns an :class:`Evaluation`.
- Object tables (:class:`ObjectTable`, :class:`VolumeObjects`) have ``len(t)``, ``t[0]`` (one row as a record:
  ``t[0].id``, ``t[0].area_px``), iteration over rows, and slicing / masks (``t[t.scores > 0.5]``).
- :class:`SmallsegError` – raised for bad input, with one line saying what is wrong and what to do.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> module that defines it. Imported on first use so that `import smallseg` stays fast
# (torch, SimpleITK, rasterio load only when a name that needs them is used).
_LAZY = {
    "load_model": "smallseg.models.registry",
    "predict_geotiff": "smallseg.pipeline.geotiff",
    "predict_array": "smallseg.pipeline.array",
    "read_volume": "smallseg.io.medical",
    "predict_volume": "smallseg.pipeline.volume",
    "PredictOptions": "smallseg.pipeline.options",
    "VolumeOptions": "smallseg.pipeline.options",
    "GeoTiffOptions": "smallseg.pipeline.geotiff",
    "evaluate": "smallseg.metrics.evaluation",
    "Evaluation": "smallseg.metrics.evaluation",
    "Instances": "smallseg.instances",
    "ObjectTable": "smallseg.io.tables",
    "VolumeObjects": "smallseg.io.tables",
    "SmallsegError": "smallseg.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'smallseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    # The public names (subpackages such as smallseg.io stay importable, but are not the API).
    return sorted(__all__)
