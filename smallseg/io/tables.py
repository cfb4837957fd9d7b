"""Object tables: one row per object, as columns of equal length, and their CSV files.

Every per-object table in smallseg is a :class:`Table`: a frozen dataclass whose fields are (N, ...) numpy
columns (row ``i`` of every column describes the same object). A table is

- sized and indexable: ``len(table)``; ``table[0]`` is one row as a frozen record (a named tuple of Python
  values: ``table[0].id``, ``table[0]._asdict()``); ``table[2:5]``, ``table[mask]`` and ``table[[4, 1]]`` are
  tables of those rows;
- iterable: ``for row in table`` yields the row records in order;
- combinable: ``Table.concat(tables)``, ``Table.empty()``, ``table.sorted_by_id()``.

The tables, each with a different role and columns:

==================== ================================ ==========================================================
class                role                             CSV file
==================== ================================ ==========================================================
:class:`ObjectTable` objects a prediction found in a  ``STEM.objects.csv`` of tile-and-predict
                     scene (stitched, scene px)       (:func:`write_objects_csv` / :func:`read_objects_csv`)
:class:`SceneObjects` ground truth of a synthetic     ``STEM_objects.csv`` of ``smallseg synth remote-sensing``
                     aerial scene (footprints)
:class:`NucleiTable` ground truth of a synthetic      ``STEM_nuclei.csv`` of ``smallseg synth nuclei``
                     nuclei image
:class:`VolumeObjects` 3-D (or 2-D) objects of a      ``objects.csv`` of dicom-batch (mm, LPS)
                     medical volume
:class:`ObjectAttributes` what ``evaluate`` needs of   read from any of the above (:func:`read_object_table`)
                     any table: id, score, class, crowd
==================== ================================ ==========================================================

CSV files are written through :class:`CsvTableWriter` (streamed, a table at a time, for outputs with millions
of rows) or :meth:`Table.write_csv` (whole, atomically: complete or absent). Text cells (class names,
contexts) go through :func:`~smallseg.io.atomic.csv_safe`, so a class named ``=cmd()`` cannot run as a
spreadsheet formula; readers undo that quoting.
"""

from __future__ import annotations

import collections
import csv
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from smallseg.errors import SmallsegError, one_line
from smallseg.io.atomic import atomic_path, csv_safe
from smallseg.io.geo import ground_units

__all__ = [
    "OBJECTS_CSV_COLUMNS",
    "CsvTableWriter",
    "NucleiTable",
    "ObjectAttributes",
    "ObjectTable",
    "SceneObjects",
    "Table",
    "VolumeObjects",
    "default_object_table_path",
    "objects_csv_writer",
    "read_object_table",
    "read_objects_csv",
    "write_objects_csv",
]

# Rows per chunk when writing or reading a CSV: the text of every row adds up (~50x the numeric table).
_CSV_CHUNK = 65536


# ------------------------------------------------------------------------------------------------ base


