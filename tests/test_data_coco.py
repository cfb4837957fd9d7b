"""COCO JSON of scene tiles: loads with pycocotools, masks decode to the label raster's crops exactly."""

import contextlib
import io
import json

import numpy as np
import pytest
import rasterio
from PIL import Image
from pycocotools.coco import COCO

from smallseg.data.coco_json import coco_from_label_arrays, write_coco_tiles
from smallseg.data.remote_sensing import write_remote_sensing_scene


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    paths = write_remote_sensing_scene(root / "scene", 300, 420, seed=8, density=1.5)
    ann = write_coco_tiles(paths.image, paths.instances, paths.classes, root / "tiles", tile_size_px=128,
                           overlap_px=16)
    return paths, ann


def test_coco_masks_areas_and_boxes_match_the_label_raster(coco_dir):
    paths, ann_path = coco_dir
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann_path))
    with rasterio.open(paths.instances) as ins, rasterio.open(paths.classes) as cls:
        instances, classes = ins.read(1), cls.read(1)
    with rasterio.open(paths.image) as img:
        image = img.read()
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"car", "building"}
    scene_area = np.bincount(instances.ravel())
    n_clipped = 0
    img_ids = coco.getImgIds()
    assert len(img_ids) == 3 * 4  # 300 rows -> starts 0,112,172; 420 cols -> 0,112,224,292
    for img_id in img_ids:
        info = coco.loadImgs(img_id)[0]
        r, c, h, w = info["row_off"], info["col_off"], info["height"], info["width"]
        crop, crop_cls = instances[r:r + h, c:c + w], classes[r:r + h, c:c + w]
        tile = np.asarray(Image.open(ann_path.parent / info["file_name"]))
        assert np.array_equal(tile, np.moveaxis(image[:, r:r + h, c:c + w], 0, -1))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert sorted(a["scene_instance_id"] for a in anns) == sorted(set(np.unique(crop)) - {0})
        for a in anns:
            expected = crop == a["scene_instance_id"]
            assert np.array_equal(coco.annToMask(a).astype(bool), expected)
            assert a["area"] == expected.sum()
            rows, cols = np.nonzero(expected)
            assert a["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
            assert a["category_id"] == crop_cls[expected][0]
            assert a["clipped"] == (expected.sum() < scene_area[a["scene_instance_id"]])
            n_clipped += a["clipped"]
    assert n_clipped > 0


def test_in_memory_tiling_matches_written_json_and_json_is_plain(coco_dir):
    paths, ann_path = coco_dir
    written = json.loads(ann_path.read_text())
    with rasterio.open(paths.instances) as ins, rasterio.open(paths.classes) as cls:
        in_memory = coco_from_label_arrays(ins.read(1), cls.read(1), tile_size_px=128, overlap_px=16)
    assert in_memory["annotations"] == written["annotations"]
    assert written["images"][0]["transform"][0] == pytest.approx(0.5)
