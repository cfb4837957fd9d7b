"""Predict a whole GeoTIFF in bounded memory: stream tile rows, stitch exactly, write georeferenced outputs.

Flow (one tile row at a time; about one tile row of the scene is in memory at once)::

    main thread:   reader.read_with_mask(grid.row_window(r)) ─model (predict_tile_row)─▶ head maps ─┐
    worker thread: decode ─▶ RowStitcher ─▶ finished rows + objects ─▶ checkpoint of row r ─▶ outputs ◀─┘
                   (STEM.instances.tif, STEM.classes.tif, STEM.gpkg, STEM.geojson, staged in the work folder)
    at the end:    STEM.objects.csv, STEM.quicklook.png; everything moved into OUT; then STEM.run.json

The modules, in the order a run uses them:

- :mod:`~smallseg.pipeline.geotiff.options`: :class:`GeoTiffOptions`, every setting, validated when built.
- :mod:`~smallseg.pipeline.geotiff.run`: :func:`predict_geotiff` (one scene), :func:`predict_geotiffs`
  (files and folders, per-file error policy), :func:`find_inputs`, the result objects.
- :mod:`~smallseg.pipeline.geotiff.workdir`: the work folder, band checkpoint format, resume, the scene lock,
  finished-run decisions.
- :mod:`~smallseg.pipeline.geotiff.stream`: tile rows through the model and the stitching worker.
- :mod:`~smallseg.pipeline.geotiff.sinks`: finished bands into the output files (one writer per format).
- :mod:`~smallseg.pipeline.geotiff.report`: warnings, timings and ``STEM.run.json``.

Never lose work, never lie:

- While running, everything lives in the hidden work folder ``OUT/.STEM.resume/`` (see
  :mod:`~smallseg.pipeline.geotiff.workdir`). A kill or Ctrl-C at any moment loses at most the tile rows in
  progress; ``resume=True`` continues from there: the checkpointed bands are replayed into fresh outputs,
  then streaming goes on.
- One writer per scene: ``OUT/.STEM.lock`` is held for the whole run; a second run on the same scene (in
  this or another process) is refused in one line naming the process that holds it.
- Outputs are built in the work folder and moved into ``OUT`` only when all are complete (each keeps its
  final name from then on). ``STEM.run.json`` is written last: it is the "finished" marker. Outputs are a
  function of the bands, the input and the settings only (no clock time), and bands reach them in order,
  so a resumed run's outputs are byte-identical to an uninterrupted run's (``run.json`` differs only in
  timings and session info).
- An ``OUT`` that already holds a finished run for this input is refused unless ``overwrite`` (redo) or
  ``resume`` (nothing to do: the finished result is returned - only if it was made from the same input
  file, model and settings; otherwise refused in one line).
- Input problems are one-line :class:`~smallseg.errors.SmallsegError` s, raised before anything is written.
  An input without any valid pixel is not an error: the run finishes with empty outputs and a warning (a
  scene can legitimately be all nodata, e.g. one tile of a mosaic); a model that finds nothing is not an
  error either. NaN pixels of float bands are nodata (with a warning). A CRS with no conversion to WGS 84
  (an engineering / ``LOCAL_CS`` site grid) gives a GeoJSON in the raster's own coordinates, marked as such,
  with a warning (see :func:`smallseg.io.vector.geojson_coordinates_note`).

Resolution (issue #13): a georeferenced scene whose ground pixel size is outside the model's declared training
range (``training["train_pixel_size_m"]``), by at most 10x, is predicted resampled to the range's centre
(``sqrt(lo * hi)``: the model is weak at the range's edges, see ``report.resample_decision``): the reader becomes a virtual raster on that grid (:mod:`smallseg.io.resample`; GDAL WarpedVRT, area
average onto coarser pixels, bilinear onto finer ones, masks by nearest neighbour; a window of it equals the
same part of a whole read, so tiling stays exact), tiling, stitching and checkpoints work on that grid, and
the :class:`~smallseg.pipeline.geotiff.sinks.Sink` brings each finished band back to the input's grid by
nearest neighbour before writing: rasters with the input's size, transform and CRS, polygons of those
rasters, the object table in input px (``area_px`` = the object's pixels in the raster, ``area_m2`` its true
ground area). ``run.json`` ``input.resample`` says what was done or why not; it is part of the resume key.
``resample=False`` (``--no-resample``) predicts at the input's pixels.

Memory: one read window (bands x tile_h x width; the worker gets only the band's valid rows and quick-look
share), the model's batch, up to two tile rows of decoded tiles (uint8/uint16 labels), the stitcher's
pending band (tile_h rows, uint32), the output writers' row of 256 px blocks, the label rows the unfinished
objects cover and the finished objects not yet written to the CSV - independent of the scene height and of
the number of objects (the object table goes to ``STEM.objects.csv`` band by band;
:attr:`PredictionResult.objects` reads it back on first access); width enters linearly (about 6 KB of peak
resident memory per column of the scene at 256 px tiles, measured; freed pages go back to the OS once per
tile row with glibc's ``malloc_trim`` in scenes from 16,384 px wide). GDAL's block
cache comes on top: by default up to 5 % of RAM, filled as the scene streams by; set the ``GDAL_CACHEMAX``
environment variable (MB) before the first raster is read to bound it (the CLI sets 64 unless it is set). Tiles with no
valid pixel (nodata collars) are not sent to the model. Disk: the checkpoints (compressed label/class
bands) until the run finishes, about the size of the output rasters.
"""

from smallseg.pipeline.geotiff.options import FORMATS, OUTPUT_SUFFIXES, GeoTiffOptions, OptionError
from smallseg.pipeline.geotiff.run import (
    BatchResult,
    InputFailure,
    PredictionResult,
    find_inputs,
    predict_geotiff,
    predict_geotiffs,
)
from smallseg.io.tables import OBJECTS_CSV_COLUMNS as CSV_COLUMNS
from smallseg.io.tables import read_objects_csv, write_objects_csv

__all__ = [
    "BatchResult",
    "CSV_COLUMNS",
    "FORMATS",
    "GeoTiffOptions",
    "InputFailure",
    "OUTPUT_SUFFIXES",
    "OptionError",
    "PredictionResult",
    "find_inputs",
    "predict_geotiff",
    "predict_geotiffs",
    "read_objects_csv",
    "write_objects_csv",
]