@dataclass(frozen=True, eq=False)  # holds arrays: compare columns explicitly
class Table:
    """Columns of equal length ``N`` (the dataclass fields), one row per object.

    Subclass contract (plain class attributes, not annotated, so that they are no dataclass fields):
    ``ROW_NAMES`` maps a column to its name in a row record (plural
    column names such as ``ids`` become ``id``); ``CSV_TEXT`` names the CSV columns holding free text;
    ``CSV_LINE_END`` the line terminator of the table's CSV format. A subclass with a CSV format implements
    :meth:`csv_header`, :meth:`csv_cells` and :meth:`from_csv_cells`. Columns may be None (an optional column
    the table does not have) or a list (per-row text).
    """

    ROW_NAMES = {}
    CSV_TEXT = frozenset()
    CSV_LINE_END = "\r\n"

    def __post_init__(self) -> None:
        lengths = {name: len(value) for name, value in self._columns() if value is not None}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{type(self).__name__} columns differ in length: "
                             + ", ".join(f"{k}={v}" for k, v in lengths.items()))

    # ---- columns and rows

    @classmethod
    def column_names(cls) -> tuple[str, ...]:
        """The column (field) names, in order."""
        return tuple(f.name for f in fields(cls))

    def _columns(self) -> Iterator[tuple[str, object]]:
        for name in self.column_names():
            yield name, getattr(self, name)

    def __len__(self) -> int:
        for _, value in self._columns():
            if value is not None:
                return len(value)
        return 0

    @classmethod
    def row_type(cls) -> type:
        """The frozen record type of one row (a named tuple ``<Class>Row``)."""
        cached = _ROW_TYPES.get(cls)
        if cached is None:
            names = [cls.ROW_NAMES.get(n, n) for n in cls.column_names()]
            cached = _ROW_TYPES[cls] = collections.namedtuple(f"{cls.__name__}Row", names)
        return cached

    def __getitem__(self, index):
        """``table[i]``: row ``i`` as a record; a slice, boolean mask or index array: a table of those rows."""
        if isinstance(index, (int, np.integer)):
            n = len(self)
            i = int(index) + (n if index < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"row {index} of a {type(self).__name__} with {n} rows")
            return self.row_type()(*(_cell(value, i) for _, value in self._columns()))
        return self.rows(index)

    def __iter__(self) -> Iterator[tuple]:
        make = self.row_type()._make
        columns = [_as_python(value) for _, value in self._columns()]
        for i in range(len(self)):
            yield make(None if column is None else column[i] for column in columns)

    def to_dicts(self) -> list[dict]:
        """Every row as a dict (row-record names -> Python values)."""
        return [row._asdict() for row in self]

    def rows(self, index):
        """The rows selected by ``index`` (a slice, boolean mask or integer indices), as a table."""
        return type(self)(**{name: _take(value, index) for name, value in self._columns()})

    @classmethod
    def concat(cls, tables: Sequence["Table"]):
        """Rows of several tables, in order (an empty sequence gives :meth:`empty`)."""
        if not tables:
            return cls.empty()
        out = {}
        for name in cls.column_names():
            values = [getattr(t, name) for t in tables]
            if any(v is None for v in values):
                out[name] = None
            elif isinstance(values[0], list):
                out[name] = [x for v in values for x in v]
            else:
                out[name] = np.concatenate(values)
        return cls(**out)

    @classmethod
    def empty(cls):
        """A table with no rows."""
        raise NotImplementedError(f"{cls.__name__}.empty")

    def sorted_by_id(self):
        """The same rows ordered by id (stable)."""
        ids = getattr(self, "ids", None)
        if ids is None:
            ids = getattr(self, "id")
        return self.rows(np.argsort(ids, kind="stable"))

    # ---- CSV

    def csv_header(self) -> list[str]:
        """The CSV header of this table (also for an empty one)."""
        raise NotImplementedError(f"{type(self).__name__} has no CSV format")

    def csv_cells(self, **context) -> list[Sequence]:
        """The CSV cells of every row, one sequence per header column (numbers already formatted)."""
        raise NotImplementedError(f"{type(self).__name__} has no CSV format")

    @classmethod
    def from_csv_cells(cls, columns: dict[str, Sequence[str]], source: str):
        """Build the table from CSV text columns (header name -> cells of every row)."""
        raise NotImplementedError(f"{cls.__name__} has no CSV format")

    def write_csv(self, path: str | os.PathLike, **context) -> Path:
        """Write the table as CSV (header even when empty), atomically: complete or absent."""
        path = Path(path)
        if not path.parent.is_dir():
            raise SmallsegError(f"{path}: folder {path.parent} does not exist")
        with atomic_path(path) as tmp:
            with CsvTableWriter(tmp, self.csv_header(), text=self.CSV_TEXT, line_end=self.CSV_LINE_END) as out:
                out.write(self, **context)
        return path

    @classmethod
    def read_csv(cls, path: str | os.PathLike):
        """Read a table written by :meth:`write_csv` (read in chunks: memory ~ the table, not its text)."""
        chunks = [cls.from_csv_cells(columns, os.fspath(path)) for columns in _read_csv_columns(path, cls.CSV_TEXT)]
        return cls.concat(chunks) if chunks else cls.empty()


