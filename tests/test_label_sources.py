"""Label sources (smallseg.data.labels) against independent computations, and bad labels in one line."""

import numpy as np
import pyogrio
from pyogrio.raw import write as pyogrio_write
import pytest
import rasterio
import rasterio.features
import shapely
import torch
from pyproj import Transformer
from rasterio.transform import from_origin

from smallseg.data.labels import ClassMapping, read_boxes, read_label_image, read_vector_labels
from smallseg.data.labels.vector import read_polygons
from smallseg.errors import SmallsegError
from smallseg.train.losses import head_losses
from smallseg.train.targets import collate_targets, encode_targets

CRS = "EPSG:32633"
TRANSFORM = from_origin(500000, 4000000, 0.5, 0.5)
CLASSES = ClassMapping(("car", "building"))


def _scene(tmp_path, size=64):
    """An image GeoTIFF and its instance raster: touching rectangles (building) and small squares (car)."""
    instances = np.zeros((size, size), np.int32)
    classes = {}
    k = 0
    for y in range(4, size - 12, 12):
        for x in range(4, size - 16, 16):
            k += 1
            instances[y:y + 8, x:x + 8] = k  # this one and the next touch along a column edge
            classes[k] = "building"
            k += 1
            instances[y:y + 8, x + 8:x + 11] = k
            classes[k] = "car"
    image = np.random.default_rng(0).integers(0, 255, (3, size, size), dtype=np.uint8)
    path = tmp_path / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=CRS,
                       transform=TRANSFORM) as dst:
        dst.write(image)
    return path, instances, classes


def _polygons(instances, classes):
    shapes = list(rasterio.features.shapes(instances, mask=instances > 0, transform=TRANSFORM))
    geoms = np.array([shapely.geometry.shape(g) for g, _ in shapes], dtype=object)
    return geoms, [int(v) for _, v in shapes], [classes[int(v)] for _, v in shapes]


def _write(path, geoms, names, crs, driver, field="cls"):
    pyogrio_write(path, geometry=shapely.to_wkb(geoms), field_data=[np.array(names, dtype=object)], fields=[field],
                  crs=crs, driver=driver, geometry_type="Polygon")


