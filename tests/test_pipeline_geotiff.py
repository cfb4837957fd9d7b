"""predict_geotiff: streamed tile rows of a real GeoTIFF -> real model -> stitched, georeferenced outputs."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
import rasterio.transform
import rasterio.warp
import shapely
import torch
from rasterio.transform import Affine

from smallseg.errors import SmallsegError
from smallseg.models import save_checkpoint
from smallseg.pipeline.array import predict_array
from smallseg.pipeline.geotiff import find_inputs, predict_geotiff, read_objects_csv
from smallseg.tiling.grid import tile_windows

ROOT = Path(__file__).resolve().parents[1]
TRANSFORM = Affine(0.5, 0, 389_000, 0, -0.5, 5_819_000)  # 0.5 m pixels, UTM 33N
DATA_FILES = ("instances.tif", "classes.tif", "gpkg", "geojson", "objects.csv", "quicklook.png")


# Tiny convolutions on a CPU shared with other jobs: one thread avoids OpenMP oversubscription, which slows these
# tests down by 10x or more.
pytestmark = pytest.mark.usefixtures("one_torch_thread")
# mobilenetv3-small, no dilation (conftest's tiny "mobilenetv3"): a real SmallObjectNet, fast on a shared CPU.
LIGHT = dict(classes=2, max_distance_px=6, tile_size_px=64, input_scale=1 / 255, class_names=["car", "building"])


@pytest.fixture(scope="module")
def random_model(tiny_model):
    """Untrained centroid model, semantic head biased so that it finds (many) objects to stitch."""
    return tiny_model("mobilenetv3", semantic_bias=[-0.5, 1.0, 0.5], **LIGHT, norm_mean=[0.45, 0.45, 0.45],
                      norm_std=[0.25, 0.25, 0.25])


@pytest.fixture(scope="module")
def local_model(tiny_model):
    """A model whose output at a pixel depends only on that pixel: the decoder's contribution to the last
    full-resolution layer is zeroed and the semantic head reads one feature = sum of the bands. With
    connected-component decoding (no centroid head) it finds bright squares exactly, whatever the tiling,
    so whole-image and tiled predictions must agree object for object."""
    m = tiny_model("mobilenetv3", seed=None, **{**LIGHT, "classes": 1, "class_names": ["square"]},
                   heads=("semantic",), lfe=None)
    with torch.no_grad():
        fuse = m.refiner.to_full.fuse[0]
        fuse.weight.zero_()
        fuse.weight[0, -3:, 1, 1] = 1.0  # the raw bands are the last input channels of this conv
        head = m.heads["semantic"]
        head.weight.zero_()
        head.weight[1, 0, 1, 1] = 10.0
        head.bias[:] = torch.tensor([0.0, -15.0])  # bright (3.0 after scaling) -> +15, dark -> -15
    return m.eval()


def _write_tif(path, image, nodata=None, crs="EPSG:32633", transform=TRANSFORM):
    c, h, w = image.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype=image.dtype, crs=crs,
                       transform=transform, nodata=nodata, tiled=True, blockxsize=64, blockysize=64) as ds:
        ds.write(image)
    return path


def _read(path, band=1):
    with rasterio.open(path) as ds:
        return ds.read(band), ds.profile


def _same_partition(a, b):
    """Two label rasters describe the same objects (ids may differ): a bijection between their ids."""
    fg = (a > 0) | (b > 0)
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[fg], b[fg]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def _seam_squares(h, w, grid, seed):
    """Bright squares (3..9 px) centred on every inner core boundary and crossing of ``grid``, plus a few
    elsewhere, never touching each other. Returns (image (3, h, w) uint8, gt labels)."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((h, w), np.int32)
    centres = []
    for rb in grid.row_bounds[1:-1]:
        centres += [(rb, c) for c in rng.integers(5, w - 5, 6)] + [(rb, cb) for cb in grid.col_bounds[1:-1]]
    for cb in grid.col_bounds[1:-1]:
        centres += [(r, cb) for r in rng.integers(5, h - 5, 6)]
    centres += [tuple(v) for v in rng.integers(5, [h - 5, w - 5], (10, 2))]
    k = 0
    for cy, cx in centres:
        s = int(rng.integers(3, 10))
        r0, c0 = int(cy) - s // 2 - int(rng.integers(0, 2)), int(cx) - s // 2 - int(rng.integers(0, 2))
        r0, c0 = min(max(r0, 0), h - s), min(max(c0, 0), w - s)
        if gt[max(r0 - 1, 0):r0 + s + 1, max(c0 - 1, 0):c0 + s + 1].any():
            continue
        k += 1
        gt[r0:r0 + s, c0:c0 + s] = k
    image = np.where(gt > 0, 255, 0).astype(np.uint8)[None].repeat(3, axis=0)
    return image, gt