_ROW_TYPES: dict[type, type] = {}


def _take(value, index):
    if value is None:
        return None
    if isinstance(value, list):
        return np.asarray(value, dtype=object)[index].tolist() if not isinstance(index, slice) else value[index]
    return value[index]


def _cell(value, i: int):
    if value is None:
        return None
    item = value[i]
    if isinstance(item, np.ndarray):
        return tuple(item.tolist())
    return item.item() if isinstance(item, np.generic) else item


def _as_python(value):
    if value is None or isinstance(value, list):
        return value
    if value.ndim > 1:
        return [tuple(r) for r in value.tolist()]
    return value.tolist()


class CsvTableWriter:
    """A CSV file written a table at a time: the header once, then :meth:`write` per table (a context
    manager). It writes ``path`` directly; callers that stage outputs pass a staged path (or use
    :meth:`Table.write_csv`, which renames when complete).

    Args:
        path: file to create.
        header: column names.
        text: the header columns that hold free text (through :func:`~smallseg.io.atomic.csv_safe`).
        line_end: line terminator (``"\\r\\n"``, the csv module's default, or ``"\\n"``).
    """

    def __init__(self, path: str | os.PathLike, header: Sequence[str], *, text: Iterable[str] = (),
                 line_end: str = "\r\n"):
        self.path = Path(path)
        self.header = list(header)
        self._text = [i for i, name in enumerate(self.header) if name in set(text)]
        self._file = open(self.path, "w", newline="", encoding="utf-8")
        self._out = csv.writer(self._file, lineterminator=line_end)
        self._out.writerow(self.header)

    def write(self, table: Table, **context) -> None:
        """Append the rows of ``table`` (``context``: what its :meth:`Table.csv_cells` needs)."""
        n = len(table)
        chunks = [table] if n <= _CSV_CHUNK else \
            (table.rows(slice(s, min(s + _CSV_CHUNK, n))) for s in range(0, n, _CSV_CHUNK))
        for chunk in chunks:
            cells = list(chunk.csv_cells(**context))
            for i in self._text:
                cells[i] = [csv_safe(v) for v in cells[i]]
            self._out.writerows(zip(*cells))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "CsvTableWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _csv_unsafe(text: str) -> str:
    """Undo :func:`~smallseg.io.atomic.csv_safe` on a text cell read back."""
    return text[1:] if text.startswith("'") and csv_safe(text[1:]) != text[1:] else text


def _read_csv_columns(path, text: Iterable[str] = ()) -> Iterator[dict[str, tuple[str, ...]]]:
    """Chunks of a CSV as {header name: cells}; nothing for a file with only a header (or empty)."""
    text = set(text)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        while True:
            rows = [row for _, row in zip(range(_CSV_CHUNK), reader)]
            if not rows:
                return
            if any(len(row) != len(header) for row in rows):
                raise SmallsegError(f"{os.fspath(path)}: rows with another number of cells than the header "
                                    f"({len(header)}); is the file complete?")
            columns = dict(zip(header, zip(*rows)))
            for name in text & columns.keys():
                columns[name] = tuple(_csv_unsafe(v) for v in columns[name])
            yield columns


def _array(columns, name: str, dtype) -> np.ndarray:
    return np.array(columns[name]).astype(dtype)


def _stack(columns, names: Sequence[str], dtype) -> np.ndarray:
    return np.stack([_array(columns, n, dtype) for n in names], axis=1)


def _repr(values: np.ndarray):
    """Shortest text that reads back as the same float64."""
    return map(repr, values.astype(np.float64).tolist())


def _fixed(values: np.ndarray, digits: int) -> list[str]:
    return [f"{v:.{digits}f}" for v in np.asarray(values, np.float64).tolist()]


# --------------------------------------------------------------------------------- prediction objects

