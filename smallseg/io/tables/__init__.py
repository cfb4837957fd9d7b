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

Modules: :mod:`.base` (:class:`Table`, :class:`CsvTableWriter`, cell formatting and chunked reading),
:mod:`.objects` (prediction objects), :mod:`.ground_truth` (synthetic scenes and nuclei), :mod:`.volume`
(medical volumes), :mod:`.attributes` (what ``evaluate`` reads). Import the names from this package.
"""

from smallseg.io.tables.attributes import ObjectAttributes, default_object_table_path, read_object_table
from smallseg.io.tables.base import CsvTableWriter, Table
from smallseg.io.tables.ground_truth import NucleiTable, SceneObjects
from smallseg.io.tables.objects import (
    OBJECTS_CSV_COLUMNS,
    ObjectTable,
    objects_csv_writer,
    read_objects_csv,
    write_objects_csv,
)
from smallseg.io.tables.volume import VolumeObjects

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
