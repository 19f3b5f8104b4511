"""The contract between the correlation and its Gauss-Newton backends.

A backend is a function ``solve(problem, state, selection)``: it solves the
nodes selected by the boolean ``selection`` (N,) of a :class:`NodeProblem`
(the volumes and the node grid, read only) and writes their results into the
:class:`NodeState` (one row per node, updated in place).  Statuses are
:class:`~tomo4d.dvc.field.NodeStatus` values: ``CONVERGED``, ``NOT_CONVERGED``,
``DIVERGED``, ``LOW_TEXTURE`` (singular Hessian) and ``OUT_OF_VIEW``.

Two backends: the compiled CPU kernel (:mod:`._kernels`, numba) and batched
tensors (:mod:`._torch_backend`, CPU or GPU).  This module imports neither
numba nor torch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._validate import show
from ..errors import InputError
from .field import NodeStatus
from .options import CorrelationOptions

__all__ = ["NodeProblem", "NodeState", "Backend", "select_backend"]


@dataclass(frozen=True, eq=False)
class NodeProblem:
    """What the backends read: volumes, node grid and options of one batch of nodes.

    Attributes
    ----------
    reference : (z, y, x) float32
        Reference volume (after any pre-smoothing or compensating blur).
    gradient : (3, z, y, x) float32
        Its gradients along z, y, x.
    mask : (z, y, x) bool
        Reference voxels that count.
    deformed : (z, y, x) float32
        Deformed volume, sampled linearly.
    coefficients : (z, y, x) float32
        Cubic B-spline coefficients of ``deformed`` (mirror boundary) when
        ``options.order == 3``, else ``deformed`` itself.
    positions : (N, 3) int64
        Node positions (z, y, x) in these volumes, px.
    half_window : (3,) int64
        Half-window along (z, y, x), px.
    options : CorrelationOptions
        Order, iterations, tolerances, out-of-view threshold, grey model.
    """

    reference: np.ndarray
    gradient: np.ndarray
    mask: np.ndarray
    deformed: np.ndarray
    coefficients: np.ndarray
    positions: np.ndarray
    half_window: np.ndarray
    options: CorrelationOptions

    @classmethod
    def build(cls, reference: np.ndarray, deformed: np.ndarray, mask: np.ndarray, positions: np.ndarray,
              half_window, options: CorrelationOptions) -> NodeProblem:
        """The problem of correlating ``positions`` of these volumes: computes the gradients and the
        spline coefficients (``options.order == 3``)."""
        from scipy import ndimage

        # C-contiguous float32 at the kernel boundary: one compiled signature (a view would compile again)
        reference = np.ascontiguousarray(reference, np.float32)
        deformed = np.ascontiguousarray(deformed, np.float32)
        grad = np.empty((3,) + reference.shape, np.float32)   # filled axis by axis: no 3-array transient
        for a in range(3):
            grad[a] = np.gradient(reference, axis=a)
        coef = (ndimage.spline_filter(deformed, order=3, output=np.float32, mode="mirror") if options.order == 3
                else deformed)
        return cls(reference=reference, gradient=grad, mask=np.ascontiguousarray(mask, np.bool_), deformed=deformed,
                   coefficients=coef, positions=np.ascontiguousarray(positions, np.int64),
                   half_window=np.asarray(half_window, np.int64), options=options)

    @property
    def n_nodes(self) -> int:
        return int(self.positions.shape[0])

    @property
    def max_displacement_px(self) -> float:
        """Farthest a node may move from its initial guess before it is ``DIVERGED`` (default: half-window)."""
        m = self.options.max_displacement_px
        return float(max(self.half_window)) if m is None else float(m)


@dataclass(eq=False)
class NodeState:
    """What the backends write, one row per node (mutable working state, not a result).

    Attributes
    ----------
    phis : (N, 4, 4) float64
        Phi of each node about its position (initial guess in, solution out).
    status : (N,) int8
        :class:`NodeStatus` values.
    iterations : (N,) int32
    residual : (N,) float64
        RMS grey residual / std of the reference window (NaN: not iterated).
    delta : (N,) float64
        Size of the last update, px.
    out_of_view : (N,) float64
        Fraction of the window's voxels that fell outside the deformed volume at
        the last iteration (NaN: not iterated).
    """

    phis: np.ndarray
    status: np.ndarray
    iterations: np.ndarray
    residual: np.ndarray
    delta: np.ndarray
    out_of_view: np.ndarray

    @classmethod
    def start(cls, phis: np.ndarray) -> NodeState:
        """A fresh state from initial guesses ``phis`` (N, 4, 4): all ``NOT_CONVERGED``, not iterated."""
        n = len(phis)
        return cls(phis=np.array(phis, np.float64), status=np.full(n, NodeStatus.NOT_CONVERGED, np.int8),
                   iterations=np.zeros(n, np.int32), residual=np.full(n, np.nan), delta=np.full(n, np.nan),
                   out_of_view=np.full(n, np.nan))

    def put(self, nodes: np.ndarray, other: NodeState) -> None:
        """Copy every row of ``other`` into rows ``nodes`` of this state."""
        for name in ("phis", "status", "iterations", "residual", "delta", "out_of_view"):
            getattr(self, name)[nodes] = getattr(other, name)


@dataclass(frozen=True)
class Backend:
    """A Gauss-Newton implementation: ``solve(problem, state, selection)`` and its name (for ``notes``)."""

    name: str
    solve: Callable[[NodeProblem, NodeState, np.ndarray], None]


def select_backend(options: CorrelationOptions) -> Backend:
    """The backend of ``options.backend`` (``auto``: torch on an available CUDA GPU, else numba)."""

    backend = options.backend
    if backend == "auto":
        backend = "numba"
        if importlib.util.find_spec("torch") is not None:
            import torch

            if torch.cuda.is_available():
                backend = "torch"
    if backend == "torch":
        from ._torch_backend import resolve_device, solve

        dev = resolve_device(options.device)

        def solve_torch(problem, state, selection):
            solve(problem, state, selection, device=dev)

        return Backend(f"torch:{dev}", solve_torch)
    if options.device is not None:
        raise InputError(f"device={show(options.device)} needs backend='torch' (the numba backend runs on the CPU)")
    from ._kernels import solve as solve_numba

    return Backend("numba", solve_numba)