OBJECTS_CSV_COLUMNS = (
    "id", "class_id", "class", "score", "area_px", "area_m2", "centroid_row", "centroid_col", "centroid_x",
    "centroid_y", "bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1", "tile_row", "tile_col", "touches_tile_edge",
)


@dataclass(frozen=True, eq=False)
class ObjectTable(Table):
    """One row per object a prediction found in a scene (stitched; scene px). Columns have length ``N``.

    Attributes:
        ids: (N,) int64 global id (the object's value in the label raster).
        class_ids: (N,) int32 class, 1-based.
        scores: (N,) float32 confidence.
        centroids_yx: (N, 2) float64 reported centre (row, col) in scene px.
        area_px: (N,) int64 pixels in the stitched label raster (after conflicts).
        bbox: (N, 4) int64 ``(row0, col0, row1, col1)`` half-open, scene px, of the stitched pixels.
        tile_rc: (N, 2) int32 grid (row, col) of the tile that owns the object.
        touches_tile_edge: (N,) bool the object touched an inner edge of its tile: it may be cut, i.e. the
            overlap may be smaller than the object (see :func:`~smallseg.tiling.grid.overlap_for`).

    A row record: ``id, class_id, score, centroid_yx, area_px, bbox, tile_rc, touches_tile_edge``.
    """

    ids: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray
    centroids_yx: np.ndarray
    area_px: np.ndarray
    bbox: np.ndarray
    tile_rc: np.ndarray
    touches_tile_edge: np.ndarray

    ROW_NAMES = {"ids": "id", "class_ids": "class_id", "scores": "score",
                                           "centroids_yx": "centroid_yx"}
    CSV_TEXT = frozenset({"class"})

    @classmethod
    def empty(cls) -> "ObjectTable":
        return cls(ids=np.zeros(0, np.int64), class_ids=np.zeros(0, np.int32), scores=np.zeros(0, np.float32),
                   centroids_yx=np.zeros((0, 2), np.float64), area_px=np.zeros(0, np.int64),
                   bbox=np.zeros((0, 4), np.int64), tile_rc=np.zeros((0, 2), np.int32),
                   touches_tile_edge=np.zeros(0, bool))

    def csv_header(self) -> list[str]:
        return list(OBJECTS_CSV_COLUMNS)

    def csv_cells(self, *, class_names: Sequence[str], geometry) -> list[Sequence]:
        """Cells of :data:`OBJECTS_CSV_COLUMNS`; ``geometry`` a :class:`~smallseg.io.geotiff.RasterGeometry`
        (width, height, crs, transform), ``class_names`` the name of class 1, 2, ..."""
        cy = self.centroids_yx[:, 0].astype(np.float64)
        cx = self.centroids_yx[:, 1].astype(np.float64)
        t = geometry.transform
        x = t.a * (cx + 0.5) + t.b * (cy + 0.5) + t.c  # pixel centre -> map coordinates
        y = t.d * (cx + 0.5) + t.e * (cy + 0.5) + t.f
        area_px = self.area_px.astype(np.int64)
        area_m2 = ground_units(geometry.crs, t, geometry.width, geometry.height).area_m2(area_px, self.centroids_yx)
        names = [class_names[c - 1] if 1 <= c <= len(class_names) else str(c) for c in self.class_ids.tolist()]
        return [
            self.ids.tolist(), self.class_ids.tolist(), names,
            [str(v) for v in self.scores.astype(np.float32)],  # shortest text that reads back as the float32
            area_px.tolist(), [""] * len(self) if area_m2 is None else _repr(area_m2), _repr(cy), _repr(cx),
            _repr(x), _repr(y), *self.bbox.T.tolist(), *self.tile_rc.T.tolist(),
            self.touches_tile_edge.astype(int).tolist(),
        ]

    @classmethod
    def from_csv_cells(cls, columns, source: str) -> "ObjectTable":
        return cls(
            ids=_array(columns, "id", np.int64),
            class_ids=_array(columns, "class_id", np.int32),
            scores=_array(columns, "score", np.float32),
            centroids_yx=_stack(columns, ("centroid_row", "centroid_col"), np.float64),
            area_px=_array(columns, "area_px", np.int64),
            bbox=_stack(columns, [f"bbox_{k}" for k in ("row0", "col0", "row1", "col1")], np.int64),
            tile_rc=_stack(columns, ("tile_row", "tile_col"), np.int32),
            touches_tile_edge=_array(columns, "touches_tile_edge", np.int64).astype(bool),
        )


