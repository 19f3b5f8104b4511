"""Rigid (or affine) registration of two modalities of different resolution: a resolution and intensity model.

Model
-----
``fixed`` is the coarser modality (e.g. a neutron tomogram, voxel ``v_f``), ``moving`` the sharper one
(e.g. X-ray, voxel ``v_m``).  The fixed image is predicted from the moving one as the forward model of
the coarse instrument::

    fixed(x) ~ sum_j c_j [K * tent_j(moving)](T(x))

``tent_j`` are piecewise-linear hat functions of the moving grey value at ``n_knots`` equally spaced
knots (so ``sum_j c_j tent_j`` is any piecewise-linear, possibly non-monotonic, grey-level mapping; it is
applied *before* the blur, where the phases are still sharp), ``K`` is the resolution difference: the
fixed voxel's box (``v_f / v_m`` moving voxels, centred) and a Gaussian of variance
``fixed_psf^2 - moving_psf^2 - v_m^2 / 12`` (the moving image already holds its own PSF and box), and
``T`` maps the centres of the fixed voxels (nm from the fixed volume's first corner) into the moving
volume: ``X_m = A (X_f - C) + C + t`` about the fixed centre ``C`` (``A`` a rotation, or any matrix
for ``transform="affine"``; identity: the two first corners coincide).  Nothing is blurred blindly:
only the moving image, and only by what the coarse instrument adds; the sum runs over the coarse
voxels, where the noise is.

Fit
---
Least squares over the fixed voxels whose model position lies inside the moving field (clear of the
filter's edge effects): the mapping ``c`` is linear and solved exactly at every step (variable
projection), the transform parameters by Gauss-Newton with a central-difference Jacobian of the
spline-interpolated model (rotation vector in rad and translation in nm; ``transform="affine"``: the
nine entries of ``A`` and ``t``).  The model images ``K * tent_j`` are computed once on the moving grid,
subsampled by ``floor(v_f / 2 v_m)`` (they are smooth at the coarse scale) and interpolated with cubic
B-splines.  Start: ``phi0``, else the mutual-information translation search of
:func:`~tomo4d.register.register_multimodal` on the coarse grid (capture range ``search_px`` coarse
voxels; rotations of a few degrees are within the Gauss-Newton's basin).  With ``fixed_psf_sigma_nm=None``
the extra blur is estimated too: a golden-section search of the residual over the Gaussian's sigma.

Uncertainty
-----------
The covariance of the transform parameters, with the mapping profiled out, from the Gauss-Newton
matrix at the optimum in its robust ("sandwich") form ``H^-1 (sum_b g_b g_b^T) H^-1`` over blocks ``b``
of 4^3 fixed voxels (``g_b = J_b^T r_b``): residuals correlated within a block (reconstruction noise,
model error) are accounted for; ``covariance_white`` is the textbook ``s^2 H^-1`` for comparison.
Standard deviations: ``rotation_sigma_deg``, ``translation_sigma_nm``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .._validate import as_image, as_mask, check_int, check_number, show
from ..errors import InputError
from ..io import write_json
from ..volume import normalise_voxel_size
from ._modality_fit import (
    TRANSFORMS as _TRANSFORMS,
)
from ._modality_fit import (
    _covariances,
    _gauss_newton,
    _matrix,
    _Model,
    _polar_rotation,
    _positions,
)
from .phi import rotation_vector_deg

log = logging.getLogger(__name__)

__all__ = ["ModalityRegistration", "register_modalities"]

@dataclass(frozen=True, eq=False)
class ModalityRegistration:
    """Result of :func:`register_modalities` (lengths nm, axes (z, y, x)).

    Attributes
    ----------
    matrix : (3, 3) float64
        ``A`` of ``X_m = A (X_f - C) + C + t`` (physical nm; a rotation unless ``transform == "affine"``).
    translation_nm : (3,) float64
        ``t``: where the fixed centre ``C`` lies in the moving volume, minus ``C``.
    rotation_deg : (3,) float64
        Rotation vector of ``A`` (its rotation part for an affine), degrees.
    rotation_sigma_deg, translation_sigma_nm : (3,) float64
        Standard deviations (sandwich covariance, see the module docstring).
    covariance, covariance_white : (p, p) float64
        Covariance of the parameters (rotation vector in rad then translation in nm; affine: ``A`` row by
        row, then ``t``), robust and white-noise forms.
    transform : str
        ``"translation"``, ``"rigid"`` or ``"affine"``.
    fixed_shape : (3,) int
    fixed_voxel_size_nm, moving_voxel_size_nm : (3,) float
    blur_sigma_nm : float
        Gaussian applied to the moving image beyond the box (given or estimated).
    blur_estimated : bool
    knots, mapping : (n_knots,) float64
        The fitted grey-level mapping: moving grey ``knots[j]`` -> fixed value ``mapping[j]``.
    residual : float
        RMS of fixed minus model over the used voxels divided by the std of fixed there.
    n_voxels : int
        Fixed voxels used.
    iterations : int
    converged : bool
    """

    matrix: np.ndarray
    translation_nm: np.ndarray
    rotation_deg: np.ndarray
    rotation_sigma_deg: np.ndarray
    translation_sigma_nm: np.ndarray
    covariance: np.ndarray
    covariance_white: np.ndarray
    transform: str
    fixed_shape: tuple
    fixed_voxel_size_nm: tuple
    moving_voxel_size_nm: tuple
    blur_sigma_nm: float
    blur_estimated: bool
    knots: np.ndarray
    mapping: np.ndarray
    residual: float
    n_voxels: int
    iterations: int
    converged: bool

    @property
    def translation_px(self) -> np.ndarray:
        """``t`` in fixed voxels."""
        return self.translation_nm / np.asarray(self.fixed_voxel_size_nm)

    @property
    def translation_sigma_px(self) -> np.ndarray:
        return self.translation_sigma_nm / np.asarray(self.fixed_voxel_size_nm)

    @property
    def rotation_angle_deg(self) -> float:
        return float(np.linalg.norm(self.rotation_deg))

    def phi(self, *, moving_voxel_size_nm=None) -> np.ndarray:
        """The 4x4 Phi about the fixed centre ``(shape - 1) / 2`` mapping fixed voxel coordinates to moving ones.

        ``moving_voxel_size_nm``: voxel of the moving grid to express it on (default the moving volume's;
        give the fixed voxel size for the moving volume resampled onto it, same first corner, as
        :func:`tomo4d.neutron.align_modalities` does).  ``apply_phi(moving_on_that_grid, phi)`` then
        reproduces the fixed volume's geometry.
        """
        vf = np.asarray(self.fixed_voxel_size_nm)
        vm = np.asarray(self.moving_voxel_size_nm if moving_voxel_size_nm is None
                        else normalise_voxel_size(moving_voxel_size_nm), float)
        c = (np.asarray(self.fixed_shape, float) - 1.0) / 2.0
        C = (c + 0.5) * vf
        out = np.eye(4)
        out[:3, :3] = np.diag(1.0 / vm) @ self.matrix @ np.diag(vf)
        out[:3, 3] = (C + self.translation_nm) / vm - 0.5 - c
        return out

    def to_dict(self) -> dict:
        """JSON-serialisable summary."""
        d = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}
        d.update(fixed_shape=[int(v) for v in self.fixed_shape], method="resolution-model",
                 phi=self.phi().tolist(), translation_px=self.translation_px.tolist(),
                 translation_sigma_px=self.translation_sigma_px.tolist(), rotation_angle_deg=self.rotation_angle_deg)
        return d

    def save(self, path, *, overwrite: bool = False, inputs=()) -> None:
        """Write :meth:`to_dict` as JSON (atomically)."""
        write_json(self.to_dict(), path, overwrite=overwrite, inputs=inputs)

    @classmethod
    def load(cls, path) -> ModalityRegistration:
        """Read a JSON file written by :meth:`save`."""
        try:
            d = json.loads(Path(path).read_text())
            kw = {k: d[k] for k in cls.__dataclass_fields__}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{str(path)!r} is not a tomo4d modality registration JSON ({exc})") from None
        for k in ("matrix", "translation_nm", "rotation_deg", "rotation_sigma_deg", "translation_sigma_nm",
                  "covariance", "covariance_white", "knots", "mapping"):
            kw[k] = np.asarray(kw[k], float)
        for k in ("fixed_shape", "fixed_voxel_size_nm", "moving_voxel_size_nm"):
            kw[k] = tuple(kw[k])
        return cls(**kw)


# -- public -------------------------------------------------------------------------------------------------

def _search_translation(f, smooth, p, transform, X_f_all, C, vm, vf, search_px, mask, mmask):
    """``p`` with its translation corrected by the mutual-information search on the fixed grid, around ``p``."""
    from .multimodal import register_multimodal

    fine = _positions(p, transform, X_f_all, C, vm)
    inside = np.all((fine >= 0) & (fine <= (np.asarray(smooth.shape) - 1)[:, None]), axis=0).reshape(f.shape)
    m_on = ndi.map_coordinates(smooth, fine, order=1, mode="nearest").reshape(f.shape).astype(np.float32)
    valid = inside if mask is None else inside & mask
    if mmask is not None:
        valid &= ndi.map_coordinates(mmask.astype(np.uint8), fine, order=0, mode="constant").reshape(f.shape) > 0
    if valid.sum() < 64:
        raise InputError("the moving volume covers fewer than 64 fixed voxels at the start; give phi0 (the "
                         "approximate transform: where the moving field lies in the fixed one)")
    reg = register_multimodal(f, m_on, search_px=search_px, mask=valid, bins=12)
    q = p.copy()
    q[-3:] += _matrix(p, transform) @ (reg.translation_px * vf)
    return q


def _check_transform(transform):
    if transform not in _TRANSFORMS:
        raise InputError(f"transform={show(transform)} is not known; use one of {', '.join(_TRANSFORMS)}")
    return transform


def _voxel(name, v):
    try:
        return np.asarray(normalise_voxel_size(v), dtype=np.float64)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from None


def _start(phi0, transform, n):
    """Parameters from an initial ``(R or A, t_nm)`` pair."""
    A, t = phi0
    A = np.asarray(A, float)
    if transform == "translation":
        return np.asarray(t, float).copy()
    if transform == "rigid":
        return np.concatenate([np.deg2rad(rotation_vector_deg(A)), t])
    return np.concatenate([(A - np.eye(3)).ravel(), t])


def _knots(m, mmask, moving_labels, n_knots):
    """(labels or None, knots): the label values, or ``n_knots`` grey values over the 0.5-99.5 percentiles."""
    if moving_labels is not None:
        lab = np.asarray(moving_labels)
        if lab.shape != m.shape or not np.issubdtype(lab.dtype, np.integer):
            raise InputError(f"moving_labels has shape {lab.shape} and dtype {lab.dtype}; give integer labels of "
                             f"the moving volume's shape {m.shape}")
        knots = np.unique(lab if mmask is None else lab[mmask]).astype(np.float64)
        if not 2 <= knots.size <= 32:
            raise InputError(f"moving_labels has {knots.size} distinct labels; give 2..32 phases")
        return lab, knots
    lo, hi = np.percentile(m if mmask is None else m[mmask], [0.5, 99.5])
    if not hi > lo:
        raise InputError("moving has (nearly) constant grey values; nothing to register")
    return None, np.linspace(lo, hi, n_knots)


def register_modalities(fixed, moving, *, fixed_voxel_size_nm, moving_voxel_size_nm, transform: str = "rigid",
                        fixed_psf_sigma_nm: float | None = None, moving_psf_sigma_nm: float = 0.0,
                        n_knots: int = 12, moving_labels=None, phi0=None, search_px: float = 6.0, mask=None,
                        moving_mask=None,
                        margin_px: int = 1,
                        max_iterations: int = 40, tolerance_px: float = 1e-3) -> ModalityRegistration:
    """Register a sharp modality (``moving``, e.g. X-ray) onto a coarse one (``fixed``, e.g. neutron).

    The coarse image is predicted from the sharp one through a fitted grey-level mapping, the coarse
    voxel's box and the extra Gaussian blur of the coarse instrument, and the rigid (or affine, or
    translation) transform minimises the squared difference; see the module docstring for the model,
    the fit and the uncertainty (a robust covariance from the Gauss-Newton matrix).

    Parameters
    ----------
    fixed : (z, y, x) array or Volume
        The coarse modality (larger voxel and/or blur).
    moving : (z, y, x) array or Volume
        The sharp modality, any grey-level relation to ``fixed`` (non-monotonic allowed).
    fixed_voxel_size_nm, moving_voxel_size_nm : float or (z, y, x)
        Voxel sizes, nm.  Positions are nm from each volume's first voxel corner.
    transform : {"rigid", "affine", "translation"}
    fixed_psf_sigma_nm : float, optional
        Gaussian PSF of the coarse instrument beyond its voxel box, nm; None: the extra blur is estimated
        (golden-section search of the residual, about ten times the cost).
    moving_psf_sigma_nm : float
        Gaussian PSF of the sharp image beyond its voxel box, nm (subtracted from the extra blur).
    n_knots : int
        Knots of the piecewise-linear grey-level mapping (4..64).
    moving_labels : (z, y, x) int array, optional
        Phase labels of the moving volume (e.g. its segmentation): the fixed image is then modelled as a
        linear combination of the blurred phase fractions (one value per phase, ``knots`` = the label
        values), which is exact for attenuation-like contrasts and avoids the grey-level mapping's
        ambiguity at interfaces (a partial-volume grey equal to a third phase's).  At most 32 labels.
    phi0 : (3, 3) matrix and (3,) translation nm, optional
        Start ``(A, t)`` of ``X_m = A (X_f - C) + C + t`` (e.g. where the moving field lies in the fixed
        one); None: identity (the first corners together).
    search_px : float
        The translation is first searched by mutual information within +- this many fixed voxels of the
        start (0: no search).
    mask : (z, y, x) bool array, optional
        Fixed voxels to use.
    moving_mask : (z, y, x) bool array, optional
        Moving voxels that hold data (e.g. inside the reconstructed cylinder); fixed voxels whose model
        would draw on the others are not used.
    margin_px : int
        Fixed voxels this close to the fixed volume's border are not used (its own edge effects).
    max_iterations, tolerance_px
        Gauss-Newton stop: an update moving the field's edge by less than ``tolerance_px`` fixed voxels.

    Returns
    -------
    ModalityRegistration
        Transform, its uncertainty, the fitted mapping and blur; :meth:`ModalityRegistration.phi` gives the
        voxel Phi (fixed -> moving).
    """
    f = as_image(fixed, name="fixed").astype(np.float64)
    m = as_image(moving, name="moving")
    vf = _voxel("fixed_voxel_size_nm", fixed_voxel_size_nm)
    vm = _voxel("moving_voxel_size_nm", moving_voxel_size_nm)
    transform = _check_transform(transform)
    n_knots = check_int("n_knots", n_knots, minimum=4, maximum=64)
    moving_psf_sigma_nm = check_number("moving_psf_sigma_nm", moving_psf_sigma_nm, minimum=0.0)
    if fixed_psf_sigma_nm is not None:
        fixed_psf_sigma_nm = check_number("fixed_psf_sigma_nm", fixed_psf_sigma_nm, minimum=0.0)
    search_px = check_number("search_px", search_px, minimum=0.0)
    margin_px = check_int("margin_px", margin_px, minimum=0)
    max_iterations = check_int("max_iterations", max_iterations, minimum=1)
    tolerance_px = check_number("tolerance_px", tolerance_px, minimum=0.0, exclusive_minimum=True)
    msk = as_mask(mask, f.shape)
    mmask = as_mask(moving_mask, m.shape, name="moving_mask") if moving_mask is not None else None
    if min(f.shape) < 2 * margin_px + 4:
        raise InputError(f"fixed has shape {f.shape}: too small to register (at least {2 * margin_px + 4} voxels "
                         "per axis)")
    lab, knots = _knots(m, mmask, moving_labels, n_knots)
    # the moving image's own box: the extra Gaussian is what the coarse PSF adds beyond it
    own = moving_psf_sigma_nm ** 2 + float(np.mean(vm)) ** 2 / 12.0

    def blur_for(psf):
        return math.sqrt(max(psf ** 2 - own, 0.0))

    idx = np.indices(f.shape).reshape(3, -1)
    keep = np.all((idx >= margin_px) & (idx <= (np.asarray(f.shape) - 1 - margin_px)[:, None]), axis=0)
    if msk is not None:
        keep &= msk.ravel()
    idx = idx[:, keep]
    X_f = (idx + 0.5) * vf[:, None]
    f_vals = f.ravel()[keep]
    C = np.asarray(f.shape) * vf / 2.0
    radius_nm = float(np.max(np.abs(X_f - C[:, None])))
    blur0 = blur_for(fixed_psf_sigma_nm if fixed_psf_sigma_nm is not None else float(np.mean(vf)))
    try:
        p = _start((np.eye(3), np.zeros(3)) if phi0 is None else phi0, transform, 0)
    except (TypeError, ValueError):
        raise InputError(f"phi0={show(phi0)} must be a pair ((3, 3) matrix, (3,) translation in nm)") from None
    model = _Model(m, vm, vf, knots, blur0, mmask, lab)
    if search_px > 0:
        filled = m if mmask is None else np.where(mmask, m, np.float32(np.median(m[mmask])))
        smooth = ndi.gaussian_filter(filled, model.sigma + vf / vm / 2.5, mode="nearest")
        X_all = (np.indices(f.shape).reshape(3, -1) + 0.5) * vf[:, None]
        p = _search_translation(f.astype(np.float32), smooth, p, transform, X_all, C, vm, vf, search_px, msk, mmask)
    kw = dict(max_iterations=max_iterations, tolerance_px=tolerance_px, vf=vf, radius_nm=radius_nm)
    p, c, used, it, conv = _gauss_newton(model, f_vals, X_f, C, vm, p, transform, **kw)
    blur = blur0
    if fixed_psf_sigma_nm is None:
        blur, model, p, c, used, it, conv = _estimate_blur(m, vm, vf, knots, mmask, lab, f_vals, X_f, C, p,
                                                           transform, kw, it)
    cov, white, rms = _covariances(model, f_vals, X_f, C, vm, p, c, used, transform, vf, radius_nm, idx)
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    A = _matrix(p, transform)
    rot = rotation_vector_deg(A) if transform != "affine" else rotation_vector_deg(_polar_rotation(A))
    rot_sd = np.rad2deg(sd[:3]) if transform == "rigid" else np.full(3, np.nan if transform == "affine" else 0.0)
    std = float(np.std(f_vals[used])) or 1.0
    return ModalityRegistration(
        matrix=A, translation_nm=p[-3:].copy(), rotation_deg=np.asarray(rot, float), rotation_sigma_deg=rot_sd,
        translation_sigma_nm=sd[-3:], covariance=cov, covariance_white=white, transform=transform,
        fixed_shape=tuple(int(v) for v in f.shape), fixed_voxel_size_nm=tuple(float(v) for v in vf),
        moving_voxel_size_nm=tuple(float(v) for v in vm), blur_sigma_nm=float(blur),
        blur_estimated=fixed_psf_sigma_nm is None, knots=knots, mapping=np.asarray(c, float), residual=rms / std,
        n_voxels=int(used.sum()), iterations=int(it), converged=bool(conv))


def _estimate_blur(m, vm, vf, knots, mmask, lab, f_vals, X_f, C, p, transform, kw, it):
    """Golden-section search of the extra blur sigma (nm) in [0, 2 v_f] on the residual at the optimum."""
    state = {}

    def cost(s):
        model = _Model(m, vm, vf, knots, s, mmask, lab)
        q, c, used, n_it, conv = _gauss_newton(model, f_vals, X_f, C, vm, state.get("p", p), transform, **kw)
        A = model.sample(_positions(q, transform, X_f[:, used], C, vm))
        r = f_vals[used] - A @ c
        val = float(np.mean(r * r))
        state[s] = (val, model, q, c, used, n_it, conv)
        return val

    a, b = 0.0, 2.0 * float(np.mean(vf))
    g = (math.sqrt(5) - 1) / 2
    x1, x2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = cost(x1), cost(x2)
    for _ in range(8):
        if f1 < f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - g * (b - a)
            f1 = cost(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + g * (b - a)
            f2 = cost(x2)
    best = min((k for k in state if not isinstance(k, str)), key=lambda k: state[k][0])
    _, model, q, c, used, n_it, conv = state[best]
    log.debug("modalities: extra blur estimated %.0f nm", best)
    return best, model, q, c, used, it + n_it, conv
