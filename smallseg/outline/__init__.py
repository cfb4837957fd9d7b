"""Outlines people can use (issue #17): exact pixel outlines, topology-keeping simplification (shared
edges stay shared), building regularisation and sub-pixel contours.

    OutlineOptions(simplify_px, regularise_class_ids, regularise_min_fill)    what to do (all off by default)
    outline_polygons(labels, options, ids=, class_ids=) -> (ids, polygons)   a whole stitched label image
    object_outline(labels, id, bbox, options, ...)                           one object from its context
    OutlineStream(options, scene_shape)                                      the same, fed finished row bands
    subpixel_outline(soft, labels, id, level=)                               marching squares on a soft map
    coverage_subpixel_outlines(soft, labels, level=)                         the same, shared edges kept
    regularise_polygon(polygon, min_fill)                                    right angles, dominant orientation
    to_map(polygons, transform)                                              pixel -> map coordinates
"""

from smallseg.outline.options import OutlineOptions
from smallseg.outline.simplify import object_outline, outline_polygons, regularise_polygon, to_map
from smallseg.outline.stream import OutlineStream
from smallseg.outline.subpixel import coverage_subpixel_outline, coverage_subpixel_outlines, subpixel_outline, subpixel_outlines

__all__ = ["OutlineOptions", "coverage_subpixel_outline", "coverage_subpixel_outlines", "OutlineStream", "object_outline", "outline_polygons", "regularise_polygon",
           "subpixel_outline", "subpixel_outlines", "to_map"]
