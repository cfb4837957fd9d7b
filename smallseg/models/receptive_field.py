"""How far a model looks, and the tile size / overlap that follow from it (issue #14).

Two radii, both in input px, per axis (Chebyshev):

- :func:`receptive_field_radius`: the *theoretical* one, the support of the gradient of one output pixel with
  respect to the input. For a tile-independent model (no global pooling, see ``tests/test_models_shift.py``) an
  output pixel further than this from every tile edge is exactly what the whole scene gives. It is large
  (MobileNetV4-small + FPN + LFE at output stride 16: ~490 px), because it counts every path, however weak.
- :func:`context_radius_px`: the *effective* one, measured: the smallest window half-size ``d`` for which the
  model's outputs at the centre of a ``(2d+1)``-ish crop agree with those on a much larger crop to within
  ``tol`` (probabilities; centroid vectors in px / ``max_distance_px``). This is what the tile edge does: a crop
  *is* a tile edge at distance ``d``.

The ownership rule (:mod:`smallseg.tiling.grid`) needs every pixel of an owned object within ``floor(O / 2)``
px of its reported centroid; for the object's pixels to also be predicted as in the whole scene, each must be
a further ``context`` px from the tile edge. Hence :func:`tiling_for`: overlap = ``overlap_for(max_distance_px
+ vote error + context)``, and the smallest tile (a multiple of the model's input stride) whose pixel overhead
``(T / (T - O))²`` is at most ``max_cost_ratio`` (each scene pixel seen ``(T/(T-O))²`` times on average).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from smallseg.errors import SmallsegError
from smallseg.tiling.grid import overlap_for


def receptive_field_radius(model: nn.Module, size: int = 1024, seed: int = 0) -> int:
    """Theoretical receptive-field radius (px) of the centre output pixel of a ``size``² input.

    Returns a value ``>= size // 2`` when the field reaches the input's border (global operations, or ``size``
    too small). Costs one forward and one backward pass at ``size``².
    """
    c = size // 2
    x = torch.randn(1, model.config.in_channels, size, size, generator=torch.Generator().manual_seed(seed))
    x.requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        out = model(x)
        sum(v[0, :, c, c].sum() for v in out.values()).backward()
    finally:
        model.train(was_training)
    rows, cols = torch.nonzero(x.grad.abs().sum(1)[0] > 0, as_tuple=True)
    return int(max(c - rows.min(), rows.max() - c, c - cols.min(), cols.max() - c))


def _comparable(out: dict[str, torch.Tensor], max_distance_px: float) -> dict[str, torch.Tensor]:
    """Outputs on the scale decoding sees: class probabilities, distance/boundary as they are fed to the
    decoder (sigmoid of the distance logits), centroid vectors in units of ``max_distance_px`` (as stored)."""
    res = {}
    for name, y in out.items():
        if name == "semantic":
            res[name] = y.softmax(1)
        elif name == "distance":
            res[name] = y.sigmoid()
        else:
            res[name] = y
    return res


def context_radius_px(model: nn.Module, image: torch.Tensor, *, tol: float = 0.02, step: int | None = None,
                      max_radius: int | None = None, probe: int = 32) -> int:
    """Effective context radius (px): the smallest half-width ``d`` of a crop around a ``probe``² centre patch
    for which every output there is within ``tol`` of the large-crop output.

    Args:
        model: a SmallObjectNet (eval mode is used).
        image: (C, H, W) float32 *normalised* model input (a real or realistic synthetic scene: the effective
            field of a trained model depends on the content), H, W >= ``2 * max_radius + probe``.
        tol: largest allowed difference (probabilities, sigmoid maps, centroid vectors / ``max_distance_px``).
        step: radii tried, in steps of this (default: the model's input stride).
        max_radius: largest radius tried (default: what the image allows).
        probe: side of the centre patch compared (px).

    Returns:
        ``d`` in px (a multiple of ``step``); ``max_radius`` if no smaller one agrees.
    """
    if image.ndim != 3:
        raise SmallsegError(f"context_radius_px: image must be (C, H, W), got shape {tuple(image.shape)}")
    mult = int(getattr(model, "input_multiple", 16))
    step = step or mult
    _, h, w = image.shape
    limit = (min(h, w) - probe) // 2
    max_radius = min(max_radius or limit, limit)
    max_radius -= max_radius % step
    if max_radius < step:
        raise SmallsegError(f"context_radius_px: image {h}x{w} too small for probe {probe} and step {step}")
    cy, cx = h // 2, w // 2
    cy, cx = cy - cy % mult, cx - cx % mult  # crops start on the stride grid, as tiles do
    md = float(model.config.max_distance_px)

    def centre_outputs(d: int) -> dict[str, torch.Tensor]:
        top, left = cy - d, cx - d
        crop = image[:, top:cy + probe + d, left:cx + probe + d][None]
        with torch.no_grad():
            out = _comparable(model(crop), md)
        return {k: v[..., d:d + probe, d:d + probe] for k, v in out.items()}

    was_training = model.training
    model.eval()
    try:
        ref = centre_outputs(max_radius)
        for d in range(step, max_radius, step):
            got = centre_outputs(d)
            if max(float((got[k] - ref[k]).abs().max()) for k in ref) <= tol:
                return d
    finally:
        model.train(was_training)
    return max_radius


@dataclass(frozen=True)
class TilingDefaults:
    """Tile side and overlap (px) derived from a model's reach, with the numbers they came from."""

    tile_size_px: int
    overlap_px: int
    context_px: int
    object_extent_px: float
    cost_ratio: float  # (T / (T - O))²: scene pixels the model sees per scene pixel

    def describe(self) -> str:
        return (f"overlap {self.overlap_px} px = 2 x (object extent {self.object_extent_px:g} + context "
                f"{self.context_px} px); tile {self.tile_size_px} px: each pixel seen {self.cost_ratio:.2f}x")


def tiling_for(model: nn.Module, context_px: int, *, vote_error_px: float = 0.0, max_cost_ratio: float = 1.3,
               max_tile_px: int = 4096) -> TilingDefaults:
    """Overlap that lets every owned object be predicted as in the whole scene, and the smallest tile whose
    overhead ``(T / (T - O))²`` is at most ``max_cost_ratio``.

    Args:
        model: a SmallObjectNet (its ``config.max_distance_px`` bounds an object's extent from its centroid).
        context_px: the model's context radius (:func:`context_radius_px`, or :func:`receptive_field_radius`
            for exactness).
        vote_error_px: how far a voted centroid may sit from the object's centre (``DecodeConfig
            .max_vote_error_px``).
        max_cost_ratio: > 1.
        max_tile_px: upper bound on the tile (memory: one tile's activations).

    Returns:
        :class:`TilingDefaults`; the tile is a multiple of the model's input stride.
    """
    if not max_cost_ratio > 1:
        raise SmallsegError(f"max_cost_ratio {max_cost_ratio}: must be > 1")
    extent = float(model.config.max_distance_px) + float(vote_error_px)
    overlap = overlap_for(extent + max(0, int(context_px)))
    mult = int(getattr(model, "input_multiple", 16))
    # (T / (T - O))² <= r  <=>  T >= O / (1 - 1 / sqrt(r))
    tile = math.ceil(overlap / (1 - 1 / math.sqrt(max_cost_ratio)) / mult) * mult
    if tile > max_tile_px:
        raise SmallsegError(f"tiling: overlap {overlap} px needs tiles of {tile} px for a {max_cost_ratio}x "
                            f"overhead, more than {max_tile_px} px; accept a higher overhead or less context")
    return TilingDefaults(tile, overlap, int(context_px), extent, (tile / (tile - overlap)) ** 2)