def objects_csv_writer(path: str | os.PathLike) -> CsvTableWriter:
    """A streaming writer of ``STEM.objects.csv`` (header written); ``.write(table, class_names=...,
    geometry=...)`` per batch of objects in id order, then ``.close()``."""
    return CsvTableWriter(path, OBJECTS_CSV_COLUMNS, text=ObjectTable.CSV_TEXT)


def write_objects_csv(path: str | os.PathLike, objects: ObjectTable, class_names: Sequence[str],
                      geometry) -> Path:
    """Write a prediction's object table as ``STEM.objects.csv`` (columns :data:`OBJECTS_CSV_COLUMNS`).

    Units: ``area_px`` px; ``area_m2`` ground m² (:func:`~smallseg.io.geo.ground_units` at the object's
    centroid; empty without a CRS); ``centroid_row/col`` scene px (pixel centres at integers);
    ``centroid_x/y`` map coordinates of the centroid in the raster's CRS (pixel grid coordinates when it has
    none); ``bbox_*`` half-open scene px; ``score`` in [0, 1].
    """
    return objects.write_csv(path, class_names=class_names, geometry=geometry)


def read_objects_csv(path: str | os.PathLike) -> ObjectTable:
    """Read ``STEM.objects.csv`` written by :func:`write_objects_csv` back into an :class:`ObjectTable`."""
    return ObjectTable.read_csv(path)


# ----------------------------------------------------------------------------- synthetic ground truth

@dataclass(frozen=True, eq=False)
class SceneObjects(Table):
    """One row per ground-truth object of a synthetic aerial scene (row ``i`` is the object with id ``id[i]``).

    Attributes:
        id: (N,) uint32 instance id in the ``instances`` raster (1..N, unique in the scene).
        class_id: (N,) uint8, 1 = car, 2 = building.
        center_x, center_y: (N,) float64 footprint centre in map (CRS) units, metres for projected CRSs.
        center_row_px, center_col_px: (N,) float64 footprint centre in pixels (pixel centres at integers).
        length_m, width_m: (N,) float64 rectangle sides, ``length_m >= width_m``.
        angle_deg: (N,) float64 direction of the long side, degrees counter-clockwise from map east (-90, 90].
        height_m: (N,) float64 height above ground (casts the shadow).
        footprint_area_m2: (N,) float64 analytic area ``length_m * width_m``.
        area_px: (N,) int64 number of pixels with this id in the raster (exact).
        area_m2: (N,) float64 ``area_px * pixel_size_m**2``.
        bbox_px: (N, 4) int64 pixel bounding box (row0, col0, row1, col1), half-open.
        context: (N,) str how the object was placed (``parking_lot``, ``kerbside``, ``house_row`` ...).
    """

    id: np.ndarray
    class_id: np.ndarray
    center_x: np.ndarray
    center_y: np.ndarray
    center_row_px: np.ndarray
    center_col_px: np.ndarray
    length_m: np.ndarray
    width_m: np.ndarray
    angle_deg: np.ndarray
    height_m: np.ndarray
    footprint_area_m2: np.ndarray
    area_px: np.ndarray
    area_m2: np.ndarray
    bbox_px: np.ndarray
    context: np.ndarray

    CSV_TEXT = frozenset({"class_name", "context"})
    _HEADER = (
        "id", "class_id", "class_name", "center_x", "center_y", "center_row_px", "center_col_px", "length_m",
        "width_m", "angle_deg", "height_m", "footprint_area_m2", "area_px", "area_m2", "bbox_row0",
        "bbox_col0", "bbox_row1", "bbox_col1", "context",
    )

    @classmethod
    def empty(cls) -> "SceneObjects":
        f = np.zeros(0, np.float64)
        return cls(id=np.zeros(0, np.uint32), class_id=np.zeros(0, np.uint8), center_x=f, center_y=f,
                   center_row_px=f, center_col_px=f, length_m=f, width_m=f, angle_deg=f, height_m=f,
                   footprint_area_m2=f, area_px=np.zeros(0, np.int64), area_m2=f,
                   bbox_px=np.zeros((0, 4), np.int64), context=np.zeros(0, str))

    def csv_header(self) -> list[str]:
        return list(self._HEADER)

    def csv_cells(self, *, class_names: dict[int, str]) -> list[Sequence]:
        """Cells of the CSV columns; ``class_names`` maps class id -> name."""
        return [
            self.id.astype(np.int64).tolist(), self.class_id.astype(np.int64).tolist(),
            [class_names[c] for c in self.class_id.tolist()],
            *(_fixed(getattr(self, k), 3) for k in ("center_x", "center_y", "center_row_px", "center_col_px",
                                                    "length_m", "width_m", "angle_deg")),
            _fixed(self.height_m, 2), _fixed(self.footprint_area_m2, 4), self.area_px.astype(np.int64).tolist(),
            _fixed(self.area_m2, 4), *self.bbox_px.astype(np.int64).T.tolist(), [str(c) for c in self.context],
        ]

    @classmethod
    def from_csv_cells(cls, columns, source: str) -> "SceneObjects":
        floats = {k: _array(columns, k, np.float64) for k in (
            "center_x", "center_y", "center_row_px", "center_col_px", "length_m", "width_m", "angle_deg",
            "height_m", "footprint_area_m2", "area_m2")}
        return cls(id=_array(columns, "id", np.int64).astype(np.uint32),
                   class_id=_array(columns, "class_id", np.int64).astype(np.uint8),
                   area_px=_array(columns, "area_px", np.int64),
                   bbox_px=_stack(columns, ("bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1"), np.int64),
                   context=np.array(columns["context"], dtype=str), **floats)


