"""Areas in square metres of the ground, whatever the CRS (issue 13.4): Web Mercator's scale distortion and
geographic degrees are measured on the ellipsoid, checked against pyproj.Geod geodesic polygon areas; UTM keeps
its map-unit areas exactly (byte-identical object tables)."""

import csv

import numpy as np
import pyproj
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from smallseg.io.geo import ground_units
from smallseg.io.geotiff import RasterGeometry
from smallseg.io.labels import read_label_raster
from smallseg.io.tables import ObjectTable, read_objects_csv, write_objects_csv
from smallseg.metrics.evaluation import evaluate

GEOD = pyproj.Geod(ellps="WGS84")
# (row0, col0, row1, col1) half-open pixel boxes of the planted objects (buildings and cars at ~0.3-0.5 m).
BOXES = [(10, 12, 40, 52), (60, 70, 75, 78), (100, 5, 180, 120), (150, 150, 199, 199)]
SHAPE = (200, 200)


def labels_and_table() -> tuple[np.ndarray, ObjectTable]:
    labels = np.zeros(SHAPE, np.uint32)
    for k, (r0, c0, r1, c1) in enumerate(BOXES, start=1):
        labels[r0:r1, c0:c1] = k
    n = len(BOXES)
    boxes = np.array(BOXES, np.int64)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    centroids = np.stack([(boxes[:, 0] + boxes[:, 2] - 1) / 2, (boxes[:, 1] + boxes[:, 3] - 1) / 2], axis=1)
    table = ObjectTable(ids=np.arange(1, n + 1, dtype=np.int64), class_ids=np.full(n, 2, np.int32),
                        scores=np.full(n, 0.9, np.float32), centroids_yx=centroids.astype(np.float64),
                        area_px=area.astype(np.int64), bbox=boxes, tile_rc=np.zeros((n, 2), np.int32),
                        touches_tile_edge=np.zeros(n, bool))
    return labels, table


def geodesic_area_m2(crs: CRS, transform, box) -> float:
    """Geodesic area of a pixel box's outline (edges densified: parallels are not geodesics)."""
    r0, c0, r1, c1 = box
    t = np.linspace(0.0, 1.0, 41)
    rows = np.concatenate([np.full_like(t, r0), r0 + (r1 - r0) * t, np.full_like(t, r1), r1 - (r1 - r0) * t])
    cols = np.concatenate([c0 + (c1 - c0) * t, np.full_like(t, c1), c1 - (c1 - c0) * t, np.full_like(t, c0)])
    x = transform.a * cols + transform.b * rows + transform.c
    y = transform.d * cols + transform.e * rows + transform.f
    to_geo = pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(crs.to_wkt()), "EPSG:4326", always_xy=True)
    lon, lat = to_geo.transform(x, y)
    return abs(GEOD.polygon_area_perimeter(lon, lat)[0])


def web_mercator_at_37_7n():
    x, y = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(-122.42, 37.7)
    return CRS.from_epsg(3857), from_origin(x, y, 0.6, 0.6)  # 0.6 m map px = ~0.475 m on the ground


def wgs84_degrees():
    return CRS.from_epsg(4326), from_origin(11.57, 48.14, 5e-6, 4e-6)  # ~0.37 x 0.44 m at 48 N


def write_raster(path, array, crs, transform):
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
                       dtype=array.dtype, crs=crs, transform=transform) as dst:
        dst.write(array, 1)
    return path


@pytest.mark.parametrize("scene", [web_mercator_at_37_7n, wgs84_degrees], ids=["EPSG:3857 at 37.7N", "EPSG:4326"])
def test_object_areas_in_the_table_are_geodesic_within_1_percent(tmp_path, scene):
    crs, transform = scene()
    _, table = labels_and_table()
    geometry = RasterGeometry(SHAPE[1], SHAPE[0], crs, transform)
    path = write_objects_csv(tmp_path / "s.objects.csv", table, ["car", "building"], geometry)
    area_m2 = np.array([float(r["area_m2"]) for r in csv.DictReader(path.open(newline="", encoding="utf-8"))])
    truth = np.array([geodesic_area_m2(crs, transform, box) for box in BOXES])
    np.testing.assert_allclose(area_m2, truth, rtol=0.01)
    # The same numbers from the one function, and the table reads back.
    units = ground_units(crs, transform, SHAPE[1], SHAPE[0])
    np.testing.assert_allclose(units.area_m2(table.area_px, table.centroids_yx), area_m2, rtol=1e-12)
    assert len(read_objects_csv(path)) == len(BOXES)
    if crs.to_epsg() == 3857:  # what the map units alone claimed: 1.6x the ground
        nominal = table.area_px * 0.36
        assert np.all(nominal / truth > 1.55)


