"""Batched per-node Gauss-Newton with torch tensors (CPU or GPU), imported lazily.

The same algorithm as :func:`tomo4d.dvc._kernels.solve_nodes` (inverse-compositional
affine Gauss-Newton, constant 12x12 Hessian per node, linear sampling until an
update is below ``switch_px`` then cubic B-splines with mirror boundary), but
vectorised over a batch of nodes instead of threaded over nodes: every
iteration warps the windows of all still-running nodes of a batch at once,
samples the deformed volume by gathers (8 taps linear, 64 taps cubic) and
reduces residuals against the precomputed Jacobians.  Images, coordinates and
Jacobians are float32; the 12x12 systems and the Phi updates are float64.
Device-agnostic: tensors are created on ``device`` and nothing else is assumed.
:func:`solve` is the backend entry point (see :mod:`tomo4d.dvc._backend`); this
module does not import numba.
"""

from __future__ import annotations

import numpy as np

from .._validate import check_device
from .field import NodeStatus

K_CONVERGED = int(NodeStatus.CONVERGED)
K_NOT_CONVERGED = int(NodeStatus.NOT_CONVERGED)
K_DIVERGED = int(NodeStatus.DIVERGED)
K_SINGULAR = int(NodeStatus.LOW_TEXTURE)
K_OUT_OF_VIEW = int(NodeStatus.OUT_OF_VIEW)

#: points (window voxels x nodes) processed per batch; bounds the memory of a batch to ~0.3 GB
POINTS_PER_BATCH = 1 << 20


def resolve_device(device):
    """A ``torch.device``: ``device`` as given, default CUDA when available, else CPU (the shared check)."""

    return check_device("device", device)


def _grid_sample(vol5, gz, gy, gx, padding):
    """Trilinear samples of ``vol5`` (1, 1, Z, Y, X) at voxel coordinates ``(gz, gy, gx)`` (same shapes).

    ``grid_sample`` with ``align_corners=True`` (voxel centres at -1 and 1);
    ``padding="reflection"`` mirrors about the edge voxel centres, as scipy's
    ``mode="mirror"``."""
    import torch

    nz, ny, nx = vol5.shape[2:]
    grid = torch.stack([gx * (2.0 / max(nx - 1, 1)) - 1.0, gy * (2.0 / max(ny - 1, 1)) - 1.0,
                        gz * (2.0 / max(nz - 1, 1)) - 1.0], dim=-1)
    out = torch.nn.functional.grid_sample(vol5, grid.reshape(1, -1, 1, 1, 3), mode="bilinear",
                                          padding_mode=padding, align_corners=True)
    return out.reshape(gz.shape)


def _trilinear(vol5, pts, padding="border"):
    """Trilinear samples at ``pts`` (P, 3), (z, y, x) voxel coordinates."""
    return _grid_sample(vol5, pts[:, 0], pts[:, 1], pts[:, 2], padding)


def _fold(p):
    """Per axis: positions (2, P) and weights (2, P) of the two linear fetches of a cubic B-spline."""
    import torch

    fl = p.floor()
    t = p - fl
    u = 1.0 - t
    w0 = u * u * u / 6.0
    w3 = t * t * t / 6.0
    w1 = 2.0 / 3.0 - 0.5 * t * t * (2.0 - t)
    g0 = w0 + w1
    g1 = 1.0 - g0
    return torch.stack([fl - 1.0 + w1 / g0, fl + 1.0 + w3 / g1]), torch.stack([g0, g1])


