"""Sensor and atmosphere effects of the synthetic aerial worlds (``world="v2"``), window by window.

Each effect is a pure function of the rendered reflectance, the pixel's *global* position and the scene's
:class:`SensorParams`, so a window of a scene comes out bit-identical to the same window of the whole scene:

- haze: an additive path-radiance veil, smoothly varying over hundreds of metres;
- PSF: a Gaussian blur (the window carries a halo of pixels for it, see ``_HALO_PX`` in the generator);
- noise: photon shot noise (variance proportional to the signal) plus read noise, from hashed per-pixel
  Gaussians (:func:`smallseg.data.noise.pixel_gaussian`);
- pan: a panchromatic band as a weighted sum of R, G, B and NIR (450-900 nm response);
- radiometric jitter: per-band gain, offset and gamma drawn per scene (different cameras, calibrations,
  display stretches), applied when reflectance becomes counts;
- JPEG: 8x8 DCT quantisation in YCbCr with 4:2:0 chroma, on blocks aligned to the scene's pixel grid (so a
  window that starts on a multiple of 16 pixels sees the same blocks as the whole scene).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.fft import dctn, idctn

from smallseg.data.noise import pixel_gaussian, salt_of, value_noise

# Panchromatic response as weights of (R, G, B, NIR) reflectance (a 450-900 nm pan band sees NIR strongly).
PAN_WEIGHTS = np.array([0.30, 0.32, 0.13, 0.25], np.float32)
_HAZE = np.array([0.50, 0.52, 0.56, 0.45], np.float32)

# Standard JPEG quantisation tables (ITU T.81 Annex K) for quality 50.
_Q_LUMA = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99],
], np.float32)
_Q_CHROMA = np.full((8, 8), 99, np.float32)
_Q_CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]


@dataclass(frozen=True)
class SensorParams:
    """How one scene was imaged; drawn per scene by :func:`draw_sensor`.

    Attributes:
        blur_px: Gaussian PSF sigma, pixels (drawn 0.35-0.85; at most 1.4).
        read_noise: read-noise std in reflectance units (drawn 0.003-0.012).
        shot_gain: shot-noise variance per unit reflectance (variance = read² + shot_gain * reflectance).
        haze: mean haze fraction (0-0.3): reflectance -> (1 - h) * reflectance + h * haze colour.
        gain, offset, gamma: (4,) per-band radiometric jitter (R, G, B, NIR); counts come from
            ``gain * reflectance + offset``, and the 8-bit display stretch takes the power ``1 / (1.6 * gamma)``.
        white: reflectance (after gain) shown as the top 8-bit value; brighter pixels clip there.
        top: the largest 8-bit value the stretch produces (sensors and stretches often stop short of 255).
        jpeg_quality: 0 for none, else the JPEG quality (30-95) of the 8-bit image (3- and 1-band only).
    """

    blur_px: float
    read_noise: float
    shot_gain: float
    haze: float
    gain: tuple[float, float, float, float]
    offset: tuple[float, float, float, float]
    gamma: tuple[float, float, float, float]
    white: float
    top: float
    jpeg_quality: int

    def validate(self) -> None:
        if not 0.0 <= self.blur_px <= 1.4:
            raise ValueError(f"blur_px {self.blur_px}: the render halo covers 0 to 1.4 px")
        if not 0 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality {self.jpeg_quality}: use 0 (none) or 1-100")
        if not 0.05 <= self.white <= 2.0 or not 1.0 <= self.top <= 255.0:
            raise ValueError(f"white {self.white} / top {self.top}: out of range")


def draw_sensor(rng: np.random.Generator, *, winter: bool) -> SensorParams:
    """A random plausible sensor for one scene (``rng`` is the scene's own generator)."""
    common = rng.normal(0.0, 0.05)  # cameras drift in all bands together more than per band
    gain = tuple(float(np.clip(1.0 + common + rng.normal(0.0, 0.05), 0.8, 1.2)) for _ in range(4))
    offset = tuple(float(rng.uniform(-0.005, 0.02)) for _ in range(4))
    g0 = rng.uniform(0.85, 1.2)
    gamma = tuple(float(g0 * rng.uniform(0.96, 1.04)) for _ in range(4))
    # Winter scenes are stretched so snow sits near the top (as in real snowy orthophotos); others have
    # their white point somewhere between bright roofs and concrete.
    white = float(rng.uniform(0.75, 0.95) if winter else rng.uniform(0.42, 0.62))
    params = SensorParams(
        blur_px=float(rng.uniform(0.35, 0.85)), read_noise=float(rng.uniform(0.003, 0.012)),
        shot_gain=float(rng.uniform(0.00002, 0.00015)), haze=float(rng.uniform(0.0, 0.22)),
        gain=gain, offset=offset, gamma=gamma, white=white, top=float(rng.uniform(238.0, 255.0)),
        jpeg_quality=int(rng.integers(40, 92)) if rng.random() < 0.4 else 0,
    )
    params.validate()
    return params


def apply_optics(img: np.ndarray, params: SensorParams, ys: np.ndarray, xs: np.ndarray, rows: np.ndarray,
                 cols: np.ndarray, seed: int) -> np.ndarray:
    """Haze, PSF blur, shot + read noise on a haloed window, in place where possible.

    Args:
        img: (B, h, w) float32 reflectance, B = 3 or 4 (R, G, B(, NIR)) or 1 (pan).
        params: the scene's sensor.
        ys, xs: (h,), (w,) float64 pixel-centre coordinates, metres (haze varies with position).
        rows, cols: (h,), (w,) int global pixel indices (hashed noise).
        seed: scene seed.

    Returns:
        (B, h, w) float32 reflectance as the sensor recorded it (before radiometric jitter).
    """
    nb = img.shape[0]
    if params.haze > 0:
        hz = (params.haze * (0.6 + 0.4 * value_noise(ys, xs, 600.0, salt_of(seed, "v2-haze")))).astype(np.float32)
        haze_colour = _HAZE if nb != 1 else np.array([float(PAN_WEIGHTS @ _HAZE)], np.float32)
        for b in range(nb):
            img[b] += (haze_colour[b] - img[b]) * hz
    for b in range(nb):
        if params.blur_px > 0:
            img[b] = ndimage.gaussian_filter(img[b], params.blur_px, truncate=4.0, mode="nearest")
        var = params.read_noise ** 2 + params.shot_gain * np.clip(img[b], 0, None)
        img[b] += np.sqrt(var) * pixel_gaussian(rows, cols, salt_of(seed, "v2-sensor", b))
    return img


def to_pan(img: np.ndarray) -> np.ndarray:
    """(4, h, w) R, G, B, NIR reflectance -> (1, h, w) panchromatic reflectance."""
    return np.tensordot(PAN_WEIGHTS, img, axes=1)[None].astype(np.float32)


def to_counts(refl: np.ndarray, params: SensorParams, dtype: str) -> np.ndarray:
    """Reflectance (B, h, w) -> counts in ``dtype`` with the scene's gain / offset / gamma / stretch.

    uint8: ``top * clip(v / white, 0, 1) ** (1 / (1.6 * gamma))`` with ``v = gain * refl + offset``;
    uint16: linear 12-bit, ``v * 4095 / 0.6``. Valid pixels are never 0 (0 is the nodata value).
    """
    nb = refl.shape[0]
    idx = [0] if nb == 1 else list(range(nb))
    gain = np.asarray(params.gain, np.float32)[idx] if nb != 1 else np.float32([np.mean(params.gain)])
    offset = np.asarray(params.offset, np.float32)[idx] if nb != 1 else np.float32([np.mean(params.offset)])
    gamma = np.asarray(params.gamma, np.float32)[idx] if nb != 1 else np.float32([np.mean(params.gamma)])
    v = refl * gain[:, None, None] + offset[:, None, None]
    if dtype == "uint8":
        out = np.empty(refl.shape, np.float32)
        for b in range(nb):
            out[b] = params.top * np.clip(v[b] / params.white, 0, 1) ** (1.0 / (1.6 * gamma[b]))
        hi = 255
    else:
        out = v * np.float32(4095.0 / 0.6)
        hi = 4095
    return np.clip(np.rint(out), 1, hi).astype(dtype)


def _quant_table(base: np.ndarray, quality: int) -> np.ndarray:
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    return np.clip(np.floor((base * scale + 50.0) / 100.0), 1, 255).astype(np.float32)


def _blocks_dct_roundtrip(plane: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Quantise a (h, w) plane (h, w multiples of 8) in 8x8 DCT blocks and transform back."""
    h, w = plane.shape
    blocks = plane.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)
    coef = dctn(blocks - 128.0, axes=(2, 3), norm="ortho")
    coef = np.round(coef / table) * table
    back = idctn(coef, axes=(2, 3), norm="ortho") + 128.0
    return back.transpose(0, 2, 1, 3).reshape(h, w)


def jpeg_roundtrip(image: np.ndarray, quality: int, row0: int, col0: int) -> np.ndarray:
    """JPEG-compress and decompress an 8-bit window whose upper-left pixel is (row0, col0) of the scene.

    Blocks (8x8 luma, 16x16 MCUs with 4:2:0 chroma) sit on the scene's pixel grid, so ``row0`` and
    ``col0`` must be multiples of 16; a window cut by the scene's bottom/right edge is padded by edge
    replication, exactly as the whole scene would be there.

    Args:
        image: (B, h, w) uint8, B = 1 (grey) or 3 (RGB).
        quality: JPEG quality 1-100.
        row0, col0: the window's position in the scene, px.

    Returns:
        (B, h, w) uint8, values >= 1.
    """
    if row0 % 16 or col0 % 16:
        raise ValueError(f"jpeg_roundtrip: window origin ({row0}, {col0}) is not on the 16-px MCU grid")
    nb, h, w = image.shape
    ph, pw = (-h) % 16, (-w) % 16
    x = np.pad(image.astype(np.float32), ((0, 0), (0, ph), (0, pw)), mode="edge")
    ql, qc = _quant_table(_Q_LUMA, quality), _quant_table(_Q_CHROMA, quality)
    if nb == 1:
        out = _blocks_dct_roundtrip(x[0], ql)[None]
    else:
        r, g, b = x
        y = 0.299 * r + 0.587 * g + 0.114 * b
        cb = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
        cr = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b
        y = _blocks_dct_roundtrip(y, ql)
        H, W = y.shape
        chroma = []
        for c in (cb, cr):
            small = c.reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3))
            small = _blocks_dct_roundtrip(small, qc)
            chroma.append(np.repeat(np.repeat(small, 2, 0), 2, 1))
        cb, cr = chroma
        out = np.stack([y + 1.402 * (cr - 128.0), y - 0.344136 * (cb - 128.0) - 0.714136 * (cr - 128.0),
                        y + 1.772 * (cb - 128.0)])
    return np.clip(np.rint(out[:, :h, :w]), 1, 255).astype(np.uint8)


def sun_vector(sun_dir: np.ndarray, shadow_per_m: float) -> np.ndarray:
    """(3,) unit vector towards the sun (x, y-down, up) from its horizontal direction and tan(zenith)."""
    zenith = math.atan(shadow_per_m)
    return np.array([sun_dir[0] * math.sin(zenith), sun_dir[1] * math.sin(zenith), math.cos(zenith)])
