"""Scale out on dask.distributed: the same units of work as one process, scheduled by Dask, same bytes out.

Nothing here imports Dask at import time of :mod:`smallseg` or :mod:`smallseg.cli`: the CLI imports
:mod:`smallseg.cli.cluster` (argparse only) and Dask is imported when ``--cluster`` is given.

- :mod:`~smallseg.cluster.client`: ``local:N`` / ``tcp://HOST:PORT`` / ``scheduler.json`` -> a ``Client``
  (a loopback ``LocalCluster`` of N one-thread worker processes for ``local:N``); workers set their torch
  threads in a worker plugin.
- :mod:`~smallseg.cluster.worker`: the model each task needs, loaded once per worker from its name or path and
  checked against the job's fingerprint (a model object is scattered to every worker once), never shipped
  with a task.
- :mod:`~smallseg.cluster.progress`: one progress bar for the whole job (tasks, objects, ETA) and one line per
  failed task.
- :mod:`~smallseg.cluster.scenes`: :func:`predict_geotiffs_on_cluster`, one task per scene and huge scenes
  split into bands of tile rows (:mod:`smallseg.pipeline.geotiff.split`).
- DICOM: :func:`smallseg.pipeline.dicom_batch.run_dicom_batch` with ``client=``: one task per image stack.

Units of work are pure functions of their inputs (a scene, a band of tile rows, an image stack) and write
through :mod:`smallseg.io.atomic` under the existing per-scene locks and done markers, so Dask retrying a task
whose worker died, or ``--resume`` after the client died, give the bytes of one uninterrupted process.
Workers and client must see the same file system (input and output paths are passed as paths).
"""
