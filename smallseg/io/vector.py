"""Object outlines as vectors: polygons from a label raster, written to GeoPackage and GeoJSON.

Polygons come from :func:`rasterio.features.shapes` run on a window of the label raster that holds the
objects (the union of their boxes, a band of rows of one tile's height at most; never the whole scene),
with every other pixel masked out, 4-connected, so their edges follow pixel edges exactly: rasterising a
polygon back (pixel centre inside) gives the object's pixels again. An object whose pixels fall apart in
several pieces (possible after stitching gave contested pixels to a neighbour) is one MultiPolygon.

- **GeoPackage** (:class:`GeoPackageWriter`, via pyogrio/GDAL): geometries in the raster's CRS and grid,
  the CRS stored in the file; written in batches (``append``), so memory holds one batch of features.
- **GeoJSON** (:class:`GeoJSONWriter`): RFC 7946, i.e. WGS 84 longitude/latitude (reprojected with
  :func:`rasterio.warp.transform_geom`), exterior rings counter-clockwise, no ``crs`` member, coordinates
  rounded to 1e-7 degree (about 1 cm); vertices are reprojected one by one (no densification: on
pixel-sized edges the curvature is far below that rounding). That is what web maps and most GeoJSON tools assume; use the
  GeoPackage for exact pixel-edge geometry in the raster's own CRS. A raster without a CRS gives
  coordinates in its pixel grid (x = column, y = row) or its transform's map coordinates, and a CRS with no
  conversion to WGS 84 (engineering / ``LOCAL_CS``) its own coordinates: not RFC 7946, and the file says so
  in its ``"smallseg_coordinates"`` member (:func:`geojson_coordinates_note`).

Fields of both: ``id`` (the object's value in the label raster), ``class_id``, ``class``, ``score``,
``area_px``, ``area_m2`` (null without a projected CRS).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio.features
import rasterio.warp
import shapely
from affine import Affine
from pyogrio.raw import write as write_features
from rasterio.crs import CRS
from shapely.geometry import MultiPolygon

FIELDS = ("id", "class_id", "class", "score", "area_px", "area_m2")
GEOJSON_DECIMALS = 7


def object_polygons(
    labels: np.ndarray, row0: int, col0: int, ids: np.ndarray, bboxes: np.ndarray, transform: Affine
) -> list[MultiPolygon]:
    """The outline of each object, in map coordinates.

    One :func:`rasterio.features.shapes` call polygonises the listed objects of the window (pixels of other
    ids are masked out), so the cost is one pass over the window plus the objects' outlines, not one GDAL
    call per object. Memory: the window and the polygons.

    Args:
        labels: (h, w) integer label window of the scene (ids < 2**31), whose top-left pixel is scene pixel
            (row0, col0); it must contain every listed object whole.
        row0, col0: scene position of ``labels[0, 0]``.
        ids: (N,) object ids (label values).
        bboxes: (N, 4) ``(row0, col0, row1, col1)`` half-open scene px boxes of the objects; only their
            union is polygonised.
        transform: the scene's affine transform (pixel corner -> map coordinates).

    Returns:
        N MultiPolygons, in the order of ``ids`` (empty when an id has no pixel in the window).
    """
    ids = np.asarray(ids, np.int64)
    if len(ids) == 0:
        return []
    bboxes = np.asarray(bboxes, np.int64)
    r0, c0 = int(bboxes[:, 0].min()) - row0, int(bboxes[:, 1].min()) - col0
    r1, c1 = int(bboxes[:, 2].max()) - row0, int(bboxes[:, 3].max()) - col0
    window = labels[r0:r1, c0:c1]
    if window.size and int(window.max()) >= 2**31:
        raise ValueError("object ids >= 2**31 cannot be polygonised (GDAL takes int32 labels)")
    if window.dtype == np.uint32:
        window = window.view(np.int32)  # same values (all < 2**31), no copy of a scene-wide window
    window = np.ascontiguousarray(window, dtype=np.int32)
    mask = np.isin(window, ids)
    shifted = transform @ Affine.translation(col0 + c0, row0 + r0)
    # Collect the rings of every polygon, then build all geometries in a few vectorised shapely calls
    # (one Python shape() per polygon costs more than GDAL's polygonising).
    coords: list = []
    ring_of_coord: list[int] = []
    polygon_of_ring: list[int] = []
    value_of_polygon: list[int] = []
    for geom, value in rasterio.features.shapes(window, mask=mask, connectivity=4, transform=shifted):
        for ring in geom["coordinates"]:  # exterior first, then holes
            coords.extend(ring)
            ring_of_coord.extend([len(polygon_of_ring)] * len(ring))
            polygon_of_ring.append(len(value_of_polygon))
        value_of_polygon.append(int(value))
    out = np.empty(len(ids), dtype=object)
    out[:] = [MultiPolygon() for _ in range(len(ids))]
    if not value_of_polygon:
        return list(out)
    rings = shapely.linearrings(np.asarray(coords, np.float64), indices=np.asarray(ring_of_coord))
    polygons = shapely.polygons(rings, indices=np.asarray(polygon_of_ring))
    values = np.asarray(value_of_polygon)
    order = np.argsort(values, kind="stable")  # multipolygons() groups consecutive equal indices
    present = np.unique(values)
    position = np.searchsorted(present, values[order])
    grouped = shapely.multipolygons(polygons[order], indices=position)
    lookup = {int(v): k for k, v in enumerate(present.tolist())}
    for k, obj_id in enumerate(ids.tolist()):
        if obj_id in lookup:
            out[k] = grouped[lookup[obj_id]]
    return list(out)


def _object_array(polygons: Sequence[MultiPolygon]) -> np.ndarray:
    out = np.empty(len(polygons), dtype=object)
    out[:] = list(polygons)
    return out


def _columns(ids, class_ids, class_names, scores, area_px, area_m2) -> list[np.ndarray]:
    names = np.array([class_names[c - 1] if 1 <= c <= len(class_names) else str(c) for c in np.asarray(class_ids)],
                     dtype=object)
    return [
        np.asarray(ids, np.int64),
        np.asarray(class_ids, np.int32),
        names,
        np.asarray(scores, np.float64),
        np.asarray(area_px, np.int64),
        np.asarray(area_m2, np.float64),
    ]


class GeoPackageWriter:
    """Write object polygons to a GeoPackage layer ``objects``, batch by batch.

    Args:
        path: the ``.gpkg`` to create (replaced if it exists).
        crs: the polygons' CRS (the raster's), or None.
        class_names: name of class 1, 2, ...
        layer: layer name.
    """

    def __init__(self, path: str | os.PathLike, crs: CRS | None, class_names: Sequence[str], layer: str = "objects"):
        self.path = Path(path)
        self.crs = crs
        self.class_names = list(class_names)
        self.layer = layer
        self.count = 0
        self._created = False
        self.path.unlink(missing_ok=True)

    def write(self, polygons: Sequence[MultiPolygon], ids, class_ids, scores, area_px, area_m2) -> None:
        """Append features (all arguments have one entry per polygon; ``area_m2`` NaN = null)."""
        if self._created and len(polygons) == 0:
            return
        columns = _columns(ids, class_ids, self.class_names, scores, area_px, area_m2)
        masks = [None] * len(columns)
        masks[-1] = np.isnan(columns[-1])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*'crs' was not provided")  # none is known: expected
            write_features(
                str(self.path),
                shapely.to_wkb(_object_array(polygons)),
                columns,
                list(FIELDS),
                field_mask=masks,
                layer=self.layer,
                driver="GPKG",
                geometry_type="MultiPolygon",
                crs=self.crs.to_wkt() if self.crs is not None else None,
                promote_to_multi=True,
                append=self._created,
            )
        self._created = True
        self.count += len(polygons)

    def close(self) -> Path:
        """Make sure the file exists (an empty layer when nothing was written)."""
        if not self._created:
            self.write([], [], [], [], [], [])
        return self.path


def geojson_coordinates_note(crs: CRS | None, transform: Affine | None = None) -> str:
    """Why a GeoJSON of polygons in ``crs`` (and ``transform``) cannot be RFC 7946 WGS 84, or ``""`` when it can.

    - No CRS, identity transform: pixel grid coordinates (the long-standing case, noted in the file).
    - No CRS but a transform: the transform's map coordinates, in a CRS nobody named.
    - A CRS PROJ cannot convert to WGS 84 (an engineering / ``LOCAL_CS`` site grid, say): the raster's own
      coordinates. That is what a QGIS user can still use: the polygons line up with the raster once the
      layer is given the raster's CRS (the GeoPackage records it and lines up at once), whereas leaving the
      file out would break a batch that asked for it, and guessing a reprojection would put them somewhere
      else on Earth.
    """
    if crs is None:
        if transform is None or transform.is_identity:
            return ""
        return "map coordinates of the source raster's transform, which names no CRS (not WGS 84)"
    try:
        rasterio.warp.transform(crs, "EPSG:4326", [0.0], [0.0])
    except Exception:  # noqa: BLE001 - PROJ/GDAL say "no coordinate operation" in several ways
        return (f"coordinates in the source raster's own CRS ({crs.to_string()[:80]}), which cannot be converted "
                f"to WGS 84 (not RFC 7946); the GeoPackage records that CRS")
    return ""


class GeoJSONWriter:
    """Stream object polygons into an RFC 7946 GeoJSON FeatureCollection (see module docstring).

    Args:
        path: the ``.geojson`` to create (replaced if it exists).
        crs: the polygons' CRS; they are reprojected to WGS 84. None, or a CRS without a conversion to
            WGS 84 (an engineering CRS): written as they are, and the file says so in its
            ``"smallseg_coordinates"`` member (see :func:`geojson_coordinates_note`; also in :attr:`note`).
        class_names: name of class 1, 2, ...
        name: the collection's ``name`` member.
        transform: the raster's transform (tells pixel grid coordinates from a transform's map coordinates
            when there is no CRS).

    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, crs: CRS | None, class_names: Sequence[str], name: str = "objects",
                 *, transform: Affine | None = None):
        self.path = Path(path)
        self.crs = crs
        self.class_names = list(class_names)
        self.count = 0
        self.note = geojson_coordinates_note(crs, transform)
        self._wgs84 = crs is not None and not self.note and crs != CRS.from_epsg(4326)
        self._fh = open(self.path, "w", encoding="utf-8")
        head = {"type": "FeatureCollection", "name": name}
        if crs is None and (transform is None or transform.is_identity):
            head["smallseg_coordinates"] = "pixel grid of the source raster (x = column, y = row), not WGS 84"
        elif self.note:
            head["smallseg_coordinates"] = self.note
        self._fh.write(json.dumps(head)[:-1] + ', "features": [')

    def __enter__(self) -> "GeoJSONWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, polygons: Sequence[MultiPolygon], ids, class_ids, scores, area_px, area_m2) -> None:
        """Append features (all arguments have one entry per polygon; ``area_m2`` NaN = null)."""
        if len(polygons) == 0:
            return
        geoms = _object_array(polygons)
        coords = shapely.get_coordinates(geoms)
        if self._wgs84 and len(coords):
            # Vertex by vertex, as rasterio.warp.transform_geom does, but in one PROJ call per batch.
            xs, ys = rasterio.warp.transform(self.crs, "EPSG:4326", coords[:, 0], coords[:, 1])
            coords = np.column_stack([xs, ys])
        geoms = shapely.set_coordinates(geoms, np.round(coords, GEOJSON_DECIMALS))
        geoms = shapely.orient_polygons(geoms, exterior_cw=False)  # RFC 7946: exterior rings counter-clockwise
        texts = shapely.to_geojson(geoms)
        cols = _columns(ids, class_ids, self.class_names, scores, area_px, area_m2)
        for k, text in enumerate(texts):
            area = cols[5][k]
            properties = {
                "id": int(cols[0][k]),
                "class_id": int(cols[1][k]),
                "class": str(cols[2][k]),
                "score": float(str(np.float32(cols[3][k]))),  # shortest text of the float32 score
                "area_px": int(cols[4][k]),
                "area_m2": None if np.isnan(area) else float(area),
            }
            feature = (f'{{"type":"Feature","id":{int(cols[0][k])},'
                       f'"properties":{json.dumps(properties, separators=(",", ":"))},"geometry":{text}}}')
            self._fh.write(("\n" if self.count == 0 else ",\n") + feature)
            self.count += 1

    def close(self) -> Path:
        """Finish the collection and close the file."""
        if not self._fh.closed:
            self._fh.write("\n]}\n")
            self._fh.close()
        return self.path