# ------------------------------------------------------------------------------------------- exactness


def test_objects_on_every_seam_match_the_whole_image_prediction(tmp_path, local_model):
    h, w, tile = 200, 230, 64
    overlap = 12  # the default: 2 x max_distance_px
    grid = tile_windows(h, w, tile, overlap)
    image, gt = _seam_squares(h, w, grid, seed=1)
    src = _write_tif(tmp_path / "seams.tif", image)
    result = predict_geotiff(src, tmp_path / "out", local_model, progress=False)
    assert result.run["parameters"]["overlap_px"] == overlap and result.run["tiling"]["tiles"] == len(grid) > 12
    labels, _ = _read(result.paths["instances"])
    whole = predict_array(image, local_model, tile_size_px=256)  # one tile holds the whole image
    assert len(whole) == gt.max() == result.n_objects
    assert _same_partition(whole.labels, gt)
    assert _same_partition(labels, whole.labels)
    # The test is only meaningful if many objects really straddle core boundaries (i.e. are cut by tiles).
    crossing = 0
    for i in range(1, gt.max() + 1):
        rr, cc = np.nonzero(gt == i)
        crossing += any(rr.min() < b <= rr.max() for b in grid.row_bounds[1:-1]) or \
            any(cc.min() < b <= cc.max() for b in grid.col_bounds[1:-1])
    assert crossing > 30


