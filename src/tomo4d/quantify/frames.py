"""Particle-centred frames: sub-volumes that follow one tracked particle through the steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._array import read_box
from .._validate import as_lazy_image, check_finite_chunk, check_number, show
from ..errors import InputError
from ._common import voxel_size
from .tracking import Tracks

__all__ = ["ParticleFrames", "particle_frames"]


@dataclass(frozen=True, eq=False)
class ParticleFrames:
    """Sub-volumes of equal shape centred on one particle at every step.

    Attributes
    ----------
    track : int
        Track index in the :class:`Tracks`.
    frames : (n_steps, z, y, x) float32
        The sub-volumes; voxels outside the field of view (or steps where the particle was not
        found) are NaN.
    origin_px : (n_steps, 3) int64
        Index in the full volume of each frame's voxel (0, 0, 0) (may be negative).
    centre_um : (n_steps, 3) float64
        The particle's centre of mass at each step, um (NaN where not found).
    size_um : float
        Requested edge length, um.
    """

    track: int
    frames: np.ndarray
    origin_px: np.ndarray
    centre_um: np.ndarray
    size_um: float


def particle_frames(volumes: Sequence, tracks: Tracks, track: int, *, size_um: float = 15.0,
                    voxel_size_nm=None) -> ParticleFrames:
    """Cut a cube of edge ``size_um`` centred on a tracked particle's centre of mass at every step.

    Parameters
    ----------
    volumes : sequence of (z, y, x) arrays, lazy (dask/Zarr) arrays or Volumes
        One volume per step of ``tracks`` (grey values, labels, residual maps, ...), same grid as
        the labels that were tracked.  A lazy volume is read only in the frame's box.
    tracks : Tracks
    track : int
        Index of the track.
    size_um : float
        Edge length of the frames, um (15 um in the reference study); rounded to an odd number of voxels.
    voxel_size_nm : float or (3,) float, optional
        Default: the tracks' voxel size.

    Returns
    -------
    ParticleFrames
    """
    if not isinstance(tracks, Tracks):
        raise InputError("tracks must be a Tracks object (from track_particles)")
    items = list(volumes)
    if len(items) != len(tracks.step_names):
        raise InputError(f"{len(items)} volumes for {len(tracks.step_names)} tracked steps; give one per step")
    k = int(track)
    if not 0 <= k < tracks.n_tracks:
        raise InputError(f"track={show(track)} is out of range; give 0..{tracks.n_tracks - 1}")
    check_number("size_um", size_um, minimum=0.0, exclusive_minimum=True)
    vs = np.asarray(voxel_size(voxel_size_nm if voxel_size_nm is not None else tracks.voxel_size_nm))
    half = np.maximum(1, np.round(float(size_um) * 1e3 / vs / 2.0)).astype(int)
    shape = tuple(2 * half + 1)
    frames = np.full((len(items),) + shape, np.nan, np.float32)
    origin = np.zeros((len(items), 3), np.int64)
    cen = tracks.centroid_um[k]
    for s, vol in enumerate(items):
        if not np.all(np.isfinite(cen[s])):
            continue
        a = as_lazy_image(vol, name=f"volumes[{s}]")
        c = np.round(cen[s] * 1e3 / vs).astype(int)
        o = c - half
        origin[s] = o
        src = tuple(slice(max(o[i], 0), min(o[i] + shape[i], a.shape[i])) for i in range(3))
        dst = tuple(slice(src[i].start - o[i], src[i].stop - o[i]) for i in range(3))
        if all(sl.stop > sl.start for sl in src):
            box = read_box(a, src)
            check_finite_chunk(f"volumes[{s}]", box, src[0].start)
            frames[(s,) + dst] = box
    return ParticleFrames(track=k, frames=frames, origin_px=origin, centre_um=cen.copy(), size_um=float(size_um))
