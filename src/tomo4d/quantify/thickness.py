"""Electrode thickness per (y, x) column, thickness maps, axial phase profiles.

The collector/anode and anode/separator interfaces are found in every (y, x) column of a phase
segmentation by a *step fit*: along z, each voxel scores +1 when it belongs to the side before
the interface and -1 when it belongs to the side after it (0 when it says nothing, e.g. pore
space); the interface is the position that maximises the summed score before it (the middle of
the plateau when several positions tie).  Electrolyte-filled pores therefore do not bias the
interface, unlike a "last solid voxel" rule.  Scores are averaged over a small lateral window
(``smooth_nm``, a few pore sizes) first, which stabilises columns crossing a large pore; the two
sides' scores are normalised by their bulk solid fractions so that the step is symmetric.

Positions are nm from the centre of voxel 0 along z (voxel ``i`` is centred at ``i * vz``); an
interface between voxels ``k - 1`` and ``k`` lies at ``(k - 0.5) * vz``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .._validate import check_number
from ..errors import InputError
from ._common import PhaseCodes, as_labels, step_names, voxel_size
from ._stepfit import step_fit

log = logging.getLogger(__name__)

__all__ = ["Thickness", "ThicknessSeries", "AxialProfile", "electrode_thickness", "thickness_series",
           "axial_profile", "electrode_mask"]


@dataclass(frozen=True, eq=False)
class Thickness:
    """Electrode (anode) thickness of one step.

    Attributes
    ----------
    collector_z_nm, separator_z_nm : (ny, nx) float64
        Collector/anode and anode/separator interface per column, nm from the centre of voxel 0
        (NaN where a column has no collector or no anode).
    thickness_um : (ny, nx) float64
        ``separator_z - collector_z`` per column, um (NaN where undefined).
    mean_um, std_um, median_um : float
        Statistics of the thickness map over the valid columns, um.
    valid_fraction : float
        Share of columns where both interfaces were found.
    voxel_size_nm : (3,) float
    """

    collector_z_nm: np.ndarray
    separator_z_nm: np.ndarray
    thickness_um: np.ndarray
    mean_um: float
    std_um: float
    median_um: float
    valid_fraction: float
    voxel_size_nm: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"mean_um": self.mean_um, "std_um": self.std_um, "median_um": self.median_um,
                "valid_fraction": self.valid_fraction,
                "collector_z_mean_um": float(np.nanmean(self.collector_z_nm)) / 1e3,
                "separator_z_mean_um": float(np.nanmean(self.separator_z_nm)) / 1e3}


@dataclass(frozen=True, eq=False)
class ThicknessSeries:
    """Thickness of every step and the expansion relative to the first.

    Attributes
    ----------
    step_names : tuple of str
    steps : tuple of Thickness
    mean_um, std_um : (n_steps,) float64
        Mean and lateral standard deviation of the thickness, um.
    expansion : (n_steps,) float64
        ``mean_um / mean_um[0] - 1`` (dimensionless; 0.44 = +44 %).
    """

    step_names: tuple[str, ...]
    steps: tuple[Thickness, ...]
    mean_um: np.ndarray
    std_um: np.ndarray
    expansion: np.ndarray

    def to_columns(self) -> dict[str, np.ndarray]:
        """Table columns (units in the names)."""
        return {"step": np.asarray(self.step_names), "thickness_mean_um": self.mean_um,
                "thickness_std_um": self.std_um, "expansion": self.expansion,
                "collector_z_um": np.array([np.nanmean(t.collector_z_nm) / 1e3 for t in self.steps]),
                "separator_z_um": np.array([np.nanmean(t.separator_z_nm) / 1e3 for t in self.steps]),
                "valid_columns_fraction": np.array([t.valid_fraction for t in self.steps])}

    def to_dict(self) -> dict:
        return {k: v.tolist() for k, v in self.to_columns().items()}


@dataclass(frozen=True, eq=False)
class AxialProfile:
    """Phase fractions per z slice.

    Attributes
    ----------
    z_um : (nz,) float64
        Slice centres, um from the centre of voxel 0.
    phase_names : tuple of str
    fraction : (n_phases, nz) float64
        Share of each slice's voxels in each phase.
    porosity : (nz,) float64
        Pore fraction per slice.
    """

    z_um: np.ndarray
    phase_names: tuple[str, ...]
    fraction: np.ndarray
    porosity: np.ndarray

    def to_columns(self) -> dict[str, np.ndarray]:
        cols = {"z_um": self.z_um}
        for i, n in enumerate(self.phase_names):
            cols[f"{n}_fraction"] = self.fraction[i]
        return cols


def _isin(a: np.ndarray, values: Sequence[int]) -> np.ndarray:
    if len(values) == 1:
        return a == values[0]
    if a.dtype.kind == "u" and a.dtype.itemsize <= 2:  # a lookup table: 2 ns/voxel vs 13-14 for np.isin (uint8)
        lut = np.zeros(2 ** (8 * a.dtype.itemsize), bool)
        lut[[v for v in values if 0 <= v < lut.size]] = True
        return lut[a]
    return np.isin(a, values)


def _step_fit(score: np.ndarray, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Interface index k (between voxel k-1 and k) maximising sum(score[:k]) per column, plateau centre.

    ``score`` (nz, ny, nx); ``start`` (ny, nx) int: k is searched in [start, nz].  Returns the
    boundary position in voxel units (k - 0.5) and a bool "found" (the maximum is > 0)
    (:func:`tomo4d.quantify._stepfit.step_fit`, the same code as the slab-by-slab version).
    """
    return step_fit(lambda: ((0, score),), score.shape[1:], start)


