"""Multimodal registration (e.g. neutron vs X-ray): normalised mutual information.

Grey levels of two modalities are related by an unknown, possibly non-monotonic
mapping, so intensity differences cannot be minimised.  Instead the joint
histogram of the overlapping voxels is made as sharp as possible (normalised
mutual information, NMI = (H(A) + H(B)) / H(A, B)).  An exhaustive search of
integer translations on a coarse-to-fine pyramid finds the optimum without a
manual pre-alignment (capture range = ``search_px``).  The sub-pixel
translation is then refined on slightly smoothed images: the moving image is
resampled (cubic spline) at fractional shifts in quarter-pixel steps along each
axis (+-1 px), over a fixed region that stays inside both images, and a
least-squares parabola through those nine NMI values gives the optimum (two sweeps).  A parabola through the NMI at
integer shifts alone is biased by up to a quarter pixel, because NMI peaks in a
cusp, not a parabola; smoothing (``subpixel_sigma_px``) keeps the interpolation
from changing the histograms between integer and fractional shifts.  Volumes too small for such an
interior region (a few tens of voxels across) fall back to the integer-shift parabola.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

from .._array import bin_volume
from .._validate import as_image, as_mask, check_int, check_number, check_same_shape
from ._registration import Registration

log = logging.getLogger(__name__)

__all__ = ["register_multimodal", "normalised_mutual_information"]


def _quantise(a: np.ndarray, bins: int, mask: np.ndarray | None) -> np.ndarray:
    vals = a[mask] if mask is not None else a
    edges = np.quantile(vals, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, a).astype(np.int32)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0].astype(np.float64)
    p /= p.sum()
    return float(-(p * np.log(p)).sum())


def normalised_mutual_information(a, b, *, bins: int = 32) -> float:
    """NMI ``(H(A) + H(B)) / H(A, B)`` of two same-shape images (1 = independent, 2 = identical)."""
    qa = _quantise(np.asarray(a, np.float32), bins, None).ravel()
    qb = _quantise(np.asarray(b, np.float32), bins, None).ravel()
    return _nmi_q(qa, qb, bins)


def _nmi_q(qa: np.ndarray, qb: np.ndarray, bins: int) -> float:
    joint = np.bincount(qa * bins + qb, minlength=bins * bins)
    ha = _entropy(joint.reshape(bins, bins).sum(1))
    hb = _entropy(joint.reshape(bins, bins).sum(0))
    hab = _entropy(joint)
    return (ha + hb) / hab if hab > 0 else 1.0


def _overlap(shape, s):
    fs, ms = [], []
    for n, k in zip(shape, s):
        k = int(k)
        fs.append(slice(max(0, -k), min(n, n - k)))
        ms.append(slice(max(0, k), min(n, n + k)))
    return tuple(fs), tuple(ms)


def _nmi_shift(qf, qm, valid, s, bins, min_overlap):
    fs, ms = _overlap(qf.shape, s)
    v = valid[fs]
    if v.sum() < min_overlap:
        return -np.inf
    return _nmi_q(qf[fs][v], qm[ms][v], bins)


def _refine_subpixel(f, m, valid, s0, *, bins: int, sigma: float, need: float, step: float = 0.25,
                     sweeps: int = 2):
    """(translation, NMI evaluations) near the integer optimum ``s0`` (see the module docstring); None if
    the interior region is too small."""
    # a region inside both images, clear of the smoothing's edge effects (+-1 px of search, 2 sigma)
    margin = 2 + int(np.ceil(2 * sigma))
    lo = np.maximum(0, -s0) + margin
    hi = np.minimum(f.shape, np.asarray(m.shape) - s0) - margin
    if np.any(hi - lo < 4):
        return None
    region = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    v = valid[region]
    if v.sum() < max(need * 0.5, 64):
        return None
    fs = ndi.gaussian_filter(f, sigma) if sigma > 0 else f
    coeff = ndi.spline_filter(ndi.gaussian_filter(m, sigma) if sigma > 0 else m, order=3)
    qf = _quantise(fs[region], bins, v)[v]

    def nmi_at(t):
        ms = ndi.shift(coeff, -t, order=3, mode="nearest", prefilter=False)[region]
        return _nmi_q(qf, _quantise(ms, bins, v)[v], bins)

    t = s0.astype(float)
    ks = np.arange(-4, 5) * step
    for _ in range(sweeps):
        for ax in range(3):
            vals = []
            for k in ks:
                tt = t.copy()
                tt[ax] += k
                vals.append(nmi_at(tt))
            # least-squares parabola through all samples (+-1 px): robust to histogram noise; the
            # second sweep re-centres the samples on the optimum, which removes the cusp's bias
            c = np.polyfit(ks, np.asarray(vals), 2)
            t[ax] += float(np.clip(-c[1] / (2 * c[0]), ks[0], ks[-1])) if c[0] < 0 else float(ks[np.argmax(vals)])
    return t, sweeps * 3 * ks.size


def register_multimodal(fixed, moving, *, search_px: float = 12.0, bins: int = 32, mask=None,
                        min_overlap: float = 0.5, subpixel_sigma_px: float = 1.0,
                        progress: Callable[[int, int], None] | None = None) -> Registration:
    """Translation between two modalities of the same sample by normalised mutual information.

    Parameters
    ----------
    fixed, moving : (z, y, x) array or Volume
        Same shape and voxel size (resample the coarser modality onto the finer
        grid first, e.g. with :func:`scipy.ndimage.zoom`); any grey-level relation.
    search_px : float
        Largest translation searched along each axis, px (capture range).
    bins : int
        Joint-histogram bins per modality (quantile-spaced, so robust to outliers).
    mask : (z, y, x) bool array, optional
        Fixed voxels to use.
    min_overlap : float
        Smallest fraction of the voxels that must overlap for a shift to count.
    subpixel_sigma_px : float
        Gaussian smoothing (px) of both images for the sub-pixel refinement (0: none).
    progress : callable(done, total), optional
        Called after each pyramid level.

    Returns
    -------
    Registration
        ``phi`` is a pure translation mapping fixed to moving coordinates (about
        the fixed centre), ``residual`` is ``2 - NMI`` (0 = identical histograms),
        ``method="mutual-information"``.  Refine with :func:`register` when the
        contrasts allow it.
    """
    f = as_image(fixed, name="fixed")
    m = as_image(moving, name="moving")
    check_same_shape(f, m)
    msk = as_mask(mask, f.shape)
    search_px = check_number("search_px", search_px, minimum=0.0)
    bins = check_int("bins", bins, minimum=4, maximum=256)
    subpixel_sigma_px = check_number("subpixel_sigma_px", subpixel_sigma_px, minimum=0.0, maximum=10.0)
    min_overlap = check_number("min_overlap", min_overlap, minimum=0.0, maximum=1.0, exclusive_minimum=True)
    levels = [b for b in (8, 4, 2) if min(n // b for n in f.shape) >= 12 and search_px / b >= 2] + [1]
    shift = np.zeros(3)
    n_eval = 0
    for li, b in enumerate(levels):
        fb, mb = bin_volume(f, b), bin_volume(m, b)
        vb = np.ones(fb.shape, bool) if msk is None else bin_volume(msk.astype(np.float32), b) > 0.5
        qf, qm = _quantise(fb, bins, vb), _quantise(mb, bins, None)
        need = min_overlap * vb.sum()
        centre = np.round(shift / b).astype(int)
        radius = int(np.ceil(search_px / b)) if li == 0 else 2
        best, best_s = -np.inf, centre
        rng = range(-radius, radius + 1)
        for d in itertools.product(rng, rng, rng):
            s = centre + np.asarray(d)
            val = _nmi_shift(qf, qm, vb, s, bins, need)
            n_eval += 1
            if val > best:
                best, best_s = val, s
        shift = best_s.astype(float) * b
        if progress is not None:
            progress(li + 1, len(levels))
        log.debug("multimodal level bin %d: shift %s, NMI %.4f", b, shift, best)
    qf = _quantise(f, bins, msk if msk is not None else None)
    qm = _quantise(m, bins, None)
    valid = np.ones(f.shape, bool) if msk is None else msk
    need = min_overlap * valid.sum()
    s0 = shift.astype(int)
    v0 = _nmi_shift(qf, qm, valid, s0, bins, need)
    refined = _refine_subpixel(f, m, valid, s0, bins=bins, sigma=float(subpixel_sigma_px), need=need)
    if refined is None:
        # too small an interior region for the fractional search (tiny volumes): a parabola through
        # the NMI at +-1 px along each axis (biased by up to a quarter pixel, see the module docstring)
        log.debug("multimodal registration: interior too small, integer-shift parabola")
        t = s0.astype(float)
        for ax in range(3):
            e = np.zeros(3, int)
            e[ax] = 1
            vm = _nmi_shift(qf, qm, valid, s0 - e, bins, need)
            vp = _nmi_shift(qf, qm, valid, s0 + e, bins, need)
            den = vm - 2 * v0 + vp
            if np.isfinite(vm) and np.isfinite(vp) and den < 0:
                t[ax] += float(np.clip(0.5 * (vm - vp) / den, -0.5, 0.5))
            n_eval += 2
    else:
        t, n_refine = refined
        n_eval += n_refine
    sub = t - s0
    phi = np.eye(4)
    phi[:3, 3] = t
    c = (np.asarray(f.shape, float) - 1.0) / 2.0
    at_edge = bool(np.any(np.abs(s0) >= np.ceil(search_px)))
    if at_edge:
        log.warning("multimodal registration optimum at the edge of the search range (%s px); "
                    "increase search_px", s0.tolist())
    return Registration(phi=phi, converged=not at_edge, iterations=n_eval, residual=float(2.0 - v0),
                        centre_zyx_px=tuple(float(v) for v in c), delta_phi_norm=float(np.abs(sub).max()),
                        levels=tuple(levels), method="mutual-information")
