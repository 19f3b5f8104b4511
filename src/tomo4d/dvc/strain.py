"""Strain from a displacement field on a regular node grid: finite-strain measures first.

The deformation gradient at each node is ``F = I + grad u`` with ``grad u`` from second-order
finite differences of the node displacements (central inside, one-sided second order at the grid
faces; first order when an axis has only 2 nodes), ``du_i / dX_j`` in px/px.  This is the default
(``gradient="nodes"``) rather than the per-node affine ``F`` that DVC also fits
(``phi[:, :3, :3]``, ``gradient="affine"``): one window's affine fit is noisy (its ``F_zz``
scatters by ~1e-2 on the phantom, see :mod:`tomo4d.dvc.correlate`) and is biased near interfaces,
whereas the node differences spread the displacement error (~0.03-0.06 px) over two node spacings
(e.g. 0.05 px / 2 x 8 px = 3e-3) and stay consistent with the displacements that composition,
residual maps and tracking use.  ``"affine"`` is the choice when nodes are too sparse for
differences (fewer than 2 per axis cannot be used at all) or to cross-check.

From ``F`` (see :mod:`tomo4d.dvc.finite` for definitions): volumetric strain ``det F - 1``,
Green-Lagrange ``E``, Hencky ``ln U``, principal stretches with directions, the von Mises
equivalent Hencky strain, and the small-strain tensor ``e`` (valid only for small strains: at the
10-60 % expansions of silicon anodes report Hencky or Green-Lagrange).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._array import read_only
from .._validate import check_int, check_number, show
from ..errors import FormatError, InputError
from ..io import atomic_output
from . import finite
from .field import DisplacementField, _fill_from_neighbours

__all__ = ["StrainField", "strain_field", "RegionStats", "regional_strain", "SlabMean", "slab_volume_mean",
           "strain_histogram",
           "DEFAULT_COMPONENTS", "SMALL_COMPONENTS", "VALIDATED_AXIAL_HENCKY", "beyond_validated_range"]

#: Components reported by default (regional tables, the CLI).
DEFAULT_COMPONENTS = ("hencky_zz", "volumetric")
#: Small-strain components, reported only on request.
SMALL_COMPONENTS = ("small_zz", "small_yy", "small_xx", "volumetric_small")
#: Axial Hencky strain up to which the DVC routes are validated against the phantom's truth (issue 15's
#: targets: mean strain within 0.02, median displacement error <= 0.3 px): met at T1 of the default
#: phantom (collector / separator side 0.07 / 0.11); beyond it the median displacement error exceeds its target
#: (T3-T5, ln U_zz 0.2-0.45: 0.43-0.65 px on the runner's LQ route, the side strains within about 0.02 since
#: session 24; benchmarks/RESULTS.md), so results there are flagged.
VALIDATED_AXIAL_HENCKY = 0.12

_AXES = {"z": 0, "y": 1, "x": 2}
_TENSORS = {"hencky": "hencky", "green": "green", "small": "strain", "F": "F"}
_SCALARS = ("volumetric", "volumetric_small", "deviatoric", "stretch_1", "stretch_2", "stretch_3")
_H5_FORMAT = "tomo4d.strain_field"


@dataclass(frozen=True, eq=False)
class StrainField:
    """Finite strain on the node grid of a field (all arrays ``(gz, gy, gx, ...)``, dimensionless).

    Build it with :func:`strain_field` or :meth:`from_deformation_gradient`; save/load ``.h5``,
    export ``.vtk``.  Component names for :meth:`component`: ``{hencky,green,small,F}_{ab}`` with
    ``a, b`` in ``z, y, x`` (e.g. ``hencky_zz``, ``green_zx``, ``F_zy``), ``volumetric``
    (``det F - 1``), ``volumetric_small`` (``tr e``), ``deviatoric``, ``stretch_1..3``; a bare
    ``ab`` (``zz``, ``yx``, ...) is the small-strain component, as in tomo4d <= 0.x tables.

    Attributes
    ----------
    F : (gz, gy, gx, 3, 3) float64
        Deformation gradient (reference -> deformed).
    hencky : (gz, gy, gx, 3, 3) float64
        Logarithmic strain ``ln U``; NaN where ``det F <= 0``.
    green : (gz, gy, gx, 3, 3) float64
        Green-Lagrange strain ``(F^T F - I) / 2``.
    strain : (gz, gy, gx, 3, 3) float64
        Small-strain tensor ``e = sym(F - I)``: valid only for small strains (a few %).
    volumetric : (gz, gy, gx) float64
        ``det F - 1`` (exact relative volume change).
    deviatoric : (gz, gy, gx) float64
        von Mises equivalent Hencky strain ``sqrt(2/3 dev(ln U) : dev(ln U))`` (equal to the
        small-strain one to first order).
    stretches : (gz, gy, gx, 3) float64
        Principal stretches ``lambda_1 >= lambda_2 >= lambda_3``.
    stretch_directions : (gz, gy, gx, 3, 3) float64
        ``[..., :, k]``: reference-frame (z, y, x) unit direction of ``lambda_k``.
    valid : (gz, gy, gx) bool
        Nodes whose ``F`` uses only usable nodes and has ``det F > 0``.
    positions_zyx_px : (gz, gy, gx, 3) float64
        Node positions in the reference, px.
    gradient : str
        How ``F`` was obtained: ``"nodes"`` (differences of node displacements) or ``"affine"``
        (each node's affine fit).
    """

    F: np.ndarray
    hencky: np.ndarray
    green: np.ndarray
    strain: np.ndarray
    volumetric: np.ndarray
    deviatoric: np.ndarray
    stretches: np.ndarray
    stretch_directions: np.ndarray
    valid: np.ndarray
    positions_zyx_px: np.ndarray
    gradient: str = "nodes"

    def __post_init__(self):  # frozen: no array of the result can be written (writeable ones are copied)
        for name in ("F", "hencky", "green", "strain", "volumetric", "deviatoric", "stretches", "stretch_directions",
                     "valid", "positions_zyx_px"):
            object.__setattr__(self, name, read_only(getattr(self, name)))

    @classmethod
    def from_deformation_gradient(cls, F, *, valid, positions_zyx_px, gradient: str = "nodes") -> StrainField:
        """All measures from ``F`` ``(gz, gy, gx, 3, 3)``; ``valid`` is and-ed with ``det F > 0``."""
        F = finite._as_F(F)
        if F.ndim != 5:
            raise InputError(f"F must be (gz, gy, gx, 3, 3) on a node grid, got {F.shape}")
        valid = np.asarray(valid, bool)
        pos = np.asarray(positions_zyx_px, np.float64)
        if valid.shape != F.shape[:3] or pos.shape != F.shape[:3] + (3,):
            raise InputError(f"valid {valid.shape} and positions_zyx_px {pos.shape} must match the grid "
                             f"{F.shape[:3]} of F")
        st = finite.principal_stretches(F)
        h = finite.hencky(F, stretches=st)
        vol = finite.volumetric_strain(F)
        fresh = {k: read_only(v, copy=False) for k, v in (  # computed here: sealed without a second copy
            ("hencky", h), ("green", finite.green_lagrange(F)), ("strain", finite.small_strain(F)), ("volumetric", vol),
            ("deviatoric", finite.equivalent_strain(h)), ("stretches", st[0]), ("stretch_directions", st[1]),
            ("valid", valid & np.isfinite(vol) & (vol > -1.0)))}
        return cls(F=F, positions_zyx_px=pos, gradient=str(gradient), **fresh)

    # -- components -----------------------------------------------------------------------------
    @property
    def zz(self) -> np.ndarray:
        """Small-strain ``e_zz`` (valid for small strains only; see ``component("hencky_zz")``)."""
        return self.strain[..., 0, 0]

    @property
    def yy(self) -> np.ndarray:
        """Small-strain ``e_yy``."""
        return self.strain[..., 1, 1]

    @property
    def xx(self) -> np.ndarray:
        """Small-strain ``e_xx``."""
        return self.strain[..., 2, 2]

    @property
    def volumetric_small(self) -> np.ndarray:
        """``tr e`` (small-strain volumetric strain; ``det F - 1`` is :attr:`volumetric`)."""
        return np.trace(self.strain, axis1=-2, axis2=-1)

    @staticmethod
    def component_names() -> tuple[str, ...]:
        """Every accepted component name (bare ``ab`` = ``small_ab`` excepted)."""
        pairs = [a + b for a in "zyx" for b in "zyx"]
        return tuple(f"{k}_{p}" for k in _TENSORS for p in pairs) + _SCALARS

    def component(self, name: str) -> np.ndarray:
        """One scalar component on the grid ``(gz, gy, gx)``; see the class docstring for names."""
        name = str(name)
        if name in ("volumetric", "deviatoric", "volumetric_small"):
            return getattr(self, name)
        if name in ("stretch_1", "stretch_2", "stretch_3"):
            return self.stretches[..., int(name[-1]) - 1]
        kind, _, ab = name.rpartition("_")
        if not kind and len(ab) == 2:
            kind = "small"
        if kind in _TENSORS and len(ab) == 2 and all(c in _AXES for c in ab):
            return getattr(self, _TENSORS[kind])[..., _AXES[ab[0]], _AXES[ab[1]]]
        raise InputError(f"strain component {name!r} is not known; use e.g. hencky_zz, green_zz, small_zz, F_zz, "
                         "volumetric (det F - 1), volumetric_small, deviatoric or stretch_1/2/3")

    # -- files ----------------------------------------------------------------------------------
    def save(self, path, *, overwrite: bool = False) -> Path:
        """Write an HDF5 file atomically: every array attribute as a dataset (``/F``, ``/hencky``,
        ``/green``, ``/strain`` (small), ``/volumetric``, ``/deviatoric``, ``/stretches``,
        ``/stretch_directions``, ``/valid``, ``/positions_zyx_px``), attributes ``format =
        "tomo4d.strain_field"``, ``version = 2``, ``gradient``."""
        import h5py


        with atomic_output(path, overwrite=overwrite) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs["format"] = _H5_FORMAT
                f.attrs["version"] = 2
                f.attrs["gradient"] = self.gradient
                for k in ("F", "hencky", "green", "strain", "volumetric", "deviatoric", "stretches",
                          "stretch_directions", "valid", "positions_zyx_px"):
                    f[k] = getattr(self, k)
        return Path(path)

    @classmethod
    def load(cls, path) -> StrainField:
        """Read a file written by :meth:`save` (version 1 files too: the measures are recomputed from ``/F``)."""
        import h5py

        path = Path(path)
        if not path.exists():
            raise InputError(f"strain file {str(path)!r} does not exist; check the path")
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != _H5_FORMAT:
                    raise FormatError(f"{str(path)!r} is HDF5 but not a tomo4d strain field "
                                      f"(attribute format != {_H5_FORMAT!r})")
                F, valid, pos = f["F"][()], f["valid"][()], f["positions_zyx_px"][()]
                gradient = str(f.attrs.get("gradient", "nodes"))
        except OSError as exc:
            raise FormatError(f"cannot read {str(path)!r} as HDF5: {exc}") from None
        return cls.from_deformation_gradient(F, valid=valid, positions_zyx_px=pos, gradient=gradient)

    def to_vtk(self, path, *, components: Sequence[str] = ("hencky_zz", "hencky_yy", "hencky_xx", "volumetric",
                                                           "deviatoric", "stretch_1", "stretch_3"),
               overwrite: bool = False) -> Path:
        """Legacy VTK structured points (ParaView): ``components`` as scalars (NaN written as 0),
        ``valid`` (0/1) and the direction of ``lambda_1`` as vectors, in (x, y, z) order, px."""

        values = {str(c): self.component(c) for c in components}
        gz, gy, gx = self.valid.shape
        p = self.positions_zyx_px
        o = p[0, 0, 0]
        step = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
        sp = [float(p[step[a]][a] - o[a]) if n > 1 else 1.0 for a, n in enumerate((gz, gy, gx))]
        lines = ["# vtk DataFile Version 2.0", f"tomo4d strain field (F from {self.gradient})", "ASCII",
                 "DATASET STRUCTURED_POINTS", f"DIMENSIONS {gx} {gy} {gz}",
                 f"ORIGIN {o[2]:.6f} {o[1]:.6f} {o[0]:.6f}", f"SPACING {sp[2]} {sp[1]} {sp[0]}",
                 f"POINT_DATA {self.valid.size}", "VECTORS stretch_1_direction double"]
        d = np.nan_to_num(self.stretch_directions[..., :, 0].reshape(-1, 3), nan=0.0)
        lines += [f"{a[2]:.6g} {a[1]:.6g} {a[0]:.6g}" for a in d]
        for name, v in {"valid": self.valid.astype(float), **values}.items():
            lines += [f"SCALARS {name} double 1", "LOOKUP_TABLE default"]
            lines += [f"{a:.6g}" for a in np.nan_to_num(np.ravel(v), nan=0.0)]
        with atomic_output(path, overwrite=overwrite) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
        return Path(path)


def strain_field(field: DisplacementField, *, gradient: str = "nodes") -> StrainField:
    """Deformation gradient and finite strains of a regular-grid field.

    Parameters
    ----------
    field : DisplacementField
        Needs ``grid_shape`` with at least 2 nodes along every axis.  Unusable
        nodes are filled from neighbours first and flagged in ``valid``.
    gradient : {"nodes", "affine"}
        ``"nodes"`` (default): ``F = I + grad u`` from second-order differences of the node
        displacements; a node is valid when it and its six axis neighbours are usable.
        ``"affine"``: each node's own affine fit ``phi[:, :3, :3]`` (noisier; see the module
        docstring); a node is valid when it is usable.

    Returns
    -------
    StrainField
    """

    if not isinstance(field, DisplacementField):
        raise InputError("strain_field needs a DisplacementField")
    if gradient not in ("nodes", "affine"):
        raise InputError(f"gradient={gradient!r} is not known; use 'nodes' (differences of node displacements) "
                         "or 'affine' (each node's affine fit)")
    if field.grid_shape is None or min(field.grid_shape) < 2:
        raise InputError(f"strain needs a regular grid with >= 2 nodes per axis, got grid_shape="
                         f"{field.grid_shape}; use a smaller node spacing")
    ok = field.usable
    if not ok.any():
        raise InputError("the field has no usable (converged or interpolated) node")
    gshape = tuple(field.grid_shape)
    okg = field.grid(ok)
    if gradient == "affine":
        f = _fill_from_neighbours(field.positions_zyx_px, field.phi[:, :3, :3].reshape(-1, 9), ok)
        return StrainField.from_deformation_gradient(field.grid(f).reshape(gshape + (3, 3)), valid=okg,
                                                     positions_zyx_px=field.grid(field.positions_zyx_px),
                                                     gradient="affine")
    ug = field.grid(_fill_from_neighbours(field.positions_zyx_px, field.displacement_zyx_px, ok))
    sp = [float(s) for s in field.node_spacing_px]
    grads = np.empty(gshape + (3, 3))
    for i in range(3):
        g = np.gradient(ug[..., i], *sp, edge_order=2 if min(gshape) >= 3 else 1)
        for j in range(3):
            grads[..., i, j] = g[j]
    # a node's gradient is trustworthy if it and its axis neighbours are usable
    pad = np.pad(okg, 1, mode="edge")
    gz, gy, gx = gshape
    valid = okg.copy()
    for a, b, c in ((0, 1, 1), (2, 1, 1), (1, 0, 1), (1, 2, 1), (1, 1, 0), (1, 1, 2)):
        valid &= pad[a:a + gz, b:b + gy, c:c + gx]
    return StrainField.from_deformation_gradient(grads + np.eye(3), valid=valid,
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
                    components: Sequence[str] = DEFAULT_COMPONENTS) -> list[RegionStats]:
    """Statistics of strain components per region.

    Parameters
    ----------
    strain : StrainField
    regions : mapping name -> boolean mask on the node grid ``(gz, gy, gx)``, or a
        callable taking node positions ``(gz, gy, gx, 3)`` (px) and returning such a mask.
        E.g. ``{"top": lambda p: p[..., 0] >= 50, "bottom": lambda p: p[..., 0] < 50}``.
    components : sequence of str
        See :meth:`StrainField.component`; default Hencky ``zz`` and ``det F - 1``
        (:data:`SMALL_COMPONENTS` on request).

    Returns
    -------
    list of RegionStats
        One per (region, component); only ``valid`` nodes count.
    """
    out = []
    gshape = strain.valid.shape
    values = {c: strain.component(c) for c in components}
    for name, sel in regions.items():
        m = sel(strain.positions_zyx_px) if callable(sel) else np.asarray(sel)
        if m.shape != gshape:
            raise InputError(f"region {name!r} has shape {m.shape}; it must be a mask on the node grid {gshape}")
        m = m.astype(bool) & strain.valid
        for comp, full in values.items():
            v = full[m]
            if v.size == 0:
                out.append(RegionStats(name, comp, 0, *([float("nan")] * 5)))
                continue
            out.append(RegionStats(name, comp, int(v.size), float(v.mean()), float(np.median(v)), float(v.std()),
                                   float(np.percentile(v, 5)), float(np.percentile(v, 95))))
    return out


@dataclass(frozen=True)
class SlabMean:
    """Volume averages of strain components over a z slab (:func:`slab_volume_mean`).

    Attributes
    ----------
    components : tuple of str
    values : tuple of float
        The volume mean of each component (NaN when no sample point is covered).
    n_points : int
        Sample points of the slab inside the node grid.
    covered : float
        Fraction of them whose eight surrounding nodes are all valid (the others are left out).
    """

    components: tuple[str, ...]
    values: tuple[float, ...]
    n_points: int
    covered: float

    def value(self, component: str) -> float:
        if component not in self.components:
            raise InputError(f"component {component!r} was not computed; use one of {', '.join(self.components)}")
        return self.values[self.components.index(component)]


def _midpoints(lo: float, hi: float, step: float) -> np.ndarray:
    """Centres of the equal cells (at most ``step`` wide) that tile ``[lo, hi]`` (its midpoint rule)."""
    n = max(int(np.ceil((hi - lo) / step - 1e-9)), 1)
    return lo + (np.arange(n) + 0.5) * (hi - lo) / n


def _slab_points(pos: np.ndarray, lower: float, upper: float, max_points: int):
    """Sample points of the slab inside the node grid ``pos`` (gz, gy, gx, 3) as grid coordinates (N, 3): z every
    1/8 node spacing, y and x every 1/2 (coarser if more than ``max_points``); and the grid's spacing (3,)."""
    gshape = pos.shape[:3]
    org, last = pos[0, 0, 0], pos[-1, -1, -1]
    sp = np.array([(last[a] - org[a]) / max(gshape[a] - 1, 1) for a in range(3)])
    sp[sp <= 0] = 1.0
    z0, z1 = max(lower, org[0]), min(upper, last[0])
    if z1 <= z0:
        return np.zeros((0, 3)), sp
    zs = _midpoints(z0, z1, sp[0] / 8)
    lat = [sp[a] / 2 for a in (1, 2)]
    n_lat = np.prod([np.ceil((last[a] - org[a]) / lat[a - 1]) for a in (1, 2)])
    if len(zs) * n_lat > max_points:
        lat = [v * np.sqrt(len(zs) * n_lat / max_points) for v in lat]
    ys, xs = (_midpoints(org[a], last[a], lat[a - 1]) for a in (1, 2))
    pts = np.stack(np.meshgrid(zs, ys, xs, indexing="ij"), -1).reshape(-1, 3)
    return (pts - org) / sp, sp


