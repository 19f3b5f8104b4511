"""The physical model behind :mod:`tomo4d.phantom`: microstructure, lithiation and deformation.

Everything here is defined in the continuous *sample frame*: positions in nm, axes ``(z, y, x)``,
origin at the outer corner of the low-quality (LQ) field of view, so that the centre of LQ voxel
``i`` sits at ``(i + 0.5) * lq_voxel_nm``.  Images of any voxel grid are obtained by evaluating
the model at the grid's voxel centres, which makes the HQ and LQ scans views of one and the same
sample, and later time steps exactly the T0 material mapped through the deformation.

This module is private; the public entry points are in :mod:`tomo4d.phantom`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

#: Particle influence radius of the local swelling map, in units of the particle radius.
RHO_CUT = 3.0
#: Li concentration of fully lithiated silicon (Li15Si4, Li3.75Si, 3.8x volume), mol/L.
LI_IN_LITHIATED_SI_MOL_L = 81.9
#: Li concentration of the liquid electrolyte (1 M LiPF6), mol/L.
LI_IN_ELECTROLYTE_MOL_L = 1.0
#: Volume expansion of silicon at full lithiation (Li15Si4: +280 %).
SI_FULL_VOLUME_EXPANSION = 2.8


class Phase(enum.IntEnum):
    """Phase label values of :meth:`GroundTruth.labels` (uint8 volumes).

    ``PORE`` is electrolyte-filled pore space (between matrix, in cracks, between separator fibres).
    """

    PORE = 0
    MATRIX = 1
    SILICON = 2
    LITHIATED_SILICON = 3
    COLLECTOR = 4
    SEPARATOR = 5


class LithiationMode(enum.IntEnum):
    """How a particle lithiates: a shell growing inwards, or branches along internal planes."""

    CORE_SHELL = 1
    NETWORK = 2


@dataclass(frozen=True)
class Particles:
    """The silicon particles of one sample (reference configuration, T0).

    Attributes
    ----------
    centre_nm : ndarray, shape (n, 3)
        Centres in the sample frame, nm, (z, y, x).
    radius_nm : ndarray, shape (n,)
        Nominal radius (log-normal), nm; the surface deviates by the shape terms.
    rotation : ndarray, shape (n, 3, 3)
        Orientation of the ellipsoidal shape and of the internal (111)-like planes.
    axes : ndarray, shape (n, 3)
        Relative ellipsoid semi-axes (product 1).
    bump_dir, bump_amp, bump_phase : ndarrays, shape (n, 4, 3), (n, 4), (n, 4)
        Directional surface undulations (irregular, non-spherical shapes).
    mode : ndarray of int, shape (n,)
        :class:`LithiationMode` values.
    cracked : ndarray of bool, shape (n,)
    crack_normal, crack_side : ndarrays, shape (n, 3)
        Crack plane normal and the in-plane direction along which the crack runs in from the surface.
    crack_offset_nm : ndarray, shape (n,)
    plane_normal : ndarray, shape (n, 4, 3); plane_offset_nm : ndarray, shape (n, 4)
        Internal planes along which network-like lithiation branches grow.
    rate : ndarray, shape (n,)
        Kinetic factor k: lithiated fraction ``f = 1 - (1 - soc)**k``.
    network_quantiles : ndarray, shape (n, 101)
        Quantiles (0, 1, ..., 100 %) of the distance-to-plane of the particle's solid volume,
        in units of the radius: the front position for a given lithiated fraction.
    """

    centre_nm: np.ndarray
    radius_nm: np.ndarray
    rotation: np.ndarray
    axes: np.ndarray
    bump_dir: np.ndarray
    bump_amp: np.ndarray
    bump_phase: np.ndarray
    mode: np.ndarray
    cracked: np.ndarray
    crack_normal: np.ndarray
    crack_side: np.ndarray
    crack_offset_nm: np.ndarray
    plane_normal: np.ndarray
    plane_offset_nm: np.ndarray
    rate: np.ndarray
    network_quantiles: np.ndarray

    def __len__(self) -> int:
        return int(self.radius_nm.shape[0])


@dataclass(frozen=True)
class Layout:
    """Geometry of the sample frame and of the electrode layers (all nm, (z, y, x))."""

    shape: tuple[int, int, int]
    hq_voxel_nm: float
    lq_voxel_nm: float
    lq_extent_nm: tuple[float, float, float]
    hq_offset_nm: tuple[float, float, float]
    z_collector_nm: float
    anode_thickness_nm: float
    crack_width_nm: float

    @property
    def z_separator_nm(self) -> float:
        return self.z_collector_nm + self.anode_thickness_nm

    @property
    def axis_yx_nm(self) -> tuple[float, float]:
        """Rotation axis position (y, x): the centre of the LQ field."""
        return self.lq_extent_nm[1] / 2.0, self.lq_extent_nm[2] / 2.0

    def grid_origin_nm(self, grid: str) -> np.ndarray:
        """Sample-frame position of the centre of voxel (0, 0, 0) of ``grid`` ("hq" or "lq")."""
        if grid == "hq":
            return np.asarray(self.hq_offset_nm) + 0.5 * self.hq_voxel_nm
        return np.full(3, 0.5 * self.lq_voxel_nm)

    def voxel_nm(self, grid: str) -> float:
        return self.hq_voxel_nm if grid == "hq" else self.lq_voxel_nm


@dataclass(frozen=True)
class Fields:
    """Smooth random fields on regular grids: pore space of the matrix and separator fibres."""

    pore: np.ndarray
    pore_origin_nm: np.ndarray
    pore_spacing_nm: float
    pore_threshold: float
    fibre_x: np.ndarray
    fibre_y: np.ndarray
    fibre_origin_nm: np.ndarray
    fibre_spacing_nm: float
    fibre_threshold: float


@dataclass(frozen=True)
class StepState:
    """Deformation and lithiation state of one time step.

    ``axial_strain`` is the mean zz strain of the anode, ``in_plane_strain`` the yy = xx strain on
    the separator side, ``swelling`` the local radial strain of each particle's swelling map and
    ``fraction`` each particle's lithiated volume fraction.
    """

    soc: float
    axial_strain: float
    in_plane_strain: float
    fraction: np.ndarray
    swelling: np.ndarray


@dataclass(frozen=True)
class Model:
    """A complete sample: layout, particles, random fields and the per-step states."""

    layout: Layout
    particles: Particles
    fields: Fields
    steps: tuple[StepState, ...]
    expansion_gradient: float


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
# lithiation and the schedule
# ----------------------------------------------------------------------------------------------

def make_steps(particles, soc, *, expansion, in_plane_ratio, residual_fraction,
               particle_swelling) -> tuple[StepState, ...]:
    soc = np.asarray(soc, float)
    states = []
    f_max = np.zeros(len(particles))
    soc_max = 0.0
    for s in soc:
        f = 1.0 - (1.0 - s) ** particles.rate
        f_max = np.maximum(f_max, f)
        soc_max = max(soc_max, s)
        f_eff = f + residual_fraction * (f_max - f)
        soc_eff = s + residual_fraction * (soc_max - s)
        axial = expansion * soc_eff
        swelling = particle_swelling * (np.cbrt(1.0 + SI_FULL_VOLUME_EXPANSION * f_eff) - 1.0)
        states.append(StepState(float(s), float(axial), float(in_plane_ratio * axial), f, swelling))
    return tuple(states)


def front_threshold(particles, p, fraction):
    """Front position (units of the radius) for lithiated fraction ``fraction`` of particle ``p``."""
    if fraction <= 0:
        return -np.inf
    if fraction >= 1:
        return np.inf
    if particles.mode[p] == LithiationMode.CORE_SHELL:
        # shell depth 1 - rho_s: volume of {rho_s > 1 - t} is 1 - (1 - t)^3 of a star-shaped body
        return 1.0 - np.cbrt(1.0 - fraction)
    return float(np.interp(fraction * 100, np.arange(101), particles.network_quantiles[p]))


# ----------------------------------------------------------------------------------------------
# deformation: phi_t = G_t o Q_1 o ... o Q_n (Q_p local particle swelling, G_t electrode scale)
# ----------------------------------------------------------------------------------------------

class _Bounds:
    """Conservative per-index coordinate bounds of a grid of points (nz, ny, nx, 3)."""

    def __init__(self, pts):
        self.pts = pts
        self.grid = pts.ndim == 4
        if self.grid:
            self.lo, self.hi = [], []
            for a in range(3):
                other = tuple(b for b in range(3) if b != a)
                self.lo.append(pts[..., a].min(axis=other))
                self.hi.append(pts[..., a].max(axis=other))

    def select(self, lo3, hi3):
        if not self.grid:
            ok = np.all((self.pts >= lo3) & (self.pts <= hi3), axis=-1)
            idx = np.flatnonzero(ok)
            return idx if idx.size else None
        sl = []
        for a in range(3):
            idx = np.flatnonzero((self.hi[a] >= lo3[a]) & (self.lo[a] <= hi3[a]))
            if idx.size == 0:
                return None
            sl.append(slice(int(idx[0]), int(idx[-1]) + 1))
        return tuple(sl)

    def update(self, sel, sub):
        if not self.grid:
            return
        for a in range(3):
            other = tuple(b for b in range(3) if b != a)
            s = sel[a]
            self.lo[a][s] = np.minimum(self.lo[a][s], sub[..., a].min(axis=other))
            self.hi[a][s] = np.maximum(self.hi[a][s], sub[..., a].max(axis=other))


def _psi(rho):
    """Smooth swelling profile: ~1 inside the particle, ~rho^-3 outside, 0 beyond RHO_CUT."""
    out = (1.0 + rho ** 8) ** (-0.375)
    u = np.clip(rho - (RHO_CUT - 1.0), 0.0, 1.0)
    return out * (1.0 - u * u * (3.0 - 2.0 * u))


def _window(z, z_cc, r):
    u = np.clip((z - z_cc) / r, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _particle_disp(x, c, r, amp, z_cc):
    d = x - c
    rho = np.sqrt(np.einsum("ij,ij->i", d, d)) / r
    return (amp * _psi(rho) * _window(x[:, 0], z_cc, r))[:, None] * d


def _map_ball_numpy(x, c, r, amp, z_cc, inverse):
    """Apply (or invert) one particle's swelling map to points ``x`` (m, 3), in place."""
    if not inverse:
        x += _particle_disp(x, c, r, amp, z_cc)
        return
    target = x.copy()
    active = np.arange(len(x))
    for _ in range(100):
        y = target[active] - _particle_disp(x[active], c, r, amp, z_cc)
        delta = np.abs(y - x[active]).max(axis=1)
        x[active] = y
        active = active[delta > 1e-4]
        if active.size == 0:
            break


