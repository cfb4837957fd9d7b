"""Instance labels -> head targets (what each head of the model should output).

Per pixel:

- ``semantic``: class id (0 = background).
- ``centroid``: (dy, dx) from the pixel to its object's centre of mass, divided by ``max_distance_px``;
  defined inside objects only (``centroid_mask``). A vote cast at ``pixel + centroid * max_distance_px``
  lands exactly on the centre of mass, which is what decoding looks for.
- ``distance``: Euclidean distance to the nearest pixel outside the object (another object, background or
  the image edge), divided by the object's own maximum: 1 at its most interior pixel, ``1/max`` on its
  border, 0 on background. Per-object normalisation gives tiny and large objects the same range, and two
  touching objects are each low along their shared border, which is what separates them.
- ``boundary``: signed distance from the pixel centre to its object's edge (issue #17, the contour-refinement
  head): inside an object ``edt_in - 0.5`` (``edt_in`` = Euclidean distance to the nearest pixel of another
  object or background), outside every object ``-(edt_out - 0.5)`` (to the nearest object pixel), clipped to
  ``+-BOUNDARY_CLIP_PX`` and divided by it. The pixels either side of an edge get ``+-0.5`` px, so the zero
  level lies on the pixel edge between them; a shared border between two objects is an edge of each. Inside,
  the image (crop) edge counts as an edge, as for ``distance`` (the same distance transforms; an object a
  tile owns lies wholly inside it). Masked like ``distance``.
- ``ignore``: pixels excluded from the semantic loss (negative instance ids or negative classes, e.g. -1 for
  "unlabelled" regions, and centroid-only pixels).
- ``distance_ignore``: pixels excluded from the distance loss: ``ignore`` plus every pixel of an object that
  has centroid-only pixels (a box label says nothing about the object's shape).

Centroid-only pixels (box labels, :mod:`smallseg.data.labels.boxes`): object pixels whose class is
``<= WEAK_CLASS_OFFSET`` (class ``WEAK_CLASS_OFFSET - c``). They get centroid vectors (to the centre of mass of
all the object's pixels) and nothing else.

Objects cut by the tile edge get the centre of their visible part, consistent with decoding a tile.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from smallseg.errors import SmallsegError
from smallseg.models.heads import BOUNDARY_CLIP_PX

TARGET_KEYS = ("semantic", "centroid", "centroid_mask", "distance", "boundary", "ignore", "distance_ignore")
WEAK_CLASS_OFFSET = -1000  # as smallseg.data.labels.common.WEAK_CLASS_OFFSET


def encode_targets(
    instances: np.ndarray,
    classes: np.ndarray | None = None,
    max_distance_px: float = 48.0,
) -> dict[str, np.ndarray]:
    """Compute the head targets of one image.

    Args:
        instances: (H, W) integer instance ids; 0 = background, > 0 = object (ids need not be dense),
            < 0 = ignore.
        classes: (H, W) integer class per pixel (1-based on objects; < 0 = ignore), or None for a single
            class (every object pixel is class 1).
        max_distance_px: normaliser of the centroid vectors (the model's ``config.max_distance_px``).

    Returns:
        dict of numpy arrays:
        ``semantic`` (H, W) int64; ``centroid`` (2, H, W) float32 (dy, dx) / max_distance_px;
        ``centroid_mask`` (H, W) bool (object pixels, not ignored); ``distance`` (H, W) float32 in [0, 1];
        ``boundary`` (H, W) float32 in [-1, 1] (signed distance to the edge / ``BOUNDARY_CLIP_PX``);
        ``ignore`` (H, W) bool; ``distance_ignore`` (H, W) bool.
    """
    instances = np.asarray(instances)
    if instances.ndim != 2 or not np.issubdtype(instances.dtype, np.integer):
        raise SmallsegError(f"instances: expected a 2D integer label image, got {instances.dtype} {instances.shape}")
    if not max_distance_px > 0:
        raise SmallsegError(f"max_distance_px={max_distance_px}: must be > 0")
    h, w = instances.shape
    ignore = instances < 0
    objects = instances > 0
    weak = np.zeros((h, w), bool)
    if classes is None:
        semantic = objects.astype(np.int64)
    else:
        classes = np.asarray(classes)
        if classes.shape != instances.shape:
            raise SmallsegError(f"classes: shape {classes.shape} differs from instances {instances.shape}")
        weak = objects & (classes <= WEAK_CLASS_OFFSET)
        ignore |= (classes < 0) & ~weak
        semantic = np.where(objects & ~weak, classes, 0).astype(np.int64)
        unclassed = objects & ~weak & ~ignore & (semantic == 0)
        if unclassed.any():
            raise SmallsegError(
                f"classes: {int(unclassed.sum())} object pixels have class 0; give every object pixel a class >= 1"
            )
    semantic[ignore] = 0

    # Dense ids 1..N so per-object lookups are plain array indexing.
    ids, inverse = np.unique(np.where(objects, instances, 0), return_inverse=True)
    dense = inverse.reshape(h, w).astype(np.int32)
    if ids[0] != 0:  # no background pixel at all: shift so 0 stays "no object"
        dense += 1
    n = int(dense.max())

    centroid = np.zeros((2, h, w), np.float32)
    distance = np.zeros((h, w), np.float32)
    inside_sdf = np.zeros((h, w), np.float32)
    if n:
        index = np.arange(1, n + 1)
        centres = np.asarray(ndimage.center_of_mass(np.ones((h, w), np.uint8), dense, index)).reshape(n, 2)
        lookup = np.zeros((n + 1, 2), np.float64)
        lookup[1:] = centres
        yy, xx = np.nonzero(dense)
        obj = dense[yy, xx]
        centroid[0, yy, xx] = (lookup[obj, 0] - yy) / max_distance_px
        centroid[1, yy, xx] = (lookup[obj, 1] - xx) / max_distance_px
        for label, box in enumerate(ndimage.find_objects(dense), start=1):
            if box is None:
                continue
            # Pad by one background pixel so the image edge counts as border.
            mask = np.pad(dense[box] == label, 1)
            edt = ndimage.distance_transform_edt(mask)[1:-1, 1:-1]
            inside = mask[1:-1, 1:-1]
            distance[box][inside] = (edt[inside] / edt.max()).astype(np.float32)
            # The same distances give the boundary target inside (a nearest pixel of another label is
            # 4-adjacent to the object, so within this padded box).
            inside_sdf[box][inside] = (np.minimum(edt[inside] - 0.5, BOUNDARY_CLIP_PX) / BOUNDARY_CLIP_PX)

    boundary = signed_edge_distance(dense, objects, inside=inside_sdf)
    centroid_mask = objects & ~ignore
    distance_ignore = ignore.copy()
    if weak.any():
        # Objects known only by a box: the whole object is out of the distance loss, its ring out of the
        # semantic loss; its vectors are learnt everywhere on it.
        boxed = np.unique(dense[weak])
        distance_ignore |= np.isin(dense, boxed[boxed > 0])
        ignore |= weak
        semantic[weak] = 0
    centroid[:, ~centroid_mask] = 0.0
    distance[distance_ignore] = 0.0
    boundary[distance_ignore] = 0.0
    return {
        "semantic": semantic,
        "centroid": centroid,
        "centroid_mask": centroid_mask,
        "distance": distance,
        "boundary": boundary,
        "ignore": ignore,
        "distance_ignore": distance_ignore,
    }


def signed_edge_distance(dense: np.ndarray, objects: np.ndarray, clip_px: float = BOUNDARY_CLIP_PX, *,
                         inside: np.ndarray | None = None) -> np.ndarray:
    """The ``boundary`` target (see the module doc): (H, W) float32 in [-1, 1].

    Args:
        dense: (H, W) int dense object ids (0 = none).
        objects: (H, W) bool object pixels (``dense > 0``).
        clip_px: distances are clipped to this and divided by it.
        inside: the target on object pixels when the caller has it already (``encode_targets`` derives it
            from its per-object distance transforms, where the image edge counts as an edge, as for the
            ``distance`` target); None: computed here, the image edge not counting.
    """
    h, w = dense.shape
    out = np.full((h, w), -1.0, np.float32)
    if not objects.any():
        return out
    if not objects.all():
        outside = ndimage.distance_transform_edt(~objects)
        out[~objects] = -np.minimum(outside[~objects] - 0.5, clip_px) / clip_px
    if inside is not None:
        out[objects] = inside[objects]
        return out
    pad = int(np.ceil(clip_px)) + 1  # a window this much larger than the object holds its distances < clip
    for label, box in enumerate(ndimage.find_objects(dense), start=1):
        if box is None:
            continue
        window = tuple(slice(max(b.start - pad, 0), min(b.stop + pad, n)) for b, n in zip(box, (h, w)))
        mask = dense[window] == label
        # No zero in the window means the object fills it (a crop inside one object): all interior.
        edt = ndimage.distance_transform_edt(mask) if not mask.all() else np.full(mask.shape, clip_px + 1.0)
        out[window][mask] = (np.minimum(edt[mask] - 0.5, clip_px) / clip_px).astype(np.float32)
    return out


def collate_targets(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack per-image targets from :func:`encode_targets` into a batch of tensors.

    Returns: ``semantic`` (B, H, W) int64, ``centroid`` (B, 2, H, W) float32, ``centroid_mask`` (B, H, W)
    bool, ``distance`` (B, H, W) float32, ``boundary`` (B, H, W) float32, ``ignore`` (B, H, W) bool, ``distance_ignore`` (B, H, W) bool.
    """
    if not samples:
        raise SmallsegError("collate_targets: empty batch")
    return {key: torch.from_numpy(np.stack([s[key] for s in samples])) for key in TARGET_KEYS}