def _interpolant_gradient(u: np.ndarray, ok: np.ndarray, idx: np.ndarray, sp: np.ndarray):
    """``I + grad u`` of the trilinear interpolant of node displacements ``u`` (gz, gy, gx, 3) at grid coordinates
    ``idx`` (N, 3), and whether the point's eight nodes are all usable (``ok``)."""
    gs = np.asarray(u.shape[:3])
    i0 = np.clip(np.floor(idx).astype(np.int64), 0, np.maximum(gs - 2, 0))
    t = idx - i0
    G = np.zeros((len(idx), 3, 3))
    good = np.ones(len(idx), bool)
    for corner in np.ndindex(2, 2, 2):
        k = tuple(np.minimum(i0[:, a] + corner[a], gs[a] - 1) for a in range(3))
        good &= ok[k]
        w = [t[:, a] if corner[a] else 1 - t[:, a] for a in range(3)]
        d = [(1.0 if corner[a] else -1.0) / sp[a] for a in range(3)]
        v = u[k]
        G[:, :, 0] += v * (d[0] * w[1] * w[2])[:, None]
        G[:, :, 1] += v * (w[0] * d[1] * w[2])[:, None]
        G[:, :, 2] += v * (w[0] * w[1] * d[2])[:, None]
    return G + np.eye(3), good


