"""The ``--cluster`` flags of ``tile-and-predict`` and ``dicom-batch`` (argparse only: importing this module
imports no Dask; :func:`open_cluster` does, when ``--cluster`` is given)."""

from __future__ import annotations

from contextlib import contextmanager

from smallseg.cli.options import FlagNames, errors_as_flags
from smallseg.errors import SmallsegError

# smallseg.cluster names the value it was given a 'cluster spec'; here it is the flag.
_FLAGS = FlagNames({}, {"cluster spec": "--cluster"})

CLUSTER_HELP = (
    "run on a Dask cluster: local:N (N one-thread worker processes on this machine, loopback only), "
    "tcp://HOST:PORT (a running Dask scheduler, e.g. from dask-jobqueue or a Kubernetes Dask chart) or "
    "FILE.json (a scheduler file); one task per {unit}, the model loaded once per worker; outputs are the "
    "same bytes as without it. Workers must see the input and output paths (a shared file system). "
    "Needs pip install 'smallseg[cluster]'"
)


def add_cluster_args(parser, *, unit: str, split: bool = False) -> None:
    """Add ``--cluster`` and ``--torch-threads`` (and ``--split-scene`` for GeoTIFFs) to a subcommand."""
    group = parser.add_argument_group("cluster (dask.distributed)")
    group.add_argument("--cluster", default=None, metavar="SPEC", help=CLUSTER_HELP.format(unit=unit))
    group.add_argument("--torch-threads", type=int, default=None, metavar="N",
                       help="torch threads per worker (default: the worker's cores divided by its Dask threads; "
                            "local:N: this machine's cores divided by N)")
    if split:
        group.add_argument("--split-scene", default="auto", metavar="ROWS",
                           help="with --cluster, split a scene into tasks of ROWS tile rows (bands; each reads "
                                "its tiles' overlap as halo) predicted in parallel and stitched in order into "
                                "the same outputs, ids included. auto (default): scenes of at least 4096 x 4096 "
                                "px with at least two tile rows per worker, in about 4 bands per worker; 0: "
                                "never (one task per scene)")


def split_rows(args) -> int | str:
    """``--split-scene`` as ``predict_geotiffs``' ``split_rows``."""
    value = str(getattr(args, "split_scene", "auto")).strip().lower()
    if value in ("auto", "off"):
        return value
    try:
        k = int(value)
    except ValueError:
        raise SmallsegError(f"--split-scene {value}: use auto, 0 (never) or a number of tile rows") from None
    if k < 0:
        raise SmallsegError(f"--split-scene {k}: use auto, 0 (never) or a number of tile rows >= 1")
    return k


@contextmanager
def open_cluster(args):
    """``with open_cluster(args) as client``: None without ``--cluster`` (nothing imported)."""
    if getattr(args, "cluster", None) is None:
        if getattr(args, "torch_threads", None) is not None:
            raise SmallsegError("--torch-threads is for --cluster workers; without --cluster set OMP_NUM_THREADS")
        yield None
        return
    if args.torch_threads is not None and args.torch_threads < 1:
        raise SmallsegError(f"--torch-threads {args.torch_threads}: must be at least 1")
    from smallseg.cluster.client import cluster_client

    with errors_as_flags(_FLAGS), cluster_client(args.cluster, torch_threads=args.torch_threads) as client:
        yield client
