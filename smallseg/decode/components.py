"""Connected-component decoding: the baseline for models without a centroid head.

This is what a plain semantic segmentation model (e.g. smp FPN) offers for instances: threshold the
foreground, label 8-connected regions, and call each region an object. Touching objects merge into one,
which is exactly the failure centroid voting exists to fix; the ablation benchmark measures the difference.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from smallseg.decode.centroids import DecodeConfig, decode_batch
from smallseg.decode.refine import refine_batch
from smallseg.errors import SmallsegError
from smallseg.instances import Instances

_EIGHT = np.ones((3, 3), bool)


def decode_components(semantic_probs: np.ndarray, *, fg_threshold: float = 0.5, min_area_px: int = 2) -> Instances:
    """Objects = 8-connected foreground regions.

    Args:
        semantic_probs: (1 + C, H, W) float class probabilities, channel 0 = background.
        fg_threshold: foreground where ``1 - p(background) >= fg_threshold``.
        min_area_px: smaller regions are dropped.

    Returns:
        Instances with dense ids 1..N; class = class with the largest summed probability over the region;
        score = mean foreground probability over the region; centroid = the region's centre of mass.
    """
    probs = np.asarray(semantic_probs, np.float32)
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise SmallsegError(f"semantic_probs: expected (1 + classes, H, W), got shape {probs.shape}")
    fg_prob = 1.0 - probs[0]
    labels, n = ndimage.label(fg_prob >= fg_threshold, structure=_EIGHT)
    if n == 0:
        return Instances.empty(labels.shape)
    index = np.arange(1, n + 1)
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    keep = area >= min_area_px
    remap = np.zeros(n + 1, np.int32)
    remap[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    labels = remap[labels]
    index = index[keep]
    if len(index) == 0:
        return Instances.empty(labels.shape)
    new_index = np.arange(1, len(index) + 1)
    class_sums = np.stack([ndimage.sum_labels(probs[c], labels, new_index) for c in range(1, probs.shape[0])], 1)
    scores = ndimage.mean(fg_prob, labels, new_index)
    centroids = np.asarray(ndimage.center_of_mass(np.ones(labels.shape, np.uint8), labels, new_index))
    return Instances(
        labels=labels,
        ids=new_index.astype(np.int64),
        class_ids=(np.argmax(class_sums, axis=1) + 1).astype(np.int32),
        scores=np.clip(scores, 0, 1).astype(np.float32),
        centroids_yx=centroids.reshape(-1, 2).astype(np.float64),
    )


def decode_outputs(outputs: dict[str, torch.Tensor], config: DecodeConfig) -> list[Instances]:
    """Decode a batch of model outputs: centroid voting when the model has a centroid head, otherwise
    connected components of the semantic map."""
    if "centroid" in outputs:
        return refine_batch(outputs, decode_batch(outputs, config))
    if "semantic" not in outputs:
        raise SmallsegError("decode: the model has no semantic head; nothing to decode objects from")
    probs = torch.softmax(outputs["semantic"].detach().float(), dim=1).cpu().numpy()
    found = [decode_components(p, fg_threshold=config.fg_threshold, min_area_px=config.min_area_px) for p in probs]
    return refine_batch(outputs, found)  # issue #17: re-placed edges when the model has a boundary head
