"""Cutting a scene into overlapping tiles (:mod:`.grid`) and putting tile results back together exactly
once (:mod:`.stitch`)."""

from smallseg.tiling.grid import Tile, TileGrid, max_extent_from_centroid_px, overlap_for, tile_windows
from smallseg.tiling.stitch import (
    ObjectTable,
    RowStitcher,
    StitchedBand,
    StitchState,
    stitch_instances,
)

__all__ = [
    "ObjectTable",
    "RowStitcher",
    "StitchState",
    "StitchedBand",
    "Tile",
    "TileGrid",
    "max_extent_from_centroid_px",
    "overlap_for",
    "stitch_instances",
    "tile_windows",
]
