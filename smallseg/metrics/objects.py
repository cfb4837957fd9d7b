"""Objects as cropped masks: the form every scorer in :mod:`smallseg.metrics` works on.

A scene with 20,000 objects on a 10,000 x 10,000 grid must never hold one full-scene array per object. Each
object is kept as its bounding-box crop (a small boolean array) plus the box's offset, and as a pycocotools
RLE of the *full* image built straight from the crop (column-major runs, offset into the full image), so
pycocotools can score it as if it had been encoded from a full-size mask.

Conventions:

- boxes are ``(row0, col0, row1, col1)`` in pixels, half-open (``row1``/``col1`` are one past the last
  row/column), in the coordinates of the object's image;
- RLEs are pycocotools' compressed dicts ``{"size": [H, W], "counts": bytes}``;
- ``area_px`` is what COCO calls ``area``: the mask's pixel count for label rasters (for COCO JSON input, the
  value pycocotools would use: the GT file's ``area`` field, the results' mask area).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "ObjectSet",
    "objects_from_labels",
    "crop_rle_counts",
    "rles_from_crops",
    "rle_counts",
    "crop_from_rle",
    "overlapping_box_pairs",
    "overlap_components",
]


@dataclass(eq=False)  # holds arrays: compare fields explicitly
class ObjectSet:
    """Objects of one or more images as cropped masks plus per-object columns of equal length ``N``.

    Attributes:
        image_shapes: ``{image id: (H, W)}`` in pixels, for every image the objects may lie in (images with
            no objects are listed too: they still count in COCO's per-image bookkeeping).
        ids: (N,) int64 annotation id. Ground truth: the label value (or the COCO annotation id). Detections:
            position in the original detection list plus one, exactly as pycocotools' ``loadRes`` numbers
            results; ties in score are broken by this order.
        image_ids: (N,) int64 image of each object.
        class_ids: (N,) int64 category id of each object.
        scores: (N,) float64 confidence (ground truth: 1.0).
        iscrowd: (N,) bool COCO crowd flag (ground truth only; crowd regions are ignored, not missed).
        area_px: (N,) float64 COCO ``area`` in pixels.
        boxes: (N, 4) int64 ``(row0, col0, row1, col1)`` half-open pixel box of the mask.
        crops: N boolean arrays, ``crops[i].shape == (row1 - row0, col1 - col0)``: the mask inside its box.
        rles: N pycocotools compressed RLE dicts of the full image (``size == [H, W]`` of its image).
        source_ids: (N,) int64 the object's id in the input: its label value in a label raster, its
            annotation id (GT) or 1-based position (results) in COCO JSON.
    """

    image_shapes: dict[int, tuple[int, int]]
    ids: np.ndarray
    image_ids: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray
    iscrowd: np.ndarray
    area_px: np.ndarray
    boxes: np.ndarray
    crops: list[np.ndarray]
    rles: list[dict]
    source_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray) -> "ObjectSet":
        """The objects at positions ``index`` (int array or bool mask), in that order."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return ObjectSet(
            image_shapes=dict(self.image_shapes),
            ids=self.ids[index],
            image_ids=self.image_ids[index],
            class_ids=self.class_ids[index],
            scores=self.scores[index],
            iscrowd=self.iscrowd[index],
            area_px=self.area_px[index],
            boxes=self.boxes[index],
            crops=[self.crops[i] for i in index.tolist()],
            rles=[self.rles[i] for i in index.tolist()],
            source_ids=self.source_ids[index],
        )

    @classmethod
    def empty(cls, image_shapes: dict[int, tuple[int, int]]) -> "ObjectSet":
        """No objects, on the given images."""
        return cls(
            image_shapes=dict(image_shapes),
            ids=np.zeros(0, np.int64),
            image_ids=np.zeros(0, np.int64),
            class_ids=np.zeros(0, np.int64),
            scores=np.zeros(0, np.float64),
            iscrowd=np.zeros(0, bool),
            area_px=np.zeros(0, np.float64),
            boxes=np.zeros((0, 4), np.int64),
            crops=[],
            rles=[],
            source_ids=np.zeros(0, np.int64),
        )

    @classmethod
    def concatenate(cls, parts: list["ObjectSet"]) -> "ObjectSet":
        """Objects of several sets (e.g. several images), in the given order."""
        shapes: dict[int, tuple[int, int]] = {}
        for part in parts:
            shapes.update(part.image_shapes)
        if not parts:
            return cls.empty(shapes)
        return cls(
            image_shapes=shapes,
            ids=np.concatenate([p.ids for p in parts]),
            image_ids=np.concatenate([p.image_ids for p in parts]),
            class_ids=np.concatenate([p.class_ids for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            iscrowd=np.concatenate([p.iscrowd for p in parts]),
            area_px=np.concatenate([p.area_px for p in parts]),
            boxes=np.concatenate([p.boxes for p in parts]).reshape(-1, 4),
            crops=[c for p in parts for c in p.crops],
            rles=[r for p in parts for r in p.rles],
            source_ids=np.concatenate([p.source_ids for p in parts]),
        )


def crop_rle_counts(crop: np.ndarray, row0: int, col0: int, image_shape: tuple[int, int]) -> np.ndarray:
    """Uncompressed COCO RLE counts of a full (H, W) image whose only foreground is ``crop`` at an offset.

    COCO RLE runs go down the columns (Fortran order) of the full image and start with a background run.
    They are computed from the crop alone: runs inside each crop column, shifted to the column's position
    in the full image, with runs that touch across a column break (an object spanning the full image
    height) joined.

    Args:
        crop: (h, w) bool mask inside its box.
        row0, col0: position of ``crop[0, 0]`` in the full image, pixels.
        image_shape: (H, W) of the full image.

    Returns:
        int64 run lengths alternating background/foreground (first one background, possibly 0), summing to
        ``H * W``; identical to the runs ``pycocotools.mask.encode`` produces for the full-size mask.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    h, w = crop.shape
    # Each crop column padded with a 0 above and below, so every run has a start and an end.
    padded = np.zeros((w, h + 2), np.int8)
    padded[:, 1:-1] = crop.T
    step = np.diff(padded, axis=1)
    start_col, start_row = np.nonzero(step == 1)
    end_col, end_row = np.nonzero(step == -1)
    if len(start_col) == 0:
        return np.array([height * width], np.int64)
    starts = (col0 + start_col.astype(np.int64)) * height + row0 + start_row
    ends = (col0 + end_col.astype(np.int64)) * height + row0 + end_row
    apart = starts[1:] != ends[:-1]  # False where a run ends at a column's bottom and the next starts at the top
    starts = np.concatenate([starts[:1], starts[1:][apart]])
    ends = np.concatenate([ends[:-1][apart], ends[-1:]])
    counts = np.empty(2 * len(starts) + 1, np.int64)
    counts[0] = starts[0]
    counts[1:-1:2] = ends - starts
    counts[2:-1:2] = starts[1:] - ends[:-1]
    counts[-1] = height * width - ends[-1]
    # pycocotools' encoder writes no empty background run after a mask that ends at the last pixel.
    return counts if counts[-1] else counts[:-1]


def rles_from_crops(
    crops: list[np.ndarray], boxes: np.ndarray, image_shape: tuple[int, int]
) -> list[dict]:
    """Compressed full-image pycocotools RLEs of cropped masks.

    Args:
        crops: N (h_i, w_i) bool masks.
        boxes: (N, 4) int ``(row0, col0, row1, col1)`` of each crop.
        image_shape: (H, W) of the image they all belong to.

    Returns:
        N dicts ``{"size": [H, W], "counts": bytes}``, equal to ``pycocotools.mask.encode`` of the
        full-size masks.
    """
    if len(crops) == 0:
        return []
    height, width = int(image_shape[0]), int(image_shape[1])
    uncompressed = [
        {"size": [height, width], "counts": crop_rle_counts(crop, int(box[0]), int(box[1]), (height, width)).tolist()}
        for crop, box in zip(crops, boxes)
    ]
    return mask_utils.frPyObjects(uncompressed, height, width)


def rle_counts(rle: dict) -> np.ndarray:
    """Run lengths of a pycocotools RLE (compressed string or uncompressed list), as (k,) int64.

    pycocotools has no public call for this; the string is its LEB128-like code: 5 bits per character
    (offset 48), continuation bit 0x20, sign bit 0x10 on a value's last character, and from the fourth count
    on each value is stored as a difference to the count two places before. Decoded with numpy, no Python
    loop over characters.
    """
    counts = rle["counts"]
    if isinstance(counts, list | np.ndarray):
        return np.asarray(counts, np.int64)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    c = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64)
    last = (c & 0x20) == 0  # the last character of each value
    value_of_char = np.concatenate([[0], np.cumsum(last)[:-1]])
    first = np.concatenate([[True], last[:-1]])
    position = np.arange(c.size) - np.maximum.accumulate(np.where(first, np.arange(c.size), 0))
    values = np.zeros(int(last.sum()), np.int64)
    np.add.at(values, value_of_char, (c & 0x1F) << (5 * position))
    # sign-extend values whose last character has 0x10 set
    n_chars = np.bincount(value_of_char, minlength=values.size)
    negative = (c[last] & 0x10) != 0
    values[negative] |= -1 << (5 * n_chars[negative])
    out = values.copy()
    # count i (> 2) = value i + count i-2: running sums over the odd entries and over the even entries from 2
    out[1::2] = np.cumsum(values[1::2])
    out[2::2] = np.cumsum(values[2::2])
    return out


def crop_from_rle(rle: dict) -> tuple[np.ndarray, np.ndarray]:
    """Decode a full-image RLE into its bounding-box crop without building the full-size mask.

    Args:
        rle: pycocotools RLE dict (compressed or uncompressed) with ``size == [H, W]``.

    Returns:
        ``(box, crop)``: (4,) int64 ``(row0, col0, row1, col1)`` and the (h, w) bool mask in it; an empty
        mask gives box ``(0, 0, 0, 0)`` and a (0, 0) crop.
    """
    height = int(rle["size"][0])
    counts = rle_counts(rle)
    ends = np.cumsum(counts)
    starts = ends - counts
    fg = (np.arange(len(counts)) % 2 == 1) & (counts > 0)
    run_starts, run_ends = starts[fg], ends[fg]
    if len(run_starts) == 0:
        return np.zeros(4, np.int64), np.zeros((0, 0), bool)
    first_col, last_col = run_starts // height, (run_ends - 1) // height
    # Split runs that continue into the next column into one piece per column.
    n_pieces = last_col - first_col + 1
    piece_run = np.repeat(np.arange(len(run_starts)), n_pieces)
    piece_col = first_col[piece_run] + (np.arange(n_pieces.sum()) - np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces))
    col_top = piece_col * height
    piece_start = np.maximum(run_starts[piece_run], col_top) - col_top
    piece_end = np.minimum(run_ends[piece_run], col_top + height) - col_top
    row0, row1 = int(piece_start.min()), int(piece_end.max())
    col0, col1 = int(piece_col.min()), int(piece_col.max()) + 1
    h, w = row1 - row0, col1 - col0
    # Mark piece starts +1 and ends -1 on the crop's column-major pixel order; a running sum fills them.
    step = np.zeros(h * w + 1, np.int32)
    offset = (piece_col - col0) * h - row0
    np.add.at(step, offset + piece_start, 1)
    np.add.at(step, offset + piece_end, -1)
    crop = (np.cumsum(step[:-1]) > 0).reshape(w, h).T
    return np.array([row0, col0, row1, col1], np.int64), crop


def objects_from_labels(
    labels: np.ndarray,
    *,
    class_raster: np.ndarray | None = None,
    class_by_id: dict[int, int] | None = None,
    score_by_id: dict[int, float] | None = None,
    crowd_ids: set[int] | frozenset[int] = frozenset(),
    image_id: int = 1,
    detection_ids: bool = False,
) -> ObjectSet:
    """Every object of an instance label raster as a cropped mask, in one pass over the raster.

    Args:
        labels: (H, W) integer label raster, 0 = background, k = object k (any integer dtype, values >= 0).
        class_raster: optional (H, W) integer class raster; an object takes the most frequent non-zero class
            under its mask (0 when all its pixels are class 0; ties go to the smaller class).
        class_by_id: optional ``{label: class id}`` (e.g. from an object table); used when there is no
            ``class_raster``. Objects it does not list, and all objects without either source, are class 1.
        score_by_id: optional ``{label: score}``; objects it does not list score 1.0 (the caller checks
            completeness).
        crowd_ids: labels to mark as COCO crowd regions (ground truth only).
        image_id: image id written on every object.
        detection_ids: False: ids are the label values (ground truth). True: ids are 1..N in ascending
            label order (pycocotools numbers detections by position; ties in score follow this order).

    Returns:
        :class:`ObjectSet` with objects in ascending label order and exact pixel areas.
    """
    labels = np.asarray(labels)
    height, width = labels.shape
    value_of_index = None
    if labels.size and int(labels.max()) > max(2**24, labels.size):
        # Sparse huge ids (e.g. hashes): find_objects would list every value up to the maximum. Renumber.
        value_of_index, dense = np.unique(labels, return_inverse=True)
        labels = dense.reshape(labels.shape).astype(np.int64)
        if value_of_index[0] != 0:  # no background pixel: keep 0 free
            value_of_index = np.concatenate([[0], value_of_index])
            labels += 1
    # find_objects indexes by label value: one pass, no per-object full-array comparison.
    slices = ndimage.find_objects(labels)
    label_list: list[int] = []
    crops: list[np.ndarray] = []
    boxes: list[tuple[int, int, int, int]] = []
    class_list: list[int] = []
    for index, sl in enumerate(slices):
        if sl is None:
            continue
        crop = labels[sl] == index + 1
        label = index + 1 if value_of_index is None else int(value_of_index[index + 1])
        label_list.append(label)
        crops.append(crop)
        boxes.append((sl[0].start, sl[1].start, sl[0].stop, sl[1].stop))
        if class_raster is not None:
            counts = np.bincount(np.asarray(class_raster[sl][crop], np.int64))
            counts[0] = 0
            class_list.append(int(np.argmax(counts)) if counts.any() else 0)
    n = len(label_list)
    label_arr = np.asarray(label_list, np.int64)
    box_arr = np.asarray(boxes, np.int64).reshape(n, 4)
    if class_raster is not None:
        class_ids = np.asarray(class_list, np.int64)
    elif class_by_id is not None:
        class_ids = np.asarray([class_by_id.get(i, 1) for i in label_list], np.int64)
    else:
        class_ids = np.ones(n, np.int64)
    scores = np.asarray([1.0 if score_by_id is None else score_by_id.get(i, 1.0) for i in label_list], np.float64)
    return ObjectSet(
        image_shapes={int(image_id): (int(height), int(width))},
        ids=np.arange(1, n + 1, dtype=np.int64) if detection_ids else label_arr,
        image_ids=np.full(n, image_id, np.int64),
        class_ids=class_ids,
        scores=scores,
        iscrowd=np.isin(label_arr, np.fromiter(crowd_ids, np.int64, len(crowd_ids))),
        area_px=np.asarray([c.sum() for c in crops], np.float64),
        boxes=box_arr,
        crops=crops,
        rles=rles_from_crops(crops, box_arr, (height, width)),
        source_ids=label_arr,
    )


def overlapping_box_pairs(
    boxes_a: np.ndarray, groups_a: np.ndarray, boxes_b: np.ndarray, groups_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i, j) whose boxes share at least one pixel and whose group keys are equal.

    Boxes are hashed into grid cells (cell side a little above the median box side) and joined per cell,
    so the cost grows with the number of overlapping pairs, not with ``len(a) * len(b)``.

    Args:
        boxes_a, boxes_b: (Na, 4), (Nb, 4) int ``(row0, col0, row1, col1)`` half-open pixel boxes.
        groups_a, groups_b: (Na,), (Nb,) int64 group keys (e.g. image x class); only equal keys pair.

    Returns:
        ``(ia, ib)``: int64 index arrays of the pairs, sorted by ``ia`` then ``ib``, no duplicates.
    """
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    boxes_a = np.asarray(boxes_a, np.int64).reshape(-1, 4)
    boxes_b = np.asarray(boxes_b, np.int64).reshape(-1, 4)
    if len(boxes_a) == 0 or len(boxes_b) == 0:
        return empty
    sides = np.concatenate([boxes_a[:, 2:] - boxes_a[:, :2], boxes_b[:, 2:] - boxes_b[:, :2]]).ravel()
    cell = max(8, int(np.median(sides)) * 2)
    grid_cols = int(max(boxes_a[:, 3].max(), boxes_b[:, 3].max()) // cell + 1)
    grid_rows = int(max(boxes_a[:, 2].max(), boxes_b[:, 2].max()) // cell + 1)
    _, group_codes = np.unique(np.concatenate([groups_a, groups_b]), return_inverse=True)
    codes_a, codes_b = group_codes[: len(boxes_a)], group_codes[len(boxes_a):]

    def cell_keys(boxes: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r0, c0 = boxes[:, 0] // cell, boxes[:, 1] // cell
        r1, c1 = (boxes[:, 2] - 1) // cell, (boxes[:, 3] - 1) // cell
        nr, nc = r1 - r0 + 1, c1 - c0 + 1
        per_box = nr * nc
        owner = np.repeat(np.arange(len(boxes)), per_box)
        k = np.arange(per_box.sum()) - np.repeat(np.cumsum(per_box) - per_box, per_box)
        rows = r0[owner] + k // nc[owner]
        cols = c0[owner] + k % nc[owner]
        keys = (codes[owner].astype(np.int64) * grid_rows + rows) * grid_cols + cols
        return keys, owner

    keys_a, owner_a = cell_keys(boxes_a, codes_a)
    keys_b, owner_b = cell_keys(boxes_b, codes_b)
    order_b = np.argsort(keys_b, kind="stable")
    keys_b, owner_b = keys_b[order_b], owner_b[order_b]
    lo = np.searchsorted(keys_b, keys_a, side="left")
    hi = np.searchsorted(keys_b, keys_a, side="right")
    n_match = hi - lo
    if n_match.sum() == 0:
        return empty
    ia = np.repeat(owner_a, n_match)
    pos = np.arange(n_match.sum()) - np.repeat(np.cumsum(n_match) - n_match, n_match) + np.repeat(lo, n_match)
    ib = owner_b[pos]
    pair_key = np.unique(ia * len(boxes_b) + ib)
    ia, ib = pair_key // len(boxes_b), pair_key % len(boxes_b)
    a, b = boxes_a[ia], boxes_b[ib]
    overlap = (a[:, 0] < b[:, 2]) & (b[:, 0] < a[:, 2]) & (a[:, 1] < b[:, 3]) & (b[:, 1] < a[:, 3])
    return ia[overlap], ib[overlap]


def overlap_components(gt: ObjectSet, dt: ObjectSet, *, by_class: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the GT-detection box-overlap graph.

    Two objects are linked when their boxes share a pixel, they lie in the same image and (``by_class``)
    have the same class. Objects in different components have mask IoU exactly 0, so they can never match
    at any IoU threshold above 0: scoring each component on its own gives the same matches as scoring the
    whole image.

    Args:
        gt, dt: ground truth and detections.
        by_class: only link objects of the same class (COCO's per-category evaluation).

    Returns:
        ``(gt_component, dt_component)``: (Ng,), (Nd,) int64 component index of each object, numbered
        0..C-1 in order of first appearance (ground truth first).
    """
    ng, nd = len(gt), len(dt)

    def group_keys(objects: ObjectSet) -> np.ndarray:
        return objects.image_ids * (1 << 24) + (objects.class_ids if by_class else 0)

    ia, ib = overlapping_box_pairs(gt.boxes, group_keys(gt), dt.boxes, group_keys(dt))
    n = ng + nd
    graph = coo_matrix((np.ones(len(ia), np.int8), (ia, ib + ng)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    # Renumber by first appearance so the numbering does not depend on scipy's internals.
    _, first = np.unique(component, return_index=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    component = rank[component]
    return component[:ng], component[ng:]
