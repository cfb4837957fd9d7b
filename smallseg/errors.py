"""The one error type users see.

Anything a user can fix (a wrong path, a corrupt file, a band count that does not fit the model, GT and
prediction on different grids) is raised as :class:`SmallsegError` with a one-line message that says what
is wrong and what to do. The CLI prints that line and exits non-zero; it never shows a traceback for it.
"""

from __future__ import annotations


class SmallsegError(Exception):
    """A problem with the user's input or settings, described in one line.

    The message names the offending file or option and, where possible, the fix
    (e.g. ``"pred.tif: 3 bands, but the model expects 4; pass --bands 1,2,3,4"``).
    """


def one_line(exc: BaseException) -> str:
    """Collapse an exception from a dependency into a single readable line."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
