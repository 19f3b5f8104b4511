"""The torch minimisation behind :func:`tomo4d.dvc.correlate_global` (imported only when it runs)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as tf

from .._array import bin_volume
from .._validate import check_device
from ..errors import InputError
from ._support import support_boxes, support_fraction
from .global_dvc import _PSF_STACK, GlobalOptions, control_grid


@dataclass
class Solution:
    u_nodes: np.ndarray              # (gz, gy, gx, 3) px, finest grid
    support_in_mask: np.ndarray      # (gz, gy, gx) fraction of each node's support inside the mask
    support_out_of_view: np.ndarray  # (gz, gy, gx) fraction of its masked support mapped outside the deformed
    level_notes: list
    converged: bool
    interfaces: list = field(default_factory=list)  # per InterfaceMotion: z_px, target and reached mean u_z (px)


@dataclass
class _Level:
    binning: int
    spacing: int
    origin: np.ndarray
    grid_shape: tuple
    ref: torch.Tensor        # (D, H, W)
    dfm: torch.Tensor        # (D, H, W) or a z-blur stack (K, D, H, W)
    mask: torch.Tensor       # (D, H, W) bool
    scale: torch.Tensor      # (3,) px (z, y, x) of the level -> normalised units
    cubic: bool = False      # dfm holds cubic B-spline coefficients (GlobalOptions.interpolation)
    planes: tuple = ()       # per InterfaceMotion: (z in level px, target u_z full-res px, (H, W) lateral footprint)
    band: tuple = ()         # control-grid z-edges k (nodes k, k + 1) within one spacing of a tied plane
    # torch's voxel grids, built on first use (:func:`_grids`; the compiled CPU routes need neither: 0.06 s of a
    # 1.05 CPU-s snow solve): (1, D, H, W, 3) normalised control-grid coordinates of the voxels and (D, H, W, 3)
    # normalised voxel coordinates in the deformed volume (x, y, z order)
    ctrl: torch.Tensor | None = None
    base: torch.Tensor | None = None


def _normalised(points_px: torch.Tensor, shape) -> torch.Tensor:
    """(..., 3) z, y, x px -> grid_sample's (..., 3) x, y, z in [-1, 1] (align_corners=True)."""
    n = torch.tensor([max(int(s) - 1, 1) for s in shape], dtype=points_px.dtype, device=points_px.device)
    return (2 * points_px / n - 1).flip(-1)


def _level(ref, dfm, msk, f, opts: GlobalOptions, dev, interfaces=(), plane_z_px=None, grey_scale=1.0) -> _Level:
    """Pyramid level ``f`` (binning) of the pair; both volumes divided by ``grey_scale`` (:func:`grey_unit`)."""
    s = opts.node_spacing * f
    _, gs, origin = control_grid(ref.shape, s, plane_z_px=plane_z_px)
    r = torch.from_numpy(np.ascontiguousarray(bin_volume(ref, f) / grey_scale, np.float32)).to(dev)
    d_np = np.ascontiguousarray(bin_volume(dfm, f) / grey_scale, np.float32)
    if opts.psf_sigma_px > 0:
        from scipy.ndimage import gaussian_filter1d

        d_np = np.stack([gaussian_filter1d(d_np, sg, axis=0, mode="nearest") if sg > 0 else d_np
                         for sg in _PSF_STACK])
    if opts.interpolation == "cubic":    # B-spline coefficients of each volume (of the z-blur stack)
        d_np = _spline_coefficients(d_np) if d_np.ndim == 3 else np.stack([_spline_coefficients(v) for v in d_np])
    d = torch.from_numpy(np.ascontiguousarray(d_np)).to(dev)
    m = torch.ones(r.shape, dtype=torch.bool, device=dev) if msk is None else \
        torch.from_numpy(bin_volume(msk.astype(np.float32), f) > 0.5).to(dev)
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in r.shape], device=dev)
    foot = m.any(0)  # the mask's lateral footprint: where an interface's mean displacement is taken
    foot = foot if bool(foot.any()) else torch.ones_like(foot)  # (a thin mask can vanish at a binned level)
    planes = tuple((float(np.clip((p.z_px - (f - 1) / 2.0) / f, 0, r.shape[0] - 1)), float(p.displacement_px), foot)
                   for p in interfaces) if opts.interface_weight > 0 else ()
    return _Level(f, s, origin, gs, r, d, m, scale, opts.interpolation == "cubic",
                  planes, interface_band(origin[0], s, gs[0], [p.z_px for p in interfaces] if planes else [], opts))


