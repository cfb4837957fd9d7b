"""Checkpoints: one safetensors file, weights + the model's JSON config in the file's metadata.

Loading never executes code from the file: the config is JSON, the model is rebuilt from it by smallseg's
own builders, and the weights are plain tensors (safetensors), loaded strictly.

Metadata keys: ``smallseg_format`` (format version), ``smallseg_config`` (ModelConfig JSON),
``smallseg_storage_dtype`` (``float32`` or ``float16``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from smallseg.errors import SmallsegError, one_line
from smallseg.models.config import ModelConfig

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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        # mkstemp creates 0600; a model file is meant to be shared (and shipped), so use the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
    from smallseg.models.net import build_from_config

    config, tensors, path = _open_checkpoint(path, read_tensors=True)
    if expected_config is not None:
        mismatches = config.architecture_mismatches(expected_config)
        if mismatches:
            raise SmallsegError(f"{path}: {'; '.join(mismatches)}")
    model = build_from_config(config)
    _load_state_strict(model, tensors, str(path))
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
    _load_state_strict(model, tensors, str(path))
    return model


def load_encoder_weights(encoder: nn.Module, path: str | os.PathLike) -> None:
    """Initialise an smp encoder from a local weights file (safetensors, or torch with weights_only).

    The file holds the encoder's state dict; keys may carry an ``encoder.`` prefix (a whole smp or
    smallseg model's weights, of which only the encoder's are used).
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                state = {k: f.get_tensor(k) for k in f.keys()}
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise SmallsegError(f"{path}: cannot read encoder weights ({one_line(exc)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SmallsegError(f"{path}: not a state dict of tensors")
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    _load_state_strict(encoder, state, str(path), what="encoder weights")


def _open_checkpoint(path: str | os.PathLike, *, read_tensors: bool):
    path = Path(path)
    if not path.is_file():
        raise SmallsegError(f"{path}: no such checkpoint file")
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


def _load_state_strict(module: nn.Module, tensors: dict, source: str, what: str = "checkpoint") -> None:
    """Copy ``tensors`` into ``module``; every key and shape must match (dtype is cast to the module's)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong_shape = [k for k in own if k in tensors and tuple(own[k].shape) != tuple(tensors[k].shape)]
    if missing or unexpected or wrong_shape:
        parts = []
        if wrong_shape:
            k = wrong_shape[0]
            parts.append(
                f"{len(wrong_shape)} tensors differ in shape (e.g. {k}: {what} {tuple(tensors[k].shape)}, "
                f"model {tuple(own[k].shape)})"
            )
        if missing:
            parts.append(f"{len(missing)} model tensors missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        raise SmallsegError(f"{source}: {what} does not fit the model: {'; '.join(parts)}")
    converted = {k: v.to(own[k].dtype) for k, v in tensors.items()}
    module.load_state_dict(converted, strict=True)


def checkpoint_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Raw metadata strings of a checkpoint (format, config JSON, storage dtype)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001
        raise SmallsegError(f"{path}: not a readable safetensors file ({one_line(exc)})") from None


__all__ = [
    "FORMAT_VERSION",
    "checkpoint_metadata",
    "load_checkpoint",
    "load_encoder_weights",
    "load_weights",
    "read_checkpoint_config",
    "save_checkpoint",
]
