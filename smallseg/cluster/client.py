"""``--cluster`` -> a ``dask.distributed.Client``: ``local:N``, ``tcp://HOST:PORT`` or a scheduler file.

- ``local:N``: a :class:`~distributed.LocalCluster` on the loopback interface (``127.0.0.1``, nothing
  listens on other interfaces, no dashboard), N worker *processes* with one Dask thread each: the model is
  CPU-bound Python, so threads would fight over the GIL and torch's own pool.
- ``tcp://HOST:PORT`` (or ``tls://``): an existing scheduler (``dask scheduler``, dask-jobqueue,
  dask-kubernetes, a helm chart's service).
- a path to a JSON scheduler file (``dask scheduler --scheduler-file FILE``; what dask-jobqueue jobs and
  ``dask-mpi`` write).

Every worker gets :class:`TorchThreads` (a worker plugin): ``torch.set_num_threads`` to its share of the cores
(cores the process may use // its Dask threads, or the number given), so N workers on N cores never
oversubscribe, and workers that join later get it too.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from smallseg.errors import SmallsegError, one_line

try:  # this module is imported only under --cluster; _require_dask says what to install when it is missing
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover - dask is in the dev and cluster extras
    WorkerPlugin = object

_LOCAL = re.compile(r"local:(\d+)")
CONNECT_TIMEOUT_S = 30


@dataclass(frozen=True)
class ClusterSpec:
    """A parsed ``--cluster`` value.

    Attributes:
        kind: ``"local"``, ``"address"`` or ``"scheduler_file"``.
        workers: number of local worker processes (``local`` only).
        address: scheduler address (``address``) or scheduler file path (``scheduler_file``).
    """

    kind: str
    workers: int = 0
    address: str = ""


def parse_cluster(text: str) -> ClusterSpec:
    """Parse ``local:N`` / ``tcp://HOST:PORT`` / ``tls://...`` / ``FILE.json``; one-line error otherwise."""
    text = str(text).strip()
    m = _LOCAL.fullmatch(text)
    if m:
        n = int(m.group(1))
        if not 1 <= n <= 512:
            raise SmallsegError(f"cluster spec {text}: local:N needs 1 <= N <= 512 worker processes")
        return ClusterSpec("local", workers=n)
    if text.startswith(("tcp://", "tls://", "ucx://")):
        if not re.fullmatch(r"[a-z]+://[^\s/]+:\d+", text):
            raise SmallsegError(f"cluster spec {text}: a scheduler address is PROTOCOL://HOST:PORT, "
                                "e.g. tcp://10.0.0.5:8786")
        return ClusterSpec("address", address=text)
    if text.endswith(".json"):
        if not Path(text).is_file():
            raise SmallsegError(f"cluster spec {text}: no such scheduler file (written by `dask scheduler "
                                f"--scheduler-file FILE` or a dask-jobqueue / dask-mpi job)")
        return ClusterSpec("scheduler_file", address=text)
    raise SmallsegError(f"cluster spec {text}: use local:N (N worker processes here), tcp://HOST:PORT (a running "
                        f"Dask scheduler) or a scheduler file FILE.json")


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class TorchThreads(WorkerPlugin):
    """Worker plugin: the worker's torch intra-op threads (set once, when the worker starts or joins).

    Args:
        threads: threads per Dask thread of the worker; None: usable cores // the worker's Dask threads.
    """

    name = "smallseg-torch-threads"
    idempotent = True

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def setup(self, worker) -> None:
        import torch

        n = self.threads or max(1, _usable_cores() // max(1, int(worker.state.nthreads)))
        torch.set_num_threads(n)
        os.environ["OMP_NUM_THREADS"] = str(n)  # for libraries that read it later (OpenCV, NumPy's BLAS)
        keep_freed_memory()

    def teardown(self, worker) -> None:
        pass


# glibc mallopt parameters (malloc.h) and the values glibc's own dynamic rule reaches in a long-running process.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
_TRIM_THRESHOLD_BYTES = 2 * _MMAP_THRESHOLD_BYTES  # what glibc sets when it raises the mmap threshold


def keep_freed_memory() -> bool:
    """Let this process's allocator keep and reuse freed memory, as a plain Python process does.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (distributed.yaml
    ``nanny.pre-spawn-environ``), meant to hand unmanaged memory back to the OS. Setting that variable also
    freezes glibc's mmap threshold at 128 KiB, so every feature map of every tile (MBs each) is a fresh
    ``mmap``, faulted in page by page, and ``munmap``-ed again: measured here, every scene then ran as slowly
    as a cold process's first scene (model time 18.8 s per 2,048² scene on a worker vs 9.3 s in one process;
    benchmarks/RESULTS.md "Scale-out on Dask"). Fixing the thresholds at the values glibc's dynamic rule
    reaches by itself restores the single process's speed; the worker's resident memory then stays at its
    peak (~1.2 GB with the shipped model), as in one process.

    Returns:
        True when applied (glibc), False elsewhere (musl, macOS: nothing to do).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) == 1
    return libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1 and ok


def _require_dask():
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise SmallsegError("a Dask cluster needs dask.distributed: pip install 'smallseg[cluster]' (or pip install "
                            "'dask[distributed]')") from None


def start_client(spec: ClusterSpec | str, *, torch_threads: int | None = None):
    """Connect (or start ``local:N``); returns ``(client, cluster_or_None)``. Close both when done
    (:func:`cluster_client` does)."""
    _require_dask()
    from distributed import Client, LocalCluster

    spec = parse_cluster(spec) if isinstance(spec, str) else spec
    cluster = None
    try:
        if spec.kind == "local":
            cluster = LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
            threads = torch_threads or max(1, _usable_cores() // spec.workers)
        elif spec.kind == "address":
            client = Client(spec.address, timeout=CONNECT_TIMEOUT_S)
            threads = torch_threads
        else:
            client = Client(scheduler_file=spec.address, timeout=CONNECT_TIMEOUT_S)
            threads = torch_threads
    except (OSError, TimeoutError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        where = spec.address or f"local:{spec.workers}"
        raise SmallsegError(f"cluster spec {where}: cannot connect to the Dask scheduler ({one_line(exc)})") from None
    client.register_plugin(TorchThreads(threads))
    return client, cluster


@contextmanager
def cluster_client(spec: ClusterSpec | str | None, *, torch_threads: int | None = None):
    """``with cluster_client("local:2") as client: ...``; ``None`` yields None and imports nothing."""
    if spec is None:
        yield None
        return
    client, cluster = start_client(spec, torch_threads=torch_threads)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def worker_count(client) -> int:
    """Workers connected now (at least 1: a scheduler without workers yet still gets the tasks)."""
    return max(1, len(client.nthreads()))
