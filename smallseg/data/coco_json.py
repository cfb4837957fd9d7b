"""Cut an instance-labelled scene into tiles and describe them as a COCO instance-segmentation dataset.

Every object visible in a tile becomes one annotation of that tile:

- ``segmentation``: uncompressed-size RLE from ``pycocotools.mask.encode`` of the object's pixels in the
  tile (``counts`` stored as a UTF-8 string, ``size`` = [tile height, tile width]);
- ``area``: its pixel count in the tile (exactly the RLE's area);
- ``bbox``: [x, y, width, height] in tile pixels, COCO convention (x = first column, width = column span);
- ``category_id``: the object's class (1 car, 2 building for remote-sensing scenes);
- ``iscrowd``: 0;
- ``scene_instance_id``: the object's id in the scene's instance raster;
- ``clipped``: True when part of the object lies outside the tile (cut by the tile edge).

Objects cut by a tile edge are clipped to the tile (never dropped silently); pass ``min_area_px`` to drop
slivers. Image entries carry ``row_off``/``col_off`` of the tile in the scene and, for GeoTIFF scenes, the
tile's geotransform, so predictions can be put back on the map.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from pycocotools import mask as mask_utils
from rasterio.windows import Window
from scipy import ndimage

from smallseg.errors import SmallsegError, one_line

REMOTE_SENSING_CATEGORIES = [
    {"id": 1, "name": "car", "supercategory": "vehicle"},
    {"id": 2, "name": "building", "supercategory": "structure"},
]


def unknown_categories(dataset: dict) -> dict[int, int]:
    """Category ids the annotations of a COCO dataset use but its ``categories`` do not declare.

    Args:
        dataset: a COCO dataset dict (``annotations``, ``categories``).

    Returns:
        ``{category_id: number of annotations with it}``, ascending ids; empty when every annotation's category
        is declared. pycocotools evaluates only declared categories, so such annotations vanish from scores
        and training without a word unless the caller says so.
    """
    declared = set()
    for cat in dataset.get("categories") or []:
        if isinstance(cat, dict) and "id" in cat:
            declared.add(cat["id"])
    counts: dict[int, int] = {}
    for ann in dataset.get("annotations") or []:
        cat = ann.get("category_id") if isinstance(ann, dict) else None
        if cat not in declared:
            counts[cat] = counts.get(cat, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: str(kv[0])))


def describe_unknown_categories(unknown: dict[int, int], source: str) -> str:
    """One line naming the undeclared category ids of ``source`` and how many annotations use each."""
    total = sum(unknown.values())
    shown = ", ".join(f"{cat!r} ({n} annotation{'s' if n != 1 else ''})" for cat, n in list(unknown.items())[:10])
    more = f" and {len(unknown) - 10} more ids" if len(unknown) > 10 else ""
    return (f"{source}: {total} annotation(s) have category ids not declared in its categories: {shown}{more}")


def tile_annotations(
    instances: np.ndarray,
    classes: np.ndarray,
    *,
    image_id: int,
    first_annotation_id: int,
    clipped_ids: set[int] | frozenset[int] = frozenset(),
    min_area_px: int = 1,
) -> list[dict]:
    """COCO annotations of every object in one tile.

    Args:
        instances: (h, w) integer instance ids of the tile, 0 = background.
        classes: (h, w) integer class ids of the tile (category ids), same shape.
        image_id: COCO image id of the tile.
        first_annotation_id: id of the first annotation; the rest count up from it.
        clipped_ids: scene ids of objects that continue outside the tile (marked ``clipped``).
        min_area_px: objects with fewer pixels in the tile are left out.

    Returns:
        List of annotation dicts, ordered by scene instance id.
    """
    instances = np.asarray(instances)
    h, w = instances.shape
    ids, inverse = np.unique(instances, return_inverse=True)
    inverse = inverse.reshape(instances.shape)
    background = ids == 0
    slices = ndimage.find_objects(inverse.astype(np.int32) + 1)  # compact labels 1..len(ids)
    anns = []
    next_id = first_annotation_id
    for k, scene_id in enumerate(ids):
        if background[k] or slices[k] is None:
            continue
        sl = slices[k]
        local = inverse[sl] == k
        area = int(local.sum())
        if area < min_area_px:
            continue
        cls_values, counts = np.unique(np.asarray(classes)[sl][local], return_counts=True)
        category = int(cls_values[np.argmax(counts)])
        full = np.zeros((h, w), np.uint8, order="F")
        full[sl][local] = 1
        rle = mask_utils.encode(full)
        rle["counts"] = rle["counts"].decode("ascii")
        r0, r1, c0, c1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        anns.append({
            "id": next_id,
            "image_id": int(image_id),
            "category_id": category,
            "segmentation": rle,
            "area": area,
            "bbox": [float(c0), float(r0), float(c1 - c0), float(r1 - r0)],
            "iscrowd": 0,
            "scene_instance_id": int(scene_id),
            "clipped": bool(int(scene_id) in clipped_ids),
        })
        next_id += 1
    return anns


def clipped_ids_from_ring(labels_with_ring: np.ndarray) -> set[int]:
    """Ids present both in a tile and in the 1-px ring around it.

    Args:
        labels_with_ring: (h + 2, w + 2) instance ids of the tile plus one pixel on every side (0 beyond the
            scene edge).
    """
    inner = labels_with_ring[1:-1, 1:-1]
    ring = np.concatenate([labels_with_ring[0], labels_with_ring[-1], labels_with_ring[1:-1, 0],
                           labels_with_ring[1:-1, -1]])
    return set(np.intersect1d(np.unique(inner), np.unique(ring)).tolist()) - {0}


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return sorted(set(starts))


def _tile_name(stem: str, row: int, col: int, suffix: str) -> str:
    return f"{stem}_r{row:06d}_c{col:06d}{suffix}"


def write_coco_tiles(
    image_path: str | os.PathLike,
    instances_path: str | os.PathLike,
    classes_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    tile_size_px: int = 512,
    overlap_px: int = 0,
    min_area_px: int = 1,
    categories: list[dict] | None = None,
    write_images: bool = True,
    skip_nodata_tiles: bool = True,
    json_name: str = "annotations.json",
) -> Path:
    """Cut a GeoTIFF scene (image + instance raster + class raster) into tiles and write a COCO dataset.

    Reads the rasters window by window (memory bounded by the tile size), writes the tile images to
    ``out_dir/images/`` (PNG for 1- or 3-band uint8, else GeoTIFF with the tile's transform) and the
    annotations to ``out_dir/<json_name>`` (written to a temporary name, renamed when complete).

    Args:
        image_path, instances_path, classes_path: rasters on one grid (same size; the label rasters as
            written by :func:`smallseg.data.remote_sensing.write_remote_sensing_scene`).
        out_dir: output folder (created).
        tile_size_px: tile side in px; edge tiles are shifted back to end at the scene edge (scenes smaller
            than a tile give one smaller tile).
        overlap_px: overlap between neighbouring tiles in px, ``0 <= overlap_px < tile_size_px``.
        min_area_px: objects with fewer visible pixels in a tile are left out of that tile.
        categories: COCO categories; default car (1) / building (2).
        write_images: also write the tile images (else only the JSON, with the same file names).
        skip_nodata_tiles: leave out tiles whose image is nodata everywhere.
        json_name: annotation file name.

    Returns:
        Path of the annotation JSON.
    """
    if not 0 <= overlap_px < tile_size_px:
        raise SmallsegError(f"overlap_px {overlap_px}: use 0 <= overlap_px < tile_size_px {tile_size_px}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    stem = Path(image_path).stem.removesuffix("_image")
    try:
        src_img, src_ins, src_cls = (rasterio.open(p) for p in (image_path, instances_path, classes_path))
    except rasterio.errors.RasterioIOError as exc:
        raise SmallsegError(f"{one_line(exc)}: cannot open the scene rasters") from None
    with src_img, src_ins, src_cls:
        if not (src_img.shape == src_ins.shape == src_cls.shape):
            raise SmallsegError(f"{instances_path}: label rasters {src_ins.shape} / {src_cls.shape} do not "
                                f"match the image {src_img.shape}; write them on one grid")
        height, width = src_img.shape
        as_png = src_img.dtypes[0] == "uint8" and src_img.count in (1, 3)
        images, annotations = [], []
        for row in _tile_starts(height, tile_size_px, overlap_px):
            for col in _tile_starts(width, tile_size_px, overlap_px):
                th, tw = min(tile_size_px, height - row), min(tile_size_px, width - col)
                win = Window(col, row, tw, th)
                ring = _read_with_ring(src_ins, row, col, th, tw)
                ins = ring[1:-1, 1:-1]
                image = None
                if write_images or skip_nodata_tiles:
                    image = src_img.read(window=win)
                    if skip_nodata_tiles and src_img.nodata is not None and (image == src_img.nodata).all():
                        continue
                image_id = len(images) + 1
                name = _tile_name(stem, row, col, ".png" if as_png else ".tif")
                entry = {"id": image_id, "file_name": f"images/{name}", "height": th, "width": tw,
                         "row_off": row, "col_off": col}
                if src_img.crs is not None:
                    entry["transform"] = list(_window_transform(src_img.transform, row, col))[:6]
                images.append(entry)
                annotations += tile_annotations(
                    ins, src_cls.read(1, window=win), image_id=image_id,
                    first_annotation_id=len(annotations) + 1, clipped_ids=clipped_ids_from_ring(ring),
                    min_area_px=min_area_px,
                )
                if write_images:
                    _write_tile_image(out_dir / "images" / name, image, src_img, win, as_png)
        crs = src_img.crs.to_string() if src_img.crs else None
    dataset = {
        "info": {"description": f"tiles of {Path(image_path).name}", "tile_size_px": tile_size_px,
                 "overlap_px": overlap_px, "crs": crs},
        "images": images,
        "annotations": annotations,
        "categories": categories or REMOTE_SENSING_CATEGORIES,
    }
    path = out_dir / json_name
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(dataset), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _read_with_ring(src, row: int, col: int, th: int, tw: int) -> np.ndarray:
    """Band 1 of the window plus a 1-px ring, zeros beyond the raster edge."""
    r0, c0 = max(row - 1, 0), max(col - 1, 0)
    r1, c1 = min(row + th + 1, src.height), min(col + tw + 1, src.width)
    out = np.zeros((th + 2, tw + 2), src.dtypes[0])
    out[r0 - (row - 1): r1 - (row - 1), c0 - (col - 1): c1 - (col - 1)] = src.read(
        1, window=Window(c0, r0, c1 - c0, r1 - r0))
    return out


def _window_transform(transform, row: int, col: int):
    """Geotransform of a window starting at (row, col) (rasterio's own helper warns on newer affine)."""
    t = transform
    return Affine(t.a, t.b, t.c + col * t.a + row * t.b, t.d, t.e, t.f + col * t.d + row * t.e)


def _write_tile_image(path: Path, image: np.ndarray, src, window, as_png: bool) -> None:
    if as_png:
        array = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
        Image.fromarray(np.ascontiguousarray(array)).save(path)
        return

    profile = dict(driver="GTiff", height=image.shape[1], width=image.shape[2], count=image.shape[0],
                   dtype=image.dtype, crs=src.crs, transform=_window_transform(src.transform, int(window.row_off),
                                                                            int(window.col_off)),
                   nodata=src.nodata,
                   compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)


def coco_from_label_arrays(
    instances: np.ndarray,
    classes: np.ndarray,
    *,
    tile_size_px: int = 512,
    overlap_px: int = 0,
    min_area_px: int = 1,
    file_stem: str = "scene",
    categories: list[dict] | None = None,
) -> dict:
    """COCO dataset dict of the tiles of in-memory label rasters (no image files written).

    Args:
        instances: (H, W) integer instance ids, 0 = background.
        classes: (H, W) integer class ids (category ids).
        (others as :func:`write_coco_tiles`; file names follow the same pattern, with ``.png``)

    Returns:
        Dict with ``images``, ``annotations``, ``categories`` (as :func:`write_coco_tiles` writes).
    """
    instances = np.asarray(instances)
    height, width = instances.shape
    padded = np.pad(instances, 1)
    images, annotations = [], []
    for row in _tile_starts(height, tile_size_px, overlap_px):
        for col in _tile_starts(width, tile_size_px, overlap_px):
            th, tw = min(tile_size_px, height - row), min(tile_size_px, width - col)
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": f"images/{_tile_name(file_stem, row, col, '.png')}",
                           "height": th, "width": tw, "row_off": row, "col_off": col})
            ring = padded[row: row + th + 2, col: col + tw + 2]
            annotations += tile_annotations(
                instances[row: row + th, col: col + tw], classes[row: row + th, col: col + tw],
                image_id=image_id, first_annotation_id=len(annotations) + 1,
                clipped_ids=clipped_ids_from_ring(ring), min_area_px=min_area_px,
            )
    return {"images": images, "annotations": annotations, "categories": categories or REMOTE_SENSING_CATEGORIES}


