"""Tune the decoding thresholds of a trained model on validation images, and store them in its checkpoint.

A model's heads are calibrated by its training, not by the decoder's defaults: an under-confident distance
head, say, never reaches a peak threshold chosen for exact maps. So after training, the decode settings
(foreground threshold, distance-peak and score thresholds) are chosen on held-out images by a small grid
search that maximises a metric (AP by default), and written into the checkpoint's config
(``training["decode"]``), where every pipeline reads them.

The search has two stages, so that it stays a few hundred decodes: the thresholds first
(:data:`DEFAULT_GRID`), then, with those fixed, how eagerly vote clusters merge into one object
(:data:`MERGE_GRID`): a model whose vectors scatter over large objects splits them into fragments at the
decoder's defaults, and merging them is worth several AP points on such models.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path
from typing import Any

import torch

from smallseg.decode.centroids import DecodeConfig
from smallseg.decode.components import decode_outputs
from smallseg.errors import SmallsegError
from smallseg.models import load_checkpoint, save_checkpoint
from smallseg.pipeline.array import decode_config_for
from smallseg.train.data import LabeledImage, normalized_input
from smallseg.train.scoring import score_predictions

DEFAULT_GRID: dict[str, list[float]] = {
    "fg_threshold": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
    "min_peak_distance": [0.0, 0.1, 0.2, 0.3, 0.4],
    "min_score": [0.05, 0.1, 0.2],
}
# One AP point: differences below it on a validation set of a dozen images are noise (see pick_best).
TIE_TOLERANCE = 0.01
_REPORTED = ("AP", "AP50", "AP_small", "F1", "count_pred", "count_gt")
# Second stage: fragment merging (see smallseg.decode.centroids, step 3) and the radius of a confident vote.
MERGE_GRID: dict[str, list[float]] = {
    "merge_fraction": [1.0, 2.0, 3.0],
    "merge_valley_ratio": [0.5, 0.1],
    "vote_error_fraction": [0.25, 0.5],
}


def tune_decode(
    model: torch.nn.Module,
    images: list[LabeledImage],
    *,
    grid: dict[str, list[float]] | None = None,
    metric: str = "AP",
    score_thresholds: list[float] | None = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
    merge_grid: dict[str, list[float]] | None = MERGE_GRID,
    modality: str | None = None,
    tie_tolerance: float = TIE_TOLERANCE,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Grid-search decode settings on validation images.

    Args:
        model: a SmallObjectNet (its current ``training["decode"]`` is the starting point).
        images: validation images with ground truth (predicted whole, as in training validation).
        grid: ``{DecodeConfig field: candidate values}`` (default :data:`DEFAULT_GRID`); fields the model
            cannot use (e.g. ``min_peak_distance`` without a distance head) are dropped.
        metric: the scorer's metric to maximise (``AP``, ``AP_small``, ``F1``, ...).
        score_thresholds: candidate output score thresholds; after the grid search, ``min_score`` is set
            to the one with the best F1 at IoU 0.5 (None: keep the grid's choice).
        merge_grid: second-stage grid searched with the first stage's best settings fixed (default
            :data:`MERGE_GRID`; None: skip). Only needs the centroid head (all models that use voting).
        modality: start from the model's settings for this modality (``training["decode_by_modality"]``).
        tie_tolerance: settings whose ``metric`` is within this of a stage's best count as tied; of those,
            the one with the best F1 at IoU 0.5 wins (see :func:`pick_best`).

    Returns:
        (best settings as a dict of the tuned fields, one row per combination with its metrics).
    """
    if not images:
        raise SmallsegError("tune-decode: no validation images")
    grid = dict(DEFAULT_GRID if grid is None else grid)
    merge_grid = dict(merge_grid or {})
    unknown = sorted((set(grid) | set(merge_grid)) - set(DecodeConfig.__dataclass_fields__))
    if unknown:
        raise SmallsegError(f"tune-decode: unknown decode setting(s) {unknown}")
    if "distance" not in model.config.heads:
        grid.pop("min_peak_distance", None)
    if "centroid" not in model.config.heads:  # connected components: nothing to merge
        merge_grid = {}
    base = decode_config_for(model, modality=modality)
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    with torch.inference_mode():
        for item in images:
            # the model's own normalisation (declared, else legacy), fitted per image as training did
            x = torch.from_numpy(normalized_input(item, model.config))[None].to(device)
            outputs.append({k: v.cpu() for k, v in model(x).items()})
    rows = []

    def scored(settings: dict[str, Any]) -> dict[str, Any]:
        """Decode every image with ``settings`` on top of the model's own; the settings and their metrics."""
        config = dataclasses.replace(base, **settings)
        # labelled areas and box labels are scored as validation scores them (smallseg.train.scoring)
        metrics = score_predictions(images, [decode_outputs(out, config)[0] for out in outputs])
        if metrics.get(metric) is None:
            raise SmallsegError(f"tune-decode: the scorer has no metric {metric!r} for these images")
        return {**settings, **{k: metrics[k] for k in _REPORTED if k in metrics}}

    def search(stage_grid: dict[str, list[float]], fixed: dict[str, Any]) -> dict[str, Any]:
        keys = list(stage_grid)
        stage_rows = [scored({**fixed, **dict(zip(keys, values))})
                      for values in itertools.product(*(stage_grid[k] for k in keys))]
        rows.extend(stage_rows)
        best_row = pick_best(stage_rows, metric, tie_tolerance)
        return {k: best_row[k] for k in [*fixed, *keys]}

    chosen = search(grid, {})
    if merge_grid:
        chosen = search(merge_grid, chosen)
    # AP does not depend on where low-score detections are cut, but the objects a user gets do: the output
    # score threshold is the operating point with the best F1 at IoU 0.5 (the others as chosen above).
    if score_thresholds:
        operating = [{**scored({**chosen, "min_score": threshold}), "stage": "operating point"}
                     for threshold in score_thresholds]
        rows.extend(operating)
        chosen["min_score"] = max(operating, key=lambda r: (r["F1"] if r["F1"] is not None else -1.0))["min_score"]
    return chosen, rows


