"""Streaming tile rows: read and run the model in the calling thread; decode, stitch, checkpoint and write in a
worker thread.

::

    calling thread:  reader.read_with_mask(grid.row_window(r)) ─model (predict_tile_row)─▶ head maps ─┐
    worker thread:   decode ─▶ RowStitcher ─▶ finished rows + objects ─▶ checkpoint of row r ─▶ sink ◀─┘

The worker decodes batch b while the calling thread runs the model on batch b + 1, and stitches and writes
tile row r while the model works on row r + 1, so the model (or the GPU) rarely waits. One stitching worker,
tasks in submission order, one tile row in flight, decoded tiles collected in order: the result does not
depend on timing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np

from smallseg.instances import Instances
from smallseg.io.quicklook import OutlineTracer, QuicklookPart, image_part, quicklook_grid
from smallseg.io.tables import ObjectTable
from smallseg.pipeline.array import TileModel, predict_tile_row
from smallseg.pipeline.classes import keep_classes
from smallseg.pipeline.geotiff.workdir import QUICKLOOK_MAX_SIDE_PX, Checkpoint, WorkDir, record_progress, save_npz
from smallseg.tiling.grid import TileGrid
from smallseg.tiling.stitch import RowStitcher


def _load_malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load_malloc_trim()
# Trim only scenes at least this wide: a trim also returns the model's freed working memory, which the next
# forward pass faults back in (~40 ms per tile row on a 2-core CPU: 3 % of a 4,096 px wide row's time,
# < 1 % from 16,384 px on, where it saves ~2 KB of peak resident memory per scene column).
_TRIM_MIN_WIDTH_PX = 16384


def release_freed_memory(width_px: int) -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``; elsewhere nothing) for wide scenes.

    The arrays of one band of a wide scene are tens of MB, short-lived and of varying sizes; glibc keeps
    the freed pages of its arenas, so without this the resident memory grows by KBs per scene column
    beyond what is alive at any time.
    """
    if _MALLOC_TRIM is not None and width_px >= _TRIM_MIN_WIDTH_PX:
        _MALLOC_TRIM(0)


def table_arrays(table: ObjectTable) -> dict[str, np.ndarray]:
    """An object table as checkpoint arrays (``obj_<field>``)."""
    return {f"obj_{k}": v for k, v in asdict(table).items()}


def table_from(arrays) -> ObjectTable:
    """The object table of a band checkpoint's arrays."""
    return ObjectTable(**{name: np.asarray(arrays[f"obj_{name}"]) for name in ObjectTable.column_names()})


class _RowFinisher:
    """The worker's job for one tile row: stitch its decoded tiles, checkpoint the band, hand it to the sink."""

    def __init__(self, grid: TileGrid, stitcher: RowStitcher, tracer: OutlineTracer, work: WorkDir, session,
                 sink, bar):
        self.grid, self.stitcher, self.tracer, self.work = grid, stitcher, tracer, work
        self.session, self.sink, self.bar = session, sink, bar
        self.t0 = time.perf_counter()
        self.objects = 0
        self.pixels = 0
        self.soft_carry = None  # soft-map rows of the previous tile row's cores below its band

    def _soft_band(self, row0: int, row1: int, soft_rows) -> dict[str, np.ndarray]:
        """The band's rows of the soft map (sub-pixel outlines): the rows above this tile row's cores come
        from the previous tile row's core rows (carried, and saved with the band for resume), the rest
        from this row's; the core rows below the band are carried to the next band."""
        if soft_rows is None:
            return {}
        c0, core = soft_rows
        carry = self.soft_carry if self.soft_carry is not None else np.zeros((0, core.shape[1]), np.float32)
        if row0 + len(carry) != c0 or c0 + len(core) < row1:
            raise RuntimeError("soft map rows do not meet the band: tile cores invariant broken")
        band = np.concatenate([carry, core[: row1 - c0]])
        self.soft_carry = core[row1 - c0 :].copy()
        return {"soft": band, "soft_carry": self.soft_carry}

    def __call__(self, r: int, rows_valid: np.ndarray, image_rows_part: QuicklookPart, found: list,
                 counts: tuple) -> None:
        """Tile row ``r``: its final rows' valid mask, quick-look share and decoded tiles, and (tiles
        predicted, pixels made nodata for being NaN, the soft map's core rows or None)."""
        n_predicted, n_nan, soft_rows = counts
        grid, stitcher, session = self.grid, self.stitcher, self.session
        t = time.perf_counter()
        release_freed_memory(grid.width)  # the previous band's arrays are gone
        n_tiles = len(found)
        out = stitcher.add_tile_row(r, found)
        del found[:]  # the decoded tiles are stitched: free them before the band's outputs are built
        if (out.row0, out.row1) != grid.final_rows(r):
            raise RuntimeError("stitched band differs from the grid's final rows: stitching invariant broken")
        classes = np.where(rows_valid, out.classes, np.uint8(255))
        outline_part = self.tracer.add(out.row0, out.labels, out.classes)
        arrays = {
            "rows": np.array([out.row0, out.row1], np.int64),
            "labels": out.labels,
            "classes": classes,
            "counters": np.array([int(rows_valid.sum()), n_predicted, n_tiles - n_predicted], np.int64),
            "nan_px": np.array([n_nan], np.int64),
            # every object with a smaller id is finished: the sink can write those table rows now
            "ids_below": np.array([min(stitcher.state.live, default=stitcher.state.next_id)], np.int64),
            # no later object has a pixel above this row: the sink can drop the label rows above it
            "keep_from": np.array([min((o.bbox_emitted[0] for o in stitcher.state.live.values() if o.area_emitted),
                                       default=out.row1)], np.int64),
            **table_arrays(out.objects),
            **image_rows_part.to_arrays("img_"),
            **(outline_part.to_arrays("outl_") if outline_part is not None else {}),
            **self.tracer.carry,
            **self._soft_band(out.row0, out.row1, soft_rows),
        }
        session.add_time("stitch", time.perf_counter() - t)

        t = time.perf_counter()
        save_npz(self.work.band(r), arrays)
        stitcher.state.save(self.work.stitch(r + 1))
        record_progress(self.work, r + 1)  # the checkpoint of tile row r is complete
        self.work.stitch(r).unlink(missing_ok=True)
        session.add_time("checkpoint", time.perf_counter() - t)

        self.sink.add_band(arrays)
        self.objects += len(out.objects)
        self.pixels += (out.row1 - out.row0) * grid.width
        rate = self.pixels / 1e6 / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix(objects=self.objects, MPps=f"{rate:.2f}", refresh=False)
        self.bar.update(n_tiles)


