"""Microstructure of the phantom: particles and random fields (generation), and the material
(phase and particle labels) at reference positions.

All positions are in the sample frame of :mod:`tomo4d.phantom._model` (nm, (z, y, x)).
"""

from __future__ import annotations

import numpy as np

from ._deform import _Bounds, front_threshold
from ._model import Fields, LithiationMode, Particles, Phase

# ----------------------------------------------------------------------------------------------
# generation
# ----------------------------------------------------------------------------------------------

def _random_rotations(rng, n):
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


def _unit(rng, shape):
    v = rng.normal(size=shape + (3,))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _place_particles(rng, layout, *, si_fraction, radius_nm, radius_sigma, margin_nm):
    """Random sequential addition of log-normal spheres in the anode slab (touching allowed)."""
    z0, z1 = layout.z_collector_nm, layout.z_separator_nm
    ly, lx = layout.lq_extent_nm[1] + 2 * margin_nm, layout.lq_extent_nm[2] + 2 * margin_nm
    slab = (z1 - z0) * ly * lx
    target = si_fraction * slab
    max_r = 0.45 * (z1 - z0)
    radii = []
    vol = 0.0
    while vol < target and len(radii) < 20000:
        r = float(np.clip(radius_nm * np.exp(rng.normal(0.0, radius_sigma)), 0.5 * radius_nm,
                          min(2.2 * radius_nm, max_r)))
        radii.append(r)
        vol += 4.0 / 3.0 * np.pi * r ** 3
    radii = np.sort(np.asarray(radii))[::-1]
    centres = np.empty((len(radii), 3))
    placed_r = np.empty(len(radii))
    kept = np.zeros(len(radii), bool)
    n = 0
    for i, r in enumerate(radii):
        for _ in range(60):
            c = np.array([rng.uniform(z0 + r, max(z1 - r, z0 + r + 1.0)),
                          rng.uniform(-margin_nm, ly - margin_nm),
                          rng.uniform(-margin_nm, lx - margin_nm)])
            if n:
                d = np.linalg.norm(centres[:n] - c, axis=1)
                if np.any(d < 0.9 * (placed_r[:n] + r)):
                    continue
            centres[n] = c
            placed_r[n] = r
            kept[i] = True
            n += 1
            break
    radii_kept = radii[kept]
    return centres[:n], radii_kept


def _shape_rho(particles, p, d):
    """Star-shaped normalised radius of offsets ``d`` (m, 3) from particle ``p``'s centre (< 1 inside)."""
    local = d @ particles.rotation[p]
    q = local / particles.axes[p]
    rq = np.sqrt(np.einsum("ij,ij->i", q, q))
    dn = np.sqrt(np.einsum("ij,ij->i", d, d))
    nrm = d / np.maximum(dn, 1e-9)[:, None]
    bump = np.zeros(len(d))
    for j in range(particles.bump_amp.shape[1]):
        bump += particles.bump_amp[p, j] * np.cos(3.0 * (nrm @ particles.bump_dir[p, j])
                                                  + particles.bump_phase[p, j])
    return rq / (particles.radius_nm[p] * (1.0 + bump))


def _plane_distance(particles, p, d):
    """Distance to the nearest internal plane of particle ``p``, in units of its radius."""
    dist = np.abs(d @ particles.plane_normal[p].T - particles.plane_offset_nm[p])
    return dist.min(axis=1) / particles.radius_nm[p]


def _in_crack(particles, p, d, width_nm):
    if not particles.cracked[p]:
        return np.zeros(len(d), bool)
    r = particles.radius_nm[p]
    across = np.abs(d @ particles.crack_normal[p] - particles.crack_offset_nm[p])
    along = d @ particles.crack_side[p]
    return (across < 0.5 * width_nm) & (along > -0.2 * r)


