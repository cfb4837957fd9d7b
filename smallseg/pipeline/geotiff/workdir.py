"""The work folder of one scene's run: band checkpoints, resume, the lock, finished-run decisions.

While a run is going, everything lives in the hidden work folder ``OUT/.STEM.resume/``:

- ``params.json``: what the outputs depend on (input size and mtime, bands, nodata, model fingerprint,
  tiling, decoding, batch size, device type; :func:`run_params`), written first;
- ``band.NNNNNN.npz``: one per finished tile row: its finished label/class rows, the objects that ended in it,
  its share of the quick-look and the outline tracer's carry (format :data:`STATE_FORMAT`);
- ``stitch.NNNNNN.npz``: the stitcher's state after the last finished tile row;
- ``progress.json``: the next tile row, replaced atomically last, so it always points at a complete
  checkpoint;
- the staged outputs (``STEM.instances.tif``, ...), moved into ``OUT`` when all are complete.

Every file is written with :mod:`smallseg.io.atomic` (a temporary ``.NAME.partial-XXXXXXXX.EXT`` renamed
when complete); resuming deletes the leftovers by :func:`~smallseg.io.atomic.is_partial_name` and everything
newer than the checkpoint, and replays the bands.

``OUT/.STEM.lock`` (:func:`scene_lock`) is held for the whole run of that scene, decisions included: one
writer per scene, and different scenes of one folder can be written by different processes at once. The
kernel releases it when the process dies, even by ``kill -9``; the (empty) file stays.

``STEM.run.json`` marks a finished run; it carries the run's :func:`run_params` under ``"resume_key"``, so
``resume=True`` on a finished run returns it only when input, model and settings are the same.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smallseg.errors import SmallsegError, one_line
from smallseg.io.atomic import OutputLock, atomic_path, is_partial_name, write_json_atomic
from smallseg.pipeline.geotiff.options import OUTPUT_SUFFIXES, GeoTiffOptions
from smallseg.tiling.stitch import StitchState

STATE_FORMAT = 2  # 2: band checkpoints carry ids_below (the object table is streamed)
QUICKLOOK_MAX_SIDE_PX = 1024


@dataclass(frozen=True)
class WorkDir:
    """Where one scene's files go: final names in ``out_dir``, staged ones and checkpoints in ``work``."""

    stem: str
    out_dir: Path

    @property
    def work(self) -> Path:
        return self.out_dir / f".{self.stem}.resume"

    @property
    def lock_file(self) -> Path:
        return self.out_dir / f".{self.stem}.lock"

    def final(self, kind: str) -> Path:
        return self.out_dir / f"{self.stem}{OUTPUT_SUFFIXES[kind]}"

    def staged(self, kind: str) -> Path:
        return self.work / f"{self.stem}{OUTPUT_SUFFIXES[kind]}"

    def band(self, r: int) -> Path:
        return self.work / f"band.{r:06d}.npz"

    def stitch(self, k: int) -> Path:
        return self.work / f"stitch.{k:06d}.npz"

    @property
    def params(self) -> Path:
        return self.work / "params.json"

    @property
    def progress(self) -> Path:
        return self.work / "progress.json"

    @property
    def resumable(self) -> bool:
        """True when an interrupted run with at least its start recorded is in the work folder."""
        return self.progress.exists() and self.params.exists()


def scene_lock(work: WorkDir, input_name: str) -> OutputLock:
    """The exclusive lock of one scene's outputs (not yet acquired; use ``with``)."""
    return OutputLock(work.lock_file, what=f"{work.out_dir} (the outputs of {input_name})")


# ------------------------------------------------------------------------------------------------ files


