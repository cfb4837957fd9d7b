"""Batch prediction over a tree of DICOM files: one output folder per series, a summary that is always consistent.

:func:`run_dicom_batch` walks the tree once with :func:`~smallseg.io.medical.find_series` and maps
:func:`process_series` over what it finds. ``process_series`` is a pure function of (series, model, options): it
reads, predicts and writes ``OUT/<series_uid>/`` and returns a :class:`SeriesResult`, never raising for a bad
series, so the same function can be handed to a distributed executor.

Per image series, in ``OUT/<series folder>/`` (every file written under a temporary name and renamed)::

    labels.nii.gz   uint32 object ids on the series' grid (spacing, origin, direction kept)
    objects.csv     one row per 3-D object (see smallseg.pipeline.volume.write_objects_csv)
    seg.dcm         with --dicom-seg: DICOM Segmentation (highdicom), one segment per class
    done.json       written LAST: options hash, model fingerprint, input files' size/mtime, object count

A series counts as complete only when ``done.json`` exists and matches the current options, model and input
files; ``--resume`` skips exactly those, and anything else is redone (``done.json`` is removed before a series
is rewritten, so a run killed half-way never leaves a folder that looks complete).

``OUT/summary.csv`` (columns ``series_uid, path, status, objects, seconds, message``; status ``ok``, ``skipped``
or ``failed``) is rewritten atomically after every series, so a killed batch leaves a summary of the series
finished so far. Non-DICOM files and non-image DICOM objects (SEG, SR, RTSTRUCT...) are ``skipped`` with the
reason; unreadable series ``failed`` with a one-line message; ok series carry reading warnings (missing slices,
uneven spacing) in ``message``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from smallseg.errors import SmallsegError, one_line
from smallseg.io.medical import SeriesInfo, Volume, find_series, read_volume, write_labels_nifti
from smallseg.pipeline.volume import RAW, _write_text_atomic, predict_volume, write_objects_csv

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

SUMMARY_COLUMNS = ("series_uid", "path", "status", "objects", "seconds", "message")
DONE_MARKER = "done.json"
_MARKER_VERSION = 1


@dataclass(frozen=True)
class BatchOptions:
    """Everything ``process_series`` needs besides the series and the model. JSON-able.

    Attributes:
        out_dir: output root; each series writes ``out_dir/<series folder>/``.
        preset: intensity preset name (``lung``, ``soft_tissue``, ..., ``percentile``, ``raw``) or ``None`` for
            the checkpoint's, else the modality default (see :mod:`smallseg.pipeline.volume`).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        batch_size: tiles per forward pass.
        tile_size_px: tile side (default: the model's, or one tile per slice when smaller).
        min_score: drop 2-D detections scoring below this (decoder ``min_score``); ``None`` keeps the model's.
        min_slices: drop 3-D objects seen in fewer slices.
        link_min_overlap: slice-to-slice linking threshold (fraction of the smaller cross-section).
        dicom_seg: also write a DICOM Segmentation (needs highdicom).
        max_gb: fail series whose pixels would take more memory than this (GB); ``None`` = no limit.
        model_fingerprint: identifies the model for ``done.json``; :func:`run_dicom_batch` fills it once,
            ``process_series`` computes it when empty.
    """

    out_dir: str
    preset: str | None = None
    device: str = "cpu"
    batch_size: int = 4
    tile_size_px: int | None = None
    min_score: float | None = None
    min_slices: int = 1
    link_min_overlap: float = 0.5
    dicom_seg: bool = False
    max_gb: float | None = 4.0
    model_fingerprint: str = ""

    def validate(self) -> None:
        """Raise :class:`SmallsegError` naming the first bad option (CLI spelling)."""
        from smallseg.io.medical import PRESETS

        if self.preset is not None and self.preset != RAW and self.preset not in PRESETS:
            raise SmallsegError(f"--preset {self.preset}: unknown; choose one of {', '.join([*PRESETS, RAW])}")
        if self.batch_size < 1:
            raise SmallsegError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.min_slices < 1:
            raise SmallsegError(f"--min-slices {self.min_slices}: must be at least 1")
        if self.min_score is not None and not 0.0 <= self.min_score <= 1.0:
            raise SmallsegError(f"--min-score {self.min_score}: must be between 0 and 1")
        if not 0.0 < self.link_min_overlap <= 1.0:
            raise SmallsegError(f"--link-overlap {self.link_min_overlap}: must be in (0, 1]")
        if self.max_gb is not None and not self.max_gb > 0:
            raise SmallsegError(f"--max-gb {self.max_gb}: must be positive")
        if self.tile_size_px is not None and self.tile_size_px < 16:
            raise SmallsegError(f"--tile {self.tile_size_px}: use at least 16 px")

    def result_hash(self) -> str:
        """Hash of everything that changes a series' outputs (not ``out_dir``, ``device`` or ``batch_size``)."""
        key = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("out_dir", "device", "batch_size")}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class SeriesResult:
    """Outcome of one entry of the tree (one row of ``summary.csv``).

    Attributes:
        series_uid: DICOM Series Instance UID (``""`` for files without one).
        path: the series' folder (or the single file).
        status: ``ok``, ``skipped`` or ``failed``.
        objects: number of 3-D objects found (0 unless ok).
        seconds: wall time spent on the series.
        message: one line: the reason for skipped/failed, reading warnings for ok.
        output_dir: folder of the outputs (``""`` when none were written).
    """

    series_uid: str
    path: str
    status: str
    objects: int = 0
    seconds: float = 0.0
    message: str = ""
    output_dir: str = ""

    def row(self) -> dict[str, object]:
        return {"series_uid": self.series_uid, "path": self.path, "status": self.status, "objects": self.objects,
                "seconds": f"{self.seconds:.3f}", "message": self.message}


