"""Bragg-edge model and fits: synthetic truth, the real iron-powder acceptance, flagged failures, bad input."""

import math

import numpy as np
import pytest
from neutron_synth import TRUE_EDGE, bragg_spectrum, poisson_transmission

from tomo4d import InputError
from tomo4d.neutron import (
    bragg_edge_model,
    cubic_d_spacing,
    edge_profile,
    fit_bragg_edge,
    lattice_strain,
    read_spectrum_csv,
)

FE_A = 2.8665  # bcc iron lattice parameter, Å (room temperature)


@pytest.mark.parametrize("width,tail", [(0.01, 0.02), (0.02, 0.005), (0.005, 0.03)])
def test_edge_profile_is_the_step_convolved_with_gaussian_and_exponential(width, tail):
    # B(x) = integral over the exponential delay u of the Gaussian-blurred step at x - u
    from scipy.integrate import quad
    from scipy.stats import norm

    x = np.linspace(-5 * width, 5 * (width + tail), 15)
    ref = [quad(lambda u, xi=xi: np.exp(-u / tail) / tail * norm.cdf((xi - u) / width), 0, 60 * tail,
                points=[max(xi, 0.0)], limit=200)[0] for xi in x]
    ours = edge_profile(x, edge_angstrom=0.0, width_angstrom=width, tail_angstrom=tail)
    assert np.max(np.abs(ours - ref)) < 1e-6
    # tail 0 is the plain error function; very sharp edges do not overflow
    assert np.allclose(edge_profile([-1.0, 0.0, 1.0], edge_angstrom=0, width_angstrom=0.01, tail_angstrom=0),
                       [0, 0.5, 1])
    sharp = edge_profile(np.linspace(-1, 1, 101), edge_angstrom=0, width_angstrom=1e-4, tail_angstrom=1e-6)
    assert np.all(np.isfinite(sharp)) and sharp[0] == pytest.approx(0) and sharp[-1] == pytest.approx(1)


@pytest.mark.parametrize("seed,profile", [(0, "tail"), (1, "tail"), (2, "gaussian")])
def test_fit_recovers_the_synthetic_edge(seed, profile):
    rng = np.random.default_rng(seed)
    over = {} if profile == "tail" else {"tail_angstrom": 0.0}
    wl, t, s, p = bragg_spectrum(rng, **over)
    fit = fit_bragg_edge(wl, t, s, window_angstrom=(3.6, 4.6), profile=profile)
    assert fit.ok
    err = float(fit.edge_position_angstrom) - p["edge_angstrom"]
    sig = float(fit.edge_position_sigma_angstrom)
    assert 0 < sig < 0.003
    assert abs(err) < 4 * sig  # calibrated uncertainty, and 4 sigma < 0.012 Å
    assert float(fit.edge_width_angstrom) == pytest.approx(p["width_angstrom"], abs=0.006)
    true_height = math.exp(-(p["a0"] + p["b0_per_angstrom"] * p["edge_angstrom"])) * (
        1 - math.exp(-(p["a_hkl"] + p["b_hkl_per_angstrom"] * p["edge_angstrom"])))
    assert float(fit.edge_height) == pytest.approx(true_height, rel=0.05)
    assert 0.6 < float(fit.chi2_reduced) < 1.5
    assert float(fit.d_spacing_angstrom) == pytest.approx(float(fit.edge_position_angstrom) / 2)


def test_iron_powder_110_edge_matches_the_lattice_parameter(real_file):
    """Acceptance: bcc-Fe (110) edge within 0.01 Å of 2 d110 (a = 2.8665 Å), with an uncertainty."""
    spec = read_spectrum_csv(real_file("iron_powder_transmission.csv"))
    expected = 2 * cubic_d_spacing(FE_A, (1, 1, 0))
    assert expected == pytest.approx(4.0538, abs=1e-4)
    fit = fit_bragg_edge(spec.wavelength_angstrom, spec.values, spec.sigma, window_angstrom=(3.7, 4.5))
    assert bool(fit.ok)
    mid, mid_sig = float(fit.edge_midpoint_angstrom), float(fit.edge_midpoint_sigma_angstrom)
    assert abs(mid - expected) < 0.01, (mid, expected)
    assert 0 < mid_sig < 0.005
    # the onset (lambda_hkl of the tail model) lies ~0.7 tau below the midpoint
    onset = float(fit.edge_position_angstrom)
    assert 0 < mid - onset < 2 * float(fit.edge_tail_angstrom) + 1e-6
    # the symmetric (Gaussian) edge agrees with the midpoint
    g = fit_bragg_edge(spec.wavelength_angstrom, spec.values, spec.sigma, window_angstrom=(3.7, 4.5),
                       profile="gaussian")
    assert bool(g.ok) and abs(float(g.edge_position_angstrom) - expected) < 0.01
    assert abs(float(g.edge_position_angstrom) - mid) < 3 * (mid_sig + float(g.edge_position_sigma_angstrom))


