"""Neutron modality of the synthetic experiment: Li cross-sections and Bragg-edge transmission spectra.

The attenuation volumes themselves are :attr:`SyntheticExperiment.neutron_series` (1/cm at the
thermal wavelength 1.798 A, Li-sensitive).  Here: the lithium absorption cross-section for a given
6Li enrichment (1/v law) and wavelength-resolved transmission spectra of chosen regions with the
Bragg edges of the crystalline phases (fcc Cu, diamond Si).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import erfc

from .._validate import check_number, show
from ..errors import InputError
from ._model import LI_IN_ELECTROLYTE_MOL_L, LI_IN_LITHIATED_SI_MOL_L, Phase
from .params import (
    AVOGADRO,
    SIGMA_LI6_B,
    SIGMA_LI6_SCATTER_B,
    SIGMA_LI7_B,
    SIGMA_LI7_SCATTER_B,
    THERMAL_WAVELENGTH_A,
)

#: (lattice parameter A, atoms per cell, coherent length fm, absorption b at 1.798 A, incoherent b,
#:  fractional basis) of the crystalline phases.
_CRYSTALS = {
    "Cu": (3.615, 4, 7.718, 3.78, 0.55, [(0, 0, 0), (0, .5, .5), (.5, 0, .5), (.5, .5, 0)]),
    "Si": (5.431, 8, 4.1491, 0.171, 0.004, [(0, 0, 0), (0, .5, .5), (.5, 0, .5), (.5, .5, 0),
                                            (.25, .25, .25), (.25, .75, .75), (.75, .25, .75), (.75, .75, .25)]),
}


def li_cross_section_b(li6_fraction: float, *, wavelength_a: float = THERMAL_WAVELENGTH_A) -> float:
    """Absorption cross-section of Li (barn per atom) for a 6Li atom fraction, 1/v (proportional to wavelength)."""
    e = check_number("li6_fraction", li6_fraction, minimum=0, maximum=1)
    wavelength_a = check_number("wavelength_a", wavelength_a, minimum=0, exclusive_minimum=True)
    return (e * SIGMA_LI6_B + (1 - e) * SIGMA_LI7_B) * wavelength_a / THERMAL_WAVELENGTH_A


def li_scattering_b(li6_fraction: float) -> float:
    """Bound-atom total scattering cross-section of Li (barn per atom) for a 6Li atom fraction."""
    li_cross_section_b(li6_fraction)
    e = float(li6_fraction)
    return e * SIGMA_LI6_SCATTER_B + (1 - e) * SIGMA_LI7_SCATTER_B


def bragg_cross_section_b(crystal: str, wavelengths_a, *, resolution: float = 0.005) -> np.ndarray:
    """Coherent elastic (Bragg) cross-section per atom (barn) of a cubic powder, vs wavelength (A).

    sigma(l) = l^2 / (2 V0 N) * sum_hkl |F_hkl|^2 d_hkl over reflections with 2 d_hkl > l; each edge
    is smoothed by a Gaussian of relative width ``resolution``.
    """
    if crystal not in _CRYSTALS:
        raise InputError(f"crystal={show(crystal)} is not known; use one of {', '.join(_CRYSTALS)}")
    a, n_atoms, b_fm, _, _, basis = _CRYSTALS[crystal]
    lam = np.asarray(wavelengths_a, float)
    basis = np.asarray(basis)
    r = np.arange(-7, 8)
    hkl = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    hkl = hkl[np.any(hkl != 0, axis=1)]
    F = b_fm * np.exp(2j * np.pi * hkl @ basis.T).sum(axis=1)
    f2 = np.abs(F) ** 2 / 100.0                          # fm^2 -> barn
    keep = f2 > 1e-9
    d = a / np.sqrt((hkl[keep] ** 2).sum(axis=1))
    f2 = f2[keep]
    v0 = a ** 3
    edges = 2 * d
    w = np.maximum(resolution * edges, 1e-6)
    step = 0.5 * erfc((lam[:, None] - edges[None]) / (np.sqrt(2) * w[None]))
    return lam ** 2 / (2 * v0 * n_atoms) * (step * (f2 * d)[None]).sum(axis=1)


def bragg_edges_a(crystal: str, *, max_wavelength_a: float = 8.0) -> np.ndarray:
    """Wavelengths (A) of the Bragg edges 2 d_hkl of a crystal, descending."""
    lam = np.linspace(0.5, max_wavelength_a, 4)
    _ = bragg_cross_section_b(crystal, lam)
    a, _, b_fm, _, _, basis = _CRYSTALS[crystal]
    r = np.arange(0, 8)
    hkl = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    hkl = hkl[np.any(hkl != 0, axis=1)]
    F = np.abs(np.exp(2j * np.pi * hkl @ np.asarray(basis).T).sum(axis=1))
    d = a / np.sqrt((hkl[F > 1e-6] ** 2).sum(axis=1))
    e = np.unique(np.round(2 * d, 6))[::-1]
    return e[e <= max_wavelength_a]


@dataclass(frozen=True)
class TransmissionSpectra:
    """Wavelength-resolved neutron transmission of regions of the sample.

    Attributes
    ----------
    wavelengths_a : ndarray, shape (n_wl,)
    region_names : tuple of str
    transmission : ndarray, shape (n_regions, n_wl)
        I/I0 through ``path_length_mm`` of material with each region's mean composition.
    phase_fractions : ndarray, shape (n_regions, n_phases)
        Volume fraction of each :class:`Phase` in each region.
    li_mol_l : ndarray, shape (n_regions,)
        Mean Li concentration of each region, mol/L.
    li6_fraction : float
    path_length_mm : float
    bragg_edges_a : dict
        Edge wavelengths (A) of Cu and Si.
    """

    wavelengths_a: np.ndarray
    region_names: tuple[str, ...]
    transmission: np.ndarray
    phase_fractions: np.ndarray
    li_mol_l: np.ndarray
    li6_fraction: float
    path_length_mm: float
    bragg_edges_a: dict


#: atom number density (1/cm^3) and which crystal gives Bragg edges, per phase; the remaining
#: (non-Li) attenuation of each phase is an incoherent/absorption term in 1/cm at 1.798 A.
_PHASE_CRYSTAL = {Phase.SILICON: ("Si", 4.99e22), Phase.COLLECTOR: ("Cu", 8.49e22)}
_PHASE_BACKGROUND_MU = {Phase.PORE: 0.10, Phase.MATRIX: 0.30, Phase.LITHIATED_SILICON: 0.06,
                        Phase.SEPARATOR: 0.45}


def li_free_attenuation_spectra(wavelengths_a) -> np.ndarray:
    """Attenuation (1/cm) of every :class:`Phase` without its lithium, vs wavelength, shape (n_phases, n_wl).

    Crystalline silicon and the copper collector: Bragg (coherent elastic) scattering with its
    edges, incoherent scattering and 1/v absorption; the other phases: a 1/v term.  This is what a
    user knows from reference measurements of each pristine component; the spectra of
    :func:`transmission_spectra` add ``c_Li N_A (sigma_a(lambda) + sigma_s)`` of the lithium.
    """
    lam = np.asarray(wavelengths_a, float)
    if lam.ndim != 1 or lam.size == 0 or np.any(lam <= 0):
        raise InputError("wavelengths_a must be a 1D array of positive wavelengths in angstrom")
    out = np.zeros((len(Phase), lam.size))
    for ph, (cryst, n_at) in _PHASE_CRYSTAL.items():
        _, _, _, s_abs, s_inc, _ = _CRYSTALS[cryst]
        out[ph] = n_at * (bragg_cross_section_b(cryst, lam) + s_inc + s_abs * lam / THERMAL_WAVELENGTH_A) * 1e-24
    for ph, m0 in _PHASE_BACKGROUND_MU.items():
        out[ph] = m0 * lam / THERMAL_WAVELENGTH_A
    return out


def transmission_spectra(experiment, step=0, *, regions=None, wavelengths_a=None,
                         li6_fraction: float | None = None, path_length_mm: float = 1.0) -> TransmissionSpectra:
    """Bragg-edge transmission spectra of regions of the series sample at ``step``.

    Parameters
    ----------
    experiment : SyntheticExperiment
    step : int or str
    regions : dict of name -> bool array on the LQ grid, optional
        Default: ``"collector"``, ``"anode"``, ``"separator"`` layers at that step (from the labels).
    wavelengths_a : array, optional
        Default 1 to 7 A in 600 steps.
    li6_fraction : float, optional
        6Li atom fraction (default: the experiment's ``li6_fraction``, natural 0.0759).
    path_length_mm : float
        Sample thickness along the beam with the region's composition.

    Returns
    -------
    TransmissionSpectra
    """
    t = experiment.truth
    lab = t.labels(step, grid="lq")
    li6 = experiment.params.li6_fraction if li6_fraction is None else li6_fraction
    li6 = check_number("li6_fraction", li6, minimum=0, maximum=1)
    path_length_mm = check_number("path_length_mm", path_length_mm, minimum=0, exclusive_minimum=True)
    try:
        lam = np.linspace(1.0, 7.0, 600) if wavelengths_a is None else np.asarray(wavelengths_a, float)
    except (TypeError, ValueError):
        raise InputError(f"wavelengths_a={show(wavelengths_a)} is not numeric; give a 1D array of positive "
                         "wavelengths in angstrom") from None
    if lam.ndim != 1 or lam.size == 0 or not np.all(np.isfinite(lam)) or np.any(lam <= 0):
        raise InputError("wavelengths_a must be a 1D array of positive wavelengths in angstrom")
    if regions is None:
        z = np.arange(lab.shape[0])
        coll = np.mean(lab == Phase.COLLECTOR, axis=(1, 2)) > 0.5
        sep_frac = np.mean(np.isin(lab, [Phase.SEPARATOR]), axis=(1, 2))
        anode_frac = np.mean(np.isin(lab, [Phase.MATRIX, Phase.SILICON, Phase.LITHIATED_SILICON]), axis=(1, 2))
        anode_z = anode_frac > 0.5 * anode_frac.max()
        sep_z = (sep_frac > 0.2) & (z > np.flatnonzero(anode_z).max())
        mk = lambda sel: np.broadcast_to(sel[:, None, None], lab.shape)  # noqa: E731
        regions = {"collector": mk(coll), "anode": mk(anode_z), "separator": mk(sep_z)}
    names, fr, li = [], [], []
    conc = np.zeros(len(Phase))
    conc[Phase.LITHIATED_SILICON] = LI_IN_LITHIATED_SI_MOL_L
    conc[Phase.PORE] = LI_IN_ELECTROLYTE_MOL_L
    for name, mask in regions.items():
        m = np.asarray(mask, bool)
        if m.shape != lab.shape or not m.any():
            raise InputError(f"region {name!r} must be a non-empty bool array of the LQ grid shape {lab.shape}")
        f = np.bincount(lab[m], minlength=len(Phase)) / m.sum()
        names.append(str(name))
        fr.append(f)
        li.append(float(f @ conc))
    fr = np.asarray(fr)
    li = np.asarray(li)
    mu = fr @ li_free_attenuation_spectra(lam)
    sigma_li = (np.array([li_cross_section_b(li6, wavelength_a=w) for w in lam]) + li_scattering_b(li6)) * 1e-24
    mu += li[:, None] * AVOGADRO * 1e-3 * sigma_li[None]
    trans = np.exp(-mu * path_length_mm * 0.1)
    return TransmissionSpectra(lam, tuple(names), trans, fr, li, li6, float(path_length_mm),
                               {"Cu": bragg_edges_a("Cu"), "Si": bragg_edges_a("Si")})