def _lateral_mean(a: np.ndarray, size: int) -> np.ndarray:
    from scipy import ndimage

    if size <= 1:
        return a
    return ndimage.uniform_filter(a, size=(1, size, size), mode="nearest")


def electrode_thickness(labels, *, voxel_size_nm=None, phases: PhaseCodes = PhaseCodes(),
                        smooth_nm: float = 400.0) -> Thickness:
    """Anode thickness per (y, x) column of a phase segmentation.

    Parameters
    ----------
    labels : (z, y, x) int array or Volume
        Phase labels, collector at small z (see :class:`PhaseCodes` for the codes).
    voxel_size_nm : float or (3,) float, optional
        Voxel size in nm (default: the Volume's).
    phases : PhaseCodes
        Label values of collector, anode solids (matrix, silicon, lithiated) and separator.
    smooth_nm : float
        Lateral window (nm, rounded to whole voxels) over which the interface scores are averaged;
        a few pore sizes (0: none).

    Returns
    -------
    Thickness
    """
    lab = as_labels(labels, name="labels", phases=phases, role="electrode_thickness expects phase labels")
    vs = voxel_size(voxel_size_nm, labels)
    check_number("smooth_nm", smooth_nm, minimum=0.0)
    smooth_px = max(1, int(round(float(smooth_nm) / vs[1])))
    if not isinstance(phases, PhaseCodes):
        raise InputError("phases must be a PhaseCodes instance (tomo4d.quantify.PhaseCodes)")
    col = _isin(lab, phases.collector)
    # collector interface: +1 collector, -1 anything else
    s = _lateral_mean(np.where(col, 1.0, -1.0).astype(np.float32), smooth_px)
    zc, has_c = _step_fit(s)
    has_c &= col.any(axis=0)
    # separator interface: +1 anode solid, -1 separator solid, 0 pore; searched below the collector
    anode = _isin(lab, phases.anode)
    sep = _isin(lab, phases.separator)
    start = np.clip(np.round(zc + 0.5), 0, lab.shape[0]).astype(np.intp)
    s = _lateral_mean(anode.astype(np.float32) - sep.astype(np.float32), smooth_px)
    zs, has_a = _step_fit(s, start)
    # second pass with each side's score scaled by its bulk solid fraction (first-pass estimate), so
    # that the expected score is +1 in the anode and -1 in the separator: a symmetric step
    z = np.arange(lab.shape[0])[:, None, None]
    margin = 2 + smooth_px // 2
    in_a = (z >= start[None] + margin) & (z < zs[None] - margin)
    in_s = z > zs[None] + margin
    phi_a = float(anode[in_a].mean()) if in_a.any() else 0.0
    phi_s = float(sep[in_s].mean()) if in_s.any() else 0.0
    if phi_a > 0.05 and phi_s > 0.05:
        s = _lateral_mean(anode.astype(np.float32) / np.float32(phi_a) - sep.astype(np.float32) / np.float32(phi_s),
                          smooth_px)
        zs, _ = _step_fit(s, start)
    has_a &= anode.any(axis=0)
    return thickness_from_interfaces(zc, zs, has_c & has_a, vs)


def thickness_from_interfaces(zc, zs, valid, vs) -> Thickness:
    """The :class:`Thickness` of per-column interface slices ``zc``/``zs`` (px) where ``valid``."""
    zc_nm = np.where(valid, zc * vs[0], np.nan)
    zs_nm = np.where(valid, zs * vs[0], np.nan)
    t = (zs_nm - zc_nm) / 1e3
    v = t[valid]
    if v.size == 0:
        log.warning("no column has both a collector and an anode: thickness undefined")
        mean = std = med = float("nan")
    else:
        mean, std, med = float(v.mean()), float(v.std()), float(np.median(v))
    return Thickness(collector_z_nm=zc_nm, separator_z_nm=zs_nm, thickness_um=t, mean_um=mean, std_um=std,
                     median_um=med, valid_fraction=float(valid.mean()), voxel_size_nm=vs)


