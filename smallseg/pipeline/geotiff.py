"""Predict a whole GeoTIFF in bounded memory: stream tile rows, stitch exactly, write georeferenced outputs.

Flow (one tile row at a time; about one tile row of the scene is in memory at once)::

    main thread:   reader.read_with_mask(grid.row_window(r)) ─model (predict_tile_row)─▶ head maps ─┐
    worker thread: decode ─▶ RowStitcher ─▶ finished rows + objects ─▶ checkpoint of row r ─▶ outputs ◀─┘
                   (STEM.instances.tif, STEM.classes.tif, STEM.gpkg, STEM.geojson, staged in the work folder)
    at the end:    STEM.objects.csv, STEM.quicklook.png; everything moved into OUT; then STEM.run.json

The worker decodes, stitches and writes while the main thread already runs the model on the next batch /
tile row (one row in flight, order kept), so the model rarely waits for decoding, stitching, compression or
polygonising.

Never lose work, never lie:

- While running, everything lives in the hidden work folder ``OUT/.STEM.resume/``: ``params.json`` (what
  the run depends on), one ``band.NNNNNN.npz`` per finished tile row (its finished label/class rows, the
  objects that ended in it, its share of the quick-look), the stitcher's state after the last finished tile
  row (``stitch.NNNNNN.npz``) and ``progress.json`` (the next tile row; replaced atomically last, so it
  always points at a complete checkpoint). A kill or Ctrl-C at any moment loses at most the tile rows in
  progress; ``resume=True`` continues from there: the checkpointed bands are replayed into fresh outputs,
  then streaming goes on.
- Outputs are built in the work folder and moved into ``OUT`` only when all are complete (each keeps its
  final name from then on). ``STEM.run.json`` is written last: it is the "finished" marker. Outputs are a
  function of the bands, the input and the settings only (no clock time), and bands reach them in order,
  so a resumed run's outputs are byte-identical to an uninterrupted run's (``run.json`` differs only in
  timings and session info).
- An ``OUT`` that already holds a finished run for this input is refused unless ``overwrite`` (redo) or
  ``resume`` (nothing to do: the finished result is returned).
- Input problems are one-line :class:`~smallseg.errors.SmallsegError` s. An input without any valid pixel
  is not an error: the run finishes with empty outputs and a warning (a scene can legitimately be all
  nodata, e.g. one tile of a mosaic); a model that finds nothing is not an error either.

Memory: one read window (bands x tile_h x width; the worker gets only the band's valid rows and quick-look
share), the model's batch, up to two tile rows of decoded tiles (uint8/uint16 labels), the stitcher's
pending band (tile_h rows, uint32), the output writers' row of 256 px blocks, the label rows the unfinished
objects cover and the finished objects not yet written to the CSV - independent of the scene height and of
the number of objects (the object table goes to ``STEM.objects.csv`` band by band;
:attr:`PredictionResult.objects` reads it back on first access); width enters linearly (about 6 KB of peak
resident memory per column of the scene at 256 px tiles, measured; freed pages go back to the OS once per
tile row with glibc's ``malloc_trim`` in scenes from 16,384 px wide). GDAL's block
cache comes on top: by default up to 5 % of RAM, filled as the scene streams by; set the ``GDAL_CACHEMAX``
environment variable (MB) before the first raster is read to bound it (the CLI sets 64 unless it is set). Tiles with no
valid pixel (nodata collars) are not sent to the model. Disk: the checkpoints (compressed label/class
bands) until the run finishes, about the size of the output rasters.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import shutil
import signal
import sys
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from smallseg.decode.centroids import DecodeConfig
from smallseg.errors import SmallsegError
from smallseg.instances import Instances
from smallseg.models.registry import resolve_device
from smallseg.io.geotiff import GeoTiffReader, RasterGeometry, class_writer, label_writer, open_raster
from smallseg.io.quicklook import (
    OutlineTracer,
    QuicklookPart,
    image_part,
    quicklook_grid,
    render_quicklook,
    write_png,
)
from smallseg.pipeline.array import check_decode_workers, decode_config_for, plan_tiling, predict_tile_row
from smallseg.tiling.grid import TileGrid, tile_windows
from smallseg.tiling.stitch import ObjectTable, RowStitcher, StitchState

FORMATS = ("tif", "gpkg", "geojson", "csv", "png", "json")
# Output kind -> file name suffix after STEM (in OUT).
OUTPUT_SUFFIXES = {
    "instances": ".instances.tif",
    "classes": ".classes.tif",
    "gpkg": ".gpkg",
    "geojson": ".geojson",
    "csv": ".objects.csv",
    "quicklook": ".quicklook.png",
    "run": ".run.json",
}
_FORMAT_KINDS = {"tif": ("instances", "classes"), "gpkg": ("gpkg",), "geojson": ("geojson",), "csv": ("csv",),
                 "png": ("quicklook",), "json": ()}
CSV_COLUMNS = (
    "id", "class_id", "class", "score", "area_px", "area_m2", "centroid_row", "centroid_col", "centroid_x",
    "centroid_y", "bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1", "tile_row", "tile_col", "touches_tile_edge",
)
QUICKLOOK_MAX_SIDE_PX = 1024
_VECTOR_BATCH = 4096
_CSV_CHUNK = 65536
_BLOCK_PX = 256  # output raster blocks
_STATE_FORMAT = 2  # 2: band checkpoints carry ids_below (the object table is streamed)
# Band statistics further than this many training standard deviations from the training mean get a warning.
_STATS_WARN_Z = 3.0
# Pixel sizes more than this factor outside the model's (augmented) training range get a warning.
_PIXEL_SIZE_WARN_FACTOR = 2.0

# Test hooks (used by the resume tests to stop a real process at a known point):
#   SMALLSEG_TEST_KILL_AFTER_TILE_ROWS=k   SIGKILL this process right after tile row k's checkpoint.
#   SMALLSEG_TEST_PAUSE_AFTER_TILE_ROWS=k  print "paused" to stdout after tile row k's checkpoint and sleep.
_KILL_ENV = "SMALLSEG_TEST_KILL_AFTER_TILE_ROWS"
_PAUSE_ENV = "SMALLSEG_TEST_PAUSE_AFTER_TILE_ROWS"


@dataclass
class PredictionResult:
    """What :func:`predict_geotiff` produced.

    Attributes:
        input_path: the input raster.
        paths: output kind -> file in the output folder (``instances``, ``classes``, ``gpkg``, ``geojson``,
            ``csv``, ``quicklook``, ``run``; only the requested ones).
        objects: the stitched objects sorted by id (scene px; see
            :class:`~smallseg.tiling.stitch.ObjectTable`). When ``STEM.objects.csv`` was written the table
            is not kept in memory during the run (a continental scene has millions of objects): it is read
            from the CSV on first access.
        class_names: name of class 1, 2, ...
        run: the content of ``STEM.run.json`` (parameters, counts, timings, warnings).
        skipped: True when the folder already held this finished run (``resume=True``) and nothing ran.
    """

    input_path: Path
    paths: dict[str, Path]
    class_names: list[str]
    run: dict
    skipped: bool = False
    table: ObjectTable | None = field(default=None, repr=False)

    @property
    def objects(self) -> ObjectTable:
        if self.table is None:
            csv_path = self.paths.get("csv")
            self.table = read_objects_csv(csv_path) if csv_path is not None and csv_path.exists() \
                else ObjectTable.empty()
        return self.table

    @property
    def n_objects(self) -> int:
        counted = self.run.get("counts", {}).get("objects")
        return int(counted) if counted is not None else len(self.objects)

    def summary(self) -> str:
        """One line: input, object count per class, time, where the outputs are."""
        per_name = self.run.get("counts", {}).get("objects_per_class")
        if per_name is None:
            per_name = dict(zip(self.class_names, np.bincount(
                self.objects.class_ids, minlength=len(self.class_names) + 1)[1:].tolist()))
        per_class = ", ".join(f"{per_name.get(name, 0)} {name}" for name in self.class_names)
        state = "already finished" if self.skipped else f"{self.run.get('timings_s', {}).get('total', 0):.1f} s"
        note = " (no valid pixels)" if self.run.get("counts", {}).get("valid_px", 1) == 0 else ""
        where = self.paths["run"].parent
        return f"{self.input_path}: {self.n_objects} objects ({per_class}){note}, {state} -> {where}"


@dataclass
class _Outputs:
    stem: str
    out_dir: Path
    work: Path

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


@dataclass
class _Session:
    """Bookkeeping of one call (what goes into run.json besides the parameters)."""

    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, UserWarning, stacklevel=3)

    def add_time(self, name: str, seconds: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + seconds


# ------------------------------------------------------------------------------------------------ helpers


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _mtime_iso(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` with fast deflate (level 1), written under a temporary name and renamed."""
    tmp = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, value in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)
    os.replace(tmp, path)


