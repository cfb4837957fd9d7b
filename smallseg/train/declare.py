"""Declare in a checkpoint how its input is prepared: normalisation (default and per modality) and band names.

Checkpoints trained before :mod:`smallseg.normalize` carry only ``input_scale`` / ``norm_mean`` / ``norm_std``,
and the intensity mapping they were trained with (per-image percentiles for microscopy, a CT window) was
known only to the entry points. :func:`declare_input` writes it into the checkpoint's config
(``training["normalization"]``, ``["normalization_by_modality"]``, ``["band_names"]``), weights unchanged, so
that every pipeline reads it from the model instead of assuming it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from safetensors import safe_open

from smallseg.bands import model_band_names
from smallseg.errors import SmallsegError
from smallseg.models import load_checkpoint, save_checkpoint
from smallseg.normalize import Normalization, normalizations_of


def declare_input(source: str | os.PathLike, out: str | os.PathLike, *, normalization: Normalization,
                  by_modality: dict[str, Normalization] | None = None, band_names: Sequence[str] | None = None,
                  storage_dtype: str | None = None) -> Path:
    """Load the checkpoint ``source``, declare its input preparation, save it to ``out`` (atomically).

    Args:
        source, out: checkpoint paths (may be the same file).
        normalization: the default :class:`~smallseg.normalize.Normalization`; its output channel count
            must match the model's ``in_channels`` for a ``in_channels``-band input.
        by_modality: ``{DICOM modality: Normalization}`` overriding the default for such inputs (e.g. CT).
        band_names: what the input bands mean (e.g. ``("red", "green", "blue")``), see :mod:`smallseg.bands`.
        storage_dtype: weight storage dtype of the written file (None: as ``source`` stores them).

    Returns:
        The path written.
    """
    model = load_checkpoint(source)
    if storage_dtype is None:
        with safe_open(str(source), "np") as fh:
            storage_dtype = (fh.metadata() or {}).get("smallseg_storage_dtype", "float32")
    config = model.config
    training = dict(config.training or {})
    norms = {"": normalization, **{k.strip().upper(): v for k, v in (by_modality or {}).items()}}
    for key, norm in norms.items():
        if not isinstance(norm, Normalization):
            raise SmallsegError(f"declare_input: {key or 'default'} normalization must be a Normalization")
        if norm.mean is not None and len(norm.mean) != config.in_channels:
            raise SmallsegError(f"declare_input: {key or 'default'} normalization standardises {len(norm.mean)} "
                                f"channels, the model takes {config.in_channels}")
    training["normalization"] = normalization.to_dict()
    if by_modality:
        training["normalization_by_modality"] = {k: v.to_dict() for k, v in sorted(norms.items()) if k}
    if band_names is not None:
        names = model_band_names(type("Declared", (), {"training": {"band_names": list(band_names)}})())
        if len(names) != config.in_channels:
            raise SmallsegError(f"declare_input: {len(names)} band names for {config.in_channels} input bands")
        training["band_names"] = list(names)
    config.training = training
    normalizations_of(config)  # what a reader will parse: refuse now what it would refuse then
    return save_checkpoint(model, out, storage_dtype=storage_dtype)
