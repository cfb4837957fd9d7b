"""A training config small enough to train in about a second, shared by the train tests and the reliability
probe (benchmarks/probe_reliability.py)."""

from __future__ import annotations

from pathlib import Path

import yaml


def tiny_train_config(folder: Path, **sections) -> Path:
    """Write ``folder/tiny.yaml``: 1 epoch of 1 step on one 48 px synthetic nuclei image with a small resnet18
    model; ``sections`` replace whole top-level sections (``optim={...}``). Returns the path."""
    config = {
        "name": "tiny",
        "model": {"encoder_name": "resnet18", "encoder_depth": 3, "encoder_output_stride": 8, "classes": 1,
                  "class_names": ["nucleus"], "decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32,
                  "refine_channels": [8, 8], "max_distance_px": 8},
        "data": {"train": [{"synthetic": "nuclei", "count": 1, "size": 48, "seed": 1}]},
        "augment": {"crop_size": 32, "mosaic_p": 0.0},
        "optim": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2, "warmup_steps": 1},
        "device": "cpu",
        "tune_decode": False,
    }
    config.update(sections)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path
