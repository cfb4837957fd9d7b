"""Losses of the three heads (CentroidNetV2: cross-entropy + Euclidean-distance loss, plus the border map).

Ignored pixels (``targets["ignore"]``: not labelled, outside a labelled area) contribute nothing to any term: the
semantic and distance means run over the other pixels only, the centroid mean over ``centroid_mask`` (object
pixels that are labelled). Box labels add centroid-only pixels (in ``centroid_mask`` but ``ignore``d by the
semantic term) and ``distance_ignore`` (the distance term skips boxed objects whole).

- ``semantic``: cross-entropy over ``1 + classes`` channels, ignored pixels excluded.
- ``centroid``: mean over object pixels of the Euclidean norm ``||v_pred - v_target||_2`` (not squared). Its
  gradient has unit length whatever the error, so sub-pixel errors on small objects keep pulling as hard as
  large ones (a squared loss fades exactly where tiny objects need precision) and outlier pixels cannot
  dominate. Units: fractions of ``max_distance_px``.
- ``distance``: binary cross-entropy with logits against the soft [0, 1] distance map, over all non-ignored
  pixels (background target 0). BCE rather than L1 on a sigmoid: its gradient ``sigmoid(z) - t`` does not
  vanish when the sigmoid saturates, and its scale matches the semantic cross-entropy.
- ``boundary`` (only when the model has the contour-refinement head, issue #17): boundary-aware L1 on the
  clipped signed distance to the edge, each pixel weighted ``1 + BOUNDARY_EDGE_WEIGHT`` within 1.5 px of an
  edge and 1 elsewhere (weighted mean, so the term's scale does not depend on how much edge a crop holds).
  L1 for the same reason as the centroid term: a half-pixel error at the edge, the one that moves the
  outline, keeps a full gradient. Units: fractions of ``BOUNDARY_CLIP_PX``. Pixels of ``distance_ignore``
  are left out. Models without the head get exactly the old three terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from smallseg.errors import SmallsegError
from smallseg.models.heads import BOUNDARY_CLIP_PX

_EPS = 1e-8  # keeps the norm's gradient finite at zero error
BOUNDARY_EDGE_WEIGHT = 4.0  # extra weight of the pixels within 1.5 px of an edge in the boundary term


def head_losses(
    outputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    *,
    semantic_weight: float = 1.0,
    centroid_weight: float = 1.0,
    distance_weight: float = 1.0,
    boundary_weight: float = 1.0,
    class_weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Weighted sum of the losses of the heads present in ``outputs``.

    Args:
        outputs: model output, ``semantic`` (B, 1+C, H, W) logits, ``centroid`` (B, 2, H, W),
            ``distance`` (B, 1, H, W) logits, ``boundary`` (B, 1, H, W) signed distance; any subset.
        targets: batch from :func:`smallseg.train.targets.collate_targets` (same device as outputs).
        semantic_weight, centroid_weight, distance_weight, boundary_weight: multipliers of each part in ``total``.
        class_weights: optional (1+C,) cross-entropy weights per semantic channel.

    Returns:
        ``{"total": scalar, "<head>": scalar per present head}`` (unweighted parts; ``total`` weighted).
    """
    ignore = targets["ignore"].bool()
    valid = ~ignore
    parts: dict[str, torch.Tensor] = {}
    weights = {"semantic": semantic_weight, "centroid": centroid_weight, "distance": distance_weight,
               "boundary": boundary_weight}
    if not any(k in outputs for k in weights):
        raise SmallsegError(f"head_losses: outputs have none of the heads {list(weights)}")

    if "semantic" in outputs:
        logits = outputs["semantic"]
        target = targets["semantic"].long().masked_fill(ignore, -100)
        if valid.any():
            parts["semantic"] = F.cross_entropy(logits, target, weight=class_weights, ignore_index=-100)
        else:
            parts["semantic"] = logits.sum() * 0.0

    if "centroid" in outputs:
        pred = outputs["centroid"]
        mask = targets["centroid_mask"].bool()  # labelled object pixels (incl. centroid-only ones)
        error = torch.sqrt(((pred - targets["centroid"]) ** 2).sum(dim=1) + _EPS)  # (B, H, W)
        parts["centroid"] = error[mask].mean() if mask.any() else pred.sum() * 0.0

    if "distance" in outputs:
        logits = outputs["distance"][:, 0]
        valid = ~targets.get("distance_ignore", targets["ignore"]).bool()
        if valid.any():
            per_pixel = F.binary_cross_entropy_with_logits(logits, targets["distance"].float(), reduction="none")
            parts["distance"] = per_pixel[valid].mean()
        else:
            parts["distance"] = logits.sum() * 0.0

    if "boundary" in outputs:
        pred = outputs["boundary"][:, 0]
        target = targets["boundary"].float()
        valid = ~targets.get("distance_ignore", targets["ignore"]).bool()
        near_edge = target.abs() <= 1.5 / BOUNDARY_CLIP_PX
        weight = (1.0 + BOUNDARY_EDGE_WEIGHT * near_edge.float()) * valid.float()
        if valid.any():
            parts["boundary"] = ((pred - target).abs() * weight).sum() / weight.sum()
        else:
            parts["boundary"] = pred.sum() * 0.0

    total = sum(weights[k] * v for k, v in parts.items())
    return {"total": total, **parts}
