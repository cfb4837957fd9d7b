"""One writer per scene (a second process is refused while the first runs, and the first run's outputs stay
valid), and resume of a finished run checks input, model and settings instead of returning stale results."""

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.transform import Affine

from smallseg.errors import SmallsegError
from smallseg.models import save_checkpoint
from smallseg.outline import OutlineOptions
from smallseg.pipeline.geotiff import predict_geotiff

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
TRANSFORM = Affine(0.5, 0, 389_000, 0, -0.5, 5_819_000)


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model("mobilenetv3", semantic_bias=[-0.5, 1.0, 0.5], classes=2, max_distance_px=6, tile_size_px=64,
                      input_scale=1 / 255, class_names=["car", "building"], norm_mean=[0.45] * 3,
                      norm_std=[0.25] * 3)


def _write_tif(path, seed, h=300, w=90):
    image = np.random.default_rng(seed).integers(0, 255, (3, h, w), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=TRANSFORM) as ds:
        ds.write(image)
    return path


def _assert_consistent(out: Path, stem: str) -> None:
    """The outputs of one finished run agree: the GeoJSON parses, CSV rows == GeoJSON == GeoPackage features."""
    run = json.loads((out / f"{stem}.run.json").read_text())
    doc = json.loads((out / f"{stem}.geojson").read_text())
    with open(out / f"{stem}.objects.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    ids = sorted(f["id"] for f in doc["features"])
    assert ids == sorted(int(r["id"]) for r in rows) and len(ids) == run["counts"]["objects"] > 0
    assert pyogrio.read_info(out / f"{stem}.gpkg")["features"] == len(ids)
    with rasterio.open(out / f"{stem}.instances.tif") as ds:
        labels = ds.read(1)
    assert sorted(np.unique(labels[labels > 0]).tolist()) == ids


def test_a_second_process_on_a_scene_in_use_is_refused_and_the_first_run_stays_whole(tmp_path, model):
    src = _write_tif(tmp_path / "scene.tif", seed=1)
    other = _write_tif(tmp_path / "other.tif", seed=2, h=100)
    ckpt = save_checkpoint(model, tmp_path / "model.safetensors")
    out = tmp_path / "out"
    go = tmp_path / "go"
    # First run: pauses once 2 tile rows are checkpointed, until the test creates `go`.
    first_script = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from smallseg.pipeline.geotiff import predict_geotiff
        def hold(n):
            if n == 2:
                print("paused", os.getpid(), flush=True)
                deadline = time.monotonic() + 120
                while not Path({str(go)!r}).exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
        r = predict_geotiff({str(src)!r}, {str(out)!r}, {str(ckpt)!r}, tile_size_px=64, progress=False,
                            on_row_done=hold)
        print("done", r.n_objects, flush=True)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen([sys.executable, "-c", first_script], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        word, pid = first.stdout.readline().split()
        assert word == "paused" and int(pid) == first.pid
        # A second process, as a user would start it, with the option that would overwrite the first's outputs.
        second = subprocess.run(
            [sys.executable, "-m", "smallseg", "tile-and-predict", str(src), "--out", str(out), "--model",
             str(ckpt), "--tile", "64", "--quiet", "--overwrite"], env=env, cwd=ROOT, capture_output=True, text=True,
            timeout=300)
        err = second.stderr.strip()
        assert second.returncode == 2, err  # nothing processed
        assert len(err.splitlines()) == 1 and f"is in use by process {first.pid}" in err, err
        assert "Traceback" not in err and second.stdout == ""
        # In this process too (resume, as the refusal of an interrupted run suggests); another scene of the
        # same folder is not locked (one lock per scene).
        with pytest.raises(SmallsegError, match=f"in use by process {first.pid}"):
            predict_geotiff(src, out, ckpt, tile_size_px=64, resume=True, progress=False)
        assert predict_geotiff(other, out, ckpt, tile_size_px=64, progress=False).n_objects > 0
        go.touch()
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    assert stdout.split()[0] == "done"
    _assert_consistent(out, "scene")
    _assert_consistent(out, "other")
    assert not (out / ".scene.resume").exists()
    # Once the first run is over the scene is free again.
    assert predict_geotiff(src, out, ckpt, tile_size_px=64, resume=True, progress=False).skipped


def test_resume_of_a_finished_run_checks_input_model_and_settings(tmp_path, model, tiny_model):
    src = _write_tif(tmp_path / "a.tif", seed=3, h=100)
    out = tmp_path / "out"
    first = predict_geotiff(src, out, model, formats="tif,csv", progress=False)
    assert first.run["resume_key"]["input"]["size_bytes"] == src.stat().st_size
    same = predict_geotiff(src, out, model, formats="tif,csv", resume=True, progress=False)
    assert same.skipped and same.n_objects == first.n_objects

    # Other settings (here decoding), another model, a changed input: refused, nothing changed.
    before = (out / "a.run.json").read_bytes()
    with pytest.raises(SmallsegError, match=r"other input, model or settings \(decode differ\).*overwrite=True"):
        predict_geotiff(src, out, model, min_score=0.9, resume=True, progress=False)
    with pytest.raises(SmallsegError, match=r"\(outline differ\)"):  # other polygons (issue #17)
        predict_geotiff(src, out, model, outline=OutlineOptions(simplify_px=1.0), resume=True, progress=False)
    other_model = tiny_model("mobilenetv3", seed=5, classes=2, max_distance_px=6, tile_size_px=64,
                             input_scale=1 / 255, class_names=["car", "building"])
    with pytest.raises(SmallsegError, match=r"\(model_sha256(, normalization)? differ\)"):
        predict_geotiff(src, out, other_model, resume=True, progress=False)
    stat = src.stat()
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # the input was replaced
    with pytest.raises(SmallsegError, match=r"\(input differ\)") as err:
        predict_geotiff(src, out, model, resume=True, progress=False)
    assert "\n" not in str(err.value) and (out / "a.run.json").read_bytes() == before

    # resume + overwrite redoes it; the new run.json holds the new input's key.
    redone = predict_geotiff(src, out, model, formats="tif,csv", resume=True, overwrite=True, progress=False)
    assert not redone.skipped
    assert redone.run["resume_key"]["input"]["mtime_ns"] == src.stat().st_mtime_ns
    assert predict_geotiff(src, out, model, formats="tif,csv", resume=True, progress=False).skipped

    # A finished run of an older version (no resume key) cannot be checked: refused, not trusted.
    run = json.loads((out / "a.run.json").read_text())
    del run["resume_key"]
    (out / "a.run.json").write_text(json.dumps(run))
    with pytest.raises(SmallsegError, match="older smallseg version"):
        predict_geotiff(src, out, model, formats="tif,csv", resume=True, progress=False)


def test_resume_cleans_leftover_temporary_files_of_the_one_naming_scheme(tmp_path, model):
    from smallseg.io.atomic import partial_path

    src = _write_tif(tmp_path / "b.tif", seed=4, h=200)
    ckpt = save_checkpoint(model, tmp_path / "model.safetensors")
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal
        from smallseg.pipeline.geotiff import predict_geotiff
        def kill_at(n):
            if n == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        predict_geotiff({str(src)!r}, {str(out)!r}, {str(ckpt)!r}, tile_size_px=64, progress=False, on_row_done=kill_at)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=ROOT,
                          timeout=300)
    assert proc.returncode == -9
    work = out / ".b.resume"
    # What a kill in the middle of a write leaves: a temporary name of smallseg.io.atomic.
    leftover = partial_path(work / "band.000002.npz")
    leftover.write_bytes(b"half a checkpoint")
    t = time.perf_counter()
    resumed = predict_geotiff(src, out, ckpt, tile_size_px=64, resume=True, progress=False)
    assert resumed.run["session"]["resumed_from_tile_row"] == 2 and time.perf_counter() - t < 120
    fresh = predict_geotiff(src, tmp_path / "fresh", ckpt, tile_size_px=64, progress=False)
    for kind in ("instances", "classes", "gpkg", "geojson", "csv", "quicklook"):
        assert resumed.paths[kind].read_bytes() == fresh.paths[kind].read_bytes(), kind
    assert not work.exists()
