"""smallseg: find and outline small objects in images far larger than a GPU tile.

Public API (stable names; import from ``smallseg`` directly):

- :func:`evaluate` – score an instance prediction against ground truth (COCO AP, small-object AP,
  Boundary IoU / Boundary AP, F1, counting error).
- :func:`predict_array` – find the objects in an in-memory 2D image, tiled and stitched exactly.
- :func:`predict_geotiff` – objects in a GeoTIFF of any size, streamed tile row by tile row in bounded memory,
  stitched exactly, written as georeferenced rasters, vectors and a CSV (resumable after a kill).
- :func:`predict_volume` – objects in a CT/MR volume, slice by slice, linked into 3-D objects measured in mm.
- :func:`load_model` – a shipped model by name (``"remote-sensing"``, ``"medical"``) or a checkpoint file.
- :func:`read_volume` – read a DICOM series/file, NIfTI, MHA/NRRD or 2-D TIFF/PNG into a ``Volume`` (array plus
  spacing, origin and direction); see :mod:`smallseg.io.medical`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "evaluate", "load_model", "predict_array", "predict_geotiff", "predict_volume", "read_volume"]

# Public name -> module that defines it. Imported on first use so `import smallseg` stays fast
# (SimpleITK, torch... load only when needed).
_LAZY = {
    "evaluate": "smallseg.metrics.evaluation",
    "read_volume": "smallseg.io.medical",
    "predict_array": "smallseg.pipeline.array",
    "predict_geotiff": "smallseg.pipeline.geotiff",
    "predict_volume": "smallseg.pipeline.volume",
    "load_model": "smallseg.models.registry",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'smallseg' has no attribute {name!r}")
