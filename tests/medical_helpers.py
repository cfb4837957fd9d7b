"""Helpers shared by the medical tests: a synthetic DICOM series writer, random CT values, a tiny CT model,
rotations and the dicom-batch summary reader."""

import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from smallseg.models import save_checkpoint

SERIES_UID = "1.2.826.0.1.3680043.9.7.1"


def random_hu(shape_zyx, seed: int = 0, high: int = 500) -> np.ndarray:
    """(Z, Y, X) int16 random values in [-1000, high): CT-like Hounsfield units."""
    return np.random.default_rng(seed).integers(-1000, high, shape_zyx).astype(np.int16)


def write_series(folder: Path, array_zyx: np.ndarray, series_uid: str = SERIES_UID, *, study_uid: str | None = None,
                 instance_uid_root: str | None = None, modality: str = "CT", spacing_xyz=(0.7, 0.9, 2.5),
                 origin=(-10.0, 20.0, 30.0), direction=np.eye(3), prefix: str = "s", skip=(), z_offsets=None,
                 shift_per_slice=(0.0, 0.0, 0.0)) -> list[Path]:
    """Write one 2-D DICOM file per slice (``FOLDER/PREFIX000.dcm``, ...) with SimpleITK/GDCM, the geometry in the
    standard tags (Image Position / Orientation (Patient), Pixel Spacing, Slice Thickness).

    Slice k (``k`` not in ``skip``) is placed at ``origin + direction[:, 2] * (z_offsets[k] or k * spacing_z) +
    k * shift_per_slice``; its SOP Instance UID is ``"<instance_uid_root or series_uid>.<k + 1>"``, its Instance
    Number k + 1. Study UID: ``study_uid`` or ``"<series_uid>.0"``; Frame of Reference UID ``"<study>.9"``;
    Series Description ``"synthetic <prefix>"``; Patient ID ``PHANTOM``.

    Returns:
        The files written, in slice order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    study_uid = study_uid or series_uid + ".0"
    root = instance_uid_root or series_uid
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    for k in range(array_zyx.shape[0]):
        if k in skip:
            continue
        z = z_offsets[k] if z_offsets is not None else k * spacing_xyz[2]
        pos = np.asarray(origin) + d[:, 2] * z + k * np.asarray(shift_per_slice)
        image = sitk.GetImageFromArray(array_zyx[k])
        image.SetSpacing((spacing_xyz[0], spacing_xyz[1]))  # GDCM writes Pixel Spacing from the image
        tags = {
            "0008|0060": modality, "0020|000e": series_uid, "0020|000d": study_uid, "0020|0052": study_uid + ".9",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{root}.{k + 1}", "0020|0013": str(k + 1),
            "0008|103e": f"synthetic {prefix}", "0010|0020": "PHANTOM",
            "0020|0032": "\\".join(f"{v:.10g}" for v in pos),
            "0020|0037": "\\".join(f"{v:.10g}" for v in [*d[:, 0], *d[:, 1]]),
            "0018|0050": f"{spacing_xyz[2]:g}",
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        path = folder / f"{prefix}{k:03d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(image)
        paths.append(path)
    return paths


def save_tiny_ct_model(tiny_model, folder: Path, class_names=("nodule",)) -> Path:
    """A tiny one-band, one-class model (conftest's ``tiny_model``) saved as ``FOLDER/tiny.safetensors``; its
    semantic bias leans towards foreground, so a random model still finds objects and outputs are not empty."""
    m = tiny_model("resnet18", semantic_bias=[-1.0, 1.0], classes=1, in_channels=1, max_distance_px=6,
                   tile_size_px=128, class_names=list(class_names))
    return save_checkpoint(m, Path(folder) / "tiny.safetensors")


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """3x3 rotation matrix (x, then y, then z), e.g. an oblique DICOM direction."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def summary_rows(out) -> list[dict[str, str]]:
    """The rows of a dicom-batch ``OUT/summary.csv`` as dicts."""
    with (out / "summary.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))
