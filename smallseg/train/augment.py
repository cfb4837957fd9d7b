"""Training augmentation for small objects: albumentations for the geometric/photometric part, plus Mosaic.

All functions work on one sample at a time:

- ``image``: (H, W, C) float32, intensities scaled to [0, 1] (before per-band mean/std normalisation, so
  photometric jitter means the same thing for uint8, uint16 and CT input).
- ``instances``: (H, W) int32 instance ids, 0 = background, -1 = not labelled (ignored by the losses).
- ``classes``: (H, W) int32 class ids, 0 = background.

Label rasters are resampled with nearest neighbour, so ids stay ids; head targets (centroid vectors,
distance maps) are computed *after* augmentation from the augmented labels, which keeps them exact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402  (env var above must be set before import)
import cv2  # noqa: E402


class _BandMean(A.ImageOnlyTransform):
    """Every band replaced by the mean of all bands (any band count; albumentations' ToGray needs 3)."""

    def apply(self, img, **params):
        return np.repeat(img.mean(axis=-1, keepdims=True), img.shape[-1], axis=-1).astype(img.dtype)

    def get_transform_init_args_names(self):
        return ()


@dataclass
class AugmentConfig:
    """What the training augmentation does; stored in training configs (YAML ``augment:`` section).

    Attributes:
        crop_size: side of the square training crop, px.
        scale_range: multi-scale rescale factors (min, max) applied before cropping; < 1 shrinks objects,
            which is how a model learns objects smaller than any in the training set.
        flips: random horizontal and vertical flips.
        rotate90: random 90-degree rotations (overhead and microscopy imagery has no "up").
        brightness: max relative brightness change; ``contrast`` likewise.
        gamma_range: gamma jitter as (min, max) in percent, albumentations' convention.
        noise_std: max std of additive Gaussian noise, in [0, 1] intensity units.
        blur_p: probability of a slight Gaussian blur (defocus, resampling).
        mosaic_p: probability that a training sample is a Mosaic of four crops instead of one crop.
        hue_saturation: colour jitter; only meaningful for 3-band RGB imagery, off for CT / fluorescence.

    Domain randomisation (all off by default, so existing configs train as before; see
    ``configs/remote-sensing-v2.yaml``):
        rotate_p: probability of a rotation by any angle (objects seen from above have no preferred
            heading; corners outside the source become background), applied before the crop.
        blur_sigma: (min, max) Gaussian blur sigma, px, of the ``blur_p`` blur (sensor PSF, defocus).
        jpeg_p: probability of JPEG compression at a quality in ``jpeg_quality`` (min, max).
        grey_p: probability that every band is replaced by the band mean (panchromatic-like input).
        band_gain: max relative per-band gain change (radiometric calibration, white balance).
        downscale_p: probability of a down- then up-sampling by a factor in (0.5, 0.9) (resampled imagery).
    """

    crop_size: int = 256
    scale_range: tuple[float, float] = (0.75, 1.5)
    flips: bool = True
    rotate90: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    gamma_range: tuple[float, float] = (80.0, 120.0)
    noise_std: float = 0.02
    blur_p: float = 0.1
    mosaic_p: float = 0.5
    hue_saturation: bool = False
    rotate_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.3, 1.0)
    jpeg_p: float = 0.0
    jpeg_quality: tuple[float, float] = (40.0, 95.0)
    grey_p: float = 0.0
    band_gain: float = 0.0
    downscale_p: float = 0.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("rotate_p", "blur_p", "jpeg_p", "grey_p", "downscale_p", "mosaic_p"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"augment {name}={value}: a probability, use 0 to 1")
        lo, hi = self.jpeg_quality
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"augment jpeg_quality={list(self.jpeg_quality)}: use [min, max] within 1-100")
        lo, hi = self.blur_sigma
        if not 0 < lo <= hi:
            raise ValueError(f"augment blur_sigma={list(self.blur_sigma)}: use [min, max] with 0 < min <= max (px)")
        if not 0.0 <= self.band_gain < 1.0:
            raise ValueError(f"augment band_gain={self.band_gain}: use 0 (off) to below 1")

    @classmethod
    def from_dict(cls, values: dict | None) -> "AugmentConfig":
        """Build from a config mapping, rejecting unknown keys (typos in YAML should not pass silently)."""
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown augment option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for key in ("scale_range", "gamma_range", "blur_sigma", "jpeg_quality"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


def build_augment(config: AugmentConfig, *, seed: int | None = None) -> A.Compose:
    """The per-crop albumentations pipeline: rescale → pad → random crop → flips/rot90 → photometric.

    Args:
        config: what to apply.
        seed: seeds albumentations' own generator so a run is reproducible.

    Returns:
        An ``A.Compose`` called as ``pipeline(image=image, masks=[instances, classes])``; the crop is
        ``config.crop_size`` square whatever the input size (padded with background where smaller).
    """
    size = int(config.crop_size)
    lo, hi = config.scale_range
    geometric = [
        # RandomScale's limit is relative to 1.0.
        A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=cv2.INTER_NEAREST, p=1.0 if (lo, hi) != (1.0, 1.0) else 0.0),
    ]
    if config.rotate_p > 0:
        geometric.append(A.Rotate(limit=180, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                                  border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=config.rotate_p))
    geometric += [
        A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
        A.RandomCrop(height=size, width=size),
    ]
    if config.flips:
        geometric += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    if config.rotate90:
        geometric.append(A.RandomRotate90(p=0.5))
    photometric = []
    if config.brightness or config.contrast:
        photometric.append(A.RandomBrightnessContrast(
            brightness_limit=config.brightness, contrast_limit=config.contrast, p=0.8))
    if config.gamma_range != (100.0, 100.0):
        photometric.append(A.RandomGamma(gamma_limit=config.gamma_range, p=0.5))
    if config.hue_saturation:
        photometric.append(A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=15, val_shift_limit=0, p=0.5))
    if config.band_gain > 0:
        g = float(config.band_gain)
        photometric.append(A.MultiplicativeNoise(multiplier=(1 - g, 1 + g), per_channel=True, elementwise=False,
                                                 p=0.5))
    if config.grey_p > 0:
        photometric.append(_BandMean(p=config.grey_p))
    if config.downscale_p > 0:
        photometric.append(A.Downscale(scale_range=(0.5, 0.9), p=config.downscale_p))
    if config.blur_p > 0:
        s_lo, s_hi = (float(v) for v in config.blur_sigma)
        kernel = 2 * int(np.ceil(3 * s_hi)) + 1  # odd, covers +-3 sigma
        blur_limit = (3, 3) if config.blur_sigma == (0.3, 1.0) else (3, max(3, kernel))
        photometric.append(A.GaussianBlur(blur_limit=blur_limit, sigma_limit=(s_lo, s_hi), p=config.blur_p))
    if config.noise_std > 0:
        photometric.append(A.GaussNoise(std_range=(0.0, float(config.noise_std)), p=0.5))
    if config.jpeg_p > 0:  # last, as a camera or an archive would apply it
        q_lo, q_hi = (int(v) for v in config.jpeg_quality)
        photometric.append(A.ImageCompression(quality_range=(q_lo, q_hi), p=config.jpeg_p))
    return A.Compose(geometric + photometric, seed=seed)


