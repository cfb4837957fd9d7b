"""``predict_geotiffs`` on a Dask cluster: one task per scene, huge scenes split into bands of tile rows.

- A scene is one task (:func:`scene_task`) that runs exactly what one process runs for it
  (:func:`~smallseg.pipeline.geotiff.run._predict_scene`: lock, work folder, checkpoints, outputs moved into
  ``OUT``, ``STEM.run.json`` last) on a worker, with the worker's cached model.
- A scene to split (``split_rows``, :func:`~smallseg.pipeline.geotiff.split.band_rows_for`) is stitched here
  in the client from band tasks on the workers (:mod:`smallseg.pipeline.geotiff.split`).

Faults. A task whose worker dies is rerun by Dask on another worker; it runs with ``resume`` (unless the
folder held a run before the job, which is then decided as without Dask), so it continues from the dead
attempt's last checkpointed tile row (the scene lock is a kernel lock: it died with the worker). A task that
fails (a bad file) is a one-line :class:`~smallseg.pipeline.geotiff.run.InputFailure` and the others go on.
If the client dies, the tasks stop with it and every scene is either finished (``STEM.run.json``) or has a
work folder that ``--resume`` continues.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from smallseg.errors import SmallsegError, one_line
from smallseg.pipeline.geotiff.options import GeoTiffOptions
from smallseg.pipeline.geotiff.run import (
    BatchResult,
    InputFailure,
    PredictionResult,
    _load_model,
    _Model,
    _open_reader,
    _plan,
    _predict_scene,
    find_inputs,
)
from smallseg.pipeline.geotiff.report import Session
from smallseg.pipeline.geotiff.workdir import WorkDir

TASK_RETRIES = 1  # a task that raised (not a lost worker: Dask reruns those by itself) is tried once more


def _failure(path: Path, out_dir: Path, exc: BaseException) -> InputFailure:
    if isinstance(exc, SmallsegError):
        return InputFailure(path, str(exc))
    return InputFailure(path, f"{path}: {type(exc).__name__}: {one_line(exc)}",
                        resumable=WorkDir(path.stem, out_dir).resumable)


def scene_task(path: str, out_dir: str, ref, scattered, options: GeoTiffOptions):
    """A Dask task: one whole scene on this worker. Returns a PredictionResult or an InputFailure."""
    from smallseg.cluster.worker import worker_model

    path, out = Path(path), Path(out_dir)
    try:
        module, info = worker_model(ref, scattered)
        result = _predict_scene(path, out, _Model(module, info, ref.sha256), options, None)
    except (SmallsegError, OSError, RuntimeError, ValueError, MemoryError) as exc:
        return _failure(path, out, exc)
    if result.paths.get("csv") is not None:
        result.table = None  # the client reads the CSV when asked; a big table need not travel
    return result


def _task_options(options: GeoTiffOptions, work: WorkDir) -> GeoTiffOptions:
    """Options for a scene's task: ``resume`` whenever that cannot change what the user asked for, so a
    rerun after a lost worker continues the dead attempt's work instead of refusing it."""
    if options.overwrite:
        return options.replace(resume=True)  # overwrite decides about earlier runs; resume continues ours
    if options.resume or work.final("run").exists() or work.work.exists():
        return options  # the folder held a run before this job: decided exactly as without Dask
    return options.replace(resume=True)


def _scene_pixels(path: Path) -> int:
    import rasterio

    try:
        with rasterio.open(path) as src:
            return int(src.height) * int(src.width)
    except Exception:  # noqa: BLE001 - a damaged file is reported by its task, in one line
        return 0


