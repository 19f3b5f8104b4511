"""Small synthetic volumes with exact labels, for tests, the demo fallback and benchmarks.

One of tomo4d's three synthetic-data generators, kept for what the others cannot do: a
segmentation test image in well under a second, with exact phase and particle labels (touching
spheres split as a watershed would); the in-situ battery experiment is :mod:`tomo4d.phantom`.

Spheres ("particles", some touching) in a grey matrix with dark pores, blurred
and noisy.  Phase labels: 1 = matrix (carbon-binder/electrolyte), 2 =
particles, 3 = pores.  Particle labels: 1..n, touching spheres split along
the power-distance bisector (what a watershed on the distance map recovers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["MATRIX", "PARTICLE", "PORE", "SyntheticSegmentation", "scribbles", "spheres"]

MATRIX, PARTICLE, PORE = 1, 2, 3


@dataclass(frozen=True)
class SyntheticSegmentation:
    """Image with its exact phase and particle labels.

    Attributes
    ----------
    image : numpy.ndarray, float32, (z, y, x)
        Blurred, noisy grey values (matrix ~0.45, particles ~1, pores ~0.1).
    phases : numpy.ndarray, uint8, (z, y, x)
        1 matrix, 2 particles, 3 pores.
    particles : numpy.ndarray, int32, (z, y, x)
        0 outside particles, 1..n one label per sphere.
    clean : numpy.ndarray, float32
        The blurred image without noise.
    """

    image: np.ndarray
    phases: np.ndarray
    particles: np.ndarray
    clean: np.ndarray


def spheres(shape=(32, 96, 96), *, n_particles: int = 30, radius=(4.0, 8.0), touching: float = 0.85,
            pores: bool = True, blur_sigma: float = 1.0, noise_sigma: float = 0.08,
            seed: int = 0) -> SyntheticSegmentation:
    """Random spheres in a matrix (see the module docstring); ``touching`` = minimum centre
    distance as a fraction of the sum of radii (< 1 makes touching, overlapping pairs)."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    centres, radii = [], []
    tries = 0
    while len(centres) < n_particles and tries < 200 * n_particles:
        tries += 1
        r = rng.uniform(*radius)
        c = np.array([rng.uniform(0, s) for s in shape])
        ok = all(np.linalg.norm(c - c2) >= touching * (r + r2) for c2, r2 in zip(centres, radii))
        if ok:
            centres.append(c)
            radii.append(r)
    best = np.full(shape, np.inf, np.float32)
    particles = np.zeros(shape, np.int32)
    for i, (c, r) in enumerate(zip(centres, radii), start=1):
        d2 = sum((g - ci) ** 2 for g, ci in zip(grids, c)).astype(np.float32)
        power = d2 - r * r  # power distance: negative inside the sphere
        inside = (power < 0) & (power < best)
        particles[inside] = i
        best = np.where(inside, power, best)
    phases = np.full(shape, MATRIX, np.uint8)
    if pores:
        field = ndi.gaussian_filter(rng.normal(size=shape).astype(np.float32), 3.0)
        phases[field > np.quantile(field, 0.9)] = PORE
    phases[particles > 0] = PARTICLE
    levels = np.array([0.0, 0.45, 1.0, 0.1], np.float32)
    clean = ndi.gaussian_filter(levels[phases], blur_sigma) if blur_sigma > 0 else levels[phases]
    image = (clean + rng.normal(0.0, noise_sigma, shape)).astype(np.float32)
    return SyntheticSegmentation(image=image, phases=phases, particles=particles, clean=clean.astype(np.float32))


def scribbles(labels: np.ndarray, *, fraction: float = 0.05, slices=None, erode: int = 1,
              seed: int = 0) -> np.ndarray:
    """Sparse training labels: a random ``fraction`` of the voxels of each class, away from
    class borders (eroded by ``erode``), on the given z ``slices`` only (default all)."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(labels)
    zs = range(labels.shape[0]) if slices is None else slices
    for c in np.unique(labels):
        if c == 0:
            continue
        m = labels == c
        if erode:
            m = ndi.binary_erosion(m, iterations=erode, border_value=1)
        pick = m & (rng.random(labels.shape) < fraction)
        keep = np.zeros_like(pick)
        for z in zs:
            keep[z] = pick[z]
        out[keep] = c
    return out
