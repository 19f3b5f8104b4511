"""Full-reference fidelity metrics: PSNR and SSIM, with masks and per-slice statistics."""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError, check_choice
from ._common import SliceStatistics, check_range, image_pair, mask_array, pick_slices


def _data_range(ref: np.ndarray, mask, data_range) -> float:
    if data_range is not None:
        return check_range("data_range", data_range, 0) or _zero_range()
    vals = ref[mask] if mask is not None else ref
    r = float(vals.max()) - float(vals.min())
    if r <= 0:
        raise InputError("the reference is constant (max == min) inside the evaluated region, so its data range "
                         "is 0; give data_range=... explicitly or check the reference image")
    return r


def _zero_range():
    raise InputError("data_range=0 makes PSNR/SSIM undefined; give the grey-value span of the data (> 0)")


def _psnr_arrays(ref, img, mask, data_range) -> float:
    diff = ref.astype(np.float64) - img
    mse = float(np.mean(diff[mask] ** 2)) if mask is not None else float(np.mean(diff * diff))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def psnr(reference, image, *, data_range=None, mask=None) -> float:
    """Peak signal-to-noise ratio of ``image`` against ``reference``, in dB.

    ``PSNR = 10 log10(R^2 / MSE)`` with ``MSE`` the mean squared difference over
    the evaluated pixels (all, or those of ``mask``) and ``R`` the data range.

    Parameters
    ----------
    reference, image : array_like or Volume, shape (y, x) or (z, y, x)
        Images on the same grid (register them first).  For a volume the value
        is the whole-volume PSNR; see :func:`psnr_slices` for per-slice values.
    data_range : float, optional
        Span ``R`` of possible grey values.  Default: ``max - min`` of the
        reference inside the mask.  This differs from scikit-image, which uses
        the range of the integer dtype (65535 for uint16), a number that means
        little for reconstructed tomograms.  With the same ``data_range`` both agree.
    mask : array_like of bool, optional
        Pixels to evaluate (e.g. :func:`fov_mask`); a 2D mask applies to every slice.

    Returns
    -------
    float
        PSNR in dB; ``inf`` when the images are identical in the region.

    References
    ----------
    .. [1] Z. Wang, A. C. Bovik, "Mean squared error: love it or leave it?",
       IEEE Signal Processing Magazine 26 (2009) 98-117.
    """
    ref, img = image_pair(reference, image)
    m = mask_array(mask, ref.shape)
    return _psnr_arrays(ref, img, m, _data_range(ref, m, data_range))


def _filter(a: np.ndarray, *, gaussian: bool, win_size: int, sigma: float) -> np.ndarray:
    from scipy import ndimage

    if gaussian:
        return ndimage.gaussian_filter(a, sigma, truncate=3.5, mode="reflect")
    return ndimage.uniform_filter(a, size=win_size, mode="reflect")


def ssim_map(reference, image, *, data_range=None, win_size: int = 7, gaussian_weights: bool = False,
             sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03, use_sample_covariance: bool = True,
             mask=None) -> np.ndarray:
    """Local structural similarity of ``image`` to ``reference`` (same shape as the inputs).

    The window is ``win_size`` pixels wide in every dimension of the input
    (2D window for a slice, 3D for a volume); see :func:`ssim` for the options.
    ``mask`` only restricts the pixels used for the default ``data_range``.

    Returns
    -------
    numpy.ndarray of float32, shape of the inputs
    """
    ref, img = image_pair(reference, image)
    m = mask_array(mask, ref.shape)
    return _ssim_map(ref, img, _data_range(ref, m, data_range), win_size=win_size, gaussian=gaussian_weights,
                     sigma=sigma, k1=k1, k2=k2, sample_cov=use_sample_covariance)


def _ssim_options(win_size, gaussian, sigma, k1, k2, shape):
    if gaussian:
        sigma = check_range("sigma", sigma, 1e-3)
        win_size = 2 * int(3.5 * sigma + 0.5) + 1
    else:
        win_size = check_range("win_size", win_size, 3, integer=True)
        if win_size % 2 == 0:
            raise InputError(f"win_size={win_size} must be odd (e.g. 7)")
    if min(shape) < win_size:
        raise InputError(f"the images (shape {shape}) are smaller than the SSIM window ({win_size} pixels); "
                         "give larger images or a smaller win_size")
    check_range("k1", k1, 0)
    check_range("k2", k2, 0)
    return win_size, sigma


def _ssim_map(ref, img, data_range, *, win_size, gaussian, sigma, k1, k2, sample_cov) -> np.ndarray:
    win_size, sigma = _ssim_options(win_size, gaussian, sigma, k1, k2, ref.shape)
    # Variances are offset-invariant: subtract one common offset and scale by the data range so
    # that float32 sums of squares do not cancel catastrophically for uint16-like grey values.
    offset = np.float32(ref.mean())
    scale = np.float32(1.0 / data_range)
    x = (ref - offset) * scale
    y = (img - offset) * scale
    off = offset * scale
    f = lambda a: _filter(a, gaussian=gaussian, win_size=win_size, sigma=sigma)  # noqa: E731
    mx, my = f(x), f(y)
    n = win_size ** ref.ndim
    norm = np.float32(n / (n - 1) if (sample_cov and not gaussian) else 1.0)
    vx = norm * (f(x * x) - mx * mx)
    vy = norm * (f(y * y) - my * my)
    cxy = norm * (f(x * y) - mx * my)
    mx += off
    my += off
    c1 = np.float32(k1 ** 2)
    c2 = np.float32(k2 ** 2)
    num = (2 * mx * my + c1) * (2 * cxy + c2)
    den = (mx * mx + my * my + c1) * (vx + vy + c2)
    return (num / den).astype(np.float32)


