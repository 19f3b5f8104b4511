"""Raw time-of-flight counts to transmission: ToF bins to wavelength, open-beam/dark normalisation with
Poisson errors, overlap (dead-time) correction, event lists histogrammed to ToF stacks.

What an imaging beamline hands out is counts per ToF bin: a spectrum (CSV: bin number, counts[, err]),
a histogrammed stack (one image per ToF bin: a TIFF folder, read by :func:`tomo4d.io.open_volume`) or an
event list (x, y, time of flight; NeXus ``NXevent_data``).  Bin ``k`` (numbered from ``first_bin``) is
recorded ``t_k = k * bin_width`` after the trigger; its wavelength is
``lambda_k = h / m_n * (t_k - delay) / L`` (:func:`tof_bin_wavelengths`).  The transmission of sample
counts ``I`` against open-beam counts ``I0`` (dark ``D``, doses ``q``) is
``T = (I - D) / (I0 - D) * q0 / q`` with ``sigma_T = T sqrt(I / (I - D)^2 + I0 / (I0 - D)^2)``
(Poisson counts; the dark taken as exact).  Open-beam bins with ``I0 - D <= 0`` are masked (NaN) and
counted, never divided by.

Event-mode (Timepix/MCP) detectors miss events in a pixel that already fired in the same shutter window;
:func:`overlap_correction` undoes that (Tremsin et al. 2014): ``N_k / (1 - sum_{j<k} N_j / n_triggers)``.

References
----------
A. S. Tremsin, J. V. Vallerga, J. B. McPhate, O. H. W. Siegmund, "Optimization of Timepix count rate
capabilities for the applications with a periodic input signal", J. Instrum. 9 (2014) C05026.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validate import check_number, show
from ..errors import FormatError, InputError
from .spectra import H_OVER_MN_ANGSTROM_M_PER_S

log = logging.getLogger(__name__)

__all__ = ["tof_bin_wavelengths", "wavelength_range_warnings", "TofCounts", "read_tof_counts_csv",
           "overlap_correction", "TofTransmission", "normalize_tof_counts", "histogram_events",
           "WAVELENGTH_RANGE_ANGSTROM", "raw_transmission_spectrum"]

#: Wavelengths outside this range (Å) mean a wrong flight path, bin width or delay (warned, with the range).
WAVELENGTH_RANGE_ANGSTROM = (0.1, 20.0)


def tof_bin_wavelengths(bins, *, flight_path_m: float, bin_width_us: float, delay_us: float = 0.0) -> np.ndarray:
    """Wavelength (Å) of ToF bins numbered ``bins``: ``h / m_n * (k * bin_width - delay) / L``.

    Parameters
    ----------
    bins : array of numbers, or int
        Bin numbers ``k`` as the data number them (e.g. the ``stack`` column 1..2400); an int ``n``
        means ``1..n``.
    flight_path_m : float
        Source (moderator or chopper) to detector distance ``L``, m.
    bin_width_us : float
        Width of one ToF bin, microseconds.
    delay_us : float
        Trigger delay subtracted from every time, microseconds (0: bins counted from the pulse).
    """
    L = check_number("flight_path_m (--flight-path)", flight_path_m, minimum=0, exclusive_minimum=True)
    w = check_number("bin_width_us (--bin-width)", bin_width_us, minimum=0, exclusive_minimum=True)
    d = check_number("delay_us (--delay)", delay_us)
    k = np.arange(1, int(bins) + 1, dtype=np.float64) if np.ndim(bins) == 0 else np.asarray(bins, np.float64)
    t = (k * w - d) * 1e-6
    if np.any(t <= 0):
        raise InputError(f"delay_us={d:g} is not below the first bin's time {k.min() * w:g} us; ToF minus delay "
                         "must be > 0 (check --delay and the bin numbering)")
    return H_OVER_MN_ANGSTROM_M_PER_S * t / L


def wavelength_range_warnings(wavelength_angstrom, *, what: str = "the spectrum") -> list[str]:
    """A warning (one string) if more than 5 % of the wavelengths leave :data:`WAVELENGTH_RANGE_ANGSTROM`."""
    w = np.asarray(wavelength_angstrom, dtype=np.float64)
    lo, hi = WAVELENGTH_RANGE_ANGSTROM
    n_out = int(np.count_nonzero((w < lo) | (w > hi)))
    if n_out <= 0.05 * w.size:  # a few bins before the pulse's useful range: dropped, no warning
        if n_out:
            log.info("%d of %d ToF bins outside %g..%g Å", n_out, w.size, lo, hi)
        return []
    msg = (f"{what} spans {w.min():.4g}..{w.max():.4g} Å: {n_out} of {w.size} bins lie outside {lo:g}..{hi:g} Å "
           "(dropped); check the flight path, bin width and delay")
    log.info(msg)
    return [msg]


@dataclass(frozen=True)
class TofCounts:
    """Counts per ToF bin: ``bins`` (bin numbers), ``counts`` (``(..., n)``), ``sigma`` (or None)."""

    bins: np.ndarray
    counts: np.ndarray
    sigma: np.ndarray | None = None


_BIN_NAMES = ("stack", "bin", "bins", "channel", "tof_bin", "index", "k")
_COUNT_NAMES = ("counts", "count", "n", "intensity", "events")
_ERR_NAMES = ("err", "error", "sigma", "std", "unc")


def read_tof_counts_csv(path) -> TofCounts:
    """Counts per ToF bin from a CSV: columns ``stack``/``bin``/``channel`` and ``counts`` (optional ``err``).

    A leading unnamed index column (pandas) is skipped; without a header the columns are bin, counts[, err].
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"ToF counts file {str(p)!r} does not exist; check the path")
    lines = [ln for ln in p.read_text(errors="replace").splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) < 2:
        raise FormatError(f"{str(p)!r} holds no ToF counts (need a bin and a counts column)")
    sep = "," if "," in lines[0] else None
    head = [c.strip().lower() for c in lines[0].split(sep)]
    try:
        [float(c) for c in head if c]
        header = None
    except ValueError:
        header = head
    rows = lines[1:] if header else lines
    try:
        data = np.array([[float(c) for c in ln.split(sep) if c.strip()] for ln in rows], dtype=np.float64)
    except ValueError as exc:
        raise FormatError(f"{str(p)!r}: non-numeric value in the data rows ({exc})") from None
    if data.ndim != 2 or data.shape[1] < 2:
        raise FormatError(f"{str(p)!r} needs two numeric columns (ToF bin, counts)")
    if header is None:
        ib, ic, ie = 0, 1, (2 if data.shape[1] > 2 else None)
    else:
        if len(header) == data.shape[1] and header[0] in ("", "index", "unnamed: 0"):
            header, data = header[1:], data[:, 1:]
        names = [h for h in header if h]
        if len(names) != data.shape[1]:
            raise FormatError(f"{str(p)!r}: {len(names)} column names but {data.shape[1]} data columns")

        def col(cands):
            return next((i for i, n in enumerate(names) if n in cands), None)

        ib, ic, ie = col(_BIN_NAMES), col(_COUNT_NAMES), col(_ERR_NAMES)
        if ib is None or ic is None:
            raise FormatError(f"{str(p)!r}: need a bin column ({', '.join(_BIN_NAMES)}) and a counts column "
                              f"({', '.join(_COUNT_NAMES)}); found {', '.join(names)}")
    b, c = data[:, ib], data[:, ic]
    if not np.all(np.isfinite(c)):
        raise InputError(f"counts of {p.name} contain NaN or infinite values")
    if np.any(np.diff(b) <= 0):
        raise InputError(f"bin column of {p.name} is not strictly increasing; sort the rows by ToF bin")
    return TofCounts(b, c, None if ie is None else data[:, ie])