def _sample_cubic(coef5, pts):
    """Cubic B-spline interpolation of prefiltered coefficients ``coef5`` at ``pts`` (P, 3), mirror boundary.

    Eight trilinear fetches (Sigg & Hadwiger, GPU Gems 2, ch. 20): per axis the
    four B-spline weights ``w0..w3`` of the taps ``i-1..i+2`` are folded into two
    linear fetches at ``i - 1 + w1 / (w0 + w1)`` and ``i + 1 + w3 / (w2 + w3)``
    weighted by ``w0 + w1`` and ``w2 + w3``; the eight corners go through one
    ``grid_sample`` call.  Mirror-symmetric coefficients make the reflected
    linear fetch at the border exact."""
    hz, wz = _fold(pts[:, 0])
    hy, wy = _fold(pts[:, 1])
    hx, wx = _fold(pts[:, 2])
    shape = (2, 2, 2, pts.shape[0])
    v = _grid_sample(coef5, hz[:, None, None].expand(shape), hy[None, :, None].expand(shape),
                     hx[None, None, :].expand(shape), "reflection")
    return (v * (wz[:, None, None] * wy[None, :, None] * wx[None, None, :])).sum(dim=(0, 1, 2))


def solve(problem, state, selection, *, device) -> None:
    """Backend entry point: solve the ``selection`` (N,) bool of ``problem`` into ``state`` (in place).

    Same contract and results (within float32 rounding) as :func:`tomo4d.dvc._kernels.solve`.
    """
    import torch

    o = problem.options
    dev = device
    shape = tuple(int(v) for v in problem.coefficients.shape)
    hw = [int(v) for v in problem.half_window]
    off = np.stack(np.meshgrid(*[np.arange(-h, h + 1) for h in hw], indexing="ij"), -1).reshape(-1, 3)
    t = {
        "ref": torch.as_tensor(np.ascontiguousarray(problem.reference, np.float32), device=dev).reshape(-1),
        "grad": torch.as_tensor(np.ascontiguousarray(problem.gradient, np.float32), device=dev).reshape(3, -1),
        "mask": torch.as_tensor(np.ascontiguousarray(problem.mask, np.bool_), device=dev).reshape(-1),
        "image": torch.as_tensor(np.ascontiguousarray(problem.deformed, np.float32), device=dev)[None, None],
        "coef": torch.as_tensor(np.ascontiguousarray(problem.coefficients, np.float32), device=dev)[None, None],
        "off": torch.as_tensor(off, dtype=torch.float32, device=dev),
        "off_lin": torch.as_tensor((off[:, 0] * shape[1] + off[:, 1]) * shape[2] + off[:, 2], device=dev),
    }
    settings = {"shape": shape, "radius": float(max(hw)), "order": int(o.order), "switch_px": float(o.switch_px),
                "max_iterations": int(o.max_iterations), "tolerance_px": float(o.tolerance_px),
                "maxd": problem.max_displacement_px, "out_of_view_fraction": float(o.out_of_view_fraction),
                "grey": o.grey_model.code}
    idx = np.nonzero(selection)[0]
    per = max(1, POINTS_PER_BATCH // off.shape[0])
    for s in range(0, len(idx), per):
        nodes = idx[s:s + per]
        out = _solve_batch(t, settings, problem.positions[nodes], state.phis[nodes], dev)
        (state.phis[nodes], state.status[nodes], state.iterations[nodes], state.residual[nodes],
         state.delta[nodes], state.out_of_view[nodes]) = out


def _grey_mapped(vals, inside, nv, tmean, tstd, grey):
    """Warped windows ``vals`` (R, W) mapped onto the reference windows (``tmean``, ``tstd``, float64) under
    grey model ``grey`` (the kernels' code: 1 means matched, 2 root mean squares about zero, 3 means and
    standard deviations; see :mod:`tomo4d.dvc._kernels`), each window's statistics over ``inside``."""
    import torch

    f64 = torch.float64
    v = vals.to(f64) * inside
    n = nv.clamp(min=1).to(f64)
    vmean = v.sum(1) / n
    vsq = v.pow(2).sum(1) / n
    if grey == 1:
        gain, shift = torch.ones_like(vmean), vmean - tmean
    elif grey == 2:
        gain = ((tstd ** 2 + tmean ** 2) / vsq.clamp(min=1e-30)).sqrt()
        shift = torch.zeros_like(vmean)
    else:
        gain = tstd / (vsq - vmean ** 2).clamp(min=1e-30).sqrt()
        shift = vmean * gain - tmean
    return (vals.to(f64) * gain[:, None] - shift[:, None]).to(vals.dtype)


def _batch_system(t, pos, shape, radius, dev):
    """The batch's fixed part of the inverse-compositional Gauss-Newton: the reference windows ``tmpl``, their mask,
    the affine warp's Jacobian ``jac`` (B, W, 12; zero outside the mask), the voxel count, mean and std of each
    window, the parameter scaling, the nodes whose scaled Hessian is singular and the inverse of that Hessian."""
    import torch

    f64 = torch.float64
    centre_lin = (pos[:, 0] * shape[1] + pos[:, 1]) * shape[2] + pos[:, 2]
    lin = centre_lin[:, None] + t["off_lin"][None, :]                          # (B, W)
    tmpl = t["ref"][lin]
    msk = t["mask"][lin]
    g = t["grad"][:, lin]                                                      # (3, B, W)
    off = t["off"]
    jac = torch.cat([(g[a][..., None] * off[None]) for a in range(3)] + [g.permute(1, 2, 0)], dim=-1)
    jac = jac * msk[..., None]
    hess = torch.einsum("bwi,bwj->bij", jac.to(f64), jac.to(f64))
    count = msk.sum(1)
    mf = msk.to(f64)
    tm = tmpl.to(f64) * mf
    cnt = count.clamp(min=1).to(f64)
    tmean = tm.sum(1) / cnt
    tstd = (tm.pow(2).sum(1) / cnt - tmean ** 2).clamp(min=1e-30).sqrt()
    scale = torch.ones(12, dtype=f64, device=dev)
    scale[:9] = 1.0 / radius
    hs = hess * scale[:, None] * scale[None, :]
    cond = torch.linalg.cond(hs)
    singular = (count < 16) | ~torch.isfinite(cond) | (cond > 1e10)
    eye12 = torch.eye(12, dtype=f64, device=dev)
    hinv = torch.linalg.inv(torch.where(singular[:, None, None], eye12, hs))
    return tmpl, msk, jac, count, tmean, tstd, scale, singular, hinv


def _sample_warped(t, w, cubic_nodes):
    """The deformed volume at the warped window points ``w`` (R, W, 3): cubic for the nodes flagged in
    ``cubic_nodes`` (R,), trilinear for the others."""
    import torch

    flat = w.reshape(-1, 3)
    if bool(cubic_nodes.all()):
        vals = _sample_cubic(t["coef"], flat)
    elif not bool(cubic_nodes.any()):
        vals = _trilinear(t["image"], flat)
    else:
        vals = torch.empty(flat.shape[0], dtype=torch.float32, device=flat.device)
        cub = cubic_nodes.repeat_interleave(w.shape[1])
        vals[cub] = _sample_cubic(t["coef"], flat[cub])
        vals[~cub] = _trilinear(t["image"], flat[~cub])
    return vals.reshape(w.shape[:2])


def _solve_batch(t, settings, positions, phis, dev):
    """Gauss-Newton for one batch of nodes: ``(phis, status, iterations, residual, delta, out_of_view)``."""
    import torch

    shape, radius, order, switch_px = settings["shape"], settings["radius"], settings["order"], settings["switch_px"]
    max_iterations, tolerance_px, maxd = settings["max_iterations"], settings["tolerance_px"], settings["maxd"]
    f64 = torch.float64
    nb = positions.shape[0]
    pos = torch.as_tensor(positions, dtype=torch.int64, device=dev)
    tmpl, msk, jac, count, tmean, tstd, scale, singular, hinv = _batch_system(t, pos, shape, radius, dev)

    m = torch.as_tensor(phis, dtype=f64, device=dev).clone()
    t0 = m[:, :3, 3].clone()
    st = torch.full((nb,), K_NOT_CONVERGED, dtype=torch.int8, device=dev)
    st[singular] = K_SINGULAR
    its = torch.zeros(nb, dtype=torch.int32, device=dev)
    res = torch.full((nb,), float("nan"), dtype=f64, device=dev)
    dn_all = torch.full((nb,), float("nan"), dtype=f64, device=dev)
    oov = torch.full((nb,), float("nan"), dtype=f64, device=dev)
    cubic = torch.full((nb,), order == 3 and switch_px <= 0.0, dtype=torch.bool, device=dev)
    running = torch.nonzero(~singular).flatten()
    upper = torch.tensor(shape, dtype=torch.float32, device=dev) - 1
    posf = pos.to(f64)
    for it in range(1, max_iterations + 1):
        if running.numel() == 0:
            break
        its[running] = it
        mr = m[running]
        aff = mr[:, :3, :3].to(torch.float32)
        shift = (mr[:, :3, 3] + posf[running]).to(torch.float32)
        w = torch.einsum("bij,wj->bwi", aff, t["off"]) + shift[:, None, :]            # (R, W, 3)
        inside = ((w >= 0) & (w <= upper)).all(-1) & msk[running]
        vals = _sample_warped(t, w, cubic[running])
        nv = inside.sum(1)
        if settings["grey"]:                    # map the warped window onto the reference's (GreyModel)
            vals = _grey_mapped(vals, inside, nv, tmean[running], tstd[running], settings["grey"])
        r = (vals - tmpl[running]) * inside
        ssq = (r.to(f64) ** 2).sum(1)
        jr = jac if running.numel() == nb else jac[running]
        bvec = torch.bmm(r[:, None, :], jr)[:, 0].to(f64)
        lost = nv < torch.div(count[running], 2, rounding_mode="floor")
        oov[running] = (count[running] - nv).to(f64) / count[running].to(f64)
        res_new = (ssq / nv.clamp(min=1).to(f64)).sqrt() / tstd[running]
        dp = (hinv[running] @ (bvec * scale)[..., None])[..., 0] * scale
        inc = torch.zeros_like(mr)
        inc[:, :3, :3] = dp[:, :9].reshape(-1, 3, 3) + torch.eye(3, dtype=f64, device=dev)
        inc[:, :3, 3] = dp[:, 9:]
        inc[:, 3, 3] = 1.0
        m_new = mr @ torch.linalg.inv(inc)
        dn = dp[:, 9:].norm(dim=1) + radius * dp[:, :9].abs().amax(1)
        moved = (m_new[:, :3, 3] - t0[running]).norm(dim=1)
        det = torch.linalg.det(m_new[:, :3, :3])
        div = ~lost & (~torch.isfinite(dn) | (moved > maxd) | (det < 0.2) | (det > 5.0))
        switch = ~lost & ~div & ~cubic[running] & (order == 3) & (dn < switch_px)
        conv = ~lost & ~div & ~switch & (dn < tolerance_px)
        upd = ~lost
        ru = running[upd]
        m[ru] = m_new[upd]
        res[ru] = res_new[upd]
        dn_all[ru] = dn[upd]
        cubic[running[switch]] = True
        st[running[div]] = K_DIVERGED
        st[running[lost]] = K_OUT_OF_VIEW
        st[running[conv]] = K_CONVERGED
        running = running[~(lost | div | conv)]
    stopped = (st == K_CONVERGED) | (st == K_NOT_CONVERGED)
    st[stopped & (oov > settings["out_of_view_fraction"])] = K_OUT_OF_VIEW
    return (m.cpu().numpy(), st.cpu().numpy(), its.cpu().numpy(), res.cpu().numpy(), dn_all.cpu().numpy(),
            oov.cpu().numpy())
