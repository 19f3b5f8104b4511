"""Global (one Phi) registration: multiscale inverse-compositional Gauss-Newton."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from .._array import bin_volume
from .._validate import (
    as_image,
    as_mask,
    check_int,
    check_number,
    check_same_shape,
    show,
)
from ..errors import InputError
from ..io import atomic_output
from .phi import (
    PhiParts,
    check_phi,
    decompose_phi,
    polar_decomposition,
    recentre_phi,
    rotation_matrix,
)

log = logging.getLogger(__name__)

__all__ = ["Registration", "register"]


@dataclass(frozen=True)
class Registration:
    """Result of :func:`register` / :func:`register_multimodal`.

    Attributes
    ----------
    phi : (4, 4) float64
        Maps FIXED voxel coordinates to MOVING voxel coordinates about
        ``centre_zyx_px``: ``x' = F (x - c) + c + t``.
    converged : bool
        The last (finest) level reached the tolerance before ``max_iterations``.
    iterations : int
        Gauss-Newton iterations over all levels.
    residual : float
        RMS of ``moving(phi(x)) - fixed(x)`` over the used voxels, divided by the
        standard deviation of ``fixed`` there (0 = perfect match, ~1.4 = unrelated).
    centre_zyx_px : (3,) float
        Centre of ``phi``, px: the centre of the fixed volume ``(shape - 1) / 2``.
    delta_phi_norm : float
        Size of the last update, px (translation plus window-edge motion of ``F``).
    levels : tuple of int
        Binning factors used, coarse to fine.
    method : str
        ``"gauss-newton"`` or ``"mutual-information"``.
    """

    phi: np.ndarray
    converged: bool
    iterations: int
    residual: float
    centre_zyx_px: tuple[float, float, float] = (0.0, 0.0, 0.0)
    delta_phi_norm: float = float("nan")
    levels: tuple[int, ...] = ()
    method: str = "gauss-newton"
    extra: dict = field(default_factory=dict)

    @property
    def translation_px(self) -> np.ndarray:
        """Translation ``(tz, ty, tx)`` of the centre, px."""
        return self.phi[:3, 3].copy()

    @property
    def F(self) -> np.ndarray:
        """Deformation gradient ``(3, 3)``."""
        return self.phi[:3, :3].copy()

    @property
    def parts(self) -> PhiParts:
        """Translation, rotation, stretch and strains of ``phi``."""
        return decompose_phi(self.phi)

    def to_dict(self) -> dict:
        """JSON-serialisable summary (phi as nested lists)."""
        parts = self.parts.to_dict()
        return {"phi": self.phi.tolist(), "centre_zyx_px": list(self.centre_zyx_px),
                "converged": self.converged, "iterations": self.iterations, "residual": self.residual,
                "delta_phi_norm": self.delta_phi_norm, "levels": list(self.levels), "method": self.method,
                "translation_px": parts["translation_px"], "rotation_deg": parts["rotation_deg"],
                "rotation_angle_deg": parts["rotation_angle_deg"], "strain": parts["strain"],
                "volumetric_strain": parts["volumetric_strain"], **self.extra}

    def save(self, path, *, overwrite: bool = False, inputs=()) -> None:
        """Write :meth:`to_dict` as JSON (atomically)."""
        with atomic_output(path, overwrite=overwrite, inputs=inputs) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path) -> Registration:
        """Read a JSON file written by :meth:`save` (or any JSON with ``phi``)."""
        try:
            d = json.loads(Path(path).read_text())
            phi = check_phi(d["phi"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{str(path)!r} is not a tomo4d registration JSON with a 'phi' entry ({exc})") from None
        return cls(phi=phi, converged=bool(d.get("converged", True)), iterations=int(d.get("iterations", 0)),
                   residual=float(d.get("residual", float("nan"))),
                   centre_zyx_px=tuple(d.get("centre_zyx_px", (0.0, 0.0, 0.0))),
                   delta_phi_norm=float(d.get("delta_phi_norm", float("nan"))),
                   levels=tuple(d.get("levels", ())), method=str(d.get("method", "gauss-newton")))


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


def _rigid_columns(g: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Jacobian columns of a small rotation vector w: d(g . (w x r))/dw = r x g (z, y, x components)."""
    rz, ry, rx = r[:, 0], r[:, 1], r[:, 2]
    gz, gy, gx = g[:, 0], g[:, 1], g[:, 2]
    # w x r = (wx ry - wy rx, wz rx - wx rz, wy rz - wz ry) in (z, y, x) components (see phi._skew)
    return np.stack([gy * rx - gx * ry, gx * rz - gz * rx, gz * ry - gy * rz], axis=1)


def _increment_matrix(dp: np.ndarray, rigid: bool) -> np.ndarray:
    m = np.eye(4)
    if rigid:
        m[:3, :3] = rotation_matrix(np.rad2deg(dp[:3]))
        m[:3, 3] = dp[3:]
    else:
        m[:3, :3] += dp[:9].reshape(3, 3)
        m[:3, 3] = dp[9:]
    return m