def json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: Path, data: dict) -> None:
    """``data`` as indented JSON, atomically."""
    write_json_atomic(path, data, default=json_default)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` with fast deflate (level 1), atomically."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for name, value in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)


def load_band(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {name: z[name] for name in z.files}


# ------------------------------------------------------------------------------------------- decisions


def run_params(path: Path, reader, model_sha256: str, plan, decode_config, options: GeoTiffOptions,
               device_type: str, input_plan=None) -> dict:
    """What a run's outputs depend on (JSON-able): a checkpoint or a finished run with other params is not
    this run's. ``input_plan`` (:class:`~smallseg.pipeline.geotiff.run.InputPlan`): the bands and the
    normalisation with its fitted values - a resumed run must normalise exactly as the interrupted one."""
    from dataclasses import asdict

    stat = path.stat()
    params = {
        "format": STATE_FORMAT,
        "input": {"path": str(path.resolve()), "size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "bands": list(reader.bands),
        "nodata": reader.nodata,
        "model_sha256": model_sha256,
        "tile_size_px": plan.tile_size_px,
        "overlap_px": plan.overlap_px,
        "decode": asdict(decode_config),
        "batch_size": options.batch_size,
        "amp": options.amp,
        "device_type": device_type,
        "duplicate_ios": options.duplicate_ios,
        "quicklook_max_side_px": QUICKLOOK_MAX_SIDE_PX,
    }
    if input_plan is not None:
        params["normalization"] = input_plan.norm.to_dict()
        params["norm_stats"] = {k: v for k, v in input_plan.stats.to_dict().items() if k in ("lo", "hi", "degenerate")}
        params["alpha_band"] = input_plan.bands.alpha_index
        params["resample"] = input_plan.resample  # other pixels are another result (issue #13)
        if input_plan.modality is not None:
            params["modality"] = input_plan.modality
    if options.outline is not None:  # other polygons are another result: a finished run with others is not this one
        params["outline"] = options.outline.to_report()
    return json.loads(json.dumps(params, default=json_default))


def _changed(old: dict, new: dict) -> str:
    return ", ".join(sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)))


def finished_run(work: WorkDir, params: dict, options: GeoTiffOptions) -> dict | None:
    """Decide about a finished run (``STEM.run.json``) in the folder.

    Returns:
        The finished run's report when it is to be returned as it is (``resume``, same input, model and
        settings); None when there is none or it is to be redone (``overwrite``: its ``run.json`` is
        removed, so the folder no longer claims a finished run).

    Raises:
        SmallsegError: a finished run is there and neither ``resume`` (matching) nor ``overwrite`` was given.
    """
    marker = work.final("run")
    if not marker.exists():
        return None
    if options.overwrite:
        marker.unlink()
        return None
    if not options.resume:
        raise SmallsegError(f"{marker}: a finished run for this input is already in {work.out_dir}; pass "
                            f"overwrite=True to redo it or resume=True to skip it")
    run = read_json(marker)
    old = run.get("resume_key")
    if old is None:
        raise SmallsegError(f"{marker}: the finished run there was written by an older smallseg version and "
                            f"cannot be checked against this input, model and settings; pass overwrite=True "
                            f"to redo it")
    if old != params:
        raise SmallsegError(f"{marker}: the finished run there used other input, model or settings "
                            f"({_changed(old, params)} differ); pass overwrite=True to redo it, or rerun with "
                            f"the same settings")
    if work.work.exists():  # left over by a kill between run.json and the clean-up
        shutil.rmtree(work.work, ignore_errors=True)
    return run


@dataclass
class Checkpoint:
    """Where streaming starts: the stitcher's state (None: from the top), the first tile row, when the run
    started, the quick-look outline tracer's carry (None: from the top)."""

    state: StitchState | None
    first_row: int
    started: str
    tracer_carry: dict | None


def open_work(work: WorkDir, params: dict, options: GeoTiffOptions, started: str) -> Checkpoint:
    """Start the work folder, or reopen an interrupted run's (``resume``) after checking it matches."""
    folder = work.work
    if folder.exists() and not options.resume:
        if not options.overwrite:
            raise SmallsegError(f"{folder}: an interrupted run for this input is there; pass resume=True to "
                                f"continue it or overwrite=True to start over")
        shutil.rmtree(folder)
    if folder.exists() and work.resumable:
        try:
            old = read_json(work.params)
        except (OSError, ValueError) as exc:
            if not options.overwrite:
                raise _damaged(folder, work.params, exc) from None
            old = None
        if (old is None or old != params) and options.overwrite:  # resume + overwrite: continue if possible
            shutil.rmtree(folder)
        elif not isinstance(old, dict):
            raise _damaged(folder, work.params, TypeError(f"a JSON {type(old).__name__}, not an object"))
        elif old.get("format") != params["format"]:
            raise SmallsegError(
                f"{folder}: the interrupted run was written by another smallseg version (checkpoint format "
                f"{old.get('format')}, this version uses {params['format']}) and cannot be resumed; pass "
                f"overwrite=True to start over")
        elif old != params:
            raise SmallsegError(
                f"{folder}: the interrupted run used other settings or input ({_changed(old, params)} differ); "
                f"rerun with the same settings to resume, or pass overwrite=True to start over")
    if folder.exists() and work.resumable:
        try:
            return _reopen(work)
        except _DAMAGE as exc:  # checkpoints are data: a damaged or foreign one is refused, never trusted
            if not options.overwrite:
                raise _damaged(folder, None, exc) from None
            shutil.rmtree(folder)
    if folder.exists():  # created but not even the first checkpoint was written
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_json(work.params, params)
    write_json(work.progress, {"next_tile_row": 0, "started": started})
    return Checkpoint(None, 0, started, None)


# What reading a damaged or tampered checkpoint raises (np.load refuses pickled arrays with ValueError).
_DAMAGE = (OSError, ValueError, KeyError, TypeError, IndexError, EOFError, zipfile.BadZipFile, SmallsegError)


def _reopen(work: WorkDir) -> Checkpoint:
    """The checkpoint of an interrupted run whose params matched; raises one of ``_DAMAGE`` if it is damaged."""
    folder = work.work
    progress = read_json(work.progress)
    k = int(progress["next_tile_row"])
    started = progress["started"]
    if k < 0 or not isinstance(started, str):
        raise ValueError(f"progress.json: next_tile_row {k}, started {started!r}")
    # Leftover temporary files and anything newer than the checkpoint (the tile row in progress) go.
    for p in folder.iterdir():
        name = p.name
        if is_partial_name(name) or (name.startswith("band.") and int(name.split(".")[1]) >= k) or (
            name.startswith("stitch.") and int(name.split(".")[1]) != k
        ):
            p.unlink()
    state = StitchState.load(work.stitch(k)) if k > 0 else None
    carry = None
    if k > 0:
        carry = {name: v for name, v in load_band(work.band(k - 1)).items()
                 if name.startswith("outline_") or name == "soft_carry"}  # soft_carry: sub-pixel outlines
    return Checkpoint(state, k, started, carry)


def _damaged(folder: Path, file: Path | None, exc: BaseException) -> SmallsegError:
    where = f" ({file.name})" if file is not None else ""
    what = str(exc) if isinstance(exc, SmallsegError) else f"{type(exc).__name__}: {one_line(exc)}"
    return SmallsegError(f"{folder}: the interrupted run's checkpoint{where} is damaged or not smallseg's "
                         f"({what[:200]}); pass overwrite=True to start over (or delete that folder)")


def record_progress(work: WorkDir, next_tile_row: int) -> None:
    """Mark tile rows ``< next_tile_row`` checkpointed (the last write of a tile row's checkpoint)."""
    progress = read_json(work.progress)
    progress["next_tile_row"] = next_tile_row
    write_json(work.progress, progress)
