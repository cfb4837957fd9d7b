"""Models: smp/timm encoder -> FPN fusion -> LFE -> full-resolution refinement -> centroid heads.

Public API::

    build_model(encoder_name, *, classes, in_channels, lfe, heads, max_distance_px, ...) -> SmallObjectNet
    wrap(smp_model, *, classes, heads, lfe, ...) -> SmallObjectNet
    build_from_config(config) -> SmallObjectNet
    save_checkpoint(model, path, *, storage_dtype) / load_checkpoint(path, *, device, expected_config)
    ModelConfig                                   (validated on construction: smallseg.models.validate)
    load_model(name_or_path, *, device) -> SmallObjectNet      (a built-in name or a checkpoint path)
    prepare_model(model_or_name_or_path, device) -> (model, ModelSource)
    resolve_device(device) -> torch.device
    weights_fingerprint(model) -> str             (SHA-256 of config + weights; every resume marker uses it)

A checkpoint's config is data: it is checked against an allow-list (smallseg.models.validate) before
anything is built, so nothing in a checkpoint can name a file, a URL or a callable.
"""

from smallseg.models.checkpoint import (
    load_checkpoint,
    load_weights,
    read_checkpoint_config,
    save_checkpoint,
)
from smallseg.models.config import HEAD_NAMES, ModelConfig
from smallseg.models.lfe import LocalFeatureExtraction
from smallseg.models.net import SmallObjectNet, build_from_config, build_model, count_parameters, wrap
from smallseg.models.registry import ModelSource, load_model, prepare_model, resolve_device, weights_fingerprint

__all__ = [
    "HEAD_NAMES",
    "LocalFeatureExtraction",
    "ModelConfig",
    "ModelSource",
    "SmallObjectNet",
    "build_from_config",
    "build_model",
    "count_parameters",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "prepare_model",
    "read_checkpoint_config",
    "resolve_device",
    "save_checkpoint",
    "weights_fingerprint",
    "wrap",
]