def make_particles(rng, layout, *, si_fraction, radius_nm, radius_sigma, core_shell_fraction,
                   cracked_fraction, margin_nm) -> Particles:
    centres, radii = _place_particles(rng, layout, si_fraction=si_fraction, radius_nm=radius_nm,
                                      radius_sigma=radius_sigma, margin_nm=margin_nm)
    n = len(radii)
    rot = _random_rotations(rng, n)
    axes = np.exp(rng.normal(0.0, 0.12, size=(n, 3)))
    axes /= np.cbrt(np.prod(axes, axis=1, keepdims=True))
    bump_dir = _unit(rng, (n, 4))
    bump_amp = rng.uniform(-0.06, 0.06, size=(n, 4))
    bump_phase = rng.uniform(0, 2 * np.pi, size=(n, 4))

    def exact_count(frac):
        k = int(round(frac * n))
        if 0 < frac and k == 0 and n > 1:
            k = 1
        if frac < 1 and k == n and n > 1:
            k = n - 1
        sel = np.zeros(n, bool)
        sel[rng.permutation(n)[:k]] = True
        return sel

    core_shell = exact_count(core_shell_fraction)
    mode = np.where(core_shell, int(LithiationMode.CORE_SHELL), int(LithiationMode.NETWORK))
    cracked = exact_count(cracked_fraction)
    crack_normal = _unit(rng, (n,))
    side = _unit(rng, (n,))
    side -= np.einsum("ij,ij->i", side, crack_normal)[:, None] * crack_normal
    side /= np.linalg.norm(side, axis=1, keepdims=True)
    crack_offset = rng.uniform(-0.3, 0.3, n) * radii
    # (111)-like internal planes in the particle's own orientation
    n111 = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float) / np.sqrt(3.0)
    plane_normal = np.einsum("pij,kj->pki", rot, n111)
    plane_offset = rng.uniform(-0.55, 0.55, size=(n, 4)) * radii[:, None]
    rate = np.exp(rng.normal(0.0, 0.45, n))
    parts = Particles(centres, radii, rot, axes, bump_dir, bump_amp, bump_phase, mode, cracked,
                      crack_normal, side, crack_offset, plane_normal, plane_offset, rate,
                      np.zeros((n, 101)))
    # Monte-Carlo quantiles of the network front variable over each particle's solid volume
    quant = np.zeros((n, 101))
    levels = np.linspace(0, 1, 101)
    for p in range(n):
        pts = rng.uniform(-1.5, 1.5, size=(3000, 3)) * radii[p]
        inside = _shape_rho(parts, p, pts) < 1.0
        inside &= ~_in_crack(parts, p, pts, layout.crack_width_nm)
        pts = pts[inside]
        if len(pts) < 10:
            quant[p] = levels
            continue
        quant[p] = np.quantile(_plane_distance(parts, p, pts), levels)
    object.__setattr__(parts, "network_quantiles", quant)
    return parts


def make_fields(rng, layout, *, porosity, pore_size_nm, fibre_fraction, fibre_radius_nm,
                margin_nm) -> Fields:
    from scipy.ndimage import gaussian_filter

    lz, ly, lx = layout.lq_extent_nm
    # pores: only the anode slab, at the HQ voxel pitch
    s = layout.hq_voxel_nm
    z_lo, z_hi = layout.z_collector_nm - 3 * s, layout.z_separator_nm + 3 * s
    org = np.array([z_lo, -margin_nm, -margin_nm])
    n_p = (int(np.ceil((z_hi - z_lo) / s)) + 1, int(np.ceil((ly + 2 * margin_nm) / s)) + 1,
           int(np.ceil((lx + 2 * margin_nm) / s)) + 1)
    pore = gaussian_filter(rng.standard_normal(n_p, dtype=np.float32), pore_size_nm / s, mode="wrap")
    thr = float(np.quantile(pore, 1.0 - porosity))
    # separator: two anisotropic fields, long along x and long along y (woven fibres)
    t = layout.lq_voxel_nm
    zf_lo = layout.z_separator_nm - 3 * t
    orgf = np.array([zf_lo, -margin_nm, -margin_nm])
    n_f = (int(np.ceil((lz + margin_nm - zf_lo) / t)) + 1, int(np.ceil((ly + 2 * margin_nm) / t)) + 1,
           int(np.ceil((lx + 2 * margin_nm) / t)) + 1)
    short, long_ = fibre_radius_nm / t, 8.0 * fibre_radius_nm / t
    fx = gaussian_filter(rng.standard_normal(n_f, dtype=np.float32), (short, short, long_), mode="wrap")
    fy = gaussian_filter(rng.standard_normal(n_f, dtype=np.float32), (short, long_, short), mode="wrap")
    fx /= fx.std()
    fy /= fy.std()
    # each family covers about half of the solid fraction: P(a or b) = fibre_fraction
    each = 1.0 - np.sqrt(1.0 - fibre_fraction)
    fthr = float(np.quantile(fx, 1.0 - each))
    return Fields(pore, org, s, thr, fx, fy, orgf, t, fthr)