def pick_best(rows: list[dict[str, Any]], metric: str, tie_tolerance: float = TIE_TOLERANCE) -> dict[str, Any]:
    """The row with the best ``metric``, where rows within ``tie_tolerance`` of it tie and the best F1 wins.

    AP barely notices extra low-scored detections: on a dozen validation images two settings can differ
    by 0.002 AP while one of them predicts twice as many objects (F1 0.40 vs 0.25), and a 0.008 AP lead on
    validation turned into a 0.013 AP deficit on held-out scenes (benchmarks/RESULTS.md). Differences that
    small are noise in AP, not in what a user gets. Ties that remain go to the higher ``metric``, then to
    the earlier row.
    """
    value = lambda row, key: row.get(key) if row.get(key) is not None else -1.0  # noqa: E731
    best = max(value(row, metric) for row in rows)
    tied = [row for row in rows if value(row, metric) >= best - tie_tolerance]
    if metric == "F1":
        return max(tied, key=lambda row: value(row, metric))
    return max(tied, key=lambda row: (value(row, "F1"), value(row, metric)))


def write_tuned_checkpoint(source: str | os.PathLike, images: list[LabeledImage], out: str | os.PathLike, *,
                           grid: dict[str, list[float]] | None = None, metric: str = "AP",
                           storage_dtype: str = "float32",
                           modality: str | None = None) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    """Load ``source``, tune its decode settings on ``images``, save the model with them to ``out``.

    With ``modality`` (e.g. ``"CT"``) the settings are stored for that modality only, under its upper-case
    name in ``training["decode_by_modality"]`` (used for volumes of that DICOM modality); the model's
    default settings stay as they were.
    """
    model = load_checkpoint(source)
    best, rows = tune_decode(model, images, grid=grid, metric=metric, modality=modality)
    training = dict(model.config.training or {})
    grid_rows = [r for r in rows if "stage" not in r and r[metric] is not None]
    final = [r for r in rows if r.get("stage") and r["min_score"] == best.get("min_score")]
    tuned_on = {"images": len(images), "metric": metric, "value": max(r[metric] for r in grid_rows),
                "F1_at_chosen_min_score": final[0]["F1"] if final else None}
    if modality:
        key = modality.strip().upper()  # DICOM Modality codes are upper case: "ct" and "CT" are one entry
        by_modality = dict(training.get("decode_by_modality") or {})
        by_modality[key] = {**dict(by_modality.get(key) or {}), **best}
        training["decode_by_modality"] = by_modality
        training["decode_tuned_on_by_modality"] = {**dict(training.get("decode_tuned_on_by_modality") or {}),
                                                   key: tuned_on}
    else:
        training["decode"] = {**dict(training.get("decode") or {}), **best}
        training["decode_tuned_on"] = tuned_on
    model.config.training = training
    return save_checkpoint(model, out, storage_dtype=storage_dtype), best, rows