@pytest.mark.parametrize("scene", [web_mercator_at_37_7n, wgs84_degrees], ids=["EPSG:3857 at 37.7N", "EPSG:4326"])
def test_pixel_size_and_m2_size_buckets_use_the_ground_area(tmp_path, scene):
    crs, transform = scene()
    centre_px = (SHAPE[0] // 2 - 1, SHAPE[1] // 2 - 1, SHAPE[0] // 2 + 1, SHAPE[1] // 2 + 1)  # 2 x 2 px
    truth_px_m2 = geodesic_area_m2(crs, transform, centre_px) / 4
    geometry = RasterGeometry(SHAPE[1], SHAPE[0], crs, transform)
    assert geometry.pixel_area_m2 == pytest.approx(truth_px_m2, rel=0.01)  # the pixel-size check reads this
    assert geometry.pixel_size_m == pytest.approx(truth_px_m2**0.5, rel=0.01)
    labels, _ = labels_and_table()
    gt = write_raster(tmp_path / "gt.tif", labels, crs, transform)
    raster = read_label_raster(gt)
    assert raster.pixel_area_m2 == pytest.approx(truth_px_m2, rel=0.01)
    report = evaluate(gt, gt, size_buckets="20,200m2")
    buckets = report.settings["size_buckets"]
    assert buckets["small_max_px"] == pytest.approx(20 / truth_px_m2, rel=0.01)
    assert buckets["medium_max_px"] == pytest.approx(200 / truth_px_m2, rel=0.01)
    assert report.metrics["AP"] == pytest.approx(1.0)


def test_utm_areas_are_the_map_units_unchanged(tmp_path):
    crs, transform = CRS.from_epsg(32633), from_origin(500_000.0, 5_330_000.0, 0.5, 0.5)
    units = ground_units(crs, transform, SHAPE[1], SHAPE[0])
    assert units.kind == "nominal" and units.pixel_area_m2 == 0.25
    _, table = labels_and_table()
    path = write_objects_csv(tmp_path / "u.objects.csv", table, ["car", "building"],
                             RasterGeometry(SHAPE[1], SHAPE[0], crs, transform))
    cells = [r["area_m2"] for r in csv.DictReader(path.open(newline="", encoding="utf-8"))]
    assert cells == [repr(float(a) * 0.25) for a in table.area_px]  # exactly |det| x area_px, as before
    assert RasterGeometry(SHAPE[1], SHAPE[0], crs, transform).pixel_size_m == 0.5


def test_no_crs_has_no_metric_area(tmp_path):
    units = ground_units(None, from_origin(0, 0, 1, -1), 10, 10)
    assert units.kind == "none" and units.pixel_area_m2 is None and units.area_m2([3], [[1.0, 1.0]]) is None


def test_m2_size_buckets_hold_for_each_object_where_the_scale_varies_over_the_scene(tmp_path):
    # A Web Mercator scene from 40 N to about 58 N (2 km map pixels): the same pixel count covers ~1.7x
    # more ground in the south than in the north, so two equal 3 x 3 px objects fall into different buckets.
    x, y = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(10.0, 58.0)
    crs, transform = CRS.from_epsg(3857), from_origin(x, y, 2000.0, 2000.0)
    labels = np.zeros((900, 20), np.uint32)
    labels[2:5, 5:8] = 1  # north
    labels[895:898, 5:8] = 2  # south
    gt = write_raster(tmp_path / "tall.tif", labels, crs, transform)
    north = geodesic_area_m2(crs, transform, (2, 5, 5, 8))
    south = geodesic_area_m2(crs, transform, (895, 5, 898, 8))
    assert south / north > 1.5
    edge = (north * south) ** 0.5  # between the two ground areas
    report = evaluate(gt, gt, size_buckets=f"{edge:.6g},{10 * south:.6g}m2")
    assert report.metrics["AR_small"] == pytest.approx(1.0) and report.metrics["AR_medium"] == pytest.approx(1.0)
    assert "ground area at the object's position" in report.settings["size_buckets"]["area_definition"]
