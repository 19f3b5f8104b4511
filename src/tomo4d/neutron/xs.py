"""Neutron cross sections of compounds from the ``periodictable`` data package.

Absorption cross sections are tabulated at 2200 m/s (``lambda = 1.798 Å``) and
scale with wavelength (the 1/v law): ``sigma_a(lambda) = sigma_a(1.798) *
lambda / 1.798``.  Scattering is taken as the bound-atom total scattering
cross section (coherent + incoherent), independent of wavelength (free-atom
approximation: it ignores Bragg edges and inelastic effects, which the fits
absorb in a background term).  Lithium: 6Li absorbs 940 b, 7Li 0.0454 b,
natural Li 70.5 b (``periodictable``: ``Li[6]``, ``Li[7]``, ``Li``, from the
NIST neutron scattering lengths and cross sections table, Sears 1992).

Formulas use the ``periodictable`` syntax (``"Li7La3Zr2O12"``, ``"Li[6]"``,
``"LiFePO4"``); natural lithium in a formula can be given any 6Li atom fraction
with ``li6_fraction``.

References
----------
V. F. Sears, "Neutron scattering lengths and cross sections", Neutron News 3 (1992) 26-37.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import as_numbers, check_number, show
from ..errors import InputError

__all__ = ["THERMAL_WAVELENGTH_ANGSTROM", "NATURAL_LI6_FRACTION", "AVOGADRO_PER_MOL", "BARN_CM2", "CrossSection",
           "formula_cross_section", "li_cross_section", "molar_mass_g_per_mol", "attenuation_from_composition",
           "li_concentration_from_composition"]

#: Wavelength of 2200 m/s neutrons, at which absorption cross sections are tabulated, Å.
THERMAL_WAVELENGTH_ANGSTROM = 1.798
#: Representative natural 6Li atom fraction (IUPAC 1997: 7.59 %; natural sources span about 7.2-7.8 %).
NATURAL_LI6_FRACTION = 0.0759
AVOGADRO_PER_MOL = 6.02214076e23
BARN_CM2 = 1e-24


@dataclass(frozen=True)
class CrossSection:
    """Microscopic cross sections per formula unit, barn (arrays follow the wavelength's shape).

    Attributes
    ----------
    absorption_barn : float or array
        Absorption at ``wavelength_angstrom`` (1/v-scaled).
    scattering_barn : float
        Total bound-atom scattering (coherent + incoherent).
    wavelength_angstrom : float or array
        Wavelength(s), Å.
    """

    absorption_barn: float | np.ndarray
    scattering_barn: float
    wavelength_angstrom: float | np.ndarray

    @property
    def total_barn(self):
        """Absorption plus scattering, barn."""
        return self.absorption_barn + self.scattering_barn


_FORMULA_HELP = ("write element symbols (capital first letter) each followed by its count, e.g. 'Li7La3Zr2O12', "
                 "'LiFePO4', 'Li2CO3' or 'Li[6]' for the 6Li isotope")


def _wavelength(wavelength_angstrom, name: str = "wavelength_angstrom"):
    """One wavelength (float) or an array of them, Å: finite, > 0, numeric (bools and strings refused)."""
    if np.ndim(wavelength_angstrom) == 0 and not isinstance(wavelength_angstrom, np.ndarray):
        return check_number(name, wavelength_angstrom, minimum=0, exclusive_minimum=True)
    w = as_numbers(name, wavelength_angstrom, what="wavelengths in Å as numbers")
    bad = ~np.isfinite(w) | (w <= 0)
    if bad.any():
        raise InputError(f"{name} holds {int(bad.sum())} value(s) that are not finite and > 0 (first: "
                         f"{show(w[bad].ravel()[0])}); wavelengths are positive, in Å")
    return float(w) if w.ndim == 0 else w


def _fraction(name: str, value) -> float:
    return check_number(name, value, minimum=0, maximum=1)


def _density(value, name: str = "density_g_per_cm3") -> float:
    """Mass density in g/cm^3 (the command line's --density): finite, > 0 and not in kg/m^3."""
    rho = check_number(f"{name} (--density)", value, minimum=0, exclusive_minimum=True)
    if rho > 30:
        raise InputError(f"{name} (--density)={show(rho)} g/cm^3 is denser than any solid (osmium: 22.6 g/cm^3); "
                         "give the density in g/cm^3 (kg/m^3 divided by 1000)")
    return rho


def _atoms(formula: str):
    import periodictable as pt

    if not isinstance(formula, str) or not formula.strip():
        raise InputError(f"formula (--composition)={show(formula)} is not a chemical formula; {_FORMULA_HELP}")
    try:
        f = pt.formula(formula)
    except Exception as exc:  # periodictable raises ValueError, KeyError and pyparsing's ParseException
        loc = getattr(exc, "loc", None)
        if isinstance(loc, int) and 0 <= loc < len(formula):
            why = f"unexpected {formula[loc]!r} at character {loc + 1}"
        else:
            why = str(exc).strip("'\"") or type(exc).__name__
        raise InputError(f"formula (--composition)={show(formula)} is not understood as a chemical formula ({why}); "
                         f"{_FORMULA_HELP}") from None
    if not f.atoms:
        raise InputError(f"formula (--composition)={show(formula)} contains no atoms; {_FORMULA_HELP}")
    neg = [str(a) for a, n in f.atoms.items() if not (np.isfinite(n) and n >= 0)]
    if neg:
        raise InputError(f"formula (--composition)={show(formula)} gives {', '.join(neg)} a count that is not a "
                         f"number >= 0; {_FORMULA_HELP}")
    return f.atoms


def _li_parts(li6: float):
    import periodictable as pt

    return ((pt.Li[6], li6), (pt.Li[7], 1.0 - li6))


def _expand(formula: str, li6_fraction):
    """(atom, count) pairs with natural Li replaced by the given isotope mix."""
    li6 = None if li6_fraction is None else _fraction("li6_fraction", li6_fraction)
    out = []
    for atom, count in _atoms(formula).items():
        if li6 is not None and atom.number == 3 and getattr(atom, "isotope", None) is None:
            out.extend((iso, count * w) for iso, w in _li_parts(li6))
        else:
            out.append((atom, float(count)))
    return out


def formula_cross_section(formula: str, *, wavelength_angstrom=THERMAL_WAVELENGTH_ANGSTROM,
                          li6_fraction: float | None = None) -> CrossSection:
    """Absorption and scattering cross sections of one formula unit, barn.

    Parameters
    ----------
    formula : str
        Chemical formula (``periodictable`` syntax; isotopes as ``Li[6]``).
    wavelength_angstrom : float or array
        Wavelength(s), Å; absorption scales as ``lambda / 1.798``.
    li6_fraction : float, optional
        6Li atom fraction of the (natural-element) lithium in ``formula``; default: the
        tabulated natural lithium (70.5 b).
    """
    w = _wavelength(wavelength_angstrom)
    a_th = 0.0
    s = 0.0
    for atom, count in _expand(formula, li6_fraction):
        nd = atom.neutron
        if nd is None or nd.absorption is None or nd.total is None:
            raise InputError(f"no neutron cross sections tabulated for {atom} in formula (--composition)="
                             f"{show(formula)}; use another isotope or element")
        a_th += count * float(nd.absorption)
        s += count * float(nd.total)
    return CrossSection(absorption_barn=a_th * w / THERMAL_WAVELENGTH_ANGSTROM, scattering_barn=s,
                        wavelength_angstrom=w)


def li_cross_section(*, li6_fraction: float = NATURAL_LI6_FRACTION,
                     wavelength_angstrom=THERMAL_WAVELENGTH_ANGSTROM) -> CrossSection:
    """Cross sections of one Li atom with 6Li atom fraction ``li6_fraction``, barn.

    ``sigma_a = (f * 940 + (1 - f) * 0.0454) * lambda / 1.798`` b; scattering
    ``f * 0.97 + (1 - f) * 1.40`` b.
    """
    return formula_cross_section("Li", wavelength_angstrom=wavelength_angstrom, li6_fraction=li6_fraction)


def molar_mass_g_per_mol(formula: str, *, li6_fraction: float | None = None) -> float:
    """Molar mass of ``formula``, g/mol (lithium with the given 6Li fraction)."""
    return float(sum(count * float(atom.mass) for atom, count in _expand(formula, li6_fraction)))


def attenuation_from_composition(formula: str, *, density_g_per_cm3: float,
                                 wavelength_angstrom=THERMAL_WAVELENGTH_ANGSTROM,
                                 li6_fraction: float | None = None, volume_fraction: float = 1.0):
    """Linear attenuation coefficient of a compound, 1/cm: ``rho N_A / M * sigma_total``.

    Parameters
    ----------
    formula : str
        Chemical formula.
    density_g_per_cm3 : float
        Mass density of the (dense) compound, g/cm^3.
    wavelength_angstrom : float or array
        Wavelength(s), Å.
    li6_fraction : float, optional
        6Li atom fraction of its lithium (default natural, tabulated).
    volume_fraction : float
        Fraction of the voxel filled by the compound (1 - porosity).

    Returns
    -------
    float or array (1/cm), the wavelength's shape.

    Examples
    --------
    >>> round(attenuation_from_composition("Li", density_g_per_cm3=0.534), 2)   # natural Li metal, 1.798 Å
    3.33
    """
    rho = _density(density_g_per_cm3)
    vf = _fraction("volume_fraction", volume_fraction)
    n = vf * rho / molar_mass_g_per_mol(formula, li6_fraction=li6_fraction) * AVOGADRO_PER_MOL
    xs = formula_cross_section(formula, wavelength_angstrom=wavelength_angstrom, li6_fraction=li6_fraction)
    return n * xs.total_barn * BARN_CM2


def li_concentration_from_composition(formula: str, *, density_g_per_cm3: float,
                                      li6_fraction: float | None = None, volume_fraction: float = 1.0) -> float:
    """Lithium concentration of a compound, mol/cm^3 (e.g. Li metal 0.077, Li7La3Zr2O12 at 5.1 g/cm^3 0.043)."""
    rho = _density(density_g_per_cm3)
    vf = _fraction("volume_fraction", volume_fraction)
    n_li = sum(count for atom, count in _expand(formula, li6_fraction) if atom.number == 3)
    if n_li == 0:
        raise InputError(f"formula (--composition)={show(formula)} contains no lithium; give the formula of a "
                         "lithium-bearing phase, e.g. 'Li7La3Zr2O12'")
    return vf * rho / molar_mass_g_per_mol(formula, li6_fraction=li6_fraction) * n_li
