"""Box labels (tree crowns, vehicles): COCO ``bbox`` JSON, DeepForest-style CSV, Pascal VOC XML.

A box says where an object is and how far it extends, not which pixels are its own. What training can learn
from it honestly, and does (see :func:`box_targets`):

- **centroid head**: inside the ellipse inscribed in the box, vectors to the box centre (the ellipse's centre
  of mass is the box centre, so the vote target is exact for an object centred in its box);
- **semantic head**: foreground only in the *core* (the ellipse shrunk to half its radii, which lies inside
  any convex object that touches its box's four sides), background outside every box; the rest of each box is
  not learnt from (ignored);
- **distance head**: nothing inside boxes (a box says nothing about the object's shape); background outside.

Encoding in a :class:`~smallseg.data.labels.common.LabeledImage`: core pixels are object pixels of class
``c``; the ellipse ring is object pixels of class ``WEAK_CLASS_OFFSET - c`` (centroid-only); box corners
outside the ellipse have instance id -1. Overlapping boxes: the smaller on top. ``LabeledImage.boxes`` keeps the
boxes themselves, for box-level scoring (:func:`match_boxes`).

Coordinates: COCO ``[x, y, width, height]`` and DeepForest ``xmin, ymin, xmax, ymax`` are pixel-edge
coordinates (0 = the image's left/top edge); Pascal VOC's are 1-based pixel indices, inclusive (``xmin=1``
is the first column), converted accordingly.
"""

from __future__ import annotations

import csv
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from smallseg.errors import SmallsegError, one_line
from smallseg.data.labels.area import apply_area, labelled_area
from smallseg.data.labels.common import WEAK_CLASS_OFFSET, ClassMapping, LabeledImage, read_image_file

CORE_FRACTION = 0.5  # radii of the semantic core, as a fraction of the inscribed ellipse's


