"""Richardson-Lucy deconvolution before correlation: sharper edges that re-blur into the data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tomo4d.dvc import deconvolve
from tomo4d.errors import InputError


def _cube(noise: float, seed: int = 0):
    x = np.zeros((40, 40, 40), np.float32)
    x[10:30, 10:30, 10:30] = 1000.0
    rng = np.random.default_rng(seed)
    return x, (ndimage.gaussian_filter(x, 2.0) + 200.0 + rng.normal(0, noise, x.shape)).astype(np.float32)


def test_deconvolve_sharpens_and_reblurs_into_the_data():
    truth, blurred = _cube(noise=10.0)
    d = deconvolve(blurred, psf_sigma_px=2.0, iterations=15)
    assert d.dtype == np.float32 and d.shape == blurred.shape
    # the forward model: the deconvolved scan blurred by the PSF is the data (noise 10), far closer than the
    # blurred scan blurred again (no deconvolution), faces of the volume included (reflected margins)
    rms = lambda a: float(np.sqrt(np.mean((ndimage.gaussian_filter(a, 2.0) - blurred) ** 2)))  # noqa: E731
    assert rms(d) < 15.0 and rms(d) < 0.5 * rms(blurred)
    # the edge is steeper: the largest grey step across the cube face grows by >= 1.5x (truth: a step)
    step = lambda a: float(np.max(np.abs(np.diff(a[20, 20, 4:16]))))  # noqa: E731
    assert step(d) > 1.5 * step(blurred)
    # grey levels kept: the mean inside and outside
    assert float(d[14:26, 14:26, 14:26].mean()) == pytest.approx(1200.0, rel=0.05)
    assert float(d[:4].mean()) == pytest.approx(200.0, abs=30.0)


def test_deconvolve_refuses_bad_options():
    _, blurred = _cube(noise=0.0)
    with pytest.raises(InputError, match="psf_sigma_px"):
        deconvolve(blurred, psf_sigma_px=0.0)
    with pytest.raises(InputError, match="iterations"):
        deconvolve(blurred, psf_sigma_px=2.0, iterations=0)
    bad = blurred.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="volume"):
        deconvolve(bad, psf_sigma_px=2.0)
