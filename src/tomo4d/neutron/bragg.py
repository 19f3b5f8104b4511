"""Bragg edges in wavelength-resolved neutron transmission: model and fit (lattice spacing and strain: :mod:`.lattice`).

A polycrystal stops Bragg-scattering neutrons from a family of planes {hkl}
once the wavelength exceeds twice their spacing, ``lambda_hkl = 2 d_hkl``, so
the transmission jumps up there (a Bragg edge).  The edge is a step blurred by
the instrument: the pulse shape of a spallation/chopper source is close to a
Gaussian (width ``sigma``) convolved with an exponential tail towards long
wavelengths (decay ``tau``).  Following Santisteban et al. (2001) the
transmission around one edge is

.. math::

    T(\\lambda) = e^{-(a_0 + b_0\\lambda)}\\,\\big[e^{-(a_{hkl} + b_{hkl}\\lambda)}
                  + (1 - e^{-(a_{hkl} + b_{hkl}\\lambda)})\\,B(\\lambda)\\big]

where ``exp(-(a0 + b0 lambda))`` is the transmission on the long-wavelength
side, ``exp(-(a_hkl + b_hkl lambda))`` the extra attenuation below the edge,
and ``B`` the edge profile: the cumulative distribution of the
exponentially-modified Gaussian (Kropff et al. 1982 for the pulse shape),

.. math::

    B(x) = \\tfrac12\\Big[\\operatorname{erfc}\\!\\Big(-\\frac{x}{\\sqrt2\\sigma}\\Big)
           - e^{-x/\\tau + \\sigma^2/(2\\tau^2)}\\,
             \\operatorname{erfc}\\!\\Big(-\\frac{x}{\\sqrt2\\sigma} + \\frac{\\sigma}{\\sqrt2\\tau}\\Big)\\Big],
    \\qquad x = \\lambda - \\lambda_{hkl}.

The second term is evaluated through ``erfcx`` (``exp(A) erfc(z) = exp(-x^2/2sigma^2)
erfcx(z)``), so it never overflows for sharp edges.

Fitting follows the usual staged strategy (Santisteban et al. 2001; also the
iBeatles and nbragg programs): straight lines in ``ln T`` far above and far
below the edge give ``a0, b0`` and ``a_hkl, b_hkl``; then the edge position,
width and tail are fitted with those fixed, and finally all seven parameters
together.  Spectra are ``(..., n_wavelength)`` (wavelength on the LAST axis);
every spectrum gets its own fit and a boolean ``ok`` flag.  A failed fit is
reported through ``ok`` (values NaN), never raised.

References
----------
J. R. Santisteban, L. Edwards, A. Steuwer, P. J. Withers, "Time-of-flight
neutron transmission diffraction", J. Appl. Cryst. 34 (2001) 289-297.

A. J. Kropff, J. R. Granada, R. E. Mayer, "A model for the pulse shape of
neutrons emerging from a moderator", Nucl. Instrum. Methods 198 (1982) 515-521.
"""

# ``_bragg_fit`` is imported inside fit_bragg_edge: it imports this module (a cycle at the top).
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from .._validate import show
from ..errors import InputError, check_choice
from ._checks import as_sigma, as_spectra, as_wavelength, check_transmission, positive_float
from .lattice import LatticeStrain, lattice_strain

log = logging.getLogger(__name__)

__all__ = ["edge_profile", "bragg_edge_model", "BraggEdgeFit", "fit_bragg_edge", "PARAMETER_NAMES"]

#: Order of the nine model parameters in :attr:`BraggEdgeFit.parameters` (the two curvatures ``c`` of the
#: baselines are 0 unless ``baseline="quadratic"``).
PARAMETER_NAMES = ("a0", "b0_per_angstrom", "a_hkl", "b_hkl_per_angstrom", "edge_angstrom", "width_angstrom",
                   "tail_angstrom", "c0_per_angstrom2", "c_hkl_per_angstrom2")
_SQRT2 = math.sqrt(2.0)


