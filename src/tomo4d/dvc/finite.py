"""Finite-strain measures of deformation gradients ``F`` (``(..., 3, 3)``, (z, y, x) order, dimensionless).

Silicon anodes expand by 10-60 %: there the small-strain tensor ``e = (H + H^T) / 2``
(``H = F - I``) is wrong by ``~|H|^2 / 2`` (a 50 % uniaxial stretch gives ``e_zz = 0.5``,
Hencky ``ln 1.5 = 0.405``, Green-Lagrange ``0.625``) and a rigid rotation of 30 deg shows
``e = cos 30 - 1 = -0.13`` where nothing is strained.  Reported measures:

- volumetric strain ``J - 1 = det F - 1``: exact relative volume change,
- Green-Lagrange ``E = (F^T F - I) / 2``,
- Hencky (logarithmic) ``ln U = 1/2 ln(F^T F)``: ``C = F^T F = V diag(lambda^2) V^T`` gives
  ``ln U = V diag(ln lambda) V^T``; its trace is ``ln J``, and for a uniaxial stretch
  ``lambda`` its axial component is ``ln lambda`` (additive over successive stretches),
- principal stretches ``lambda_1 >= lambda_2 >= lambda_3`` (square roots of the eigenvalues of
  ``C``) with their directions in the reference configuration (eigenvectors of ``C``),
- the small-strain tensor ``e``, valid only where ``|H| << 1`` (first order in ``H``).

All three strain tensors vanish for a rigid rotation except ``e``.  Non-finite ``F`` and
``det F <= 0`` (inverted material: a failed measurement) give NaN Hencky strains and stretches.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["small_strain", "green_lagrange", "principal_stretches", "hencky", "equivalent_strain",
           "volumetric_strain"]


def _as_F(F) -> np.ndarray:
    a = np.asarray(F, dtype=np.float64)
    if a.ndim < 2 or a.shape[-2:] != (3, 3):
        raise InputError(f"a deformation gradient array must have shape (..., 3, 3), got {a.shape}")
    return a


def small_strain(F) -> np.ndarray:
    """``e = (H + H^T) / 2`` with ``H = F - I``; valid only for small strains (first order in ``H``)."""
    H = _as_F(F) - np.eye(3)
    return 0.5 * (H + np.swapaxes(H, -1, -2))


def green_lagrange(F) -> np.ndarray:
    """``E = (F^T F - I) / 2`` (reference configuration)."""
    F = _as_F(F)
    return 0.5 * (np.swapaxes(F, -1, -2) @ F - np.eye(3))


def volumetric_strain(F) -> np.ndarray:
    """``det F - 1`` (exact relative volume change), shape ``F.shape[:-2]``."""
    return np.linalg.det(_as_F(F)) - 1.0


def principal_stretches(F) -> tuple[np.ndarray, np.ndarray]:
    """Principal stretches and their reference-frame directions.

    Returns
    -------
    stretches : (..., 3) float64
        ``lambda_1 >= lambda_2 >= lambda_3`` (1 = unstretched).
    directions : (..., 3, 3) float64
        ``directions[..., :, k]`` is the unit (z, y, x) direction of ``lambda_k`` in the reference
        (eigenvector of ``F^T F``; its sign is arbitrary).
    """
    F = _as_F(F)
    lead = F.shape[:-2]
    flat = F.reshape(-1, 3, 3)
    lam = np.full((len(flat), 3), np.nan)
    vec = np.full((len(flat), 3, 3), np.nan)
    ok = np.all(np.isfinite(flat), axis=(1, 2))
    ok[ok] = np.linalg.det(flat[ok]) > 0
    if ok.any():
        f = flat[ok]
        w, v = np.linalg.eigh(np.swapaxes(f, -1, -2) @ f)  # ascending
        lam[ok] = np.sqrt(np.maximum(w[:, ::-1], 0.0))
        vec[ok] = v[:, :, ::-1]
    return lam.reshape(lead + (3,)), vec.reshape(lead + (3, 3))


def hencky(F, *, stretches=None) -> np.ndarray:
    """Logarithmic strain ``ln U = 1/2 ln(F^T F)`` (reference frame), ``(..., 3, 3)``.

    ``stretches``: the result of :func:`principal_stretches` for ``F`` when already computed.
    """
    lam, vec = principal_stretches(F) if stretches is None else stretches
    return np.einsum("...ik,...k,...jk->...ij", vec, np.log(lam), vec)


def equivalent_strain(eps) -> np.ndarray:
    """von Mises equivalent strain ``sqrt(2/3 dev(eps) : dev(eps))`` of strain tensors ``(..., 3, 3)``."""
    eps = _as_F(eps)
    dev = eps - np.trace(eps, axis1=-2, axis2=-1)[..., None, None] / 3.0 * np.eye(3)
    return np.sqrt(2.0 / 3.0 * np.sum(dev * dev, axis=(-1, -2)))
