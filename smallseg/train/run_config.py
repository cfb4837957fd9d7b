"""A training run's configuration: the YAML file's sections, typed and checked, and its data sources read.

:func:`load_train_config` reads ``smallseg train CONFIG.yaml`` (format in :mod:`smallseg.train.loop`) into a
:class:`TrainConfig`; every section and each data source is key-checked with a one-line "did you mean" for typos.
:func:`load_source` turns one ``<source>`` into :class:`~smallseg.train.data.LabeledImage` s (synthetic worlds,
GeoTIFF pairs, COCO, and the label sources of :mod:`smallseg.data.labels`), with its labelled ``area:`` applied.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smallseg.data import labels as label_sources
from smallseg.data.labels import ClassMapping
from smallseg.data.medical import make_ct_volume
from smallseg.data.microscopy import make_nuclei_image
from smallseg.data.remote_sensing import make_remote_sensing_scene
from smallseg.decode.centroids import DecodeConfig
from smallseg.errors import SmallsegError, one_line
from smallseg.models import ModelConfig
from smallseg.normalize import Normalization
from smallseg.train.augment import AugmentConfig
from smallseg.train.config_file import check_keys, read_config_file
from smallseg.train.data import (
    LabeledImage,
    read_coco,
    read_geotiff_pair,
    synthetic_images,
)

_SECTIONS = ("name", "model", "data", "augment", "loss", "decode", "optim", "seed", "device", "amp", "workers",
             "storage_dtype", "select_metric", "init", "tune_decode", "normalize", "normalize_by_modality")


@dataclass
class OptimConfig:
    """Optimisation schedule: AdamW with a short linear warm-up, then cosine decay to ``lr * min_lr_ratio``."""

    epochs: int = 10
    steps_per_epoch: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.02
    grad_clip: float = 5.0
    #: decay per step of an exponential moving average of the weights (None: off). When on, validation, the
    #: best checkpoint and ``last.safetensors``'s companion ``ema`` state use the averaged weights: on a few
    #: hundred labelled objects the raw weights' validation score jumps by +-0.05 F1 from epoch to epoch.
    ema_decay: float | None = None

    def __post_init__(self):
        if self.ema_decay is not None and not (isinstance(self.ema_decay, (int, float))
                                               and not isinstance(self.ema_decay, bool) and 0 < self.ema_decay < 1):
            raise SmallsegError(f"optim.ema_decay {self.ema_decay!r:.40}: must be a number between 0 and 1 "
                                "(e.g. 0.98), or left out")


@dataclass
class TrainConfig:
    """A parsed training YAML (see the module docstring for the format)."""

    name: str
    model: dict[str, Any]
    data: dict[str, Any]
    augment: AugmentConfig
    loss: dict[str, float] = field(default_factory=dict)
    decode: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    workers: int = 0
    storage_dtype: str = "float32"
    select_metric: str = "AP_small"
    init: Path | None = None
    tune_decode: bool = True
    source_dir: Path = field(default_factory=Path.cwd)
    normalize: dict[str, Any] | None = None
    normalize_by_modality: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_train_config(path: str | os.PathLike) -> TrainConfig:
    """Parse a training YAML, its ``base:`` chain merged in; relative file paths in it are taken relative to the
    YAML's folder."""
    path = Path(path)
    raw = read_config_file(path, sections=_SECTIONS, kind="training config")
    for required in ("model", "data"):
        if required not in raw:
            raise SmallsegError(f"{path}: missing the '{required}:' section")
    _check_sections(raw, path)
    try:
        augment = AugmentConfig.from_dict(raw.get("augment"))
        optim = OptimConfig(**(raw.get("optim") or {}))
    except (TypeError, ValueError) as exc:
        raise SmallsegError(f"{path}: {one_line(exc)}") from None
    normalize = raw.get("normalize")
    by_modality = raw.get("normalize_by_modality") or {}
    if normalize is not None and not isinstance(normalize, dict):
        raise SmallsegError(f"{path}: normalize: expected a mapping such as {{kind: percentile, lo: 1, hi: 99.8}}")
    if not isinstance(by_modality, dict) or not all(isinstance(v, dict) for v in by_modality.values()):
        raise SmallsegError(f"{path}: normalize_by_modality: expected {{MODALITY: {{kind: ...}}}}, e.g. "
                            "{CT: {kind: window, windows: [[-600, 1500]]}}")
    for where, spec in [("normalize", normalize), *((f"normalize_by_modality.{k}", v) for k, v in by_modality.items())]:
        if spec is not None:
            try:
                _mapping_of(spec, scale=1.0)  # check it now, with a stand-in for an 'auto' scale
            except SmallsegError as exc:
                raise SmallsegError(f"{path}: {where}: {exc}") from None
    return TrainConfig(
        name=str(raw.get("name", path.stem)),
        model=dict(raw["model"]),
        data=dict(raw["data"]),
        augment=augment,
        loss=dict(raw.get("loss") or {}),
        decode=dict(raw.get("decode") or {}),
        optim=optim,
        seed=int(raw.get("seed", 0)),
        device=str(raw.get("device", "auto")),
        amp=bool(raw.get("amp", True)),
        workers=int(raw.get("workers", 0)),
        storage_dtype=str(raw.get("storage_dtype", "float32")),
        select_metric=str(raw.get("select_metric", "AP_small")),
        init=(path.resolve().parent / raw["init"]) if raw.get("init") else None,
        tune_decode=bool(raw.get("tune_decode", True)),
        source_dir=path.resolve().parent,
        normalize=None if normalize is None else dict(normalize),
        normalize_by_modality={str(k).strip().upper(): dict(v) for k, v in by_modality.items()},
    )


