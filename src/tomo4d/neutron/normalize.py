"""Open-beam / dark-field normalisation and Beer-Lambert attenuation.

``T = (I - D) / (I0 - D)``, corrected for the beam intensity of each exposure
either by its dose (proton charge, monitor counts, exposure time) or by a
background region of the field of view where no sample is (its transmission is
set to 1).  ``mu = -ln(T) / thickness`` is the linear attenuation coefficient
(Beer-Lambert law); a reconstructed neutron tomogram already is a ``mu`` map.

Arrays: images ``(y, x)``, stacks ``(n, y, x)`` (projections or time steps), or
wavelength-resolved data with the wavelength on the LAST axis.  Open beam and
dark field must have the sample's shape or a shape that broadcasts onto it
(e.g. one ``(y, x)`` open beam for a whole stack).
"""

from __future__ import annotations

import logging

import numpy as np

from .._validate import check_finite, check_number, show
from ..errors import InputError, check_choice
from ._checks import check_transmission

log = logging.getLogger(__name__)

__all__ = ["normalize_transmission", "attenuation_coefficient", "estimate_noise_per_cm", "transmission_sigma"]


def _broadcast(name: str, a: np.ndarray, shape) -> np.ndarray:
    try:
        return np.broadcast_to(a, shape)
    except ValueError:
        raise InputError(f"{name} has shape {a.shape}, which does not match the sample shape {tuple(shape)}; give "
                         "the same shape or one that broadcasts (e.g. one (y, x) image for a (n, y, x) stack)") from None


def _dose_factor(name: str, dose, n_lead: int, ndim: int) -> np.ndarray:
    d = np.asarray(dose, dtype=np.float64)
    if d.ndim > 1:
        raise InputError(f"{name} must be one number or one value per image (1D), got shape {d.shape}")
    if not np.all(np.isfinite(d)) or np.any(d <= 0):
        raise InputError(f"{name} must be > 0 (proton charge, monitor counts or exposure time), got {show(dose)}")
    if d.ndim == 1:
        if d.size != n_lead:
            raise InputError(f"{name} has {d.size} values but the data have {n_lead} images along axis 0")
        return d.reshape((-1,) + (1,) * (ndim - 1))
    return d


def normalize_transmission(sample, open_beam, dark=None, *, sample_dose=None, open_beam_dose=None,
                           background_region=None, invalid: str = "raise") -> np.ndarray:
    """Transmission ``T = (I - D) / (I0 - D)`` with a dose or background-region correction.

    Parameters
    ----------
    sample : array
        Sample counts: ``(y, x)``, ``(n, y, x)`` or ``(..., n_wavelength)`` spectra.
    open_beam : array
        Open-beam (flat-field) counts, same shape or broadcastable (several open beams
        should be averaged first, e.g. by their median).
    dark : array, optional
        Dark-field counts (beam off), same shape or broadcastable.
    sample_dose, open_beam_dose : float or (n,) array, optional
        Beam dose of each exposure (proton charge, monitor counts or exposure time);
        per-image values for a stack.  ``T`` is multiplied by ``open_beam_dose /
        sample_dose``.  Give both or neither.
    background_region : tuple of two slices, optional
        ``(slice_y, slice_x)`` of an area without sample (over the last two axes of
        image data): ``T`` of each image is divided by its mean there.
    invalid : {"raise", "nan"}
        What to do where ``I0 - D <= 0`` (zero open beam): raise, or give NaN there.

    Returns
    -------
    numpy.ndarray (float32)
        Transmission, the sample's shape.
    """
    check_choice("invalid", invalid, ("raise", "nan"))
    s = np.asarray(sample, dtype=np.float64)
    if s.ndim < 1 or s.size == 0:
        raise InputError(f"sample has shape {s.shape}; give an image, a stack or spectra")
    ob = _broadcast("open_beam", np.asarray(open_beam, dtype=np.float64), s.shape)
    dk = 0.0 if dark is None else _broadcast("dark", np.asarray(dark, dtype=np.float64), s.shape)

    for name, a in (("sample", s), ("open_beam", ob), ("dark", dk)):
        check_finite(name, a)
    denom = ob - dk
    bad = denom <= 0
    if np.any(bad):
        n_bad = int(np.count_nonzero(bad))
        if invalid == "raise":
            raise InputError(
                f"open beam minus dark is <= 0 at {n_bad} of {bad.size} pixels (zero open beam); check that the "
                "open beam was recorded with the beam on and the dark field is not larger than it, or pass "
                "invalid='nan' to mask those pixels")
        log.info("open beam <= dark at %d pixels: NaN there", n_bad)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(bad, np.nan, (s - dk) / np.where(bad, 1.0, denom))
    if (sample_dose is None) != (open_beam_dose is None):
        raise InputError("give both sample_dose and open_beam_dose (or neither)")
    if sample_dose is not None:
        n_lead = s.shape[0] if s.ndim > 1 else 1
        t = t * (_dose_factor("open_beam_dose", open_beam_dose, n_lead, s.ndim)
                 / _dose_factor("sample_dose", sample_dose, n_lead, s.ndim))
    if background_region is not None:
        if s.ndim < 2:
            raise InputError("background_region needs image data (at least 2D, (..., y, x))")
        try:
            sy, sx = background_region
            region = t[..., sy, sx]
        except (TypeError, ValueError, IndexError):
            raise InputError(f"background_region={show(background_region)} must be two slices (slice_y, slice_x)") from None
        if region.size == 0:
            raise InputError(f"background_region={show(background_region)} selects no pixels of shape {s.shape[-2:]}")
        ref = np.nanmean(region, axis=(-2, -1), keepdims=True)
        if not np.all(np.isfinite(ref)) or np.any(ref <= 0):
            raise InputError("the background region has no positive transmission; choose an area with open beam")
        t = t / ref
    return t.astype(np.float32)


