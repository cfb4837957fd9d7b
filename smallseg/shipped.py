"""The models shipped in ``smallseg/weights/``: their names, files and what each is for.

Kept free of torch so that ``smallseg --help`` and every subcommand's ``--model`` / ``--init`` help can list them
without loading the model stack; :mod:`smallseg.models.registry` loads them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["AUTO_MODEL", "BUILTIN_MODEL_SUMMARIES", "MODEL_FOR_MODALITY", "WEIGHTS_DIR", "builtin_models",
           "auto_model_help", "builtin_models_help", "model_for_modalities"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# What each shipped model is for, in a few words (tests/test_models_loading.py checks every shipped file has one).
BUILTIN_MODEL_SUMMARIES: dict[str, str] = {
    "remote-sensing": "cars and buildings in aerial RGB, 0.3-0.6 m",
    "medical": "nuclei in fluorescence microscopy and nodules in CT",
    "microscopy": "fluorescence nuclei; shift-stable, the better choice for real images",
    "ct": "lung nodules in chest CT; 2.5-D (each slice with 2 above and 2 below), the better choice for CT",
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


# dicom-batch's default: the shipped model for the DICOM modality of the batch's image stacks. A batch whose stacks
# need different models, or a modality none is made for (MR, US...), gets the one that serves every modality.
AUTO_MODEL = "auto"
MODEL_FOR_MODALITY: dict[str, str] = {"CT": "ct", "SM": "microscopy", "GM": "microscopy"}
GENERAL_MODEL = "medical"


def model_for_modalities(modalities) -> tuple[str, str]:
    """(shipped model name, one line saying why) for a batch whose image stacks have these DICOM modalities.

    Each modality's model of :data:`MODEL_FOR_MODALITY` when it is shipped, else :data:`GENERAL_MODEL`; one
    model for the batch, so a batch that would need two gets the general one.
    """
    shipped = builtin_models()
    wanted = sorted({str(m).strip().upper() for m in modalities})
    picks = {MODEL_FOR_MODALITY[m] if MODEL_FOR_MODALITY.get(m) in shipped else GENERAL_MODEL for m in wanted}
    shown = ", ".join(m or "(none)" for m in wanted) or "none"
    if not picks:
        return GENERAL_MODEL, "no image stacks"
    if len(picks) == 1:
        return picks.pop(), f"image stacks of modality {shown}"
    return GENERAL_MODEL, (f"image stacks of modalities {shown}, which would need different models; "
                           f"{GENERAL_MODEL} serves all of them")


def auto_model_help() -> str:
    """What ``auto`` chooses, for a help text: ``"microscopy for SM/GM, medical for other or mixed modalities"``."""
    shipped = builtin_models()
    by_model: dict[str, list[str]] = {}
    for modality, name in MODEL_FOR_MODALITY.items():
        if name in shipped:
            by_model.setdefault(name, []).append(modality)
    parts = [f"{name} for {'/'.join(mods)}" for name, mods in by_model.items()]
    return ", ".join([*parts, f"{GENERAL_MODEL} for other or mixed modalities"])
