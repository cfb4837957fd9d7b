"""The models shipped in ``smallseg/weights/``: their names, files and what each is for.

Kept free of torch so that ``smallseg --help`` and every subcommand's ``--model`` / ``--init`` help can list them
without loading the model stack; :mod:`smallseg.models.registry` loads them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BUILTIN_MODEL_SUMMARIES", "WEIGHTS_DIR", "builtin_models", "builtin_models_help"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# What each shipped model is for, in a few words (tests/test_models_loading.py checks every shipped file has one).
BUILTIN_MODEL_SUMMARIES: dict[str, str] = {
    "remote-sensing": "cars and buildings in aerial RGB, 0.3-0.6 m",
    "medical": "nuclei in fluorescence microscopy and nodules in CT",
    "microscopy": "fluorescence nuclei; shift-stable, the better choice for real images",
}


def builtin_models() -> dict[str, Path]:
    """Shipped model names and their files (whatever is present in the package's ``weights/`` folder)."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {p.name[: -len(".safetensors")]: p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))}


def builtin_models_help() -> str:
    """The shipped model names with what each is for, for a help text: ``"medical (nuclei ...), ..."``."""
    return ", ".join(f"{name} ({BUILTIN_MODEL_SUMMARIES[name]})" if name in BUILTIN_MODEL_SUMMARIES else name
                     for name in builtin_models())