def _interior(shape, win_size) -> tuple[slice, ...]:
    pad = (win_size - 1) // 2
    return tuple(slice(pad, s - pad) for s in shape)


def _ssim_mean(smap, m, win_size, gaussian, sigma) -> float:
    if gaussian:
        win_size = 2 * int(3.5 * float(sigma) + 0.5) + 1
    inner = _interior(smap.shape, win_size)
    vals = smap[inner]
    if m is not None:
        sel = m[inner]
        if not sel.any():
            raise InputError("the mask selects no pixel away from the image border (SSIM ignores a border of "
                             "half a window); give a larger mask")
        vals = vals[sel]
    return float(np.mean(vals, dtype=np.float64))


def ssim(reference, image, *, data_range=None, mask=None, win_size: int = 7, gaussian_weights: bool = False,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03, use_sample_covariance: bool = True) -> float:
    """Mean structural similarity (SSIM) of ``image`` to ``reference``.

    The local SSIM of Wang et al. [1]_ in a sliding window, averaged over the
    image without a border of half a window (as scikit-image does) and, if
    given, over the pixels of ``mask`` only.  The defaults reproduce
    ``skimage.metrics.structural_similarity`` (7-pixel uniform window, sample
    covariance); ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``
    gives the original paper's setting.

    Parameters
    ----------
    reference, image : array_like or Volume, shape (y, x) or (z, y, x)
        Images on the same grid.  A volume uses a 3D window (whole-volume SSIM);
        :func:`ssim_slices` gives per-slice 2D values and their statistics.
    data_range : float, optional
        Span of grey values; default ``max - min`` of the reference in the mask.
    mask : array_like of bool, optional
        Pixels whose local SSIM is averaged (e.g. :func:`fov_mask`).
    win_size : int
        Odd side of the uniform window (ignored with ``gaussian_weights``).
    gaussian_weights : bool
        Gaussian window of standard deviation ``sigma`` pixels (truncated at 3.5 sigma).
    k1, k2 : float
        Stabilising constants, ``C1 = (k1 R)^2``, ``C2 = (k2 R)^2``.
    use_sample_covariance : bool
        Normalise (co)variances by ``N - 1`` instead of ``N`` (uniform window only).

    Returns
    -------
    float
        Mean SSIM in [-1, 1]; 1 for identical images.

    References
    ----------
    .. [1] Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality
       assessment: from error visibility to structural similarity", IEEE Trans.
       Image Process. 13 (2004) 600-612. :DOI:`10.1109/TIP.2003.819861`
    """
    ref, img = image_pair(reference, image)
    m = mask_array(mask, ref.shape)
    dr = _data_range(ref, m, data_range)
    smap = _ssim_map(ref, img, dr, win_size=win_size, gaussian=gaussian_weights, sigma=sigma, k1=k1, k2=k2,
                     sample_cov=use_sample_covariance)
    return _ssim_mean(smap, m, win_size, gaussian_weights, sigma)


def _per_slice(metric: str, reference, image, *, data_range, mask, slices, **kw) -> SliceStatistics:
    check_choice("metric", metric, ("psnr", "ssim"))
    ref, img = image_pair(reference, image)
    if ref.ndim != 3:
        raise InputError(f"per-slice statistics need 3D (z, y, x) volumes, got shape {ref.shape}; "
                         f"use {metric}() for a 2D slice")
    m = mask_array(mask, ref.shape)
    # one data range for the whole volume so that slices are comparable
    dr = _data_range(ref, m, data_range)
    zs = pick_slices(ref.shape[0], slices, ref.shape[0])
    values = []
    for z in zs:
        mz = None if m is None else m[z]
        if mz is not None and not mz.any():
            raise InputError(f"the mask is empty on slice z={z}; restrict slices=... to slices it covers")
        if metric == "psnr":
            values.append(_psnr_arrays(ref[z], img[z], mz, dr))
        else:
            smap = _ssim_map(ref[z], img[z], dr, win_size=kw["win_size"], gaussian=kw["gaussian_weights"],
                             sigma=kw["sigma"], k1=kw["k1"], k2=kw["k2"], sample_cov=kw["use_sample_covariance"])
            values.append(_ssim_mean(smap, mz, kw["win_size"], kw["gaussian_weights"], kw["sigma"]))
    return SliceStatistics.from_values(values, zs)


def psnr_slices(reference, image, *, data_range=None, mask=None, slices=None) -> SliceStatistics:
    """PSNR (dB) of every xy slice of two volumes, with mean/std/min/max over the slices.

    ``data_range`` defaults to the reference's range over the whole volume (in
    the mask), so slices are compared on one scale.  ``slices`` selects z indices
    (default all).  Identical slices give ``inf``.  See :func:`psnr`.
    """
    return _per_slice("psnr", reference, image, data_range=data_range, mask=mask, slices=slices)


def ssim_slices(reference, image, *, data_range=None, mask=None, slices=None, win_size: int = 7,
                gaussian_weights: bool = False, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
                use_sample_covariance: bool = True) -> SliceStatistics:
    """2D SSIM of every xy slice of two volumes, with mean/std/min/max over the slices.

    Options as in :func:`ssim`; ``data_range`` defaults to the reference's range
    over the whole volume.  ``slices`` selects z indices (default all).
    """
    return _per_slice("ssim", reference, image, data_range=data_range, mask=mask, slices=slices,
                      win_size=win_size, gaussian_weights=gaussian_weights, sigma=sigma, k1=k1, k2=k2,
                      use_sample_covariance=use_sample_covariance)
