"""Option blocks and value parsers that several subcommands share."""

from __future__ import annotations

from smallseg.errors import SmallsegError


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