def _gn_level(fixed: np.ndarray, moving: np.ndarray, mask: np.ndarray | None, phi: np.ndarray, *,
              rigid: bool, order: int, max_iterations: int, tolerance_px: float, margin: int,
              photometric: bool) -> tuple[np.ndarray, bool, int, float, float]:
    shape = np.asarray(fixed.shape)
    c = (shape - 1.0) / 2.0
    sel = np.zeros(fixed.shape, bool)
    sel[1:-1, 1:-1, 1:-1] = True
    if mask is not None:
        sel &= mask
    idx = np.nonzero(sel)
    if idx[0].size < 64:
        raise InputError(f"only {idx[0].size} voxels to register at this level; enlarge the mask or the volume")
    x = np.stack(idx, axis=1).astype(np.float64)
    xc = x - c
    t_vals = fixed[idx].astype(np.float64)
    grads = np.stack([g[idx] for g in np.gradient(fixed)], axis=1).astype(np.float64)
    if rigid:
        jac = np.concatenate([_rigid_columns(grads, xc), grads], axis=1)
    else:
        jac = np.concatenate([(grads[:, :, None] * xc[:, None, :]).reshape(-1, 9), grads], axis=1)
    hess = jac.T @ jac
    try:
        hinv = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        raise InputError("the fixed volume has no texture in the mask (singular Hessian); "
                         "give a textured region or a larger mask") from None
    coeffs = ndimage.spline_filter(moving, order=order, output=np.float32, mode="mirror") if order > 1 else moving
    radius = float(np.max(np.abs(xc))) if xc.size else 1.0
    hi = shape - 1.0 - margin
    converged, it, dnorm, resid = False, 0, float("inf"), float("nan")
    t_std = float(t_vals.std()) or 1.0
    for it in range(1, max_iterations + 1):  # noqa: B007 (read after the loop: the iteration count)
        y = xc @ phi[:3, :3].T + c + phi[:3, 3]
        valid = np.all((y >= margin) & (y <= hi), axis=1)
        if valid.sum() < 64:
            log.warning("registration moved the volume out of the field of view; stopping")
            break
        w = ndimage.map_coordinates(coeffs, y.T, order=order, mode="mirror", prefilter=False).astype(np.float64)
        if photometric:
            tv, wv = t_vals[valid], w[valid]
            a = np.cov(wv, tv)
            gain = a[0, 1] / a[1, 1] if a[1, 1] > 0 else 1.0
            if not np.isfinite(gain) or gain <= 1e-6:
                gain = 1.0
            off = wv.mean() - gain * tv.mean()
            r = (w - off) / gain - t_vals
        else:
            r = w - t_vals
        r[~valid] = 0.0
        resid = float(np.sqrt(np.mean(r[valid] ** 2)) / t_std)
        dp = hinv @ (jac.T @ r)
        inc = _increment_matrix(dp, rigid)
        phi = phi @ np.linalg.inv(inc)
        if rigid:
            rot, _ = polar_decomposition(phi[:3, :3])
            phi[:3, :3] = rot
        dnorm = float(np.linalg.norm(inc[:3, 3]) + radius * np.abs(inc[:3, :3] - np.eye(3)).max())
        if not np.isfinite(dnorm):
            raise InputError("registration diverged (non-finite update); check the inputs overlap "
                             "or give phi0")
        if dnorm < tolerance_px:
            converged = True
            break
    return phi, converged, it, resid, dnorm


MIN_VOXELS_PER_AXIS = 8
"""Smallest number of voxels per axis of a (binned) registration level."""


def register(fixed, moving, *, phi0=None, mask=None, rigid: bool = False, binning: Sequence[int] = (4, 2, 1),
             order: int = 3, max_iterations: int = 50, tolerance_px: float = 1e-4, margin_px: int = 1,
             photometric: bool = True, progress: Callable[[int, int], None] | None = None) -> Registration:
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
        translation plus motion of the volume edge caused by the change of F).
    margin_px : int
        Voxels mapped closer than this to the border of ``moving`` are ignored.
    photometric : bool
        Fit a linear grey-level relation (gain, offset) between the volumes at
        every iteration (different exposure, reconstruction scaling).
    progress : callable(done, total), optional
        Called after each level.

    Returns
    -------
    Registration
        ``phi`` maps fixed to moving coordinates: ``apply_phi(moving, reg.phi)``
        reproduces ``fixed``.
    """
    f = as_image(fixed, name="fixed")
    m = as_image(moving, name="moving")
    check_same_shape(f, m)
    msk = as_mask(mask, f.shape)
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
    c_full = (np.asarray(f.shape, float) - 1.0) / 2.0
    phi = np.eye(4) if phi0 is None else check_phi(phi0, name="phi0").copy()
    if rigid:
        rot, _ = polar_decomposition(phi[:3, :3])
        phi[:3, :3] = rot
    total_it, converged, resid, dnorm = 0, False, float("nan"), float("nan")
    for i, b in enumerate(levels):
        fb, mb = bin_volume(f, b), bin_volume(m, b)
        mkb = None if msk is None else bin_volume(msk.astype(np.float32), b) > 0.5
        if mkb is not None and mkb.sum() < 64:
            mkb = None if b > 1 else mkb
        pb = _phi_to_level(phi, c_full, b, f.shape)
        pb, converged, it, resid, dnorm = _gn_level(
            fb, mb, mkb, pb, rigid=rigid, order=order, max_iterations=max_iterations,
            tolerance_px=tolerance_px / b, margin=margin_px, photometric=photometric)
        phi = _phi_from_level(pb, c_full, b, f.shape)
        total_it += it
        log.debug("register level bin %d: %d iterations, residual %.4f, last update %.2e px", b, it, resid, dnorm)
        if progress is not None:
            progress(i + 1, len(levels))
    return Registration(phi=phi, converged=bool(converged), iterations=int(total_it), residual=float(resid),
                        centre_zyx_px=tuple(float(v) for v in c_full), delta_phi_norm=float(dnorm),
                        levels=tuple(levels), method="gauss-newton")