def _sample(field, origin, spacing, pts):
    from scipy.ndimage import map_coordinates

    coords = ((pts - origin) / spacing).T
    return map_coordinates(field, coords, order=1, mode="nearest", prefilter=False)


# ----------------------------------------------------------------------------------------------
# material at reference positions
# ----------------------------------------------------------------------------------------------

def material(model, step, ref):
    """Phase and particle labels of the material at reference positions ``ref`` (..., 3).

    Returns
    -------
    phase : ndarray of uint8, shape ref.shape[:-1]
    particle : ndarray of int32, shape ref.shape[:-1]   (0 outside particles, else 1-based id)
    """
    lay, fields, parts = model.layout, model.fields, model.particles
    shp = ref.shape[:-1]
    flat = ref.reshape(-1, 3)
    z = flat[:, 0]
    phase = np.full(len(flat), Phase.PORE, np.uint8)
    pid = np.zeros(len(flat), np.int32)
    phase[z < lay.z_collector_nm] = Phase.COLLECTOR
    anode = (z >= lay.z_collector_nm) & (z < lay.z_separator_nm)
    if anode.any():
        v = _sample(fields.pore, fields.pore_origin_nm, fields.pore_spacing_nm, flat[anode])
        phase[anode] = np.where(v > fields.pore_threshold, Phase.PORE, Phase.MATRIX)
    sep = z >= lay.z_separator_nm
    if sep.any():
        q = flat[sep]
        a = _sample(fields.fibre_x, fields.fibre_origin_nm, fields.fibre_spacing_nm, q)
        b = _sample(fields.fibre_y, fields.fibre_origin_nm, fields.fibre_spacing_nm, q)
        thr = fields.fibre_threshold
        phase[sep] = np.where((a > thr) | (b > thr), Phase.SEPARATOR, Phase.PORE)
    st = model.steps[step]
    bounds = _Bounds(ref)
    for p in range(len(parts)):
        c, r = parts.centre_nm[p], parts.radius_nm[p]
        reach = 1.5 * r * float(parts.axes[p].max())
        sel = bounds.select(c - reach, c + reach)
        if sel is None:
            continue
        if bounds.grid:
            ny, nx = shp[1], shp[2]
            idx = ((np.arange(sel[0].start, sel[0].stop)[:, None, None] * ny
                    + np.arange(sel[1].start, sel[1].stop)[None, :, None]) * nx
                   + np.arange(sel[2].start, sel[2].stop)[None, None, :]).ravel()
        else:
            idx = sel
        d = flat[idx] - c
        rho = _shape_rho(parts, p, d)
        inside = rho < 1.0
        if not inside.any():
            continue
        idx, d, rho = idx[inside], d[inside], rho[inside]
        crack = _in_crack(parts, p, d, lay.crack_width_nm)
        thr = front_threshold(parts, p, float(st.fraction[p]))
        if parts.mode[p] == LithiationMode.CORE_SHELL:
            front = 1.0 - rho
        else:
            front = _plane_distance(parts, p, d)
        lith = front < thr
        phase[idx] = np.where(crack, Phase.PORE, np.where(lith, Phase.LITHIATED_SILICON, Phase.SILICON))
        pid[idx] = np.where(crack, 0, p + 1)
    return phase.reshape(shp), pid.reshape(shp)


def grid_points(layout, grid, shape=None):
    """Sample-frame positions (nz, ny, nx, 3) of the voxel centres of ``grid`` ("hq"/"lq")."""
    shape = layout.shape if shape is None else shape
    v = layout.voxel_nm(grid)
    o = layout.grid_origin_nm(grid)
    axes = [o[a] + v * np.arange(shape[a]) for a in range(3)]
    pts = np.empty(tuple(shape) + (3,))
    pts[..., 0] = axes[0][:, None, None]
    pts[..., 1] = axes[1][None, :, None]
    pts[..., 2] = axes[2][None, None, :]
    return pts


# ----------------------------------------------------------------------------------------------
