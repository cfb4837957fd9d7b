"""Batch prediction over a tree of DICOM files: one output folder per image stack, a summary that is always consistent.

:func:`run_dicom_batch` walks the tree once with :func:`~smallseg.io.dicom.find_series` (series split into stacks
by orientation, position and size, as dcm2niix does) and maps :func:`process_series` over what it finds.
``process_series`` is a pure function of (stack, model, options): it reads, predicts and writes
``OUT/<folder>/`` and returns a :class:`SeriesResult`, never raising for a bad series, so the same function can
be handed to a distributed executor.

Per image stack, in ``OUT/<folder>/`` (:func:`series_folder_name`; every file written under a temporary name and
renamed)::

    labels.nii.gz   uint32 object ids on the stack's grid (spacing, origin, direction kept)
    objects.csv     one row per object (mm³; mm² for projection images); a last column geometry_note when the
                    geometry had to be assumed (e.g. "pixel spacing missing: 1 mm assumed")
    seg.dcm         with dicom_seg: DICOM Segmentation (highdicom), one segment per class
    done.json       written LAST: options hash, model fingerprint, input files' size/mtime, object count

A stack counts as complete only when ``done.json`` exists and matches the current options, model and input
files; ``resume`` skips exactly those, and anything else is redone (``done.json`` is removed before a folder is
rewritten, so a run killed half-way never leaves a folder that looks complete). An ``OUT`` holding an earlier
batch is refused unless ``resume`` or ``overwrite``; ``OUT/.smallseg.lock`` is held for the run, so a second
batch on the same ``OUT`` is refused in one line naming the process that writes there.

``OUT/summary.csv`` (:data:`SUMMARY_COLUMNS`; status ``ok``, ``skipped`` or ``failed``; one row per image stack
and one per non-image series or file) is rewritten atomically after every row, so a killed batch leaves a
summary of the rows finished so far. Text cells go through :func:`~smallseg.io.atomic.csv_safe`. Non-DICOM
files and non-image DICOM objects (SEG, SR, RTSTRUCT, DICOMDIR, data sets without pixel data...) are
``skipped`` with the reason and their own UID; unreadable series ``failed`` with a one-line message; ok rows
carry reading warnings, dropped files and assumed geometry in ``message``. When an output cannot be written
(disk full, file size limit) the batch stops there: the summary still lists what was done.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from smallseg import __version__
from smallseg.errors import SmallsegError, one_line
from smallseg.io.atomic import OutputLock, atomic_path, csv_safe, remove_partials, write_text_atomic
from smallseg.io.dicom import SeriesInfo, find_series
from smallseg.io.medical import Volume, WriteError, read_volume, write_labels_nifti
from smallseg.models.registry import prepare_model, resolve_device, weights_fingerprint
from smallseg.pipeline.options import check_normalize, check_preset, check_tta
from smallseg.pipeline.classes import trained_modalities
from smallseg.pipeline.volume import RAW, normalization_record, predict_volume
from smallseg.shipped import AUTO_MODEL, model_for_modalities

__all__ = [
    "BatchOptions",
    "BatchResult",
    "SeriesResult",
    "SUMMARY_COLUMNS",
    "load_batch_model",
    "model_fingerprint",
    "process_series",
    "run_dicom_batch",
    "series_folder_name",
]

SUMMARY_COLUMNS = ("series_uid", "stack", "path", "status", "modality", "files", "objects", "seconds", "message",
                   "folder")
DONE_MARKER = "done.json"
LOCK_FILE = ".smallseg.lock"
_MARKER_VERSION = 2
# errno values meaning "no output can be written here any more": the batch stops instead of failing every row.
_OUTPUT_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS}


@dataclass(frozen=True)
class BatchOptions:
    """Everything ``process_series`` needs besides the series and the model. JSON-able.

    Attributes:
        out_dir: output root; each image stack writes ``out_dir/<series folder>/``.
        preset: intensity preset name (``lung``, ``soft_tissue``, ..., ``percentile``, ``raw``) or ``None`` for
            the checkpoint's, else the modality default (see :mod:`smallseg.pipeline.volume`).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        batch_size: tiles per forward pass (on a CPU at most 4 x 256² px per pass: larger passes are slower
            per pixel there; see ``pipeline.array.CPU_PASS_PX``).
        tile_size_px: tile side (default: the model's, or one tile per slice when smaller).
        min_score: drop 2-D detections scoring below this (decoder ``min_score``); ``None`` keeps the model's.
        min_slices: drop 3-D objects seen in fewer slices; None (default): the model's
            (``training["volume_min_slices"]``), else 1.
        link_min_overlap: slice-to-slice linking threshold (fraction of the smaller cross-section).
        dicom_seg: also write a DICOM Segmentation (needs highdicom).
        max_gb: fail series whose pixels would take more memory than this (GB); ``None`` = no limit.
        tta: test-time augmentation of every slice (:func:`smallseg.models.tta.with_tta`): None (off),
            ``"d4"`` (8 flips / 90-degree rotations) or ``"flips"`` (4); True means ``"d4"``.
        model_fingerprint: identifies the model for ``done.json``
            (:func:`~smallseg.models.registry.weights_fingerprint`); :func:`run_dicom_batch` fills it once,
            ``process_series`` computes it when empty.
    """

    out_dir: str
    preset: str | None = None
    device: str = "cpu"
    batch_size: int = 4
    tile_size_px: int | None = None
    min_score: float | None = None
    min_slices: int | None = None
    link_min_overlap: float = 0.5
    dicom_seg: bool = False
    max_gb: float | None = 4.0
    model_fingerprint: str = ""
    normalize: str = "model"  # or percentile / fixed / none (smallseg.normalize.choose_normalization; #13)
    percentiles: tuple[float, float] | None = None
    tta: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tta", check_tta(self.tta))
        self.validate()  # at construction: a bad value never reaches a series

    def validate(self) -> None:
        """Raise :class:`SmallsegError` naming the first bad option by its field name (the command line says its
        flag instead: ``smallseg.cli`` translates)."""
        check_normalize(self.normalize, self.percentiles)
        check_preset(self.preset, self.normalize, self.percentiles)
        if self.batch_size < 1:
            raise SmallsegError(f"batch_size {self.batch_size}: must be at least 1")
        if self.min_slices is not None and self.min_slices < 1:
            raise SmallsegError(f"min_slices {self.min_slices}: must be at least 1")
        if self.min_score is not None and not 0.0 <= self.min_score <= 1.0:
            raise SmallsegError(f"min_score {self.min_score}: must be between 0 and 1")
        if not 0.0 < self.link_min_overlap <= 1.0:
            raise SmallsegError(f"link_min_overlap {self.link_min_overlap}: must be in (0, 1]")
        if self.max_gb is not None and not self.max_gb > 0:
            raise SmallsegError(f"max_gb {self.max_gb}: must be positive")
        if self.tile_size_px is not None and self.tile_size_px < 16:
            raise SmallsegError(f"tile_size_px {self.tile_size_px}: use at least 16 px")

    def result_hash(self) -> str:
        """Hash of everything that changes a series' outputs (not ``out_dir``, ``device`` or ``batch_size``)."""
        key = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("out_dir", "device", "batch_size")}
        if key["tta"] is None:  # added later: runs without it keep the key their done.json records
            del key["tta"]
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class SeriesResult:
    """Outcome of one entry of the tree (one row of ``summary.csv``).

    Attributes:
        series_uid: DICOM Series Instance UID (``""`` for files without one; a non-image object's own UID).
        path: the stack's folder (or the single file).
        status: ``ok``, ``skipped`` or ``failed``.
        objects: number of objects found (0 unless ok).
        seconds: wall time spent on the entry.
        message: one line: the reason for skipped/failed; warnings, dropped files and assumed geometry for ok.
        output_dir: folder of the outputs (``""`` when none were written).
        stack: ``"k/n"`` for stack k of a series split into n stacks, ``""`` otherwise.
        modality: DICOM modality, or the short name of a non-image object (``SEG``, ``RTSTRUCT``, ``DICOMDIR``).
        files: number of files in the entry.
        dropped: unreadable files left out of this stack (named in ``message``).
        output_failed: the failure was an output that could not be written (disk full...): the batch stops.
    """

    series_uid: str
    path: str
    status: str
    objects: int = 0
    seconds: float = 0.0
    message: str = ""
    output_dir: str = ""
    stack: str = ""
    modality: str = ""
    files: int = 0
    dropped: int = 0
    output_failed: bool = False

    def row(self) -> dict[str, object]:
        """The ``summary.csv`` row; text cells made safe for spreadsheets (:func:`csv_safe`)."""
        return {"series_uid": csv_safe(self.series_uid), "stack": self.stack, "path": csv_safe(self.path),
                "status": self.status, "modality": csv_safe(self.modality), "files": self.files,
                "objects": self.objects, "seconds": f"{self.seconds:.3f}", "message": csv_safe(self.message),
                "folder": csv_safe(os.path.basename(self.output_dir))}

    def line(self) -> str:
        """One console line: status, UID (stack), modality, file count, objects or reason."""
        what = self.series_uid or self.path
        stack = f" stack {self.stack}" if self.stack else ""
        kind = f"{self.modality}, " if self.modality else ""
        head = f"{self.status}: {what}{stack} ({kind}{self.files} file{'s' if self.files != 1 else ''})"
        body = f"{self.objects} object(s)" if self.status == "ok" else ""
        tail = "; ".join(t for t in (body, self.message) if t)
        return f"{head}: {tail}" if tail else head


