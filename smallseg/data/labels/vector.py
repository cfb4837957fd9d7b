"""GeoTIFF + vector labels (GPKG, GeoJSON, Shapefile, FlatGeobuf, any format GDAL reads through pyogrio).

Each polygon feature becomes one instance: the features are reprojected to the raster's CRS (pyproj, exact per
vertex) and rasterised onto its grid with :func:`rasterio.features.rasterize` (a pixel belongs to a polygon when
its centre is inside), each with its own id, so polygons that touch stay separate objects. Where polygons
overlap, **the smaller one is on top** (it is drawn last): a small object drawn over a large one stays whole,
and the overlap is reported in ``LabeledImage.notes``. The class comes from a named attribute
(``class_field=``), mapped by name to the model's classes (:class:`~smallseg.data.labels.common.ClassMapping`).

A vector file without a CRS is taken to be in the raster's CRS (said in the notes); a raster without a CRS is
taken to be in pixel coordinates of its transform. Points and lines are skipped (said in the notes).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyogrio
import pyogrio.raw
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.enums import MergeAlg
from rasterio.features import rasterize

from smallseg.errors import SmallsegError, one_line
from smallseg.data.labels.area import apply_area, labelled_area
from smallseg.data.labels.common import ClassMapping, LabeledImage, read_image_file
from smallseg.io.geotiff import RasterGeometry


@dataclass(frozen=True)
class Polygons:
    """Polygon features of a vector layer in the raster's CRS.

    Attributes:
        geometries: (N,) shapely (Multi)Polygons, in the raster's CRS (or pixel/map coordinates of its transform).
        values: (N,) the class attribute of each feature as text, or None without ``class_field``.
        notes: what was assumed or skipped, one line each.
    """

    geometries: np.ndarray
    values: list[str] | None
    notes: tuple[str, ...] = ()


def _crs_of(text: Any):
    return None if not text else CRS.from_user_input(text)


def read_polygons(path: str | os.PathLike, geo: Any, shape: tuple[int, int], *, layer: str | None = None,
                  class_field: str | None = None, where: str = "labels") -> Polygons:
    """Read the polygons of one layer of a vector file, reprojected into the raster's CRS.

    Args:
        path: the vector file.
        geo: the raster's ``(rasterio CRS or None, Affine transform)``, or None (pixel coordinates).
        shape: (H, W) of the raster (for the overlap check).
        layer: layer name (None: the file's only layer).
        class_field: attribute holding each feature's class (None: no classes read).
        where: what to call the file in messages.

    Raises:
        SmallsegError: unreadable file, several layers and no ``layer``, an empty layer, a missing
            ``class_field`` (the fields are listed), or no feature overlapping the raster (both extents given).
    """
    path = Path(path)
    if not path.exists():
        raise SmallsegError(f"{path}: no such vector file")
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
        if layer is None and len(layers) > 1:
            raise SmallsegError(f"{path}: has layers {', '.join(layers)}; choose one with layer=")
        info = pyogrio.read_info(path, layer=layer)
        fields = [str(f) for f in info["fields"]]
        if class_field is not None and class_field not in fields:
            raise SmallsegError(f"{path}: no attribute {class_field!r} for class_field; the layer has "
                                f"{', '.join(fields) or 'no attributes'}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta, _fids, wkb, field_data = pyogrio.raw.read(path, layer=layer, columns=[class_field] if class_field else [])
    except SmallsegError:
        raise
    except Exception as exc:  # pyogrio/GDAL raise their own types for every kind of bad file
        raise SmallsegError(f"{path}: cannot read vector labels ({one_line(exc)})") from None
    notes: list[str] = []
    geometries = shapely.from_wkb(wkb) if wkb is not None else np.zeros(0, object)
    if len(geometries) == 0:
        raise SmallsegError(f"{path}: the layer {layer or (layers[0] if layers else '')!r} has no features; "
                            f"nothing to learn from (is it the right file or layer?)")
    values = None if class_field is None else [None if v is None else str(v) for v in field_data[0]]
    keep = ~shapely.is_missing(geometries) & ~shapely.is_empty(geometries)
    kinds = shapely.get_type_id(geometries)
    polygonal = keep & np.isin(kinds, (3, 6))
    if (keep & ~polygonal).any():
        notes.append(f"{path.name}: {int((keep & ~polygonal).sum())} point/line feature(s) skipped (not polygons)")
    if not polygonal.any():
        raise SmallsegError(f"{path}: no polygon features (of {len(geometries)} features); labels must be polygons "
                            "(box labels: use the boxes source)")
    geometries = geometries[polygonal]
    values = None if values is None else [v for v, k in zip(values, polygonal) if k]
    geometries = shapely.make_valid(geometries)

    raster_crs = None if geo is None or geo[0] is None else _crs_of(geo[0].to_wkt())
    vector_crs = _crs_of(meta.get("crs"))
    if vector_crs is None and raster_crs is not None:
        notes.append(f"{path.name}: has no CRS; taken to be in the raster's CRS")
    elif vector_crs is not None and raster_crs is None:
        raise SmallsegError(f"{path}: is in {vector_crs.name}, but the image has no CRS; georeference the image or "
                            "give the polygons in pixel coordinates without a CRS")
    elif vector_crs is not None and vector_crs != raster_crs:
        transformer = Transformer.from_crs(vector_crs, raster_crs, always_xy=True)

        def project(xy: np.ndarray) -> np.ndarray:
            x, y = transformer.transform(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])

        geometries = shapely.transform(geometries, project)
        if not np.all(shapely.is_valid(geometries) | shapely.is_empty(geometries)):
            geometries = shapely.make_valid(geometries)
    h, w = int(shape[0]), int(shape[1])
    transform = _transform_of(geo)
    corners = [transform @ (0, 0), transform @ (w, 0), transform @ (w, h), transform @ (0, h)]
    extent = shapely.Polygon(corners)
    inside = shapely.intersects(geometries, extent)
    if not inside.any():
        vb = shapely.total_bounds(geometries)
        eb = extent.bounds
        crs_text = f" ({vector_crs.name} -> {raster_crs.name})" if vector_crs is not None and raster_crs else ""
        raise SmallsegError(
            f"{path}: none of its {len(geometries)} polygons overlaps the image{crs_text}: polygons span "
            f"x {vb[0]:.6g}..{vb[2]:.6g}, y {vb[1]:.6g}..{vb[3]:.6g}, the image x {eb[0]:.6g}..{eb[2]:.6g}, "
            f"y {eb[1]:.6g}..{eb[3]:.6g} (a wrong or missing CRS in the file?)")
    if not inside.all():
        notes.append(f"{path.name}: {int((~inside).sum())} of {len(inside)} polygons lie outside the image (skipped)")
    geometries = geometries[inside]
    values = None if values is None else [v for v, k in zip(values, inside) if k]
    return Polygons(geometries=geometries, values=values, notes=tuple(notes))


def _transform_of(geo: Any):
    return Affine.identity() if geo is None else geo[1]


def rasterise_polygons(geometries: Sequence[Any], shape: tuple[int, int], geo: Any) -> tuple[np.ndarray, list[str]]:
    """Burn polygons onto the raster grid, one id per polygon (``i + 1`` for ``geometries[i]``).

    Pixel centres inside a polygon are its pixels; where polygons overlap the smaller one (by area) is on top.

    Returns:
        ((H, W) int32 ids, notes: one line on the overlaps and on polygons too small to hold a pixel centre).
    """
    h, w = int(shape[0]), int(shape[1])
    transform = _transform_of(geo)
    notes: list[str] = []
    if not len(geometries):
        return np.zeros((h, w), np.int32), notes
    geometries = np.asarray(geometries, dtype=object)
    order = np.argsort(-shapely.area(geometries), kind="stable")  # largest first: smaller ones drawn on top
    ids = rasterize(((geometries[i], int(i) + 1) for i in order), out_shape=(h, w), transform=transform,
                    fill=0, dtype="int32", all_touched=False)
    cover = rasterize(((g, 1) for g in geometries), out_shape=(h, w), transform=transform, fill=0,
                      dtype="int32", merge_alg=MergeAlg.add)
    shared = cover > 1
    if shared.any():
        on_top = np.unique(ids[shared])
        notes.append(f"{int(shared.sum())} px lie in more than one polygon ({len(on_top)} polygons on top there); "
                     "resolved: the smaller polygon on top")
    present = np.unique(ids)
    missing = len(geometries) - int((present > 0).sum())
    if missing:
        notes.append(f"{missing} polygon(s) hold no pixel centre (smaller than a pixel, or hidden under smaller "
                     "ones): not in the labels")
    return ids, notes


def read_vector_labels(image: str | os.PathLike, labels: str | os.PathLike, *, classes: ClassMapping,
                       class_field: str | None = None, layer: str | None = None, area: Any = None,
                       bands: Sequence[int] | None = None) -> LabeledImage:
    """A GeoTIFF (or plain image) with polygon labels from a vector file, as one :class:`LabeledImage`.

    Args:
        image: the raster the labels were drawn on.
        labels: vector file of object polygons.
        classes: how class names become model class ids; without ``class_field`` every object gets
            ``classes.default_id``.
        class_field: attribute with each polygon's class name (or 1-based class number).
        layer: layer of ``labels`` (None: its only layer).
        area: the labelled area (see :mod:`smallseg.data.labels.area`); None: the whole image is labelled.
        bands: 1-based bands to read (None: all).

    Returns:
        LabeledImage: ``instances`` (H, W) int32 with ids 1..N in feature order (0 background, -1 outside the
        area), ``classes`` (H, W) int32 1-based, ``notes`` on overlaps and skipped features.
    """
    pixels, geo = read_image_file(image, bands=bands)
    shape = pixels.shape[:2]
    polygons = read_polygons(labels, geo, shape, layer=layer, class_field=class_field, where=str(labels))
    if polygons.values is None:
        class_ids = np.full(len(polygons.geometries), classes.default_id(str(labels)), np.int32)
    else:
        known: dict[str, int] = {}
        for value in dict.fromkeys(polygons.values):
            known[value] = classes.id_of(value, f"{labels} ({class_field})")
        class_ids = np.array([known[v] for v in polygons.values], np.int32)
    ids, notes = rasterise_polygons(polygons.geometries, shape, geo)
    if not (ids > 0).any():
        raise SmallsegError(f"{labels}: no polygon covers a pixel centre of {image}; nothing to learn from")
    lookup = np.concatenate([[0], class_ids]).astype(np.int32)
    class_raster = lookup[ids]
    mask = None if area is None else labelled_area(area, shape, geo, where=f"area {area}")
    pixel_area = _pixel_area_m2(geo, shape)
    return LabeledImage(
        image=pixels, instances=apply_area(ids, mask), classes=class_raster, name=Path(image).name,
        pixel_area=pixel_area, pixel_unit="m" if pixel_area else None,
        notes=[*polygons.notes, *(f"{Path(labels).name}: {n}" for n in notes)],
    )


def _pixel_area_m2(geo: Any, shape: tuple[int, int]) -> float | None:
    if geo is None or geo[0] is None:
        return None

    return RasterGeometry(int(shape[1]), int(shape[0]), geo[0], geo[1]).pixel_area_m2