@dataclass(frozen=True, eq=False)
class NucleiTable(Table):
    """One row per nucleus of a synthetic microscopy image (row ``i`` is the nucleus with id ``id[i]``).

    Attributes:
        id: (N,) int64 label value.
        center_row_px, center_col_px: (N,) float64 shape centre (pixel centres at integers).
        semi_axes_px: (N, 2) float64 ellipse semi-axes before the boundary wobble.
        angle_deg: (N,) float64 orientation of the first semi-axis, degrees from the column axis towards rows.
        area_px: (N,) int64 pixel count in the label image.
        in_focus: (N,) bool, False for blurred out-of-focus nuclei.
        brightness: (N,) float64 relative mean intensity.
        cluster: (N,) int64 cluster index, -1 for isolated nuclei.
    """

    id: np.ndarray
    center_row_px: np.ndarray
    center_col_px: np.ndarray
    semi_axes_px: np.ndarray
    angle_deg: np.ndarray
    area_px: np.ndarray
    in_focus: np.ndarray
    brightness: np.ndarray
    cluster: np.ndarray

    @classmethod
    def empty(cls) -> "NucleiTable":
        f = np.zeros(0, np.float64)
        return cls(id=np.zeros(0, np.int64), center_row_px=f, center_col_px=f, semi_axes_px=np.zeros((0, 2)),
                   angle_deg=f, area_px=np.zeros(0, np.int64), in_focus=np.zeros(0, bool), brightness=f,
                   cluster=np.zeros(0, np.int64))

    def csv_header(self) -> list[str]:
        return ["id", "center_row_px", "center_col_px", "semi_axis_a_px", "semi_axis_b_px", "angle_deg",
                "area_px", "in_focus", "brightness", "cluster"]

    def csv_cells(self) -> list[Sequence]:
        return [self.id.astype(np.int64).tolist(), _fixed(self.center_row_px, 3), _fixed(self.center_col_px, 3),
                _fixed(self.semi_axes_px[:, 0], 3), _fixed(self.semi_axes_px[:, 1], 3), _fixed(self.angle_deg, 2),
                self.area_px.astype(np.int64).tolist(), np.asarray(self.in_focus, bool).astype(int).tolist(),
                _fixed(self.brightness, 4), self.cluster.astype(np.int64).tolist()]

    @classmethod
    def from_csv_cells(cls, columns, source: str) -> "NucleiTable":
        return cls(id=_array(columns, "id", np.int64), center_row_px=_array(columns, "center_row_px", float),
                   center_col_px=_array(columns, "center_col_px", float),
                   semi_axes_px=_stack(columns, ("semi_axis_a_px", "semi_axis_b_px"), float),
                   angle_deg=_array(columns, "angle_deg", float), area_px=_array(columns, "area_px", np.int64),
                   in_focus=_array(columns, "in_focus", np.int64).astype(bool),
                   brightness=_array(columns, "brightness", float), cluster=_array(columns, "cluster", np.int64))


