"""Reading a YAML config file that may build on another one with a ``base:`` key.

A training config that differs from another in a few settings names it and states only the differences::

    # configs/medical-stage3.yaml
    base: medical-stage2.yaml          # relative to this file's folder
    init: ../runs/medical-stage2/best.safetensors
    loss: {class_weights: [1.0, 1.0, 10.0]}

The base is read first (itself possibly with a ``base:``), then this file's keys are laid over it: mappings are
merged key by key, at every depth; any other value (a list such as ``data.train``, a number, a string, ``null``)
replaces the base's value whole. Relative paths inside the merged config (``init:``, file data sources) are taken
relative to the folder of the file that is loaded, as if the merged config had been written there; keep a base in
the same folder as the files that build on it.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from smallseg.errors import SmallsegError, one_line


def read_config_file(path: str | os.PathLike, *, sections: Iterable[str] | None = None,
                     kind: str = "config") -> dict[str, Any]:
    """The mapping a YAML config file says, with its ``base:`` chain merged in (see the module docstring).

    Args:
        path: the YAML file.
        sections: the top-level keys a file may have (besides ``base``); a file with any other key is refused,
            naming that file. None: any key.
        kind: what the file is, for messages (``"training config"``).

    Returns:
        The merged mapping, without ``base``.

    Raises:
        SmallsegError: a file cannot be read or is not a YAML mapping, a ``base:`` is not a file name, names a
            missing file or leads back to a file already in the chain, or a file has an unknown section.
    """
    allowed = None if sections is None else set(sections)
    return _read(Path(path), allowed, kind, chain=())


def check_keys(given: Any, allowed: Iterable[str], where: str) -> None:
    """Refuse a mapping's keys that are not in ``allowed``, in one line naming the closest allowed key.

    A typo in a YAML section (``loss: {semantic_wieght: 2}``) would otherwise be ignored or surface as a
    ``TypeError`` from deep inside training.

    Args:
        given: the keys found (a mapping or any iterable of keys).
        allowed: the keys that section accepts.
        where: names the section for the message (``"configs/x.yaml: loss"``).

    Raises:
        SmallsegError: ``"WHERE: unknown key 'semantic_wieght' (did you mean semantic_weight?); allowed: ..."``.
    """
    allowed = sorted(str(k) for k in allowed)
    unknown = [k for k in given if k not in allowed]
    if not unknown:
        return
    key = unknown[0]
    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    more = f" and {len(unknown) - 1} more ({', '.join(map(repr, unknown[1:]))})" if len(unknown) > 1 else ""
    raise SmallsegError(f"{where}: unknown key {key!r}{hint}{more}; allowed: {', '.join(allowed) or 'none'}")


def merge_config(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base``: mappings merged key by key at every depth, other values replaced whole.

    Neither argument is modified; the result shares no mapping with them.
    """
    merged = {k: (merge_config(v, {}) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = merge_config(value, {}) if isinstance(value, dict) else value
    return merged


def _read(path: Path, allowed: set[str] | None, kind: str, chain: tuple[Path, ...]) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SmallsegError(f"{path}: cannot read {kind} ({one_line(exc)})") from None
    except yaml.YAMLError as exc:
        raise SmallsegError(f"{path}: not valid YAML ({one_line(exc)})") from None
    if not isinstance(raw, dict):
        known = f" with sections {', '.join(sorted(allowed))}" if allowed else ""
        raise SmallsegError(f"{path}: expected a mapping{known}")
    if allowed is not None:
        unknown = sorted(set(raw) - allowed - {"base"})
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), sorted(allowed), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SmallsegError(f"{path}: unknown section(s) {unknown}{hint}; known: base, {', '.join(sorted(allowed))}")
    base_name = raw.pop("base", None)
    if base_name is None:
        return raw
    if not isinstance(base_name, str) or not base_name.strip():
        raise SmallsegError(f"{path}: base: must name a YAML file (relative to {path.parent}), got {base_name!r}")
    base_path = path.parent / base_name
    here = path.resolve()
    if not base_path.is_file():
        raise SmallsegError(f"{path}: base: {base_name} not found (looked for {base_path})")
    if base_path.resolve() in (*chain, here):
        loop = " -> ".join(str(p) for p in (*chain, here, base_path.resolve()))
        raise SmallsegError(f"{path}: base: {base_name} leads back to itself ({loop}); remove one base: key")
    return merge_config(_read(base_path, allowed, kind, (*chain, here)), raw)
