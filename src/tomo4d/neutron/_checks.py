"""Input validation shared by the neutron modules (every check raises :class:`InputError`)."""

from __future__ import annotations

import numpy as np

from .._validate import check_number
from ..errors import InputError


def as_wavelength(wavelength_angstrom, *, name: str = "wavelength_angstrom", min_points: int = 2) -> np.ndarray:
    """A 1D float64 array of strictly increasing, positive, finite wavelengths in Å."""
    w = np.asarray(wavelength_angstrom, dtype=np.float64)
    if w.ndim != 1:
        raise InputError(f"{name} has shape {w.shape}; give a 1D array of wavelengths in Å")
    if w.size < min_points:
        raise InputError(f"{name} has {w.size} values; at least {min_points} are needed")
    if not np.all(np.isfinite(w)):
        raise InputError(f"{name} contains NaN or infinite values; remove those bins")
    if np.any(w <= 0):
        raise InputError(f"{name} contains values <= 0 (min {w.min():g}); wavelengths are positive, in Å")
    d = np.diff(w)
    if np.any(d <= 0):
        i = int(np.argmax(d <= 0))
        raise InputError(
            f"{name} is not strictly increasing (value {w[i + 1]:g} after {w[i]:g} at index {i + 1}); "
            "sort the spectrum by wavelength and merge duplicate bins"
        )
    return w


def as_attenuation(mu_per_cm, n_wavelength: int) -> np.ndarray:
    """``mu_per_cm`` attenuation spectra (:func:`as_spectra`, NaN bins allowed: masked); infinite values
    (zero transmission) refused."""
    mu = as_spectra(mu_per_cm, n_wavelength, name="mu_per_cm", allow_nan=True)
    if np.any(np.isinf(mu)):
        raise InputError("mu_per_cm contains infinite values (zero transmission?); clip the transmission first")
    return mu


def as_spectra(values, n_wavelength: int, *, name: str, allow_nan: bool = False) -> np.ndarray:
    """Spectra as float64 with the wavelength on the last axis, length ``n_wavelength``."""
    a = np.asarray(values, dtype=np.float64)
    if a.ndim < 1 or a.shape[-1] != n_wavelength:
        raise InputError(
            f"{name} has shape {a.shape} but the wavelength axis has {n_wavelength} values; "
            "spectra need the wavelength as their LAST axis (use numpy.moveaxis)"
        )
    if not allow_nan and not np.all(np.isfinite(a)):
        raise InputError(f"{name} contains NaN or infinite values; remove or mask those bins")
    return a


def as_sigma(sigma, shape, *, name: str = "sigma") -> np.ndarray | None:
    """Positive standard deviations broadcast to ``shape`` (or None)."""
    if sigma is None:
        return None
    s = np.asarray(sigma, dtype=np.float64)
    try:
        s = np.broadcast_to(s, shape)
    except ValueError:
        raise InputError(f"{name} has shape {s.shape}, which does not match the data shape {tuple(shape)}") from None
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InputError(f"{name} must contain finite values > 0 (standard deviations); fix or drop those bins")
    return s


def check_transmission(t: np.ndarray, *, name: str = "transmission") -> None:
    """Transmission must be finite and >= 0 (it may exceed 1 through noise)."""
    if not np.all(np.isfinite(t)):
        raise InputError(f"{name} contains NaN or infinite values; check the open-beam normalisation")
    if np.any(t < 0):
        n = int(np.count_nonzero(t < 0))
        raise InputError(
            f"{name} has {n} negative value(s) (min {float(t.min()):.4g}); transmission is I/I0 >= 0: "
            "subtract the dark field only once and check the open beam"
        )


def positive_float(name: str, value, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (>= 0 with ``allow_zero``); strings, booleans and NaN are refused."""
    return check_number(name, value, minimum=0.0, exclusive_minimum=not allow_zero)


def fraction(name: str, value) -> float:
    """``value`` as a float in [0, 1] (e.g. 0.0759 for natural Li)."""
    return check_number(name, value, minimum=0.0, maximum=1.0)
