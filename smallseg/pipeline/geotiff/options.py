"""What a GeoTIFF prediction may be told: one frozen options object that validates itself at construction.

:class:`GeoTiffOptions` holds every setting of :func:`~smallseg.pipeline.geotiff.predict_geotiff` except the
input, the output folder and the model. A bad value is refused when the object is built - before a model is
loaded or a raster opened - with an :class:`OptionError`: a one-line
:class:`~smallseg.errors.SmallsegError` that names the option by its Python name (``overlap_px -5: must be
>= 0 ...``); the command line translates the name to its flag (``--overlap``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass


from smallseg.decode.centroids import DecodeConfig
from smallseg.outline.options import OutlineOptions
from smallseg.normalize import Normalization
# The value checks and OptionError are shared with predict_array / predict_volume's options (one owner).
from smallseg.pipeline.options import (MAX_BATCH_SIZE, MAX_DECODE_WORKERS, MIN_TILE_PX, OptionError,  # noqa: F401
                                       _is_int, _is_real, check_batch_pixels, check_count, check_decode,
                                       check_device, check_flag, check_fraction, check_modality, check_normalize,
                                       check_tiling, check_tta)

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
# Format (what a user asks for) -> the output kinds it produces.
FORMAT_KINDS = {"tif": ("instances", "classes"), "gpkg": ("gpkg",), "geojson": ("geojson",), "csv": ("csv",),
                "png": ("quicklook",), "json": ()}
COMPRESSIONS = ("deflate", "zstd", "lzw", "none")

@dataclass(frozen=True)
class GeoTiffOptions:
    """Settings of a GeoTIFF prediction (validated when built; see the module docstring).

    Attributes:
        tile_size_px: tile side in px (default None: the model's training tile); 16 or more.
        overlap_px: tile overlap in px, >= 0 and < the tile (default None: from the model's largest object,
            see :func:`~smallseg.pipeline.array.plan_tiling`).
        batch_size: tiles per forward pass (on a CPU at most 4 x 256² px per pass: larger passes are slower
            per pixel there; see ``pipeline.array.CPU_PASS_PX``).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``; a model passed in loaded
            stays on its device unless this names one (other than ``"auto"``).
        amp: float16 autocast on CUDA.
        decode_workers: threads decoding the model's outputs (1: the thread that also stitches and writes).
            The decoder's loops release the GIL; on a GPU, whose forward pass outpaces one CPU decoder, use
            about as many as there are free CPU cores. Outputs do not depend on it.
        bands: file bands in the model's order: 1-based numbers and/or colour names (``("red", "green",
            "blue")``: the band whose colour interpretation says so). Default: the model's ``band_indices``,
            else by meaning (:mod:`smallseg.bands`: colour interpretation, alpha as the valid mask, one grey
            band replicated to a colour model with a note).
        nodata: override the input's nodata value (pixels equal to it in every band are nodata); NaN allowed.
        min_score: drop objects scoring lower, in [0, 1] (default: the model's decode setting).
        min_area_px: drop objects with fewer pixels in their tile, >= 1 (default: the model's decode setting).
        decode: further decoding overrides: a :class:`~smallseg.decode.centroids.DecodeConfig` (used as is)
            or a mapping of some of its fields (stored as sorted ``(name, value)`` pairs).
        formats: subset of :data:`FORMATS` (a sequence or a comma string); ``STEM.run.json`` is always written
            (it marks the run finished).
        cog: write the rasters as Cloud Optimized GeoTIFFs (with overviews).
        compress: raster compression: ``"deflate"``, ``"zstd"``, ``"lzw"`` or ``"none"``.
        resume: continue an interrupted run in the output folder; a finished one is returned as it is when
            it was made from the same input, model and settings, else refused (see ``overwrite``).
        overwrite: replace a finished or interrupted run (with ``resume``: continue an interrupted run when it
            matches, else start over).
        progress: show a progress bar (tiles, objects, megapixels/s, ETA).
        duplicate_ios: stitching: share of the smaller object two objects must share to be duplicates, (0, 1].
        normalize: how raw pixels become model input: ``"model"`` (what the checkpoint declares; a model
            trained on 8-bit data given other data types gets per-band percentiles, with a note),
            ``"percentile"`` (per-band ``percentiles`` of the scene, fitted once on a decimated read of the
            valid pixels), ``"fixed"`` (the checkpoint's ``input_scale`` / ``norm_mean`` / ``norm_std``),
            ``"none"`` (raw values), or a :class:`~smallseg.normalize.Normalization`.
        percentiles: (lo, hi), 0 <= lo < hi <= 100, for ``normalize="percentile"`` (default 1, 99.8).
        strict: an input the model cannot be trusted on (a constant or empty band, a pixel size more than 10x
            outside the training range) is an error instead of a result marked ``"reliable": false``.
        replicate_grey: feed a 1-band image to every band of a colour model (with a note); False refuses.
        outline: :class:`~smallseg.outline.OutlineOptions` for the GeoPackage / GeoJSON polygons (topology-keeping
            simplification, building regularisation; issue #17), or None: exact pixel outlines. Written into
            run.json.
        tta: test-time augmentation (:mod:`smallseg.models.tta`): None (off), ``"d4"`` (8 flips/rotations) or
            ``"flips"`` (4); True means ``"d4"``. Maps averaged per tile before decoding; tiling unchanged.
        resample: when the input's ground pixel size is known and outside the model's declared training range
            (up to 10x outside), predict on the scene resampled to the range's centre (a virtual
            raster, :mod:`smallseg.io.resample`) and bring every output back to the input's grid; False
            predicts at the input's own pixels (issue #13). Images without georeferencing are never resampled.
        resample_to_m: predict at this ground pixel size (m) instead of the training range's centre, whenever
            the input's differs (at most 10x finer or coarser): e.g. the size a model does
            best at (the shipped remote-sensing model: 0.4 m, see benchmarks/RESULTS.md "Resolution").
        modality: what the image shows, for a model that knows classes per modality (the medical model:
            ``""`` / ``"SM"`` microscopy -> nucleus, ``"CT"`` -> nodule): objects of the other modalities'
            classes take the modality's class (one) or are dropped (several). None: ``""``, an image
            without a DICOM modality (microscopy for the medical model); models without per-modality
            classes are not affected.
    """

    tile_size_px: int | None = None
    overlap_px: int | None = None
    batch_size: int = 4
    device: str | None = "auto"
    amp: bool = False
    decode_workers: int = 1
    bands: tuple[int, ...] | None = None
    nodata: float | None = None
    min_score: float | None = None
    min_area_px: int | None = None
    decode: DecodeConfig | tuple | None = None
    formats: tuple[str, ...] = FORMATS
    cog: bool = False
    compress: str = "deflate"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    duplicate_ios: float = 0.5
    normalize: str | Normalization = "model"
    percentiles: tuple[float, float] | None = None
    strict: bool = False
    replicate_grey: bool = True
    outline: OutlineOptions | None = None
    tta: str | None = None
    resample: bool = True
    resample_to_m: float | None = None
    modality: str | None = None

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen: normalise once
        # The checks shared with PredictOptions (smallseg.pipeline.options): one wording for every entry point.
        for name in ("amp", "cog", "resume", "overwrite", "progress", "strict", "replicate_grey", "resample"):
            set_(name, check_flag(name, getattr(self, name)))
        if self.resample_to_m is not None:
            if not _is_real(self.resample_to_m) or not 0.001 <= self.resample_to_m <= 100_000:
                raise OptionError("resample_to_m", self.resample_to_m, "must be a pixel size in metres, 0.001-100000")
            if not self.resample:
                raise OptionError("resample_to_m", self.resample_to_m, "cannot be combined with resample=False")
            set_("resample_to_m", float(self.resample_to_m))
        set_("modality", check_modality(self.modality))
        set_("tta", check_tta(self.tta))
        tile, overlap, batch = check_tiling(self.tile_size_px, self.overlap_px, self.batch_size)
        set_("tile_size_px", tile), set_("overlap_px", overlap), set_("batch_size", batch)
        set_("device", check_device(self.device))
        set_("decode_workers", check_count("decode_workers", self.decode_workers, 1, MAX_DECODE_WORKERS))
        if self.bands is not None:
            bands = [self.bands] if _is_int(self.bands) else self.bands
            if isinstance(bands, str):
                bands = [b.strip() for b in bands.split(",") if b.strip()]
                bands = [int(b) if b.isdigit() else b for b in bands]
            names = ("red", "green", "blue", "grey", "gray", "nir", "pan", "alpha", "rededge", "swir", "coastal")
            if not isinstance(bands, Sequence) or not bands or \
                    not all((_is_int(b) and b >= 1) or (isinstance(b, str) and b.lower() in names) for b in bands):
                raise OptionError("bands", self.bands, "use 1-based band numbers, e.g. (1, 2, 3), or colour names "
                                                       "(red, green, blue, grey, nir, alpha)")
            set_("bands", tuple(b.lower() if isinstance(b, str) else int(b) for b in bands))
        if self.nodata is not None:
            if not _is_real(self.nodata) or math.isinf(self.nodata):
                raise OptionError("nodata", self.nodata, "must be a finite number or NaN")
            set_("nodata", float(self.nodata))
        if self.min_score is not None:
            set_("min_score", check_fraction("min_score", self.min_score))
        if self.min_area_px is not None:
            set_("min_area_px", check_count("min_area_px", self.min_area_px, 1, unit=" px"))
        set_("decode", check_decode(self.decode))
        set_("formats", self._checked_formats())
        if not isinstance(self.compress, str) or self.compress.lower() not in COMPRESSIONS:
            raise OptionError("compress", self.compress, f"use one of {', '.join(COMPRESSIONS)}")
        set_("compress", self.compress.lower())
        set_("duplicate_ios", check_fraction("duplicate_ios", self.duplicate_ios, open_low=True))
        if self.outline is not None and not isinstance(self.outline, OutlineOptions):
            raise OptionError("outline", type(self.outline).__name__, "use a smallseg.outline.OutlineOptions")
        if self.outline is not None and not self.outline.active:
            set_("outline", None)  # all off: the exact pixel outlines, as without
        set_("percentiles", check_normalize(self.normalize, self.percentiles))

    def _checked_formats(self) -> tuple[str, ...]:
        formats = self.formats
        given = formats
        if isinstance(formats, str):
            formats = [f for f in formats.split(",") if f.strip()]
        if not isinstance(formats, Sequence) or not all(isinstance(f, str) for f in formats):
            raise OptionError("formats", given, f"use a comma list of {','.join(FORMATS)}")
        chosen = tuple(dict.fromkeys(f.strip().lower() for f in formats))
        if not chosen or any(f not in FORMATS for f in chosen):
            raise OptionError("formats", given, f"use a comma list of {','.join(FORMATS)}")
        return chosen

    # -- derived ----------------------------------------------------------------------------------------

    @property
    def output_kinds(self) -> frozenset[str]:
        """The output kinds (keys of :data:`OUTPUT_SUFFIXES`, ``run`` aside) these formats produce."""
        return frozenset(kind for f in self.formats for kind in FORMAT_KINDS[f])

    def decode_overrides(self) -> dict:
        """``decode`` as a dict of DecodeConfig fields (all of them for a DecodeConfig), with ``min_score`` /
        ``min_area_px`` applied on top."""
        if isinstance(self.decode, DecodeConfig):
            overrides = dataclasses.asdict(self.decode)
        else:
            overrides = dict(self.decode or ())
        if self.min_score is not None:
            overrides["min_score"] = self.min_score
        if self.min_area_px is not None:
            overrides["min_area_px"] = self.min_area_px
        return overrides

    def replace(self, **changes) -> GeoTiffOptions:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(GeoTiffOptions))
