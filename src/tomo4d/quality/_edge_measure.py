"""One edge profile measured: window adaptation, error-function fit and the acceptance checks.

Joins the sampling (:mod:`._edge_sampling`) and the 1D models (:mod:`._edge_fit`);
:func:`measure_profile` returns a :class:`MeasuredEdge` or the reason the candidate is rejected
(a key of :data:`REJECT_REASONS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from ._edge_fit import FWHM_PER_SIGMA, ErfFit, fit_erf, fwhm_derivative
from ._edge_sampling import ProfileSampler, SampledProfile

S_MIN_PX = 0.5  # sharpest measurable blur sigma, pixels (FWHM 1.18 px): point samples alias below

#: Reasons a candidate profile is rejected (keys of ``EdgeResolution.rejected``).
REJECT_REASONS = {
    "outside": "the profile leaves the image or the mask",
    "fit": "the error-function fit failed",
    "sharp": f"blur sigma below {S_MIN_PX} px: noise or a feature narrower than the blur, not an edge",
    "r2": "the error-function fit does not explain the profile (R^2 < min_r2)",
    "short": "less than min_window_sigmas blur sigmas of clear profile on each side (neighbouring structure, "
             "label clearance or max_half_length_px)",
    "offcentre": "the fitted edge is off the candidate point (another edge dominates)",
    "unstable": "the fitted blur depends on the window length: a neighbouring structure, not an isolated step",
    "inconsistent": "the step height differs between the parallel lines of the profile as much as it averages "
                    "(a noise blob or narrow feature crossing some of the lines)",
    "derivative": "the derivative peak does not reach half maximum on both sides",
    "weak": "step height below min_contrast x the 90th percentile of the measured steps (texture, noise, "
            "rings or a different, fainter interface)",
    "tilted": "the boundary normal leaves the slice plane by more than max_tilt_deg (ridge pixels, not "
              "counted in n_candidates)",
}


@dataclass(frozen=True)
class MeasureOptions:
    """Settings of :func:`measure_profile` (``adaptive``: automatic or label-guided profiles)."""

    method: str
    min_r2: float
    h_min: float
    h_max: float
    adaptive: bool
    window_sigmas: float = 3.5
    min_window_sigmas: float = 2.5
    max_window_change: float = 0.15
    min_line_snr: float = 6.0


@dataclass(frozen=True, eq=False)
class MeasuredEdge:
    """An accepted profile, in pixels of its slice.

    Attributes
    ----------
    t : numpy.ndarray, shape (n,)
        Sample positions along the normal, px, 0 at ``centre_px``.
    values, fitted : numpy.ndarray, shape (n,)
        Profile (dark to bright) and the fitted error-function model.
    sigma_px, fwhm_px, t0_px : float
        Fitted blur, measured FWHM (``method``) and fitted edge position along ``t``.
    contrast : float
        Fitted step height (> 0).
    r2 : float
        Coefficient of determination of the fit.
    centre_px, normal : numpy.ndarray, shape (2,)
        Centre (y, x) of the sampled profile and unit normal from dark to bright.
    """

    t: np.ndarray
    values: np.ndarray
    fitted: np.ndarray
    sigma_px: float
    fwhm_px: float
    t0_px: float
    contrast: float
    r2: float
    centre_px: np.ndarray
    normal: np.ndarray


@dataclass(frozen=True, eq=False)
class _Window:
    """The last profile window of the adaptation: its centre, normal, half length, samples and fit."""

    centre: np.ndarray
    normal: np.ndarray
    h: float
    profile: SampledProfile
    fit: ErfFit


def _fit_window(sampler: ProfileSampler, c, n, h: float, cap: float, opt: MeasureOptions, normal_at):
    """Sample and fit, re-centring and adapting the half length to the fitted blur; ``(_Window, None)`` or
    ``(None, reason)``."""
    fit = None
    c_used = c
    for it in range(6):
        if it > 0 and normal_at is not None:
            n_new = normal_at(c, fit.s)
            if n_new is not None:
                n = n_new if float(n_new @ n) >= 0 else -n_new
        c_used = c
        if opt.adaptive:  # near the image/mask border: shorten the window (the 2.5-sigma check decides)
            h = min(h, sampler.max_half_length(c, n, h))
            if h < opt.h_min:
                return None, "outside"
        prof = sampler.sample(c, n, h)
        if prof is None:
            return None, "outside"
        fit = fit_erf(prof.t, prof.values)
        if fit is None:
            return None, "fit"
        if fit.b < 0:  # the given/estimated normal points to dark: flip the profile
            n = -n
            prof = prof.flipped()
            fit = fit_erf(prof.t, prof.values)
            if fit is None:
                return None, "fit"
        if not opt.adaptive:
            break
        h_new = float(min(max(math.ceil(opt.window_sigmas * fit.s + abs(fit.t0)), opt.h_min), cap))
        if abs(fit.t0) > 0.5:  # re-centre on the fitted edge
            c = c + fit.t0 * n
        if abs(h_new - h) < 0.5 and abs(fit.t0) <= 0.5 and it > 0:
            break
        h = h_new
    return _Window(c_used, n, h, prof, fit), None


def _stable(sampler: ProfileSampler, w: _Window, opt: MeasureOptions) -> bool:
    """Whether a fit on a window of ``opt.min_window_sigmas`` sigmas (or a longer one) gives the same sigma."""
    s, h = w.fit.s, w.h
    c = w.centre + w.fit.t0 * w.normal
    h_in = max(opt.h_min, opt.min_window_sigmas * s)
    if h_in >= 0.85 * h:  # a sharp edge on the shortest window: test against a longer one instead
        h_in = min(1.5 * h, sampler.max_half_length(c, w.normal, 1.5 * h))
    if abs(h_in - h) < 0.15 * h:
        return True
    got = sampler.sample(c, w.normal, h_in)
    fit_in = None if got is None else fit_erf(got.t, got.values)
    return not (fit_in is None or fit_in.b <= 0 or abs(fit_in.s / s - 1.0) > opt.max_window_change)


def _consistent(w: _Window, min_line_snr: float) -> bool:
    """Whether the step is the same on each parallel line: project every line on the fitted edge shape;
    a noise blob or a narrow feature crossing only some lines gives steps that scatter as much as they average."""
    t, t0, s = w.profile.t, w.fit.t0, w.fit.s
    shape_ = 0.5 * (1.0 + erf((t - t0) / (math.sqrt(2.0) * s)))
    X = np.stack([np.ones_like(shape_), shape_], axis=1)
    coef, *_ = np.linalg.lstsq(X, w.profile.lines.T, rcond=None)
    bi = coef[1]
    sd = float(bi.std(ddof=1))
    return not (sd > 0 and float(bi.mean()) / (sd / math.sqrt(len(bi))) < min_line_snr)


def _rejection(sampler: ProfileSampler, w: _Window, opt: MeasureOptions, h_cap: float | None) -> str | None:
    """The first acceptance check the window fails, or None."""
    s, t0, h = w.fit.s, w.fit.t0, w.h
    if s < S_MIN_PX:
        return "sharp"
    if w.fit.r2 < opt.min_r2:
        return "r2"
    if opt.adaptive:
        # label-guided: the labels must leave the full window clear, else a truncated window fits a
        # sharper edge and then passes the 2.5-sigma test by itself
        if h < opt.min_window_sigmas * s or (h_cap is not None and h_cap < opt.window_sigmas * s - 0.5):
            return "short"
    elif s > 0.5 * h:
        return "short"
    if abs(t0) > max(1.0, s):
        return "offcentre"
    if opt.adaptive and opt.max_window_change > 0 and not _stable(sampler, w, opt):
        return "unstable"
    if opt.min_line_snr > 0 and w.profile.lines.shape[0] >= 3 and not _consistent(w, opt.min_line_snr):
        return "inconsistent"
    return None


def measure_profile(sampler: ProfileSampler, c, n, h0: float, opt: MeasureOptions, normal_at=None,
                    h_cap: float | None = None) -> tuple[MeasuredEdge | None, str | None]:
    """Fit one profile; returns ``(MeasuredEdge, None)`` or ``(None, reason)``.

    ``normal_at(c, s)``, if given, re-estimates the edge normal at point ``c`` from
    gradients smoothed at a scale matching the fitted blur ``s`` (less noisy
    directions for blurred edges).  ``h_cap`` limits the half length (clear
    profile known from labels).

    Adaptive profiles (automatic or label-guided) pass only if the window spans
    ``opt.min_window_sigmas`` fitted sigmas on each side and the sigma fitted on a
    window of ``opt.min_window_sigmas`` sigmas agrees within ``opt.max_window_change``
    with the one of the full window: the profile of an isolated blurred step is
    the same whatever the window, a profile that reaches into a neighbouring
    particle, pore or fibre is not.
    """
    c = np.asarray(c, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    cap = opt.h_max if h_cap is None else min(float(h_cap), opt.h_max)
    w, why = _fit_window(sampler, c, n, min(h0, cap), cap, opt, normal_at)
    if w is None:
        return None, why
    why = _rejection(sampler, w, opt, h_cap)
    if why is not None:
        return None, why
    t, p, fit = w.profile.t, w.profile.values, w.fit
    if opt.method == "erf":
        fwhm_px = FWHM_PER_SIGMA * fit.s
    else:
        fwhm_px = fwhm_derivative(t, p)
        if fwhm_px is None:
            return None, "derivative"
    return MeasuredEdge(t, p, fit.model(t), fit.s, fwhm_px, fit.t0, fit.b, fit.r2, w.centre, w.normal), None
