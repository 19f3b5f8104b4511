"""Synthetic LQ/HQ pairs for the enhancement tests (independent of tomo4d.phantom)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def spheres(shape, *, seed: int = 0, n: int | None = None, rmin: float = 3.0, rmax: float = 8.0) -> np.ndarray:
    """Float32 volume of bright spheres (value 1) on a dark background (0.2), sharp edges."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float32)
    img = np.full(shape, 0.2, np.float32)
    n = n or max(4, int(np.prod(shape) / 900))
    for _ in range(n):
        c = rng.uniform(0, 1, 3) * np.asarray(shape)
        r = rng.uniform(rmin, rmax)
        img[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < r * r] = rng.uniform(0.7, 1.0)
    return img


def degrade(hq: np.ndarray, *, sigma: float = 1.5, noise: float = 0.03, seed: int = 1) -> np.ndarray:
    """HQ -> LQ: Gaussian blur (HQ pixels), 2x2x2 binning, Gaussian noise."""
    rng = np.random.default_rng(seed)
    b = ndimage.gaussian_filter(hq, sigma)
    nz, ny, nx = (s // 2 for s in hq.shape)
    lq = b[: 2 * nz, : 2 * ny, : 2 * nx].reshape(nz, 2, ny, 2, nx, 2).mean((1, 3, 5))
    return (lq + rng.normal(0, noise, lq.shape)).astype(np.float32)


def to_uint16(a: np.ndarray) -> np.ndarray:
    return np.clip(a * 30000 + 5000, 0, 65535).astype(np.uint16)


def pair(shape=(16, 96, 96), *, seed: int = 0, sigma: float = 1.5, noise: float = 0.03, dtype="uint16"):
    """(lq, hq) Volumes: HQ 50 nm, LQ 100 nm covering the same field."""
    from tomo4d import Volume, VolumeMetadata

    hq = spheres(shape, seed=seed)
    lq = degrade(hq, sigma=sigma, noise=noise, seed=seed + 1)
    hq_n = hq + np.random.default_rng(seed + 2).normal(0, 0.01, hq.shape).astype(np.float32)
    if dtype == "uint16":
        lq, hq_n = to_uint16(lq), to_uint16(hq_n)
    return (Volume(lq, 100.0, VolumeMetadata(name="synthetic LQ", modality="synthetic")),
            Volume(hq_n, 50.0, VolumeMetadata(name="synthetic HQ", modality="synthetic")))
