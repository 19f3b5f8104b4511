"""Displacement fields measured on node grids, with their I/O.

(One module of ~550 lines on purpose: the field, its statuses and its three file formats change
together.)

A field is a set of nodes: positions ``(N, 3)`` in reference voxel coordinates
(px, z, y, x), one Phi per node ``(N, 4, 4)`` acting about the node position
(``x' = F (x - p) + p + t``, mapping reference to deformed coordinates, so the
node displacement is ``t``) and a per-node :class:`NodeStatus`.

File formats (chosen by suffix in :meth:`DisplacementField.save`):

``.h5`` / ``.hdf5`` (native, lossless)
    Group ``/`` with attribute ``format = "tomo4d.displacement_field"``,
    ``version = 1``, ``grid_shape`` (3 ints, or ``[0, 0, 0]`` when the nodes
    are not a regular grid), ``node_spacing_px``, ``half_window_px``,
    ``voxel_size_nm`` (3 floats each), ``notes`` (JSON string).  Datasets:
    ``positions_zyx_px`` (N, 3) float64, ``phi`` (N, 4, 4) float64,
    ``status`` (N,) int8 (values of :class:`NodeStatus`), ``iterations`` (N,)
    int32, ``residual`` (N,) float32.  Nodes of a regular grid are stored in
    C order of ``grid_shape`` (z slowest).
``.vtk`` (export)
    Legacy ASCII VTK ``STRUCTURED_POINTS`` (regular grids) for ParaView, with
    point data ``displacement_px`` (vectors, written x, y, z as VTK expects),
    ``status`` and any extra scalars given to :meth:`DisplacementField.to_vtk`;
    origin and spacing in px.
``.tsv`` (SPAM interoperability)
    SPAM's tab-separated layout: ``NodeNumber Zpos Ypos Xpos Fzz Fzy Fzx Zdisp
    Fyz Fyy Fyx Ydisp Fxz Fxy Fxx Xdisp pixelSearchCC returnStatus error
    deltaPhiNorm iterations``; ``returnStatus`` 2 = converged, 1 = not
    converged, -3 = diverged, 0 = skipped (mask/texture), 3 = interpolated
    (read back exactly; SPAM treats >= 1 as usable), -1 = outlier, outside
    the second field of a composition or out of view (read back as diverged).
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .._array import read_only
from .._validate import check_int, show
from ..errors import FormatError, InputError
from ..io import atomic_output

log = logging.getLogger(__name__)

__all__ = ["NodeStatus", "DisplacementField", "node_grid"]


class NodeStatus(enum.IntEnum):
    """What happened at a node.

    CONVERGED: Gauss-Newton converged (a measurement).
    NOT_CONVERGED: hit ``max_iterations``.
    DIVERGED: left the search region, lost overlap or collapsed.
    OUTSIDE_MASK: skipped, too few window voxels inside the mask.
    LOW_TEXTURE: skipped, too little grey-level variation to correlate.
    OUTLIER: converged but inconsistent with its neighbours.
    INTERPOLATED: value replaced by interpolation from converged neighbours.
    OUTSIDE_FIELD: composition moved the node outside the second field.
    OUT_OF_VIEW: the node's warped window left the deformed volume (more than
        ``CorrelationOptions.out_of_view_fraction`` of its voxels outside, e.g.
        the sample swelled out of the scanned region): only part of the window
        was measured, so the node is neither used nor replaced by interpolation.

    The values are those stored in files and written by the correlation
    kernels (which take their codes from here).
    """

    CONVERGED = 0
    NOT_CONVERGED = 1
    DIVERGED = 2
    OUTSIDE_MASK = 3
    LOW_TEXTURE = 4
    OUTLIER = 5
    INTERPOLATED = 6
    OUTSIDE_FIELD = 7
    OUT_OF_VIEW = 8


_SPAM_STATUS = {NodeStatus.CONVERGED: 2, NodeStatus.NOT_CONVERGED: 1, NodeStatus.DIVERGED: -3,
                NodeStatus.OUTSIDE_MASK: 0, NodeStatus.LOW_TEXTURE: 0, NodeStatus.OUTLIER: -1,
                NodeStatus.INTERPOLATED: 3, NodeStatus.OUTSIDE_FIELD: -1,
                NodeStatus.OUT_OF_VIEW: -1}
_FROM_SPAM = {2: NodeStatus.CONVERGED, 1: NodeStatus.NOT_CONVERGED, 3: NodeStatus.INTERPOLATED,
              0: NodeStatus.OUTSIDE_MASK}

class FrozenNotes(dict):
    """The ``notes`` of a frozen result: a read-only ``dict`` (JSON-serialisable, picklable).

    Results are never modified after construction: build a new dict and pass it
    to ``with_(notes={**field.notes, "key": value})``.
    """

    def _refuse(self, *args, **kwargs):
        raise TypeError("notes of a result are read-only; build a new dict and pass it to "
                        "with_(notes={**field.notes, key: value})")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore

    def __reduce__(self):
        return type(self), (dict(self),)

    def copy(self) -> dict:
        return dict(self)


#: statuses whose Phi can be trusted (measured or interpolated)
USABLE = (NodeStatus.CONVERGED, NodeStatus.INTERPOLATED)


def node_grid(shape, *, node_spacing, half_window) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Regular grid of nodes whose windows lie inside a volume of ``shape``.

    Parameters
    ----------
    shape : (3,) int
        Volume shape (z, y, x).
    node_spacing : int or (3,) int
        Distance between nodes, px.
    half_window : int or (3,) int
        Half size of the correlation window, px (window ``2 hw + 1`` voxels).

    Returns
    -------
    positions : (N, 3) int64
        Node positions (z, y, x), px, C order of the grid (z slowest).
    grid_shape : (3,) int
        Number of nodes along (z, y, x).
    """
    sp = _triple(node_spacing, "node_spacing")
    hw = _triple(half_window, "half_window", allow_zero=False)
    axes = []
    for n, s, h in zip(shape, sp, hw):
        avail = n - 1 - 2 * h
        if avail < 0:
            raise InputError(f"half_window={h} needs windows of {2 * h + 1} voxels but the volume has only "
                             f"{n} along one axis (shape {tuple(shape)}); use a smaller half_window")
        k = avail // s + 1
        start = h + (avail - (k - 1) * s) // 2
        axes.append(start + s * np.arange(k))
    g = np.meshgrid(*axes, indexing="ij")
    pos = np.stack([a.ravel() for a in g], axis=1).astype(np.int64)
    return pos, tuple(len(a) for a in axes)


