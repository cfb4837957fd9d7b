"""The training loop trains (loss falls), checkpoints load back, and --resume equals an unbroken run."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from rasterio.transform import from_origin

from smallseg.cli import main
from smallseg.models import load_checkpoint
from smallseg.train.loop import load_train_config, train


def _write_scene(folder: Path, seed: int, size: int = 96) -> dict:
    """A small georeferenced scene: bright squares (class 1) and dark bars (class 2) on textured ground."""
    rng = np.random.default_rng(seed)
    image = (rng.normal(100, 8, (3, size, size))).clip(0, 255)
    instances = np.zeros((size, size), np.uint32)
    classes = np.zeros((size, size), np.uint8)
    k = 0
    for y in range(4, size - 10, 14):
        for x in range(4, size - 10, 14):
            k += 1
            h, w = (5, 5) if k % 2 else (3, 8)
            instances[y:y + h, x:x + w] = k
            classes[y:y + h, x:x + w] = 1 if k % 2 else 2
            image[:, y:y + h, x:x + w] = 220 if k % 2 else 30
    profile = dict(driver="GTiff", width=size, height=size, crs="EPSG:32633",
                   transform=from_origin(500000, 4000000, 0.5, 0.5))
    paths = {}
    for name, data, dtype in (("image", image, "uint8"), ("instances", instances[None], "uint32"),
                              ("classes", classes[None], "uint8")):
        paths[name] = f"scene{seed}.{name}.tif"
        with rasterio.open(folder / paths[name], "w", count=data.shape[0], dtype=dtype, **profile) as dst:
            dst.write(data.astype(dtype))
    return paths


def _config(folder: Path, epochs: int, val: bool = False) -> Path:
    config = {
        "name": "tiny",
        "model": {"encoder_name": "resnet18", "encoder_depth": 3, "encoder_output_stride": 8, "classes": 2,
                  "class_names": ["square", "bar"], "decoder_pyramid_channels": 32,
                  "decoder_segmentation_channels": 32, "refine_channels": [8, 8], "max_distance_px": 8},
        "data": {"train": [{"geotiff": _write_scene(folder, 1)}, {"geotiff": _write_scene(folder, 2)}],
                 "val": [{"geotiff": _write_scene(folder, 3, size=64)}, {"geotiff": _write_scene(folder, 4, size=80)}]
                 if val else []},
        "augment": {"crop_size": 48, "scale_range": [0.9, 1.1], "mosaic_p": 0.5},
        "optim": {"epochs": epochs, "steps_per_epoch": 6, "batch_size": 4, "lr": 0.003, "warmup_steps": 2},
        "seed": 7,
        "device": "cpu",
        "tune_decode": False,  # covered by tests/test_train_tune.py
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_loss_decreases_and_checkpoint_round_trips(tmp_path):
    config = load_train_config(_config(tmp_path, epochs=4, val=True))
    result = train(config, tmp_path / "run", progress=False)
    losses = [h["loss_total"] for h in result.history]
    assert len(losses) == 4
    assert losses[-1] < 0.7 * losses[0], losses
    model = load_checkpoint(result.last_checkpoint)
    assert model.config.class_names == ["square", "bar"]
    # Input statistics were measured on the training data and stored with the model.
    assert model.config.input_scale == pytest.approx(1 / 255)
    assert 0.3 < model.config.norm_mean[0] < 0.5
    assert model.config.training["train_images"] == 2
    # The ground sampling distance it learned at: 0.5 m pixels rescaled by 0.9-1.1 (for the inference warning).
    assert model.config.training["train_pixel_size_m"] == pytest.approx([0.5 / 1.1, 0.5 / 0.9], abs=1e-6)
    assert (tmp_path / "run" / "history.jsonl").read_text().count("\n") == 4
    # Validation scored both held-out scenes together: every ground-truth object was counted.
    n_val_objects = 0
    for seed, size in ((3, 64), (4, 80)):
        with rasterio.open(tmp_path / f"scene{seed}.instances.tif") as src:
            n_val_objects += len(np.unique(src.read(1))) - 1
    last = result.history[-1]
    assert last["val_count_gt"] == n_val_objects
    assert 0.0 <= last["val_AP"] <= 1.0 and 0.0 <= last["val_F1"] <= 1.0


def test_resume_gives_the_same_weights_as_an_unbroken_run(tmp_path):
    path = _config(tmp_path, epochs=2)
    unbroken = train(load_train_config(path), tmp_path / "a", progress=False)
    # Stop after the first epoch (as a killed job would have), then resume.
    train(load_train_config(path), tmp_path / "b", progress=False, stop_after_epochs=1)
    resumed = train(load_train_config(path), tmp_path / "b", resume=True, progress=False)
    a = load_checkpoint(unbroken.last_checkpoint).state_dict()
    b = load_checkpoint(resumed.last_checkpoint).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {}\ndata: {}\nschedule: {}\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown section" in err and "schedule" in err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read training config" in capsys.readouterr().err


def test_synthetic_medical_sources_use_the_inference_presets():
    from smallseg.io.medical import IntensityPreset
    from smallseg.train.data import MEDICAL_PRESETS, synthetic_images

    nuclei = synthetic_images("nuclei", count=2, size=96, seed=5, class_id=1)
    assert len(nuclei) == 2 and nuclei[0].image.shape == (96, 96, 1) and nuclei[0].image.dtype == np.float32
    assert nuclei[0].image.min() == 0.0 and nuclei[0].image.max() == 1.0  # percentile stretch clips both ends
    assert np.all((nuclei[0].instances > 0) == (nuclei[0].classes == 1))
    ct = synthetic_images("ct", count=1, size=96, seed=5, slices=16, class_id=2)
    with_nodules = [im for im in ct if im.instances.max() > 0]
    assert with_nodules and len(ct) <= 2 * len(with_nodules)
    # Lung window: -1350 HU -> 0, 150 HU -> 1, applied the same way inference applies the preset.
    lung = IntensityPreset.from_dict(MEDICAL_PRESETS["CT"])
    np.testing.assert_allclose(lung.apply(np.array([-1350.0, -600.0, 150.0])), [0.0, 0.5, 1.0])
    assert set(np.unique(with_nodules[0].classes)) == {0, 2}


def test_warm_start_loads_the_init_weights_and_class_weights_are_checked(tmp_path):
    path = _config(tmp_path, epochs=1)
    first = train(load_train_config(path), tmp_path / "first", progress=False)
    raw = yaml.safe_load(path.read_text())
    raw["init"] = str(first.last_checkpoint)
    raw["optim"].update(lr=0.0, warmup_steps=1)  # no step moves a weight: the result is the init
    raw["loss"] = {"class_weights": [1.0, 3.0, 1.0]}
    raw["augment"]["scale_range"] = [0.95, 1.05]  # this stage alone sees 0.5 m as 0.476-0.526 m
    warm = tmp_path / "warm.yaml"
    warm.write_text(yaml.safe_dump(raw))
    second = train(load_train_config(warm), tmp_path / "second", progress=False)
    a, b = load_checkpoint(first.last_checkpoint), load_checkpoint(second.last_checkpoint)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
    # The warm-started model also learned at the first stage's pixel sizes (0.5 m x 1/1.1 .. 1/0.9).
    assert b.config.training["train_pixel_size_m"] == pytest.approx([0.5 / 1.1, 0.5 / 0.9], abs=1e-6)
    raw["loss"] = {"class_weights": [1.0, 3.0]}
    warm.write_text(yaml.safe_dump(raw))
    with pytest.raises(Exception, match="class_weights: 2 values, need 1 \\+ classes = 3"):
        train(load_train_config(warm), tmp_path / "third", progress=False)


def test_early_stopping_waits_for_the_second_half_of_the_schedule(tmp_path):
    # lr 1e-12: the weights do not move, so validation never improves after the first epoch. Patience 2 alone
    # would stop after epoch 3; counted from the schedule's second half (epoch 4 of 8) it stops after epoch 6.
    path = _config(tmp_path, epochs=8, val=True)
    config = load_train_config(path)
    config.optim.lr, config.optim.steps_per_epoch = 1e-12, 1
    result = train(config, tmp_path / "run", progress=False, patience=2)
    assert result.stopped == "early stopping"
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5, 6]
    assert len({h["val_F1"] for h in result.history}) == 1  # nothing improved: the stop is patience's
