"""The spectra inputs: ``inputs.neutron_spectra`` (one transmission spectrum per step), checked when resolving.

Every file exists and parses (:func:`tomo4d.neutron.read_spectrum_csv`: wavelength Å strictly
increasing, transmission, optional sigma); one per step; the transmission is finite and > 0; every
Bragg window and the 6Li wavelength range hold enough bins of every spectrum.  The per-step lists
of the section and the truth (``li6.li_concentration_mol_l``, ``truth.li6_fraction``,
``truth.lattice_strain``) have one value per step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["MIN_BINS", "per_step", "read_step_spectrum", "resolve_neutron_spectra"]

#: wavelength bins a Bragg window or the 6Li range must hold
MIN_BINS = 8


def per_step(value, n: int) -> list[float] | None:
    """One number per step from a number or a list (None stays None)."""
    if value is None:
        return None
    return [float(value)] * n if isinstance(value, (int, float)) else [float(v) for v in value]


def read_step_spectrum(path: Path, key: str):
    """The spectrum of ``path`` (:class:`tomo4d.neutron.Spectra`), every problem worded with ``key``."""
    from ..neutron import read_spectrum_csv

    if not Path(path).is_file():
        raise InputError(f"{key}: spectrum {str(path)!r} does not exist; check the path in the experiment file")
    try:
        sp = read_spectrum_csv(path)
    except InputError as exc:
        raise type(exc)(f"{key}: {exc}") from None
    t = np.asarray(sp.values, float)
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise InputError(f"{key} ({str(path)!r}): the transmission must be finite and > 0 in every bin (min "
                         f"{np.nanmin(t):.4g}); drop or merge the empty bins")
    return sp


def _check_lengths(exp, n: int) -> None:
    sec, truth = exp.neutron_spectra, exp.truth
    lists = {}
    if sec.li6 is not None:
        lists["neutron_spectra.li6.li_concentration_mol_l"] = sec.li6.li_concentration_mol_l
        lists["neutron_spectra.li6.li_free_mu_per_cm"] = sec.li6.li_free_mu_per_cm
    if truth is not None:
        lists["truth.li6_fraction"] = truth.li6_fraction
        for k, v in (truth.lattice_strain or {}).items():
            lists[f"truth.lattice_strain.{k}"] = v
    for key, v in lists.items():
        if isinstance(v, list) and len(v) != n:
            raise InputError(f"{key} has {len(v)} values but inputs.series has {n} steps; give one number, or "
                             "one per step")


def _check_ranges(exp, sp, key: str) -> None:
    w = np.asarray(sp.wavelength_angstrom, float)
    sec = exp.neutron_spectra
    ranges = [(f"neutron_spectra.bragg[{i}] ({r.name}) window", r.window()) for i, r in enumerate(sec.bragg or ())]
    if sec.li6 is not None and sec.li6.wavelength_range_angstrom is not None:
        ranges.append(("neutron_spectra.li6.wavelength_range_angstrom", tuple(sec.li6.wavelength_range_angstrom)))
    for what, (lo, hi) in ranges:
        k = int(np.count_nonzero((w >= lo) & (w <= hi)))
        if k < MIN_BINS:
            raise InputError(f"{what} [{lo:.4g}, {hi:.4g}] Å holds {k} wavelength bins of {key} (spectrum "
                             f"{w[0]:.4g}..{w[-1]:.4g} Å); give a range inside the spectrum with >= {MIN_BINS} bins")


def resolve_neutron_spectra(exp, names) -> tuple[Path, ...]:
    """The spectrum files of ``exp`` (one per step), each read and checked; () without the section."""
    from .inputs import expand_files

    if exp.neutron_spectra is None or exp.inputs.neutron_spectra is None:
        return ()
    n = len(names)
    files = expand_files(exp, exp.inputs.neutron_spectra, "inputs.neutron_spectra")
    if len(files) != n:
        raise InputError(f"inputs.neutron_spectra has {len(files)} files but inputs.series has {n} steps "
                         f"({', '.join(names)}); give one transmission spectrum per step")
    _check_lengths(exp, n)
    for i, p in enumerate(files):
        key = f"inputs.neutron_spectra[{i}] ({names[i]})"
        _check_ranges(exp, read_step_spectrum(p, key), key)
    return files