def edge_profile(wavelength_angstrom, *, edge_angstrom: float, width_angstrom: float,
                 tail_angstrom: float) -> np.ndarray:
    """Instrument-broadened unit step ``B(lambda)`` rising from 0 to 1 at the edge.

    Parameters
    ----------
    wavelength_angstrom : array
        Wavelengths, Å.
    edge_angstrom : float
        Edge position ``lambda_hkl = 2 d_hkl``, Å.
    width_angstrom : float
        Gaussian standard deviation of the instrumental broadening, Å (> 0).
    tail_angstrom : float
        Decay length of the exponential tail towards long wavelengths, Å; 0 gives
        the symmetric error-function edge ``erfc(-x / (sqrt(2) sigma)) / 2``.

    Returns
    -------
    numpy.ndarray (float64)
        The cumulative distribution of a Gaussian convolved with a one-sided
        exponential (Santisteban et al. 2001, eq. 5), evaluated at
        ``lambda - edge``.
    """
    from scipy.special import erfc, erfcx

    x = np.asarray(wavelength_angstrom, dtype=np.float64) - float(edge_angstrom)
    s = float(width_angstrom)
    t = float(tail_angstrom)
    u = -x / (_SQRT2 * s)
    if t <= 0:  # no tail: the symmetric (Gaussian) edge
        return 0.5 * erfc(u)
    z = u + s / (_SQRT2 * t)
    tail = np.empty_like(x)
    pos = z >= 0
    tail[pos] = np.exp(-0.5 * (x[pos] / s) ** 2) * erfcx(z[pos])
    neg = ~pos  # here x > s^2 / t, so the exponent is < -s^2 / (2 t^2): no overflow
    tail[neg] = np.exp(-x[neg] / t + 0.5 * (s / t) ** 2) * erfc(z[neg])
    return 0.5 * (erfc(u) - tail)


def _model(w: np.ndarray, p: np.ndarray) -> np.ndarray:
    a0, b0, ah, bh, edge, width, tail = p[:7]
    c0, ch = (p[7], p[8]) if len(p) > 7 else (0.0, 0.0)
    outer = np.exp(-(a0 + (b0 + c0 * w) * w))
    inner = np.exp(-(ah + (bh + ch * w) * w))
    return outer * (inner + (1.0 - inner) * edge_profile(w, edge_angstrom=edge, width_angstrom=width,
                                                          tail_angstrom=tail))


def bragg_edge_model(wavelength_angstrom, *, edge_angstrom: float, width_angstrom: float, tail_angstrom: float,
                     a0: float, b0_per_angstrom: float, a_hkl: float, b_hkl_per_angstrom: float,
                     c0_per_angstrom2: float = 0.0, c_hkl_per_angstrom2: float = 0.0) -> np.ndarray:
    """Transmission around one Bragg edge (Santisteban et al. 2001, eq. 4).

    ``T = exp(-(a0 + b0 l)) [exp(-(a_hkl + b_hkl l)) + (1 - exp(-(a_hkl + b_hkl l))) B(l)]``
    with ``B`` from :func:`edge_profile`; wavelengths in Å, ``b`` terms per Å.  The optional
    curvatures add ``c0 l^2`` and ``c_hkl l^2`` to the two exponents (quadratic baselines).
    """
    w = np.asarray(wavelength_angstrom, dtype=np.float64)
    return _model(w, np.array([a0, b0_per_angstrom, a_hkl, b_hkl_per_angstrom, edge_angstrom, width_angstrom,
                               tail_angstrom, c0_per_angstrom2, c_hkl_per_angstrom2], dtype=np.float64))


