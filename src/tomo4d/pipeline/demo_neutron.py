"""Demo stage ``neutron``: resolution plan, joint X-ray/neutron phases, Li map, 6Li fraction, Bragg edge.

Runs on a small synthetic solid-state cell (NMC cathode with pores | LLZO electrolyte | Li-metal
anode | gap) built here from tabulated cross sections, so every number can be checked against
its truth.  When the phantom experiment of the demo (``ctx.store["experiment"]``) carries neutron
volumes, its joint X-ray/neutron histogram is shown as well.
"""

from __future__ import annotations

import logging

import numpy as np

from .._array import bin_volume

log = logging.getLogger(__name__)

#: phases of the demo cell: name, formula, density g/cm^3, X-ray grey value
_PHASES = (("gap", None, 0.0, 0.05), ("Li metal", "Li", 0.534, 0.12), ("LLZO", "Li7La3Zr2O12", 5.1, 0.75),
           ("NMC811", "LiNi0.8Mn0.1Co0.1O2", 4.75, 1.10))
_WAVELENGTH = 1.8  # effective wavelength of the (thermal) beam, Å


def _phase_tables(li6: float):
    from ..neutron import (attenuation_from_composition, li_concentration_from_composition,
                           non_lithium_attenuation_per_cm)

    mu, mu0, conc = [], [], []
    for _, formula, rho, _ in _PHASES:
        if formula is None:
            mu.append(0.02)
            mu0.append(0.02)
            conc.append(0.0)
            continue
        mu.append(float(attenuation_from_composition(formula, density_g_per_cm3=rho, wavelength_angstrom=_WAVELENGTH,
                                                     li6_fraction=li6)))
        mu0.append(float(non_lithium_attenuation_per_cm(formula, density_g_per_cm3=rho,
                                                        wavelength_angstrom=[_WAVELENGTH])[0]))
        conc.append(li_concentration_from_composition(formula, density_g_per_cm3=rho, li6_fraction=li6))
    return np.array(mu), np.array(mu0), np.array(conc)


def _cell(rng, shape=(32, 48, 48)):
    """Truth labels 1..4 (gap, Li metal, LLZO, NMC) of a layered cell with pores in the cathode."""
    from ..neutron.synthetic import layered_cell_labels

    return layered_cell_labels(shape, rng=rng)


