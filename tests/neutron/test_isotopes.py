"""6Li fraction from attenuation vs wavelength (acceptance: within 0.5 percentage points) and exchange maps."""

import numpy as np
import pytest
from neutron_synth import isotope_spectra

from tomo4d import InputError
from tomo4d.neutron import NATURAL_LI6_FRACTION, fit_li6_fraction, isotope_exchange, li_attenuation_per_cm

FRACTIONS = [NATURAL_LI6_FRACTION, 0.30, 0.95]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_li6_fraction_within_half_a_percentage_point(seed):
    rng = np.random.default_rng(seed)
    wl, mu, sig, c_li, other = isotope_spectra(rng, FRACTIONS, counts=5e4)
    fit = fit_li6_fraction(wl, mu, sig, li_concentration_mol_per_cm3=c_li, other_mu_per_cm=other)
    assert fit.ok.all()
    err_pp = 100 * (fit.li6_fraction - FRACTIONS)
    assert np.all(np.abs(err_pp) < 0.5), err_pp
    assert np.all(fit.li6_fraction_sigma * 100 < 0.3)
    assert np.all(np.abs(fit.background_per_cm - 0.05) < 5 * fit.background_sigma_per_cm + 1e-3)


def test_uncertainty_is_calibrated():
    rng = np.random.default_rng(11)
    truth = np.full(60, 0.2)
    wl, mu, sig, c_li, other = isotope_spectra(rng, truth, counts=2e4)
    fit = fit_li6_fraction(wl, mu, sig, li_concentration_mol_per_cm3=c_li, other_mu_per_cm=other)
    pulls = (fit.li6_fraction - truth) / fit.li6_fraction_sigma
    assert abs(pulls.mean()) < 0.4
    assert 0.7 < pulls.std() < 1.35


def test_ignoring_the_background_biases_the_fit():
    rng = np.random.default_rng(12)
    wl, mu, sig, c_li, other = isotope_spectra(rng, [0.3], counts=5e4, background_per_cm=0.5)
    good = fit_li6_fraction(wl, mu, sig, li_concentration_mol_per_cm3=c_li, other_mu_per_cm=other)
    bad = fit_li6_fraction(wl, mu, sig, li_concentration_mol_per_cm3=c_li, other_mu_per_cm=other,
                           fit_background=False)
    assert abs(good.li6_fraction[0] - 0.3) < 0.005
    assert abs(bad.li6_fraction[0] - 0.3) > 0.005
    assert bad.chi2_reduced[0] > 1.5 * good.chi2_reduced[0]


def test_isotope_exchange_map():
    rng = np.random.default_rng(13)
    before_f = np.array([[0.95, 0.95], [0.95, 0.95]])
    after_f = np.array([[0.95, 0.80], [0.60, 0.95]])
    wl, mu0, s0, c, other = isotope_spectra(rng, before_f, counts=5e4)
    _, mu1, s1, _, _ = isotope_spectra(rng, after_f, counts=5e4)
    b = fit_li6_fraction(wl, mu0, s0, li_concentration_mol_per_cm3=c, other_mu_per_cm=other)
    a = fit_li6_fraction(wl, mu1, s1, li_concentration_mol_per_cm3=c, other_mu_per_cm=other)
    ex = isotope_exchange(b, a)
    assert ex.delta_li6_fraction.shape == (2, 2)
    assert np.allclose(ex.delta_li6_fraction, after_f - before_f, atol=0.01)
    assert ex.significant.tolist() == [[False, True], [True, False]]


def test_failed_spectra_are_flagged_not_raised():
    rng = np.random.default_rng(14)
    wl, mu, sig, c, other = isotope_spectra(rng, [0.1, 0.1])
    mu[1, :] = np.nan  # a region without data
    fit = fit_li6_fraction(wl, mu, sig, li_concentration_mol_per_cm3=c, other_mu_per_cm=other)
    assert fit.ok.tolist() == [True, False] and np.isnan(fit.li6_fraction[1])


@pytest.mark.parametrize("kw,match", [
    (dict(wavelength_angstrom=[3.0, 2.0, 1.0], mu_per_cm=np.ones(3)), "not strictly increasing"),
    (dict(wavelength_angstrom=[1.0, 2.0, 3.0], mu_per_cm=np.ones(4)), "LAST axis"),
    (dict(wavelength_angstrom=[1.0, 2.0, 3.0], mu_per_cm=np.ones(3), li_concentration_mol_per_cm3=0.0), "> 0"),
    (dict(wavelength_angstrom=[1.0, 2.0, 3.0], mu_per_cm=np.ones(3), other_mu_per_cm=np.ones(5)), "other_mu"),
    (dict(wavelength_angstrom=[1.0, 2.0, 3.0], mu_per_cm=np.ones(3), mu_sigma_per_cm=-1.0), "> 0"),
])
def test_bad_isotope_input(kw, match):
    kw.setdefault("li_concentration_mol_per_cm3", 0.04)
    with pytest.raises(InputError, match=match):
        fit_li6_fraction(**kw)


def test_forward_model_shape_and_values():
    wl = np.array([1.798, 3.596])
    mu = li_attenuation_per_cm(wl, li_concentration_mol_per_cm3=[0.01, 0.02], li6_fraction=1.0)
    assert mu.shape == (2, 2)
    assert mu[0, 0] == pytest.approx(0.01 * 6.02214076e23 * (940 + 0.97) * 1e-24)
    assert mu[1, 1] == pytest.approx(0.02 * 6.02214076e23 * (1880 + 0.97) * 1e-24)
