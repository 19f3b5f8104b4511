"""Edge spatial resolution: FWHM of the derivative of grey-value profiles across edges.

A Gaussian-blurred step ``a + b/2 (1 + erf((t - t0) / (sqrt(2) sigma)))`` has a
Gaussian derivative whose full width at half maximum is
``2 sqrt(2 ln 2) sigma ~= 2.355 sigma``: this is the edge resolution reported
by the enhancement literature (profiles drawn by hand across particle edges).
Here edges are found automatically (Canny edge points, well separated, strong,
inside the mask) or given as profile lines, and each profile is measured in one
of two ways:

``"erf"`` (default)
    least-squares fit of the error-function edge model above to the profile;
    the FWHM follows from the fitted sigma.  Unbiased for a blurred step and
    robust to noise because the whole profile is used.
``"derivative"``
    the literature's direct measurement: numerical derivative of the profile,
    peak height refined by a quadratic through the three samples at the
    maximum, half-maximum crossings by linear interpolation.  Sensitive to
    noise (differentiation amplifies it); use it to reproduce hand measurements.

This module holds the public results and :func:`edge_resolution`; the parts live in
:mod:`._edge_fit` (1D error-function fit, derivative FWHM), :mod:`._edge_sampling`
(spline sampling of profile lines, normals), :mod:`._edge_detect` (automatic edge points,
tilt test), :mod:`._edge_measure` (one profile: window adaptation and acceptance checks)
and :mod:`.label_edges` (:func:`edges_from_labels`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, check_choice
from ._common import check_range, image_array, mask_array, pick_slices, voxel_size_of
from ._edge_detect import find_candidates, flat_mask
from ._edge_fit import FWHM_PER_SIGMA
from ._edge_measure import REJECT_REASONS, MeasuredEdge, MeasureOptions, measure_profile
from ._edge_sampling import NormalField, ProfileSampler
from .label_edges import LabelEdges, edges_from_labels

__all__ = ["FWHM_PER_SIGMA", "METHODS", "REJECT_REASONS", "EdgeProfile", "EdgeResolution", "LabelEdges",
           "edge_resolution", "edges_from_labels"]

log = logging.getLogger(__name__)

METHODS = ("erf", "derivative")
_H_MIN_PX = 6.0  # shortest half profile of automatic/label-guided edges: two plateaus of >= 3 px each side


@dataclass(frozen=True, eq=False)
class EdgeProfile:
    """One grey-value profile measured across an edge.

    Attributes
    ----------
    z : int
        Slice index (0 for a 2D image).
    center_px : (float, float)
        Edge point (y, x) in pixels (the fitted edge centre).
    normal : (float, float)
        Unit vector (y, x) along the profile, pointing from dark to bright.
    distance_nm : numpy.ndarray, shape (n,)
        Position of each sample along the profile, nm, 0 at the fitted edge centre.
    values : numpy.ndarray, shape (n,)
        Grey values (averaged over the line width).
    fitted : numpy.ndarray, shape (n,)
        Error-function model fitted to ``values``.
    derivative : numpy.ndarray, shape (n,)
        d(values)/d(distance), grey values per nm.
    fwhm_nm : float
        Resolution measured on this profile, nm.
    sigma_nm : float
        Standard deviation of the fitted Gaussian blur, nm.
    contrast : float
        Step height ``b`` of the fit, grey values (> 0).
    r2 : float
        Coefficient of determination of the fit.
    """

    z: int
    center_px: tuple[float, float]
    normal: tuple[float, float]
    distance_nm: np.ndarray
    values: np.ndarray
    fitted: np.ndarray
    derivative: np.ndarray
    fwhm_nm: float
    sigma_nm: float
    contrast: float
    r2: float


@dataclass(frozen=True, eq=False)
class EdgeResolution:
    """Edge spatial resolution of an image.

    Attributes
    ----------
    fwhm_mean_nm, fwhm_std_nm, fwhm_median_nm : float
        Mean, standard deviation (ddof=1; 0 for one edge) and median of the
        per-edge FWHM, nm.
    n_edges : int
        Number of edges used for the statistics.
    n_candidates : int
        Edge points tried (profiles that failed the fit checks are dropped).
    n_outliers : int
        Accepted profiles dropped as outliers (further from the median than 3.5 scaled MADs and 10 %).
    fwhm_nm : tuple of float
        FWHM of each used edge, nm (same order as ``profiles``).
    profiles : tuple of EdgeProfile
        The used profiles, for plotting.
    method : str
        ``"erf"`` or ``"derivative"``.
    pixel_size_nm : (float, float)
        In-plane pixel size (y, x) used, nm.
    rejected : mapping of str to int
        Candidates rejected by each check (keys of ``REJECT_REASONS`` and ``"tilted"``).
    """

    fwhm_mean_nm: float
    fwhm_std_nm: float
    fwhm_median_nm: float
    n_edges: int
    n_candidates: int
    n_outliers: int
    fwhm_nm: tuple[float, ...]
    profiles: tuple[EdgeProfile, ...]
    method: str
    pixel_size_nm: tuple[float, float]
    rejected: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-serialisable summary (without the profiles)."""
        return {"fwhm_mean_nm": self.fwhm_mean_nm, "fwhm_std_nm": self.fwhm_std_nm,
                "fwhm_median_nm": self.fwhm_median_nm, "n_edges": self.n_edges,
                "n_candidates": self.n_candidates, "n_outliers": self.n_outliers, "method": self.method,
                "pixel_size_nm": list(self.pixel_size_nm), "fwhm_nm": list(self.fwhm_nm),
                "rejected": dict(self.rejected)}


