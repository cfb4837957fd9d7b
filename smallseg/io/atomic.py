"""Outputs that are either complete or absent, and one writer per output.

Every file smallseg writes goes through :func:`atomic_path`: it is written under a temporary name in the same
folder and renamed to its final name only once complete, so a killed run never leaves a file that looks
finished. Temporary names follow one scheme, ``.NAME.partial-XXXXXXXX.EXT`` (hidden, a random tag so that
two processes never share one, the original extension kept because SimpleITK and GDAL choose the format
from it), and :func:`is_partial_name` recognises exactly that scheme, so clean-up after a crash can find
every leftover and nothing else.

:class:`OutputLock` is an exclusive, advisory lock (``flock``) on a lock file: a second run on the same
output is refused in one line naming the process that holds it. The kernel releases the lock when the
holder dies, even by ``kill -9``, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from smallseg.errors import SmallsegError, one_line

PARTIAL_TAG = ".partial-"

# Suffixes kept on a temporary name (longest first), so format-sniffing writers still see them.
_KEPT_SUFFIXES = (".nii.gz", ".tar.gz", ".ome.tif", ".ome.tiff")


def split_extension(name: str) -> tuple[str, str]:
    """``"labels.nii.gz"`` -> ``("labels", ".nii.gz")``; ``"scene.tif"`` -> ``("scene", ".tif")``."""
    lower = name.lower()
    for suffix in _KEPT_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix):]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, "." + ext


def partial_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path``: ``DIR/.STEM.partial-1a2b3c4d.EXT``."""
    path = Path(path)
    stem, ext = split_extension(path.name)
    return path.with_name(f".{stem}{PARTIAL_TAG}{uuid.uuid4().hex[:8]}{ext}")


def is_partial_name(name: str) -> bool:
    """True for a name made by :func:`partial_path` (a leftover of an interrupted write)."""
    return name.startswith(".") and PARTIAL_TAG in name


def remove_partials(folder: str | os.PathLike) -> list[Path]:
    """Delete every leftover temporary file directly inside ``folder``; returns what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if is_partial_name(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on any error delete it.

    >>> with atomic_path("out/scene.geojson") as tmp:   # doctest: +SKIP
    ...     tmp.write_text(text)
    """
    path = Path(path)
    tmp = partial_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (complete or not there)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data, *, default=None, indent: int | None = 2) -> None:
    """Write ``data`` as JSON (a trailing newline) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=indent, default=default) + "\n")


class OutputLock:
    """Exclusive lock on an output for the lifetime of one run (a context manager).

    Args:
        lock_file: the lock file to create (e.g. ``OUT/.smallseg.lock``); its folder must exist.
        what: how to name the locked output in the refusal (default: the lock file's folder).

    Raises:
        SmallsegError: ``"OUT is in use by process N (another smallseg run); ..."`` when another
            process holds the lock, or the lock file cannot be created (a read-only folder).
    """

    def __init__(self, lock_file: str | os.PathLike, *, what: str | None = None):
        self.lock_file = Path(lock_file)
        self.what = what or str(self.lock_file.parent)
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        try:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SmallsegError(f"{self.what}: cannot write there ({one_line(exc)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise SmallsegError(f"{self.what}: cannot lock it ({one_line(exc)})") from None
            who = f"process {holder}" if holder else "another process"
            raise SmallsegError(f"{self.what} is in use by {who} (another smallseg run writes there); "
                                "wait for it to finish or write to another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            # The file stays: unlinking it would let a third process lock a new inode while a second still
            # waits on the old one.
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return int(os.read(fd, 32).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """A CSV cell that spreadsheet programs will not run as a formula (OWASP's CSV-injection rule).

    Text starting with ``= + - @``, tab or carriage return gets a leading apostrophe; numbers (including
    negative ones, also as text such as ``"-3.5"``) and other values are returned unchanged, so numeric columns stay numeric.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _is_number(value):
        return "'" + value
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