@dataclass
class BatchResult:
    """All rows of a batch, in the order of :func:`find_series`, and where the summary is."""

    results: list[SeriesResult]
    summary_path: Path

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> int:
        return self.count("failed")


# --------------------------------------------------------------------------------------------------------------
# Model identity and loading
# --------------------------------------------------------------------------------------------------------------


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 (16 hex digits) of a model's config JSON and weights: same model, same fingerprint."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json"):
        h.update(config.to_json().encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device, checked."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SmallsegError(f"--device {device}: {one_line(exc)}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SmallsegError(f"--device {device}: CUDA is not available here; use --device cpu")
    return dev


def load_batch_model(name_or_path: str | os.PathLike, device: str | torch.device | None = "cpu") -> torch.nn.Module:
    """Load a model by shipped name (``smallseg.models.registry``) or checkpoint path, in eval mode.

    Raises:
        SmallsegError: no built-in model of that name and no file at that path, or a bad checkpoint.
    """
    from smallseg.models.checkpoint import load_checkpoint
    from smallseg.models.registry import builtin_models, resolve_model

    try:
        path = resolve_model(name_or_path)
    except SmallsegError:
        shipped = ", ".join(builtin_models()) or "none in this installation"
        raise SmallsegError(f"--model {name_or_path}: no built-in model named {str(name_or_path)!r} (built-in: "
                            f"{shipped}) and no checkpoint file at that path; pass a checkpoint path "
                            "(.safetensors)") from None
    return load_checkpoint(path, device=resolve_device(device)).eval()


# --------------------------------------------------------------------------------------------------------------
# One series
# --------------------------------------------------------------------------------------------------------------


def series_folder_name(series: SeriesInfo) -> str:
    """Output folder name: the Series Instance UID (made file-name safe), or a hash of the files' folder."""
    uid = re.sub(r"[^0-9A-Za-z._-]", "_", series.series_uid).strip(".")
    if uid:
        return uid
    folder = os.path.dirname(os.path.abspath(series.files[0])) if series.files else ""
    return "nouid-" + hashlib.sha1(folder.encode()).hexdigest()[:12]


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


def completed_result(series: SeriesInfo, options: BatchOptions) -> SeriesResult | None:
    """The earlier run's result if ``series`` has complete outputs for these options and this model, else None.

    ``options.model_fingerprint`` must be set.
    """
    if not series.is_image:
        return None
    folder = Path(options.out_dir) / series_folder_name(series)
    marker = _read_marker(folder)
    if not marker or marker.get("version") != _MARKER_VERSION:
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
    note = "outputs of an earlier run (--resume)"
    message = f"{note}; {marker['message']}" if marker.get("message") else note
    return SeriesResult(series.series_uid, series_path(series), "ok", int(marker.get("objects", 0)),
                        float(marker.get("seconds", 0.0)), message, str(folder))


def process_series(series: SeriesInfo, model: torch.nn.Module | str | os.PathLike,
                   options: BatchOptions) -> SeriesResult:
    """Read one series, predict, write its outputs; never raises for a bad series (returns ``failed``).

    Args:
        series: an entry of :func:`~smallseg.io.medical.find_series` (non-image entries come back ``skipped``,
            unreadable ones ``failed``, with their reason).
        model: a loaded SmallObjectNet, or a shipped model name / checkpoint path (loaded here; for workers).
        options: output folder and prediction settings.

    Returns:
        The :class:`SeriesResult` (one summary row). Outputs are in ``options.out_dir/<series folder>/``,
        ``done.json`` last.
    """
    t0 = time.perf_counter()
    path = series_path(series) if series.files else ""
    if not series.is_image:
        status = "failed" if series.kind == "unreadable" else "skipped"
        return SeriesResult(series.series_uid, path, status, 0, time.perf_counter() - t0, one_line(series.reason))
    folder = Path(options.out_dir) / series_folder_name(series)
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
                                    link_min_overlap=options.link_min_overlap)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DONE_MARKER).unlink(missing_ok=True)  # from here on the folder is incomplete until the end
        write_labels_nifti(prediction.labels, volume, folder / "labels.nii.gz")
        write_objects_csv(prediction.objects, folder / "objects.csv")
        outputs = ["labels.nii.gz", "objects.csv"]
        notes = list(prediction.warnings)
        if options.dicom_seg:
            if len(prediction.objects):
                write_dicom_seg(prediction.labels, prediction.objects.class_ids, volume, folder / "seg.dcm",
                                class_names=model.config.class_names)
                outputs.append("seg.dcm")
            else:
                (folder / "seg.dcm").unlink(missing_ok=True)
                notes.append("no objects, so no DICOM SEG (a SEG needs at least one segmented frame)")
        message = one_line("; ".join(notes)) if notes else ""
        seconds = time.perf_counter() - t0
        marker = {"version": _MARKER_VERSION, "series_uid": series.series_uid, "options_hash": options.result_hash(),
                  "options": dataclasses.asdict(options), "model": fingerprint, "inputs": inputs,
                  "objects": len(prediction.objects), "seconds": round(seconds, 3), "message": message,
                  "preset": prediction.window.to_dict() if prediction.window else RAW,
                  "preset_source": prediction.preset_source,
                  "decode": dataclasses.asdict(prediction.decode) if prediction.decode else None, "outputs": outputs}
        _write_text_atomic(folder / DONE_MARKER, json.dumps(marker, indent=1))
        return SeriesResult(series.series_uid, path, "ok", len(prediction.objects), seconds, message, str(folder))
    except SmallsegError as exc:
        return SeriesResult(series.series_uid, path, "failed", 0, time.perf_counter() - t0, one_line(exc))
    except (MemoryError, RuntimeError, ValueError, OSError) as exc:
        # Not a user error we know of: still one line, and the batch goes on.
        return SeriesResult(series.series_uid, path, "failed", 0, time.perf_counter() - t0,
                            f"{type(exc).__name__}: {one_line(exc)}"[:500])


