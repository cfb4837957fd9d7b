"""Centroid-vote decoding: head maps of one tile -> :class:`~smallseg.instances.Instances`.

Re-derived from the CentroidNetV2 description (Dijkstra et al. 2021), not ported:

1. Foreground = pixels with ``1 - p(background) >= fg_threshold``.
2. Every foreground pixel votes at ``pixel + vector * max_distance_px``. Votes are accumulated (weighted by
   foreground probability x distance-map value, so interior pixels, whose vectors are most reliable, count
   most) into a vote image, smoothed by a small Gaussian.
3. Local maxima of the vote image are candidate centres, refined to sub-pixel as the mean of nearby votes.
   Votes of a large object scatter (a vector's error grows with the distance it spans) and can form several
   maxima. Candidates with fewer than ``min_votes`` votes, or far fewer than an object of their scale casts
   (``min_fill``: a stray clump in another object's halo), are dropped first; a candidate is merged into a
   stronger one when both (a) they are closer than ``merge_fraction``
   x the mean distance their voters' votes travelled (the object's scale) and (b) the vote image between
   them never drops below ``merge_valley_ratio`` x the weaker one's height (one mound, not two). Tiny
   touching objects have short votes and a deep valley between their centres, so they stay apart.
   Every vote belongs to the candidate peak nearest to its pixel (ties to the first in raster order); the
   votes of a dropped candidate pass to the one it merged into, or, if it had too few votes, to the
   surviving centre nearest to it.
4. Each foreground pixel whose vote lands near its centre (within ``max_vote_error_px``, or
   ``vote_error_fraction`` x the object's scale if larger) joins it. The rest,
   whose votes are ambiguous, are filled in by a marker watershed on the inverted distance map inside the
   foreground: the low-distance border between two touching objects is where the fronts meet. Without a
   distance map the fill is by geodesic proximity.
5. An object is kept if enough votes back it in absolute terms (``min_votes``) and relative to its size
   (``support`` = backing votes / area >= ``min_support``), it has ``min_area_px`` pixels, its distance map
   peaks at ``min_peak_distance`` or more, and its
   ``score = support x mean foreground probability x distance-map peak`` reaches ``min_score``. The
   distance target is normalised per object, so every real object, tiny or large, has a pixel near 1;
   a splinter of a larger object's border (a few pixels whose short vectors met) peaks low. Its class is the semantic class
   with the largest summed probability over its pixels; its centroid is the mean of its backing votes.

Array steps are numpy; the sequential ones (voting, 3x3 maxima, nearest-peak search, fragment merging,
the priority flood, per-object sums) are compiled loops in :mod:`smallseg.decode.kernels` (numba), about
twice as fast as the numpy/scipy/scikit-image calls they replaced on a trained model's tile. No Python loop
over objects or pixels; deterministic: same input, same output. The first decode in a new environment
compiles the loops (~5-10 s, once; cached on disk after).
Known limit of centroid voting: two objects with the same centroid (a ring around a dot) become one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import ndimage

from smallseg.decode import kernels
from smallseg.errors import SmallsegError
from smallseg.instances import Instances

# Votes are snapped to 1/1024 px before binning: float32 noise on an exact half-pixel centre (any object
# of even width) must not split one object's votes over two bins.
_SNAP = 1024.0
_MERGE_NEIGHBOURS = 6
_EIGHT = np.ones((3, 3), bool)


@dataclass
class DecodeConfig:
    """Decoding settings (see :func:`decode_instances` for their meaning); ``max_distance_px`` must be the
    model's ``config.max_distance_px``."""

    max_distance_px: float = 48.0
    fg_threshold: float = 0.5
    vote_sigma_px: float = 0.5
    max_vote_error_px: float = 2.0
    vote_error_fraction: float = 0.25
    merge_fraction: float = 1.0
    merge_valley_ratio: float = 0.5
    min_fill: float = 0.02
    min_votes: float = 2.0
    min_support: float = 0.3
    min_peak_distance: float = 0.25
    min_area_px: int = 2
    min_score: float = 0.05


