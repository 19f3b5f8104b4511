"""Issue-9 acceptance on the phantom's neutron data: Li concentration (5 %), 6Li fraction (0.5 pp), joint phases.

The neutron volumes and spectra come from :mod:`tomo4d.phantom` (its own forward model, with its
own cross-section constants); the analysis uses only :mod:`tomo4d.neutron` and what a user would
know: the X-ray phase map (here the truth labels), each component's Li-free attenuation and Li
content (``truth.neutron_mu_li_free_per_cm``, ``truth.li_concentration_mol_l``,
:func:`tomo4d.phantom.neutron.li_free_attenuation_spectra`), the beam's resolution and the 6Li
fraction of the cell's lithium for the thermal Li map.
"""

import numpy as np
import pytest
from scipy import ndimage as ndi

from tomo4d._array import bin_volume
from tomo4d.neutron import (
    align_modalities,
    attenuation_from_phases,
    fit_li6_fraction,
    isotope_exchange,
    layer_lithium,
    lithium_concentration,
    segment_joint_phases,
    segmentation_accuracy,
    theoretical_lithium_calibration,
)
from tomo4d.phantom import Phase, make_experiment
from tomo4d.phantom.neutron import li_free_attenuation_spectra, transmission_spectra


@pytest.fixture(scope="module")
def experiment():
    return make_experiment(shape=(96, 96, 96), n_steps=4, seed=0)


def test_li_concentration_of_the_anode_within_5_percent_at_every_step(experiment):
    exp, tr = experiment, experiment.truth
    b = exp.params.neutron_bin
    psf_px = exp.params.neutron_blur_sigma_nm / (b * exp.params.lq_voxel_nm)
    mu0 = {int(Phase[k]): v for k, v in tr.neutron_mu_li_free_per_cm.items()}
    # k = N_A (sigma_a + sigma_s) of Li from periodictable, at the beam's wavelength and 6Li fraction
    cal = theoretical_lithium_calibration(wavelength_angstrom=1.798, li6_fraction=tr.li6_fraction)
    anode = [Phase.MATRIX, Phase.SILICON, Phase.LITHIATED_SILICON]
    for step in range(tr.n_steps):
        mu = exp.neutron_series[step].compute().data
        labels = tr.labels(step, grid="lq")          # the X-ray phase map of this step (follows the swelling)
        matrix = attenuation_from_phases(labels, mu0, bin_factor=b, psf_sigma_px=psf_px)
        li = lithium_concentration(mu, cal, matrix_mu_per_cm=matrix, mu_sigma_per_cm=tr.neutron_noise_std)
        # the anode layer (rows mostly anode solids) with a margin of 3 PSF sigma: the blur moves Li
        # across the layer's faces but not out of the margin
        layer = layer_lithium(li, labels, anode, bin_factor=b, margin_px=3 * psf_px)
        measured, sem = layer.concentration_mol_l, layer.sigma_mol_l
        truth = float(bin_volume(tr.li_concentration(step, grid="lq"), b)[layer.region(mu.shape)].mean())
        assert abs(measured - truth) <= 4 * sem + 1e-3 * truth, (step, measured, truth, sem)
        if step > 0:                                  # lithiated: 5 to 15 mol/L in the layer
            assert measured == pytest.approx(truth, rel=0.05), (step, measured, truth)
        else:                                         # pristine: electrolyte only (0.2 mol/L), noise-limited
            assert abs(measured - truth) < 0.05, (measured, truth)
    assert truth > 5.0


def _noisy_mu(spectra, *, open_beam_counts, rng):
    """-ln T / L from Poisson counts of sample and open beam (4x the open-beam time) per wavelength bin."""
    n0 = float(open_beam_counts)
    ob = rng.poisson(4 * n0, size=spectra.transmission.shape) / 4.0
    counts = rng.poisson(n0 * spectra.transmission)
    L = spectra.path_length_mm * 0.1
    mu = -np.log(counts / ob) / L
    sigma = np.sqrt(1.0 / np.maximum(counts, 1) + 1.0 / (4 * n0)) / L
    return mu, sigma


@pytest.mark.parametrize("li6", [0.075, 0.30, 0.95])
def test_li6_fraction_of_the_anode_within_half_a_percentage_point(experiment, li6):
    exp, tr = experiment, experiment.truth
    lam = np.linspace(1.0, 7.0, 300)
    # 1 mm of cell, 2e4 open-beam counts per wavelength bin and region (e.g. 400 pixels x 50 counts)
    sp = transmission_spectra(exp, 3, wavelengths_a=lam, li6_fraction=li6, path_length_mm=1.0)
    mu, sigma = _noisy_mu(sp, open_beam_counts=2e4, rng=np.random.default_rng(7))
    i = sp.region_names.index("anode")
    # what the user knows: phase fractions of the region from X-ray, each phase's Li content and
    # Li-free spectrum (reference measurements of the pristine components; Bragg edges included)
    li_table = np.array([tr.li_concentration_mol_l[ph.name] for ph in Phase])
    c = float(sp.phase_fractions[i] @ li_table) * 1e-3
    other = sp.phase_fractions[i] @ li_free_attenuation_spectra(lam)
    fit = fit_li6_fraction(lam, mu[i], sigma[i], li_concentration_mol_per_cm3=c, other_mu_per_cm=other)
    assert bool(fit.ok)
    assert abs(float(fit.li6_fraction) - li6) < 0.005, (float(fit.li6_fraction), li6)
    assert abs(float(fit.li6_fraction) - li6) < 4 * float(fit.li6_fraction_sigma)
    assert 0.5 < float(fit.chi2_reduced) < 2.0


