"""Running GeoTIFF predictions: one scene (:func:`predict_geotiff`) or a batch of files and folders
(:func:`predict_geotiffs`, with the per-file error policy).

One scene, in order: the options are validated (when the :class:`GeoTiffOptions` was built), the model is
loaded, the raster opened and the tiling planned - every input or settings problem is raised here, before
anything is written; then the output folder is created and the scene's lock taken (:func:`scene_lock`), and
under the lock a finished run is returned, redone or refused, an interrupted one resumed, and the tile rows
streamed (:mod:`~smallseg.pipeline.geotiff.stream`) into the sinks (:mod:`~smallseg.pipeline.geotiff.sinks`);
the outputs are moved into ``OUT`` when all are complete and ``STEM.run.json`` is written last.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from smallseg.bands import BandPlan, band_numbers, model_band_names, plan_for_dataset
from smallseg.decode.centroids import DecodeConfig
from smallseg.errors import SmallsegError, one_line
from smallseg.io.geotiff import GeoTiffReader, open_raster
from smallseg.normalize import DEFAULT_FIT_PIXELS, Normalization, NormStats, choose_normalization, normalization_for
from smallseg.io.quicklook import quicklook_grid, render_quicklook, write_png
from smallseg.io.tables import ObjectTable, read_objects_csv
from smallseg.models import prepare_model, weights_fingerprint
from smallseg.models.tta import with_tta
from smallseg.pipeline.array import decode_config_for, plan_tiling, TilingPlan
from smallseg.pipeline.classes import modality_classes
from smallseg.pipeline.geotiff.options import OUTPUT_SUFFIXES, GeoTiffOptions, OptionError, check_batch_pixels
from smallseg.pipeline.geotiff.report import (
    Session,
    check_band_stats,
    check_pixel_size,
    pixel_size_verdict,
    resample_decision,
    class_names,
    mtime_iso,
    now_iso,
    run_report,
)
from smallseg.pipeline.geotiff.sinks import Sink
from smallseg.pipeline.geotiff.stream import stream_rows
from smallseg.pipeline.geotiff.workdir import (
    QUICKLOOK_MAX_SIDE_PX,
    Checkpoint,
    WorkDir,
    finished_run,
    load_band,
    open_work,
    run_params,
    scene_lock,
    write_json,
)
from smallseg.tiling.grid import TileGrid, tile_windows

RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


# ----------------------------------------------------------------------------------------------- results


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
        if self.run.get("reliable") is False:
            note += f" [NOT RELIABLE: {self.run.get('reliable_reason', '')}]"
        where = self.paths["run"].parent
        return f"{self.input_path}: {self.n_objects} objects ({per_class}){note}, {state} -> {where}"


@dataclass(frozen=True)
class InputFailure:
    """One input of :func:`predict_geotiffs` that did not finish.

    Attributes:
        path: the input.
        message: one line (starts with the input's path).
        resumable: an interrupted run's checkpoints are in the output folder (``resume=True`` continues).
    """

    path: Path
    message: str
    resumable: bool = False


@dataclass
class BatchResult:
    """What :func:`predict_geotiffs` did: per input a :class:`PredictionResult` or an :class:`InputFailure`.

    Attributes:
        inputs: every input, in order.
        results: the finished ones (including finished runs returned as they were, ``skipped``).
        failures: the others.
    """

    inputs: list[Path]
    results: list[PredictionResult] = field(default_factory=list)
    failures: list[InputFailure] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 every input done, 1 some failed, 2 none done (the command line's exit status)."""
        if not self.failures:
            return 0
        return 1 if self.results else 2

    def summary(self) -> str:
        return f"{len(self.results)} of {len(self.inputs)} inputs done, {len(self.failures)} failed"


# ------------------------------------------------------------------------------------------------ inputs


def find_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into the rasters to predict.

    Args:
        paths: files (kept as given, even if missing: the run reports them) and folders (their ``*.tif``,
            ``*.tiff``, ``*.png``, ``*.jpg`` and ``*.jpeg`` files, sorted, not recursive; hidden files and smallseg's own outputs
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
                raise SmallsegError(f"{p}: no *.tif, *.tiff, *.png or *.jpg files in this folder")
            found.extend(files)
        else:
            found.append(p)
    unique = list(dict.fromkeys(found))
    by_stem: dict[str, Path] = {}
    for p in unique:
        if p.stem in by_stem:
            raise SmallsegError(f"{by_stem[p.stem]} and {p}: both would write {p.stem}.* into the output folder; "
                                f"predict them into different output folders")
        by_stem[p.stem] = p
    return unique


# ------------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class _Model:
    """A loaded model, how run.json names it, and its fingerprint (resume markers)."""

    module: torch.nn.Module
    info: dict
    sha256: str


def _load_model(model, device, tta: str | None = None) -> _Model:
    module, source = prepare_model(model, device)
    info = source.to_dict()
    if tta is not None:  # issue #14: the wrapper runs the model once per flip/rotation, tile by tile
        module = with_tta(module, tta)
        info["tta"] = tta
    return _Model(module, info, weights_fingerprint(module))


# ------------------------------------------------------------------------------------------------- a scene


@dataclass
class SceneJob:
    """Everything one scene's run works with (built once the input and settings are known to be good)."""

    path: Path
    work: WorkDir
    reader: GeoTiffReader
    model: torch.nn.Module
    model_info: dict
    options: GeoTiffOptions
    decode_config: DecodeConfig
    plan: TilingPlan
    grid: TileGrid
    session: Session
    params: dict = field(default_factory=dict)
    # A split scene (smallseg.pipeline.geotiff.split): (job, first tile row) -> stream_rows' row_source.
    row_source_factory: Callable | None = None


def _options(options: GeoTiffOptions | None, values: dict) -> GeoTiffOptions:
    if options is None:
        return GeoTiffOptions(**values)
    if not isinstance(options, GeoTiffOptions):
        raise TypeError(f"options must be a GeoTiffOptions, not {type(options).__name__}")
    return options.replace(**values) if values else options


def predict_geotiff(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    model: str | os.PathLike | torch.nn.Module = "remote-sensing",
    *,
    options: GeoTiffOptions | None = None,
    on_row_done: Callable[[int], None] | None = None,
    **option_values,
) -> PredictionResult:
    """Find the objects in a GeoTIFF of any size and write georeferenced outputs (see the package docstring).

    Args:
        path: input raster: GeoTIFF, or any raster GDAL reads (plain TIFF, PNG: pixel units, with a warning).
        out_dir: output folder (created). Outputs are named after the input's stem: ``STEM.instances.tif``
            (uint32 object ids, 0 = background), ``STEM.classes.tif`` (uint8 class, 0 = background,
            255 = nodata), ``STEM.gpkg`` / ``STEM.geojson`` (one polygon per object), ``STEM.objects.csv``,
            ``STEM.quicklook.png``, ``STEM.run.json`` (written last).
        model: a built-in model name (``"remote-sensing"``), a checkpoint path, or a loaded SmallObjectNet.
        options: a :class:`GeoTiffOptions`; ``option_values`` (its field names, e.g. ``tile_size_px=512``)
            build one or change the given one.
        on_row_done: called with ``n`` each time tile rows ``0..n-1`` are checkpointed (see
            :func:`~smallseg.pipeline.geotiff.stream.stream_rows`).

    Returns:
        :class:`PredictionResult` (output paths, the object table, the run report).

    Raises:
        SmallsegError: bad input or settings (one line; nothing written), a finished or interrupted run in
            ``out_dir`` without ``resume`` / ``overwrite``, or the scene's outputs in use by another process.
    """
    options = _options(options, option_values)
    path = Path(path)
    if not path.exists():
        raise SmallsegError(f"{path}: no such file; check the path")
    return _predict_scene(path, Path(out_dir), _load_model(model, options.device, options.tta), options, on_row_done)


def predict_geotiffs(
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    model: str | os.PathLike | torch.nn.Module = "remote-sensing",
    options: GeoTiffOptions | None = None,
    on_error: str = "record",
    on_done: Callable[[Path, PredictionResult | InputFailure], None] | None = None,
    on_row_done: Callable[[Path, int], None] | None = None,
    client=None,
    split_rows: int | str | None = "auto",
) -> BatchResult:
    """Predict every raster of ``paths`` (files and folders, see :func:`find_inputs`) into ``out_dir``.

    The model is loaded once. A problem with the inputs as a whole (no rasters in a folder, two inputs with
    one stem, an unknown model) raises before anything runs; a problem with one input does not stop the
    others (``on_error="record"``): a :class:`SmallsegError` or an I/O / decoding error becomes an
    :class:`InputFailure` with one line, and the batch goes on. ``on_error="raise"`` raises it instead.
    Ctrl-C (KeyboardInterrupt) always stops the batch; the scene in progress can be resumed.

    Args:
        paths: raster files and folders.
        out_dir: output folder for every input (each writes ``STEM.*``).
        model: built-in model name, checkpoint path or loaded model.
        options: :class:`GeoTiffOptions` for every input (default: the defaults).
        on_error: ``"record"`` or ``"raise"``.
        on_done: called after each input with its result or failure (e.g. to print a line per input).
        on_row_done: called with (input, ``n``) each time tile rows ``0..n-1`` of that input are checkpointed.
        client: a ``dask.distributed.Client``: one task per scene on its workers, huge scenes split into bands
            of ``split_rows`` tile rows (``"auto"``, an int, or 0 = never); same bytes as without
            (:func:`smallseg.cluster.scenes.predict_geotiffs_on_cluster`). None: this process, no Dask. With a
            client, ``on_row_done`` is called for the split scenes (stitched here), not for whole-scene tasks.

    Returns:
        :class:`BatchResult`; its ``exit_code`` is 0 when every input is done, 1 when some failed, 2 when none
        was done.
    """
    if on_error not in ("record", "raise"):
        raise ValueError(f"on_error must be 'record' or 'raise', not {on_error!r}")
    options = options if options is not None else GeoTiffOptions()
    if client is not None:
        from smallseg.cluster.scenes import predict_geotiffs_on_cluster

        return predict_geotiffs_on_cluster(client, paths, out_dir, model=model, options=options, on_error=on_error,
                                           on_done=on_done, on_row_done=on_row_done, split_rows=split_rows)
    out_dir = Path(out_dir)
    batch = BatchResult(inputs=find_inputs(paths))
    loaded = _load_model(model, options.device, options.tta)
    for path in batch.inputs:
        rows_done = None if on_row_done is None else (lambda n, p=path: on_row_done(p, n))
        try:
            if not path.exists():
                raise SmallsegError(f"{path}: no such file; check the path")
            outcome = _predict_scene(path, out_dir, loaded, options, rows_done)
            batch.results.append(outcome)
        except SmallsegError as exc:
            if on_error == "raise":
                raise
            outcome = InputFailure(path, str(exc))
        except (OSError, RuntimeError, ValueError, MemoryError) as exc:  # one bad file must not stop the rest
            if on_error == "raise":
                raise
            outcome = InputFailure(path, f"{path}: {type(exc).__name__}: {one_line(exc)}",
                                   resumable=WorkDir(path.stem, out_dir).resumable)
        if isinstance(outcome, InputFailure):
            batch.failures.append(outcome)
        if on_done is not None:
            on_done(path, outcome)
    return batch


@dataclass(frozen=True)
class InputPlan:
    """How one scene's pixels reach the model: which file bands, which normalisation, fitted how.

    Attributes:
        bands: the :class:`~smallseg.bands.BandPlan` (file band -> model band, alpha as the valid mask).
        norm: the :class:`~smallseg.normalize.Normalization` applied to every tile.
        stats: its :class:`~smallseg.normalize.NormStats`, fitted once on a decimated read of the whole scene
            (valid pixels only): every tile row gets the same mapping, so tiling stays exact.
        requested: what was asked for (``"model"``, ``"percentile"``, ``"fixed"``, ``"none"``, ``"given"``).
        note: one line when the model's own normalisation was replaced (e.g. uint16 data to an 8-bit model).
        z_vs_training: per model band, the mean of the sampled model input in training standard deviations
            (0 = the training mean; None without a declared mean/std or valid pixels).
        reason: "" when the input is fit for the model, else one line why the result is not reliable
            (a constant or empty band, a pixel size far outside the training range).
        resample: run.json's ``input.resample``: ``{"applied": True, "from_m", "to_m", "factor", "method"}``
            (the reader reads the scene resampled) or ``{"applied": False, "reason"}``.
        modality: None for a model without classes per modality, else ``{"modality", "classes"}``: the
            image's modality and the class names objects may take (others are relabelled or dropped).
    """

    bands: BandPlan
    norm: Normalization
    stats: NormStats
    requested: str
    note: str = ""
    z_vs_training: tuple[float, ...] | None = None
    reason: str = ""
    resample: dict | None = None
    modality: dict | None = None

    @property
    def class_ids(self) -> list[int] | None:
        """1-based classes objects may take (None: every class)."""
        return None if self.modality is None else list(self.modality["class_ids"])

    @property
    def reliable(self) -> bool:
        return not self.reason

    def to_dict(self) -> dict:
        return {"requested": self.requested, "applied": self.norm.to_dict(), "described": self.norm.describe(),
                "stats": self.stats.to_dict(), "note": self.note,
                "z_vs_training": None if self.z_vs_training is None else list(self.z_vs_training)}


# A model whose declared normalisation is x * 1/255 was trained on 8-bit data.
_EIGHT_BIT_SCALE = 1.0 / 255.0


def choose_input_normalization(model: torch.nn.Module, options: GeoTiffOptions,
                               dtype: str) -> tuple[Normalization, str, str]:
    """The normalisation for a scene of ``dtype``: (normalisation, what was requested, note or "").

    ``percentiles`` without ``normalize="percentile"`` means percentile normalisation. A model trained on
    8-bit data (declared ``x * 1/255``) given another data type (11/12/16-bit satellite data in uint16,
    int16, float) gets per-band percentiles with the model's own mean/std, and a note: ``x / 255`` of such
    data is far outside anything it saw.
    """
    config = model.config
    requested = options.normalize if isinstance(options.normalize, str) else "given"
    choice = options.normalize
    if requested == "model" and options.percentiles is not None and normalization_for(config).kind != "percentile":
        choice = requested = "percentile"
    norm = choose_normalization(config, choice, percentiles=options.percentiles, modality=options.modality or None)
    note = ""
    if requested == "model" and norm.kind == "fixed" and abs(norm.scale / _EIGHT_BIT_SCALE - 1) < 1e-6 \
            and np.dtype(dtype) != np.uint8:
        norm = choose_normalization(config, "percentile")
        note = (f"{dtype} pixels to a model trained on 8-bit data: per-band percentiles {norm.lo:g}-{norm.hi:g} % "
                f"of the scene map them to [0, 1] (normalize='fixed' keeps x / 255)")
    return norm, requested, note


def _z_vs_training(norm: Normalization, stats: NormStats, sample: np.ndarray,
                   valid: np.ndarray) -> tuple[float, ...] | None:
    if norm.mean is None or not valid.any():
        return None
    x = norm.apply(sample, stats)
    return tuple(round(float(v), 2) for v in x[:, valid].mean(axis=1))


def _open_reader(path: Path, model: torch.nn.Module, options: GeoTiffOptions, session: Session) -> GeoTiffReader:
    """Open the input, choose its bands by meaning and fit the normalisation once on the whole scene.

    The reader's ``input_plan`` (an :class:`InputPlan`) is what every tile row is normalised with; its
    warnings (and the band / normalisation notes) go into the session: run.json lists them.
    """
    config = model.config
    model_bands = model_band_names(config)
    given = options.bands if options.bands is not None else config.band_indices
    chosen: list[BandPlan] = []
    if given is not None and any(isinstance(b, str) for b in given):  # names: by colour interpretation
        from smallseg.io.geotiff import _open_dataset

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = _open_dataset(path)
        try:
            given = band_numbers(dataset, given)
        except SmallsegError as exc:
            raise SmallsegError(f"{path}: {exc}") from None
        finally:
            dataset.close()

    def choose(dataset):
        try:
            chosen.append(plan_for_dataset(dataset, model_bands, replicate_grey=options.replicate_grey,
                                           n_model_bands=config.in_channels))
        except SmallsegError as exc:
            raise SmallsegError(f"{path}: {exc}") from None
        return chosen[-1].indices

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        reader = open_raster(path, bands=given, expected_bands=config.in_channels, nodata=options.nodata,
                             choose_bands=None if given is not None else choose)
    try:
        # Issue #13: a scene whose ground pixel size is outside the model's training range is read resampled
        # to the range's centre (a virtual raster: the normalisation below is fitted on what the
        # model sees); every output comes back to the input's grid (Sink).
        if options.outline is not None and options.outline.subpixel and \
                getattr(model.config, "boundary_head", None) is None:
            # Measured (RESULTS #17): the shipped remote-sensing model's foreground probability crosses 0.5
            # about a pixel outside its decoded objects (polygons 1.46x their areas): not an edge to trust.
            raise SmallsegError("subpixel=True needs a model with a boundary head (boundary_head "
                                "'signed_distance', whose 0 level is where its decoder puts edges); this model has none")
        resample = resample_decision(reader.geometry, model, options.resample, options.resample_to_m)
        if resample["applied"]:
            if options.outline is not None and options.outline.subpixel:
                # Nearest-neighbour back to the input grid would turn the sub-pixel edges into steps again.
                raise SmallsegError(f"{path}: subpixel=True needs the scene predicted at its own pixels "
                                    f"(its pixel size {resample['from_m']:g} m is resampled); pass resample=False")
            reader.resample(resample["factor"])
    except BaseException:
        reader.close()
        raise
    for w in caught:
        if issubclass(w.category, UserWarning) and "no georeferencing" in str(w.message):
            session.note(str(w.message))  # a plain TIFF/PNG/JPEG (microscopy): pixel units are what it means
        elif issubclass(w.category, UserWarning):
            session.warn(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    try:
        if chosen:
            band_plan = chosen[-1]
        else:  # bands given: already checked by the reader; the plan only says what feeds what
            band_plan = plan_for_dataset(reader._ds, model_bands, bands=tuple(reader.bands),
                                         n_model_bands=config.in_channels)
        norm, requested, note = choose_input_normalization(model, options, reader.dtype)
        if norm.out_channels(reader.count) != config.in_channels:
            raise SmallsegError(f"{path}: {norm.describe()} gives {norm.out_channels(reader.count)} channels from "
                                f"{reader.count} band(s), the model takes {config.in_channels}")
        # Images up to DEFAULT_FIT_PIXELS are read whole (the same stats as predict_array's fit, so CLI ==
        # API); bigger scenes are sampled in full-resolution windows spread over the scene (percentiles: 256,
        # otherwise only constant / empty bands are looked for: 64) - a decimated read of a scene without
        # overviews decodes every block once and costs far more.
        sample, valid = reader.sample(windows=256 if norm.needs_fit else 64, whole_up_to=DEFAULT_FIT_PIXELS)
        stats = norm.fit(sample, valid)
        reasons = [f"{stats.reason} (after band selection {','.join(map(str, reader.bands))})"] \
            if not stats.reliable and valid.any() else []
        pixel = pixel_size_verdict(reader, model)
        if pixel:
            reasons.append(pixel)
        reader.input_plan = InputPlan(band_plan, norm, stats, requested, note,
                                      _z_vs_training(norm, stats, sample, valid), "; ".join(reasons),
                                      resample, _modality_plan(config, options.modality))
    except BaseException:
        reader.close()
        raise
    if band_plan.alpha_index is not None or band_plan.replicate_grey or band_plan.indices != tuple(
            range(1, len(band_plan.indices) + 1)):
        session.note(f"{path.name}: bands: {band_plan.note}")
    if note:
        session.note(f"{path.name}: {note}")
    if resample["applied"]:
        why = "as asked" if options.resample_to_m is not None else "outside the model's training range"
        session.note(f"{path.name}: pixel size {resample['from_m']:g} m ({why}): predicted resampled to "
                     f"{resample['to_m']:g} m ({resample['method']}); outputs on the input's grid "
                     f"(resample=False: at the input's pixels)")
    elif not reader.geometry.georeferenced:
        session.note(f"{path.name}: not resampled ({resample['reason']})")
    return reader


def _modality_plan(config, modality: str | None) -> dict | None:
    """The classes objects may take in an image of ``modality`` (None: ``""``, no DICOM modality), as
    :func:`~smallseg.pipeline.classes.modality_classes` says for ``predict_volume``; None when the model has
    no classes per modality."""
    allowed = modality_classes(config, modality or "")
    if allowed is None:
        return None
    return {"modality": modality or "", "class_ids": allowed,
            "classes": [config.class_names[c - 1] for c in allowed]}


def _plan(model: torch.nn.Module, reader: GeoTiffReader, options: GeoTiffOptions):
    """Decoding settings, tiling plan and grid; settings that do not fit this model are refused here."""
    decode_config = decode_config_for(model, options.decode_overrides(), modality=options.modality or None)
    tile = options.tile_size_px or int(model.config.tile_size_px)
    if options.overlap_px is not None and options.overlap_px >= tile:
        raise OptionError("overlap_px", options.overlap_px,
                          f"must be smaller than the tile size {tile} px; use a larger tile_size_px")
    check_batch_pixels(tile, options.batch_size)
    plan = plan_tiling(model, options.tile_size_px, options.overlap_px, decode_config)
    grid = tile_windows(reader.geometry.height, reader.geometry.width, plan.tile_size_px, plan.overlap_px)
    return decode_config, plan, grid


def _make_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SmallsegError(f"{out_dir}: cannot create the output folder ({exc.strerror})") from None


def _predict_scene(path: Path, out_dir: Path, model: _Model, options: GeoTiffOptions,
                   on_row_done: Callable[[int], None] | None, row_source_factory=None,
                   device_type: str | None = None) -> PredictionResult:
    # device_type: where the model runs when that is not here (a split scene's bands on GPU workers, stitched
    # by a CPU client): it is part of the run's key, so it must name the workers' device, not the client's.
    session = Session()
    t_start = time.perf_counter()
    reader = _open_reader(path, model.module, options, session)
    try:
        decode_config, plan, grid = _plan(model.module, reader, options)
        t = time.perf_counter()
        stats = check_band_stats(reader, model.module, session)  # the first pixels read: a damaged file fails here
        session.add_time("band_stats", time.perf_counter() - t)
        check_pixel_size(reader, model.module, session)
        prep = reader.input_plan
        if not prep.reliable:
            if options.strict:
                raise SmallsegError(f"{path}: not reliable for this model, refused (strict): {prep.reason}")
            if not prep.stats.reliable:  # (a pixel size verdict is in check_pixel_size's warning already)
                session.warn(f"{path}: the result is not reliable: {prep.reason}")
        _make_out_dir(out_dir)
        work = WorkDir(stem=path.stem, out_dir=out_dir)
        job = SceneJob(path, work, reader, model.module, model.info, options, decode_config, plan, grid, session,
                       row_source_factory=row_source_factory)
        with scene_lock(work, path.name):
            job.params = run_params(path, reader, model.sha256, plan, decode_config, options,
                                    device_type or next(model.module.parameters()).device.type, input_plan=prep)
            finished = finished_run(work, job.params, options)
            if finished is not None:
                return _finished_result(path, work, finished)
            return _run_scene(job, stats, on_row_done, t_start)
    finally:
        reader.close()


def _finished_result(path: Path, work: WorkDir, run: dict) -> PredictionResult:
    paths = {kind: work.out_dir / name for kind, name in run.get("outputs", {}).items()}
    paths["run"] = work.final("run")
    return PredictionResult(input_path=path, paths=paths,
                            class_names=list(run.get("model", {}).get("class_names", [])), run=run, skipped=True)


def _run_scene(job: SceneJob, stats: dict | None, on_row_done, t_start: float) -> PredictionResult:
    reader, session, work, options = job.reader, job.session, job.work, job.options
    checkpoint = open_work(work, job.params, options, now_iso())
    try:
        table, counts, parts = _predict_and_write(job, checkpoint, on_row_done)
        t = time.perf_counter()
        if "png" in options.formats:
            qgrid = quicklook_grid(job.grid.height, job.grid.width, QUICKLOOK_MAX_SIDE_PX)
            write_png(work.staged("quicklook"), render_quicklook(qgrid, parts, reader.count))
        session.add_time("csv_quicklook", time.perf_counter() - t)
    except SmallsegError:
        # Wrong input or options: resuming would fail the same way. Leave nothing behind.
        shutil.rmtree(work.work, ignore_errors=True)
        raise

    if counts["valid_px"] == 0:
        session.warn(f"{job.path}: no valid pixels (every pixel is nodata"
                     f"{'' if reader.nodata is None else f' = {reader.nodata:g}'}); the outputs are empty")
    if counts["nan_px"]:
        session.warn(f"{job.path}: {counts['nan_px']} pixels are NaN in a band and were treated as nodata (the "
                     f"file's nodata value or mask does not cover them)")

    produced = options.output_kinds
    paths = {}
    for kind in OUTPUT_SUFFIXES:
        if kind == "run":
            continue
        final = work.final(kind)
        if kind in produced:
            os.replace(work.staged(kind), final)
            paths[kind] = final
        else:
            final.unlink(missing_ok=True)  # a stale file of an earlier run must not pass for this run's
    session.add_time("total", time.perf_counter() - t_start)
    run = run_report(job, stats, counts, checkpoint.started, checkpoint.first_row)
    write_json(work.final("run"), run)
    paths["run"] = work.final("run")
    shutil.rmtree(work.work, ignore_errors=True)
    return PredictionResult(input_path=job.path, paths=paths, class_names=class_names(job.model), run=run,
                            table=table)


def _predict_and_write(job: SceneJob, checkpoint: Checkpoint, on_row_done):
    """Replay checkpointed bands (resumed run), stream the remaining tile rows, finish the staged rasters and
    vectors. Returns (object table sorted by id, or None when it went to the CSV; counts; quick-look parts)."""
    sink = Sink(job.work, job.grid, job.reader.input_geometry, class_names(job.model), job.options, job.session,
                source_name=job.path.name, data_date=mtime_iso(job.path), resampled=job.reader.resampled,
                input_valid=job.reader.input_valid_rows if job.reader.resampled is not None else None)
    try:
        for r in range(checkpoint.first_row):  # resumed: replay the finished bands into the outputs
            sink.add_band(load_band(job.work.band(r)))
        if checkpoint.first_row < job.grid.n_rows:
            source = None if job.row_source_factory is None else job.row_source_factory(job, checkpoint.first_row)
            stream_rows(job, checkpoint, sink, on_row_done, row_source=source)
    except BaseException:
        sink.abort()
        raise
    return sink.close()
