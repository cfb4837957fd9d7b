"""The table base class and the CSV machinery every object table shares.

:class:`Table` (columns of equal length, row records, slicing, concatenation, whole-file atomic CSV writing and
chunked reading) and :class:`CsvTableWriter` (a CSV streamed a table at a time), plus the cell helpers the
table modules use to format and parse their columns. See :mod:`smallseg.io.tables` for the tables themselves.
"""

from __future__ import annotations

import collections
import csv
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from smallseg.errors import SmallsegError
from smallseg.io.atomic import atomic_path, csv_safe

# Rows per chunk when writing or reading a CSV: the text of every row adds up (~50x the numeric table).
_CSV_CHUNK = 65536


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
