"""Finished row bands -> the staged output files: label/class rasters, GeoPackage, GeoJSON, object table CSV.

:class:`Sink` takes the bands in order (live from the stream or replayed from checkpoints on resume) and
writes every output incrementally; each is staged in the work folder and moved into ``OUT`` by the run when
all are complete. One writer per output format, each in :mod:`smallseg.io` (rasters: ``io.raster_writer``,
vectors: ``io.vector``, the object table: ``io.tables``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from smallseg.io.geotiff import RasterGeometry
from smallseg.io.quicklook import QuicklookPart
from smallseg.io.raster_writer import class_writer, label_writer
from smallseg.io.resample import ResampledGrid
from smallseg.io.tables import ObjectTable, objects_csv_writer
from smallseg.io.vector import GeoJSONWriter, GeoPackageWriter, object_polygons
from smallseg.outline import OutlineStream, to_map
from smallseg.pipeline.geotiff.options import GeoTiffOptions
from smallseg.pipeline.geotiff.stream import table_from
from smallseg.pipeline.geotiff.workdir import WorkDir
from smallseg.tiling.grid import TileGrid

_VECTOR_BATCH = 4096
_BLOCK_PX = 256  # output raster blocks


class Sink:
    """Finished row bands (live or replayed from checkpoints) -> staged outputs in the work folder.

    Every byte written is a function of the bands, the input and the settings (no clock time, no timing),
    and bands always arrive in order 0, 1, ..., so a resumed run writes the same files as an uninterrupted
    one. Memory: the rows needed to polygonise the objects of one band (< tile_h + band rows), the objects
    not yet written to the CSV (those that may still precede an unfinished one in id order) and the
    quick-look parts: it does not grow with the scene. Without the CSV format the object table is kept.
    """

    def __init__(self, work: WorkDir, grid: TileGrid, geometry: RasterGeometry, class_names: Sequence[str],
                 options: GeoTiffOptions, session, *, source_name: str, data_date: str,
                 resampled: ResampledGrid | None = None, input_valid=None):
        """``geometry``: the input's grid, which every output is on; ``resampled``: the grid the bands come on
        when the scene was predicted resampled (each band is mapped back by nearest neighbour first);
        ``input_valid``: (row0, row1) -> the input's valid mask of those rows, or None (all valid)."""
        self.outputs, self.grid, self.geometry, self.session = work, grid, geometry, session
        self.resampled, self.input_valid = resampled, input_valid
        self._seen: dict[int, list[int]] = {}  # input px and box of objects not yet in a table (resampled runs)
        self.data_date = data_date
        want = options.output_kinds
        self.want = want
        cog, compress = options.cog, options.compress
        self.ground = geometry.ground  # m² per pixel: the same function as the object table's area_m2
        self.class_names = list(class_names)
        self.tables: list[ObjectTable] = []  # finished objects not yet in the CSV (all of them without a CSV)
        self.parts: list[QuicklookPart] = []
        self.counters = np.zeros(3, np.int64)
        self.nan_px = 0  # pixels that are nodata only for being NaN
        self.per_class = np.zeros(256, np.int64)  # class ids are uint8 in the class raster
        self.n_touching = 0
        self.csv = None
        self.csv_last_id = 0
        self.pending: list = []  # (polygons, table) not yet written to the vector files
        self.window = np.zeros((0, geometry.width), np.uint32)  # label rows kept for polygonising
        self.window_row0 = 0
        # Issue #17: simplified / regularised outlines, each object's from its stitched context (held back until
        # the rows below it are in); None: the exact pixel outlines below.
        self.outlines = None
        if options.outline is not None and self.vectors_wanted(want):
            self.outlines = OutlineStream(options.outline.for_classes(class_names), (geometry.height, geometry.width))
        tags = {"SMALLSEG_SOURCE": source_name}
        # 256 px blocks: the writers buffer one row of blocks across the whole scene width.
        outputs = work
        self.labels_out = label_writer(outputs.staged("instances"), geometry, cog=cog, compress=compress, tags=tags,
                                       blocksize=_BLOCK_PX)
        self.classes_out = class_writer(outputs.staged("classes"), geometry, cog=cog, compress=compress, tags=tags,
                                        blocksize=_BLOCK_PX)
        self.gpkg = GeoPackageWriter(outputs.staged("gpkg"), geometry.crs, class_names) if "gpkg" in want else None
        self.geojson = None
        try:
            self.labels_out.open()
            self.classes_out.open()
            if "geojson" in want:
                self.geojson = GeoJSONWriter(outputs.staged("geojson"), geometry.crs, class_names, name=outputs.stem,
                                             transform=geometry.transform)
                if self.geojson.note and geometry.crs is not None:  # without a CRS the reader has warned
                    session.warn(f"{source_name}: GeoJSON in {self.geojson.note}")
            if "csv" in want:
                self.csv = objects_csv_writer(outputs.staged("csv"))
        except BaseException:
            self.abort()
            raise

    @staticmethod
    def vectors_wanted(want) -> bool:
        return "gpkg" in want or "geojson" in want

    @property
    def vectors(self) -> bool:
        return self.gpkg is not None or self.geojson is not None

    def add_band(self, arrays) -> None:
        """Take one finished band (the arrays of its checkpoint)."""
        t = time.perf_counter()
        if self.resampled is not None:  # predicted on the resampled grid: the band's input rows
            arrays = self.resampled.band_to_input(arrays, self._seen, self.input_valid)
        row0, row1 = (int(v) for v in arrays["rows"])
        labels = np.asarray(arrays["labels"])
        self.labels_out.write_rows(row0, labels)
        self.classes_out.write_rows(row0, arrays["classes"])
        table = table_from(arrays)
        self.tables.append(table)
        self.per_class += np.bincount(table.class_ids, minlength=256)[:256]
        self.n_touching += int(table.touches_tile_edge.sum())
        if self.csv is not None:
            self._write_csv(int(arrays["ids_below"][0]))
        self.counters += np.asarray(arrays["counters"])
        self.nan_px += int(arrays["nan_px"][0]) if "nan_px" in arrays else 0
        self.parts.append(QuicklookPart.from_arrays(arrays, "img_"))
        if "outl_row0" in arrays:
            self.parts.append(QuicklookPart.from_arrays(arrays, "outl_"))
        if self.vectors and self.outlines is not None:
            keep_from = int(arrays["keep_from"][0]) if "keep_from" in arrays else row1 - self.grid.tile_h
            soft = arrays["soft"] if "soft" in arrays else None  # sub-pixel outlines: the band's soft map
            for polygons, tb in self.outlines.add_band(row0, labels, table, keep_from=keep_from, soft=soft):
                self._add_outlines(polygons, tb)
        elif self.vectors:
            if len(table):
                # One copy of the rows and columns this band's objects cover (kept rows above the band,
                # then the band): object_polygons polygonises exactly that box.
                r0, c0 = int(table.bbox[:, 0].min()), int(table.bbox[:, 1].min())
                c1 = int(table.bbox[:, 3].max())
                if r0 < self.window_row0:
                    raise RuntimeError("object taller than a tile: stitching invariant broken")
                crop = np.empty((row1 - r0, c1 - c0), labels.dtype)
                above = max(row0 - r0, 0)
                crop[:above] = self.window[r0 - self.window_row0 :, c0:c1]
                crop[above:] = labels[r0 + above - row0 :, c0:c1]
                polygons = object_polygons(crop, r0, c0, table.ids, table.bbox, self.geometry.transform)
                del crop
                self.pending.append((polygons, table))
                if sum(len(tb) for _, tb in self.pending) >= _VECTOR_BATCH:
                    self._flush_vectors()
            # Keep only the rows a later object may still have pixels in: from the top row of the unfinished
            # objects' emitted pixels (checkpoints of older versions lack it: an object lies in one tile, so
            # it starts less than tile_h rows above the next band).
            keep_from = int(arrays["keep_from"][0]) if "keep_from" in arrays else row1 - self.grid.tile_h
            keep_from = min(max(keep_from, self.window_row0), row1)
            self.window = np.concatenate([self.window[keep_from - self.window_row0 :],
                                          labels[max(keep_from - row0, 0) :]])
            self.window_row0 = keep_from
        self.session.add_time("outputs", time.perf_counter() - t)

    def _add_outlines(self, polygons, table) -> None:
        """Outlines in scene px from :class:`~smallseg.outline.OutlineStream` -> the vector batch."""
        if len(table):
            self.pending.append((to_map(polygons, self.geometry.transform), table))
            if sum(len(tb) for _, tb in self.pending) >= _VECTOR_BATCH:
                self._flush_vectors()

    def _write_csv(self, ids_below: int | None) -> None:
        """Write the held objects with ids below ``ids_below`` (all: None) to the CSV, in id order."""
        held = ObjectTable.concat(self.tables).sorted_by_id()
        n = len(held) if ids_below is None else int(np.searchsorted(held.ids, ids_below))
        if n:
            if held.ids[0] <= self.csv_last_id:
                raise RuntimeError("object ids out of order: stitching invariant broken")
            self.csv.write(held.rows(slice(0, n)), class_names=self.class_names, geometry=self.geometry)
            self.csv_last_id = int(held.ids[n - 1])
        self.tables = [held.rows(slice(n, None))]

    def _flush_vectors(self) -> None:
        if not self.pending:
            return
        polygons = [p for batch, _ in self.pending for p in batch]
        table = ObjectTable.concat([tb for _, tb in self.pending])
        area_m2 = self.ground.area_m2(table.area_px, table.centroids_yx)
        if area_m2 is None:
            area_m2 = np.full(len(table), np.nan)
        cols = (table.ids, table.class_ids, table.scores, table.area_px, area_m2)
        if self.gpkg is not None:
            with _ogr_date(self.data_date):
                self.gpkg.write(polygons, *cols)
        if self.geojson is not None:
            self.geojson.write(polygons, *cols)
        self.pending.clear()

    def close(self) -> tuple[ObjectTable | None, dict, list[QuicklookPart]]:
        """Finish every staged file. Returns (object table sorted by id, or None when it went to the CSV;
        counts; quick-look parts)."""
        t = time.perf_counter()
        try:
            if self.csv is not None:
                self._write_csv(None)
                self.csv.close()
            if self.outlines is not None:
                for polygons, tb in self.outlines.finish():
                    self._add_outlines(polygons, tb)
            self._flush_vectors()
            if self.gpkg is not None:
                with _ogr_date(self.data_date):
                    self.gpkg.close()
            if self.geojson is not None:
                self.geojson.close()
            self.labels_out.close()
            self.classes_out.close()
        except BaseException:
            self.abort()
            raise
        self.session.add_time("outputs", time.perf_counter() - t)
        counts = {"valid_px": int(self.counters[0]), "tiles_predicted": int(self.counters[1]),
                  "tiles_skipped_nodata": int(self.counters[2]), "objects": int(self.per_class.sum()), "nan_px": self.nan_px,
                  "per_class": self.per_class, "touching_tile_edge": self.n_touching}
        objects = None if self.csv is not None else ObjectTable.concat(self.tables).sorted_by_id()
        self.tables = []
        return objects, counts, self.parts

    def abort(self) -> None:
        """Drop the half-written staged rasters (the rest lies in the work folder and is redone on resume)."""
        self.labels_out.abort()
        self.classes_out.abort()
        if self.csv is not None:
            self.csv.close()
        if self.geojson is not None:
            self.geojson.close()


class _ogr_date:
    """Fix GDAL's "current date", which a GeoPackage records as its ``last_change``, to the input file's
    modification time: the GeoPackage then depends only on the input and the settings (a resumed run, or a
    rerun, writes the same bytes)."""

    def __init__(self, iso: str):
        self.iso = iso

    def __enter__(self):
        import pyogrio

        self.old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": self.iso})

    def __exit__(self, *exc):
        import pyogrio

        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": self.old})