_NUMBA_KERNEL = None


def _numba_kernel():
    """The compiled per-point kernel (numba, cached on disk), or None when numba is unavailable."""
    global _NUMBA_KERNEL
    if _NUMBA_KERNEL is None:
        try:
            import numba
        except ImportError:  # pragma: no cover - numba is a dependency
            _NUMBA_KERNEL = False
            return None

        @numba.njit(cache=True, nogil=True)
        def kernel(x, c0, c1, c2, r, amp, z_cc, rho_cut, inverse):
            inv_r2 = 1.0 / (r * r)
            cut2 = rho_cut * rho_cut
            taper2 = (rho_cut - 1.0) * (rho_cut - 1.0)
            for i in range(x.shape[0]):
                t0, t1, t2 = x[i, 0], x[i, 1], x[i, 2]
                y0, y1, y2 = t0, t1, t2
                for _ in range(100):
                    d0, d1, d2 = y0 - c0, y1 - c1, y2 - c2
                    r2 = (d0 * d0 + d1 * d1 + d2 * d2) * inv_r2
                    if r2 >= cut2:
                        f = 0.0
                    else:
                        r4 = r2 * r2
                        f = (1.0 + r4 * r4) ** (-0.375)
                        if r2 > taper2:
                            u = min(np.sqrt(r2) - (rho_cut - 1.0), 1.0)
                            f *= 1.0 - u * u * (3.0 - 2.0 * u)
                        w = min(max((y0 - z_cc) / r, 0.0), 1.0)
                        f *= amp * w * w * (3.0 - 2.0 * w)
                    if not inverse:
                        y0, y1, y2 = t0 + f * d0, t1 + f * d1, t2 + f * d2
                        break
                    n0, n1, n2 = t0 - f * d0, t1 - f * d1, t2 - f * d2
                    delta = max(abs(n0 - y0), abs(n1 - y1), abs(n2 - y2))
                    y0, y1, y2 = n0, n1, n2
                    if delta < 1e-4:
                        break
                x[i, 0], x[i, 1], x[i, 2] = y0, y1, y2

        _NUMBA_KERNEL = kernel
    return _NUMBA_KERNEL or None


