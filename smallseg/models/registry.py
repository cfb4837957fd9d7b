"""Which model, on which device, and which one it was: the one place for model loading by name or path,
device choice and model identity.

- :func:`load_model` / :func:`resolve_model` / :func:`builtin_models`: ``"remote-sensing"`` loads the
  checkpoint shipped in ``smallseg/weights/``; any other string is a checkpoint path. Loading never
  executes code (safetensors + an allow-listed JSON config, see :mod:`smallseg.models.checkpoint`).
- :func:`prepare_model`: what a pipeline calls with whatever the user passed (a name, a path or a model
  object); returns the model in eval mode and a :class:`ModelSource` saying where it came from.
- :func:`resolve_device`: ``"auto"`` and friends to a checked :class:`torch.device`.
- :func:`weights_fingerprint`: one string per model (config + weights), so every resume marker and run
  report identifies a model the same way.

Messages name Python arguments (``model``, ``device``); the CLI translates them to its flags.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from smallseg.errors import SmallsegError
from smallseg.models.checkpoint import load_checkpoint
from smallseg.models.config import ModelConfig
from smallseg.shipped import WEIGHTS_DIR, builtin_models


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """The checkpoint file for a shipped model name or a path; a clear error if it is neither."""
    text = str(name_or_path)
    shipped = builtin_models()
    if text in shipped:
        return shipped[text]
    path = Path(text).expanduser()
    if path.is_file():
        return path
    names = ", ".join(shipped) or "none in this installation"
    raise SmallsegError(
        f"model {text!r}: no checkpoint file there and no built-in model of that name (built-in: {names}); pass "
        "a built-in name or a .safetensors checkpoint path"
    )


def load_model(name_or_path: str | os.PathLike, *, device: str | torch.device | None = "cpu") -> torch.nn.Module:
    """Load a shipped model by name or a checkpoint file, in eval mode on ``device`` (see :func:`resolve_device`)."""
    return load_checkpoint(resolve_model(name_or_path), device=resolve_device(device))


@dataclass(frozen=True)
class ModelSource:
    """Where a model came from, for run reports.

    Attributes:
        name: the built-in name, the checkpoint file's stem, or the class name of a model passed as an object.
        builtin: True for a model shipped with smallseg.
        path: the checkpoint file, absolute (None for a model passed as an object).
    """

    name: str
    builtin: bool = False
    path: Path | None = None

    def to_dict(self) -> dict:
        """``{"name", "builtin", "path"}`` with the path as a string (JSON-ready)."""
        return {"name": self.name, "builtin": self.builtin, "path": None if self.path is None else str(self.path)}


def prepare_model(model: torch.nn.Module | str | os.PathLike,
                  device: str | torch.device | None = None) -> tuple[torch.nn.Module, ModelSource]:
    """The model a pipeline runs, from a built-in name, a checkpoint path or a model object.

    Args:
        model: a name (:func:`builtin_models`), a ``.safetensors`` path, or a smallseg model (a module with a
            :class:`ModelConfig` as ``.config``, e.g. from :func:`load_model` or ``build_model``).
        device: where to run (:func:`resolve_device`). A model object is moved only when ``device`` names a
            device (not None / ``"auto"``): it already sits where its owner put it. A loaded checkpoint goes
            to ``resolve_device(device)``.

    Returns:
        (model in eval mode, :class:`ModelSource`).
    """
    if isinstance(model, torch.nn.Module):
        if not isinstance(getattr(model, "config", None), ModelConfig):
            raise SmallsegError("model: not a smallseg model (no ModelConfig as .config); build it with "
                                "smallseg.models or load it with smallseg.load_model")
        if device is not None and str(device) != "auto":
            model = model.to(resolve_device(device))
        return model.eval(), ModelSource(type(model).__name__)
    if not isinstance(model, (str, os.PathLike)):
        raise SmallsegError(f"model: expected a built-in name, a checkpoint path or a smallseg model, got "
                            f"{type(model).__name__}")
    path = resolve_model(model)
    builtin = str(model) in builtin_models()
    loaded = load_checkpoint(path, device=resolve_device(device))
    return loaded.eval(), ModelSource(str(model) if builtin else path.stem, builtin, path.resolve())


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA if available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` as given.

    A CUDA device without a visible GPU, or a malformed name, is a one-line :class:`SmallsegError`.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SmallsegError(f"device {str(device)!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SmallsegError(f"device {str(device)!r}: CUDA is not available here; use 'cpu' (or 'auto')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SmallsegError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s) here "
                                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return dev


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 (64 hex digits) identifying a model: its config and its weights.

    Hashes ``model.config.to_json()`` (when the model has a :class:`ModelConfig`: decoding settings and input
    normalisation live there and change outputs as much as weights do), then, for every state-dict entry in
    sorted name order, the name and the tensor's raw bytes (CPU, contiguous, native byte order). The same
    model gives the same string on any device, in any process; a fine-tuned or re-tuned one gives another.
    Every resume marker (GeoTIFF work folders, dicom-batch ``done.json``) and run report uses this one string.
    """
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if isinstance(config, ModelConfig):
        h.update(config.to_json().encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        # Bytes via uint8 so dtypes numpy lacks (bfloat16) hash too; same bytes as numpy's tobytes().
        h.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


__all__ = [
    "WEIGHTS_DIR",
    "ModelSource",
    "builtin_models",
    "load_model",
    "prepare_model",
    "resolve_device",
    "resolve_model",
    "weights_fingerprint",
]
