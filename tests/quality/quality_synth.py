"""Synthetic images with exact ground truth for the quality metrics (helpers for tests/quality)."""

import numpy as np
from scipy.special import erf

FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


def erf_disc(sigma_px, *, n=256, radius=70.0, noise=0.0, seed=0, centre=(0.3, -0.2)):
    """Disc of radius ``radius`` whose edge is a step blurred by a Gaussian of ``sigma_px``.

    Grey values 0 (outside) .. 1 (inside), point-sampled, so every profile along
    the radius is exactly ``0.5 (1 + erf((R - r) / (sqrt 2 sigma)))``: its derivative
    has FWHM = 2.3548 sigma.  ``noise`` is the Gaussian noise std (SNR = 1 / noise).
    """
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    r = np.hypot(yy - n / 2 - centre[0], xx - n / 2 - centre[1])
    img = 0.5 * (1.0 + erf((radius - r) / (np.sqrt(2.0) * sigma_px)))
    if noise:
        img = img + np.random.default_rng(seed).normal(0.0, noise, img.shape)
    return img.astype(np.float32)


def two_phase(n=128, *, contrast=1.0, noise=0.1, seed=0):
    """Left half 0, right half ``contrast``, plus Gaussian noise of std ``noise``."""
    img = np.zeros((n, n), np.float32)
    img[:, n // 2:] = contrast
    return img + np.random.default_rng(seed).normal(0, noise, img.shape).astype(np.float32)


def texture(n=128, *, seed=0):
    """Smooth random texture in [0, 1] with structures of a few pixels."""
    from scipy import ndimage

    a = ndimage.gaussian_filter(np.random.default_rng(seed).random((n, n)), 3)
    return ((a - a.min()) / (a.max() - a.min())).astype(np.float32)


