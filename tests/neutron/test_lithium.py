"""Cross sections from periodictable and Li concentration maps (acceptance: within 5 %)."""

import numpy as np
import pytest
from neutron_synth import LI_METAL_MOL_PER_CM3, LLZO, LLZO_DENSITY, li_phantom

from tomo4d import InputError
from tomo4d.neutron import (
    LiConcentration,
    attenuation_from_composition,
    calibrate_lithium,
    formula_cross_section,
    li_concentration_from_composition,
    li_cross_section,
    lithium_concentration,
    region_values,
    theoretical_lithium_calibration,
)


def test_reference_cross_sections():
    assert formula_cross_section("Li[6]").absorption_barn == pytest.approx(940.0)
    assert formula_cross_section("Li[7]").absorption_barn == pytest.approx(0.0454)
    assert formula_cross_section("Li").absorption_barn == pytest.approx(70.5)
    # 1/v law: twice the wavelength, twice the absorption
    xs = formula_cross_section("Li[6]", wavelength_angstrom=np.array([1.798, 3.596]))
    assert xs.absorption_barn == pytest.approx([940.0, 1880.0])
    mix = li_cross_section(li6_fraction=0.075)
    assert mix.absorption_barn == pytest.approx(0.075 * 940 + 0.925 * 0.0454)
    # natural Li metal: mu ~ 3.3 /cm at 1.8 Å (n = 4.63e22 /cm^3 x 71.9 b)
    assert attenuation_from_composition("Li", density_g_per_cm3=0.534) == pytest.approx(3.33, abs=0.01)
    assert li_concentration_from_composition("Li", density_g_per_cm3=0.534) == pytest.approx(LI_METAL_MOL_PER_CM3)
    assert li_concentration_from_composition(LLZO, density_g_per_cm3=LLZO_DENSITY) == pytest.approx(0.0425,
                                                                                                    abs=3e-4)
    with pytest.raises(InputError, match="not understood"):
        formula_cross_section("Xx2")
    with pytest.raises(InputError, match="li6_fraction"):
        li_cross_section(li6_fraction=1.5)
    with pytest.raises(InputError, match="no lithium"):
        li_concentration_from_composition("Fe", density_g_per_cm3=7.87)


@pytest.mark.parametrize("seed", [0, 1])
def test_li_concentration_from_reference_regions_within_5_percent(seed):
    rng = np.random.default_rng(seed)
    mu, lab, conc = li_phantom(rng, k_true=62.0)  # effective wavelength unknown to the analysis
    cal = calibrate_lithium(mu, [lab == 1, lab == 2], [0.0, conc[2]])
    assert cal.slope_cm2_per_mol == pytest.approx(62.0, rel=0.01)
    assert cal.noise_sigma_per_cm == pytest.approx(0.3, rel=0.1)
    res = lithium_concentration(mu, cal)
    assert res.concentration_mol_per_cm3.dtype == np.float32
    rv = region_values(res.concentration_mol_per_cm3, lab, label_values=[3, 4, 5])
    truth = np.array([conc[k] for k in (3, 4, 5)])
    rel = (rv.mean - truth) / truth
    assert np.all(np.abs(rel) < 0.05), rel
    # per-voxel uncertainty matches the scatter of the map
    spread = res.concentration_mol_per_cm3[lab == 3].std()
    assert float(np.median(res.sigma_mol_per_cm3[lab == 3])) == pytest.approx(spread, rel=0.15)
    ratio, _ = res.relative_to(conc[3])
    assert float(ratio[lab == 3].mean()) == pytest.approx(1.0, abs=0.05)


def test_theoretical_calibration_matches_the_forward_model():
    rng = np.random.default_rng(3)
    cal0 = theoretical_lithium_calibration(wavelength_angstrom=2.2, li6_fraction=0.0759, matrix_mu_per_cm=0.35)
    assert cal0.effective_cross_section_barn == pytest.approx(0.0759 * 940 * 2.2 / 1.798 + 1.37, rel=0.01)
    mu, lab, conc = li_phantom(rng, k_true=cal0.slope_cm2_per_mol)
    res = lithium_concentration(mu, cal0, mu_sigma_per_cm=0.3)
    rv = region_values(res.concentration_mol_per_cm3, lab)
    truth = np.array([conc[k] for k in rv.labels])
    assert np.all(np.abs(rv.mean - truth)[1:] / truth[1:] < 0.05)
    # per-voxel matrix attenuation replaces the intercept
    res2 = lithium_concentration(mu + 0.5 * (lab == 3), cal0, matrix_mu_per_cm=0.35 + 0.5 * (lab == 3))
    assert float(res2.concentration_mol_per_cm3[lab == 3].mean()) == pytest.approx(conc[3], rel=0.05)


