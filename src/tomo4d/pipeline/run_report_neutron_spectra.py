"""Report section of the ``neutron_spectra`` stage, from saved outputs only (``tables/neutron_bragg``,
``tables/neutron_li6``, ``tables/neutron_spectra.npz``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .stage_io import read_table_of

__all__ = ["neutron_spectra_section"]


def _bragg(rep, out: Path) -> None:
    t = read_table_of(out, "neutron_bragg")
    if t is None:
        return
    truth = "true_strain" in t
    rows = [(t["step"][i], t["reflection"][i], t["d0_angstrom"][i], 2 * t["d0_angstrom"][i], t["edge_angstrom"][i],
             t["edge_sigma_angstrom"][i], 1e6 * t["strain"][i], 1e6 * t["strain_sigma"][i])
            + ((1e6 * t["true_strain"][i],) if truth else ()) for i in range(len(t["step"]))]
    rep.table(["step", "reflection", "d0 (Å)", "2 d0 (Å)", "edge (Å)", "edge sigma (Å)", "strain (1e-6)",
               "strain sigma (1e-6)"] + (["true strain (1e-6)"] if truth else []), rows,
              caption="Fitted Bragg edge of every reflection per step (tables/neutron_bragg) and the lattice strain "
                      "(edge / 2 - d0) / d0 against d0 = a / sqrt(h²+k²+l²); NaN: no significant edge in the window."
                      + (" Truth: truth.lattice_strain." if truth else ""))


def _li6(rep, out: Path) -> None:
    t = read_table_of(out, "neutron_li6")
    if t is None:
        return
    truth = "true_li6_fraction" in t
    rows = [(t["step"][i], t["li_mol_l"][i], 100 * t["li6_fraction"][i], 100 * t["li6_fraction_sigma"][i],
             t["chi2_reduced"][i]) + ((100 * t["true_li6_fraction"][i], t["error_pp"][i]) if truth else ())
            for i in range(len(t["step"]))]
    rep.table(["step", "Li (mol/L)", "6Li (%)", "sigma (pp)", "chi² red."]
              + (["true 6Li (%)", "error (pp)"] if truth else []), rows,
              caption="6Li atom fraction of the lithium the spectra cross (tables/neutron_li6): -ln T / L fitted "
                      "with the 1/v absorption of 6Li and 7Li at the step's Li concentration; NaN: no lithium. "
                      "Natural lithium: 7.59 %." + (" Truth: truth.li6_fraction." if truth else ""))


def _figure_of(z, step: str, reflections, d0):
    from matplotlib.figure import Figure

    w, t = z[f"{step}__wavelength"], z[f"{step}__transmission"]
    fig = Figure(figsize=(6, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    if f"{step}__sigma" in z:
        s = z[f"{step}__sigma"]
        ax.fill_between(w, t - s, t + s, color="0.8", lw=0)
    ax.plot(w, t, color="0.3", lw=0.8, label="measured")
    for k, (name, d) in enumerate(zip(reflections, d0)):
        key = f"{step}__{name}__model"
        if key in z:
            ax.plot(z[f"{key}_wavelength"], z[key], color=f"C{k}", lw=1.6, label=f"{name} fit")
        ax.axvline(2 * d, color=f"C{k}", ls=":", lw=1)
    ax.set_xlabel("wavelength (Å)")
    ax.set_ylabel("transmission")
    ax.set_title(f"{step}: spectrum, fitted edges (dotted: 2 d0)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def neutron_spectra_section(rep, out: Path, info: dict, figure) -> None:
    """Neutron: spectra: Bragg edges and strain per step, the 6Li fraction, the last step's spectrum with its fits."""
    rep.section("Neutron: spectra",
                "One transmission spectrum per step (inputs.neutron_spectra): Bragg edges fitted per reflection "
                "(tomo4d.neutron.fit_bragg_edge, lattice strain against the tabulated lattice parameter) and the "
                "6Li fraction of the lithium (tomo4d.neutron.fit_li6_fraction).")
    _bragg(rep, out)
    _li6(rep, out)
    path = out / "tables" / "neutron_spectra.npz"
    t = read_table_of(out, "neutron_bragg")
    if not path.exists():
        return
    step = info["names"][-1]
    refl, d0 = [], []
    if t is not None:
        sel = np.asarray(t["step"]) == step
        refl, d0 = list(np.asarray(t["reflection"])[sel]), list(np.asarray(t["d0_angstrom"])[sel])
    with np.load(path) as z:
        if f"{step}__wavelength" not in z:
            return
        fig = _figure_of(z, step, refl, d0)
    figure(rep, fig, out, "neutron_spectrum", f"Transmission spectrum of {step} (grey band: ± sigma) with the fitted "
                                              "Bragg edges (tables/neutron_spectra.npz).")