@dataclass(frozen=True, eq=False)
class _Collected:
    """Profiles measured from one source: ``(z, MeasuredEdge)`` pairs, candidates tried, rejections by reason."""

    measured: tuple[tuple[int, MeasuredEdge], ...]
    n_candidates: int
    rejected: Mapping[str, int]


def _rejection_text(rejected: Mapping[str, int]) -> str:
    if not rejected:
        return "none rejected"
    return "; ".join(f"{k} {v} ({REJECT_REASONS.get(k, k)})" for k, v in sorted(rejected.items(), key=lambda kv: -kv[1]))


def _check_lines(lines_in, ndim: int, nz: int):
    """Profile lines as ``(z (N,), (y, x) end points (N, 2, 2))``, checked against the image."""
    lines = np.asarray(lines_in, dtype=np.float64)
    if lines.ndim != 3 or lines.shape[1:] != (2, ndim) or lines.shape[0] == 0:
        want = "(N, 2, 3) as (z, y, x)" if ndim == 3 else "(N, 2, 2) as (y, x)"
        raise InputError(f"edges has shape {lines.shape}; give start/end points of N lines, shape {want}")
    if not np.isfinite(lines).all():
        raise InputError("edges contains NaN/inf coordinates")
    if ndim == 3:
        if not np.allclose(lines[:, 0, 0], lines[:, 1, 0]):
            raise InputError("each edge line must lie in one xy slice (same z at both ends)")
        zs = np.rint(lines[:, 0, 0]).astype(int)
        if zs.min() < 0 or zs.max() >= nz:
            raise InputError(f"edges z index out of range [0, {nz - 1}]")
        return zs, lines[:, :, 1:]
    return np.zeros(len(lines), int), lines


def _label_lines(img: np.ndarray, labels, *, foreground, background, slices, max_edges: int, spacing_px: int,
                 h_max: float, h_min: float, tilt_max: float, mask) -> LabelEdges:
    """Lines across the boundaries of ``foreground`` in ``labels`` (on the image's grid); refuses none found."""
    lab = np.asarray(labels.data if hasattr(labels, "voxel_size_nm") else labels)
    if lab.shape != img.shape:
        raise InputError(f"labels has shape {lab.shape} but the image has shape {img.shape}; "
                         "give a label image on the image's grid")
    le = edges_from_labels(lab, foreground=foreground, background=background, slices=slices,
                           max_edges=max_edges, spacing_px=spacing_px, max_half_length_px=h_max,
                           min_half_length_px=h_min, max_tilt_deg=tilt_max, mask=mask)
    if len(le) == 0:
        raise InputError(
            f"labels: no boundary of foreground={foreground!r} has {h_min:g} px of clear profile on "
            f"both sides with a normal within max_tilt_deg={tilt_max:g} of the slice ({le.n_boundary} "
            "boundary pixels); give more slices=, another background= or a larger max_tilt_deg")
    return le


