"""Checkpoints: one safetensors file, weights + the model's JSON config in the file's metadata.

Loading never executes code from the file: the file must *be* a safetensors file (a pickle, e.g. a
``torch.save`` ``.pt``, is refused before any reader sees it: unpickling can run code), the config is JSON
validated against an allow-list (:mod:`smallseg.models.validate`: nothing in it can name a file, a URL or
a callable), the model is rebuilt from it by smallseg's own builders, and the weights are plain tensors,
loaded strictly.

Metadata keys: ``smallseg_format`` (format version), ``smallseg_config`` (ModelConfig JSON),
``smallseg_storage_dtype`` (``float32`` or ``float16``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from smallseg.errors import SmallsegError, one_line
from smallseg.io.atomic import atomic_path
from smallseg.models.config import ModelConfig
from smallseg.models.net import build_from_config
from smallseg.models.state import load_encoder_weights, load_state_strict

FORMAT_VERSION = 1
_STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def save_checkpoint(model: nn.Module, path: str | os.PathLike, *, storage_dtype: str = "float32") -> Path:
    """Write ``model`` (a SmallObjectNet with ``model.config``) to one ``.safetensors`` file.

    Args:
        model: the model; its ``config`` is stored as JSON in the file's metadata.
        path: output file. Written to a temporary name beside it and renamed when complete.
        storage_dtype: ``"float32"`` (bit-exact) or ``"float16"`` (half the size; floating tensors are
            rounded to float16 and cast back on load; integer buffers are kept as they are).

    Returns:
        The path written.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise SmallsegError("save_checkpoint: the model has no smallseg ModelConfig (build it with smallseg.models)")
    config.validate()  # a file this writes must load again (e.g. after tune-decode edited config.training)
    if storage_dtype not in _STORAGE_DTYPES:
        raise SmallsegError(f"storage_dtype={storage_dtype!r}: use 'float32' or 'float16'")
    dtype = _STORAGE_DTYPES[storage_dtype]
    tensors = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous().clone()  # clone: safetensors refuses shared storage
    metadata = {
        "smallseg_format": str(FORMAT_VERSION),
        "smallseg_config": config.to_json(),
        "smallseg_storage_dtype": storage_dtype,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_checkpoint_config(path: str | os.PathLike) -> ModelConfig:
    """The :class:`ModelConfig` stored in a checkpoint, without reading the weights."""
    config, _, _ = _open_checkpoint(path, read_tensors=False)
    return config


def load_checkpoint(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    expected_config: ModelConfig | None = None,
) -> nn.Module:
    """Rebuild the model stored at ``path`` and load its weights strictly.

    Args:
        path: a file written by :func:`save_checkpoint`.
        device: where the model's tensors go.
        expected_config: if given, the checkpoint's architecture must match it (encoder, bands, classes,
            heads, LFE, decoder); otherwise a SmallsegError names the differences.

    Returns:
        SmallObjectNet in eval mode, float32, on ``device``, with ``model.config`` from the file.
    """
    config, tensors, path = _open_checkpoint(path, read_tensors=True)
    if expected_config is not None:
        mismatches = config.architecture_mismatches(expected_config)
        if mismatches:
            raise SmallsegError(f"{path}: {'; '.join(mismatches)}")
    model = build_from_config(config)
    load_state_strict(model, tensors, str(path))
    return model.to(device).eval()


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a checkpoint's weights into an existing ``model`` (e.g. to resume or fine-tune).

    The checkpoint's architecture must match ``model.config``; a SmallsegError names any mismatch, e.g.
    ``"ckpt.safetensors: checkpoint expects 4 input bands, model has 3"``. Returns ``model``.
    """
    config, tensors, path = _open_checkpoint(path, read_tensors=True)
    model_config = getattr(model, "config", None)
    if isinstance(model_config, ModelConfig):
        mismatches = config.architecture_mismatches(model_config)
        if mismatches:
            raise SmallsegError(f"{path}: {'; '.join(mismatches)}")
    load_state_strict(model, tensors, str(path))
    return model


# What a safetensors file starts with: an 8-byte little-endian header length, then the JSON header's "{".
_SAFETENSORS_HEADER_START = b"{"
# Files that are pickles by convention (torch.save, pickle.dump, Lightning, timm, transformers' .bin).
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar", ".pth.tar")


def _looks_pickled(path: Path, head: bytes, tail: bytes) -> bool:
    """A pickle (protocol 2-5 opens with PROTO, 0-1 with an opcode and end with STOP ``.``), a torch.save
    zip archive, or a file named like one."""
    return (
        (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))
        or head.startswith(b"PK\x03\x04")
        or (head[:1] in (b"c", b"(", b"}", b"]") and tail == b".")
        or path.name.lower().endswith(_PICKLE_SUFFIXES)
    )


def check_safetensors_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is an existing file that starts like a safetensors file; else one line.

    Runs before any reader opens the file: a pickle is named as such ("pickled models are not loaded: they
    can run code"), anything else that is not safetensors is called truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise SmallsegError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            f.seek(max(path.stat().st_size - 1, 0))
            tail = f.read(1)
    except OSError as exc:
        raise SmallsegError(f"{path}: cannot read the checkpoint ({one_line(exc)})") from None
    if len(head) == 9 and head[8:9] == _SAFETENSORS_HEADER_START:
        return path
    if _looks_pickled(path, head, tail):
        raise SmallsegError(
            f"{path}: not a safetensors checkpoint (pickled models are not loaded: they can run code); use a "
            ".safetensors file written by smallseg (save_checkpoint, smallseg train)"
        )
    raise SmallsegError(
        f"{path}: not a readable safetensors file, truncated or corrupt (no safetensors header); re-save or "
        "re-download it"
    )


def _open_checkpoint(path: str | os.PathLike, *, read_tensors: bool):
    path = check_safetensors_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()} if read_tensors else None
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise SmallsegError(
            f"{path}: not a readable safetensors file, truncated or corrupt ({one_line(exc)}); re-save or "
            "re-download it"
        ) from None
    if "smallseg_config" not in metadata:
        raise SmallsegError(f"{path}: safetensors file without a smallseg model config; not a smallseg checkpoint")
    try:
        version = int(metadata.get("smallseg_format", "0"))
    except ValueError:
        version = -1
    if version != FORMAT_VERSION:
        raise SmallsegError(
            f"{path}: checkpoint format {metadata.get('smallseg_format')!r}, this smallseg reads format "
            f"{FORMAT_VERSION}; use a matching smallseg version"
        )
    try:
        config = ModelConfig.from_json(metadata["smallseg_config"])
    except SmallsegError as exc:
        raise SmallsegError(f"{path}: {exc}") from None
    return config, tensors, path


__all__ = [
    "FORMAT_VERSION",
    "check_safetensors_file",
    "load_checkpoint",
    "load_encoder_weights",
    "load_weights",
    "read_checkpoint_config",
    "save_checkpoint",
]
