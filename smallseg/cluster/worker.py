"""The model on a Dask worker: loaded once per worker process, identified by its fingerprint.

A task gets a :class:`ModelRef` (a few strings), never the weights. The first task on a worker that needs a
model loads it (a built-in name or checkpoint path: from the worker's own disk; a model object: from the copy
scattered to every worker once per job, see :func:`model_ref`), checks that it is the job's model
(:func:`~smallseg.models.registry.weights_fingerprint` equals ``ref.sha256``: a checkpoint file replaced
during the job is a one-line error, not a silently mixed result) and keeps it in a per-process cache;
every later task of any job with the same fingerprint reuses it.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import torch

from smallseg.errors import SmallsegError
from smallseg.models.registry import prepare_model, resolve_device, weights_fingerprint

_CACHE: dict[tuple[str, str], object] = {}
_LOCK = threading.Lock()
# Seconds each load took in this process (the benchmark reads them: the per-worker model load overhead).
LOAD_SECONDS: list[float] = []


@dataclass(frozen=True)
class ModelRef:
    """Which model a task runs.

    Attributes:
        sha256: the model's fingerprint (config + weights).
        device: where to run it (``cpu``, ``cuda``, ``auto``...), as the options say.
        source: a built-in name or a checkpoint path (the workers load it), or ``""`` for a model object
            (then the task also gets the scattered object).
        info: how run reports name the model (``ModelSource.to_dict()`` on the client).
    """

    sha256: str
    device: str | None
    source: str = ""
    info: tuple = ()


def model_ref(client, model, module: torch.nn.Module, info: dict, sha256: str, device):
    """The :class:`ModelRef` of a job and, for a model object, its scattered copy (a future; else None).

    Args:
        client: the job's Client.
        model: what the user passed (name, path or module).
        module: the model loaded on the client (for a module: ``model`` itself, prepared).
        info: ``ModelSource.to_dict()``; sha256: its fingerprint; device: the options' device.
    """
    if isinstance(model, torch.nn.Module):
        # Shipped to each worker once for the whole job (broadcast), not with every task.
        cpu = module if next(module.parameters()).device.type == "cpu" else module.to("cpu")
        future = client.scatter(cpu, broadcast=True, hash=False)
        return ModelRef(sha256, None if device is None else str(device), "", tuple(sorted(info.items()))), future
    source = info.get("path") or str(model)
    return ModelRef(sha256, None if device is None else str(device), str(source), tuple(sorted(info.items()))), None


def worker_model(ref: ModelRef, scattered: torch.nn.Module | None = None) -> tuple[torch.nn.Module, dict]:
    """The model of ``ref`` in this process (loaded on first use, then cached); returns (module, info)."""
    key = (ref.sha256, str(ref.device))
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is None:
            t = time.perf_counter()
            if ref.source:
                module, _ = prepare_model(ref.source, ref.device)
            elif scattered is not None:
                module, _ = prepare_model(scattered, ref.device)
            else:
                raise SmallsegError("a model object was passed without its scattered copy (internal error)")
            got = weights_fingerprint(module)
            if got != ref.sha256:
                raise SmallsegError(
                    f"model {ref.source or 'object'}: on worker {os.getpid()} it is not the job's model "
                    f"(fingerprint {got[:12]} != {ref.sha256[:12]}): the checkpoint file changed during the job "
                    f"or differs between machines; use one checkpoint file that every worker sees")
            LOAD_SECONDS.append(time.perf_counter() - t)
            cached = _CACHE[key] = module
    return cached, dict(ref.info)


def device_type_here(device) -> str:
    """The device type (``"cpu"``, ``"cuda"``) ``device`` resolves to in this process; raises one line when it
    cannot be used here (run on every worker by :func:`workers_device_type`)."""
    return resolve_device(device).type


def workers_device_type(client, device) -> str:
    """The one device type the cluster's workers run ``device`` on, asked of each worker now.

    The client only plans and stitches (it keeps a CPU copy of the model), so a CPU laptop can drive GPU
    workers with ``device="cuda"``; what runs the model, and what ``run.json`` and the resume key must name,
    is the workers' device. Workers that resolve it differently (``"auto"`` on a mix of GPU and CPU nodes) are
    refused: a scene's numbers would depend on which worker happened to run it.

    Raises:
        SmallsegError: a worker cannot use ``device``, or the workers disagree.
    """
    if not client.nthreads():
        client.wait_for_workers(1)  # a scheduler whose workers are still queued (SLURM, adaptive): the tasks would wait too
    try:
        types = client.run(device_type_here, device)
    except SmallsegError as exc:
        raise SmallsegError(f"on the cluster's workers: {exc}") from None
    kinds = sorted(set(types.values()))
    if len(kinds) > 1:
        by_kind = {k: sorted(a for a, v in types.items() if v == k) for k in kinds}
        detail = "; ".join(f"{k}: {len(a)} worker(s), e.g. {a[0]}" for k, a in by_kind.items())
        raise SmallsegError(f"device {str(device)!r} resolves to different devices on the workers ({detail}); "
                            "choose the device (cpu or cuda) explicitly, on workers that all have it")
    return kinds[0]


def load_seconds() -> list[float]:
    """Model load times of this process (for ``client.run(load_seconds)`` in the benchmark)."""
    return list(LOAD_SECONDS)