def _measure_lines(vol, mvol, zs, yx, caps, lw: int, opt: MeasureOptions) -> _Collected:
    """Profiles along given lines (``caps``: clear half lengths of label-guided lines, else None)."""
    measured, rejected, samplers = [], {}, {}
    for k, (z, (p0, p1)) in enumerate(zip(zs, yx)):
        d = p1 - p0
        length = float(np.hypot(*d))
        if length < 4:
            raise InputError(f"edge line {p0.tolist()} -> {p1.tolist()} is {length:.1f} px long; "
                             "profile lines must be at least 4 px long")
        if z not in samplers:
            samplers[z] = ProfileSampler(vol[z], None if mvol is None else mvol[z], lw)
        if caps is None:
            r, why = measure_profile(samplers[z], (p0 + p1) / 2, d / length, length / 2, opt)
        else:
            r, why = measure_profile(samplers[z], (p0 + p1) / 2, d / length, min(2 * opt.h_min, caps[k]), opt,
                                     h_cap=caps[k])
        if r is None:
            rejected[why] = rejected.get(why, 0) + 1
        else:
            measured.append((int(z), r))
    return _Collected(tuple(measured), len(zs), rejected)


def _measure_automatic(vol, mvol, zs, *, per_slice: int, lw: int, detect_sigma_px, spacing_px: int,
                       tilt_max: float, opt: MeasureOptions) -> _Collected:
    """Profiles across automatically detected edge points of the slices ``zs``."""
    measured, rejected, n_cand = [], {}, 0
    border = int(math.ceil(opt.h_min)) + (lw + 1) // 2
    for z in zs:
        a = vol[z]
        m2 = None if mvol is None else mvol[z]
        if m2 is not None and not m2.any():
            continue
        flat = None
        if vol.shape[0] >= 3 and tilt_max < 90:
            def flat(s_det, z=z):
                return flat_mask(vol, z, s_det, tilt_max)
        cand = find_candidates(a, m2, detect_sigma_px=detect_sigma_px, spacing_px=spacing_px,
                               max_points=per_slice, border=border, flat=flat)
        if cand.n_tilted:
            rejected["tilted"] = rejected.get("tilted", 0) + cand.n_tilted
        if len(cand.points) == 0:
            continue
        sampler = ProfileSampler(a, m2, lw)
        fields = [NormalField(a, s_det, (gy, gx)) for s_det, gy, gx in cand.grads]
        for (y, x), k in zip(cand.points, cand.scale_index):
            n_cand += 1
            _, gy, gx = cand.grads[k]
            g = np.array([gy[y, x], gx[y, x]], dtype=np.float64)
            r, why = measure_profile(sampler, (float(y), float(x)), g / np.hypot(*g), opt.h_min * 2, opt, fields[k])
            if r is None:
                rejected[why] = rejected.get(why, 0) + 1
            else:
                measured.append((int(z), r))
    return _Collected(tuple(measured), n_cand, rejected)


def _drop_weak(got: _Collected, min_contrast: float) -> _Collected:
    """Drop profiles whose step is below ``min_contrast`` x the 90th percentile of all steps."""
    if not got.measured or min_contrast <= 0:
        return got
    b_all = np.array([e.contrast for _, e in got.measured])
    weak = b_all < min_contrast * float(np.percentile(b_all, 90))
    if not weak.any():
        return got
    kept = tuple(mr for mr, w in zip(got.measured, weak) if not w)
    return _Collected(kept, got.n_candidates, {**got.rejected, "weak": int(weak.sum())})


def _edge_profile(z: int, e: MeasuredEdge, vy: float, vx: float) -> EdgeProfile:
    """The measured edge in nm: distances, derivative and widths scaled by the pixel length along its normal."""
    c, n, t0 = e.centre_px, e.normal, e.t0_px
    step_nm = math.hypot(n[0] * vy, n[1] * vx)  # nm per pixel along this normal
    dist = (e.t - t0) * step_nm
    deriv = np.gradient(e.values, dist)
    return EdgeProfile(z, (float(c[0] + t0 * n[0]), float(c[1] + t0 * n[1])), (float(n[0]), float(n[1])),
                       dist.astype(np.float32), e.values.astype(np.float32), e.fitted.astype(np.float32),
                       deriv.astype(np.float32), float(e.fwhm_px * step_nm), float(e.sigma_px * step_nm),
                       float(e.contrast), float(e.r2))


