"""What ``evaluate`` reads of any object table (:class:`ObjectAttributes`, :func:`read_object_table`), and where
a label raster's table is expected (:func:`default_object_table_path`)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smallseg.errors import SmallsegError, one_line
from smallseg.io.tables.base import Table, _csv_unsafe

@dataclass(frozen=True, eq=False)
class ObjectAttributes(Table):
    """What scoring needs of any object table (row ``i`` describes label ``ids[i]``).

    Attributes:
        ids: (N,) int64 label values.
        scores: (N,) float64 confidences, or None without a ``score`` column.
        class_ids: (N,) int64 classes, or None without a ``class_id`` column.
        class_names: N class names, or None without a ``class`` / ``class_name`` column.
        iscrowd: (N,) bool crowd flags, or None without an ``iscrowd`` column.
    """

    ids: np.ndarray
    scores: np.ndarray | None
    class_ids: np.ndarray | None
    class_names: list[str] | None
    iscrowd: np.ndarray | None

    ROW_NAMES = {"ids": "id", "scores": "score", "class_ids": "class_id",
                                           "class_names": "class_name"}

    @classmethod
    def empty(cls) -> "ObjectAttributes":
        return cls(ids=np.zeros(0, np.int64), scores=None, class_ids=None, class_names=None, iscrowd=None)

    def class_name_map(self) -> dict[int, str]:
        """{class id: name} from the rows that have both (empty when the table lacks either)."""
        if self.class_ids is None or self.class_names is None:
            return {}
        return {int(c): n for c, n in zip(self.class_ids.tolist(), self.class_names)}


def read_object_table(path: str | os.PathLike, *, require: tuple[str, ...] = ("id",)) -> ObjectAttributes:
    """Read the scoring columns of any object table CSV: ``id`` plus optional ``score``, ``class_id``,
    ``class`` (or ``class_name``), ``iscrowd`` (the tables of tile-and-predict, dicom-batch and the scene
    generator all qualify).

    Args:
        path: CSV file with a header row.
        require: columns that must be present (e.g. ``("id", "score")`` for a prediction's scores).

    Raises:
        SmallsegError: missing file, missing columns, unparsable or duplicate values, scores outside [0, 1]
            or not finite.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SmallsegError(f"{path}: no such object table (CSV with columns id,score[,class_id])")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SmallsegError(f"{path}: cannot read as CSV ({one_line(exc)})") from None
    missing = [c for c in require if c not in header]
    if missing:
        raise SmallsegError(f"{path}: no column {', '.join(repr(m) for m in missing)} in the header "
                            f"({', '.join(header) or 'empty'}); an object table needs columns {', '.join(require)}")

    def column(name: str, parse, kind: str):
        if name not in header:
            return None
        k = header.index(name)
        values = []
        for line, row in enumerate(rows, start=2):
            text = row[k].strip() if k < len(row) else ""  # a short row: its missing cells are empty
            try:
                values.append(parse(text))
            except ValueError:
                raise SmallsegError(f"{path}: line {line}: {name} {text!r} is not {kind}") from None
        return values

    def parse_int(text: str) -> int:
        value = float(text)
        if not value.is_integer():
            raise ValueError(text)
        return int(value)

    ids = np.asarray(column("id", parse_int, "an integer object id") or [], np.int64)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise SmallsegError(f"{path}: id {unique[counts > 1][0].item()} appears {counts.max().item()} times; "
                            "ids must be unique")
    scores = column("score", float, "a number")
    if scores is not None:
        scores = np.asarray(scores, np.float64)
        bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SmallsegError(f"{path}: line {i + 2}: score {scores[i].item()!r} is not a confidence in [0, 1]")
    class_ids = column("class_id", parse_int, "an integer class id")
    name_key = "class" if "class" in header else "class_name" if "class_name" in header else None
    names = None if name_key is None else \
        [_csv_unsafe(row[header.index(name_key)].strip()) if header.index(name_key) < len(row) else ""
         for row in rows]
    iscrowd = column("iscrowd", parse_int, "0 or 1")
    return ObjectAttributes(
        ids=ids, scores=scores,
        class_ids=None if class_ids is None else np.asarray(class_ids, np.int64),
        class_names=names,
        iscrowd=None if iscrowd is None else np.asarray(iscrowd, bool),
    )


def default_object_table_path(raster_path: str | os.PathLike) -> Path:
    """Where the object table of a label raster is expected.

    ``STEM.instances.tif`` -> ``STEM.objects.csv`` (tile-and-predict), ``STEM_instances.tif`` ->
    ``STEM_objects.csv`` (scene generator), anything else ``NAME.tif`` -> ``NAME.objects.csv``.
    """
    path = Path(raster_path)
    name = path.name
    for suffix in (".nii.gz", ".tif", ".tiff", ".png", ".nii", ".mha", ".nrrd"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = path.stem
    for marker, table in ((".instances", ".objects.csv"), ("_instances", "_objects.csv")):
        if name.endswith(marker):
            return path.with_name(name[: -len(marker)] + table)
    return path.with_name(name + ".objects.csv")