def _particle_pass(model, step, pts, *, inverse):
    st = model.steps[step]
    parts = model.particles
    z_cc = model.layout.z_collector_nm
    bounds = _Bounds(pts)
    kernel = _numba_kernel()
    order = range(len(parts) - 1, -1, -1) if inverse else range(len(parts))
    for p in order:
        amp = float(st.swelling[p])
        if amp == 0.0:
            continue
        c = parts.centre_nm[p]
        r = float(parts.radius_nm[p])
        reach = RHO_CUT * r
        sel = bounds.select(c - reach, c + reach)
        if sel is None:
            continue
        sub = pts[sel]
        flat = sub.reshape(-1, 3)
        d = flat - c
        near = np.einsum("ij,ij->i", d, d) < reach * reach
        if not near.any():
            continue
        x = np.ascontiguousarray(flat[near])
        if kernel is not None:
            kernel(x, float(c[0]), float(c[1]), float(c[2]), r, amp, float(z_cc), float(RHO_CUT), bool(inverse))
        else:
            _map_ball_numpy(x, c, r, amp, z_cc, inverse)
        flat[near] = x
        sub = flat.reshape(sub.shape)
        pts[sel] = sub
        bounds.update(sel, sub)
    return pts


def _global_forward(model, step, pts):
    st = model.steps[step]
    lay = model.layout
    t0, g, e = lay.anode_thickness_nm, model.expansion_gradient, st.axial_strain
    s = np.clip((pts[..., 0] - lay.z_collector_nm) / t0, 0.0, 1.0)
    yc, xc = lay.axis_yx_nm
    lat = 1.0 + st.in_plane_strain * s
    out = np.empty_like(pts)
    out[..., 0] = pts[..., 0] + e * t0 * (s + g * (s * s - s))
    out[..., 1] = yc + (pts[..., 1] - yc) * lat
    out[..., 2] = xc + (pts[..., 2] - xc) * lat
    return out