@dataclass(frozen=True)
class BatchJob:
    """What one batch loop works through, decided by :func:`run_dicom_batch` before any stack runs.

    The loop here (:func:`run_entries`) and the one on a Dask cluster
    (:func:`smallseg.cluster.dicom.run_entries_on_cluster`) take the same job, so both decide rows alike.

    Attributes:
        entries: the entries of the tree, in :func:`find_series` order.
        options: the settings of every stack (with the model's fingerprint).
        summary_path: ``OUT/summary.csv``, rewritten after every row.
        resume: keep stacks finished earlier with the same options.
        wanted: modalities asked for (upper case), or None for all.
        trained: modalities the model was trained on, or None when it does not say.
        progress: show a bar over the entries.
        on_result: called with each finished row, or None.
        notes: batch-level lines decided before any stack ran (which model ``"auto"`` chose).
    """

    entries: tuple[SeriesInfo, ...]
    options: BatchOptions
    summary_path: Path
    resume: bool = False
    wanted: frozenset[str] | None = None
    trained: frozenset[str] | None = None
    progress: bool = True
    on_result: Callable[[SeriesResult], None] | None = None
    notes: tuple[str, ...] = ()


@dataclass
class BatchResult:
    """All rows of a batch, in the order of :func:`find_series`, and where the summary is.

    Attributes:
        results: one :class:`SeriesResult` per row of ``summary.csv``.
        summary_path: ``OUT/summary.csv``.
        notes: one line per modality the model was not trained on (and similar batch-level notes).
        stopped: why the batch stopped early (an output could not be written), ``""`` when it ran to the end.
    """

    results: list[SeriesResult]
    summary_path: Path
    notes: list[str] = field(default_factory=list)
    stopped: str = ""

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def dropped(self) -> int:
        """Unreadable files left out of otherwise readable stacks."""
        return sum(r.dropped for r in self.results)

    @property
    def exit_code(self) -> int:
        """0 every input done (skips of non-images are fine), 1 some inputs failed (a failed row, a dropped
        file, a stopped batch) while others were done, 2 nothing was processed."""
        if not self.count("ok"):
            return 2
        return 1 if (self.failed or self.dropped or self.stopped) else 0

    def summary(self) -> str:
        dropped = f", {self.dropped} unreadable file(s) dropped" if self.dropped else ""
        return (f"{self.count('ok')} ok, {self.count('skipped')} skipped, {self.failed} failed{dropped}; "
                f"summary: {self.summary_path}")


