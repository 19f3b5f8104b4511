"""User mistakes in the neutron formulas, densities, thicknesses and wavelengths: InputError naming the
parameter (and its command-line option), the value and the fix; never a parser traceback or a numpy repr."""

import numpy as np
import pytest
from neutron_synth import LLZO, isotope_spectra

import tomo4d.neutron as N
from tomo4d.cli import main
from tomo4d.errors import InputError

BAD_FORMULAS = ["Li7La3Zr2O1(2", "Xx2", "", "   ", "Li-7", "li", "2", "Li#", "Li[99]", "LiFePO4)"]

FORMULA_FUNCTIONS = {
    "li_concentration_from_composition": lambda f: N.li_concentration_from_composition(f, density_g_per_cm3=5.1),
    "attenuation_from_composition": lambda f: N.attenuation_from_composition(f, density_g_per_cm3=5.1),
    "non_lithium_attenuation_per_cm": lambda f: N.non_lithium_attenuation_per_cm(
        f, density_g_per_cm3=5.1, wavelength_angstrom=np.linspace(1, 5, 10)),
    "formula_cross_section": lambda f: N.formula_cross_section(f),
    "molar_mass_g_per_mol": lambda f: N.molar_mass_g_per_mol(f),
}


@pytest.mark.parametrize("fn", sorted(FORMULA_FUNCTIONS))
@pytest.mark.parametrize("formula", BAD_FORMULAS)
def test_unparsable_formulas_name_the_option_and_give_an_example(fn, formula):
    with pytest.raises(InputError) as info:
        FORMULA_FUNCTIONS[fn](formula)
    msg = str(info.value)
    assert "formula (--composition)=" in msg and repr(formula) in msg and "Li7La3Zr2O12" in msg, msg


@pytest.mark.parametrize("formula", [None, 7, np.float64(2.0), ["Li"]])
def test_non_text_formulas(formula):
    with pytest.raises(InputError, match=r"formula \(--composition\)=.* is not a chemical formula") as info:
        N.li_concentration_from_composition(formula, density_g_per_cm3=5.1)
    assert "np.float" not in str(info.value)


@pytest.mark.parametrize("density, match", [
    (-1.0, "out of range"), (0.0, "out of range"), (float("nan"), "not finite"), (float("inf"), "not finite"),
    (np.float64(-2.0), "=-2 is out of range"), ("5.1", "not a number"), (True, "not a number"),
    (5100.0, "kg/m\\^3"),
])
@pytest.mark.parametrize("fn", ["li_concentration_from_composition", "attenuation_from_composition",
                                "non_lithium_attenuation_per_cm"])
def test_bad_densities_name_the_option(fn, density, match):
    kw = {"wavelength_angstrom": np.linspace(1, 5, 10)} if fn == "non_lithium_attenuation_per_cm" else {}
    with pytest.raises(InputError, match=match) as info:
        getattr(N, fn)(LLZO, density_g_per_cm3=density, **kw)
    msg = str(info.value)
    assert "density_g_per_cm3 (--density)" in msg and "np.float" not in msg, msg


@pytest.mark.parametrize("thickness", [0.0, -0.05, float("nan"), np.float64(-1.0), "0.05", True])
def test_bad_thickness_names_the_option(thickness):
    with pytest.raises(InputError, match=r"thickness_cm \(--thickness-cm\)=") as info:
        N.attenuation_coefficient(np.full(4, 0.5), thickness_cm=thickness)
    assert "np.float" not in str(info.value)


@pytest.mark.parametrize("kw, match", [
    (dict(wavelength_angstrom="x"), "wavelength_angstrom='x'"),
    (dict(wavelength_angstrom=np.float64(-2.0)), r"wavelength_angstrom=-2 is out of range"),
    (dict(wavelength_angstrom=np.array([1.0, np.nan])), "wavelength_angstrom holds 1 value"),
    (dict(wavelength_angstrom=True), "wavelength_angstrom=True"),
    (dict(li6_fraction=True), "li6_fraction=True"),
    (dict(li6_fraction=np.float64(1.5)), r"li6_fraction=1.5 is out of range"),
])
def test_wavelengths_and_fractions_of_cross_sections(kw, match):
    with pytest.raises(InputError, match=match) as info:
        N.formula_cross_section("Li", **kw)
    assert "np.float" not in str(info.value)


