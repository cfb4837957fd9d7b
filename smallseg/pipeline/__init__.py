"""Where the flow is composed: source → tiles → model → decode → stitch → sinks.

- :mod:`smallseg.pipeline.array`: :func:`predict_array` for an in-memory 2D image, and the per-tile-row
  step every pipeline shares.
- :mod:`smallseg.pipeline.geotiff`: :func:`predict_geotiff` for a GeoTIFF of any size (streamed, resumable,
  georeferenced outputs).
"""

from smallseg.pipeline.array import predict_array
from smallseg.pipeline.geotiff import PredictionResult, predict_geotiff

__all__ = ["PredictionResult", "predict_array", "predict_geotiff"]
