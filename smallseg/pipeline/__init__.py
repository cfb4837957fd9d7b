"""Where the flow is composed: source → tiles → model → decode → stitch → sinks.

- :mod:`smallseg.pipeline.array`: :func:`predict_array` for an in-memory 2D image, and the per-tile-row
  step every pipeline shares.
"""

from smallseg.pipeline.array import predict_array

__all__ = ["predict_array"]