def _load_malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load_malloc_trim()
# Trim only scenes at least this wide: a trim also returns the model's freed working memory, which the next
# forward pass faults back in (~40 ms per tile row on a 2-core CPU: 3 % of a 4,096 px wide row's time,
# < 1 % from 16,384 px on, where it saves ~2 KB of peak resident memory per scene column).
_TRIM_MIN_WIDTH_PX = 16384


def _release_freed_memory(width_px: int) -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``; elsewhere nothing) for wide scenes.

    The arrays of one band of a wide scene are tens of MB, short-lived and of varying sizes; glibc keeps
    the freed pages of its arenas, so without this the resident memory grows by KBs per scene column
    beyond what is alive at any time.
    """
    if _MALLOC_TRIM is not None and width_px >= _TRIM_MIN_WIDTH_PX:
        _MALLOC_TRIM(0)


def _table_arrays(table: ObjectTable) -> dict[str, np.ndarray]:
    return {f"obj_{k}": v for k, v in asdict(table).items()}


def _table_from(arrays) -> ObjectTable:
    return ObjectTable(**{k: np.asarray(arrays[f"obj_{k}"]) for k in ObjectTable.__dataclass_fields__})


def _model_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the model's config and weights (identifies the model in run.json and for --resume)."""
    h = hashlib.sha256(model.config.to_json().encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def _load_model(model, device) -> tuple[torch.nn.Module, dict]:
    from smallseg.models.registry import builtin_models, resolve_model

    if isinstance(model, torch.nn.Module):
        if not hasattr(model, "config"):
            raise SmallsegError("model: not a smallseg model (no .config); build it with smallseg.models")
        if device is not None and str(device) != "auto":
            model = model.to(resolve_device(device))
        info = {"name": type(model).__name__, "path": None}
    else:
        from smallseg.models.checkpoint import load_checkpoint

        path = resolve_model(model)
        builtin = str(model) in builtin_models()
        info = {"name": str(model) if builtin else path.stem, "builtin": builtin, "path": str(path.resolve())}
        model = load_checkpoint(path, device=resolve_device(device))
    model.eval()
    return model, info


def _class_names(model) -> list[str]:
    names = model.config.class_names
    return list(names) if names else [f"class{i}" for i in range(1, model.config.classes + 1)]


def _check_band_stats(reader: GeoTiffReader, model, session: _Session) -> dict | None:
    """Compare the input's band statistics with the training ones; warn (never fail) when far apart."""
    config = model.config
    stats = reader.band_stats(max_windows=16, window_px=256, require_valid=False)  # ~1 MP: cheap for any scene
    if stats.valid_px == 0:
        return None
    summary = {"mean": stats.mean.round(4).tolist(), "std": stats.std.round(4).tolist(),
               "min": stats.min.tolist(), "max": stats.max.tolist(), "valid_px_sampled": stats.valid_px}
    if config.norm_mean is None or config.norm_std is None:
        return summary
    scaled_mean = stats.mean * config.input_scale
    z = (scaled_mean - np.asarray(config.norm_mean)) / np.asarray(config.norm_std)
    summary["z_vs_training"] = z.round(2).tolist()
    far = np.flatnonzero(np.abs(z) > _STATS_WARN_Z)
    if len(far):
        b = int(far[0])
        train_mean = config.norm_mean[b] / config.input_scale
        session.warn(
            f"{reader.path}: band {reader.bands[b]} mean {stats.mean[b]:.4g} is {abs(z[b]):.1f} training standard "
            f"deviations from the training mean {train_mean:.4g} (in this file's units); results may be poor - "
            f"check --bands and that the data type/scaling matches the model's training data ({reader.dtype} here)"
        )
    return summary


def _check_pixel_size(reader: GeoTiffReader, model, session: _Session) -> None:
    """Warn (never fail) when the input's pixel size is far from the one the model was trained at: a
    detector of 4 m cars finds nothing in a 30 m Landsat scene, and it should say why."""
    trained = (model.config.training or {}).get("train_pixel_size_m")
    size_m = reader.geometry.pixel_size_m
    if not trained or size_m is None:
        return
    lo, hi = (float(v) for v in trained)
    if lo / _PIXEL_SIZE_WARN_FACTOR <= size_m <= hi * _PIXEL_SIZE_WARN_FACTOR:
        return
    middle = float(np.sqrt(lo * hi))
    factor = size_m / middle
    session.warn(
        f"{reader.path}: pixel size {size_m:.3g} m is far outside the {lo:.3g}-{hi:.3g} m the model was trained "
        f"at (objects look ~{max(factor, 1 / factor):.0f}x {'smaller' if factor > 1 else 'larger'} than it "
        f"expects); results may be poor - resample the input to about {middle:.2g} m or use a model trained "
        f"at this resolution"
    )


# ------------------------------------------------------------------------------------------------ inputs

RASTER_SUFFIXES = (".tif", ".tiff", ".png")


def find_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into the rasters to predict.

    Args:
        paths: files (kept as given, even if missing: the run reports them) and folders (their ``*.tif``,
            ``*.tiff`` and ``*.png`` files, sorted, not recursive; hidden files and smallseg's own outputs
            ``*.instances.tif`` / ``*.classes.tif`` / ``*.quicklook.png`` skipped).

    Returns:
        Paths in order, without duplicates. Two inputs with one stem would write the same output names:
        that is a one-line error.
    """
    own = tuple(OUTPUT_SUFFIXES[k] for k in ("instances", "classes", "quicklook"))
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in RASTER_SUFFIXES
                           and not f.name.startswith(".") and not f.name.endswith(own))
            if not files:
                raise SmallsegError(f"{p}: no *.tif, *.tiff or *.png files in this folder")
            found.extend(files)
        else:
            found.append(p)
    unique = list(dict.fromkeys(found))
    by_stem: dict[str, Path] = {}
    for p in unique:
        if p.stem in by_stem:
            raise SmallsegError(f"{by_stem[p.stem]} and {p}: both would write {p.stem}.* into the output folder; "
                                f"predict them into different --out folders")
        by_stem[p.stem] = p
    return unique


# ---------------------------------------------------------------------------------------------- the run


def predict_geotiff(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    model: str | os.PathLike | torch.nn.Module = "remote-sensing",
    *,
    tile_size_px: int | None = None,
    overlap_px: int | None = None,
    batch_size: int = 4,
    device: str | torch.device | None = "auto",
    amp: bool = False,
    decode_workers: int = 1,
    bands: Sequence[int] | None = None,
    nodata: float | None = None,
    min_score: float | None = None,
    min_area_px: int | None = None,
    decode: DecodeConfig | dict | None = None,
    formats: Sequence[str] = FORMATS,
    cog: bool = False,
    compress: str = "deflate",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    duplicate_ios: float = 0.5,
) -> PredictionResult:
    """Find the objects in a GeoTIFF of any size and write georeferenced outputs (see module docstring).

    Args:
        path: input raster: GeoTIFF, or any raster GDAL reads (plain TIFF, PNG: pixel units, with a warning).
        out_dir: output folder (created). Outputs are named after the input's stem: ``STEM.instances.tif``
            (uint32 object ids, 0 = background), ``STEM.classes.tif`` (uint8 class, 0 = background,
            255 = nodata), ``STEM.gpkg`` / ``STEM.geojson`` (one polygon per object), ``STEM.objects.csv``,
            ``STEM.quicklook.png``, ``STEM.run.json`` (written last).
        model: a built-in model name (``"remote-sensing"``), a checkpoint path, or a loaded SmallObjectNet.
        tile_size_px: tile side (default: the model's training tile).
        overlap_px: tile overlap (default: from the model's largest object, see
            :func:`~smallseg.pipeline.array.plan_tiling`).
        batch_size: tiles per forward pass.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``; a model passed in loaded
            stays on its device unless ``device`` names one.
        amp: float16 autocast on CUDA.
        decode_workers: threads decoding the model's outputs (1: the thread that also stitches and writes).
            The decoder's loops release the GIL; on a GPU, whose forward pass outpaces one CPU decoder, use
            about as many as there are free CPU cores. Outputs do not depend on it.
        bands: 1-based band numbers in the model's order (default: the model's ``band_indices``, else all
            bands, an alpha band dropped when that leaves the model's band count).
        nodata: override the input's nodata value (pixels equal to it in every band are nodata).
        min_score: drop objects scoring lower (default: the model's decode setting).
        min_area_px: drop objects with fewer pixels in their tile (default: the model's decode setting).
        decode: further decoding overrides (:class:`~smallseg.decode.centroids.DecodeConfig` fields).
        formats: subset of ``("tif", "gpkg", "geojson", "csv", "png", "json")``; ``STEM.run.json`` is
            always written (it marks the run finished).
        cog: write the rasters as Cloud Optimized GeoTIFFs (with overviews).
        compress: raster compression: ``"deflate"``, ``"zstd"``, ``"lzw"`` or ``"none"``.
        resume: continue an interrupted run in ``out_dir`` (a finished one is returned as it is).
        overwrite: replace a finished or interrupted run in ``out_dir``.
        progress: show a progress bar (tiles, objects, megapixels/s, ETA).
        duplicate_ios: stitching: share of the smaller object two objects must share to be duplicates.

    Returns:
        :class:`PredictionResult` (output paths, the object table, the run report).
    """
    session = _Session()
    t_start = time.perf_counter()
    path = Path(path)
    out_dir = Path(out_dir)
    formats = _check_formats(formats)
    if batch_size < 1:
        raise SmallsegError(f"--batch-size {batch_size}: must be at least 1")
    check_decode_workers(decode_workers)
    if not path.exists():
        raise SmallsegError(f"{path}: no such file; check the path")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SmallsegError(f"--out {out_dir}: cannot create the folder ({exc.strerror})") from None
    outputs = _Outputs(stem=path.stem, out_dir=out_dir, work=out_dir / f".{path.stem}.resume")

    # A finished run is there: return it, redo it, or refuse.
    if outputs.final("run").exists() and not overwrite:
        if not resume:
            raise SmallsegError(
                f"{outputs.final('run')}: a finished run for {path.name} is already in {out_dir}; "
                f"pass --overwrite to redo it or --resume to skip it"
            )
        if outputs.work.exists():  # left over by a kill between run.json and the clean-up
            shutil.rmtree(outputs.work, ignore_errors=True)
        return _finished_result(path, outputs)

    model, model_info = _load_model(model, device)
    config = model.config
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        reader = open_raster(path, bands=bands if bands is not None else config.band_indices,
                             expected_bands=config.in_channels, nodata=nodata)
    for w in caught:
        if issubclass(w.category, UserWarning):
            session.warn(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    try:
        return _run(path, outputs, reader, model, model_info, session, t_start, tile_size_px=tile_size_px,
                    overlap_px=overlap_px, batch_size=batch_size, amp=amp, decode_workers=decode_workers,
                    min_score=min_score,
                    min_area_px=min_area_px, decode=decode, formats=formats, cog=cog, compress=compress,
                    resume=resume, overwrite=overwrite, progress=progress, duplicate_ios=duplicate_ios)
    finally:
        reader.close()


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [f for f in formats.split(",") if f.strip()]
    chosen = tuple(dict.fromkeys(f.strip().lower() for f in formats))
    bad = [f for f in chosen if f not in FORMATS]
    if bad or not chosen:
        raise SmallsegError(f"--formats {','.join(formats)}: use a comma list of {','.join(FORMATS)}")
    return chosen


def _run(path, outputs: _Outputs, reader: GeoTiffReader, model, model_info, session: _Session, t_start, *,
         tile_size_px, overlap_px, batch_size, amp, decode_workers, min_score, min_area_px, decode, formats, cog,
         compress, resume, overwrite, progress, duplicate_ios) -> PredictionResult:
    geometry = reader.geometry
    overrides = dict(asdict(decode)) if isinstance(decode, DecodeConfig) else dict(decode or {})
    if min_score is not None:
        if not 0 <= min_score <= 1:
            raise SmallsegError(f"--min-score {min_score}: must be between 0 and 1")
        overrides["min_score"] = float(min_score)
    if min_area_px is not None:
        if min_area_px < 1:
            raise SmallsegError(f"--min-area {min_area_px}: must be at least 1 px")
        overrides["min_area_px"] = int(min_area_px)
    decode_config = decode_config_for(model, overrides)
    plan = plan_tiling(model, tile_size_px, overlap_px, decode_config)
    grid = tile_windows(geometry.height, geometry.width, plan.tile_size_px, plan.overlap_px)

    t = time.perf_counter()
    stats = _check_band_stats(reader, model, session)
    session.add_time("band_stats", time.perf_counter() - t)
    _check_pixel_size(reader, model, session)

    device = next(model.parameters()).device
    params = {
        "format": _STATE_FORMAT,
        "input": {"path": str(path.resolve()), "size_bytes": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns},
        "bands": list(reader.bands),
        "nodata": reader.nodata,
        "model_sha256": _model_digest(model),
        "tile_size_px": plan.tile_size_px,
        "overlap_px": plan.overlap_px,
        "decode": asdict(decode_config),
        "batch_size": int(batch_size),
        "amp": bool(amp),
        "device_type": device.type,
        "duplicate_ios": float(duplicate_ios),
        "quicklook_max_side_px": QUICKLOOK_MAX_SIDE_PX,
    }
    params = json.loads(json.dumps(params, default=_json_default))
    state, first_row, started, tracer_carry = _open_work(outputs, params, resume, overwrite)
    if overwrite:
        outputs.final("run").unlink(missing_ok=True)  # the folder no longer claims a finished run

    class_names = _class_names(model)
    try:
        table, counts, parts = _predict_and_write(
            path, outputs, reader, model, decode_config, grid, session, state, first_row, tracer_carry,
            class_names, formats, batch_size=batch_size, amp=amp, decode_workers=decode_workers,
            duplicate_ios=duplicate_ios,
            progress=progress, cog=cog, compress=compress)
        t = time.perf_counter()
        if "png" in formats:
            qgrid = quicklook_grid(grid.height, grid.width, QUICKLOOK_MAX_SIDE_PX)
            write_png(outputs.staged("quicklook"), render_quicklook(qgrid, parts, reader.count))
        session.add_time("csv_quicklook", time.perf_counter() - t)
    except SmallsegError:
        # Wrong input or options: resuming would fail the same way. Leave nothing behind.
        shutil.rmtree(outputs.work, ignore_errors=True)
        raise

    if counts["valid_px"] == 0:
        session.warn(f"{path}: no valid pixels (every pixel is nodata"
                     f"{'' if reader.nodata is None else f' = {reader.nodata:g}'}); the outputs are empty")

    produced = {kind for f in formats for kind in _FORMAT_KINDS[f]}
    paths = {}
    for kind in OUTPUT_SUFFIXES:
        if kind == "run":
            continue
        final = outputs.final(kind)
        if kind in produced:
            os.replace(outputs.staged(kind), final)
            paths[kind] = final
        else:
            final.unlink(missing_ok=True)  # a stale file of an earlier run must not pass for this run's
    session.add_time("total", time.perf_counter() - t_start)
    run = _run_report(path, outputs, reader, model, model_info, plan, decode_config, grid, params, stats,
                      counts, session, started, formats=formats, cog=cog, compress=compress,
                      first_row=first_row)
    _write_json_atomic(outputs.final("run"), run)
    paths["run"] = outputs.final("run")
    shutil.rmtree(outputs.work, ignore_errors=True)
    return PredictionResult(input_path=path, paths=paths, class_names=_class_names(model), run=run, table=table)


def _predict_and_write(path, outputs: _Outputs, reader, model, decode_config, grid: TileGrid, session, state,
                       first_row, tracer_carry, class_names, formats, *, batch_size, amp, decode_workers,
                       duplicate_ios, progress, cog, compress):
    """Replay checkpointed bands (resumed run), stream the remaining tile rows, finish the staged rasters and
    vectors. Returns (object table sorted by id, or None when it went to the CSV; counts; quick-look parts)."""
    sink = _Sink(outputs, grid, reader.geometry, path.name, class_names, formats, session,
                 data_date=_mtime_iso(path), cog=cog, compress=compress)
    try:
        for r in range(first_row):  # resumed: replay the finished bands into the outputs
            with np.load(outputs.band(r)) as z:
                sink.add_band({name: z[name] for name in z.files})
        if first_row < grid.n_rows:
            _stream(reader, grid, model, decode_config, outputs, session, sink, state, first_row, tracer_carry,
                    batch_size=batch_size, amp=amp, decode_workers=decode_workers, duplicate_ios=duplicate_ios,
                    progress=progress)
    except BaseException:
        sink.abort()
        raise
    return sink.close()


def _open_work(outputs: _Outputs, params: dict, resume: bool, overwrite: bool):
    """Start or reopen the work folder. Returns (stitch state or None, first tile row, start time, outline
    carry or None)."""
    work = outputs.work
    if work.exists() and not resume:
        if not overwrite:
            raise SmallsegError(
                f"{work}: an interrupted run for this input is there; pass --resume to continue it or "
                f"--overwrite to start over"
            )
        shutil.rmtree(work)
    if work.exists() and outputs.progress.exists() and outputs.params.exists():
        old = json.loads(outputs.params.read_text(encoding="utf-8"))
        if old != params and overwrite:  # --resume --overwrite: continue if possible, else start over
            shutil.rmtree(work)
        elif old.get("format") != params["format"]:
            raise SmallsegError(
                f"{work}: the interrupted run was written by another smallseg version (checkpoint format "
                f"{old.get('format')}, this version uses {params['format']}) and cannot be resumed; pass "
                f"--overwrite to start over"
            )
        elif old != params:
            changed = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
            raise SmallsegError(
                f"{work}: the interrupted run used other settings or input ({', '.join(changed)} differ); "
                f"rerun with the same settings to resume, or pass --overwrite to start over"
            )
    if work.exists() and outputs.progress.exists() and outputs.params.exists():
        progress = json.loads(outputs.progress.read_text(encoding="utf-8"))
        k = int(progress["next_tile_row"])
        # Anything newer than the checkpoint (the tile row that was in progress) goes.
        for p in work.iterdir():
            name = p.name
            if name.endswith(".partial") or (name.startswith("band.") and int(name.split(".")[1]) >= k) or (
                name.startswith("stitch.") and int(name.split(".")[1]) != k
            ):
                p.unlink()
        state = StitchState.load(outputs.stitch(k)) if k > 0 else None
        carry = None
        if k > 0:
            with np.load(outputs.band(k - 1)) as z:
                carry = {name: z[name] for name in z.files if name.startswith("outline_")}
        return state, k, progress["started"], carry
    if work.exists():  # created but not even the first checkpoint was written
        shutil.rmtree(work)
    work.mkdir(parents=True)
    _write_json_atomic(outputs.params, params)
    started = _now_iso()
    _write_json_atomic(outputs.progress, {"next_tile_row": 0, "started": started})
    return None, 0, started, None


def _stream(reader, grid: TileGrid, model, decode_config, outputs: _Outputs, session: _Session, sink: "_Sink",
            state, first_row: int, tracer_carry, *, batch_size, amp, decode_workers, duplicate_ios,
            progress) -> None:
    """Tile rows ``first_row..``: read and run the model here; decoding, stitching, checkpoints and outputs
    in one worker thread (decoding in ``decode_workers`` threads of its own when more than 1).

    The worker decodes batch b while this thread runs the model on batch b + 1, and stitches and writes tile
    row r while the model works on row r + 1, so the model (or the GPU) rarely waits. One stitching worker,
    tasks in submission order, one tile row in flight, decoded tiles collected in order: the result does
    not depend on timing.
    """
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import nullcontext

    from tqdm.auto import tqdm

    stitcher = RowStitcher(grid, duplicate_ios=duplicate_ios, state=state)
    qgrid = quicklook_grid(grid.height, grid.width, QUICKLOOK_MAX_SIDE_PX)
    tracer = OutlineTracer(qgrid)
    if tracer_carry is not None:
        tracer.restore(tracer_carry)
    width = grid.width
    t0 = time.perf_counter()
    bar = tqdm(total=len(grid), initial=first_row * grid.n_cols, unit="tile", desc=reader.path.name,
               disable=not progress, leave=False, dynamic_ncols=True)
    done = {"objects": 0, "pixels": 0}

    def finish_row(r: int, rows_valid: np.ndarray, image_rows_part: QuicklookPart, found: list,
                   n_predicted: int) -> None:
        t = time.perf_counter()
        _release_freed_memory(width)  # the previous band's arrays are gone
        n_tiles = len(found)
        out = stitcher.add_tile_row(r, found)
        del found[:]  # the decoded tiles are stitched: free them before the band's outputs are built
        if (out.row0, out.row1) != grid.final_rows(r):
            raise RuntimeError("stitched band differs from the grid's final rows: stitching invariant broken")
        classes = np.where(rows_valid, out.classes, np.uint8(255))
        outline_part = tracer.add(out.row0, out.labels, out.classes)
        arrays = {
            "rows": np.array([out.row0, out.row1], np.int64),
            "labels": out.labels,
            "classes": classes,
            "counters": np.array([int(rows_valid.sum()), n_predicted, n_tiles - n_predicted], np.int64),
            # every object with a smaller id is finished: the sink can write those table rows now
            "ids_below": np.array([min(stitcher.state.live, default=stitcher.state.next_id)], np.int64),
            # no later object has a pixel above this row: the sink can drop the label rows above it
            "keep_from": np.array([min((o.bbox_emitted[0] for o in stitcher.state.live.values() if o.area_emitted),
                                       default=out.row1)], np.int64),
            **_table_arrays(out.objects),
            **image_rows_part.to_arrays("img_"),
            **(outline_part.to_arrays("outl_") if outline_part is not None else {}),
            **tracer.carry,
        }
        session.add_time("stitch", time.perf_counter() - t)

        t = time.perf_counter()
        _save_npz(outputs.band(r), arrays)
        stitcher.state.save(outputs.stitch(r + 1))
        progress_data = json.loads(outputs.progress.read_text(encoding="utf-8"))
        progress_data["next_tile_row"] = r + 1
        _write_json_atomic(outputs.progress, progress_data)  # the checkpoint of tile row r is complete
        outputs.stitch(r).unlink(missing_ok=True)
        session.add_time("checkpoint", time.perf_counter() - t)
        if os.environ.get(_KILL_ENV) == str(r + 1):
            os.kill(os.getpid(), signal.SIGKILL)

        sink.add_band(arrays)
        done["objects"] += len(out.objects)
        done["pixels"] += (out.row1 - out.row0) * width
        rate = done["pixels"] / 1e6 / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(objects=done["objects"], MPps=f"{rate:.2f}", refresh=False)
        bar.update(n_tiles)

    pending = None
    try:
        decoders = (ThreadPoolExecutor(max_workers=decode_workers, thread_name_prefix="smallseg-decode")
                    if decode_workers > 1 else nullcontext(None))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="smallseg-stitch") as worker, decoders as pool:
            decode_executor = worker if pool is None else pool
            for r in range(first_row, grid.n_rows):
                t = time.perf_counter()
                band, valid = reader.read_with_mask(grid.row_window(r))
                session.add_time("read", time.perf_counter() - t)

                t = time.perf_counter()
                tiles = grid.tile_row(r)
                all_valid = bool(valid.all())
                # Tiles without a single valid pixel (nodata collars) are not worth a forward pass.
                keep = [i for i, tile in enumerate(tiles)
                        if all_valid or valid[:, tile.window.col_off:tile.window.col_off + grid.tile_w].any()]
                found = [Instances.empty((grid.tile_h, grid.tile_w))] * len(tiles)
                if keep:
                    # No other reference to the decoded tiles: the worker frees them once they are stitched.
                    for i, inst in zip(keep, predict_tile_row(
                            band, None if all_valid else valid, [tiles[i] for i in keep], grid.row_starts[r],
                            model, decode_config, batch_size=batch_size, amp=amp,
                            decode_executor=decode_executor)):
                        found[i] = inst
                session.add_time("predict", time.perf_counter() - t)

                # What the worker needs of the read window: the band's rows of the valid mask and the band's
                # quick-look share. The pixels are dropped here, before the next tile row is read, so only
                # one read window is in memory at a time.
                t = time.perf_counter()
                row0, row1 = grid.final_rows(r)
                wr0 = grid.row_starts[r]
                rows_valid = valid[row0 - wr0 : row1 - wr0, :width].copy()
                image_rows_part = image_part(qgrid, row0, band[:, row0 - wr0 : row1 - wr0, :width], rows_valid)
                del band, valid
                session.add_time("quicklook", time.perf_counter() - t)

                t = time.perf_counter()
                if pending is not None:
                    pending.result()  # the previous row is done (or its error is raised here)
                session.add_time("wait_for_worker", time.perf_counter() - t)
                pending = worker.submit(finish_row, r, rows_valid, image_rows_part, found, len(keep))
                del found, rows_valid, image_rows_part
                if os.environ.get(_PAUSE_ENV) == str(r + 1):
                    pending.result()
                    print("paused", flush=True)
                    time.sleep(60)
            if pending is not None:
                t = time.perf_counter()
                pending.result()
                session.add_time("wait_for_worker", time.perf_counter() - t)
    finally:
        bar.close()


class _Sink:
    """Finished row bands (live or replayed from checkpoints) -> staged outputs in the work folder.

    Every byte written is a function of the bands, the input and the settings (no clock time, no timing),
    and bands always arrive in order 0, 1, ..., so a resumed run writes the same files as an uninterrupted
    one. Memory: the rows needed to polygonise the objects of one band (< tile_h + band rows), the objects
    not yet written to the CSV (those that may still precede an unfinished one in id order) and the
    quick-look parts: it does not grow with the scene. Without the CSV format the object table is kept.
    """

    def __init__(self, outputs: _Outputs, grid: TileGrid, geometry: RasterGeometry, source_name: str,
                 class_names: Sequence[str], formats, session: _Session, *, data_date: str, cog: bool,
                 compress: str):
        from smallseg.io.vector import GeoJSONWriter, GeoPackageWriter

        self.outputs, self.grid, self.geometry, self.session = outputs, grid, geometry, session
        self.data_date = data_date
        want = {kind for f in formats for kind in _FORMAT_KINDS[f]}
        self.want = want
        area_m2 = geometry.pixel_area_m2
        self.area_m2_per_px = area_m2 if area_m2 is not None else float("nan")
        self.class_names = list(class_names)
        self.tables: list[ObjectTable] = []  # finished objects not yet in the CSV (all of them without a CSV)
        self.parts: list[QuicklookPart] = []
        self.counters = np.zeros(3, np.int64)
        self.per_class = np.zeros(256, np.int64)  # class ids are uint8 in the class raster
        self.n_touching = 0
        self.csv_file = None
        self.csv_last_id = 0
        self.pending: list = []  # (polygons, table) not yet written to the vector files
        self.window = np.zeros((0, grid.width), np.uint32)  # label rows kept for polygonising
        self.window_row0 = 0
        tags = {"SMALLSEG_SOURCE": source_name}
        # 256 px blocks: the writers buffer one row of blocks across the whole scene width.
        self.labels_out = label_writer(outputs.staged("instances"), geometry, cog=cog, compress=compress, tags=tags,
                                       blocksize=_BLOCK_PX)
        self.classes_out = class_writer(outputs.staged("classes"), geometry, cog=cog, compress=compress, tags=tags,
                                        blocksize=_BLOCK_PX)
        self.gpkg = GeoPackageWriter(outputs.staged("gpkg"), geometry.crs, class_names) if "gpkg" in want else None
        self.geojson = None
        try:
            self.labels_out.open()
            self.classes_out.open()
            if "geojson" in want:
                self.geojson = GeoJSONWriter(outputs.staged("geojson"), geometry.crs, class_names, name=outputs.stem)
            if "csv" in want:
                self.csv_file = open(outputs.staged("csv"), "w", newline="", encoding="utf-8")
                self.csv_out = csv.writer(self.csv_file)
                self.csv_out.writerow(CSV_COLUMNS)
        except BaseException:
            self.abort()
            raise

    @property
    def vectors(self) -> bool:
        return self.gpkg is not None or self.geojson is not None

    def add_band(self, arrays) -> None:
        """Take one finished band (the arrays of its checkpoint)."""
        from smallseg.io.vector import object_polygons

        t = time.perf_counter()
        row0, row1 = (int(v) for v in arrays["rows"])
        labels = np.asarray(arrays["labels"])
        self.labels_out.write_rows(row0, labels)
        self.classes_out.write_rows(row0, arrays["classes"])
        table = _table_from(arrays)
        self.tables.append(table)
        self.per_class += np.bincount(table.class_ids, minlength=256)[:256]
        self.n_touching += int(table.touches_tile_edge.sum())
        if self.csv_file is not None:
            self._write_csv(int(arrays["ids_below"][0]))
        self.counters += np.asarray(arrays["counters"])
        self.parts.append(QuicklookPart.from_arrays(arrays, "img_"))
        if "outl_row0" in arrays:
            self.parts.append(QuicklookPart.from_arrays(arrays, "outl_"))
        if self.vectors:
            if len(table):
                # One copy of the rows and columns this band's objects cover (kept rows above the band,
                # then the band): object_polygons polygonises exactly that box.
                r0, c0 = int(table.bbox[:, 0].min()), int(table.bbox[:, 1].min())
                c1 = int(table.bbox[:, 3].max())
                if r0 < self.window_row0:
                    raise RuntimeError("object taller than a tile: stitching invariant broken")
                crop = np.empty((row1 - r0, c1 - c0), labels.dtype)
                above = max(row0 - r0, 0)
                crop[:above] = self.window[r0 - self.window_row0 :, c0:c1]
                crop[above:] = labels[r0 + above - row0 :, c0:c1]
                polygons = object_polygons(crop, r0, c0, table.ids, table.bbox, self.geometry.transform)
                del crop
                self.pending.append((polygons, table))
                if sum(len(tb) for _, tb in self.pending) >= _VECTOR_BATCH:
                    self._flush_vectors()
            # Keep only the rows a later object may still have pixels in: from the top row of the unfinished
            # objects' emitted pixels (checkpoints of older versions lack it: an object lies in one tile, so
            # it starts less than tile_h rows above the next band).
            keep_from = int(arrays["keep_from"][0]) if "keep_from" in arrays else row1 - self.grid.tile_h
            keep_from = min(max(keep_from, self.window_row0), row1)
            self.window = np.concatenate([self.window[keep_from - self.window_row0 :],
                                          labels[max(keep_from - row0, 0) :]])
            self.window_row0 = keep_from
        self.session.add_time("outputs", time.perf_counter() - t)

    def _write_csv(self, ids_below: int | None) -> None:
        """Write the held objects with ids below ``ids_below`` (all: None) to the CSV, in id order."""
        held = ObjectTable.concat(self.tables).sorted_by_id()
        n = len(held) if ids_below is None else int(np.searchsorted(held.ids, ids_below))
        if n:
            if held.ids[0] <= self.csv_last_id:
                raise RuntimeError("object ids out of order: stitching invariant broken")
            _write_csv_rows(self.csv_out, held.rows(slice(0, n)), self.class_names, self.geometry)
            self.csv_last_id = int(held.ids[n - 1])
        self.tables = [held.rows(slice(n, None))]

    def _flush_vectors(self) -> None:
        if not self.pending:
            return
        polygons = [p for batch, _ in self.pending for p in batch]
        table = ObjectTable.concat([tb for _, tb in self.pending])
        cols = (table.ids, table.class_ids, table.scores, table.area_px, table.area_px * self.area_m2_per_px)
        if self.gpkg is not None:
            with _ogr_date(self.data_date):
                self.gpkg.write(polygons, *cols)
        if self.geojson is not None:
            self.geojson.write(polygons, *cols)
        self.pending.clear()

    def close(self) -> tuple[ObjectTable | None, dict, list[QuicklookPart]]:
        """Finish every staged file. Returns (object table sorted by id, or None when it went to the CSV;
        counts; quick-look parts)."""
        t = time.perf_counter()
        try:
            if self.csv_file is not None:
                self._write_csv(None)
                self.csv_file.close()
            self._flush_vectors()
            if self.gpkg is not None:
                with _ogr_date(self.data_date):
                    self.gpkg.close()
            if self.geojson is not None:
                self.geojson.close()
            self.labels_out.close()
            self.classes_out.close()
        except BaseException:
            self.abort()
            raise
        self.session.add_time("outputs", time.perf_counter() - t)
        counts = {"valid_px": int(self.counters[0]), "tiles_predicted": int(self.counters[1]),
                  "tiles_skipped_nodata": int(self.counters[2]), "objects": int(self.per_class.sum()),
                  "per_class": self.per_class, "touching_tile_edge": self.n_touching}
        objects = None if self.csv_file is not None else ObjectTable.concat(self.tables).sorted_by_id()
        self.tables = []
        return objects, counts, self.parts

    def abort(self) -> None:
        """Drop the half-written staged rasters (the rest lies in the work folder and is redone on resume)."""
        self.labels_out.abort()
        self.classes_out.abort()
        if self.csv_file is not None:
            self.csv_file.close()
        if self.geojson is not None:
            self.geojson.close()


class _ogr_date:
    """Fix GDAL's "current date", which a GeoPackage records as its ``last_change``, to the input file's
    modification time: the GeoPackage then depends only on the input and the settings (a resumed run, or a
    rerun, writes the same bytes)."""

    def __init__(self, iso: str):
        self.iso = iso

    def __enter__(self):
        import pyogrio

        self.old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": self.iso})

    def __exit__(self, *exc):
        import pyogrio

        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": self.old})


# ----------------------------------------------------------------------------------------- object table


def write_objects_csv(path: str | os.PathLike, objects: ObjectTable, class_names: Sequence[str],
                      geometry: RasterGeometry) -> Path:
    """Write the object table as CSV (columns :data:`CSV_COLUMNS`).

    Units: ``area_px`` px; ``area_m2`` m² (empty without a projected CRS); ``centroid_row/col`` scene px
    (pixel centres at integers); ``centroid_x/y`` map coordinates of the centroid in the raster's CRS (pixel
    grid coordinates when it has none); ``bbox_*`` half-open scene px; ``score`` in [0, 1].
    """
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(CSV_COLUMNS)
        _write_csv_rows(out, objects, class_names, geometry)
    return path


def _write_csv_rows(out, objects: ObjectTable, class_names: Sequence[str], geometry: RasterGeometry) -> None:
    for start in range(0, len(objects), _CSV_CHUNK):  # in chunks: text columns of every object add up
        chunk = objects.rows(slice(start, min(start + _CSV_CHUNK, len(objects))))
        out.writerows(zip(*_csv_columns(chunk, class_names, geometry)))


def _csv_columns(objects: ObjectTable, class_names: Sequence[str], geometry: RasterGeometry) -> list:
    pixel_m2 = geometry.pixel_area_m2
    n = len(objects)
    cy, cx = objects.centroids_yx[:, 0].astype(np.float64), objects.centroids_yx[:, 1].astype(np.float64)
    t = geometry.transform
    x = t.a * (cx + 0.5) + t.b * (cy + 0.5) + t.c  # pixel centre -> map coordinates
    y = t.d * (cx + 0.5) + t.e * (cy + 0.5) + t.f
    area_px = objects.area_px.astype(np.int64)
    area_m2 = [""] * n if pixel_m2 is None else map(repr, (area_px * pixel_m2).tolist())
    names = [class_names[c - 1] if 1 <= c <= len(class_names) else str(c) for c in objects.class_ids.tolist()]
    return [
        objects.ids.tolist(), objects.class_ids.tolist(), names,
        [str(v) for v in objects.scores.astype(np.float32)],  # shortest text that reads back as the float32
        area_px.tolist(), area_m2, map(repr, cy.tolist()), map(repr, cx.tolist()), map(repr, x.tolist()),
        map(repr, y.tolist()), *objects.bbox.T.tolist(), *objects.tile_rc.T.tolist(),
        objects.touches_tile_edge.astype(int).tolist(),
    ]


def read_objects_csv(path: str | os.PathLike) -> ObjectTable:
    """Read a table written by :func:`write_objects_csv` back into an :class:`ObjectTable`."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return ObjectTable.empty()
        chunks = []
        while True:  # in chunks: a list of text rows costs ~50x the table it becomes
            rows = [row for _, row in zip(range(_CSV_CHUNK), reader)]
            if not rows:
                break
            chunks.append(_table_from_rows(header, rows))
    return ObjectTable.concat(chunks)


def _table_from_rows(header: list[str], rows: list[list[str]]) -> ObjectTable:
    columns = dict(zip(header, zip(*rows)))
    col = lambda name, dtype: np.array(columns[name]).astype(dtype)  # noqa: E731
    return ObjectTable(
        ids=col("id", np.int64),
        class_ids=col("class_id", np.int32),
        scores=col("score", np.float32),
        centroids_yx=np.stack([col("centroid_row", np.float64), col("centroid_col", np.float64)], axis=1),
        area_px=col("area_px", np.int64),
        bbox=np.stack([col(f"bbox_{k}", np.int64) for k in ("row0", "col0", "row1", "col1")], axis=1),
        tile_rc=np.stack([col("tile_row", np.int32), col("tile_col", np.int32)], axis=1),
        touches_tile_edge=col("touches_tile_edge", np.int64).astype(bool),
    )


def _finished_result(path: Path, outputs: _Outputs) -> PredictionResult:
    run = json.loads(outputs.final("run").read_text(encoding="utf-8"))
    paths = {kind: outputs.out_dir / name for kind, name in run.get("outputs", {}).items()}
    paths["run"] = outputs.final("run")
    return PredictionResult(input_path=path, paths=paths,
                            class_names=list(run.get("model", {}).get("class_names", [])), run=run, skipped=True)


# ------------------------------------------------------------------------------------------------ report


def _versions() -> dict[str, str]:
    import rasterio

    import smallseg

    out = {"smallseg": smallseg.__version__, "python": platform.python_version(), "numpy": np.__version__,
           "torch": torch.__version__, "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__}
    for name in ("segmentation_models_pytorch", "timm", "pyogrio", "shapely"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except ImportError:
                continue
        out[name] = getattr(module, "__version__", "?")
    return out


def _run_report(path, outputs, reader, model, model_info, plan, decode_config, grid, params, stats, counts,
                session, started, *, formats, cog, compress, first_row) -> dict:
    config = model.config
    geometry = reader.geometry
    class_names = _class_names(model)
    per_class = counts["per_class"][1 : config.classes + 1]
    return {
        "smallseg_run": 1,
        "finished": _now_iso(),
        "started": started,
        "input": {
            "path": str(path.resolve()),
            "width": geometry.width,
            "height": geometry.height,
            "crs": geometry.crs.to_string() if geometry.crs is not None else None,
            "transform": list(geometry.transform)[:6],
            "georeferenced": geometry.georeferenced,
            "linear_units": geometry.linear_units,
            "pixel_area": geometry.pixel_area,
            "pixel_area_m2": geometry.pixel_area_m2,
            "pixel_size_m": geometry.pixel_size_m,
            "bands": list(reader.bands),
            "dtype": reader.dtype,
            "nodata": reader.nodata,
            "band_stats_sampled": stats,
        },
        "model": {
            **model_info,
            "sha256": params["model_sha256"],
            "class_names": class_names,
            "config": {k: getattr(config, k) for k in (
                "encoder_name", "encoder_output_stride", "in_channels", "classes", "heads", "lfe",
                "max_distance_px", "tile_size_px", "input_scale", "norm_mean", "norm_std", "band_indices")},
        },
        "parameters": {
            "tile_size_px": plan.tile_size_px,
            "overlap_px": plan.overlap_px,
            "overlap_reason": plan.overlap_reason,
            "batch_size": params["batch_size"],
            "device": params["device_type"],
            "amp": params["amp"],
            "duplicate_ios": params["duplicate_ios"],
            "decode": asdict(decode_config),
            "formats": list(formats),
            "cog": cog,
            "compress": compress,
        },
        "tiling": {
            "tile_rows": grid.n_rows,
            "tile_cols": grid.n_cols,
            "tiles": len(grid),
            "tiles_predicted": counts["tiles_predicted"],
            "tiles_skipped_nodata": counts["tiles_skipped_nodata"],
            "max_pending_rows": grid.max_pending_rows(),
        },
        "counts": {
            "objects": counts["objects"],
            "objects_per_class": dict(zip(class_names, per_class.tolist())),
            "objects_touching_tile_edge": counts["touching_tile_edge"],
            "valid_px": counts["valid_px"],
            "scene_px": geometry.width * geometry.height,
        },
        "session": {"resumed_from_tile_row": first_row if first_row else None},
        "timings_s": {k: round(v, 3) for k, v in session.timings.items()},
        "outputs": {kind: p.name for kind, p in
                    ((k, outputs.final(k)) for k in OUTPUT_SUFFIXES if k != "run") if p.exists()},
        "warnings": session.warnings,
        "versions": _versions(),
    }
