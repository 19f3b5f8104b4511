"""Fixtures of the registration tests: the real snow volume and smooth random textures."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def snow(real_file):
    """The 100^3 real snow XCT volume as float32 (skips when the real data is absent)."""
    import tifffile

    return tifffile.imread(real_file("snow_xct_100.tif")).astype(np.float32)


@pytest.fixture(scope="session")
def texture():
    """A smooth random texture (48, 52, 56) float32, std ~1, feature size ~2 px."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    a = ndimage.gaussian_filter(rng.normal(size=(48, 52, 56)), 1.5)
    return ((a - a.mean()) / a.std()).astype(np.float32)