# --------------------------------------------------------------------------------------------------------------
# Model identity and loading (one implementation in smallseg.models.registry)
# --------------------------------------------------------------------------------------------------------------


model_fingerprint = weights_fingerprint


def load_batch_model(name_or_path: str | os.PathLike, device: str | torch.device | None = "cpu") -> torch.nn.Module:
    """Load a model by shipped name or checkpoint path, in eval mode
    (:func:`~smallseg.models.registry.prepare_model`)."""
    return prepare_model(name_or_path, device)[0]


# --------------------------------------------------------------------------------------------------------------
# One series
# --------------------------------------------------------------------------------------------------------------

_PLAIN_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def series_folder_name(series: SeriesInfo) -> str:
    """Output folder name of an image stack: injective over (Series Instance UID, stack).

    - A conforming UID (digits and dots, at most 64 characters) is its own name: ``1.2.840.113619.2.5``.
    - Any other UID (``1.2.3/4``, ``.1.2.3_4``, ``summary.csv``) becomes a readable safe prefix (letters,
      digits, dots; anything else ``_``), ``-`` and 12 hex digits of the SHA-256 of the exact UID, so UIDs
      that differ only in unsafe characters still get different folders: ``1.2.3_4-5f0c...``.
    - No UID: ``nouid-`` and a hash of the files' folder.
    - Stack k of a series split into several: ``_stack{k}`` appended.

    Conforming names hold no ``-`` or ``_``, hashed names exactly one ``-`` followed by the hash, and every base
    name ends in a digit or a hex digit after its last ``-``: no two inputs share a folder, and no folder can be
    named like ``summary.csv``.
    """
    uid = series.series_uid
    if not uid:
        folder = os.path.dirname(os.path.abspath(series.files[0])) if series.files else ""
        base = "nouid-" + hashlib.sha256(("folder\0" + folder).encode()).hexdigest()[:12]
    elif _PLAIN_UID.fullmatch(uid) and len(uid) <= 64:
        base = uid
    else:
        prefix = re.sub(r"[^0-9A-Za-z.]", "_", uid).strip("._")[:40] or "uid"
        base = f"{prefix}-{hashlib.sha256(('uid' + chr(0) + uid).encode()).hexdigest()[:12]}"
    return f"{base}_stack{series.stack}" if series.n_stacks > 1 else base


