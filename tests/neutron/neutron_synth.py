"""Small forward models with known truth for the neutron tests (Poisson counting noise, explicit seeds)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from tomo4d.neutron import (
    attenuation_from_composition,
    bragg_edge_model,
    li_attenuation_per_cm,
    li_concentration_from_composition,
    molar_mass_g_per_mol,
)
from tomo4d.neutron.synthetic import layered_cell_labels

#: LLZO garnet electrolyte: composition and density (g/cm^3).
LLZO = "Li7La3Zr2O12"
LLZO_DENSITY = 5.1
LI_METAL_MOL_PER_CM3 = 0.534 / 6.94  # natural Li metal, mol/cm^3

TRUE_EDGE = dict(edge_angstrom=4.0538, width_angstrom=0.010, tail_angstrom=0.015, a0=1.2, b0_per_angstrom=0.08,
                 a_hkl=-0.3, b_hkl_per_angstrom=0.45)


def poisson_transmission(rng, t_true, open_beam_counts):
    """Measured T and its sigma from Poisson sample and open-beam counts."""
    ob = rng.poisson(open_beam_counts, size=np.shape(t_true)).astype(np.float64)
    s = rng.poisson(open_beam_counts * np.asarray(t_true)).astype(np.float64)
    ob = np.maximum(ob, 1.0)
    t = s / ob
    sig = np.maximum(t, 1.0 / ob) * np.sqrt(1.0 / np.maximum(s, 1.0) + 1.0 / ob)
    return t, sig


def bragg_spectrum(rng, *, n=300, lo=3.4, hi=4.8, counts=4e4, shift_angstrom=0.0, **over):
    """A single-edge transmission spectrum with Poisson noise; returns (wl, T, sigma, true params)."""
    p = dict(TRUE_EDGE)
    p.update(over)
    p["edge_angstrom"] = p["edge_angstrom"] + shift_angstrom
    wl = np.linspace(lo, hi, n)
    t_true = bragg_edge_model(wl, **p)
    t, s = poisson_transmission(rng, t_true, counts)
    return wl, t, s, p


def llzo_other_mu(wavelength, *, density=LLZO_DENSITY):
    """Attenuation of the Li-free part (La3Zr2O12) of LLZO at its formula-unit density, 1/cm."""
    m_llzo = molar_mass_g_per_mol(LLZO)
    m_rest = molar_mass_g_per_mol("La3Zr2O12")
    return attenuation_from_composition("La3Zr2O12", density_g_per_cm3=density * m_rest / m_llzo,
                                        wavelength_angstrom=wavelength)


def isotope_spectra(rng, li6_fractions, *, thickness_cm=0.05, counts=2e4, n=120, lo=1.0, hi=4.0,
                    background_per_cm=0.05):
    """Region spectra of LLZO with the given 6Li fractions: (wl, mu, mu_sigma, c_li, other_mu)."""
    f = np.asarray(li6_fractions, dtype=np.float64)
    wl = np.linspace(lo, hi, n)
    c_li = li_concentration_from_composition(LLZO, density_g_per_cm3=LLZO_DENSITY)
    other = llzo_other_mu(wl)
    mu_true = li_attenuation_per_cm(wl, li_concentration_mol_per_cm3=c_li, li6_fraction=f) + other \
        + background_per_cm
    t, s = poisson_transmission(rng, np.exp(-mu_true * thickness_cm), counts)
    mu = -np.log(t) / thickness_cm
    mu_sig = s / t / thickness_cm
    return wl, mu, mu_sig, c_li, other


def li_phantom(rng, *, shape=(24, 40, 40), k_true=60.0, mu_matrix=0.35, noise=0.3):
    """A 3D attenuation map of Li regions with known concentrations.

    Labels: 1 Li-free host (reference, c=0), 2 Li-metal foil (reference), 3 electrolyte-like,
    4 partly lithiated anode, 5 dilute region.  ``mu = mu_matrix + k_true c`` plus Gaussian
    noise (std ``noise``, 1/cm; about 10 % of Li metal) smoothed like a reconstruction.  Returns (mu, labels, truth concentrations by label).
    """
    conc = {1: 0.0, 2: LI_METAL_MOL_PER_CM3, 3: 0.0425, 4: 0.025, 5: 0.012}
    lab = np.ones(shape, np.int32)
    nz, ny, nx = shape
    lab[:, : ny // 4, :] = 2
    lab[:, ny // 4: ny // 2, :] = 3
    lab[:, ny // 2:3 * ny // 4, : nx // 2] = 4
    lab[:, ny // 2:3 * ny // 4, nx // 2:] = 5
    c = np.zeros(shape)
    for k, v in conc.items():
        c[lab == k] = v
    mu = mu_matrix + k_true * c
    field = ndimage.gaussian_filter(rng.normal(0, 1.0, shape), 0.8)  # correlated like a reconstruction
    mu = mu + noise * field / field.std()
    return mu.astype(np.float32), lab, conc


# phases of the joint X-ray/neutron phantom: (name, X-ray grey value, neutron mu 1/cm)
PHASES = (("pore", 0.05, 0.05), ("Li metal", 0.12, 3.3), ("LLZO", 0.75, 2.3), ("NMC", 1.10, 0.9))


def joint_phantom(rng, *, shape=(32, 48, 48), neutron_factor=2, shift_px=(1, -2, 1), xray_noise=0.06,
                  neutron_noise=0.18):
    """Layered cell (NMC with pores | LLZO | Li metal | pore) imaged by X-rays (fine) and neutrons (coarse, shifted).

    Returns (xray, neutron, truth_labels) with labels 1..4 in the order of :data:`PHASES`; the
    neutron volume has voxels ``neutron_factor`` times larger and is translated by ``shift_px``
    (neutron voxels).
    """
    nz, ny, nx = shape
    lab = layered_cell_labels(shape, rng=rng)
    xr = np.zeros(shape)
    nm = np.zeros(shape)
    for i, (_, xv, nv) in enumerate(PHASES, start=1):
        xr[lab == i] = xv
        nm[lab == i] = nv
    xray = ndimage.gaussian_filter(xr, 0.7) + rng.normal(0, xray_noise, shape)
    f = neutron_factor
    coarse = nm.reshape(nz // f, f, ny // f, f, nx // f, f).mean(axis=(1, 3, 5))
    coarse = ndimage.shift(coarse, shift_px, order=1, mode="nearest")
    neutron = coarse + rng.normal(0, neutron_noise, coarse.shape)
    return xray.astype(np.float32), neutron.astype(np.float32), lab
