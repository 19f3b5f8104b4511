"""Histogrammed ToF stacks as imaging beamlines write them: one FITS (or TIFF) image per ToF bin in a folder.

The FITS reader is tomo4d's own (no astropy needed) and covers what ToF imaging detectors write: a
2D image in the primary HDU or in the first ``IMAGE`` extension.  FITS: 2880-byte blocks of 80-character
header cards ending with ``END``; ``BITPIX`` 8/16/32/64 (integers) or -32/-64 (IEEE floats),
``NAXIS``/``NAXISn`` (``NAXIS1`` the fastest axis, x), big-endian data, physical value
``BZERO + BSCALE * stored``.  Files of a folder are ordered by name (the beamlines' ``_00000`` counter)
and are the ToF bins ``first_bin, first_bin + 1, ...``.

:func:`tof_stack_attenuation` turns a sample and an open-beam stack into per-pixel attenuation spectra
``-ln T / thickness`` with Poisson errors, ready for :func:`~tomo4d.neutron.fit_isotope_map` or (as
``T``) :func:`~tomo4d.neutron.fit_bragg_edge_map`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .._validate import check_int, check_number
from ..errors import FormatError, InputError
from .tof import (
    WAVELENGTH_RANGE_ANGSTROM,
    normalize_tof_counts,
    overlap_correction,
    tof_bin_wavelengths,
    wavelength_range_warnings,
)

__all__ = ["read_fits_image", "write_fits_image", "read_tof_stack", "tof_stack_attenuation", "FITS_SUFFIXES"]

FITS_SUFFIXES = (".fits", ".fit", ".fts")
_BLOCK = 2880
_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def _parse_header(raw: bytes, offset: int, path: Path):
    """(cards dict, offset after the header) of the header starting at ``offset``."""
    cards = {}
    pos = offset
    while True:
        block = raw[pos:pos + _BLOCK]
        if len(block) < _BLOCK:
            raise FormatError(f"{str(path)!r}: FITS header without END (file truncated or not FITS)")
        pos += _BLOCK
        for i in range(0, _BLOCK, 80):
            card = block[i:i + 80].decode("ascii", errors="replace")
            key = card[:8].strip()
            if key == "END":
                return cards, pos
            if card[8:10] == "= " and key:
                val = card[10:].split("/", 1)[0].strip() if not card[10:].strip().startswith("'") else \
                    card[10:].strip().split("'")[1]
                cards[key] = val


def _int_card(cards, key, path, default=None):
    if key not in cards:
        if default is not None:
            return default
        raise FormatError(f"{str(path)!r}: FITS header lacks {key}")
    try:
        return int(float(cards[key]))
    except ValueError:
        raise FormatError(f"{str(path)!r}: FITS card {key} = {cards[key]!r} is not a number") from None


def read_fits_image(path) -> np.ndarray:
    """The first image of a FITS file (primary HDU, else the first IMAGE extension), float64, FITS axis order
    reversed (``(NAXIS2, NAXIS1)`` = ``(y, x)``), scaled by ``BZERO``/``BSCALE``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"FITS file {str(p)!r} does not exist; check the path")
    raw = p.read_bytes()
    if not raw.startswith(b"SIMPLE  ="):
        raise FormatError(f"{str(p)!r} is not a FITS file (it does not start with SIMPLE =)")
    offset = 0
    while offset < len(raw):
        cards, data_at = _parse_header(raw, offset, p)
        bitpix = _int_card(cards, "BITPIX", p)
        if bitpix not in _DTYPES:
            raise FormatError(f"{str(p)!r}: BITPIX = {bitpix} is not a FITS data type (8, 16, 32, 64, -32, -64)")
        naxis = _int_card(cards, "NAXIS", p)
        shape = tuple(_int_card(cards, f"NAXIS{i}", p) for i in range(naxis, 0, -1))
        n = int(np.prod(shape)) if naxis else 0
        nbytes = n * abs(bitpix) // 8
        is_image = naxis >= 2 and n > 0 and cards.get("XTENSION", "IMAGE").strip() == "IMAGE"
        if is_image:
            if data_at + nbytes > len(raw):
                raise FormatError(f"{str(p)!r}: FITS data of shape {shape} run past the end of the file (truncated)")
            a = np.frombuffer(raw, dtype=_DTYPES[bitpix], count=n, offset=data_at).reshape(shape)
            scale = float(cards.get("BSCALE", 1.0))
            zero = float(cards.get("BZERO", 0.0))
            return a.astype(np.float64) * scale + zero
        offset = data_at + math.ceil(nbytes / _BLOCK) * _BLOCK
    raise FormatError(f"{str(p)!r}: no image (NAXIS >= 2) in any HDU of the FITS file")


