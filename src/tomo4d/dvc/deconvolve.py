"""Richardson-Lucy deconvolution of a scan with a known Gaussian PSF, before correlation.

Why: at battery expansions the scanner's blur is the largest single error of DVC, even for the
global, regularised criterion (benchmarks/RESULTS.md, "Global (regularised) DVC" and "An
axial-profile start": on the phantom, sharp scans give 0.29 px at T3 where blurred ones give 0.45 px
from the exact start; deconvolving both scans with the known 2.8 px PSF takes the global DVC from the
affine start at T3 from 1.05 to 0.79 px, and with the axial start at T1 to 0.22 px).  The
deconvolution is scikit-image's (:func:`skimage.restoration.richardson_lucy`), run on the grey levels
shifted to be positive (Richardson-Lucy assumes a non-negative image) and shifted back.
"""

from __future__ import annotations

import numpy as np

from .._validate import as_image, check_int, check_number, show
from ..errors import InputError

__all__ = ["deconvolve", "boundary_margin_px", "interior_axes"]


def gaussian_profile(sigma_px: float) -> np.ndarray:
    """The 1-D Gaussian of ``sigma_px`` truncated at 3 sigma (half-width ``ceil(3 sigma)``, at least 1), unnormalised."""
    r = max(1, int(np.ceil(3 * sigma_px)))
    return np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma_px ** 2))


def gaussian_psf(sigma_px: float) -> np.ndarray:
    """Normalised isotropic 3D Gaussian kernel of ``sigma_px``, truncated at 3 sigma."""
    g = gaussian_profile(sigma_px)
    psf = g[:, None, None] * g[None, :, None] * g[None, None, :]
    return psf / psf.sum()


def boundary_margin_px(psf_sigma_px: float) -> int:
    """Voxels at each face of a deconvolved volume to leave out of a correlation: the PSF's half-width
    ``ceil(3 sigma)``.  :func:`deconvolve` pads by reflection, so within that band each output voxel rests on a
    reflected copy of the volume, the same in every scan of a series: a static feature that pins a displacement
    field at the faces.  On the phantom (HQ, 2.8 px PSF, 20 iterations) with no margin the in-plane expansion read
    0.004 where it is 0.014 at T3 (session 19).  Sessions 24-35 left out the iterations' reach
    ``ceil(sigma sqrt(2 iterations))`` (LQ 20 / HQ 18 px), measured on a bench that padded with zeros; with the
    runner's reflection the half-width (LQ 10 / HQ 9 px), the nodes at the mask's edge with little support held
    (``GlobalOptions.mask_fraction``), reads the phantom's det F - 1 within 0.010 / 0.018 at LQ seeds 1 / 2 (down to
    -0.052 / -0.048 with the reach) and within 0.012 at HQ seed 0, the demo's electrode -0.014 .. -0.041 (-0.024 ..
    -0.056; benchmarks/RESULTS.md, sessions 35-36)."""
    sigma = check_number("psf_sigma_px", psf_sigma_px, minimum=0, exclusive_minimum=True)
    return max(1, int(np.ceil(3 * sigma)))


def interior_axes(shape, psf_sigma_px: float, *,
                  band: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per axis (z, y, x) the voxels a correlation of two deconvolved scans should keep: all but
    :func:`boundary_margin_px` at each face (at most a quarter of the axis, so that half of it is kept).  The mask of
    the correlation is ``keep_z[:, None, None] & keep_y[None, :, None] & keep_x[None, None, :]`` (and the user's).

    At the z faces the margin is left out only outside ``band = (lo, hi)`` px, the electrode's (or the mask's) z
    extent, when given: the collector may lie a few voxels from the bottom face (the HQ phantom's at 7 px; a 9 px
    margin there lost the anode's bottom rows and read the collector side +0.02 high), and the top face of a
    textureless separator (the LQ phantom's) pinned the separator at rest and pulled the anode's top down (session
    19).  Without the margin the faces' reflected band, the same in every scan, pins the field: the README phantom's
    ``tomo4d dvc --method global --deconvolve 20`` read usable nodes up to 12 px off in-plane at the lateral faces
    and took 18 s where the solve with the margin takes 2 s and reads every node within 0.7 px (session 34).
    """
    if len(shape) != 3:
        raise InputError(f"shape={show(shape)} is not a volume's (z, y, x); give three axis lengths")
    shape = tuple(check_int("shape", n, minimum=1) for n in shape)
    m = [min(boundary_margin_px(psf_sigma_px), n // 4) for n in shape]
    lo, hi = (shape[0], 0) if band is None else (float(band[0]), float(band[1]))
    z = np.arange(shape[0])
    keep_z = (z >= min(m[0], max(lo, 0))) & (z < max(shape[0] - m[0], min(hi, shape[0])))
    return (keep_z,) + tuple((np.arange(n) >= k) & (np.arange(n) < n - k) for n, k in zip(shape[1:], m[1:]))


def deconvolve(volume, *, psf_sigma_px: float, iterations: int = 20) -> np.ndarray:
    """Richardson-Lucy deconvolution with an isotropic Gaussian PSF (module docstring).

    Parameters
    ----------
    volume : array_like or Volume, shape (z, y, x)
        A scan (any grey levels; NaN refused).
    psf_sigma_px : float
        Standard deviation of the scanner's PSF, px (> 0), e.g. the phantom's blur or an edge
        measurement (:func:`tomo4d.quality.edge_resolution`: FWHM = 2.355 sigma).
    iterations : int
        Richardson-Lucy iterations (10-20 measured best on the phantom; more amplifies noise).

    Returns
    -------
    numpy.ndarray
        float32, same shape, the same grey-level range as the input on average.  Within
        :func:`boundary_margin_px` of the faces it rests on reflected copies of the volume: leave that margin
        out of a correlation's mask.
    """
    from skimage.restoration import richardson_lucy

    a = as_image(volume, name="volume").astype(np.float64)
    sigma = check_number("psf_sigma_px", psf_sigma_px, minimum=0, exclusive_minimum=True)
    n = check_int("iterations", iterations, minimum=1)
    lo, span = float(a.min()), float(np.ptp(a)) or 1.0
    psf = gaussian_psf(sigma)
    pad = 2 * (psf.shape[0] // 2)  # reflected margins: the convolution's zero padding would darken the faces
    x = np.pad((a - lo) / span + 0.05, pad, mode="reflect")
    out = richardson_lucy(x, psf, num_iter=n, clip=False)[pad:-pad, pad:-pad, pad:-pad]
    return ((out - 0.05) * span + lo).astype(np.float32)