def test_geotiff_stream_equals_predict_array_and_every_output_agrees(tmp_path, random_model):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (3, 150, 170), dtype=np.uint8)
    src = _write_tif(tmp_path / "scene.tif", image)
    result = predict_geotiff(src, tmp_path / "out", random_model, tile_size_px=64, batch_size=3, progress=False)
    scene = predict_array(image, random_model, tile_size_px=64, batch_size=3)
    table = scene.objects
    assert len(table) > 20
    # Default overlap: 2 x (max_distance_px 6 + centroid vote error 2 px), for both pipelines.
    assert result.run["parameters"]["overlap_px"] == 16 and "vote error" in result.run["parameters"]["overlap_reason"]
    labels, profile = _read(result.paths["instances"])
    np.testing.assert_array_equal(labels, scene.labels)
    ours = result.objects
    for name in ("ids", "class_ids", "scores", "centroids_yx", "area_px", "bbox", "tile_rc", "touches_tile_edge"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(table, name), err_msg=name)

    # Rasters keep the input's grid.
    assert profile["crs"].to_epsg() == 32633 and profile["transform"] == TRANSFORM
    assert (profile["width"], profile["height"], profile["dtype"]) == (170, 150, "uint32")
    classes, cprofile = _read(result.paths["classes"])
    assert cprofile["dtype"] == "uint8" and cprofile["nodata"] == 255 and cprofile["transform"] == TRANSFORM
    lookup = np.zeros(labels.max() + 1, np.uint8)
    lookup[ours.ids] = ours.class_ids
    np.testing.assert_array_equal(classes, lookup[labels])

    # CSV: areas from the raster itself, map coordinates from rasterio's own pixel-centre transform.
    csv_table = read_objects_csv(result.paths["csv"])
    np.testing.assert_array_equal(csv_table.ids, ours.ids)
    np.testing.assert_array_equal(csv_table.scores, ours.scores)
    np.testing.assert_array_equal(csv_table.area_px, np.bincount(labels.ravel())[ours.ids])
    rows = list(__import__("csv").DictReader(open(result.paths["csv"])))
    assert {"id", "score", "class_id", "class", "area_m2", "centroid_x", "centroid_y"} <= set(rows[0])
    xs, ys = rasterio.transform.xy(TRANSFORM, ours.centroids_yx[:, 0], ours.centroids_yx[:, 1], offset="center")
    np.testing.assert_allclose([float(r["centroid_x"]) for r in rows], xs, atol=1e-6)
    np.testing.assert_allclose([float(r["centroid_y"]) for r in rows], ys, atol=1e-6)
    np.testing.assert_allclose([float(r["area_m2"]) for r in rows], ours.area_px * 0.25)
    assert {r["class"] for r in rows} <= {"car", "building"}

    # GeoPackage: polygons in the raster's CRS that rasterise back to exactly the label raster.
    info = pyogrio.read_info(result.paths["gpkg"])
    assert rasterio.crs.CRS.from_user_input(info["crs"]).to_epsg() == 32633 and info["features"] == len(ours)
    _, _, wkb, fields = pyogrio.raw.read(result.paths["gpkg"], columns=["id"])
    geoms = shapely.from_wkb(wkb)
    back = rasterio.features.rasterize(zip(geoms, fields[0].tolist()), out_shape=labels.shape, transform=TRANSFORM,
                                       dtype="uint32")
    np.testing.assert_array_equal(back, labels)

    # GeoJSON: RFC 7946 (WGS 84, counter-clockwise exteriors), same objects where the GeoPackage has them.
    doc = json.loads(result.paths["geojson"].read_text())
    assert "crs" not in doc and len(doc["features"]) == len(ours)
    by_id = {f["id"]: shapely.geometry.shape(f["geometry"]) for f in doc["features"]}
    assert sorted(by_id) == sorted(ours.ids.tolist())
    cx, cy = rasterio.warp.transform("EPSG:32633", "EPSG:4326", [g.centroid.x for g in geoms],
                                     [g.centroid.y for g in geoms])
    got = np.array([[by_id[i].centroid.x, by_id[i].centroid.y] for i in fields[0].tolist()])
    np.testing.assert_allclose(got, np.c_[cx, cy], atol=2e-7)
    assert all(p.exterior.is_ccw for g in by_id.values() for p in g.geoms)

    # Quick-look and report.
    from PIL import Image

    assert Image.open(result.paths["quicklook"]).size == (170, 150)
    run = json.loads(result.paths["run"].read_text())
    assert run["counts"]["objects"] == len(ours) and run["input"]["crs"] == "EPSG:32633"
    assert run["model"]["sha256"] and run["parameters"]["tile_size_px"] == 64
    assert run["outputs"]["instances"] == "scene.instances.tif"
    assert not (tmp_path / "out" / ".scene.resume").exists()  # the work folder is cleaned up


def test_several_decode_threads_write_the_same_files(tmp_path, random_model):
    rng = np.random.default_rng(4)
    src = _write_tif(tmp_path / "scene.tif", rng.integers(0, 255, (3, 150, 170), dtype=np.uint8))
    one = predict_geotiff(src, tmp_path / "one", random_model, tile_size_px=64, batch_size=2, progress=False)
    three = predict_geotiff(src, tmp_path / "three", random_model, tile_size_px=64, batch_size=2, decode_workers=3,
                            progress=False)
    assert len(one.objects) > 20
    for name in ("instances", "classes", "csv", "gpkg"):
        assert one.paths[name].read_bytes() == three.paths[name].read_bytes(), name


