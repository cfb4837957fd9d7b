"""Sub-pixel outlines through tile-and-predict (issue #17): the GeoPackage polygons are valid, never overlap,
share every shared pixel edge, stay near the pixel outlines; a resumed run writes the same
polygons; the setting is in run.json and in the resume key."""

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
from smallseg.outline import OutlineOptions, coverage_subpixel_outlines, outline_polygons
from smallseg.pipeline.geotiff import predict_geotiff
from smallseg.pipeline.geotiff.sinks import Sink

from geo_helpers import read_gpkg_polygons, to_pixel_edges, write_noise_scene

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LIGHT = dict(classes=2, max_distance_px=6, tile_size_px=64, input_scale=1 / 255, class_names=["car", "building"])
RUN = dict(tile_size_px=64, overlap_px=16, batch_size=3, progress=False, formats="tif,gpkg")


@pytest.fixture(scope="module")
def random_model(tiny_model):
    return tiny_model("mobilenetv3", semantic_bias=[-0.5, 1.0, 0.5], **LIGHT, norm_mean=[0.45, 0.45, 0.45],
                      norm_std=[0.25, 0.25, 0.25], boundary_head="signed_distance")


def _scene(path: Path) -> Path:
    return write_noise_scene(path, 150, 120)


def _gpkg_px(path):
    """ids and polygons of a GeoPackage, back in pixel-edge coordinates."""
    ids, polygons = read_gpkg_polygons(path)
    return ids, to_pixel_edges(polygons)


def test_subpixel_polygons_are_valid_keep_topology_and_resume_to_the_same(tmp_path, random_model, monkeypatch):
    src = _scene(tmp_path / "scene.tif")
    options = OutlineOptions(subpixel=True)
    bands = []
    add_band = Sink.add_band

    def spy(self, arrays):
        bands.append((int(arrays["rows"][0]), np.array(arrays["soft"])))
        add_band(self, arrays)

    monkeypatch.setattr(Sink, "add_band", spy)
    result = predict_geotiff(src, tmp_path / "out", random_model, outline=options, **RUN)
    monkeypatch.setattr(Sink, "add_band", add_band)
    assert result.run["tiling"]["tile_rows"] >= 3
    with rasterio.open(result.paths["instances"]) as f:
        labels = f.read(1).astype(np.int64)
    ids, polys = _gpkg_px(result.paths["gpkg"])
    assert len(ids) > 10 and sorted(ids.tolist()) == sorted(result.objects.ids.tolist())
    by_id = dict(zip(ids.tolist(), polys))
    _, pixel = outline_polygons(labels, ids=ids)
    moved = 0
    for k, p, q in zip(ids.tolist(), polys, pixel):
        assert p.is_valid and not p.is_empty, k
        # the contour may follow the map up to SUBPIXEL_REACH_PX (2) px past the object's pixels, and no farther
        assert p.hausdorff_distance(q) <= 3.0 + 1e-6, k
        moved += abs(p.area - q.area) > 1e-6
    assert moved > len(ids) // 4  # the edges did move off the pixel grid (random weights: not all)
    tree = shapely.STRtree(polys)
    for i, j in zip(*tree.query(polys, predicate="intersects")):
        if i < j:
            assert polys[i].intersection(polys[j]).area < 1e-6
    # every pixel edge between two objects lies on both outlines
    pairs = 0
    for a, b, seg in _shared_edges(labels):
        pairs += 1
        assert seg.difference(by_id[a].boundary.buffer(1e-6)).length < 1e-6
        assert seg.difference(by_id[b].boundary.buffer(1e-6)).length < 1e-6
    assert pairs > 0
    run = json.loads(Path(result.paths["run"]).read_text(encoding="utf-8"))
    assert run["parameters"]["outline"]["subpixel"] is True
    # Streamed band by band == the whole raster: the outlines of the whole stitched labels and soft map.
    assert [r for r, _ in bands] == sorted(r for r, _ in bands) and len(bands) >= 3
    soft = np.concatenate([b for _, b in bands])
    assert soft.shape == labels.shape and np.isfinite(soft).all()
    _, whole = coverage_subpixel_outlines(soft, labels, ids=ids)
    for k, p, q in zip(ids.tolist(), polys, whole):
        assert shapely.equals_exact(shapely.normalize(p), shapely.normalize(q), tolerance=1e-6), k

    # Interrupted after 2 tile rows and resumed: the same polygons; a changed setting is refused.
    out = tmp_path / "again"

    def stop(n):
        if n == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_geotiff(src, out, random_model, outline=options, on_row_done=stop, **RUN)
    with pytest.raises(SmallsegError, match="other settings"):
        predict_geotiff(src, out, random_model, resume=True, **RUN)
    resumed = predict_geotiff(src, out, random_model, outline=options, resume=True, **RUN)
    assert resumed.run["session"]["resumed_from_tile_row"] == 2
    ids2, polys2 = _gpkg_px(resumed.paths["gpkg"])
    assert ids2.tolist() == ids.tolist()
    assert all(shapely.equals_exact(p, q, tolerance=0.0) for p, q in zip(polys, polys2))


