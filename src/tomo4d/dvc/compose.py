"""Composition of displacement fields: T0 -> T1 and T1 -> T2 into T0 -> T2.

Node-centred composition: a node ``p`` of the first field moves to
``q = p + u1(p)`` in T1.  The second field (measured on its own grid in the T1
configuration) is interpolated *at q* (cubic splines of all 12 Phi components,
linear extrapolation beyond its outer nodes), and the node's Phi becomes::

    F = F2(q) F1(p),    u = u1(p) + u2(q)

which is exact for the node position and for the local linear map, whatever
the strain.  (Composing by nearest node, or interpolating at ``p`` instead of
``q``, is what makes cumulative fields drift by pixels at large strain.)
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .field import DisplacementField, NodeStatus

__all__ = ["compose_fields", "deform_field_points", "moved_band", "moved_planes"]


def deform_field_points(field: DisplacementField, points_zyx_px, *, order: int = 3) -> np.ndarray:
    """Positions ``(M, 3)`` (px) of reference points after the deformation of ``field``."""
    pts = np.asarray(points_zyx_px, dtype=np.float64).reshape(-1, 3)
    u, _ = field.interpolate(pts, order=order)
    return pts + u


def moved_planes(field: DisplacementField, z_px, yx_shape, *, samples: int = 9) -> np.ndarray:
    """Mean z (px) in the deformed volume of each reference plane ``z = z_px[i]`` moved by ``field``: the
    plane sampled on a ``samples`` x ``samples`` lateral lattice over ``yx_shape`` (trilinear interpolation of
    the field).  Moves a z band (an electrode mask) from T0 into Tm for reference updating; a non-finite
    ``z_px`` (an open band edge) stays as it is."""
    z = np.atleast_1d(np.asarray(z_px, dtype=np.float64))
    if len(yx_shape) != 2 or min(int(n) for n in yx_shape) < 1:
        raise InputError(f"yx_shape={tuple(yx_shape)!r} must be the (y, x) extent of the volume, two positive "
                         "integers")
    ys, xs = (np.linspace(0.0, int(n) - 1.0, samples) for n in yx_shape)
    out = z.copy()
    for i, zz in enumerate(z):
        if np.isfinite(zz):
            pts = np.stack(np.meshgrid([zz], ys, xs, indexing="ij"), -1).reshape(-1, 3)
            out[i] = float(np.mean(deform_field_points(field, pts, order=1)[:, 0]))
    return out


def moved_band(field: DisplacementField, lower_z_px: float, upper_z_px: float, yx_shape) -> tuple[float, float]:
    """The z band ``[lower_z_px, upper_z_px)`` of the reference (an electrode between a rigid collector and the
    separator) moved by ``field``: each edge moves with the material one node spacing outside the band, where the
    field is not smeared across the edge's kink (at the collector plane itself a trilinear field reads about half
    the swelling of the node above and lifts the band's lower edge, which can take the node row straddling the
    collector out of the next pair's mask; session 18).  An infinite edge stays as it is; an edge whose outside
    sample would leave the volume is sampled at the volume's border."""
    s = float(np.asarray(field.node_spacing_px, dtype=float)[0]) if field.node_spacing_px is not None else 0.0
    top = float(field.volume_shape_zyx[0]) - 1.0 if field.volume_shape_zyx is not None else np.inf
    lo, hi = float(lower_z_px), float(upper_z_px)
    at = (max(lo - s, 0.0) if np.isfinite(lo) else lo, min(hi + s, top) if np.isfinite(hi) else hi)
    moved = moved_planes(field, at, yx_shape)
    return tuple(float(m + (e - a)) if np.isfinite(e) else e for m, e, a in zip(moved, (lo, hi), at))


def _nearest_nodes(field: DisplacementField, points: np.ndarray) -> np.ndarray:
    """Index of the node of ``field`` nearest to each point (regular grids by rounding, else a k-d tree)."""
    if field.grid_shape is not None and min(field.grid_shape) >= 1 and field.n_nodes == int(np.prod(field.grid_shape)):
        gs = np.asarray(field.grid_shape)
        ijk = np.rint((points - field.grid_origin_px) / np.asarray(field.node_spacing_px, float)).astype(np.int64)
        ijk = np.clip(ijk, 0, gs - 1)
        return np.ravel_multi_index(tuple(ijk.T), tuple(gs))
    from scipy.spatial import cKDTree

    return cKDTree(field.positions_zyx_px).query(points)[1]


def compose_fields(first: DisplacementField, second: DisplacementField, *, order: int = 3
                   ) -> DisplacementField:
    """The field of ``second`` after ``first`` on the nodes of ``first``.

    Parameters
    ----------
    first : DisplacementField
        T_a -> T_b, nodes in the T_a reference.
    second : DisplacementField
        T_b -> T_c, nodes in the T_b configuration.
    order : int
        Spline order of the interpolation of ``second`` (3 cubic, 1 linear).

    Returns
    -------
    DisplacementField
        T_a -> T_c on the nodes of ``first``.  Nodes of ``first`` that are not
        usable keep their status; a usable node takes the status of the node of
        ``second`` nearest to where it lands when that one is not ``CONVERGED``
        (``INTERPOLATED``, ``OUT_OF_VIEW`` where the sample left the later scan,
        ``OUTSIDE_MASK``, ...); nodes that land more than one node spacing
        outside ``second``'s grid get ``OUTSIDE_FIELD``.
    """
    if not isinstance(first, DisplacementField) or not isinstance(second, DisplacementField):
        raise InputError("compose_fields needs two DisplacementField objects")
    q = first.positions_zyx_px + first.displacement_zyx_px
    u2, f2 = second.interpolate(q, order=order)
    phi = first.phi.copy()
    phi[:, :3, :3] = f2 @ first.phi[:, :3, :3]
    phi[:, :3, 3] = first.phi[:, :3, 3] + u2
    status = first.status.copy()
    # a composed value is a measurement only where both parts are: the second field's nearest node at q passes
    # on a status that is not CONVERGED (OUT_OF_VIEW where the sample left the later scan, OUTSIDE_MASK where the
    # second correlation did not match, INTERPOLATED, ...).  Passing OUTSIDE_MASK on matters: on the demo the nodes
    # next to the moved band's edge, extrapolated by the second field, read the collector side's mean at T2 0.207
    # instead of 0.283 (truth 0.310) when kept (RESULTS.md, session 17)
    inherited = second.status[_nearest_nodes(second, q)]
    take = first.usable & (inherited != NodeStatus.CONVERGED)
    status[take] = inherited[take]
    lo = second.positions_zyx_px.min(0) - np.asarray(second.node_spacing_px, float)
    hi = second.positions_zyx_px.max(0) + np.asarray(second.node_spacing_px, float)
    outside = np.any((q < lo) | (q > hi), axis=1) & first.usable
    status[outside] = NodeStatus.OUTSIDE_FIELD
    notes = {"composed_from": [first.notes.get("label", "first"), second.notes.get("label", "second")],
             "outside_second_field": int(outside.sum()), "status_from_second": int((take & ~outside).sum())}
    if "volume_shape_zyx" in first.notes:      # nodes (and so the grid) are those of ``first``
        notes["volume_shape_zyx"] = first.notes["volume_shape_zyx"]
    return first.with_(phi=phi, status=status, notes=notes, iterations=None, residual=None)