def _grids(lv: _Level) -> tuple[torch.Tensor, torch.Tensor]:
    """The level's (ctrl, base) voxel grids for torch's sampling, built on first use."""
    if lv.ctrl is None:
        dev = lv.ref.device
        axes = [torch.arange(n, dtype=torch.float32, device=dev) for n in lv.ref.shape]
        vox = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)                          # level px
        full = vox * lv.binning + (lv.binning - 1) / 2.0                                      # full-resolution px
        c = (full - torch.tensor(lv.origin, dtype=torch.float32, device=dev)) / lv.spacing    # control-grid units
        lv.ctrl, lv.base = _normalised(c, lv.grid_shape)[None], _normalised(vox, lv.ref.shape)
    return lv.ctrl, lv.base


def interface_band(z0: float, spacing: float, gz: int, planes_z_px, opts: GlobalOptions) -> tuple:
    """The control-grid z-edges (k: nodes k and k + 1 of a grid whose first row is at ``z0``) within one node
    spacing of a tied plane, where the grey fields' z-differences weigh ``1 + opts.interface_grey_stiffness`` times
    (:class:`~tomo4d.dvc.global_dvc.GlobalOptions`); () without ties, grey fields or stiffness."""
    if not (opts.grey_fields and opts.interface_grey_stiffness > 0):
        return ()
    nodes = z0 + spacing * np.arange(gz)
    return tuple(sorted({k for z in planes_z_px for k in range(gz - 1)
                         if nodes[k] < z + spacing and nodes[k + 1] > z - spacing}))


def grey_unit(ref, msk) -> float:
    """The reference's grey-level standard deviation (inside the mask): both volumes are divided by it before the
    solve, so that the brightness field's unknowns, its penalty and the solvers' numerics (L-BFGS's steps, the
    Gauss-Newton system's conditioning) are the same for scans in any grey units.  Scaled by 1e-3 or 1e2, the
    graded-stretch pair read median errors 0.044-0.064 px (Gauss-Newton) and 0.061-0.121 px (L-BFGS) before
    (session 22)."""
    a = np.asarray(ref)
    v = a[np.asarray(msk, bool)] if msk is not None else a
    sd = float(np.std(v, dtype=np.float64)) if v.size else 0.0
    return sd if np.isfinite(sd) and sd > 0 else 1.0


def _plane_means(lv: _Level, u_full: torch.Tensor) -> list:
    """Mean u_z (full-resolution px) over each interface plane's footprint, linear between the voxel rows."""
    out = []
    for z, _, foot in lv.planes:
        i = min(int(np.floor(z)), u_full.shape[1] - 2) if u_full.shape[1] > 1 else 0
        t = z - i
        row = u_full[0, i] if u_full.shape[1] == 1 else (1 - t) * u_full[0, i] + t * u_full[0, i + 1]
        out.append(row[foot].mean())
    return out


def _dense(P: torch.Tensor, lv: _Level) -> torch.Tensor:
    """Control values (C, gz, gy, gx) -> dense (C, D, H, W) by trilinear interpolation."""
    return tf.grid_sample(P[None], _grids(lv)[0], mode="bilinear", padding_mode="border", align_corners=True)[0]


#: voxels of mirrored B-spline coefficients around the volume: the cubic's reach beyond a border voxel
SPLINE_PAD = 2


def _spline_coefficients(volume: np.ndarray) -> np.ndarray:
    """Cubic B-spline coefficients (scipy's ``mirror`` boundary) padded by :data:`SPLINE_PAD` mirrored voxels,
    so that samples up to the border equal ``scipy.ndimage.map_coordinates(order=3, mode="mirror")``."""
    from scipy.ndimage import spline_filter

    c = spline_filter(volume, order=3, mode="mirror", output=np.float32)
    return np.pad(c, SPLINE_PAD, mode="reflect")


