"""Array helpers of the enhancement stage: x2 cubic up-sampling, intensity scaling, FOV masks,
and the preparation of an LQ/HQ training pair (up-sample, register, resample, mask, split).

Everything here is numpy (no torch).  Up-sampling uses the Keys cubic
convolution kernel (a = -0.5, "bicubic") with voxel-area alignment: output
voxel ``j`` of a x2 up-sampling sits at input coordinate ``j / 2 - 0.25``.
With this convention the LQ voxel ``i`` covers the HQ voxels ``2i`` and
``2i + 1``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .._array import as_float32
from .._validate import check_finite, show
from ..errors import InputError
from ..register import apply_phi
from ..register import register as _register
from ..register.phi import polar_decomposition
from .holdout import Z_GUARD, HoldoutSplit, holdout_split

log = logging.getLogger(__name__)


def _keys(s: np.ndarray, a: float = -0.5) -> np.ndarray:
    s = np.abs(s)
    return np.where(s <= 1, (a + 2) * s**3 - (a + 3) * s**2 + 1,
                    np.where(s < 2, a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a, 0.0))


# weights of the 4 taps (floor-1 .. floor+2) for fractional offsets 0.75 (even outputs) and 0.25 (odd)
_W_EVEN = _keys(np.array([1.75, 0.75, -0.25, -1.25]))
_W_ODD = _keys(np.array([1.25, 0.25, -0.75, -1.75]))


def upsample2_axis(array, axis: int) -> np.ndarray:
    """Cubic (Keys, a=-0.5) x2 up-sampling of ``array`` along ``axis`` (edges replicated).

    Output sample ``j`` sits at input coordinate ``j / 2 - 0.25``; the output
    has twice the length along ``axis`` and dtype float32.
    """
    a = np.moveaxis(as_float32(array), axis, 0)
    n = a.shape[0]
    pad = np.concatenate([a[:1], a[:1], a, a[-1:], a[-1:]], axis=0)  # index k of a is k + 2 in pad
    out = np.empty((2 * n,) + a.shape[1:], np.float32)
    even = sum(np.float32(w) * pad[m:m + n] for m, w in enumerate(_W_EVEN))   # taps k-2 .. k+1
    odd = sum(np.float32(w) * pad[m + 1:m + 1 + n] for m, w in enumerate(_W_ODD))  # taps k-1 .. k+2
    out[0::2] = even
    out[1::2] = odd
    return np.moveaxis(out, 0, axis)


def upsample2_xy(array) -> np.ndarray:
    """x2 cubic up-sampling of the last two axes (y, x) of a 2D image or 3D stack."""
    a = as_float32(array)
    return upsample2_axis(upsample2_axis(a, a.ndim - 2), a.ndim - 1)


def upsample2_z_window(slices: list[np.ndarray], k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Output slices ``2k`` and ``2k + 1`` of a x2 z up-sampling from input slices ``k-2 .. k+2``.

    ``slices`` holds the five input slices ``k-2 .. k+2`` already clamped to
    ``[0, n)`` by the caller.  Used to stream the z interpolation slab by slab.
    """
    even = sum(np.float32(w) * slices[m] for m, w in enumerate(_W_EVEN))
    odd = sum(np.float32(w) * slices[m + 1] for m, w in enumerate(_W_ODD))
    return even.astype(np.float32), odd.astype(np.float32)


