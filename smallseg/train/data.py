"""Training data: labelled images from files or generators, cut into augmented, target-encoded crops.

A :class:`LabeledImage` (defined in :mod:`smallseg.data.labels.common`) is one image with its instance (and
class) labels, in memory; instance id -1 marks pixels that are not labelled (no loss there). Sources that make
them: :func:`read_geotiff_pair` (image GeoTIFF + instance-id GeoTIFF + optional class GeoTIFF),
:func:`read_coco` (images + COCO JSON), the label sources of :mod:`smallseg.data.labels` (vector files, boxes,
label images, label volumes, with a labelled area) and the synthetic generators of :mod:`smallseg.data`.
:class:`CropDataset` turns a list of them into a torch ``Dataset`` of ``(image tensor, targets)`` pairs;
each sample is a pure function of ``(seed, epoch, index)``, so runs are reproducible with any number of
workers and a resumed run sees the same samples as an uninterrupted one.

Intensities: images stay raw (as read, as generated); every crop and every validation image goes through the
model's :class:`~smallseg.normalize.Normalization` (:meth:`~smallseg.normalize.Normalization.map_unit`, then
augmentation in [0, 1] units, then :meth:`~smallseg.normalize.Normalization.standardise`), with the statistics
fitted on the whole image: the function inference applies, so training and inference cannot disagree.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import rasterio
import SimpleITK as sitk
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from smallseg.data.coco_json import describe_unknown_categories, unknown_categories
from smallseg.data.labels.common import LabeledImage  # noqa: F401  (defined with the label sources; re-exported)
from smallseg.data.medical import make_ct_volume
from smallseg.data.microscopy import make_nuclei_image
from smallseg.data.remote_sensing import make_remote_sensing_scene
from smallseg.errors import SmallsegError, one_line
from smallseg.io.geotiff import RasterGeometry
from smallseg.models.config import ModelConfig, slice_indices
from smallseg.normalize import (
    CT_WINDOWS,
    MICROSCOPY,
    Normalization,
    NormStats,
    normalization_for,
)
from smallseg.train.augment import AugmentConfig, augment_sample, build_augment, mosaic
from smallseg.train.targets import collate_targets, encode_targets


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
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress lines
            coco = COCO(str(annotations_path))
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise SmallsegError(f"{annotations_path}: not a readable COCO annotation file ({one_line(exc)})") from None

    unknown = unknown_categories(coco.dataset)
    if unknown:  # training on them would need a class the model does not have; dropping them loses labels
        raise SmallsegError(describe_unknown_categories(unknown, str(annotations_path))
                            + "; declare them in categories or remove those annotations")
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


def synthetic_images(kind: str, *, count: int, size: int, seed: int, raw: bool = False,
                     **options) -> list[LabeledImage]:
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
            ``class_id`` (medical kinds: the class their objects get, default 1) and, for ``ct``, ``slices``
            (per volume, default 48) and ``slice_context`` (``k``: each image holds slices ``z - k .. z + k``
            as channels, clamped at the volume's ends, for a 2.5-D model; default 0).

        raw: medical kinds: keep the generator's raw values (nuclei in their dtype, CT as int16 HU) and say
            in ``LabeledImage.normalization`` how they are meant to be mapped (what training uses). False:
            float32 in [0, 1], already mapped with that normalisation (percentile 1-99.5 per image for
            microscopy, the -1350..150 HU lung window for CT), the input today's shipped medical model takes
            through ``config.normalise``.

    Synthetic CT slices have ``modality="CT"``.
    """
    out = []
    if kind == "remote-sensing":
        for i in range(count):
            scene = make_remote_sensing_scene(size, size, seed=seed + i, **options)
            out.append(LabeledImage(
                image=np.moveaxis(scene.image, 0, -1), instances=scene.instances.astype(np.int32),
                classes=scene.classes.astype(np.int32), name=f"synthetic remote-sensing seed {seed + i}",
                pixel_area=scene.pixel_size_m ** 2, pixel_unit="m",
            ))
        return out
    def mapped(norm: Normalization, image: np.ndarray) -> np.ndarray:
        chw = image[None]
        return norm.map_unit(chw, norm.fit(chw))[0]

    class_id = int(options.pop("class_id", 1))
    if kind == "nuclei":
        for i in range(count):
            nuclei = make_nuclei_image(size, size, seed=seed + i, **options)
            instances = nuclei.labels.astype(np.int32)
            out.append(LabeledImage(
                image=(nuclei.image if raw else mapped(MICROSCOPY, nuclei.image))[:, :, None], instances=instances,
                classes=np.where(instances > 0, class_id, 0).astype(np.int32),
                name=f"synthetic nuclei seed {seed + i}", normalization=MICROSCOPY if raw else None,
            ))
        return out
    if kind == "ct":
        lung = CT_WINDOWS["lung_nodule"]
        n_slices = int(options.pop("slices", 48))
        context = int(options.pop("slice_context", 0))
        for i in range(count):
            rng = np.random.default_rng(seed + i)
            volume = make_ct_volume((size, size, n_slices), seed=seed + i, **options)
            hu = volume.hu_zyx

            labels = sitk.GetArrayFromImage(volume.labels).astype(np.int32)
            spacing = volume.image.GetSpacing()
            with_objects = np.nonzero(labels.reshape(len(labels), -1).max(1) > 0)[0]
            without = np.setdiff1d(np.arange(len(labels)), with_objects)
            chosen = np.concatenate([with_objects, rng.choice(without, min(len(without), len(with_objects)),
                                                              replace=False)]) if len(without) else with_objects
            for z in np.sort(chosen):
                # Slices z - k .. z + k as channels, clamped at the ends: what predict_volume gives a 2.5-D model.
                planes = hu[slice_indices(z, context, len(hu))]  # (2k+1, H, W)
                out.append(LabeledImage(
                    image=np.moveaxis(planes if raw else lung.map_unit(planes, lung.fit(planes)), 0, -1),
                    instances=labels[z],
                    classes=np.where(labels[z] > 0, class_id, 0).astype(np.int32),
                    name=f"synthetic ct seed {seed + i} slice {z}", pixel_area=spacing[0] * spacing[1], pixel_unit="mm",
                    modality="CT", normalization=lung if raw else None,
                ))
        return out
    raise SmallsegError(f"synthetic: unknown kind {kind!r}; use remote-sensing, nuclei or ct")