def _global_inverse(model, step, pts):
    st = model.steps[step]
    lay = model.layout
    t0, g, e = lay.anode_thickness_nm, model.expansion_gradient, st.axial_strain
    zc = lay.z_collector_nm
    w = np.clip((pts[..., 0] - zc) / t0, 0.0, 1.0 + e)
    # solve e*g*s^2 + (1 + e - e*g)*s - w = 0 for s in [0, 1]
    a, b = e * g, 1.0 + e - e * g
    if abs(a) > 1e-12:
        s = 2.0 * w / (b + np.sqrt(b * b + 4.0 * a * w))
    else:
        s = w / b
    s = np.clip(s, 0.0, 1.0)
    out = np.empty_like(pts)
    z = pts[..., 0]
    out[..., 0] = np.where(z <= zc, z, np.where(w >= 1.0 + e, z - e * t0, zc + s * t0))
    yc, xc = lay.axis_yx_nm
    lat = 1.0 + st.in_plane_strain * s
    out[..., 1] = yc + (pts[..., 1] - yc) / lat
    out[..., 2] = xc + (pts[..., 2] - xc) / lat
    return out


def deform_forward(model, step, pts):
    """Deformed positions (..., 3) of reference points ``pts`` (..., 3) at ``step`` (nm)."""
    pts = np.array(pts, dtype=np.float64, copy=True)
    if step == 0:
        return pts
    pts = _particle_pass(model, step, pts, inverse=False)
    return _global_forward(model, step, pts)


def deform_inverse(model, step, pts):
    """Reference positions of deformed points ``pts`` (..., 3) at ``step`` (nm)."""
    pts = np.array(pts, dtype=np.float64, copy=True)
    if step == 0:
        return pts
    ref = _global_inverse(model, step, pts)
    return _particle_pass(model, step, ref, inverse=True)


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
