"""Wavelength-resolved (time-of-flight) data: TOF to wavelength, rebinning, region and macro-pixel spectra.

A neutron of wavelength ``lambda`` travels at ``v = h / (m_n lambda)``, so over
a flight path ``L`` it arrives ``t = L m_n lambda / h`` after the pulse:
``lambda[Å] = h / m_n * (t - t0) / L = 3956.03 [Å m/s] * (t[s] - t0[s]) / L[m]``,
with ``t0`` the time offset of the pulse/trigger.  ``h / m_n`` is taken from
CODATA (:mod:`scipy.constants`).

Spectra always carry the wavelength on their LAST axis: one spectrum ``(n,)``,
region spectra ``(n_regions, n)``, macro-pixel spectra ``(ny, nx, n)``.  A
wavelength-resolved image stack read as ``(n, y, x)`` is accepted with
``wavelength_axis=0``.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validate import as_numbers, check_number, show
from ..errors import FormatError, InputError, check_choice
from ._checks import as_sigma, as_spectra, as_wavelength

log = logging.getLogger(__name__)

__all__ = ["H_OVER_MN_ANGSTROM_M_PER_S", "tof_to_wavelength", "wavelength_to_tof", "Spectra", "rebin_spectra",
           "region_spectra", "macro_pixel_spectra", "read_spectrum_csv"]


def _h_over_mn() -> float:
    from scipy import constants

    return constants.h / constants.physical_constants["neutron mass"][0] * 1e10


#: Planck constant over neutron mass, Å m / s (3956.03...).
H_OVER_MN_ANGSTROM_M_PER_S = _h_over_mn()


def tof_to_wavelength(tof_s, *, flight_path_m: float, delay_us: float = 0.0, offset_s: float = 0.0) -> np.ndarray:
    """Neutron wavelength, Å, from time of flight ``tof_s`` (s): ``h (t - t0) / (m_n L)``.

    ``t0 = delay_us * 1e-6 + offset_s`` (the trigger delay in microseconds, or an offset in seconds).
    For counts per ToF bin numbered 1..n with a bin width see :func:`tomo4d.neutron.tof_bin_wavelengths`.

    Parameters
    ----------
    tof_s : array
        Times of flight, s (after the source pulse or trigger).
    flight_path_m : float
        Source (moderator/chopper) to detector distance ``L``, m.
    delay_us : float
        Trigger delay subtracted from every time, microseconds.
    offset_s : float
        Further time offset subtracted from every time, s.
    """
    L = check_number("flight_path_m", flight_path_m, minimum=0, exclusive_minimum=True)
    t0 = check_number("offset_s", offset_s) + 1e-6 * check_number("delay_us", delay_us)
    t = as_numbers("tof_s", tof_s) - t0
    if not np.all(np.isfinite(t)):
        raise InputError("tof_s contains NaN or infinite values")
    if np.any(t <= 0):
        raise InputError(f"tof_s - delay must be > 0 (min {t.min():.4g} s); check the offset and the time unit "
                         "(seconds)")
    return H_OVER_MN_ANGSTROM_M_PER_S * t / L


def wavelength_to_tof(wavelength_angstrom, *, flight_path_m: float, offset_s: float = 0.0) -> np.ndarray:
    """Inverse of :func:`tof_to_wavelength`: time of flight, s."""
    L = check_number("flight_path_m", flight_path_m, minimum=0, exclusive_minimum=True)
    t0 = check_number("offset_s", offset_s)
    w = as_numbers("wavelength_angstrom", wavelength_angstrom)
    if np.any(~np.isfinite(w)) or np.any(w <= 0):
        raise InputError("wavelength_angstrom must be finite and > 0")
    return w * L / H_OVER_MN_ANGSTROM_M_PER_S + t0


@dataclass(frozen=True)
class Spectra:
    """Spectra on a common wavelength axis.

    Attributes
    ----------
    wavelength_angstrom : (n,) float64
        Bin centres, strictly increasing, Å.
    values : (..., n) float64
        Transmission, attenuation or counts; wavelength on the last axis.
    sigma : (..., n) float64 or None
        Standard uncertainties of ``values``.
    """

    wavelength_angstrom: np.ndarray
    values: np.ndarray
    sigma: np.ndarray | None = None


def rebin_spectra(wavelength_angstrom, values, sigma=None, *, factor: int | None = None, edges_angstrom=None,
                  mode: str = "mean") -> Spectra:
    """Rebin spectra along the wavelength (last) axis.

    Parameters
    ----------
    wavelength_angstrom : (n,) array
        Strictly increasing bin centres, Å.
    values : (..., n) array
        Spectra; wavelength on the last axis.
    sigma : array broadcastable to ``values``, optional
        Standard uncertainties, propagated (independent bins).
    factor : int, optional
        Merge every ``factor`` consecutive bins (a trailing remainder is dropped).
    edges_angstrom : (m + 1,) array, optional
        Explicit new bin edges, Å (alternative to ``factor``); empty new bins are dropped.
    mode : {"mean", "sum"}
        ``"mean"`` for transmission/attenuation, ``"sum"`` for counts.

    Returns
    -------
    Spectra
        New centres (mean wavelength of the merged bins), values and sigma.
    """
    check_choice("mode", mode, ("mean", "sum"))
    w = as_wavelength(wavelength_angstrom)
    v = as_spectra(values, w.size, name="values")
    s = as_sigma(sigma, v.shape)
    if (factor is None) == (edges_angstrom is None):
        raise InputError("give exactly one of factor=... (merge k bins) or edges_angstrom=... (new bin edges)")
    if factor is not None:
        if not isinstance(factor, (int, np.integer)) or factor < 1:
            raise InputError(f"factor={show(factor)} must be an integer >= 1")
        nb = w.size // int(factor)
        if nb < 1:
            raise InputError(f"factor={factor} exceeds the {w.size} wavelength bins")
        groups = np.repeat(np.arange(nb), factor)
        keep = np.arange(nb * factor)
    else:
        e = as_wavelength(edges_angstrom, name="edges_angstrom")
        idx = np.searchsorted(e, w, side="right") - 1
        inside = (idx >= 0) & (idx < e.size - 1)
        keep = np.flatnonzero(inside)
        _, groups = np.unique(idx[keep], return_inverse=True)
        nb = int(groups.max()) + 1 if keep.size else 0
        if nb == 0:
            raise InputError("edges_angstrom do not overlap the wavelengths of the spectra")
    counts = np.bincount(groups, minlength=nb).astype(np.float64)
    M = np.zeros((keep.size, nb))
    M[np.arange(keep.size), groups] = 1.0
    new_w = (w[keep] @ M) / counts
    new_v = v[..., keep] @ M
    new_s = None if s is None else np.sqrt((s[..., keep] ** 2) @ M)
    if mode == "mean":
        new_v = new_v / counts
        if new_s is not None:
            new_s = new_s / counts
    return Spectra(new_w, new_v, new_s)


def _move(cube, wavelength_axis: int) -> np.ndarray:
    a = np.asarray(cube)
    try:
        return np.moveaxis(a, wavelength_axis, -1)
    except np.exceptions.AxisError:
        raise InputError(f"wavelength_axis={wavelength_axis} is out of range for data of shape {a.shape}") from None


def region_spectra(cube, labels, *, wavelength_axis: int = -1, statistic: str = "mean",
                   label_values=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean (or summed) spectrum of each labelled region.

    Parameters
    ----------
    cube : (..., n) array
        Wavelength-resolved images, e.g. ``(y, x, n)`` or ``(z, y, x, n)``.
    labels : int array
        Region labels with the spatial shape of ``cube``; 0 = ignored.
    wavelength_axis : int
        Axis of ``cube`` holding the wavelength (moved last).
    statistic : {"mean", "sum"}
        Mean for transmission/attenuation, sum for counts.
    label_values : sequence of int, optional
        Regions to return, in this order (default: every non-zero label, sorted).

    Returns
    -------
    labels : (k,) int array
        The region labels.
    spectra : (k, n) float64
        One spectrum per region, wavelength last.
    """
    check_choice("statistic", statistic, ("mean", "sum"))
    c = _move(cube, wavelength_axis).astype(np.float64, copy=False)
    lab = np.asarray(labels)
    if lab.shape != c.shape[:-1]:
        raise InputError(f"labels have shape {lab.shape} but the images have spatial shape {c.shape[:-1]}; "
                         "give one label per pixel (check wavelength_axis)")
    if not np.issubdtype(lab.dtype, np.integer):
        raise InputError(f"labels must be integers, got {lab.dtype}")
    values = np.unique(lab[lab != 0]) if label_values is None else np.asarray(label_values, dtype=np.int64)
    if values.size == 0:
        raise InputError("labels contain no region (all zero)")
    flat = c.reshape(-1, c.shape[-1])
    lf = lab.ravel()
    out = np.empty((values.size, c.shape[-1]))
    for i, v in enumerate(values):
        sel = lf == v
        if not sel.any():
            raise InputError(f"label {int(v)} does not occur in labels")
        out[i] = flat[sel].sum(0) if statistic == "sum" else flat[sel].mean(0)
    return values, out


