"""Which of a model's classes exist for an image's modality, and the objects of the others.

One model may serve several domains: the shipped medical model has ``nucleus`` (microscopy: images without a
DICOM modality, or SM / GM) and ``nodule`` (CT). On the other domain the class head is confused (a "nucleus" in
CT is real foreground with the wrong class), so every pipeline (``predict_array``, ``predict_volume``,
``tile-and-predict``) gives such objects the modality's class (one) or drops them (several), by the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from smallseg.errors import SmallsegError
from smallseg.instances import Instances

__all__ = ["CLASS_MODALITIES", "NON_DICOM_KEY", "checked_classes_by_modality", "keep_classes", "modality_classes",
           "modality_key", "trained_modalities"]

# How ``training["classes_by_modality"]`` names images without a DICOM modality (TIFF, PNG, GeoTIFF): checkpoint
# JSON keys may not be empty (models.validate.check_json), and "" is what the pipelines call that modality.
NON_DICOM_KEY = "non-DICOM"


# The DICOM modalities a class name belongs to, for checkpoints whose training metadata does not say
# (``training["classes_by_modality"]``). The shipped medical model was trained on synthetic CT (class "nodule")
# and fluorescence microscopy (class "nucleus": TIFF/PNG without a modality, or DICOM SM / GM).
CLASS_MODALITIES: dict[str, tuple[str, ...]] = {"nodule": ("CT",), "nucleus": ("", "SM", "GM")}


def _modality_table(config) -> dict[str, list[str]] | None:
    """{modality: class names} from the checkpoint, else from :data:`CLASS_MODALITIES`; None when unknown."""
    training = getattr(config, "training", None) or {}
    table = training.get("classes_by_modality") if isinstance(training, dict) else None
    if isinstance(table, dict) and all(isinstance(v, list) for v in table.values()):
        return {_modality_of_key(k): [str(n) for n in v] for k, v in table.items()}
    names = list(getattr(config, "class_names", None) or [])
    if len(names) < 2 or any(n.lower() not in CLASS_MODALITIES for n in names):
        # Classes we know nothing about, or a single class (its name cannot tell which modality it was
        # trained on): every class everywhere, and no claim about modalities.
        return None
    out: dict[str, list[str]] = {}
    for n in names:
        for modality in CLASS_MODALITIES[n.lower()]:
            out.setdefault(modality, []).append(n)
    return out


def checked_classes_by_modality(table, class_names) -> dict[str, list[str]]:
    """A ``classes_by_modality`` table as a training config declares it (``{non-DICOM: [nucleus], SM:
    [nucleus]}``), checked: modality codes (:data:`NON_DICOM_KEY` or a DICOM code such as ``CT``) mapped to
    non-empty lists of the model's class names. Returns it with upper-case codes; SmallsegError otherwise."""
    names = list(class_names or [])
    if not isinstance(table, dict) or not table:
        raise SmallsegError("model.classes_by_modality: need a mapping of modality codes (non-DICOM, CT, SM, ...) "
                            "to lists of class names")
    out = {}
    for key, classes in table.items():
        code = str(key)
        modality = _modality_of_key(code)
        if not code or len(code) > 16 or not (modality == "" or code.replace("_", "").isalnum()):
            raise SmallsegError(f"model.classes_by_modality: {key!r} is not a modality code (non-DICOM, CT, SM, ...)")
        if not isinstance(classes, list) or not classes or any(c not in names for c in classes):
            raise SmallsegError(f"model.classes_by_modality.{code}: need a non-empty list of the model's class "
                                f"names ({', '.join(names) or 'none declared: set model.class_names'})")
        out[modality_key(modality)] = [str(c) for c in classes]
    return out


def modality_key(modality: str) -> str:
    """The ``classes_by_modality`` key of a modality (``""``: :data:`NON_DICOM_KEY`)."""
    return str(modality).upper() or NON_DICOM_KEY


def _modality_of_key(key) -> str:
    """Inverse of :func:`modality_key`: the modality a ``classes_by_modality`` key names (any case)."""
    code = str(key).upper()
    return "" if code == NON_DICOM_KEY.upper() else code


def modality_classes(config, modality: str) -> list[int] | None:
    """1-based ids of the classes a model has for images of ``modality`` (``"CT"``, ``""`` for non-DICOM), or
    None when every class applies: the model does not say, or was not trained on that modality at all (then
    nothing is known about which class fits; :func:`trained_modalities` tells the caller to say so)."""
    table = _modality_table(config)
    names = list(config.class_names or [])  # a config without names: every class applies
    ids = [names.index(n) + 1 for n in (table or {}).get((modality or "").upper(), []) if n in names]
    return ids or None


def trained_modalities(config) -> set[str] | None:
    """DICOM modalities the model was trained on (``""`` = images without one), or None when unknown."""
    table = _modality_table(config)
    return None if table is None else set(table)


def keep_classes(found: Instances, allowed: Sequence[int], counter: list[int]) -> Instances:
    """Objects of classes outside ``allowed`` (1-based class ids, e.g. :func:`modality_classes`) take the single
    allowed class, or are dropped (several); ``counter[0]`` is increased by the number of such objects."""
    bad = ~np.isin(found.class_ids, np.asarray(allowed))
    if not bad.any():
        return found
    counter[0] += int(bad.sum())
    if len(allowed) == 1:
        classes = found.class_ids.copy()
        classes[bad] = allowed[0]
        return replace(found, class_ids=classes)
    labels = np.where(np.isin(found.labels, found.ids[bad]), 0, found.labels).astype(found.labels.dtype)
    keep = ~bad
    return replace(found, labels=labels, ids=found.ids[keep], class_ids=found.class_ids[keep],
                   scores=found.scores[keep], centroids_yx=found.centroids_yx[keep])