def overlap_correction(counts, *, n_triggers: float, tof_axis: int = -1) -> np.ndarray:
    """Undo event loss of a detector that records one event per pixel per shutter window.

    ``N_k / (1 - sum_{j<k} N_j / n_triggers)`` along the ToF axis (Tremsin et al. 2014), where
    ``n_triggers`` is the number of source pulses (shutter openings) summed into the counts.
    Raises if a pixel's counts reach ``n_triggers`` (saturated: nothing to correct from).
    """
    n = check_number("n_triggers (--overlap-triggers)", n_triggers, minimum=0, exclusive_minimum=True)
    c = np.moveaxis(np.asarray(counts, dtype=np.float64), tof_axis, -1)
    before = np.cumsum(c, axis=-1) - c
    occupied = before / n
    if np.any(occupied >= 1):
        raise InputError(f"n_triggers={n:g} is below the counts of a pixel ({float(before.max()):.4g}); give the "
                         "number of source pulses summed into the data")
    return np.moveaxis(c / (1.0 - occupied), -1, tof_axis)


@dataclass(frozen=True)
class TofTransmission:
    """Transmission from raw ToF counts.

    Attributes
    ----------
    transmission, sigma : array
        ``T`` and its Poisson standard uncertainty (NaN where masked), the counts' shape.
    valid : bool array
        Bins with a positive open beam (minus dark); the others are NaN.
    n_masked : int
        Number of masked bins (zero or negative open beam).
    warnings : tuple of str
        Counted problems (masked bins), for the caller to show.
    """

    transmission: np.ndarray
    sigma: np.ndarray
    valid: np.ndarray
    n_masked: int
    warnings: tuple[str, ...] = field(default=())