def macro_pixel_spectra(cube, *, size: int, wavelength_axis: int = -1, statistic: str = "sum") -> np.ndarray:
    """Bin ``(y, x, n)`` wavelength-resolved images into macro-pixels of ``size x size`` pixels.

    Counts are summed (``statistic="sum"``, default: sum sample and open-beam counts
    separately, then normalise) or averaged (``"mean"``); a border smaller than
    ``size`` is dropped.  Returns ``(ny // size, nx // size, n)`` float64.
    """
    check_choice("statistic", statistic, ("mean", "sum"))
    c = _move(cube, wavelength_axis).astype(np.float64, copy=False)
    if c.ndim != 3:
        raise InputError(f"macro_pixel_spectra needs (y, x, n_wavelength) data, got shape {c.shape}")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(f"size={show(size)} must be an integer >= 1 (pixels per macro-pixel side)")
    ny, nx = c.shape[0] // size, c.shape[1] // size
    if ny == 0 or nx == 0:
        raise InputError(f"size={size} is larger than the image ({c.shape[0]} x {c.shape[1]} pixels)")
    b = c[:ny * size, :nx * size].reshape(ny, size, nx, size, c.shape[-1])
    return b.sum(axis=(1, 3)) if statistic == "sum" else b.mean(axis=(1, 3))