def _cubic_sample(coef: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Cubic B-spline interpolation of the padded coefficients ``coef`` (C, D+4, H+4, W+4;
    :func:`_spline_coefficients`) at the normalised points ``g`` of the unpadded volume (D', H', W', 3; x, y, z,
    align_corners) -> (C, D', H', W'): per axis the four B-spline weights of the fractional position fold into
    two linear lookups (w0 c[i-1] + w1 c[i] = g0 * linear(i - 1 + w1 / g0)), so the 64-tap sum is eight
    trilinear samples, one ``grid_sample`` call; exact, and differentiable in ``g`` through the same
    expression."""
    sizes = coef.shape[:0:-1]                                   # W, H, D (padded): the x, y, z extents
    parts = []
    for a, n in enumerate(sizes):
        p = (g[..., a] + 1) * (0.5 * max(int(n) - 2 * SPLINE_PAD - 1, 1)) + SPLINE_PAD
        i = torch.floor(p)
        t = p - i
        w0, w3 = (1 - t) ** 3 / 6, t ** 3 / 6
        w1 = (3 * t ** 3 - 6 * t ** 2 + 4) / 6
        w2 = 1 - w0 - w1 - w3
        g0, g1 = w0 + w1, w2 + w3
        to_norm = 2.0 / max(int(n) - 1, 1)
        parts.append(((i - 1 + w1 / g0) * to_norm - 1, (i + 1 + w3 / g1) * to_norm - 1, g0, g1))
    grids, weights = [], []
    for cz in (0, 1):
        for cy in (0, 1):
            for cx in (0, 1):
                grids.append(torch.stack([parts[0][cx], parts[1][cy], parts[2][cz]], -1))
                weights.append(parts[0][2 + cx] * parts[1][2 + cy] * parts[2][2 + cz])
    d = g.shape[0]
    v = tf.grid_sample(coef[None], torch.cat(grids, 0)[None], mode="bilinear", padding_mode="border",
                       align_corners=True)[0]                   # (C, 8 D', H', W')
    v = v.reshape(v.shape[0], 8, d, *v.shape[2:])
    return (v * torch.stack(weights)[None]).sum(1)


def _mapped(lv: _Level, u_full: torch.Tensor):
    """Normalised sampling points x + u(x) (u in full-resolution px, (3, D, H, W)) and the inside-the-volume flag."""
    g = _grids(lv)[1] + (u_full.permute(1, 2, 3, 0) / lv.binning * lv.scale).flip(-1)
    return g, (g.abs() <= 1 + lv.scale.flip(-1) / 2).all(-1)  # within the edge voxels (+- 0.5 px)


def _sample_deformed(lv: _Level, u_full: torch.Tensor, weights):
    """J at x + u(x) (u in full-resolution px, (3, D, H, W)); and the inside-the-volume flag."""
    g, inside = _mapped(lv, u_full)
    vol = lv.dfm[None] if weights is None else lv.dfm
    if lv.cubic:
        v = _cubic_sample(vol, g)
    else:
        v = tf.grid_sample(vol[None], g[None], mode="bilinear", padding_mode="border", align_corners=True)[0]
    return (v[0], inside) if weights is None else ((v * weights).sum(0), inside)


def _laplacian(P: torch.Tensor) -> torch.Tensor:
    lap = torch.zeros_like(P)
    for a in (1, 2, 3):
        if P.shape[a] >= 3:
            lap = lap + P.roll(1, a) + P.roll(-1, a) - 2 * P
    sl = tuple(slice(1, -1) if P.shape[a] >= 3 else slice(None) for a in (1, 2, 3))
    return lap[(slice(None),) + sl]


def _grad2(P: torch.Tensor) -> torch.Tensor:
    return sum((P.diff(dim=a) ** 2).mean() for a in (1, 2, 3) if P.shape[a] > 1)


def _psf_weights(lv: _Level, U: torch.Tensor, opts: GlobalOptions):
    """Per-voxel weights (K, D, H, W) over the z-blur stack for the current stretch along z."""
    if opts.psf_sigma_px <= 0:
        return None
    with torch.no_grad():
        uz = _dense(U[:1], lv)[0] / lv.binning
        lz = 1 + torch.gradient(uz, dim=0)[0]
        need = (opts.psf_sigma_px / lv.binning) * torch.sqrt(torch.clamp(lz ** 2 - 1, min=0))
        sg = torch.tensor(_PSF_STACK, device=need.device)
        need = torch.clamp(need, max=float(sg[-1]))
        k = torch.clamp(torch.searchsorted(sg, need.contiguous()) - 1, 0, len(sg) - 2)
        t = torch.clamp((need - sg[k]) / (sg[k + 1] - sg[k]), 0, 1)
        w = torch.zeros((len(sg),) + tuple(need.shape), device=need.device)
        w.scatter_(0, k[None], (1 - t)[None])
        w.scatter_add_(0, (k + 1)[None], t[None])
    return w


def _objective(lv: _Level, U, A, B, opts: GlobalOptions, weights, var: float):
    """(objective, data term, interface term): the grey-modelled SSD over the masked voxels mapped inside the
    deformed volume, normalised by the reference's variance, plus the regularisations and the interface constraints
    (included in the objective)."""
    u = _dense(U, lv)
    jw, inside = _sample_deformed(lv, u, weights)
    m = inside & lv.mask
    model = _dense(B, lv)[0] * lv.ref + _dense(A, lv)[0]
    data = ((jw - model)[m] ** 2).sum() / (var * max(int(m.sum()), 1))
    loss = data + opts.regularisation * (_laplacian(U) ** 2).mean()
    planes = sum(opts.interface_weight * (mean - target) ** 2  # InterfaceMotion constraints
                 for mean, (_, target, _) in zip(_plane_means(lv, u), lv.planes))
    if opts.grey_fields:
        loss = loss + opts.grey_regularisation * (_grad2(A) / var + _grad2(B))  # a in grey units: / var(I), as the data
        if lv.band:  # the grey fields held flat across the tied interfaces (GlobalOptions.interface_grey_stiffness)
            k = torch.tensor(lv.band, device=A.device)
            n = max((A.shape[1] - 1) * A.shape[2] * A.shape[3], 1)
            loss = loss + (opts.grey_regularisation * opts.interface_grey_stiffness / n) * (
                ((A[:, k + 1] - A[:, k]) ** 2).sum() / var + ((B[:, k + 1] - B[:, k]) ** 2).sum())
    return loss + planes, data, planes


def voxel_elements(lv):
    """Per axis: each level voxel's element (the control-grid cell it lies in, clamped as ``grid_sample``'s border
    padding) and its fraction within it."""
    elem, frac = [], []
    for a in range(3):
        g = lv.grid_shape[a]
        c = (np.arange(lv.ref.shape[a]) * lv.binning + (lv.binning - 1) / 2.0 - lv.origin[a]) / lv.spacing
        c = np.clip(c, 0, g - 1)
        e = np.minimum(np.floor(c).astype(np.int64), g - 2)
        elem.append(e)
        frac.append(c - e)
    return elem, frac


def plane_rows(lv, G):
    """Per interface plane: the row ``c`` with ``c . u_z(nodes)`` = the plane's mean u_z over its footprint (linear
    between the voxel rows, as :func:`_plane_means`), and its target (full-resolution px)."""
    out = []
    D = lv.ref.shape[0]
    elem, frac = voxel_elements(lv)
    for z, target, foot in lv.planes:
        i = min(int(np.floor(z)), D - 2) if D > 1 else 0
        rows = [(i, 1 - (z - i))] + ([(i + 1, z - i)] if D > 1 else [])
        ys, xs = np.nonzero(foot.cpu().numpy())
        c = np.zeros(G)
        for row, wz in rows:
            at = (np.full(ys.size, row), ys, xs)
            for a in range(8):
                node, weight = 0, wz / ys.size
                for axis in range(3):
                    bit = (a >> (2 - axis)) & 1
                    t = frac[axis][at[axis]]
                    node = node * lv.grid_shape[axis] + elem[axis][at[axis]] + bit
                    weight = weight * (t if bit else 1 - t)
                np.add.at(c, node, weight)
        out.append((c, float(target)))
    return out


def free_nodes(lv: _Level, u_full: torch.Tensor, elem, ties, supported: torch.Tensor) -> torch.Tensor:
    """(gz, gy, gx) bool: the nodes both solvers solve for (``_global_gn._free``): those of an element that holds a
    masked voxel mapped inside the deformed volume (``elem``: :func:`voxel_elements`' per-axis element of each voxel,
    as tensors) and ``supported`` (:func:`supported_nodes` as a tensor), and ``ties`` (the nodes an
    interface tie averages over, or None).  With
    ``GlobalOptions.hold_without_data`` L-BFGS holds the others at their start values: free, on the HQ phantom's
    route run to convergence they read det F - 1 0.019 low (0.096 at T6) and a median error of 0.235 px against
    0.184 px held (session 28)."""
    _, inside = _mapped(lv, u_full)
    o = (inside & lv.mask).to(torch.float32)
    for axis, e in enumerate(elem):  # each voxel's count into its element, one axis at a time
        shape = list(o.shape)
        shape[axis] = lv.grid_shape[axis] - 1
        o = torch.zeros(shape, device=o.device).index_add_(axis, e, o)
    with_data = tf.max_pool3d(tf.pad((o > 0).to(torch.float32)[None, None], (1, 1, 1, 1, 1, 1)), 2, stride=1)[0, 0] > 0
    with_data = with_data & supported
    return with_data if ties is None else with_data | ties


def supported_nodes(lv: _Level, fraction: float) -> np.ndarray:
    """(gz, gy, gx) bool: the level's nodes with at least ``fraction`` of their support (the voxels within one
    spacing, :func:`support_boxes`) in the mask: the nodes the solvers may solve for (``GlobalOptions.mask_fraction``;
    the others are ``OUTSIDE_MASK`` at the finest level).  A node at the mask's edge whose elements hold a few masked
    voxels is otherwise solved from them: on a textured 60^3 crop stretched 30 % axially with a 5 px face band masked
    out, usable nodes read up to 5.8 px off; held below 60 %, 0.080 px (``tests/dvc/test_cli.py``; session 35)."""
    m = lv.mask.cpu().numpy()
    f = lv.binning
    origin = (np.asarray(lv.origin, float) - (f - 1) / 2.0) / f  # full-resolution px -> the level's voxels
    return support_fraction(m, support_boxes(m.shape, origin, lv.spacing // f, lv.grid_shape)) >= fraction


def tie_nodes(lv: _Level):
    """(gz, gy, gx) bool tensor of the nodes the interface ties average over, or None without ties."""
    if not lv.planes:
        return None
    rows = plane_rows(lv, int(np.prod(lv.grid_shape)))
    on = np.any([c != 0 for c, _ in rows], axis=0).reshape(lv.grid_shape)
    return torch.from_numpy(on).to(lv.ref.device)


def _minimise(lv: _Level, U, A, B, opts: GlobalOptions, weights):
    if opts.solver == "gauss-newton":
        from ._global_gn import minimise_gn

        return minimise_gn(lv, U, A, B, opts, weights)
    U = U.clone().requires_grad_(True)
    params = [U]
    if opts.grey_fields:
        A = A.clone().requires_grad_(True)
        B = B.clone().requires_grad_(True)
        params += [A, B]
    var = float(lv.ref[lv.mask].var()) or 1.0
    with torch.no_grad():  # the scale without the interface term: a start far from an interface's target would
        # otherwise make the data term's later progress look negligible and stop the level early
        loss, _, planes = _objective(lv, U, A, B, opts, weights, var)
        start = float(loss - planes)
    # L-BFGS minimises the objective divided by its start value, so that its tolerances are relative as
    # GlobalOptions.tolerance says: torch's tests (the change of the objective, and the first step's
    # directional derivative -|g|^2) are absolute, and on the raw objective (~1e-2, |g|^2 near 1e-7 at the
    # phantom's 7e4 unknowns) a continuation from a settled field stopped after one iteration without moving
    # (final_regularisation was a no-op on the phantom's T1 and T2; session 18)
    scale = 1.0 / start if start > 0 else 1.0
    opt = torch.optim.LBFGS(params, lr=1, max_iter=opts.max_iterations, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=opts.tolerance)
    last = {}
    compiled = None
    if lv.ref.device.type == "cpu":  # the compiled value and gradient: 6.6x torch's autograd per evaluation
        from ._global_gn import compiled_criterion

        compiled = compiled_criterion(lv, opts, weights)
    hold = opts.hold_without_data
    if hold and compiled is None:  # torch's route finds the free nodes itself
        elem = [torch.from_numpy(e).to(lv.ref.device) for e in voxel_elements(lv)[0]]
        ties = tie_nodes(lv)
        supported = torch.from_numpy(supported_nodes(lv, opts.mask_fraction)).to(lv.ref.device)

    def closure():  # with ``hold``, the gradient of the nodes held at their start values (free_nodes) is zero
        opt.zero_grad()
        if compiled is not None:
            evaluate, free = compiled
            loss, data, grads = evaluate(U.detach(), A.detach(), B.detach())
            keep = free().to(torch.float32) if hold else 1.0
            for p, g in zip(params, grads):
                p.grad = g * scale * keep
            last["data"], last["loss"] = data, loss
            return torch.tensor(loss * scale)
        loss, data, _ = _objective(lv, U, A, B, opts, weights, var)
        (loss * scale).backward()
        if hold:
            with torch.no_grad():
                keep = free_nodes(lv, _dense(U, lv), elem, ties, supported).to(torch.float32)
                for p in params:
                    p.grad *= keep
        last["data"], last["loss"] = float(data.detach()), float(loss.detach())
        return loss * scale

    opt.step(closure)
    n_iter = int(opt.state[opt._params[0]].get("n_iter", 0))
    return U.detach(), A.detach(), B.detach(), n_iter, last


def _transfer(P: torch.Tensor, src_origin, src_spacing, src_gs, dst_origin, dst_spacing, dst_gs):
    """Sample control values (C, g...) of one grid at the nodes of another (trilinear, clamped)."""
    dev = P.device
    axes = [torch.tensor(dst_origin[a] + dst_spacing * np.arange(dst_gs[a]), dtype=torch.float32, device=dev)
            for a in range(3)]
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    c = (pts - torch.tensor(src_origin, dtype=torch.float32, device=dev)) / src_spacing
    g = _normalised(c, src_gs)[None]
    return tf.grid_sample(P[None], g, mode="bilinear", padding_mode="border", align_corners=True)[0]


def _support_fractions(lv: _Level, U):
    """Per finest-level node: fraction of its support (the voxels within one spacing, clipped to the volume) in the
    mask, and of those masked voxels the fraction mapped out of view.  Box sums at the nodes from summed-volume
    tables: at 100^3 voxels and spacing 10, 0.05 s instead of 14.4 s for two stride-1 21^3 average pools."""
    m = lv.mask.cpu().numpy()
    boxes = support_boxes(m.shape, lv.origin, lv.spacing, lv.grid_shape)
    pm = support_fraction(m, boxes)
    po = support_fraction(_out_of_view(lv, U), boxes)
    frac_out = np.where(pm > 0, po / np.maximum(pm, 1e-12), 0.0)
    return pm.astype(np.float32), frac_out.astype(np.float32)


def _out_of_view(lv: _Level, U) -> np.ndarray:
    """(D, H, W) bool: the masked voxels ``U`` maps outside the deformed volume; on the CPU by the compiled kernel
    (``_gn_kernels.out_of_view``, which spares the CPU routes torch's voxel grids), on a GPU by torch."""
    if lv.ref.device.type == "cpu":
        from ._global_gn import _geometry
        from ._gn_kernels import out_of_view

        ranges, tfrac = _geometry(lv)
        u = np.ascontiguousarray(U.detach().reshape(3, -1).numpy(), np.float64)
        return out_of_view(lv.mask.numpy(), u, np.asarray(lv.grid_shape, np.int64), ranges, tfrac, float(lv.binning))
    with torch.no_grad():
        _, inside = _mapped(lv, _dense(U, lv))
    return lv.mask.cpu().numpy() & ~inside.cpu().numpy()


def _level_note(last: dict, **head) -> dict:
    """One level's notes: ``head`` (binning, spacing, ...), the minimiser's final objective and data term, and the
    Gauss-Newton steps whose conjugate gradients stopped at their cap (only when there were any)."""
    note = {**head, "objective": round(last.get("loss", float("nan")), 8),
            "data_term": round(last.get("data", float("nan")), 8)}
    if last.get("cg_capped"):
        note["cg_capped_steps"] = last["cg_capped"]
    return note


def solve_pyramid(ref, dfm, msk, u0_nodes, origin, opts: GlobalOptions, interfaces=(), plane_z_px=None) -> Solution:
    """Coarse to fine over the pyramid (L-BFGS or Gauss-Newton, ``opts.solver``); ``u0_nodes`` (gz, gy, gx, 3) on the finest grid; ``interfaces``
    (:class:`~tomo4d.dvc.global_dvc.InterfaceMotion`) tie planes' mean axial displacement."""
    dev = check_device("device", opts.device)
    if opts.solver == "gauss-newton" and dev.type != "cpu":
        raise InputError(f"solver='gauss-newton' runs on the CPU, not on device={opts.device!r}; give device='cpu' "
                         "or solver='lbfgs' (torch, any device)")
    fs = [2 ** k for k in reversed(range(opts.levels)) if min(n // 2 ** k for n in ref.shape) >= 8
          and min(n // 2 ** k for n in ref.shape) >= 2 * opts.node_spacing]
    fs = fs or [1]
    fine_gs = u0_nodes.shape[:3]
    prev = (torch.from_numpy(np.ascontiguousarray(np.moveaxis(u0_nodes, -1, 0), np.float32)).to(dev),
            origin, opts.node_spacing, fine_gs)
    A = B = None
    notes, n_iter, lv = [], 0, None
    unit = grey_unit(ref, msk)
    for f in fs:
        lv = _level(ref, dfm, msk, f, opts, dev, interfaces, plane_z_px, grey_scale=unit)
        U = _transfer(prev[0], prev[1], prev[2], prev[3], lv.origin, lv.spacing, lv.grid_shape)
        if A is None:
            A = torch.zeros((1,) + lv.grid_shape, device=dev)
            B = torch.ones((1,) + lv.grid_shape, device=dev)
        else:
            A = _transfer(A, prev[1], prev[2], prev[3], lv.origin, lv.spacing, lv.grid_shape)
            B = _transfer(B, prev[1], prev[2], prev[3], lv.origin, lv.spacing, lv.grid_shape)
        passes = 2 if opts.psf_sigma_px > 0 else 1
        for _ in range(passes):
            weights = _psf_weights(lv, U, opts)
            U, A, B, n_iter, last = _minimise(lv, U, A, B, opts, weights)
        notes.append(_level_note(last, binning=f, node_spacing_px=lv.spacing, iterations=n_iter))
        prev = (U, lv.origin, lv.spacing, lv.grid_shape)
    if opts.final_regularisation is not None:  # continuation: the finest level again, weaker regularisation
        weak = replace(opts, regularisation=opts.final_regularisation)
        U, A, B, n_iter, last = _minimise(lv, U, A, B, weak, _psf_weights(lv, U, weak))
        notes.append(_level_note(last, binning=lv.binning, node_spacing_px=lv.spacing,
                                 regularisation=weak.regularisation, iterations=n_iter))
    in_mask, out_view = _support_fractions(lv, U)
    u_nodes = np.moveaxis(U.cpu().numpy().astype(np.float64), 0, -1)
    G = int(np.prod(lv.grid_shape))  # each tie's plane mean as the linear form of the nodes it is (no dense field)
    reached = [float(c @ u_nodes[..., 0].ravel()) for c, _ in plane_rows(lv, G)] if lv.planes else []
    planes = [{"z_px": float(p.z_px), "target_px": float(p.displacement_px), "reached_px": round(r, 4)}
              for p, r in zip(interfaces, reached)]
    return Solution(u_nodes, in_mask, out_view, notes, converged=n_iter < opts.max_iterations, interfaces=planes)
