"""The inputs of the enhance stages: ``inputs.training_pair`` and ``enhance.truth_hq``, checked from headers.

The pair: both files open, the LQ voxel is twice the HQ voxel, and the HQ field (shape x voxel size,
nm) fits inside the LQ field within ``training_pair.extent_tolerance`` per axis (the registration
finds where); a pair whose physical fields cannot overlap so is refused, naming both files.  With the
enhance section, the in-situ series is the LQ one: its voxel size must be the pair's LQ voxel size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._validate import show
from ..errors import InputError

__all__ = ["resolve_enhance_inputs"]


def _open(path: Path, key: str):
    from ..io import open_volume

    if not path.exists():
        raise InputError(f"{key}: input {str(path)!r} does not exist; check the path in the experiment file")
    try:
        return open_volume(path)
    except InputError as exc:
        raise type(exc)(f"{key}: {exc}") from None


def check_pair(lq, hq, lq_path: Path, hq_path: Path, tolerance: float) -> None:
    """Refuse a pair whose voxel sizes are not 2:1 or whose HQ field cannot lie inside the LQ field."""
    ratio = np.asarray(lq.voxel_size_nm, float) / np.asarray(hq.voxel_size_nm, float)
    if np.any(np.abs(ratio - 2.0) > 0.1):
        raise InputError(f"inputs.training_pair: lq {str(lq_path)!r} has voxel size {show(lq.voxel_size_nm)} nm and hq "
                         f"{str(hq_path)!r} {show(hq.voxel_size_nm)} nm; the LQ voxel must be twice the HQ voxel "
                         "along every axis")
    lq_ext = np.asarray(lq.shape, float) * np.asarray(lq.voxel_size_nm, float)
    hq_ext = np.asarray(hq.shape, float) * np.asarray(hq.voxel_size_nm, float)
    if np.any(hq_ext > lq_ext * (1 + tolerance)):
        raise InputError(f"inputs.training_pair: the fields of lq {str(lq_path)!r} ({show(tuple(lq_ext))} nm) and hq "
                         f"{str(hq_path)!r} ({show(tuple(hq_ext))} nm) do not overlap as a pair must: the HQ field "
                         f"exceeds the LQ field by more than extent_tolerance={tolerance:g} (after registration the HQ "
                         "field must lie inside the LQ one); give the scans of one region")


def resolve_enhance_inputs(exp, names, ref) -> tuple[tuple[Path, Path] | None, tuple[Path, ...]]:
    """``(training pair or None, truth_hq files)`` of ``exp``, checked; ``ref`` is T0's lazy volume."""
    from .inputs import expand_files

    tp = exp.inputs.training_pair
    if tp is None:
        return None, ()
    lq_path, hq_path = exp.resolve(tp.lq), exp.resolve(tp.hq)
    lq, hq = _open(lq_path, "inputs.training_pair.lq"), _open(hq_path, "inputs.training_pair.hq")
    check_pair(lq, hq, lq_path, hq_path, tp.extent_tolerance)
    sec = exp.enhance
    if sec is None:
        return (lq_path, hq_path), ()
    if not np.allclose(ref.voxel_size_nm, lq.voxel_size_nm, rtol=0.05):
        raise InputError(f"enhance: the enhance stage enhances inputs.series, whose voxel size "
                         f"{show(tuple(ref.voxel_size_nm))} nm is not the LQ voxel size {show(lq.voxel_size_nm)} nm of "
                         f"inputs.training_pair.lq {str(lq_path)!r}; give the LQ in-situ series")
    files = () if sec.truth_hq is None else expand_files(exp, sec.truth_hq, "enhance.truth_hq")
    if len(files) not in (0, len(names)):
        raise InputError(f"enhance.truth_hq has {len(files)} files but inputs.series has {len(names)} steps; give "
                         "one per step")
    for i, p in enumerate(files):
        v = _open(p, f"enhance.truth_hq[{i}] ({names[i]})")
        if not np.allclose(v.voxel_size_nm, hq.voxel_size_nm, rtol=0.05):
            raise InputError(f"enhance.truth_hq[{i}] ({names[i]}, {str(p)!r}) has voxel size {show(v.voxel_size_nm)} "
                             f"nm, not the HQ voxel size {show(hq.voxel_size_nm)} nm of the training pair")
    return (lq_path, hq_path), files


def resolve_truth_particles_hq(exp, names, truth_hq) -> tuple[Path, ...]:
    """``enhance.truth_particles`` of ``exp`` (true particle labels on each truth_hq grid), checked from headers."""
    from .inputs import expand_files

    sec = exp.enhance
    if sec is None or sec.truth_particles is None or exp.inputs.training_pair is None:
        return ()
    files = expand_files(exp, sec.truth_particles, "enhance.truth_particles")
    if not truth_hq:
        raise InputError("enhance.truth_particles is given without enhance.truth_hq: the particles are judged on the "
                         "HQ scans of the in-situ steps; give enhance.truth_hq too")
    if len(files) != len(names):
        raise InputError(f"enhance.truth_particles has {len(files)} files but inputs.series has {len(names)} steps; "
                         "give one per step")
    for i, (p, h) in enumerate(zip(files, truth_hq)):
        v, hv = _open(p, f"enhance.truth_particles[{i}] ({names[i]})"), _open(h, f"enhance.truth_hq[{i}]")
        if tuple(v.shape) != tuple(hv.shape):
            raise InputError(f"enhance.truth_particles[{i}] ({names[i]}, {str(p)!r}) has shape {show(v.shape)} but "
                             f"enhance.truth_hq[{i}] has {show(hv.shape)}; give the particle labels on the HQ grid")
    return files