def _majority2(lab):
    z, y, x = (s // 2 for s in lab.shape)
    b = lab[: 2 * z, : 2 * y, : 2 * x].reshape(z, 2, y, 2, x, 2).transpose(0, 2, 4, 1, 3, 5).reshape(z, y, x, 8)
    counts = np.stack([(b == k).sum(-1) for k in range(1, 5)], -1)
    return (counts.argmax(-1) + 1).astype(np.int16)


def _plan(ctx):
    from ..neutron import NeutronSetup, XraySetup, plan_resolution

    plan = plan_resolution(5.0, neutron=NeutronSetup(collimation_ratio=1000, sample_detector_distance_mm=8,
                                                     min_sample_detector_distance_mm=4, detector_resolution_um=3),
                           xray=XraySetup(detector_pixel_um=50, source_sample_distance_mm=20,
                                          source_detector_distance_mm=100, min_source_sample_distance_mm=8))
    ctx.report.text("Resolution planner for a 5 um target: neutron R = l/(L/D) (with a 3 um detector), X-ray "
                    "R = P/M with M = SD/SO (50 um pixel, M = 5 now: the pixel would have to be under 25 um).")
    ctx.report.table(plan.header(), plan.table_rows())
    return plan


def _bragg(ctx, rng):
    from ..neutron import bragg_edge_model, cubic_d_spacing, fit_bragg_edge
    from ..neutron.plot import bragg_edge_figure

    lam0 = 2 * cubic_d_spacing(2.8665, (1, 1, 0))  # bcc Fe (110), e.g. a steel cell casing
    strain = 8e-4
    wl = np.linspace(3.5, 4.6, 280)
    t_true = bragg_edge_model(wl, edge_angstrom=lam0 * (1 + strain), width_angstrom=0.01, tail_angstrom=0.015,
                              a0=1.2, b0_per_angstrom=0.08, a_hkl=-0.3, b_hkl_per_angstrom=0.45)
    ob = rng.poisson(5e4, wl.size).astype(float)
    s = rng.poisson(5e4 * t_true).astype(float)
    t = s / ob
    sig = t * np.sqrt(1 / np.maximum(s, 1) + 1 / ob)
    fit = fit_bragg_edge(wl, t, sig, window_angstrom=(3.6, 4.5))
    st = fit.strain(lam0 / 2)
    ctx.report.figure(bragg_edge_figure(wl, t, fit, sigma=sig, expected_angstrom=lam0,
                                        title="bcc-Fe (110) Bragg edge, synthetic, strained by 800 microstrain"),
                      "Bragg-edge fit (Santisteban et al. 2001 model: erfc edge with exponential tail).")
    ctx.report.table(["quantity", "fitted", "sigma", "truth"], [
        ("edge onset lambda_hkl (Å)", float(fit.edge_position_angstrom), float(fit.edge_position_sigma_angstrom),
         lam0 * (1 + strain)),
        ("d110 (Å)", float(fit.d_spacing_angstrom), float(fit.d_spacing_sigma_angstrom), lam0 * (1 + strain) / 2),
        ("strain (microstrain)", float(st.microstrain), float(st.strain_sigma) * 1e6, strain * 1e6)])
    return fit, st


def _isotopes(ctx, rng):
    from ..neutron import (fit_li6_fraction, li_attenuation_per_cm, li_concentration_from_composition,
                           non_lithium_attenuation_per_cm)

    truth = np.array([0.0759, 0.50, 0.95])
    wl = np.linspace(1.0, 4.0, 120)
    c = li_concentration_from_composition("Li7La3Zr2O12", density_g_per_cm3=5.1)
    other = non_lithium_attenuation_per_cm("Li7La3Zr2O12", density_g_per_cm3=5.1, wavelength_angstrom=wl)
    mu_true = li_attenuation_per_cm(wl, li_concentration_mol_per_cm3=c, li6_fraction=truth) + other + 0.05
    d = 0.05
    ob = rng.poisson(5e4, mu_true.shape).astype(float)
    s = rng.poisson(5e4 * np.exp(-mu_true * d)).astype(float)
    t = np.maximum(s, 1) / ob
    mu = -np.log(t) / d
    mu_sig = np.sqrt(1 / np.maximum(s, 1) + 1 / ob) / d
    fit = fit_li6_fraction(wl, mu, mu_sig, li_concentration_mol_per_cm3=c, other_mu_per_cm=other)
    ctx.report.text("6Li fraction of three LLZO regions (natural, 50 %, 95 % enriched) from attenuation spectra "
                    "1-4 Å through 0.5 mm (Poisson noise, 5e4 open-beam counts per bin): 1/v absorption of 6Li "
                    "and 7Li plus scattering and the other elements from periodictable, fitted background.")
    ctx.report.table(["region", "6Li truth (%)", "6Li fitted (%)", "sigma (pp)", "error (pp)"],
                     [(f"LLZO {i + 1}", 100 * truth[i], 100 * float(fit.li6_fraction[i]),
                       100 * float(fit.li6_fraction_sigma[i]), 100 * float(fit.li6_fraction[i] - truth[i]))
                      for i in range(truth.size)])
    return float(np.max(np.abs(fit.li6_fraction - truth)) * 100)


def _phantom_joint(ctx) -> str:
    exp = ctx.store.get("experiment")
    series = getattr(exp, "neutron_series", None) if exp is not None else None
    if not series:
        return ""
    try:
        from ..neutron import joint_histogram, segment_joint_phases
        from ..neutron.plot import joint_histogram_figure

        step = len(series) - 1
        neu = np.asarray(series[step].numpy() if hasattr(series[step], "numpy") else series[step], np.float32)
        xr_vol = exp.series[step] if hasattr(exp, "series") else None
        if xr_vol is None:
            return ""
        xr = np.asarray(xr_vol.numpy() if hasattr(xr_vol, "numpy") else xr_vol, np.float32)
        b = int(exp.params.neutron_bin)
        n = neu.shape
        if any(s * b > t for s, t in zip(n, xr.shape)):
            return ""
        xb = bin_volume(xr, b)[: n[0], : n[1], : n[2]]
        hist = joint_histogram(xb, neu, bins=64)
        ph = segment_joint_phases(xb, neu, n_phases=4, seed=ctx.seed)
        ctx.report.figure(joint_histogram_figure(hist, ph, a_label="X-ray grey value (LQ, binned)",
                                                 b_label="neutron mu (1/cm)"),
                          f"Phantom experiment, last step: joint histogram of the X-ray LQ scan binned {b}x and the "
                          "neutron attenuation volume, with 4 Gaussian-mixture phases.")
        return f"; phantom joint histogram at step {step}"
    except Exception as exc:  # the phantom is optional: never let it break the demo
        log.warning("phantom joint histogram skipped: %s", exc)
        return ""


def _phantom_lithium(ctx) -> str:
    """Li concentration of the phantom's anode layer at every step, from its neutron volumes, against truth."""
    exp = ctx.store.get("experiment")
    if exp is None or not getattr(exp, "neutron_series", None) or not hasattr(exp, "truth"):
        return ""
    try:
        from ..neutron import (attenuation_from_phases, layer_lithium, lithium_concentration,
                               theoretical_lithium_calibration)
        from ..phantom import Phase

        tr, p = exp.truth, exp.params
        b = int(p.neutron_bin)
        psf_px = p.neutron_blur_sigma_nm / (b * p.lq_voxel_nm)
        mu0 = {int(Phase[k]): v for k, v in tr.neutron_mu_li_free_per_cm.items()}
        cal = theoretical_lithium_calibration(wavelength_angstrom=1.798, li6_fraction=tr.li6_fraction)
        rows, worst = [], 0.0
        for step in range(tr.n_steps):
            mu = np.asarray(exp.neutron_series[step].numpy(), np.float64)
            labels = tr.labels(step, grid="lq")
            li = lithium_concentration(mu, cal, matrix_mu_per_cm=attenuation_from_phases(
                labels, mu0, bin_factor=b, psf_sigma_px=psf_px), mu_sigma_per_cm=tr.neutron_noise_std)
            layer = layer_lithium(li, labels, [Phase.MATRIX, Phase.SILICON, Phase.LITHIATED_SILICON],
                                  bin_factor=b, margin_px=3 * psf_px)
            got, sem = layer.concentration_mol_l, layer.sigma_mol_l
            want = float(bin_volume(tr.li_concentration(step, grid="lq"), b)[layer.region(mu.shape)].mean())
            if step > 0:
                worst = max(worst, abs(got / want - 1))
            rows.append((tr.step_names[step], want, got, sem, 100 * (got / want - 1)))
        ctx.report.text("Phantom experiment: Li concentration of the anode layer (with a margin of 3 PSF sigma) "
                        "from its neutron attenuation volumes: mu minus the Li-free attenuation of the X-ray phase "
                        "map of each step (binned to the neutron voxels and blurred by the beam's PSF), divided by "
                        "N_A sigma_Li (absorption + scattering, periodictable).")
        ctx.report.table(["step", "Li truth (mol/L)", "Li measured (mol/L)", "sigma of mean", "error (%)"], rows)
        return f"; phantom anode Li error max {100 * worst:.1f} % (lithiated steps)"
    except Exception as exc:  # the phantom is optional: never let it break the demo
        log.warning("phantom Li concentration skipped: %s", exc)
        return ""


def stage_neutron(ctx) -> str:
    """Resolution plan, joint phases, Li map, 6Li fraction and a Bragg edge on a small synthetic cell."""
    from scipy import ndimage

    from ..neutron import (align_modalities, joint_histogram, lithium_concentration, region_values,
                           segment_joint_phases, segmentation_accuracy, theoretical_lithium_calibration)
    from ..neutron.plot import concentration_figure, joint_histogram_figure

    rng = np.random.default_rng(ctx.seed)
    ctx.report.section("Neutron and joint X-ray/neutron analysis",
                       "A small synthetic solid-state cell (NMC811 cathode with pores | LLZO | Li metal | gap): "
                       "X-ray grey values at 1 um voxels, neutron attenuation (1/cm, 1.8 Å) from tabulated cross "
                       "sections at 2 um voxels, shifted by (1, -2, 1) voxels, with noise.")
    plan = _plan(ctx)

    li6 = 0.0759
    mu_tab, mu0_tab, c_tab = _phase_tables(li6)
    lab = _cell(rng)
    xr_tab = np.array([p[3] for p in _PHASES])
    xray = ndimage.gaussian_filter(xr_tab[lab - 1], 0.7) + rng.normal(0, 0.05, lab.shape)
    mu_fine = mu_tab[lab - 1]
    neutron = ndimage.shift(bin_volume(mu_fine, 2), (1, -2, 1), order=1, mode="nearest")
    neutron = (neutron + rng.normal(0, 0.15, neutron.shape)).astype(np.float32)

    pair = align_modalities(bin_volume(xray, 2), neutron, fixed_voxel_size_nm=2000, moving_voxel_size_nm=2000)
    phases = segment_joint_phases(pair.fixed, pair.moving, n_phases=4, seed=ctx.seed)
    truth = _majority2(lab)
    acc = segmentation_accuracy(phases.labels, truth)
    hist = joint_histogram(pair.fixed, pair.moving, bins=64)
    # name the phases by their neutron attenuation order (the table's order sorted by mu)
    order = np.argsort(mu_tab, kind="stable")
    names = [_PHASES[i][0] for i in order]
    ctx.report.figure(joint_histogram_figure(hist, phases, a_label="X-ray grey value", phase_names=names),
                      f"Joint histogram after multimodal registration (translation found "
                      f"{np.round(pair.phi[:3, 3], 2).tolist()} voxels, truth [1, -2, 1]); 2-sigma ellipses of the "
                      f"Gaussian-mixture phases. Voxel accuracy {100 * acc:.1f} %.")

    # Li map: per-phase Li-free attenuation (composition) from the joint phases + cross-section calibration
    cal = theoretical_lithium_calibration(wavelength_angstrom=_WAVELENGTH, li6_fraction=li6)
    phase_to_table = order  # phase k (1-based, sorted by mu) corresponds to table row order[k-1]
    matrix = np.where(phases.labels > 0, mu0_tab[phase_to_table[np.maximum(phases.labels, 1) - 1]], 0.0)
    li = lithium_concentration(pair.moving, cal, matrix_mu_per_cm=matrix, mu_sigma_per_cm=0.15)
    rv = region_values(li.concentration_mol_per_cm3, truth, label_values=[2, 3, 4])
    errs = [(rv.mean[i] - c_tab[k - 1]) / c_tab[k - 1] for i, k in enumerate((2, 3, 4))]
    mid = li.concentration_mol_per_cm3.shape[2] // 2
    ctx.report.figure(concentration_figure(li.concentration_mol_per_cm3[:, :, mid],
                                           li.sigma_mol_per_cm3[:, :, mid],
                                           title="Li (z, y) section"),
                      "Li concentration from neutron attenuation: mu minus the Li-free attenuation of each joint "
                      "phase (composition, periodictable), divided by N_A sigma_Li(1.8 Å).")
    ctx.report.table(["phase", "Li truth (mol/cm³)", "Li measured (mol/cm³)", "sigma of mean", "error (%)"],
                     [(_PHASES[k - 1][0], c_tab[k - 1], rv.mean[i], rv.sigma_of_mean[i], 100 * errs[i])
                      for i, k in enumerate((2, 3, 4))])
    iso_err = _isotopes(ctx, rng)
    fit, st = _bragg(ctx, rng)
    extra = _phantom_joint(ctx) + _phantom_lithium(ctx)
    ctx.store["neutron_phases"] = phases
    ctx.store["li_concentration"] = li
    return (f"joint phases {100 * acc:.1f} % correct; Li error max {100 * max(abs(e) for e in errs):.1f} %; "
            f"6Li error max {iso_err:.2f} pp; Fe(110) edge {float(fit.edge_position_angstrom):.4f} Å, strain "
            f"{float(st.microstrain):.0f} microstrain; X-ray 5 um reachable: {plan.xray.reachable}" + extra)