def normalize_tof_counts(sample_counts, open_beam_counts, dark=None, *, sample_dose=None, open_beam_dose=None,
                         tof_axis: int = -1) -> TofTransmission:
    """Transmission ``(I - D) / (I0 - D) * q0 / q`` of ToF counts with Poisson errors; bad open-beam bins masked.

    Parameters
    ----------
    sample_counts, open_beam_counts : array
        Counts with the same number of ToF bins along ``tof_axis`` (spectra ``(..., n)``; a stack
        ``(n, y, x)`` with ``tof_axis=0``); the open beam may be one spectrum for all pixels.
    dark : array, optional
        Dark counts (beam off), broadcastable; taken as exact.
    sample_dose, open_beam_dose : float, optional
        Beam dose of each measurement (proton charge, monitor counts, time); both or neither.
    tof_axis : int
        The ToF axis.
    """
    s = np.asarray(sample_counts, dtype=np.float64)
    o = np.asarray(open_beam_counts, dtype=np.float64)
    if s.ndim == 0 or o.ndim == 0:
        raise InputError("sample_counts and open_beam_counts must be arrays of counts per ToF bin")
    try:
        ns, no = s.shape[tof_axis], o.shape[tof_axis if o.ndim == s.ndim else -1]
    except IndexError:
        raise InputError(f"tof_axis={tof_axis} is out of range for counts of shape {s.shape}") from None
    if ns != no:
        raise InputError(f"the sample has {ns} ToF bins but the open beam {no}; record (or rebin) both with the "
                         "same bins")
    for name, a in (("sample_counts", s), ("open_beam_counts", o)):
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name} contain NaN or infinite values")
    s_m = np.moveaxis(s, tof_axis, -1)
    o_m = np.moveaxis(o, tof_axis, -1) if o.ndim == s.ndim else o
    d = 0.0 if dark is None else np.moveaxis(np.asarray(dark, np.float64), tof_axis, -1) if np.ndim(dark) == s.ndim \
        else np.asarray(dark, np.float64)
    try:
        i, i0 = s_m - d, np.broadcast_to(o_m - d, s_m.shape)
    except ValueError:
        raise InputError(f"open_beam_counts of shape {o.shape} do not match the sample's {s.shape}") from None
    valid = i0 > 0
    n_bad = int(valid.size - np.count_nonzero(valid))
    scale = 1.0
    if (sample_dose is None) != (open_beam_dose is None):
        raise InputError("give both sample_dose and open_beam_dose (or neither)")
    if sample_dose is not None:
        scale = (check_number("open_beam_dose", open_beam_dose, minimum=0, exclusive_minimum=True)
                 / check_number("sample_dose", sample_dose, minimum=0, exclusive_minimum=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        safe = np.where(valid, i0, 1.0)
        t = np.where(valid, i / safe * scale, np.nan)
        var_i = np.maximum(np.broadcast_to(s_m, i.shape), 1.0)  # Poisson variance of the raw counts (>= 1)
        var_i0 = np.maximum(np.broadcast_to(o_m, i.shape), 1.0)
        sig = np.where(valid, scale * np.sqrt(var_i / safe ** 2 + i ** 2 * var_i0 / safe ** 4), np.nan)
    warns = ()
    if n_bad:
        warns = (f"open beam minus dark <= 0 in {n_bad} of {valid.size} bins: masked (NaN)",)
        log.info(warns[0])
    back = (lambda a: np.moveaxis(a, -1, tof_axis))  # noqa: E731
    return TofTransmission(back(t), back(sig), back(valid), n_bad, warns)


def histogram_events(path, *, shape, bin_width_us: float, n_bins: int, group: str | None = None,
                     tof_unit: str | None = None) -> np.ndarray:
    """Histogram an HDF5 event list into a ToF stack ``(n_bins, ny, nx)`` of counts (uint32).

    The group holds either ``x``, ``y`` and ``tof`` datasets, or NeXus ``NXevent_data``
    (``event_id`` = ``y * nx + x`` and ``event_time_offset``).  Times carry a ``units`` attribute
    (``s``, ``ms``, ``us``/``microsecond``, ``ns``) or take ``tof_unit``.  Bin ``k`` (1-based) holds
    ``(k - 1) * w <= t < k * w``, matching :func:`tof_bin_wavelengths`' ``t_k = k w`` up to the bin's
    upper edge; events outside ``shape`` or the bins are dropped (logged).
    """
    import h5py

    ny, nx = (int(v) for v in shape)
    w = check_number("bin_width_us", bin_width_us, minimum=0, exclusive_minimum=True)
    nb = int(check_number("n_bins", n_bins, minimum=1))
    p = Path(path)
    if not p.is_file():
        raise InputError(f"event file {str(p)!r} does not exist")
    with h5py.File(p, "r") as f:
        g = f[group] if group else _find_event_group(f, p)
        if "tof" in g:
            x, y, tof_ds = np.asarray(g["x"]), np.asarray(g["y"]), g["tof"]
        elif "event_id" in g and "event_time_offset" in g:
            eid = np.asarray(g["event_id"]).astype(np.int64)
            y, x = np.divmod(eid, nx)
            tof_ds = g["event_time_offset"]
        else:
            raise FormatError(f"{p.name}:{g.name} has neither x/y/tof nor NXevent_data event_id/event_time_offset")
        unit = tof_unit or tof_ds.attrs.get("units", None)
        tof = np.asarray(tof_ds, dtype=np.float64)
    if isinstance(unit, bytes):
        unit = unit.decode()
    factor = {"s": 1e6, "second": 1e6, "ms": 1e3, "us": 1.0, "microsecond": 1.0, "µs": 1.0, "ns": 1e-3,
              "nanosecond": 1e-3}.get(str(unit).strip().lower() if unit is not None else "")
    if factor is None:
        raise InputError(f"time unit {show(unit)} of the events is unknown; give tof_unit='us' (or s, ms, ns)")
    k = np.floor(tof * factor / w).astype(np.int64)
    x, y = np.asarray(x, np.int64), np.asarray(y, np.int64)
    keep = (k >= 0) & (k < nb) & (x >= 0) & (x < nx) & (y >= 0) & (y < ny)
    if not keep.all():
        log.info("%d of %d events outside the detector or the ToF bins: dropped", int((~keep).sum()), keep.size)
    flat = (k[keep] * ny + y[keep]) * nx + x[keep]
    return np.bincount(flat, minlength=nb * ny * nx).reshape(nb, ny, nx).astype(np.uint32)


def _find_event_group(f, p: Path):
    import h5py

    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and (obj.attrs.get("NX_class") in (b"NXevent_data", "NXevent_data")
                                            or ("tof" in obj and "x" in obj)):
            found.append(name)

    f.visititems(visit)
    if not found:
        raise FormatError(f"{p.name}: no NXevent_data group (or group with x, y, tof); pass group=...")
    return f[found[0]]


def raw_transmission_spectrum(sample_csv, open_beam_csv, *, flight_path_m: float, bin_width_us: float,
                              delay_us: float = 0.0, sample_dose=None, open_beam_dose=None,
                              overlap_triggers: float | None = None):
    """Transmission spectrum (wavelength, T, sigma) from the raw ToF counts of a sample and an open beam (CSV).

    The two files must list the same ToF bins.  Bins whose open beam is zero or negative are dropped
    (counted in the warnings), as are bins outside :data:`WAVELENGTH_RANGE_ANGSTROM` (warned with the range).
    ``overlap_triggers``: apply :func:`overlap_correction` to both with this number of source pulses each.

    Returns
    -------
    (Spectra, tuple of str)
        The valid bins' transmission with Poisson sigma, and the warnings.
    """
    from .spectra import Spectra

    s, o = read_tof_counts_csv(sample_csv), read_tof_counts_csv(open_beam_csv)
    if s.bins.size != o.bins.size or not np.array_equal(s.bins, o.bins):
        raise InputError(f"the sample lists {s.bins.size} ToF bins ({show(s.bins[0])}..{show(s.bins[-1])}) but the open "
                         f"beam {o.bins.size} ({show(o.bins[0])}..{show(o.bins[-1])}); they must be the same bins")
    cs, co = s.counts, o.counts
    if overlap_triggers is not None:
        cs, co = (overlap_correction(c, n_triggers=overlap_triggers) for c in (cs, co))
    wl = tof_bin_wavelengths(s.bins, flight_path_m=flight_path_m, bin_width_us=bin_width_us, delay_us=delay_us)
    warns = list(wavelength_range_warnings(wl))
    tr = normalize_tof_counts(cs, co, sample_dose=sample_dose, open_beam_dose=open_beam_dose)
    warns += list(tr.warnings)
    lo, hi = WAVELENGTH_RANGE_ANGSTROM
    keep = tr.valid & (wl >= lo) & (wl <= hi) & (tr.transmission >= 0)
    n_neg = int(np.count_nonzero(tr.valid & (tr.transmission < 0)))
    if n_neg:
        warns.append(f"sample minus dark < 0 in {n_neg} of {wl.size} bins: dropped")
    if keep.sum() < 2:
        raise InputError(f"no usable ToF bins: {int(tr.n_masked)} masked open-beam bins, wavelengths "
                         f"{wl.min():.4g}..{wl.max():.4g} Å; check the files, --flight-path and --bin-width")
    sig = np.maximum(tr.sigma[keep], 1e-12)
    return Spectra(wl[keep], tr.transmission[keep], sig), tuple(warns)