# How medical images became model input before smallseg.normalize, by modality (IntensityPreset dicts); the
# same mappings are smallseg.normalize.MICROSCOPY and CT_WINDOWS["lung_nodule"]. Kept for callers of the
# legacy path (``IntensityPreset.from_dict(MEDICAL_PRESETS[...])``).
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


def unit_statistics(images: list[LabeledImage], normalizations: list[Normalization],
                    max_pixels_per_image: int = 4_194_304) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the mapped images (``norm.map_unit``), over all images together.

    This is what ``mean``/``std`` of a normalisation standardise with; each image contributes at most
    ``max_pixels_per_image`` pixels (a regular stride), so big scenes cost little.
    """
    if not images:
        raise SmallsegError("no training images to compute band statistics from")
    sums = sq = None
    count = 0
    for item, norm in zip(images, normalizations):
        chw = np.moveaxis(item.image, -1, 0)
        stats = norm.fit(chw)
        step = max(1, int(np.ceil(np.sqrt(chw.shape[1] * chw.shape[2] / max_pixels_per_image))))
        mapped = norm.map_unit(chw[:, ::step, ::step], stats)
        x = mapped.reshape(mapped.shape[0], -1).astype(np.float64)
        s, s2 = x.sum(1), (x * x).sum(1)
        sums, sq = (s, s2) if sums is None else (sums + s, sq + s2)
        count += x.shape[1]
    mean = sums / count
    std = np.sqrt(np.maximum(sq / count - mean * mean, 1e-12))
    return mean.tolist(), np.maximum(std, 1e-6).tolist()


def image_normalization(item: LabeledImage, config: ModelConfig) -> Normalization:
    """The normalisation ``config``'s model applies to ``item``: declared for its modality, declared default,
    else the legacy fields with the source's own mapping (``item.normalization``) in front."""
    return normalization_for(config, item.modality or None, legacy_preset=item.normalization)


