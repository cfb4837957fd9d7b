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
   Every vote belongs to the candidate nearest to it (KD-tree over the distinct vote pixels, or one
   distance transform when votes cover the whole tile); the votes of a dropped candidate pass to the one
   it merged into, or, if it had too few votes, to the surviving centre nearest to it.
4. Each foreground pixel whose vote lands near its centre (within ``max_vote_error_px``, or
   ``vote_error_fraction`` x the object's scale if larger) joins it. The rest,
   whose votes are ambiguous, are filled in by a marker watershed on the inverted distance map inside the
   foreground: the low-distance border between two touching objects is where the fronts meet. Without a
   distance map the fill is by geodesic proximity. A connected region whose labelled pixels all carry one
   label is filled directly (the watershed could only give it that label).
5. An object is kept if enough votes back it in absolute terms (``min_votes``) and relative to its size
   (``support`` = backing votes / area >= ``min_support``), it has ``min_area_px`` pixels, its distance map
   peaks at ``min_peak_distance`` or more, and its
   ``score = support x mean foreground probability x distance-map peak`` reaches ``min_score``. The
   distance target is normalised per object, so every real object, tiny or large, has a pixel near 1;
   a splinter of a larger object's border (a few pixels whose short vectors met) peaks low. Its class is the semantic class
   with the largest summed probability over its pixels; its centroid is the mean of its backing votes.

All steps are array operations (numpy/scipy/scikit-image), no Python loop over objects or pixels, and
deterministic: same input, same output.
Known limit of centroid voting: two objects with the same centroid (a ring around a dot) become one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.segmentation import watershed

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
    ys, xs = np.nonzero(fg)
    if len(ys) == 0:
        return Instances.empty((height, width))

    # 2. Votes (continuous, snapped) and the weighted vote image.
    vy = np.round((ys + vectors[0, ys, xs].astype(np.float64) * max_distance_px) * _SNAP) / _SNAP
    vx = np.round((xs + vectors[1, ys, xs].astype(np.float64) * max_distance_px) * _SNAP) / _SNAP
    weight = fg_prob[ys, xs].astype(np.float64)
    if distance is not None:
        weight = weight * np.clip(distance[ys, xs], 1e-3, 1.0)
    by = np.floor(vy + 0.5).astype(np.int64)
    bx = np.floor(vx + 0.5).astype(np.int64)
    inside = (by >= 0) & (by < height) & (bx >= 0) & (bx < width)
    flat = by[inside] * width + bx[inside]
    w_in = weight[inside]
    n_bins = height * width
    votes = np.bincount(flat, weights=w_in, minlength=n_bins).reshape(height, width)
    # truncate=2.5: a 3-tap kernel at the default sigma (the next tap would weigh 3e-4).
    smooth = votes.astype(np.float32)  # float32 halves the filters' memory traffic; peaks need no more
    if vote_sigma_px > 0:
        smooth = _gaussian_smooth(smooth, vote_sigma_px)

    # 3. Candidate centres: local maxima (a plateau counts once), refined to sub-pixel.
    peak_y, peak_x = _local_maxima(smooth)
    if len(peak_y) == 0:
        return Instances.empty((height, width))
    sum_y = np.bincount(flat, weights=w_in * vy[inside], minlength=n_bins).reshape(height, width)
    sum_x = np.bincount(flat, weights=w_in * vx[inside], minlength=n_bins).reshape(height, width)
    centres = _refine_centres(votes, sum_y, sum_x, peak_y, peak_x)

    vote_length = np.hypot(vy - ys, vx - xs)  # px each vote travelled
    vote_bin = (np.clip(by, 0, height - 1), np.clip(bx, 0, width - 1))
    nearest = _nearest_peak(peak_y, peak_x, vote_bin, (height, width))
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
        successor[implausible] = keep[cKDTree(centres[keep]).query(centres[implausible])[1]]
    new_index = np.full(len(centres), -1, np.int64)
    new_index[keep] = np.arange(len(keep))
    centres = centres[keep]
    nearest = new_index[successor[nearest]]
    dist_to_centre = np.hypot(vy - centres[nearest, 0], vx - centres[nearest, 1])
    scale = np.minimum(_mean_by_index(vote_length, nearest, len(centres)), max_distance_px)
    radius = np.maximum(max_vote_error_px, vote_error_fraction * scale)
    confident = dist_to_centre <= radius[nearest]
    labels = np.zeros((height, width), np.int32)
    labels[ys[confident], xs[confident]] = nearest[confident] + 1
    if confident.any() and not confident.all():
        _fill_unsure(labels, fg, ys, xs, distance)

    # 5. Per-object facts and filtering.
    n = len(centres)
    fg_labels = labels[ys, xs]  # the foreground pixels' labels, in the order of ys, xs
    area = np.bincount(fg_labels, minlength=n + 1)[1:].astype(np.float64)
    backing_of = nearest[confident]
    backing = np.bincount(backing_of, minlength=n).astype(np.float64)
    safe_area = np.maximum(area, 1.0)
    support = np.minimum(backing / safe_area, 1.0)
    mean_fg = np.bincount(fg_labels, weights=fg_prob[ys, xs], minlength=n + 1)[1:] / safe_area
    peak_distance = np.ones(n)
    if distance is not None:
        # per-object maximum: group the pixels by label (one integer sort), reduce each run
        d_fg = distance[ys, xs]
        order = np.argsort(fg_labels, kind="stable")
        sorted_labels = fg_labels[order]
        starts = np.flatnonzero(np.diff(sorted_labels, prepend=-1))
        peak_distance = np.zeros(n + 1)
        peak_distance[sorted_labels[starts]] = np.maximum.reduceat(d_fg[order], starts)
        peak_distance = peak_distance[1:]
    score = support * mean_fg * peak_distance
    keep = (area >= min_area_px) & (backing >= max(min_votes, 1)) & (support >= min_support) & (score >= min_score)
    if distance is not None:
        keep &= peak_distance >= min_peak_distance

    safe_backing = np.maximum(backing, 1.0)
    voted_y = np.bincount(backing_of, weights=vy[confident], minlength=n) / safe_backing
    voted_x = np.bincount(backing_of, weights=vx[confident], minlength=n) / safe_backing

    class_sums = np.stack(
        [np.bincount(fg_labels, weights=probs[c][ys, xs], minlength=n + 1)[1:] for c in range(1, probs.shape[0])],
        axis=1,
    )
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


def _fill_unsure(labels: np.ndarray, fg: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                 distance: np.ndarray | None) -> None:
    """Give the unlabelled foreground pixels (``fg & labels == 0``) the label of the watershed, in place.

    The watershed floods the inverted distance map from the labelled pixels, 4-connected, inside the
    foreground. A 4-connected foreground region whose labelled pixels all carry one label can only be
    flooded with that label, so those regions are filled directly; the watershed runs only over the unsure
    pixels of regions with several labels (touching objects), cropped to their bounding box. The result
    equals one watershed over the whole foreground.
    """
    regions, n_regions = ndimage.label(fg)  # 4-connected, as the watershed floods
    region_fg = regions[ys, xs]
    label_fg = labels[ys, xs]
    labelled = label_fg > 0
    lowest = np.full(n_regions + 1, np.iinfo(np.int32).max, np.int32)
    highest = np.zeros(n_regions + 1, np.int32)
    np.minimum.at(lowest, region_fg[labelled], label_fg[labelled])
    np.maximum.at(highest, region_fg[labelled], label_fg[labelled])
    unsure = ~labelled
    single = (highest == lowest)[region_fg] & unsure
    labels[ys[single], xs[single]] = highest[region_fg[single]]
    several = (highest > lowest)[region_fg] & unsure
    if not several.any():
        return
    # Flood only the unsure pixels, from the labelled pixels touching them (the rest keep their label anyway).
    y0, y1 = max(int(ys[several].min()) - 1, 0), int(ys[several].max()) + 2
    x0, x1 = max(int(xs[several].min()) - 1, 0), int(xs[several].max()) + 2
    box = (slice(y0, y1), slice(x0, x1))
    unsure_box = np.zeros(fg.shape, bool)
    unsure_box[ys[several], xs[several]] = True
    unsure_box = unsure_box[box]
    labels_box = labels[box]
    ring = _dilate8(unsure_box) & (labels_box > 0)
    landscape = -distance[box] if distance is not None else np.zeros(unsure_box.shape, np.float32)
    filled = watershed(landscape, markers=np.where(ring, labels_box, 0), mask=unsure_box | ring)
    labels_box[unsure_box] = filled[unsure_box]


def _dilate8(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation (zeros outside) from shifted views: exact, faster than ndimage on a tile."""
    rows = mask.copy()
    rows[1:] |= mask[:-1]
    rows[:-1] |= mask[1:]
    out = rows.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


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
    # 3x3 maximum from shifted views (zero outside): exact, and a few times faster than maximum_filter
    row_max = image.copy()
    np.maximum(row_max[1:], image[:-1], out=row_max[1:])
    np.maximum(row_max[:-1], image[1:], out=row_max[:-1])
    window_max = row_max.copy()
    np.maximum(window_max[:, 1:], row_max[:, :-1], out=window_max[:, 1:])
    np.maximum(window_max[:, :-1], row_max[:, 1:], out=window_max[:, :-1])
    is_max = (image == window_max) & (image > 0)
    ys, xs = np.nonzero(is_max)
    padded = np.pad(is_max, 1)
    touching = np.zeros(len(ys), bool)
    for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)):
        touching |= padded[ys + 1 + dy, xs + 1 + dx]
    if touching.any():  # rare: equal neighbouring maxima; keep the first pixel of each plateau
        plateaus, _ = ndimage.label(is_max, structure=np.ones((3, 3), bool))
        component = plateaus[ys, xs]
        _, first = np.unique(component, return_index=True)  # raster order: first index = first pixel
        keep = np.zeros(len(ys), bool)
        keep[first] = True
        ys, xs = ys[keep], xs[keep]
    return ys.astype(np.int64), xs.astype(np.int64)


def _refine_centres(
    votes: np.ndarray, sum_y: np.ndarray, sum_x: np.ndarray, peak_y: np.ndarray, peak_x: np.ndarray
) -> np.ndarray:
    """(P, 2) vote-weighted mean position of the votes in the 3x3 bins around each peak pixel."""
    height, width = votes.shape
    total = np.zeros((3, len(peak_y)))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            y, x = peak_y + dy, peak_x + dx
            ok = (y >= 0) & (y < height) & (x >= 0) & (x < width)
            y, x = y[ok], x[ok]
            total[0, ok] += votes[y, x]
            total[1, ok] += sum_y[y, x]
            total[2, ok] += sum_x[y, x]
    centres = np.stack([peak_y, peak_x], axis=1).astype(np.float64)
    ok = total[0] > 0
    centres[ok, 0] = total[1, ok] / total[0, ok]
    centres[ok, 1] = total[2, ok] / total[0, ok]
    return centres


def _nearest_peak(
    peak_y: np.ndarray, peak_x: np.ndarray, vote_bin: tuple[np.ndarray, np.ndarray], shape: tuple[int, int]
) -> np.ndarray:
    """Index of the peak pixel nearest to each vote's bin (Euclidean on the pixel grid)."""
    flat = vote_bin[0] * shape[1] + vote_bin[1]
    seen = np.zeros(shape[0] * shape[1], bool)
    seen[flat] = True
    unique = np.flatnonzero(seen)  # the distinct vote bins, without sorting the votes
    if len(unique) > 0.1 * shape[0] * shape[1]:
        # votes everywhere: one exact Euclidean distance transform of the peaks is cheaper than a KD-tree
        not_peak = np.ones(shape, bool)
        not_peak[peak_y, peak_x] = False
        index = np.zeros(shape, np.int64)
        index[peak_y, peak_x] = np.arange(len(peak_y))
        iy, ix = ndimage.distance_transform_edt(not_peak, return_distances=False, return_indices=True)
        return index[iy[vote_bin], ix[vote_bin]]
    _, index = cKDTree(np.stack([peak_y, peak_x], axis=1)).query(np.stack(np.divmod(unique, shape[1]), axis=1))
    position = np.zeros(len(seen), np.int64)
    position[unique] = np.arange(len(unique))
    return index[position[flat]]


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
    k = min(_MERGE_NEIGHBOURS + 1, n)
    dist, j = cKDTree(centres).query(centres, k=k, distance_upper_bound=float(reach.max()))
    i = np.repeat(np.arange(n), k)
    dist, j = dist.ravel(), j.ravel()
    ok = (j < n) & (j != i)
    i, j, dist = i[ok], j[ok], dist[ok]
    ok = dist <= np.maximum(reach[i], reach[j])
    i, j = i[ok], j[ok]
    height = smooth[peak_y, peak_x]
    stronger = (height[j] > height[i]) | ((height[j] == height[i]) & (j < i))
    i, j = i[stronger], j[stronger]
    if len(i) == 0:
        return into
    # Sample the vote image along each segment at 0.5 px steps (coarser beyond 16 px: valleys between
    # large objects are wide).
    length = np.linalg.norm(centres[j] - centres[i], axis=1)
    steps = np.minimum(np.ceil(length / 0.5).astype(np.int64), 32) + 1
    pair = np.repeat(np.arange(len(i)), steps)
    start = np.concatenate([[0], np.cumsum(steps)[:-1]])
    t = (np.arange(steps.sum()) - start[pair]) / np.maximum(steps[pair] - 1, 1)
    origin = centres[i]
    points = origin[pair] + t[:, None] * (centres[j] - origin)[pair]
    values = ndimage.map_coordinates(smooth, points.T, order=1, mode="constant")
    valley = np.minimum.reduceat(values, start)
    fragment = valley >= valley_ratio * height[i]
    # Pairs come in order of i, nearest j first: the first fragment pair of each i names its target.
    i, j = i[fragment], j[fragment]
    first = np.flatnonzero(np.diff(i, prepend=-1))
    into[i[first]] = j[first]
    while True:
        hop = into[into]
        if np.array_equal(hop, into):
            return into
        into = hop
