"""Compiled loops of the centroid-vote decoder (numba): the steps numpy cannot express as array operations.

A priority flood, a nearest-point search and a walk along segments are sequential by nature; in numpy
they cost a general-purpose library call each (scikit-image's watershed, a KD-tree, ``map_coordinates``
over gathered sample points), which made up over half of a tile's decoding time. Compiled, each is a
single pass over the pixels or points involved.

All functions are deterministic (ties broken by index or push order), release the GIL (the pipelines
decode on a worker thread while the model runs) and are cached on disk after their first compilation.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def _compiled(function):
    """``numba.njit`` without the GIL, cached on disk where numba finds a writable place for it.

    The cache goes next to this file, else in the user's cache folder; an install where neither is writable
    (a read-only image, no home) compiles once per process instead of failing at import.
    """
    try:
        return njit(cache=True, nogil=True)(function)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return njit(nogil=True)(function)


@_compiled
def _heap_push(keys, items, size, key, item):
    """Push onto a binary min-heap kept in two arrays. Returns the new size."""
    pos = size
    while pos > 0:
        parent = (pos - 1) >> 1
        if keys[parent] < key:
            break
        keys[pos], items[pos] = keys[parent], items[parent]
        pos = parent
    keys[pos], items[pos] = key, item
    return size + 1


@_compiled
def _heap_pop(keys, items, size):
    """Pop the smallest key's item. Returns (item, new size)."""
    top = items[0]
    size -= 1
    key, item = keys[size], items[size]
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and keys[child + 1] < keys[child]:
            child += 1
        if key < keys[child]:
            break
        keys[pos], items[pos] = keys[child], items[child]
        pos = child
    keys[pos], items[pos] = key, item
    return top, size


@_compiled
def flood_fill(labels, mask, landscape):
    """Marker watershed: give every unlabelled ``mask`` pixel a label, flooding from the labelled pixels.

    Args:
        labels: (H, W) int32, > 0 at the markers; filled in place.
        mask: (H, W) bool, the pixels that may be flooded (unlabelled ones outside stay 0).
        landscape: (H, W) float32; low values flood first.

    4-connected priority flood, as ``skimage.segmentation.watershed(landscape, labels, mask=mask)``:
    pixels are taken lowest landscape first (ties: first reached first), and each unlabelled neighbour of
    a taken pixel gets that pixel's label when it is first reached. Only the markers touching an
    unlabelled mask pixel start the flood; the others could only reach pixels that are already labelled.
    Returns the number of pixels filled.
    """
    height, width = labels.shape
    n_unlabelled = 0
    for y in range(height):
        for x in range(width):
            if mask[y, x] and labels[y, x] == 0:
                n_unlabelled += 1
    if n_unlabelled == 0:
        return 0
    # One integer key per heap entry: the landscape value's bits made order-preserving (negative floats
    # flipped), then the push count, so ties go to the first pushed.
    bits = (landscape.ravel() + np.float32(0.0)).view(np.uint32)  # + 0.0: -0.0 becomes 0.0
    order_bits = np.where(bits >= np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000)).astype(np.uint64)
    # every pixel is pushed at most once (a seed, or an unlabelled pixel when it gets its label)
    keys = np.empty(height * width, np.uint64)
    items = np.empty(height * width, np.int64)
    size = 0
    age = 0
    for y in range(height):
        for x in range(width):
            if labels[y, x] == 0:
                continue
            if ((y > 0 and mask[y - 1, x] and labels[y - 1, x] == 0)
                    or (x > 0 and mask[y, x - 1] and labels[y, x - 1] == 0)
                    or (x + 1 < width and mask[y, x + 1] and labels[y, x + 1] == 0)
                    or (y + 1 < height and mask[y + 1, x] and labels[y + 1, x] == 0)):
                index = y * width + x
                size = _heap_push(keys, items, size, (order_bits[index] << np.uint64(32)) | np.uint64(age), index)
                age += 1
    filled = 0
    while size > 0:
        item, size = _heap_pop(keys, items, size)
        y, x = item // width, item % width
        label = labels[y, x]
        for k in range(4):
            ny, nx = y, x
            if k == 0:
                ny = y - 1
            elif k == 1:
                nx = x - 1
            elif k == 2:
                nx = x + 1
            else:
                ny = y + 1
            if ny < 0 or ny >= height or nx < 0 or nx >= width:
                continue
            if not mask[ny, nx] or labels[ny, nx] != 0:
                continue
            labels[ny, nx] = label
            filled += 1
            index = ny * width + nx
            size = _heap_push(keys, items, size, (order_bits[index] << np.uint64(32)) | np.uint64(age), index)
            age += 1
    return filled