def test_isotope_exchange_between_two_states_is_detected(experiment):
    """Natural Li in the anode at T2, then 6Li-enriched electrolyte exchanged in (30 %): significant change."""
    exp, tr = experiment, experiment.truth
    lam = np.linspace(1.0, 7.0, 300)
    fits = []
    for li6, seed in ((0.075, 1), (0.30, 2)):
        sp = transmission_spectra(exp, 2, wavelengths_a=lam, li6_fraction=li6)
        mu, sigma = _noisy_mu(sp, open_beam_counts=2e4, rng=np.random.default_rng(seed))
        li_table = np.array([tr.li_concentration_mol_l[ph.name] for ph in Phase])
        c = sp.phase_fractions @ li_table * 1e-3
        other = sp.phase_fractions @ li_free_attenuation_spectra(lam)
        keep = c > 1e-3  # regions with enough lithium (anode, separator electrolyte); not the collector
        fits.append(fit_li6_fraction(lam, mu[keep], sigma[keep], li_concentration_mol_per_cm3=c[keep],
                                     other_mu_per_cm=other[keep]))
    ex = isotope_exchange(*fits)
    anode = 0  # regions kept: anode, separator
    assert bool(np.asarray(ex.significant)[anode])
    assert float(np.asarray(ex.delta_li6_fraction)[anode]) == pytest.approx(0.225, abs=0.005)


def _coarse_phases(labels):
    """Phase of each X-ray voxel at the scale the neutron beam sees: pores (100 nm, far below the
    neutron resolution) belong to the composite around them, matrix or separator."""
    lab = labels.copy()
    near_matrix = ndi.gaussian_filter((labels == Phase.MATRIX).astype(np.float32), 3)
    near_separator = ndi.gaussian_filter((labels == Phase.SEPARATOR).astype(np.float32), 3)
    pore = labels == Phase.PORE
    lab[pore & (near_matrix >= near_separator)] = Phase.MATRIX
    lab[pore & (near_separator > near_matrix)] = Phase.SEPARATOR
    return lab


@pytest.mark.slow
def test_joint_xray_neutron_segmentation_on_the_phantom():
    """X-ray LQ + a 200 nm neutron tomogram (bin 2, 200 nm blur) of the lithiated cell (particle radius
    900 nm), 5 phases.

    Accuracy >= 95 % on the voxels that both modalities resolve (the phase's share of the voxel's
    point-spread footprint >= 0.8, about two thirds of the volume); over every voxel, interfaces
    included, it is about 0.8 and is guarded here.
    """
    exp = make_experiment(shape=(96, 96, 96), n_steps=3, seed=0, particle_radius_nm=900.0, neutron_bin=2,
                          neutron_blur_sigma_nm=200.0)
    tr = exp.truth
    b = exp.params.neutron_bin
    xray = exp.series[2].compute().data
    neutron = exp.neutron_series[2].compute().data
    phases = [Phase.MATRIX, Phase.SILICON, Phase.LITHIATED_SILICON, Phase.COLLECTOR, Phase.SEPARATOR]
    lab = _coarse_phases(tr.labels(2, grid="lq"))
    share = np.stack([bin_volume((lab == p).astype(np.float32), b) for p in phases])
    truth = share.argmax(0)
    psf_px = np.hypot(exp.params.neutron_blur_sigma_nm, tr.lq_blur_sigma_nm) / (b * exp.params.lq_voxel_nm)
    resolved = np.stack([ndi.gaussian_filter(s, psf_px, mode="nearest") for s in share]).max(0) >= 0.8
    # the X-ray volume binned to the neutron voxels is the fixed grid; the neutron volume is registered onto it
    pair = align_modalities(bin_volume(xray, b), neutron, fixed_voxel_size_nm=b * 100, moving_voxel_size_nm=b * 100)
    assert np.all(np.abs(pair.phi[:3, 3]) < 1.0)
    seg = segment_joint_phases(pair.fixed, pair.moving, n_phases=len(phases), seed=0)
    acc = segmentation_accuracy(seg.labels, truth, mask=resolved)
    assert 0.5 < resolved.mean() < 0.9
    # every phase but pristine Si (nearly all lithiated at T2) is represented among the resolved voxels
    assert np.all(np.bincount(truth[resolved], minlength=5)[[0, 2, 3, 4]] > 500)
    assert acc >= 0.95, acc
    assert segmentation_accuracy(seg.labels, truth) > 0.75
    # the lithiated silicon is the phase of highest neutron attenuation (Li), near its X-ray grey
    assert seg.means[-1, 1] > 2.0 and abs(seg.means[-1, 0] - tr.grey_values["LITHIATED_SILICON"]) < 0.08
