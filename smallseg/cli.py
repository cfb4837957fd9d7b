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


@_subcommand
def _add_train(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model from a YAML config",
        description=(
            "Train a smallseg model (encoder -> FPN fusion -> LFE -> centroid/distance heads) as a YAML config "
            "says (see configs/). Writes last/best checkpoints (.safetensors with the model config inside), "
            "state.pt for --resume and history.jsonl with losses and validation AP_small / Boundary AP per epoch."
        ),
    )
    p.add_argument("config", help="training config YAML, e.g. configs/remote-sensing.yaml")
    p.add_argument("--out", default=None, help="run folder for checkpoints and logs (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out after its last finished epoch (same result as not stopping)")
    p.add_argument("--device", default=None,
                   help="auto (CUDA if available), cpu, cuda or cuda:N; overrides the config's device")
    p.add_argument("--epochs", type=int, default=None, help="override optim.epochs from the config")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="override optim.steps_per_epoch")
    p.add_argument("--batch-size", type=int, default=None, help="override optim.batch_size")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines (for batch jobs)")
    p.set_defaults(run=_run_train)


def _run_train(args) -> int:
    from smallseg.train.loop import load_train_config, train

    config = load_train_config(args.config)
    for option, field in (("epochs", "epochs"), ("steps_per_epoch", "steps_per_epoch"), ("batch_size", "batch_size")):
        value = getattr(args, option)
        if value is not None:
            if value < 1:
                raise SmallsegError(f"--{option.replace('_', '-')} {value}: must be at least 1")
            setattr(config.optim, field, value)
    result = train(config, args.out or f"runs/{config.name}", resume=args.resume, device=args.device,
                   progress=not args.quiet)
    print(f"best checkpoint: {result.best_checkpoint}")
    return 0


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
