"""Gauss-Newton minimisation of the global DVC criterion on the CPU (``GlobalOptions(solver="gauss-newton")``).

The same objective as the L-BFGS route of :mod:`tomo4d.dvc._global_solver` (grey-modelled SSD over the masked voxels
mapped inside the deformed volume, normalised by the reference's variance and the voxel count; the squared Laplacian
of the nodal displacements; the squared gradients of the brightness and contrast fields; the interface ties; the
tests compare value and gradient with torch's autograd), minimised as finite-element DVC usually is (Hild & Roux's
global DIC): the Gauss-Newton Hessian of the data term assembled element by element (numba,
:mod:`tomo4d.dvc._gn_kernels`), the quadratic regularisations and ties as exact sparse matrices, each step solved by
block-Jacobi conjugate gradients, then an Armijo backtracking line search
on the exact objective.  Only the unknowns of nodes whose elements hold data are solved for; the others keep their
start values.  A level stops when the Gauss-Newton step moves no displacement by more than :data:`STEP_PX` px, or
the objective falls by less than ``tolerance`` of its start.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from numba import njit
from scipy import sparse

from ._global_solver import plane_rows, supported_nodes, voxel_elements

log = logging.getLogger(__name__)

#: a level stops when the Gauss-Newton step moves no nodal displacement by more than this (full-resolution px; taken
#: without another evaluation).  On the snow sine field the median error is final to 1e-4 px by then
STEP_PX = 1e-2
#: relative residual and iteration cap of the conjugate-gradient solve of each Gauss-Newton step
CG_RTOL = 1e-4
CG_MAXITER = 2000


class _Problem:
    """One level's data, geometry and the quadratic terms, evaluated at packed unknowns ``x``
    (``[u_z, u_y, u_x (, a, b)]`` per node, field-major)."""

    def __init__(self, lv, opts, weights):
        self.lv, self.opts = lv, opts
        self.ref = lv.ref.numpy()
        d = lv.dfm.numpy()
        self.dfm = np.ascontiguousarray(d[None] if d.ndim == 3 else d)
        self.has_w = weights is not None
        self.w = (np.ascontiguousarray(weights.numpy(), np.float32) if self.has_w
                  else np.zeros((1, 1, 1, 1), np.float32))
        self.mask = np.ascontiguousarray(lv.mask.numpy())
        self.gs = np.asarray(lv.grid_shape, np.int64)
        self.G = int(np.prod(self.gs))
        self.nf = 5 if opts.grey_fields else 3
        self.ranges, self.tfrac = _geometry(lv)
        self.edofs = _element_dofs(self.gs, self.nf)
        self.var = float(lv.ref[lv.mask].var()) or 1.0  # as the L-BFGS route (torch: unbiased)
        self.R = _regulariser(self.gs, opts, self.nf, self.var, lv.band)
        self.planes = plane_rows(lv, self.G)
        self.with_data = np.ones(self.G, bool)  # set by each evaluate: nodes of an element with data
        self.supported = supported_nodes(lv, opts.mask_fraction).ravel()  # nodes with mask_fraction of support
        self._pattern = None  # the Hessian's sparsity, built on the first evaluation that asks for the Hessian

    def pack(self, U, A, B) -> np.ndarray:
        parts = [U.reshape(3, -1).numpy().astype(np.float64)]
        if self.nf == 5:
            parts += [A.reshape(1, -1).numpy().astype(np.float64), B.reshape(1, -1).numpy().astype(np.float64)]
        return np.concatenate(parts).ravel()

    def unpack(self, x, A, B):
        g = tuple(int(v) for v in self.gs)
        U = torch.from_numpy(x[:3 * self.G].reshape((3,) + g).astype(np.float32))
        if self.nf == 5:
            A = torch.from_numpy(x[3 * self.G:4 * self.G].reshape((1,) + g).astype(np.float32))
            B = torch.from_numpy(x[4 * self.G:].reshape((1,) + g).astype(np.float32))
        return U, A, B

    def evaluate(self, x, want_h: bool):
        """(objective, data term, gradient, Hessian or None) at ``x``."""
        from ._gn_kernels import element_pass

        G = self.G
        U = x[:3 * G].reshape(3, G)
        A = x[3 * G:4 * G] if self.nf == 5 else np.zeros(G)
        B = x[4 * G:] if self.nf == 5 else np.ones(G)
        sums, ge, he = element_pass(self.ref, self.dfm, self.w, self.has_w, self.lv.cubic, self.mask,
                                    np.ascontiguousarray(U), A, B, self.gs, self.ranges, self.tfrac,
                                    float(self.lv.binning), self.nf, want_h)
        n = max(float(sums[:, 1].sum()), 1.0)
        k = 1.0 / (self.var * n)
        # nodes of an element with data: the unknowns solved for (the others keep their start values)
        self.with_data = np.bincount(self.edofs[:, :8 * self.nf:self.nf].ravel() % G,
                                     weights=np.repeat(sums[:, 1] > 0, 8), minlength=G) > 0
        data = float(sums[:, 0].sum()) * k
        grad = 2 * k * np.bincount(self.edofs.ravel(), weights=ge.reshape(len(ge), -1).ravel(), minlength=x.size)
        Rx = self.R @ x
        f = data + 0.5 * float(x @ Rx)
        grad += Rx
        w = self.opts.interface_weight
        for c, target in self.planes:
            miss = float(c @ U[0]) - target
            f += w * miss * miss
            grad[:G] += 2 * w * miss * c
        hess = None
        if want_h:
            if self._pattern is None:
                self._pattern = _pattern(self.gs, self.nf)
            indptr, indices = self._pattern
            vals = np.zeros(indices.size)
            _scatter(indptr, indices, vals, self.edofs, he, 2 * k, self.nf)
            hess = sparse.csr_matrix((vals, indices, indptr), shape=(x.size, x.size)) + self.R
            for c, _ in self.planes:
                cz = sparse.csr_matrix(np.concatenate([c, np.zeros(x.size - G)]))
                hess = hess + 2 * w * (cz.T @ cz)
        return f, data, grad, hess


def compiled_criterion(lv, opts, weights):
    """The level's criterion for the L-BFGS route on the CPU: ``(f, free)``, ``f(U, A, B) -> (objective, data term,
    (gU, gA, gB))`` from the compiled element pass (the gradient only; the same value and gradient as torch's autograd
    of ``_global_solver._objective``, ``tests/dvc/test_global_gn.py``) and ``free()`` the nodes solved for at the last
    evaluation (:func:`_free`, a (gz, gy, gx) bool tensor).  Snow pair, 1000 nodes, one thread: 0.049 s per
    evaluation against autograd's 0.326 s (session 25)."""
    p = _Problem(lv, opts, weights)
    G, gs = p.G, tuple(int(v) for v in p.gs)

    def evaluate(U, A, B):
        f, data, grad, _ = p.evaluate(p.pack(U, A, B), False)
        g = torch.from_numpy(grad.astype(np.float32))
        grads = (g[:3 * G].reshape((3,) + gs),) + ((g[3 * G:4 * G].reshape((1,) + gs), g[4 * G:].reshape((1,) + gs))
                                                  if p.nf == 5 else (None, None))
        return f, data, grads

    def free():
        return torch.from_numpy(_free(p).reshape(gs))

    return evaluate, free


