"""The training loop behind ``smallseg train CONFIG.yaml``.

One YAML file says everything (see ``configs/``)::

    name: remote-sensing
    model:    {encoder_name: ..., classes: 2, class_names: [car, building], max_distance_px: 24, ...}
    data:     {train: [<source>, ...], val: [<source>, ...]}
    augment:  {crop_size: 256, scale_range: [0.75, 1.5], mosaic_p: 0.5, ...}
    loss:     {semantic_weight: 1.0, centroid_weight: 1.0, distance_weight: 1.0, class_weights: [1, 3, 1]}
    decode:   {fg_threshold: 0.5, ...}            # used for validation and stored with the model
    normalize: {kind: percentile, lo: 1, hi: 99.8} # optional: how raw pixels become model input (below)
    normalize_by_modality: {CT: {kind: window, windows: [[-600, 1500]]}}   # optional, per DICOM modality
    init:     runs/earlier/last.safetensors      # optional warm start (same architecture)
    tune_decode: true                            # after training, tune decode thresholds on data.val
    optim:    {epochs: 10, steps_per_epoch: 100, batch_size: 8, lr: 0.001, weight_decay: 0.0001}
    seed: 0
    base:     other.yaml                         # optional: start from that file, then apply this one's keys

``base:`` (see :mod:`smallseg.train.config_file`) deep-merges mappings and replaces lists, so a training stage
states only what differs from the one before it (``configs/medical-stage3.yaml``).

A ``<source>`` is one of::

    {synthetic: remote-sensing | nuclei | ct, count: N, size: S, seed: K, options: {...}}
    {geotiff: {image: a.tif, instances: a.instances.tif, classes: a.classes.tif}}
    {coco: {annotations: train.json, images: images/}}
    {vector: {image: a.tif, labels: a.gpkg, class_field: cls, class_map: {bldg: building}, layer: L, area: area.gpkg}}
    {label_image: {image: cells.png, labels: cells_masks.png, classes: cells_classes.png, class_name: nucleus}}
    {boxes: {labels: crowns.csv | train.json | voc/, images: images/, class_map: {Tree: tree}}}
    {nifti: {image: ct.nii.gz, labels: lesions.nii.gz, class_name: nodule, modality: CT}}   # or volume:
    {dicom_seg: {series: ct_series/, seg: lesions.seg.dcm, class_map: {Lesion: nodule}}}

The label sources (:mod:`smallseg.data.labels`): ``vector`` polygons (GPKG / GeoJSON / Shapefile / FlatGeobuf)
are reprojected to the image's CRS and rasterised, one object per feature, the smaller on top where they
overlap; their class is the ``class_field`` attribute, mapped by name to ``model.class_names`` (``class_map``
renames). ``boxes`` (COCO bbox, DeepForest CSV, Pascal VOC XML) train the centroid head inside each box's
inscribed ellipse and the semantic head on its core, nothing else (:mod:`smallseg.data.labels.boxes`).
``label_image`` and ``nifti`` take an instance label image / volume on the image's grid (``nifti``: slices
with objects plus as many without); ``dicom_seg`` reads a DICOM series folder and a DICOM SEG referencing it
(highdicom; frames matched to slices by SOP Instance UID, each segment's label mapped to a model class by
name, objects its 3-D components, the series' modality kept; :mod:`smallseg.data.labels.dicom_seg`). Sources
without classes give every object ``class_name`` (default: the
model's only class). Every source but ``synthetic`` may add ``area:`` (a pixel box ``rows=0:256``, a mask
raster or a vector file): pixels outside it that belong to no labelled object are not labelled, and add
nothing to any loss or to validation scores.

Any source may add ``modality: CT`` (a DICOM modality): ``smallseg tune-decode --modality CT`` tunes decode
settings for that modality on the val sources so marked, and ``normalize_by_modality`` entries apply to its
images (synthetic CT is ``CT`` by itself).

``normalize:`` is a :class:`smallseg.normalize.Normalization` (``kind: fixed | percentile | window | none``
with its fields); its ``mean``/``std`` may be lists, ``auto`` (the default: measured on the mapped training
images) or ``null`` (no standardisation), and a fixed ``scale`` may be ``auto`` (1/255 for 8-bit, else
1 / the 99.9th percentile). Without it, each source's own mapping is used (synthetic nuclei: percentiles
1-99.5 per image; synthetic CT: the -1350..150 HU window), else ``model.input_scale`` / ``norm_mean`` /
``norm_std`` as before. Every training crop and validation image goes through it, and the model stores it
(``training["normalization"]``, ``["normalization_by_modality"]``), so every pipeline applies the same.
``model.band_names`` (e.g. ``[red, green, blue]``) declares what the input bands mean (:mod:`smallseg.bands`).

Outputs in the run folder: ``last.safetensors`` and ``best.safetensors`` (model + config, loadable with
:func:`smallseg.models.load_checkpoint`), ``state.pt`` (optimizer/scheduler/epoch for ``--resume``, read
with ``torch.load(weights_only=True)``), ``history.jsonl`` (one line of losses and validation metrics per
epoch) and ``config.yaml`` (the resolved configuration).
"""