def transmission_sigma(sample_counts, open_beam_counts, *, dark=None) -> np.ndarray:
    """Poisson standard uncertainty of ``T = I / I0`` from raw counts (float32).

    ``sigma_T = T sqrt(1 / I + 1 / I0)`` (dark counts subtracted from both, assumed noise-free).
    """
    s = np.asarray(sample_counts, dtype=np.float64)
    ob = _broadcast("open_beam_counts", np.asarray(open_beam_counts, dtype=np.float64), s.shape)
    dk = 0.0 if dark is None else _broadcast("dark", np.asarray(dark, dtype=np.float64), s.shape)
    i, i0 = s - dk, ob - dk
    if np.any(i0 <= 0):
        raise InputError("open_beam_counts minus dark is <= 0 somewhere (zero open beam); cannot estimate noise")
    i = np.maximum(i, 1.0)
    return ((i / i0) * np.sqrt(1.0 / i + 1.0 / i0)).astype(np.float32)


def attenuation_coefficient(transmission, *, thickness_cm: float, min_transmission: float = 1e-6) -> np.ndarray:
    """Linear attenuation coefficient ``mu = -ln(T) / thickness``, 1/cm (float32).

    Parameters
    ----------
    transmission : array
        ``T >= 0`` (values above 1 from noise are kept and give negative ``mu``).
    thickness_cm : float
        Traversed thickness, cm.
    min_transmission : float
        ``T`` is clipped from below at this value (opaque pixels) before the logarithm.
    """
    t = np.asarray(transmission, dtype=np.float64)
    check_transmission(t)
    d = check_number("thickness_cm (--thickness-cm)", thickness_cm, minimum=0, exclusive_minimum=True)
    floor = check_number("min_transmission", min_transmission, minimum=0, maximum=1, exclusive_minimum=True)
    n_clip = int(np.count_nonzero(t < floor))
    if n_clip:
        log.info("%d transmission values below %g clipped (opaque)", n_clip, floor)
    return (-np.log(np.maximum(t, floor)) / d).astype(np.float32)


def estimate_noise_per_cm(mu) -> float:
    """Standard deviation of the voxel noise of an attenuation volume (1/cm), from neighbour differences.

    White noise of standard deviation ``s`` gives differences of neighbouring voxels of standard
    deviation ``s sqrt(2)``; the spread is measured robustly along each axis (1.4826 x the median
    absolute deviation), so that the few differences across phase boundaries do not count, and the
    median of the three axes is kept (a layered cell's layers disturb only the differences across
    them).  Smooth structure (blurred by the neutron PSF) adds little; structure finer than a voxel
    along every axis adds to the estimate (an upper bound then).

    Parameters
    ----------
    mu : (z, y, x) array
        Attenuation coefficients (e.g. a reconstructed neutron tomogram), 1/cm; every axis >= 2.

    Returns
    -------
    float
    """
    m = np.asarray(mu, dtype=np.float64)
    if m.ndim != 3 or min(m.shape) < 2:
        raise InputError(f"mu has shape {m.shape}; give a (z, y, x) volume at least 2 voxels along every axis")
    if not np.all(np.isfinite(m)):
        raise InputError("mu contains NaN or infinite values; fill them first (e.g. numpy.nan_to_num)")
    per_axis = []
    for a in range(3):
        d = np.diff(m, axis=a).ravel()
        per_axis.append(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))
    return float(np.median(per_axis))
