"""The ``neutron_spectra`` stage: Bragg edges (lattice strain) and the 6Li fraction from one spectrum per step.

Once over every step (cheap: one-dimensional fits).  Each step's transmission spectrum
``inputs.neutron_spectra[step]`` (:func:`tomo4d.neutron.read_spectrum_csv`):

* ``neutron_spectra.bragg``: every reflection's edge fitted inside its window
  (:func:`tomo4d.neutron.fit_bragg_edge`, started at ``2 d0``), its strain ``(lambda / 2 - d0) / d0``
  with ``d0 = a / sqrt(h^2 + k^2 + l^2)`` (:func:`tomo4d.neutron.cubic_d_spacing`,
  :func:`tomo4d.neutron.lattice_strain`) -> ``tables/neutron_bragg`` (one row per step and reflection;
  NaN where the fit failed: no significant edge, or it left the window).
* ``neutron_spectra.li6``: ``mu = -ln T / L`` (sigma ``sigma_T / (T L)``) and the Li-free attenuation
  ``li_free_mu_per_cm x lambda / 1.798 Å`` (1/v; one number or one per step) give the 6Li fraction with a constant background
  (:func:`tomo4d.neutron.fit_li6_fraction`) at the step's Li concentration (the section's, or the
  ``neutron_layer`` stage's layer Li) -> ``tables/neutron_li6`` (NaN where the step has no lithium).

Truth beside (``truth.lattice_strain``, ``truth.li6_fraction``).  The spectra and the fitted edge
models -> ``tables/neutron_spectra.npz`` (the report's figure).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..neutron.xs import THERMAL_WAVELENGTH_ANGSTROM
from .inputs_neutron_spectra import per_step, read_step_spectrum
from .stage import Stage, rel
from .stage_io import read_table_of, write_tables

__all__ = ["NEUTRON_SPECTRA", "spectra_npz"]

log = logging.getLogger(__name__)


def spectra_npz(out: Path) -> Path:
    """The saved spectra and fitted edge models of a run folder."""
    return Path(out) / "tables" / "neutron_spectra.npz"


def _bragg(sec, name, sp, saved) -> list[dict]:
    from ..neutron import fit_bragg_edge

    w, t = sp.wavelength_angstrom, sp.values
    rows = []
    for r in sec.bragg:
        d0, win = r.d0_angstrom(), r.window()
        fit = fit_bragg_edge(w, t, sp.sigma, window_angstrom=win, edge_guess_angstrom=2.0 * d0, profile=r.profile)
        st = fit.strain(d0)
        rows.append({"step": name, "reflection": r.name, "hkl": "".join(str(h) for h in r.hkl),
                     "d0_angstrom": d0, "edge_angstrom": float(fit.edge_angstrom),
                     "edge_sigma_angstrom": float(fit.edge_sigma_angstrom),
                     "width_angstrom": float(fit.edge_width_angstrom), "strain": float(st.strain),
                     "strain_sigma": float(st.strain_sigma), "chi2_reduced": float(fit.chi2_reduced)})
        wm = np.linspace(win[0], win[1], 200)
        saved[f"{name}__{r.name}__model_wavelength"] = wm
        saved[f"{name}__{r.name}__model"] = fit.model(wm) if bool(fit.ok) else np.full(wm.shape, np.nan)
    return rows


def _li6(sec, name, sp, c_mol_l, li_free) -> dict:
    from ..neutron import fit_li6_fraction

    li6 = sec.li6
    w, t = sp.wavelength_angstrom, sp.values
    keep = np.ones(w.shape, bool)
    if li6.wavelength_range_angstrom is not None:
        lo, hi = li6.wavelength_range_angstrom
        keep = (w >= lo) & (w <= hi)
    L = li6.path_length_mm * 0.1
    mu = -np.log(t[keep]) / L
    sig = None if sp.sigma is None else sp.sigma[keep] / t[keep] / L
    other = li_free * w[keep] / THERMAL_WAVELENGTH_ANGSTROM
    row = {"step": name, "li_mol_l": c_mol_l, "li6_fraction": np.nan, "li6_fraction_sigma": np.nan,
           "background_per_cm": np.nan, "chi2_reduced": np.nan}
    if not (np.isfinite(c_mol_l) and c_mol_l > 0):
        log.warning("neutron_spectra: %s has Li concentration %s mol/L: no 6Li fraction", name, c_mol_l)
        return row
    fit = fit_li6_fraction(w[keep], mu, sig, li_concentration_mol_per_cm3=c_mol_l * 1e-3, other_mu_per_cm=other)
    row.update(li6_fraction=float(fit.li6_fraction), li6_fraction_sigma=float(fit.li6_fraction_sigma),
               background_per_cm=float(fit.background_per_cm), chi2_reduced=float(fit.chi2_reduced))
    return row


def _columns(rows: list[dict]) -> dict:
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}


def _with_truth(ctx, bragg, li6):
    truth, n = ctx.experiment.truth, ctx.inputs.n_steps
    idx = {s: i for i, s in enumerate(ctx.inputs.names)}
    if truth is not None and truth.lattice_strain and bragg is not None:
        want = {k: per_step(v, n) for k, v in truth.lattice_strain.items()}
        bragg["true_strain"] = np.asarray([want[r][idx[s]] if r in want else np.nan
                                           for s, r in zip(bragg["step"], bragg["reflection"])])
    if truth is not None and truth.li6_fraction is not None and li6 is not None:
        li6["true_li6_fraction"] = np.asarray(per_step(truth.li6_fraction, n))
        li6["error_pp"] = 100.0 * (li6["li6_fraction"] - li6["true_li6_fraction"])


def _run(ctx):
    sec, inp = ctx.experiment.neutron_spectra, ctx.inputs
    n = inp.n_steps
    if sec.li6 is not None:
        conc = per_step(sec.li6.li_concentration_mol_l, n) if not sec.li6.from_neutron_layer else \
            [float(v) for v in ctx.load("neutron_layer")["li_mol_l"]]
        li_free = per_step(sec.li6.li_free_mu_per_cm, n) or [0.0] * n
    saved, b_rows, l_rows = {}, [], []
    for i, (name, path) in enumerate(zip(inp.names, inp.neutron_spectra)):
        sp = read_step_spectrum(path, f"inputs.neutron_spectra[{i}] ({name})")
        saved[f"{name}__wavelength"] = sp.wavelength_angstrom
        saved[f"{name}__transmission"] = np.asarray(sp.values, float)
        if sp.sigma is not None:
            saved[f"{name}__sigma"] = np.asarray(sp.sigma, float)
        if sec.bragg is not None:
            b_rows += _bragg(sec, name, sp, saved)
        if sec.li6 is not None:
            l_rows.append(_li6(sec, name, sp, conc[i], li_free[i]))
    bragg = _columns(b_rows) if b_rows else None
    li6 = _columns(l_rows) if l_rows else None
    _with_truth(ctx, bragg, li6)
    return bragg, li6, saved


def _save(result, out):
    from ..io import atomic_output

    bragg, li6, saved = result
    paths = ()
    if bragg is not None:
        paths += write_tables(bragg, out, "neutron_bragg")
    if li6 is not None:
        paths += write_tables(li6, out, "neutron_li6")
    with atomic_output(spectra_npz(out), overwrite=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **saved)
    return paths + (rel(out, spectra_npz(out)),)


def _options(exp) -> dict:
    t = exp.truth
    return {"neutron_spectra": json.loads(exp.neutron_spectra.model_dump_json()), "inputs.names": exp.inputs.names,
            "truth.li6_fraction": t.li6_fraction if t is not None else None,
            "truth.lattice_strain": t.lattice_strain if t is not None else None}


def _reads(exp, need: str) -> bool:
    li6 = exp.neutron_spectra.li6
    return need == "neutron_layer" and li6 is not None and li6.from_neutron_layer


NEUTRON_SPECTRA = Stage(
    name="neutron_spectra", needs=("neutron_layer",), per_step=False,
    description="Bragg edges (lattice strain) and the 6Li fraction of each step's transmission spectrum",
    outputs="tables/neutron_bragg, tables/neutron_li6, tables/neutron_spectra.npz",
    enabled=lambda exp, inp: exp.neutron_spectra is not None and bool(inp.neutron_spectra),
    options=_options,
    input_files=lambda inp, step: {f"inputs.neutron_spectra[{i}]": p for i, p in enumerate(inp.neutron_spectra)},
    run=_run, save=_save, load=lambda out: read_table_of(out, "neutron_bragg"), reads=_reads)
