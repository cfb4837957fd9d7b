"""--cluster / client=: a real dask.distributed LocalCluster on loopback (two one-thread worker processes) gives the
bytes of one process, for a folder of scenes, for one scene split into bands across the workers and for
dicom-batch; a failing scene is one line and the rest finish; a worker killed mid-task loses only that task."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from smallseg.models import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TRANSFORM = Affine(0.5, 0, 389_000, 0, -0.5, 5_819_000)
DATA_FILES = ("instances.tif", "classes.tif", "gpkg", "geojson", "objects.csv", "quicklook.png")
LIGHT = dict(classes=2, max_distance_px=6, tile_size_px=64, input_scale=1 / 255, class_names=["car", "building"])

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_tif(path, image):
    c, h, w = image.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype=image.dtype, crs="EPSG:32633",
                       transform=TRANSFORM, tiled=True, blockxsize=64, blockysize=64) as ds:
        ds.write(image)
    return path


def _digests(folder: Path, stem: str) -> dict[str, str]:
    return {k: hashlib.sha256((folder / f"{stem}.{k}").read_bytes()).hexdigest() for k in DATA_FILES}


def _run_json_core(path: Path) -> dict:
    run = json.loads(path.read_text())
    return {k: v for k, v in run.items() if k not in ("timings_s", "session", "started", "finished")}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, tiny_model):
    model = tiny_model("mobilenetv3", semantic_bias=[-0.5, 1.0, 0.5], **LIGHT, norm_mean=[0.45, 0.45, 0.45],
                       norm_std=[0.25, 0.25, 0.25])
    return save_checkpoint(model, tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def client():
    from smallseg.cluster.client import cluster_client

    with cluster_client("local:2") as c:
        yield c


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(11)
    for i, (h, w) in enumerate([(150, 170), (100, 90), (130, 64)]):
        _write_tif(folder / f"s{i}.tif", rng.integers(0, 255, (3, h, w), dtype=np.uint8))
    return folder


def test_cluster_spec_parsing_and_one_line_errors(tmp_path):
    from smallseg.cluster.client import parse_cluster
    from smallseg.errors import SmallsegError

    assert parse_cluster("local:3").workers == 3
    assert parse_cluster("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    f = tmp_path / "scheduler.json"
    f.write_text("{}")
    assert parse_cluster(str(f)).kind == "scheduler_file"
    for bad, needle in [("local:0", "1 <= N"), ("tcp://host", "PROTOCOL://HOST:PORT"),
                        (str(tmp_path / "none.json"), "no such scheduler file"), ("yarn", "use local:N")]:
        with pytest.raises(SmallsegError, match=needle):
            parse_cluster(bad)


def test_without_cluster_dask_is_never_imported(tmp_path, scenes, model_file):
    script = (f"import sys; import smallseg.cli as c; "
              f"rc = c.main(['tile-and-predict', {str(scenes / 's1.tif')!r}, '--out', {str(tmp_path / 'o')!r}, "
              f"'--model', {str(model_file)!r}, '--tile', '64', '--quiet', '--device', 'cpu']); "
              f"assert rc == 0, rc; bad = [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]; "
              f"assert not bad, bad; print('clean')")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=1200,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr[-2000:]


def test_a_folder_of_scenes_on_two_workers_gives_the_same_bytes(tmp_path, client, scenes, model_file):
    from smallseg.pipeline.geotiff import GeoTiffOptions, predict_geotiffs

    options = GeoTiffOptions(tile_size_px=64, batch_size=2, progress=False, device="cpu")
    ref = predict_geotiffs([scenes], tmp_path / "ref", model=str(model_file), options=options)
    out = predict_geotiffs([scenes], tmp_path / "dask", model=str(model_file), options=options, client=client,
                           split_rows=0)
    assert ref.exit_code == 0 and out.exit_code == 0, out.failures
    assert [r.input_path for r in out.results] == [r.input_path for r in ref.results]
    assert sum(r.n_objects for r in ref.results) > 30
    for r in ref.results:
        stem = r.input_path.stem
        assert _digests(tmp_path / "dask", stem) == _digests(tmp_path / "ref", stem), stem
        assert (_run_json_core(tmp_path / "dask" / f"{stem}.run.json")
                == _run_json_core(tmp_path / "ref" / f"{stem}.run.json"))
    # Both workers ran scenes, and each loaded the model once.
    from smallseg.cluster.worker import load_seconds

    loads = client.run(load_seconds)
    assert all(len(v) <= 1 for v in loads.values()) and sum(len(v) for v in loads.values()) >= 1


def test_one_scene_split_into_bands_across_two_workers_gives_the_same_bytes(tmp_path, client, model_file):
    from smallseg.pipeline.geotiff import GeoTiffOptions, predict_geotiffs

    rng = np.random.default_rng(12)
    src = _write_tif(tmp_path / "tall.tif", rng.integers(0, 255, (3, 430, 150), dtype=np.uint8))
    options = GeoTiffOptions(tile_size_px=64, overlap_px=16, batch_size=2, progress=False, device="cpu")
    ref = predict_geotiffs([src], tmp_path / "ref", model=str(model_file), options=options)
    n_rows = ref.results[0].run["tiling"]["tile_rows"]
    assert n_rows >= 8
    for band_rows in (2, 3):
        out_dir = tmp_path / f"split{band_rows}"
        out = predict_geotiffs([src], out_dir, model=str(model_file), options=options, client=client,
                               split_rows=band_rows)
        assert out.exit_code == 0, out.failures
        assert _digests(out_dir, "tall") == _digests(tmp_path / "ref", "tall")
        assert out.results[0].n_objects == ref.results[0].n_objects > 20
        assert "wait_for_parts" in out.results[0].run["timings_s"]  # it really was the split path
        assert sorted(p.name for p in out_dir.iterdir()) == sorted(
            [".tall.lock"] + [f"tall.{k}" for k in DATA_FILES + ("run.json",)])


def test_split_scene_resumed_after_the_client_dies_mid_merge(tmp_path, client, model_file):
    """The client (the merge) stops after 3 tile rows; --resume (with or without Dask) finishes the bytes."""
    from smallseg.pipeline.geotiff import GeoTiffOptions, predict_geotiffs
    from smallseg.pipeline.geotiff.run import _predict_scene, _load_model
    from smallseg.cluster.worker import model_ref
    from smallseg.pipeline.geotiff.split import split_factory

    rng = np.random.default_rng(13)
    src = _write_tif(tmp_path / "tall.tif", rng.integers(0, 255, (3, 400, 100), dtype=np.uint8))
    options = GeoTiffOptions(tile_size_px=64, overlap_px=16, batch_size=2, progress=False, device="cpu")
    predict_geotiffs([src], tmp_path / "ref", model=str(model_file), options=options)

    class Died(Exception):
        pass

    def die_at(n):
        if n == 3:
            raise Died()

    loaded = _load_model(str(model_file), "cpu")
    ref, scattered = model_ref(client, str(model_file), loaded.module, loaded.info, loaded.sha256, "cpu")
    sources = []
    with pytest.raises(Died):
        _predict_scene(src, tmp_path / "out", loaded, options, die_at,
                       row_source_factory=split_factory(client, ref, scattered, 2, None, sources))
    for s in sources:
        s.cancel()
    work = tmp_path / "out" / ".tall.resume"
    assert json.loads((work / "progress.json").read_text())["next_tile_row"] == 3
    assert not (tmp_path / "out" / "tall.run.json").exists()  # nothing looks finished
    out = predict_geotiffs([src], tmp_path / "out", model=str(model_file), options=options.replace(resume=True),
                           client=client, split_rows=2)
    assert out.exit_code == 0 and out.results[0].run["session"]["resumed_from_tile_row"] == 3
    assert _digests(tmp_path / "out", "tall") == _digests(tmp_path / "ref", "tall")


def test_a_failing_scene_is_one_line_and_the_others_finish(tmp_path, client, scenes, model_file):
    from smallseg.pipeline.geotiff import GeoTiffOptions, predict_geotiffs

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("s0.tif", "s1.tif"):
        (folder / name).write_bytes((scenes / name).read_bytes())
    (folder / "broken.tif").write_bytes((scenes / "s2.tif").read_bytes()[:900])  # header, then cut off
    options = GeoTiffOptions(tile_size_px=64, batch_size=2, progress=False, device="cpu")
    lines = []
    out = predict_geotiffs([folder], tmp_path / "out", model=str(model_file), options=options, client=client,
                           split_rows=0, on_done=lambda p, o: lines.append((p.name, o)))
    assert out.exit_code == 1
    assert [f.path.name for f in out.failures] == ["broken.tif"]
    message = out.failures[0].message
    assert "\n" not in message and message.startswith(str(folder / "broken.tif"))
    assert sorted(r.input_path.name for r in out.results) == ["s0.tif", "s1.tif"]
    assert sorted(n for n, _ in lines) == ["broken.tif", "s0.tif", "s1.tif"]
    for stem in ("s0", "s1"):
        assert (tmp_path / "out" / f"{stem}.run.json").exists()
    assert not (tmp_path / "out" / "broken.run.json").exists()


def test_a_worker_killed_mid_scene_loses_only_that_task(tmp_path, client, model_file):
    """Kill (os._exit) the worker process running a scene once it has checkpointed a tile row: Dask reruns the
    task on a live worker, which continues from the checkpoint; the bytes are those of one process."""
    from smallseg.pipeline.geotiff import GeoTiffOptions, predict_geotiffs
    from smallseg.cluster.scenes import scene_task, _task_options
    from smallseg.cluster.worker import model_ref
    from smallseg.pipeline.geotiff.run import _load_model
    from smallseg.pipeline.geotiff.workdir import WorkDir

    rng = np.random.default_rng(14)
    src = _write_tif(tmp_path / "long.tif", rng.integers(0, 255, (3, 900, 120), dtype=np.uint8))
    options = GeoTiffOptions(tile_size_px=64, overlap_px=16, batch_size=2, progress=False, device="cpu")
    predict_geotiffs([src], tmp_path / "ref", model=str(model_file), options=options)

    out = tmp_path / "out"
    loaded = _load_model(str(model_file), "cpu")
    ref, scattered = model_ref(client, str(model_file), loaded.module, loaded.info, loaded.sha256, "cpu")
    future = client.submit(scene_task, str(src), str(out), ref, scattered,
                           _task_options(options, WorkDir("long", out)), pure=False, key="kill-test-long")
    progress = out / ".long.resume" / "progress.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if json.loads(progress.read_text())["next_tile_row"] >= 2:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    else:
        pytest.fail("the scene never checkpointed a tile row")
    processing = {w: keys for w, keys in client.processing().items() if "kill-test-long" in keys}
    assert len(processing) == 1
    victim = next(iter(processing))
    pid = client.run(os.getpid, workers=[victim])[victim]
    client.run(os._exit, 1, workers=[victim], on_error="ignore")
    result = future.result(timeout=300)
    assert type(result).__name__ == "PredictionResult", result
    assert result.run["session"]["resumed_from_tile_row"] >= 2  # continued, not redone
    assert _digests(out, "long") == _digests(tmp_path / "ref", "long")
    client.wait_for_workers(2, timeout=120)  # the nanny restarted the killed one
    assert pid not in client.run(os.getpid).values()


def test_dicom_batch_on_two_workers_gives_the_same_labels_and_csvs(tmp_path, client, tiny_model):
    import csv
    import shutil

    from conftest import PYDICOM_DATA
    from medical_helpers import random_hu, save_tiny_ct_model, write_series
    from smallseg.pipeline.dicom_batch import run_dicom_batch

    root = tmp_path / "in"
    (root / "ct").mkdir(parents=True)
    shutil.copy(PYDICOM_DATA / "CT_small.dcm", root / "ct" / "CT_small.dcm")
    (root / "mr").mkdir()
    shutil.copy(PYDICOM_DATA / "MR_truncated.dcm", root / "mr" / "MR_truncated.dcm")  # a failed row
    (root / "notes.txt").write_text("not an image\n")  # a skipped row
    for k in range(3):
        write_series(root / f"s{k}", random_hu((3, 24, 28), k), f"1.2.826.0.1.3680043.9.7.2{k}", prefix=f"p{k}")
    ckpt = save_tiny_ct_model(tiny_model, tmp_path / "model")
    ref = run_dicom_batch(root, tmp_path / "ref", ckpt, progress=False)
    rows = []
    out = run_dicom_batch(root, tmp_path / "dask", ckpt, progress=False, client=client, on_result=rows.append)
    assert out.exit_code == ref.exit_code == 1 and ref.count("ok") >= 4 and ref.failed == 1
    assert len(rows) == len(ref.results)

    def summary(folder):
        with (folder / "summary.csv").open(newline="") as fh:
            return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]

    assert summary(tmp_path / "dask") == summary(tmp_path / "ref")  # same rows, same order
    folders = sorted(p.name for p in (tmp_path / "ref").iterdir() if p.is_dir())
    assert folders == sorted(p.name for p in (tmp_path / "dask").iterdir() if p.is_dir()) and len(folders) >= 4
    for name in folders:
        for f in ("labels.nii.gz", "objects.csv"):
            assert (tmp_path / "dask" / name / f).read_bytes() == (tmp_path / "ref" / name / f).read_bytes(), (name, f)
        done = [json.loads((tmp_path / d / name / "done.json").read_text()) for d in ("ref", "dask")]
        for d in done:
            d.pop("seconds")
            d["options"].pop("out_dir")
        assert done[0] == done[1]
    assert sum(int(r["objects"]) for r in summary(tmp_path / "ref")) > 0


def test_cli_cluster_flag_gives_the_same_bytes_and_bad_specs_are_one_line(tmp_path, scenes, model_file, capsys):
    from smallseg.cli import main

    common = [str(scenes), "--model", str(model_file), "--tile", "64", "--device", "cpu", "--quiet"]
    assert main(["tile-and-predict", *common, "--out", str(tmp_path / "ref")]) == 0
    assert main(["tile-and-predict", *common, "--out", str(tmp_path / "dask"), "--cluster", "local:2",
                 "--split-scene", "2"]) == 0
    for stem in ("s0", "s1", "s2"):
        assert _digests(tmp_path / "dask", stem) == _digests(tmp_path / "ref", stem), stem
    capsys.readouterr()
    assert main(["tile-and-predict", *common, "--out", str(tmp_path / "x"), "--cluster", "local:two"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--cluster local:two: use local:N" in err
    assert main(["tile-and-predict", *common, "--out", str(tmp_path / "x"), "--cluster", "local:1",
                 "--split-scene", "many"]) == 2
    assert "--split-scene many" in capsys.readouterr().err


def test_a_device_the_workers_lack_is_one_line_before_any_output(tmp_path, client, scenes, model_file, tiny_model):
    """The client only plans and stitches (on a CPU copy), so the device is the workers' affair: asked of every
    worker before any task, a device they cannot use is one line saying so, and nothing is written."""
    import torch

    from medical_helpers import random_hu, save_tiny_ct_model, write_series
    from smallseg.cluster.worker import workers_device_type
    from smallseg.errors import SmallsegError
    from smallseg.pipeline.dicom_batch import run_dicom_batch
    from smallseg.pipeline.geotiff import GeoTiffOptions, predict_geotiffs

    if torch.cuda.is_available():
        pytest.skip("needs workers without CUDA")
    assert workers_device_type(client, "auto") == "cpu" and workers_device_type(client, None) == "cpu"
    options = GeoTiffOptions(tile_size_px=64, progress=False, device="cuda")
    with pytest.raises(SmallsegError, match=r"^on the cluster's workers: device 'cuda': CUDA is not available"):
        predict_geotiffs([scenes], tmp_path / "o", model=str(model_file), options=options, client=client)
    assert not (tmp_path / "o").exists()
    ckpt = save_tiny_ct_model(tiny_model, tmp_path / "model")
    write_series(tmp_path / "in" / "s0", random_hu((3, 24, 28), 0), "1.2.826.0.1.3680043.9.7.30", prefix="p0")
    with pytest.raises(SmallsegError, match=r"^on the cluster's workers: device 'cuda'"):
        run_dicom_batch(tmp_path / "in", tmp_path / "d", ckpt, progress=False, client=client, device="cuda")
    assert not (tmp_path / "d" / "summary.csv").exists()


def test_on_row_done_is_called_for_a_split_scene_stitched_by_the_client(tmp_path, client, model_file):
    from smallseg.pipeline.geotiff import GeoTiffOptions, predict_geotiffs

    rng = np.random.default_rng(13)
    src = _write_tif(tmp_path / "tall.tif", rng.integers(0, 255, (3, 300, 100), dtype=np.uint8))
    options = GeoTiffOptions(tile_size_px=64, overlap_px=16, batch_size=2, progress=False, device="cpu")
    seen: list[tuple[str, int]] = []
    out = predict_geotiffs([src], tmp_path / "o", model=str(model_file), options=options, client=client,
                           split_rows=2, on_row_done=lambda p, n: seen.append((Path(p).name, n)))
    assert out.exit_code == 0, out.failures
    n_rows = out.results[0].run["tiling"]["tile_rows"]
    assert seen and all(name == "tall.tif" for name, _ in seen)
    counts = [n for _, n in seen]
    assert counts == sorted(counts) and counts[-1] == n_rows
