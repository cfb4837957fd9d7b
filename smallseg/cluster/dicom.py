"""``dicom-batch`` on a Dask cluster: one task per image stack, the summary kept in the batch's order.

Each task is :func:`~smallseg.pipeline.dicom_batch.process_series` (a pure function of stack, model and
options that never raises for a bad series and writes its folder with ``done.json`` last) on a worker with
the worker's cached model. The client decides the rows that need no prediction (modality not asked for,
finished earlier with ``resume``), gathers the rows as tasks finish and rewrites ``summary.csv`` after each
one with every finished row in the order of :func:`~smallseg.io.dicom.find_series`: the final summary has
the rows of the run without Dask in the same order; a killed batch leaves the finished rows and ``--resume``
does the rest. A stack whose worker dies is rerun by Dask (its folder has no ``done.json`` until complete, so
the rerun redoes it and nothing half-written looks finished). An output that cannot be written (disk full)
stops the batch as without Dask: the tasks not started are cancelled.
"""

from __future__ import annotations

import time
import uuid
import torch

from smallseg.errors import one_line
from smallseg.pipeline.dicom_batch import (
    BatchJob,
    BatchOptions,
    BatchResult,
    SeriesResult,
    _modality_note,
    _result,
    add_modality_note,
    decided_result,
    process_series,
    write_batch_summary,
)


def series_task(entry, ref, scattered, options: BatchOptions) -> SeriesResult:
    """A Dask task: one image stack with this worker's cached model."""
    from smallseg.cluster.worker import worker_model

    t0 = time.perf_counter()
    try:
        module, _ = worker_model(ref, scattered)
    except Exception as exc:  # noqa: BLE001 - a model that cannot be loaded there is this row's failure
        return _result(entry, "failed", t0, f"model on the worker: {one_line(exc)}"[:500])
    return process_series(entry, module, options)


def run_entries_on_cluster(client, job: BatchJob, model: torch.nn.Module, given_model, model_info: dict) -> BatchResult:
    """:func:`~smallseg.pipeline.dicom_batch.run_entries` with the stacks as tasks of ``client``.

    Args:
        job: the batch (entries, options, summary path, resume and reporting).
        model: the model loaded here (its fingerprint names the job's model on the workers);
        given_model: what the user passed (name, path or module: how the workers load it);
        model_info: ``ModelSource.to_dict()`` of it.
    """
    from distributed import as_completed

    from smallseg.cluster.progress import JobProgress
    from smallseg.cluster.worker import model_ref, workers_device_type

    entries, options, wanted, trained = job.entries, job.options, job.wanted, job.trained
    workers_device_type(client, options.device)  # a worker that cannot use the device: one line, before any task
    ref, scattered = model_ref(client, given_model, model, model_info, options.model_fingerprint, options.device)
    batch = BatchResult([], job.summary_path, notes=list(job.notes))
    rows: list[SeriesResult | None] = [None] * len(entries)
    futures = {}
    for i, entry in enumerate(entries):
        rows[i] = decided_result(entry, options, resume=job.resume, wanted=wanted)
        if rows[i] is None:
            futures[client.submit(series_task, entry, ref, scattered, options, pure=False,
                                  key=f"smallseg-series-{i}-{uuid.uuid4().hex}")] = i
    bar = JobProgress(len(entries), desc="series", enabled=job.progress)
    noted: set[str] = set()

    def finish(i: int) -> None:
        add_modality_note(batch, noted, entries[i], rows[i], wanted, trained)
        batch.results = [r for r in rows if r is not None]
        write_batch_summary(batch, batch.results, job.summary_path)
        if job.on_result is not None:
            job.on_result(rows[i])
        bar.task_done(objects=rows[i].objects, failed=rows[i].status == "failed")

    try:
        for i, row in enumerate(rows):
            if row is not None:
                finish(i)
        for future in as_completed(list(futures)):
            i = futures.pop(future)
            try:
                rows[i] = future.result()
            except Exception as exc:  # noqa: BLE001 - the task died (KilledWorker after its allowed failures)
                rows[i] = _result(entries[i], "failed", time.perf_counter(), f"{type(exc).__name__}: {one_line(exc)}")
            finish(i)
            if rows[i].output_failed:
                left = sum(r is None for r in rows)
                batch.stopped = (f"stopped: an output could not be written ({rows[i].message}); {left} entr"
                                 f"{'y' if left == 1 else 'ies'} not processed; free space and rerun with "
                                 "resume=True")
                break
    finally:
        for future in futures:
            future.cancel()
        bar.close()
    # Notes in the order of the entries, as without Dask.
    batch.notes, noted_again = [], set()
    for entry, row in zip(entries, rows):
        if row is not None and entry.is_image:
            note = _modality_note(entry.modality, trained)
            if note and entry.modality.upper() not in noted_again and (wanted is None or entry.modality.upper() in wanted):
                noted_again.add(entry.modality.upper())
                batch.notes.append(note)
    return batch