def box_targets(boxes: np.ndarray, class_ids: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Instance and class rasters that encode box supervision (module docstring).

    Args:
        boxes: (N, 4) ``(row0, col0, row1, col1)`` pixel-edge coordinates.
        class_ids: (N,) 1-based classes.
        shape: (H, W).

    Returns:
        (instances (H, W) int32: ids 1..N in box order over the ellipse, -1 in box corners, 0 elsewhere;
        classes (H, W) int32: ``c`` in the core, ``WEAK_CLASS_OFFSET - c`` in the ellipse ring, 0 elsewhere).
    """
    h, w = int(shape[0]), int(shape[1])
    instances = np.zeros((h, w), np.int32)
    classes = np.zeros((h, w), np.int32)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    windows = []
    for r0, c0, r1, c1 in boxes:
        y0, x0 = max(int(np.floor(r0)), 0), max(int(np.floor(c0)), 0)
        y1, x1 = min(int(np.ceil(r1)), h), min(int(np.ceil(c1)), w)
        windows.append((y0, y1, x0, x1))
        if y1 > y0 and x1 > x0:
            window = instances[y0:y1, x0:x1]
            window[window == 0] = -1
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for k in np.argsort(-areas, kind="stable"):  # largest first: the smaller box is drawn on top
        y0, y1, x0, x1 = windows[k]
        if y1 <= y0 or x1 <= x0:
            continue
        r0, c0, r1, c1 = boxes[k]
        cy, cx, ry, rx = (r0 + r1) / 2, (c0 + c1) / 2, max((r1 - r0) / 2, 0.5), max((c1 - c0) / 2, 0.5)
        yy = (np.arange(y0, y1) + 0.5 - cy)[:, None] / ry
        xx = (np.arange(x0, x1) + 0.5 - cx)[None, :] / rx
        rho = yy ** 2 + xx ** 2
        ellipse = rho <= 1.0
        if not ellipse.any():  # a box narrower than a pixel: its centre pixel
            ellipse = rho == rho.min()
        core = rho <= CORE_FRACTION ** 2
        inst, cls = instances[y0:y1, x0:x1], classes[y0:y1, x0:x1]
        inst[ellipse] = k + 1
        cls[ellipse] = WEAK_CLASS_OFFSET - int(class_ids[k])
        cls[core & ellipse] = int(class_ids[k])
    return instances, classes


def _resolve_image(name: str, base: Path, images_dir: Path | None, where: str) -> Path:
    for folder in ([images_dir] if images_dir else []) + [base]:
        candidate = folder / name
        if candidate.is_file():
            return candidate
        candidate = folder / Path(name).name
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(f) for f in ([images_dir] if images_dir else []) + [base])
    raise SmallsegError(f"{where}: image {name!r} not found (looked in {looked}); give images=")


def _read_csv(path: Path, classes: ClassMapping) -> dict[str, list[tuple[float, float, float, float, int]]]:
    required = ("image_path", "xmin", "ymin", "xmax", "ymax")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SmallsegError(f"{path}: cannot read box CSV ({one_line(exc)})") from None
    if not rows:
        raise SmallsegError(f"{path}: no boxes (the CSV has no rows)")
    missing = [c for c in required if c not in rows[0]]
    if missing:
        raise SmallsegError(f"{path}: missing column(s) {', '.join(missing)}; a box CSV has image_path, xmin, ymin, "
                            f"xmax, ymax[, label] (DeepForest's format), this one {', '.join(rows[0])}")
    out: dict[str, list] = {}
    for i, row in enumerate(rows, start=2):
        try:
            x0, y0, x1, y1 = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise SmallsegError(f"{path}: line {i}: box coordinates must be numbers") from None
        label = row.get("label")
        cid = classes.id_of(label, f"{path} line {i}") if label not in (None, "") else classes.default_id(str(path))
        out.setdefault(row["image_path"], []).append((y0, x0, y1, x1, cid))
    return out


def _read_voc(path: Path, classes: ClassMapping) -> dict[str, list]:
    files = sorted(path.glob("*.xml")) if path.is_dir() else [path]
    if not files:
        raise SmallsegError(f"{path}: no Pascal VOC .xml files in the folder")
    out: dict[str, list] = {}
    for file in files:
        try:
            root = ET.parse(file).getroot()
        except (ET.ParseError, OSError) as exc:
            raise SmallsegError(f"{file}: not a readable Pascal VOC XML file ({one_line(exc)})") from None
        name = root.findtext("filename")
        if not name:
            raise SmallsegError(f"{file}: no <filename>; a Pascal VOC annotation names its image")
        boxes = out.setdefault(name.strip(), [])
        for obj in root.iter("object"):
            box = obj.find("bndbox")
            try:
                x0, y0, x1, y1 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError):
                raise SmallsegError(f"{file}: an <object> without a numeric <bndbox>") from None
            label = obj.findtext("name")
            cid = classes.id_of(label, str(file)) if label else classes.default_id(str(file))
            boxes.append((y0 - 1, x0 - 1, y1, x1, cid))  # 1-based inclusive indices -> pixel edges
    return out


def _read_coco_boxes(path: Path, classes: ClassMapping) -> dict[str, list]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in data.get("categories", [])}
        images = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        anns = list(data.get("annotations", []))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SmallsegError(f"{path}: not a readable COCO file with images and annotations ({one_line(exc)})") from None
    out: dict[str, list] = {name: [] for name in images.values()}
    ids: dict[int, int] = {}
    for ann in anns:
        if ann.get("iscrowd"):
            continue
        try:
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            name = images[int(ann["image_id"])]
        except (KeyError, TypeError, ValueError):
            raise SmallsegError(f"{path}: annotation {ann.get('id')!r} has no bbox [x, y, w, h] or a bad image_id") from None
        cat = int(ann.get("category_id", 0))
        if cat not in ids:
            ids[cat] = classes.id_of(names.get(cat, cat), str(path))
        out[name].append((y, x, y + bh, x + bw, ids[cat]))
    if not any(out.values()):
        raise SmallsegError(f"{path}: no boxes (no annotation with a bbox)")
    return out


def read_boxes(labels: str | os.PathLike, *, classes: ClassMapping, images: str | os.PathLike | None = None,
               area: Any = None, image: str | os.PathLike | None = None) -> list[LabeledImage]:
    """Box labels as LabeledImages with centroid supervision (module docstring).

    Args:
        labels: a ``.json`` COCO file, a ``.csv`` DeepForest-style file, or a ``.xml`` Pascal VOC file / a folder
            of them.
        classes: how box class names become model class ids (boxes without a label get ``default_id``).
        images: folder the image names are relative to (default: the labels' folder).
        area: labelled area, applied to every image (see :mod:`smallseg.data.labels.area`).
        image: use only the boxes of this image (its file name as the labels name it, or a path).

    Returns:
        One LabeledImage per image with at least one box (``boxes_only=True``, ``boxes``/``box_classes`` set).
    """
    path = Path(labels)
    if not path.exists():
        raise SmallsegError(f"{path}: no such box label file")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".xml":
        by_image = _read_voc(path, classes)
    elif suffix == ".csv":
        by_image = _read_csv(path, classes)
    elif suffix == ".json":
        by_image = _read_coco_boxes(path, classes)
    else:
        raise SmallsegError(f"{path}: box labels are .json (COCO), .csv (DeepForest) or .xml (Pascal VOC)")
    base = path if path.is_dir() else path.parent
    images_dir = Path(images) if images is not None else None
    if image is not None:
        wanted = Path(image).name
        by_image = {k: v for k, v in by_image.items() if Path(k).name == wanted}
        if not by_image:
            raise SmallsegError(f"{path}: no boxes for image {wanted}")
    out = []
    for name, rows in sorted(by_image.items()):
        if not rows:
            continue
        file = Path(image) if image is not None and Path(image).is_file() else _resolve_image(name, base, images_dir, str(path))
        pixels, geo = read_image_file(file)
        shape = pixels.shape[:2]
        arr = np.array([r[:4] for r in rows], np.float64)
        cls = np.array([r[4] for r in rows], np.int32)
        bad = (arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1])
        if bad.any():
            raise SmallsegError(f"{path}: {int(bad.sum())} box(es) of {name} have max <= min (e.g. {arr[bad][0].tolist()} "
                                "as row0, col0, row1, col1)")
        outside = (arr[:, 2] <= 0) | (arr[:, 3] <= 0) | (arr[:, 0] >= shape[0]) | (arr[:, 1] >= shape[1])
        if outside.all():
            raise SmallsegError(f"{path}: none of the {len(arr)} boxes of {name} lies on the image "
                                f"({shape[0]} x {shape[1]} px); are they in pixel coordinates?")
        notes = [f"{path.name}: {int(outside.sum())} box(es) of {name} outside the image (skipped)"] if outside.any() else []
        arr, cls = arr[~outside], cls[~outside]
        instances, class_raster = box_targets(arr, cls, shape)
        mask = None if area is None else labelled_area(area, shape, geo, where=f"area {area}")
        out.append(LabeledImage(image=pixels, instances=apply_area(instances, mask), classes=class_raster,
                                name=Path(name).name, notes=notes, boxes_only=True, boxes=arr, box_classes=cls))
    if not out:
        raise SmallsegError(f"{path}: no boxes")
    return out


def match_boxes(gt_boxes: np.ndarray, pred_boxes: np.ndarray, pred_scores: np.ndarray,
                iou_threshold: float = 0.4) -> tuple[int, int, int]:
    """Greedy one-to-one box matching by descending score (as COCO matches): (true pos., false pos., false neg.).

    Boxes are (N, 4) ``(row0, col0, row1, col1)``; a prediction matches the unmatched GT box of highest IoU if
    that IoU >= ``iou_threshold`` (0.4 as the NEON tree-crown benchmark uses).
    """
    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    pred = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
    if not len(pred) or not len(gt):
        return 0, len(pred), len(gt)
    top = np.maximum(pred[:, None, :2], gt[None, :, :2])
    bottom = np.minimum(pred[:, None, 2:], gt[None, :, 2:])
    inter = np.prod(np.clip(bottom - top, 0, None), axis=2)
    area_p = np.prod(pred[:, 2:] - pred[:, :2], axis=1)
    area_g = np.prod(gt[:, 2:] - gt[:, :2], axis=1)
    iou = inter / np.maximum(area_p[:, None] + area_g[None, :] - inter, 1e-12)
    taken = np.zeros(len(gt), bool)
    tp = 0
    for i in np.argsort(-np.asarray(pred_scores), kind="stable"):
        candidates = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(candidates))
        if candidates[j] >= iou_threshold:
            taken[j] = True
            tp += 1
    return tp, len(pred) - tp, len(gt) - tp
