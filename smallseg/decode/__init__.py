"""Decoding: model head maps -> instances (centroid voting). See :mod:`smallseg.decode.centroids`."""

from smallseg.decode.centroids import DecodeConfig, decode_batch, decode_instances

__all__ = ["DecodeConfig", "decode_batch", "decode_instances"]