def _triple(v, name, *, allow_zero=False) -> tuple[int, int, int]:
    """One integer or three (z, y, x), each >= 1 (>= 0 with ``allow_zero``); ``8.7`` or ``"8"`` are refused."""
    lo = 0 if allow_zero else 1
    if isinstance(v, (str, bytes)) or np.ndim(v) == 0:
        return (check_int(name, v, minimum=lo),) * 3
    vals = list(v)
    if len(vals) != 3:
        raise InputError(f"{name}={show(v)} has {len(vals)} values; give one integer or three (z, y, x)")
    return tuple(check_int(f"{name}[{i}]", a, minimum=lo) for i, a in enumerate(vals))  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class DisplacementField:
    """Per-node deformation functions measured by local DVC.

    Attributes
    ----------
    positions_zyx_px : (N, 3) float64
        Node positions in the reference volume, px.
    phi : (N, 4, 4) float64
        Phi of each node about its position (reference -> deformed).
    status : (N,) int8
        :class:`NodeStatus` of each node.
    grid_shape : (3,) int or None
        Nodes along (z, y, x) when they form a regular grid (C order).
    node_spacing_px, half_window_px : (3,) int
        Grid spacing and correlation half-window, px.
    voxel_size_nm : (3,) float
        Voxel size of the reference, nm.
    iterations : (N,) int32
        Gauss-Newton iterations per node.
    residual : (N,) float32
        RMS grey-level residual per node / std of the reference window.
    notes : dict
        JSON-serialisable provenance (counts of replaced nodes, timings, ...);
        read-only (:class:`FrozenNotes`): pass new notes to :meth:`with_`.
    """

    positions_zyx_px: np.ndarray
    phi: np.ndarray
    status: np.ndarray
    grid_shape: tuple[int, int, int] | None = None
    node_spacing_px: tuple[int, int, int] = (0, 0, 0)
    half_window_px: tuple[int, int, int] = (0, 0, 0)
    voxel_size_nm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    iterations: np.ndarray | None = None
    residual: np.ndarray | None = None
    notes: dict = field(default_factory=dict)

    def __post_init__(self):
        pos = read_only(self.positions_zyx_px, dtype=np.float64)  # frozen: no array of a field can be written
        phi = read_only(self.phi, dtype=np.float64)
        n = pos.shape[0]
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise InputError(f"positions_zyx_px has shape {pos.shape}; need (N, 3)")
        if phi.shape != (n, 4, 4):
            raise InputError(f"phi has shape {phi.shape}; need (N, 4, 4) with N = {n}")
        st = read_only(np.asarray(self.status, dtype=np.int8).reshape(-1))
        if st.shape != (n,):
            raise InputError(f"status has shape {st.shape}; need ({n},)")
        gs = None if self.grid_shape is None or int(np.prod(self.grid_shape)) == 0 else tuple(
            int(g) for g in self.grid_shape)
        if gs is not None and int(np.prod(gs)) != n:
            raise InputError(f"grid_shape={gs} does not hold {n} nodes")
        it = read_only(np.zeros(n, np.int32) if self.iterations is None else self.iterations, dtype=np.int32)
        res = read_only(np.full(n, np.nan, np.float32) if self.residual is None else self.residual, dtype=np.float32)
        object.__setattr__(self, "positions_zyx_px", pos)
        object.__setattr__(self, "phi", phi)
        object.__setattr__(self, "status", st)
        object.__setattr__(self, "grid_shape", gs)
        object.__setattr__(self, "node_spacing_px", tuple(int(v) for v in self.node_spacing_px))
        object.__setattr__(self, "half_window_px", tuple(int(v) for v in self.half_window_px))
        object.__setattr__(self, "voxel_size_nm", tuple(float(v) for v in self.voxel_size_nm))
        object.__setattr__(self, "iterations", it)
        object.__setattr__(self, "residual", res)
        object.__setattr__(self, "notes", FrozenNotes(self.notes))

    # -- views ---------------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        return int(self.positions_zyx_px.shape[0])

    @property
    def displacement_zyx_px(self) -> np.ndarray:
        """Node displacements ``(N, 3)``, px (translation part of each Phi)."""
        return self.phi[:, :3, 3].copy()

    @property
    def F(self) -> np.ndarray:
        """Per-node deformation gradients ``(N, 3, 3)`` from the local affine fit."""
        return self.phi[:, :3, :3].copy()

    @property
    def usable(self) -> np.ndarray:
        """Boolean ``(N,)``: converged or interpolated nodes."""
        return np.isin(self.status, [int(s) for s in USABLE])

    @property
    def converged(self) -> np.ndarray:
        """Boolean ``(N,)``: nodes measured by a converged correlation."""
        return self.status == NodeStatus.CONVERGED

    @property
    def volume_shape_zyx(self) -> tuple[int, int, int] | None:
        """Shape of the reference volume the field was measured on (``None`` when not recorded)."""
        v = self.notes.get("volume_shape_zyx")
        return None if v is None else tuple(int(a) for a in v)

    def check_volume_shape(self, shape, *, names: str = "the volumes") -> None:
        """Refuse volumes of ``shape`` that are not those this field was measured on.

        With the recorded :attr:`volume_shape_zyx` the shapes must be equal; without it (older or
        foreign fields) every node and its window must lie inside the volume.
        """
        shape = tuple(int(s) for s in shape)
        known = self.volume_shape_zyx
        if known is not None:
            if known != shape:
                raise InputError(f"the displacement field was measured on volumes of shape {known} but {names} "
                                 f"have shape {shape}; give the volumes the field was computed from (or "
                                 "correlate these volumes)")
            return
        if self.n_nodes == 0:
            return
        hw = np.asarray(self.half_window_px, float)
        lo = self.positions_zyx_px.min(0) - hw
        hi = self.positions_zyx_px.max(0) + hw
        if np.any(lo < 0) or np.any(hi > np.asarray(shape) - 1):
            raise InputError(f"the displacement field's nodes and windows span z, y, x "
                             f"{show([float(v) for v in lo])} .. {show([float(v) for v in hi])} px, beyond "
                             f"{names} of shape {shape}; give the volumes the field was computed from (or "
                             "correlate these volumes)")

    def status_counts(self) -> dict[str, int]:
        """Number of nodes per status name (only statuses present)."""
        vals, counts = np.unique(self.status, return_counts=True)
        return {NodeStatus(int(v)).name.lower(): int(c) for v, c in zip(vals, counts)}

    def grid(self, values: np.ndarray) -> np.ndarray:
        """Reshape per-node ``values`` ``(N, ...)`` onto the grid ``(gz, gy, gx, ...)``."""
        if self.grid_shape is None:
            raise InputError("this field is not on a regular grid (grid_shape is None)")
        v = np.asarray(values)
        return v.reshape(tuple(self.grid_shape) + v.shape[1:])

    @property
    def grid_origin_px(self) -> np.ndarray:
        """Position of the first node (z, y, x), px."""
        return self.positions_zyx_px[0].copy()

    def with_(self, **changes) -> DisplacementField:
        """A copy with some attributes replaced."""
        return replace(self, **changes)

    def summary(self) -> dict:
        """JSON-serialisable summary: node counts and displacement statistics (px)."""
        u = self.displacement_zyx_px[self.usable]
        d = {"n_nodes": self.n_nodes, "grid_shape": list(self.grid_shape) if self.grid_shape else None,
             "node_spacing_px": list(self.node_spacing_px), "half_window_px": list(self.half_window_px),
             "status_counts": self.status_counts()}
        if len(u):
            d["displacement_mean_zyx_px"] = u.mean(0).tolist()
            d["displacement_max_abs_px"] = float(np.abs(u).max())
        d.update({k: v for k, v in self.notes.items() if k in ("replaced", "outliers", "seconds", "nodes_per_second",
                                                               "failed_fraction", "out_of_view")})
        return d

    # -- interpolation ---------------------------------------------------------------
    def interpolate(self, points_zyx_px, *, order: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """Displacement ``(M, 3)`` px and F ``(M, 3, 3)`` at arbitrary reference points.

        Regular grids use spline interpolation of order ``order`` (linear
        extrapolation beyond the outer nodes); unusable nodes are first filled
        from usable ones.  Scattered nodes and grids of one node along an axis
        use inverse-distance weighting of the nodes' displacements, each
        carried to the point by the node's own F (exact for an affine field).
        """
        from scipy import ndimage

        pts = np.asarray(points_zyx_px, dtype=np.float64).reshape(-1, 3)
        vals = self.phi[:, :3, :].reshape(self.n_nodes, 12)
        ok = self.usable
        if not ok.any():
            raise InputError("the field has no converged or interpolated node to interpolate from")
        vals = _fill_from_neighbours(self.positions_zyx_px, vals, ok)
        if self.grid_shape is None or min(self.grid_shape) < 2:  # scattered, or no spline along an axis
            out = _idw_first_order(self.positions_zyx_px[ok], vals[ok], pts)
        else:
            g = vals.reshape(tuple(self.grid_shape) + (12,))
            pad = 8
            g = np.pad(g, [(pad, pad)] * 3 + [(0, 0)], mode="reflect", reflect_type="odd")
            idx = (pts - self.grid_origin_px) / np.asarray(self.node_spacing_px, float) + pad
            o = order if min(self.grid_shape) >= 4 else 1
            out = np.stack([ndimage.map_coordinates(g[..., k], idx.T, order=o, mode="nearest")
                            for k in range(12)], axis=1)
        out = out.reshape(-1, 3, 4)
        return out[:, :, 3].copy(), out[:, :, :3].copy()

    def dense_displacement(self, shape, *, order: int = 3, z_range: tuple[int, int] | None = None) -> np.ndarray:
        """Displacement at every voxel of a volume of ``shape``: ``(3, z, y, x)`` float32, px.

        ``z_range=(start, stop)`` restricts the result to those slices (for
        slab-wise processing of large volumes).
        """
        from scipy import ndimage

        shape = tuple(int(s) for s in shape)
        if self.grid_shape is None:
            raise InputError("dense_displacement needs a field on a regular grid")
        if not self.usable.any():
            raise InputError(f"the field has no usable node (statuses: {self.status_counts()}); a displacement at "
                             "every voxel cannot be interpolated from it: correlate again (initial guess, a "
                             "pyramid, larger windows) or use a field with measured nodes")
        u = _fill_from_neighbours(self.positions_zyx_px, self.displacement_zyx_px, self.usable)
        g = u.reshape(tuple(self.grid_shape) + (3,))
        pad = 8
        g = np.pad(g, [(pad, pad)] * 3 + [(0, 0)], mode="reflect", reflect_type="odd")
        o = order if min(self.grid_shape) >= 4 else 1
        z0, z1 = (0, shape[0]) if z_range is None else (int(z_range[0]), int(z_range[1]))
        ranges = [np.arange(z0, z1), np.arange(shape[1]), np.arange(shape[2])]
        axes = [(r - self.grid_origin_px[i]) / self.node_spacing_px[i] + pad for i, r in enumerate(ranges)]
        coords = np.stack(np.meshgrid(*axes, indexing="ij"))
        out = np.empty((3, z1 - z0) + shape[1:], np.float32)
        for k in range(3):
            out[k] = ndimage.map_coordinates(g[..., k], coords, order=o, mode="nearest")
        return out

    # -- I/O ---------------------------------------------------------------------------
    def save(self, path, *, overwrite: bool = False, inputs=()) -> Path:
        """Write to ``.h5``/``.hdf5`` (native), ``.vtk`` (ParaView) or ``.tsv`` (SPAM), atomically."""

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".h5", ".hdf5", ".vtk", ".tsv"):
            raise InputError(f"cannot write a field to {str(path)!r}: use .h5 (native), .vtk (ParaView) or "
                             ".tsv (SPAM)")
        with atomic_output(path, overwrite=overwrite, inputs=inputs) as tmp:
            if suffix in (".h5", ".hdf5"):
                self._write_h5(tmp)
            elif suffix == ".vtk":
                tmp.write_text(self._vtk_text())
            else:
                tmp.write_text(self._tsv_text())
        return path

    def to_vtk(self, path, *, scalars: dict | None = None, overwrite: bool = False) -> Path:
        """Export as legacy VTK structured points, with extra per-node ``scalars`` ``{name: (N,)}``."""

        with atomic_output(path, overwrite=overwrite) as tmp:
            tmp.write_text(self._vtk_text(scalars))
        return Path(path)

    @classmethod
    def load(cls, path) -> DisplacementField:
        """Read a field written by :meth:`save` (``.h5``) or a SPAM TSV file."""
        path = Path(path)
        if not path.exists():
            raise InputError(f"field {str(path)!r} does not exist; check the path")
        if path.suffix.lower() == ".tsv":
            return cls._read_tsv(path)
        if path.suffix.lower() in (".h5", ".hdf5"):
            return cls._read_h5(path)
        raise InputError(f"cannot read a field from {str(path)!r}; use .h5 (tomo4d) or .tsv (SPAM)")

    def _write_h5(self, path: Path) -> None:
        import h5py

        with h5py.File(path, "w") as f:
            f.attrs["format"] = "tomo4d.displacement_field"
            f.attrs["version"] = 1
            f.attrs["grid_shape"] = list(self.grid_shape) if self.grid_shape else [0, 0, 0]
            f.attrs["node_spacing_px"] = list(self.node_spacing_px)
            f.attrs["half_window_px"] = list(self.half_window_px)
            f.attrs["voxel_size_nm"] = list(self.voxel_size_nm)
            f.attrs["notes"] = json.dumps(self.notes, default=str)
            f.attrs["status_names"] = json.dumps({s.name: int(s) for s in NodeStatus})
            f["positions_zyx_px"] = self.positions_zyx_px
            f["phi"] = self.phi
            f["status"] = self.status
            f["iterations"] = self.iterations
            f["residual"] = self.residual

    @classmethod
    def _read_h5(cls, path: Path) -> DisplacementField:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != "tomo4d.displacement_field":
                    raise FormatError(f"{str(path)!r} is HDF5 but not a tomo4d displacement field "
                                      "(attribute format != 'tomo4d.displacement_field')")
                return cls(positions_zyx_px=f["positions_zyx_px"][()], phi=f["phi"][()], status=f["status"][()],
                           grid_shape=tuple(int(v) for v in f.attrs["grid_shape"]),
                           node_spacing_px=tuple(f.attrs["node_spacing_px"]),
                           half_window_px=tuple(f.attrs["half_window_px"]),
                           voxel_size_nm=tuple(f.attrs["voxel_size_nm"]), iterations=f["iterations"][()],
                           residual=f["residual"][()], notes=json.loads(f.attrs.get("notes", "{}")))
        except OSError as exc:
            raise FormatError(f"cannot read {str(path)!r} as HDF5: {exc}") from None

    def _vtk_text(self, scalars: dict | None = None) -> str:
        if self.grid_shape is None:
            raise InputError("VTK export needs a field on a regular grid")
        gz, gy, gx = self.grid_shape
        o = self.grid_origin_px
        sp = self.node_spacing_px
        u = self.displacement_zyx_px
        # VTK points vary fastest in x: our C order (z slowest, x fastest) matches
        lines = ["# vtk DataFile Version 2.0", "tomo4d displacement field (px)", "ASCII",
                 "DATASET STRUCTURED_POINTS", f"DIMENSIONS {gx} {gy} {gz}",
                 f"ORIGIN {o[2]:.6f} {o[1]:.6f} {o[0]:.6f}", f"SPACING {sp[2]} {sp[1]} {sp[0]}",
                 f"POINT_DATA {self.n_nodes}", "VECTORS displacement_px double"]
        lines += [f"{a[2]:.6g} {a[1]:.6g} {a[0]:.6g}" for a in u]
        extra = {"status": self.status.astype(float), "residual": self.residual.astype(float)}
        extra.update(scalars or {})
        for name, vals in extra.items():
            v = np.asarray(vals, dtype=np.float64).reshape(-1)
            if v.shape != (self.n_nodes,):
                raise InputError(f"VTK scalar {name!r} has {v.size} values; need one per node ({self.n_nodes})")
            lines += [f"SCALARS {name} double 1", "LOOKUP_TABLE default"]
            lines += [f"{a:.6g}" for a in np.nan_to_num(v, nan=0.0)]
        return "\n".join(lines) + "\n"

    def _tsv_text(self) -> str:
        header = ["NodeNumber", "Zpos", "Ypos", "Xpos", "Fzz", "Fzy", "Fzx", "Zdisp", "Fyz", "Fyy", "Fyx",
                  "Ydisp", "Fxz", "Fxy", "Fxx", "Xdisp", "pixelSearchCC", "returnStatus", "error",
                  "deltaPhiNorm", "iterations"]
        rs = np.array([_SPAM_STATUS[NodeStatus(int(s))] for s in self.status])
        cols = [np.arange(self.n_nodes), *self.positions_zyx_px.T, *self.phi[:, :3, :].reshape(-1, 12).T,
                np.zeros(self.n_nodes), rs, np.nan_to_num(self.residual.astype(np.float64), nan=0.0),
                np.zeros(self.n_nodes), self.iterations]
        rows = ["\t".join(header)]
        for i in range(self.n_nodes):
            rows.append("\t".join(repr(float(c[i])) if c.dtype.kind == "f" else str(int(c[i])) for c in cols))
        return "\n".join(rows) + "\n"

    @classmethod
    def _read_tsv(cls, path: Path) -> DisplacementField:
        try:
            data = np.genfromtxt(path, delimiter="\t", names=True, dtype=np.float64)
        except ValueError as exc:
            raise FormatError(f"cannot read {str(path)!r} as a SPAM TSV file: {exc}") from None
        data = np.atleast_1d(data)
        names = data.dtype.names or ()
        need = ["Zpos", "Ypos", "Xpos", "Zdisp", "Ydisp", "Xdisp"]
        missing = [k for k in need if k not in names]
        if missing:
            raise FormatError(f"{str(path)!r} lacks the SPAM columns {missing}")
        n = data.shape[0]
        pos = np.stack([data["Zpos"], data["Ypos"], data["Xpos"]], axis=1)
        phi = np.tile(np.eye(4), (n, 1, 1))
        for i, a in enumerate("zyx"):
            phi[:, i, 3] = data[f"{a.upper()}disp"]
            for j, b in enumerate("zyx"):
                key = f"F{a}{b}"
                if key in names:
                    phi[:, i, j] = data[key]
        st = np.zeros(n, np.int8)
        if "returnStatus" in names:
            st = np.array([_FROM_SPAM.get(int(v), NodeStatus.DIVERGED) for v in data["returnStatus"]], np.int8)
        it = data["iterations"] if "iterations" in names else None
        err = data["error"] if "error" in names else None
        grid_shape, spacing = _detect_grid(pos)
        return cls(positions_zyx_px=pos, phi=phi, status=st, grid_shape=grid_shape, node_spacing_px=spacing,
                   iterations=it, residual=err, notes={"source": f"SPAM TSV {path.name}"})