def series_path(series: SeriesInfo) -> str:
    """The single file, or the common folder of the series' files."""
    if len(series.files) == 1:
        return series.files[0]
    try:
        return os.path.commonpath([os.path.dirname(f) for f in series.files])
    except ValueError:
        return os.path.dirname(series.files[0])


def _inputs_fingerprint(series: SeriesInfo) -> str:
    """Files, sizes and modification times: a changed or added slice makes a finished series stale."""
    h = hashlib.sha256()
    for f in series.files:
        st = os.stat(f)
        h.update(f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / DONE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _result(series: SeriesInfo, status: str, t0: float, message: str = "", **fields) -> SeriesResult:
    return SeriesResult(series.series_uid, series_path(series) if series.files else "", status,
                        seconds=time.perf_counter() - t0, message=message, stack=series.stack_label,
                        modality=series.modality, files=len(series.files), **fields)


def _dropped(series: SeriesInfo) -> int:
    for note in series.notes:
        m = re.match(r"dropped (\d+) unreadable file", note)
        if m:
            return int(m.group(1))
    return 0


def completed_result(series: SeriesInfo, options: BatchOptions) -> SeriesResult | None:
    """The earlier run's result if ``series`` has complete outputs for these options and this model, else None.

    ``options.model_fingerprint`` must be set.
    """
    if not series.is_image:
        return None
    folder = Path(options.out_dir) / series_folder_name(series)
    marker = _read_marker(folder)
    if not marker or marker.get("version") != _MARKER_VERSION or marker.get("series_uid") != series.series_uid:
        return None
    try:
        inputs = _inputs_fingerprint(series)
    except OSError:
        return None
    if (marker.get("options_hash") != options.result_hash() or marker.get("model") != options.model_fingerprint
            or marker.get("inputs") != inputs):
        return None
    if not all((folder / name).is_file() for name in marker.get("outputs", [])):
        return None
    note = "outputs of an earlier run (resumed)"  # summary.csv text: no flag, no keyword
    message = f"{note}; {marker['message']}" if marker.get("message") else note
    return SeriesResult(series.series_uid, series_path(series), "ok", int(marker.get("objects", 0)),
                        float(marker.get("seconds", 0.0)), message, str(folder), stack=series.stack_label,
                        modality=series.modality, files=len(series.files), dropped=_dropped(series))


def _output_full(exc: BaseException) -> bool:
    return isinstance(exc, WriteError) or (isinstance(exc, OSError) and exc.errno in _OUTPUT_FULL)

def process_series(series: SeriesInfo, model: torch.nn.Module | str | os.PathLike,
                   options: BatchOptions) -> SeriesResult:
    """Read one image stack, predict, write its outputs; never raises for a bad series (returns ``failed``).

    Args:
        series: an entry of :func:`~smallseg.io.dicom.find_series` (non-image entries come back ``skipped``,
            unreadable ones ``failed``, with their reason).
        model: a loaded SmallObjectNet, or a shipped model name / checkpoint path (loaded here; for workers).
        options: output folder and prediction settings.

    Returns:
        The :class:`SeriesResult` (one summary row). Outputs are in ``options.out_dir/<series folder>/``,
        ``done.json`` last. ``output_failed`` is set when an output could not be written (disk full).
    """
    t0 = time.perf_counter()
    if not series.is_image:
        status = "failed" if series.kind == "unreadable" else "skipped"
        return _result(series, status, t0, one_line(series.reason))
    folder = Path(options.out_dir) / series_folder_name(series)
    dropped = _dropped(series)
    try:
        options.validate()
        if not isinstance(model, torch.nn.Module):
            model = load_batch_model(model, options.device)
        fingerprint = options.model_fingerprint or model_fingerprint(model)
        inputs = _inputs_fingerprint(series)
        volume = read_volume(series, max_gb=options.max_gb)
        decode = {"min_score": options.min_score} if options.min_score is not None else None
        prediction = predict_volume(volume, model, preset=options.preset, tile_size_px=options.tile_size_px,
                                    batch_size=options.batch_size, device=resolve_device(options.device),
                                    decode=decode, min_slices=options.min_slices,
                                    link_min_overlap=options.link_min_overlap, normalize=options.normalize,
                                    percentiles=options.percentiles, tta=options.tta)
    except SmallsegError as exc:
        return _result(series, "failed", t0, one_line(exc), dropped=dropped)
    except (MemoryError, RuntimeError, ValueError, OSError) as exc:
        # Not a user error we know of: still one line, and the batch goes on.
        return _result(series, "failed", t0, f"{type(exc).__name__}: {one_line(exc)}"[:500], dropped=dropped)
    geometry_note = "; ".join(volume.assumed)
    notes = [*prediction.warnings, *volume.assumed]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DONE_MARKER).unlink(missing_ok=True)  # from here on the folder is incomplete until the end
        remove_partials(folder)  # leftovers of a killed run
        write_labels_nifti(prediction.labels, volume, folder / "labels.nii.gz")
        prediction.objects.with_geometry_note(geometry_note).write_csv(folder / "objects.csv")
        outputs = ["labels.nii.gz", "objects.csv"]
        if options.dicom_seg:
            if len(prediction.objects) and volume.ndim_spatial == 3:
                write_dicom_seg(prediction.labels, prediction.objects.class_ids, volume, folder / "seg.dcm",
                                class_names=model.config.class_names)
                outputs.append("seg.dcm")
            else:
                (folder / "seg.dcm").unlink(missing_ok=True)
                notes.append("no objects, so no DICOM SEG (a SEG needs at least one segmented frame)"
                             if volume.ndim_spatial == 3 else "a 2-D projection image: no DICOM SEG written")
        message = one_line("; ".join(notes)) if notes else ""
        seconds = time.perf_counter() - t0
        marker = {"version": _MARKER_VERSION, "series_uid": series.series_uid, "stack": series.stack,
                  "n_stacks": series.n_stacks, "options_hash": options.result_hash(),
                  "options": dataclasses.asdict(options), "model": fingerprint, "inputs": inputs,
                  "objects": len(prediction.objects), "seconds": round(seconds, 3), "message": message,
                  "geometry_note": geometry_note,
                  "preset": prediction.window.to_dict() if prediction.window else RAW,
                  "preset_source": prediction.preset_source,
                  "normalization": normalization_record(prediction),
                  "decode": dataclasses.asdict(prediction.decode) if prediction.decode else None, "outputs": outputs}
        write_text_atomic(folder / DONE_MARKER, json.dumps(marker, indent=1))
    except (SmallsegError, OSError, RuntimeError, ValueError) as exc:
        full = _output_full(exc)
        text = one_line(exc) if isinstance(exc, SmallsegError) else f"{type(exc).__name__}: {one_line(exc)}"
        return _result(series, "failed", t0, f"writing the outputs failed: {text}"[:500], dropped=dropped,
                       output_failed=full)
    return _result(series, "ok", t0, message, objects=len(prediction.objects), output_dir=str(folder),
                   dropped=dropped)