@pytest.mark.parametrize("kw, match", [
    (dict(li_concentration_mol_per_cm3=float("nan")), "li_concentration_mol_per_cm3"),
    (dict(li_concentration_mol_per_cm3=-1.0), "li_concentration_mol_per_cm3"),
    (dict(li_concentration_mol_per_cm3="x"), "li_concentration_mol_per_cm3='x' is not numeric"),
    (dict(li6_fraction=float("nan")), "li6_fraction"),
    (dict(li6_fraction="x"), "li6_fraction='x' is not numeric"),
])
def test_li_attenuation_refuses_bad_concentrations_and_fractions(kw, match):
    args = dict(li_concentration_mol_per_cm3=0.05, li6_fraction=0.5)
    args.update(kw)
    with pytest.raises(InputError, match=match):
        N.li_attenuation_per_cm(np.linspace(1, 5, 10), **args)


@pytest.mark.parametrize("kw, match", [
    (dict(other_mu_per_cm=float("nan")), "other_mu_per_cm holds NaN"),
    (dict(other_mu_per_cm="x"), "other_mu_per_cm='x' is not numeric"),
    (dict(li_concentration_mol_per_cm3="x"), "li_concentration_mol_per_cm3='x' is not numeric"),
])
def test_fit_li6_fraction_refuses_non_numeric_inputs(kw, match):
    rng = np.random.default_rng(0)
    wl, mu, sig, c, other = isotope_spectra(rng, [0.30], counts=5e4)
    args = dict(li_concentration_mol_per_cm3=c, other_mu_per_cm=other)
    args.update(kw)
    with pytest.raises(InputError, match=match):
        N.fit_li6_fraction(wl, mu, sig, **args)


@pytest.mark.parametrize("fn", ["tof_to_wavelength", "wavelength_to_tof"])
@pytest.mark.parametrize("kw, match", [
    (dict(offset_s=None), "offset_s=None is not a number"),
    (dict(offset_s=float("nan")), "offset_s=nan is not finite"),
    (dict(offset_s=[1, 2]), "offset_s=\\[1, 2\\] is not a number"),
    (dict(flight_path_m=np.float64(-2.0)), "flight_path_m=-2 is out of range"),
])
def test_time_of_flight_conversions(fn, kw, match):
    args = dict(flight_path_m=10.0, offset_s=0.0)
    args.update(kw)
    with pytest.raises(InputError, match=match):
        getattr(N, fn)(np.linspace(1e-2, 2e-2, 5) if fn == "tof_to_wavelength" else np.linspace(1, 5, 5), **args)


@pytest.fixture
def spectrum_csv(tmp_path):
    rng = np.random.default_rng(0)
    wl, mu, sig, c, other = isotope_spectra(rng, [0.30], counts=5e4)
    p = tmp_path / "mu.csv"
    np.savetxt(p, np.column_stack([wl, mu[0], sig[0]]), delimiter=",", header="wavelength,mu,sigma", comments="")
    return p


@pytest.mark.parametrize("extra, match", [
    (["--composition", "Li7La3Zr2O1(2", "--density", "5.1"], "--composition"),
    (["--composition", "Xx2", "--density", "5.1"], "--composition"),
    (["--composition", "", "--density", "5.1"], "--composition"),
    (["--composition", "Li-7", "--density", "5.1"], "--composition"),
    (["--composition", LLZO, "--density", "-5.1"], "--density"),
    (["--composition", LLZO, "--density", "nan"], "--density"),
    (["--composition", LLZO, "--density", "5.1", "--thickness-cm", "0"], "--thickness-cm"),
    (["--composition", LLZO, "--density", "5.1", "--thickness-cm", "nan"], "--thickness-cm"),
])
def test_cli_isotopes_user_errors_exit_2_naming_the_option(capsys, spectrum_csv, extra, match):
    assert main(["neutron", "isotopes", str(spectrum_csv), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tomo4d: error:") and match in err[0], err


@pytest.mark.parametrize("call, match", [
    (lambda: N.rebin_spectra(np.linspace(1, 5, 10), np.ones(10), factor=np.float64(-2.0)), r"factor=-2 must be"),
    (lambda: N.macro_pixel_spectra(np.ones((8, 8, 10)), size=np.float64(0.0)), r"size=0 must be"),
    (lambda: N.joint_histogram(np.ones((4, 4, 4)), np.ones((4, 4, 4)), bins=np.float64(1.0)), r"bins=1 must be"),
    (lambda: N.cubic_d_spacing(3.6, np.float64(1.0)), r"hkl=1 must be three integers"),
])
def test_messages_show_numbers_as_typed_not_numpy_reprs(call, match):
    with pytest.raises(InputError, match=match) as info:
        call()
    assert "np.float" not in str(info.value)
