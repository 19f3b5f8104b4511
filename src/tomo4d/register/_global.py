"""Global (one Phi) registration: multiscale inverse-compositional Gauss-Newton."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from .._chunks import budget_bytes
from .._threads import resolve_threads
from .._validate import (
    as_image,
    as_lazy_image,
    as_lazy_mask,
    as_mask,
    check_int,
    check_number,
    check_same_shape,
    show,
)
from ..errors import InputError
from ._registration import Registration
from .phi import (
    _skew,
    check_phi,
    polar_decomposition,
    recentre_phi,
    rotation_matrix,
)

log = logging.getLogger(__name__)

__all__ = ["Registration", "register"]  # Registration: from ._registration


def _bin(a: np.ndarray, b: int) -> np.ndarray:
    """Block mean by ``b`` (as ``tomo4d._array.bin_volume``) by strided float32 sums: no reshaped
    multi-axis reduction (several times slower)."""
    if b == 1:
        return a
    out = None
    for ax in range(3):
        n = (a.shape[ax] // b) * b
        src = a if out is None else out
        acc = np.array(src[(slice(None),) * ax + (slice(0, n, b),)], dtype=np.float32)
        for i in range(1, b):
            acc += src[(slice(None),) * ax + (slice(i, n, b),)]
        out = acc
    out *= np.float32(1.0 / b**3)
    return out


def _phi_to_level(phi_full: np.ndarray, c_full: np.ndarray, b: int, shape_full) -> np.ndarray:
    """Phi about the full-resolution centre -> Phi about the centre of the ``b``-binned grid."""
    crop = np.asarray([(n // b) * b for n in shape_full], float)
    c_crop = (crop - 1.0) / 2.0
    p = recentre_phi(phi_full, c_full, c_crop)
    p[:3, 3] /= b
    return p


def _phi_from_level(phi_b: np.ndarray, c_full: np.ndarray, b: int, shape_full) -> np.ndarray:
    crop = np.asarray([(n // b) * b for n in shape_full], float)
    c_crop = (crop - 1.0) / 2.0
    p = phi_b.copy()
    p[:3, 3] *= b
    return recentre_phi(p, c_crop, c_full)


N_PHOTO = 6
"""Photometric sums leading the kernel's per-slice output (see :mod:`tomo4d.register._kernels`)."""


def _param_index(i: int, j: int) -> int:
    """Index of the affine parameter ``dF[i, j]`` (j < 3) or ``dt[i]`` (j == 3) in the 12-vector."""
    return 3 * i + j if j < 3 else 9 + i


def _rigid_basis() -> np.ndarray:
    """(12, 6): affine parameters of a small rotation vector (rad, z y x) and a translation."""
    t = np.zeros((12, 6))
    for k in range(3):
        t[:9, k] = _skew(np.eye(3)[k]).ravel()
        t[9 + k, 3 + k] = 1.0
    return t


def _hessian(moments: np.ndarray) -> np.ndarray:
    """The 12x12 affine Gauss-Newton matrix from ``sum g_a g_b u_j u_l`` (3, 3, 4, 4) (a <= b filled)."""
    h = np.zeros((12, 12))
    for a in range(3):
        for b in range(3):
            m = moments[a, b] if a <= b else moments[b, a].T
            for j in range(4):
                for l in range(4):  # noqa: E741
                    h[_param_index(a, j), _param_index(b, l)] = m[j, l]
    return h