# --------------------------------------------------------------------------------------------------------------
# DICOM SEG
# --------------------------------------------------------------------------------------------------------------


def _require_highdicom():
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise SmallsegError("--dicom-seg needs the highdicom package: pip install 'smallseg[dicom-seg]' (or pip "
                            "install highdicom), or leave out --dicom-seg") from None
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

    from smallseg import __version__

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
        raise SmallsegError(f"{path}: DICOM SEG from a multi-frame source is not supported; leave out --dicom-seg")
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
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        seg.save_as(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
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
    _write_text_atomic(path, buf.getvalue())
    return path


def _under(path: str, folder: Path) -> bool:
    try:
        return Path(os.path.abspath(path)).is_relative_to(folder)
    except ValueError:
        return False


def run_dicom_batch(root: str | os.PathLike, out_dir: str | os.PathLike,
                    model: torch.nn.Module | str | os.PathLike = "medical", *, resume: bool = False,
                    progress: bool = True, preset: str | None = None, device: str = "cpu", batch_size: int = 4,
                    tile_size_px: int | None = None, min_score: float | None = None, min_slices: int = 1,
                    link_min_overlap: float = 0.5, dicom_seg: bool = False,
                    max_gb: float | None = 4.0) -> BatchResult:
    """Predict every DICOM image series under ``root``; one bad series never stops the batch.

    Args:
        root: folder searched recursively (a folder of mixed series is fine: they are grouped by UID).
        out_dir: output root (may be inside ``root``: its files are not taken as input).
        model: a loaded SmallObjectNet, a shipped model name, or a checkpoint path.
        resume: skip series whose outputs are complete for the same options, model and input files.
        progress: tqdm bar over the entries.
        preset, device, batch_size, tile_size_px, min_score, min_slices, link_min_overlap, dicom_seg, max_gb:
            see :class:`BatchOptions`.

    Returns:
        :class:`BatchResult`; ``out_dir/summary.csv`` holds the same rows.

    Raises:
        SmallsegError: ``root`` is not a folder or holds no file at all, bad options, model not found,
            ``dicom_seg`` without highdicom. Problems of single series are rows, not exceptions.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir).resolve()
    options = BatchOptions(out_dir=str(out), preset=preset, device=device, batch_size=batch_size,
                           tile_size_px=tile_size_px, min_score=min_score, min_slices=min_slices,
                           link_min_overlap=link_min_overlap, dicom_seg=dicom_seg, max_gb=max_gb)
    options.validate()
    if dicom_seg:
        _require_highdicom()
    entries = [e for e in find_series(root) if not all(_under(f, out) for f in e.files)]
    if not entries:
        raise SmallsegError(f"{root}: no files found (empty folder, or only hidden files); nothing to do")
    if not isinstance(model, torch.nn.Module):
        model = load_batch_model(model, device)
    else:
        model = model.to(resolve_device(device)).eval()
    options = dataclasses.replace(options, model_fingerprint=model_fingerprint(model))
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.csv"
    results: list[SeriesResult] = []
    bar = tqdm(entries, desc="series", unit="series", disable=not progress)
    for entry in bar:
        result = completed_result(entry, options) if resume else None
        if result is None:
            result = process_series(entry, model, options)
        results.append(result)
        write_summary(results, summary_path)  # after every series: a kill leaves a consistent summary
        bar.set_postfix(ok=sum(r.status == "ok" for r in results), failed=sum(r.status == "failed" for r in results))
    return BatchResult(results, summary_path)