def test_object_table_streamed_to_csv_equals_the_table_kept_in_memory(tmp_path, random_model):
    # A tall scene: many tile rows, objects finishing out of id order across bands. With the CSV format the
    # table is written band by band (held back until no smaller id is unfinished), without it it is kept.
    rng = np.random.default_rng(5)
    image = rng.integers(0, 255, (3, 420, 130), dtype=np.uint8)
    src = _write_tif(tmp_path / "tall.tif", image)
    streamed = predict_geotiff(src, tmp_path / "a", random_model, tile_size_px=64, formats="tif,csv", progress=False)
    kept = predict_geotiff(src, tmp_path / "b", random_model, tile_size_px=64, formats="tif", progress=False)
    assert streamed.table is None and kept.table is not None  # nothing held until asked for
    assert streamed.run["tiling"]["tile_rows"] >= 8 and len(kept.objects) > 50
    ours = streamed.objects
    assert np.all(np.diff(ours.ids) > 0)
    for name in ("ids", "class_ids", "scores", "centroids_yx", "area_px", "bbox", "tile_rc", "touches_tile_edge"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(kept.objects, name), err_msg=name)
    assert streamed.n_objects == len(kept.objects) == streamed.run["counts"]["objects"]
    per_class = np.bincount(kept.objects.class_ids, minlength=3)[1:]
    assert list(streamed.run["counts"]["objects_per_class"].values()) == per_class.tolist()
    assert f"{per_class[0]} car" in streamed.summary()


def test_a_pixel_size_far_from_the_training_one_is_warned_about(tmp_path, random_model):
    import copy

    model = copy.deepcopy(random_model)
    model.config.training = {**(model.config.training or {}), "train_pixel_size_m": [0.2, 0.9]}
    image = np.random.default_rng(1).integers(0, 255, (3, 40, 50), dtype=np.uint8)
    fine = predict_geotiff(_write_tif(tmp_path / "fine.tif", image), tmp_path / "a", model, formats="json",
                           progress=False)
    assert fine.run["input"]["pixel_size_m"] == pytest.approx(0.5)
    assert not any("pixel size" in w for w in fine.run["warnings"])
    landsat = Affine(30.0, 0, 389_000, 0, -30.0, 5_819_000)
    coarse = predict_geotiff(_write_tif(tmp_path / "coarse.tif", image, transform=landsat), tmp_path / "b", model,
                             formats="json", progress=False)
    warned = [w for w in coarse.run["warnings"] if "pixel size" in w]
    assert len(warned) == 1 and "30 m" in warned[0] and "0.2-0.9 m" in warned[0] and "smaller" in warned[0]
    # 30 m against the middle of 0.2-0.9 m (0.42 m): objects look ~71x smaller
    assert "~71x" in warned[0]


def test_a_run_interrupted_under_another_checkpoint_format_is_refused_in_one_line(tmp_path, random_model):
    image = np.random.default_rng(2).integers(0, 255, (3, 40, 50), dtype=np.uint8)
    src = _write_tif(tmp_path / "old.tif", image)
    work = tmp_path / "out" / ".old.resume"  # what an older version left behind after a kill
    work.mkdir(parents=True)
    (work / "params.json").write_text(json.dumps({"format": 1}))
    (work / "progress.json").write_text(json.dumps({"next_tile_row": 1, "started": "2026-01-01T00:00:00Z"}))
    with pytest.raises(SmallsegError, match=r"another smallseg version \(checkpoint format 1.*overwrite=True"):
        predict_geotiff(src, tmp_path / "out", random_model, resume=True, progress=False)
    done = predict_geotiff(src, tmp_path / "out", random_model, resume=True, overwrite=True, formats="json",
                           progress=False)
    assert done.run["counts"]["scene_px"] == 40 * 50 and not work.exists()


