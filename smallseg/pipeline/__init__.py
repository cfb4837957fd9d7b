"""Where the flow is composed: source → tiles → model → decode → stitch → sinks.

- :mod:`smallseg.pipeline.options`: :class:`PredictOptions` / :class:`VolumeOptions` (frozen, checked when
  built) and the value checks every options object of the package uses.
- :mod:`smallseg.pipeline.array`: :func:`predict_array` for an in-memory 2D image, and the per-tile-row
  step every pipeline shares.
- :mod:`smallseg.pipeline.volume`: :func:`predict_volume`, slices linked into 3-D objects in mm;
  :mod:`smallseg.pipeline.dicom_batch`: :func:`run_dicom_batch` over a DICOM tree.
- :mod:`smallseg.pipeline.geotiff`: :func:`predict_geotiff` for a GeoTIFF of any size (streamed, resumable,
  georeferenced outputs).
"""

from smallseg.pipeline.array import predict_array
from smallseg.pipeline.geotiff import PredictionResult, predict_geotiff
from smallseg.pipeline.options import PredictOptions, VolumeOptions

__all__ = ["PredictOptions", "PredictionResult", "VolumeOptions", "predict_array", "predict_geotiff"]
