"""Bands by meaning: which file band feeds which model band, and which band is the valid mask.

A model declares what its input bands are (``("red", "green", "blue")``, ``("grey",)``, ...; see
:func:`model_band_names`). A raster says what its bands are through GDAL's colour interpretation
(rasterio ``dataset.colorinterp``). :func:`resolve_bands` matches the two::

    plan = resolve_bands(("red", "green", "blue"), ds.colorinterp)        # a B, G, R, alpha file
    plan.indices == (3, 2, 1); plan.alpha_index == 4
    plan.note == ("file band 3 (red) -> red, band 2 (green) -> green, band 1 (blue) -> blue "
                  "(by colour interpretation); band 4 (alpha) is the valid mask")

Rules, first that applies:

1. ``bands=(...)`` given by the user wins (checked against the band count; repeats such as (1, 1, 1) allowed).
2. Every model band found by colour interpretation: mapped by meaning, whatever the file order.
3. One data band (grey) and a multi-band colour model: the band is replicated, with a one-line note
   (``replicate_grey=False`` refuses instead, naming ``bands=(1, 1, 1)``).
4. As many data bands as model bands, without interpretations that say otherwise: file order, noted.
5. Otherwise a :class:`~smallseg.errors.SmallsegError` naming the fix (``bands=(...)`` in Python terms; the
   CLI translates to ``--bands``).

"Data bands" are all bands except alpha. GDAL labels band 1 of any multi-band file it knows nothing about
``gray`` (the rest ``undefined``), so ``gray`` counts as a meaning only in a 1-band file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rasterio.enums import ColorInterp

from smallseg.errors import SmallsegError

__all__ = ["BandPlan", "resolve_bands", "plan_for_dataset", "model_band_names", "band_numbers", "BAND_NAMES"]

# Model band names and the GDAL colour interpretations that mean them (rasterio ColorInterp names).
BAND_NAMES: dict[str, tuple[str, ...]] = {
    "red": ("red",),
    "green": ("green",),
    "blue": ("blue",),
    "grey": ("gray", "grey", "pan"),
    "nir": ("nir",),
    "pan": ("pan", "gray", "grey"),
    "rededge": ("rededge",),
    "swir": ("swir",),
    "coastal": ("coastal",),
}
_ALIASES = {"gray": "grey", "r": "red", "g": "green", "b": "blue", "panchromatic": "pan", "near_infrared": "nir"}
_COLOUR = {"red", "green", "blue"}
_UNINFORMATIVE = {"undefined", "gray", "grey"}  # in a multi-band file: GDAL's defaults, not a statement


@dataclass(frozen=True)
class BandPlan:
    """How to read a raster for a model.

    Attributes:
        indices: 1-based file bands, one per model band in model order (repeats when replicating grey).
        alpha_index: 1-based alpha band whose zeros are invalid pixels (the valid mask), or None.
        replicate_grey: True when one grey band feeds every band of a colour model.
        note: one line saying which file band feeds which model band (for the summary / run.json).
    """

    indices: tuple[int, ...]
    alpha_index: int | None
    replicate_grey: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"indices": list(self.indices), "alpha_index": self.alpha_index,
                "replicate_grey": self.replicate_grey, "note": self.note}


def _interp_name(value: Any) -> str:
    """``ColorInterp.red`` / ``"Red"`` / ``3`` -> ``"red"``."""
    name = getattr(value, "name", None)
    if name is None and isinstance(value, int):
        name = ColorInterp(value).name
    return str(name if name is not None else value).strip().lower()


def _model_name(value: str) -> str:
    name = str(value).strip().lower()
    return _ALIASES.get(name, name)


def model_band_names(config: Any) -> tuple[str, ...] | None:
    """The band names a model declares (``config.training["band_names"]``, or a ``band_names`` field).

    Checkpoints that declare none: 3 bands mean ``("red", "green", "blue")`` (the shipped remote-sensing
    model), 1 band ``("grey",)``; other counts None (bands are taken in file order).
    """
    names = getattr(config, "band_names", None)
    if names is None:
        names = (getattr(config, "training", None) or {}).get("band_names")
    if names is not None:
        if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)) or not 1 <= len(names) <= 64:
            raise SmallsegError(f"model config band_names: expected a list of band names, got {names!r}")
        out = tuple(_model_name(n) for n in names)
        unknown = [n for n in out if n not in BAND_NAMES and n != "other"]
        if unknown:
            raise SmallsegError(f"model config band_names: unknown {unknown}; use {', '.join(BAND_NAMES)} or other")
        return out
    channels = int(getattr(config, "in_channels", 0) or 0)
    return {3: ("red", "green", "blue"), 1: ("grey",)}.get(channels)


def _describe(indices: Sequence[int], interps: Sequence[str], model: Sequence[str]) -> str:
    parts = []
    for k, (i, m) in enumerate(zip(indices, model)):
        label = f"{'file band' if k == 0 else 'band'} {i}"
        if interps[i - 1] != "undefined" and not (len(interps) > 1 and interps[i - 1] in _UNINFORMATIVE):
            label += f" ({interps[i - 1]})"
        parts.append(f"{label} -> {m}")
    return ", ".join(parts)


def resolve_bands(model_bands: Sequence[str] | None, colorinterp: Sequence[Any], *,
                  bands: Sequence[int] | None = None, replicate_grey: bool = True,
                  n_model_bands: int | None = None) -> BandPlan:
    """Match a model's bands to a raster's bands (see the module docstring for the rules).

    Args:
        model_bands: the model's band names in input order (:func:`model_band_names`), or None when the
            model does not say (then ``n_model_bands`` gives the count and bands are taken in file order).
        colorinterp: the raster's colour interpretation per band (rasterio ``ds.colorinterp``: ColorInterp
            members, their names or values); its length is the band count.
        bands: 1-based file bands chosen by the user, or None.
        replicate_grey: allow feeding one grey band to every band of a colour model.
        n_model_bands: band count of a model without band names.

    Returns:
        :class:`BandPlan`.
    """
    interps = [_interp_name(c) for c in colorinterp]
    n = len(interps)
    if n == 0:
        raise SmallsegError("raster has no bands")
    model = tuple(_model_name(m) for m in model_bands) if model_bands is not None else None
    k = len(model) if model is not None else int(n_model_bands or 0)
    if k < 1:
        raise SmallsegError("resolve_bands: give the model's band names or n_model_bands")
    names = model if model is not None else tuple(f"model band {j + 1}" for j in range(k))
    shown = ", ".join(names)
    alphas = [i + 1 for i, c in enumerate(interps) if c == "alpha"]
    alpha = alphas[0] if alphas else None
    data = [i + 1 for i, c in enumerate(interps) if c != "alpha"]
    alpha_note = f"; band {alpha} (alpha) is the valid mask" if alpha is not None else ""

    if bands is not None:
        chosen = tuple(bands)
        if any(isinstance(b, bool) or not isinstance(b, int) for b in chosen):
            raise SmallsegError(f"bands={tuple(bands)!r}: give 1-based band numbers, e.g. bands=(1, 2, 3)")
        bad = [b for b in chosen if not 1 <= b <= n]
        if bad:
            raise SmallsegError(f"bands={chosen}: the raster has bands 1..{n}; {bad} do not exist")
        if len(chosen) != k:
            raise SmallsegError(f"bands={chosen}: {len(chosen)} bands, but the model takes {k} ({shown}); "
                                f"give {k} band numbers")
        if alpha in chosen:
            alpha, alpha_note = None, ""  # the user feeds the alpha band as data: it is not also a mask
        repl = k > 1 and len(set(chosen)) == 1
        return BandPlan(chosen, alpha, repl, _describe(chosen, interps, names) + " (as given by bands)" + alpha_note)

    if any(c == "palette" for c in interps):
        raise SmallsegError("the raster's bands are palette indices, not intensities: expand them to RGB first "
                            "(gdal_translate -expand rgb IN OUT)")

    informative = not (n > 1 and all(interps[i - 1] in _UNINFORMATIVE for i in data))
    if model is not None and informative:
        found = []
        for m in model:
            hits = [i for i in data if interps[i - 1] in BAND_NAMES.get(m, ())]
            found.append(hits[0] if len(hits) == 1 else None)
        if all(f is not None for f in found) and len(set(found)) == len(found):
            return BandPlan(tuple(found), alpha, False,
                            _describe(found, interps, names) + " (by colour interpretation)" + alpha_note)

    if len(data) == 1 and k > 1 and (model is None or set(model) <= _COLOUR):
        fix = f"bands={tuple(data * k)}"
        if not replicate_grey:
            raise SmallsegError(f"the raster has 1 band, the model takes {k} ({shown}); to feed the one band to "
                                f"all of them pass {fix}, or use a model trained on 1-band input")
        return BandPlan(tuple(data * k), alpha, True,
                        f"1-band image: band {data[0]} replicated to {shown}" + alpha_note)

    if len(data) == k:
        how = "no colour interpretation" if not informative else "colour interpretation does not name " + shown
        if model is not None and informative and k > 1:
            # The file says what its bands are and they are not what the model takes: guessing would
            # silently feed, e.g., NIR as red.
            have = ", ".join(f"{i} ({interps[i - 1]})" for i in data)
            raise SmallsegError(f"the raster's bands are {have}, the model takes {shown}; choose the file bands "
                                f"for them with bands={tuple(data)} (reordered as needed)")
        return BandPlan(tuple(data), alpha, False,
                        _describe(data, interps, names) + f" (file order: {how})" + alpha_note)

    have = ", ".join(f"{i} ({interps[i - 1]})" for i in range(1, min(n, 8) + 1)) + (f", ... {n}" if n > 8 else "")
    suggestion = tuple(data[:k]) if len(data) >= k else tuple((data * k)[:k])
    raise SmallsegError(f"the raster has {len(data)} data band(s) [{have}], the model takes {k} ({shown}); "
                        f"choose them with bands={suggestion}")


def plan_for_dataset(dataset: Any, model_bands: Sequence[str] | None, *, bands: Sequence[int] | None = None,
                     replicate_grey: bool = True, n_model_bands: int | None = None) -> BandPlan:
    """:func:`resolve_bands` for an open rasterio dataset (its ``colorinterp``)."""
    return resolve_bands(model_bands, dataset.colorinterp, bands=bands, replicate_grey=replicate_grey,
                         n_model_bands=n_model_bands)


def band_numbers(dataset: Any, bands: Sequence[int | str]) -> tuple[int, ...]:
    """1-based file bands for a user's selection of numbers and/or names (``("red", "green", "blue")``,
    ``(4, "red", "green")``): a name picks the one band whose colour interpretation means it.

    Raises:
        SmallsegError: a name no band (or more than one) of the file carries, naming the file's bands.
    """
    interps = [_interp_name(c) for c in dataset.colorinterp]
    out = []
    for b in bands:
        if not isinstance(b, str):
            out.append(int(b))
            continue
        name = _model_name(b)
        meanings = BAND_NAMES.get(name, (name,))
        if len(interps) > 1:
            meanings = tuple(m for m in meanings if m not in _UNINFORMATIVE) or meanings
        hits = [i + 1 for i, c in enumerate(interps) if c in meanings]
        if len(hits) != 1:
            have = ", ".join(f"{i + 1} ({c})" for i, c in enumerate(interps))
            why = "no band" if not hits else f"{len(hits)} bands"
            raise SmallsegError(f"bands {b!r}: {why} of the file has that colour interpretation (its bands: {have}); "
                                f"give band numbers instead, e.g. bands=({', '.join(str(i + 1) for i in range(min(3, len(interps))))})")
        out.append(hits[0])
    return tuple(out)
