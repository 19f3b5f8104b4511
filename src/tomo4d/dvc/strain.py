"""Strain from a displacement field on a regular node grid.

The deformation gradient at each node is ``F = I + grad u`` with ``grad u``
from second-order finite differences of the node displacements (central
inside, one-sided at the grid faces), ``du_i / dX_j`` in px/px.  From ``F``:

- small-strain tensor ``e = (H + H^T) / 2`` with ``H = F - I``,
- volumetric strain ``det F - 1`` (finite, exact relative volume change) and
  ``tr e`` (small-strain approximation),
- equivalent deviatoric strain ``sqrt(2/3 e_dev : e_dev)``,
- axial components ``e_zz, e_yy, e_xx``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .field import DisplacementField

__all__ = ["StrainField", "strain_field", "RegionStats", "regional_strain", "strain_histogram"]


@dataclass(frozen=True, eq=False)
class StrainField:
    """Strain on the node grid of a field (all arrays ``(gz, gy, gx, ...)``, dimensionless).

    Attributes
    ----------
    F : (gz, gy, gx, 3, 3) float64
        Deformation gradient.
    strain : (gz, gy, gx, 3, 3) float64
        Small-strain tensor ``e``.
    volumetric : (gz, gy, gx) float64
        ``det F - 1``.
    deviatoric : (gz, gy, gx) float64
        ``sqrt(2/3 e_dev : e_dev)``.
    valid : (gz, gy, gx) bool
        Nodes whose gradient stencil uses only usable nodes.
    positions_zyx_px : (gz, gy, gx, 3) float64
        Node positions in the reference, px.
    """

    F: np.ndarray
    strain: np.ndarray
    volumetric: np.ndarray
    deviatoric: np.ndarray
    valid: np.ndarray
    positions_zyx_px: np.ndarray

    @property
    def zz(self) -> np.ndarray:
        return self.strain[..., 0, 0]

    @property
    def yy(self) -> np.ndarray:
        return self.strain[..., 1, 1]

    @property
    def xx(self) -> np.ndarray:
        return self.strain[..., 2, 2]

    @property
    def volumetric_small(self) -> np.ndarray:
        """``tr e`` (small-strain volumetric strain)."""
        return np.trace(self.strain, axis1=-2, axis2=-1)

    def component(self, name: str) -> np.ndarray:
        """One of ``zz, yy, xx, zy, zx, yx, volumetric, deviatoric`` on the grid."""
        idx = {"z": 0, "y": 1, "x": 2}
        if name in ("volumetric", "deviatoric"):
            return getattr(self, name)
        if len(name) == 2 and all(c in idx for c in name):
            return self.strain[..., idx[name[0]], idx[name[1]]]
        raise InputError(f"strain component {name!r} is not known; use zz, yy, xx, zy, zx, yx, volumetric "
                         "or deviatoric")

    def save(self, path, *, overwrite: bool = False) -> None:
        """Write an HDF5 file (``/F``, ``/strain``, ``/volumetric``, ``/deviatoric``, ``/valid``,
        ``/positions_zyx_px``; attribute ``format = "tomo4d.strain_field"``), atomically."""
        import h5py

        from ..io import atomic_output

        with atomic_output(path, overwrite=overwrite) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs["format"] = "tomo4d.strain_field"
                f.attrs["version"] = 1
                for k in ("F", "strain", "volumetric", "deviatoric", "valid", "positions_zyx_px"):
                    f[k] = getattr(self, k)


def strain_field(field: DisplacementField) -> StrainField:
    """Deformation gradient and strains from the displacement of a regular-grid field.

    Parameters
    ----------
    field : DisplacementField
        Needs ``grid_shape`` with at least 2 nodes along every axis.  Unusable
        nodes are filled from neighbours first and flagged in ``valid``.
    """
    from .field import _fill_from_neighbours

    if not isinstance(field, DisplacementField):
        raise InputError("strain_field needs a DisplacementField")
    if field.grid_shape is None or min(field.grid_shape) < 2:
        raise InputError(f"strain needs a regular grid with >= 2 nodes per axis, got grid_shape="
                         f"{field.grid_shape}; use a smaller node spacing")
    ok = field.usable
    if not ok.any():
        raise InputError("the field has no usable (converged or interpolated) node")
    u = _fill_from_neighbours(field.positions_zyx_px, field.displacement_zyx_px, ok)
    ug = field.grid(u)
    sp = [float(s) for s in field.node_spacing_px]
    grads = np.empty(tuple(field.grid_shape) + (3, 3))
    for i in range(3):
        g = np.gradient(ug[..., i], *sp, edge_order=2 if min(field.grid_shape) >= 3 else 1)
        for j in range(3):
            grads[..., i, j] = g[j]
    F = grads + np.eye(3)
    e = 0.5 * (grads + np.swapaxes(grads, -1, -2))
    dev = e - np.trace(e, axis1=-2, axis2=-1)[..., None, None] / 3.0 * np.eye(3)
    okg = field.grid(ok)
    # a node's gradient is trustworthy if it and its axis neighbours are usable
    pad = np.pad(okg, 1, mode="edge")
    gz, gy, gx = field.grid_shape
    valid = okg.copy()
    for a, b, c in ((0, 1, 1), (2, 1, 1), (1, 0, 1), (1, 2, 1), (1, 1, 0), (1, 1, 2)):
        valid &= pad[a:a + gz, b:b + gy, c:c + gx]
    return StrainField(F=F, strain=e, volumetric=np.linalg.det(F) - 1.0,
                       deviatoric=np.sqrt(2.0 / 3.0 * np.sum(dev * dev, axis=(-1, -2))), valid=valid,
                       positions_zyx_px=field.grid(field.positions_zyx_px))


@dataclass(frozen=True)
class RegionStats:
    """Statistics of one strain component over one region of nodes (dimensionless)."""

    region: str
    component: str
    n_nodes: int
    mean: float
    median: float
    std: float
    p05: float
    p95: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def regional_strain(strain: StrainField, regions: Mapping[str, np.ndarray], *,
                    components=("zz", "yy", "xx", "volumetric", "deviatoric")) -> list[RegionStats]:
    """Statistics of strain components per region.

    Parameters
    ----------
    strain : StrainField
    regions : mapping name -> boolean mask on the node grid ``(gz, gy, gx)``, or a
        callable taking node positions ``(gz, gy, gx, 3)`` (px) and returning such a mask.
        E.g. ``{"top": lambda p: p[..., 0] >= 50, "bottom": lambda p: p[..., 0] < 50}``.
    components : sequence of str
        See :meth:`StrainField.component`.

    Returns
    -------
    list of RegionStats
        One per (region, component); only ``valid`` nodes count.
    """
    out = []
    gshape = strain.valid.shape
    for name, sel in regions.items():
        m = sel(strain.positions_zyx_px) if callable(sel) else np.asarray(sel)
        if m.shape != gshape:
            raise InputError(f"region {name!r} has shape {m.shape}; it must be a mask on the node grid {gshape}")
        m = m.astype(bool) & strain.valid
        for comp in components:
            v = strain.component(comp)[m]
            if v.size == 0:
                out.append(RegionStats(name, comp, 0, *([float("nan")] * 5)))
                continue
            out.append(RegionStats(name, comp, int(v.size), float(v.mean()), float(np.median(v)), float(v.std()),
                                   float(np.percentile(v, 5)), float(np.percentile(v, 95))))
    return out


def strain_histogram(strain: StrainField, component: str = "zz", *, bins: int = 50, mask=None,
                     value_range=None) -> tuple[np.ndarray, np.ndarray]:
    """Histogram ``(counts (bins,), edges (bins + 1,))`` of a strain component over valid nodes."""
    v = strain.component(component)
    m = strain.valid if mask is None else (strain.valid & np.asarray(mask, bool))
    return np.histogram(v[m], bins=bins, range=value_range)
