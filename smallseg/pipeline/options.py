"""How a model is run on an image or a volume: frozen options objects that validate themselves at construction.

:class:`PredictOptions` holds the inference settings of :func:`~smallseg.pipeline.array.predict_array`
(tiling, batch, device, decoding, normalisation, test-time augmentation); :class:`VolumeOptions` adds what
:func:`~smallseg.pipeline.volume.predict_volume` needs to link slices into 3-D objects. A bad value is refused
when the object is built - before a model runs - with an :class:`OptionError`, a one-line
:class:`~smallseg.errors.SmallsegError` that names the option by its Python name (``batch_size 0: must be a
whole number from 1 to 4096``); a command line translates the name to its flag.

The pipelines take the object or its fields as keywords, so both calls are the same::

    predict_array(image, model, PredictOptions(tile_size_px=256, tta="flips"))
    predict_array(image, model, tile_size_px=256, tta="flips")

The checks of single values (:func:`check_flag`, :func:`check_tiling`, :func:`check_device`, ...) are
module functions, the one implementation every options object of :mod:`smallseg.pipeline` uses.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from smallseg.decode.centroids import DecodeConfig
from smallseg.errors import SmallsegError
from smallseg.io.medical import PRESETS, IntensityPreset
from smallseg.models.tta import TTA_CHOICES
from smallseg.normalize import CHOICES as NORMALIZE_CHOICES
from smallseg.normalize import Normalization

MIN_TILE_PX = 16
# Pixels of one forward pass (tile_size_px² x batch_size) at most. Measured with the shipped model on a CPU:
# 430-650 B of peak memory per input pixel (activations of every layer at full resolution), so this bound
# is about 29-44 GB; a larger batch is a typo (``--tile 1000000000``), refused before anything is allocated.
MAX_BATCH_PX = 2**26
_BYTES_PER_PX = 430
MAX_BATCH_SIZE = 4096
MAX_DECODE_WORKERS = 256
RAW_PRESET = "raw"  # predict_volume's preset name for "no intensity mapping" (pipeline.volume.RAW)


class OptionError(SmallsegError):
    """A bad option value: ``"{option} {value}: {reason}"`` with the option's Python name.

    Attributes:
        option: the Python name (``"overlap_px"``); front ends map it to their spelling (``--overlap``).
        value: the value as text.
        reason: what is wrong and what to do.
    """

    def __init__(self, option: str, value, reason: str):
        self.option = option
        self.value = value if isinstance(value, str) else _text(value)
        self.reason = reason
        super().__init__(f"{option} {self.value}: {reason}")

    def renamed(self, name: str) -> SmallsegError:
        """The same message with the option spelled ``name`` (e.g. a CLI flag)."""
        return SmallsegError(f"{name} {self.value}: {self.reason}")


def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


# --------------------------------------------------------------------------------------------------------------
# Checks of single values (each returns the value in its one stored form)
# --------------------------------------------------------------------------------------------------------------


def check_batch_pixels(tile_size_px: int, batch_size: int) -> None:
    """Refuse a forward pass of more than :data:`MAX_BATCH_PX` pixels (one line, nothing allocated)."""
    pixels = int(tile_size_px) ** 2 * int(batch_size)
    if pixels > MAX_BATCH_PX:
        need_gb = pixels * _BYTES_PER_PX / 1e9
        raise OptionError(
            "tile_size_px", tile_size_px,
            f"{batch_size} tile(s) of that size are {pixels:.3g} px per forward pass, about {need_gb:.3g} GB of "
            f"model memory; at most {MAX_BATCH_PX:,} px (tile side² x tiles per pass) - use tiles of a few hundred "
            f"to a few thousand px")


def check_flag(name: str, value) -> bool:
    """True or False (numpy's too); anything else is refused: ``amp="no"`` is not false."""
    if not isinstance(value, (bool, np.bool_)):
        raise OptionError(name, value, "must be True or False")
    return bool(value)


def check_count(name: str, value, low: int, high: int | None = None, unit: str = "") -> int:
    """A whole number in ``[low, high]`` (no upper bound when ``high`` is None)."""
    if not _is_int(value) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise OptionError(name, value, f"must be a whole number {span}{unit}")
    return int(value)


def check_fraction(name: str, value, *, open_low: bool = False) -> float:
    """A number in [0, 1] (``open_low``: in (0, 1])."""
    if not _is_real(value) or not (0 < value <= 1 if open_low else 0 <= value <= 1):
        raise OptionError(name, value, "must be in (0, 1]" if open_low else "must be between 0 and 1")
    return float(value)


def check_tiling(tile_size_px, overlap_px, batch_size) -> tuple[int | None, int | None, int]:
    """Tile side (None: the model's), overlap (None: from the model's largest object) and tiles per pass."""
    if tile_size_px is not None:
        tile_size_px = check_count("tile_size_px", tile_size_px, MIN_TILE_PX, unit=" px")
    if overlap_px is not None:
        if not _is_int(overlap_px) or overlap_px < 0:
            raise OptionError("overlap_px", overlap_px,
                              "must be >= 0 (a whole number of px; 0 = tiles that only touch)")
        overlap_px = int(overlap_px)
        if tile_size_px is not None and overlap_px >= tile_size_px:
            raise OptionError("overlap_px", overlap_px,
                              f"must be smaller than tile_size_px {tile_size_px}; use a larger tile")
    batch_size = check_count("batch_size", batch_size, 1, MAX_BATCH_SIZE)
    if tile_size_px is not None:
        check_batch_pixels(tile_size_px, batch_size)
    return tile_size_px, overlap_px, batch_size


def check_device(device) -> str | None:
    """None (where the model's weights are), ``"auto"``, or a torch device name; stored as text."""
    if device is None or device == "auto":
        return device
    if isinstance(device, torch.device):
        return str(device)
    if isinstance(device, str):
        try:
            torch.device(device)
            return device
        except (RuntimeError, TypeError):
            pass
    raise OptionError("device", device, "use auto, cpu, cuda or cuda:N")


def check_tta(tta) -> str | None:
    """None (off), or a name of :data:`~smallseg.models.tta.TTA_CHOICES`; True means ``"d4"``."""
    if tta is True:
        return "d4"
    if tta is None or tta is False or tta == "none":
        return None
    if tta not in TTA_CHOICES:
        raise OptionError("tta", tta, f"use None, True or one of {', '.join(TTA_CHOICES)}")
    return tta


def check_decode(decode) -> DecodeConfig | tuple | None:
    """A :class:`DecodeConfig` (kept as is), or some of its fields as sorted ``(name, value)`` pairs."""
    if decode is None or isinstance(decode, DecodeConfig):
        return decode
    if not isinstance(decode, (Mapping, tuple, list)):
        raise OptionError("decode", type(decode).__name__, "use a DecodeConfig or a dict of its fields")
    items = dict(decode)
    known = set(DecodeConfig.__dataclass_fields__)
    unknown = sorted(set(items) - known)
    if unknown:
        raise OptionError("decode", ",".join(map(str, unknown)),
                          f"unknown decode setting(s); known: {', '.join(sorted(known))}")
    for key, value in items.items():
        if not _is_real(value) or not math.isfinite(value):
            raise OptionError(f"decode[{key!r}]", value, "must be a finite number")
    return tuple(sorted(items.items()))


def check_normalize(normalize, percentiles) -> tuple[float, float] | None:
    """``normalize`` one of :data:`smallseg.normalize.CHOICES` or a Normalization; returns ``percentiles`` as
    (lo, hi) floats, 0 <= lo < hi <= 100, allowed only with percentile normalisation."""
    if not isinstance(normalize, Normalization) and normalize not in NORMALIZE_CHOICES:
        raise OptionError("normalize", normalize, f"use one of {', '.join(NORMALIZE_CHOICES)}")
    if percentiles is None:
        return None
    p = percentiles
    if isinstance(p, str) or not isinstance(p, Sequence) or len(p) != 2 or not all(map(_is_real, p)) \
            or not 0 <= p[0] < p[1] <= 100:
        raise OptionError("percentiles", p, "give two numbers LO,HI with 0 <= LO < HI <= 100, e.g. 1,99.8")
    if normalize not in ("percentile", "model"):
        raise OptionError("percentiles", p, f"apply to percentile normalisation, not normalize="
                                            f"{normalize if isinstance(normalize, str) else 'given'}")
    return float(p[0]), float(p[1])


def check_modality(modality) -> str | None:
    """A DICOM modality code (``"CT"``, ``"MR"``, ``"SM"``...; ``""``: an image without one), upper case."""
    if modality is None:
        return None
    if not isinstance(modality, str) or len(modality) > 16 or not all(ch.isalnum() for ch in modality.strip()):
        raise OptionError("modality", modality, 'use a DICOM modality code (CT, MR, SM, ...) or "" for an image '
                                                "without one (microscopy)")
    return modality.strip().upper()


def check_preset(preset, normalize="model", percentiles=None) -> None:
    """``preset`` None, a name of :data:`~smallseg.io.medical.PRESETS`, ``"raw"`` or an
    :class:`~smallseg.io.medical.IntensityPreset`; not together with a ``normalize`` / ``percentiles`` choice."""
    if preset is None:
        return
    known = (*PRESETS, RAW_PRESET)
    if not isinstance(preset, IntensityPreset) and (not isinstance(preset, str) or preset not in known):
        raise OptionError("preset", repr(preset), f"unknown; choose one of {', '.join(known)} or an IntensityPreset")
    if normalize != "model" or percentiles is not None:
        raise OptionError("preset", repr(preset if isinstance(preset, str) else preset.name),
                          "give a preset or normalize / percentiles, not both")


def decode_overrides(decode, min_score: float | None, min_area_px: int | None) -> DecodeConfig | dict:
    """Checked ``decode`` (:func:`check_decode`) as what :func:`~smallseg.pipeline.array.decode_config_for`
    takes, with ``min_score`` / ``min_area_px`` on top (a DecodeConfig then becomes a dict of all its fields)."""
    if min_score is None and min_area_px is None and isinstance(decode, DecodeConfig):
        return decode
    overrides = dataclasses.asdict(decode) if isinstance(decode, DecodeConfig) else dict(decode or ())
    if min_score is not None:
        overrides["min_score"] = min_score
    if min_area_px is not None:
        overrides["min_area_px"] = min_area_px
    return overrides


# --------------------------------------------------------------------------------------------------------------
# The options objects
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictOptions:
    """Settings of :func:`~smallseg.pipeline.array.predict_array` (validated when built; see the module docstring).

    Attributes:
        tile_size_px: tile side in px, 16 or more (default None: the model's training tile).
        overlap_px: tile overlap in px, >= 0 and < the tile (default None: twice the model's
            ``max_distance_px`` plus the decoder's centroid error, which makes every object lie wholly in the
            tile that owns it; see :func:`~smallseg.pipeline.array.plan_tiling`).
        batch_size: tiles per forward pass (on a CPU at most 4 x 256² px per pass: larger passes are slower
            per pixel there; see ``pipeline.array.CPU_PASS_PX``).
        device: where to run the model: None (where its weights are), ``"auto"`` (CUDA if available),
            ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        amp: float16 autocast on CUDA.
        decode_workers: threads decoding the model's outputs while it runs. The decoder's loops release the
            GIL, so threads decode tiles in parallel: on a GPU, whose forward pass outpaces one CPU decoder,
            use about as many as there are free CPU cores. The result does not depend on it.
        decode: decoding settings: a :class:`~smallseg.decode.centroids.DecodeConfig` (used as is) or a mapping
            of some of its fields, on top of those stored with the model (stored as sorted ``(name, value)``
            pairs).
        min_score: drop objects scoring lower, in [0, 1] (default: the model's decode setting).
        min_area_px: drop objects with fewer pixels in their tile, >= 1 (default: the model's decode setting).
        progress: show a progress bar.
        normalize: ``"model"`` (default: what the checkpoint declares, e.g. per-image percentiles for the
            medical model's microscopy; old checkpoints: their ``input_scale``/``norm_mean``/``norm_std``),
            ``"percentile"``, ``"fixed"``, ``"none"`` or a :class:`~smallseg.normalize.Normalization` (see
            :func:`~smallseg.normalize.choose_normalization`). It is fitted once on the whole image (valid
            pixels only) and the same mapping is applied to every tile.
        percentiles: (lo, hi), 0 <= lo < hi <= 100, for percentile normalisation.
        modality: the image's DICOM modality (``"CT"``...) for a model that declares normalisation and
            decoding settings per modality; None for ordinary images.
        tta: test-time augmentation (:func:`smallseg.models.tta.with_tta`): None (the model as given),
            ``"d4"`` (8 flips/rotations) or ``"flips"`` (4); True means ``"d4"``. Maps are averaged per tile
            before decoding; tiling and stitching are unchanged.
        by_modality: keep only the classes the model has for ``modality`` (None: an image without one, e.g.
            microscopy for the medical model; :func:`~smallseg.pipeline.classes.modality_classes`): objects of
            another modality's class take the modality's class (one) or are dropped (several), per tile before
            stitching, as tile-and-predict does. Models without per-modality classes are not affected. False
            keeps every class.
    """

    tile_size_px: int | None = None
    overlap_px: int | None = None
    batch_size: int = 4
    device: str | None = None
    amp: bool = False
    decode_workers: int = 1
    decode: DecodeConfig | tuple | None = None
    min_score: float | None = None
    min_area_px: int | None = None
    progress: bool = False
    normalize: str | Normalization = "model"
    percentiles: tuple[float, float] | None = None
    modality: str | None = None
    tta: str | None = None
    by_modality: bool = True

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen: normalise once
        for name, value in zip(("tile_size_px", "overlap_px", "batch_size"),
                               check_tiling(self.tile_size_px, self.overlap_px, self.batch_size)):
            set_(name, value)
        set_("device", check_device(self.device))
        set_("amp", check_flag("amp", self.amp))
        set_("progress", check_flag("progress", self.progress))
        set_("decode_workers", check_count("decode_workers", self.decode_workers, 1, MAX_DECODE_WORKERS))
        set_("decode", check_decode(self.decode))
        if self.min_score is not None:
            set_("min_score", check_fraction("min_score", self.min_score))
        if self.min_area_px is not None:
            set_("min_area_px", check_count("min_area_px", self.min_area_px, 1, unit=" px"))
        set_("percentiles", check_normalize(self.normalize, self.percentiles))
        set_("modality", check_modality(self.modality))
        set_("tta", check_tta(self.tta))
        set_("by_modality", check_flag("by_modality", self.by_modality))

    @classmethod
    def build(cls, options=None, caller: str = "", **overrides):
        """``options`` (default: all defaults) with ``overrides`` applied, validated again; an unknown name is
        one line listing the known ones (``caller`` names the function in it)."""
        if options is None:
            options = cls()
        elif not isinstance(options, cls):
            raise SmallsegError(f"{caller or cls.__name__}: options must be a {cls.__name__}, got "
                                f"{type(options).__name__}")
        known = {f.name for f in dataclasses.fields(options)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            if "return_table" in unknown:
                raise SmallsegError(f"{caller}: return_table was removed; the object table is result.objects")
            raise SmallsegError(f"{caller or cls.__name__}: unknown option(s) {', '.join(unknown)}; options of "
                                f"{type(options).__name__}: {', '.join(sorted(known))}")
        return dataclasses.replace(options, **overrides) if overrides else options

    def replace(self, **changes):
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def decode_overrides(self) -> DecodeConfig | dict:
        """``decode`` with ``min_score`` / ``min_area_px`` on top, for
        :func:`~smallseg.pipeline.array.decode_config_for`."""
        return decode_overrides(self.decode, self.min_score, self.min_area_px)


@dataclass(frozen=True)
class VolumeOptions(PredictOptions):
    """Settings of :func:`~smallseg.pipeline.volume.predict_volume`: those of :class:`PredictOptions` for each
    slice, and how slices become 3-D objects.

    Attributes:
        preset: intensity mapping: an :class:`~smallseg.io.medical.IntensityPreset`, a preset name (``lung``,
            ``soft_tissue``, ..., ``percentile``), ``"raw"``, or None for what the checkpoint declares (see
            :mod:`smallseg.pipeline.volume`); not together with ``normalize`` / ``percentiles``.
        min_slices: drop 3-D objects seen in fewer slices (>= 1); None: what the checkpoint says
            (``training["volume_min_slices"]``, chosen with the model on validation volumes), else 1.
        link_min_overlap: slice-to-slice linking threshold, a fraction of the smaller cross-section, in (0, 1].
        by_modality: as for :class:`PredictOptions`, for the volume's modality, applied per slice.

    Inherited fields mean the same per slice, except: ``tile_size_px`` None is the model's training tile, or
    one tile of the slice's size when the slice is smaller; ``modality`` None is the volume's own (give one for
    a file that does not say, e.g. a NIfTI CT); ``progress`` is a bar over slices; normalisation is fitted once
    on the whole volume.
    """

    preset: IntensityPreset | str | None = None
    min_slices: int | None = None
    link_min_overlap: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen: normalise once
        check_preset(self.preset, self.normalize, self.percentiles)
        if self.min_slices is not None:
            set_("min_slices", check_count("min_slices", self.min_slices, 1))
        set_("link_min_overlap", check_fraction("link_min_overlap", self.link_min_overlap, open_low=True))
