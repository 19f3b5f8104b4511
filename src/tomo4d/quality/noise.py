"""The noise of one scan, without a repeated scan: the finest wavelet band's robust spread.

The additive noise's standard deviation is estimated as the median absolute value of the finest diagonal Haar
wavelet coefficients divided by 0.6745 (Donoho & Johnstone, Biometrika 81, 1994): the diagonal detail of 2 x 2 (x
2) blocks, ``sum(+-x) / sqrt(2^d)``, has the noise's standard deviation for white noise and almost no signal where
the image is smooth at the voxel scale, and the median ignores the edges that do carry signal.  This is the
estimator of ``skimage.restoration.estimate_sigma`` (its db1 wavelet), here streamed through z slabs of a lazy
volume and restricted to a mask.

It assumes white noise.  Noise that the reconstruction filter, a binning or an interpolation correlated between
neighbouring voxels reads low: on the real snow scan (``snow_xct_100.tif``) 554 against a standard deviation of
787-878 grey levels inside the eroded ice and pore phases, which still hold some structure (an upper bound).  With a
repeated scan, ``std(repeat - scan) / sqrt(2)`` measures the noise of either scan directly and is preferred.
On the battery phantom (white noise after the blur) it reads 0.0598-0.0603 for ``lq_noise`` 0.06 and 0.0198-0.0201
for ``hq_noise`` 0.02, as the repeat-scan difference does (0.0601 / 0.0200).
"""

from __future__ import annotations

import numpy as np

from .._array import is_lazy, to_numpy
from .._validate import check_int
from ..errors import InputError
from ..volume import Volume

__all__ = ["noise_sigma", "noise_variance_ratio"]

#: median |x| / sigma of a zero-mean Gaussian
_MAD_TO_SIGMA = 0.6744897501960817


def _pairs(a: np.ndarray, op) -> np.ndarray:
    """``op(even, odd)`` of neighbouring voxels along every axis in turn, over the whole 2 x 2 (x 2) blocks of ``a``."""
    a = a[tuple(slice(0, n - n % 2) for n in a.shape)]
    for axis in range(a.ndim):
        lo = [slice(None)] * a.ndim
        hi = [slice(None)] * a.ndim
        lo[axis], hi[axis] = slice(0, None, 2), slice(1, None, 2)
        a = op(a[tuple(lo)], a[tuple(hi)])
    return a


def _diagonal_detail(a: np.ndarray) -> np.ndarray:
    """The finest diagonal Haar coefficients of every whole 2 x 2 (x 2) block of ``a`` (2D or 3D)."""
    return _pairs(a, np.subtract) / np.float32(np.sqrt(2.0 ** a.ndim))


def _block_mask(m: np.ndarray) -> np.ndarray:
    """Blocks whose voxels are all inside ``m`` (same block layout as :func:`_diagonal_detail`)."""
    return _pairs(m, np.logical_and)


