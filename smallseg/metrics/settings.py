"""Scoring settings: size buckets (pixels or ground units) and the boundary width of Boundary IoU / AP.

Small value objects that validate themselves when built, and the parsers of their text spellings
(``"20,200m2"``, ``"2px"`` / ``"0.5m"``). :func:`smallseg.metrics.evaluation.evaluate` takes them; they live
here so that the scoring function's module holds only scoring. Messages name evaluate's arguments
(``size_buckets``, ``boundary_width``, ``pixel_size``); ``smallseg evaluate`` spells them as its flags.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from smallseg.errors import SmallsegError
from smallseg.metrics.boundary import reference_boundary_width_px

__all__ = ["SizeBuckets", "BoundaryWidth", "parse_size_buckets", "parse_boundary_width", "parse_length"]

_LARGEST_AREA_PX = 1e5**2  # pycocotools' upper bound of "all" and "large"
_LENGTH_UNITS_M = {"m": 1.0, "cm": 0.01, "mm": 0.001, "um": 1e-6}
_AREA_UNITS_M2 = {"m2": 1.0, "mm2": 1e-6}


# --------------------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeBuckets:
    """COCO size buckets: small < ``small_max`` <= medium < ``medium_max`` <= large, areas in ``unit``.

    ``unit`` is ``"px"`` (pixel count, COCO's convention; default 32² and 96²), ``"m2"`` (GeoTIFF in a
    projected CRS, or ``pixel_size``) or ``"mm2"`` (medical spacing, or ``pixel_size``).
    """

    small_max: float = 32.0**2
    medium_max: float = 96.0**2
    unit: str = "px"

    def __post_init__(self) -> None:
        if self.unit not in ("px", *_AREA_UNITS_M2):
            raise SmallsegError(f"size_buckets {self.text()}: the unit is px, m2 or mm2, not {self.unit!r}")
        if not 0 < self.small_max < self.medium_max:
            raise SmallsegError(f"size_buckets {self.text()}: need 0 < small maximum < medium maximum")

    def ranges_px(self, pixel_area_m2: float | None) -> tuple[tuple[float, float], ...]:
        """pycocotools ``areaRng`` (all, small, medium, large) in pixels for a pixel of ``pixel_area_m2``."""
        if self.unit == "px":
            scale = 1.0
        else:
            if pixel_area_m2 is None:
                raise SmallsegError(
                    f"size_buckets {self.text()}: the pixel size is unknown (no projected CRS or spacing); "
                    "give buckets in px or pass pixel_size")
            scale = pixel_area_m2 / _AREA_UNITS_M2[self.unit]
        small, medium = self.small_max / scale, self.medium_max / scale
        return ((0.0, _LARGEST_AREA_PX), (0.0, small), (small, medium), (medium, _LARGEST_AREA_PX))

    def text(self) -> str:
        return f"{self.small_max:g},{self.medium_max:g}{self.unit}"


@dataclass(frozen=True)
class BoundaryWidth:
    """How wide a boundary is: ``mode="fixed"`` with a width in px / m / mm, or ``mode="reference"``.

    ``reference`` is Boundary IoU's own definition (d = 2 % of the image diagonal), equal to
    faster-coco-eval's ``iouType="boundary"``; ``fixed`` (default 2 px) suits small objects.
    """

    mode: str = "fixed"
    width: float = 2.0
    unit: str = "px"

    def __post_init__(self) -> None:
        if self.mode == "reference":
            return  # d comes from each image's diagonal; width and unit are not used
        if self.mode != "fixed":
            raise SmallsegError(f"boundary {self.mode}: choose fixed or reference")
        if self.unit not in ("px", *_LENGTH_UNITS_M):
            raise SmallsegError(f"boundary_width {self.width:g}{self.unit}: the unit is px, m, cm, mm or um")
        if not self.width > 0:
            raise SmallsegError(f"boundary_width {self.width:g}{self.unit}: must be positive")

    def width_px(self, image_shape: tuple[int, int], pixel_area_m2: float | None) -> int:
        """``d`` in pixels for one image (at least 1)."""
        if self.mode == "reference":
            return reference_boundary_width_px(image_shape)
        if self.unit == "px":
            return max(1, int(math.floor(self.width + 0.5)))
        if pixel_area_m2 is None:
            raise SmallsegError(
                f"boundary_width {self.text()}: the pixel size is unknown (no projected CRS or spacing); "
                "give the width in px or pass pixel_size")
        pixel_m = math.sqrt(pixel_area_m2)
        return max(1, int(math.floor(self.width * _LENGTH_UNITS_M[self.unit] / pixel_m + 0.5)))

    def text(self) -> str:
        return "2% of the image diagonal" if self.mode == "reference" else f"{self.width:g}{self.unit}"


def _number(text: str, option: str) -> float:
    """``option`` names the argument in the message (``size_buckets``)."""
    text = text.strip()
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)(?:\^2|\*\*2|²)?", text)
    if not match:
        raise SmallsegError(f"{option}: {text!r} is not a number")
    value = float(match.group(1))
    return value * value if text != match.group(1) else value


def parse_size_buckets(text: str | SizeBuckets) -> SizeBuckets:
    """Parse ``"SMALL_MAX,MEDIUM_MAX[UNIT]"``, e.g. ``"32^2,96^2px"`` (COCO), ``"25,100m2"``, ``"5,50mm2"``."""
    if isinstance(text, SizeBuckets):
        return text
    raw = str(text).strip().replace("m²", "m2").replace(" ", "")
    unit = "px"
    for candidate in ("mm2", "m2", "px"):
        if raw.lower().endswith(candidate):
            unit, raw = candidate, raw[: -len(candidate)]
            break
    parts = raw.split(",")
    if len(parts) != 2:
        raise SmallsegError(f"size_buckets {text}: expected SMALL_MAX,MEDIUM_MAX with a unit px, m2 or mm2 "
                            "(e.g. 32^2,96^2px or 25,100m2)")
    small, medium = (_number(p, f"size_buckets {text}") for p in parts)
    return SizeBuckets(small, medium, unit)  # checks 0 < small < medium


def parse_length(text: str | float, option: str) -> tuple[float, str]:
    """Parse ``"2px"``, ``"2"`` (px), ``"0.6m"``, ``"50cm"``, ``"1mm"`` into ``(value, unit)``; ``option`` names
    the argument in the messages (``boundary_width``)."""
    if isinstance(text, int | float):
        return float(text), "px"
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(px|m|cm|mm|um)?\s*", str(text))
    if not match:
        raise SmallsegError(f"{option} {text}: expected a length like 2px, 0.6m or 1mm")
    value = float(match.group(1))
    if value <= 0:
        raise SmallsegError(f"{option} {text}: must be positive")
    return value, match.group(2) or "px"


def parse_boundary_width(mode: str = "fixed", width: str | float | None = None) -> BoundaryWidth:
    """Boundary setting from ``boundary`` (mode) and ``boundary_width`` (default 2px in fixed mode)."""
    if mode not in ("fixed", "reference"):
        raise SmallsegError(f"boundary {mode}: choose fixed or reference")
    if mode == "reference":
        if width is not None:
            raise SmallsegError("boundary_width: the reference mode fixes d at 2% of the image diagonal; "
                                "leave out boundary_width or use boundary='fixed'")
        return BoundaryWidth("reference", 0.0, "ratio")
    value, unit = parse_length("2px" if width is None else width, "boundary_width")
    return BoundaryWidth("fixed", value, unit)