@_compiled
def _bucket(cell_of, n_cells):
    """Counting sort of items by cell: the items of cell ``c`` are ``order[start[c]:start[c + 1]]``, by index."""
    start = np.zeros(n_cells + 1, np.int64)
    for c in cell_of:
        start[c + 1] += 1
    for c in range(n_cells):
        start[c + 1] += start[c]
    order = np.empty(len(cell_of), np.int64)
    fill = start[:-1].copy()
    for i in range(len(cell_of)):
        order[fill[cell_of[i]]] = i
        fill[cell_of[i]] += 1
    return start, order


@_compiled
def _grid(point_y, point_x, cell):
    """Bucket points into square grid cells. Returns (y0, x0, rows, cols, start, order): the points of
    cell ``c`` (row-major) are ``order[start[c]:start[c + 1]]``, by index."""
    y0, x0 = point_y.min(), point_x.min()
    rows = int((point_y.max() - y0) // cell) + 1
    cols = int((point_x.max() - x0) // cell) + 1
    cell_of = np.empty(len(point_y), np.int64)
    for p in range(len(point_y)):
        cell_of[p] = int((point_y[p] - y0) // cell) * cols + int((point_x[p] - x0) // cell)
    start, order = _bucket(cell_of, rows * cols)
    return y0, x0, rows, cols, start, order


@_compiled
def _k_nearest(point_y, point_x, grid, cell, qy, qx, bound, exclude, near_d, near_j):
    """The ``len(near_d)`` points nearest to (qy, qx) within ``bound`` (not ``exclude``), written sorted by
    (distance, index) into ``near_d`` / ``near_j``. Returns how many were found.

    Rings of grid cells are searched outwards from the query's cell until no unvisited cell can hold a
    nearer point: every point in ring r + 1 or beyond is at least r x cell away.
    """
    y0, x0, rows, cols, start, order = grid
    k = len(near_d)
    cy = min(max(int(np.floor((qy - y0) / cell)), 0), rows - 1)
    cx = min(max(int(np.floor((qx - x0) / cell)), 0), cols - 1)
    count = 0
    ring = 0
    while True:
        for gy in range(max(cy - ring, 0), min(cy + ring, rows - 1) + 1):
            # a ring's top and bottom rows whole, the rows between only at its two ends (ring 0: one cell)
            step = 1 if (gy == cy - ring or gy == cy + ring) else 2 * ring
            gx = cx - ring
            while gx <= cx + ring:
                if 0 <= gx < cols:
                    c = gy * cols + gx
                    for m in range(start[c], start[c + 1]):
                        j = order[m]
                        if j == exclude:
                            continue
                        d = np.sqrt((point_y[j] - qy) ** 2 + (point_x[j] - qx) ** 2)
                        if d > bound:
                            continue
                        if count == k and (d > near_d[k - 1] or (d == near_d[k - 1] and j > near_j[k - 1])):
                            continue
                        pos = count if count < k else k - 1
                        while pos > 0 and (near_d[pos - 1] > d or (near_d[pos - 1] == d and near_j[pos - 1] > j)):
                            near_d[pos], near_j[pos] = near_d[pos - 1], near_j[pos - 1]
                            pos -= 1
                        near_d[pos], near_j[pos] = d, j
                        if count < k:
                            count += 1
                gx += step
        reach = ring * cell
        if (count == k and near_d[k - 1] <= reach) or reach > bound or ring > rows + cols:
            return count
        ring += 1


@_compiled
def _within(point_y, point_x, grid, cell, qy, qx, radius, out):
    """Indices of the points within ``radius`` of (qy, qx), written to ``out``; returns how many."""
    y0, x0, rows, cols, start, order = grid
    count = 0
    gy0 = max(int(np.floor((qy - radius - y0) / cell)), 0)
    gy1 = min(int(np.floor((qy + radius - y0) / cell)), rows - 1)
    gx0 = max(int(np.floor((qx - radius - x0) / cell)), 0)
    gx1 = min(int(np.floor((qx + radius - x0) / cell)), cols - 1)
    r2 = radius * radius
    for gy in range(gy0, gy1 + 1):
        for gx in range(gx0, gx1 + 1):
            c = gy * cols + gx
            for m in range(start[c], start[c + 1]):
                j = order[m]
                if (point_y[j] - qy) ** 2 + (point_x[j] - qx) ** 2 <= r2:
                    out[count] = j
                    count += 1
    return count


@_compiled
def nearest_points(point_y, point_x, query_y, query_x, cell):
    """Index of the point nearest to each query (Euclidean; ties to the lower index).

    Args:
        point_y, point_x: (P,) float64 point coordinates, P >= 1.
        query_y, query_x: (Q,) float64 query coordinates.
        cell: grid cell edge, in the coordinates' unit (about the typical spacing of the points).

    Returns:
        (Q,) int64 indices into the points.

    The queries are bucketed by grid cell. For a cell with centre o, the nearest point to any query q in
    it lies within ``d(o) + 2 h`` of o (h = half the cell's diagonal: ``|p - o| <= d(q) + h <= d(o) + 2 h``),
    so that short list is found once per cell and each query compares only against it.
    """
    grid = _grid(point_y, point_x, cell)
    y0, x0, rows, cols, start, order = grid
    n_cells = rows * cols
    n_queries = len(query_y)
    query_cell = np.empty(n_queries, np.int64)
    for q in range(n_queries):
        gy = np.floor((query_y[q] - y0) / cell)
        gx = np.floor((query_x[q] - x0) / cell)
        c = n_cells  # outside the points' grid: searched one by one
        if 0 <= gy < rows and 0 <= gx < cols:
            c = int(gy) * cols + int(gx)
        query_cell[q] = c
    query_start, query_order = _bucket(query_cell, n_cells + 1)

    out = np.empty(n_queries, np.int64)
    near_d = np.empty(1, np.float64)
    near_j = np.empty(1, np.int64)
    candidates = np.empty(len(point_y), np.int64)
    half_diagonal = cell * np.sqrt(0.5)
    for c in range(n_cells + 1):
        if query_start[c] == query_start[c + 1]:
            continue
        if c == n_cells:
            for m in range(query_start[c], query_start[c + 1]):
                q = query_order[m]
                _k_nearest(point_y, point_x, grid, cell, query_y[q], query_x[q], np.inf, -1, near_d, near_j)
                out[q] = near_j[0]
            continue
        oy = y0 + (c // cols + 0.5) * cell
        ox = x0 + (c % cols + 0.5) * cell
        _k_nearest(point_y, point_x, grid, cell, oy, ox, np.inf, -1, near_d, near_j)
        n_candidates = _within(point_y, point_x, grid, cell, oy, ox, near_d[0] + 2 * half_diagonal * 1.000001,
                               candidates)
        for m in range(query_start[c], query_start[c + 1]):
            q = query_order[m]
            qy, qx = query_y[q], query_x[q]
            best, best_p = np.inf, -1
            for k in range(n_candidates):
                p = candidates[k]
                d = (point_y[p] - qy) ** 2 + (point_x[p] - qx) ** 2
                if d < best or (d == best and p < best_p):
                    best, best_p = d, p
            out[q] = best_p
    return out


@_compiled
def _bilinear(image, y, x):
    """Bilinear sample of ``image`` at (y, x); 0 outside [0, H-1] x [0, W-1] (scipy's mode='constant')."""
    height, width = image.shape
    if y < 0 or x < 0 or y > height - 1 or x > width - 1:
        return 0.0
    iy, ix = min(int(y), height - 2), min(int(x), width - 2)
    if height == 1:
        iy = 0
    if width == 1:
        ix = 0
    fy, fx = y - iy, x - ix
    v00 = image[iy, ix]
    v01 = image[iy, ix + 1] if width > 1 else 0.0
    v10 = image[iy + 1, ix] if height > 1 else 0.0
    v11 = image[iy + 1, ix + 1] if height > 1 and width > 1 else 0.0
    return (v00 * (1 - fy) * (1 - fx) + v01 * (1 - fy) * fx + v10 * fy * (1 - fx) + v11 * fy * fx)


@_compiled
def merge_targets(centres, reach, height, image, neighbours, valley_ratio, cell):
    """For each candidate centre, the candidate its fragment merges into (itself if none).

    Args:
        centres: (N, 2) float64 sub-pixel (y, x).
        reach: (N,) float64 merge reach of each candidate, px.
        height: (N,) float32 vote image value at each candidate's peak pixel.
        image: (H, W) float32 smoothed vote image.
        neighbours: how many nearest other candidates are considered for each.
        valley_ratio: the vote image along the segment must stay >= this x the candidate's height.
        cell: grid cell edge for the neighbour search, px.

    Candidate ``i``'s target is the nearest ``j`` among its ``neighbours`` nearest (within the largest
    reach) that is stronger (higher, ties to the lower index), within ``max(reach_i, reach_j)``, and with no
    valley: the vote image sampled along i-j every 0.5 px (at most 33 samples) stays >= ``valley_ratio``
    x ``height_i``. Chains are not followed here.
    """
    n = len(centres)
    into = np.arange(n)
    bound = reach.max()
    centre_y, centre_x = centres[:, 0].copy(), centres[:, 1].copy()
    grid = _grid(centre_y, centre_x, cell)
    near_d = np.empty(neighbours, np.float64)
    near_j = np.empty(neighbours, np.int64)
    for i in range(n):
        yi, xi = centre_y[i], centre_x[i]
        count = _k_nearest(centre_y, centre_x, grid, cell, yi, xi, bound, i, near_d, near_j)
        for m in range(count):
            j, d = near_j[m], near_d[m]
            if d > max(reach[i], reach[j]):
                continue
            if not (height[j] > height[i] or (height[j] == height[i] and j < i)):
                continue
            length = np.sqrt((centres[j, 0] - yi) ** 2 + (centres[j, 1] - xi) ** 2)
            steps = min(int(np.ceil(length / 0.5)), 32) + 1
            floor = valley_ratio * height[i]
            ok = True
            for s in range(steps):
                t = s / max(steps - 1, 1)
                if _bilinear(image, yi + t * (centres[j, 0] - yi), xi + t * (centres[j, 1] - xi)) < floor:
                    ok = False
                    break
            if ok:
                into[i] = j
                break
    return into


@_compiled
def cast_votes(fg_prob, fg_threshold, vectors, distance, has_distance, max_distance_px, snap):
    """Every foreground pixel's vote, and the vote image.

    Args:
        fg_prob: (H, W) float32 foreground probability; foreground = ``fg_prob >= fg_threshold``.
        vectors: (2, H, W) float centroid vectors / ``max_distance_px``.
        distance: (H, W) float32 distance map (ignored unless ``has_distance``).
        snap: votes are rounded to 1 / snap px.

    Returns, per foreground pixel in raster order: ys, xs (int64), vote_y, vote_x (float64, px), weight
    (fg_prob x clipped distance), bin_y, bin_x (the vote's pixel, clipped to the tile), inside (the vote
    lands on the tile), length (px the vote travelled); and the (H, W) float64 images of summed weight,
    weight x vote_y and weight x vote_x of the votes landing in each pixel.
    """
    height, width = fg_prob.shape
    n = 0
    for y in range(height):
        for x in range(width):
            if fg_prob[y, x] >= fg_threshold:
                n += 1
    ys = np.empty(n, np.int64)
    xs = np.empty(n, np.int64)
    vote_y = np.empty(n, np.float64)
    vote_x = np.empty(n, np.float64)
    weight = np.empty(n, np.float64)
    bin_y = np.empty(n, np.int64)
    bin_x = np.empty(n, np.int64)
    inside = np.empty(n, np.bool_)
    length = np.empty(n, np.float64)
    votes = np.zeros((height, width), np.float64)
    sum_y = np.zeros((height, width), np.float64)
    sum_x = np.zeros((height, width), np.float64)
    low, high = np.float32(1e-3), np.float32(1.0)
    i = 0
    for y in range(height):
        for x in range(width):
            if fg_prob[y, x] < fg_threshold:
                continue
            vy = np.round((y + np.float64(vectors[0, y, x]) * max_distance_px) * snap) / snap
            vx = np.round((x + np.float64(vectors[1, y, x]) * max_distance_px) * snap) / snap
            w = np.float64(fg_prob[y, x])
            if has_distance:
                w = w * np.float64(min(max(distance[y, x], low), high))
            by = int(np.floor(vy + 0.5))
            bx = int(np.floor(vx + 0.5))
            ok = 0 <= by < height and 0 <= bx < width
            ys[i], xs[i], vote_y[i], vote_x[i], weight[i], inside[i] = y, x, vy, vx, w, ok
            bin_y[i] = min(max(by, 0), height - 1)
            bin_x[i] = min(max(bx, 0), width - 1)
            length[i] = np.hypot(vy - y, vx - x)
            if ok:
                votes[by, bx] += w
                sum_y[by, bx] += w * vy
                sum_x[by, bx] += w * vx
            i += 1
    return ys, xs, vote_y, vote_x, weight, bin_y, bin_x, inside, length, votes, sum_y, sum_x


@_compiled
def refine_centres(votes, sum_y, sum_x, peak_y, peak_x):
    """(P, 2) vote-weighted mean position of the votes in the 3x3 bins around each peak pixel
    (the peak pixel itself where no votes are)."""
    height, width = votes.shape
    centres = np.empty((len(peak_y), 2), np.float64)
    for p in range(len(peak_y)):
        total, total_y, total_x = 0.0, 0.0, 0.0
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                y, x = peak_y[p] + dy, peak_x[p] + dx
                if 0 <= y < height and 0 <= x < width:
                    total += votes[y, x]
                    total_y += sum_y[y, x]
                    total_x += sum_x[y, x]
        if total > 0:
            centres[p, 0], centres[p, 1] = total_y / total, total_x / total
        else:
            centres[p, 0], centres[p, 1] = peak_y[p], peak_x[p]
    return centres


@_compiled
def assign_confident(ys, xs, vote_y, vote_x, nearest, centres, radius, labels):
    """Label each pixel whose vote lands within its centre's ``radius`` (``labels[y, x] = nearest + 1``,
    in place). Returns the (N,) bool mask of those confident pixels."""
    confident = np.empty(len(ys), np.bool_)
    for i in range(len(ys)):
        c = nearest[i]
        ok = np.hypot(vote_y[i] - centres[c, 0], vote_x[i] - centres[c, 1]) <= radius[c]
        confident[i] = ok
        if ok:
            labels[ys[i], xs[i]] = c + 1
    return confident


@_compiled
def object_stats(labels, ys, xs, fg_prob, probs, distance, has_distance, n, confident, nearest, vote_y, vote_x):
    """Per-object sums over the foreground pixels (objects 1..n of ``labels``).

    Returns (n,) area, summed fg_prob, peak distance-map value (1 without a distance map), backing votes
    (confident pixels whose vote backs the object), summed backing vote_y and vote_x, and (n, C) summed
    class probabilities (``probs`` channels 1..C).
    """
    n_classes = probs.shape[0] - 1
    area = np.zeros(n, np.float64)
    fg_sum = np.zeros(n, np.float64)
    peak = np.zeros(n, np.float64) if has_distance else np.ones(n, np.float64)
    class_sums = np.zeros((n, n_classes), np.float64)
    backing = np.zeros(n, np.float64)
    voted_y = np.zeros(n, np.float64)
    voted_x = np.zeros(n, np.float64)
    for i in range(len(ys)):
        y, x = ys[i], xs[i]
        if confident[i]:
            c = nearest[i]
            backing[c] += 1.0
            voted_y[c] += vote_y[i]
            voted_x[c] += vote_x[i]
        label = labels[y, x]
        if label == 0:
            continue
        k = label - 1
        area[k] += 1.0
        fg_sum[k] += fg_prob[y, x]
        if has_distance and distance[y, x] > peak[k]:
            peak[k] = distance[y, x]
        for c in range(n_classes):
            class_sums[k, c] += probs[c + 1, y, x]
    return area, fg_sum, peak, backing, voted_y, voted_x, class_sums


@_compiled
def local_maxima(image):
    """Positive pixels equal to the maximum of their 3x3 window (zero outside), in raster order.

    Returns (ys, xs, is_max, touching): int64 coordinates, the (H, W) bool map of them, and whether any
    two of them are 8-neighbours (a plateau, for the caller to reduce to one pixel).
    """
    height, width = image.shape
    is_max = np.zeros((height, width), np.bool_)
    count = 0
    for y in range(height):
        for x in range(width):
            value = image[y, x]
            if value <= 0:
                continue
            peak = True
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < height and 0 <= nx < width and image[ny, nx] > value:
                        peak = False
            if peak:
                is_max[y, x] = True
                count += 1
    ys = np.empty(count, np.int64)
    xs = np.empty(count, np.int64)
    touching = False
    i = 0
    for y in range(height):
        for x in range(width):
            if not is_max[y, x]:
                continue
            ys[i], xs[i] = y, x
            i += 1
            # later neighbours suffice: a touching pair is found from its earlier pixel
            if ((x + 1 < width and is_max[y, x + 1]) or (y + 1 < height and (
                    is_max[y + 1, x] or (x > 0 and is_max[y + 1, x - 1]) or (x + 1 < width and is_max[y + 1, x + 1])))):
                touching = True
    return ys, xs, is_max, touching
