"""The phantom's 5D neutron modality: truth consistency, noise model, strained copper, ToF radiography."""

import numpy as np
import pytest

from tomo4d.errors import InputError
from tomo4d.neutron import NATURAL_LI6_FRACTION, li_attenuation_per_cm, tof_bin_wavelengths
from tomo4d.phantom import Phase, make_experiment
from tomo4d.phantom.neutron import bragg_cross_section_b
from tomo4d.phantom.neutron5d import neutron_5d


@pytest.fixture(scope="module")
def d():
    return neutron_5d(make_experiment(shape=(32, 32, 32), n_steps=2, seed=1), n_bands=64)


def test_shapes_wavelengths_and_noise_model(d):
    assert d.mu_per_cm.shape == (2, 64, 8, 8, 8) and d.mu_per_cm.dtype == np.float32
    np.testing.assert_allclose(d.wavelengths_angstrom, tof_bin_wavelengths(d.bins, flight_path_m=d.flight_path_m,
                                                                           bin_width_us=d.bin_width_us))
    assert d.wavelengths_angstrom[0] == pytest.approx(1.0, abs=1e-6)
    # sigma_b = noise * sqrt(phi_max / phi_b), and the residuals follow it
    np.testing.assert_allclose(d.sigma_per_cm, 0.02 * np.sqrt(d.open_beam_per_band.max() / d.open_beam_per_band))
    truth = d._mu_true(1)
    z = (d.mu_per_cm[1] - truth) / d.sigma_per_cm[:, None, None, None]
    assert np.std(z) == pytest.approx(1.0, abs=0.05) and abs(np.mean(z)) < 0.05


def test_isotope_truth(d):
    c, n6, f = d.li_concentration_mol_per_cm3, d.li6_concentration_mol_per_cm3, d.li6_fraction
    np.testing.assert_allclose(n6[c > 0], (f * c)[c > 0])
    has = c > 0
    assert np.all(np.isnan(f[~has])) and np.all((f[has] >= NATURAL_LI6_FRACTION - 1e-12) & (f[has] <= 0.95 + 1e-12))
    # step 0: the silicon is pristine, lithium only in the (enriched) electrolyte
    assert np.allclose(f[0][has[0]], 0.95)
    # lithium's attenuation is the cross-section model of tomo4d.neutron (periodictable, same numbers)
    s = 1
    li = d._mu_true(s) - d.other_mu_per_cm[s]
    i = np.argmax(c[s])
    ref = li_attenuation_per_cm(d.wavelengths_angstrom, li_concentration_mol_per_cm3=c[s].ravel()[i],
                                li6_fraction=f[s].ravel()[i])
    np.testing.assert_allclose(li.reshape(li.shape[0], -1)[:, i], ref, rtol=0.01)


def test_strained_copper_moves_its_edges(d):
    cu = d.copper_fraction[0] > 0.99
    assert cu.any() and np.all(np.isnan(d.strain[d.copper_fraction.max(0) == 0]))
    w = np.linspace(3.9, 4.4, 200)
    e = 2e-3
    # sigma(lambda; a (1 + e)) = sigma(lambda / (1 + e); a): the (111) edge moves by 2 d111 e
    s0, s1 = bragg_cross_section_b("Cu", w), bragg_cross_section_b("Cu", w / (1 + e))
    mid = lambda s: w[np.argmin(np.abs(s - 0.5 * (s.max() + s.min())))]  # noqa: E731
    assert mid(s1) - mid(s0) == pytest.approx(d.copper_edge_angstrom() * e, abs=0.005)
    assert d.phase_fractions.shape[1] == len(Phase)


def test_tof_counts_are_poisson_around_the_open_beam(d):
    s, ob = d.tof_counts(1)
    assert s.shape == ob.shape == (64, 8, 8)
    assert np.mean(ob / d.open_beam_per_band[:, None, None]) == pytest.approx(1.0, abs=0.01)
    assert np.all(s <= ob.max())
    with pytest.raises(InputError):
        d.tof_counts(5)
