"""Outline options through tile-and-predict (issue #17): the streamed GeoPackage / GeoJSON polygons equal the
outlines computed from the whole stitched label raster, topology holds, run.json says what was applied."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely

from smallseg.cli import main as cli_main
from smallseg.errors import SmallsegError
from smallseg.models import save_checkpoint
from smallseg.outline import OutlineOptions, outline_polygons, to_map
from smallseg.pipeline.geotiff import predict_geotiff

from geo_helpers import UTM_TRANSFORM as TRANSFORM, read_gpkg_polygons, write_noise_scene

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LIGHT = dict(classes=2, max_distance_px=6, tile_size_px=64, input_scale=1 / 255, class_names=["car", "building"])


@pytest.fixture(scope="module")
def random_model(tiny_model):
    return tiny_model("mobilenetv3", semantic_bias=[-0.5, 1.0, 0.5], **LIGHT, norm_mean=[0.45, 0.45, 0.45],
                      norm_std=[0.25, 0.25, 0.25])


def _scene(path: Path) -> Path:
    return write_noise_scene(path, 100, 120)


def test_streamed_outlines_equal_the_whole_label_raster_and_keep_topology(tmp_path, random_model):
    options = OutlineOptions(simplify_px=1.0, regularise_class_names=("building",))
    result = predict_geotiff(_scene(tmp_path / "scene.tif"), tmp_path / "out", random_model, tile_size_px=64,
                             batch_size=3, progress=False, outline=options)
    with rasterio.open(result.paths["instances"]) as src:
        labels = src.read(1).astype(np.int64)
    table = result.objects
    assert len(table) > 10
    ids, whole = outline_polygons(labels, options.for_classes(["car", "building"]), ids=table.ids,
                                  class_ids=table.class_ids)
    expected = dict(zip(ids.tolist(), to_map(whole, TRANSFORM)))
    got_ids, got = read_gpkg_polygons(result.paths["gpkg"])
    assert sorted(got_ids.tolist()) == sorted(expected)
    for k, g in zip(got_ids.tolist(), got):
        assert shapely.equals_exact(shapely.normalize(g), shapely.normalize(expected[k]), tolerance=1e-6), k
    # No two outlines overlap; simplification did something.
    tree = shapely.STRtree(got)
    for i, j in zip(*tree.query(got, predicate="intersects")):
        if i < j:
            assert got[i].intersection(got[j]).area < 1e-9
    _, exact = outline_polygons(labels, ids=table.ids)
    assert sum(len(shapely.get_coordinates(g)) for g in got) < sum(len(shapely.get_coordinates(p)) for p in exact)
    run = json.loads(Path(result.paths["run"]).read_text(encoding="utf-8"))
    assert run["parameters"]["outline"]["simplify_px"] == 1.0
    assert run["parameters"]["outline"]["regularise_class_names"] == ["building"]


def test_default_outlines_are_the_exact_pixel_outlines_and_say_so(tmp_path, random_model):
    result = predict_geotiff(_scene(tmp_path / "scene.tif"), tmp_path / "out", random_model, tile_size_px=64,
                             batch_size=3, progress=False)
    run = json.loads(Path(result.paths["run"]).read_text(encoding="utf-8"))
    assert run["parameters"]["outline"]["simplify_px"] == 0.0
    assert run["parameters"]["outline"]["method"] == "exact pixel outlines"
    with rasterio.open(result.paths["instances"]) as src:
        labels = src.read(1).astype(np.int64)
    got_ids, got = read_gpkg_polygons(result.paths["gpkg"])
    for k, g in zip(got_ids.tolist(), got):
        assert g.area == pytest.approx((labels == k).sum() * 0.25)


def test_cli_flags(tmp_path, random_model, capsys):
    model_path = tmp_path / "m.safetensors"
    save_checkpoint(random_model, model_path)
    src = _scene(tmp_path / "scene.tif")
    code = cli_main(["tile-and-predict", str(src), "--out", str(tmp_path / "out"), "--model", str(model_path),
                     "--tile", "64", "--simplify", "1.5", "--regularise-buildings", "--formats", "gpkg,json",
                     "--quiet"])
    assert code == 0
    run = json.loads((tmp_path / "out" / "scene.run.json").read_text(encoding="utf-8"))
    assert run["parameters"]["outline"]["simplify_px"] == 1.5
    assert run["parameters"]["outline"]["regularise_class_ids"] == [2]
    code = cli_main(["tile-and-predict", str(src), "--out", str(tmp_path / "out2"), "--model", str(model_path),
                     "--simplify", "-2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--simplify" in err and "Traceback" not in err
    with pytest.raises(SmallsegError, match="no class building"):
        OutlineOptions(regularise_class_names=("building",)).for_classes(["nucleus"])