def write_fits_image(path, image, *, overwrite: bool = False) -> Path:
    """Write a 2D (or ND) array as the primary HDU of a FITS file: float32 (BITPIX -32), or uint16 counts as
    BITPIX 16 with BZERO 32768 (the beamlines' convention).  Atomic."""
    from ..io import atomic_output

    a = np.asarray(image)
    if a.ndim < 2:
        raise InputError(f"image has shape {a.shape}; a FITS image needs at least 2 axes")
    if a.dtype == np.uint16:
        bitpix, data, extra = 16, (a.astype(np.int32) - 32768).astype(">i2"), [("BZERO", "32768"), ("BSCALE", "1")]
    else:
        bitpix, data, extra = -32, a.astype(">f4"), []
    cards = [("SIMPLE", "T"), ("BITPIX", str(bitpix)), ("NAXIS", str(a.ndim))]
    cards += [(f"NAXIS{i + 1}", str(s)) for i, s in enumerate(a.shape[::-1])] + extra
    head = "".join(f"{k:<8}= {v:>20}".ljust(80) for k, v in cards) + "END".ljust(80)
    head = head.ljust(math.ceil(len(head) / _BLOCK) * _BLOCK)
    body = data.tobytes()
    body += b"\0" * (math.ceil(len(body) / _BLOCK) * _BLOCK - len(body))
    p = Path(path)
    with atomic_output(p, overwrite=overwrite) as tmp:
        Path(tmp).write_bytes(head.encode("ascii") + body)
    return p