def _detect_grid(pos: np.ndarray):
    axes = [np.unique(pos[:, i]) for i in range(3)]
    shape = tuple(len(a) for a in axes)
    if int(np.prod(shape)) != pos.shape[0]:
        return None, (0, 0, 0)
    sp = []
    for a in axes:
        d = np.diff(a)
        if len(d) and not np.allclose(d, d[0]):
            return None, (0, 0, 0)
        sp.append(int(round(d[0])) if len(d) else 1)
    order = np.lexsort((pos[:, 2], pos[:, 1], pos[:, 0]))
    if not np.array_equal(order, np.arange(pos.shape[0])):
        return None, (0, 0, 0)
    return shape, tuple(sp)


def _neighbours(src: np.ndarray, pts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest of the points ``src`` to each of ``pts``: indices (M, k) and inverse-square-distance weights
    (M, k), normalised."""
    from scipy.spatial import cKDTree

    k = min(k, src.shape[0])
    d, i = cKDTree(src).query(pts, k=k)
    w = 1.0 / np.maximum(d.reshape(len(pts), k), 1e-9) ** 2
    return i.reshape(len(pts), k), w / w.sum(1, keepdims=True)


def _idw(src: np.ndarray, vals: np.ndarray, pts: np.ndarray, k: int = 8) -> np.ndarray:
    i, w = _neighbours(src, pts, k)
    return np.einsum("mk,mkc->mc", w, vals[i])


def _idw_first_order(src: np.ndarray, vals: np.ndarray, pts: np.ndarray, k: int = 8) -> np.ndarray:
    """Inverse-distance weighting of the nodes' ``[F | u]`` (``vals`` (N, 12), rows of ``phi[:3]``), each node's
    displacement carried to the point by its own F: ``u_n + (F_n - I)(x - x_n)``.  Exact for an affine field, where
    :func:`_idw` extrapolates the nearest nodes' displacement unchanged (35 px beyond the last node of a 45 %
    stretch that is 0.45 x 35 = 16 px off)."""
    i, w = _neighbours(src, pts, k)
    phi = vals[i].reshape(len(pts), -1, 3, 4)
    carried = phi.copy()
    carried[..., 3] += np.einsum("mkab,mkb->mka", phi[..., :3] - np.eye(3), pts[:, None, :] - src[i])
    return np.einsum("mk,mkc->mc", w, carried.reshape(len(pts), -1, 12))


def _fill_from_neighbours(pos: np.ndarray, vals: np.ndarray, ok: np.ndarray) -> np.ndarray:
    if ok.all():
        return vals
    out = vals.copy()
    out[~ok] = _idw(pos[ok], vals[ok], pos[~ok])
    return out
