"""Fixtures of the DVC tests: the real snow volume deformed by a smooth known field, random textures."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage


def warp_by(reference: np.ndarray, displacement) -> np.ndarray:
    """The deformed volume ``D`` with ``D(X + u(X)) = reference(X)`` for a displacement function
    ``u(points (3, ...)) -> (3, ...)`` in px (inverted by fixed-point iteration)."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in reference.shape], indexing="ij"))
    x = grid.copy()
    for _ in range(60):
        x = grid - displacement(x)
    return ndimage.map_coordinates(reference, x, order=3, mode="mirror").astype(np.float32)


def sine_z(points):
    """u_z = 2 sin(pi z / 100) px, u_y = u_x = 0 (the issue's snow acceptance field)."""
    return np.stack([2.0 * np.sin(np.pi * points[0] / 100.0), 0 * points[1], 0 * points[2]])


@pytest.fixture(scope="session")
def snow(real_file):
    import tifffile

    return tifffile.imread(real_file("snow_xct_100.tif")).astype(np.float32)


@pytest.fixture(scope="session")
def snow_sine(snow):
    """(reference, deformed) for the smooth field :func:`sine_z`."""
    return snow, warp_by(snow, sine_z)


@pytest.fixture(scope="session")
def texture():
    """Smooth random texture (60, 60, 60) float32, feature size ~2 px."""
    rng = np.random.default_rng(11)
    a = ndimage.gaussian_filter(rng.normal(size=(60, 60, 60)), 1.2)
    return ((a - a.mean()) / a.std() * 1000 + 5000).astype(np.float32)


@pytest.fixture(scope="session")
def warp():
    """:func:`warp_by` as a fixture (test modules cannot import conftest under importlib mode)."""
    return warp_by
