"""Models: smp/timm encoder -> FPN fusion -> LFE -> full-resolution refinement -> centroid heads.

Public API::

    build_model(encoder_name, *, classes, in_channels, lfe, heads, max_distance_px, ...) -> SmallObjectNet
    wrap(smp_model, *, classes, heads, lfe, ...) -> SmallObjectNet
    build_from_config(config) -> SmallObjectNet
    save_checkpoint(model, path, *, storage_dtype) / load_checkpoint(path, *, device, expected_config)
    ModelConfig
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

__all__ = [
    "HEAD_NAMES",
    "LocalFeatureExtraction",
    "ModelConfig",
    "SmallObjectNet",
    "build_from_config",
    "build_model",
    "count_parameters",
    "load_checkpoint",
    "load_weights",
    "read_checkpoint_config",
    "save_checkpoint",
    "wrap",
]