# ------------------------------------------------------------------------------------- volume objects


@dataclass(frozen=True, eq=False)
class VolumeObjects(Table):
    """One row per 3-D object (2-D object for a 2-D image) of a medical volume. Columns have length ``N``.

    Attributes:
        ids: (N,) int64 object id = its value in the label volume, dense ``1..N``.
        class_ids: (N,) int32 class, 1-based.
        class_names: N class names (from the model's ``class_names``), a list.
        scores: (N,) float32 voxel-weighted mean of the 2-D objects' scores.
        max_slice_scores: (N,) float32 best 2-D score.
        voxels: (N,) int64 voxel (pixel) count.
        volume_mm3: (N,) float64 voxels x voxel volume; ``None`` for 2-D images.
        area_mm2: (N,) float64 pixels x pixel area for 2-D images; ``None`` for volumes.
        equivalent_diameter_mm: (N,) float64 diameter of the sphere (circle for 2-D) of that volume (area).
        centroid_index: (N, D) float64 mean voxel index, array order (z, y, x) / (y, x).
        centroid_lps_mm: (N, D) float64 physical centroid, SimpleITK order (x, y, z) = (L, P, S), mm.
        slice_range: (N, 2) int64 first and last slice (inclusive); (0, 0) for 2-D images.
        bbox: (N, 2D) int64 half-open voxel box ``(z0, y0, x0, z1, y1, x1)`` (2-D: ``(y0, x0, y1, x1)``).

    CSV (``objects.csv`` of dicom-batch, ``\\n`` line ends): id, class, class_id, score, max_slice_score,
    voxels, volume_mm3 (2-D: area_mm2), equivalent_diameter_mm, centroid_lps_{x,y,z}_mm,
    centroid_{z,y,x}_index, slice_first, slice_last, bbox_{z,y,x}0, bbox_{z,y,x}1 (half-open voxel indices).
    """

    ids: np.ndarray
    class_ids: np.ndarray
    class_names: list[str]
    scores: np.ndarray
    max_slice_scores: np.ndarray
    voxels: np.ndarray
    volume_mm3: np.ndarray | None
    area_mm2: np.ndarray | None
    equivalent_diameter_mm: np.ndarray
    centroid_index: np.ndarray
    centroid_lps_mm: np.ndarray
    slice_range: np.ndarray
    bbox: np.ndarray

    ROW_NAMES = {"ids": "id", "class_ids": "class_id", "class_names": "class_name",
                                           "scores": "score", "max_slice_scores": "max_slice_score"}
    CSV_TEXT = frozenset({"class"})
    CSV_LINE_END = "\n"

    @classmethod
    def empty(cls, ndim: int = 3) -> "VolumeObjects":
        f = np.zeros(0, np.float64)
        return cls(ids=np.zeros(0, np.int64), class_ids=np.zeros(0, np.int32), class_names=[],
                   scores=np.zeros(0, np.float32), max_slice_scores=np.zeros(0, np.float32),
                   voxels=np.zeros(0, np.int64), volume_mm3=f if ndim == 3 else None,
                   area_mm2=f if ndim == 2 else None, equivalent_diameter_mm=f,
                   centroid_index=np.zeros((0, ndim)), centroid_lps_mm=np.zeros((0, ndim)),
                   slice_range=np.zeros((0, 2), np.int64), bbox=np.zeros((0, 2 * ndim), np.int64))

    @property
    def ndim(self) -> int:
        """2 for objects of a 2-D image, 3 for a volume."""
        return 3 if self.volume_mm3 is not None else 2

    def csv_header(self) -> list[str]:
        """CSV header, also for an empty table."""
        size_key = "volume_mm3" if self.ndim == 3 else "area_mm2"
        axes_lps = ("x", "y", "z")[: self.ndim]
        axes_idx = ("z", "y", "x")[3 - self.ndim:]
        return (["id", "class", "class_id", "score", "max_slice_score", "voxels", size_key, "equivalent_diameter_mm"]
                + [f"centroid_lps_{a}_mm" for a in axes_lps] + [f"centroid_{a}_index" for a in axes_idx]
                + ["slice_first", "slice_last"] + [f"bbox_{a}0" for a in axes_idx] + [f"bbox_{a}1" for a in axes_idx])

    def columns(self) -> list[str]:
        """The CSV header (kept name)."""
        return self.csv_header()

    def csv_cells(self) -> list[Sequence]:
        def rounded(values, digits):
            return [round(v, digits) for v in np.asarray(values, np.float64).tolist()]

        size = self.volume_mm3 if self.ndim == 3 else self.area_mm2
        return [self.ids.astype(np.int64).tolist(), list(self.class_names), self.class_ids.astype(np.int64).tolist(),
                rounded(self.scores, 6), rounded(self.max_slice_scores, 6), self.voxels.astype(np.int64).tolist(),
                rounded(size, 4), rounded(self.equivalent_diameter_mm, 4),
                *(rounded(c, 4) for c in np.asarray(self.centroid_lps_mm).reshape(-1, self.ndim).T),
                *(rounded(c, 4) for c in np.asarray(self.centroid_index).reshape(-1, self.ndim).T),
                *np.asarray(self.slice_range, np.int64).reshape(-1, 2).T.tolist(),
                *np.asarray(self.bbox, np.int64).reshape(-1, 2 * self.ndim).T.tolist()]

    def to_csv_dicts(self) -> list[dict[str, object]]:
        """The table as CSV-ready dicts (header names -> values)."""
        header = self.csv_header()
        return [dict(zip(header, row)) for row in zip(*self.csv_cells())]

    @classmethod
    def from_csv_cells(cls, columns, source: str) -> "VolumeObjects":
        ndim = 3 if "volume_mm3" in columns else 2
        axes_lps = ("x", "y", "z")[:ndim]
        axes_idx = ("z", "y", "x")[3 - ndim:]
        size = _array(columns, "volume_mm3" if ndim == 3 else "area_mm2", np.float64)
        return cls(ids=_array(columns, "id", np.int64), class_ids=_array(columns, "class_id", np.int32),
                   class_names=list(columns["class"]), scores=_array(columns, "score", np.float32),
                   max_slice_scores=_array(columns, "max_slice_score", np.float32),
                   voxels=_array(columns, "voxels", np.int64), volume_mm3=size if ndim == 3 else None,
                   area_mm2=size if ndim == 2 else None,
                   equivalent_diameter_mm=_array(columns, "equivalent_diameter_mm", np.float64),
                   centroid_index=_stack(columns, [f"centroid_{a}_index" for a in axes_idx], np.float64),
                   centroid_lps_mm=_stack(columns, [f"centroid_lps_{a}_mm" for a in axes_lps], np.float64),
                   slice_range=_stack(columns, ("slice_first", "slice_last"), np.int64),
                   bbox=_stack(columns, [f"bbox_{a}{e}" for e in "01" for a in axes_idx], np.int64))


# --------------------------------------------------------------------------- what evaluate reads


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
