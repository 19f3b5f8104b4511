"""The phantom's neutron modality in 5D: (time, wavelength, z, y, x) with per-voxel isotope and strain truth.

:func:`neutron_5d` turns the series sample into wavelength-resolved neutron data on the neutron grid
(the LQ field binned by ``neutron_bin``):

* lithium isotopes: the electrolyte's lithium is 6Li-enriched (``electrolyte_li6_fraction``), the
  lithiated silicon's starts natural and exchanges towards the electrolyte's over the steps, faster
  near the separator (large z): ``f_Si(t, z) = f_nat + exchange * t / (n - 1) * z / (nz - 1) *
  (f_el - f_nat)``.  Per neutron voxel the 6Li and total Li concentrations are the means over its LQ
  voxels, so mixed voxels carry intermediate fractions (truth: ``li6_fraction = n6 / c``);
* a crystalline phase with Bragg edges: the copper collector (fcc, 3.615 Å) under an in-plane
  strain ``strain_amplitude * (2 x / (nx - 1) - 1)`` (edges at ``2 d (1 + strain)``; exactly
  ``sigma(lambda; a (1 + e)) = sigma(lambda / (1 + e); a)``); the other phases' Li-free attenuation is
  :func:`~tomo4d.phantom.neutron.li_free_attenuation_spectra` (silicon's Bragg edges included);
* per-band attenuation volumes (one reconstruction per wavelength band) with Gaussian noise of the
  stated per-band level: ``sigma_b = noise_per_cm * sqrt(phi_max / phi_b)`` for an open-beam fluence
  ``phi_b`` per band (a Maxwellian of temperature ``moderator_k``).  Model: a filtered-backprojection
  voxel's variance is proportional to ``1 / (phi_b T_b)``; the phantom's sample is micrometres thin,
  so its transmission ``T_b`` is 1 and the level follows the fluence alone (no PSF is applied: the
  truth is per voxel);
* radiography ToF counts (``tof_counts``): rays along y through ``path_length_cm`` of material with
  the ray's mean attenuation, Poisson counts of sample and open beam per ToF bin (bin ``k`` at
  ``k * bin_width``, wavelength by :func:`tomo4d.neutron.tof_bin_wavelengths`).

Wavelength bands are the ToF bins ``first_bin .. first_bin + n_bands - 1`` of ``flight_path_m`` and
``bin_width_us``: by default 200 bins, 1.0-5.98 Å.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import check_int, check_number
from ..errors import InputError
from ..neutron.tof import tof_bin_wavelengths
from ..neutron.xs import NATURAL_LI6_FRACTION
from ._model import LI_IN_ELECTROLYTE_MOL_L, LI_IN_LITHIATED_SI_MOL_L, Phase
from .neutron import _CRYSTALS, _PHASE_CRYSTAL, bragg_cross_section_b, li_free_attenuation_spectra
from .params import AVOGADRO, SIGMA_LI6_B, SIGMA_LI6_SCATTER_B, SIGMA_LI7_B, SIGMA_LI7_SCATTER_B, THERMAL_WAVELENGTH_A

__all__ = ["Neutron5D", "neutron_5d", "CU_LATTICE_A"]

#: lattice parameter of the collector's copper, Å
CU_LATTICE_A = _CRYSTALS["Cu"][0]


@dataclass(frozen=True)
class Neutron5D:
    """Wavelength-resolved neutron data of the series sample with per-voxel truth.

    Arrays: ``t`` steps, ``n`` bands, neutron grid ``(z, y, x)``.

    Attributes
    ----------
    wavelengths_angstrom : (n,) array
        Band centres (ToF bins ``bins``), Å.
    bins : (n,) array
        ToF bin numbers (bin ``k`` at ``k * bin_width_us``).
    flight_path_m, bin_width_us : float
    mu_per_cm : (t, n, z, y, x) float32
        Per-band attenuation volumes (truth + noise), 1/cm.
    sigma_per_cm : (n,) array
        Per-band voxel noise (the same in every voxel and step), 1/cm.
    open_beam_per_band : (n,) array
        Mean open-beam counts per detector pixel and ToF bin of the radiography.
    li_concentration_mol_per_cm3, li6_concentration_mol_per_cm3 : (t, z, y, x) float64
        Truth per voxel.
    li6_fraction : (t, z, y, x)
        Truth ``n6 / c`` (NaN without lithium).
    phase_fractions : (t, P, z, y, x)
        Volume fraction of each :class:`Phase` per voxel (what the X-ray phase map gives).
    phase_spectra_per_cm : (P, n)
        Li-free attenuation of each phase (copper unstrained), 1/cm.
    other_mu_per_cm : (t, n, z, y, x) float32
        Li-free attenuation per voxel (strained copper included): the exact ``other_mu``.
    strain : (z, y, x)
        Copper lattice strain where copper is (NaN elsewhere); the same at every step.
    copper_fraction : (t, z, y, x)
    path_length_cm : float
        Radiography path length.
    """

    wavelengths_angstrom: np.ndarray
    bins: np.ndarray
    flight_path_m: float
    bin_width_us: float
    mu_per_cm: np.ndarray
    sigma_per_cm: np.ndarray
    open_beam_per_band: np.ndarray
    li_concentration_mol_per_cm3: np.ndarray
    li6_concentration_mol_per_cm3: np.ndarray
    li6_fraction: np.ndarray
    phase_fractions: np.ndarray
    phase_spectra_per_cm: np.ndarray
    other_mu_per_cm: np.ndarray
    strain: np.ndarray
    copper_fraction: np.ndarray
    path_length_cm: float
    seed: int = 0

    @property
    def n_steps(self) -> int:
        return self.mu_per_cm.shape[0]

    def copper_edge_angstrom(self, hkl=(1, 1, 1)) -> float:
        """Unstrained Bragg edge ``2 d_hkl`` of the copper, Å."""
        return 2 * CU_LATTICE_A / float(np.sqrt(np.sum(np.square(hkl))))

    def tof_counts(self, step: int, *, seed: int | None = None):
        """Radiography along y at ``step``: (sample counts, open-beam counts), each ``(n, z, x)`` float64.

        Rays through ``path_length_cm`` of their mean attenuation; Poisson counts around
        ``open_beam_per_band``.  Truth per pixel: :meth:`radiography_truth`.
        """
        s = check_int("step", step, minimum=0, maximum=self.n_steps - 1)
        rng = np.random.default_rng([self.seed, 5, s] if seed is None else seed)
        mu_ray = self._mu_true(s).mean(axis=2)  # (n, z, x)
        phi = self.open_beam_per_band[:, None, None]
        sample = rng.poisson(phi * np.exp(-mu_ray * self.path_length_cm)).astype(np.float64)
        ob = rng.poisson(np.broadcast_to(phi, sample.shape)).astype(np.float64)
        return sample, ob

    def radiography_truth(self, step: int) -> dict:
        """Ray means along y at ``step``: Li and 6Li concentration (mol/cm^3), 6Li fraction, Li-free mu (n, z, x)."""
        s = check_int("step", step, minimum=0, maximum=self.n_steps - 1)
        c = self.li_concentration_mol_per_cm3[s].mean(axis=1)
        n6 = self.li6_concentration_mol_per_cm3[s].mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            f = np.where(c > 0, n6 / c, np.nan)
        return {"li_concentration_mol_per_cm3": c, "li6_concentration_mol_per_cm3": n6, "li6_fraction": f,
                "other_mu_per_cm": self.other_mu_per_cm[s].mean(axis=2)}

    def tof_projections(self, step: int, *, n_angles: int = 64, voxel_size_nm: float = 20000.0, margin=None,
                        center_offset: float = 0.0, open_beam_exposure: float = 4.0, counts_scale: float = 1.0,
                        seed=None) -> dict:
        """Tomography at ``step``: ToF-resolved projections of the per-voxel attenuation spectra, rows = z.

        The neutron grid's true attenuation (1/cm, constant over each voxel) is laid on square voxels of
        ``voxel_size_nm`` (a neutron-imaging voxel: the phantom's micrometre sample would barely attenuate)
        and projected exactly: each detector pixel gets the area of every voxel inside its strip (line
        integrals averaged over the pixel), parallel beam, angles over [0, 180) without end point, onto
        ``W + 2 margin`` columns (default margin: the square's corners stay on the detector), axis at column
        ``(ncol - 1) / 2 + center_offset``.  This projector is not the engine's (a pixel-driven back-projector
        with linear interpolation); only the geometry convention is shared (slices come back on the grid
        ``[margin:margin + W]``).  Poisson counts ``phi_b * counts_scale * exp(-p)`` per projection and an
        open beam of ``open_beam_exposure`` projection exposures (``phi_b``: :attr:`open_beam_per_band`).

        Returns a dict: ``counts`` (angle, bin, z, column) float32, ``open_beam`` (bin, z, column) float32,
        ``angles_deg``, ``wavelength_angstrom``, ``voxel_size_nm``, ``center`` (true axis column), ``margin``,
        ``open_beam_exposure``, ``attenuation`` (the noise-free ``p``).
        """
        s = check_int("step", step, minimum=0, maximum=self.n_steps - 1)
        na = check_int("n_angles", n_angles, minimum=8)
        vox_cm = check_number("voxel_size_nm", voxel_size_nm, minimum=0, exclusive_minimum=True) * 1e-7
        r = check_number("open_beam_exposure", open_beam_exposure, minimum=0, exclusive_minimum=True)
        scale = check_number("counts_scale", counts_scale, minimum=0, exclusive_minimum=True)
        mu = self._mu_true(s)                                   # (n, z, y, x), 1/cm
        nb, nz, ny, nx = mu.shape
        if ny != nx:
            raise InputError(f"the neutron grid's slices are {ny} x {nx}; tof_projections needs square slices")
        m = int(np.ceil(0.21 * nx)) + 2 if margin is None else check_int("margin", margin, minimum=0)
        ncol = nx + 2 * m
        center = (ncol - 1) / 2 + check_number("center_offset", center_offset, minimum=-m / 2, maximum=m / 2)
        theta = np.linspace(0.0, 180.0, na, endpoint=False)
        a = _strip_projector(ny, nx, m, ncol, center, theta)    # (angle * column, y * x)
        p = (mu.reshape(nb * nz, ny * nx) @ a.T).reshape(nb, nz, na, ncol) * vox_cm
        p = np.moveaxis(p, 2, 0)                                # (angle, bin, z, column)
        rng = np.random.default_rng([self.seed, 7, s] if seed is None else seed)
        phi = (self.open_beam_per_band * scale)[None, :, None, None]
        counts = rng.poisson(phi * np.exp(-np.maximum(p, 0.0))).astype(np.float32)
        ob = rng.poisson(np.broadcast_to(phi[0] * r, (nb, nz, ncol))).astype(np.float32)
        return {"counts": counts, "open_beam": ob, "angles_deg": theta, "wavelength_angstrom": self.wavelengths_angstrom,
                "voxel_size_nm": float(voxel_size_nm), "center": float(center), "margin": m,
                "open_beam_exposure": r, "attenuation": p.astype(np.float32)}

    def _mu_true(self, s: int) -> np.ndarray:
        return self.other_mu_per_cm[s].astype(np.float64) + _li_mu(self.wavelengths_angstrom,
                                                                     self.li6_concentration_mol_per_cm3[s],
                                                                     self.li_concentration_mol_per_cm3[s])


def _strip_projector(ny, nx, m, ncol, center, theta_deg):
    """Exact parallel projector of unit square voxels: ``(angle * column, y * x)`` areas inside each detector strip.

    Voxel ``(y, x)`` sits at ``(m + y, m + x)`` on an ``ncol``-square grid centred on the axis (the engine's
    convention: column ``(X - c0) cos(-a) + (Y - c0) sin(-a) + center``, ``c0 = (ncol - 1) / 2``).  The voxel's
    projection is the convolution of boxes of widths ``|cos|`` and ``|sin|``; its integral over a pixel uses
    the antiderivatives of ramps (``max(t, 0)^2 / 2``).
    """
    c0 = (ncol - 1) / 2
    yy, xx = np.divmod(np.arange(ny * nx), nx)
    X, Y = xx + m - c0, yy + m - c0
    k = np.arange(ncol, dtype=np.float64)
    out = np.empty((theta_deg.size, ncol, ny * nx))
    for i, t in enumerate(np.deg2rad(-theta_deg)):
        c, s = np.cos(t), np.sin(t)
        u0 = X * c + Y * s + center                                     # (voxel,)
        wa, wb = max(abs(c), 1e-3), max(abs(s), 1e-3)
        lo, hi = (k[:, None] - 0.5 - u0[None]), (k[:, None] + 0.5 - u0[None])
        total = 0.0
        for off, sign in (((wa + wb) / 2, 1), ((wa - wb) / 2, -1), ((wb - wa) / 2, -1), (-(wa + wb) / 2, 1)):
            total = total + sign * (np.maximum(hi + off, 0) ** 2 - np.maximum(lo + off, 0) ** 2) / 2
        out[i] = total / (wa * wb)
    return out.reshape(theta_deg.size * ncol, ny * nx)


def _li_mu(w, n6, c):
    """Attenuation of lithium (1/cm), (n, *grid): 6Li and 7Li 1/v absorption plus scattering (phantom constants)."""
    s6 = (SIGMA_LI6_B * w / THERMAL_WAVELENGTH_A + SIGMA_LI6_SCATTER_B) * 1e-24 * AVOGADRO
    s7 = (SIGMA_LI7_B * w / THERMAL_WAVELENGTH_A + SIGMA_LI7_SCATTER_B) * 1e-24 * AVOGADRO
    ex = (slice(None),) + (None,) * np.ndim(n6)
    return s6[ex] * n6[None] + s7[ex] * (c - n6)[None]


def _bin(a, b):
    n = tuple(s // b for s in a.shape)
    a = a[:n[0] * b, :n[1] * b, :n[2] * b]
    return a.reshape(n[0], b, n[1], b, n[2], b).mean(axis=(1, 3, 5))


def _copper_mu(w, strain):
    """Attenuation (1/cm) of dense copper under ``strain`` (array), shape (n, *strain.shape)."""
    _, _, _, s_abs, s_inc, _ = _CRYSTALS["Cu"]
    n_at = _PHASE_CRYSTAL[Phase.COLLECTOR][1]
    e, inverse = np.unique(np.asarray(strain, np.float64).ravel(), return_inverse=True)
    lam = (w[:, None] / (1.0 + e[None, :])).ravel()
    bragg = bragg_cross_section_b("Cu", lam).reshape(w.size, e.size)[:, inverse.ravel()]
    mu = n_at * (bragg + s_inc + s_abs * w[:, None] / THERMAL_WAVELENGTH_A) * 1e-24
    return mu.reshape((w.size,) + np.shape(strain))


def _step_truth(experiment, step, w, spectra, strain, f_el, exchange):
    """(phase fractions (P, grid), c, n6, other_mu (n, grid)) of one step on the neutron grid."""
    p = experiment.params
    b = p.neutron_bin
    lab = experiment.truth.labels(step, grid="lq")
    nz = lab.shape[0]
    c_phase = np.zeros(len(Phase))
    c_phase[Phase.LITHIATED_SILICON] = LI_IN_LITHIATED_SI_MOL_L * 1e-3
    c_phase[Phase.PORE] = LI_IN_ELECTROLYTE_MOL_L * 1e-3
    c_lq = c_phase[lab]
    x = exchange * (step / max(experiment.n_steps - 1, 1)) * (np.arange(nz) / max(nz - 1, 1))
    f_si = NATURAL_LI6_FRACTION + x * (f_el - NATURAL_LI6_FRACTION)
    f_lq = np.where(lab == Phase.PORE, f_el, f_si[:, None, None])
    n6 = _bin(c_lq * f_lq, b)
    c = _bin(c_lq, b)
    fr = np.stack([_bin((lab == ph).astype(np.float64), b) for ph in Phase])
    other = np.tensordot(spectra, fr, axes=(0, 0))  # (n, grid), copper unstrained
    cu = fr[Phase.COLLECTOR]
    sel = cu > 0
    if sel.any():
        strained = _copper_mu(w, strain[sel])
        other[:, sel] += cu[sel] * (strained - spectra[Phase.COLLECTOR][:, None])
    return fr, c, n6, other


def neutron_5d(experiment, *, steps=None, n_bands: int = 200, first_bin: int = 40, flight_path_m: float = 10.0,
               bin_width_us: float | None = None, electrolyte_li6_fraction: float = 0.95, exchange: float = 0.5,
               strain_amplitude: float = 2e-3, noise_per_cm: float = 0.02, moderator_k: float = 100.0,
               open_beam_counts: float = 20000.0, path_length_cm: float = 0.2, seed: int | None = None) -> Neutron5D:
    """Wavelength-resolved neutron data (t, band, z, y, x) of the series sample, with per-voxel truth.

    Parameters
    ----------
    experiment : SyntheticExperiment
    steps : sequence of int, optional
        Steps to render (default all).
    n_bands, first_bin, flight_path_m, bin_width_us
        ToF bins ``first_bin ..`` of width ``bin_width_us`` (default: 0.025 Å per bin) at ``flight_path_m``.
    electrolyte_li6_fraction, exchange
        6Li fraction of the electrolyte's lithium; how far the lithiated silicon's fraction moves towards
        it by the last step at the separator side (0..1).
    strain_amplitude
        Peak copper lattice strain (in x).
    noise_per_cm
        Per-band voxel noise at the fluence peak, 1/cm.
    moderator_k, open_beam_counts
        Maxwellian temperature of the flux spectrum, K; open-beam counts per pixel and ToF bin at its peak
        (radiography).
    path_length_cm
        Radiography path length along y, cm.
    seed : int, optional
        Noise seed (default: the experiment's).
    """
    from .experiment import SyntheticExperiment

    if not isinstance(experiment, SyntheticExperiment):
        raise InputError("experiment must be a SyntheticExperiment (tomo4d.phantom.make_experiment)")
    nb = check_int("n_bands", n_bands, minimum=8)
    fb = check_int("first_bin", first_bin, minimum=1)
    L = check_number("flight_path_m", flight_path_m, minimum=0, exclusive_minimum=True)
    bw = (0.025 * L / 3956.034 * 1e6) if bin_width_us is None else check_number(
        "bin_width_us", bin_width_us, minimum=0, exclusive_minimum=True)
    f_el = check_number("electrolyte_li6_fraction", electrolyte_li6_fraction, minimum=0, maximum=1)
    ex = check_number("exchange", exchange, minimum=0, maximum=1)
    amp = check_number("strain_amplitude", strain_amplitude, minimum=0, maximum=0.05)
    noise = check_number("noise_per_cm", noise_per_cm, minimum=0, exclusive_minimum=True)
    temp = check_number("moderator_k", moderator_k, minimum=1)
    phi0 = check_number("open_beam_counts", open_beam_counts, minimum=1)
    path = check_number("path_length_cm", path_length_cm, minimum=0, exclusive_minimum=True)
    steps = list(range(experiment.n_steps)) if steps is None else [int(s) for s in steps]
    bins = np.arange(fb, fb + nb, dtype=np.float64)
    w = tof_bin_wavelengths(bins, flight_path_m=L, bin_width_us=bw)
    lam_t = 30.81 / np.sqrt(temp)                       # Å at kT (h / sqrt(2 m k T))
    flux = w ** -5 * np.exp(-(lam_t / w) ** 2)           # Maxwellian per unit wavelength
    flux = flux / flux.max()
    sigma_b = noise / np.sqrt(flux)
    spectra = li_free_attenuation_spectra(w)
    grid = tuple(s // experiment.params.neutron_bin for s in experiment.params.shape)
    xx = np.broadcast_to(np.linspace(-1.0, 1.0, grid[2]), grid)
    strain_all = amp * xx
    seed = experiment.params.seed if seed is None else int(seed)
    rng = np.random.default_rng([seed, 55])
    out = {k: [] for k in ("fr", "c", "n6", "other", "mu")}
    for s in steps:
        fr, c, n6, other = _step_truth(experiment, s, w, spectra, strain_all, f_el, ex)
        mu = other + _li_mu(w, n6, c)
        mu += rng.standard_normal(mu.shape) * sigma_b[:, None, None, None]
        for k, v in (("fr", fr), ("c", c), ("n6", n6), ("other", other.astype(np.float32)),
                     ("mu", mu.astype(np.float32))):
            out[k].append(v)
    c, n6 = np.stack(out["c"]), np.stack(out["n6"])
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(c > 0, n6 / c, np.nan)
    fr = np.stack(out["fr"])
    cu_any = fr[:, Phase.COLLECTOR].max(axis=0) > 0
    return Neutron5D(wavelengths_angstrom=w, bins=bins, flight_path_m=L, bin_width_us=float(bw),
                     mu_per_cm=np.stack(out["mu"]), sigma_per_cm=sigma_b, open_beam_per_band=phi0 * flux,
                     li_concentration_mol_per_cm3=c, li6_concentration_mol_per_cm3=n6, li6_fraction=f,
                     phase_fractions=fr, phase_spectra_per_cm=spectra, other_mu_per_cm=np.stack(out["other"]),
                     strain=np.where(cu_any, strain_all, np.nan), copper_fraction=fr[:, Phase.COLLECTOR],
                     path_length_cm=path, seed=seed)