def merge_coco_datasets(parts: list[str | os.PathLike], out_path: str | os.PathLike) -> Path:
    """Merge COCO JSON files that live in one folder (so their relative ``file_name``s stay valid).

    Image and annotation ids are renumbered consecutively in the order given; categories are taken from
    the first part and must be equal in all of them. Written to a temporary name, renamed when complete.

    Returns:
        ``out_path`` as a Path.
    """
    out_path = Path(out_path)
    merged: dict = {"info": {"description": "merged", "parts": []}, "images": [], "annotations": [],
                    "categories": None}
    for part in parts:
        data = json.loads(Path(part).read_text(encoding="utf-8"))
        if merged["categories"] is None:
            merged["categories"] = data["categories"]
        elif data["categories"] != merged["categories"]:
            raise SmallsegError(f"{part}: categories differ from {parts[0]}; cannot merge")
        image_map = {}
        for image in data["images"]:
            image_map[image["id"]] = len(merged["images"]) + 1
            merged["images"].append({**image, "id": image_map[image["id"]]})
        for ann in data["annotations"]:
            merged["annotations"].append({**ann, "id": len(merged["annotations"]) + 1,
                                          "image_id": image_map[ann["image_id"]]})
        merged["info"]["parts"].append(data.get("info", {}))
    merged["categories"] = merged["categories"] or REMOTE_SENSING_CATEGORIES
    tmp = out_path.with_name(out_path.name + ".partial")
    tmp.write_text(json.dumps(merged), encoding="utf-8")
    os.replace(tmp, out_path)
    return out_path