@dataclass(frozen=True)
class BraggEdgeFit:
    """Fitted Bragg edge(s); every array has the shape of the spectra without their wavelength axis.

    Attributes
    ----------
    edge_position_angstrom, edge_position_sigma_angstrom : array
        Model parameter ``lambda_hkl`` (the onset of a tailed edge, the centre of a Gaussian one) and its
        standard uncertainty, Å.  The reported position is :attr:`edge_angstrom` (see ``position``).
    edge_width_angstrom, edge_width_sigma_angstrom : array
        Gaussian broadening ``sigma`` and its uncertainty, Å.
    edge_tail_angstrom : array
        Exponential tail ``tau``, Å (0 for ``profile="gaussian"``).
    edge_midpoint_angstrom, edge_midpoint_sigma_angstrom : array
        Wavelength where the broadened edge reaches half its height, Å, and its
        uncertainty.  With a tail, ``edge_position_angstrom`` is the onset of the
        edge (the unbroadened step) and the midpoint lies about ``0.7 tau`` above
        it; the midpoint does not depend on how the broadening is split between
        ``sigma`` and ``tau`` and is what derivative- or erf-based edge finders and
        many wavelength calibrations refer to.
    edge_height, edge_height_sigma : array
        Jump of the transmission at the edge, ``exp(-(a0 + b0 l)) (1 - exp(-(a_hkl + b_hkl l)))`` at
        ``l = lambda_hkl`` (dimensionless transmission units), and its uncertainty.
    parameters : array (..., 9)
        All model parameters in the order of :data:`PARAMETER_NAMES`.
    chi2_reduced : array
        Reduced chi-square (with the given sigmas; 1 means the model explains the noise).
    ok : bool array
        The fit converged, its uncertainties are finite, the edge lies inside the window and is
        significant (height >= ``min_significance`` x its uncertainty).  Values are NaN where not ok.
    window_angstrom : (float, float)
        Wavelength range used, Å.
    n_points : int
        Number of wavelength bins inside the window.
    profile : str
        ``"tail"`` (Gaussian with exponential tail) or ``"gaussian"``.
    position : str
        Which position :attr:`edge_angstrom`, :attr:`d_spacing_angstrom` and :meth:`strain` use:
        ``"midpoint"`` (default: half height of the broadened edge; independent of how the
        broadening splits into ``sigma`` and ``tau``, within 0.0014 Å of 2 d110 on the measured iron
        powder) or ``"onset"`` (the tail model's ``lambda_hkl``, 0.011 Å below 2 d110 there: it equals
        2 d only if the wavelength scale was calibrated to the moderator pulse's onset).

    Conventions: ``edge_position_angstrom`` is always the model parameter ``lambda_hkl`` (the onset of
    the Santisteban/Kropff edge; the centre of a ``"gaussian"`` edge) and ``edge_midpoint_angstrom``
    always the half-height wavelength; with ``profile="gaussian"`` they coincide.
    """

    edge_position_angstrom: np.ndarray
    edge_position_sigma_angstrom: np.ndarray
    edge_width_angstrom: np.ndarray
    edge_width_sigma_angstrom: np.ndarray
    edge_tail_angstrom: np.ndarray
    edge_midpoint_angstrom: np.ndarray
    edge_midpoint_sigma_angstrom: np.ndarray
    edge_height: np.ndarray
    edge_height_sigma: np.ndarray
    parameters: np.ndarray
    chi2_reduced: np.ndarray
    ok: np.ndarray
    window_angstrom: tuple[float, float]
    n_points: int
    profile: str = "tail"
    position: str = "midpoint"

    @property
    def edge_angstrom(self) -> np.ndarray:
        """The reported edge position ``2 d_hkl`` under :attr:`position` (midpoint or onset), Å."""
        return self.edge_midpoint_angstrom if self.position == "midpoint" else self.edge_position_angstrom

    @property
    def edge_sigma_angstrom(self) -> np.ndarray:
        """Standard uncertainty of :attr:`edge_angstrom`, Å."""
        return (self.edge_midpoint_sigma_angstrom if self.position == "midpoint"
                else self.edge_position_sigma_angstrom)

    @property
    def d_spacing_angstrom(self) -> np.ndarray:
        """Lattice spacing ``d_hkl = edge / 2`` (:attr:`edge_angstrom`), Å (Bragg's law at 2 theta = 180 deg)."""
        return self.edge_angstrom / 2.0

    @property
    def d_spacing_sigma_angstrom(self) -> np.ndarray:
        """Uncertainty of :attr:`d_spacing_angstrom`, Å."""
        return self.edge_sigma_angstrom / 2.0

    def strain(self, d0_angstrom: float) -> LatticeStrain:
        """Lattice strain ``(d - d0) / d0`` of :attr:`edge_angstrom` against the unstrained spacing ``d0_angstrom``."""
        return lattice_strain(self.edge_angstrom, d0_angstrom=d0_angstrom, edge_sigma_angstrom=self.edge_sigma_angstrom,
                              ok=self.ok)

    def model(self, wavelength_angstrom, index=()) -> np.ndarray:
        """The fitted transmission of spectrum ``index`` at ``wavelength_angstrom`` (NaN if not ok)."""
        p = np.asarray(self.parameters)[index]
        if p.shape != (len(PARAMETER_NAMES),):
            raise InputError(f"index={show(index)} does not select one spectrum of the fit (shape {self.ok.shape})")
        return _model(np.asarray(wavelength_angstrom, dtype=np.float64), p)

    def to_dict(self) -> dict:
        """JSON-friendly summary (arrays as lists)."""
        d = {k: np.asarray(getattr(self, k)).tolist() for k in (
            "edge_position_angstrom", "edge_position_sigma_angstrom", "edge_width_angstrom",
            "edge_width_sigma_angstrom", "edge_tail_angstrom", "edge_midpoint_angstrom",
            "edge_midpoint_sigma_angstrom", "edge_height", "edge_height_sigma",
            "chi2_reduced", "ok")}
        d["position"] = self.position
        d["edge_angstrom"] = np.asarray(self.edge_angstrom).tolist()
        d["edge_sigma_angstrom"] = np.asarray(self.edge_sigma_angstrom).tolist()
        d["d_spacing_angstrom"] = np.asarray(self.d_spacing_angstrom).tolist()
        d["d_spacing_sigma_angstrom"] = np.asarray(self.d_spacing_sigma_angstrom).tolist()
        d["parameters"] = np.asarray(self.parameters).tolist()
        d["parameter_names"] = list(PARAMETER_NAMES)
        d["window_angstrom"] = list(self.window_angstrom)
        d["n_points"] = self.n_points
        d["profile"] = self.profile
        return d