def test_calibration_with_known_intercept_and_errors():
    rng = np.random.default_rng(4)
    mu, lab, conc = li_phantom(rng)
    cal = calibrate_lithium(mu, [lab == 2], [conc[2]], intercept_per_cm=0.35)
    assert cal.slope_cm2_per_mol == pytest.approx(60.0, rel=0.01) and cal.n_references == 1
    with pytest.raises(InputError, match="two references"):
        calibrate_lithium(mu, [lab == 2], [conc[2]])
    with pytest.raises(InputError, match="one per mask"):
        calibrate_lithium(mu, [lab == 1, lab == 2], [0.0])
    with pytest.raises(InputError, match="shape"):
        calibrate_lithium(mu, [np.ones((3, 3), bool), lab == 2], [0.0, 0.07])
    with pytest.raises(InputError, match="non-positive slope"):
        calibrate_lithium(mu, [lab == 2, lab == 1], [0.0, 0.07])
    with pytest.raises(InputError, match="LiCalibration"):
        lithium_concentration(mu, {"slope": 1})


def test_attenuation_from_phases_bins_partial_volumes_and_blurs():
    from tomo4d.neutron import attenuation_from_phases

    lab = np.zeros((8, 8, 8), np.uint8)
    lab[:, :, 4:] = 2
    lab[:, :, 3] = 1                        # one column of phase 1 inside the first 4-voxel block of x
    mu = attenuation_from_phases(lab, {0: 0.1, 1: 0.5, 2: 2.0}, bin_factor=4)
    assert mu.shape == (2, 2, 2) and mu.dtype == np.float32
    assert np.allclose(mu[..., 0], (3 * 0.1 + 0.5) / 4) and np.allclose(mu[..., 1], 2.0)
    blurred = attenuation_from_phases(lab, {0: 0.1, 1: 0.5, 2: 2.0}, bin_factor=(4, 4, 4), psf_sigma_px=1.0)
    assert blurred.mean() == pytest.approx(mu.mean(), rel=1e-5)       # blur conserves the mean
    assert blurred[..., 0].mean() > mu[..., 0].mean()                 # and mixes the two sides
    with pytest.raises(InputError, match=r"phase label\(s\) \[2\]"):
        attenuation_from_phases(lab, {0: 0.1, 1: 0.5}, bin_factor=4)
    with pytest.raises(InputError, match="bin_factor"):
        attenuation_from_phases(lab, {0: 0.1, 1: 0.5, 2: 2.0}, bin_factor=0)
    with pytest.raises(InputError, match="larger than"):
        attenuation_from_phases(lab, {0: 0.1, 1: 0.5, 2: 2.0}, bin_factor=16)
    with pytest.raises(InputError, match="integer"):
        attenuation_from_phases(lab + 0.5, {0: 0.1}, bin_factor=1)  # a grey image, not labels


def _layered_li(margin_blur_px):
    """A 4-phase stack along z (collector | anode 10 mol/L | separator 1 mol/L | gap) on a 2x finer
    grid, its Li map on the neutron grid blurred by ``margin_blur_px``: (labels, LiConcentration, the
    unblurred map in mol/L)."""
    from scipy.ndimage import gaussian_filter

    from tomo4d.neutron import LiCalibration

    lab = np.zeros((80, 8, 8), np.int16)
    lab[16:48] = 1                                   # anode (fine voxels 16-47 -> neutron rows 8-23)
    lab[20:24, :4] = 2                               # a particle inside the anode (same layer)
    lab[48:64] = 3                                   # separator
    c_fine = np.select([lab == 1, lab == 2, lab == 3], [10.0, 10.0, 1.0], 0.0) * 1e-3   # mol/cm^3
    c = c_fine.reshape(40, 2, 4, 2, 4, 2).mean(axis=(1, 3, 5))
    sharp = c * 1e3
    if margin_blur_px:
        c = gaussian_filter(c, margin_blur_px, mode="nearest")
    cal = LiCalibration(slope_cm2_per_mol=100.0, slope_sigma_cm2_per_mol=0.0, intercept_per_cm=0.0,
                        intercept_sigma_per_cm=0.0, noise_sigma_per_cm=0.1, method="theory", n_references=0)
    sig = np.full(c.shape, 1e-4, np.float32)
    return lab, LiConcentration(c.astype(np.float32), sig, cal), sharp


@pytest.mark.parametrize("blur_px, margin_px, tol", [(0.0, 0.0, 1e-6), (2.0, 6.0, 0.01)])
def test_layer_lithium_recovers_the_layer_mean_with_a_margin(blur_px, margin_px, tol):
    from tomo4d.neutron import layer_lithium

    lab, li, sharp = _layered_li(blur_px)
    got = layer_lithium(li, lab, [1, 2], bin_factor=2, margin_px=margin_px)
    assert got.rows[8:24].all() and got.rows.sum() == 16 + 2 * int(np.ceil(margin_px))
    # with a margin of 3 blur sigmas the Li the blur moved across the faces is counted back in
    truth = float(sharp[got.region(sharp.shape)].mean())
    assert got.concentration_mol_l == pytest.approx(truth, rel=tol)
    if not margin_px:
        assert got.concentration_mol_l == pytest.approx(10.0, rel=1e-6)
    assert got.sigma_mol_l == pytest.approx(0.1 / np.sqrt(got.n_voxels), rel=1e-4)
    assert got.region(li.concentration_mol_per_cm3.shape).sum() == got.n_voxels


