"""Test-time augmentation (TTA) as one model-level wrapper: flips / 90° rotations, maps averaged before decoding.

:func:`with_tta` wraps a :class:`~smallseg.models.net.SmallObjectNet` into a module with the same ``forward``
contract (``{head: (B, k, H, W) float32}``) and the same ``config``, so every pipeline (``predict_array``,
``predict_geotiff`` / ``tile-and-predict``, ``predict_volume``) uses it tile by tile as it would the model:
tiling, stitching and ownership stay exactly as they are, only the per-tile maps change.

For each transform ``g`` of the dihedral group of the square (identity, rotations by 90/180/270°, and each of
those after a left-right flip) the model sees ``g(x)``; its outputs are mapped back with ``g⁻¹`` and averaged.
Scalar maps (semantic logits, distance logits, boundary distance) are mapped back as images. The centroid head
is a vector field ``(dy, dx)``: besides moving the pixels back, its two components are transformed by the
inverse of ``g``'s linear part (a left-right flip negates ``dx``; a 90° counter-clockwise rotation maps an
offset ``(dy, dx)`` to ``(-dx, dy)``), so an averaged vector still points at the centroid in the input's frame.

Logits are averaged (not probabilities): cheap and what the decoder's thresholds were tuned on up to the
averaging; a model equivariant by construction gives exactly its own output (tests/test_tta.py).

Cost: ``len(transforms)`` forward passes per tile (8 for ``"d4"``, 4 for ``"flips"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from smallseg.errors import SmallsegError

VECTOR_HEADS = ("centroid",)  # heads whose two channels are a (dy, dx) offset, not two scalar maps


@dataclass(frozen=True)
class Transform:
    """``x -> rot90(flip_w(x) if flip else x, k)`` on the last two axes (``torch.rot90`` direction: counter-
    clockwise for k = 1 as an image is shown, rows down)."""

    k: int
    flip: bool

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip:
            x = torch.flip(x, dims=(-1,))
        return torch.rot90(x, self.k, dims=(-2, -1)) if self.k % 4 else x

    def invert(self, y: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`apply` on a (B, C, H', W') map."""
        y = torch.rot90(y, -self.k, dims=(-2, -1)) if self.k % 4 else y
        return torch.flip(y, dims=(-1,)) if self.flip else y

    def matrix(self) -> torch.Tensor:
        """(2, 2) float32 M with ``offset_in_transformed_frame = M @ (dy, dx)``.

        A left-right flip maps (dy, dx) to (dy, -dx); one ``rot90`` step maps the pixel (r, c) of an H x W map to
        (W - 1 - c, r), so an offset (dy, dx) to (-dx, dy).
        """
        flip = torch.tensor([[1.0, 0.0], [0.0, -1.0]]) if self.flip else torch.eye(2)
        rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
        return torch.linalg.matrix_power(rot, self.k % 4) @ flip


def untransform(outputs: dict[str, torch.Tensor], g: Transform) -> dict[str, torch.Tensor]:
    """The model's outputs on ``g(x)`` brought back to ``x``'s frame: every map moved back with ``g⁻¹``, and the
    (dy, dx) channels of a vector head (:data:`VECTOR_HEADS`) multiplied by ``g``'s inverse linear part."""
    back = {}
    for name, y in outputs.items():
        y = g.invert(y)
        if name in VECTOR_HEADS:
            inverse = torch.linalg.inv(g.matrix()).to(device=y.device, dtype=y.dtype)
            y = torch.einsum("ij,bjhw->bihw", inverse, y)
        back[name] = y
    return back


TRANSFORMS = {
    "d4": tuple(Transform(k, f) for f in (False, True) for k in range(4)),
    "flips": (Transform(0, False), Transform(0, True), Transform(2, True), Transform(2, False)),
    "none": (Transform(0, False),),
}
TTA_CHOICES = ("d4", "flips")  # what pipelines accept (besides off)


class TTAModel(nn.Module):
    """``model`` with test-time augmentation; same inputs, outputs and ``config``.

    Args:
        model: a SmallObjectNet (or any module returning ``{head: (B, k, H, W)}`` with a ``config``).
        transforms: ``"d4"`` (8: 4 rotations x flip), ``"flips"`` (4: identity, left-right, up-down, both)
            or ``"none"``.

    Forward: (B, C, H, W) float32 -> ``{head: (B, k, H, W)}``, the mean over the transforms of the inverse-
    transformed outputs (centroid vectors also rotated / flipped back, see the module docstring).
    """

    def __init__(self, model: nn.Module, transforms: str = "d4"):
        super().__init__()
        if transforms not in TRANSFORMS:
            raise SmallsegError(f"tta {transforms!r}: use one of {sorted(TRANSFORMS)}")
        self.model = model
        self.transforms = transforms
        self.config = model.config
        # The transforms as a (persistent) buffer: a run's model fingerprint (weights_fingerprint, the resume
        # markers) then differs between "d4", "flips" and no TTA, as the outputs do.
        codes = [[g.k, int(g.flip)] for g in TRANSFORMS[transforms]]
        self.register_buffer("tta_transforms", torch.tensor(codes, dtype=torch.int64))
        if hasattr(model, "input_multiple"):
            self.input_multiple = model.input_multiple

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        total: dict[str, torch.Tensor] = {}
        steps = TRANSFORMS[self.transforms]
        for g in steps:
            for name, y in untransform(self.model(g.apply(x)), g).items():
                total[name] = y if name not in total else total[name] + y
        return {name: y / len(steps) for name, y in total.items()}


def with_tta(model: nn.Module, tta: bool | str | None = "d4") -> nn.Module:
    """``model`` wrapped for test-time augmentation.

    ``tta``: None leaves ``model`` as given (wrapped or not: the pipelines' default); False / ``"none"`` give
    the plain model; True means ``"d4"``. An already wrapped model is re-wrapped around its inner model (never
    augmentations of augmentations).
    """
    if tta is None:
        return model
    if isinstance(model, TTAModel):
        model = model.model
    if tta is False or tta == "none":
        return model
    if tta is True:
        tta = "d4"
    if not isinstance(tta, str):
        raise SmallsegError(f"tta {tta!r}: use True, False or one of {sorted(TRANSFORMS)}")
    return TTAModel(model, tta)
