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

from .._array import as_float32, is_lazy, read_only
from .._validate import (
    as_image,
    as_lazy_image,
    as_lazy_mask,
    as_mask,
    check_finite_chunk,
    check_int,
    check_number,
    check_same_shape,
    show,
)
from ..errors import InputError
from .field import DisplacementField

__all__ = ["NOISE_BYTES_PER_VOXEL", "RESIDUAL_BYTES_PER_VOXEL", "ResidualMap", "residual_map", "noise_floor"]


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
    residual_mean, residual_max : float
        Mean and maximum of ``residual`` over the whole volume (grey levels), accumulated slab by slab (so a
        map written into a store need not be read back).
    """

    residual: np.ndarray
    noise_floor: float
    sigma_px: float
    mean_before_floor: float
    fraction_above_floor: float
    residual_mean: float = float("nan")
    residual_max: float = float("nan")

    def __post_init__(self):  # frozen: the map cannot be written through the result (a view, not a second volume)
        if isinstance(self.residual, np.ndarray):
            object.__setattr__(self, "residual", read_only(self.residual, copy=False))

    def to_dict(self) -> dict:
        return {"noise_floor": self.noise_floor, "sigma_px": self.sigma_px,
                "mean_before_floor": self.mean_before_floor, "fraction_above_floor": self.fraction_above_floor,
                "residual_mean": self.residual_mean, "residual_max": self.residual_max}


def noise_floor(scan_a, scan_b, *, sigma_px: float = 2.0, mask=None, statistic: str = "mean",
                chunk_budget_mb: float | None = None) -> float:
    """Noise level of the residual measured from two scans with no change in between.

    Returns the ``statistic`` (``"mean"`` or ``"p95"``) of ``|G_sigma * (b - a)|``, grey levels.  With
    ``chunk_budget_mb`` and scans whose working set exceeds it, the scans (numpy, dask, Zarr, Volume) are read
    slab by slab with the blur's halo (:func:`noise_floor_chunked`: the same blurred values; the mean summed in
    float64, the 95th percentile selected exactly).
    """
    from scipy import ndimage

    from .._chunks import fits_budget, volume_data

    if statistic not in ("mean", "p95"):
        raise InputError(f"statistic={show(statistic)} is not supported; use 'mean' or 'p95'")
    if chunk_budget_mb is not None and not fits_budget(volume_data(scan_a).shape, NOISE_BYTES_PER_VOXEL,
                                                       chunk_budget_mb):
        from ._noise_chunked import noise_floor_chunked

        return noise_floor_chunked(scan_a, scan_b, sigma_px=sigma_px, mask=mask, statistic=statistic,
                                   chunk_budget_mb=chunk_budget_mb)
    a = as_image(scan_a, name="scan_a")
    b = as_image(scan_b, name="scan_b")
    check_same_shape(a, b, ("scan_a", "scan_b"))
    sigma_px = check_number("sigma_px", sigma_px, minimum=0.0)
    m = as_mask(mask, a.shape)
    d = np.abs(ndimage.gaussian_filter(b - a, sigma_px)) if sigma_px > 0 else np.abs(b - a)
    v = d if m is None else d[m]
    if statistic == "mean":
        return float(v.mean())
    return float(np.percentile(v, 95))


#: working memory of :func:`residual_map` per voxel of a slab: the dense displacement and the sampling coordinates
#: (float64, 3 + 3 x 8 B each), the index grids (3 x 8 B), the warped slab, the difference, its blur and the map
#: (float32), with the deformed box and its spline coefficients
RESIDUAL_BYTES_PER_VOXEL = 120

#: working bytes per voxel of :func:`noise_floor` (two float32 scans, their difference and its blur, a mask)
NOISE_BYTES_PER_VOXEL = 17


def residual_map(reference, deformed, field: DisplacementField, *, sigma_px: float = 2.0,
                 noise: float = 0.0, mask=None, order: int = 3, slab: int = 32, out=None,
                 progress: Callable[[int, int], None] | None = None) -> ResidualMap:
    """Grey-level residual after correcting the motion measured by ``field``, slab by slab.

    Parameters
    ----------
    reference, deformed : (z, y, x) array, dask array or Volume
        The volumes the field was measured between (same shape).  Lazy volumes
        (dask over Zarr, HDF5, TIFF) are read slab by slab: a reference slab
        with the blur's halo, and of the deformed volume only the box that the
        slab's warped voxels reach (plus the B-spline's margin).
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
        Slices produced at a time: with ``out`` the peak memory is a few slabs
        (plus their halo and the deformed box), not the volume.
    out : array-like, optional
        Where to write the map, slab by slab (a Zarr or HDF5 dataset, a memmap:
        anything of the volume's shape supporting ``out[z0:z1] = ...``); default
        a new float32 array.  ``ResidualMap.residual`` is ``out``.
    progress : callable(done, total), optional

    Returns
    -------
    ResidualMap
        Equal to the whole-volume computation: exactly but for the B-spline
        coefficients of the deformed box (to float32 rounding).
    """
    ref = as_lazy_image(reference, name="reference")
    dfm = as_lazy_image(deformed, name="deformed")
    check_same_shape(ref, dfm, ("reference", "deformed"))
    shape = tuple(int(v) for v in ref.shape)
    m = as_lazy_mask(mask, shape)
    if not isinstance(field, DisplacementField):
        raise InputError("field must be a DisplacementField (load one with DisplacementField.load)")
    field.check_volume_shape(shape, names="reference and deformed")
    sigma_px = check_number("sigma_px", sigma_px, minimum=0.0)
    noise = check_number("noise", noise, minimum=0.0)
    order = check_int("order", order, minimum=0, maximum=5)
    slab = check_int("slab", slab, minimum=1)
    if out is None:
        out = np.empty(shape, np.float32)
    elif tuple(getattr(out, "shape", ())) != shape:
        raise InputError(f"out has shape {tuple(getattr(out, 'shape', ()))}; give an array of the volumes' shape "
                         f"{shape}")
    halo = int(4.0 * sigma_px + 0.5) if sigma_px > 0 else 0     # scipy's gaussian_filter radius (truncate 4)
    total, above, count, r_sum, r_max = 0.0, 0, 0, 0.0, -np.inf
    nz = shape[0]
    for z0 in range(0, nz, slab):
        z1 = min(z0 + slab, nz)
        a0, a1 = max(z0 - halo, 0), min(z1 + halo, nz)
        diff = _warped_slab(dfm, field, shape, a0, a1, order) - _read(ref, (slice(a0, a1),), "reference", a0)
        d = _blur_abs(diff, sigma_px)[z0 - a0:z0 - a0 + (z1 - z0)]
        v = d if m is None else d[_read(m, (slice(z0, z1),), "mask", z0).astype(bool)]
        total, above, count = total + float(v.sum(dtype=np.float64)), above + int((v > noise).sum()), count + v.size
        r = np.clip(d - np.float32(noise), 0, None).astype(np.float32)
        r_sum, r_max = r_sum + float(r.sum(dtype=np.float64)), max(r_max, float(r.max()))
        out[z0:z1] = r
        if progress is not None:
            progress(z1, nz)
    return ResidualMap(residual=out, noise_floor=float(noise), sigma_px=float(sigma_px),
                       mean_before_floor=total / max(count, 1), fraction_above_floor=above / max(count, 1),
                       residual_mean=r_sum / float(np.prod(shape)), residual_max=r_max)


def _read(source, box, name: str, z0: int) -> np.ndarray:
    """A box of a numpy or lazy volume as numpy float32 (bool stays bool); lazy boxes checked for NaN/Inf."""
    a = source[box]
    if is_lazy(a):
        a = np.asarray(a.compute())
        check_finite_chunk(name, a, z0)
    a = np.asarray(a)
    return a if a.dtype == bool else as_float32(a)


def _blur_abs(diff: np.ndarray, sigma_px: float) -> np.ndarray:
    from scipy import ndimage

    return np.abs(ndimage.gaussian_filter(diff, sigma_px)) if sigma_px > 0 else np.abs(diff)


def _warped_slab(dfm, field: DisplacementField, shape, z0: int, z1: int, order: int) -> np.ndarray:
    """``deformed(x + u(x))`` for the reference slices ``z0 .. z1 - 1``, reading only the box of the deformed
    volume that those points (mirrored into the volume as scipy's ``mirror`` mode does) and the B-spline's
    support and prefilter margin reach."""
    from scipy import ndimage

    from ._batches import SPLINE_MARGIN

    u = field.dense_displacement(shape, z_range=(z0, z1))
    grid = np.meshgrid(np.arange(z0, z1), np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    coords = np.stack([g + du for g, du in zip(grid, u)])
    n = np.asarray(shape, float)[:, None]
    flat = coords.reshape(3, -1)
    # scipy's mirror mode: a point beyond an edge reads the mirror image of the spline, i.e. its value at the
    # mirrored point; sampling at the mirrored points keeps every read inside the volume, so a box edge inside
    # the volume is never a boundary
    mirrored = np.clip(np.where(flat < 0, -flat, np.where(flat > n - 1, 2 * (n - 1) - flat, flat)), 0, n - 1)
    reach = (2 + SPLINE_MARGIN) if order > 1 else 1
    lo = np.maximum(np.floor(mirrored.min(1)) - reach, 0).astype(int)
    hi = np.minimum(np.ceil(mirrored.max(1)) + reach + 1, n[:, 0]).astype(int)
    box = _read(dfm, tuple(slice(a, b) for a, b in zip(lo, hi)), "deformed", int(lo[0]))
    coef = ndimage.spline_filter(box, order=order, output=np.float32, mode="mirror") if order > 1 else box
    local = mirrored.reshape(coords.shape) - lo[:, None, None, None]
    return ndimage.map_coordinates(coef, local, order=order, mode="mirror", prefilter=False)
