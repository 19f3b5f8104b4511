"""Point-spread-function compensation for local DVC at large strain.

Why
---
A scanner blurs what it sees in *its* frame.  Let ``O`` be the reference
object, imaged as ``I0 = G_S * O`` with a Gaussian PSF of covariance ``S``
(px^2, diagonal ``diag(sigma_z^2, sigma_y^2, sigma_x^2)``), and let the sample
deform locally by the affine map ``x = F X + c``.  The deformed scan is
``I1 = G_S * (O o phi^-1)``.  DVC compares ``I1(phi(X))`` with ``I0(X)``;
substituting ``y = phi(X')`` in the convolution,

    I1(phi(X)) = int G_S(F (X - X')) O(X') |det F| dX' = (G_{F^-1 S F^-T} * O)(X),

so, pulled back to the reference, the deformed scan is the object blurred by
covariance ``C1 = F^-1 S F^-T``, not ``C0 = S``: a sample stretched by
``1 + e`` along z looks *sharper* along z by that factor.  ``I1 o phi`` is not
``I0`` for any ``phi`` and the Gauss-Newton optimum is biased (at 10 % strain
and sigma = 2.8 px about 0.1 px and 4e-3 in strain on the phantom).

Correction
----------
Convolve both sides to a common covariance.  With ``D = C0 - C1`` (symmetric)
split into its positive and negative parts by eigen-decomposition,
``D = D+ - D-``, both ``I0`` blurred by ``D-`` and ``I1 o phi`` blurred by ``D+``
(in the reference frame) become ``O`` blurred by ``C0 + D- = C1 + D+``, the
smallest common blur (each eigen-direction gets extra blur only on the side
that is sharper).  A reference-frame blur of the warped image is a blur of the
deformed scan in its own frame by ``F D+ F^T`` (the Gaussian's covariance is
pushed forward by the linear part of ``phi``), so

- the **deformed** volume is blurred by ``Bd = F D+ F^T`` (for an isotropic PSF
  ``Bd = sigma^2 (F F^T - I)+``: along a 10 % stretch ``sigma sqrt(1.1^2 - 1)``),
- the **reference** volume is blurred by ``Br = D-`` (for an isotropic PSF
  ``sigma^2 ((F^T F)^-1 - I)+``: the compressed directions),

both with exact anisotropic Gaussians (Fourier transfer function
``exp(-k^T C k / 2)``), including off-diagonal terms from shear and rotation.
Any Gaussian pre-smoothing of both scans (``smooth_sigma_px``) also acts in the
scanner frame, so ``S`` is the PSF covariance plus the smoothing variance.

``F`` differs from node to node, so nodes are grouped by their pair
``(Bd, Br)`` quantised to ``tolerance_px2`` (px^2); each group is solved with
its own pair of blurred volumes, cropped to the group's windows (battery
strains vary mostly along z, so groups are z-slabs and the crops are thin).
``F`` comes from a first plain correlation (or a coarser pyramid level); its
error moves ``Bd`` by only ``~ 2 sigma^2 dF`` (0.07 px^2 for dF = 4e-3), so
one compensated pass is normally enough.
"""

from __future__ import annotations

import logging

import numpy as np

from .._validate import show
from ..errors import InputError

log = logging.getLogger(__name__)

__all__ = ["psf_covariance", "compensating_blurs", "blur_covariance"]


def psf_covariance(psf_sigma_px, smooth_sigma_px: float = 0.0) -> np.ndarray:
    """The (3, 3) scanner-frame blur covariance (px^2) of a Gaussian PSF plus pre-smoothing.

    ``psf_sigma_px``: one sigma or ``(sigma_z, sigma_y, sigma_x)`` in px.
    """
    s = np.asarray(psf_sigma_px, dtype=float)
    if s.ndim == 0:
        s = np.repeat(s, 3)
    if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise InputError(f"psf_sigma_px={show(psf_sigma_px)} must be one sigma or (z, y, x) sigmas >= 0 in px, "
                         "e.g. the scan's Gaussian PSF sigma / voxel size (140 nm / 50 nm = 2.8)")
    return np.diag(s ** 2 + float(smooth_sigma_px) ** 2)


def compensating_blurs(F: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Extra Gaussian covariances ``(Bd, Br)`` (N, 3, 3) px^2 equalising the blur of the two scans.

    ``Bd`` applies to the deformed volume in its own frame, ``Br`` to the
    reference (see the module docstring): ``Bd = F D+ F^T``, ``Br = D-`` with
    ``D = cov - F^-1 cov F^-T = D+ - D-``.
    """
    F = np.asarray(F, dtype=float).reshape(-1, 3, 3)
    finv = np.linalg.inv(F)
    c1 = finv @ cov @ np.swapaxes(finv, 1, 2)
    d = cov[None] - c1
    d = 0.5 * (d + np.swapaxes(d, 1, 2))
    w, v = np.linalg.eigh(d)
    vt = np.swapaxes(v, 1, 2)
    dplus = (v * np.maximum(w, 0.0)[:, None, :]) @ vt
    dminus = (v * np.maximum(-w, 0.0)[:, None, :]) @ vt
    bd = F @ dplus @ np.swapaxes(F, 1, 2)
    return 0.5 * (bd + np.swapaxes(bd, 1, 2)), dminus


def blur_covariance(image: np.ndarray, cov: np.ndarray, *, pad: int | None = None) -> np.ndarray:
    """Convolve ``image`` with the Gaussian of covariance ``cov`` (3, 3) px^2 (any orientation).

    Exact Gaussian transfer function in Fourier space after mirror padding by
    ``pad`` px (default 4 standard deviations of the largest eigenvalue), so
    there is no wrap-around.  Returns float32; ``cov ~ 0`` returns a copy.
    """
    cov = np.asarray(cov, dtype=float)
    top = float(np.linalg.eigvalsh(cov).max()) if cov.any() else 0.0
    if top < 1e-6:
        return np.array(image, dtype=np.float32, copy=True)
    p = int(np.ceil(4.0 * np.sqrt(top))) + 1 if pad is None else int(pad)
    padded = np.pad(image.astype(np.float32, copy=False), p, mode="symmetric")
    shape = padded.shape
    k = np.meshgrid(*[2 * np.pi * np.fft.fftfreq(n) for n in shape[:2]], 2 * np.pi * np.fft.rfftfreq(shape[2]),
                    indexing="ij", sparse=True)
    q = sum(cov[a, b] * k[a] * k[b] for a in range(3) for b in range(3))
    out = np.fft.irfftn(np.fft.rfftn(padded) * np.exp(-0.5 * q), s=shape, axes=(0, 1, 2))
    return out[p:-p, p:-p, p:-p].astype(np.float32)


def group_nodes(bd: np.ndarray, br: np.ndarray, tolerance_px2: float) -> list[np.ndarray]:
    """Indices of nodes whose ``(Bd, Br)`` fall in the same cell of a ``tolerance_px2`` grid."""
    iu = np.triu_indices(3)
    key = np.concatenate([bd[:, iu[0], iu[1]], br[:, iu[0], iu[1]]], axis=1)
    q = np.round(key / float(tolerance_px2)).astype(np.int64)
    _, inv = np.unique(q, axis=0, return_inverse=True)
    inv = inv.ravel()
    return [np.nonzero(inv == g)[0] for g in range(int(inv.max()) + 1)] if len(inv) else []