def _drop_outliers(profiles: list[EdgeProfile]):
    """``(kept profiles, their FWHM (nm) array, n_outliers)``: beyond 3.5 scaled MADs and 10 % of the median."""
    f = np.array([p.fwhm_nm for p in profiles])
    if len(f) < 5:
        return profiles, f, 0
    med = float(np.median(f))
    mad = 1.4826 * float(np.median(np.abs(f - med)))
    if mad <= 0:
        return profiles, f, 0
    keep = np.abs(f - med) <= max(3.5 * mad, 0.1 * med)
    return [p for p, k in zip(profiles, keep) if k], f[keep], int((~keep).sum())


def edge_resolution(image, *, voxel_size_nm=None, mask=None, edges=None, labels=None, foreground=None,
                    background=None, method: str = "erf", slices=None, max_edges: int = 100,
                    line_width_px: int = 5, detect_sigma_px: float | None = None, spacing_px: int | None = None,
                    max_half_length_px: float = 40.0, min_half_length_px: float = _H_MIN_PX,
                    min_r2: float = 0.97, max_tilt_deg: float = 15.0,
                    max_window_change: float = 0.15, min_contrast: float = 0.5, min_edges: int | None = None,
                    reject_outliers: bool = True) -> EdgeResolution:
    """Spatial resolution from grey-value profiles perpendicular to edges.

    Each profile is the mean of ``line_width_px`` parallel lines (1 px apart)
    sampled every 0.25 px with cubic-spline interpolation, fitted with a
    Gaussian-blurred step (error function).  Profiles come from one of three sources:

    automatic (default)
        Ridge points of the gradient magnitude at the detection scale, well above the
        gradient noise and at least 30 % of the strongest edges, spread ``spacing_px``
        apart inside ``mask``; in a volume only where the 3D gradient lies within
        ``max_tilt_deg`` of the xy plane (a tilted boundary looks ``1/cos(tilt)`` wider).
    ``labels=`` + ``foreground=``
        Lines perpendicular to the true boundaries of the ``foreground`` phase
        (:func:`edges_from_labels`), each no longer than the labels stay clear.
    ``edges=``
        Given profile lines, measured as given (no adaptation, no isolation test).

    Automatic and label-guided profiles run along the local normal and adapt their half
    length to 3.5 fitted sigmas (at most ``max_half_length_px`` or the label clearance).
    They are used only if the fit explains them (``R^2 >= min_r2``), the edge is centred
    on the candidate, the window spans at least 2.5 sigmas each side, the blur is at least
    0.5 px (sharper "edges" are noise or narrow features: pores, fibres, rings) and a fit
    on a 2.5-sigma window gives the same sigma within ``max_window_change`` (an isolated
    step; a profile reaching a neighbouring particle or pore changes with the window).
    The counts of rejected candidates by reason are kept in ``rejected``.

    Parameters
    ----------
    image : array_like or Volume, shape (y, x) or (z, y, x)
        Grey values; for a volume, profiles lie in xy planes of ``slices``.
    voxel_size_nm : float or (z, y, x), optional
        Voxel size in nm; default the Volume's.  Anisotropic in-plane pixels are
        handled (the nm length of each profile step depends on its direction).
    mask : array_like of bool, optional
        Region where profiles may lie (e.g. the field of view).
    edges : array_like, shape (N, 2, 2) or (N, 2, 3), optional
        Given profile lines instead of automatic ones: start and end point of
        each line as (y, x) pixels (2D) or (z, y, x) with the same z (3D).
        The profile is centred on the midpoint and spans the line.
    labels : array_like of int or Volume, optional
        Label image of the image's shape; with ``foreground`` (and optionally
        ``background``) the profiles follow its boundaries (see :func:`edges_from_labels`).
    foreground, background : int or sequence of int, optional
        Label values of the measured phase and of the phase(s) allowed on the other side.
    method : {"erf", "derivative"}
        How the FWHM of each profile is measured (see the module docstring).
    slices : sequence of int, optional
        z indices of a volume to analyse; default 8 evenly spaced slices in the central 80 %.
    max_edges : int
        Maximum number of automatic or label-guided profiles tried (over all slices).
    line_width_px : int
        Number of parallel lines averaged into one profile (>= 1).
    detect_sigma_px : float, optional
        Gaussian scale, pixels, of the gradient used to find edges and their normals; default
        automatic: the smallest of 2, 4, 8 px at which the strongest edges stand 10x above the
        gradient noise (blurred, noisy images need the larger scales).
    spacing_px : int, optional
        Minimum distance between automatic edge points; default ``2 * line_width_px``.
    max_half_length_px : float
        Longest half profile, pixels; edges blurrier than ~``max_half_length_px / 3.5`` are not measured.
    min_half_length_px : float
        Shortest half profile of automatic and label-guided edges, pixels (default 6: a step
        needs a few independent samples on each plateau; shorter windows take single noise
        jumps of an upsampled image, ring artefacts or a pixel-to-pixel step for edges).  Lower it
        only for structures thinner than ~12 px.
    min_r2 : float
        Minimum coefficient of determination of the error-function fit.
    max_tilt_deg : float
        Automatic and label-guided edges of a volume: largest angle between the 3D boundary
        normal and the xy plane (bias of the FWHM up to ``1/cos`` of it: 3.5 % at 15 degrees);
        90 disables the test.
    max_window_change : float
        Largest relative change of the fitted sigma between the full window and a 2.5-sigma
        window (isolation test); 0 disables the test.
    min_contrast : float
        Profiles whose fitted step height is below ``min_contrast`` times the 90th percentile of
        all fitted step heights are dropped: the resolution is that of the main material
        interfaces (particles), not of faint texture or noise features, which the gradient-based
        detection favours because they are sharp; 0 keeps all.
    min_edges : int, optional
        Fewest edges for a result (default 5 for automatic and label-guided profiles, 1 for
        given ``edges``); fewer raise :class:`InputError` instead of reporting a number
        from too few, possibly wrong, profiles.
    reject_outliers : bool
        Drop profiles further from the median FWHM than both 3.5 scaled median absolute
        deviations and 10 % of the median (needs at least 5 profiles).

    Returns
    -------
    EdgeResolution
        Mean/std/median FWHM in nm, number of edges, the profiles and the rejection counts.

    Raises
    ------
    InputError
        Bad inputs, or when fewer than ``min_edges`` profiles pass the checks (with the reasons).

    Notes
    -----
    The images are assumed point-sampled: the FWHM is that of the total blur of
    the imaging chain as it appears in the voxels (an image upsampled by linear
    interpolation shows its own blur plus that of the interpolation, e.g. +1.5 % in sigma
    for a x2 upsampling of a 3-pixel blur).  The blur must be wider than ~1 pixel:
    profiles fitted with a sigma below 0.5 px are rejected.

    References
    ----------
    .. [1] ISO 12233:2017, edge spread / line spread function methods.
    .. [2] Enhancement of X-ray nano-tomography by InDI, J. Mater. Chem. A 13 (2025) 29930
       (edge resolution as FWHM of profile derivatives across particle edges).
    """
    check_choice("method", method, METHODS)
    img = image_array(image, "image")
    vs = voxel_size_of(image, voxel_size_nm)
    vy, vx = vs[1], vs[2]
    m = mask_array(mask, img.shape)
    lw = check_range("line_width_px", line_width_px, 1, 101, integer=True)
    max_edges = check_range("max_edges", max_edges, 1, integer=True)
    ds = None if detect_sigma_px is None else check_range("detect_sigma_px", detect_sigma_px, 0.5, 20)
    spacing = 2 * lw if spacing_px is None else check_range("spacing_px", spacing_px, 1, integer=True)
    h_max = check_range("max_half_length_px", max_half_length_px, 3)
    h_min = check_range("min_half_length_px", min_half_length_px, 2, h_max)
    min_r2 = check_range("min_r2", min_r2, 0, 1)
    tilt_max = check_range("max_tilt_deg", max_tilt_deg, 0, 90)
    win_change = check_range("max_window_change", max_window_change, 0)
    min_contrast = check_range("min_contrast", min_contrast, 0, 1)
    if edges is not None and labels is not None:
        raise InputError("give either edges=... (profile lines) or labels=... (label image), not both")
    if labels is not None and foreground is None:
        raise InputError("labels=... needs foreground=... (label value(s) of the phase whose edges are measured)")
    if labels is None and (foreground is not None or background is not None):
        raise InputError("foreground=/background= select phases of labels=...; give labels=... too")
    min_n = (1 if edges is not None else 5) if min_edges is None else check_range("min_edges", min_edges, 1,
                                                                                  integer=True)
    vol = img if img.ndim == 3 else img[None]
    mvol = None if m is None else (m if m.ndim == 3 else m[None])
    lo_hi = float(vol.max()) - float(vol.min())
    if lo_hi == 0:
        raise InputError("the image is constant: it has no edges, so no resolution can be measured")

    opt = MeasureOptions(method, min_r2, h_min, h_max, adaptive=edges is None, max_window_change=win_change)
    if labels is not None:
        le = _label_lines(img, labels, foreground=foreground, background=background, slices=slices,
                          max_edges=max_edges, spacing_px=6 if spacing_px is None else spacing, h_max=h_max,
                          h_min=opt.h_min, tilt_max=tilt_max, mask=m)
        zs, yx = _check_lines(le.lines, img.ndim, vol.shape[0])
        got = _measure_lines(vol, mvol, zs, yx, le.half_length_px, lw, opt)
    elif edges is not None:
        zs, yx = _check_lines(edges, img.ndim, vol.shape[0])
        got = _measure_lines(vol, mvol, zs, yx, None, lw, opt)
    else:
        zs = pick_slices(vol.shape[0], slices, 8) if img.ndim == 3 else (0,)
        got = _measure_automatic(vol, mvol, zs, per_slice=max(int(math.ceil(max_edges / len(zs))), 1), lw=lw,
                                 detect_sigma_px=ds, spacing_px=spacing, tilt_max=tilt_max, opt=opt)
    got = _drop_weak(got, min_contrast)
    n_cand, rejected = got.n_candidates, dict(got.rejected)
    if len(got.measured) < min_n:
        n = len(got.measured)
        head = ("no edge profile passed the checks" if not n else
                f"only {n} edge profile(s) passed the checks (fewer than min_edges={min_n})")
        raise InputError(
            f"{head}: n_edges={n} of {n_cand} candidates; rejected: {_rejection_text(rejected)}. "
            f"The image may have too few sharp, isolated edges inside the mask, or they are blurrier than "
            f"max_half_length_px={h_max:g} allows; give labels=... (true boundaries), profile lines with "
            "edges=..., more slices=..., or lower min_edges")
    profiles = [_edge_profile(z, e, vy, vx) for z, e in got.measured]
    if reject_outliers:
        profiles, f, n_out = _drop_outliers(profiles)
    else:
        f, n_out = np.array([p.fwhm_nm for p in profiles]), 0
    if len(f) < min_n:
        raise InputError(f"only {len(f)} edge profile(s) remain after dropping {n_out} outlier(s) (fewer than "
                         f"min_edges={min_n}): n_edges={len(f)} of {n_cand} candidates; the measurements disagree, "
                         "give labels=..., edges=..., more slices=..., or lower min_edges")
    log.debug("edge_resolution: %d candidates, %d used, %d outliers, rejected %s", n_cand, len(f), n_out,
              rejected)
    return EdgeResolution(
        fwhm_mean_nm=float(f.mean()), fwhm_std_nm=float(f.std(ddof=1)) if len(f) > 1 else 0.0,
        fwhm_median_nm=float(np.median(f)), n_edges=int(len(f)), n_candidates=int(n_cand), n_outliers=n_out,
        fwhm_nm=tuple(float(v) for v in f), profiles=tuple(profiles), method=method, pixel_size_nm=(vy, vx),
        rejected=rejected)