# --------------------------------------------------------------------------------------------------------------
# DICOM SEG
# --------------------------------------------------------------------------------------------------------------


def _require_highdicom():
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise SmallsegError("dicom_seg=True needs the highdicom package: pip install 'smallseg[dicom-seg]' (or pip "
                            "install highdicom), or leave out dicom_seg=True") from None
    return highdicom


def write_dicom_seg(labels: np.ndarray, class_ids: np.ndarray, volume: Volume, path: str | os.PathLike, *,
                    class_names: Sequence[str] | None = None) -> Path:
    """Write a DICOM Segmentation (BINARY, one segment per class) referencing the series' slices, atomically.

    Args:
        labels: (Z, Y, X) object ids on the grid of ``volume`` (a DICOM series read by ``read_volume``, whose
            ``source_paths`` are its slices in array order).
        class_ids: (N,) class of object ``i + 1`` (1-based), i.e. ``VolumeObjects.class_ids``.
        volume: the source series.
        path: output ``.dcm``.
        class_names: segment labels (default ``class_k``).

    Object ids are not kept (DICOM SEG segments are classes); labels.nii.gz keeps them.
    """
    hd = _require_highdicom()
    import pydicom
    from pydicom.sr.codedict import codes

    path = Path(path)
    if volume.ndim_spatial != 3 or not volume.source_paths:
        raise SmallsegError(f"{path}: a DICOM SEG needs a DICOM series as source")
    n_classes = max(int(np.max(class_ids, initial=0)), len(class_names or []), 1)
    lookup = np.zeros(len(class_ids) + 1, np.uint8 if n_classes < 256 else np.uint16)
    lookup[1:] = class_ids
    class_map = lookup[labels]
    try:
        sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in volume.source_paths]
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for bad headers
        raise SmallsegError(f"{volume.source_paths[0]}: pydicom cannot read the header for the DICOM SEG "
                            f"({one_line(exc)})") from None
    if len(sources) == 1 and class_map.shape[0] > 1:
        raise SmallsegError(f"{path}: DICOM SEG from a multi-frame source is not supported; leave out dicom_seg=True")
    algorithm = hd.AlgorithmIdentificationSequence(name="smallseg", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = []
    for k in range(1, n_classes + 1):
        name = (class_names[k - 1] if class_names and k <= len(class_names) else f"class_{k}")
        prop = codes.SCT.Nodule if "nodule" in name.lower() else codes.SCT.Lesion
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=k, segment_label=name[:64], segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=prop, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm))
    array = class_map if len(sources) > 1 else class_map[0]
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=array, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9901,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="smallseg",
            manufacturer_model_name="smallseg dicom-batch", software_versions=__version__, device_serial_number="0")
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise SmallsegError(f"{path}: highdicom cannot build a DICOM SEG for this series ({one_line(exc)})") from None
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path


