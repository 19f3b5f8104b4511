"""Time alignment: every step registered rigidly onto T0 on the current collector only.

The current collector does not deform during cycling, so a rigid registration restricted to it
(plus a thin band of the electrode next to it, which carries the lateral texture a flat metal
foil lacks) measures the motion of the whole sample between scans.  The transforms follow the
:mod:`tomo4d.register` convention: ``phi`` maps T0 (fixed) voxel coordinates to step-n (moving)
coordinates about the volume centre, so ``apply_phi(step_n, phi)`` brings step n onto T0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .._validate import as_image, check_number, show
from ..errors import InputError
from ..register import Registration, apply_phi, decompose_phi, register
from ._common import as_labels, step_names, voxel_size

log = logging.getLogger(__name__)

__all__ = ["TimeAlignment", "align_steps", "collector_band"]


@dataclass(frozen=True, eq=False)
class TimeAlignment:
    """Rigid transforms of every step onto T0.

    Attributes
    ----------
    step_names : tuple of str
    registrations : tuple of tomo4d.register.Registration
        One per step (identity for T0).
    translation_um : (n_steps, 3) float64
        Translation (z, y, x) of each step relative to T0, um (phi translation x voxel size).
    rotation_deg : (n_steps,) float64
        Rotation angle of each step relative to T0, degrees.
    residual : (n_steps,) float64
        Normalised grey residual of each registration on the mask (0 = perfect).
    voxel_size_nm : (3,) float
    """

    step_names: tuple[str, ...]
    registrations: tuple
    translation_um: np.ndarray
    rotation_deg: np.ndarray
    residual: np.ndarray
    voxel_size_nm: tuple[float, float, float]

    def aligned(self, volume, step: int, *, order: int = 1):
        """``volume`` of step ``step`` resampled onto T0 (order 0 for label volumes)."""
        return apply_phi(volume, self.registrations[step].phi, order=order)

    def to_columns(self) -> dict[str, np.ndarray]:
        t = self.translation_um
        return {"step": np.asarray(self.step_names), "translation_z_um": t[:, 0], "translation_y_um": t[:, 1],
                "translation_x_um": t[:, 2], "rotation_deg": self.rotation_deg, "residual": self.residual,
                "converged": np.array([r.converged for r in self.registrations])}

    def to_dict(self) -> dict:
        d = {k: v.tolist() for k, v in self.to_columns().items()}
        d["phi"] = [r.phi.tolist() for r in self.registrations]
        return d


def collector_band(labels, *, collector=(4,), band_nm: float = 500.0, electrode_nm: float = 150.0,
                   voxel_size_nm=None) -> np.ndarray:
    """Registration mask: collector voxels within ``band_nm`` of its surface plus the electrode
    voxels within ``electrode_nm`` of the collector (bool, same shape as ``labels``).

    The electrode next to the collector barely deforms and carries the lateral texture a flat foil
    lacks; keep ``electrode_nm`` to a few voxels (deeper electrode moves with the swelling).

    Parameters
    ----------
    labels : (z, y, x) int array or Volume
        Phase labels of T0.
    collector : int or tuple of int
        Label value(s) of the collector.
    band_nm : float
        Depth of the collector band, nm.
    electrode_nm : float
        Depth of the electrode band above the collector, nm (0: collector only).
    voxel_size_nm : float or (3,) float, optional
    """
    lab = as_labels(labels, name="labels")
    vs = voxel_size(voxel_size_nm, labels)
    check_number("band_nm", band_nm, minimum=0.0, exclusive_minimum=True)
    check_number("electrode_nm", electrode_nm, minimum=0.0)
    col = np.isin(lab, np.atleast_1d(collector))
    if not col.any():
        raise InputError(f"no collector voxels (label {show(collector)}) in the labels; pass collector=<its label value>")
    d_out = ndimage.distance_transform_edt(~col, sampling=vs)
    d_in = ndimage.distance_transform_edt(col, sampling=vs)
    return (col & (d_in <= band_nm)) | (~col & (d_out <= electrode_nm))


def align_steps(images: Sequence, *, mask, voxel_size_nm=None, names: Sequence[str] | None = None,
                binning: Sequence[int] = (2, 1),
                progress: Callable[[int, int], None] | None = None) -> TimeAlignment:
    """Rigid registration of every step onto the first, restricted to the collector ``mask``.

    Parameters
    ----------
    images : sequence of (z, y, x) arrays or Volumes
        Grey-value volumes T0..Tn, same shape.
    mask : (z, y, x) bool array
        T0 voxels to register on, e.g. :func:`collector_band` of the T0 labels.
    voxel_size_nm : float or (3,) float, optional
        Voxel size, nm (default: the Volumes'); used for the translations in um.
    names : sequence of str, optional
    binning : sequence of int
        Coarse-to-fine binning of :func:`tomo4d.register.register`.
    progress : callable(done, total), optional

    Returns
    -------
    TimeAlignment
    """
    items = list(images)
    if not items:
        raise InputError("images is empty; give one volume per time step")
    vs = voxel_size(voxel_size_nm, *items)
    names = step_names(len(items), names)
    ref = as_image(items[0], name="images[0]")
    m = np.asarray(mask)
    if m.shape != ref.shape:
        raise InputError(f"mask has shape {m.shape}; it must match the volumes {ref.shape}")
    m = m.astype(bool)
    if m.sum() < 64:
        raise InputError(f"mask has only {int(m.sum())} voxels; give the collector region (>= 64 voxels)")
    c = tuple((np.asarray(ref.shape, float) - 1.0) / 2.0)
    regs = [Registration(phi=np.eye(4), converged=True, iterations=0, residual=0.0, centre_zyx_px=c)]
    if progress is not None:
        progress(1, len(items))
    for i in range(1, len(items)):
        mov = as_image(items[i], name=f"images[{i}]")
        if mov.shape != ref.shape:
            raise InputError(f"images[{i}] has shape {mov.shape}, T0 has {ref.shape}; give volumes on one grid")
        regs.append(register(ref, mov, mask=m, rigid=True, binning=binning))
        if progress is not None:
            progress(i + 1, len(items))
    trans = np.array([r.phi[:3, 3] for r in regs]) * np.asarray(vs) / 1e3
    rot = np.array([decompose_phi(r.phi).rotation_angle_deg for r in regs])
    return TimeAlignment(step_names=names, registrations=tuple(regs), translation_um=trans, rotation_deg=rot,
                         residual=np.array([r.residual for r in regs], float), voxel_size_nm=vs)
