"""The ``smallseg`` command line: parses options and calls the Python API. Nothing else lives here.

One module per subcommand family (``train`` with ``tune-decode``, ``finetune``, ``synth``, ``dicom_batch``,
``evaluate``, ``tile_and_predict``, ``demo``), each an ``add_<name>(subparsers)`` that declares its options
(every option has help text) and a ``_run_<name>(args) -> int`` that calls the library; ``options`` holds the
option blocks and value parsers several subcommands share, ``cluster`` the ``--cluster`` flags. User errors
arrive as :class:`smallseg.errors.SmallsegError` and are printed as one line, exit code 2; library messages
name Python options (``min_area_px``) and each subcommand translates them to its flags (``--min-area``).
"""

from __future__ import annotations

import argparse
import os
import sys

from smallseg import __version__
from smallseg.cli import demo, dicom_batch, evaluate, finetune, synth, tile_and_predict, train
from smallseg.errors import SmallsegError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# The everyday jobs first, then scoring and data, then model making: the order `smallseg --help` lists them.
_SUBCOMMANDS = (demo.add_demo, tile_and_predict.add_tile_and_predict, dicom_batch.add_dicom_batch,
                evaluate.add_evaluate, synth.add_synth, train.add_train, finetune.add_finetune,
                train.add_tune_decode)


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``smallseg COMMAND: error: ... (see --help)``), like every other
    error of the command line, instead of the usage block followed by the message."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="smallseg",
        description=(
            "Find and outline small objects (cars, buildings, nuclei, nodules) in images far larger "
            "than a GPU tile, and score the results."
        ),
    )
    parser.add_argument("--version", action="version", version=f"smallseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None, *, on_row_done=None) -> int:
    """Run the command line ``argv``; returns the exit status.

    ``on_row_done`` (for embedding and tests): tile-and-predict calls it with (input path, n) each time tile rows
    0..n-1 of that input are checkpointed.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.on_row_done = on_row_done
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except SmallsegError as exc:
        print(f"smallseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"smallseg {args.command}: interrupted; no output was marked complete", file=sys.stderr)
        return 130