def minimise_gn(lv, U, A, B, opts, weights):
    """The level's minimiser for ``solver="gauss-newton"``: same inputs and outputs as ``_global_solver._minimise``."""
    t0 = time.perf_counter()
    p = _Problem(lv, opts, weights)
    x = p.pack(U, A, B)
    f, data, g, H = p.evaluate(x, True)
    start, n_iter = f, 0
    capped = [0]  # steps whose conjugate gradients stopped at CG_MAXITER (an ill-conditioned system)
    for n_iter in range(1, opts.max_iterations + 1):
        d = -_factor(H, p.nf, np.flatnonzero(_free(p)), capped=capped)(g)
        if _moved(d, p) < STEP_PX:  # the Gauss-Newton step itself is negligible: take it
            x = x + d
            break
        slope = float(g @ d)
        alpha, accepted = 1.0, None
        while alpha >= 1 / 16:  # backtracking (Armijo); the Hessian of the accepted point comes with it
            trial = p.evaluate(x + alpha * d, True)
            if trial[0] <= f + 1e-4 * alpha * slope:
                accepted = trial
                break
            alpha /= 2
        if accepted is None:  # no descent along the Gauss-Newton direction: the level has settled
            break
        step = alpha * d
        x = x + step
        change = (f - accepted[0]) / start if start > 0 else 0.0
        f, data, g, H = accepted
        log.debug("GN level binning %d iteration %d: objective %.8g, step %.2g, max |du| %.2e px, %.2f s",
                  lv.binning, n_iter, f, alpha, _moved(step, p), time.perf_counter() - t0)
        if change < opts.tolerance:
            break
    U, A, B = p.unpack(x, A, B)
    return U, A, B, n_iter, {"loss": f, "data": data, "cg_capped": capped[0]}