def _unpack(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``J^T w``, ``J^T t`` and ``J^T 1`` (12,) each from the kernel's per-voxel sums."""
    jt = sums[N_PHOTO:].reshape(3, 3, 4)
    out = np.zeros((3, 12))
    for i in range(3):
        for j in range(4):
            out[:, _param_index(i, j)] = jt[:, i, j]
    return out[0], out[1], out[2]


def _increment_matrix(dp: np.ndarray, rigid: bool) -> np.ndarray:
    m = np.eye(4)
    if rigid:
        m[:3, :3] = rotation_matrix(np.rad2deg(dp[:3]))
        m[:3, 3] = dp[3:]
    else:
        m[:3, :3] += dp[:9].reshape(3, 3)
        m[:3, 3] = dp[9:]
    return m


class _Slabs:
    """Runs a slice kernel ``fn(*args, k0, k1, out)`` over z slabs, on ``pool`` when there is one."""

    def __init__(self, pool: ThreadPoolExecutor | None, n: int):
        self.pool, self.n = pool, n

    def __call__(self, fn, nz: int, *args) -> None:
        out = args[-1]
        if self.pool is None or nz < 2 * self.n:
            fn(*args[:-1], 0, nz, out)
            return
        edges = np.linspace(0, nz, 2 * self.n + 1).astype(int)   # 2 slabs a thread: some balance
        list(self.pool.map(lambda k: fn(*args[:-1], int(edges[k]), int(edges[k + 1]), out), range(2 * self.n)))


def _level_setup(fixed: np.ndarray, mask: np.ndarray | None, rigid: bool, slabs: _Slabs):
    """Selected voxels, the inverse Gauss-Newton matrix and the grey mean and std of one level."""
    sel = np.zeros(fixed.shape, bool)
    sel[1:-1, 1:-1, 1:-1] = True
    if mask is not None:
        sel &= mask
    from . import _kernels

    n = int(np.count_nonzero(sel))
    if n < 64:
        raise InputError(f"only {n} voxels to register at this level; enlarge the mask or the volume")
    moments = np.empty((fixed.shape[0], 3, 3, 4, 4))
    slabs(_kernels.hessian_moments, fixed.shape[0], fixed, sel, moments)
    hinv = hessian_inverse(moments.sum(axis=0), rigid)
    vals = fixed[sel]
    return sel, hinv, float(vals.mean(dtype=np.float64)), float(vals.std(dtype=np.float64)) or 1.0


def gauss_newton_matrix(moments: np.ndarray, rigid: bool) -> np.ndarray:
    """The Gauss-Newton matrix (12x12, or 6x6 rigid) from the summed moments (3, 3, 4, 4) of the kernel."""
    hess = _hessian(moments)
    if rigid:
        basis = _rigid_basis()
        hess = basis.T @ hess @ basis
    return hess


def moments_about(moments: np.ndarray, shift) -> np.ndarray:
    """Moments (3, 3, 4, 4) summed in coordinates ``u`` about a box's centre, moved to ``u + shift`` (the exact
    affine change ``A M A^T``, ``A`` the homogeneous translation by ``shift``)."""
    a = np.eye(4)
    a[:3, 3] = shift
    return np.einsum("jk,abkl,ml->abjm", a, moments, a)


def hessian_inverse(moments: np.ndarray, rigid: bool) -> np.ndarray:
    """Inverse Gauss-Newton matrix (12x12, or 6x6 rigid) from the summed moments (3, 3, 4, 4) of the kernel."""
    hess = gauss_newton_matrix(moments, rigid)
    try:
        hinv = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        hinv = np.full_like(hess, np.nan)
    if not np.all(np.isfinite(hinv)):
        raise InputError("the fixed volume has no texture in the mask (singular Hessian); "
                         "give a textured region or a larger mask")
    return hinv


def _grey_fit(s: np.ndarray, photometric: bool) -> tuple[float, float, float]:
    """Gain, offset and sum of squared residuals ``sum ((w - off) / gain - t)^2`` from the photometric sums."""
    n, sw, sww, swt, st, stt = s[:N_PHOTO]
    gain, off = 1.0, 0.0
    if photometric:
        var_t = stt - st * st / n
        cov = swt - sw * st / n
        gain = cov / var_t if var_t > 0 else 1.0
        if not np.isfinite(gain) or gain <= 1e-6:
            gain = 1.0
        off = (sw - gain * st) / n
    ss = (sww - 2 * off * sw + n * off * off) / gain**2 - 2 * (swt - off * st) / gain + stt
    return gain, off, max(float(ss), 0.0)


def _gn_level(fixed: np.ndarray, moving: np.ndarray, mask: np.ndarray | None, phi: np.ndarray, *,
              rigid: bool, order: int, max_iterations: int, tolerance_px: float, margin: int,
              photometric: bool, slabs: _Slabs) -> tuple[np.ndarray, bool, int, float, float]:
    from . import _kernels

    shape = np.asarray(fixed.shape)
    c = (shape - 1.0) / 2.0
    fixed = np.ascontiguousarray(fixed, dtype=np.float32)
    sel, hinv, shift, t_std = _level_setup(fixed, mask, rigid, slabs)
    if order > 1:
        coeffs = ndimage.spline_filter(moving, order=order, output=np.float32, mode="mirror")
    else:
        coeffs = np.ascontiguousarray(moving, dtype=np.float32)
    radius = max(float(np.max(np.abs(np.flatnonzero(sel.any(axis=tuple(b for b in range(3) if b != a))) - c[a])))
                 for a in range(3))
    lo = np.full(3, float(margin))
    hi = shape - 1.0 - margin
    sums = np.empty((fixed.shape[0], _kernels.N_SUMS))
    converged, it, dnorm, resid, prev = False, 0, float("inf"), float("nan"), float("inf")
    for it in range(1, max_iterations + 1):  # noqa: B007 (read after the loop: the iteration count)
        mat = np.ascontiguousarray(phi[:3, :3])
        off = c + phi[:3, 3] - mat @ c
        slabs(_kernels.warp_sums, fixed.shape[0], coeffs, fixed, sel, mat, off, lo, hi, order, shift, sums)
        s = sums.sum(axis=0)
        if s[0] < 64:
            log.warning("registration moved the volume out of the field of view; stopping")
            break
        phi, resid, dnorm = gn_update(phi, s, hinv, rigid=rigid, photometric=photometric, t_std=t_std,
                                      radius=radius)
        if is_converged(dnorm, prev, tolerance_px):
            converged = True
            break
        prev = dnorm
    return phi, converged, it, resid, dnorm


def gn_update(phi: np.ndarray, s: np.ndarray, hinv: np.ndarray, *, rigid: bool, photometric: bool, t_std: float,
              radius: float) -> tuple[np.ndarray, float, float]:
    """One inverse-compositional update of ``phi`` from the summed kernel output ``s`` (``N_SUMS``): the new Phi,
    the relative residual before it and the size of the update (px)."""
    gain, off_grey, ss = _grey_fit(s, photometric)
    resid = float(np.sqrt(ss / s[0]) / t_std)
    jtw, jtt, jt1 = _unpack(s)
    grad = (jtw - off_grey * jt1) / gain - jtt
    dp = hinv @ (grad if not rigid else _rigid_basis().T @ grad)
    inc = _increment_matrix(dp, rigid)
    phi = phi @ np.linalg.inv(inc)
    if rigid:
        rot, _ = polar_decomposition(phi[:3, :3])
        phi[:3, :3] = rot
    dnorm = float(np.linalg.norm(inc[:3, 3]) + radius * np.abs(inc[:3, :3] - np.eye(3)).max())
    if not np.isfinite(dnorm):
        raise InputError("registration diverged (non-finite update); check the inputs overlap "
                         "or give phi0")
    return phi, resid, dnorm


def is_converged(dnorm: float, prev: float, tolerance_px: float) -> bool:
    """The update is below the tolerance, or the updates contract fast enough that all the later ones together
    (geometric series of the observed ratio) are predicted to be below it."""
    ratio = dnorm / prev if 0.0 < prev < float("inf") else 1.0
    return dnorm < tolerance_px or (ratio < 0.5 and dnorm * ratio / (1.0 - ratio) < tolerance_px)


LEVEL_BYTES_PER_VOXEL = 20.0
"""Working memory of an in-memory level per voxel: fixed, moving, spline coefficients (float32), selection, mask
and the binning temporaries (``register(chunk_budget_mb=...)`` streams above it)."""


def _shape(obj) -> tuple[int, ...]:
    data = obj.data if hasattr(obj, "voxel_size_nm") and hasattr(obj, "data") else obj
    return tuple(int(n) for n in getattr(data, "shape", np.shape(data)))


MIN_VOXELS_PER_AXIS = 8
"""Smallest number of voxels per axis of a (binned) registration level."""

COARSE_TOLERANCE_PX = 0.02
"""Tolerance (full-resolution px) of the levels before the finest: they only start the next level."""


def register(fixed, moving, *, phi0=None, mask=None, rigid: bool = False, binning: Sequence[int] = (4, 2, 1),
             order: int = 3, max_iterations: int = 50, tolerance_px: float = 1e-3, margin_px: int = 1,
             photometric: bool = True, progress: Callable[[int, int], None] | None = None,
             threads: int | None = None, chunk_budget_mb: float | None = None) -> Registration:
    """Register ``moving`` onto ``fixed`` with one affine (or rigid) Phi.

    Minimises ``sum_x (moving(phi(x)) - fixed(x))^2`` over the fixed voxels
    (inside ``mask``) by inverse-compositional Gauss-Newton: the Jacobian and
    Hessian come from the gradients of ``fixed`` and stay constant, each
    iteration resamples ``moving`` with cubic B-splines.  Coarse-to-fine over
    ``binning`` (block-mean binned volumes), each level starting from the last.

    Parameters
    ----------
    fixed, moving : (z, y, x) array or Volume
        Same shape.  No NaNs (mask them instead).
    phi0 : (4, 4) array, optional
        Initial guess, about the fixed centre ``(shape - 1) / 2``.
    mask : (z, y, x) bool array, optional
        Fixed voxels to use (e.g. the sample, not the air around it).
    rigid : bool
        Only rotation and translation (6 parameters) instead of a full affine (12).
    binning : sequence of int
        Binning factors, coarse to fine.  The finest factor must leave at least
        :data:`MIN_VOXELS_PER_AXIS` (8) voxels along every axis (else
        :class:`InputError`); coarser levels that would not are skipped
        (``Registration.levels`` lists the levels used).
    order : int
        Interpolation order of ``moving`` (1 linear, 3 cubic).
    max_iterations : int
        Per level.
    tolerance_px : float
        Stop a level when an update moves the volume by less than this (px,
        translation plus motion of the volume edge caused by the change of F), or
        when the last two updates contract so that all later ones together are
        predicted to move it by less (geometric series of their ratio, when
        below 0.5).  The default 0.001 px is well below the accuracy of a
        registration (interpolation error, noise).  Levels before the finest stop at
        ``max(tolerance_px, COARSE_TOLERANCE_PX)``: they only start the next one.
    margin_px : int
        Voxels mapped closer than this to the border of ``moving`` are ignored.
    photometric : bool
        Fit a linear grey-level relation (gain, offset) between the volumes at
        every iteration (different exposure, reconstruction scaling).
    progress : callable(done, total), optional
        Called after each level.
    threads : int, optional
        Threads of the compiled kernels (slabs of z slices on a thread pool of this call; no global
        thread setting is changed).  None: the ``tomo4d.threads`` setting, else the CPUs this process may use (affinity, cgroup quota).
    chunk_budget_mb : float, optional
        Memory budget (MiB).  None: both volumes are loaded whole (lazy ones included).  Given, and the
        volumes' working set (20 bytes per voxel) exceeds it: out of core (:mod:`tomo4d.register._outofcore`),
        lazy inputs (dask, :func:`tomo4d.io.open_volume`) read slab by slab or box by box.  Each level whose
        binned pair fits the budget is binned by streaming and registered whole (identical to in memory);
        coarser factors (x2) are put in front until one fits; a level that does not fit runs on sub-boxes
        spread over the volume (mask), as many as fit the budget (the sampled voxels' normal equations;
        ``Registration.extra["out_of_core"]`` lists each level's route).

    Returns
    -------
    Registration
        ``phi`` maps fixed to moving coordinates: ``apply_phi(moving, reg.phi)``
        reproduces ``fixed``.
    """
    budget = None if chunk_budget_mb is None else budget_bytes(chunk_budget_mb)
    streamed = budget is not None and math.prod(_shape(fixed)) * LEVEL_BYTES_PER_VOXEL > budget
    f = (as_lazy_image if streamed else as_image)(fixed, name="fixed")
    m = (as_lazy_image if streamed else as_image)(moving, name="moving")
    check_same_shape(f, m)
    msk = as_lazy_mask(mask, f.shape) if streamed else as_mask(mask, f.shape)
    if rigid not in (True, False):
        raise InputError(f"rigid={show(rigid)} must be True or False")
    if isinstance(binning, (str, bytes)) or not hasattr(binning, "__iter__"):
        raise InputError(f"binning={show(binning)} must be a sequence of positive integers, e.g. (4, 2, 1)")
    levels = [check_int(f"binning[{i}]", b, minimum=1) for i, b in enumerate(binning)]
    if not levels:
        raise InputError("binning is empty; give binning factors, coarse to fine, e.g. (4, 2, 1)")
    if order not in (1, 3):
        raise InputError(f"order={show(order)}: use 1 (linear) or 3 (cubic)")
    max_iterations = check_int("max_iterations", max_iterations, minimum=1)
    tolerance_px = check_number("tolerance_px", tolerance_px, minimum=0.0, exclusive_minimum=True)
    margin_px = check_int("margin_px", margin_px, minimum=0)
    if min(f.shape) < MIN_VOXELS_PER_AXIS:
        raise InputError(f"volumes of shape {f.shape} are too small to register; need at least "
                         f"{MIN_VOXELS_PER_AXIS} voxels per axis")
    largest = min(f.shape) // MIN_VOXELS_PER_AXIS
    if levels[-1] > largest:
        # the finest level is the result: it is never replaced by another one
        raise InputError(f"binning={show(list(levels))}: the finest factor {levels[-1]} leaves "
                         f"{min(n // levels[-1] for n in f.shape)} voxels along an axis of the volume (shape "
                         f"{f.shape}); registration needs at least {MIN_VOXELS_PER_AXIS} voxels per axis, so use "
                         f"factors <= {largest} (e.g. binning=(1,))")
    # coarser levels that would be too small are skipped (the schedule actually used is Registration.levels)
    levels = [b for b in levels if b <= largest]
    phi = np.eye(4) if phi0 is None else check_phi(phi0, name="phi0").copy()
    if rigid:
        rot, _ = polar_decomposition(phi[:3, :3])
        phi[:3, :3] = rot
    n_threads = resolve_threads(None if threads is None else check_int("threads", threads, minimum=1))
    pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
    kw = dict(rigid=rigid, order=order, max_iterations=max_iterations, tolerance_px=tolerance_px,
              margin_px=margin_px, photometric=photometric, progress=progress, pool=pool, n_threads=n_threads)
    try:
        if streamed:
            from ._outofcore import register_levels

            return register_levels(f, m, msk, phi, levels, budget=budget, **kw)
        return _register_levels(f, m, msk, phi, levels, **kw)
    finally:
        if pool is not None:
            pool.shutdown()


def _register_levels(f, m, msk, phi, levels, *, rigid, order, max_iterations, tolerance_px, margin_px,
                     photometric, progress, pool, n_threads) -> Registration:
    c_full = (np.asarray(f.shape, float) - 1.0) / 2.0
    total_it, converged, resid, dnorm = 0, False, float("nan"), float("nan")
    for i, b in enumerate(levels):
        fb, mb = _bin(f, b), _bin(m, b)
        mkb = None if msk is None else _bin(msk.astype(np.float32), b) > 0.5
        if mkb is not None and mkb.sum() < 64:
            mkb = None if b > 1 else mkb
        pb = _phi_to_level(phi, c_full, b, f.shape)
        # a coarse level only brings the next one into its quadratic basin: a looser tolerance
        tol = tolerance_px if i == len(levels) - 1 else max(tolerance_px, COARSE_TOLERANCE_PX)
        pb, converged, it, resid, dnorm = _gn_level(
            fb, mb, mkb, pb, rigid=rigid, order=order, max_iterations=max_iterations,
            tolerance_px=tol / b, margin=margin_px, photometric=photometric, slabs=_Slabs(pool, n_threads))
        phi = _phi_from_level(pb, c_full, b, f.shape)
        total_it += it
        log.debug("register level bin %d: %d iterations, residual %.4f, last update %.2e px", b, it, resid, dnorm)
        if progress is not None:
            progress(i + 1, len(levels))
    return Registration(phi=phi, converged=bool(converged), iterations=int(total_it), residual=float(resid),
                        centre_zyx_px=tuple(float(v) for v in c_full), delta_phi_norm=float(dnorm),
                        levels=tuple(levels), method="gauss-newton")
