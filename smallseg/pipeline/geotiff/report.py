"""What a run reports: warnings and timings collected on the way, the input checks that only warn, and
``STEM.run.json`` (parameters, counts, timings, warnings, versions; written last, it marks the run finished).
"""

from __future__ import annotations

import math
import platform
import sys
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from smallseg.io.geotiff import GeoTiffReader
from smallseg.outline.options import OutlineOptions
from smallseg.pipeline.geotiff.options import OUTPUT_SUFFIXES

# Band statistics further than this many training standard deviations from the training mean get a warning.
_STATS_WARN_Z = 3.0
# Pixel sizes more than this factor outside the model's (augmented) training range get a warning.
_PIXEL_SIZE_WARN_FACTOR = 2.0


@dataclass
class Session:
    """Bookkeeping of one call (what goes into run.json besides the parameters)."""

    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, UserWarning, stacklevel=3)

    def note(self, message: str) -> None:
        """Information, not a problem (which file band feeds which model band...): run.json ``notes``."""
        if message not in self.notes:
            self.notes.append(message)

    def add_time(self, name: str, seconds: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + seconds


def now_iso() -> str:
    """The current UTC time, ``2026-01-31T12:34:56.78Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def mtime_iso(path: Path) -> str:
    """A file's modification time, UTC, to the second."""
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def class_names(model) -> list[str]:
    """Name of class 1, 2, ... of ``model`` (``class1``, ... when it has none)."""
    names = model.config.class_names
    return list(names) if names else [f"class{i}" for i in range(1, model.config.classes + 1)]


# ------------------------------------------------------------------------------------------ input checks


def check_band_stats(reader: GeoTiffReader, model, session: Session) -> dict | None:
    """Compare the input's band statistics with the training ones; warn (never fail) when far apart."""
    stats = reader.band_stats(max_windows=16, window_px=256, require_valid=False)  # ~1 MP: cheap for any scene
    if stats.valid_px == 0:
        return None
    summary = {"mean": stats.mean.round(4).tolist(), "std": stats.std.round(4).tolist(),
               "min": stats.min.tolist(), "max": stats.max.tolist(), "valid_px_sampled": stats.valid_px}
    prep = getattr(reader, "input_plan", None)
    if prep is None or prep.z_vs_training is None:
        return summary
    # In model-input units (after the normalisation this run applies), where training data has mean 0, std 1.
    z = np.asarray(prep.z_vs_training)
    summary["z_vs_training"] = z.tolist()
    far = np.flatnonzero(np.abs(z) > _STATS_WARN_Z)
    if len(far):
        b = int(far[0])
        session.warn(
            f"{reader.path}: band {reader.bands[b]} mean is {abs(z[b]):.1f} training standard deviations from the "
            f"training mean after {prep.norm.describe()}; results may be poor - check bands= and normalize= "
            f"({reader.dtype} here)"
        )
    return summary


def check_pixel_size(reader: GeoTiffReader, model, session: Session) -> None:
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
    verdict = "the result is not reliable" if pixel_size_verdict(reader, model) else "results may be poor"
    session.warn(
        f"{reader.path}: pixel size {size_m:.3g} m is far outside the {lo:.3g}-{hi:.3g} m the model was trained "
        f"at (objects look ~{max(factor, 1 / factor):.0f}x {'smaller' if factor > 1 else 'larger'} than it "
        f"expects); {verdict} - resample the input to about {middle:.2g} m or use a model trained "
        f"at this resolution"
    )


# Pixel sizes more than this factor outside the training range make a result "reliable": false.
_PIXEL_SIZE_UNRELIABLE_FACTOR = 10.0


def pixel_size_verdict(reader: GeoTiffReader, model) -> str:
    """"" or one line when the input's pixel size is more than 10x outside the model's training range (a
    0.5 m car detector on a 300 m scene): such a result is reported as ``"reliable": false``."""
    trained = (model.config.training or {}).get("train_pixel_size_m")
    size_m = reader.geometry.pixel_size_m
    if not trained or size_m is None:
        return ""
    lo, hi = (float(v) for v in trained)
    if not pixel_size_verdict_m(size_m, lo, hi):
        return ""
    return (f"pixel size {size_m:.3g} m is more than {_PIXEL_SIZE_UNRELIABLE_FACTOR:g}x outside the "
            f"{lo:.3g}-{hi:.3g} m the model was trained at")


def resample_decision(geometry, model, enabled: bool, to_m: float | None = None) -> dict:
    """Whether (and to what) to resample a scene of ``geometry`` (the input's
    :class:`~smallseg.io.geotiff.RasterGeometry`) for ``model``: run.json's ``input.resample``.

    Resampled when the ground pixel size is known, the model declares its training range
    (``training["train_pixel_size_m"]``) and the size is outside it but within 10x of it: to the range's
    centre ``sqrt(lo * hi)``, not its nearest edge. The declared range is the extreme of the training scale
    augmentation; the shipped remote-sensing model (0.214-0.857 m) is far weaker at its edges than at its
    centre (benchmarks/RESULTS.md "Resolution": a 0.1 m scene read at 0.214 m F1 0.31, at 0.429 m 0.71). Returns
    ``{"applied": True, "from_m", "to_m", "factor", "method"}`` or ``{"applied": False, "reason"}``.
    ``to_m``: resample to this size instead, whenever the input's differs (by at most 10x either way).
    """
    size_m = geometry.pixel_size_m
    trained = (model.config.training or {}).get("train_pixel_size_m")
    if not enabled:
        return {"applied": False, "reason": "resample=False: predicted at the input's pixels"}
    if size_m is None:
        why = "no georeferencing" if not geometry.georeferenced else "no ground pixel size (no usable CRS)"
        return {"applied": False, "reason": f"{why}: pixel units, never resampled"}
    if to_m is not None:
        factor = to_m / size_m
        if abs(factor - 1) < 1e-6:
            return {"applied": False, "reason": f"pixel size {size_m:.4g} m is the requested {to_m:g} m"}
        if max(factor, 1 / factor) > _PIXEL_SIZE_UNRELIABLE_FACTOR:
            return {"applied": False, "reason": f"pixel size {size_m:.4g} m is more than "
                                                f"{_PIXEL_SIZE_UNRELIABLE_FACTOR:g}x from the requested {to_m:g} m: "
                                                f"not resampled"}
        return _applied(size_m, to_m)
    if not trained:
        return {"applied": False, "reason": "the model declares no training pixel size"}
    lo, hi = (float(v) for v in trained)
    if lo <= size_m <= hi:
        return {"applied": False, "reason": f"pixel size {size_m:.4g} m is inside the model's {lo:.4g}-{hi:.4g} m"}
    if pixel_size_verdict_m(size_m, lo, hi):
        return {"applied": False, "reason": f"pixel size {size_m:.4g} m is more than "
                                            f"{_PIXEL_SIZE_UNRELIABLE_FACTOR:g}x outside the model's "
                                            f"{lo:.4g}-{hi:.4g} m: not resampled (not reliable)"}
    return _applied(size_m, math.sqrt(lo * hi))


def _applied(size_m: float, to_m: float) -> dict:
    factor = to_m / size_m
    return {"applied": True, "from_m": round(size_m, 6), "to_m": round(to_m, 6), "factor": round(factor, 9),
            "method": "average" if factor > 1 else "bilinear"}


def pixel_size_verdict_m(size_m: float, lo: float, hi: float) -> bool:
    """True when ``size_m`` is more than 10x outside ``lo``-``hi`` m."""
    return not lo / _PIXEL_SIZE_UNRELIABLE_FACTOR <= size_m <= hi * _PIXEL_SIZE_UNRELIABLE_FACTOR


# ------------------------------------------------------------------------------------------------ report


def versions() -> dict[str, str]:
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


def _resample_report(reader: GeoTiffReader, params: dict) -> dict | None:
    """run.json's ``input.resample``: the decision, and the grid the model saw when resampled."""
    decision = params.get("resample")
    if decision is None:
        return None
    if reader.resampled is None:
        return dict(decision)
    return {**decision, "grid": reader.resampled.to_dict(),
            "note": "predicted on the resampled grid; rasters, polygons and the object table are on the "
                    "input's grid (nearest), areas in m2 are true ground areas"}


def run_report(job, stats: dict | None, counts: dict, started: str, first_row: int) -> dict:
    """The content of ``STEM.run.json`` for ``job`` (a :class:`~smallseg.pipeline.geotiff.run.SceneJob`)."""
    path, outputs, reader, model, plan, grid = job.path, job.work, job.reader, job.model, job.plan, job.grid
    params, session, options = job.params, job.session, job.options
    config = model.config
    geometry = reader.input_geometry  # the file's grid: every output is on it, resampled or not
    names = class_names(model)
    per_class = counts["per_class"][1 : config.classes + 1]
    prep = getattr(reader, "input_plan", None)
    return {
        "smallseg_run": 1,
        "finished": now_iso(),
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
            "band_plan": prep.bands.to_dict() if prep is not None else None,
            "normalization": prep.to_dict() if prep is not None else None,
            "resample": _resample_report(reader, params),
            "modality": params.get("modality"),
        },
        "reliable": prep.reliable if prep is not None else True,
        "reliable_reason": prep.reason if prep is not None else "",
        "model": {
            **job.model_info,
            "sha256": params["model_sha256"],
            "class_names": names,
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
            "outline": (options.outline or OutlineOptions()).for_classes(names).to_report(),  # issue #17
            "decode": asdict(job.decode_config),
            "formats": list(options.formats),
            "cog": options.cog,
            "compress": options.compress,
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
            "objects_per_class": dict(zip(names, per_class.tolist())),
            "objects_touching_tile_edge": counts["touching_tile_edge"],
            "valid_px": counts["valid_px"],
            "scene_px": geometry.width * geometry.height,
        },
        "session": {"resumed_from_tile_row": first_row if first_row else None},
        "timings_s": {k: round(v, 3) for k, v in session.timings.items()},
        "outputs": {kind: p.name for kind, p in
                    ((k, outputs.final(k)) for k in OUTPUT_SUFFIXES if k != "run") if p.exists()},
        "warnings": session.warnings,
        "notes": session.notes,
        "versions": versions(),
        "resume_key": params,
    }
