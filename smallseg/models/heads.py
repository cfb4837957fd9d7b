"""Output heads at full input resolution (CentroidNetV2-style).

- ``semantic``: (B, 1 + classes, H, W) logits, channel 0 = background.
- ``centroid``: (B, 2, H, W) (dy, dx) from the pixel to its object's centroid, divided by
  ``max_distance_px``. Linear output, not tanh: targets lie in [-1, 1] only for objects whose radius is
  within ``max_distance_px``; tanh would saturate (vanishing gradient) near the largest objects and could not
  represent a larger one at all, while the Euclidean loss keeps a linear output well conditioned.
- ``distance``: (B, 1, H, W) logits of the per-object normalised distance to the border (1 at an object's
  most interior pixel, small at its border, 0 on background); sigmoid gives the map in [0, 1].
- ``boundary`` (optional, ``config.boundary_head == "signed_distance"``; issue #17): (B, 1, H, W) signed
  distance from the pixel centre to its object's edge, divided by ``BOUNDARY_CLIP_PX`` (linear): positive
  inside an object, negative outside every object, ``+-0.5 / BOUNDARY_CLIP_PX`` on the pixels either side of
  an edge, so its zero level runs along the pixel edges of the true outline (sub-pixel when it is not on
  one). Clipped at +-1 (``BOUNDARY_CLIP_PX`` px): only the few pixels around an edge matter for placing it.
  Trained by :func:`smallseg.train.losses.head_losses`, used by :mod:`smallseg.decode.refine`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

BOUNDARY_CLIP_PX = 4.0  # signed-distance targets are clipped to +-4 px and divided by this


def head_channels(name: str, classes: int) -> int:
    """Number of output channels of head ``name`` for ``classes`` object classes."""
    return {"semantic": 1 + classes, "centroid": 2, "distance": 1, "boundary": 1}[name]


class Head(nn.Conv2d):
    """One 3x3 conv from the shared full-resolution features to the head's outputs (linear), as smp's
    SegmentationHead. Task-specific capacity sits below, at coarser strides, where it is cheap: a 3x3
    conv + BN + ReLU per head at full resolution would cost more CPU time than the whole decoder."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 3, padding=1)


def build_heads(in_channels: int, heads: Sequence[str], classes: int, *,
                boundary_head: str | None = None) -> nn.ModuleDict:
    """One :class:`Head` per enabled head name, keyed by name (order preserved), plus ``boundary`` last
    when ``boundary_head`` is set (one more 3x3 conv at full resolution: ~1 % of a forward pass)."""
    names = list(heads) + (["boundary"] if boundary_head is not None else [])
    return nn.ModuleDict({name: Head(in_channels, head_channels(name, classes)) for name in names})