def electrode_mask(thickness: Thickness, shape) -> np.ndarray:
    """Boolean (z, y, x) mask of the voxels between the two interfaces of ``thickness``."""
    shape = tuple(int(s) for s in shape)
    if tuple(thickness.thickness_um.shape) != shape[1:]:
        raise InputError(f"thickness map of shape {thickness.thickness_um.shape} does not fit volume shape {shape}")
    z = np.arange(shape[0])[:, None, None] * thickness.voxel_size_nm[0]
    lo = np.nan_to_num(thickness.collector_z_nm, nan=np.inf)[None]
    hi = np.nan_to_num(thickness.separator_z_nm, nan=-np.inf)[None]
    return (z > lo) & (z < hi)


def thickness_series(label_series: Sequence, *, voxel_size_nm=None, phases: PhaseCodes = PhaseCodes(),
                     smooth_nm: float = 400.0, names: Sequence[str] | None = None,
                     progress: Callable[[int, int], None] | None = None, chunk_budget_mb=None) -> ThicknessSeries:
    """:func:`electrode_thickness` of every step (same voxel grid) and the expansion relative to the first.

    Parameters
    ----------
    label_series : sequence of (z, y, x) int arrays or Volumes
        Phase labels T0..Tn (time-aligned, e.g. with :func:`tomo4d.quantify.align_steps`).
    voxel_size_nm, phases, smooth_nm
        See :func:`electrode_thickness`.
    names : sequence of str, optional
        Step names (default ``T0, T1, ...``).
    progress : callable(done, total), optional
    chunk_budget_mb : float, optional
        A step whose working set exceeds this (MiB) is read slab by slab
        (:func:`tomo4d.quantify.chunked.electrode_thickness_chunked`, bit-identical); None: every step in memory.

    Returns
    -------
    ThicknessSeries
    """
    items = list(label_series)
    if not items:
        raise InputError("label_series is empty; give one label volume per time step")
    vs = voxel_size(voxel_size_nm, *items)
    names = step_names(len(items), names)
    steps = []
    for i, lab in enumerate(items):
        if chunk_budget_mb is not None and _streams(lab, chunk_budget_mb):
            from .chunked import electrode_thickness_chunked

            steps.append(electrode_thickness_chunked(lab, voxel_size_nm=vs, phases=phases, smooth_nm=smooth_nm,
                                                     chunk_budget_mb=chunk_budget_mb))
        else:
            steps.append(electrode_thickness(lab, voxel_size_nm=vs, phases=phases, smooth_nm=smooth_nm))
        if progress is not None:
            progress(i + 1, len(items))
    mean = np.array([t.mean_um for t in steps])
    std = np.array([t.std_um for t in steps])
    return ThicknessSeries(step_names=names, steps=tuple(steps), mean_um=mean, std_um=std, expansion=mean / mean[0] - 1.0)


def _streams(labels, chunk_budget_mb) -> bool:
    """The label volume's in-memory working set exceeds ``chunk_budget_mb``: read it slab by slab."""
    from .._chunks import fits_budget
    from .chunked import BYTES_PER_VOXEL

    shape = getattr(getattr(labels, "data", labels), "shape", None)
    return shape is not None and len(shape) == 3 and not fits_budget(shape, BYTES_PER_VOXEL, chunk_budget_mb)


def axial_profile(labels, *, voxel_size_nm=None, phases: PhaseCodes = PhaseCodes()) -> AxialProfile:
    """Phase fractions (and porosity) per z slice of a phase segmentation.

    Parameters
    ----------
    labels : (z, y, x) int array or Volume
    voxel_size_nm : float or (3,) float, optional
    phases : PhaseCodes

    Returns
    -------
    AxialProfile
    """
    lab = as_labels(labels, name="labels", phases=phases, role="axial_profile expects phase labels")
    vs = voxel_size(voxel_size_nm, labels)
    names = phases.names()
    n_xy = lab.shape[1] * lab.shape[2]
    frac = np.stack([_isin(lab, v).sum(axis=(1, 2)) / n_xy if v else np.zeros(lab.shape[0]) for v in names.values()])
    return AxialProfile(z_um=np.arange(lab.shape[0]) * vs[0] / 1e3, phase_names=tuple(names), fraction=frac,
                        porosity=frac[0].copy())