from __future__ import annotations

import copy
import json
import math
import os
import pickle
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from smallseg.bands import model_band_names
from smallseg.decode.centroids import DecodeConfig
from smallseg.decode.components import decode_outputs
from smallseg.errors import SmallsegError, one_line
from smallseg.io.atomic import OutputLock, atomic_path, write_text_atomic
from smallseg.models import ModelConfig, build_from_config, save_checkpoint
from smallseg.models.checkpoint import load_weights, read_checkpoint_config
from smallseg.models.registry import resolve_device
from smallseg.normalize import Normalization
from smallseg.pipeline.classes import checked_classes_by_modality
from smallseg.train.data import (
    CropDataset,
    LabeledImage,
    collate,
    default_input_scale,
    image_normalization,
    normalized_input,
    unit_statistics,
)
from smallseg.train.losses import head_losses

# The configuration and its sources live in run_config; their names stay importable from here.
from smallseg.train.run_config import (  # noqa: F401
    DATA_KEYS,
    LOSS_KEYS,
    SOURCE_KINDS,
    OptimConfig,
    TrainConfig,
    _mapping_of,  # the YAML normalize: entry, also checked at load
    check_source,
    class_mapping,
    load_source,
    load_train_config,
)
from smallseg.train.scoring import score_predictions
from smallseg.train.tune import write_tuned_checkpoint


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict[str, Any]]
    stopped: str = "epochs"  # why it ended: "epochs", "early stopping", "time budget", "slice" (stop_after_epochs)


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    train_images: list[LabeledImage] | None = None,
    val_images: list[LabeledImage] | None = None,
    time_budget_s: float | None = None,
    patience: int | None = None,
    on_epoch=None,
    overwrite: bool = False,
    freeze_norm: bool = False,
) -> TrainResult:
    """Train a model as ``config`` says, writing checkpoints into ``run_dir`` after every epoch.

    Args:
        config: parsed training config.
        run_dir: output folder (created).
        resume: continue from ``run_dir/state.pt`` + ``last.safetensors`` after the last finished epoch;
            the continued run gives the same weights as an uninterrupted one (CPU, same settings).
        device: overrides ``config.device`` (``auto``, ``cpu``, ``cuda``, ``cuda:1``).
        progress: show a progress bar with loss and throughput.
        stop_after_epochs: finish at most this many epochs in this call, keeping the schedule of the full
            run (for time-sliced jobs: call again with ``resume=True`` to go on).
        train_images, val_images: labelled images to use instead of the config's ``data.train`` / ``data.val``
            (``smallseg finetune`` splits its own).
        time_budget_s: wall-clock seconds for this call: no epoch is started that would, at the last epoch's
            pace, end after it (the decode tuning at the end is not counted).
        patience: stop after this many epochs without a better validation ``select_metric`` (early stopping),
            counted only in the second half of the planned schedule: before it the learning rate is still high
            and a validation strip of a few dozen objects scores +-0.05 from epoch to epoch, so stopping there cuts off
            the low-rate part of the cosine that the best weights come from (DSB2018 few-shot: test F1 0.769
            stopped at epoch 17 of 68, 0.812 with the whole schedule; benchmarks/RESULTS.md).
        on_epoch: called with each epoch's history record (progress displays); it may return a new total
            number of epochs, which re-plans the rest of the run: the learning-rate schedule is stretched or
            shrunk to that many epochs from the current step on (``smallseg finetune`` re-fits its budget
            after epoch 1, when the first epoch's real time is known). Returning None keeps the plan.
        freeze_norm: keep every BatchNorm layer in eval mode while training (its running statistics fixed,
            its affine weights still learned). For fine-tuning (``smallseg finetune``): batches of a few crops
            of one image normalised by their own statistics put a trained model's heads far off (loss 4.3 vs
            0.87 on the same DSB2018 crops, benchmarks/RESULTS.md).
        overwrite: start afresh in a ``run_dir`` that holds an earlier run's results (they are replaced);
            without it (and without ``resume``) such a folder is refused, so a run is never lost by accident.

    Returns:
        TrainResult with the checkpoint paths and the per-epoch history.

    Raises:
        SmallsegError: ``run_dir`` holds a run and neither ``resume`` nor ``overwrite`` is set; another process
            trains into ``run_dir`` (one writer per run folder: :class:`smallseg.io.atomic.OutputLock`); bad
            data or settings.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SmallsegError(f"{run_dir}: cannot create the run folder ({one_line(exc)})") from None
    with OutputLock(run_dir / RUN_LOCK, what=f"run folder {run_dir}"):
        if not resume and not overwrite:
            earlier = [name for name in RUN_RESULTS if (run_dir / name).exists()]
            if earlier:
                raise SmallsegError(f"{run_dir} holds an earlier training run ({', '.join(earlier)}); pass "
                                    "resume=True to continue it, overwrite=True to replace it, or choose another "
                                    "run folder")
        if overwrite and not resume:
            # The earlier run's results go first: a new run killed before its first epoch must not leave
            # them beside its own config.yaml, looking like its results.
            for name in (*RUN_RESULTS, "history.jsonl"):
                (run_dir / name).unlink(missing_ok=True)
        return _train_locked(config, run_dir, resume=resume, device=device, progress=progress,
                             stop_after_epochs=stop_after_epochs, train_images=train_images, val_images=val_images,
                             time_budget_s=time_budget_s, patience=patience, on_epoch=on_epoch,
                             freeze_norm=freeze_norm)


# The files of a run folder that hold results (a run killed before its first epoch leaves none of them).
RUN_RESULTS = ("last.safetensors", "best.safetensors", "state.pt")
RUN_LOCK = ".smallseg.lock"


def _train_locked(config: TrainConfig, run_dir: Path, *, resume: bool, device: str | None, progress: bool,
                  stop_after_epochs: int | None, train_images: list[LabeledImage] | None,
                  val_images: list[LabeledImage] | None, time_budget_s: float | None, patience: int | None,
                  on_epoch, freeze_norm: bool = False) -> TrainResult:
    """:func:`train` once the run folder is locked and checked."""
    dev = resolve_device(device or config.device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)

    started = _clock()
    classes = class_mapping(config.model)
    if train_images is None:
        train_images = [im for spec in config.data.get("train", []) for im in load_source(spec, config.source_dir, classes)]
    if val_images is None:
        val_images = [im for spec in config.data.get("val", []) for im in load_source(spec, config.source_dir, classes)]
    if not train_images:
        raise SmallsegError("training config: data.train lists no images")

    model_config = _resolve_model_config(config, train_images)
    train_norms = [image_normalization(item, model_config) for item in train_images]
    model = build_from_config(model_config).to(dev)
    if config.init is not None and not resume:
        # Warm start (fine-tuning): same architecture, weights from an earlier checkpoint.
        load_weights(model, config.init)
        # The weights learned at the earlier stages' pixel sizes too: the model's range is the union.
        before = (read_checkpoint_config(config.init).training or {}).get("train_pixel_size_m")
        now = model.config.training.get("train_pixel_size_m")
        if before and now:
            model.config.training["train_pixel_size_m"] = [min(before[0], now[0]), max(before[1], now[1])]
    dataset = CropDataset(train_images, model_config, config.augment,
                          samples_per_epoch=config.optim.steps_per_epoch * config.optim.batch_size, seed=config.seed,
                          normalizations=train_norms)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    total_steps = config.optim.epochs * config.optim.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config.optim, total_steps))
    use_amp = config.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    # The averaged copy is what gets validated and kept as best; the raw weights go on training.
    ema = None if config.optim.ema_decay is None else torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.optim.ema_decay), use_buffers=True)

    history: list[dict[str, Any]] = []
    start_epoch, best = 0, -math.inf
    state_path, last_path, best_path = run_dir / "state.pt", run_dir / "last.safetensors", run_dir / "best.safetensors"
    if resume:
        if not (state_path.exists() and last_path.exists()):
            raise SmallsegError(f"resume=True: {run_dir} has no finished epoch to resume from (state.pt, last.safetensors)")
        load_weights(model, last_path)
        state = _read_state(state_path, dev)
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["torch_rng"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
            raise SmallsegError(f"{state_path}: does not fit this run's model and optimiser ({one_line(exc)}); "
                                "start again with overwrite=True or another run folder") from None
        start_epoch, best = int(state["epoch"]) + 1, float(state["best"])
        history = _read_history(run_dir / "history.jsonl")[:start_epoch]
    else:
        (run_dir / "history.jsonl").write_text("")
    _write_resolved_config(config, model_config, run_dir / "config.yaml")

    loss_weights: dict[str, Any] = {k: float(v) for k, v in config.loss.items() if k != "class_weights"}
    if "class_weights" in config.loss:
        # Small objects are few pixels: weighting their classes up keeps the background from winning.
        weights = [float(w) for w in config.loss["class_weights"]]
        if len(weights) != 1 + model_config.classes:
            raise SmallsegError(f"loss.class_weights: {len(weights)} values, need 1 + classes = {1 + model_config.classes} "
                                "(background first)")
        loss_weights["class_weights"] = torch.tensor(weights, device=dev)
    planned = config.optim.epochs  # the schedule's length; on_epoch may re-plan it

    def end_of(planned_epochs: int) -> int:
        if stop_after_epochs is None:
            return planned_epochs
        return min(planned_epochs, start_epoch + int(stop_after_epochs))

    end_epoch = end_of(planned)
    stopped = "epochs" if end_epoch == planned else "slice"
    since_best = 0
    for record in history:  # a resumed run counts the epochs since its best as an unbroken one would
        score = record.get(f"val_{config.select_metric}", -record.get("loss_total", 0.0))
        since_best = 0 if score >= best else since_best + 1
    last_epoch_s = 0.0
    epoch = start_epoch - 1
    while epoch + 1 < end_epoch:
        epoch += 1
        if patience is not None and since_best >= patience and epoch >= planned // 2 + patience:
            stopped = "early stopping"
            break
        if time_budget_s is not None and epoch > start_epoch and \
                _clock() - started + last_epoch_s > time_budget_s:
            stopped = "time budget"
            break
        epoch_started = _clock()
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=config.optim.batch_size, shuffle=False, num_workers=config.workers,
            collate_fn=collate, drop_last=True, persistent_workers=False,
        )
        model.train()
        if freeze_norm:
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        sums: dict[str, float] = {}
        t0, seen = time.perf_counter(), 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{planned}", disable=not progress, leave=False)
        for images, targets in bar:
            images = images.to(dev, non_blocking=True)
            targets = {k: v.to(dev, non_blocking=True) for k, v in targets.items()}
            with torch.autocast(dev.type, enabled=use_amp):
                outputs = model(images)
            losses = head_losses({k: v.float() for k, v in outputs.items()}, targets, **loss_weights)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["total"]).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            if not torch.isfinite(losses["total"]):
                raise SmallsegError(f"epoch {epoch + 1}: the loss became {losses['total'].item()}; lower optim.lr")
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            seen += images.shape[0]
            bar.set_postfix(loss=f"{sums['total'] / max(bar.n + 1, 1):.3f}",
                            img_s=f"{seen / (time.perf_counter() - t0):.1f}")
        steps = max(len(loader), 1)
        record: dict[str, Any] = {"epoch": epoch + 1, **{f"loss_{k}": v / steps for k, v in sums.items()},
                                  "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - t0, 2),
                                  "images_per_s": round(seen / (time.perf_counter() - t0), 2)}
        kept = model if ema is None else ema.module
        if val_images:
            record.update({f"val_{k}": v for k, v in validate(kept, val_images, config.decode).items()})
        score = record.get(f"val_{config.select_metric}")
        score = -record["loss_total"] if score is None else score
        save_checkpoint(model, last_path, storage_dtype="float32")
        if score > best:
            best = score
            since_best = 0
            save_checkpoint(kept, best_path, storage_dtype=config.storage_dtype)
        else:
            since_best += 1
        with atomic_path(state_path) as tmp:  # a kill mid-write leaves the previous epoch's state whole
            torch.save({"epoch": epoch, "best": best, "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                        **({} if ema is None else {"ema": ema.state_dict()})}, tmp)
        last_epoch_s = _clock() - epoch_started  # steps, validation and checkpoints: what the next one costs
        record["epoch_seconds"] = round(last_epoch_s, 3)
        history.append(record)
        with open(run_dir / "history.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if progress:
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()
                     if k.startswith(("loss_total", "val_AP", "val_boundary_AP", "val_F1"))}
            tqdm.write(f"epoch {epoch + 1}: {shown}")
        replan = on_epoch(record) if on_epoch is not None else None
        if replan is not None and int(replan) != planned:
            # The steps done keep their place; the cosine decay is re-fitted to end at the new last epoch.
            planned = max(int(replan), epoch + 1)
            refitted = _lr_lambda(config.optim, planned * config.optim.steps_per_epoch)
            scheduler.lr_lambdas = [refitted] * len(optimizer.param_groups)
            end_epoch = end_of(planned)
            stopped = "epochs" if end_epoch == planned else "slice"
    if val_images and config.tune_decode and stopped != "slice" and best_path.exists():
        # The heads' calibration is a product of training: choose the decoding thresholds for it.

        _, chosen, _ = write_tuned_checkpoint(best_path, val_images, best_path, metric=config.select_metric,
                                              storage_dtype=config.storage_dtype)
        if progress:
            tqdm.write(f"decode settings tuned on validation ({config.select_metric}): {chosen}")
    return TrainResult(run_dir=run_dir, best_checkpoint=best_path, last_checkpoint=last_path, history=history,
                       stopped=stopped)


def validate(model: torch.nn.Module, images: list[LabeledImage], decode: dict[str, Any]) -> dict[str, float]:
    """Predict each validation image whole, decode, and score them together with
    :func:`smallseg.train.scoring.score_predictions` (labelled areas respected, box labels at box level).

    Returns the scorer's numeric metrics (``AP``, ``AP_small``, ``boundary_AP``, ``F1``, ``box_F1``, ...).
    """
    config: ModelConfig = model.config
    decode_config = DecodeConfig(**{"max_distance_px": config.max_distance_px, **decode})
    model.eval()
    device = next(model.parameters()).device
    predictions = []
    with torch.inference_mode():
        for item in images:
            x = torch.from_numpy(normalized_input(item, config))[None].to(device)
            predictions.append(decode_outputs(model(x), decode_config)[0])
    metrics = score_predictions(images, predictions)
    model.train()
    return metrics


def _standardisation_of(spec: dict[str, Any] | None, model: dict[str, Any]) -> tuple[Any, Any]:
    """(mean, std) as the config says: lists, ``"auto"`` or None; from ``normalize:`` or the legacy fields."""
    if spec is not None:
        return spec.get("mean", "auto"), spec.get("std", "auto")
    return model.get("norm_mean", "auto"), model.get("norm_std", "auto")


def _resolve_normalizations(config: TrainConfig, images: list[LabeledImage], fields_: dict[str, Any]
                            ) -> tuple[Normalization, dict[str, Normalization]]:
    """The model's default normalisation and those by modality, from the config and the training images.

    Each image's mapping: ``normalize_by_modality[its modality]``, else ``normalize``, else its source's own
    (``LabeledImage.normalization``), else fixed ``model.input_scale`` (``auto``: from the data). One mean/std
    (measured on all mapped images unless given) follows every mapping.
    """
    scale_spec = fields_.get("input_scale", "auto")

    def spec_of(item: LabeledImage) -> dict[str, Any] | None:
        spec = config.normalize_by_modality.get(item.modality) if item.modality else None
        return spec if spec is not None else config.normalize

    # An 'auto' fixed scale is measured on the images it applies to (1/255 for 8-bit data).
    needs_scale = [im for im in images if (spec_of(im) or {}).get("scale") == "auto" or (
        spec_of(im) is None and im.normalization is None and scale_spec == "auto")]
    auto_scale = default_input_scale(needs_scale) if needs_scale else None

    def mapping(item: LabeledImage) -> Normalization:
        spec = spec_of(item)
        if spec is not None:
            return _mapping_of(spec, scale=auto_scale)
        if item.normalization is not None:
            return item.normalization.with_standardisation(None, None)
        return Normalization.fixed(auto_scale if scale_spec == "auto" else float(scale_spec))

    maps = [mapping(im) for im in images]
    specs = [config.normalize, *config.normalize_by_modality.values()]
    means_stds = {repr(_standardisation_of(s, fields_)) for s in specs if s is not None} or {
        repr(_standardisation_of(None, fields_))}
    if len(means_stds) != 1:
        raise SmallsegError("training config: normalize and normalize_by_modality must standardise alike (one "
                            "mean/std for the model: a Mosaic mixes crops of several images)")
    mean, std = _standardisation_of(next((s for s in specs if s is not None), None), fields_)
    if mean is None or std is None or any(m.kind == "none" for m in maps):
        mean = std = None
    elif mean == "auto" or std == "auto":
        measured = unit_statistics(images, maps)
        mean = measured[0] if mean == "auto" else mean
        std = measured[1] if std == "auto" else std
    full = [m.with_standardisation(mean, std) if m.kind != "none" else m for m in maps]
    by_modality: dict[str, Normalization] = {}
    for item, norm in zip(images, full):
        if item.modality:
            if by_modality.setdefault(item.modality, norm) != norm:
                raise SmallsegError(f"training data: {item.modality} images need different normalisations; say "
                                    f"which with normalize_by_modality: {{{item.modality}: {{kind: ...}}}}")
    plain = {repr(n.to_dict()): n for item, n in zip(images, full) if not item.modality}
    if config.normalize is not None:
        default = _mapping_of(config.normalize, scale=auto_scale)
        default = default.with_standardisation(mean, std) if default.kind != "none" else default
    elif len(plain) > 1:
        raise SmallsegError("training data: the sources' images need different normalisations ("
                            + "; ".join(n.describe() for n in plain.values()) + "); choose one with normalize:")
    else:
        default = next(iter(plain.values())) if plain else full[0]
    return default, by_modality


def _resolve_model_config(config: TrainConfig, images: list[LabeledImage]) -> ModelConfig:
    """ModelConfig from the YAML's ``model:`` section, with the normalisation resolved on the training data."""
    fields_ = dict(config.model)
    band_names = fields_.pop("band_names", None)
    classes_by_modality = fields_.pop("classes_by_modality", None)
    default, by_modality = _resolve_normalizations(config, images, fields_)
    fields_.setdefault("in_channels", default.out_channels(images[0].image.shape[-1]))
    # The legacy fields say the same as far as they can (fixed: all of it; otherwise the standardisation),
    # so code that still calls config.normalise on mapped input keeps working.
    fields_["input_scale"] = default.scale if default.kind == "fixed" else 1.0
    fields_["norm_mean"] = None if default.mean is None else list(default.mean)
    fields_["norm_std"] = None if default.std is None else list(default.std)
    fields_.setdefault("tile_size_px", config.augment.crop_size)
    training = dict(fields_.get("training") or {})
    training["normalization"] = default.to_dict()
    if by_modality:
        training["normalization_by_modality"] = {k: v.to_dict() for k, v in sorted(by_modality.items())}
    else:
        training.pop("normalization_by_modality", None)
    if band_names is not None:
        names = model_band_names(type("Declared", (), {"training": {"band_names": band_names}})())
        if len(names) != fields_["in_channels"]:
            raise SmallsegError(f"model.band_names: {len(names)} names for {fields_['in_channels']} input bands")
        training["band_names"] = list(names)
    if classes_by_modality is not None:
        # Which modalities the model is for (pipeline.classes): a one-class nuclei model cannot say by its
        # class name alone, and without it dicom-batch would not say "not trained on CT".
        training["classes_by_modality"] = checked_classes_by_modality(classes_by_modality, fields_.get("class_names"))
    training.update({
        "config_name": config.name,
        "train_images": len(images),
        "train_pixels": int(sum(im.instances.size for im in images)),
        "train_objects": int(sum(len(np.unique(im.instances[im.instances > 0])) for im in images)),
        "seed": config.seed,
        "decode": dict(config.decode),
    })
    # The ground sampling distance the model learned at (after rescale augmentation): inference warns
    # when an input is far outside it (objects many times smaller or larger than the model expects).
    sizes_m = [float(np.sqrt(im.pixel_area)) for im in images if im.pixel_unit == "m" and im.pixel_area]
    if sizes_m and len(sizes_m) == len(images):
        lo, hi = config.augment.scale_range  # rescaling by s turns a pixel of p metres into one of p / s
        training["train_pixel_size_m"] = [round(min(sizes_m) / hi, 6), round(max(sizes_m) / lo, 6)]
    else:
        training.pop("train_pixel_size_m", None)
    fields_["training"] = training
    return ModelConfig.from_dict(fields_)


