"""One huge scene across Dask workers: bands of tile rows predicted in parallel, stitched in order, exact.

::

    workers (parallel):  band [r0, r1) of tile rows: read ─▶ model ─▶ decode ─▶ ownership ─▶ part file
                         (OUT/.STEM.resume/parts/part.R0-R1.npz, written atomically)
    client (in order):   part of tile row r ─▶ the streaming stitcher, checkpoints and sinks of one process
                         (:func:`~smallseg.pipeline.geotiff.stream.stream_rows` with ``row_source``)

The halo. A band of tile rows ``[r0, r1)`` reads every scene row its tiles' windows cover:
``[row_starts[r0], row_starts[r1 - 1] + tile_h)``, i.e. its final rows plus the tile overlap above and below
(``grid.final_rows``). That is exactly the halo the ownership rule needs: an object is kept only by the tile
whose core holds its centroid, and the grid guarantees that tile saw it whole (objects within
``floor(overlap / 2)`` px of their centroid, :mod:`smallseg.tiling.grid`). So every tile's decoded objects,
and which of them it owns, are decided inside the band that holds the tile, with no information from other
bands; a worker stores, per tile, the decoded objects with the pixels of the objects it does not own set to 0
(the stitcher never reads those: :meth:`~smallseg.tiling.grid.Tile.owns` filters first).

Why the merge is exact. The outputs of one process are a function of the sequence, tile row by tile row, of
(valid mask of the final rows, quick-look share, decoded tiles, tile counts): :func:`read_and_predict_row`
computes exactly that sequence, and :class:`~smallseg.tiling.stitch.RowStitcher` (ownership, global ids from
a running counter in tile row-major order, conflict preference that depends only on tile content) consumes
it in order. Here the workers call the same :func:`read_and_predict_row` on the same rows with the same model
and settings, and the client feeds the results, in tile-row order, into the same stitcher, checkpoints and
writers. Zeroing the pixels of objects a tile does not own changes nothing the stitcher reads (an owned
object's mask and bounding box are those of its own id; object order and indices are kept). Hence the ids,
rasters, vectors, CSV and quick-look are byte-identical to the single-process run, for any band size and any
number of workers. The one condition is that the model gives the same numbers on the workers: same
software, device type and torch threads (float sums may differ across thread counts; with the one-thread
workers of ``local:N`` and a one-thread single process they are the same, as the tests check).

The merge's cost is the stitch and the writers, one pass over the scene in one process; the model, the
decoding and the reading (most of the time) run on the workers. The merge is where a huge scene's
scale-out stops: see benchmarks/RESULTS.md.

Faults. Parts are complete or absent (:mod:`smallseg.io.atomic`) and carry the run's key (a hash of
:func:`~smallseg.pipeline.geotiff.workdir.run_params`): a worker killed while writing leaves nothing that
looks finished and Dask reruns the band; a client killed mid-merge leaves the checkpoints of the stitched
tile rows and the finished parts, and ``resume`` continues from the checkpoint, reusing the parts still there.
The run's params do not depend on the split, so a split run can be resumed without Dask and the other way.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smallseg.errors import SmallsegError
from smallseg.instances import Instances
from smallseg.io.quicklook import QuicklookPart, quicklook_grid
from smallseg.pipeline.geotiff.stream import read_and_predict_row
from smallseg.pipeline.geotiff.workdir import QUICKLOOK_MAX_SIDE_PX, WorkDir, save_npz
from smallseg.tiling.grid import TileGrid

PART_FORMAT = 1
# "auto": scenes from this many pixels up are split (a 4,096² scene is ~1 min of model time on one core at
# 256 px tiles; smaller scenes are better as one task each), in about this many bands per worker (balance:
# the last band's worker should not run long after the others).
AUTO_SPLIT_MIN_PX = 4096 * 4096
AUTO_BANDS_PER_WORKER = 4


def band_rows_for(grid: TileGrid, split_rows: int | str | None, n_workers: int) -> int:
    """Tile rows per band for this scene, 0 = do not split.

    Args:
        split_rows: ``"auto"`` (scenes of at least :data:`AUTO_SPLIT_MIN_PX` px with at least two tile rows
            per worker, into about :data:`AUTO_BANDS_PER_WORKER` bands per worker), an int (split scenes
            with more tile rows than that into bands of that many), or 0 / None (never).
        n_workers: workers of the cluster now.
    """
    if split_rows in (None, 0, "0", "off"):
        return 0
    if split_rows == "auto":
        if grid.height * grid.width < AUTO_SPLIT_MIN_PX or grid.n_rows < 2 * n_workers:
            return 0
        return max(1, math.ceil(grid.n_rows / (AUTO_BANDS_PER_WORKER * n_workers)))
    k = int(split_rows)
    if k < 0:
        raise SmallsegError(f"split_rows {k}: must be 'auto', 0 (never split) or a number of tile rows >= 1")
    return k if grid.n_rows > k else 0


def band_ranges(n_rows: int, first_row: int, band_rows: int) -> list[tuple[int, int]]:
    """Bands ``[r0, r1)`` of ``band_rows`` tile rows (aligned at 0, so a resumed run finds the same parts)
    that still hold tile rows ``>= first_row``."""
    return [(a, min(a + band_rows, n_rows)) for a in range(0, n_rows, band_rows) if min(a + band_rows, n_rows) > first_row]


def part_path(work: WorkDir, r0: int, r1: int) -> Path:
    return work.work / "parts" / f"part.{r0:06d}-{r1:06d}.npz"


def run_key(params: dict) -> str:
    """What a part belongs to: a hash of the run's params (input, model, tiling, decoding, ...)."""
    return hashlib.sha256(json.dumps({"part_format": PART_FORMAT, **params}, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class _BandJob:
    """What :func:`read_and_predict_row` reads of a job (the worker's own reader and model)."""

    reader: object
    grid: TileGrid
    options: object
    session: object
    model: object
    decode_config: object


def _part_ok(path: Path, key: str) -> int | None:
    """Objects owned in a finished part of this run, or None when it is absent or not this run's."""
    try:
        with np.load(path) as z:
            if str(z["key"]) != key:
                return None
            return int(z["owned"])
    except (OSError, ValueError, KeyError, EOFError):
        return None


def _row_arrays(r: int, grid: TileGrid, rows_valid, image_rows_part: QuicklookPart, found: list[Instances],
                counts: tuple) -> tuple[dict[str, np.ndarray], int]:
    """One tile row as part arrays (``r{r}_...``) and the number of objects its tiles own."""
    p = f"r{r}_"
    tiles = grid.tile_row(r)
    dtype = np.result_type(*[inst.labels.dtype for inst in found])
    labels = np.zeros((len(found), grid.tile_h, grid.tile_w), dtype)
    owned_total = 0
    for c, (tile, inst) in enumerate(zip(tiles, found)):
        if len(inst) == 0:
            continue
        owned = tile.owns(inst.centroids_yx)
        owned_total += int(owned.sum())
        keep = np.zeros(int(max(inst.labels.max(initial=0), inst.ids.max(initial=0))) + 1, bool)
        keep[inst.ids[owned].astype(np.int64)] = True
        labels[c] = np.where(keep[inst.labels], inst.labels, 0)  # pixels of objects another tile owns: unread
    arrays = {
        f"{p}valid": rows_valid,
        f"{p}counts": np.array(counts[:2], np.int64),
        f"{p}labels": labels,
        f"{p}n": np.array([len(inst) for inst in found], np.int64),
        f"{p}ids": np.concatenate([inst.ids for inst in found]).astype(np.int64),
        f"{p}class_ids": np.concatenate([inst.class_ids for inst in found]).astype(np.int32),
        f"{p}scores": np.concatenate([inst.scores for inst in found]).astype(np.float32),
        f"{p}centroids": np.concatenate([inst.centroids_yx for inst in found]).reshape(-1, 2).astype(np.float64),
        **image_rows_part.to_arrays(f"{p}img_"),
    }
    if counts[2] is not None:  # the soft map's core rows (sub-pixel outlines)
        arrays[f"{p}soft_r0"] = np.array([counts[2][0]], np.int64)
        arrays[f"{p}soft"] = counts[2][1]
    return arrays, owned_total


def _row_inputs(z, r: int) -> tuple:
    """Inverse of :func:`_row_arrays`: the four values of :func:`read_and_predict_row` for tile row ``r``."""
    p = f"r{r}_"
    labels = z[f"{p}labels"]
    bounds = np.concatenate([[0], np.cumsum(z[f"{p}n"])])
    ids, class_ids, scores, cents = z[f"{p}ids"], z[f"{p}class_ids"], z[f"{p}scores"], z[f"{p}centroids"]
    found = [Instances(labels=labels[c], ids=ids[a:b], class_ids=class_ids[a:b], scores=scores[a:b],
                       centroids_yx=cents[a:b])
             for c, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
    soft = (int(z[f"{p}soft_r0"][0]), z[f"{p}soft"]) if f"{p}soft" in z else None
    counts = (*(int(v) for v in z[f"{p}counts"]), soft)
    return z[f"{p}valid"], QuicklookPart.from_arrays(z, f"{p}img_"), found, counts


def predict_band(path: str, ref, scattered, options, r0: int, r1: int, part: str, key: str,
                 grid_key: tuple) -> int:
    """A Dask task: tile rows ``[r0, r1)`` of the scene ``path`` -> the part file ``part``.

    Returns the number of objects the band's tiles own (before duplicates are resolved: a progress figure).
    A finished part of the same run is not redone (a retried or resumed band).
    """
    from smallseg.cluster.worker import worker_model
    from smallseg.pipeline.geotiff.report import Session
    from smallseg.pipeline.geotiff.run import _open_reader, _plan

    part = Path(part)
    done = _part_ok(part, key)
    if done is not None:
        return done
    model, _ = worker_model(ref, scattered)
    session = Session()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the client's own pass over the input reports them, once
        reader = _open_reader(Path(path), model, options, session)
    try:
        decode_config, _, grid = _plan(model, reader, options)
        if (grid.height, grid.width, grid.tile_h, grid.overlap_h) != tuple(grid_key):
            raise SmallsegError(f"{path}: the worker sees another scene or tiling than the client "
                                f"({grid.height}x{grid.width}); workers and client need the same files")
        job = _BandJob(reader, grid, options, session, model, decode_config)
        qgrid = quicklook_grid(grid.height, grid.width, QUICKLOOK_MAX_SIDE_PX)
        arrays: dict[str, np.ndarray] = {"key": np.array(key), "rows": np.array([r0, r1], np.int64)}
        owned = 0
        for r in range(r0, r1):
            row_arrays, n = _row_arrays(r, grid, *read_and_predict_row(job, r, qgrid, None))
            arrays.update(row_arrays)
            owned += n
        arrays["owned"] = np.array(owned, np.int64)
        part.parent.mkdir(parents=True, exist_ok=True)
        save_npz(part, arrays)
    finally:
        reader.close()
    return owned


class BandSource:
    """``stream_rows``' ``row_source`` for a split scene: submits the bands, hands out their rows in order.

    Args:
        client: the Client; job: the client's :class:`~smallseg.pipeline.geotiff.run.SceneJob` (under the
            scene lock, work folder open); first_row: where streaming starts (a resumed run: later);
        ref, scattered: the model (:mod:`smallseg.cluster.worker`); band_rows: tile rows per band;
        progress: a :class:`~smallseg.cluster.progress.JobProgress` (one tick per band) or None.
    """

    def __init__(self, client, job, first_row: int, ref, scattered, band_rows: int, progress=None):
        self.job, self.band_rows, self.progress = job, band_rows, progress
        grid = job.grid
        self.key = run_key(job.params)
        grid_key = (grid.height, grid.width, grid.tile_h, grid.overlap_h)
        self.bands = band_ranges(grid.n_rows, first_row, band_rows)
        if progress is not None:
            progress.add_tasks(len(self.bands))
        token = self.key[:10]
        self.futures = {}
        for i, (r0, r1) in enumerate(self.bands):
            # Earlier bands first: the merge consumes them in order.
            self.futures[r0] = client.submit(
                predict_band, str(job.path), ref, scattered, job.options, r0, r1,
                str(part_path(job.work, r0, r1)), self.key, grid_key,
                key=f"smallseg-band-{job.path.stem}-{r0:06d}-{r1:06d}-{token}-{uuid.uuid4().hex[:12]}", pure=False,
                priority=len(self.bands) - i, retries=1)
        self._open: tuple[int, object] | None = None

    def _band_of(self, r: int) -> tuple[int, int]:
        r0 = (r // self.band_rows) * self.band_rows
        return r0, min(r0 + self.band_rows, self.job.grid.n_rows)

    def __call__(self, r: int) -> tuple:
        r0, r1 = self._band_of(r)
        if self._open is None or self._open[0] != r0:
            self.close()
            future = self.futures.pop(r0)
            future.result()  # a band's error (after Dask's retries) is raised here and ends the scene's run
            if self.progress is not None:
                self.progress.task_done()
            path = part_path(self.job.work, r0, r1)
            z = np.load(path)
            if str(z["key"]) != self.key:
                z.close()
                raise SmallsegError(f"{path}: a part of another run; delete {self.job.work.work} to start over")
            self._open = (r0, z)
        return _row_inputs(self._open[1], r)

    def close(self) -> None:
        """Close the part in use and delete it (its rows are in the stitcher; a resume recomputes them)."""
        if self._open is not None:
            r0, z = self._open
            z.close()
            part_path(self.job.work, r0, self._band_of(r0)[1]).unlink(missing_ok=True)
            self._open = None

    def cancel(self) -> None:
        """Release the bands not consumed (Dask cancels what is not running yet)."""
        for f in self.futures.values():
            f.cancel()
        self.futures.clear()


def split_factory(client, ref, scattered, band_rows: int, progress=None, sources: list | None = None):
    """A ``row_source_factory`` for :func:`~smallseg.pipeline.geotiff.run._predict_scene`: ``(job, first_row)``
    -> :class:`BandSource`; every source made is appended to ``sources`` (to close / cancel it after)."""

    def factory(job, first_row: int) -> BandSource:
        t = time.perf_counter()
        source = BandSource(client, job, first_row, ref, scattered, band_rows, progress)
        job.session.add_time("submit_bands", time.perf_counter() - t)
        if sources is not None:
            sources.append(source)
        return source

    return factory
