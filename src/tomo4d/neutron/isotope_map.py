"""Per-voxel (or per-pixel) 6Li fraction and Li concentration maps, vectorised over 10^6 spectra.

Every spectrum ``mu(lambda)`` (1/cm; a voxel of wavelength-resolved tomography, one reconstruction per
band, or a pixel's ``-ln T / thickness``) is modelled as in :func:`~tomo4d.neutron.fit_li6_fraction`:

.. math::

    \\mu(\\lambda) - \\mu_{other}(\\lambda) = N_A\\,[n_6\\,\\sigma_6(\\lambda) + n_7\\,\\sigma_7(\\lambda)] + \\mu_{bg}

with ``n_6``, ``n_7`` the 6Li and 7Li concentrations (mol/cm^3), ``sigma_i`` the 1/v absorption plus
scattering of each isotope (``periodictable``) and ``mu_bg`` an optional constant.  The model is linear;
which parameters are free depends on what is known (``mode``):

``"fraction"``      Li concentration ``c`` given (map or scalar, e.g. from the X-ray phase map and the
                    phases' compositions): ``n_6`` (and ``mu_bg``) fitted, ``f = n_6 / c``.
``"concentration"`` 6Li fraction ``f`` given (e.g. natural lithium): ``c`` fitted, ``n_6 = f c``.
``"both"``          neither: ``n_6`` and ``n_7`` fitted (no background: ``sigma_7`` is nearly constant and
                    would be confounded with it); ``c = n_6 + n_7``, ``f = n_6 / c``.  ``n_7`` rests on
                    lithium's 1.4 b scattering only, so ``c`` and ``f`` are poorly determined unless the
                    counts are high: the uncertainty maps say so.

All spectra share the design matrix (except ``"concentration"`` with an ``f`` map), so the normal
equations of a chunk of spectra are two matrix products; solved exactly (no iterations, no starting
values).  Uncertainties: ``(G^T W G)^-1`` with ``W = 1 / sigma^2`` from the given per-bin sigmas, scaled
by ``max(1, chi2_reduced)``; without sigmas by the residual scatter (``chi2_reduced``).  NaN bins are
ignored.  Macro-pixel binning (``bin_factor``) averages ``b^d`` spectra (their sigmas combine as
``sqrt(sum sigma^2) / N``) and the given maps alike before fitting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .._validate import as_numbers, check_int, show
from ..errors import FormatError, InputError
from ._checks import as_attenuation, as_sigma, as_wavelength
from .xs import AVOGADRO_PER_MOL, BARN_CM2, formula_cross_section

log = logging.getLogger(__name__)

__all__ = ["IsotopeMap", "fit_isotope_map", "bin_spectra"]

_FORMAT = "tomo4d.isotope_map"
_MODES = ("fraction", "concentration", "both")
_K = AVOGADRO_PER_MOL * BARN_CM2  # (1/cm) per (mol/cm^3 * barn)


@dataclass(frozen=True)
class IsotopeMap:
    """6Li fraction and Li concentration per voxel/pixel; arrays have the (binned) spatial shape.

    Attributes
    ----------
    li6_fraction, li6_fraction_sigma : array
        6Li atom fraction (0..1, not clipped) and its standard uncertainty.
    li_concentration_mol_per_cm3, li_concentration_sigma_mol_per_cm3 : array
        Total Li concentration, mol/cm^3 (the input with sigma 0 in mode ``"fraction"``).
    li6_concentration_mol_per_cm3, li6_concentration_sigma_mol_per_cm3 : array
        6Li concentration ``f c``, mol/cm^3 (the best-determined quantity: 6Li's absorption).
    background_per_cm, background_sigma_per_cm : array
        Constant background ``mu_bg``, 1/cm (0 when not fitted).
    chi2_reduced : array
    ok : bool array
        Enough valid bins, finite values and uncertainties, and (where ``f`` is fitted) ``f`` within 5
        sigma of [0, 1]; (where ``c`` is fitted) ``c > -5 sigma``.  Values are NaN where not ok.
    mode : str
        ``"fraction"``, ``"concentration"`` or ``"both"`` (see the module text).
    bin_factor : int
        Macro-pixel size the spectra were binned by before fitting.
    """

    li6_fraction: np.ndarray
    li6_fraction_sigma: np.ndarray
    li_concentration_mol_per_cm3: np.ndarray
    li_concentration_sigma_mol_per_cm3: np.ndarray
    li6_concentration_mol_per_cm3: np.ndarray
    li6_concentration_sigma_mol_per_cm3: np.ndarray
    background_per_cm: np.ndarray
    background_sigma_per_cm: np.ndarray
    chi2_reduced: np.ndarray
    ok: np.ndarray
    mode: str = "fraction"
    bin_factor: int = 1

    def arrays(self) -> dict:
        """The array fields by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("mode", "bin_factor")}

    def save(self, path, *, overwrite: bool = False, inputs=()) -> Path:
        """Write a ``.npz`` atomically (every array, plus ``format``, ``mode`` and ``bin_factor``)."""
        from ..io import atomic_output

        path = Path(path)
        with atomic_output(path, overwrite=overwrite, inputs=inputs) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, format=_FORMAT, mode=self.mode, bin_factor=self.bin_factor, **self.arrays())
        return path

    @classmethod
    def load(cls, path) -> IsotopeMap:
        """Read a file written by :meth:`save`."""
        d = _load_npz(path, _FORMAT, "isotope map")
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name not in ("mode", "bin_factor")},
                   mode=str(d["mode"]), bin_factor=int(d["bin_factor"]))