def test_strain_map_of_macro_pixels_with_failed_fits_flagged():
    rng = np.random.default_rng(5)
    ny, nx = 4, 5
    strain_true = np.linspace(-1.5e-3, 1.5e-3, ny * nx).reshape(ny, nx)
    lam0 = TRUE_EDGE["edge_angstrom"]
    wl = np.linspace(3.5, 4.6, 260)
    t_true = np.stack([bragg_edge_model(wl, **{**TRUE_EDGE, "edge_angstrom": lam0 * (1 + e)})
                       for e in strain_true.ravel()]).reshape(ny, nx, -1)
    t_true[0, 0] = np.exp(-1.5)  # no edge at all (e.g. outside the sample): must be flagged, not crash
    t, s = poisson_transmission(rng, t_true, 6e4)
    fit = fit_bragg_edge(wl, t, s, window_angstrom=(3.6, 4.5))
    assert fit.ok.shape == (ny, nx)
    assert not fit.ok[0, 0] and np.isnan(fit.edge_position_angstrom[0, 0])
    assert fit.ok.sum() >= ny * nx - 2
    st = fit.strain(lam0 / 2)
    good = st.ok
    err = st.strain[good] - strain_true[good]
    assert np.all(np.abs(err) < 4 * st.strain_sigma[good] + 1e-5)
    assert np.median(np.abs(err)) < 3e-4
    assert np.isnan(st.strain[0, 0])


def test_fit_is_robust_to_pure_noise():
    rng = np.random.default_rng(9)
    wl = np.linspace(3.5, 4.6, 200)
    t = 0.5 + rng.normal(0, 0.01, (3, wl.size))
    fit = fit_bragg_edge(wl, t, np.full(wl.size, 0.01), window_angstrom=(3.6, 4.5))
    assert fit.ok.shape == (3,)
    assert not fit.ok.any()


def test_lattice_strain_values():
    st = lattice_strain(np.array([4.0, 4.004, np.nan]), d0_angstrom=2.0, edge_sigma_angstrom=0.002)
    assert st.strain[:2] == pytest.approx([0.0, 1e-3])
    assert st.strain_sigma[0] == pytest.approx(5e-4)
    assert np.isnan(st.strain[2]) and not st.ok[2]
    assert st.microstrain[1] == pytest.approx(1000.0)


@pytest.mark.parametrize("wl,t,sig,kw,match", [
    (np.r_[np.linspace(3, 4, 20), 3.5], np.ones(21), None, {}, "not strictly increasing"),
    (np.linspace(3, 4, 20), -np.ones(20), None, {}, "negative"),
    (np.linspace(3, 4, 20), np.ones(21), None, {}, "LAST axis"),
    (np.linspace(3, 4, 20), np.ones(20), np.ones(7), {}, "does not match"),
    (np.linspace(3, 4, 20), np.ones(20), None, {"window_angstrom": (3.0, 3.2)}, "needs >= 12"),
    (np.linspace(3, 4, 20), np.ones(20), None, {"edge_guess_angstrom": 9.0}, "outside the fit window"),
    (np.linspace(3, 4, 20), np.ones(20), None, {"profile": "lorentz"}, "profile"),
])
def test_bad_input_is_a_clear_error(wl, t, sig, kw, match):
    with pytest.raises(InputError, match=match):
        fit_bragg_edge(wl, t, sig, **kw)


def test_cubic_d_spacing_errors():
    assert cubic_d_spacing(2.8665, (2, 0, 0)) == pytest.approx(1.43325)
    with pytest.raises(InputError):
        cubic_d_spacing(2.8665, (0, 0, 0))
    with pytest.raises(InputError):
        cubic_d_spacing(-1.0, (1, 1, 0))
