"""Outlines of a streamed scene: finished row bands in, each band's objects' outlines out once the rows of
their context (:func:`smallseg.outline.simplify.context_box`) have arrived.

The GeoTIFF sink (:mod:`smallseg.pipeline.geotiff.sinks`) gets a band's objects when no later tile can
change them, but an outline with simplification also depends on up to ``options.margin_px`` rows *below*
the object (its neighbours' pixels there). This holds each band's objects back until those rows are in (at
most one more band), then computes their outlines from exactly the rows :func:`outline_polygons` would use
on the whole stitched label image: the polygons are the same, tiled or not, streamed in any band heights.
Memory: the rows from the highest row a pending or later object may need, to the newest band.

With ``options.subpixel`` the stream also takes each band's rows of a soft map (the model's foreground
probability or signed distance, the same rows as the labels) and gives
:func:`smallseg.outline.subpixel.coverage_subpixel_outline` instead (sub-pixel where an object meets
background, the pixel edge where it meets another object), from the same context rows as on the whole
raster: streamed == whole, exactly.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import rasterio
from shapely.geometry import MultiPolygon

from smallseg.errors import SmallsegError
from smallseg.outline.options import OutlineOptions
from smallseg.outline.simplify import object_outline
from smallseg.outline.subpixel import SUBPIXEL_LEVEL, SUBPIXEL_REACH_PX, coverage_subpixel_outline


class OutlineStream:
    """Bands of a scene of ``scene_shape`` (H, W), in order, -> (outlines, table) per band, in order.

    ``table`` is anything with ``ids`` (N,), ``bbox`` (N, 4) half-open scene px boxes and ``class_ids`` (N,)
    (an :class:`~smallseg.io.tables.ObjectTable`); outlines are in scene pixel coordinates.
    With ``options.subpixel`` each band comes with its rows of the soft map (level
    :data:`~smallseg.outline.subpixel.SUBPIXEL_LEVEL` on an edge).
    """

    def __init__(self, options: OutlineOptions, scene_shape: tuple[int, int]):
        self.options = options
        self.height, self.width = (int(v) for v in scene_shape)
        self.subpixel = options.subpixel
        self.margin = options.margin_px if options.active else 1
        self.rows = np.zeros((0, self.width), np.uint32)
        self.soft = np.zeros((0, self.width), np.float32)
        self.rows0 = 0
        self.queue: deque = deque()  # (table, rows needed up to)

    def add_band(self, row0: int, labels: np.ndarray, table, keep_from: int | None = None,
                 soft: np.ndarray | None = None) -> list[tuple[list, object]]:
        """Take the band's label rows (starting at scene row ``row0``) and its finished objects; return the
        outlines that are now complete, band by band.

        Args:
            keep_from: the top row a later band's object may have pixels in (the sink's ``keep_from``);
                None: keep every row (small scenes, tests).
            soft: the band's rows of the soft map (same shape as ``labels``); required with ``options.subpixel``.
        """
        labels = np.asarray(labels)
        if row0 != self.rows0 + len(self.rows):
            raise RuntimeError(f"outline stream: band at row {row0}, expected {self.rows0 + len(self.rows)}")
        if self.subpixel:
            if soft is None or np.shape(soft) != labels.shape:
                raise SmallsegError(f"outline stream: sub-pixel outlines need the band's soft map of shape "
                                    f"{labels.shape}, got {None if soft is None else np.shape(soft)}")
            self.soft = np.concatenate([self.soft, np.asarray(soft, np.float32)])
        self.rows = np.concatenate([self.rows, labels.astype(self.rows.dtype, copy=False)]) if len(self.rows) else \
            labels.astype(np.uint32, copy=True)
        if len(table):
            need = min(int(np.asarray(table.bbox)[:, 2].max()) + self.margin, self.height)
            self.queue.append((table, need))
        elif not self.queue:
            self.queue.append((table, row0))  # keeps the order of empty bands too (nothing to compute)
        done = self._drain(self.rows0 + len(self.rows))
        self._trim(keep_from)
        return done

    def finish(self) -> list[tuple[list, object]]:
        """Everything still held (the scene's last rows have arrived)."""
        return self._drain(self.height + self.margin)

    def _drain(self, available: int) -> list:
        out = []
        while self.queue and self.queue[0][1] <= available:
            table, _ = self.queue.popleft()
            out.append((self._outlines(table), table))
        return out

    def _outlines(self, table) -> list[MultiPolygon]:
        ids = np.asarray(table.ids, np.int64)
        boxes = np.asarray(table.bbox, np.int64)
        classes = np.asarray(table.class_ids)
        if self.subpixel:
            return [coverage_subpixel_outline(self.soft, self.rows, int(k), boxes[i], level=SUBPIXEL_LEVEL,
                                              reach_px=SUBPIXEL_REACH_PX, row0=self.rows0,
                                              scene_shape=(self.height, self.width)) for i, k in enumerate(ids)]
        with rasterio.Env():  # one GDAL environment for the band's objects
            return [object_outline(self.rows, int(k), boxes[i], self.options, class_id=int(classes[i]), row0=self.rows0,
                                   col0=0, scene_shape=(self.height, self.width)) for i, k in enumerate(ids)]

    def _trim(self, keep_from: int | None) -> None:
        if keep_from is None:
            return
        tops = [int(np.asarray(t.bbox)[:, 0].min()) for t, _ in self.queue if len(t)]
        start = min([keep_from] + tops) - self.margin
        start = min(max(start, self.rows0), self.rows0 + len(self.rows))
        self.rows = self.rows[start - self.rows0 :]
        if self.subpixel:
            self.soft = self.soft[start - self.rows0 :]
        self.rows0 = start
