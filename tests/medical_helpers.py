"""Helpers shared by the medical tests."""

import csv

import numpy as np


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
