"""Internals of :mod:`tomo4d.register.modalities`: the model images, the variable-projection Gauss-Newton and the
covariances (see that module's docstring)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from .phi import rotation_matrix

TRANSFORMS = {"translation": 3, "rigid": 6, "affine": 12}


# -- the model images ---------------------------------------------------------------------------------------

def _box_kernel(r: float) -> np.ndarray | None:
    """Centred box of width ``r`` samples (odd length; even widths get half weights at both ends), or None."""
    n = int(round(r))
    if abs(r - n) > 1e-6 or n < 2:
        return None
    k = np.ones(n + 1 if n % 2 == 0 else n)
    if n % 2 == 0:
        k[0] = k[-1] = 0.5
    return k / n


class _Model:
    """The spline coefficients of ``K * tent_j(moving)`` (or ``K * [labels == knots_j]``) on the subsampled moving
    grid."""

    def __init__(self, m: np.ndarray, vm: np.ndarray, vf: np.ndarray, knots: np.ndarray, blur_nm: float,
                 valid: np.ndarray | None = None, labels: np.ndarray | None = None):
        ratio = vf / vm
        self.step = np.maximum(1, np.floor(ratio / 2)).astype(int)
        var = np.maximum(0.0, (blur_nm / vm) ** 2)          # fine px^2 of the Gaussian
        boxes = [_box_kernel(r) for r in ratio]
        var = var + np.array([r * r / 12.0 if b is None else 0.0 for r, b in zip(ratio, boxes)])
        self.sigma = np.sqrt(var)
        self.edge = np.ceil(ratio / 2 + 2.5 * self.sigma) + 1  # fine px affected by the volume's border
        self.shape = np.asarray(m.shape)
        sl = tuple(slice(0, None, int(s)) for s in self.step)

        def blur(b):
            for ax, k in enumerate(boxes):
                if k is not None:
                    b = ndi.correlate1d(b, k, axis=ax, mode="nearest")
            if np.any(self.sigma > 0):
                b = ndi.gaussian_filter(b, self.sigma, mode="nearest")
            return np.ascontiguousarray(b[sl])

        self.valid = None
        if valid is not None:
            # positions whose model takes less than 0.1 % from voxels without data
            self.valid = blur((~valid).astype(np.float32)) < 1e-3
            m = np.where(valid, m, np.float32(np.median(m[valid])))
        self.coef = []
        for j in range(knots.size):
            if labels is not None:                        # phase fractions: the linear forward model
                b = blur((labels == knots[j]).astype(np.float32))
            else:
                e = np.zeros(knots.size)
                e[j] = 1.0
                b = blur(np.interp(m, knots, e).astype(np.float32))
            self.coef.append(ndi.spline_filter(b, order=3, mode="mirror"))

    def sample(self, fine_idx: np.ndarray) -> np.ndarray:
        """(n, K) basis values at moving fine-voxel positions (3, n)."""
        sub = fine_idx / self.step[:, None]
        return np.stack([ndi.map_coordinates(c, sub, order=3, mode="mirror", prefilter=False) for c in self.coef], 1)

    def sample_mapped(self, coef: np.ndarray, fine_idx: np.ndarray) -> np.ndarray:
        return ndi.map_coordinates(coef, fine_idx / self.step[:, None], order=3, mode="mirror", prefilter=False)

    def combined(self, c: np.ndarray) -> np.ndarray:
        """Spline coefficients of ``sum_j c_j K * tent_j`` (linear in c)."""
        out = np.zeros_like(self.coef[0])
        for cj, a in zip(c, self.coef):
            out += np.float32(cj) * a
        return out

    def inside(self, fine_idx: np.ndarray) -> np.ndarray:
        lo = self.edge[:, None]
        hi = (self.shape - 1 - self.edge)[:, None]
        ok = np.all((fine_idx >= lo) & (fine_idx <= hi), axis=0)
        if self.valid is not None:
            sub = np.rint(fine_idx[:, ok] / self.step[:, None]).astype(np.int64)
            for a in range(3):
                np.clip(sub[a], 0, self.valid.shape[a] - 1, out=sub[a])
            ok[ok] = self.valid[sub[0], sub[1], sub[2]]
        return ok


# -- parameters ---------------------------------------------------------------------------------------------

def _matrix(p: np.ndarray, transform: str) -> np.ndarray:
    if transform == "translation":
        return np.eye(3)
    if transform == "rigid":
        return rotation_matrix(np.rad2deg(p[:3]))
    return np.eye(3) + p[:9].reshape(3, 3)


def _positions(p, transform, X_f, C, vm):
    """Moving fine-voxel positions (3, n) of the fixed voxel centres ``X_f`` (3, n), nm."""
    t = p[-3:]
    X_m = _matrix(p, transform) @ (X_f - C[:, None]) + (C + t)[:, None]
    return X_m / vm[:, None] - 0.5


def _steps(transform: str, vf: np.ndarray, radius_nm: float) -> np.ndarray:
    """Central-difference steps: 0.05 fixed px of displacement at the field's radius."""
    h_t = 0.05 * vf
    h_a = 0.05 * float(vf.mean()) / max(radius_nm, float(vf.mean()))
    n = TRANSFORMS[transform]
    return np.concatenate([np.full(n - 3, h_a), h_t])