def test_layer_lithium_without_margin_is_biased_low_under_blur():
    from tomo4d.neutron import layer_lithium

    lab, li, _ = _layered_li(2.0)
    got = layer_lithium(li, lab, [1, 2], bin_factor=2)
    assert got.concentration_mol_l < 0.97 * 10.0


def test_layer_lithium_rejects_bad_inputs():
    from tomo4d.neutron import layer_lithium

    lab, li, _ = _layered_li(0.0)
    with pytest.raises(InputError, match="bin_factor"):
        layer_lithium(li, lab, [1], bin_factor=4)
    with pytest.raises(InputError, match="absent"):
        layer_lithium(li, lab, [7], bin_factor=2)
    with pytest.raises(InputError, match="fill_threshold"):
        layer_lithium(li, lab, [1], bin_factor=2, fill_threshold=0)
    with pytest.raises(InputError, match="LiConcentration"):
        layer_lithium(np.zeros((40, 4, 4)), lab, [1], bin_factor=2)


def _nan_mu():
    rng = np.random.default_rng(2)
    mu, lab, conc = li_phantom(rng)
    bad = mu.copy()
    bad[0, 0, :3] = np.nan
    return mu, bad, lab, conc


@pytest.mark.parametrize("call", ["theoretical", "calibrate", "matrix", "sigma"])
def test_lithium_maps_refuse_nan_voxels_with_a_count(call):
    mu, bad, lab, conc = _nan_mu()
    cal = theoretical_lithium_calibration()
    if call == "theoretical":
        with pytest.raises(InputError, match=r"mu holds 3 non-finite \(NaN/Inf\) voxels"):
            lithium_concentration(bad, cal)
    elif call == "calibrate":
        with pytest.raises(InputError, match=r"mu holds 3 non-finite"):
            calibrate_lithium(bad, [lab == 1, lab == 2], [0.0, conc[2]])
    elif call == "matrix":
        with pytest.raises(InputError, match=r"matrix_mu_per_cm holds 3 non-finite"):
            lithium_concentration(mu, cal, matrix_mu_per_cm=bad)
    else:
        with pytest.raises(InputError, match=r"mu_sigma_per_cm holds 3 non-finite"):
            lithium_concentration(mu, cal, mu_sigma_per_cm=bad)


@pytest.mark.parametrize("labels, kw, pattern", [
    ("grey", {}, r"labels has dtype float\d+ with non-integer values.*grey-value image"),
    ("negative", {}, r"labels holds negative values \{-1\}"),
    ("shape", {}, r"labels has shape .* but the image has shape"),
    ("ok", {"label_values": [9]}, r"label_values \[9\] do not occur in labels"),
    ("ok", {"label_values": [1.5]}, r"label_values=1.5 is not an integer"),
])
def test_region_values_refuses_what_are_not_region_labels(labels, kw, pattern):
    mu, _, lab, _ = _nan_mu()
    arr = {"grey": mu, "negative": np.full(lab.shape, -1, np.int16), "shape": lab[:-1], "ok": lab}[labels]
    with pytest.raises(InputError, match=pattern):
        region_values(mu, arr, **kw)


def test_region_values_refuses_nan_values():
    mu, bad, lab, _ = _nan_mu()
    with pytest.raises(InputError, match=r"values holds 3 non-finite"):
        region_values(bad, lab)


@pytest.mark.parametrize("kw, pattern", [({"wavelength_angstrom": "1.8"}, r"wavelength_angstrom='1.8' is not a number"),
                                         ({"li6_fraction": float("nan")}, r"li6_fraction=nan is not finite"),
                                         ({"matrix_mu_per_cm": np.float64("inf")}, r"matrix_mu_per_cm=inf is not finite")])
def test_theoretical_calibration_refuses_strings_and_nan(kw, pattern):
    with pytest.raises(InputError, match=pattern) as err:
        theoretical_lithium_calibration(**kw)
    assert "np.float64" not in str(err.value)


def test_layer_lithium_refuses_grey_phase_labels():
    from tomo4d.neutron import layer_lithium

    mu, _, lab, _ = _nan_mu()
    li = lithium_concentration(mu, theoretical_lithium_calibration())
    with pytest.raises(InputError, match=r"phase_labels has dtype float\d+ with non-integer values"):
        layer_lithium(li, mu, [1])


def test_cli_lithium_refuses_nan_mu(tmp_path, capsys):
    import tifffile

    from tomo4d.cli import main

    _, bad, _, _ = _nan_mu()
    tifffile.imwrite(tmp_path / "mu.tif", bad)
    out = tmp_path / "li.tif"
    assert main(["neutron", "lithium", str(tmp_path / "mu.tif"), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mu holds 3 non-finite (NaN/Inf) voxels" in err[0] and not out.exists()
