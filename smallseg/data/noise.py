"""Coordinate-hashed noise: random fields that are a pure function of (seed, position).

Every value here is computed from the *global* coordinate of a sample and a salt, never from a random
stream or an FFT over the array. That is what lets a scene be rendered in windows of any size and come out
bit-identical to the same scene rendered in one piece: a pixel's texture does not depend on which window
it was computed in, and no window needs a lattice of the whole scene in memory.

Conventions: ``ys`` and ``xs`` are 1D float64 coordinate vectors (any unit; noise scales are in the same
unit), outputs are ``(len(ys), len(xs))`` float32 arrays.
"""

from __future__ import annotations

import hashlib

import numpy as np

_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)
_GOLD = np.uint32(0x9E3779B1)


def hash_u32(values: np.ndarray) -> np.ndarray:
    """Wellons' ``lowbias32`` integer hash, element-wise, uint32 -> uint32 (wrapping arithmetic)."""
    x = np.asarray(values).astype(np.uint32, copy=True)
    x ^= x >> np.uint32(16)
    x *= _M1
    x ^= x >> np.uint32(15)
    x *= _M2
    x ^= x >> np.uint32(16)
    return x


def salt_of(seed: int, *names: object) -> int:
    """A 32-bit salt from a seed and names (e.g. ``salt_of(seed, "ground", band)``); stable across runs."""
    digest = hashlib.blake2b(repr((int(seed), *map(str, names))).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def hash_grid(iy: np.ndarray, ix: np.ndarray, salt: int) -> np.ndarray:
    """Hash of integer lattice points: ``iy`` (ny,) and ``ix`` (nx,) int64 -> (ny, nx) uint32."""
    hy = hash_u32((iy.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32) ^ np.uint32(salt))
    return hash_u32((ix.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)[None, :] * _GOLD ^ hy[:, None])


def uniform_grid(iy: np.ndarray, ix: np.ndarray, salt: int) -> np.ndarray:
    """Uniform [0, 1) float32 value per lattice point, shape (len(iy), len(ix))."""
    return (hash_grid(iy, ix, salt) >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def gaussian_grid(iy: np.ndarray, ix: np.ndarray, salt: int) -> np.ndarray:
    """Approximately standard-normal float32 per lattice point (Irwin-Hall sum of the hash's 4 bytes)."""
    h = hash_grid(iy, ix, salt)
    total = np.zeros(h.shape, np.float32)
    for shift in (0, 8, 16, 24):
        total += ((h >> np.uint32(shift)) & np.uint32(0xFF)).astype(np.float32)
    # Sum of 4 U{0..255}: mean 510, variance 4 * (256**2 - 1) / 12.
    return (total - np.float32(510.0)) * np.float32(1.0 / 147.79)


def value_noise(ys: np.ndarray, xs: np.ndarray, scale: float, salt: int) -> np.ndarray:
    """Smooth value noise with lattice spacing ``scale``, values in [-1, 1], shape (len(ys), len(xs)).

    Lattice values are hashed from integer lattice coordinates and blended with a smoothstep; the blend
    is separable (rows of the small lattice first, then columns), so the cost is ~3 operations per
    output sample whatever the scale.
    """
    fy = np.asarray(ys, np.float64) / scale
    fx = np.asarray(xs, np.float64) / scale
    iy0 = np.floor(fy).astype(np.int64)
    ix0 = np.floor(fx).astype(np.int64)
    ty = (fy - iy0).astype(np.float32)
    tx = (fx - ix0).astype(np.float32)
    ty = ty * ty * (np.float32(3) - np.float32(2) * ty)
    tx = tx * tx * (np.float32(3) - np.float32(2) * tx)
    gy0, gx0 = int(iy0.min()), int(ix0.min())
    grid = uniform_grid(
        np.arange(gy0, int(iy0.max()) + 2), np.arange(gx0, int(ix0.max()) + 2), salt
    ) * np.float32(2) - np.float32(1)
    jx = ix0 - gx0
    rows = grid[:, jx] * (np.float32(1) - tx) + grid[:, jx + 1] * tx
    jy = iy0 - gy0
    wy = ty[:, None]
    return rows[jy] * (np.float32(1) - wy) + rows[jy + 1] * wy


def fractal_noise(
    ys: np.ndarray,
    xs: np.ndarray,
    scale: float,
    salt: int,
    *,
    octaves: int = 4,
    persistence: float = 0.5,
) -> np.ndarray:
    """Multi-scale (fBm) value noise: octaves at ``scale, scale/2, ...``; roughly unit-range float32."""
    total = np.zeros((len(ys), len(xs)), np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        total += np.float32(amplitude) * value_noise(ys, xs, scale / (2**octave), salt + 7919 * octave)
        norm += amplitude
        amplitude *= persistence
    total *= np.float32(1.0 / norm)
    return total


def pixel_gaussian(rows: np.ndarray, cols: np.ndarray, salt: int) -> np.ndarray:
    """Per-pixel approximately N(0, 1) float32 noise from integer pixel indices (rows (H,), cols (W,))."""
    return gaussian_grid(np.asarray(rows, np.int64), np.asarray(cols, np.int64), salt)
