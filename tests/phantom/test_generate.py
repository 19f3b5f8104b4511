"""Determinism, chunking, validation and the neutron modality."""

import numpy as np
import pytest

from tomo4d.errors import InputError
from tomo4d.phantom import Phase, default_soc_schedule, make_experiment


def test_same_seed_same_bytes(exp):
    other = make_experiment(shape=(64, 64, 64), n_steps=4, seed=3, chunks=(16, 32, 64))
    for a, b in [(exp.series[2], other.series[2]), (exp.lq, other.lq), (exp.hq, other.hq)]:
        x, y = a.numpy(), b.numpy()
        assert x.dtype == np.float32 and x.tobytes() == y.tobytes()
    assert other.series[2].chunks == (16, 32, 64)
    assert np.array_equal(exp.truth.labels(3), other.truth.labels(3))


def test_other_seed_differs(exp):
    other = make_experiment(shape=(64, 64, 64), n_steps=2, seed=4)
    assert not np.array_equal(exp.truth.labels(0), other.truth.labels(0))


def test_metadata_and_sizes(exp):
    s = exp.series[2]
    assert s.metadata.time_step == "T2" and s.metadata.state_of_charge == pytest.approx(0.85)
    assert exp.hq.voxel_size_nm == (50.0,) * 3 and exp.lq.voxel_size_nm == (100.0,) * 3
    assert exp.hq.shape == exp.lq.shape == (64, 64, 64)
    assert len(exp.series) == len(exp.series_hq) == 4
    assert exp.truth.labels(0).dtype == np.uint8
    assert set(np.unique(exp.truth.labels(2))) == {int(p) for p in Phase}


def test_default_schedule():
    assert default_soc_schedule(7) == (0.0, 0.17, 0.34, 0.51, 0.68, 0.85, 0.5)
    assert default_soc_schedule(1) == (0.0,)


@pytest.mark.parametrize("kw, name", [
    (dict(shape=(8, 64, 64)), "shape"),
    (dict(core_shell_fraction=1.5), "core_shell_fraction"),
    (dict(cracked_fraction=-0.1), "cracked_fraction"),
    (dict(hq_voxel_nm=-50), "hq_voxel_nm"),
    (dict(lq_voxel_nm=20), "lq_voxel_nm"),
    (dict(n_steps=0), "n_steps"),
    (dict(n_steps=3, soc_schedule=(0, 0.5)), "soc_schedule"),
    (dict(n_steps=2, soc_schedule=(0.2, 0.5)), "soc_schedule"),
    (dict(series_sample="clone"), "series_sample"),
    (dict(anode_thickness_nm=1e6), "anode_thickness_nm"),
    (dict(particle_radius_nm=10), "particle_radius_nm"),
    (dict(seed=-1), "seed"),
    (dict(colour="red"), "colour"),
    (dict(supersampling=0), "supersampling"),
    (dict(supersampling=2.5), "supersampling"),
])
def test_bad_parameters_raise_clear_errors(kw, name):
    with pytest.raises(ValueError, match=name) as info:
        make_experiment(**kw)
    assert isinstance(info.value, InputError)


def test_twin_series_sample_differs_from_pair():
    e = make_experiment(shape=(32, 32, 32), n_steps=1, seed=0, series_sample="twin")
    pair, _ = e.truth.pair_labels()
    assert not np.array_equal(pair, e.truth.labels(0))
    same = make_experiment(shape=(32, 32, 32), n_steps=1, seed=0)
    assert np.array_equal(same.truth.pair_labels()[0], same.truth.labels(0))


def test_neutron_contrast_follows_li_content(exp):
    """Neutron attenuation = (per-mol/L Li attenuation) x Li content + Li-free background, blurred."""
    from scipy.ndimage import gaussian_filter

    from tomo4d.phantom.experiment import NEUTRON_MU_BACKGROUND

    t = exp.truth
    p = exp.params
    b = p.neutron_bin
    bg_table = np.zeros(len(Phase))
    for ph, v in NEUTRON_MU_BACKGROUND.items():
        bg_table[ph] = v
    sigma = p.neutron_blur_sigma_nm / (b * p.lq_voxel_nm)

    def binned(a):
        n = tuple(s // b for s in a.shape)
        return a[:n[0] * b, :n[1] * b, :n[2] * b].reshape(n[0], b, n[1], b, n[2], b).mean(axis=(1, 3, 5))

    for s in (2, 3):   # lithiated steps: Li varies strongly and independently of the background
        mu = exp.neutron_series[s].numpy().ravel()
        li = gaussian_filter(binned(t.li_concentration(s, grid="lq")), sigma, mode="nearest").ravel()
        bg = gaussian_filter(binned(bg_table[t.labels(s, grid="lq")]), sigma, mode="nearest").ravel()
        coef, *_ = np.linalg.lstsq(np.stack([li, bg, np.ones_like(li)], 1), mu, rcond=None)
        # slope per mol/L of Li equals the 6Li/7Li-weighted cross-section (natural Li: 0.0438 1/cm per mol/L)
        assert coef[0] == pytest.approx(t.li_per_mol_l_neutron_mu, rel=0.05)
        assert coef[1] == pytest.approx(1.0, abs=0.05)
    # natural Li (6Li fraction 0.0759) at 1.798 A: 0.0759 * 940 + 0.9241 * 0.0454 = 71.39 b absorption
    # + 1.37 b bound scattering (periodictable agrees)
    assert t.li_per_mol_l_neutron_mu == pytest.approx(6.022e20 * (71.39 + 1.37) * 1e-24, rel=0.002)
    from tomo4d.neutron import theoretical_lithium_calibration

    k = theoretical_lithium_calibration(li6_fraction=t.li6_fraction).slope_cm2_per_mol * 1e-3
    assert t.li_per_mol_l_neutron_mu == pytest.approx(k, rel=1e-3)


def test_li6_enrichment_scales_attenuation():
    from tomo4d.phantom.neutron import li_cross_section_b

    assert li_cross_section_b(0.075) == pytest.approx(70.5, rel=0.01)
    assert li_cross_section_b(0.075, wavelength_a=2 * 1.798) == pytest.approx(141.0, rel=0.01)
    assert li_cross_section_b(1.0) == pytest.approx(940.0)
    from tomo4d.phantom.neutron import li_scattering_b

    assert li_scattering_b(0.075) == pytest.approx(1.368, abs=0.002)


def test_bragg_spectra_show_edges_and_li6_contrast(exp):
    from tomo4d.phantom.neutron import bragg_edges_a, transmission_spectra

    edges = bragg_edges_a("Cu")
    assert edges[0] == pytest.approx(2 * 3.615 / np.sqrt(3), rel=1e-4)      # (111) edge 4.17 A
    lam = np.linspace(3.0, 5.5, 500)
    sp = transmission_spectra(exp, 2, wavelengths_a=lam)
    coll = sp.transmission[sp.region_names.index("collector")]
    i = np.searchsorted(lam, edges[0])
    # transmission jumps up past the largest Cu edge (no more Bragg scattering from (111))
    assert coll[i + 15] > coll[i - 15] + 0.005
    enriched = transmission_spectra(exp, 2, wavelengths_a=lam, li6_fraction=0.95)
    a = sp.region_names.index("anode")
    assert enriched.transmission[a].mean() < sp.transmission[a].mean() - 0.05
