"""`smallseg demo`: scene -> tile-and-predict -> evaluate, with a real (tiny) model."""

import json

import numpy as np
import rasterio

from smallseg.cli import main
from smallseg.models import save_checkpoint


def test_demo_writes_scene_prediction_and_scores(tmp_path, capsys, tiny_model):
    model = tiny_model("resnet18", classes=2, class_names=["car", "building"], max_distance_px=8, tile_size_px=64,
                       input_scale=1 / 255)
    ckpt = save_checkpoint(model, tmp_path / "tiny.safetensors")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "160", "--model", str(ckpt), "--device", "cpu", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "AP_small" in printed and "evaluation.json" in printed
    report = json.loads((out / "evaluation.json").read_text())
    with rasterio.open(out / "scene_instances.tif") as src:
        gt = src.read(1)
        crs = src.crs
    # The scorer saw every ground-truth object of the generated scene, and every predicted one.
    assert report["count_gt"] == len(np.unique(gt[gt > 0]))
    with rasterio.open(out / "prediction" / "scene_image.instances.tif") as src:
        pred = src.read(1)
        assert src.crs == crs
    assert report["count_pred"] == len(np.unique(pred[pred > 0]))
    assert (out / "prediction" / "scene_image.run.json").exists()
    # A second run refuses to overwrite the finished demo.
    assert main(["demo", "--out", str(out), "--size", "160", "--model", str(ckpt), "--quiet"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