def augment_sample(
    pipeline: A.Compose, image: np.ndarray, instances: np.ndarray, classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply ``pipeline`` to one sample; returns (image float32 clipped to [0, 1], instances, classes)."""
    out = pipeline(image=image.astype(np.float32, copy=False),
                   masks=[instances.astype(np.int32, copy=False), classes.astype(np.int32, copy=False)])
    return np.clip(out["image"], 0.0, 1.0), out["masks"][0], out["masks"][1]


def mosaic(
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mosaic: four samples stitched around a random centre into one ``size`` x ``size`` crop.

    Each quadrant takes a random crop of the matching size from one sample (zero-padded if the sample
    is smaller). Instance ids are renumbered so they stay unique across quadrants; objects cut by a
    quadrant edge keep their visible part, as a tile of a large scene would show them.

    Args:
        samples: four (image (H, W, C) float32, instances (H, W) int, classes (H, W) int) tuples.
        size: output side, px.
        rng: the random generator (the caller's, for reproducibility).

    Returns:
        (image (size, size, C) float32, instances (size, size) int32 with ids 1..N (-1 where a sample was not
        labelled), classes (size, size) int32).
    """
    if len(samples) != 4:
        raise ValueError(f"mosaic needs 4 samples, got {len(samples)}")
    channels = samples[0][0].shape[2]
    image = np.zeros((size, size, channels), np.float32)
    instances = np.zeros((size, size), np.int32)
    classes = np.zeros((size, size), np.int32)
    # Keep the centre away from the edges so no quadrant is a sliver.
    cy = int(rng.integers(size // 4, 3 * size // 4 + 1))
    cx = int(rng.integers(size // 4, 3 * size // 4 + 1))
    quadrants = [(0, cy, 0, cx), (0, cy, cx, size), (cy, size, 0, cx), (cy, size, cx, size)]
    next_id = 1
    for (y0, y1, x0, x1), (img, inst, cls) in zip(quadrants, samples):
        h, w = y1 - y0, x1 - x0
        if h == 0 or w == 0:
            continue
        sy = int(rng.integers(0, max(img.shape[0] - h, 0) + 1))
        sx = int(rng.integers(0, max(img.shape[1] - w, 0) + 1))
        crop_img = img[sy:sy + h, sx:sx + w]
        crop_inst = inst[sy:sy + h, sx:sx + w]
        crop_cls = cls[sy:sy + h, sx:sx + w]
        ch, cw = crop_img.shape[:2]
        image[y0:y0 + ch, x0:x0 + cw] = crop_img
        # Dense renumbering: ids present in this crop map to next_id, next_id+1, ...
        present, inverse = np.unique(crop_inst, return_inverse=True)
        inverse = inverse.reshape(crop_inst.shape)
        new_ids = np.zeros(len(present), np.int32)
        nonzero = present > 0
        new_ids[nonzero] = np.arange(next_id, next_id + int(nonzero.sum()), dtype=np.int32)
        new_ids[present < 0] = -1  # not labelled stays not labelled (it is no object)
        next_id += int(nonzero.sum())
        instances[y0:y0 + ch, x0:x0 + cw] = new_ids[inverse]
        classes[y0:y0 + ch, x0:x0 + cw] = np.where(crop_inst != 0, crop_cls, 0)
    return image, instances, classes