def read_and_predict_row(job, r: int, qgrid, decode_executor) -> tuple[np.ndarray, QuicklookPart, list, tuple[int, int]]:
    """Read tile row ``r`` of ``job``'s scene and run the model on it: what :class:`_RowFinisher` needs.

    Returns:
        (valid mask of the row's final rows ``grid.final_rows(r)``, (rows, width) bool; the rows' quick-look
        share; one decoded :class:`Instances` per tile of the row, left to right, tile px; (tiles predicted,
        pixels made nodata for being NaN, (first row, soft map of the row's core rows) for sub-pixel outlines
        or None)). A pure function of the scene, the model and the settings: the
        split-scene tasks (:mod:`smallseg.pipeline.geotiff.split`) call it on Dask workers.
    """
    reader, grid, options, session = job.reader, job.grid, job.options, job.session
    width = grid.width
    t = time.perf_counter()
    band, valid, nan = reader.read_with_mask(grid.row_window(r), nan_mask=True)
    session.add_time("read", time.perf_counter() - t)

    t = time.perf_counter()
    tiles = grid.tile_row(r)
    all_valid = bool(valid.all())
    # Tiles without a single valid pixel (nodata collars) are not worth a forward pass.
    keep = [i for i, tile in enumerate(tiles)
            if all_valid or valid[:, tile.window.col_off:tile.window.col_off + grid.tile_w].any()]
    found = [Instances.empty((grid.tile_h, grid.tile_w))] * len(tiles)
    allowed = reader.input_plan.class_ids  # classes of the image's modality (medical model), None: all
    softs = [] if wants_soft(options) else None
    if keep:
        # No other reference to the decoded tiles: the worker frees them once they are stitched.
        run = TileModel(job.model, job.decode_config, options.batch_size, options.amp, reader.input_plan.norm,
                        reader.input_plan.stats)
        for i, inst in zip(keep, predict_tile_row(band, None if all_valid else valid, [tiles[i] for i in keep],
                                                  grid.row_starts[r], run, decode_executor, soft_out=softs)):
            # An object of another modality's class (a "nodule" in a microscopy image) is real foreground
            # whose class head is confused: it takes the modality's class (one) or is dropped (several),
            # per tile before stitching, as predict_volume does per slice.
            found[i] = inst if allowed is None else keep_classes(inst, allowed, [0])
    soft_rows = None if softs is None else core_soft_rows(tiles, keep, softs, width)
    session.add_time("predict", time.perf_counter() - t)

    # What the worker needs of the read window: the band's rows of the valid mask and the band's
    # quick-look share. The pixels are dropped here, before the next tile row is read, so only
    # one read window is in memory at a time.
    t = time.perf_counter()
    row0, row1 = grid.final_rows(r)
    wr0 = grid.row_starts[r]
    rows_valid = valid[row0 - wr0 : row1 - wr0, :width].copy()
    image_rows_part = image_part(qgrid, row0, band[:, row0 - wr0 : row1 - wr0, :width], rows_valid)
    n_nan = 0 if nan is None else int(np.count_nonzero(nan[row0 - wr0 : row1 - wr0, :width]))
    del band, valid, nan
    session.add_time("quicklook", time.perf_counter() - t)
    return rows_valid, image_rows_part, found, (len(keep), n_nan, soft_rows)