@dataclass(frozen=True)
class Scaling:
    """Linear intensity map ``v -> 2 (v - low) / (high - low) - 1`` (robust percentiles to [-1, 1]).

    Attributes
    ----------
    low, high : float
        Intensities (input units) mapped to -1 and +1.
    """

    low: float
    high: float

    def __post_init__(self):
        lo, hi = self.low, self.high
        ok = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                 for v in (lo, hi))
        if not (ok and np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise InputError(f"intensity scaling low={show(lo)}, high={show(hi)} is degenerate: it needs finite "
                             "numbers with low < high (NaN/Inf voxels in the data, or a damaged model config.json)")

    @classmethod
    def from_data(cls, data, *, percentiles=(0.1, 99.9), mask=None, max_samples: int = 2_000_000,
                  seed: int = 0) -> Scaling:
        """Robust percentiles of ``data`` (within ``mask``), from at most ``max_samples`` voxels."""
        a = np.asarray(data)
        vals = a[np.asarray(mask, bool)] if mask is not None else a.ravel()
        if vals.size == 0:
            raise InputError("cannot compute the intensity scaling: the mask selects no voxels")
        if vals.size > max_samples:
            vals = np.random.default_rng(seed).choice(vals, max_samples, replace=False)
        lo, hi = np.percentile(vals.astype(np.float64), percentiles)
        if not hi > lo:
            hi = lo + 1.0
        return cls(float(lo), float(hi))

    def forward(self, data) -> np.ndarray:
        """Input units -> [-1, 1] (float32)."""
        a = as_float32(data)
        return ((a - np.float32(self.low)) * np.float32(2.0 / (self.high - self.low)) - 1).astype(np.float32)

    def inverse(self, data) -> np.ndarray:
        """[-1, 1] -> input units (float32)."""
        a = as_float32(data)
        return ((a + 1) * np.float32((self.high - self.low) / 2.0) + np.float32(self.low)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high}


def fov_mask(shape_yx, *, margin: float = 0.0) -> np.ndarray:
    """Boolean disc inscribed in a ``(y, x)`` slice: the circular field of view of a CT scan."""
    ny, nx = int(shape_yx[0]), int(shape_yx[1])
    yy = np.arange(ny) - (ny - 1) / 2
    xx = np.arange(nx) - (nx - 1) / 2
    r = min(ny, nx) / 2 - margin
    return (yy[:, None] ** 2 + xx[None, :] ** 2) <= r * r


@dataclass(frozen=True)
class TrainingPair:
    """An aligned LQ/HQ pair ready for training, on the HQ grid.

    Attributes
    ----------
    lq : ndarray, float32, (z, y, x)
        LQ up-sampled x2 and resampled onto the HQ grid (input units).
    hq : ndarray, float32, (z, y, x)
        HQ (input units).
    mask : ndarray, bool, (z, y, x)
        Voxels inside the circular field of view and covered by the LQ.
    train_slices, val_slices : tuple of int
        z indices of training and held-out validation slices.
    phi : ndarray (4, 4)
        Transformation (z, y, x homogeneous, origin at HQ voxel 0) mapping HQ voxel
        coordinates to coordinates of the up-sampled LQ, as used for the resampling.
    registration : str
        How ``phi`` was obtained (``"tomo4d.register"``, ``"given"``, ``"none"``).
    hq_voxel_size_nm, lq_voxel_size_nm : (float, float, float)
        Voxel sizes of the inputs.
    route : {"volume", "slices"}
        3D pair, or independent 2D slice pairs (:mod:`tomo4d.enhance.slice_pairs`).
    split : HoldoutSplit, optional
        How the validation slices were chosen (blocks, guard, what a small stack gave up;
        :mod:`tomo4d.enhance.holdout`).
    """

    lq: np.ndarray
    hq: np.ndarray
    mask: np.ndarray
    train_slices: tuple[int, ...]
    val_slices: tuple[int, ...]
    phi: np.ndarray
    registration: str
    hq_voxel_size_nm: tuple[float, float, float]
    lq_voxel_size_nm: tuple[float, float, float]
    route: str = "volume"
    split: HoldoutSplit | None = None


def check_voxel_sizes(lq_vs, hq_vs, *, tolerance: float = 0.05) -> None:
    """Raise :class:`InputError` unless the LQ voxel is twice the HQ voxel along every axis."""
    ratio = np.asarray(lq_vs, float) / np.asarray(hq_vs, float)
    if not np.all(np.abs(ratio - 2.0) <= 2.0 * tolerance):
        raise InputError(
            f"voxel sizes do not match an x2 enhancement: LQ {tuple(lq_vs)} nm vs HQ {tuple(hq_vs)} nm "
            f"(ratio {tuple(np.round(ratio, 3))}, expected 2 along z, y, x); fix the voxel sizes in the "
            "files or give --lq-voxel-size/--hq-voxel-size"
        )


def _centre_offset(fixed_shape, moving_shape) -> np.ndarray:
    return (np.asarray(moving_shape, float) - np.asarray(fixed_shape, float)) / 2.0


def _coarse_translation(hq: np.ndarray, lq_up: np.ndarray) -> tuple[np.ndarray, float]:
    """Where HQ sits inside the up-sampled LQ: offset (voxels, z y x) of the HQ corner and a score.

    Normalised cross-correlation computed by FFT at a binned resolution; the
    score is the correlation coefficient at the best position (0 = no overlap).
    """
    b = max(1, int(min(hq.shape) // 32))
    f = ndimage.zoom(hq, 1 / b, order=1) if b > 1 else hq
    m = ndimage.zoom(lq_up, 1 / b, order=1) if b > 1 else lq_up
    f = (f - f.mean()) / (f.std() + 1e-12)
    pad = [(0, max(0, fs - ms)) for fs, ms in zip(f.shape, m.shape)]
    m = np.pad(m, pad, mode="edge")
    m = (m - m.mean()) / (m.std() + 1e-12)
    shape = [ms + fs for ms, fs in zip(m.shape, f.shape)]
    axes = (0, 1, 2)

    def xcorr(a, b):
        return np.fft.irfftn(np.fft.rfftn(a, shape, axes=axes) * np.conj(np.fft.rfftn(b, shape, axes=axes)), shape,
                             axes=axes)

    corr = xcorr(m, f)
    # local normalisation by the energy of the moving window
    ones = np.ones_like(f)
    e2, e1 = xcorr(m * m, ones), xcorr(m, ones)
    nvox = f.size
    var = np.maximum(e2 / nvox - (e1 / nvox) ** 2, 1e-6)
    ncc = corr / (nvox * np.sqrt(var))
    valid = tuple(slice(0, max(ms - fs + 1, 1)) for ms, fs in zip(m.shape, f.shape))
    ncc_v = ncc[valid]
    idx = np.unravel_index(int(np.argmax(ncc_v)), ncc_v.shape)
    score = float(ncc_v[idx])
    return np.asarray(idx, float) * b, score


def prepare_pair(lq, hq, *, register: bool = True, phi0=None, val_fraction: float = 0.1,
                 fov: bool = True, min_overlap_score: float = 0.3, smoothing: float | str = "auto",
                 max_strain: float = 0.01, route: str = "auto", strip: int = 64, holdout: str = "spread",
                 guard: int | None = None) -> TrainingPair:
    """Up-sample LQ x2, align it onto HQ, resample it on the HQ grid, mask, split slices.

    Parameters
    ----------
    lq, hq : Volume
        The training pair.  The LQ voxel must be twice the HQ voxel; the LQ may
        cover a larger field of view than HQ (it usually does).
    register : bool
        Refine the alignment with :func:`tomo4d.register.register` (sub-pixel
        affine).  Without it the pair is aligned by the coarse translation
        search only (or ``phi0``).
    phi0 : array (4, 4), optional
        Known transformation HQ voxel -> up-sampled LQ voxel (origin at voxel 0);
        skips the coarse search and is the registration's start.
    val_fraction : float
        Fraction of slices held out for validation, in short blocks spread through the depth with
        ``guard`` slices on each side that do not train (:func:`tomo4d.enhance.holdout.holdout_split`).
    fov : bool
        Mask the circular field of view of both scans.
    min_overlap_score : float
        Below this normalised cross-correlation the pair is declared non-overlapping.
    smoothing : float or "auto"
        Gaussian sigma (HQ voxels) applied to HQ before registering, so that both
        images have the same resolution; ``"auto"`` estimates it (see
        :func:`register_lq_hq`).
    max_strain : float
        Largest stretch (relative to the rigid solution) accepted from the affine
        registration; beyond it the rigid solution is used (see :func:`register_lq_hq`).
    route : {"auto", "volume", "slices"}
        ``"volume"``: a 3D pair, LQ 2x coarser along z, y and x (this function's steps below).
        ``"slices"``: registered 2D slice pairs, LQ 2x coarser in-plane only, one LQ slice per HQ
        slice, or a single pair (:func:`tomo4d.enhance.slice_pairs.prepare_slice_pair`; no sub-pixel
        registration).  ``"auto"``: ``"slices"`` when the pair has one LQ slice per HQ slice and equal
        z voxel sizes (or one slice), else ``"volume"``.
    strip : int
        Slices route, single slice: rows of the strips it is cut into (strips spread over the image validate).
    holdout : {"spread", "end"}
        ``"end"``: one block at the end of the stack, no guard (the split of models trained before
        issue 19's session 10; to re-make their validation slices).
    guard : int, optional
        Guard slices beside each validation block (default: :data:`~tomo4d.enhance.holdout.Z_GUARD`
        = 6 on the volume route, 0 on the slices route).

    Notes
    -----
    Registration of a sharp HQ onto a much blurrier LQ (LQ blur ~6 HQ voxels on
    the phantom) fails when done directly: the Gauss-Newton Jacobian comes from
    the HQ gradients, which hold detail the LQ does not have, and the affine
    fit drifts (z scale 0.87 on the 64^3 phantom).  HQ is therefore first
    blurred to the LQ resolution, the volume borders (where that blur sees no
    data) are masked, a rigid registration gives the start of an affine one,
    and the affine result is kept only if its stretch stays within ``max_strain``.
    """
    from .slice_pairs import as_slice_volume, prepare_slice_pair, resolve_route

    for name, v in (("lq", lq), ("hq", hq)):
        if getattr(v, "ndim", 3) == 2 and route == "volume":
            raise InputError(f"{name} (--{name}) is a 2D image of shape {v.shape}: a 2D pair; route='volume' needs "
                             "3D volumes (z, y, x): use route='slices' (--route slices)")
    lq, hq = as_slice_volume(lq, name="lq"), as_slice_volume(hq, name="hq")
    if resolve_route(route, lq, hq) == "slices":
        return prepare_slice_pair(lq, hq, phi0=phi0, val_fraction=val_fraction, fov=fov, strip=strip,
                                  min_overlap_score=min_overlap_score, holdout=holdout, guard=guard or 0)
    check_voxel_sizes(lq.voxel_size_nm, hq.voxel_size_nm)
    lq_ext, hq_ext = np.asarray(lq.extent_nm), np.asarray(hq.extent_nm)
    if np.any(hq.shape < np.asarray((5, 8, 8))):
        raise InputError(f"HQ volume {hq.shape} is too small to train on; give at least 5 x 8 x 8 voxels")
    if np.any(lq.shape < np.asarray((3, 4, 4))):
        raise InputError(f"LQ volume {lq.shape} is too small to train on; give at least 3 x 4 x 4 voxels")
    split = holdout_split(hq.shape[0], val_fraction, guard=Z_GUARD if guard is None else guard, holdout=holdout)
    if split.note and split.holdout == "spread":
        log.warning("validation split: %s", split.note)
    hq_a = as_float32(hq.numpy())
    # the pair is checked before any registration or work: NaN would surface as "SVD did not converge"
    check_finite("hq (--hq)", hq_a)
    lq_a = as_float32(lq.numpy())
    check_finite("lq (--lq)", lq_a)
    lq_up = upsample2_xy(upsample2_axis(lq_a, 0))
    del lq_a
    if phi0 is None:
        if np.any(lq_ext < hq_ext * 0.5):
            raise InputError(
                f"LQ field of view {tuple(lq_ext)} nm is much smaller than the HQ field {tuple(hq_ext)} nm; "
                "LQ and HQ must image the same region (LQ usually the larger one)"
            )
        corner, score = _coarse_translation(hq_a, lq_up)
        log.info("coarse LQ->HQ translation: corner %s, ncc %.3f", corner, score)
        if score < min_overlap_score:
            raise InputError(
                f"LQ and HQ do not overlap: best normalised cross-correlation {score:.2f} < {min_overlap_score}; "
                "check that both files show the same region of the same sample (or give phi0)"
            )
        phi = np.eye(4)
        phi[:3, 3] = corner
        how = "coarse translation"
    else:
        phi = np.asarray(phi0, float)
        if phi.shape != (4, 4):
            raise InputError(f"phi0 must be a 4x4 matrix, got shape {phi.shape}")
        how = "given"
    if register:
        lq_crop = _resample(lq_up, phi, hq_a.shape, order=3)
        ones = np.ones_like(lq_crop)
        fmask = fov_mask(hq_a.shape[1:])[None].repeat(hq_a.shape[0], 0) if fov else np.ones(hq_a.shape, bool)
        align = register_lq_hq(hq_a, lq_crop, mask=fmask if fov else None, smoothing=smoothing,
                               max_strain=max_strain)
        cands = [("coarse translation", np.eye(4))]
        if align.phi is not None:
            cands.append((align.method, align.phi))
        scored = []
        for name, p_ in cands:
            moved = lq_crop if p_ is cands[0][1] else as_float32(apply_phi(lq_crop, p_, order=3))
            cov = np.asarray(apply_phi(ones, p_, order=1)) > 0.99
            scored.append((name, p_, moved, cov, _ncc(align.fixed, _smooth(moved, align.sigma_px),
                                                      cov & align.mask)))
        # the registration is used unless it correlates worse than the coarse translation
        best = len(scored) - 1 if scored[-1][4] >= scored[0][4] - 1e-3 else 0
        how, phi_r, lq_reg, covered = scored[best][:4]
        log.info("LQ->HQ alignment (HQ smoothed by %.2f px to the LQ resolution): %s; using %s",
                 align.sigma_px, ", ".join(f"{c[0]}: ncc {c[4]:.4f}" for c in scored) + f" ({align.note})", how)
        c = (np.asarray(hq_a.shape, float) - 1) / 2
        to_c, from_c = np.eye(4), np.eye(4)
        to_c[:3, 3], from_c[:3, 3] = -c, c
        phi = phi @ (from_c @ phi_r @ to_c) if best > 0 else phi
    else:
        lq_reg = _resample(lq_up, phi, hq_a.shape, order=3)
        covered = _resample(np.ones_like(lq_up), phi, hq_a.shape, order=1, cval=0.0) > 0.99
    mask = covered
    if fov:
        mask = mask & fov_mask(hq_a.shape[1:])[None]
    if mask.mean() < 0.05:
        raise InputError(
            f"LQ and HQ overlap in only {100 * mask.mean():.1f}% of the HQ voxels; they must image the same region"
        )
    return TrainingPair(lq_reg.astype(np.float32), hq_a, mask, split.train, split.val, phi, how,
                        hq.voxel_size_nm, lq.voxel_size_nm, split=split)


@dataclass(frozen=True)
class LqHqAlignment:
    """Result of :func:`register_lq_hq`.

    Attributes
    ----------
    phi : ndarray (4, 4) or None
        HQ voxel -> LQ-crop voxel about the HQ centre (tomo4d.register convention); None if
        neither registration converged.
    method : str
        ``"tomo4d.register (affine)"`` or ``"tomo4d.register (rigid)"``.
    sigma_px : float
        Gaussian sigma (HQ voxels) applied to HQ.
    fixed : ndarray
        The smoothed HQ used as the fixed image.
    mask : ndarray of bool
        Voxels used (FOV, away from the borders by ``ceil(sigma)``).
    note : str
        Why the affine solution was or was not kept.
    """

    phi: np.ndarray | None
    method: str
    sigma_px: float
    fixed: np.ndarray
    mask: np.ndarray
    note: str


def _smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(a, sigma, mode="nearest").astype(np.float32) if sigma > 0 else a


def estimate_blur_sigma(hq: np.ndarray, lq: np.ndarray, mask: np.ndarray | None = None, *,
                        max_sigma: float = 10.0) -> float:
    """Isotropic Gaussian sigma (HQ voxels) that best turns ``hq`` into ``lq`` (same grid, roughly aligned).

    Least squares with an affine grey-level fit at each sigma on a 0.5 px grid, refined to 0.1 px
    by a parabola through the best three.  A residual misalignment of ~1 px biases it up slightly.
    """
    m = np.ones(hq.shape, bool) if mask is None else np.asarray(mask, bool)
    b0 = lq[m].astype(np.float64)
    sig = np.arange(0.0, max_sigma + 1e-9, 0.5)
    errs = []
    for s in sig:
        g = _smooth(hq, float(s))[m].astype(np.float64)
        A = np.stack([g, np.ones_like(g)], 1)
        coef, *_ = np.linalg.lstsq(A, b0, rcond=None)
        errs.append(float(np.mean((A @ coef - b0) ** 2)))
    i = int(np.argmin(errs))
    if 0 < i < len(sig) - 1:
        e0, e1, e2 = errs[i - 1], errs[i], errs[i + 1]
        den = e0 - 2 * e1 + e2
        if den > 0:
            return float(np.clip(sig[i] + 0.5 * 0.5 * (e0 - e2) / den, 0.0, max_sigma))
    return float(sig[i])


def register_lq_hq(hq: np.ndarray, lq_crop: np.ndarray, *, mask: np.ndarray | None = None,
                   smoothing: float | str = "auto", max_strain: float = 0.01) -> LqHqAlignment:
    """Sub-pixel registration of a blurred, noisy LQ (on the HQ grid, roughly aligned) onto HQ.

    1. HQ is smoothed by a Gaussian of ``smoothing`` HQ voxels (``"auto"``:
       :func:`estimate_blur_sigma`), so that fixed and moving have the same resolution.
    2. Voxels within ``ceil(sigma)`` of the volume border are ignored (the smoothing
       extrapolates there, while the LQ sees the real neighbourhood).
    3. :func:`tomo4d.register.register` rigid (binning 2, 1), then affine from the rigid
       solution.  The affine solution is kept if it converged and its stretch relative to
       the rigid one stays within ``max_strain`` (scans of one sample on one instrument differ
       by a rigid motion and a small voxel-size calibration; a larger stretch is a fit of noise
       or of too few features, as on a 64^3 phantom).

    Returns
    -------
    LqHqAlignment
    """
    if smoothing == "auto":
        sigma = estimate_blur_sigma(hq, lq_crop, mask)
    else:
        try:
            sigma = float(smoothing)
        except (TypeError, ValueError):
            raise InputError(f"smoothing={show(smoothing)} must be 'auto' or a sigma in HQ voxels (>= 0)") from None
        if not sigma >= 0:
            raise InputError(f"smoothing={show(smoothing)} must be 'auto' or a sigma in HQ voxels (>= 0)")
    fixed = _smooth(hq, sigma)
    b = int(np.ceil(max(sigma, 1.0)))
    msk = np.zeros(hq.shape, bool)
    msk[b:-b, b:-b, b:-b] = True
    if mask is not None:
        msk &= np.asarray(mask, bool)
    if msk.sum() < 512:
        msk = np.ones(hq.shape, bool) if mask is None else np.asarray(mask, bool)
    rig = _register(fixed, lq_crop, mask=msk, rigid=True, binning=(2, 1))
    start = rig.phi if rig.converged else None
    aff = _register(fixed, lq_crop, mask=msk, rigid=False, binning=(2, 1) if start is None else (1,),
                    phi0=start)
    strain = float("inf")
    if aff.converged:
        ref = rig.phi[:3, :3] if rig.converged else np.eye(3)
        _, u = polar_decomposition(np.linalg.solve(ref, aff.phi[:3, :3]))
        strain = float(np.abs(np.linalg.eigvalsh((u + u.T) / 2) - 1.0).max())
    if aff.converged and strain <= max_strain:
        return LqHqAlignment(aff.phi, "tomo4d.register (affine)", sigma, fixed, msk,
                             f"affine stretch {strain:.4f} <= {max_strain}")
    note = ("affine not converged" if not aff.converged else
            f"affine stretch {strain:.4f} > max_strain={max_strain}: rigid kept")
    if rig.converged:
        return LqHqAlignment(rig.phi, "tomo4d.register (rigid)", sigma, fixed, msk, note)
    return LqHqAlignment(None, "none", sigma, fixed, msk, note + "; rigid not converged")


def _ncc(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> float:
    """Normalised cross-correlation of a and b over the voxels of m."""
    if not np.any(m):
        return -1.0
    x, y = a[m].astype(np.float64), b[m].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (np.sqrt((x * x).sum() * (y * y).sum()) + 1e-12))


def _resample(image: np.ndarray, phi: np.ndarray, shape, *, order: int = 3, cval: float | None = None) -> np.ndarray:
    """Sample ``image`` at ``phi(x)`` for every voxel x of a grid of ``shape`` (translation in phi[:3, 3]
    is relative to the grid corner when phi's linear part is the identity)."""
    lin = phi[:3, :3]
    off = phi[:3, 3]
    mode = "nearest" if cval is None else "constant"
    return ndimage.affine_transform(as_float32(image), lin, offset=off, output_shape=tuple(shape), order=order,
                                    mode=mode, cval=0.0 if cval is None else cval, prefilter=order > 1).astype(np.float32)