def test_nodata_never_produces_objects_and_empty_tiles_are_skipped(tmp_path, random_model):
    rng = np.random.default_rng(4)
    image = rng.integers(1, 255, (3, 140, 200), dtype=np.uint8)
    image[:, :, :70] = 0  # a collar wider than a tile: the first tile column holds no valid pixel
    image[:, 100:, 150:] = 0
    src = _write_tif(tmp_path / "collar.tif", image, nodata=0)
    result = predict_geotiff(src, tmp_path / "out", random_model, tile_size_px=64, progress=False)
    labels, _ = _read(result.paths["instances"])
    classes, _ = _read(result.paths["classes"])
    invalid = (image == 0).all(axis=0)
    assert result.n_objects > 0
    assert not labels[invalid].any() and (classes[invalid] == 255).all() and (classes[~invalid] != 255).all()
    assert result.run["tiling"]["tiles_skipped_nodata"] >= 3
    assert result.run["counts"]["valid_px"] == int((~invalid).sum())


# ------------------------------------------------------------------------------------------- resume


def _digests(folder, stem):
    import hashlib

    return {k: hashlib.sha256((folder / f"{stem}.{k}").read_bytes()).hexdigest() for k in DATA_FILES}


def test_resume_after_a_real_sigkill_gives_the_same_bytes(tmp_path, random_model):
    rng = np.random.default_rng(5)
    src = _write_tif(tmp_path / "tall.tif", rng.integers(0, 255, (3, 400, 90), dtype=np.uint8))
    ckpt = save_checkpoint(random_model, tmp_path / "model.safetensors")
    kwargs = dict(tile_size_px=64, overlap_px=16, progress=False)
    reference = predict_geotiff(src, tmp_path / "ref", ckpt, **kwargs)
    n_rows = reference.run["tiling"]["tile_rows"]
    assert n_rows >= 6

    out = tmp_path / "out"
    # The run kills itself (SIGKILL: no clean-up of any kind) as soon as 3 tile rows are checkpointed.
    script = textwrap.dedent(f"""
        import os, signal
        from smallseg.pipeline.geotiff import predict_geotiff
        def kill_at(n):
            if n == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        predict_geotiff({str(src)!r}, {str(out)!r}, {str(ckpt)!r}, tile_size_px=64, overlap_px=16, progress=False,
                        on_row_done=kill_at)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [".tall.lock", ".tall.resume"]  # nothing that looks finished
    assert json.loads((out / ".tall.resume" / "progress.json").read_text())["next_tile_row"] == 3

    with pytest.raises(SmallsegError, match="interrupted run"):
        predict_geotiff(src, out, ckpt, **kwargs)  # neither --resume nor --overwrite
    with pytest.raises(SmallsegError, match="other settings"):
        predict_geotiff(src, out, ckpt, resume=True, tile_size_px=64, overlap_px=20, progress=False)
    resumed = predict_geotiff(src, out, ckpt, resume=True, **kwargs)
    assert resumed.run["session"]["resumed_from_tile_row"] == 3
    assert _digests(out, "tall") == _digests(tmp_path / "ref", "tall")
    np.testing.assert_array_equal(resumed.objects.ids, reference.objects.ids)
    assert sorted(p.name for p in out.iterdir()) == sorted([".tall.lock"] + [f"tall.{k}" for k in DATA_FILES + ("run.json",)])


def test_killed_before_the_outputs_then_resumed(tmp_path, random_model):
    # Killed after the last checkpoint, while nothing is written yet: no output, resume only assembles.
    rng = np.random.default_rng(6)
    src = _write_tif(tmp_path / "small.tif", rng.integers(0, 255, (3, 100, 80), dtype=np.uint8))
    ckpt = save_checkpoint(random_model, tmp_path / "model.safetensors")
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal
        from smallseg.pipeline.geotiff import predict_geotiff
        def kill_at(n):
            if n == 2:  # 100 rows, tile 64: 2 tile rows, so all of them
                os.kill(os.getpid(), signal.SIGKILL)
        predict_geotiff({str(src)!r}, {str(out)!r}, {str(ckpt)!r}, tile_size_px=64, progress=False, on_row_done=kill_at)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    assert subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, timeout=300).returncode == -9
    assert sorted(p.name for p in out.iterdir()) == [".small.lock", ".small.resume"]
    resumed = predict_geotiff(src, out, ckpt, tile_size_px=64, resume=True, progress=False)
    assert resumed.run["session"]["resumed_from_tile_row"] == 2
    fresh = predict_geotiff(src, tmp_path / "fresh", ckpt, tile_size_px=64, progress=False)
    assert _digests(out, "small") == _digests(tmp_path / "fresh", "small")
    # run.json is the last file written.
    run_time = resumed.paths["run"].stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= run_time for p in resumed.paths.values())
    assert fresh.run["session"]["resumed_from_tile_row"] is None


# ---------------------------------------------------------------------------------- runs and folders


def test_a_finished_run_is_refused_skipped_or_redone(tmp_path, random_model):
    rng = np.random.default_rng(7)
    src = _write_tif(tmp_path / "a.tif", rng.integers(0, 255, (3, 64, 64), dtype=np.uint8))
    first = predict_geotiff(src, tmp_path / "out", random_model, formats="tif,csv", progress=False)
    assert set(first.paths) == {"instances", "classes", "csv", "run"}
    with pytest.raises(SmallsegError, match="finished run .* overwrite=True"):
        predict_geotiff(src, tmp_path / "out", random_model, progress=False)
    skipped = predict_geotiff(src, tmp_path / "out", random_model, resume=True, progress=False)
    assert skipped.skipped and skipped.n_objects == first.n_objects
    np.testing.assert_array_equal(skipped.objects.scores, first.objects.scores)
    redone = predict_geotiff(src, tmp_path / "out", random_model, overwrite=True, formats="tif", progress=False)
    assert not redone.skipped
    # The CSV of the first run must not pass for the second run's.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".a.lock", "a.classes.tif", "a.instances.tif",
                                                                    "a.run.json"]


def test_plain_png_without_georeferencing_runs_in_pixel_units(tmp_path, random_model):
    from PIL import Image

    rng = np.random.default_rng(8)
    Image.fromarray(rng.integers(0, 255, (90, 100, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    # A plain image (microscopy, a photo) is normal input: pixel units are said in a note, not a warning.
    result = predict_geotiff(tmp_path / "photo.png", tmp_path / "out", random_model, tile_size_px=64,
                             formats="tif,csv,gpkg,geojson", progress=False)
    rows = list(__import__("csv").DictReader(open(result.paths["csv"])))
    assert rows and all(r["area_m2"] == "" for r in rows)
    assert float(rows[0]["centroid_x"]) == pytest.approx(float(rows[0]["centroid_col"]) + 0.5)
    assert pyogrio.read_info(result.paths["gpkg"])["crs"] is None
    doc = json.loads(result.paths["geojson"].read_text())
    assert "pixel" in doc["smallseg_coordinates"] and doc["features"][0]["properties"]["area_m2"] is None
    assert result.run["input"]["crs"] is None and any("no georeferencing" in n for n in result.run["notes"])


def test_bad_settings_fail_with_one_line_and_leave_nothing(tmp_path, random_model):
    rng = np.random.default_rng(9)
    src = _write_tif(tmp_path / "b.tif", rng.integers(0, 255, (3, 64, 64), dtype=np.uint8))
    for kwargs, needle in (({"formats": "tif,shp"}, "^formats tif,shp"), ({"bands": [1, 2]}, "model expects 3"),
                           ({"bands": [1, 2, 5]}, "band 5 does not exist"), ({"nodata": -1}, "^nodata -1"),
                           ({"tile_size_px": 64, "overlap_px": 64}, "^overlap_px 64"),
                           ({"min_score": 2}, "^min_score 2"), ({"decode_workers": 0}, "^decode_workers 0")):
        with pytest.raises(SmallsegError, match=needle) as err:
            predict_geotiff(src, tmp_path / "out", random_model, progress=False, **kwargs)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()  # refused before anything was written, the folder included
    with pytest.raises(SmallsegError, match="no such file"):
        predict_geotiff(tmp_path / "missing.tif", tmp_path / "out", random_model)


def test_find_inputs_expands_folders_and_rejects_clashing_stems(tmp_path):
    for name in ("b.tif", "a.TIFF", "c.png", "notes.txt", ".hidden.tif", "a.instances.tif"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in find_inputs([tmp_path])] == ["a.TIFF", "b.tif", "c.png"]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.png").write_bytes(b"")
    with pytest.raises(SmallsegError, match="both would write b"):
        find_inputs([tmp_path, tmp_path / "sub"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SmallsegError, match="no \\*.tif"):
        find_inputs([tmp_path / "empty"])


@pytest.mark.parametrize("factor, cuts", [(1, [0, 53]), (3, [0, 1, 2, 3, 20, 21, 53]), (4, [0, 5, 10, 52, 53])])
def test_quicklook_built_band_by_band_equals_pooling_the_whole_scene(factor, cuts):
    from smallseg.io.quicklook import OutlineTracer, QuicklookGrid, image_part

    rng = np.random.default_rng(factor)
    h, w = 53, 41
    labels = np.zeros((h, w), np.uint32)
    for i in range(1, 30):
        r, c = rng.integers(0, h - 3), rng.integers(0, w - 3)
        labels[r:r + rng.integers(1, 5), c:c + rng.integers(1, 5)] = i
    classes = np.where(labels > 0, labels % 3 + 1, 0).astype(np.uint8)
    image = rng.integers(0, 4000, (3, h, w)).astype(np.uint16)
    valid = rng.random((h, w)) > 0.2
    grid = QuicklookGrid(h, w, factor)
    tracer = OutlineTracer(grid)
    outline = np.zeros((grid.out_height, grid.out_width), np.uint8)
    total = np.zeros((3, grid.out_height, grid.out_width))
    count = np.zeros((grid.out_height, grid.out_width))
    for a, b in zip(cuts[:-1], cuts[1:]):
        part = image_part(grid, a, image[:, a:b], valid[a:b])
        n = part.valid_count.shape[0]
        total[:, part.row0:part.row0 + n] += part.image_sum
        count[part.row0:part.row0 + n] += part.valid_count
        part = tracer.add(a, labels[a:b], classes[a:b])
        if part is not None:
            n = part.outline.shape[0]
            outline[part.row0:part.row0 + n] = np.maximum(outline[part.row0:part.row0 + n], part.outline)
    # Reference on the whole scene: outline = object pixel with a 4-neighbour of another label (or outside).
    pad = np.pad(labels, 1)
    mid = pad[1:-1, 1:-1]
    edge = (mid != 0) & ((mid != pad[:-2, 1:-1]) | (mid != pad[2:, 1:-1]) | (mid != pad[1:-1, :-2]) |
                         (mid != pad[1:-1, 2:]))
    ref_outline = np.zeros_like(outline)
    rr, cc = np.nonzero(edge)
    np.maximum.at(ref_outline, (rr // factor, cc // factor), classes[rr, cc])
    np.testing.assert_array_equal(outline, ref_outline)
    rr, cc = np.nonzero(valid)
    ref_count = np.zeros_like(count)
    np.add.at(ref_count, (rr // factor, cc // factor), 1)
    np.testing.assert_array_equal(count, ref_count)
    for b in range(3):
        ref = np.zeros_like(count)
        np.add.at(ref, (rr // factor, cc // factor), image[b][rr, cc])
        np.testing.assert_allclose(total[b], ref)