def normalized_input(item: LabeledImage, config: ModelConfig) -> np.ndarray:
    """(C, H, W) float32 model input for a whole labelled image: its normalisation, fitted on the image itself
    (validation and tune-decode predict each image whole, as a pipeline predicts one scene)."""
    norm = image_normalization(item, config)
    chw = np.moveaxis(item.image, -1, 0)
    return norm.apply(chw, norm.fit(chw))


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

    Returns per item: ``(image, targets)``, image a (C, S, S) float32 tensor, targets the dict of
    :func:`smallseg.train.targets.encode_targets`. Each image is normalised with its normalisation
    (``normalizations[i]``, default :func:`image_normalization`) and statistics fitted once on the whole
    image: ``map_unit`` on the raw crop, augmentation, then ``standardise`` (one mean/std for all images, since
    a Mosaic mixes crops of several).
    """

    def __init__(
        self,
        images: list[LabeledImage],
        config: ModelConfig,
        augment: AugmentConfig,
        *,
        samples_per_epoch: int,
        seed: int = 0,
        normalizations: list[Normalization] | None = None,
    ):
        if not images:
            raise SmallsegError("training data: no labelled images")
        norms = normalizations or [image_normalization(item, config) for item in images]
        if len(norms) != len(images):
            raise SmallsegError(f"training data: {len(norms)} normalizations for {len(images)} images")
        channels = {norm.out_channels(item.image.shape[-1]) for item, norm in zip(images, norms)}
        if channels != {config.in_channels}:
            raise SmallsegError(
                f"training data: images have {sorted(channels)} bands after normalisation, the model config says "
                f"in_channels={config.in_channels}"
            )
        if len({(n.mean, n.std) for n in norms}) != 1:
            raise SmallsegError("training data: the images' normalisations standardise with different mean/std; "
                                "give one mean/std for all (a Mosaic mixes crops of several images)")
        self.normalizations = norms
        # Statistics of each whole image, fitted once: every crop of it is mapped the same way, as every tile
        # of a scene is at inference.
        self.stats: list[NormStats] = [norm.fit(np.moveaxis(item.image, -1, 0)) for item, norm in zip(images, norms)]
        self.images = images
        self.config = config
        self.augment = augment
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed = int(seed)
        self.epoch = 0
        self._pipeline = build_augment(augment, seed=seed)
        # Sample images in proportion to their area, so a big scene is not seen as often as a tiny one.
        # Crops are cut within the box around each image's labelled pixels (a labelled corner of a big scene
        # is where the learning is), and images are drawn in proportion to that box's area.
        self._bounds = [_labelled_bounds(item.instances) for item in images]
        areas = np.array([(b[1] - b[0]) * (b[3] - b[2]) for b in self._bounds], np.float64)
        if not areas.sum():
            raise SmallsegError("training data: no labelled pixel in any image (all outside the labelled area)")
        self._p = areas / areas.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _one_crop(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = int(rng.choice(len(self.images), p=self._p))
        item = self.images[k]
        # Cut a window big enough for the largest rescale before augmenting, instead of rescaling the
        # whole scene.
        size = int(np.ceil(self.augment.crop_size / min(self.augment.scale_range))) + 2
        r0, r1, c0, c1 = self._bounds[k]
        h, w = item.instances.shape
        y0 = _window_start(rng, r0, r1, h, size)
        x0 = _window_start(rng, c0, c1, w, size)
        window = (slice(y0, y0 + size), slice(x0, x0 + size))
        unit = self.normalizations[k].map_unit(np.moveaxis(item.image[window], -1, 0), self.stats[k])
        image = np.ascontiguousarray(np.moveaxis(unit, 0, -1))
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
        x = self.normalizations[0].standardise(np.ascontiguousarray(np.moveaxis(image, -1, 0), dtype=np.float32))
        return torch.from_numpy(np.ascontiguousarray(x)), targets


def _window_start(rng: np.random.Generator, lo: int, hi: int, extent: int, size: int) -> int:
    """Start of a ``size`` window on an axis of ``extent`` px: inside the labelled span [lo, hi) when it is longer
    than the window, else covering all of it; always inside the image where the image is larger than ``size``."""
    if hi - lo >= size:
        first, last = lo, hi - size
    else:
        first, last = hi - size, lo
    top = max(extent - size, 0)
    first, last = min(max(first, 0), top), min(max(last, 0), top)
    return int(rng.integers(first, last + 1))


def _labelled_bounds(instances: np.ndarray) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) half-open box around the labelled pixels (``instances >= 0``); empty: zeros."""
    labelled = instances >= 0
    rows, cols = np.nonzero(labelled.any(1))[0], np.nonzero(labelled.any(0))[0]
    if not len(rows):
        return 0, 0, 0, 0
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def collate(batch):
    """DataLoader collate: stack images and targets."""
    images = torch.stack([item[0] for item in batch])
    return images, collate_targets([item[1] for item in batch])