# --------------------------------------------------------------------------------------------------------------
# The batch
# --------------------------------------------------------------------------------------------------------------


def write_summary(results: Sequence[SeriesResult], path: str | os.PathLike) -> Path:
    """Write ``summary.csv`` (columns :data:`SUMMARY_COLUMNS`) atomically."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.row() for r in results)
    write_text_atomic(path, buf.getvalue())
    return path


def _under(path: str, folder: Path) -> bool:
    try:
        return Path(os.path.abspath(path)).is_relative_to(folder)
    except ValueError:
        return False


def _modality_note(modality: str, trained: set[str] | None) -> str:
    """A line when the model was not trained on ``modality`` (``""`` when it was, or when it is unknown)."""
    if trained is None or modality.upper() in trained:
        return ""
    shown = sorted(m for m in trained if m not in ("", "SM", "GM"))
    if trained & {"", "SM", "GM"}:
        shown.append("microscopy")
    names = ", ".join(shown)
    return f"the model was not trained on {modality or 'images without a modality'} images (trained on: {names})"


def _earlier_batch(out: Path) -> bool:
    """``out`` holds the results of an earlier batch: a summary or a series folder with a done marker."""
    return (out / "summary.csv").exists() or any(out.glob(f"*/{DONE_MARKER}"))


def run_dicom_batch(root: str | os.PathLike, out_dir: str | os.PathLike,
                    model: torch.nn.Module | str | os.PathLike = AUTO_MODEL, *, options: BatchOptions | None = None,
                    resume: bool = False, overwrite: bool = False, progress: bool = True,
                    series_uid: str | None = None, modalities: Sequence[str] | None = None,
                    on_result: Callable[[SeriesResult], None] | None = None, client=None,
                    **option_values) -> BatchResult:
    """Predict every DICOM image stack under ``root``; one bad series never stops the batch.

    What changes a stack's outputs is a :class:`BatchOptions` (``options``, or its fields as keywords on top:
    ``run_dicom_batch(root, out, preset="lung", min_slices=2)``); the other arguments say which stacks to run,
    what to do with an earlier batch and how to report, and are not part of a stack's ``done.json``.

    Args:
        root: folder searched recursively (a folder of mixed series is fine: they are grouped by UID and split
            into stacks).
        out_dir: output root (may be inside ``root``: its files are not taken as input). Locked for the run.
        model: a loaded SmallObjectNet, a shipped model name, a checkpoint path, or ``"auto"`` (default): the
            shipped model for the modality of the image stacks to be processed
            (:func:`smallseg.shipped.model_for_modalities`: ``ct`` for CT, ``microscopy`` for SM / GM, ``medical``
            for other or mixed modalities), said in the batch's notes.
        resume: keep stacks whose outputs are complete for the same options, model and input files; redo the
            rest.
        overwrite: redo every stack of an ``out_dir`` that holds an earlier batch (without ``resume`` or
            ``overwrite`` such an ``out_dir`` is refused).
        progress: tqdm bar over the entries.
        series_uid: process only this Series Instance UID (all its stacks); other entries are left out.
        modalities: process only image stacks of these DICOM modalities (e.g. ``["CT", "MR"]``); others are
            ``skipped`` with the reason.
        options: the prediction settings (default: all defaults; ``out_dir`` is set from the argument).
        on_result: called with each row as it is finished (the CLI prints one line per row).
        client: a ``dask.distributed.Client``: one task per image stack on its workers (model loaded once per
            worker; :func:`smallseg.cluster.dicom.run_entries_on_cluster`); labels, objects.csv and done.json
            are the same bytes, summary.csv the same rows in the same order (``seconds`` apart). None: here.
        **option_values: fields of :class:`BatchOptions` (``preset``, ``device``, ``batch_size``,
            ``tile_size_px``, ``min_score``, ``min_slices``, ``link_min_overlap``, ``dicom_seg``, ``max_gb``,
            ``normalize``, ``percentiles``); an unknown name is one line.

    Returns:
        :class:`BatchResult`; ``out_dir/summary.csv`` holds the same rows. ``stopped`` says why the batch
        ended early when an output could not be written (disk full): the rows done so far are in the summary.

    Raises:
        SmallsegError: ``root`` is not a folder or holds no file at all, no entry with ``series_uid``, bad
            options, model not found, ``dicom_seg`` without highdicom, ``out_dir`` in use by another process or
            holding an earlier batch (without ``resume`` / ``overwrite``), ``summary.csv`` cannot be written.
            Problems of single series are rows, not exceptions.
    """
    out = Path(out_dir).resolve()
    options = _batch_options(options, out, option_values)
    device = options.device
    wanted = None
    if modalities is not None:
        wanted = {str(m).strip().upper() for m in modalities if str(m).strip()}
        if not wanted:
            raise SmallsegError("modalities: empty; name DICOM modalities such as CT,MR, or leave it out")
    if options.dicom_seg:
        _require_highdicom()
    entries = [e for e in find_series(root) if not all(_under(f, out) for f in e.files)]
    if not entries:
        raise SmallsegError(f"{root}: no files found (empty folder, or only hidden files); nothing to do")
    if series_uid is not None:
        chosen = [e for e in entries if e.series_uid == series_uid]
        if not chosen:
            known = sorted({e.series_uid for e in entries if e.is_image})
            listed = ", ".join(known[:5]) + (f" and {len(known) - 5} more" if len(known) > 5 else "")
            raise SmallsegError(f"series_uid {series_uid}: no series with that UID under {root} (image series: "
                                f"{listed or 'none'})")
        entries = chosen
    notes: list[str] = []
    if isinstance(model, str) and model == AUTO_MODEL:
        model, why = model_for_modalities({e.modality for e in entries if e.is_image and
                                           (wanted is None or e.modality.upper() in wanted)})
        notes.append(f"model {AUTO_MODEL}: {model} ({why})")
    given = model
    # With a cluster the model runs on the workers (on ``device``, checked there); the client keeps a CPU copy
    # for its fingerprint, so a CPU-only client can drive GPU workers. A model object stays where it is.
    model, source = prepare_model(model, device if client is None or not isinstance(model, str | os.PathLike)
                                  else "cpu")
    options = dataclasses.replace(options, model_fingerprint=model_fingerprint(model))
    trained = trained_modalities(model.config)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SmallsegError(f"{out}: cannot create the output folder ({one_line(exc)})") from None
    with OutputLock(out / LOCK_FILE, what=str(out)):
        if not (resume or overwrite) and _earlier_batch(out):
            raise SmallsegError(f"{out} holds the results of an earlier dicom-batch; pass resume=True to keep "
                                "the finished series and do the rest, or overwrite=True to redo everything")
        job = BatchJob(tuple(entries), options, out / "summary.csv", resume=resume,
                       wanted=None if wanted is None else frozenset(wanted),
                       trained=None if trained is None else frozenset(trained), progress=progress,
                       on_result=on_result, notes=tuple(notes))
        if client is not None:
            from smallseg.cluster.dicom import run_entries_on_cluster

            return run_entries_on_cluster(client, job, model, given, source.to_dict())
        return run_entries(job, model)


def _batch_options(options: BatchOptions | None, out: Path, values: dict) -> BatchOptions:
    """``options`` (or the defaults) with ``values`` and ``out_dir`` applied, validated."""
    known = {f.name for f in dataclasses.fields(BatchOptions)} - {"out_dir", "model_fingerprint"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SmallsegError(f"run_dicom_batch: unknown option(s) {', '.join(unknown)}; options of BatchOptions: "
                            f"{', '.join(sorted(known))}")
    if values.get("percentiles") is not None:
        values = {**values, "percentiles": tuple(values["percentiles"])}  # JSON-able, hashable as done.json says
    return dataclasses.replace(options or BatchOptions(out_dir=str(out)), out_dir=str(out), **values)


def decided_result(entry: SeriesInfo, options: BatchOptions, *, resume: bool,
                   wanted: set[str] | None) -> SeriesResult | None:
    """The row of an entry that needs no prediction (modality not asked for; finished earlier with
    ``resume``), or None when it is to be processed."""
    t0 = time.perf_counter()
    if entry.is_image and wanted is not None and entry.modality.upper() not in wanted:
        return _result(entry, "skipped", t0, f"modality {entry.modality or '(none)'} not among the "
                                             f"modalities asked for ({', '.join(sorted(wanted))})")
    return completed_result(entry, options) if resume else None


def add_modality_note(batch: BatchResult, noted: set[str], entry: SeriesInfo, result: SeriesResult,
                      wanted: set[str] | None, trained: set[str] | None) -> None:
    """Append the not-trained-on note to a processed image row's message (and, once per modality, to the
    batch's notes)."""
    if not entry.is_image or (wanted is not None and entry.modality.upper() not in wanted):
        return
    note = _modality_note(entry.modality, trained)
    if note:
        result.message = f"{result.message}; {note}" if result.message else note
        if entry.modality.upper() not in noted:
            noted.add(entry.modality.upper())
            batch.notes.append(note)


