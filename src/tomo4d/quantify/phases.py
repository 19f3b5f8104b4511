"""Phase volumes and fractions per step; relative non-lithiated silicon volume (RNL) over time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ._common import PhaseCodes, as_labels, step_names, voxel_size
from .thickness import _streams, electrode_mask, electrode_thickness

__all__ = ["PhaseVolumes", "PhaseSeries", "phase_volumes", "phase_series"]


@dataclass(frozen=True, eq=False)
class PhaseVolumes:
    """Volume of each phase in a region of one step.

    Attributes
    ----------
    phase_names : tuple of str
        ``pore, matrix, silicon, lithiated_silicon, collector, separator``.
    volume_um3 : (n_phases,) float64
        Volume of each phase, um^3.
    fraction : (n_phases,) float64
        Share of the region's volume.
    region_volume_um3 : float
        Volume of the region, um^3.
    """

    phase_names: tuple[str, ...]
    volume_um3: np.ndarray
    fraction: np.ndarray
    region_volume_um3: float

    def of(self, name: str) -> float:
        """Volume (um^3) of the phase called ``name``."""
        if name not in self.phase_names:
            raise InputError(f"phase {name!r} is not known; use one of {', '.join(self.phase_names)}")
        return float(self.volume_um3[self.phase_names.index(name)])

    def to_dict(self) -> dict:
        return {"region_volume_um3": self.region_volume_um3,
                **{f"{n}_volume_um3": float(v) for n, v in zip(self.phase_names, self.volume_um3)},
                **{f"{n}_fraction": float(v) for n, v in zip(self.phase_names, self.fraction)}}


@dataclass(frozen=True, eq=False)
class PhaseSeries:
    """Phase volumes of every step and the relative non-lithiated silicon volume.

    Attributes
    ----------
    step_names : tuple of str
    phase_names : tuple of str
    volume_um3 : (n_steps, n_phases) float64
    fraction : (n_steps, n_phases) float64
    region_volume_um3 : (n_steps,) float64
    rnl : (n_steps,) float64
        Relative non-lithiated silicon volume ``V_Si(t) / V_Si(T0)`` (1 at T0; NaN without silicon at T0).
    """

    step_names: tuple[str, ...]
    phase_names: tuple[str, ...]
    volume_um3: np.ndarray
    fraction: np.ndarray
    region_volume_um3: np.ndarray
    rnl: np.ndarray

    def to_columns(self) -> dict[str, np.ndarray]:
        cols: dict[str, np.ndarray] = {"step": np.asarray(self.step_names), "region_volume_um3": self.region_volume_um3}
        for i, n in enumerate(self.phase_names):
            cols[f"{n}_volume_um3"] = self.volume_um3[:, i]
        for i, n in enumerate(self.phase_names):
            cols[f"{n}_fraction"] = self.fraction[:, i]
        cols["rnl"] = self.rnl
        return cols

    def to_dict(self) -> dict:
        return {k: v.tolist() for k, v in self.to_columns().items()}


def _region(region, lab, vs, phases):
    if region is None:
        return None
    if isinstance(region, str):
        if region != "electrode":
            raise InputError(f"region={region!r} is not supported; use None (whole volume), 'electrode' or a mask")

        return electrode_mask(electrode_thickness(lab, voxel_size_nm=vs, phases=phases), lab.shape)
    m = np.asarray(region)
    if m.shape != lab.shape:
        raise InputError(f"region mask has shape {m.shape}; it must match the labels {lab.shape}")
    return m.astype(bool)


def phase_volumes(labels, *, voxel_size_nm=None, phases: PhaseCodes = PhaseCodes(), region=None) -> PhaseVolumes:
    """Volume and volume fraction of each phase.

    Parameters
    ----------
    labels : (z, y, x) int array or Volume
        Phase labels (codes in ``phases``).
    voxel_size_nm : float or (3,) float, optional
        Voxel size, nm (default: the Volume's).
    phases : PhaseCodes
    region : None, "electrode" or (z, y, x) bool array
        Where to count: the whole volume, the anode between the interfaces found by
        :func:`~tomo4d.quantify.electrode_thickness`, or a mask.

    Returns
    -------
    PhaseVolumes
    """
    lab = as_labels(labels, name="labels", phases=phases, role="phase_volumes expects phase labels")
    vs = voxel_size(voxel_size_nm, labels)
    m = _region(region, lab, vs, phases)
    vals = lab[m] if m is not None else lab.ravel()
    counts = np.bincount(vals.astype(np.int64, copy=False).ravel(), minlength=1) if vals.size else np.zeros(1, np.int64)
    voxel_um3 = float(np.prod(vs)) / 1e9
    names = phases.names()
    vol = np.array([sum(int(counts[c]) for c in codes if c < counts.size) for codes in names.values()], float) * voxel_um3
    total = float(vals.size) * voxel_um3
    frac = vol / total if total > 0 else np.full(len(names), np.nan)
    return PhaseVolumes(phase_names=tuple(names), volume_um3=vol, fraction=frac, region_volume_um3=total)


def phase_series(label_series: Sequence, *, voxel_size_nm=None, phases: PhaseCodes = PhaseCodes(), region=None,
                 names: Sequence[str] | None = None,
                 progress: Callable[[int, int], None] | None = None, chunk_budget_mb=None) -> PhaseSeries:
    """:func:`phase_volumes` of every step and the relative non-lithiated silicon volume (RNL).

    Parameters
    ----------
    label_series : sequence of (z, y, x) int arrays or Volumes
        Phase labels T0..Tn.
    voxel_size_nm, phases, region
        See :func:`phase_volumes` (``region`` applies to every step: a mask is shared, "electrode"
        is found per step).
    names : sequence of str, optional
        Step names (default ``T0, T1, ...``).
    progress : callable(done, total), optional
    chunk_budget_mb : float, optional
        A step whose working set exceeds this (MiB) is counted slab by slab
        (:func:`tomo4d.quantify.chunked.phase_volumes_chunked`, exact); None: every step in memory.

    Returns
    -------
    PhaseSeries
    """
    items = list(label_series)
    if not items:
        raise InputError("label_series is empty; give one label volume per time step")
    vs = voxel_size(voxel_size_nm, *items)
    names = step_names(len(items), names)
    res = []
    for i, lab in enumerate(items):
        if chunk_budget_mb is not None and _streams(lab, chunk_budget_mb):
            from .chunked import phase_volumes_chunked

            res.append(phase_volumes_chunked(lab, voxel_size_nm=vs, phases=phases, region=region,
                                             chunk_budget_mb=chunk_budget_mb))
        else:
            res.append(phase_volumes(lab, voxel_size_nm=vs, phases=phases, region=region))
        if progress is not None:
            progress(i + 1, len(items))
    vol = np.stack([r.volume_um3 for r in res])
    si = vol[:, res[0].phase_names.index("silicon")]
    rnl = si / si[0] if si[0] > 0 else np.full(len(items), np.nan)
    return PhaseSeries(step_names=names, phase_names=res[0].phase_names, volume_um3=vol,
                       fraction=np.stack([r.fraction for r in res]),
                       region_volume_um3=np.array([r.region_volume_um3 for r in res]), rnl=rnl)
