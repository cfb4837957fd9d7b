"""Cutting a scene into overlapping tiles (:mod:`.grid`) and putting tile results back together exactly
once (:mod:`.stitch`)."""

from smallseg.tiling.grid import Tile, TileGrid, max_extent_from_centroid_px, overlap_for, tile_windows
from smallseg.tiling.stitch import (
    BlendedBand,
    ObjectTable,
    RowBlender,
    RowStitcher,
    StitchedBand,
    StitchState,
    blend_weights,
    stitch_instances,
)

__all__ = [
    "BlendedBand",
    "ObjectTable",
    "RowBlender",
    "RowStitcher",
    "StitchState",
    "StitchedBand",
    "Tile",
    "TileGrid",
    "blend_weights",
    "max_extent_from_centroid_px",
    "overlap_for",
    "stitch_instances",
    "tile_windows",
]
