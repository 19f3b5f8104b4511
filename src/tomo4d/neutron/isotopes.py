"""6Li/7Li isotope fraction from wavelength-resolved attenuation; isotope-exchange maps.

Per region (or macro-pixel) the attenuation spectrum is modelled as

.. math::

    \\mu(\\lambda) = n_{Li}\\big[f\\,\\sigma_6(\\lambda) + (1-f)\\,\\sigma_7(\\lambda)\\big]
                   + \\mu_{other}(\\lambda) + \\mu_{bg}

with ``sigma_i(lambda) = sigma_{a,i}(1.798 Å) lambda / 1.798 + sigma_{s,i}`` (1/v
absorption plus free-atom scattering, from ``periodictable``: 6Li 940 b / 0.97 b,
7Li 0.0454 b / 1.40 b), ``n_Li`` the lithium number density (known from the
composition and density of the phase, or from a concentration map),
``mu_other`` the attenuation of the other elements (from their composition:
their own 1/v absorption and scattering) and ``mu_bg`` an optional constant
background absorbing what the free-atom model misses (sample environment,
coherent-scattering average).  The model is linear in ``f`` and ``mu_bg``, so
each spectrum is solved exactly by weighted least squares: no starting values,
no convergence failures; uncertainties from the normal equations.

The steep ``lambda`` slope of the 6Li absorption is what identifies ``f``;
``n_Li`` and ``f`` cannot both be free (their product dominates the
attenuation), so ``n_Li`` is an input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import as_numbers, show
from ..errors import InputError
from ._checks import as_attenuation, as_sigma, as_wavelength, positive_float
from .xs import (
    AVOGADRO_PER_MOL,
    BARN_CM2,
    attenuation_from_composition,
    formula_cross_section,
    li_concentration_from_composition,
)

__all__ = ["li_attenuation_per_cm", "non_lithium_attenuation_per_cm", "Li6FractionFit", "fit_li6_fraction", "IsotopeExchange", "isotope_exchange"]




def _isotope_xs(w: np.ndarray):
    s6 = formula_cross_section("Li[6]", wavelength_angstrom=w)
    s7 = formula_cross_section("Li[7]", wavelength_angstrom=w)
    return np.asarray(s6.total_barn, dtype=np.float64), np.asarray(s7.total_barn, dtype=np.float64)


def li_attenuation_per_cm(wavelength_angstrom, *, li_concentration_mol_per_cm3, li6_fraction) -> np.ndarray:
    """Attenuation by lithium alone, 1/cm: ``c N_A [f sigma_6(lambda) + (1 - f) sigma_7(lambda)]``.

    ``li_concentration_mol_per_cm3`` and ``li6_fraction`` may be arrays; the result has
    their broadcast shape with the wavelength appended as the last axis.
    """
    w = as_wavelength(wavelength_angstrom, min_points=1)
    c = as_numbers("li_concentration_mol_per_cm3", li_concentration_mol_per_cm3)[..., None]
    f = as_numbers("li6_fraction", li6_fraction)[..., None]
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise InputError(f"li_concentration_mol_per_cm3 holds values that are not finite and >= 0 (min "
                         f"{show(np.nanmin(c) if np.isfinite(c).any() else c.ravel()[0])}); give mol/cm^3, e.g. 0.077 "
                         "for Li metal")
    if not np.all(np.isfinite(f)) or np.any(f < 0) or np.any(f > 1):
        raise InputError("li6_fraction holds values outside [0, 1] or NaN; give the 6Li atom fraction, e.g. "
                         "0.0759 for natural lithium")
    s6, s7 = _isotope_xs(w)
    return c * AVOGADRO_PER_MOL * BARN_CM2 * (f * s6 + (1.0 - f) * s7)


@dataclass(frozen=True)
class Li6FractionFit:
    """6Li atom fraction per spectrum; arrays have the spectra's shape without the wavelength axis.

    Attributes
    ----------
    li6_fraction, li6_fraction_sigma : array
        6Li atom fraction ``f`` (0..1, not clipped) and its standard uncertainty.
    background_per_cm, background_sigma_per_cm : array
        Fitted constant background ``mu_bg``, 1/cm (0 when not fitted).
    chi2_reduced : array
        Reduced chi-square of the fit.
    ok : bool array
        Enough finite bins, finite solution and uncertainty, ``f`` within 5 sigma of [0, 1].
    """

    li6_fraction: np.ndarray
    li6_fraction_sigma: np.ndarray
    background_per_cm: np.ndarray
    background_sigma_per_cm: np.ndarray
    chi2_reduced: np.ndarray
    ok: np.ndarray

    @property
    def li6_percent(self) -> np.ndarray:
        """6Li fraction in atom %."""
        return 100.0 * self.li6_fraction

    def to_dict(self) -> dict:
        return {k: np.asarray(getattr(self, k)).tolist() for k in (
            "li6_fraction", "li6_fraction_sigma", "background_per_cm", "background_sigma_per_cm", "chi2_reduced",
            "ok")}


def fit_li6_fraction(wavelength_angstrom, mu_per_cm, mu_sigma_per_cm=None, *, li_concentration_mol_per_cm3,
                     other_mu_per_cm=0.0, fit_background: bool = True) -> Li6FractionFit:
    """Fit the 6Li fraction of each attenuation spectrum (1/v absorption of 6Li and 7Li plus scattering).

    Parameters
    ----------
    wavelength_angstrom : (n,) array
        Strictly increasing wavelengths, Å.
    mu_per_cm : (..., n) array
        Attenuation spectra, 1/cm (wavelength LAST; e.g. ``-ln T / thickness`` of region
        spectra, or reconstructed wavelength-resolved tomograms averaged per region).
        NaN bins are ignored.
    mu_sigma_per_cm : array broadcastable to ``mu_per_cm``, optional
        Standard uncertainties; without them bins weigh equally and uncertainties come
        from the residual scatter.  With them the uncertainty is scaled by
        ``max(1, chi2_reduced)``.
    li_concentration_mol_per_cm3 : float or array
        Lithium concentration of each spectrum's region, mol/cm^3 (scalar or the spectra's
        shape without the wavelength axis), e.g. from
        :func:`~tomo4d.neutron.xs.li_concentration_from_composition`.
    other_mu_per_cm : float or array
        Attenuation of all other elements, 1/cm, scalar, ``(n,)`` or the spectra's shape
        (e.g. :func:`~tomo4d.neutron.xs.attenuation_from_composition` of the Li-free part).
    fit_background : bool
        Also fit a wavelength-independent background ``mu_bg``.

    Returns
    -------
    Li6FractionFit
    """
    w = as_wavelength(wavelength_angstrom, min_points=3)
    mu = as_attenuation(mu_per_cm, w.size)
    sig = as_sigma(mu_sigma_per_cm, mu.shape, name="mu_sigma_per_cm")
    batch = mu.shape[:-1]
    c = as_numbers("li_concentration_mol_per_cm3", li_concentration_mol_per_cm3)
    try:
        c = np.broadcast_to(c, batch)
    except ValueError:
        raise InputError(f"li_concentration_mol_per_cm3 has shape {c.shape}; give a scalar or one value per "
                         f"spectrum {batch}") from None
    if not np.all(np.isfinite(c)) or np.any(c <= 0):
        raise InputError("li_concentration_mol_per_cm3 must be finite and > 0 (the isotope ratio of no lithium is "
                         "undefined)")
    other = as_numbers("other_mu_per_cm", other_mu_per_cm)
    if not np.all(np.isfinite(other)):
        raise InputError("other_mu_per_cm holds NaN or infinite values; give the finite attenuation (1/cm) of the "
                         "other elements, e.g. from non_lithium_attenuation_per_cm")
    try:
        other = np.broadcast_to(other, mu.shape)
    except ValueError:
        raise InputError(f"other_mu_per_cm has shape {other.shape}; give a scalar, one value per wavelength "
                         f"({w.size}) or the spectra's shape {mu.shape}") from None
    s6, s7 = _isotope_xs(w)
    n_li = c[..., None] * AVOGADRO_PER_MOL * BARN_CM2  # 1/cm per barn
    y = mu - other - n_li * s7  # = f * n_li (s6 - s7) + bg
    g = n_li * (s6 - s7)
    valid = np.isfinite(y)
    wt = np.where(valid, 1.0 if sig is None else 1.0 / np.where(valid, sig, 1.0) ** 2, 0.0)
    y0 = np.where(valid, y, 0.0)
    n_valid = valid.sum(-1)
    n_par = 2 if fit_background else 1
    Sgg = np.sum(wt * g * g, -1)
    Sgy = np.sum(wt * g * y0, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if fit_background:
            S1 = np.sum(wt, -1)
            Sg = np.sum(wt * g, -1)
            Sy = np.sum(wt * y0, -1)
            det = Sgg * S1 - Sg * Sg
            f = (S1 * Sgy - Sg * Sy) / det
            bg = (Sgg * Sy - Sg * Sgy) / det
            var_f = S1 / det
            var_bg = Sgg / det
        else:
            f = Sgy / Sgg
            bg = np.zeros(batch)
            var_f = 1.0 / Sgg
            var_bg = np.zeros(batch)
        r = np.where(valid, y0 - f[..., None] * g - bg[..., None], 0.0)
        dof = np.maximum(n_valid - n_par, 1)
        chi2 = np.sum(wt * r * r, -1) / dof
        scale = np.maximum(chi2, 1.0) if sig is not None else chi2
        f_sig = np.sqrt(var_f * scale)
        bg_sig = np.sqrt(var_bg * scale)
    ok = (n_valid >= n_par + 2) & np.isfinite(f) & np.isfinite(f_sig) & (f_sig > 0) \
        & (f > -5 * f_sig) & (f < 1 + 5 * f_sig)
    nan = np.float64("nan")
    return Li6FractionFit(li6_fraction=np.where(ok, f, nan), li6_fraction_sigma=np.where(ok, f_sig, nan),
                          background_per_cm=np.where(ok, bg, nan), background_sigma_per_cm=np.where(ok, bg_sig, nan),
                          chi2_reduced=chi2, ok=ok)


@dataclass(frozen=True)
class IsotopeExchange:
    """Change of the 6Li fraction between two states (after - before), per region/pixel.

    Attributes
    ----------
    delta_li6_fraction, delta_sigma : array
        ``f_after - f_before`` and its standard uncertainty (independent fits).
    significant : bool array
        ``|delta| > threshold_sigma * delta_sigma`` where both fits are ok.
    ok : bool array
        Both fits ok.
    """

    delta_li6_fraction: np.ndarray
    delta_sigma: np.ndarray
    significant: np.ndarray
    ok: np.ndarray


def isotope_exchange(before: Li6FractionFit, after: Li6FractionFit, *, threshold_sigma: float = 3.0) -> IsotopeExchange:
    """Isotope-exchange map between two states (e.g. before/after cycling a 6Li-enriched electrode)."""
    if not isinstance(before, Li6FractionFit) or not isinstance(after, Li6FractionFit):
        raise InputError("isotope_exchange needs two Li6FractionFit results (from fit_li6_fraction)")
    if np.shape(before.li6_fraction) != np.shape(after.li6_fraction):
        raise InputError(f"the two states have different shapes {np.shape(before.li6_fraction)} and "
                         f"{np.shape(after.li6_fraction)}; fit the same regions/macro-pixels in both")
    th = positive_float("threshold_sigma", threshold_sigma)
    ok = np.asarray(before.ok) & np.asarray(after.ok)
    d = np.where(ok, after.li6_fraction - before.li6_fraction, np.nan)
    s = np.where(ok, np.hypot(after.li6_fraction_sigma, before.li6_fraction_sigma), np.nan)
    with np.errstate(invalid="ignore"):
        sig = ok & (np.abs(d) > th * s)
    return IsotopeExchange(d, s, sig, ok)


def non_lithium_attenuation_per_cm(formula: str, *, density_g_per_cm3: float, wavelength_angstrom) -> np.ndarray:
    """Attenuation of all elements of ``formula`` except lithium, 1/cm, at each wavelength.

    The ``other_mu_per_cm`` of :func:`fit_li6_fraction` for a phase of known composition
    (e.g. ``"Li7La3Zr2O12"`` at 5.1 g/cm^3): the whole compound's attenuation with pure
    7Li minus that 7Li's own contribution (1/v absorption and scattering of every other
    element, from ``periodictable``).
    """
    w = as_wavelength(wavelength_angstrom, min_points=1)
    total = attenuation_from_composition(formula, density_g_per_cm3=density_g_per_cm3, wavelength_angstrom=w,
                                         li6_fraction=0.0)
    c = li_concentration_from_composition(formula, density_g_per_cm3=density_g_per_cm3, li6_fraction=0.0)
    return np.asarray(total - li_attenuation_per_cm(w, li_concentration_mol_per_cm3=c, li6_fraction=0.0))
