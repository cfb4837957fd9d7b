"""Mask boundaries for Boundary IoU / Boundary AP (Cheng et al., CVPR 2021), computed on crops.

Definition (boundary-iou-api and faster-coco-eval): the boundary of a mask ``G`` at width ``d`` is
``G`` minus its erosion by a 3 x 3 square iterated ``d`` times, with everything outside the image counted as
background (so a mask cut by the image edge has a boundary along that edge). Iterating a 3 x 3 erosion ``d``
times equals one erosion by a ``(2d + 1) x (2d + 1)`` square, which is what :func:`mask_boundary` does.

Because the erosion only looks at the mask, the crop to the mask's bounding box (zeros beyond it) gives
exactly the same boundary as the full image: pixels outside the box are background either way, and so are
pixels outside the image.

Width ``d``:

- ``reference``: ``d = round(0.02 * sqrt(H**2 + W**2))``, at least 1, rounded as faster-coco-eval does
  (``std::round(x - 1e-10)``: halves round down; boundary-iou-api's Python ``round`` can differ only when
  ``0.02 * diagonal`` is exactly ``k + 0.5``). On a 10,000 x 10,000 scene that is 283 px, and every small
  object is all boundary: the reason smallseg's default is a fixed width.
- ``fixed``: ``d`` given in pixels, or in metres / millimetres and converted with the pixel size
  (``round(width / sqrt(pixel area))``, at least 1).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from smallseg.metrics.objects import ObjectSet, rles_from_crops

__all__ = ["reference_boundary_width_px", "mask_boundary", "boundary_rles"]


def reference_boundary_width_px(image_shape: tuple[int, int], dilation_ratio: float = 0.02) -> int:
    """Boundary width ``d`` of the reference definition for an (H, W) image, in pixels (at least 1)."""
    height, width = image_shape
    diagonal = math.sqrt(int(height) * int(height) + int(width) * int(width))
    x = dilation_ratio * diagonal - 1e-10
    # C's round(): halves away from zero (x > 0 here).
    return max(1, int(math.floor(x + 0.5)))


def mask_boundary(crop: np.ndarray, width_px: int) -> np.ndarray:
    """Boundary pixels of a cropped mask: the mask minus its erosion by a ``(2d+1)``-pixel square.

    Args:
        crop: (h, w) bool mask inside its bounding box (everything outside the crop is background).
        width_px: boundary width ``d`` in pixels, >= 1.

    Returns:
        (h, w) bool boundary, a subset of ``crop``.
    """
    crop = np.asarray(crop, bool)
    size = 2 * int(width_px) + 1
    if min(crop.shape, default=0) < size:
        return crop.copy()  # no square of that size fits: the whole mask is boundary
    eroded = ndimage.minimum_filter(crop.view(np.uint8), size=size, mode="constant", cval=0)
    return crop & (eroded == 0)


def boundary_rles(objects: ObjectSet, width_px_by_image: dict[int, int]) -> list[dict]:
    """Full-image pycocotools RLEs of every object's boundary.

    Args:
        objects: objects with crops and boxes.
        width_px_by_image: ``{image id: d in pixels}``.

    Returns:
        N compressed RLE dicts, in object order.
    """
    out: list[dict | None] = [None] * len(objects)
    for image_id, shape in objects.image_shapes.items():
        index = np.flatnonzero(objects.image_ids == image_id)
        if len(index) == 0:
            continue
        d = width_px_by_image[image_id]
        crops = [mask_boundary(objects.crops[i], d) for i in index.tolist()]
        for i, rle in zip(index.tolist(), rles_from_crops(crops, objects.boxes[index], shape)):
            out[i] = rle
    return out  # type: ignore[return-value]
