"""Lithium concentration from neutron attenuation, calibrated on reference regions or cross sections.

Neutron attenuation is linear in the lithium concentration ``c`` (mol/cm^3):

.. math::  \\mu = \\mu_0 + k\\,c, \\qquad k = N_A\\,\\sigma_{Li}

with ``mu_0`` the attenuation of everything but lithium and ``sigma_Li`` the
(mostly absorption) cross section of one Li atom at the effective wavelength
of the beam, which depends on the 6Li fraction (see :mod:`tomo4d.neutron.xs`).
On a polychromatic beam the effective wavelength, beam hardening and
scattered background make ``k`` uncertain, so the preferred calibration uses
reference regions of known concentration (a Li-metal foil: 0.0769 mol/cm^3, a
Li-free region: 0; the electrolyte of known composition): a weighted straight
line through their mean attenuation gives ``k`` and ``mu_0`` with their
uncertainties.  Without references, :func:`theoretical_lithium_calibration`
computes ``k`` from tabulated cross sections.

Maps are in mol/cm^3 with a per-voxel standard uncertainty combining the
attenuation noise and the calibration uncertainty; :meth:`LiConcentration.relative_to`
expresses them relative to a reference phase.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .._validate import check_finite, check_int, check_labels, check_number, show, show_values
from ..errors import InputError
from ._checks import fraction, positive_float
from .xs import AVOGADRO_PER_MOL, BARN_CM2, NATURAL_LI6_FRACTION, THERMAL_WAVELENGTH_ANGSTROM, li_cross_section

log = logging.getLogger(__name__)

__all__ = ["LiCalibration", "attenuation_from_phases", "calibrate_lithium", "theoretical_lithium_calibration", "LiConcentration",
           "lithium_concentration", "RegionValues", "region_values"]


@dataclass(frozen=True)
class LiCalibration:
    """Straight line ``mu = intercept + slope * c`` between attenuation (1/cm) and Li concentration (mol/cm^3).

    Attributes
    ----------
    slope_cm2_per_mol, slope_sigma_cm2_per_mol : float
        ``k = d mu / d c`` and its standard uncertainty, cm^2/mol.
    intercept_per_cm, intercept_sigma_per_cm : float
        ``mu_0``, attenuation without lithium, and its uncertainty, 1/cm.
    noise_sigma_per_cm : float
        Voxel noise of the attenuation (pooled standard deviation inside the
        references), 1/cm; NaN when unknown.
    method : str
        ``"references"`` or ``"cross-sections"``.
    n_references : int
        Number of reference regions used (0 for cross sections).
    """

    slope_cm2_per_mol: float
    slope_sigma_cm2_per_mol: float
    intercept_per_cm: float
    intercept_sigma_per_cm: float
    noise_sigma_per_cm: float
    method: str
    n_references: int = 0

    @property
    def effective_cross_section_barn(self) -> float:
        """Effective cross section of one Li atom, barn (``k / N_A``)."""
        return self.slope_cm2_per_mol / AVOGADRO_PER_MOL / BARN_CM2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["effective_cross_section_barn"] = self.effective_cross_section_barn
        return d


def theoretical_lithium_calibration(*, wavelength_angstrom: float = THERMAL_WAVELENGTH_ANGSTROM,
                                    li6_fraction: float = NATURAL_LI6_FRACTION, matrix_mu_per_cm: float = 0.0,
                                    relative_uncertainty: float = 0.0) -> LiCalibration:
    """Calibration from tabulated cross sections: ``k = N_A (sigma_a(lambda) + sigma_s)`` of Li.

    Parameters
    ----------
    wavelength_angstrom : float
        Effective wavelength of the beam, Å (1.798 for thermal neutrons; the
        spectrum-weighted mean of ``lambda`` for a polychromatic beam).
    li6_fraction : float
        6Li atom fraction (natural about 0.076; enriched up to 0.95).
    matrix_mu_per_cm : float
        Attenuation of everything but lithium, 1/cm.
    relative_uncertainty : float
        Relative standard uncertainty to attach to ``k`` (effective wavelength, data
        tables), e.g. 0.03.
    """
    w = positive_float("wavelength_angstrom", wavelength_angstrom)
    f = fraction("li6_fraction", li6_fraction)
    ru = positive_float("relative_uncertainty", relative_uncertainty, allow_zero=True)
    mu0 = check_number("matrix_mu_per_cm", matrix_mu_per_cm)
    k = AVOGADRO_PER_MOL * li_cross_section(li6_fraction=f, wavelength_angstrom=w).total_barn * BARN_CM2
    return LiCalibration(slope_cm2_per_mol=k, slope_sigma_cm2_per_mol=ru * k, intercept_per_cm=mu0,
                         intercept_sigma_per_cm=0.0, noise_sigma_per_cm=float("nan"), method="cross-sections")


def _float_map(name: str, value) -> np.ndarray:
    """``value`` as float64; refuse what is not numeric (``None``, strings), naming the parameter."""
    if value is None or isinstance(value, (str, bytes)):
        raise InputError(f"{name}={show(value)} is not a numeric map; give a numeric array")
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} is not a numeric map ({type(value).__name__}); give a numeric array") from None


def _masks(mu: np.ndarray, reference_masks) -> list[np.ndarray]:
    if isinstance(reference_masks, np.ndarray) and reference_masks.dtype == bool and reference_masks.shape == mu.shape:
        reference_masks = [reference_masks]
    out = []
    for i, m in enumerate(reference_masks):
        a = np.asarray(m)
        if a.shape != mu.shape:
            raise InputError(f"reference mask {i} has shape {a.shape} but mu has shape {mu.shape}; give masks on the "
                             "attenuation grid")
        a = a.astype(bool)
        if a.sum() < 2:
            raise InputError(f"reference mask {i} selects {int(a.sum())} voxel(s); a reference needs at least 2")
        out.append(a)
    return out


def calibrate_lithium(mu, reference_masks: Sequence, reference_concentrations_mol_per_cm3: Sequence[float], *,
                      intercept_per_cm: float | None = None) -> LiCalibration:
    """Fit ``mu = mu_0 + k c`` through reference regions of known Li concentration.

    Parameters
    ----------
    mu : array
        Attenuation coefficient map (e.g. a reconstructed neutron tomogram), 1/cm.
    reference_masks : sequence of bool arrays
        One mask per reference region, ``mu``'s shape.
    reference_concentrations_mol_per_cm3 : sequence of float
        Known Li concentration of each reference, mol/cm^3 (Li metal 0.0769; Li-free 0;
        see :func:`~tomo4d.neutron.xs.li_concentration_from_composition`).
    intercept_per_cm : float, optional
        Known Li-free attenuation ``mu_0``; then a single reference suffices and only
        ``k`` is fitted.

    Returns
    -------
    LiCalibration
        Weighted least squares over the region means (weights: number of voxels over
        their variance); uncertainties scaled by the scatter about the line when there
        are more references than parameters.
    """
    m = np.asarray(mu, dtype=np.float64)
    check_finite("mu", m)
    masks = _masks(m, reference_masks)
    c = np.asarray(reference_concentrations_mol_per_cm3, dtype=np.float64).ravel()
    if c.size != len(masks):
        raise InputError(f"{len(masks)} reference masks but {c.size} reference concentrations; give one per mask")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise InputError("reference concentrations must be finite and >= 0 (mol/cm^3)")
    need = 1 if intercept_per_cm is not None else 2
    if len(masks) < need or (intercept_per_cm is None and np.ptp(c) == 0):
        raise InputError("calibration needs two references of different Li concentration (e.g. a Li-free region and "
                         "a Li-metal foil), or one reference and intercept_per_cm")
    means, var_mean, pooled, dof = [], [], 0.0, 0
    for a in masks:
        v = m[a]
        means.append(v.mean())
        var_mean.append(max(v.var(ddof=1), 1e-30) / v.size)
        pooled += v.var(ddof=1) * (v.size - 1)
        dof += v.size - 1
    y = np.asarray(means)
    wts = 1.0 / np.asarray(var_mean)
    noise = float(np.sqrt(pooled / dof))
    if intercept_per_cm is not None:
        mu0 = check_number("intercept_per_cm", intercept_per_cm)
        sw = np.sum(wts * c * c)
        if sw <= 0:
            raise InputError("with intercept_per_cm, at least one reference must contain lithium (c > 0)")
        k = float(np.sum(wts * c * (y - mu0)) / sw)
        k_var = 1.0 / sw
        resid = y - mu0 - k * c
        n_par, mu0_sig = 1, 0.0
    else:
        A = np.stack([np.ones_like(c), c], axis=1)
        N = A.T @ (A * wts[:, None])
        cov = np.linalg.inv(N)
        mu0, k = cov @ (A.T @ (wts * y))
        resid = y - mu0 - k * c
        n_par = 2
        k_var, mu0_var = cov[1, 1], cov[0, 0]
        mu0_sig = float(np.sqrt(mu0_var))
    if c.size > n_par:
        chi2 = float(np.sum(wts * resid ** 2) / (c.size - n_par))
        scale = max(chi2, 1.0)
        k_var *= scale
        mu0_sig *= np.sqrt(scale)
    if k <= 0:
        raise InputError(f"the references give a non-positive slope ({k:.4g} cm^2/mol): attenuation does not rise "
                         "with Li concentration; check the masks and concentrations")
    return LiCalibration(slope_cm2_per_mol=float(k), slope_sigma_cm2_per_mol=float(np.sqrt(k_var)),
                         intercept_per_cm=float(mu0), intercept_sigma_per_cm=float(mu0_sig), noise_sigma_per_cm=noise,
                         method="references", n_references=len(masks))


@dataclass(frozen=True)
class LiConcentration:
    """Lithium concentration map.

    Attributes
    ----------
    concentration_mol_per_cm3 : float32 array
        ``(mu - mu_0) / k``, mol/cm^3 (negative values from noise are kept, unbiased).
    sigma_mol_per_cm3 : float32 array
        Per-voxel standard uncertainty: attenuation noise and calibration uncertainty.
    calibration : LiCalibration
        The calibration used.
    """

    concentration_mol_per_cm3: np.ndarray
    sigma_mol_per_cm3: np.ndarray
    calibration: LiCalibration

    def relative_to(self, reference_mol_per_cm3: float) -> tuple[np.ndarray, np.ndarray]:
        """Concentration relative to a reference phase (e.g. the pristine electrolyte): ``(c / c_ref, sigma)``."""
        ref = positive_float("reference_mol_per_cm3", reference_mol_per_cm3)
        return (self.concentration_mol_per_cm3 / np.float32(ref), self.sigma_mol_per_cm3 / np.float32(ref))


def lithium_concentration(mu, calibration: LiCalibration, *, mu_sigma_per_cm=None,
                          matrix_mu_per_cm=None) -> LiConcentration:
    """Lithium concentration map from an attenuation map, mol/cm^3.

    Parameters
    ----------
    mu : array
        Attenuation coefficients, 1/cm.
    calibration : LiCalibration
        From :func:`calibrate_lithium` or :func:`theoretical_lithium_calibration`.
    mu_sigma_per_cm : float or array, optional
        Noise of ``mu``; default the calibration's ``noise_sigma_per_cm`` (0 if unknown).
    matrix_mu_per_cm : float or array, optional
        Li-free attenuation per voxel (e.g. from a phase map and each phase's
        composition) replacing the calibration intercept.

    Returns
    -------
    LiConcentration
    """
    if not isinstance(calibration, LiCalibration):
        raise InputError(f"calibration must be a LiCalibration (from calibrate_lithium), got {type(calibration).__name__}")
    m = _float_map("mu", mu)
    if m.size == 0:
        raise InputError("mu is empty")
    check_finite("mu", m)
    if matrix_mu_per_cm is None:
        mu0, mu0_sig = calibration.intercept_per_cm, calibration.intercept_sigma_per_cm
    else:
        mu0 = _float_map("matrix_mu_per_cm", matrix_mu_per_cm)
        try:
            np.broadcast_shapes(mu0.shape, m.shape)
        except ValueError:
            raise InputError(f"matrix_mu_per_cm has shape {mu0.shape}, which does not match mu {m.shape}") from None
        check_finite("matrix_mu_per_cm", mu0)
        mu0_sig = 0.0
    if mu_sigma_per_cm is None:
        noise = calibration.noise_sigma_per_cm if np.isfinite(calibration.noise_sigma_per_cm) else 0.0
    else:
        noise = _float_map("mu_sigma_per_cm", mu_sigma_per_cm)
        check_finite("mu_sigma_per_cm", noise)
        if np.any(noise < 0):
            raise InputError(f"mu_sigma_per_cm holds {int(np.count_nonzero(noise < 0))} negative values; "
                             "standard deviations are >= 0")
    k, ks = calibration.slope_cm2_per_mol, calibration.slope_sigma_cm2_per_mol
    c = (m - mu0) / k
    sig = np.sqrt(noise ** 2 + mu0_sig ** 2 + (c * ks) ** 2) / k
    sig = np.broadcast_to(sig, c.shape)
    return LiConcentration(c.astype(np.float32), np.ascontiguousarray(sig, dtype=np.float32), calibration)


def attenuation_from_phases(phase_labels, mu_per_phase, *, bin_factor=1, psf_sigma_px: float = 0.0) -> np.ndarray:
    """Attenuation map (1/cm) predicted from a phase map, on the (coarser) neutron grid.

    The usual source of ``matrix_mu_per_cm`` for :func:`lithium_concentration`: segment the
    X-ray tomogram into phases, give each phase its Li-free attenuation (from its composition,
    :func:`~tomo4d.neutron.xs.non_lithium_attenuation_per_cm`, or a reference measurement), and
    bring the map to the neutron tomogram's voxels and resolution.  Each output voxel is the
    mean over its ``bin_factor`` block of fine voxels (phase fractions, so interfaces are
    partial-volume averaged), then blurred by a Gaussian of ``psf_sigma_px`` output voxels (the
    neutron point-spread function).

    Parameters
    ----------
    phase_labels : (z, y, x) int array
        Phase map on the fine (X-ray) grid, aligned with the neutron volume (see
        :func:`~tomo4d.neutron.align_modalities`); its corner is the neutron volume's corner.
    mu_per_phase : mapping of int -> float
        Attenuation of every label value present, 1/cm.
    bin_factor : int or 3 ints
        Fine voxels per neutron voxel along each axis; trailing fine voxels that do not fill a
        whole neutron voxel are dropped (output shape ``labels.shape // bin_factor``).
    psf_sigma_px : float
        Standard deviation of the neutron blur in output voxels (0: none).

    Returns
    -------
    float32 array
    """
    from scipy.ndimage import gaussian_filter

    lab = check_labels("phase_labels", phase_labels, ndim=3, role="attenuation_from_phases expects phase labels")
    try:
        table = {int(k): float(v) for k, v in dict(mu_per_phase).items()}
    except (TypeError, ValueError):
        raise InputError("mu_per_phase must map integer phase labels to attenuation values (1/cm)") from None
    present = np.unique(lab)
    missing = [int(v) for v in present if int(v) not in table]
    if missing:
        raise InputError(f"mu_per_phase has no attenuation for phase label(s) {missing}; give one value per phase "
                         "present in phase_labels")
    if not all(np.isfinite(v) for v in table.values()):
        raise InputError("mu_per_phase values must be finite (1/cm)")
    b = (bin_factor,) * 3 if np.ndim(bin_factor) == 0 else tuple(bin_factor)
    if len(b) != 3:
        raise InputError(f"bin_factor={show(bin_factor)} must be a positive integer or three of them (z, y, x)")
    b = tuple(check_int("bin_factor", v, minimum=1) for v in b)
    n = tuple(s // f for s, f in zip(lab.shape, b))
    if min(n) < 1:
        raise InputError(f"bin_factor={b} is larger than phase_labels {lab.shape}; the map would be empty")
    sig = positive_float("psf_sigma_px", psf_sigma_px, allow_zero=True)
    lut = np.zeros(int(present.max()) - int(present.min()) + 1, np.float64)
    lo = int(present.min())
    for v in present:
        lut[int(v) - lo] = table[int(v)]
    mu = lut[lab[: n[0] * b[0], : n[1] * b[1], : n[2] * b[2]].astype(np.int64) - lo]
    mu = mu.reshape(n[0], b[0], n[1], b[1], n[2], b[2]).mean(axis=(1, 3, 5))
    if sig > 0:
        mu = gaussian_filter(mu, sig, mode="nearest")
    return mu.astype(np.float32)


@dataclass(frozen=True)
class LayerLithium:
    """Mean Li concentration of a layer of the cell (e.g. the anode), from :func:`layer_lithium`.

    Attributes
    ----------
    concentration_mol_l : float
        Mean over the layer's slabs, mol/L.
    sigma_mol_l : float
        Standard error of that mean from the per-voxel uncertainties (independent voxels), mol/L.
    rows : (z,) bool array
        The z slabs of the neutron grid that were averaged (the layer plus its margin).
    n_voxels : int
    """

    concentration_mol_l: float
    sigma_mol_l: float
    rows: np.ndarray
    n_voxels: int

    def region(self, shape) -> np.ndarray:
        """The averaged voxels as a boolean volume of ``shape`` (z, y, x): the slabs ``rows``, every y and x."""
        return np.broadcast_to(self.rows[:, None, None], tuple(shape))


def layer_lithium(concentration: LiConcentration, phase_labels, layer_phases, *, bin_factor=1,
                  fill_threshold: float = 0.6, margin_px: float = 0.0) -> LayerLithium:
    """Mean Li concentration of the layer made of ``layer_phases`` (z = electrode-thickness axis).

    The layer is the set of z slabs of the neutron grid in which the layer's phases fill at least
    ``fill_threshold`` of the fullest slab's share; it is widened by ``margin_px`` slabs on either
    side, because the neutron blur moves Li across the layer's faces (3 PSF sigmas keep all of it:
    without a margin the mean is biased low by 5-10 % at 500 nm blur on a 20 um anode).

    Parameters
    ----------
    concentration : LiConcentration
        From :func:`lithium_concentration` on the neutron grid.
    phase_labels : (z, y, x) int array
        X-ray phase map on the fine grid, aligned with the neutron volume (as for
        :func:`attenuation_from_phases`).
    layer_phases : sequence of int
        Label values that make up the layer (e.g. matrix, silicon and lithiated silicon).
    bin_factor : int
        Fine voxels per neutron voxel (the same for every axis).
    fill_threshold : float
        Share of the fullest slab's layer fraction a slab needs to belong to the layer, in (0, 1].
    margin_px : float
        Slabs added on either side (rounded up).

    Returns
    -------
    LayerLithium
    """
    from scipy.ndimage import binary_dilation

    if not isinstance(concentration, LiConcentration):
        raise InputError("concentration must be a LiConcentration (from lithium_concentration), got "
                         f"{type(concentration).__name__}")
    lab = check_labels("phase_labels", phase_labels, ndim=3, role="layer_lithium expects phase labels")
    phases = [check_int("layer_phases", v, minimum=0) for v in np.atleast_1d(layer_phases)]
    if not phases:
        raise InputError("layer_phases is empty; give the label values that make up the layer")
    thr = fraction("fill_threshold", fill_threshold)
    if thr <= 0:
        raise InputError(f"fill_threshold={show(fill_threshold)} must be > 0 (a share of the fullest slab)")
    margin = positive_float("margin_px", margin_px, allow_zero=True)
    share = attenuation_from_phases(np.isin(lab, phases).astype(np.int8), {0: 0.0, 1: 1.0}, bin_factor=bin_factor)
    c = concentration.concentration_mol_per_cm3
    if share.shape != c.shape:
        raise InputError(f"phase_labels binned by bin_factor={show(bin_factor)} give {share.shape}, which does not match "
                         f"the concentration map {c.shape}; give the factor between the two grids")
    frac = share.mean(axis=(1, 2))
    if frac.max() <= 0:
        raise InputError(f"layer_phases={phases} are absent from phase_labels; give labels that occur in the map")
    rows = frac >= thr * frac.max()
    if margin > 0:
        rows = binary_dilation(rows, iterations=int(np.ceil(margin)))
    region = np.broadcast_to(rows[:, None, None], c.shape)
    n = int(region.sum())
    mean = float(np.mean(c[region], dtype=np.float64)) * 1e3
    sig = float(np.sqrt(np.mean(np.square(concentration.sigma_mol_per_cm3[region], dtype=np.float64)) / n)) * 1e3
    return LayerLithium(mean, sig, rows, n)


@dataclass(frozen=True)
class RegionValues:
    """Mean of a map in each labelled region.

    Attributes
    ----------
    labels : (k,) int
    mean : (k,) float64
        Region mean (units of the map).
    sigma_of_mean : (k,) float64
        Standard error of the mean (spread / sqrt(n); an underestimate for spatially
        correlated noise).
    n_voxels : (k,) int
    """

    labels: np.ndarray
    mean: np.ndarray
    sigma_of_mean: np.ndarray
    n_voxels: np.ndarray


def region_values(values, labels, *, label_values=None) -> RegionValues:
    """Mean and standard error of ``values`` in every non-zero label (or in ``label_values``)."""
    v = _float_map("values", values)
    check_finite("values", v)
    lab = check_labels("labels", labels, shape=v.shape, role="region_values expects region labels")
    if label_values is None:
        ids = np.unique(lab[lab != 0])
    else:
        ids = np.asarray([check_int("label_values", i, minimum=0) for i in np.atleast_1d(label_values)], np.int64)
        absent = [int(i) for i in ids if not np.any(lab == i)]
        if absent:
            raise InputError(f"label_values {absent} do not occur in labels (values {show_values(np.unique(lab))}); "
                             "give label values present in the label image")
    mean, sem, n = [], [], []
    for i in ids:
        x = v[lab == i]
        n.append(x.size)
        mean.append(x.mean() if x.size else np.nan)
        sem.append(x.std(ddof=1) / np.sqrt(x.size) if x.size > 1 else np.nan)
    return RegionValues(np.asarray(ids), np.asarray(mean), np.asarray(sem), np.asarray(n))
