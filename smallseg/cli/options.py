"""What several subcommands share: the parser of a subcommand, ``--device``, range checks of plain numbers,
``--percentiles``, and the translation of library messages (Python option names) into a subcommand's flags."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from smallseg.errors import SmallsegError

DEVICE_HELP = "auto (CUDA if available), cpu, cuda or cuda:N"


def subcommand(subparsers, name: str, run: Callable, *, help: str, description: str, epilog: str | None = None):
    """The parser of subcommand ``name`` (``run(args) -> int`` is what ``main`` calls)."""
    p = subparsers.add_parser(name, help=help, description=description, epilog=epilog)
    p.set_defaults(run=run)
    return p


def add_device(p, default: str | None, *, note: str | None = None) -> None:
    """``--device``, spelled and explained the same way in every subcommand that runs a model."""
    p.add_argument("--device", default=default, help=f"{DEVICE_HELP}; {note}" if note else
                   f"{DEVICE_HELP} (default: {default})")


def require_at_least(minimum: int, **values: int | None) -> None:
    """Refuse, in one line naming the flag, an integer option (given by its argparse name) below ``minimum``;
    None (not given) passes. argparse checks the type, not the range."""
    for name, value in values.items():
        if value is not None and value < minimum:
            raise SmallsegError(f"--{name.replace('_', '-')} {value}: must be at least {minimum}")


def percentiles_flag(text: str | None) -> tuple[float, float] | None:
    """``--percentiles LO,HI`` -> (lo, hi); a malformed value is one line."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 2:
        raise SmallsegError(f"--percentiles {text}: give LO,HI in 0-100, e.g. 1,99.8")
    return values


@dataclass(frozen=True)
class FlagNames:
    """How one subcommand spells the Python option names of library messages as its flags.

    The library says ``min_area_px 0: must be at least 1``; the command line should say ``--min-area 0: ...``.
    ``fields`` maps an option name to its flag: replaced when it is a message's first word (``area: ...``
    too), anywhere as a bare keyword (``check bands= and normalize=``), and anywhere in the text when it holds
    an underscore (an identifier, never an English word such as ``device``). ``phrases`` are replaced
    literally (``resume=True`` -> ``--resume``)."""

    fields: Mapping[str, str]
    phrases: Mapping[str, str] = field(default_factory=dict)

    def __call__(self, message: str) -> str:
        head, space, rest = message.partition(" ")
        name = head.removesuffix(":")
        if name in self.fields and (rest or name != head):
            message = f"{self.fields[name]}{head[len(name):]}{space}{rest}"
        for phrase, flag in self.phrases.items():
            message = message.replace(phrase, flag)
        for name, flag in self.fields.items():
            message = re.sub(rf"\b{re.escape(name)}=(?=[\s,;:.)]|$)", flag, message)  # a bare keyword
            if "_" in name:
                message = re.sub(rf"\b{re.escape(name)}\b", flag, message)
        return message


@contextmanager
def errors_as_flags(as_flags: Callable[[str], str]):
    """``with errors_as_flags(FLAGS):`` re-raises a library's SmallsegError with its option names as flags."""
    try:
        yield
    except SmallsegError as exc:
        raise SmallsegError(as_flags(str(exc))) from None
