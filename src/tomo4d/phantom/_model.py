"""The physical model behind :mod:`tomo4d.phantom`: microstructure, lithiation and deformation.

Everything here is defined in the continuous *sample frame*: positions in nm, axes ``(z, y, x)``,
origin at the outer corner of the low-quality (LQ) field of view, so that the centre of LQ voxel
``i`` sits at ``(i + 0.5) * lq_voxel_nm``.  Labels of any voxel grid are obtained by evaluating
the model at the grid's voxel centres (:func:`material`), grey images by averaging it over each
voxel (:func:`render_grey`), which makes the HQ and LQ scans views of one and the same
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


# ----------------------------------------------------------------------------------------------
# images: volume-averaged (partial-volume) grey values
# ----------------------------------------------------------------------------------------------

_RENDER_KERNEL = None


def _trilinear_py(f, sizes, o, h, p0, p1, p2):
    """``map_coordinates(f, (p - o) / h, order=1, mode="nearest")`` at one point (compiled by numba)."""
    c0 = min(max((p0 - o[0]) / h, 0.0), sizes[0] - 1.0)
    c1 = min(max((p1 - o[1]) / h, 0.0), sizes[1] - 1.0)
    c2 = min(max((p2 - o[2]) / h, 0.0), sizes[2] - 1.0)
    i0 = min(int(c0), sizes[0] - 2)
    i1 = min(int(c1), sizes[1] - 2)
    i2 = min(int(c2), sizes[2] - 2)
    t0, t1, t2 = c0 - i0, c1 - i1, c2 - i2
    a00 = f[i0, i1, i2] * (1.0 - t2) + f[i0, i1, i2 + 1] * t2
    a01 = f[i0, i1 + 1, i2] * (1.0 - t2) + f[i0, i1 + 1, i2 + 1] * t2
    a10 = f[i0 + 1, i1, i2] * (1.0 - t2) + f[i0 + 1, i1, i2 + 1] * t2
    a11 = f[i0 + 1, i1 + 1, i2] * (1.0 - t2) + f[i0 + 1, i1 + 1, i2 + 1] * t2
    return (a00 * (1.0 - t1) + a01 * t1) * (1.0 - t0) + (a10 * (1.0 - t1) + a11 * t1) * t0


def _render_kernel():
    """The compiled partial-volume kernel (numba, cached on disk), or None when numba is unavailable.

    For every voxel whose 3x3x3 neighbourhood of point-sampled phases is not uniform, the material
    is evaluated at ``K`` sub-voxel points (the same decision tree as :func:`material`) and the
    grey values of their phases are averaged.  Sub-voxel reference positions are
    ``ref[v] + J[v] @ offset``, with ``J`` the central-difference Jacobian of the reference-position
    grid (one-sided at the grid edges).  Candidate particles of a voxel are the distinct particle
    ids of its 3x3x3 neighbourhood, tested in increasing id order (later ids overwrite, as in
    :func:`material`).
    """
    global _RENDER_KERNEL
    if _RENDER_KERNEL is None:
        try:
            import numba
        except ImportError:  # pragma: no cover - numba is a dependency
            _RENDER_KERNEL = False
            return None

        _trilinear = numba.njit(cache=True, nogil=True)(_trilinear_py)

        @numba.njit(cache=True, nogil=True)
        def kernel(ref, phase, pid, offs, table, img,
                   z_cc, z_sep, crack_w,
                   pore, pore_o, pore_h, pore_thr,
                   fib_x, fib_y, fib_o, fib_h, fib_thr,
                   centre, radius, rot, axes, bump_dir, bump_amp, bump_phase, core_shell, cracked,
                   crack_normal, crack_side, crack_offset, plane_normal, plane_offset, front_thr):
            nz, ny, nx = phase.shape
            n_off = offs.shape[0]
            cand = np.empty(27, np.int64)
            jac = np.empty((3, 3))
            delta = np.empty((n_off, 3))
            sub = np.empty(n_off, np.int64)
            sizes_p = pore.shape
            sizes_f = fib_x.shape
            for iz in range(nz):
                z_lo, z_hi = max(iz - 1, 0), min(iz + 1, nz - 1)
                for iy in range(ny):
                    y_lo, y_hi = max(iy - 1, 0), min(iy + 1, ny - 1)
                    for ix in range(nx):
                        x_lo, x_hi = max(ix - 1, 0), min(ix + 1, nx - 1)
                        ph0 = phase[iz, iy, ix]
                        mixed = False
                        nc = 0
                        for a in range(z_lo, z_hi + 1):
                            for b in range(y_lo, y_hi + 1):
                                for c in range(x_lo, x_hi + 1):
                                    if phase[a, b, c] != ph0:
                                        mixed = True
                                    q = pid[a, b, c]
                                    if q > 0:
                                        seen = False
                                        for k in range(nc):
                                            if cand[k] == q - 1:
                                                seen = True
                                                break
                                        if not seen:
                                            cand[nc] = q - 1
                                            nc += 1
                        if not mixed:
                            continue
                        # insertion sort: increasing particle index (later particles overwrite)
                        for k in range(1, nc):
                            v = cand[k]
                            m = k - 1
                            while m >= 0 and cand[m] > v:
                                cand[m + 1] = cand[m]
                                m -= 1
                            cand[m + 1] = v
                        for e in range(3):
                            jac[e, 0] = (ref[z_hi, iy, ix, e] - ref[z_lo, iy, ix, e]) / (z_hi - z_lo)
                            jac[e, 1] = (ref[iz, y_hi, ix, e] - ref[iz, y_lo, ix, e]) / (y_hi - y_lo)
                            jac[e, 2] = (ref[iz, iy, x_hi, e] - ref[iz, iy, x_lo, e]) / (x_hi - x_lo)
                        r0, r1, r2 = ref[iz, iy, ix, 0], ref[iz, iy, ix, 1], ref[iz, iy, ix, 2]
                        dmax = 0.0
                        for s in range(n_off):
                            o0, o1, o2 = offs[s, 0], offs[s, 1], offs[s, 2]
                            for e in range(3):
                                de = jac[e, 0] * o0 + jac[e, 1] * o1 + jac[e, 2] * o2
                                delta[s, e] = de
                            dd = np.sqrt(delta[s, 0] ** 2 + delta[s, 1] ** 2 + delta[s, 2] ** 2)
                            dmax = max(dmax, dd)
                            p0, p1, p2 = r0 + delta[s, 0], r1 + delta[s, 1], r2 + delta[s, 2]
                            # base phase: collector / anode matrix+pores / separator fibres+pores
                            if p0 < z_cc:
                                sub[s] = 4
                            elif p0 < z_sep:
                                val = _trilinear(pore, sizes_p, pore_o, pore_h, p0, p1, p2)
                                sub[s] = 0 if val > pore_thr else 1
                            else:
                                va = _trilinear(fib_x, sizes_f, fib_o, fib_h, p0, p1, p2)
                                vb = _trilinear(fib_y, sizes_f, fib_o, fib_h, p0, p1, p2)
                                sub[s] = 5 if (va > fib_thr or vb > fib_thr) else 0
                        for k in range(nc):
                            # particle shape linearised about the voxel centre (smooth on the voxel
                            # scale); crack and internal planes are exactly linear
                            pp = cand[k]
                            d0, d1, d2 = r0 - centre[pp, 0], r1 - centre[pp, 1], r2 - centre[pp, 2]
                            rq2 = 0.0
                            g0 = g1 = g2 = 0.0
                            for j in range(3):
                                lj = (d0 * rot[pp, 0, j] + d1 * rot[pp, 1, j] + d2 * rot[pp, 2, j]) / axes[pp, j]
                                rq2 += lj * lj
                                w = lj / axes[pp, j]
                                g0 += w * rot[pp, 0, j]
                                g1 += w * rot[pp, 1, j]
                                g2 += w * rot[pp, 2, j]
                            rq = np.sqrt(rq2)
                            dn = max(np.sqrt(d0 * d0 + d1 * d1 + d2 * d2), 1e-9)
                            n0, n1, n2 = d0 / dn, d1 / dn, d2 / dn
                            bump = 0.0
                            b0 = b1 = b2 = 0.0
                            for j in range(bump_amp.shape[1]):
                                u = n0 * bump_dir[pp, j, 0] + n1 * bump_dir[pp, j, 1] + n2 * bump_dir[pp, j, 2]
                                arg = 3.0 * u + bump_phase[pp, j]
                                bump += bump_amp[pp, j] * np.cos(arg)
                                f = -3.0 * bump_amp[pp, j] * np.sin(arg) / dn
                                b0 += f * (bump_dir[pp, j, 0] - u * n0)
                                b1 += f * (bump_dir[pp, j, 1] - u * n1)
                                b2 += f * (bump_dir[pp, j, 2] - u * n2)
                            den = radius[pp] * (1.0 + bump)
                            rho = rq / den
                            inv_rq = 1.0 / max(rq, 1e-12)
                            # grad rho = grad rq / den - rq grad B / (den (1 + B))
                            c1 = rho / (1.0 + bump)
                            g0 = g0 * inv_rq / den - c1 * b0
                            g1 = g1 * inv_rq / den - c1 * b1
                            g2 = g2 * inv_rq / den - c1 * b2
                            if rho - np.sqrt(g0 * g0 + g1 * g1 + g2 * g2) * dmax >= 1.0:
                                continue
                            for s in range(n_off):
                                e0, e1, e2 = delta[s, 0], delta[s, 1], delta[s, 2]
                                rho_s = rho + g0 * e0 + g1 * e1 + g2 * e2
                                if rho_s >= 1.0:
                                    continue
                                q0, q1, q2 = d0 + e0, d1 + e1, d2 + e2
                                if cracked[pp]:
                                    across = abs(q0 * crack_normal[pp, 0] + q1 * crack_normal[pp, 1]
                                                 + q2 * crack_normal[pp, 2] - crack_offset[pp])
                                    along = q0 * crack_side[pp, 0] + q1 * crack_side[pp, 1] + q2 * crack_side[pp, 2]
                                    if across < 0.5 * crack_w and along > -0.2 * radius[pp]:
                                        sub[s] = 0
                                        continue
                                if core_shell[pp]:
                                    front = 1.0 - rho_s
                                else:
                                    front = np.inf
                                    for j in range(plane_normal.shape[1]):
                                        dist = abs(q0 * plane_normal[pp, j, 0] + q1 * plane_normal[pp, j, 1]
                                                   + q2 * plane_normal[pp, j, 2] - plane_offset[pp, j])
                                        front = min(front, dist)
                                    front /= radius[pp]
                                sub[s] = 3 if front < front_thr[pp] else 2
                        acc = 0.0
                        for s in range(n_off):
                            acc += table[sub[s]]
                        img[iz, iy, ix] = acc / n_off

        _RENDER_KERNEL = kernel
    return _RENDER_KERNEL or None


def subvoxel_offsets(k):
    """Midpoints of the ``k**3`` sub-cells of a voxel, in voxel units (K, 3), centred on 0."""
    o = (np.arange(k) + 0.5) / k - 0.5
    g = np.stack(np.meshgrid(o, o, o, indexing="ij"), -1)
    return np.ascontiguousarray(g.reshape(-1, 3))


def _mixed_voxels(phase):
    from scipy.ndimage import maximum_filter, minimum_filter

    return maximum_filter(phase, 3, mode="nearest") != minimum_filter(phase, 3, mode="nearest")


def _jacobian(ref, idx):
    """d ref / d voxel index at voxels ``idx`` (m, 3): central differences, one-sided at the edges."""
    jac = np.empty((len(idx), 3, 3))
    for a in range(3):
        hi = idx.copy()
        lo = idx.copy()
        hi[:, a] = np.minimum(idx[:, a] + 1, ref.shape[a] - 1)
        lo[:, a] = np.maximum(idx[:, a] - 1, 0)
        jac[:, :, a] = (ref[tuple(hi.T)] - ref[tuple(lo.T)]) / (hi[:, a] - lo[:, a])[:, None]
    return jac


def render_grey(model, step, ref, phase, pid, table, *, supersampling, use_numba=True):
    """Volume-averaged (partial-volume) grey image of a voxel grid, float32.

    Each voxel's value is the mean grey value of the material over the voxel, estimated by the
    midpoint rule on ``supersampling**3`` sub-cells.  Voxels whose 3x3x3 neighbourhood of
    point-sampled ``phase`` labels is uniform are inside one phase and take ``table[phase]``
    directly; only the others (near interfaces) are supersampled.  With ``supersampling=1`` this
    is ``table[phase]`` (point sampling).

    Parameters
    ----------
    model : Model
    step : int
    ref : ndarray, shape (nz, ny, nx, 3)
        Reference (T0) positions of the grid's voxel centres, nm (from :func:`deform_inverse`).
    phase, pid : ndarrays, shape (nz, ny, nx)
        :func:`material` of ``ref`` (point-sampled labels at the voxel centres).
    table : ndarray of float32, shape (len(Phase),)
        Grey value of each phase.
    supersampling : int
        Sub-samples per axis of a mixed voxel (>= 1).
    use_numba : bool
        Use the compiled kernel (else a slow numpy path with the same result up to rounding).

    Returns
    -------
    ndarray of float32, shape (nz, ny, nx)
    """
    table = np.asarray(table, np.float32)
    img = table[phase]
    offs = subvoxel_offsets(int(supersampling))
    kernel = _render_kernel() if use_numba else None
    lay, fields, parts, st = model.layout, model.fields, model.particles, model.steps[step]
    front = np.array([front_threshold(parts, p, float(st.fraction[p])) for p in range(len(parts))], float)
    if kernel is not None:
        kernel(np.ascontiguousarray(ref, dtype=np.float64), np.ascontiguousarray(phase),
               np.ascontiguousarray(pid), offs, table, img,
               float(lay.z_collector_nm), float(lay.z_separator_nm), float(lay.crack_width_nm),
               fields.pore, np.asarray(fields.pore_origin_nm, float), float(fields.pore_spacing_nm),
               float(fields.pore_threshold), fields.fibre_x, fields.fibre_y,
               np.asarray(fields.fibre_origin_nm, float), float(fields.fibre_spacing_nm),
               float(fields.fibre_threshold),
               parts.centre_nm, parts.radius_nm, parts.rotation, parts.axes, parts.bump_dir, parts.bump_amp,
               parts.bump_phase, parts.mode == LithiationMode.CORE_SHELL, parts.cracked, parts.crack_normal,
               parts.crack_side, parts.crack_offset_nm, parts.plane_normal, parts.plane_offset_nm, front)
        return img
    # numpy path: the same sub-samples through :func:`material` (all particles are candidates)
    idx = np.argwhere(_mixed_voxels(phase))
    for start in range(0, len(idx), 4096):
        sub = idx[start:start + 4096]
        jac = _jacobian(ref, sub)
        pts = ref[tuple(sub.T)][:, None, :] + np.einsum("mij,kj->mki", jac, offs)
        ph, _ = material(model, step, pts)
        img[tuple(sub.T)] = (table[ph].astype(np.float64).sum(axis=1) / len(offs)).astype(np.float32)
    return img
