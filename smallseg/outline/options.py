"""What the outline stage does to the polygons a user gets (GeoPackage / GeoJSON outlines, the API).

Every option is off by default: the polygons are then the exact pixel outlines, whose areas equal the label
rasters'. Simplification and regularisation change areas (by up to about ``simplify_px`` x the perimeter),
so a user asks for them; what was applied is written into ``run.json`` (:meth:`OutlineOptions.to_report`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from smallseg.errors import SmallsegError
from smallseg.outline.subpixel import SUBPIXEL_REACH_PX, coverage_context_px

MAX_SIMPLIFY_PX = 16.0


@dataclass(frozen=True)
class OutlineOptions:
    """Outline settings (validated when built).

    Attributes:
        simplify_px: tolerance of the topology-keeping simplification, px (0 = exact pixel outlines). Shapely's
            ``coverage_simplify`` (Visvalingam-Whyatt on the arcs between junctions; the tolerance is about
            the square root of the largest triangle area removed): each shared arc is simplified once, so
            touching objects never overlap and no gap opens between them.
        regularise_class_ids: 1-based classes whose outlines are regularised (buildings): a polygon that
            fills at least ``regularise_min_fill`` of its minimum rotated rectangle, touches no other
            object and whose rectangle covers no other object's pixel becomes a rectangle in that
            rectangle's orientation and aspect with the polygon's area and centroid (right angles, the
            object's dominant orientation; :func:`smallseg.outline.simplify.regularise_polygon`). Other polygons of the class stay as simplified.
        regularise_min_fill: polygon area / rectangle area needed to regularise, in (0, 1].
        regularise_class_names: classes to regularise by name (e.g. ``("building",)``, what
            ``--regularise-buildings`` asks for); :meth:`for_classes` turns them into ids for a model.
        subpixel: sub-pixel outlines from the model's boundary head (its signed distance at 0; a model
            without one is refused: its foreground probability's 0.5 level is not where its decoder puts
            edges), marching squares where an object meets background, the pixel edge where it meets another object
            (:func:`smallseg.outline.subpixel.coverage_subpixel_outline`): shared edges stay shared, areas
            change (by up to ~0.5 px x the perimeter). Not combined with simplification or regularisation.
    """

    simplify_px: float = 0.0
    regularise_class_ids: tuple[int, ...] = ()
    regularise_min_fill: float = 0.8
    regularise_class_names: tuple[str, ...] = ()
    subpixel: bool = False

    def __post_init__(self) -> None:
        s = self.simplify_px
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or not 0 <= s <= MAX_SIMPLIFY_PX:
            raise SmallsegError(f"simplify_px {s!r}: give a tolerance from 0 to {MAX_SIMPLIFY_PX:g} px")
        object.__setattr__(self, "simplify_px", float(s))
        ids = self.regularise_class_ids
        if isinstance(ids, int) and not isinstance(ids, bool):
            ids = (ids,)
        if not isinstance(ids, (tuple, list)) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 1
                                                         for i in ids):
            raise SmallsegError(f"regularise_class_ids {ids!r}: give 1-based class ids")
        object.__setattr__(self, "regularise_class_ids", tuple(sorted(set(int(i) for i in ids))))
        f = self.regularise_min_fill
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise SmallsegError(f"regularise_min_fill {f!r}: must be in (0, 1]")
        object.__setattr__(self, "regularise_min_fill", float(f))
        names = (self.regularise_class_names,) if isinstance(self.regularise_class_names, str) else \
            self.regularise_class_names
        if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) and n for n in names):
            raise SmallsegError(f"regularise_class_names {names!r}: give class names, e.g. building")
        object.__setattr__(self, "regularise_class_names", tuple(names))
        if not isinstance(self.subpixel, bool):
            raise SmallsegError(f"subpixel {self.subpixel!r}: must be True or False")  # the first word: a field
        if self.subpixel and (self.simplify_px > 0 or self.regularise_class_ids or self.regularise_class_names):
            raise SmallsegError("subpixel=True: sub-pixel outlines are not simplified or regularised; choose "
                                "subpixel=True, or simplify_px / regularise_class_names")

    def for_classes(self, class_names) -> "OutlineOptions":
        """These options with ``regularise_class_names`` resolved against a model's class names (1-based
        ids, case-insensitive); a name the model lacks is an error in one line."""
        if not self.regularise_class_names:
            return self
        lookup = {str(n).lower(): i + 1 for i, n in enumerate(class_names)}
        missing = [n for n in self.regularise_class_names if n.lower() not in lookup]
        if missing:
            raise SmallsegError(f"regularise_class_names: the model has no class {', '.join(missing)} (its classes: "
                                f"{', '.join(map(str, class_names))})")
        ids = set(self.regularise_class_ids) | {lookup[n.lower()] for n in self.regularise_class_names}
        return OutlineOptions(self.simplify_px, tuple(sorted(ids)), self.regularise_min_fill, self.regularise_class_names,
                              self.subpixel)

    @property
    def active(self) -> bool:
        """True when the polygons differ from the exact pixel outlines."""
        return self.simplify_px > 0 or bool(self.regularise_class_ids) or bool(self.regularise_class_names) or \
            self.subpixel

    @property
    def margin_px(self) -> int:
        """Context around an object its outline depends on, px: every arc and every vertex that can
        constrain its simplification lies within it (see :mod:`smallseg.outline.simplify`)."""
        if self.subpixel:
            return coverage_context_px(SUBPIXEL_REACH_PX)
        return int(math.ceil(self.simplify_px)) + 2

    def to_report(self) -> dict:
        """What was applied, for ``run.json``."""
        method = "shapely.coverage_simplify per object context" if self.simplify_px > 0 else "exact pixel outlines"
        if self.subpixel:
            method = ("sub-pixel: marching squares on the boundary head's signed distance at 0 where an object "
                      "meets background, pixel edges between objects")
        return {"simplify_px": self.simplify_px, "method": method, "subpixel": self.subpixel,
                "regularise_class_ids": list(self.regularise_class_ids),
                "regularise_class_names": list(self.regularise_class_names),
                "regularise_min_fill": self.regularise_min_fill, "margin_px": self.margin_px}
