"""Centroid-vote decoding: exact recovery from ground-truth head maps, robustness to noisy maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.draw import ellipse, polygon

from smallseg.decode import DecodeConfig, decode_batch, decode_instances
from smallseg.errors import SmallsegError
from smallseg.train.targets import encode_targets

MAX_D = 48.0


def gt_head_maps(instances: np.ndarray, classes: np.ndarray, n_classes: int):
    """Perfect head outputs for a label image: one-hot probabilities, exact vectors, exact distance map."""
    t = encode_targets(instances, classes, MAX_D)
    probs = np.stack([(t["semantic"] == c) for c in range(n_classes + 1)]).astype(np.float32)
    return probs, t["centroid"], t["distance"]


def assert_same_partition(gt: np.ndarray, pred: np.ndarray) -> dict[int, int]:
    """Background equal and a one-to-one map between gt and pred ids covering every pixel; returns it."""
    assert np.array_equal(gt == 0, pred == 0), "foreground differs"
    fg = gt != 0
    pairs = np.unique(np.stack([gt[fg], pred[fg]], axis=1), axis=0)
    assert len(np.unique(pairs[:, 0])) == len(pairs), "a ground-truth object is split"
    assert len(np.unique(pairs[:, 1])) == len(pairs), "two ground-truth objects are merged"
    return {int(g): int(p) for g, p in pairs}


def check_exact(instances: np.ndarray, classes: np.ndarray, n_classes: int) -> None:
    probs, vectors, dist = gt_head_maps(instances, classes, n_classes)
    for d in (dist, None):  # with and without the distance head
        out = decode_instances(probs, vectors, d, max_distance_px=MAX_D)
        mapping = assert_same_partition(instances, out.labels)
        gt_ids = np.unique(instances[instances > 0])
        assert len(out) == len(gt_ids)
        assert sorted(out.ids.tolist()) == list(range(1, len(out) + 1))
        row = {int(i): k for k, i in enumerate(out.ids)}
        coms = ndimage.center_of_mass(np.ones_like(instances), instances, gt_ids)
        for g, com in zip(gt_ids, coms):
            k = row[mapping[int(g)]]
            expected_class = np.bincount(classes[instances == g]).argmax()
            assert out.class_ids[k] == expected_class
            np.testing.assert_allclose(out.centroids_yx[k], com, atol=1e-3)
        np.testing.assert_allclose(out.scores, 1.0, atol=1e-6)
        assert out.labels.dtype == np.int32


def handmade_scene():
    lab = np.zeros((64, 80), np.int32)
    cls = np.zeros_like(lab)
    objects = [
        (np.s_[4:14, 4:20], 1),  # two rectangles sharing an edge
        (np.s_[14:22, 4:20], 2),
        (np.s_[30:32, 10:12], 3),  # tiny 2x2 objects side by side (centres 2 px apart)
        (np.s_[30:32, 12:14], 4),
        (np.s_[30:33, 14:17], 5),  # tiny 3x3 touching the 2x2
        (np.s_[40:41, 40:42], 6),  # 1x2 (2 px)
        (np.s_[45:48, 45:46], 7),  # 3x1
        (np.s_[0:6, 60:80], 1),  # at the top-right corner
        (np.s_[55:64, 0:9], 2),  # at the bottom-left corner
        (np.s_[20:40, 79:80], 3),  # 1 px wide strip along the right edge
        (np.s_[50:64, 30:44], 4),  # at the bottom edge, touching the next
        (np.s_[50:64, 44:50], 5),
    ]
    for k, (sl, c) in enumerate(objects, start=1):
        lab[sl] = k
        cls[sl] = c
    # A rotated rectangle and an ellipse touching each other.
    rr, cc = polygon([8, 20, 28, 16], [30, 22, 36, 44], lab.shape)
    lab[rr, cc] = 20
    cls[rr, cc] = 6
    rr, cc = ellipse(24, 56, 6, 9, lab.shape, rotation=0.6)
    free = lab[rr, cc] == 0
    lab[rr[free], cc[free]] = 21
    cls[rr[free], cc[free]] = 7
    return lab, cls


def test_exact_recovery_handmade_scene():
    lab, cls = handmade_scene()
    # The scene really has touching objects: some 4-neighbours carry two different ids.
    horiz = (lab[:, 1:] != lab[:, :-1]) & (lab[:, 1:] > 0) & (lab[:, :-1] > 0)
    assert horiz.sum() > 10
    check_exact(lab, cls, n_classes=7)


def random_scene(rng: np.random.Generator, shape=(96, 96), n_objects=40, n_classes=5):
    """Non-overlapping rotated rectangles and ellipses (they may touch) with random classes."""
    lab = np.zeros(shape, np.int32)
    cls = np.zeros(shape, np.int32)
    next_id = 1
    for _ in range(n_objects * 4):
        if next_id > n_objects:
            break
        cy, cx = rng.uniform(-2, shape[0] + 2), rng.uniform(-2, shape[1] + 2)
        a, b = rng.uniform(1.0, 9.0), rng.uniform(1.0, 6.0)
        angle = rng.uniform(0, np.pi)
        if rng.random() < 0.5:
            rr, cc = ellipse(cy, cx, a, b, shape, rotation=angle)
        else:
            ca, sa = np.cos(angle), np.sin(angle)
            corners = np.array([[-a, -b], [-a, b], [a, b], [a, -b]])
            ys = cy + corners[:, 0] * ca - corners[:, 1] * sa
            xs = cx + corners[:, 0] * sa + corners[:, 1] * ca
            rr, cc = polygon(ys, xs, shape)
        if len(rr) < 2 or lab[rr, cc].any():
            continue
        mask = np.zeros(shape, bool)
        mask[rr, cc] = True
        comp, n = ndimage.label(mask)  # clipping at the edge can leave two pieces; keep the largest
        if n > 1:
            mask = comp == np.argmax(np.bincount(comp.ravel())[1:]) + 1
        if mask.sum() < 2:
            continue
        lab[mask] = next_id
        cls[mask] = rng.integers(1, n_classes + 1)
        next_id += 1
    return lab, cls


@pytest.mark.parametrize("seed", range(4))
def test_exact_recovery_random_dense_scenes(seed):
    rng = np.random.default_rng(seed)
    lab, cls = random_scene(rng)
    # Grow every object by one pixel into free space so many of them touch.
    grown = ndimage.grey_dilation(lab, size=3)
    lab = np.where(lab == 0, grown, lab)
    cls_grown = ndimage.grey_dilation(cls, size=3)
    cls = np.where(cls == 0, cls_grown, cls) * (lab > 0)
    # Re-derive classes per object so each object has one class (dilation can mix them).
    for g in np.unique(lab[lab > 0]):
        cls[lab == g] = np.bincount(cls[lab == g]).argmax() or 1
    assert len(np.unique(lab)) > 20
    check_exact(lab, cls, n_classes=5)


def test_empty_and_all_background():
    probs = np.zeros((3, 32, 32), np.float32)
    probs[0] = 1.0
    out = decode_instances(probs, np.zeros((2, 32, 32)), np.zeros((32, 32)), max_distance_px=MAX_D)
    assert len(out) == 0 and not out.labels.any() and out.labels.shape == (32, 32)
    out = decode_batch(
        {"semantic": torch.zeros(2, 3, 16, 24), "centroid": torch.zeros(2, 2, 16, 24)}, DecodeConfig()
    )
    # Logits all equal: p(background) = 1/3, foreground prob 2/3 >= 0.5, but every vote lands on its own pixel,
    # one per bin: no object reaches min_votes=2.
    assert [len(o) for o in out] == [0, 0]


def noisy_maps(lab, cls, n_classes, rng, vector_noise_px, relative_noise=0.0, prob_noise=0.1):
    probs, vectors, dist = gt_head_maps(lab, cls, n_classes)
    probs = probs * (1 - prob_noise) + prob_noise / (n_classes + 1)
    # Like a trained model's: errors grow with the distance the vector spans, plus a floor.
    span = np.hypot(vectors[0], vectors[1])[None]
    vectors = vectors + rng.normal(0, 1, vectors.shape) * (relative_noise * span + vector_noise_px / MAX_D)
    vectors = vectors.astype(np.float32)
    dist = np.clip(dist + rng.normal(0, 0.05, dist.shape), 0, 1).astype(np.float32)
    return probs, vectors, dist


def matched_ious(gt: np.ndarray, pred: np.ndarray) -> list[float]:
    """Best IoU of each gt object against the predicted objects (independent of the decoder)."""
    out = []
    for g in np.unique(gt[gt > 0]):
        m = gt == g
        cand = np.unique(pred[m])
        cand = cand[cand > 0]
        best = 0.0
        for p in cand:
            q = pred == p
            best = max(best, (m & q).sum() / (m | q).sum())
        out.append(best)
    return out


def test_noisy_maps_still_give_each_object_once_and_are_deterministic():
    rng = np.random.default_rng(7)
    lab, cls = random_scene(rng, shape=(80, 80), n_objects=25)
    probs, vectors, dist = noisy_maps(lab, cls, 5, rng, vector_noise_px=0.3, relative_noise=0.1)
    a = decode_instances(probs, vectors, dist, max_distance_px=MAX_D)
    b = decode_instances(probs.copy(), vectors.copy(), dist.copy(), max_distance_px=MAX_D)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.scores, b.scores)
    n_gt = len(np.unique(lab)) - 1
    ious = matched_ious(lab, a.labels)
    assert np.mean(np.array(ious) >= 0.5) >= 0.95, ious
    assert abs(len(a) - n_gt) <= 1
    assert np.all((a.scores > 0) & (a.scores <= 1))


def test_scattered_votes_do_not_split_a_large_object():
    lab = np.zeros((96, 96), np.int32)
    lab[20:70, 25:75] = 1  # 50x50: radius ~28 px
    lab[75:78, 10:13] = 2  # and a tiny neighbour
    cls = (lab > 0).astype(np.int32)
    rng = np.random.default_rng(0)
    probs, vectors, dist = noisy_maps(lab, cls, 1, rng, vector_noise_px=0.3, relative_noise=0.1)
    out = decode_instances(probs, vectors, dist, max_distance_px=MAX_D)
    assert len(out) == 2
    assert max(matched_ious(lab, out.labels)) > 0.95
    # Without suppression the same votes fall apart into several peaks: the test exercises it.
    split = decode_instances(probs, vectors, dist, max_distance_px=MAX_D, merge_fraction=0.0, min_support=0.0)
    assert len(split) > 2


def test_decode_batch_matches_single_image_decoding():
    lab, cls = handmade_scene()
    probs, vectors, dist = gt_head_maps(lab, cls, 7)
    eps = 1e-6
    logits = torch.from_numpy(np.log(probs + eps))[None].repeat(2, 1, 1, 1)
    dist_logit = torch.logit(torch.from_numpy(dist).clamp(eps, 1 - eps))[None, None].repeat(2, 1, 1, 1)
    outs = decode_batch(
        {"semantic": logits, "centroid": torch.from_numpy(vectors)[None].repeat(2, 1, 1, 1), "distance": dist_logit},
        DecodeConfig(max_distance_px=MAX_D),
    )
    assert len(outs) == 2
    for out in outs:
        assert_same_partition(lab, out.labels)
    with pytest.raises(SmallsegError, match="centroid"):
        decode_batch({"semantic": logits}, DecodeConfig())


def test_bad_shapes_raise_one_line_errors():
    probs = np.ones((2, 8, 8), np.float32)
    with pytest.raises(SmallsegError, match="centroid"):
        decode_instances(probs, np.zeros((2, 8, 9)), None, max_distance_px=MAX_D)
    with pytest.raises(SmallsegError, match="semantic_probs"):
        decode_instances(np.ones((8, 8)), np.zeros((2, 8, 8)), None, max_distance_px=MAX_D)
    with pytest.raises(SmallsegError, match="distance"):
        decode_instances(probs, np.zeros((2, 8, 8)), np.zeros((7, 8)), max_distance_px=MAX_D)


def test_local_maxima_gives_one_peak_per_plateau_in_raster_order():
    from smallseg.decode.centroids import _local_maxima

    image = np.zeros((8, 10))
    image[2, 3] = image[2, 4] = image[3, 5] = 5.0  # one 8-connected plateau
    image[6, 1] = 2.0  # an isolated peak
    image[6, 8] = 1.0
    image[6, 7] = 0.5  # not a maximum: its neighbour is higher
    ys, xs = _local_maxima(image)
    assert list(zip(ys.tolist(), xs.tolist())) == [(2, 3), (6, 1), (6, 8)]


def test_a_splinter_on_a_large_objects_border_is_dropped_by_its_low_distance_peak():
    lab = np.zeros((40, 40), np.int32)
    lab[10:30, 10:30] = 1
    lab[2:4, 2:4] = 2  # a real tiny object elsewhere
    cls = (lab > 0).astype(np.int32)
    probs, vectors, dist = gt_head_maps(lab, cls, 1)
    # Four border pixels of the square whose vectors point at their own little centre, as a half-trained
    # model's sometimes do: they form their own vote peak.
    vectors[:, 10:12, 18:20] = 0.0
    vectors[0, 10:12, 18:20] += (np.array([10.5]) - np.arange(10, 12))[:, None] / MAX_D
    vectors[1, 10:12, 18:20] += (np.array([18.5]) - np.arange(18, 20))[None, :] / MAX_D
    with_splinter = decode_instances(probs, vectors, None, max_distance_px=MAX_D)
    assert len(with_splinter) == 3  # without the distance map nothing tells the splinter apart
    out = decode_instances(probs, vectors, dist, max_distance_px=MAX_D)
    assert len(out) == 2
    ious = matched_ious(lab, out.labels)
    assert ious[0] >= 0.98 and ious[1] == 1.0
    np.testing.assert_allclose(sorted(out.scores), [1.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("sigma", [0.3, 0.5, 0.59, 1.0])
def test_vote_smoothing_equals_scipys_truncated_gaussian(sigma):
    from smallseg.decode.centroids import _gaussian_smooth

    rng = np.random.default_rng(3)
    image = (rng.random((40, 56)) * (rng.random((40, 56)) < 0.2)).astype(np.float32)
    expected = ndimage.gaussian_filter(image, sigma, mode="constant", truncate=2.5)
    np.testing.assert_allclose(_gaussian_smooth(image, sigma), expected, atol=1e-6)


def test_local_maxima_equal_scipys_maximum_filter_on_random_images():
    from smallseg.decode.centroids import _local_maxima

    rng = np.random.default_rng(5)
    for _ in range(5):
        image = rng.integers(0, 4, (30, 33)).astype(np.float32)  # many ties and plateaus
        is_max = (image == ndimage.maximum_filter(image, size=3, mode="constant", cval=0.0)) & (image > 0)
        plateaus, n = ndimage.label(is_max, structure=np.ones((3, 3), bool))
        ys, xs = _local_maxima(image)
        # one peak per 8-connected plateau of maxima, each its plateau's first pixel in raster order
        assert len(ys) == n
        firsts = [tuple(np.argwhere(plateaus == k)[0]) for k in range(1, n + 1)]
        assert sorted(zip(ys.tolist(), xs.tolist())) == sorted(firsts)


def test_filling_unsure_pixels_equals_one_watershed_over_the_foreground():
    from skimage.segmentation import watershed

    from smallseg.decode.centroids import _fill_unsure

    rng = np.random.default_rng(11)
    for _ in range(4):
        lab, _ = random_scene(rng, shape=(64, 64), n_objects=30)
        fg = lab > 0
        distance = ndimage.gaussian_filter(rng.random(lab.shape), 1.0).astype(np.float32)
        # confident cores: a random half of each object's pixels keep their label
        labels = np.where(fg & (rng.random(lab.shape) < 0.5), lab, 0).astype(np.int32)
        expected = watershed(-distance, markers=labels, mask=fg)  # 4-connected flood of the whole foreground
        filled = labels.copy()
        _fill_unsure(filled, fg, distance)
        assert np.array_equal(filled, expected)


def test_merged_fragments_pass_their_votes_along_the_chain_to_the_strongest():
    from smallseg.decode.centroids import _merge_fragments

    smooth = np.zeros((20, 40), np.float32)
    smooth[10, 5:35] = 1.0  # one mound along a row: no valley between the candidates
    peak_y = np.array([10, 10, 10, 10])
    peak_x = np.array([8, 14, 20, 33])
    smooth[10, peak_x] = [2.0, 3.0, 4.0, 1.5]  # heights rise to the right up to x=20
    centres = np.stack([peak_y, peak_x], axis=1).astype(float)
    scale = np.array([7.0, 7.0, 7.0, 7.0])  # reach 7 px: 8->14 and 14->20 pair, 20-33 are too far apart
    into = _merge_fragments(centres, scale, smooth, peak_y, peak_x, merge_fraction=1.0, valley_ratio=0.1)
    assert into.tolist() == [2, 2, 2, 3]