def slab_volume_mean(field, lower_z_px: float, upper_z_px: float, *, components: Sequence[str] = DEFAULT_COMPONENTS,
                     max_points: int = 200_000) -> SlabMean:
    """Volume mean of strain components over the slab ``lower_z_px <= z < upper_z_px`` of the reference.

    Each component is computed from ``F`` at points filling the slab (z every 1/8 node spacing, y and x every
    1/2, coarser laterally beyond ``max_points``) and averaged: the mean of what the slab's material did, the
    way a true field is averaged over a layer.  The mean over the nodes whose position falls in the slab is
    not that: it leaves out the strain next to the slab's faces, which near an interface is far from the
    slab's mean (on the phantom at T3 the exact profile runs 0.18 -> 0.08 -> 0.36 -> 0.20 -> -0.05 through
    the anode).

    Parameters
    ----------
    field : DisplacementField or StrainField
        A :class:`DisplacementField` on a node grid: ``F = I + grad u`` of the trilinear interpolant of its
        usable nodes (the field's own representation, as :meth:`DisplacementField.dense_displacement` and
        :func:`compose_fields` use it); the slab's mean axial stretch is then that of its faces' motion.  A
        :class:`StrainField`: its node ``F`` (central differences) interpolated trilinearly, which spreads an
        interface's kink over two node spacings (the phantom's exact field on a 4 px grid, T1-T3: collector side
        0.006-0.009 below the truth this way, 0.004-0.006 from the displacements).
    lower_z_px, upper_z_px : float
        The slab's faces in the reference, px (clipped to the node grid).
    components : sequence of str
        See :meth:`StrainField.component`.
    max_points : int
        Budget of sample points.

    Returns
    -------
    SlabMean
        Points whose eight nodes are not all usable (valid) are left out; ``covered`` says how many were kept.
    """
    from scipy import ndimage

    lower_z_px, upper_z_px = check_number("lower_z_px", lower_z_px), check_number("upper_z_px", upper_z_px)
    if not upper_z_px > lower_z_px:
        raise InputError(f"upper_z_px={show(upper_z_px)} must be above lower_z_px={show(lower_z_px)}")
    comps = tuple(dict.fromkeys(str(c) for c in components))
    if isinstance(field, DisplacementField):
        if field.grid_shape is None or min(field.grid_shape) < 2:
            raise InputError(f"slab_volume_mean needs a regular grid with >= 2 nodes per axis, got grid_shape="
                             f"{field.grid_shape}")
        pos = field.grid(field.positions_zyx_px)
    elif isinstance(field, StrainField):
        pos = field.positions_zyx_px
    else:
        raise InputError(f"field is a {type(field).__name__}; give a tomo4d.dvc.DisplacementField or StrainField")
    idx, sp = _slab_points(pos, lower_z_px, upper_z_px, check_int("max_points", max_points, minimum=1))
    nan = (float("nan"),) * len(comps)
    if not len(idx):
        return SlabMean(comps, nan, 0, 0.0)
    if isinstance(field, DisplacementField):
        Fp, keep = _interpolant_gradient(field.grid(field.displacement_zyx_px), field.grid(field.usable), idx, sp)
    else:
        F = np.where(field.valid[..., None, None], field.F, np.nan)
        Fp = np.stack([ndimage.map_coordinates(F[..., i, j], idx.T, order=1, mode="nearest")
                       for i in range(3) for j in range(3)], -1).reshape(-1, 3, 3)
        keep = np.all(np.isfinite(Fp), axis=(1, 2))
    if not keep.any():
        return SlabMean(comps, nan, len(idx), 0.0)
    Fk = Fp[keep].reshape(-1, 1, 1, 3, 3)
    st = StrainField.from_deformation_gradient(Fk, valid=np.ones(Fk.shape[:3], bool),
                                               positions_zyx_px=np.zeros(Fk.shape[:3] + (3,)))
    vals = []
    for c in comps:
        v = st.component(c)[st.valid]
        vals.append(float(v.mean()) if v.size else float("nan"))
    return SlabMean(comps, tuple(vals), len(idx), float(keep.mean()))


def strain_histogram(strain: StrainField, component: str = "hencky_zz", *, bins: int = 50, mask=None,
                     value_range=None) -> tuple[np.ndarray, np.ndarray]:
    """Histogram ``(counts (bins,), edges (bins + 1,))`` of a strain component over valid nodes."""
    v = strain.component(component)
    m = strain.valid if mask is None else (strain.valid & np.asarray(mask, bool))
    return np.histogram(v[m], bins=bins, range=value_range)


def beyond_validated_range(strain: StrainField, *, limit: float = VALIDATED_AXIAL_HENCKY) -> bool:
    """Whether the 90th percentile of ``|ln U_zz|`` over the valid nodes exceeds ``limit``: the field's
    strain lies where the DVC's accuracy has not been validated (:data:`VALIDATED_AXIAL_HENCKY`), so a
    report must say its numbers may be biased.  False when no node is valid."""
    vals = np.abs(strain.component("hencky_zz")[strain.valid])
    return bool(vals.size) and float(np.percentile(vals, 90)) > limit
