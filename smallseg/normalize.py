"""How raw pixels become model input: one mechanism for every entry point (API, CLI, training, tuning).

A model's checkpoint declares a :class:`Normalization`; every pipeline calls the same two steps on it::

    stats = norm.fit(sample, valid)        # once per scene / image / volume (a decimated read is enough)
    x = norm.apply(tile_chw, stats)        # every tile: (C, H, W) any real dtype -> (C', H, W) float32

``fit`` measures what the kind needs from the data (robust percentiles for ``percentile``; for every kind
it also flags constant or empty bands, which no normalisation can make meaningful) and returns a small,
JSON-able :class:`NormStats` that the pipelines record in ``run.json``. ``apply`` is elementwise given the
stats, so a scene normalised tile by tile equals the scene normalised whole, and neighbouring tiles share
one mapping.

Kinds (``apply`` = *map to about [0, 1]*, then the optional per-channel ``(x - mean) / std``):

- ``fixed``: ``x * scale`` (today's ``input_scale``; e.g. 1/255 for 8-bit imagery).
- ``percentile``: per band, the ``lo``/``hi`` percentiles (0-100) of the valid pixels map to 0 and 1,
  optionally clipped (11/12/16-bit satellite data, microscopy whose units are arbitrary per acquisition).
- ``window``: CT windows given as (centre, width) in HU, each mapping ``[centre - width/2, centre + width/2]``
  to [0, 1], clipped. Several windows of a 1-band image become several channels (e.g. lung + mediastinum).
- ``none``: raw values as float32, nothing else.

The split into :meth:`Normalization.map_unit` and :meth:`Normalization.standardise` exists for training:
photometric augmentation works in the [0, 1] units between the two, so that it means the same for uint8,
uint16 and CT input; with no augmentation ``standardise(map_unit(x))`` *is* ``apply(x)``.

Where a model keeps it: ``config.training["normalization"]`` (the default) and
``config.training["normalization_by_modality"]`` (``{"CT": {...}}``, upper-case DICOM modality codes);
:func:`normalization_for` reads them, and falls back to the checkpoint's legacy fields (``input_scale``,
``norm_mean``, ``norm_std``) for checkpoints that predate this module, reproducing today's input exactly.
Both dicts are data: :meth:`Normalization.from_dict` accepts only known keys, known kinds, finite numbers
and bounded sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from rasterio.enums import Resampling

from smallseg.errors import SmallsegError

__all__ = [
    "KINDS",
    "Normalization",
    "NormStats",
    "CT_WINDOWS",
    "MICROSCOPY",
    "CHOICES",
    "choose_normalization",
    "normalization_for",
    "normalizations_of",
    "sample_raster",
]

KINDS = ("fixed", "percentile", "window", "none")
MAX_BANDS = 64  # bounds on what a checkpoint (data) may declare
MAX_WINDOWS = 8
MAX_NAME = 64
# fit() subsamples larger inputs with a regular stride: percentiles of 4 M pixels are stable to far below
# one grey level, and a strided view costs no copy of the scene.
DEFAULT_FIT_PIXELS = 4_194_304

_FIELDS_BY_KIND = {
    "fixed": ("kind", "scale", "mean", "std", "name"),
    "percentile": ("kind", "lo", "hi", "clip", "mean", "std", "name"),
    "window": ("kind", "windows", "clip", "mean", "std", "name"),
    "none": ("kind", "name"),
}


def _bad(what: str) -> SmallsegError:
    return SmallsegError(f"normalization: {what}")


def _finite(name: str, value: Any) -> float:
    """A finite float from a JSON number (bools and strings are refused: checkpoints are data)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _bad(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise _bad(f"{name} must be finite, got {value}")
    return value


def _float_tuple(name: str, values: Any, limit: int) -> tuple[float, ...]:
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
        raise _bad(f"{name} must be a list of numbers, got {type(values).__name__}")
    if not 1 <= len(values) <= limit:
        raise _bad(f"{name} has {len(values)} values; give 1 to {limit}")
    return tuple(_finite(f"{name}[{i}]", v) for i, v in enumerate(values))


@dataclass(frozen=True)
class Normalization:
    """How raw pixel values become model input. Frozen, validated on construction, JSON via ``to_dict``.

    Attributes:
        kind: ``"fixed"``, ``"percentile"``, ``"window"`` or ``"none"`` (see the module docstring).
        scale: ``fixed``: raw values are multiplied by this (> 0), e.g. 1/255.
        lo, hi: ``percentile``: the percentiles (0 <= lo < hi <= 100) that map to 0 and 1, per band.
        clip: ``percentile`` / ``window``: clip the mapped values to [0, 1].
        windows: ``window``: ((centre_HU, width_HU), ...), width > 0; more than one needs a 1-band input and
            gives one output channel per window.
        mean, std: per output channel, applied after the mapping as ``(x - mean) / std`` (std > 0), or None
            (no standardisation). Both or neither.
        name: a label for messages and reports (e.g. ``"lung"``), at most 64 characters.
    """

    kind: str
    scale: float = 1.0
    lo: float = 1.0
    hi: float = 99.8
    clip: bool = True
    windows: tuple[tuple[float, float], ...] = ()
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    name: str = ""

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen: normalise in place once)
        if self.kind not in KINDS:
            raise _bad(f"unknown kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if not isinstance(self.name, str) or len(self.name) > MAX_NAME or not self.name.isprintable():
            raise _bad(f"name must be a printable string of at most {MAX_NAME} characters")
        if not isinstance(self.clip, (bool, np.bool_)):
            raise _bad(f"clip must be true or false, got {self.clip!r}")
        set_("clip", bool(self.clip))
        set_("scale", _finite("scale", self.scale))
        set_("lo", _finite("lo", self.lo))
        set_("hi", _finite("hi", self.hi))
        if self.kind == "fixed" and not self.scale > 0:
            raise _bad(f"scale must be > 0, got {self.scale}")
        if self.kind == "percentile" and not 0.0 <= self.lo < self.hi <= 100.0:
            raise _bad(f"percentiles need 0 <= lo < hi <= 100, got lo={self.lo}, hi={self.hi}")
        windows = self.windows
        if isinstance(windows, (str, bytes, dict)) or not hasattr(windows, "__len__"):
            raise _bad("windows must be a list of [centre, width] pairs (HU)")
        if len(windows) > MAX_WINDOWS:
            raise _bad(f"{len(windows)} windows; at most {MAX_WINDOWS}")
        parsed = []
        for i, pair in enumerate(windows):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise _bad(f"windows[{i}] must be [centre, width] in HU")
            centre, width = _float_tuple(f"windows[{i}]", pair, 2)
            if not width > 0:
                raise _bad(f"windows[{i}]: width must be > 0 HU, got {width}")
            parsed.append((centre, width))
        set_("windows", tuple(parsed))
        if self.kind == "window" and not self.windows:
            raise _bad("kind 'window' needs at least one [centre, width] window (HU)")
        if self.kind != "window" and self.windows:
            raise _bad(f"windows are only for kind 'window', not {self.kind!r}")
        if (self.mean is None) != (self.std is None):
            raise _bad("give both mean and std, or neither")
        if self.mean is not None:
            if self.kind == "none":
                raise _bad("kind 'none' takes no mean/std; use 'fixed' with scale 1")
            mean = _float_tuple("mean", self.mean, MAX_BANDS)
            std = _float_tuple("std", self.std, MAX_BANDS)
            if len(mean) != len(std):
                raise _bad(f"{len(mean)} mean values but {len(std)} std values")
            if min(std) <= 0:
                raise _bad("std values must be > 0")
            set_("mean", mean)
            set_("std", std)

    # ---- constructors ------------------------------------------------------------------------------

    @classmethod
    def fixed(cls, scale: float = 1.0, mean=None, std=None, name: str = "") -> Normalization:
        """``x * scale``, then optional ``(x - mean) / std``."""
        return cls(kind="fixed", scale=scale, mean=mean, std=std, name=name)

    @classmethod
    def percentile(cls, lo: float = 1.0, hi: float = 99.8, *, clip: bool = True, mean=None, std=None,
                   name: str = "") -> Normalization:
        """Per-band ``lo``/``hi`` percentiles (0-100) of the fitted sample map to 0 and 1."""
        return cls(kind="percentile", lo=lo, hi=hi, clip=clip, mean=mean, std=std, name=name)

    @classmethod
    def window(cls, *windows: tuple[float, float], mean=None, std=None, name: str = "") -> Normalization:
        """CT windows, each ``(centre_HU, width_HU)``; e.g. ``Normalization.window((-600, 1500))``."""
        return cls(kind="window", windows=tuple(windows), mean=mean, std=std, name=name)

    @classmethod
    def from_legacy_config(cls, input_scale: float = 1.0, norm_mean=None, norm_std=None, *,
                           preset: Any = None) -> Normalization:
        """The normalisation a checkpoint made before this module meant, as one object.

        Args:
            input_scale, norm_mean, norm_std: the checkpoint's ``ModelConfig`` fields.
            preset: the intensity preset the entry point applied before ``config.normalise`` (an
                :class:`~smallseg.io.medical.IntensityPreset` or its dict: ``predict_volume``'s choice, the
                microscopy preset of the API examples; or a :class:`Normalization` whose mapping is meant), or
                None (raw values straight to ``normalise``).

        Today, a preset maps to [0, 1] and the pipeline divides by ``input_scale`` so that ``normalise``'s
        multiplication gives the [0, 1] image back; the net effect is the preset's mapping followed by
        ``(x - norm_mean) / norm_std``, which is what this returns (``input_scale`` drops out).
        """
        if preset is None:
            return cls.fixed(input_scale, norm_mean, norm_std)
        if isinstance(preset, Normalization):  # a mapping given as one of ours: keep it, standardise as stored
            return preset.with_standardisation(norm_mean, norm_std) if preset.kind != "none" else preset
        p = preset if isinstance(preset, dict) else preset.to_dict()
        kind, name = p.get("kind"), str(p.get("name", ""))
        if kind == "percentile":
            return cls.percentile(p["p_low"], p["p_high"], clip=True, mean=norm_mean, std=norm_std, name=name)
        if kind == "window":
            low, high = float(p["low"]), float(p["high"])
            return cls.window(((low + high) / 2.0, high - low), mean=norm_mean, std=norm_std, name=name)
        raise _bad(f"legacy preset kind {kind!r}: expected 'percentile' or 'window'")

    def with_standardisation(self, mean, std) -> Normalization:
        """The same mapping followed by ``(x - mean) / std`` (None, None: no standardisation)."""
        return replace(self, mean=mean, std=std)

    # ---- serialisation -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict with only the fields this kind uses (lists, floats, bools, strings)."""
        out: dict[str, Any] = {}
        for key in _FIELDS_BY_KIND[self.kind]:
            value = getattr(self, key)
            if key in ("mean", "std") and value is None or key == "name" and not value:
                continue
            if key == "windows":
                value = [list(w) for w in value]
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Normalization:
        """Inverse of :meth:`to_dict`. Unknown keys, kinds, non-finite numbers and oversized lists are refused."""
        if not isinstance(data, dict):
            raise _bad(f"expected a mapping like {{kind: percentile, lo: 1, hi: 99.8}}, got {type(data).__name__}")
        kind = data.get("kind")
        if kind not in KINDS:
            raise _bad(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        allowed = _FIELDS_BY_KIND[kind]
        unknown = sorted(str(k) for k in set(data) - set(allowed))
        if unknown:
            raise _bad(f"kind {kind!r} takes {', '.join(allowed)}; unknown: {', '.join(unknown)}")
        values = dict(data)
        if "windows" in values:
            w = values["windows"]
            if isinstance(w, (str, bytes, dict)) or not isinstance(w, (list, tuple)):
                raise _bad("windows must be a list of [centre, width] pairs (HU)")
            if len(w) > MAX_WINDOWS:
                raise _bad(f"{len(w)} windows; at most {MAX_WINDOWS}")
            if any(not isinstance(p, (list, tuple)) for p in w):
                raise _bad("windows must be a list of [centre, width] pairs (HU)")
            values["windows"] = tuple(tuple(p) for p in w)
        return cls(**values)

    def describe(self) -> str:
        """One line for summaries and logs, e.g. ``"percentile 1-99.8 % per band, clipped, then mean/std"``."""
        if self.kind == "fixed":
            text = f"fixed: x * {self.scale:.6g}"
        elif self.kind == "percentile":
            text = f"percentile {self.lo:g}-{self.hi:g} % per band{', clipped' if self.clip else ''}"
        elif self.kind == "window":
            text = "window " + ", ".join(f"{c:g}/{w:g} HU (centre/width)" for c, w in self.windows)
        else:
            return "none: raw values"
        return text + (", then mean/std" if self.mean is not None else "")

    # ---- shapes ------------------------------------------------------------------------------------

    @property
    def needs_fit(self) -> bool:
        """True when :meth:`apply` needs statistics of the data (``percentile``)."""
        return self.kind == "percentile"

    def out_channels(self, in_bands: int) -> int:
        """Channels :meth:`apply` returns for an input of ``in_bands`` bands (windows of 1 band: one each)."""
        if self.kind == "window" and len(self.windows) > 1:
            if in_bands != 1:
                raise SmallsegError(f"normalization {self.name or 'window'}: {len(self.windows)} CT windows need a "
                                    f"1-band image, got {in_bands} bands")
            return len(self.windows)
        return in_bands

    # ---- step 1: statistics ------------------------------------------------------------------------

    def fit(self, sample: np.ndarray | None, valid: np.ndarray | None = None, *, nodata: float | None = None,
            max_pixels: int = DEFAULT_FIT_PIXELS) -> NormStats:
        """Statistics of a scene / image / volume for :meth:`apply`, and which bands are degenerate.

        Args:
            sample: (C, H, W) or (H, W) raw values, any real dtype (uint8, uint16 incl. 11/12-bit data,
                int16 HU, float32 with NaNs), usually a decimated read of the whole input; a volume is given
                as (C, Z, Y, X) (e.g. ``volume.array[None]``) and counts every voxel.
                None is allowed for kinds that need no statistics (then nothing is checked).
            valid: (H, W) (or (Z, Y, X)) bool, False where a pixel must not count (nodata, alpha = 0,
                outside the footprint), or None. NaN / inf values never count.
            nodata: a raw value that means "no data" in every band (GDAL nodata), or None.
            max_pixels: larger samples are subsampled with a regular stride first.

        Returns:
            :class:`NormStats` (per-band ``lo``/``hi`` in input units for ``percentile``).

        A band with no valid finite pixel, or whose valid pixels are all equal (``hi == lo``), is flagged in
        ``stats.degenerate``; :meth:`apply` then maps it to a constant instead of dividing by zero.
        """
        if sample is None:
            if self.needs_fit:
                raise _bad(f"{self.describe()} needs a sample of the image to fit percentiles on")
            return NormStats(kind=self.kind)
        x = np.asarray(sample)
        if x.ndim == 2:
            x = x[None]
        if valid is not None and x.ndim > 3 and np.ndim(valid) == x.ndim - 1:
            valid = np.asarray(valid, bool).reshape(-1, x.shape[-1])
        if x.ndim > 3:  # (C, Z, Y, X) volume: statistics over all voxels, as over one tall image
            x = x.reshape(x.shape[0], -1, x.shape[-1])
        if x.ndim != 3 or not x.shape[0] or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
            raise SmallsegError(f"normalization fit: expected a (C, H, W) real-valued array, got shape {x.shape} "
                                f"dtype {x.dtype}")
        if x.shape[0] > MAX_BANDS:
            raise SmallsegError(f"normalization fit: {x.shape[0]} bands; at most {MAX_BANDS}")
        self.out_channels(x.shape[0])  # refuses several windows on a multi-band image early
        if valid is not None:
            valid = np.asarray(valid, bool)
            if valid.shape != x.shape[1:]:
                raise SmallsegError(f"normalization fit: valid mask {valid.shape} does not match the sample "
                                    f"{x.shape[1:]}")
        step = max(1, math.ceil(math.sqrt(x.shape[1] * x.shape[2] / max_pixels)))
        if step > 1:
            x = x[:, ::step, ::step]
            valid = None if valid is None else valid[::step, ::step]
        lo_v, hi_v, degenerate, reasons = [], [], [], []
        n_valid = []
        for b in range(x.shape[0]):
            band = x[b]
            keep = np.ones(band.shape, bool) if valid is None else valid.copy()
            if np.issubdtype(band.dtype, np.floating):
                keep &= np.isfinite(band)
            if nodata is not None:
                keep &= band != nodata
            values = band[keep] if not keep.all() else band.ravel()
            n_valid.append(int(values.size))
            if values.size == 0:
                lo_v.append(0.0), hi_v.append(1.0), degenerate.append(True)
                reasons.append(f"band {b + 1} has no valid pixels (all nodata, masked or NaN)")
                continue
            if self.kind == "percentile":
                # float64 as IntensityPreset did, so a legacy checkpoint's microscopy input is reproduced exactly
                lo, hi = (float(v) for v in np.percentile(values.astype(np.float64), [self.lo, self.hi]))
            else:
                lo, hi = float(values.min()), float(values.max())
            flat = hi <= lo
            lo_v.append(lo), hi_v.append(hi), degenerate.append(flat)
            if not flat:
                reasons.append("")
            elif values.min() == values.max():
                reasons.append(f"band {b + 1} is constant ({lo:g} in every valid pixel)")
            else:  # e.g. a mostly-constant band whose few other values lie outside the percentiles
                reasons.append(f"band {b + 1} has no spread between its {self.lo:g} and {self.hi:g} % "
                               f"percentiles (both {lo:g})")
        total = x.shape[1] * x.shape[2]
        return NormStats(
            kind=self.kind,
            lo=tuple(lo_v) if self.kind == "percentile" else None,
            hi=tuple(hi_v) if self.kind == "percentile" else None,
            degenerate=tuple(degenerate), reasons=tuple(reasons),
            valid_fraction=float(min(n_valid) / total) if total else 0.0, sampled_pixels=int(total),
        )

    # ---- step 2: apply -----------------------------------------------------------------------------

    def map_unit(self, array: np.ndarray, stats: NormStats | None = None) -> np.ndarray:
        """The mapping part: (C, H, W) raw -> (C', H, W) float32 in about [0, 1] (before mean/std).

        Non-finite input values come out as 0.
        """
        x = np.asarray(array)
        if x.ndim != 3 or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
            raise SmallsegError(f"normalization: expected a (C, H, W) real-valued array, got shape {x.shape} "
                                f"dtype {x.dtype}")
        c = x.shape[0]
        n_out = self.out_channels(c)
        if self.kind in ("fixed", "none"):
            out = x.astype(np.float32)
            if self.kind == "fixed":
                out *= np.float32(self.scale)
        elif self.kind == "percentile":
            if stats is None or stats.lo is None:
                raise _bad(f"{self.describe()} needs stats: call fit(sample) on the whole image first")
            if len(stats.lo) != c:
                raise _bad(f"the stats are for {len(stats.lo)} bands, the image has {c}")
            out = np.empty(x.shape, np.float32)
            for b in range(c):
                lo, hi = stats.lo[b], stats.hi[b]
                if not hi > lo:  # degenerate band (flagged by fit): a constant, never a divide by zero
                    hi = lo + 1.0
                self._window(x[b], lo, hi, out[b])
        else:
            bounds = [(ce - w / 2.0, ce + w / 2.0) for ce, w in self.windows]
            out = np.empty((n_out, *x.shape[1:]), np.float32)
            for b in range(n_out):
                self._window(x[0] if len(bounds) > 1 else x[b], *bounds[b if len(bounds) > 1 else 0], out[b])
        if np.issubdtype(x.dtype, np.floating):
            out[~np.isfinite(out)] = 0.0
        return out

    def _window(self, band: np.ndarray, lo: float, hi: float, out: np.ndarray) -> None:
        """``out[:] = (float32(band) - lo) * (1 / (hi - lo))``, clipped to [0, 1] if ``clip``; in place.

        The same float32 operations in the same order as IntensityPreset.apply (subtract, multiply by the
        reciprocal), so legacy checkpoints see bit-identical input, without temporaries.
        """
        out[...] = band
        out -= np.float32(lo)
        out *= np.float32(1.0 / (hi - lo))
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)

    def standardise(self, x: np.ndarray) -> np.ndarray:
        """The second part: ``(x - mean) / std`` per channel, in place on float32 (C, H, W); no-op without."""
        if self.mean is None:
            return x
        if len(self.mean) != x.shape[0]:
            raise SmallsegError(f"normalization: mean/std are for {len(self.mean)} channels, the input has "
                                f"{x.shape[0]}")
        x -= np.asarray(self.mean, np.float32)[:, None, None]
        x /= np.asarray(self.std, np.float32)[:, None, None]
        return x

    def apply(self, array: np.ndarray, stats: NormStats | None = None, *,
              valid: np.ndarray | None = None) -> np.ndarray:
        """Model input from raw values: ``standardise(map_unit(array, stats))``.

        Args:
            array: (C, H, W) raw values, any real dtype; a tile or the whole image.
            stats: from :meth:`fit` on the whole scene / image (required for ``percentile``).
            valid: (H, W) bool or None; False pixels become 0 (the training mean after standardisation, so
                nodata and padding add no made-up edges).

        Returns:
            (C', H, W) float32, C' = :meth:`out_channels` (C).
        """
        out = self.standardise(self.map_unit(array, stats))
        if valid is not None:
            out[:, ~np.asarray(valid, bool)] = 0.0
        return out


@dataclass(frozen=True)
class NormStats:
    """What :meth:`Normalization.fit` measured: small, JSON-able (``to_dict``), recorded in ``run.json``.

    Attributes:
        kind: the normalisation kind it was fitted for.
        lo, hi: ``percentile``: per band, the fitted percentile values in input units (None otherwise).
        degenerate: per band, True when the band is constant or empty over the valid pixels: the model input
            for it carries no information, and a pipeline reports the result as ``reliable: false``.
        reasons: per band, "" or one line saying why it is degenerate.
        valid_fraction: share of sampled pixels valid in every band (None when nothing was sampled).
        sampled_pixels: pixels per band in the (subsampled) sample.
    """

    kind: str
    lo: tuple[float, ...] | None = None
    hi: tuple[float, ...] | None = None
    degenerate: tuple[bool, ...] = ()
    reasons: tuple[str, ...] = ()
    valid_fraction: float | None = None
    sampled_pixels: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SmallsegError(f"normalization stats: unknown kind {self.kind!r}")
        for key in ("lo", "hi"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, _float_tuple(f"stats {key}", value, MAX_BANDS))
        if (self.lo is None) != (self.hi is None) or (self.lo is not None and len(self.lo) != len(self.hi)):
            raise SmallsegError("normalization stats: lo and hi need one value per band each")
        if self.kind == "percentile" and self.lo is None and self.sampled_pixels:
            raise SmallsegError("normalization stats: percentile stats need lo and hi")
        if len(self.degenerate) > MAX_BANDS or len(self.reasons) != len(self.degenerate):
            raise SmallsegError("normalization stats: one degenerate flag and one reason per band")
        if any(not isinstance(d, (bool, np.bool_)) for d in self.degenerate):
            raise SmallsegError("normalization stats: degenerate flags must be true/false")
        if any(not isinstance(r, str) or len(r) > 200 for r in self.reasons):
            raise SmallsegError("normalization stats: reasons must be short strings")
        object.__setattr__(self, "degenerate", tuple(bool(d) for d in self.degenerate))
        if self.valid_fraction is not None:
            object.__setattr__(self, "valid_fraction", _finite("stats valid_fraction", self.valid_fraction))

    @property
    def reliable(self) -> bool:
        """False when some band is degenerate (constant / empty): report ``reliable: false`` with :attr:`reason`."""
        return not any(self.degenerate)

    @property
    def reason(self) -> str:
        """One line naming the degenerate bands, "" when reliable."""
        return "; ".join(r for r in self.reasons if r)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.lo is not None:
            out["lo"], out["hi"] = list(self.lo), list(self.hi)
        out.update(degenerate=list(self.degenerate), reasons=list(self.reasons),
                   valid_fraction=self.valid_fraction, sampled_pixels=self.sampled_pixels,
                   reliable=self.reliable)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> NormStats:
        if not isinstance(data, dict):
            raise SmallsegError("normalization stats: expected a mapping")
        allowed = {f for f in cls.__dataclass_fields__} | {"reliable"}
        unknown = sorted(str(k) for k in set(data) - allowed)
        if unknown:
            raise SmallsegError(f"normalization stats: unknown keys {unknown}")
        values = {k: v for k, v in data.items() if k != "reliable"}
        for key in ("degenerate", "reasons"):
            if key in values:
                values[key] = tuple(values[key])
        sampled = values.get("sampled_pixels", 0)
        if isinstance(sampled, bool) or not isinstance(sampled, int) or sampled < 0:
            raise SmallsegError("normalization stats: sampled_pixels must be a count")
        return cls(**values)


# Today's intensity presets as instances of the one mechanism (the mean/std of a model is added with
# with_standardisation, or comes from its checkpoint). Width/level as commonly published (Radiopaedia,
# "Windowing (CT)"); "lung_nodule" is the -1350..150 HU window the shipped medical model was trained with.
CT_WINDOWS: dict[str, Normalization] = {
    "lung": Normalization.window((-600.0, 1500.0), name="lung"),
    "lung_nodule": Normalization.window((-600.0, 1500.0), name="lung"),
    "soft_tissue": Normalization.window((40.0, 400.0), name="soft_tissue"),
    "mediastinum": Normalization.window((50.0, 350.0), name="mediastinum"),
    "bone": Normalization.window((400.0, 1800.0), name="bone"),
    "brain": Normalization.window((40.0, 80.0), name="brain"),
}
# Fluorescence microscopy as the shipped medical model was trained: per image, 1-99.5 %, clipped.
MICROSCOPY = Normalization.percentile(1.0, 99.5, clip=True, name="percentile")


def normalizations_of(config: Any) -> tuple[Normalization | None, dict[str, Normalization]]:
    """The normalisations a model config declares: (default or None, ``{MODALITY: Normalization}``).

    Reads ``config.normalization`` / ``config.normalization_by_modality`` when the config class has such
    fields, else ``config.training["normalization"]`` / ``["normalization_by_modality"]``.
    """
    training = getattr(config, "training", None) or {}
    default = getattr(config, "normalization", None)
    if default is None:
        default = training.get("normalization")
    by = getattr(config, "normalization_by_modality", None)
    if by is None:
        by = training.get("normalization_by_modality") or {}
    if not isinstance(by, dict) or len(by) > 32:
        raise _bad("normalization_by_modality must be a mapping of at most 32 modality codes")
    parsed = {}
    for key, value in by.items():
        if not isinstance(key, str) or not key.strip() or len(key) > 16:
            raise _bad(f"normalization_by_modality: {key!r} is not a modality code such as 'CT'")
        parsed[key.strip().upper()] = value if isinstance(value, Normalization) else Normalization.from_dict(value)
    if default is not None and not isinstance(default, Normalization):
        default = Normalization.from_dict(default)
    return default, parsed


def normalization_for(config: Any, modality: str | None = None, *, legacy_preset: Any = None) -> Normalization:
    """The :class:`Normalization` an entry point applies for a model (``model.config``).

    Args:
        config: a ``ModelConfig`` (or anything with its ``training`` / ``input_scale`` / ``norm_mean`` /
            ``norm_std`` attributes).
        modality: the input's DICOM modality (``"CT"``...), or None / "" for images.
        legacy_preset: for checkpoints that declare nothing: the intensity preset the entry point applied
            before this module (see :meth:`Normalization.from_legacy_config`), or None.

    Returns:
        The declared normalisation for ``modality`` if any, else the declared default, else the one the
        legacy fields mean.
    """
    default, by_modality = normalizations_of(config)
    if modality and modality.strip().upper() in by_modality:
        return by_modality[modality.strip().upper()]
    if default is not None:
        return default
    return Normalization.from_legacy_config(getattr(config, "input_scale", 1.0), getattr(config, "norm_mean", None),
                                            getattr(config, "norm_std", None), preset=legacy_preset)


CHOICES = ("model", "percentile", "fixed", "none")


def choose_normalization(config: Any, choice: str | Normalization | None = "model", *,
                         percentiles: tuple[float, float] | None = None, modality: str | None = None,
                         legacy_preset: Any = None) -> Normalization:
    """The normalisation a user asked for (API ``normalize=``, CLI ``--normalize`` / ``--percentiles``).

    Args:
        config: the model's config.
        choice: ``"model"`` / None (what the model declares, :func:`normalization_for`), ``"percentile"``
            (per-band percentiles of the input, then the model's own mean/std), ``"fixed"`` (the checkpoint's
            ``input_scale`` / ``norm_mean`` / ``norm_std``, i.e. the behaviour before normalisations were
            declared), ``"none"`` (raw values), or a :class:`Normalization`.
        percentiles: (lo, hi) in 0-100 for ``"percentile"`` (default 1, 99.8), or to replace those of a model
            that declares percentiles.
        modality, legacy_preset: as for :func:`normalization_for`.
    """
    if isinstance(choice, Normalization):
        chosen = choice
    else:
        choice = "model" if choice is None else str(choice)
        if choice not in CHOICES:
            raise SmallsegError(f"normalize={choice!r}: choose one of {', '.join(CHOICES)}")
        model = normalization_for(config, modality, legacy_preset=legacy_preset)
        if choice == "model":
            chosen = model
        elif choice == "fixed":
            chosen = Normalization.fixed(getattr(config, "input_scale", 1.0), getattr(config, "norm_mean", None),
                                         getattr(config, "norm_std", None))
        elif choice == "none":
            chosen = Normalization(kind="none")
        else:
            lo, hi = percentiles if percentiles is not None else (1.0, 99.8)
            return Normalization.percentile(lo, hi, clip=True, mean=model.mean, std=model.std,
                                            name="percentile (requested)")
    if percentiles is not None:
        if chosen.kind != "percentile":
            raise SmallsegError(f"percentiles={tuple(percentiles)}: they apply to percentile normalisation, but "
                                f"this one is {chosen.describe()}; also pass normalize='percentile'")
        chosen = replace(chosen, lo=float(percentiles[0]), hi=float(percentiles[1]))
    return chosen


def sample_raster(dataset: Any, indexes: tuple[int, ...] | list[int], *, alpha_index: int | None = None,
                  max_pixels: int = 1_048_576) -> tuple[np.ndarray, np.ndarray]:
    """A decimated read of a whole raster for :meth:`Normalization.fit`, with its valid mask.

    Args:
        dataset: an open ``rasterio`` dataset.
        indexes: 1-based bands in model order (repeats allowed, e.g. (1, 1, 1)).
        alpha_index: 1-based alpha band (its zeros are invalid), or None.
        max_pixels: the read is decimated (GDAL overviews when present, else nearest-neighbour) to at
            most this many pixels per band.

    Returns:
        (sample (C, h, w) in the file's dtype, valid (h, w) bool): valid is False where GDAL's mask of the
        first band is 0 (nodata, alpha, internal mask) or the alpha band is 0.
    """
    h, w = dataset.height, dataset.width
    step = max(1.0, math.sqrt(h * w / max_pixels))
    shape = (max(1, int(round(h / step))), max(1, int(round(w / step))))
    unique = sorted(set(int(i) for i in indexes))
    data = dataset.read(unique, out_shape=(len(unique), *shape), resampling=Resampling.nearest)
    sample = np.stack([data[unique.index(int(i))] for i in indexes])
    valid = np.ones(shape, bool)
    for i in unique:
        valid &= dataset.read_masks(i, out_shape=shape, resampling=Resampling.nearest) > 0
    if alpha_index is not None:
        valid &= dataset.read(int(alpha_index), out_shape=shape, resampling=Resampling.nearest) > 0
    return sample, valid
