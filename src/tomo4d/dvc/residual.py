"""Residual maps: where the measured displacement field does not explain the change.

``residual = |G_sigma * (deformed(x + u(x)) - reference(x))| - noise_floor``,
clipped at 0, in the reference configuration: the deformed volume is pulled
back onto the reference by the measured field (dense displacement from cubic
interpolation of the node displacements), subtracted, blurred with a Gaussian
(sigma 2 voxels by default), made absolute, and the level of the same
quantity between two scans with no change in between (the noise floor) is
removed.  What remains is grey-level change not due to motion, e.g.
lithiation fronts inside particles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._validate import (
    as_image,
    as_mask,
    check_int,
    check_number,
    check_same_shape,
    show,
)
from ..errors import InputError
from .field import DisplacementField

__all__ = ["ResidualMap", "residual_map", "noise_floor"]


@dataclass(frozen=True, eq=False)
class ResidualMap:
    """Result of :func:`residual_map`.

    Attributes
    ----------
    residual : (z, y, x) float32
        Blurred absolute residual minus the noise floor, clipped at 0 (grey levels).
    noise_floor : float
        Subtracted level (grey levels; 0 when none was given).
    sigma_px : float
        Gaussian blur, px.
    mean_before_floor : float
        Mean blurred absolute residual before removing the floor (inside the mask).
    fraction_above_floor : float
        Fraction of (masked) voxels whose residual exceeds the floor.
    """

    residual: np.ndarray
    noise_floor: float
    sigma_px: float
    mean_before_floor: float
    fraction_above_floor: float

    def to_dict(self) -> dict:
        return {"noise_floor": self.noise_floor, "sigma_px": self.sigma_px,
                "mean_before_floor": self.mean_before_floor, "fraction_above_floor": self.fraction_above_floor,
                "residual_mean": float(self.residual.mean()), "residual_max": float(self.residual.max())}


def noise_floor(scan_a, scan_b, *, sigma_px: float = 2.0, mask=None, statistic: str = "mean") -> float:
    """Noise level of the residual measured from two scans with no change in between.

    Returns the ``statistic`` (``"mean"`` or ``"p95"``) of ``|G_sigma * (b - a)|``, grey levels.
    """
    from scipy import ndimage

    a = as_image(scan_a, name="scan_a")
    b = as_image(scan_b, name="scan_b")
    check_same_shape(a, b, ("scan_a", "scan_b"))
    sigma_px = check_number("sigma_px", sigma_px, minimum=0.0)
    m = as_mask(mask, a.shape)
    d = np.abs(ndimage.gaussian_filter(b - a, sigma_px)) if sigma_px > 0 else np.abs(b - a)
    v = d if m is None else d[m]
    if statistic == "mean":
        return float(v.mean())
    if statistic == "p95":
        return float(np.percentile(v, 95))
    raise InputError(f"statistic={show(statistic)} is not supported; use 'mean' or 'p95'")


def residual_map(reference, deformed, field: DisplacementField, *, sigma_px: float = 2.0,
                 noise: float = 0.0, mask=None, order: int = 3, slab: int = 32,
                 progress: Callable[[int, int], None] | None = None) -> ResidualMap:
    """Grey-level residual after correcting the motion measured by ``field``.

    Parameters
    ----------
    reference, deformed : (z, y, x) array or Volume
        The volumes the field was measured between (same shape).
    field : DisplacementField
        Reference -> deformed field on a regular grid.
    sigma_px : float
        Gaussian blur of the difference, px (0: none).
    noise : float
        Noise floor to subtract (e.g. from :func:`noise_floor`), grey levels.
    mask : (z, y, x) bool, optional
        Voxels that count in the summary statistics (the map covers everything).
    order : int
        Interpolation order of ``deformed`` (3 cubic).
    slab : int
        Slices processed at a time (bounds the memory of the dense displacement).
    progress : callable(done, total), optional

    Returns
    -------
    ResidualMap
    """
    from scipy import ndimage

    ref = as_image(reference, name="reference")
    dfm = as_image(deformed, name="deformed")
    check_same_shape(ref, dfm, ("reference", "deformed"))
    m = as_mask(mask, ref.shape)
    if not isinstance(field, DisplacementField):
        raise InputError("field must be a DisplacementField (load one with DisplacementField.load)")
    field.check_volume_shape(ref.shape, names="reference and deformed")
    sigma_px = check_number("sigma_px", sigma_px, minimum=0.0)
    noise = check_number("noise", noise, minimum=0.0)
    order = check_int("order", order, minimum=0, maximum=5)
    slab = check_int("slab", slab, minimum=1)
    coef = ndimage.spline_filter(dfm, order=order, output=np.float32, mode="mirror") if order > 1 else dfm
    warped = np.empty_like(ref)
    nz = ref.shape[0]
    y, x = np.meshgrid(np.arange(ref.shape[1]), np.arange(ref.shape[2]), indexing="ij")
    for z0 in range(0, nz, slab):
        z1 = min(z0 + slab, nz)
        u = field.dense_displacement(ref.shape, z_range=(z0, z1))
        zz = np.arange(z0, z1)[:, None, None] + u[0]
        coords = np.stack([zz, y[None] + u[1], x[None] + u[2]])
        warped[z0:z1] = ndimage.map_coordinates(coef, coords, order=order, mode="mirror", prefilter=False)
        if progress is not None:
            progress(z1, nz)
    diff = warped - ref
    d = np.abs(ndimage.gaussian_filter(diff, sigma_px)) if sigma_px > 0 else np.abs(diff)
    v = d if m is None else d[m]
    res = np.clip(d - np.float32(noise), 0, None).astype(np.float32)
    return ResidualMap(residual=res, noise_floor=float(noise), sigma_px=float(sigma_px),
                       mean_before_floor=float(v.mean()), fraction_above_floor=float((v > noise).mean()))
