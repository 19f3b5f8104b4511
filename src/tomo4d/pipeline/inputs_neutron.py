"""The neutron inputs: ``inputs.neutron`` (attenuation volumes, 1/cm), checked from headers.

Every file exists and opens; one per step; every step has T0's neutron shape and voxel size; the
neutron field of view (shape x voxel size, nm) matches the X-ray series' field within one neutron
voxel along every axis (both volumes start at the same corner: the stage bins the X-ray grid onto
the neutron grid), and the neutron voxel is a whole number of series voxels.  With the neutron
section's Li concentration, ``inputs.labels`` must label every step, and ``truth.li_concentration_mol_l``
has one value per step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._validate import show
from ..errors import InputError

__all__ = ["neutron_bin_factor", "resolve_neutron_inputs"]


def neutron_bin_factor(neutron_voxel_nm, series_voxel_nm) -> tuple[int, int, int]:
    """Series voxels per neutron voxel along (z, y, x); InputError unless whole numbers (within 2 %)."""
    ratio = np.asarray(neutron_voxel_nm, float) / np.asarray(series_voxel_nm, float)
    b = np.rint(ratio)
    if np.any(b < 1) or np.any(np.abs(ratio - b) > 0.02 * b):
        raise InputError(f"inputs.neutron: the neutron voxel {show(tuple(neutron_voxel_nm))} nm is not a whole number "
                         f"of series voxels {show(tuple(series_voxel_nm))} nm (ratio {show(tuple(ratio))}); resample "
                         "the neutron volumes to a multiple of the X-ray voxel, or set inputs.neutron_voxel_size_nm")
    return tuple(int(v) for v in b)


def resolve_neutron_inputs(exp, names, ref, series) -> tuple[tuple[Path, ...], tuple | None, tuple | None]:
    """``(neutron files, their voxel size nm, their shape)`` of ``exp``, checked; ``ref`` is T0's lazy volume."""
    from .inputs import _open, expand_files

    inp, n = exp.inputs, len(names)
    truth = exp.truth.li_concentration_mol_l if exp.truth is not None else None
    if truth is not None and len(truth) != n:
        raise InputError(f"truth.li_concentration_mol_l has {len(truth)} values but inputs.series has {n} steps; "
                         "give one per step")
    if inp.neutron is None:
        return (), None, None
    files = expand_files(exp, inp.neutron, "inputs.neutron")
    if len(files) != n:
        raise InputError(f"inputs.neutron has {len(files)} files but inputs.series has {n} steps "
                         f"({', '.join(names)}); give one neutron volume per step")
    vols = [_open(p, f"inputs.neutron[{i}] ({names[i]})", inp.neutron_voxel_size_nm) for i, p in enumerate(files)]
    n0 = vols[0]
    for i, v in enumerate(vols[1:], 1):
        for what, a, b in (("shape", v.shape, n0.shape), ("voxel size (nm)", v.voxel_size_nm, n0.voxel_size_nm)):
            if tuple(a) != tuple(b):
                raise InputError(f"inputs.neutron[{i}] ({names[i]}, {str(files[i])!r}) has {what} {show(tuple(a))} but "
                                 f"{names[0]}'s {str(files[0])!r} has {show(tuple(b))}; every neutron volume must "
                                 "share shape and voxel size")
    n_vs = np.asarray(n0.voxel_size_nm, float)
    n_field = np.asarray(n0.shape, float) * n_vs
    x_field = np.asarray(ref.shape, float) * np.asarray(ref.voxel_size_nm, float)
    if np.any(np.abs(n_field - x_field) > n_vs * (1 + 1e-6)):
        raise InputError(f"inputs.neutron[0] ({names[0]}, {str(files[0])!r}): its field of view {show(tuple(n_field))} "
                         f"nm (shape {show(tuple(n0.shape))} x voxel {show(tuple(n_vs))} nm) does not match the X-ray "
                         f"field {show(tuple(x_field))} nm of {str(series[0])!r} within one neutron voxel; give neutron "
                         "volumes cropped to the X-ray field, or fix the voxel size (inputs.neutron_voxel_size_nm)")
    neutron_bin_factor(n_vs, ref.voxel_size_nm)
    sec = exp.neutron
    if sec is not None and sec.li_free_mu_per_cm is not None and inp.labels is not None:
        n_labels = len(expand_files(exp, inp.labels, "inputs.labels"))
        if n_labels != n:
            raise InputError(f"neutron: the Li concentration needs phase labels of every step, but inputs.labels has "
                             f"{n_labels} file(s) for {n} steps; give one label volume per step (or drop "
                             "inputs.labels and use the segment section)")
    return files, tuple(float(v) for v in n_vs), tuple(int(v) for v in n0.shape)