def wants_soft(options) -> bool:
    """Whether the run keeps the model's soft map for sub-pixel outlines (issue #17)."""
    return options.outline is not None and options.outline.subpixel and \
        bool({"gpkg", "geojson"} & set(options.output_kinds))


def core_soft_rows(tiles, keep, softs, width: int) -> tuple[int, np.ndarray]:
    """The soft map of a tile row's core rows, each pixel from the tile whose core holds it (the cores
    partition the scene, as object ownership does; tiles without a valid pixel give NaN = outside).
    Returns (first scene row, (core rows, width) float32)."""
    core = tiles[0].core
    r0, h = int(core.row_off), int(core.height)
    rows = np.full((h, width), np.nan, np.float32)
    for soft, i in zip(softs, keep):
        t = tiles[i]
        c0, cw = int(t.core.col_off), int(t.core.width)
        wr, wc = r0 - int(t.window.row_off), c0 - int(t.window.col_off)
        rows[:, c0:c0 + cw] = soft[wr:wr + h, wc:wc + cw]
    return r0, rows


def stream_rows(job, checkpoint: Checkpoint, sink, on_row_done: Callable[[int], None] | None = None,
                row_source: Callable[[int], tuple] | None = None) -> None:
    """Tile rows ``checkpoint.first_row..`` of ``job`` (a :class:`~smallseg.pipeline.geotiff.run.SceneJob`):
    read and run the model here; decoding, stitching, checkpoints and outputs in one worker thread (decoding
    in ``decode_workers`` threads of its own when more than 1).

    Args:
        on_row_done: called here (the calling thread) with ``n`` as soon as tile rows ``0..n-1`` are
            checkpointed and handed to the sink, once per tile row in order; the worker is idle while it
            runs (nothing is being written), so the checkpoint on disk is exactly ``n`` rows. For tests
            and progress reports; an exception from it ends the run as an interruption would.
    """
    from tqdm.auto import tqdm

    reader, grid, options, session = job.reader, job.grid, job.options, job.session
    stitcher = RowStitcher(grid, duplicate_ios=options.duplicate_ios, state=checkpoint.state)
    qgrid = quicklook_grid(grid.height, grid.width, QUICKLOOK_MAX_SIDE_PX)
    tracer = OutlineTracer(qgrid)
    carry = dict(checkpoint.tracer_carry or {})
    soft_carry = carry.pop("soft_carry", None)
    if checkpoint.tracer_carry is not None:
        tracer.restore(carry)
    width = grid.width
    first_row = checkpoint.first_row
    bar = tqdm(total=len(grid), initial=first_row * grid.n_cols, unit="tile", desc=reader.path.name,
               disable=not options.progress, leave=False, dynamic_ncols=True)
    finish_row = _RowFinisher(grid, stitcher, tracer, job.work, session, sink, bar)
    finish_row.soft_carry = None if soft_carry is None else np.asarray(soft_carry, np.float32)

    def wait_for(pending, rows_done: int) -> None:
        t = time.perf_counter()
        pending.result()  # the previous row is done (or its error is raised here)
        session.add_time("wait_for_worker", time.perf_counter() - t)
        if on_row_done is not None:
            on_row_done(rows_done)

    pending = None
    try:
        decoders = (ThreadPoolExecutor(max_workers=options.decode_workers, thread_name_prefix="smallseg-decode")
                    if options.decode_workers > 1 else nullcontext(None))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="smallseg-stitch") as worker, decoders as pool:
            decode_executor = worker if pool is None else pool
            for r in range(first_row, grid.n_rows):
                if row_source is None:
                    rows_valid, image_rows_part, found, counts = read_and_predict_row(job, r, qgrid, decode_executor)
                else:  # computed elsewhere (a Dask worker's band of tile rows): the same four values
                    t = time.perf_counter()
                    rows_valid, image_rows_part, found, counts = row_source(r)
                    session.add_time("wait_for_parts", time.perf_counter() - t)
                if pending is not None:
                    wait_for(pending, r)
                pending = worker.submit(finish_row, r, rows_valid, image_rows_part, found, counts)
                del found, rows_valid, image_rows_part
            if pending is not None:
                wait_for(pending, grid.n_rows)
    finally:
        bar.close()