def fit_bragg_edge(wavelength_angstrom, transmission, sigma=None, *, window_angstrom=None,
                   edge_guess_angstrom: float | None = None, profile: str = "tail", position: str = "midpoint",
                   baseline: str = "linear", initial_parameters=None, min_significance: float = 3.0,
                   max_nfev: int = 400) -> BraggEdgeFit:
    """Fit one Bragg edge in each transmission spectrum.

    Parameters
    ----------
    wavelength_angstrom : (n,) array
        Strictly increasing wavelengths, Å.
    transmission : (..., n) array
        Transmission spectra ``I / I0`` (>= 0), wavelength on the LAST axis: one spectrum,
        ``(n_regions, n)`` region spectra or ``(ny, nx, n)`` macro-pixel spectra.
    sigma : array broadcastable to ``transmission``, optional
        Standard uncertainty of each transmission value (e.g. from counting statistics).
        Without it all bins weigh the same and uncertainties are scaled by the scatter
        of the residuals; with it they are scaled by ``max(1, chi2_reduced)``.
    window_angstrom : (float, float), optional
        Wavelength range around the edge to fit (strongly recommended: one edge only,
        with a few tenths of Å of clean baseline on each side).  Default: everything.
    edge_guess_angstrom : float, optional
        Start value of the edge position (e.g. ``2 d_hkl`` from a tabulated lattice
        parameter).  Default: steepest rise of the smoothed spectrum.
    profile : {"tail", "gaussian"}
        ``"tail"``: Gaussian broadening with an exponential tail towards long
        wavelengths (Santisteban et al. 2001; the pulse shape of Kropff et al. 1982),
        seven parameters.  ``"gaussian"``: symmetric error-function edge (``tau = 0``),
        six parameters; its edge position equals the midpoint.
    position : {"midpoint", "onset"}
        The edge position that :attr:`BraggEdgeFit.edge_angstrom`, ``d_spacing_angstrom`` and
        ``strain`` use (both are always reported; see :class:`BraggEdgeFit`).  ``"midpoint"``: where
        the broadened edge reaches half its height, the convention of erf/derivative edge finders
        and unbiased for a symmetric instrument response or a wavelength scale calibrated on the
        same convention.  ``"onset"``: the tail model's ``lambda_hkl``.
    baseline : {"linear", "quadratic"}
        The exponents of the transmission above and below the edge: straight lines in the
        wavelength (Santisteban et al. 2001), or with a curvature ``c l^2`` each (two more
        parameters).  The cross sections bend over a wide window: on the measured iron powder the
        (110) midpoint moves by 0.0012 Å between windows 3.9-4.25 and 3.6-4.6 Å with straight
        baselines (+0.0014 Å, strain +3.4e-4 in 3.8-4.4 Å), by 0.0003 Å with curved ones (+0.0006
        +- 0.0006 Å, strain +1.5e-4).  Curved baselines cost precision on weak edges (the (200)
        edge's uncertainty triples; it may then fail the significance test): use them on strong
        edges where strain at the 1e-4 level matters.
    initial_parameters : (7,) or (9,) array, optional
        Start values of all parameters (order :data:`PARAMETER_NAMES`), e.g. from a fit of
        the summed spectrum; overrides the automatic guesses.
    min_significance : float
        A fit is ``ok`` only if the edge height is at least this many standard
        uncertainties.
    max_nfev : int
        Function evaluations per least-squares stage.

    Returns
    -------
    BraggEdgeFit
        Arrays of shape ``transmission.shape[:-1]``.  For several spectra without
        ``initial_parameters`` the mean spectrum is fitted first and its result starts
        every individual fit; failed individual fits are flagged in ``ok``, never raised.

    Examples
    --------
    >>> fit = fit_bragg_edge(wl, trans, err, window_angstrom=(3.7, 4.5))   # doctest: +SKIP
    >>> float(fit.edge_position_angstrom), float(fit.d_spacing_angstrom)   # doctest: +SKIP
    """
    from ._bragg_fit import _fit_one, _guess_edge, _initial

    w_all = as_wavelength(wavelength_angstrom)
    t_all = as_spectra(transmission, w_all.size, name="transmission")
    check_transmission(t_all)
    s_all = as_sigma(sigma, t_all.shape)
    absolute = s_all is not None
    sel = _fit_window(w_all, window_angstrom, edge_guess_angstrom)
    n = int(sel.sum())
    w = w_all[sel]
    lo, hi = float(w[0]), float(w[-1])
    p_init = _initial_parameters(initial_parameters)
    positive_float("min_significance", min_significance, allow_zero=True)

    check_choice("profile", profile, ("tail", "gaussian"))
    check_choice("position", position, ("midpoint", "onset"))
    check_choice("baseline", baseline, ("linear", "quadratic"))
    free = np.ones(9, bool)
    free[6] = profile == "tail"
    free[7:] = baseline == "quadratic"

    batch = t_all.shape[:-1]
    T = t_all[..., sel].reshape(-1, n)
    S = (s_all[..., sel].reshape(-1, n) if absolute else np.ones_like(T))
    m = T.shape[0]

    def start_for(t, s):
        edge = float(edge_guess_angstrom) if edge_guess_angstrom is not None else _guess_edge(w, t)
        return _initial(w, t, s, edge)

    shared = p_init
    if shared is None and m > 1:
        t_mean = T.mean(axis=0)
        s_mean = np.sqrt((S ** 2).sum(axis=0)) / m
        p0 = start_for(t_mean, s_mean)
        if p0 is not None:
            try:
                q, *_, okm = _fit_one(w, t_mean, s_mean, p0, free=free, absolute_sigma=absolute,
                                      max_nfev=max_nfev, min_significance=min_significance)
                if okm:
                    shared = q
            except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
                log.debug("mean-spectrum Bragg fit failed: %s", exc)

    P = np.full((m, 9), np.nan)
    E = np.full((m, 9), np.nan)
    H = np.full(m, np.nan)
    HS = np.full(m, np.nan)
    MID = np.full(m, np.nan)
    MIDS = np.full(m, np.nan)
    C = np.full(m, np.nan)
    OK = np.zeros(m, bool)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for i in range(m):
            p0 = shared if shared is not None else start_for(T[i], S[i])
            if p0 is None:
                continue
            try:
                q, perr, h, hs, mid, mids, chi2, ok = _fit_one(
                    w, T[i], S[i], p0, free=free, absolute_sigma=absolute, max_nfev=max_nfev,
                    min_significance=min_significance)
            except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
                log.debug("Bragg fit %d failed: %s", i, exc)
                continue
            C[i] = chi2
            if ok:
                P[i], E[i], H[i], HS[i], MID[i], MIDS[i], OK[i] = q, perr, h, hs, mid, mids, True
    n_bad = int((~OK).sum())
    if n_bad:
        log.info("Bragg-edge fit: %d of %d spectra not ok (flagged)", n_bad, m)
    rs = lambda a: a.reshape(batch + a.shape[1:])  # noqa: E731
    return BraggEdgeFit(
        edge_position_angstrom=rs(P[:, 4]), edge_position_sigma_angstrom=rs(E[:, 4]),
        edge_width_angstrom=rs(P[:, 5]), edge_width_sigma_angstrom=rs(E[:, 5]), edge_tail_angstrom=rs(P[:, 6]),
        edge_midpoint_angstrom=rs(MID), edge_midpoint_sigma_angstrom=rs(MIDS), edge_height=rs(H),
        edge_height_sigma=rs(HS), parameters=rs(P), chi2_reduced=rs(C), ok=rs(OK),
        window_angstrom=(lo, hi), n_points=n, profile=profile, position=position)


