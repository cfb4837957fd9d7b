"""Weights in and out of modules: strict state loading and encoder initialisation from a local file.

The lowest layer of ``smallseg.models``: :mod:`~smallseg.models.net` (encoder weights at build time) and
:mod:`~smallseg.models.checkpoint` (a whole model's weights) both use it, and it imports neither, so the
two never import each other.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from smallseg.errors import SmallsegError, one_line


def load_state_strict(module: nn.Module, tensors: dict[str, torch.Tensor], source: str,
                      what: str = "checkpoint") -> None:
    """Copy ``tensors`` into ``module``; every key and shape must match (dtype is cast to the module's).

    Args:
        module: the receiving module.
        tensors: name -> tensor, e.g. a safetensors file's contents.
        source: what to name in an error (usually the file).
        what: what the tensors are, for the error (``"checkpoint"``, ``"encoder weights"``).

    Raises:
        SmallsegError: one line counting missing, unexpected and wrongly shaped tensors, with an example of each.
    """
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


def load_encoder_weights(encoder: nn.Module, path: str | os.PathLike) -> None:
    """Initialise an smp encoder from a local weights file (safetensors, or torch with ``weights_only``).

    The file holds the encoder's state dict; keys may carry an ``encoder.`` prefix (a whole smp or
    smallseg model's weights, of which only the encoder's are used). This is a file the *user* names in
    :func:`~smallseg.models.build_model`, never one a checkpoint names.
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
    load_state_strict(encoder, state, str(path), what="encoder weights")


__all__ = ["load_encoder_weights", "load_state_strict"]
