"""Fine-tune a model on a user's own labels in one call: ``smallseg finetune IMAGE... --labels LABELS...``.

No YAML: the init checkpoint (a shipped model name or a file) fixes the architecture, the classes, the
declared normalisation and bands, and the decode settings to start from; the labels come in any format
:func:`smallseg.data.labels.auto.read_labels` reads, with an optional labelled area.

What it does, in order:

1. **Split.** Validation is the bottom strip of each image's labelled rows (``val_fraction`` of them, at
   least :data:`MIN_VAL_ROWS` rows): rows ``[split, end)`` go to validation, rows ``[start, split)`` to
   training, where ``start``/``end`` are the first and last labelled rows. The two parts share no pixel
   (neither labels nor image pixels: the training part is cut off at ``split``), so validation scores are
   on pixels the model never saw. Rows outside the labelled rows are not used at all.
2. **Before.** The init model, with its own decode settings, is scored on the validation part.
3. **Train.** :func:`smallseg.train.loop.train` with BatchNorm statistics frozen (``freeze_norm``: the init
   model's running statistics are kept; a few crops of one image are no population to re-estimate them from),
   augmentation (flips, 90° rotations, rescale 0.8-1.25,
   photometric jitter, Mosaic), AdamW with a warm-up and a cosine schedule fitted to the time budget (the
   pace of a few measured steps gives the number of epochs, and after epoch 1 the schedule is re-fitted to
   that epoch's real time: :func:`refit_epochs`; the measured steps on a throwaway model misjudge a loaded
   machine), validation after every epoch (the best epoch is kept), early stopping after ``patience``
   epochs without a better F1, counted in the second half of the schedule only (the low-rate end of the cosine
   is where the best weights come from).
4. **Tune.** Decode settings are grid-searched on the validation part (:mod:`smallseg.train.tune`).
5. **After.** The tuned model is scored on the validation part, and so is the init model with its decode
   settings tuned on the same part (``before_tuned``): ``worse_than_init`` compares the fine-tuned model with the
   better of the init model's own and tuned settings, so decode tuning alone never passes for a training gain; the
   checkpoint is written atomically to
   ``out`` with ``training["finetune"]``: the data (files, split, object counts), the settings, the
   before/after scores and the per-epoch curve (bounded: at most :data:`MAX_CURVE_POINTS` epochs kept).
   A training-curve PNG (loss and validation F1 / AP per epoch) is written beside it as ``OUT.curve.png``.

Box labels (DeepForest CSV, Pascal VOC, COCO bbox) go through the same steps: the centroid head learns votes to
the box centre inside each box's inscribed ellipse, the semantic head foreground on the ellipse's core only
and background outside every box, the distance head nothing inside boxes (:mod:`smallseg.data.labels.boxes`);
a box goes to the part that holds its centre row, and validation is box-level (``box_F1``: predicted masks'
bounding boxes matched at IoU 0.4, :mod:`smallseg.train.scoring`), which is then the F1 that early stopping,
decode tuning and before/after use.

The run folder ``OUT.finetune/`` (``last.safetensors``, ``state.pt``, ``history.jsonl``, ``finetune.json``)
lets a killed run go on with ``resume=True``: the same split and schedule, from the last finished epoch,
with the minutes already spent counted against the budget.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from smallseg.data.labels.auto import read_labels
from smallseg.data.labels.common import ClassMapping, LabeledImage
from smallseg.errors import SmallsegError
from smallseg.io.atomic import atomic_path, write_json_atomic
from smallseg.models import build_from_config, load_checkpoint, save_checkpoint
from smallseg.models.registry import resolve_device, resolve_model
from smallseg.pipeline.classes import modality_classes, modality_key, trained_modalities
from smallseg.train.augment import AugmentConfig
from smallseg.train.data import CropDataset, collate, image_normalization
from smallseg.train.loop import (
    OptimConfig,
    TrainConfig,
    _resolve_model_config,
    class_mapping,
    train,
    validate,
)
from smallseg.train.losses import head_losses
from smallseg.train.scoring import BOX_IOU
from smallseg.train.tune import tune_decode

MIN_VAL_ROWS = 32
MAX_CURVE_POINTS = 500
# Measured steps before training that set the schedule's length (not counted as training).
_PACE_STEPS = 3
# The clock of the time budget (a module attribute so that tests can inject one instead of wall time).
_clock = time.perf_counter


@dataclass(frozen=True)
class FinetuneOptions:
    """Everything ``smallseg finetune`` takes.

    Attributes:
        images: image files (GeoTIFF, TIFF/PNG, image volume), one per label file.
        labels: label files, one per image, any format :mod:`smallseg.data.labels.auto` reads.
        out: the output checkpoint (``.safetensors``).
        init: a shipped model name (``medical``, ``remote-sensing``) or a checkpoint path.
        area: labelled area applied to every image (pixel box ``rows=0:256``, mask raster or vector file).
        minutes: wall-clock budget for training (the decode tuning and scoring at the end are extra).
        class_name: the model class of objects from labels that name none (default: the model's only class).
        class_map: ``{label class name: model class name}`` renames.
        class_field: the vector attribute holding each polygon's class.
        val_fraction: share of each image's labelled rows held out for validation (bottom strip).
        crop_size: training crop side, px (default: the init model's tile size, at most the training part).
        batch_size, lr: optimiser settings (AdamW).
        steps_per_epoch: optimiser steps between two validations.
        max_epochs: an upper bound on epochs whatever the budget.
        epochs: the schedule's length in epochs, instead of fitting it to the budget (the budget still stops
            the run).
        patience: early stopping after this many epochs without a better validation F1, in the second half of
            the schedule (None: off).
        ema_decay: per-step decay of the moving average of the weights that is validated and kept (None:
            the raw weights). 0.98 averages over about the last 50 steps (2.5 epochs of 20 steps).
        seed: the crops and augmentation.
        device: ``cpu``, ``cuda``, ``auto``.
        tune: tune decode settings on the validation part at the end.
        resume: continue the run in ``OUT.finetune/``.
    """

    images: tuple[str, ...]
    labels: tuple[str, ...]
    out: str
    init: str = "medical"
    area: str | None = None
    minutes: float = 15.0
    class_name: str | None = None
    class_map: dict[str, str] = field(default_factory=dict)
    class_field: str | None = None
    val_fraction: float = 0.2
    crop_size: int | None = None
    batch_size: int = 4
    lr: float = 5e-4
    steps_per_epoch: int = 20
    max_epochs: int = 200
    epochs: int | None = None
    patience: int | None = 10
    ema_decay: float | None = 0.98
    seed: int = 0
    device: str = "cpu"
    tune: bool = True
    resume: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(str(p) for p in self.images))
        object.__setattr__(self, "labels", tuple(str(p) for p in self.labels))
        if not self.images:
            raise SmallsegError("finetune: give at least one image")
        if len(self.labels) != len(self.images):
            raise SmallsegError(f"finetune: {len(self.images)} image(s) but {len(self.labels)} label file(s); give "
                                "one label file per image, in the same order")
        # Messages begin with the field's name (smallseg finetune spells it as its flag).
        if not 0.05 <= float(self.val_fraction) <= 0.5:
            raise SmallsegError(f"val_fraction {self.val_fraction}: use 0.05 to 0.5")
        if not float(self.minutes) > 0:
            raise SmallsegError(f"minutes {self.minutes}: give a positive number")
        if not str(self.out).endswith(".safetensors"):
            raise SmallsegError(f"out {self.out}: the checkpoint must be a .safetensors file")
        for name in ("batch_size", "steps_per_epoch", "max_epochs"):
            if int(getattr(self, name)) < 1:
                raise SmallsegError(f"{name} {getattr(self, name)}: must be at least 1")
        if self.epochs is not None and int(self.epochs) < 1:
            raise SmallsegError(f"epochs {self.epochs}: must be at least 1 (or None: as the time budget allows)")
        if self.patience is not None and int(self.patience) < 1:
            raise SmallsegError(f"patience {self.patience}: must be at least 1 (or None: never stop early)")
        if not float(self.lr) > 0:
            raise SmallsegError(f"lr {self.lr}: must be positive")
        if self.ema_decay is not None and not 0 < float(self.ema_decay) < 1:
            raise SmallsegError(f"ema_decay {self.ema_decay}: must be between 0 and 1 (or None: no averaging)")


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune` produced."""

    checkpoint: Path
    curve_png: Path
    before: dict[str, float]
    after: dict[str, float]
    epochs: int
    stopped: str
    record: dict[str, Any]


def run_dir_of(out: str | os.PathLike) -> Path:
    """The run folder beside the output checkpoint: ``my.safetensors`` -> ``my.finetune/``."""
    out = Path(out)
    return out.with_name(out.name[: -len(".safetensors")] + ".finetune")


def curve_path_of(out: str | os.PathLike) -> Path:
    """The training-curve PNG beside the output checkpoint: ``my.safetensors`` -> ``my.curve.png``."""
    out = Path(out)
    return out.with_name(out.name[: -len(".safetensors")] + ".curve.png")


def split_rows(item: LabeledImage, fraction: float) -> tuple[LabeledImage, LabeledImage, dict[str, int]]:
    """Split one labelled image into a training part and the validation strip below it (module docstring).

    Returns:
        (train part, validation part, ``{"image", "row0", "split", "row1"}``: the image's labelled rows are
        ``row0:row1``; training gets ``row0:split``, validation ``split:row1``).
    """
    rows = np.nonzero(item.labelled.any(axis=1))[0]
    if not len(rows):
        raise SmallsegError(f"{item.name}: no labelled pixel (is the labelled area on the image?)")
    row0, row1 = int(rows[0]), int(rows[-1]) + 1
    val_rows = max(MIN_VAL_ROWS, int(round(fraction * (row1 - row0))))
    if row1 - row0 < 2 * val_rows:
        raise SmallsegError(f"{item.name}: only {row1 - row0} labelled rows; finetune needs at least "
                            f"{2 * val_rows} (a training part and a validation strip of {val_rows} rows)")
    split = row1 - val_rows
    train, val = item.crop_rows(row0, split, ":train"), item.crop_rows(split, row1, ":val")
    if not (val.instances > 0).any():
        raise SmallsegError(f"{item.name}: the validation strip (rows {split}:{row1}) holds no object; label "
                            "objects down to the bottom of the labelled area or give a larger val_fraction")
    return train, val, {"row0": row0, "split": split, "row1": row1}


def refit_epochs(done: int, epoch_s: float, elapsed_s: float, budget_s: float, max_epochs: int) -> int:
    """The schedule's length once ``done`` epochs have taken ``elapsed_s`` of ``budget_s`` seconds, the last one
    ``epoch_s``: the epochs done plus as many as fit in what is left at that pace (at least ``done``, at most
    ``max_epochs``)."""
    left = max(float(budget_s) - float(elapsed_s), 0.0)
    more = int(left // max(float(epoch_s), 1e-9))
    return int(min(max(done + more, done), max(int(max_epochs), done)))


def _objects(items: Sequence[LabeledImage]) -> int:
    return int(sum(len(np.unique(it.instances[it.instances > 0])) for it in items))


def _score(model, images: list[LabeledImage], decode: dict[str, Any] | None = None) -> dict[str, float]:
    """Validation metrics of ``model`` (its own decode settings unless ``decode`` is given)."""
    settings = dict(decode if decode is not None else (model.config.training or {}).get("decode") or {})
    metrics = validate(model, images, settings)
    model.eval()
    return metrics


def _short(metrics: dict[str, float]) -> dict[str, float | None]:
    keys = ("F1", "AP", "AP50", "precision", "recall", "count_gt", "count_pred", "box_F1")
    return {k: (None if metrics.get(k) is None else round(float(metrics[k]), 4)) for k in keys if k in metrics}


def _train_config(options: FinetuneOptions, init_path: Path, init_config, crop_size: int, epochs: int):
    """The :class:`~smallseg.train.loop.TrainConfig` of a finetune run (the init model's fields and
    normalisation, the finetune defaults)."""
    model = init_config.to_dict()
    training = dict(model.get("training") or {})
    # The declared normalisation is kept exactly (mean/std included): the fine-tuned model reads pixels as
    # the init model did.
    normalize = training.get("normalization")
    by_modality = dict(training.get("normalization_by_modality") or {})
    three_band = init_config.in_channels == 3
    augment = AugmentConfig(crop_size=crop_size, scale_range=(0.8, 1.25), mosaic_p=0.3, hue_saturation=three_band)
    optim = OptimConfig(epochs=epochs, steps_per_epoch=options.steps_per_epoch, batch_size=options.batch_size,
                        lr=options.lr, warmup_steps=min(20, epochs * options.steps_per_epoch // 10 + 1),
                        ema_decay=None if options.ema_decay is None else float(options.ema_decay))
    return TrainConfig(
        name=f"finetune:{Path(options.out).name}", model=model, data={}, augment=augment,
        # the shipped models' weighting (configs/medical.yaml): the centroid votes decide how objects split
        loss={"semantic_weight": 1.0, "centroid_weight": 2.0, "distance_weight": 1.0},
        decode=dict(training.get("decode") or {}), optim=optim, seed=options.seed, device=options.device,
        amp=True, select_metric="F1", init=init_path, tune_decode=False,
        normalize=None if normalize is None else dict(normalize),
        normalize_by_modality={k: dict(v) for k, v in by_modality.items()},
    )


def classes_by_modality_of(init_config, modalities: set[str], class_names: list[str]) -> dict[str, list[str]]:
    """{modality: class names} for the modalities of the fine-tuning images (``""`` = images without one): the
    classes the init model has for that modality (:func:`~smallseg.pipeline.classes.modality_classes`), else all;
    plus the init model's other modalities whose classes are all among those.

    Not the classes that happen to be labelled: a user who labels only buildings for a car/building/tree model
    still wants its cars and trees, not re-classed as buildings."""
    def names_for(modality: str) -> list[str]:
        ids = modality_classes(init_config, modality)
        return [class_names[i - 1] for i in ids if 0 < i <= len(class_names)] if ids else list(class_names)

    out = {m: names_for(m) for m in sorted({str(m).upper() for m in modalities})}
    # Modalities of the same domain stay: the init model's nucleus class serves TIFF ("") and DICOM SM / GM
    # alike, so a model fine-tuned on TIFF nuclei still serves a slide scanner's SM. Those whose classes the
    # data did not cover (CT's nodule for a nuclei finetune) go.
    covered = {n for names in out.values() for n in names}
    for m in sorted(trained_modalities(init_config) or ()):
        if m not in out and (names := names_for(m)) and set(names) <= covered:
            out[m] = names
    return out


def carry_modality_entries(training: dict, init_training: dict, classes_by_modality: dict[str, list[str]]) -> None:
    """Fill the fine-tuned model's ``training`` metadata with what the init model declared, for the modalities
    the fine-tuning data contained only (in place).

    A nuclei finetune of the medical model must not keep the medical model's CT window and CT decode settings:
    its weights no longer find nodules (benchmarks/RESULTS.md, the session-9 microscopy model: 8,659 false
    objects in 8 synthetic CT volumes), and a kept entry reads as "calibrated for CT". Entries for other modalities are
    dropped, and ``classes_by_modality`` records which modalities (``""`` = images without one) the model was
    fine-tuned on (:data:`~smallseg.pipeline.classes.NON_DICOM_KEY` for ``""``), so dicom-batch says "not
    trained on CT" instead of staying silent.

    Args:
        training: the fine-tuned model's ``config.training`` (changed in place).
        init_training: the init model's ``config.training``.
        classes_by_modality: :func:`classes_by_modality_of` the fine-tuning images.
    """
    kept = {str(m).upper() for m in classes_by_modality}
    for key in ("normalization_by_modality", "decode_by_modality", "decode_tuned_on_by_modality"):
        entries = {k: v for k, v in dict(training.get(key) or init_training.get(key) or {}).items()
                   if str(k).upper() in kept}
        if entries:
            training[key] = entries
        else:
            training.pop(key, None)
    if "band_names" in init_training and "band_names" not in training:
        training["band_names"] = init_training["band_names"]
    training["classes_by_modality"] = {modality_key(m): list(v) for m, v in sorted(classes_by_modality.items())}


def _seconds_per_step(config, train_images: list[LabeledImage], device: str) -> float:
    """Wall-clock seconds of one optimiser step at these settings (a few measured steps on a throwaway model)."""
    model_config = _resolve_model_config(config, train_images)
    dev = resolve_device(device)
    model = build_from_config(model_config).to(dev)
    dataset = CropDataset(train_images, model_config, config.augment, samples_per_epoch=config.optim.batch_size * (
        _PACE_STEPS + 1), seed=config.seed + 12345,
        normalizations=[image_normalization(it, model_config) for it in train_images])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.optim.batch_size, collate_fn=collate)
    times = []
    for images, targets in loader:
        t0 = time.perf_counter()
        images = images.to(dev)
        targets = {k: v.to(dev) for k, v in targets.items()}
        losses = head_losses({k: v.float() for k, v in model(images).items()}, targets)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    # the first step pays for allocations; the data loading is in neither
    return float(np.median(times[1:] if len(times) > 1 else times)) * 1.15


def _bounded_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("epoch", "loss_total", "val_F1", "val_AP", "seconds")
    rows = [{k: (round(float(r[k]), 5) if isinstance(r.get(k), float) else r.get(k)) for k in keys if k in r}
            for r in history]
    if len(rows) > MAX_CURVE_POINTS:
        step = int(np.ceil(len(rows) / MAX_CURVE_POINTS))
        rows = rows[::step]
    return rows


def write_curve_png(history: list[dict[str, Any]], path: str | os.PathLike, *, title: str = "",
                    before_f1: float | None = None) -> Path:
    """A training-curve PNG (PIL): training loss (left axis, red) and validation F1 / AP (right axis, 0-1,
    blue / green) per epoch; the init model's validation F1 as a dashed grey line. Written atomically."""
    w, h, left, right, top, bottom = 720, 420, 60, 60, 36, 44
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    x0, x1, y0, y1 = left, w - right, top, h - bottom
    draw.rectangle([x0, y0, x1, y1], outline="black")
    epochs = [r["epoch"] for r in history]
    losses = [r.get("loss_total") for r in history]
    n = max(epochs[-1] if epochs else 1, 2)
    xs = lambda e: x0 + (x1 - x0) * (e - 1) / (n - 1)  # noqa: E731
    finite = [v for v in losses if v is not None and np.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    ys_loss = lambda v: y1 - (y1 - y0) * (v - lo) / (hi - lo)  # noqa: E731
    ys_unit = lambda v: y1 - (y1 - y0) * float(np.clip(v, 0, 1))  # noqa: E731
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = ys_unit(frac)
        draw.line([x0, y, x1, y], fill=(225, 225, 225))
        draw.text((x1 + 6, y - 6), f"{frac:.2f}", fill="black")
        draw.text((4, y - 6), f"{lo + (hi - lo) * frac:.3g}", fill=(190, 0, 0))
    if before_f1 is not None:
        y = ys_unit(before_f1)
        for xa in range(x0, x1, 12):
            draw.line([xa, y, min(xa + 6, x1), y], fill=(120, 120, 120), width=2)

    def polyline(values, ys, colour):
        points = [(xs(e), ys(v)) for e, v in zip(epochs, values) if v is not None and np.isfinite(v)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)

    polyline(losses, ys_loss, (190, 0, 0))
    polyline([r.get("val_F1") for r in history], ys_unit, (0, 70, 200))
    polyline([r.get("val_AP") for r in history], ys_unit, (0, 140, 60))
    draw.text((x0, 8), title[:90], fill="black")
    draw.text((x0, h - 30), f"epoch 1..{n}   red: training loss (left)   blue: val F1@0.5   green: val AP   "
                            "grey dashes: F1 before", fill="black")
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def load_labelled(options: FinetuneOptions, classes: ClassMapping) -> list[tuple[str, str, list[LabeledImage]]]:
    """Read every (image, labels) pair: ``[(image path, labels path, LabeledImages)]``."""
    mapping = ClassMapping(classes.names, dict(options.class_map), options.class_name)
    out = []
    for image, labels in zip(options.images, options.labels):
        out.append((image, labels, read_labels(image, labels, classes=mapping, area=options.area,
                                               class_field=options.class_field)))
    return out


def finetune(options: FinetuneOptions, *, progress: Callable[[str], None] | None = print) -> FinetuneResult:
    """Fine-tune ``options.init`` on the user's labels (module docstring); returns the result and scores.

    Raises:
        SmallsegError: one line for bad labels, a bad init model, a split that leaves nothing to validate on,
            or ``resume`` without a run to resume (or with other data / settings than that run).
    """
    say = progress or (lambda _msg: None)
    started = _clock()
    init_path = resolve_model(options.init)
    init_model = load_checkpoint(init_path)
    init_config = init_model.config
    if init_config.slice_context:
        # Label sources give single slices; a 2.5-D model needs each with its neighbours (train/data.py does
        # that for synthetic CT only).
        raise SmallsegError(f"finetune: the init model {options.init} is 2.5-D (slice_context "
                            f"{init_config.slice_context}: each slice with its neighbours) and fine-tuning gives it "
                            "single slices; train it from a config with synthetic CT instead")
    classes = class_mapping(init_config)
    pairs = load_labelled(options, classes)
    train_images, val_images, split_rows_info, notes = [], [], [], []
    for image, labels, items in pairs:
        for item in items:
            notes.extend(item.notes)
            part_train, part_val, info = split_rows(item, options.val_fraction)
            train_images.append(part_train)
            val_images.append(part_val)
            split_rows_info.append({"image": Path(image).name, "labels": Path(labels).name, "slice": item.name, **info})
    bands = {it.image.shape[-1] for it in train_images}
    if bands != {init_config.in_channels}:
        raise SmallsegError(f"finetune: the images have {sorted(bands)} band(s), the init model {options.init} reads "
                            f"{init_config.in_channels}; choose an init model for this imagery")
    for note in notes:
        say(f"note: {note}")
    train_rows = min(it.instances.shape[0] for it in train_images)
    crop = int(options.crop_size or init_config.tile_size_px)
    crop = max(64, min(crop, 32 * (max(train_rows, 64) // 32)))

    run_dir = run_dir_of(options.out)
    state_file = run_dir / "finetune.json"
    data_record = {
        "images": [Path(p).name for p in options.images], "labels": [Path(p).name for p in options.labels],
        "area": options.area, "split": split_rows_info,
        "train_objects": _objects(train_images), "val_objects": _objects(val_images),
        "train_pixels": int(sum(it.instances.size for it in train_images)),
        "val_pixels": int(sum(it.instances.size for it in val_images)),
    }
    if not data_record["train_objects"]:
        # Training on background only teaches the heads that nothing is an object: refuse before any step.
        raise SmallsegError(f"finetune: the training part of the labelled area holds no object "
                            f"({data_record['val_objects']} in the validation strip below it); label objects above "
                            f"the bottom {options.val_fraction:.0%} of the labelled rows, or give a larger area")
    settings = {k: v for k, v in asdict(options).items() if k not in ("images", "labels", "out", "resume")}
    settings["init"] = str(options.init)
    if options.resume:
        if not state_file.is_file():
            raise SmallsegError(f"finetune resume=True: {run_dir} holds no finetune run to resume")
        saved = json.loads(state_file.read_text())
        if saved.get("data", {}).get("split") != json.loads(json.dumps(split_rows_info)):
            raise SmallsegError(f"finetune resume=True: {run_dir} was a run on other images / labels / area; "
                                "start afresh without resume=True or give another out path")
        epochs, crop, before = int(saved["epochs"]), int(saved["crop_size"]), saved["before"]
        spent = float(saved.get("spent_s", 0.0))
        say(f"resuming {run_dir}: {len(_history(run_dir))} epoch(s) done, {spent / 60:.1f} of {options.minutes:g} "
            "minutes spent")
    else:
        say(f"data: {len(train_images)} training part(s) with {data_record['train_objects']} objects, validation "
            f"strip(s) with {data_record['val_objects']} objects (bottom {options.val_fraction:.0%} of the labelled "
            "rows of each image)")
        before = _short(_score(init_model, val_images))
        say(f"before: validation {_f1_name(val_images)} {_fmt(before.get('F1'))}  AP {_fmt(before.get('AP'))}  "
            f"({options.init}, its own decode settings)")
        if options.epochs is None:
            # The schedule is fitted to the budget: a few measured steps and one validation give the pace.
            probe = _train_config(options, init_path, init_config, crop, epochs=1)
            pace = _seconds_per_step(probe, train_images, options.device)
            t0 = _clock()
            _score(init_model, val_images)  # validation after every epoch costs too
            val_s = _clock() - t0
            epoch_s = pace * options.steps_per_epoch + val_s
            budget_s = options.minutes * 60 - (_clock() - started)
            epochs = int(np.clip(budget_s // epoch_s, 1, options.max_epochs))
            pace_text = f", about {epoch_s:.1f} s per epoch ({pace:.2f} s per step, {val_s:.1f} s validation)"
        else:
            epochs, pace_text = int(options.epochs), " (as given)"
        say(f"schedule: {epochs} epochs of {options.steps_per_epoch} steps (batch {options.batch_size}, crop {crop} "
            f"px){pace_text}")
        spent = 0.0
        run_dir.mkdir(parents=True, exist_ok=True)
        # A fresh run (no --resume) replaces what an earlier run of the same --out left in its run folder.
        for name in ("last.safetensors", "best.safetensors", "state.pt", "history.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
        write_json_atomic(state_file, {"epochs": epochs, "crop_size": crop, "before": before, "data": data_record,
                                       "settings": settings})
    config = _train_config(options, init_path, init_config, crop, epochs)
    budget_s = max(options.minutes * 60 - spent - (_clock() - started), 1.0)
    run_started = _clock()

    plan = json.loads(state_file.read_text())

    def on_epoch(record: dict[str, Any]) -> int | None:
        nonlocal epochs
        done = record["epoch"]
        elapsed = _clock() - run_started
        replan = None
        if done in (1, 2) and first_epoch == 1 and options.epochs is None:
            # The first epoch's real time (steps, validation, checkpoints) replaces the estimate the schedule
            # was fitted with; the loop re-fits its learning-rate schedule to the new length. The second
            # epoch's time does so again: the first one also pays one-off costs (thread pools, allocator, a
            # first checkpoint), which on a CPU made it 2.5x the steady pace and halved the schedule of a
            # 13-minute budget that then ended after 5.5 minutes.
            epoch_s = float(record.get("epoch_seconds") or elapsed / done)
            replan = refit_epochs(done, epoch_s, elapsed, budget_s, options.max_epochs)
            if replan != epochs:
                say(f"schedule re-fitted after epoch {done} ({epoch_s:.1f} s): {epochs} -> {replan} epochs")
                plan["refit"] = {"after_epoch": done, "planned_epochs": epochs, "epochs": replan,
                                 "epoch_s": round(epoch_s, 2)}
                plan["epochs"] = epochs = replan  # a resumed run follows the re-fitted plan
        # minutes spent, kept with the run so that a resumed run counts them against the budget
        write_json_atomic(state_file, {**plan, "spent_s": round(spent + elapsed, 1)})
        history_done = done - first_epoch + 1
        pace_s = elapsed / max(history_done, 1)
        left = min((epochs - done) * pace_s, max(budget_s - elapsed, 0.0))
        say(f"epoch {done}/{epochs}: loss {record.get('loss_total', float('nan')):.4f}  val F1 "
            f"{_fmt(record.get('val_F1'))}  AP {_fmt(record.get('val_AP'))}  elapsed "
            f"{(spent + elapsed) / 60:.1f} min  ETA {left / 60:.1f} min")
        return replan

    # A run killed before its first epoch ended has nothing to resume from but its plan: it starts that plan.
    resume_training = options.resume and (run_dir / "state.pt").is_file() and (run_dir / "last.safetensors").is_file()
    first_epoch = len(_history(run_dir)) + 1 if resume_training else 1
    result = train(config, run_dir, resume=resume_training, device=options.device, progress=False,
                   train_images=train_images, val_images=val_images, time_budget_s=budget_s,
                   patience=options.patience, on_epoch=on_epoch,
                   overwrite=not resume_training,  # OUT.finetune/ is this command's work folder: a fresh run restarts it
                   freeze_norm=True)
    say(f"training stopped ({result.stopped}) after {len(result.history)} epoch(s)")
    model = load_checkpoint(result.best_checkpoint)
    chosen: dict[str, Any] = {}
    if options.tune:
        chosen, _rows = tune_decode(model, val_images, metric="F1")
        model.config.training = {**model.config.training,
                                 "decode": {**dict(model.config.training.get("decode") or {}), **chosen}}
        say(f"decode settings tuned on the validation strip: {chosen}")
    after = _short(_score(model, val_images))
    say(f"after:  validation {_f1_name(val_images)} {_fmt(after.get('F1'))}  AP {_fmt(after.get('AP'))}  "
        f"(before: F1 {_fmt(before.get('F1'))}  AP {_fmt(before.get('AP'))})")
    before_tuned: dict[str, Any] | None = None
    if options.tune:
        # The fine-tuned model's decode settings were chosen on the validation strip; the init model gets the
        # same chance, or a strip's worth of decode tuning passes for what training bought (benchmarks/RESULTS.md,
        # the remote-sensing quarter: validation F1 up, test F1 down).
        init_chosen, _rows = tune_decode(init_model, val_images, metric="F1")
        init_decode = {**dict((init_config.training or {}).get("decode") or {}), **init_chosen}
        before_tuned = {**_short(_score(init_model, val_images, init_decode)), "decode": init_chosen}
        say(f"init model with decode settings tuned on the same strip: F1 {_fmt(before_tuned.get('F1'))}  "
            f"AP {_fmt(before_tuned.get('AP'))}")
    baseline = [v for v in (before.get("F1"), (before_tuned or {}).get("F1")) if v is not None]
    worse = after.get("F1") is not None and bool(baseline) and after["F1"] < max(baseline)
    if worse:
        say(f"warning: the fine-tuned model scores below the init model on the validation strip (F1 "
            f"{_fmt(after.get('F1'))} < {_fmt(max(baseline))}); more minutes or labels may help, or keep "
            f"{options.init}")
    training = dict(model.config.training or {})
    init_training = init_config.training or {}
    carry_modality_entries(training, init_training, classes_by_modality_of(
        init_config, {it.modality for it in train_images}, list(model.config.class_names or [])))
    record = {
        "init": Path(init_path).name, "data": data_record, "settings": settings,
        "validation": f"bottom {options.val_fraction:.0%} of the labelled rows of each image (at least "
                      f"{MIN_VAL_ROWS} rows); training never sees those rows",
        "epochs": len(result.history), "planned_epochs": epochs, "refit": plan.get("refit"),
        "stopped": result.stopped,
        "crop_size": crop, "decode_tuned": chosen, "before": before, "before_tuned": before_tuned,
        "after": after, "worse_than_init": worse,
        "history": _bounded_history(result.history),
    }
    training["finetune"] = record
    training.pop("decode_tuned_on", None)
    model.config.training = training
    out = save_checkpoint(model, options.out)  # atomic: a temporary name, renamed when complete
    curve = write_curve_png(result.history, curve_path_of(options.out), before_f1=before.get("F1"),
                            title=f"finetune {Path(options.out).name} from {options.init}: F1 "
                                  f"{_fmt(before.get('F1'))} -> {_fmt(after.get('F1'))}")
    say(f"wrote {out} and {curve}")
    return FinetuneResult(checkpoint=out, curve_png=curve, before=before, after=after,
                          epochs=len(result.history), stopped=result.stopped, record=record)


def _f1_name(val_images: Sequence[LabeledImage]) -> str:
    """What ``F1`` means on these validation parts (:func:`smallseg.train.scoring.score_predictions`)."""
    return f"box F1@{BOX_IOU:g}" if all(it.boxes_only for it in val_images) else "F1@0.5"


def _history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