def _load_npz(path, fmt: str, what: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} file {str(p)!r} does not exist; check the path")
    try:
        with np.load(p, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise FormatError(f"cannot read {str(p)!r} as a .npz {what}: {exc}") from None
    if str(d.get("format", "")) != fmt:
        raise FormatError(f"{str(p)!r} is not a tomo4d {what} (format != {fmt!r})")
    return d


def bin_spectra(values, factor: int, *, sigma=None, n_spatial: int | None = None):
    """Macro-pixel binning of spectra ``(*spatial, n)``: mean over ``factor^d`` blocks, NaN-aware.

    Trailing rows that do not fill a block are dropped.  ``sigma`` (same shape) combines as
    ``sqrt(sum sigma^2) / N_valid``.  ``n_spatial``: how many leading axes are spatial (default all
    but the last).  Returns ``(binned, binned_sigma or None)``.
    """
    b = check_int("bin_factor", factor, minimum=1)
    a = np.asarray(values, dtype=np.float64)
    d = a.ndim - 1 if n_spatial is None else int(n_spatial)
    s = None if sigma is None else np.broadcast_to(np.asarray(sigma, np.float64), a.shape)
    if b == 1:
        return a, s
    sp = a.shape[:d]
    if min(sp, default=0) < b:
        raise InputError(f"bin_factor={b} is larger than the map ({sp}); give a smaller --bin")
    nb = tuple(s // b for s in sp)
    a = a[tuple(slice(0, n * b) for n in nb)]
    shape = sum(((n, b) for n in nb), ()) + a.shape[d:]
    axes = tuple(2 * i + 1 for i in range(d))
    a = a.reshape(shape)
    valid = np.isfinite(a)
    cnt = valid.sum(axis=axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, a, 0.0).sum(axis=axes) / cnt
        if sigma is None:
            return mean, None
        s = s[tuple(slice(0, n * b) for n in nb)].reshape(shape)
        var = np.where(valid, s * s, 0.0).sum(axis=axes)
        return mean, np.sqrt(var) / cnt


def _isotope_xs(w):
    s6 = formula_cross_section("Li[6]", wavelength_angstrom=w).total_barn
    s7 = formula_cross_section("Li[7]", wavelength_angstrom=w).total_barn
    return np.asarray(s6, np.float64), np.asarray(s7, np.float64)


def _per_spectrum(name, value, batch, *, positive=False, fraction=False):
    """A scalar or a map of the spectra's (binned) spatial shape, as a flat float64 array or a float."""
    a = as_numbers(name, value)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} holds NaN or infinite values; give finite values (mask voxels with no lithium "
                         "with a small positive concentration and ignore them, or leave them out)")
    if positive and (np.any(a < 0) or (a.ndim == 0 and a <= 0)):
        raise InputError(f"{name} must be > 0 (a map may hold 0 where there is no lithium: those spectra are "
                         f"flagged, not fitted); min {show(float(a.min()))}")
    if fraction and (np.any(a < 0) or np.any(a > 1)):
        raise InputError(f"{name} must lie in [0, 1] (the 6Li atom fraction, e.g. 0.0759 for natural Li)")
    if a.ndim == 0:
        return float(a)
    if a.shape != batch:
        raise InputError(f"{name} has shape {a.shape}; give a scalar or one value per spectrum {batch}")
    return a.reshape(-1)


def _check_inputs(w, mu, sig, li_conc, li6, other, fit_background, bin_factor):
    """Validated, binned inputs: (mu2d, sig2d|None, batch, mode, c, f, other (n,)|(m, n))."""
    if li_conc is not None and li6 is not None:
        raise InputError("give li_concentration_mol_per_cm3 (fits the 6Li fraction) or li6_fraction (fits the Li "
                         "concentration), not both; give neither to fit both")
    mode = "fraction" if li_conc is not None else "concentration" if li6 is not None else "both"
    if mode == "both" and fit_background:
        raise InputError("fitting both the 6Li fraction and the Li concentration needs fit_background=False (7Li's "
                         "nearly constant cross section cannot be told from a constant background)")
    other = as_numbers("other_mu_per_cm", other)
    if not np.all(np.isfinite(other)):
        raise InputError("other_mu_per_cm holds NaN or infinite values; give the finite Li-free attenuation, 1/cm")
    full = other.ndim == mu.ndim
    if other.ndim > 1 and not full:
        raise InputError(f"other_mu_per_cm has shape {other.shape}; give a scalar, one value per band ({w.size}) "
                         f"or the spectra's shape {mu.shape}")
    try:
        other = np.broadcast_to(other, mu.shape if full else (w.size,))
    except ValueError:
        raise InputError(f"other_mu_per_cm has shape {other.shape}; give a scalar, one value per band ({w.size}) "
                         f"or the spectra's shape {mu.shape}") from None
    maps = {}
    for name, v in (("li_concentration_mol_per_cm3", li_conc), ("li6_fraction", li6)):
        if v is not None and np.ndim(v) > 0:
            if np.shape(v) != mu.shape[:-1]:
                raise InputError(f"{name} has shape {np.shape(v)}; give a scalar or one value per spectrum "
                                 f"{mu.shape[:-1]}")
            maps[name] = bin_spectra(np.asarray(v, np.float64)[..., None], bin_factor)[0][..., 0]
    if full:
        other = bin_spectra(other, bin_factor)[0]
    mu, sig = bin_spectra(mu, bin_factor, sigma=sig)
    batch = mu.shape[:-1]
    c = None if li_conc is None else _per_spectrum("li_concentration_mol_per_cm3",
                                                  maps.get("li_concentration_mol_per_cm3", li_conc), batch,
                                                  positive=True)
    f = None if li6 is None else _per_spectrum("li6_fraction", maps.get("li6_fraction", li6), batch, fraction=True)
    oth = other.reshape(-1, w.size) if full else np.asarray(other, np.float64)
    return mu.reshape(-1, w.size), None if sig is None else sig.reshape(-1, w.size), batch, mode, c, f, oth


def fit_isotope_map(wavelength_angstrom, mu_per_cm, mu_sigma_per_cm=None, *, li_concentration_mol_per_cm3=None,
                    li6_fraction=None, other_mu_per_cm=0.0, fit_background: bool = True, bin_factor: int = 1,
                    chunk: int = 65536) -> IsotopeMap:
    """6Li fraction and Li concentration of every spectrum of a map (see the module text for the model).

    Parameters
    ----------
    wavelength_angstrom : (n,) array
        Band centres, strictly increasing, Å.
    mu_per_cm : (..., n) array
        Attenuation spectra, 1/cm, wavelength LAST (per-band volumes ``(band, z, y, x)``:
        ``numpy.moveaxis(v, 0, -1)``).  NaN bins are ignored.
    mu_sigma_per_cm : array broadcastable to ``mu_per_cm``, optional
        Per-bin standard uncertainty, 1/cm (for reconstructed volumes: the per-voxel noise of each band's
        reconstruction, see :func:`tomo4d.neutron.estimate_noise_per_cm`).
    li_concentration_mol_per_cm3 : float or array, optional
        Known Li concentration (scalar or one per spectrum): fit the 6Li fraction (mode ``"fraction"``);
        spectra with 0 (no lithium) are flagged (``ok`` False).
    li6_fraction : float or array, optional
        Known 6Li fraction: fit the Li concentration (mode ``"concentration"``).  Neither: fit both
        (mode ``"both"``, needs ``fit_background=False``).
    other_mu_per_cm : float, (n,) or (..., n) array
        Li-free attenuation (all other elements, crystalline phases' Bragg edges included), 1/cm.
    fit_background : bool
        Also fit a constant ``mu_bg``.
    bin_factor : int
        Macro-pixel binning of every axis but the wavelength before fitting (1: none); fit a time
        series ``(t, z, y, x, n)`` step by step when binning, or the time axis is binned too.
    chunk : int
        Spectra solved per batch (memory ~ 40 x chunk x n bytes).

    Returns
    -------
    IsotopeMap
    """
    w = as_wavelength(wavelength_angstrom, min_points=3)
    mu = as_attenuation(mu_per_cm, w.size)
    if mu.ndim < 2:
        mu = mu[None]
    if mu_sigma_per_cm is not None and np.shape(mu_sigma_per_cm) == mu.shape:  # masked bins may carry NaN sigma
        mu_sigma_per_cm = np.where(np.isnan(mu), 1.0, np.asarray(mu_sigma_per_cm, np.float64))
    sig = as_sigma(mu_sigma_per_cm, mu.shape, name="mu_sigma_per_cm")
    check_int("chunk", chunk, minimum=1)
    b = check_int("bin_factor", bin_factor, minimum=1)
    mu2, sig2, batch, mode, c, f, other = _check_inputs(w, mu, sig, li_concentration_mol_per_cm3, li6_fraction,
                                                          other_mu_per_cm, bool(fit_background), b)
    m = mu2.shape[0]
    s6, s7 = _isotope_xs(w)
    out = {k: np.full(m, np.nan) for k in ("n6", "n6_s", "c", "c_s", "f", "f_s", "bg", "bg_s", "chi2")}
    ok = np.zeros(m, bool)
    for a in range(0, m, int(chunk)):
        sl = slice(a, min(a + int(chunk), m))
        _fit_chunk(sl, w, mu2, sig2, mode, c, f, other, s6, s7, bool(fit_background), out, ok)
    n_bad = int(m - ok.sum())
    if n_bad:
        log.info("isotope map: %d of %d spectra not ok (flagged)", n_bad, m)
    rs = lambda k: np.where(ok, out[k], np.nan).reshape(batch)  # noqa: E731
    return IsotopeMap(li6_fraction=rs("f"), li6_fraction_sigma=rs("f_s"), li_concentration_mol_per_cm3=rs("c"),
                      li_concentration_sigma_mol_per_cm3=rs("c_s"), li6_concentration_mol_per_cm3=rs("n6"),
                      li6_concentration_sigma_mol_per_cm3=rs("n6_s"), background_per_cm=rs("bg"),
                      background_sigma_per_cm=rs("bg_s"), chi2_reduced=out["chi2"].reshape(batch),
                      ok=ok.reshape(batch), mode=mode, bin_factor=b)


def _design(mode, f, s6, s7, fit_background, sl):
    """Design matrix G (n, k) shared by the chunk, or (m, n, k) for an f map; and names of the columns."""
    one = np.ones_like(s6)
    if mode == "fraction":
        cols = [_K * (s6 - s7)]
    elif mode == "both":
        cols = [_K * s6, _K * s7]
    elif np.ndim(f) == 0:
        cols = [_K * (f * s6 + (1 - f) * s7)]
    else:
        g = _K * (f[sl, None] * s6 + (1 - f[sl, None]) * s7)
        return np.stack([g, np.broadcast_to(one, g.shape)] if fit_background else [g], -1)
    if fit_background:
        cols.append(one)
    return np.stack(cols, -1)


def _fit_chunk(sl, w, mu2, sig2, mode, c, f, other, s6, s7, fit_background, out, ok):
    """Weighted least squares of the spectra ``sl``; fills ``out`` and ``ok`` in place."""
    y = mu2[sl] - (other[sl] if other.ndim == 2 else other)
    if mode == "fraction":
        cc = c if np.ndim(c) == 0 else c[sl, None]
        y = y - cc * _K * s7
    valid = np.isfinite(y)
    wt = valid.astype(np.float64) if sig2 is None else np.where(valid, 1.0 / sig2[sl] ** 2, 0.0)
    y = np.where(valid, y, 0.0)
    G = _design(mode, f, s6, s7, fit_background, sl)
    k = G.shape[-1]
    if G.ndim == 2:
        A = (wt @ (G[:, :, None] * G[:, None, :]).reshape(w.size, k * k)).reshape(-1, k, k)
        rhs = (wt * y) @ G
    else:
        A = np.einsum("mn,mnk,mnl->mkl", wt, G, G)
        rhs = np.einsum("mn,mnk->mk", wt * y, G)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        det_ok = np.abs(np.linalg.det(A)) > 0
        A_safe = np.where(det_ok[:, None, None], A, np.eye(k))
        cov = np.linalg.inv(A_safe)
        p = np.einsum("mkl,ml->mk", cov, rhs)
        fitted = p @ G.T if G.ndim == 2 else np.einsum("mnk,mk->mn", G, p)
        r = y - fitted
        n_valid = valid.sum(-1)
        chi2 = np.sum(wt * r * r, -1) / np.maximum(n_valid - k, 1)
        scale = np.maximum(chi2, 1.0) if sig2 is not None else chi2
        cov = cov * scale[:, None, None]
        var = np.einsum("mkk->mk", cov)
        _derive(mode, p, cov, var, c, f, sl, fit_background, out)
    out["chi2"][sl] = chi2
    good = det_ok & (n_valid >= k + 2)
    for key in ("n6", "n6_s", "c", "f", "f_s"):
        good &= np.isfinite(out[key][sl])
    good &= (out["c_s"][sl] if mode == "concentration" else out["f_s"][sl]) > 0
    with np.errstate(invalid="ignore"):
        if mode != "concentration":
            good &= (out["f"][sl] > -5 * out["f_s"][sl]) & (out["f"][sl] < 1 + 5 * out["f_s"][sl])
        if mode != "fraction":
            good &= out["c"][sl] > -5 * out["c_s"][sl]
    ok[sl] = good


def _derive(mode, p, cov, var, c, f, sl, fit_background, out):
    """6Li fraction, concentrations and background (with propagated sigmas) from the linear parameters."""
    m = p.shape[0]
    if mode == "fraction":
        cc = np.broadcast_to(c if np.ndim(c) == 0 else c[sl], (m,))
        n6, n6_var = p[:, 0], var[:, 0]
        out["c"][sl], out["c_s"][sl] = cc, 0.0
        out["f"][sl], out["f_s"][sl] = n6 / cc, np.sqrt(n6_var) / cc
    elif mode == "concentration":
        ff = np.broadcast_to(f if np.ndim(f) == 0 else f[sl], (m,))
        out["c"][sl], out["c_s"][sl] = p[:, 0], np.sqrt(var[:, 0])
        n6, n6_var = ff * p[:, 0], ff * ff * var[:, 0]
        out["f"][sl], out["f_s"][sl] = ff, 0.0
    else:
        n6, n7 = p[:, 0], p[:, 1]
        v66, v77, v67 = var[:, 0], var[:, 1], cov[:, 0, 1]
        cc = n6 + n7
        out["c"][sl], out["c_s"][sl] = cc, np.sqrt(np.maximum(v66 + v77 + 2 * v67, 0))
        out["f"][sl] = n6 / cc
        out["f_s"][sl] = np.sqrt(np.maximum(n7 * n7 * v66 + n6 * n6 * v77 - 2 * n6 * n7 * v67, 0)) / cc ** 2
        n6_var = v66
    out["n6"][sl], out["n6_s"][sl] = n6, np.sqrt(n6_var)
    if fit_background:
        out["bg"][sl], out["bg_s"][sl] = p[:, -1], np.sqrt(var[:, -1])
    else:
        out["bg"][sl], out["bg_s"][sl] = 0.0, 0.0