LOSS_KEYS = ("semantic_weight", "centroid_weight", "distance_weight", "class_weights")  # head_losses' keywords
DATA_KEYS = ("train", "val")


def _section(raw: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SmallsegError(f"{path}: {name}: expected a mapping, got {type(value).__name__} {value!r:.60}")
    return value


def _check_sections(raw: dict[str, Any], path: Path) -> None:
    """Every key of the ``optim``, ``loss``, ``decode`` and ``data`` sections (and of each data source) is one
    the training reads, with a value of the right kind: a typo is one line naming the closest key, never a
    TypeError mid-run or a setting silently ignored."""
    optim = _section(raw, "optim", path)
    check_keys(optim, OptimConfig.__dataclass_fields__, f"{path}: optim")
    loss = _section(raw, "loss", path)
    check_keys(loss, LOSS_KEYS, f"{path}: loss")
    for key, value in loss.items():
        values = value if key == "class_weights" and isinstance(value, list) else [value]
        if key == "class_weights" and not isinstance(value, list):
            raise SmallsegError(f"{path}: loss.class_weights: expected a list of numbers (background first), "
                                f"got {value!r:.60}")
        if not all(_is_real(v) for v in values):
            raise SmallsegError(f"{path}: loss.{key}: expected {'numbers' if len(values) > 1 else 'a number'}, "
                                f"got {value!r:.60}")
    decode = _section(raw, "decode", path)
    check_keys(decode, DecodeConfig.__dataclass_fields__, f"{path}: decode")
    for key, value in decode.items():
        if not _is_real(value):
            raise SmallsegError(f"{path}: decode.{key}: expected a number, got {value!r:.60}")
    data = _section(raw, "data", path)
    check_keys(data, DATA_KEYS, f"{path}: data")
    for split in DATA_KEYS:
        specs = data.get(split)
        if specs is None:
            continue
        if not isinstance(specs, list):
            raise SmallsegError(f"{path}: data.{split}: expected a list of sources such as "
                                "[{synthetic: nuclei, count: 8}]")
        for i, spec in enumerate(specs):
            check_source(spec, f"{path}: data.{split}[{i}]")
            _check_slice_context(spec, raw.get("model") or {}, f"{path}: data.{split}[{i}]")


def _check_slice_context(spec: dict, model: dict, where: str) -> None:
    """A 2.5-D model (``model.slice_context``) and its synthetic CT slices must hold the same neighbours."""
    wanted = model.get("slice_context", 0) if isinstance(model, dict) else 0
    if wanted and any(k in spec for k in ("nifti", "volume", "dicom_seg")):
        raise SmallsegError(f"{where}: label volumes give single slices; a 2.5-D model (model.slice_context "
                            f"{wanted}) is trained on synthetic CT for now")
    if spec.get("synthetic") != "ct":
        return
    given = (spec.get("options") or {}).get("slice_context", 0)
    if given != wanted:
        raise SmallsegError(f"{where}: options.slice_context {given} but model.slice_context {wanted}; a 2.5-D model "
                            "is trained on slices with the same neighbours it is given in predict_volume")


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_SYNTHETIC_KEYS = ("synthetic", "count", "size", "seed", "options", "modality")
# Generator keywords a synthetic source's options: may not set (the source sets them itself).
_SYNTHETIC_FIXED = ("height", "width", "size_xyz", "seed")


def _synthetic_options(kind: str) -> tuple[str, ...] | None:
    """The ``options:`` keys of a synthetic source of ``kind`` (its generator's keywords); None: unknown kind."""
    if kind == "remote-sensing":
        generator, extra = make_remote_sensing_scene, ()
    elif kind == "nuclei":
        generator, extra = make_nuclei_image, ("class_id",)
    elif kind == "ct":
        generator, extra = make_ct_volume, ("class_id", "slices", "slice_context")
    else:
        return None
    names = [n for n, p in inspect.signature(generator).parameters.items()
             if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in _SYNTHETIC_FIXED]
    return (*names, *extra)


def check_source(spec: Any, where: str = "data source") -> str:
    """Check one data source's keys (see the module docstring) and return its kind.

    Raises:
        SmallsegError: not a mapping with exactly one kind, or a key that kind does not read (naming the
            closest one).
    """
    kinds = [k for k in SOURCE_KINDS if isinstance(spec, dict) and k in spec]
    if len(kinds) != 1:
        raise SmallsegError(f"{where}: {spec!r:.80}: give exactly one of {', '.join(k + ':' for k in SOURCE_KINDS)}")
    kind = kinds[0]
    if kind == "synthetic":
        check_keys(spec, _SYNTHETIC_KEYS, f"{where} (synthetic)")
        allowed = _synthetic_options(str(spec["synthetic"]))
        if allowed is None:
            raise SmallsegError(f"{where}: synthetic: unknown kind {spec['synthetic']!r}; use remote-sensing, "
                                "nuclei or ct")
        options = spec.get("options") or {}
        if not isinstance(options, dict):
            raise SmallsegError(f"{where}: synthetic options: expected a mapping of generator settings")
        check_keys(options, allowed, f"{where}: synthetic {spec['synthetic']} options")
        for key in ("count", "size", "seed"):
            if key in spec and not (isinstance(spec[key], int) and not isinstance(spec[key], bool)):
                raise SmallsegError(f"{where}: {key}: expected a whole number, got {spec[key]!r:.40}")
        return kind
    check_keys(spec, (kind, "modality"), f"{where} ({kind})")
    if not isinstance(spec[kind], dict):
        raise SmallsegError(f"{where}: {kind}: expected a mapping of {', '.join(_SOURCE_KEYS[kind])}")
    check_keys(spec[kind], _SOURCE_KEYS[kind], f"{where}: {kind}")
    return kind


SOURCE_KINDS = ("synthetic", "geotiff", "coco", "vector", "label_image", "boxes", "nifti", "volume", "dicom_seg")
_SOURCE_KEYS = {
    "geotiff": ("image", "instances", "classes", "bands", "area"),
    "coco": ("annotations", "images", "area"),
    "vector": ("image", "labels", "class_field", "class_map", "class_name", "layer", "area", "bands"),
    "label_image": ("image", "labels", "classes", "class_name", "area", "bands"),
    "boxes": ("labels", "images", "image", "class_map", "class_name", "area"),
    "nifti": ("image", "labels", "class_name", "area", "modality", "empty_slices"),
}
_SOURCE_KEYS["volume"] = _SOURCE_KEYS["nifti"]
# A DICOM series folder + a SEG referencing it; its modality comes from the series itself (read_dicom_seg).
_SOURCE_KEYS["dicom_seg"] = ("series", "seg", "class_map", "class_name", "area", "empty_slices")
_REQUIRED = {"geotiff": ("image", "instances"), "coco": ("annotations", "images"), "boxes": ("labels",),
             "dicom_seg": ("series", "seg")}


def class_mapping(model: dict[str, Any] | ModelConfig, renames: dict | None = None,
                  default: str | None = None):
    """The :class:`~smallseg.data.labels.ClassMapping` of a config's ``model:`` section (or a ModelConfig)."""
    if isinstance(model, ModelConfig):
        return ClassMapping.of(model.class_names, model.classes, renames, default)
    return ClassMapping.of(model.get("class_names"), int(model.get("classes", 1)), renames, default)


def load_source(spec: dict[str, Any], base_dir: Path, classes=None) -> list[LabeledImage]:
    """Materialise one data source of a training config as labelled images (see module docstring).

    Args:
        spec: one entry of ``data.train`` / ``data.val``.
        base_dir: relative paths in it are relative to this folder.
        classes: the model's :class:`~smallseg.data.labels.ClassMapping` (class names of the label files are
            mapped onto it); None: a one-class model.
    """
    kind = check_source(spec)
    resolve = lambda p: None if p is None else (base_dir / p)  # noqa: E731

    def area_of(g: dict[str, Any]):
        area = g.get("area")
        if area is None or label_sources.area.is_pixel_box(area):
            return area
        return resolve(area)

    def mapping(g: dict[str, Any]):
        base = classes if classes is not None else label_sources.ClassMapping.of(None, 1)
        return label_sources.ClassMapping(base.names, {**base.renames, **dict(g.get("class_map") or {})},
                                          g.get("class_name", base.default))

    if kind == "synthetic":
        # raw: the model's normalisation maps them, as it maps every input at inference
        images = synthetic_images(
            str(spec["synthetic"]), count=int(spec.get("count", 8)), size=int(spec.get("size", 512)),
            seed=int(spec.get("seed", 0)), raw=True, **dict(spec.get("options") or {}),
        )
    else:
        g = spec[kind]
        missing = [k for k in _REQUIRED.get(kind, ("image", "labels")) if g.get(k) is None]
        if missing:
            raise SmallsegError(f"data source {kind}: missing {', '.join(missing)}")
        if kind == "geotiff":
            images = [read_geotiff_pair(resolve(g["image"]), resolve(g["instances"]), resolve(g.get("classes")),
                                        bands=g.get("bands"))]
        elif kind == "coco":
            images = read_coco(resolve(g["annotations"]), resolve(g["images"]))
        elif kind == "vector":
            images = [label_sources.read_vector_labels(
                resolve(g["image"]), resolve(g["labels"]), classes=mapping(g), class_field=g.get("class_field"),
                layer=g.get("layer"), area=area_of(g), bands=g.get("bands"))]
        elif kind == "label_image":
            images = [label_sources.read_label_image(resolve(g["image"]), resolve(g["labels"]), classes=mapping(g),
                                                     class_labels=resolve(g.get("classes")), area=area_of(g),
                                                     bands=g.get("bands"))]
        elif kind == "boxes":
            images = label_sources.read_boxes(resolve(g["labels"]), classes=mapping(g), images=resolve(g.get("images")),
                                              area=area_of(g), image=resolve(g.get("image")))
        elif kind == "dicom_seg":
            images = label_sources.read_dicom_seg(resolve(g["series"]), resolve(g["seg"]), classes=mapping(g),
                                                  area=area_of(g), empty_slices=bool(g.get("empty_slices", True)))
        else:
            images = label_sources.read_label_volume(resolve(g["image"]), resolve(g["labels"]), classes=mapping(g),
                                                     area=area_of(g), modality=str(g.get("modality") or ""),
                                                     empty_slices=bool(g.get("empty_slices", True)))
        if kind in ("geotiff", "coco") and g.get("area") is not None:
            geo = label_sources.common.read_image_file(resolve(g["image"]))[1] if kind == "geotiff" else None
            for item in images:
                mask = label_sources.labelled_area(area_of(g), item.instances.shape, geo, where=f"area {g['area']}")
                item.instances = label_sources.apply_area(item.instances, mask)
    modality = str(spec.get("modality", "") or "").strip().upper()
    if modality:
        for item in images:
            item.modality = modality
    return images


def _mapping_of(spec: dict[str, Any], *, scale: float | None) -> Normalization:
    """The mapping part of a YAML ``normalize:`` entry (mean/std dropped; an ``auto`` scale replaced)."""
    values = {k: v for k, v in spec.items() if k not in ("mean", "std")}
    if values.get("scale") == "auto":
        values["scale"] = scale
    return Normalization.from_dict(values)