def _fit_window(w_all: np.ndarray, window_angstrom, edge_guess_angstrom) -> np.ndarray:
    """The bins of ``w_all`` inside ``window_angstrom`` (at least 12; None: every bin); ``edge_guess_angstrom``
    checked against the window's first and last bin."""
    if window_angstrom is None:
        lo, hi = float(w_all[0]), float(w_all[-1])
    else:
        try:
            lo, hi = (float(v) for v in window_angstrom)
        except (TypeError, ValueError):
            raise InputError(f"window_angstrom={show(window_angstrom)} must be two wavelengths (lo, hi) in Å") from None
        if not hi > lo:
            raise InputError(f"window_angstrom={show(window_angstrom)}: the upper bound must exceed the lower one")
    sel = (w_all >= lo) & (w_all <= hi)
    n = int(sel.sum())
    if n < 12:
        raise InputError(f"window_angstrom=({lo:g}, {hi:g}) holds {n} wavelength bins; a Bragg-edge fit needs "
                         f">= 12 (data cover {w_all[0]:.4g}..{w_all[-1]:.4g} Å)")
    inside = w_all[sel]
    lo, hi = float(inside[0]), float(inside[-1])
    if edge_guess_angstrom is not None:
        g = float(edge_guess_angstrom)
        if not (lo < g < hi):
            raise InputError(f"edge_guess_angstrom={show(edge_guess_angstrom)} lies outside the fit window "
                             f"({lo:.4g}, {hi:.4g}) Å; widen the window or fix the guess")
    return sel


def _initial_parameters(initial_parameters) -> np.ndarray | None:
    """``initial_parameters`` as 9 finite numbers (7 given: the quadratic baseline's two at 0), or None."""
    if initial_parameters is None:
        return None
    p_init = np.asarray(initial_parameters, dtype=np.float64)
    if p_init.shape == (7,):
        p_init = np.concatenate([p_init, [0.0, 0.0]])
    if p_init.shape != (9,) or not np.all(np.isfinite(p_init)):
        raise InputError(f"initial_parameters must be 7 or 9 finite numbers ({', '.join(PARAMETER_NAMES)})")
    return p_init