def _free(p) -> np.ndarray:
    """Nodes solved for: those of an element with data that have ``mask_fraction`` of their support in the mask
    (``_global_solver.supported_nodes``), and those an interface tie averages over (a plane in an
    element without data below the mask's edge: held at its start value, such a node made the tie push its
    neighbour with data instead; the demo's shrinking pair read the collector side 0.03-0.05 lower for it, session 26).
    The others are held by the Laplacian alone, whose null
    space (linear fields; the grid's corners, which no interior Laplacian reaches) made a step of all nodes on the
    phantom's T1 move them by up to 228 px and cost 2000 conjugate-gradient iterations (16 s); held at their start
    values, 250-330 iterations (2 s) and convergence in 5 steps.  A Levenberg-Marquardt damping of 1e-3 or 1e-2
    instead (relative to the Hessian's diagonal) bounded the steps but stopped the graded-stretch test early (0.079
    -0.086 px against 0.049 px); freeing one more ring of nodes around the data read the same 0.048 px undamped
    (0.086 damped), so it is not done."""
    free = p.with_data & p.supported  # a node with less of its support in the mask is held too (supported_nodes)
    for c, _ in p.planes:
        free |= c != 0
    return free


def _moved(step, p) -> float:
    """The largest displacement change (px) of a step."""
    return float(np.abs(step[:3 * p.G]).max())


def _factor(H, nf: int, free: np.ndarray, *, capped=None):
    """A solver of ``H d = b`` over the unknowns of the nodes ``free`` (the others' steps are 0): conjugate gradients
    preconditioned by the inverse of each node's nf x nf block (``capped[0]`` counts the solves stopped at
    ``CG_MAXITER``).  With every node free ``H`` itself is used and its
    diagonal raised in place by 1e-12 of its largest entry (the caller does not reuse it).

    Measured against SuperLU on the snow case (100^3, spacing 10, 5000 unknowns): the direct factor took 1.7 s
    (COLAMD; 2.9 s with MMD on A^T + A; 3.1 M entries in L), block-Jacobi CG 0.02-0.03 s to a relative residual of
    1e-3 to 1e-5 (20-35 iterations) with the displacements within 0.007 px of the direct solution; pyamg's smoothed
    aggregation (setup 0.9 s) was slower than block-Jacobi CG on the phantom's 69120 unknowns at every damping."""
    from scipy.sparse.linalg import LinearOperator, cg

    G = H.shape[0] // nf
    keep = (free[:, None] + G * np.arange(nf)[None, :]).T.ravel()     # field-major, as the full vector
    H = H.tocsr()
    if free.size < G:  # (every node free: no copy)
        H = H[keep][:, keep]
    diag = H.diagonal()
    H.setdiag(diag + 1e-12 * max(float(diag.max(initial=0.0)), 1e-30))  # in place: the pattern has the diagonal
    g = free.size
    idx = np.arange(g)[:, None] + g * np.arange(nf)[None, :]          # (g, nf) unknowns of each free node
    blocks = _node_blocks(H.indptr, H.indices, H.data, g, nf)
    scale = np.abs(np.einsum("gii->gi", blocks)).max(axis=1, keepdims=True).clip(min=1e-30)
    blocks += (1e-9 * scale)[:, :, None] * np.eye(nf)
    inv = np.linalg.inv(blocks)
    n = H.shape[0]

    def precondition(r):
        out = np.empty(n)
        out[idx] = np.einsum("gij,gj->gi", inv, r[idx])
        return out

    M = LinearOperator((n, n), matvec=precondition)

    def solve(b):
        count = [0]
        t = time.perf_counter()
        d, info = cg(H, b[keep], rtol=CG_RTOL, maxiter=CG_MAXITER, M=M,
                     callback=lambda _: count.__setitem__(0, count[0] + 1))
        log.debug("GN step: %d conjugate-gradient iterations (%s) in %.2f s, %d unknowns", count[0],
                  "converged" if info == 0 else "stopped at the cap", time.perf_counter() - t, n)
        if info != 0 and capped is not None:
            capped[0] += 1
        out = np.zeros(b.size)
        out[keep] = d
        return out

    return solve


