"""Training data: labelled images from files or generators, cut into augmented, target-encoded crops.

A :class:`LabeledImage` is one image with its instance (and class) labels, in memory. Sources that make
them: :func:`read_geotiff_pair` (image GeoTIFF + instance-id GeoTIFF + optional class GeoTIFF),
:func:`read_coco` (images + COCO JSON), and the synthetic generators of :mod:`smallseg.data`.
:class:`CropDataset` turns a list of them into a torch ``Dataset`` of ``(image tensor, targets)`` pairs;
each sample is a pure function of ``(seed, epoch, index)``, so runs are reproducible with any number of
workers and a resumed run sees the same samples as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from smallseg.errors import SmallsegError, one_line
from smallseg.models.config import ModelConfig
from smallseg.train.augment import AugmentConfig, augment_sample, build_augment, mosaic
from smallseg.train.targets import encode_targets


@dataclass
class LabeledImage:
    """One training/validation image with exact labels.

    Attributes:
        image: (H, W, C) raw pixel values (any numeric dtype, as read from the file).
        instances: (H, W) int32 instance ids, 0 = background, < 0 = ignore.
        classes: (H, W) int32 class ids (1-based on objects), or None for a single class.
        name: where it came from (file name or generator + seed), for messages and logs.
        pixel_area: area of one pixel in physical units (``pixel_unit``²), or None if unknown.
        pixel_unit: ``"m"`` (map imagery) or ``"mm"`` (medical), None if unknown.
    """

    image: np.ndarray
    instances: np.ndarray
    classes: np.ndarray | None
    name: str
    pixel_area: float | None = None
    pixel_unit: str | None = None


def read_geotiff_pair(
    image_path: str | os.PathLike,
    instances_path: str | os.PathLike,
    classes_path: str | os.PathLike | None = None,
    *,
    bands: list[int] | None = None,
) -> LabeledImage:
    """Read an image GeoTIFF with its instance-id raster (and optional class raster) on the same grid.

    Args:
        image_path: image raster (any band count / dtype).
        instances_path: instance-id raster, 1 band, integer, 0 = background.
        classes_path: class raster, 1 band, integer, 0 = background; None = one class.
        bands: 1-based bands to read from the image (None = all).

    Returns:
        LabeledImage with ``image`` (H, W, C).
    """
    import rasterio

    from smallseg.io.geotiff import RasterGeometry

    def read(path, band_list=None):
        try:
            with rasterio.open(path) as src:
                data = src.read(band_list)
                return data, src.crs, src.transform, src.shape
        except rasterio.errors.RasterioIOError as exc:
            raise SmallsegError(f"{path}: cannot read raster ({one_line(exc)})") from None

    image, crs, transform, shape = read(image_path, bands)
    inst, crs_i, transform_i, shape_i = read(instances_path, 1)
    if shape_i != shape or crs_i != crs or transform_i != transform:
        raise SmallsegError(f"{instances_path}: not on the same grid (size, CRS, transform) as {image_path}")
    if not np.issubdtype(inst.dtype, np.integer):
        raise SmallsegError(f"{instances_path}: instance ids must be integers, got {inst.dtype}")
    classes = None
    if classes_path is not None:
        classes, crs_c, transform_c, shape_c = read(classes_path, 1)
        if shape_c != shape or crs_c != crs or transform_c != transform:
            raise SmallsegError(f"{classes_path}: not on the same grid as {image_path}")
        classes = classes.astype(np.int32)
    pixel_area = RasterGeometry(shape[1], shape[0], crs, transform).pixel_area_m2
    return LabeledImage(
        image=np.moveaxis(image, 0, -1),
        instances=inst.astype(np.int32),
        classes=classes,
        name=Path(image_path).name,
        pixel_area=pixel_area,
        pixel_unit="m" if pixel_area is not None else None,
    )


def read_coco(annotations_path: str | os.PathLike, images_dir: str | os.PathLike) -> list[LabeledImage]:
    """Read images and their COCO instance annotations (polygons or RLE) as label rasters.

    Category ids are mapped to 1-based class ids in ascending category-id order. Crowd annotations become
    ignore regions (instance id -1). Later annotations overwrite earlier ones where they overlap.
    """
    from PIL import Image
    from pycocotools.coco import COCO
    import contextlib
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress lines
            coco = COCO(str(annotations_path))
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise SmallsegError(f"{annotations_path}: not a readable COCO annotation file ({one_line(exc)})") from None
    class_of = {cat_id: k for k, cat_id in enumerate(sorted(coco.getCatIds()), start=1)}
    out = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(img_id)[0]
        path = Path(images_dir) / info["file_name"]
        try:
            image = np.asarray(Image.open(path))
        except OSError as exc:
            raise SmallsegError(f"{path}: cannot read image ({one_line(exc)})") from None
        if image.ndim == 2:
            image = image[:, :, None]
        h, w = info["height"], info["width"]
        instances = np.zeros((h, w), np.int32)
        classes = np.zeros((h, w), np.int32)
        next_id = 1
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_id)):
            mask = coco.annToMask(ann).astype(bool)
            if ann.get("iscrowd", 0):
                instances[mask] = -1
                classes[mask] = -1
                continue
            instances[mask] = next_id
            classes[mask] = class_of[ann["category_id"]]
            next_id += 1
        out.append(LabeledImage(image=image, instances=instances, classes=classes, name=info["file_name"]))
    return out


def synthetic_images(kind: str, *, count: int, size: int, seed: int, **options) -> list[LabeledImage]:
    """Labelled images from smallseg's synthetic generators (:mod:`smallseg.data`).

    Args:
        kind: ``"remote-sensing"`` (cars = class 1 and buildings = class 2 in aerial scenes, raw uint8/uint16
            bands), ``"nuclei"`` (fluorescence microscopy) or ``"ct"`` (axial slices of CT-like volumes
            through lung nodules).
        count: number of images (image ``i`` uses seed ``seed + i``; for ``ct``, volumes, each giving the
            slices through its nodules plus as many nodule-free slices).
        size: image side, px.
        seed: first seed.
        **options: passed to the generator (e.g. ``pixel_size_m``, ``bands``, ``dtype``, ``density`` for
            remote sensing; ``mean_diameter_px`` for nuclei; ``spacing_mm``, ``nodule_count`` for CT), plus
            ``class_id`` (medical kinds: the class their objects get, default 1).

    Medical kinds come out as float32 in [0, 1], mapped with the intensity preset inference uses
    (:data:`MEDICAL_PRESETS`): percentile 1-99.5 per image for microscopy, the lung window for CT. A model
    trained on them has ``input_scale`` 1 and expects that mapping.
    """
    out = []
    if kind == "remote-sensing":
        from smallseg.data.remote_sensing import make_remote_sensing_scene

        for i in range(count):
            scene = make_remote_sensing_scene(size, size, seed=seed + i, **options)
            out.append(LabeledImage(
                image=np.moveaxis(scene.image, 0, -1), instances=scene.instances.astype(np.int32),
                classes=scene.classes.astype(np.int32), name=f"synthetic remote-sensing seed {seed + i}",
                pixel_area=scene.pixel_size_m ** 2, pixel_unit="m",
            ))
        return out
    from smallseg.io.medical import IntensityPreset

    class_id = int(options.pop("class_id", 1))
    if kind == "nuclei":
        from smallseg.data.microscopy import make_nuclei_image

        preset = IntensityPreset.from_dict(MEDICAL_PRESETS["microscopy"])
        for i in range(count):
            nuclei = make_nuclei_image(size, size, seed=seed + i, **options)
            instances = nuclei.labels.astype(np.int32)
            out.append(LabeledImage(
                image=preset.resolve(nuclei.image).apply(nuclei.image)[:, :, None], instances=instances,
                classes=np.where(instances > 0, class_id, 0).astype(np.int32),
                name=f"synthetic nuclei seed {seed + i}",
            ))
        return out
    if kind == "ct":
        from smallseg.data.medical import make_ct_volume

        preset = IntensityPreset.from_dict(MEDICAL_PRESETS["CT"])
        n_slices = int(options.pop("slices", 48))
        for i in range(count):
            rng = np.random.default_rng(seed + i)
            volume = make_ct_volume((size, size, n_slices), seed=seed + i, **options)
            hu = volume.hu_zyx
            import SimpleITK as sitk

            labels = sitk.GetArrayFromImage(volume.labels).astype(np.int32)
            spacing = volume.image.GetSpacing()
            with_objects = np.nonzero(labels.reshape(len(labels), -1).max(1) > 0)[0]
            without = np.setdiff1d(np.arange(len(labels)), with_objects)
            chosen = np.concatenate([with_objects, rng.choice(without, min(len(without), len(with_objects)),
                                                              replace=False)]) if len(without) else with_objects
            for z in np.sort(chosen):
                out.append(LabeledImage(
                    image=preset.apply(hu[z])[:, :, None], instances=labels[z],
                    classes=np.where(labels[z] > 0, class_id, 0).astype(np.int32),
                    name=f"synthetic ct seed {seed + i} slice {z}", pixel_area=spacing[0] * spacing[1], pixel_unit="mm",
                ))
        return out
    raise SmallsegError(f"synthetic: unknown kind {kind!r}; use remote-sensing, nuclei or ct")


# How medical images become model input, by modality (IntensityPreset dicts). Stored in a trained
# model's config (``training["intensity_presets"]``) so inference maps intensities the same way.
MEDICAL_PRESETS = {
    "CT": {"kind": "window", "low": -1350.0, "high": 150.0, "name": "lung"},
    "microscopy": {"kind": "percentile", "p_low": 1.0, "p_high": 99.5, "name": "percentile"},
}


def band_statistics(images: list[LabeledImage], input_scale: float) -> tuple[list[float], list[float]]:
    """Per-band mean and std of ``image * input_scale`` over all images (the model's input statistics)."""
    if not images:
        raise SmallsegError("no training images to compute band statistics from")
    sums = sq = None
    count = 0
    for item in images:
        x = item.image.reshape(-1, item.image.shape[-1]).astype(np.float64) * input_scale
        s, s2 = x.sum(0), (x * x).sum(0)
        sums, sq = (s, s2) if sums is None else (sums + s, sq + s2)
        count += len(x)
    mean = sums / count
    std = np.sqrt(np.maximum(sq / count - mean * mean, 1e-12))
    return mean.tolist(), np.maximum(std, 1e-6).tolist()


def default_input_scale(images: list[LabeledImage]) -> float:
    """Multiplier that brings the training images' raw values to about [0, 1].

    1/255 for 8-bit; for other integer data 1 / (99.9th percentile of the values), since 16-bit imagery
    rarely uses the full range (12-bit sensors, reflectance x 10,000, camera counts); 1 for float data
    (assumed already scaled, e.g. by an intensity preset).
    """
    dtype = np.dtype(images[0].image.dtype)
    if dtype == np.uint8:
        return 1.0 / 255.0
    if np.issubdtype(dtype, np.integer):
        sample = np.concatenate([im.image.ravel()[:: max(im.image.size // 200_000, 1)] for im in images])
        return 1.0 / max(float(np.percentile(sample, 99.9)), 1.0)
    return 1.0


class CropDataset(Dataset):
    """Augmented, target-encoded training crops drawn from in-memory labelled images.

    Sample ``index`` of epoch ``e`` is a pure function of ``(seed, e, index)``. Call :meth:`set_epoch`
    at the start of every epoch.

    Returns per item: ``(image, targets)``, image a (C, S, S) float32 tensor normalised as
    ``config.normalise`` does, targets the dict of :func:`smallseg.train.targets.encode_targets`.
    """

    def __init__(
        self,
        images: list[LabeledImage],
        config: ModelConfig,
        augment: AugmentConfig,
        *,
        samples_per_epoch: int,
        seed: int = 0,
    ):
        if not images:
            raise SmallsegError("training data: no labelled images")
        channels = {item.image.shape[-1] for item in images}
        if channels != {config.in_channels}:
            raise SmallsegError(
                f"training data: images have {sorted(channels)} bands, the model config says in_channels="
                f"{config.in_channels}"
            )
        self.images = images
        self.config = config
        self.augment = augment
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed = int(seed)
        self.epoch = 0
        self._pipeline = build_augment(augment, seed=seed)
        # Sample images in proportion to their area, so a big scene is not seen as often as a tiny one.
        areas = np.array([item.image.shape[0] * item.image.shape[1] for item in images], np.float64)
        self._p = areas / areas.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _one_crop(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        item = self.images[int(rng.choice(len(self.images), p=self._p))]
        # Cut a window big enough for the largest rescale before augmenting, instead of rescaling the
        # whole scene.
        size = int(np.ceil(self.augment.crop_size / min(self.augment.scale_range))) + 2
        h, w = item.instances.shape
        y0 = int(rng.integers(0, max(h - size, 0) + 1))
        x0 = int(rng.integers(0, max(w - size, 0) + 1))
        window = (slice(y0, y0 + size), slice(x0, x0 + size))
        image = item.image[window].astype(np.float32) * np.float32(self.config.input_scale)
        instances = item.instances[window]
        classes = item.classes[window] if item.classes is not None else (instances > 0).astype(np.int32)
        self._pipeline.set_random_seed(int(rng.integers(0, 2**31 - 1)))
        return augment_sample(self._pipeline, image, instances, classes)

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        if rng.random() < self.augment.mosaic_p:
            image, instances, classes = mosaic([self._one_crop(rng) for _ in range(4)], self.augment.crop_size, rng)
        else:
            image, instances, classes = self._one_crop(rng)
        targets = encode_targets(instances, classes, self.config.max_distance_px)
        x = self.config.normalise(np.moveaxis(image, -1, 0) / np.float32(self.config.input_scale))
        return torch.from_numpy(np.ascontiguousarray(x)), targets


def collate(batch):
    """DataLoader collate: stack images and targets."""
    from smallseg.train.targets import collate_targets

    images = torch.stack([item[0] for item in batch])
    return images, collate_targets([item[1] for item in batch])