def noise_sigma(image, *, mask=None, max_samples: int = 2 ** 24) -> float:
    """Standard deviation of an image's additive white noise, from the image alone.

    Parameters
    ----------
    image : array-like, dask array or Volume, 2D ``(y, x)`` or 3D ``(z, y, x)``
        A scan as reconstructed (not denoised, enhanced or resampled: those change the noise).  A lazy volume is
        read in z slabs.
    mask : array-like of bool, optional
        Voxels to estimate from (e.g. the sample); a 2 x 2 (x 2) block counts when all its voxels are inside.
    max_samples : int
        At most this many wavelet coefficients are used: the slabs of a larger volume are taken at a regular
        stride through z (the median's standard error at 2^24 is 0.03 %).

    Returns
    -------
    float
        The noise's standard deviation in the image's grey units; 0 for an image without noise (constant or
        smooth at the voxel scale).
    """
    a = image.data if isinstance(image, Volume) else image
    if not is_lazy(a):
        a = np.asarray(a)
    if len(a.shape) not in (2, 3) or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"image has shape {tuple(a.shape)} and dtype {a.dtype}; give a numeric 2D (y, x) slice or 3D "
                         "(z, y, x) volume")
    if min(a.shape) < 2:
        raise InputError(f"image has shape {tuple(a.shape)}; every axis needs at least 2 voxels for the 2 x 2 blocks")
    check_int("max_samples", max_samples, minimum=1000)
    m = None
    if mask is not None:
        m = mask.data if isinstance(mask, Volume) else mask
        if tuple(m.shape) != tuple(a.shape):
            raise InputError(f"mask has shape {tuple(m.shape)} but image has shape {tuple(a.shape)}; give a boolean "
                             "mask of the image's shape")
    parts = []
    for sl in _slabs(a.shape, max_samples):
        block = np.asarray(to_numpy(a[sl]), np.float32)
        if not np.isfinite(block).all():
            raise InputError(f"image holds NaN or Inf (z {sl[0].start}..{sl[0].stop}); give a finite image")
        d = _diagonal_detail(block)
        if m is not None:
            d = d[_block_mask(np.asarray(to_numpy(m[sl])).astype(bool))]
        parts.append(np.abs(d).ravel())
    values = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if values.size == 0:
        raise InputError("mask covers no whole 2 x 2 (x 2) block of voxels; give a mask of the sample's extent")
    return float(np.median(values)) / _MAD_TO_SIGMA


def noise_variance_ratio(image, *, mask=None, noise: float | None = None) -> float:
    """The scan's noise variance over its grey-level variance: ``noise**2 / var(image[mask])``.

    What a correlation of the scan weighs its data against: the global DVC's data term is normalised by the
    reference's variance, so its noise floor is this ratio (the converged route's Laplacian weight follows it,
    ``tomo4d.pipeline.sections.route_regularisation``).  ``noise``: the noise's standard deviation when known (from a
    repeated scan), else :func:`noise_sigma` of the whole image (white noise assumed; correlated noise reads low).
    ``mask``: the voxels whose variance counts (the part correlated), else all.  On the battery phantom above its
    collector: HQ 0.0175, LQ 0.175 (the demo's LQ scans 0.189; 0.187 with the noise of its repeat scan)."""
    a = np.asarray(to_numpy(image.data if isinstance(image, Volume) else image), np.float32)
    sigma = noise_sigma(a) if noise is None else float(noise)
    values = a
    if mask is not None:
        m = np.asarray(to_numpy(mask.data if isinstance(mask, Volume) else mask), bool)
        if m.shape != a.shape:
            raise InputError(f"mask has shape {m.shape} but image has shape {a.shape}; give a boolean mask of the "
                             "image's shape")
        values = a[m]
        if values.size < 2:
            raise InputError(f"mask selects {values.size} voxels; give a mask of the part correlated")
    var = float(values.var())
    if not var > 0:
        raise InputError("image is constant within the mask (variance 0); give a scan with texture where it is "
                         "correlated")
    return sigma * sigma / var


def _slabs(shape, max_samples: int) -> list[tuple]:
    """Index tuples of even z slabs (whole 2D images) whose blocks hold at most ``max_samples`` coefficients,
    evenly spread through z."""
    if len(shape) == 2:
        return [(slice(0, shape[0]), slice(0, shape[1]))]
    per_pair = (shape[1] // 2) * (shape[2] // 2)  # coefficients per pair of slices
    pairs = shape[0] // 2
    keep = max(1, min(pairs, max_samples // max(per_pair, 1)))
    chosen = np.unique(np.linspace(0, pairs - 1, keep).round().astype(int))
    slab = 16  # pairs read at once
    out = []
    for k in range(0, len(chosen), slab):
        run = chosen[k:k + slab]
        if np.all(np.diff(run) == 1):  # contiguous pairs: one read
            out.append((slice(2 * run[0], 2 * run[-1] + 2), slice(None), slice(None)))
        else:
            out.extend((slice(2 * p, 2 * p + 2), slice(None), slice(None)) for p in run)
    return out
