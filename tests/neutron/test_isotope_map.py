"""Per-spectrum isotope maps (fit_isotope_map): truth recovery, calibrated errors, binning, save/load, refusals."""

import numpy as np
import pytest

from tomo4d.errors import FormatError, InputError
from tomo4d.neutron import IsotopeMap, bin_spectra, fit_isotope_map, fit_li6_fraction, li_attenuation_per_cm

W = np.linspace(1.0, 6.0, 60)


def _data(seed=0, shape=(40, 50), c=0.05, noise=0.05):
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.05, 0.9, shape)
    mu = li_attenuation_per_cm(W, li_concentration_mol_per_cm3=c, li6_fraction=f) + 0.3
    sig = np.full(mu.shape, noise)
    return f, mu + rng.standard_normal(mu.shape) * sig, sig


def test_fraction_map_recovers_truth_with_calibrated_errors():
    f, mu, sig = _data()
    r = fit_isotope_map(W, mu, sig, li_concentration_mol_per_cm3=0.05)
    assert r.mode == "fraction" and r.ok.all()
    z = (r.li6_fraction - f) / r.li6_fraction_sigma
    assert abs(z.mean()) < 0.1 and np.std(z) == pytest.approx(1.0, abs=0.1)
    assert np.all(np.abs(r.li6_fraction - f) < 0.01)            # 1 percentage point
    np.testing.assert_allclose(r.li6_concentration_mol_per_cm3, 0.05 * r.li6_fraction)
    # the same numbers as the per-region fit
    ref = fit_li6_fraction(W, mu, sig, li_concentration_mol_per_cm3=0.05)
    np.testing.assert_allclose(r.li6_fraction, ref.li6_fraction, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r.li6_fraction_sigma, ref.li6_fraction_sigma, rtol=1e-9)


def test_concentration_map_with_known_fraction():
    f, mu, sig = _data(seed=1)
    r = fit_isotope_map(W, mu, sig, li6_fraction=f)
    z = (r.li_concentration_mol_per_cm3 - 0.05) / r.li_concentration_sigma_mol_per_cm3
    assert r.mode == "concentration" and r.ok.all()
    assert abs(z.mean()) < 0.1 and np.std(z) == pytest.approx(1.0, abs=0.1)


def test_both_free_needs_no_background_and_reports_large_uncertainty():
    f, mu, sig = _data(seed=2, noise=0.005)
    with pytest.raises(InputError, match="fit_background=False"):
        fit_isotope_map(W, mu, sig)
    r = fit_isotope_map(W, mu - 0.3, sig, fit_background=False)
    assert r.mode == "both"
    good = r.ok
    assert good.mean() > 0.9
    # n6 (6Li absorption) is sharp, the total (7Li's 1.4 b scattering) is not
    rel6 = np.nanmedian(r.li6_concentration_sigma_mol_per_cm3 / r.li6_concentration_mol_per_cm3)
    relc = np.nanmedian(r.li_concentration_sigma_mol_per_cm3 / r.li_concentration_mol_per_cm3)
    assert rel6 < 0.01 < relc
    np.testing.assert_allclose(np.nanmedian(r.li_concentration_mol_per_cm3), 0.05, rtol=0.2)


def test_macro_pixel_binning_averages_and_shrinks_sigma():
    f, mu, sig = _data(seed=3, shape=(20, 30))
    r1 = fit_isotope_map(W, mu, sig, li_concentration_mol_per_cm3=0.05)
    r2 = fit_isotope_map(W, mu, sig, li_concentration_mol_per_cm3=0.05, bin_factor=2)
    assert r2.li6_fraction.shape == (10, 15) and r2.bin_factor == 2
    fb = f.reshape(10, 2, 15, 2).mean(axis=(1, 3))
    z = (r2.li6_fraction - fb) / r2.li6_fraction_sigma
    assert np.std(z) == pytest.approx(1.0, abs=0.2)
    assert np.median(r2.li6_fraction_sigma) == pytest.approx(np.median(r1.li6_fraction_sigma) / 2, rel=0.1)
    m, s = bin_spectra(np.ones((5, 4, 3)), 2, sigma=np.ones((5, 4, 3)))
    assert m.shape == (2, 2, 3) and np.allclose(s, 0.5)


def test_nan_bins_are_ignored_and_all_nan_is_flagged():
    f, mu, sig = _data(seed=4, shape=(6, 7))
    mu[0, 0, :10] = np.nan
    mu[1, 1, :] = np.nan
    r = fit_isotope_map(W, mu, sig, li_concentration_mol_per_cm3=0.05)
    assert r.ok[0, 0] and not r.ok[1, 1] and np.isnan(r.li6_fraction[1, 1])
    assert abs(r.li6_fraction[0, 0] - f[0, 0]) < 5 * r.li6_fraction_sigma[0, 0]
    c = np.full(f.shape, 0.05)
    c[2, 3] = 0.0                                           # no lithium there: flagged, not fitted
    r = fit_isotope_map(W, mu, sig, li_concentration_mol_per_cm3=c)
    assert not r.ok[2, 3] and np.isnan(r.li6_fraction[2, 3]) and r.ok[3, 3]


def test_save_load_round_trip(tmp_path):
    f, mu, sig = _data(seed=5, shape=(4, 5))
    r = fit_isotope_map(W, mu, sig, li_concentration_mol_per_cm3=np.full((4, 5), 0.05))
    p = r.save(tmp_path / "iso.npz")
    back = IsotopeMap.load(p)
    assert back.mode == r.mode and back.bin_factor == 1
    for k, v in r.arrays().items():
        np.testing.assert_array_equal(getattr(back, k), v)
    np.savez(tmp_path / "other.npz", a=np.ones(3))
    with pytest.raises(FormatError, match="not a tomo4d isotope map"):
        IsotopeMap.load(tmp_path / "other.npz")


@pytest.mark.parametrize("kw, match", [
    (dict(li_concentration_mol_per_cm3=0.05, li6_fraction=0.1), "not both"),
    (dict(li_concentration_mol_per_cm3=0.0), "> 0"),
    (dict(li_concentration_mol_per_cm3=np.full((4, 5), -1.0)), "> 0"),
    (dict(li6_fraction=1.5), r"\[0, 1\]"),
    (dict(li_concentration_mol_per_cm3=np.ones((3, 3))), "shape"),
    (dict(li_concentration_mol_per_cm3=0.05, other_mu_per_cm=np.ones(7)), "other_mu_per_cm"),
    (dict(li_concentration_mol_per_cm3=0.05, bin_factor=0), "bin_factor"),
])
def test_bad_arguments_are_refused(kw, match):
    f, mu, sig = _data(seed=6, shape=(4, 5))
    with pytest.raises(InputError, match=match):
        fit_isotope_map(W, mu, sig, **kw)
