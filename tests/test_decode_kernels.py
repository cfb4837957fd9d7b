"""The decoder's compiled loops against the library routines they replace (scikit-image, scipy)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.segmentation import watershed

from smallseg.decode import kernels


@pytest.mark.parametrize("seed", range(4))
def test_flood_fill_equals_skimage_watershed(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        h, w = rng.integers(1, 40, 2)
        mask = rng.random((h, w)) < 0.8
        landscape = rng.random((h, w)).astype(np.float32)  # distinct values: no tie to break
        markers = np.where(mask & (rng.random((h, w)) < 0.05), rng.integers(1, 5, (h, w)), 0).astype(np.int32)
        expected = watershed(landscape, markers=markers, mask=mask)
        filled = markers.copy()
        n_filled = kernels.flood_fill(filled, mask, landscape)
        assert np.array_equal(filled, expected)
        assert n_filled == int(((expected > 0) & (markers == 0)).sum())


def test_flood_fill_on_a_flat_landscape_takes_the_first_reached_label():
    labels = np.zeros((1, 7), np.int32)
    labels[0, 0], labels[0, 6] = 1, 2
    kernels.flood_fill(labels, np.ones((1, 7), bool), np.zeros((1, 7), np.float32))
    # equal priorities: the fronts advance one pixel per step in turn; the middle pixel is reached by the
    # first marker (the first pushed) first
    assert labels.tolist() == [[1, 1, 1, 1, 2, 2, 2]]


@pytest.mark.parametrize("integer", [False, True])
def test_nearest_points_equal_a_kd_tree(integer):
    rng = np.random.default_rng(3)
    for _ in range(60):
        n_points, n_queries = rng.integers(1, 60), rng.integers(1, 400)
        py, px = rng.uniform(0, 100, n_points), rng.uniform(0, 80, n_points)
        qy, qx = rng.uniform(-30, 130, n_queries), rng.uniform(-30, 110, n_queries)  # some outside the points' box
        if integer:  # on the pixel grid: many equidistant points
            py, px, qy, qx = np.round(py), np.round(px), np.round(qy), np.round(qx)
        cell = float(rng.choice([1.0, 3.0, 8.0, 40.0]))
        found = kernels.nearest_points(py, px, qy, qx, cell)
        distance, _ = cKDTree(np.c_[py, px]).query(np.c_[qy, qx])
        assert np.allclose(np.hypot(py[found] - qy, px[found] - qx), distance)
        # ties go to the lowest index
        all_d = np.hypot(py[None] - qy[:, None], px[None] - qx[:, None])
        assert np.array_equal(found, np.argmax(all_d <= distance[:, None] + 1e-9, axis=1))


def _merge_targets_reference(centres, reach, height, image, neighbours, valley_ratio):
    """The same rule with a KD-tree and scipy's map_coordinates (the decoder's numpy implementation before)."""
    n = len(centres)
    into = np.arange(n)
    k = min(neighbours + 1, n)
    dist, j = cKDTree(centres).query(centres, k=k, distance_upper_bound=float(reach.max()) * (1 + 1e-9))
    dist, j = dist.reshape(n, k), j.reshape(n, k)
    for i in range(n):
        for d, jj in zip(dist[i], j[i]):
            if jj >= n or jj == i or d > max(reach[i], reach[jj]):
                continue
            if not (height[jj] > height[i] or (height[jj] == height[i] and jj < i)):
                continue
            steps = min(int(np.ceil(d / 0.5)), 32) + 1
            t = np.arange(steps) / max(steps - 1, 1)
            points = centres[i][:, None] + t[None] * (centres[jj] - centres[i])[:, None]
            values = ndimage.map_coordinates(image, points, order=1, mode="constant")
            if values.min() >= valley_ratio * height[i]:
                into[i] = jj
                break
    return into


def test_merge_targets_equal_a_kd_tree_and_map_coordinates():
    rng = np.random.default_rng(7)
    for _ in range(20):
        image = ndimage.gaussian_filter(rng.random((48, 64)), 2.0).astype(np.float32)
        n = int(rng.integers(2, 60))
        centres = np.c_[rng.uniform(-0.4, 47.4, n), rng.uniform(-0.4, 63.4, n)]
        reach = rng.uniform(1.0, 15.0, n)
        height = image[np.clip(np.round(centres[:, 0]).astype(int), 0, 47),
                       np.clip(np.round(centres[:, 1]).astype(int), 0, 63)]
        ratio = float(rng.choice([0.5, 0.9, 0.99]))
        expected = _merge_targets_reference(centres, reach, height, image, 6, ratio)
        for cell in (2.0, 7.0, 30.0):
            assert np.array_equal(kernels.merge_targets(centres, reach, height, image, 6, ratio, cell), expected)


def test_cast_votes_land_where_the_vectors_point():
    rng = np.random.default_rng(1)
    fg_prob = rng.random((20, 30)).astype(np.float32)
    vectors = rng.uniform(-0.3, 0.3, (2, 20, 30)).astype(np.float32)
    distance = rng.random((20, 30)).astype(np.float32)
    out = kernels.cast_votes(fg_prob, np.float32(0.5), vectors, distance, True, 10.0, 1024.0)
    ys, xs, vy, vx, weight, bin_y, bin_x, inside, length, votes, sum_y, sum_x = out
    assert np.array_equal(np.c_[ys, xs], np.argwhere(fg_prob >= 0.5))
    assert np.allclose(vy, ys + vectors[0, ys, xs] * 10.0, atol=1e-3)
    assert np.allclose(vx, xs + vectors[1, ys, xs] * 10.0, atol=1e-3)
    assert np.allclose(weight, fg_prob[ys, xs] * np.clip(distance[ys, xs], 1e-3, 1))
    assert np.allclose(length, np.hypot(vy - ys, vx - xs))
    by, bx = np.floor(vy + 0.5).astype(int), np.floor(vx + 0.5).astype(int)
    assert np.array_equal(inside, (by >= 0) & (by < 20) & (bx >= 0) & (bx < 30))
    assert np.array_equal(bin_y, np.clip(by, 0, 19)) and np.array_equal(bin_x, np.clip(bx, 0, 29))
    expected = np.zeros((20, 30))
    np.add.at(expected, (by[inside], bx[inside]), weight[inside])
    assert np.allclose(votes, expected)
    expected_y = np.zeros((20, 30))
    np.add.at(expected_y, (by[inside], bx[inside]), (weight * vy)[inside])
    assert np.allclose(sum_y, expected_y)
    assert votes.sum() > 0 and (~inside).any()  # the fixture exercises both cases


def test_a_function_numba_cannot_cache_is_still_compiled():
    # exec'd source has no file: numba finds no cache location, as on a read-only install without a home
    namespace = {}
    exec("def add_one(x):\n    return x + 1\n", namespace)
    compiled = kernels._compiled(namespace["add_one"])
    assert compiled(np.int64(41)) == 42
    assert compiled.signatures  # it ran compiled, not as the Python function