def write_batch_summary(batch: BatchResult, rows: Sequence[SeriesResult], summary_path: Path) -> None:
    """``summary.csv`` of ``rows``; a summary that cannot be written stops the batch in one line."""
    try:
        write_summary(rows, summary_path)
    except OSError as exc:
        raise SmallsegError(f"{summary_path}: cannot write the summary ({one_line(exc)}); "
                            f"{batch.count('ok')} series were done before") from None


def run_entries(job: BatchJob, model: torch.nn.Module) -> BatchResult:
    """The batch loop in this process: each entry decided or predicted, in order, the summary after each row."""
    options, wanted = job.options, job.wanted
    batch = BatchResult([], job.summary_path, notes=list(job.notes))
    noted: set[str] = set()
    progress_bar = tqdm(job.entries, desc="series", unit="series", disable=not job.progress)
    for entry in progress_bar:
        result = decided_result(entry, options, resume=job.resume, wanted=wanted)
        if result is None:
            result = process_series(entry, model, options)
        add_modality_note(batch, noted, entry, result, wanted, job.trained)
        batch.results.append(result)
        write_batch_summary(batch, batch.results, job.summary_path)  # after every row: a kill leaves a consistent summary
        if job.on_result is not None:
            job.on_result(result)
        progress_bar.set_postfix(ok=batch.count("ok"), failed=batch.failed)
        if result.output_failed:
            left = len(job.entries) - len(batch.results)
            batch.stopped = (f"stopped: an output could not be written ({result.message}); {left} entr"
                             f"{'y' if left == 1 else 'ies'} not processed; free space and rerun with "
                             "resume=True")
            break
    return batch