def read_tof_stack(path) -> np.ndarray:
    """A ToF stack ``(n_bins, ny, nx)`` float64: a folder of FITS images (one per bin, ordered by name), or
    anything :func:`tomo4d.io.open_volume` reads (a TIFF stack or slice folder)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"ToF stack {str(p)!r} does not exist; check the path")
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in FITS_SUFFIXES) if p.is_dir() else []
    if p.is_file() and p.suffix.lower() in FITS_SUFFIXES:
        a = read_fits_image(p)
        return a if a.ndim == 3 else a[None]
    if not files:
        from ..io import open_volume

        return np.asarray(open_volume(p).numpy(), dtype=np.float64)
    imgs = [read_fits_image(f) for f in files]
    shapes = {im.shape for im in imgs}
    if len(shapes) != 1:
        raise FormatError(f"the FITS images of {str(p)!r} have different shapes {sorted(shapes)}; one ToF bin per "
                          "file, all of the same detector size")
    if imgs[0].ndim != 2:
        raise FormatError(f"{files[0].name} holds a {imgs[0].ndim}D image; a ToF folder has one 2D image per bin")
    return np.stack(imgs)


def tof_stack_attenuation(sample, open_beam, *, flight_path_m: float, bin_width_us: float, thickness_cm: float,
                          delay_us: float = 0.0, first_bin: int = 1, sample_dose=None, open_beam_dose=None,
                          overlap_triggers: float | None = None):
    """Per-pixel attenuation spectra from raw ToF stacks of a sample and an open beam.

    Parameters
    ----------
    sample, open_beam : path or (n_bins, ny, nx) array
        ToF stacks (:func:`read_tof_stack`); they must have the same number of bins.
    flight_path_m, bin_width_us, delay_us, first_bin
        Bin ``k = first_bin + i`` of the stack lies at ``k * bin_width_us`` (see
        :func:`~tomo4d.neutron.tof_bin_wavelengths`).
    thickness_cm : float
        Sample thickness along the beam: ``mu = -ln T / thickness``.
    sample_dose, open_beam_dose, overlap_triggers
        As in :func:`~tomo4d.neutron.raw_transmission_spectrum`.

    Returns
    -------
    (wavelength (n,), mu (ny, nx, n), sigma (ny, nx, n), warnings tuple)
        Bins outside :data:`~tomo4d.neutron.WAVELENGTH_RANGE_ANGSTROM` are dropped; masked bins (open beam
        <= 0, sample <= 0) are NaN (counted in the warnings).
    """
    s = read_tof_stack(sample) if not isinstance(sample, np.ndarray) else np.asarray(sample, np.float64)
    o = read_tof_stack(open_beam) if not isinstance(open_beam, np.ndarray) else np.asarray(open_beam, np.float64)
    if s.ndim != 3 or o.ndim != 3:
        raise InputError(f"ToF stacks must be (n_bins, ny, nx); got sample {s.shape}, open beam {o.shape}")
    for name, a in (("sample", s), ("open-beam", o)):
        n_bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if n_bad:
            raise InputError(f"the {name} ToF stack holds {n_bad} non-finite values (NaN or infinite); counts are "
                             "finite numbers")
    if s.shape[0] != o.shape[0]:
        raise InputError(f"the sample stack has {s.shape[0]} ToF bins but the open beam {o.shape[0]}; record (or "
                         "rebin) both with the same bins")
    if s.shape[1:] != o.shape[1:]:
        raise InputError(f"the sample images are {s.shape[1:]} pixels but the open beam's {o.shape[1:]}")
    th = check_number("thickness_cm (--thickness-cm)", thickness_cm, minimum=0, exclusive_minimum=True)
    fb = check_int("first_bin (--first-bin)", first_bin, minimum=0)
    bins = np.arange(fb, fb + s.shape[0], dtype=np.float64)
    wl = tof_bin_wavelengths(bins, flight_path_m=flight_path_m, bin_width_us=bin_width_us, delay_us=delay_us)
    warns = list(wavelength_range_warnings(wl, what="the ToF stack"))
    if overlap_triggers is not None:
        s, o = (overlap_correction(c, n_triggers=overlap_triggers, tof_axis=0) for c in (s, o))
    tr = normalize_tof_counts(s, o, sample_dose=sample_dose, open_beam_dose=open_beam_dose, tof_axis=0)
    warns += list(tr.warnings)
    lo, hi = WAVELENGTH_RANGE_ANGSTROM
    keep = (wl >= lo) & (wl <= hi)
    if keep.sum() < 3:
        raise InputError(f"the ToF bins span {wl.min():.4g}..{wl.max():.4g} Å: fewer than 3 inside {lo:g}..{hi:g} Å; "
                         "check --flight-path, --bin-width and --delay")
    t = np.moveaxis(tr.transmission[keep], 0, -1)
    st = np.moveaxis(tr.sigma[keep], 0, -1)
    bad = ~(t > 0)
    n_neg = int(np.count_nonzero(bad & np.isfinite(t)))
    if n_neg:
        warns.append(f"sample counts <= 0 in {n_neg} of {t.size} pixel bins: masked (NaN)")
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.where(bad, np.nan, -np.log(np.where(bad, 1.0, t)) / th)
        sig = np.where(bad, np.nan, st / np.where(bad, 1.0, t) / th)
    return wl[keep], mu, sig, tuple(warns)