_W_NAMES = ("wl", "wavelength", "wavelength_angstrom", "lambda", "lam", "lambda_angstrom")
_V_NAMES = ("trans", "transmission", "t", "value", "values", "mu", "attenuation", "y")
_S_NAMES = ("err", "error", "sigma", "std", "dy", "unc", "uncertainty")


def read_spectrum_csv(path) -> Spectra:
    """Read a spectrum from a CSV/whitespace text file: wavelength (Å), value, optional uncertainty.

    Columns are found by header name (``wl``/``wavelength``/``lambda``, ``trans``/
    ``transmission``/``value``/``mu``, ``err``/``sigma``/``error``); a leading unnamed
    index column (as written by pandas) is skipped.  Without a header the columns are
    wavelength, value[, sigma].  Rows must be sorted by increasing wavelength.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"spectrum file {str(p)!r} does not exist; check the path")
    text = p.read_text(errors="replace").splitlines()
    lines = [ln for ln in text if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise FormatError(f"{str(p)!r} is empty")
    delim = "," if "," in lines[0] else None

    def split(ln):
        return next(csv.reader([ln])) if delim else ln.split()

    first = [c.strip() for c in split(lines[0])]

    def isnum(x):
        try:
            float(x)
            return True
        except ValueError:
            return False

    header = None if all(isnum(c) for c in first if c) else [c.lower() for c in first]
    rows = lines[1:] if header is not None else lines
    try:
        data = np.array([[float(c) for c in split(ln) if c.strip() != ""] for ln in rows], dtype=np.float64)
    except ValueError as exc:
        raise FormatError(f"{str(p)!r}: non-numeric value in the data rows ({exc})") from None
    if data.ndim != 2 or data.shape[1] < 2:
        raise FormatError(f"{str(p)!r} needs at least two numeric columns (wavelength in Å, value)")
    if header is not None:
        names = [h for h in header if h]
        if len(names) == data.shape[1] - 1:  # pandas index column without a name
            data = data[:, 1:]
        elif len(header) == data.shape[1] and header[0] in ("", "index", "unnamed: 0"):
            data = data[:, 1:]
            names = header[1:]
        elif len(names) != data.shape[1]:
            raise FormatError(f"{str(p)!r}: {len(names)} column names but {data.shape[1]} data columns")

        def col(cands, required):
            for i, nm in enumerate(names):
                if nm in cands:
                    return i
            if required:
                raise FormatError(f"{str(p)!r}: no column named one of {', '.join(cands)} (found {', '.join(names)})")
            return None

        iw, iv, is_ = col(_W_NAMES, True), col(_V_NAMES, True), col(_S_NAMES, False)
    else:
        iw, iv, is_ = 0, 1, (2 if data.shape[1] > 2 else None)
    w = as_wavelength(data[:, iw], name=f"wavelength column of {p.name}")
    v = data[:, iv]
    s = None if is_ is None else data[:, is_]
    if s is not None and (np.any(~np.isfinite(s)) or np.any(s <= 0)):
        raise InputError(f"uncertainty column of {p.name} must be > 0 everywhere")
    return Spectra(w, v, s)
