"""The ``smallseg`` command line: parses options and calls the Python API. Nothing else lives here.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its options (every option
has help text) and ``_run_<name>(args) -> int`` calls the library. User errors arrive as
:class:`smallseg.errors.SmallsegError` and are printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from smallseg import __version__
from smallseg.errors import SmallsegError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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


# Subcommands register themselves here, in the order `smallseg --help` lists them.
_SUBCOMMANDS: list = []


def _subcommand(add_fn):
    _SUBCOMMANDS.append(add_fn)
    return add_fn


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    raise SystemExit(main())
