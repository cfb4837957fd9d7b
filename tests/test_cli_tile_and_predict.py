"""`smallseg tile-and-predict` on real files (rasterio's CC0 test data in tests/data, see its ORIGIN.md)."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

from smallseg.cli import main
from smallseg.models import save_checkpoint

from conftest import RASTERIO_DATA as DATA
ROOT = Path(__file__).resolve().parents[1]
DATA_FILES = ("instances.tif", "classes.tif", "gpkg", "geojson", "objects.csv", "quicklook.png")

def _default_sigint():
    # A shell starts background jobs with SIGINT ignored, and Python then installs no KeyboardInterrupt
    # handler; restore the default so the child reacts to Ctrl-C as it does in a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)



pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model):
    """A small untrained 3-band model whose training statistics are those of 8-bit imagery."""
    model = tiny_model("mobilenetv3", seed=1, semantic_bias=[0.0, 1.0, 0.5], classes=2, max_distance_px=8,
                       tile_size_px=128, input_scale=1 / 255, norm_mean=[0.3, 0.3, 0.3], norm_std=[0.2, 0.2, 0.2],
                       class_names=["car", "building"])
    return save_checkpoint(model, tmp_path_factory.mktemp("model") / "tiny.safetensors")


def _cli(*args):
    return main(["tile-and-predict", *map(str, args), "--quiet"])


def _small_tif(path, seed=0, h=96, w=80):
    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=rasterio.transform.Affine(0.3, 0, 500000, 0, -0.3, 5800000)) as ds:
        ds.write(rng.integers(0, 255, (3, h, w), dtype=np.uint8))
    return path


def _digests(folder, stem):
    return {k: hashlib.sha256((folder / f"{stem}.{k}").read_bytes()).hexdigest() for k in DATA_FILES}


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["tile-and-predict", "--help"])
    text = capsys.readouterr().out
    for option in ("--out", "--model", "--tile", "--overlap", "--batch-size", "--device", "--amp", "--bands",
                   "--nodata", "--min-score", "--min-area", "--formats", "--cog", "--resume", "--overwrite",
                   "--quiet"):
        assert option in text


def test_landsat_scene_end_to_end_keeps_crs_grid_and_nodata(tmp_path, checkpoint, capsys):
    out = tmp_path / "out"
    assert _cli(DATA / "RGB.byte.tif", "--out", out, "--model", checkpoint, "--tile", 256, "--cog",
                "--min-score", 0.2) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(DATA / "RGB.byte.tif")) and "objects" in line and str(out) in line
    with rasterio.open(DATA / "RGB.byte.tif") as src:
        image = src.read()
        crs, transform = src.crs, src.transform
    nodata = (image == 0).all(axis=0)
    with rasterio.open(out / "RGB.byte.instances.tif") as ds:
        assert ds.crs == crs and ds.transform == transform and ds.shape == (718, 791)
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and ds.overviews(1)
        labels = ds.read(1)
    with rasterio.open(out / "RGB.byte.classes.tif") as ds:
        assert ds.crs == crs and ds.transform == transform and ds.nodata == 255
        classes = ds.read(1)
    assert labels.max() > 0 and not labels[nodata].any()
    np.testing.assert_array_equal(classes == 255, nodata)
    info = pyogrio.read_info(out / "RGB.byte.gpkg")
    assert rasterio.crs.CRS.from_user_input(info["crs"]).to_epsg() == 32618
    rows = list(__import__("csv").DictReader(open(out / "RGB.byte.objects.csv")))
    assert len(rows) == info["features"] == json.loads((out / "RGB.byte.run.json").read_text())["counts"]["objects"]
    assert all(float(r["score"]) >= 0.2 for r in rows)
    pixel_m2 = abs(transform.a * transform.e)  # UTM metres
    np.testing.assert_allclose([float(r["area_m2"]) for r in rows], [int(r["area_px"]) * pixel_m2 for r in rows])
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    assert dict(zip(ids.tolist(), counts.tolist())) == {int(r["id"]): int(r["area_px"]) for r in rows}


def test_corrupt_file_one_line_and_nothing_left(tmp_path, checkpoint, capsys):
    out = tmp_path / "out"
    assert _cli(DATA / "corrupt.tif", "--out", out, "--model", checkpoint) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "corrupt.tif" in err and "damaged" in err
    assert not out.exists()  # no output, not even the hidden work folder (nor the folder itself)


def test_all_nodata_gives_empty_outputs_and_a_warning(tmp_path, checkpoint, capsys):
    out = tmp_path / "out"
    assert _cli(DATA / "all-nodata.tif", "--out", out, "--model", checkpoint, "--bands", "1,2,3") == 0
    captured = capsys.readouterr()
    assert "warning" in captured.err and "no valid pixels" in captured.err
    assert "0 objects" in captured.out and "no valid pixels" in captured.out
    run = json.loads((out / "all-nodata.run.json").read_text())
    assert run["counts"]["objects"] == 0 and run["counts"]["valid_px"] == 0
    assert run["tiling"]["tiles_predicted"] == 0  # the model never ran on nodata
    with rasterio.open(out / "all-nodata.instances.tif") as ds:
        assert not ds.read(1).any() and ds.crs.to_epsg() == 32628
    with rasterio.open(out / "all-nodata.classes.tif") as ds:
        assert (ds.read(1) == 255).all()
    assert pyogrio.read_info(out / "all-nodata.gpkg")["features"] == 0
    assert (out / "all-nodata.objects.csv").read_text().count("\n") == 1  # header only
    assert json.loads((out / "all-nodata.geojson").read_text())["features"] == []


def test_rgba_uint16_bands_by_meaning_and_constant_bands_are_unreliable(tmp_path, checkpoint, capsys):
    # The file's bands are blue, green, red, alpha, and every valid pixel is 10000 in every band.
    out = tmp_path / "out"
    assert _cli(DATA / "RGBA.uint16.tif", "--out", out, "--model", checkpoint, "--tile", 256) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "not reliable" in err and "constant" in err
    run = json.loads((out / "RGBA.uint16.run.json").read_text())
    assert run["input"]["bands"] == [3, 2, 1] and run["input"]["dtype"] == "uint16"
    assert run["input"]["band_plan"]["alpha_index"] == 4
    assert run["reliable"] is False and "constant" in run["reliable_reason"]
    # --strict: an error in one line, and nothing that looks like a finished run.
    assert _cli(DATA / "RGBA.uint16.tif", "--out", tmp_path / "strict", "--model", checkpoint, "--strict") != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "constant" in err and "strict" in err
    assert not (tmp_path / "strict" / "RGBA.uint16.run.json").exists()
    # Selecting a band count the model does not take is a one-line error.
    assert _cli(DATA / "RGBA.uint16.tif", "--out", tmp_path / "two", "--model", checkpoint, "--bands", "1,2") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "2 bands selected, but the model expects 3" in err
    assert _cli(DATA / "RGBA.uint16.tif", "--out", tmp_path / "two", "--model", checkpoint, "--bands", "a") == 2
    assert "--bands a" in capsys.readouterr().err


def test_folder_with_a_bad_file_processes_the_rest(tmp_path, checkpoint, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _small_tif(folder / "a_small.tif")
    shutil.copy(DATA / "corrupt.tif", folder / "b_corrupt.tif")
    shutil.copy(DATA / "rgb1_fake_nir_epsg3857.tif", folder / "c_single_band.tif")  # 1 band to an RGB model
    (folder / "notes.txt").write_text("not a raster")
    out = tmp_path / "out"
    assert _cli(folder, "--out", out, "--model", checkpoint, "--tile", 256) == 1  # some inputs failed
    captured = capsys.readouterr()
    assert captured.out.count("objects (") == 2 and "a_small.tif" in captured.out
    assert "b_corrupt.tif" in captured.err
    # The single band is replicated to red, green, blue, said in one note.
    assert "note: c_single_band.tif: bands: 1-band image: band 1 replicated to red, green, blue" in captured.err
    assert "2 of 3 inputs done, 1 failed" in captured.out
    assert (out / "a_small.run.json").exists()
    assert not any(p.name.startswith("b_corrupt") or p.name.startswith(".b_corrupt") for p in out.iterdir())
    # The same as reading the single band three times.
    assert _cli(folder / "c_single_band.tif", "--out", tmp_path / "111", "--model", checkpoint, "--tile", 256,
                "--bands", "1,1,1") == 0
    with rasterio.open(out / "c_single_band.instances.tif") as a, \
            rasterio.open(tmp_path / "111" / "c_single_band.instances.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))


def test_finished_output_folder_is_refused_unless_overwrite_or_resume(tmp_path, checkpoint, capsys):
    src = _small_tif(tmp_path / "shade.tif", seed=1)
    out = tmp_path / "out"
    args = (src, "--out", out, "--model", checkpoint, "--formats", "tif,csv")
    assert _cli(*args) == 0
    before = (out / "shade.run.json").read_text()
    capsys.readouterr()
    assert _cli(*args) == 2
    assert "already" in capsys.readouterr().err and (out / "shade.run.json").read_text() == before
    assert _cli(*args, "--resume") == 0
    assert "already finished" in capsys.readouterr().out and (out / "shade.run.json").read_text() == before
    assert _cli(*args, "--overwrite") == 0
    assert (out / "shade.run.json").read_text() != before


def test_ctrl_c_mid_run_then_resume_gives_the_same_bytes(tmp_path, checkpoint, capsys):
    src = tmp_path / "scene.tif"
    rng = np.random.default_rng(2)
    with rasterio.open(src, "w", driver="GTiff", width=120, height=600, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=rasterio.transform.Affine(0.3, 0, 500000, 0, -0.3, 5800000)) as ds:
        ds.write(rng.integers(0, 255, (3, 600, 120), dtype=np.uint8))
    out = tmp_path / "out"
    # The command line, run as `smallseg` runs it, pausing once two tile rows are checkpointed (more to go).
    script = (
        "import sys, time\n"
        "from smallseg.cli import main\n"
        "def pause(path, n):\n"
        "    if n == 2:\n"
        "        print('paused', flush=True)\n"
        "        time.sleep(60)\n"
        f"sys.exit(main(['tile-and-predict', {str(src)!r}, '--out', {str(out)!r}, '--model', {str(checkpoint)!r}, "
        "'--quiet'], on_row_done=pause))\n"
    )
    cmd = [sys.executable, "-c", script]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    try:
        assert proc.stdout.readline().strip() == "paused"  # two tile rows are checkpointed, more to go
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [".scene.lock", ".scene.resume"]
    assert _cli(src, "--out", out, "--model", checkpoint, "--resume") == 0
    assert _cli(src, "--out", tmp_path / "ref", "--model", checkpoint) == 0
    assert _digests(out, "scene") == _digests(tmp_path / "ref", "scene")
    run = json.loads((out / "scene.run.json").read_text())
    assert run["session"]["resumed_from_tile_row"] == 2 and run["tiling"]["tile_rows"] > 4