def _same_partition(a, b):
    """Two label images describe the same objects (ids may differ)."""
    assert ((a > 0) == (b > 0)).all()
    pairs = np.unique(np.stack([a[a > 0], b[a > 0]]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_vector_labels_in_another_crs_rasterise_to_the_instances_they_came_from(tmp_path):
    image, instances, classes = _scene(tmp_path)
    geoms, ids, names = _polygons(instances, classes)
    to_wgs84 = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    geoms = shapely.transform(geoms, lambda xy: np.column_stack(to_wgs84.transform(xy[:, 0], xy[:, 1])))
    _write(tmp_path / "labels.geojson", geoms, names, "EPSG:4326", "GeoJSON")
    item = read_vector_labels(image, tmp_path / "labels.geojson", classes=CLASSES, class_field="cls")
    _same_partition(instances, item.instances)  # touching rectangles stay separate objects
    expected_classes = np.zeros_like(instances)
    for k, name in classes.items():
        expected_classes[instances == k] = CLASSES.names.index(name) + 1
    assert (item.classes == expected_classes).all()
    assert item.pixel_area == pytest.approx(0.25)


def test_overlapping_polygons_put_the_smaller_on_top_and_say_so(tmp_path):
    image, _, _ = _scene(tmp_path)
    x0, y0 = 500000, 4000000
    big = shapely.box(x0 + 2, y0 - 20, x0 + 20, y0 - 2)   # 36 x 36 px
    small = shapely.box(x0 + 5, y0 - 10, x0 + 10, y0 - 5)  # 10 x 10 px inside it
    _write(tmp_path / "o.gpkg", np.array([small, big], dtype=object), ["car", "building"], CRS, "GPKG")
    item = read_vector_labels(image, tmp_path / "o.gpkg", classes=CLASSES, class_field="cls")
    assert (item.instances == 1).sum() == 100  # the small one whole
    assert (item.instances == 2).sum() == 36 * 36 - 100
    assert any("smaller polygon on top" in note for note in item.notes)


@pytest.mark.parametrize("case", ["class", "no_overlap", "empty", "field"])
def test_bad_vector_labels_get_one_line(tmp_path, case):
    image, instances, classes = _scene(tmp_path)
    geoms, _, names = _polygons(instances, classes)
    path = tmp_path / "bad.gpkg"
    if case == "class":
        _write(path, geoms, ["truck"] * len(geoms), CRS, "GPKG")
        match = "class 'truck' is not one of the model's classes car, building"
    elif case == "no_overlap":
        _write(path, shapely.transform(geoms, lambda xy: xy + 1e5), names, CRS, "GPKG")
        match = "none of its .* polygons overlaps the image"
    elif case == "empty":
        _write(path, geoms[:0], [], CRS, "GPKG")
        match = "has no features"
    else:
        _write(path, geoms, names, CRS, "GPKG")
        match = "no attribute 'kind' for class_field; the layer has cls"
    with pytest.raises(SmallsegError, match=match) as err:
        read_vector_labels(image, path, classes=CLASSES, class_field="kind" if case == "field" else "cls")
    assert "\n" not in str(err.value)


def test_label_image_area_and_grid(tmp_path):
    from PIL import Image

    labels = np.zeros((40, 50), np.uint16)
    labels[2:8, 2:8], labels[30:36, 10:16] = 1, 2
    Image.fromarray(np.full((40, 50), 90, np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(labels).save(tmp_path / "lab.png")
    item = read_label_image(tmp_path / "img.png", tmp_path / "lab.png", classes=ClassMapping(("nucleus",)),
                            area="rows=0:20")
    assert item.image.shape == (40, 50, 1)
    assert (item.instances[:20] == labels[:20]).all()
    # outside the area only the object is labelled; the rest is not labelled (-1)
    assert (item.instances[30:36, 10:16] == 2).all()
    assert ((item.instances[20:] == -1) == (labels[20:] == 0)).all()
    Image.fromarray(labels[:30]).save(tmp_path / "short.png")
    with pytest.raises(SmallsegError, match="label image is 30 x 50 px, the image .* is 40 x 50"):
        read_label_image(tmp_path / "img.png", tmp_path / "short.png", classes=ClassMapping(("nucleus",)))
    with pytest.raises(SmallsegError, match="model has 2 .*say which with class_name="):
        read_label_image(tmp_path / "img.png", tmp_path / "lab.png", classes=CLASSES)


def test_boxes_train_centroids_inside_the_ellipse_and_nothing_in_the_corners(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((32, 48), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "boxes.csv").write_text("image_path,xmin,ymin,xmax,ymax,label\na.png,10,4,30,24,car\n")
    (item,) = read_boxes(tmp_path / "boxes.csv", classes=CLASSES)
    assert item.boxes_only and item.boxes.tolist() == [[4, 10, 24, 30]]
    t = encode_targets(item.instances, item.classes, max_distance_px=10)
    yy, xx = np.nonzero(t["centroid_mask"])
    # every vote lands on the box centre (row 14, col 20) up to pixel-centre offsets
    assert np.abs(yy + t["centroid"][0, yy, xx] * 10 - 13.5).max() < 1e-4
    assert np.abs(xx + t["centroid"][1, yy, xx] * 10 - 19.5).max() < 1e-4
    assert t["ignore"][4, 10] and not t["centroid_mask"][4, 10]  # box corner: nothing learnt
    assert t["semantic"][14, 20] == 1 and not t["ignore"][14, 20]  # core: the semantic head learns "car"
    assert t["ignore"][14, 11] and t["centroid_mask"][14, 11]  # ring: centroid only
    assert t["distance_ignore"][item.instances > 0].all() and not t["distance_ignore"][0, 0]


def test_ignored_pixels_contribute_nothing_to_any_loss():
    instances = np.zeros((24, 24), np.int32)
    instances[4:10, 4:10] = 1
    instances[:, 16:] = -1
    targets = collate_targets([encode_targets(instances, None, 8)])
    torch.manual_seed(0)
    outputs = {"semantic": torch.randn(1, 2, 24, 24), "centroid": torch.randn(1, 2, 24, 24),
               "distance": torch.randn(1, 1, 24, 24)}
    changed = {k: v.clone() for k, v in outputs.items()}
    for v in changed.values():
        v[..., 16:] = 100.0
    a, b = head_losses(outputs, targets), head_losses(changed, targets)
    for key in ("semantic", "centroid", "distance", "total"):
        assert torch.allclose(a[key], b[key]), key


def test_training_config_sources_read_vector_labels_with_an_area(tmp_path):
    from smallseg.train.loop import class_mapping, load_source

    image, instances, classes = _scene(tmp_path)
    geoms, _, names = _polygons(instances, classes)
    _write(tmp_path / "labels.fgb", geoms, names, CRS, "FlatGeobuf")
    spec = {"vector": {"image": "scene.tif", "labels": "labels.fgb", "class_field": "cls", "area": "rows=0:30"}}
    (item,) = load_source(spec, tmp_path, class_mapping({"classes": 2, "class_names": ["car", "building"]}))
    _same_partition(np.where(item.instances > 0, item.instances, 0), instances)
    assert ((item.instances == -1) == ((np.arange(64)[:, None] >= 30) & (instances == 0))).all()
    with pytest.raises(SmallsegError, match="unknown key"):
        load_source({"vector": {"image": "scene.tif", "labels": "labels.fgb", "classfield": "cls"}}, tmp_path)