# The clock of the time budget (a module attribute so that tests can inject one instead of wall time).
_clock = time.perf_counter


def _lr_lambda(optim: OptimConfig, total_steps: int):
    def factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        progress = (step - optim.warmup_steps) / max(total_steps - optim.warmup_steps, 1)
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _read_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_resolved_config(config: TrainConfig, model_config: ModelConfig, path: Path) -> None:
    resolved = {
        "name": config.name, "model": model_config.to_dict(), "data": copy.deepcopy(config.data),
        "augment": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.augment.__dict__.items()},
        "loss": config.loss, "decode": config.decode, "optim": config.optim.__dict__, "seed": config.seed,
        "device": config.device, "amp": config.amp, "workers": config.workers,
        "storage_dtype": config.storage_dtype, "select_metric": config.select_metric,
        "init": None if config.init is None else str(config.init),
        "normalize": config.normalize, "normalize_by_modality": config.normalize_by_modality or None,
    }
    write_text_atomic(path, yaml.safe_dump(resolved, sort_keys=False))


def _read_state(path: Path, device: torch.device) -> dict[str, Any]:
    """``state.pt`` as data: ``torch.load(weights_only=True)`` (tensors, numbers, plain containers; no code),
    then its shape checked. A file that is not one (truncated, tampered, a pickle with objects) is one line."""
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the refusal below says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, UnicodeDecodeError) as exc:
        raise SmallsegError(f"{path}: not a training state written by smallseg train, refused ({one_line(exc)[:160]}); "
                            "start again with overwrite=True or another run folder") from None
    expected = {"epoch": int, "best": float, "optimizer": dict, "scheduler": dict, "scaler": dict,
                "torch_rng": torch.Tensor}
    if not isinstance(state, dict) or any(k not in state for k in expected):
        raise SmallsegError(f"{path}: not a training state written by smallseg train (needs "
                            f"{', '.join(expected)}); start again with overwrite=True or another run folder")
    for key, kind in expected.items():
        ok = isinstance(state[key], (int, float)) and not isinstance(state[key], bool) if kind is float else \
            isinstance(state[key], kind) and not isinstance(state[key], bool)
        if not ok:
            raise SmallsegError(f"{path}: {key} is a {type(state[key]).__name__}, not a {kind.__name__}; start "
                                "again with overwrite=True or another run folder")
    return state
