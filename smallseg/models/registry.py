"""Model names users can type: the checkpoints shipped inside the package, or a path to one of theirs.

``load_model("remote-sensing")`` loads ``smallseg/weights/remote-sensing.safetensors``; any other string is
taken as a checkpoint path. Loading never executes code (safetensors + JSON config).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from smallseg.errors import SmallsegError
from smallseg.models.checkpoint import load_checkpoint

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def builtin_models() -> dict[str, Path]:
    """Shipped model names and their files (whatever is present in the package's ``weights/`` folder)."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {p.name[: -len(".safetensors")]: p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))}


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
    raise SmallsegError(f"--model {text}: no checkpoint file there and no built-in model of that name (built-in: {names})")


def load_model(name_or_path: str | os.PathLike, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a shipped model by name or a checkpoint file, in eval mode on ``device``."""
    return load_checkpoint(resolve_model(name_or_path), device=device)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA if available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` as given.

    A CUDA device without a visible GPU, or a malformed name, is a one-line :class:`SmallsegError`.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SmallsegError(f"--device {device}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SmallsegError(f"--device {device}: CUDA is not available here; use --device cpu (or auto)")
    return dev