def decode_instances(
    semantic_probs: np.ndarray,
    centroid: np.ndarray,
    distance: np.ndarray | None = None,
    *,
    max_distance_px: float,
    fg_threshold: float = 0.5,
    vote_sigma_px: float = 0.5,
    max_vote_error_px: float = 2.0,
    vote_error_fraction: float = 0.25,
    merge_fraction: float = 1.0,
    merge_valley_ratio: float = 0.5,
    min_fill: float = 0.02,
    min_votes: float = 2.0,
    min_support: float = 0.3,
    min_peak_distance: float = 0.25,
    min_area_px: int = 2,
    min_score: float = 0.05,
) -> Instances:
    """Decode one tile's head maps into instances.

    Args:
        semantic_probs: (1 + C, H, W) float class probabilities (softmax), channel 0 = background.
        centroid: (2, H, W) float (dy, dx) to the object centre, divided by ``max_distance_px``.
        distance: (H, W) or (1, H, W) float normalised distance-to-border map in [0, 1] (sigmoid of the
            distance head), or None.
        max_distance_px: the model's centroid normaliser, px.
        fg_threshold: foreground if ``1 - p(background) >= fg_threshold``.
        vote_sigma_px: Gaussian sigma smoothing the vote image, px (0 = none). Larger merges scattered votes
            better; smaller keeps tiny touching objects (centres ~2 px apart) apart.
        max_vote_error_px: a vote within this distance of a centre backs it and assigns its pixel, px.
        vote_error_fraction: ... or within this fraction of the object's scale (mean vote length), if larger.
        merge_fraction: candidates closer than this x their scale may merge (see the module doc, step 3).
        merge_valley_ratio: ... if the vote image between them stays above this x the weaker one's height.
        min_fill: a candidate needs at least this fraction of the votes a compact object of its scale casts
            (pi * (1.5 * scale)^2, scale = mean vote length); fewer means a stray clump of another's votes.
        min_votes: backing votes an object needs.
        min_support: backing votes / area an object needs (1.0 = every pixel voted within the error radius).
        min_peak_distance: highest distance-map value an object needs (ignored without a distance map).
            Trained distance heads are under-confident (peaks of 0.4-0.5 on real objects, not 1.0), so
            the default is low; ``smallseg tune-decode`` picks the value for a given model.
        min_area_px: pixels an object needs.
        min_score: score an object needs.

    Returns:
        Instances with ``labels`` (H, W) int32 dense ids 1..N in raster order of their centres, class_ids
        1-based, scores in [0, 1], centroids_yx = voted centres (sub-pixel).
    """
    probs = np.asarray(semantic_probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise SmallsegError(f"semantic_probs: expected (1 + classes, H, W), got shape {probs.shape}")
    _, height, width = probs.shape
    vectors = np.asarray(centroid)
    if vectors.shape != (2, height, width):
        raise SmallsegError(f"centroid: expected shape (2, {height}, {width}), got {vectors.shape}")
    if distance is not None:
        distance = np.asarray(distance, dtype=np.float32)
        if distance.ndim == 3 and distance.shape[0] == 1:
            distance = distance[0]
        if distance.shape != (height, width):
            raise SmallsegError(f"distance: expected shape ({height}, {width}), got {distance.shape}")
    if not max_distance_px > 0:
        raise SmallsegError(f"max_distance_px={max_distance_px}: must be > 0")

    fg_prob = 1.0 - probs[0]
    fg = fg_prob >= fg_threshold
    if not fg.any():
        return Instances.empty((height, width))

    # 2. Votes (continuous, snapped) and the weighted vote image.
    (ys, xs, vy, vx, _, bin_y, bin_x, _, vote_length, votes, sum_y, sum_x) = kernels.cast_votes(
        np.ascontiguousarray(fg_prob), np.float32(fg_threshold), np.ascontiguousarray(vectors),
        fg_prob if distance is None else np.ascontiguousarray(distance), distance is not None,
        float(max_distance_px), _SNAP,
    )
    # truncate=2.5: a 3-tap kernel at the default sigma (the next tap would weigh 3e-4).
    smooth = votes.astype(np.float32)  # float32 halves the filters' memory traffic; peaks need no more
    if vote_sigma_px > 0:
        smooth = _gaussian_smooth(smooth, vote_sigma_px)

    # 3. Candidate centres: local maxima (a plateau counts once), refined to sub-pixel.
    peak_y, peak_x = _local_maxima(smooth)
    if len(peak_y) == 0:
        return Instances.empty((height, width))
    centres = kernels.refine_centres(votes, sum_y, sum_x, peak_y, peak_x)
    nearest = _nearest(peak_y, peak_x, bin_y, bin_x, (height, width))  # each vote's nearest peak pixel
    # Scale of each candidate's object: the mean distance its votes travelled (capped: the model is
    # designed for objects within max_distance_px, and an untrained model's votes go anywhere).
    scale = np.minimum(_mean_by_index(vote_length, nearest, len(centres)), max_distance_px)
    # Candidates that cannot become objects go first (their voters join the nearest remaining centre):
    # too few votes at all, or a stray clump in the halo of a large object's votes: long votes (large
    # scale) but far fewer of them than an object of that scale casts.
    n_votes = np.bincount(nearest, minlength=len(centres))
    plausible = (n_votes >= max(min_votes, 1)) & (n_votes >= min_fill * np.pi * (1.5 * scale) ** 2)
    candidates = np.nonzero(plausible)[0]
    if len(candidates) == 0:
        return Instances.empty((height, width))
    into = _merge_fragments(
        centres[candidates], scale[candidates], smooth, peak_y[candidates], peak_x[candidates],
        merge_fraction, merge_valley_ratio,
    )
    keep = candidates[into == np.arange(len(candidates))]

    # 4. Assignment: confident votes by their centre, the rest by watershed on the distance map.
    # The voters of a merged fragment join the centre it merged into; those of an implausible candidate
    # join the surviving centre nearest to it (its votes cluster around it).
    successor = np.empty(len(centres), np.int64)
    successor[candidates] = candidates[into]
    implausible = np.nonzero(~plausible)[0]
    if len(implausible):
        successor[implausible] = keep[_nearest(centres[keep, 0], centres[keep, 1], centres[implausible, 0],
                                                centres[implausible, 1], (height, width))]
    new_index = np.full(len(centres), -1, np.int64)
    new_index[keep] = np.arange(len(keep))
    centres = centres[keep]
    nearest = new_index[successor[nearest]]
    scale = np.minimum(_mean_by_index(vote_length, nearest, len(centres)), max_distance_px)
    radius = np.maximum(max_vote_error_px, vote_error_fraction * scale)
    labels = np.zeros((height, width), np.int32)
    confident = kernels.assign_confident(ys, xs, vy, vx, nearest, centres, radius, labels)
    if confident.any() and not confident.all():
        _fill_unsure(labels, fg, distance)

    # 5. Per-object facts and filtering.
    n = len(centres)
    area, fg_sum, peak_distance, backing, voted_y, voted_x, class_sums = kernels.object_stats(
        labels, ys, xs, fg_prob, np.ascontiguousarray(probs), fg_prob if distance is None else distance,
        distance is not None, n, confident, nearest, vy, vx,
    )
    safe_area = np.maximum(area, 1.0)
    support = np.minimum(backing / safe_area, 1.0)
    mean_fg = fg_sum / safe_area
    score = support * mean_fg * peak_distance
    keep = (area >= min_area_px) & (backing >= max(min_votes, 1)) & (support >= min_support) & (score >= min_score)
    if distance is not None:
        keep &= peak_distance >= min_peak_distance
    safe_backing = np.maximum(backing, 1.0)
    voted_y /= safe_backing
    voted_x /= safe_backing
    class_ids = np.argmax(class_sums, axis=1).astype(np.int32) + 1

    new_id = np.zeros(n + 1, np.int32)
    new_id[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    labels = new_id[labels]
    kept = int(keep.sum())
    return Instances(
        labels=labels,
        ids=np.arange(1, kept + 1, dtype=np.int64),
        class_ids=class_ids[keep],
        scores=np.clip(score[keep], 0.0, 1.0).astype(np.float32),
        centroids_yx=np.stack([voted_y[keep], voted_x[keep]], axis=1).astype(np.float64).reshape(kept, 2),
    )


def decode_batch(outputs: dict[str, torch.Tensor], config: DecodeConfig) -> list[Instances]:
    """Decode a batch of raw model outputs (logits) into one :class:`Instances` per image.

    Args:
        outputs: ``semantic`` (B, 1+C, H, W) logits, ``centroid`` (B, 2, H, W), optional ``distance``
            (B, 1, H, W) logits, on any device.
        config: decoding settings; ``config.max_distance_px`` must match the model's.

    Returns:
        list of B Instances (tile pixel coordinates).
    """
    missing = [k for k in ("semantic", "centroid") if k not in outputs]
    if missing:
        raise SmallsegError(f"decode: the model has no {' / '.join(missing)} head; decoding needs both")
    with torch.no_grad():
        probs = torch.softmax(outputs["semantic"].detach().float(), dim=1).cpu().numpy()
        vectors = outputs["centroid"].detach().float().cpu().numpy()
        dist = None
        if "distance" in outputs:
            dist = torch.sigmoid(outputs["distance"].detach().float())[:, 0].cpu().numpy()
    settings = asdict(config)
    return [
        decode_instances(probs[b], vectors[b], None if dist is None else dist[b], **settings)
        for b in range(probs.shape[0])
    ]


def _fill_unsure(labels: np.ndarray, fg: np.ndarray, distance: np.ndarray | None) -> None:
    """Give the unlabelled foreground pixels (``fg & labels == 0``) the label of the watershed, in place.

    The watershed floods the inverted distance map from the labelled pixels, 4-connected, inside the
    foreground (without a distance map: by geodesic proximity, first reached first).
    """
    landscape = -distance if distance is not None else np.zeros(fg.shape, np.float32)
    kernels.flood_fill(labels, fg, np.ascontiguousarray(landscape, np.float32))


def _gaussian_smooth(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian smoothing with zeros outside, truncated at 2.5 sigma (float32 in, float32 out).

    At sigma < 0.6 px the kernel has 3 taps (the next would weigh < 1e-3): done with shifted views,
    several times faster than ``ndimage.gaussian_filter`` on a tile, which is used for wider kernels.
    """
    if int(2.5 * sigma_px + 0.5) > 1:
        return ndimage.gaussian_filter(image, sigma_px, mode="constant", truncate=2.5)
    side = np.float32(np.exp(-0.5 / sigma_px**2))
    side, centre = side / (1 + 2 * side), np.float32(1) / (1 + 2 * side)
    out = image * centre
    out[1:] += image[:-1] * side
    out[:-1] += image[1:] * side
    result = out * centre
    result[:, 1:] += out[:, :-1] * side
    result[:, :-1] += out[:, 1:] * side
    return result


def _local_maxima(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of positive 3x3 local maxima in raster order; an 8-connected plateau gives its first pixel."""
    ys, xs, is_max, touching = kernels.local_maxima(np.ascontiguousarray(image, np.float32))
    if touching:  # rare: equal neighbouring maxima; keep the first pixel of each plateau
        plateaus, _ = ndimage.label(is_max, structure=np.ones((3, 3), bool))
        component = plateaus[ys, xs]
        _, first = np.unique(component, return_index=True)  # raster order: first index = first pixel
        keep = np.zeros(len(ys), bool)
        keep[first] = True
        ys, xs = ys[keep], xs[keep]
    return ys.astype(np.int64), xs.astype(np.int64)


def _nearest(point_y: np.ndarray, point_x: np.ndarray, query_y: np.ndarray, query_x: np.ndarray,
             shape: tuple[int, int]) -> np.ndarray:
    """(Q,) index of the point (P >= 1) nearest to each query on a tile of ``shape`` (Euclidean; ties to the
    lower index)."""
    # grid cells about as large as the mean spacing of the points: a query then looks at a few cells
    cell = max(2.0, float(np.sqrt(shape[0] * shape[1] / len(point_y))))
    as_float = lambda a: np.ascontiguousarray(a, np.float64)  # noqa: E731
    return kernels.nearest_points(as_float(point_y), as_float(point_x), as_float(query_y), as_float(query_x), cell)


def _mean_by_index(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``values`` grouped by ``index`` in 0..n-1 (0 for empty groups)."""
    return np.bincount(index, weights=values, minlength=n) / np.maximum(np.bincount(index, minlength=n), 1)


def _merge_fragments(
    centres: np.ndarray,
    scale: np.ndarray,
    smooth: np.ndarray,
    peak_y: np.ndarray,
    peak_x: np.ndarray,
    merge_fraction: float,
    valley_ratio: float,
) -> np.ndarray:
    """(n,) index of the candidate each candidate ends up in: itself, or the one its fragment merges into.

    Candidate ``i`` is a fragment of a stronger ``j`` (higher vote image value, ties to the lower index) that
    lies within ``merge_fraction * max(scale_i, scale_j)`` when the vote image sampled along the segment i-j
    never drops below ``valley_ratio * height_i``; it merges into the nearest such ``j``, and on along the
    chain (each step is to a stronger candidate, so chains end) to a candidate that is no fragment.
    """
    n = len(centres)
    reach = merge_fraction * scale
    # Distinct 3x3 maxima are >= 2 px apart: a reach below that cannot pair anything.
    into = np.arange(n)
    if n < 2 or reach.max() < 2.0:
        return into
    # The stronger candidate that absorbs a fragment is among its few nearest ones; bounding the pairs
    # keeps chaotic (untrained-model) vote images cheap.
    cell = max(2.0, float(np.sqrt(smooth.size / n)))
    into = kernels.merge_targets(np.ascontiguousarray(centres, np.float64), reach.astype(np.float64),
                                 smooth[peak_y, peak_x], smooth, _MERGE_NEIGHBOURS, float(valley_ratio), cell)
    while True:
        hop = into[into]
        if np.array_equal(hop, into):
            return into
        into = hop