@njit(cache=True)
def _node_blocks(indptr, indices, data, g, nf):
    """(g, nf, nf) each node's block of a field-major CSR matrix: entry (i, j) of node k is row i g + k, column
    j g + k (one pass over the rows; the nf^2 ``diagonal`` calls it replaces took 0.045 s of a 1.1 s snow solve)."""
    out = np.zeros((g, nf, nf))
    for i in range(nf):
        for k in range(g):
            r = i * g + k
            for p in range(indptr[r], indptr[r + 1]):
                c = indices[p]
                if c % g == k:
                    out[k, i, c // g] = data[p]
    return out


def _geometry(lv):
    """Per axis: each element's voxel range [start, stop) (3, max_e, 2) and each voxel's fraction in it (3, max_n)."""
    ranges = np.zeros((3, max(g - 1 for g in lv.grid_shape), 2), np.int64)
    tfrac = np.zeros((3, max(lv.ref.shape)), np.float64)
    for a, (e, t) in enumerate(zip(*voxel_elements(lv))):
        tfrac[a, :t.size] = t
        for k in range(lv.grid_shape[a] - 1):
            idx = np.flatnonzero(e == k)
            if idx.size:
                ranges[a, k] = idx[0], idx[-1] + 1
    return ranges, tfrac


def _element_dofs(gs, nf) -> np.ndarray:
    """(nE, 8 nf) global unknown of each element's local unknown ``a * nf + c`` (corner a, field c)."""
    ez, ey, ex = np.meshgrid(*[np.arange(g - 1) for g in gs], indexing="ij")
    G = int(np.prod(gs))
    out = []
    for a in range(8):
        node = ((ez + (a >> 2)) * gs[1] + (ey + ((a >> 1) & 1))) * gs[2] + ex + (a & 1)
        out.append(node.ravel())
    nodes = np.stack(out, 1)                                         # (nE, 8)
    return (nodes[:, :, None] + G * np.arange(nf)[None, None, :]).reshape(len(nodes), 8 * nf)


def _pattern(gs, nf):
    """CSR sparsity (indptr, indices) of the Hessian: every unknown of a node with every unknown of the 27 nodes
    around it."""
    G = int(np.prod(gs))
    idx = np.arange(G).reshape(tuple(int(v) for v in gs))
    rows, cols = [], []
    for dz in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                a = idx[max(dz, 0):gs[0] + min(dz, 0), max(dy, 0):gs[1] + min(dy, 0), max(dx, 0):gs[2] + min(dx, 0)]
                b = idx[max(-dz, 0):gs[0] + min(-dz, 0), max(-dy, 0):gs[1] + min(-dy, 0),
                        max(-dx, 0):gs[2] + min(-dx, 0)]
                rows.append(a.ravel())
                cols.append(b.ravel())
    r, c = np.concatenate(rows), np.concatenate(cols)
    R = (r[:, None, None] + G * np.arange(nf)[None, :, None]) * np.ones((1, 1, nf), np.int64)
    C = (c[:, None, None] + G * np.arange(nf)[None, None, :]) * np.ones((1, nf, 1), np.int64)
    m = sparse.csr_matrix((np.ones(R.size), (R.ravel(), C.ravel())), shape=(nf * G, nf * G))
    m.sum_duplicates()
    m.sort_indices()
    return m.indptr.astype(np.int64), m.indices.astype(np.int64)


@njit(cache=True)
def _scatter(indptr, indices, vals, edofs, he, scale, nf):
    """Add each element's factored Hessian ``he`` (nE, 27, nq; :func:`tomo4d.dvc._gn_kernels.element_pass`) times
    ``scale`` into the CSR values: local unknowns (a, i) and (b, j) couple through the axis-weight combination of
    corners a and b and the fields' product (i, j)."""
    for e in range(edofs.shape[0]):
        for a in range(8):
            for i in range(nf):
                r = edofs[e, a * nf + i]
                for b in range(8):
                    combo = 9 * ((a >> 2) + (b >> 2)) + 3 * (((a >> 1) & 1) + ((b >> 1) & 1)) + (a & 1) + (b & 1)
                    for j in range(nf):
                        lo, hi = (i, j) if i <= j else (j, i)
                        k = lo * nf - lo * (lo - 1) // 2 + (hi - lo)
                        c = edofs[e, b * nf + j]
                        vals[_find(indptr, indices, r, c)] += he[e, combo, k] * scale


@njit(cache=True, inline="always")
def _find(indptr, indices, r, c):
    lo, hi = indptr[r], indptr[r + 1]
    while lo < hi:
        mid = (lo + hi) // 2
        if indices[mid] < c:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _regulariser(gs, opts, nf, var: float, band=()):
    """The regularisations as ``0.5 x^T R x`` (R sparse): the Laplacian's ``w mean |L u|^2`` over the interior nodes
    and components, the grey fields' ``w_g sum_axes mean |D a|^2 / var + |D b|^2`` (``var``: the reference's
    variance, which makes the brightness ``a``'s term unit-free as the data term), and on the z-edges ``band``
    (:func:`tomo4d.dvc._global_solver.interface_band`) their z-differences again, ``interface_grey_stiffness`` times."""
    G = int(np.prod(gs))
    shape = tuple(int(v) for v in gs)
    eye = [sparse.identity(n, format="csr") for n in shape]

    def kron3(mats):
        return sparse.kron(sparse.kron(mats[0], mats[1]), mats[2]).tocsr()

    blocks = [sparse.csr_matrix((G, G))] * nf
    live = [a for a in range(3) if shape[a] >= 3]
    if live and opts.regularisation > 0:
        lap = sparse.csr_matrix((G, G))
        for a in live:
            d2 = sparse.diags([1.0, -2.0, 1.0], [-1, 0, 1], shape=(shape[a], shape[a]), format="csr")
            lap = lap + kron3([d2 if b == a else eye[b] for b in range(3)])
        inner = np.ones(shape, bool)
        for a in live:
            sl = [slice(None)] * 3
            sl[a] = slice(1, -1)
            keep = np.zeros(shape, bool)
            keep[tuple(sl)] = True
            inner &= keep
        L = lap[np.flatnonzero(inner.ravel())]
        LtL = (2.0 * opts.regularisation / (3 * L.shape[0])) * (L.T @ L)
        blocks[:3] = [LtL] * 3
    if nf == 5 and opts.grey_regularisation > 0:
        grey = sparse.csr_matrix((G, G))
        for a in range(3):
            if shape[a] < 2:
                continue
            d1 = sparse.diags([-1.0, 1.0], [0, 1], shape=(shape[a] - 1, shape[a]), format="csr")
            D = kron3([d1 if b == a else eye[b] for b in range(3)])
            grey = grey + (2.0 * opts.grey_regularisation / D.shape[0]) * (D.T @ D)
        if band:
            d1 = sparse.diags([-1.0, 1.0], [0, 1], shape=(shape[0] - 1, shape[0]), format="csr")[list(band)]
            D = kron3([d1, eye[1], eye[2]])
            n = max((shape[0] - 1) * shape[1] * shape[2], 1)
            grey = grey + (2.0 * opts.grey_regularisation * opts.interface_grey_stiffness / n) * (D.T @ D)
        blocks[3:] = [grey / var, grey]
    return sparse.block_diag(blocks, format="csr")