def predict_geotiffs_on_cluster(
    client,
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    model="remote-sensing",
    options: GeoTiffOptions | None = None,
    on_error: str = "record",
    on_done: Callable | None = None,
    on_row_done: Callable | None = None,
    split_rows: int | str | None = "auto",
) -> BatchResult:
    """:func:`~smallseg.pipeline.geotiff.run.predict_geotiffs` with the scenes as tasks of ``client``.

    Same arguments and result (inputs in order, one result or failure each) as ``predict_geotiffs``;
    ``split_rows`` chooses which scenes are split into bands of tile rows (see
    :func:`~smallseg.pipeline.geotiff.split.band_rows_for`). The outputs are byte-identical to
    ``predict_geotiffs`` without a client (``run.json`` differs in timings and session only).
    ``on_row_done(path, n)`` is called for the split scenes, whose tile rows are stitched and checkpointed
    here; a whole-scene task checkpoints its rows on its worker and reports only when it is done (``on_done``).
    """
    from smallseg.cluster.client import worker_count
    from smallseg.cluster.progress import JobProgress
    from smallseg.cluster.worker import model_ref, workers_device_type
    from smallseg.pipeline.geotiff.split import band_rows_for, split_factory

    options = options if options is not None else GeoTiffOptions()
    out_dir = Path(out_dir)
    batch = BatchResult(inputs=find_inputs(paths))
    # The client plans, fingerprints and stitches on a CPU copy (a model object stays where its owner put it);
    # the workers run the model on options.device.
    device_type = workers_device_type(client, options.device)
    loaded = _load_model(model, "cpu" if isinstance(model, str | os.PathLike) else None, options.tta)
    ref, scattered = model_ref(client, model, loaded.module, loaded.info, loaded.sha256, options.device)
    n_workers = worker_count(client)
    quiet = options.replace(progress=False)  # one bar for the job, not one per scene

    outcomes: dict[Path, PredictionResult | InputFailure] = {}
    whole: dict = {}  # path -> future
    split: list[tuple[Path, int]] = []
    for path in batch.inputs:
        if not path.exists():
            outcomes[path] = InputFailure(path, f"{path}: no such file; check the path")
            continue
        k = 0
        if split_rows not in (None, 0, "0", "off") and _scene_pixels(path):
            k = _band_rows(path, loaded, quiet, split_rows, n_workers, band_rows_for)
        if k:
            split.append((path, k))
        else:
            work = WorkDir(path.stem, out_dir)
            whole[path] = client.submit(scene_task, str(path), str(out_dir), ref, scattered,
                                        _task_options(quiet, work), key=f"smallseg-scene-{path.stem}-{uuid.uuid4().hex}",
                                        pure=False, retries=TASK_RETRIES)
    progress = JobProgress(len(whole), desc=f"{len(batch.inputs)} scene(s)", enabled=options.progress)

    def report(path: Path, outcome) -> None:
        outcomes[path] = outcome
        if isinstance(outcome, InputFailure):
            progress.write(f"failed: {outcome.message}")
        if on_done is not None:
            on_done(path, outcome)

    def tick(future) -> None:  # in Dask's callback thread: counts only
        try:
            res = future.result() if future.status == "finished" else None
        except Exception:  # noqa: BLE001 - reported when collected
            res = None
        progress.task_done(objects=res.n_objects if isinstance(res, PredictionResult) else 0,
                           failed=not isinstance(res, PredictionResult))

    for future in whole.values():
        future.add_done_callback(tick)
    try:
        for path, k in split:  # the merges run here, one after another, while the whole scenes run there
            sources: list = []
            try:
                rows_done = None if on_row_done is None else (lambda n, p=path: on_row_done(p, n))
                result = _predict_scene(path, out_dir, loaded, quiet, rows_done,
                                        row_source_factory=split_factory(client, ref, scattered, k, progress, sources),
                                        device_type=device_type)
                progress.add_objects(result.n_objects)
                outcome = result
            except SmallsegError as exc:
                if on_error == "raise":
                    raise
                outcome = _failure(path, out_dir, exc)
            except Exception as exc:  # noqa: BLE001 - a band's error after retries (KilledWorker, I/O...)
                if on_error == "raise":
                    raise
                outcome = _failure(path, out_dir, exc)
            finally:
                for s in sources:
                    s.cancel()
                    s.close()
            report(path, outcome)
        for path, future in whole.items():
            try:
                outcome = future.result()
            except Exception as exc:  # noqa: BLE001 - the task itself died (KilledWorker after its allowed failures)
                outcome = _failure(path, out_dir, exc)
            if isinstance(outcome, InputFailure) and on_error == "raise":
                raise SmallsegError(outcome.message)
            report(path, outcome)
    finally:
        for future in whole.values():
            future.cancel()
        progress.close()
    for path in batch.inputs:
        outcome = outcomes.get(path)
        if isinstance(outcome, PredictionResult):
            batch.results.append(outcome)
        elif outcome is not None:
            batch.failures.append(outcome)
            if on_done is not None and path not in whole and not any(path == p for p, _ in split):
                on_done(path, outcome)
    return batch


def _band_rows(path: Path, loaded, options: GeoTiffOptions, split_rows, n_workers: int, band_rows_for) -> int:
    """Tile rows per band for one scene (0: one task), from its tiling plan; 0 when it cannot be planned
    (its task then reports why)."""
    try:
        reader = _open_reader(path, loaded.module, options, _QuietSession())
    except (SmallsegError, OSError, RuntimeError, ValueError):
        return 0
    try:
        _, _, grid = _plan(loaded.module, reader, options)
    except (SmallsegError, ValueError):
        return 0
    finally:
        reader.close()
    return band_rows_for(grid, split_rows, n_workers)


class _QuietSession(Session):
    """A session whose warnings are kept, not shown (the scene's own run reports them)."""

    def warn(self, message: str) -> None:
        self.warnings.append(message)