def _jacobian(model, coef_c, p, transform, X_f, C, vm, h):
    cols = []
    for k in range(p.size):
        dp = np.zeros_like(p)
        dp[k] = h[k]
        plus = model.sample_mapped(coef_c, _positions(p + dp, transform, X_f, C, vm))
        minus = model.sample_mapped(coef_c, _positions(p - dp, transform, X_f, C, vm))
        cols.append((plus - minus) / (2 * h[k]))
    return np.stack(cols, 1)


def _solve_mapping(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    lam = 1e-8 * float(np.trace(A.T @ A)) / A.shape[1]
    return np.linalg.solve(A.T @ A + lam * np.eye(A.shape[1]), A.T @ y)


def _evaluate(model, f_vals, X_f, C, vm, p, transform):
    """(used, basis values, mapping, residuals) at ``p``."""
    pos = _positions(p, transform, X_f, C, vm)
    used = model.inside(pos)
    if used.sum() < 64:
        raise InputError(f"only {int(used.sum())} fixed voxels map inside the moving volume; the volumes "
                         "do not overlap (give phi0 or a larger search_px)")
    A = model.sample(pos[:, used])
    c = _solve_mapping(A, f_vals[used])
    return used, A, c, f_vals[used] - A @ c


def _gauss_newton(model, f_vals, X_f, C, vm, p, transform, *, max_iterations, tolerance_px, vf, radius_nm):
    """(p, c, used, iterations, converged) of the variable-projection Gauss-Newton (step halved while the mean
    squared residual rises)."""
    h = _steps(transform, vf, radius_nm)
    scale = np.concatenate([np.full(p.size - 3, radius_nm), np.ones(3)]) / float(vf.mean())  # param -> px
    converged, it = False, 0
    used, A, c, r = _evaluate(model, f_vals, X_f, C, vm, p, transform)
    for it in range(1, max_iterations + 1):  # noqa: B007
        J = _jacobian(model, model.combined(c), p, transform, X_f[:, used], C, vm, h)
        Q, _ = np.linalg.qr(A)
        Jp = J - Q @ (Q.T @ J)                              # the mapping profiled out
        dp = np.linalg.lstsq(Jp, r - Q @ (Q.T @ r), rcond=None)[0]
        cost = float(np.mean(r * r))
        for _ in range(6):
            trial = _evaluate(model, f_vals, X_f, C, vm, p + dp, transform)
            if float(np.mean(trial[3] ** 2)) <= cost * (1 + 1e-9):
                break
            dp = dp / 2
        p = p + dp
        used, A, c, r = trial
        if float(np.max(np.abs(dp * scale))) < tolerance_px:
            converged = True
            break
    return p, c, used, it, converged


def _covariances(model, f_vals, X_f, C, vm, p, c, used, transform, vf, radius_nm, fixed_idx):
    """Sandwich (4^3 blocks) and white covariance of the transform parameters, mapping profiled out."""
    h = _steps(transform, vf, radius_nm)
    pos = _positions(p, transform, X_f[:, used], C, vm)
    A = model.sample(pos)
    J = np.concatenate([_jacobian(model, model.combined(c), p, transform, X_f[:, used], C, vm, h), A], 1)
    r = f_vals[used] - A @ c
    H = J.T @ J
    Hinv = np.linalg.pinv(H)
    n, k = J.shape
    white = Hinv * float(r @ r) / max(n - k, 1)
    blk = fixed_idx[:, used] // 4
    key = np.ravel_multi_index(tuple(blk), tuple(int(b) + 1 for b in blk.max(1)))
    _, inv = np.unique(key, return_inverse=True)
    g = np.zeros((inv.max() + 1, k))
    np.add.at(g, inv, J * r[:, None])
    sandwich = Hinv @ (g.T @ g) @ Hinv
    npar = p.size
    return sandwich[:npar, :npar], white[:npar, :npar], float(np.sqrt(np.mean(r * r)))


def _polar_rotation(A):
    u, _, vt = np.linalg.svd(A)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    return r
