"""A tile-and-predict work folder is data (#11): a damaged or tampered checkpoint of an interrupted run
(progress.json, params.json, a stitch state, a band with a pickled array) is refused in one line naming the fix,
never unpickled and never a traceback; resume + overwrite starts over instead."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from smallseg.cli import main
from smallseg.errors import SmallsegError
from smallseg.models import save_checkpoint
from smallseg.pipeline.geotiff import predict_geotiff

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, tiny_model):
    """(scene, checkpoint, out) where a run stopped after 3 checkpointed tile rows of 5."""
    folder = tmp_path_factory.mktemp("workdir")
    model = tiny_model("mobilenetv3", semantic_bias=[-0.5, 1.0], classes=1, max_distance_px=6, tile_size_px=64,
                       input_scale=1 / 255, norm_mean=[0.45] * 3, norm_std=[0.25] * 3)
    ckpt = save_checkpoint(model, folder / "model.safetensors")
    scene = folder / "scene.tif"
    image = np.random.default_rng(0).integers(0, 255, (3, 280, 64), dtype=np.uint8)
    with rasterio.open(scene, "w", driver="GTiff", width=64, height=280, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(0.5, 0, 389_000, 0, -0.5, 5_819_000)) as ds:
        ds.write(image)

    def stop(n):
        if n == 3:
            raise _Stop

    out = folder / "out"
    with pytest.raises(_Stop):
        predict_geotiff(scene, out, ckpt, tile_size_px=64, progress=False, on_row_done=stop)
    return scene, ckpt, out


def _copy(out: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(out, dest)
    return dest


@pytest.mark.parametrize("tamper", ["progress", "params", "stitch", "band_pickle", "band_name"])
def test_a_damaged_checkpoint_is_refused_with_the_fix(tmp_path, interrupted, tamper, capsys):
    scene, ckpt, out0 = interrupted
    out = _copy(out0, tmp_path / "out")
    work = out / ".scene.resume"
    marker = tmp_path / "PWNED"
    if tamper == "progress":
        (work / "progress.json").write_text('{"next_tile_row": "three"')
    elif tamper == "params":
        (work / "params.json").write_text("[1, 2]")
    elif tamper == "stitch":
        sorted(work.glob("stitch.*.npz"))[-1].write_bytes(b"PK\x03\x04 not a zip")
    elif tamper == "band_pickle":
        np.savez(sorted(work.glob("band.*.npz"))[-1], outline_x=np.array([_Payload(marker)], dtype=object))
    else:
        (work / "band.x.npz").write_bytes(b"")
    with pytest.raises(SmallsegError) as info:
        predict_geotiff(scene, out, ckpt, tile_size_px=64, progress=False, resume=True)
    message = str(info.value)
    assert "damaged or not smallseg's" in message and "overwrite=True" in message and "\n" not in message
    assert not marker.exists()
    assert not (out / "scene.run.json").exists()
    # the command line: one line, the flag named, no --resume hint that cannot help
    code = main(["tile-and-predict", str(scene), "--out", str(out), "--model", str(ckpt), "--tile", "64",
                 "--resume", "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--overwrite" in err and "continued with --resume" not in err
    # resume + overwrite: continue where possible, else start over -- here, over
    result = predict_geotiff(scene, out, ckpt, tile_size_px=64, progress=False, resume=True, overwrite=True)
    assert (out / "scene.run.json").exists() and result.n_objects >= 0
    assert not marker.exists()
