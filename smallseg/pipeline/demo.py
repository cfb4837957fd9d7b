"""``smallseg demo``: the whole job on a scene with known answers, in one command.

1. Generate a synthetic aerial GeoTIFF scene with exact ground truth (:mod:`smallseg.data.remote_sensing`).
2. Find its cars and buildings with ``tile-and-predict`` (:func:`smallseg.pipeline.geotiff.predict_geotiff`).
3. Score the prediction against the ground truth (:func:`smallseg.metrics.evaluate`).

Everything lands in one folder: ``scene_image.tif`` (+ ``scene_instances.tif``, ``scene_classes.tif``,
``scene_objects.csv`` ground truth), ``prediction/`` (the tile-and-predict outputs: rasters, GeoPackage,
GeoJSON, object table, quick-look PNG, run report) and ``evaluation.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from smallseg.data.remote_sensing import write_remote_sensing_scene
from smallseg.errors import SmallsegError
from smallseg.metrics import evaluate
from smallseg.pipeline.geotiff import GeoTiffOptions, predict_geotiff


@dataclass
class DemoResult:
    """Paths written by :func:`run_demo` and the scores."""

    out_dir: Path
    scene_image: Path
    prediction_dir: Path
    evaluation_json: Path
    table: str
    metrics: dict


def run_demo(
    out_dir: str | os.PathLike,
    *,
    size_px: int = 1024,
    seed: int = 7,
    pixel_size_m: float = 0.4,
    model: str | os.PathLike = "remote-sensing",
    options: GeoTiffOptions | None = None,
    overwrite: bool = False,
) -> DemoResult:
    """Generate a scene, predict it with ``model`` and score the result.

    Args:
        out_dir: output folder (created).
        size_px: scene side in pixels.
        seed: scene seed (same seed, same scene).
        pixel_size_m: ground sampling distance of the scene, metres.
        model: built-in model name or checkpoint path.
        options: tile-and-predict's settings (device, batch size, progress bars...; default: its defaults);
            the prediction folder inside ``out_dir`` is always replaced.
        overwrite: replace the outputs of an earlier demo in ``out_dir``.

    Returns:
        DemoResult with the paths, the printed table and the metrics dict.
    """
    # The options were checked when built: nothing is generated for a bad one.
    options = (options or GeoTiffOptions()).replace(overwrite=True)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SmallsegError(f"{out}: folder is not empty; pass overwrite=True or choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    scene = write_remote_sensing_scene(out / "scene", size_px, size_px, seed=seed, pixel_size_m=pixel_size_m)
    prediction = predict_geotiff(scene.image, out / "prediction", model=model, options=options)
    # The prediction's classes and scores come from its object table (STEM.objects.csv).
    report = evaluate(scene.instances, prediction.paths["instances"], gt_classes=scene.classes,
                      pred_objects=prediction.paths["csv"])
    evaluation_json = report.write_json(out / "evaluation.json")
    return DemoResult(out_dir=out, scene_image=scene.image, prediction_dir=out / "prediction",
                      evaluation_json=evaluation_json, table=report.format_table(), metrics=report.metrics)
