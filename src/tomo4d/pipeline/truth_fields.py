"""A known displacement field (``truth.displacement``) sampled at the DVC nodes: error and true strain.

A truth file is an ``.npz`` with ``positions_nm`` and ``displacement_nm``, both ``(nz, ny, nx, 3)``
(z, y, x), on a regular grid whose first point is the centre of voxel (0, 0, 0) of ``inputs.series``
(the phantom writes them as ``truth/displacement_T*.npz``, every 4th voxel or every voxel).  The
displacement is interpolated (trilinear) at the nodes of a measured field and put in a
:class:`~tomo4d.dvc.DisplacementField` on the *same* node grid, so that :func:`tomo4d.dvc.strain_field`
turns it into the true strain in exactly the measures, at exactly the nodes and by exactly the
node-difference operator of the measurement: the two differ only by what the DVC got wrong.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .._validate import show
from ..errors import InputError

__all__ = ["check_truth_displacement", "truth_field", "truth_strain"]


def _load(path: Path, key: str):
    try:
        with np.load(path) as z:
            pos, u = np.asarray(z["positions_nm"], np.float64), np.asarray(z["displacement_nm"], np.float64)
    except FileNotFoundError:
        raise InputError(f"{key}: {str(path)!r} does not exist; check the path in the experiment file") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise InputError(f"{key}: {str(path)!r} is not a displacement .npz with arrays positions_nm and "
                         f"displacement_nm ({exc}); write both, shape (nz, ny, nx, 3), nm") from None
    if pos.ndim != 4 or pos.shape[-1] != 3 or u.shape != pos.shape or min(pos.shape[:3]) < 2:
        raise InputError(f"{key}: {str(path)!r} has positions_nm {show(pos.shape)} and displacement_nm "
                         f"{show(u.shape)}; both must be (nz, ny, nx, 3) with at least 2 points per axis")
    return pos, u


def _spacing(pos: np.ndarray, key: str, path: Path) -> np.ndarray:
    step = np.array([pos[1, 0, 0, 0] - pos[0, 0, 0, 0], pos[0, 1, 0, 1] - pos[0, 0, 0, 1],
                     pos[0, 0, 1, 2] - pos[0, 0, 0, 2]])
    if np.any(step <= 0):
        raise InputError(f"{key}: {str(path)!r} positions_nm is not a regular grid increasing along z, y, x "
                         f"(steps {show(step.tolist())} nm); write the points of a regular grid")
    return step


def check_truth_displacement(path, key: str) -> None:
    """Refuse (:class:`InputError` naming ``key``) a file that :func:`truth_field` cannot read."""
    pos, _ = _load(Path(path), key)
    _spacing(pos, key, Path(path))


def truth_field(field, path, *, voxel_size_nm: float, scale: int = 1, key: str = "truth.displacement"):
    """The known displacement of ``path`` at the nodes of ``field``, as a field on the same node grid.

    Parameters
    ----------
    field : tomo4d.dvc.DisplacementField
        A measured field; its nodes are in px of the analysis grid.
    path : path-like
        The truth ``.npz`` (module docstring).
    voxel_size_nm : float
        Voxel of ``inputs.series``, nm.
    scale : int
        Analysis voxels per series voxel (2 for the enhanced series: node ``j`` sits at series
        coordinate ``(j + 0.5) / 2 - 0.5``).

    Returns
    -------
    DisplacementField
        Translation-only nodes (every node CONVERGED), displacement in px of the analysis grid.
    """
    from scipy.ndimage import map_coordinates

    from ..dvc import DisplacementField

    path = Path(path)
    pos, u = _load(path, key)
    step = _spacing(pos, key, path)
    series_px = (field.positions_zyx_px + 0.5) / scale - 0.5
    idx = series_px * voxel_size_nm / step  # truth-grid index: its first point is voxel (0, 0, 0)
    u_px = np.stack([map_coordinates(u[..., a], idx.T, order=1, mode="nearest") for a in range(3)], axis=1)
    u_px *= scale / voxel_size_nm
    phi = np.tile(np.eye(4), (field.n_nodes, 1, 1))
    phi[:, :3, 3] = u_px
    return DisplacementField(np.asarray(field.positions_zyx_px, float), phi, np.zeros(field.n_nodes, np.int8),
                             grid_shape=field.grid_shape, node_spacing_px=field.node_spacing_px,
                             half_window_px=field.half_window_px, voxel_size_nm=field.voxel_size_nm,
                             notes={"source": str(path)})


def truth_strain(truth, measured_strain):
    """The strain of ``truth`` (:func:`truth_field`) on the nodes where ``measured_strain`` is valid."""
    import dataclasses

    from ..dvc import strain_field

    st = strain_field(truth)
    return dataclasses.replace(st, valid=np.asarray(st.valid) & np.asarray(measured_strain.valid))