def _shared_edges(labels):
    """(a, b, line) for every 4-neighbour pixel edge between two different objects."""
    out = []
    h, w = labels.shape
    right = (labels[:, :-1] != labels[:, 1:]) & (labels[:, :-1] > 0) & (labels[:, 1:] > 0)
    for r, c in zip(*np.nonzero(right)):
        out.append((int(labels[r, c]), int(labels[r, c + 1]),
                    shapely.LineString([(c + 1, r), (c + 1, r + 1)])))
    down = (labels[:-1] != labels[1:]) & (labels[:-1] > 0) & (labels[1:] > 0)
    for r, c in zip(*np.nonzero(down)):
        out.append((int(labels[r, c]), int(labels[r + 1, c]), shapely.LineString([(c, r + 1), (c + 1, r + 1)])))
    return out


def test_cli_subpixel_flag_and_refusals(tmp_path, random_model, capsys):
    model_path = tmp_path / "m.safetensors"
    save_checkpoint(random_model, model_path)
    src = _scene(tmp_path / "scene.tif")
    code = cli_main(["tile-and-predict", str(src), "--out", str(tmp_path / "out"), "--model", str(model_path),
                     "--tile", "64", "--subpixel", "--formats", "gpkg", "--quiet"])
    assert code == 0
    run = json.loads((tmp_path / "out" / "scene.run.json").read_text(encoding="utf-8"))
    assert run["parameters"]["outline"]["subpixel"] is True
    code = cli_main(["tile-and-predict", str(src), "--out", str(tmp_path / "out2"), "--model", str(model_path),
                     "--subpixel", "--simplify", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--subpixel" in err and "Traceback" not in err


def test_a_model_without_boundary_head_is_refused_in_one_line(tmp_path, tiny_model):
    plain = tiny_model("mobilenetv3", semantic_bias=[-0.5, 1.0, 0.5], **LIGHT)
    with pytest.raises(SmallsegError, match="needs a model with a boundary head"):
        predict_geotiff(_scene(tmp_path / "scene.tif"), tmp_path / "out", plain, outline=OutlineOptions(subpixel=True),
                        **RUN)


def test_split_scene_on_two_workers_gives_the_same_subpixel_polygons(tmp_path, random_model):
    """The Dask split path carries each tile row's soft core rows in its parts: the same GeoPackage bytes."""
    from smallseg.cluster.client import cluster_client
    from smallseg.pipeline.geotiff import GeoTiffOptions, predict_geotiffs

    src = _scene(tmp_path / "scene.tif")
    model_path = save_checkpoint(random_model, tmp_path / "m.safetensors")
    options = GeoTiffOptions(tile_size_px=64, overlap_px=16, batch_size=2, progress=False, device="cpu",
                             formats="gpkg", outline=OutlineOptions(subpixel=True))
    ref = predict_geotiffs([src], tmp_path / "ref", model=str(model_path), options=options)
    with cluster_client("local:2") as client:
        out = predict_geotiffs([src], tmp_path / "split", model=str(model_path), options=options, client=client,
                               split_rows=1)
    assert out.exit_code == 0, out.failures
    assert "wait_for_parts" in out.results[0].run["timings_s"]  # it really was the split path
    assert (tmp_path / "split" / "scene.gpkg").read_bytes() == (tmp_path / "ref" / "scene.gpkg").read_bytes()
    assert ref.results[0].n_objects > 10
