"""Per-particle geometry with anisotropic voxels, size distributions, border flags, pre-cracked particles.

Everything is computed in one or two passes over the label volume (``bincount`` per z-slab), so
the cost is linear in the number of voxels and independent of the number of particles except for
:func:`detect_cracks`, which looks at each particle's bounding box once.

Surface area is the Crofton-corrected voxel face count: the summed area of the faces between a
particle and anything else is, for an isotropic surface, 3/2 of the true area on average (each
face normal projects with mean |cos| = 1/2 on each of the three axes), so ``S = 2/3 x face area``.
It is unbiased for randomly oriented shapes (a sphere of 10 voxels radius: within ~2 %) and needs
no mesh.  Its limit: faces aligned with the voxel axes (a box along the axes) are read 2/3 low.
Sphericity is ``pi^(1/3) (6 V)^(2/3) / S`` (1 for a ball).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._validate import check_number, show
from ..errors import InputError
from ._common import as_labels, check_fraction, voxel_size

log = logging.getLogger(__name__)

__all__ = ["ParticleTable", "SizeDistribution", "CrackReport", "particle_properties", "size_distribution",
           "detect_cracks"]

_SLAB = 32


@dataclass(frozen=True, eq=False)
class ParticleTable:
    """Geometry of every particle of a label volume (one row per present label, ascending).

    Positions are um from the centre of voxel 0 (voxel ``i`` centred at ``i x voxel size``), axes
    (z, y, x).

    Attributes
    ----------
    label : (n,) int64
    n_voxels : (n,) int64
    volume_um3 : (n,) float64
    equivalent_diameter_um : (n,) float64
        Diameter of the ball of the same volume.
    surface_area_um2 : (n,) float64
        Crofton-corrected face area (see the module notes).
    sphericity : (n,) float64
    centroid_um : (n, 3) float64
        Centre of mass.
    bbox_min_px, bbox_max_px : (n, 3) int64
        Bounding box in voxel indices (max exclusive, as :func:`skimage.measure.regionprops`).
    extent_um : (n, 3) float64
        Bounding-box size ``(max - min) x voxel size``, um.
    touches_border : (n,) bool
        The particle reaches the first or last voxel of the field of view along some axis (its
        size and shape are then truncated).
    voxel_size_nm : (3,) float
    """

    label: np.ndarray
    n_voxels: np.ndarray
    volume_um3: np.ndarray
    equivalent_diameter_um: np.ndarray
    surface_area_um2: np.ndarray
    sphericity: np.ndarray
    centroid_um: np.ndarray
    bbox_min_px: np.ndarray
    bbox_max_px: np.ndarray
    extent_um: np.ndarray
    touches_border: np.ndarray
    voxel_size_nm: tuple[float, float, float]

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def to_columns(self) -> dict[str, np.ndarray]:
        c = {"label": self.label, "n_voxels": self.n_voxels, "volume_um3": self.volume_um3,
             "equivalent_diameter_um": self.equivalent_diameter_um, "surface_area_um2": self.surface_area_um2,
             "sphericity": self.sphericity}
        for i, a in enumerate("zyx"):
            c[f"centroid_{a}_um"] = self.centroid_um[:, i]
        for i, a in enumerate("zyx"):
            c[f"bbox_min_{a}_px"] = self.bbox_min_px[:, i]
            c[f"bbox_max_{a}_px"] = self.bbox_max_px[:, i]
        for i, a in enumerate("zyx"):
            c[f"extent_{a}_um"] = self.extent_um[:, i]
        c["touches_border"] = self.touches_border
        return c

    def summary(self) -> dict:
        inner = ~self.touches_border
        d = self.equivalent_diameter_um[inner]
        return {"n_particles": len(self), "n_touching_border": int(self.touches_border.sum()),
                "total_volume_um3": float(self.volume_um3.sum()),
                "median_equivalent_diameter_um": float(np.median(d)) if d.size else float("nan"),
                "mean_sphericity": float(np.mean(self.sphericity[inner])) if d.size else float("nan")}


@dataclass(frozen=True, eq=False)
class SizeDistribution:
    """Distribution of equivalent diameters.

    Attributes
    ----------
    edges_um : (bins + 1,) float64
    count : (bins,) int64
        Particles per bin.
    number_fraction, volume_fraction : (bins,) float64
        Share of the particles / of the particle volume per bin.
    d10_um, d50_um, d90_um : float
        Volume-weighted percentiles of the diameter (D_v10, D_v50, D_v90), um.
    n_particles : int
        Particles counted (border-touching ones excluded unless asked).
    """

    edges_um: np.ndarray
    count: np.ndarray
    number_fraction: np.ndarray
    volume_fraction: np.ndarray
    d10_um: float
    d50_um: float
    d90_um: float
    n_particles: int

    def to_columns(self) -> dict[str, np.ndarray]:
        return {"diameter_low_um": self.edges_um[:-1], "diameter_high_um": self.edges_um[1:], "count": self.count,
                "number_fraction": self.number_fraction, "volume_fraction": self.volume_fraction}

    def to_dict(self) -> dict:
        return {"n_particles": self.n_particles, "d10_um": self.d10_um, "d50_um": self.d50_um, "d90_um": self.d90_um}


@dataclass(frozen=True, eq=False)
class CrackReport:
    """Pre-cracked particles: internal low-density (non-particle) planes found by a closing.

    Attributes
    ----------
    label : (n,) int64
    crack_volume_fraction : (n,) float64
        Volume of the enclosed gaps / volume of the closed particle.
    planarity : (n,) float64
        ``1 - l3 / l2`` of the gap voxels' covariance eigenvalues (l1 >= l2 >= l3): 1 for a plane.
    cracked : (n,) bool
        ``crack_volume_fraction >= min_fraction`` and ``planarity >= min_planarity``.
    """

    label: np.ndarray
    crack_volume_fraction: np.ndarray
    planarity: np.ndarray
    cracked: np.ndarray

    def to_columns(self) -> dict[str, np.ndarray]:
        return {"label": self.label, "crack_volume_fraction": self.crack_volume_fraction,
                "planarity": self.planarity, "cracked": self.cracked}


def _counts_and_sums(lab: np.ndarray, n_bins: int, vs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel counts (n_bins,), coordinate sums (n_bins, 3) in voxel units, face areas (n_bins,) nm^2."""
    nz, ny, nx = lab.shape
    count = np.zeros(n_bins, np.int64)
    sums = np.zeros((n_bins, 3))
    faces = np.zeros(n_bins)
    area = (vs[1] * vs[2], vs[0] * vs[2], vs[0] * vs[1])
    yy = np.broadcast_to(np.arange(ny, dtype=np.float64)[:, None], (ny, nx))
    xx = np.broadcast_to(np.arange(nx, dtype=np.float64)[None, :], (ny, nx))
    for z0 in range(0, nz, _SLAB):
        z1 = min(z0 + _SLAB, nz)
        s = lab[z0:z1]
        flat = s.reshape(-1)
        c = np.bincount(flat, minlength=n_bins)
        count += c
        per_slice = np.stack([np.bincount(s[k].reshape(-1), minlength=n_bins) for k in range(z1 - z0)])
        sums[:, 0] += (np.arange(z0, z1, dtype=np.float64)[:, None] * per_slice).sum(axis=0)
        wy = np.broadcast_to(yy, s.shape).reshape(-1)
        wx = np.broadcast_to(xx, s.shape).reshape(-1)
        sums[:, 1] += np.bincount(flat, weights=wy, minlength=n_bins)
        sums[:, 2] += np.bincount(flat, weights=wx, minlength=n_bins)
        # faces along y and x inside the slab (borders of the volume count as faces)
        for axis, a in ((1, area[1]), (2, area[2])):
            pad = [(0, 0)] * 3
            pad[axis] = (1, 1)
            p = np.pad(s, pad)
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis] = slice(0, -1)
            hi[axis] = slice(1, None)
            u, v = p[tuple(lo)], p[tuple(hi)]
            d = u != v
            faces += a * (np.bincount(u[d], minlength=n_bins) + np.bincount(v[d], minlength=n_bins))
    # faces along z: between consecutive slices, plus the two outer faces
    for z in range(nz + 1):
        u = lab[z - 1] if z > 0 else np.zeros((ny, nx), lab.dtype)
        v = lab[z] if z < nz else np.zeros((ny, nx), lab.dtype)
        d = u != v
        if d.any():
            faces += area[0] * (np.bincount(u[d], minlength=n_bins) + np.bincount(v[d], minlength=n_bins))
    return count, sums, faces


def _sequential(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels as compact int array, original value of each compact label) when values are sparse."""
    top = int(lab.max()) if lab.size else 0
    if top <= 4 * lab.size + 1024:
        return lab.astype(np.intp, copy=False), np.arange(top + 1)
    vals, inv = np.unique(lab, return_inverse=True)
    if vals[0] != 0:
        vals = np.concatenate([[0], vals])
        inv = inv + 1
    return inv.reshape(lab.shape).astype(np.intp), vals


def particle_properties(labels, *, voxel_size_nm=None,
                        progress: Callable[[int, int], None] | None = None) -> ParticleTable:
    """Volume, equivalent diameter, surface area, sphericity, centre of mass, bounding box per particle.

    Parameters
    ----------
    labels : (z, y, x) int array or Volume
        Particle labels (0 = background), e.g. from :func:`tomo4d.segment.label_particles`.
    voxel_size_nm : float or (3,) float, optional
        Voxel size (z, y, x), nm; anisotropic voxels are honoured everywhere.
    progress : callable(done, total), optional

    Returns
    -------
    ParticleTable
    """
    from scipy import ndimage

    raw = as_labels(labels, name="labels", instances=True)
    vs = voxel_size(voxel_size_nm, labels)
    lab, values = _sequential(raw)
    n_bins = len(values)
    count, sums, faces = _counts_and_sums(lab, n_bins, vs)
    if progress is not None:
        progress(1, 2)
    present = np.flatnonzero(count[1:]) + 1
    n = count[present]
    vox = np.asarray(vs)
    volume = n * float(np.prod(vs)) / 1e9
    centroid = sums[present] / n[:, None] * vox / 1e3
    surface = (2.0 / 3.0) * faces[present] / 1e6
    eqd = np.cbrt(6.0 * volume / np.pi)
    sph = np.pi ** (1 / 3) * (6.0 * volume) ** (2 / 3) / np.where(surface > 0, surface, np.nan)
    objs = ndimage.find_objects(lab.astype(np.int32, copy=False) if lab.max() < 2**31 else lab)
    bmin = np.array([[s.start for s in objs[i - 1]] for i in present], np.int64).reshape(-1, 3)
    bmax = np.array([[s.stop for s in objs[i - 1]] for i in present], np.int64).reshape(-1, 3)
    border = np.any(bmin == 0, axis=1) | np.any(bmax == np.asarray(lab.shape), axis=1)
    if progress is not None:
        progress(2, 2)
    return ParticleTable(label=values[present].astype(np.int64), n_voxels=n.astype(np.int64), volume_um3=volume,
                         equivalent_diameter_um=eqd, surface_area_um2=surface, sphericity=sph, centroid_um=centroid,
                         bbox_min_px=bmin, bbox_max_px=bmax, extent_um=(bmax - bmin) * vox / 1e3,
                         touches_border=border, voxel_size_nm=vs)


def size_distribution(table: ParticleTable, *, bins: int = 20, value_range=None,
                      include_border: bool = False) -> SizeDistribution:
    """Histogram of the equivalent diameters of a :class:`ParticleTable`, by number and by volume.

    Parameters
    ----------
    table : ParticleTable
    bins : int
    value_range : (float, float), optional
        Diameter range, um (default: the data's).
    include_border : bool
        Count particles touching the field-of-view border (their size is truncated).
    """
    if not isinstance(table, ParticleTable):
        raise InputError("size_distribution needs a ParticleTable (from particle_properties)")
    if int(bins) < 1:
        raise InputError(f"bins={show(bins)} must be >= 1")
    keep = np.ones(len(table), bool) if include_border else ~table.touches_border
    d = table.equivalent_diameter_um[keep]
    v = table.volume_um3[keep]
    if d.size == 0:
        edges = np.linspace(0, 1, int(bins) + 1) if value_range is None else np.linspace(*value_range, int(bins) + 1)
        z = np.zeros(int(bins))
        return SizeDistribution(edges, z.astype(np.int64), z, z, float("nan"), float("nan"), float("nan"), 0)
    count, edges = np.histogram(d, bins=int(bins), range=value_range)
    vol, _ = np.histogram(d, bins=edges, weights=v)
    order = np.argsort(d)
    cum = np.cumsum(v[order]) / v.sum()
    pct = [float(d[order][min(np.searchsorted(cum, q), d.size - 1)]) for q in (0.1, 0.5, 0.9)]
    return SizeDistribution(edges_um=edges, count=count.astype(np.int64), number_fraction=count / d.size,
                            volume_fraction=vol / v.sum(), d10_um=pct[0], d50_um=pct[1], d90_um=pct[2],
                            n_particles=int(d.size))


def crack_closing(closing_nm: float, vs) -> tuple[np.ndarray, np.ndarray]:
    """The closing's ball (radius ``closing_nm`` per axis, >= 1 voxel) and the pad around a particle's box."""
    rad = np.maximum(1, np.round(float(closing_nm) / np.asarray(vs))).astype(int)
    g = np.ogrid[tuple(slice(-r, r + 1) for r in rad)]
    return sum((gi / r) ** 2 for gi, r in zip(g, rad)) <= 1.0, rad + 1


def crack_of(lab: np.ndarray, i: int, box, ball, pad, vs, closing_nm: float) -> tuple[float, float]:
    """(gap volume fraction, planarity) of particle ``i`` of ``lab`` with bounding box ``box`` (slices): its box grown
    by ``pad`` (clipped to ``lab``) closed with ``ball`` (module :func:`detect_cracks`)."""
    from scipy import ndimage

    sl = tuple(slice(max(s.start - p, 0), min(s.stop + p, n)) for s, p, n in zip(box, pad, lab.shape))
    crop = lab[sl]
    m = crop == i
    mp = np.pad(m, [(p, p) for p in pad])
    closed = ndimage.binary_closing(mp, structure=ball)[tuple(slice(p, -p) for p in pad)]
    depth = ndimage.distance_transform_edt(closed, sampling=vs)
    gap = closed & ~m & (crop == 0) & (depth > closing_nm)
    ng = int(gap.sum())
    if not ng:
        return 0.0, 0.0
    plan = 0.0
    if ng >= 4:
        pts = np.argwhere(gap) * np.asarray(vs)
        ev = np.sort(np.linalg.eigvalsh(np.cov(pts.T)))[::-1]
        plan = 1.0 - ev[2] / ev[1] if ev[1] > 0 else 0.0
    return ng / max(int(closed.sum()), 1), plan


def detect_cracks(labels, *, voxel_size_nm=None, closing_nm: float = 120.0, min_fraction: float = 0.01,
                  min_planarity: float = 0.5, progress: Callable[[int, int], None] | None = None) -> CrackReport:
    """Find particles with internal low-density planes (pre-existing cracks) in a T0 particle labelling.

    A crack is a thin gap inside a particle: the particle's morphological closing (ball of radius
    ``closing_nm``) fills it, and the filled voxels lie deeper than the closing radius inside the
    closed particle (which excludes shallow surface concavities).  A particle is flagged when the
    gap volume is at least ``min_fraction`` of the closed particle and the gap is plane-like.

    Parameters
    ----------
    labels : (z, y, x) int array or Volume
        Particle labels at T0 (cracks are background inside particles).
    voxel_size_nm : float or (3,) float, optional
    closing_nm : float
        Radius of the closing, nm: a little more than half the widest crack to detect.
    min_fraction : float
        Smallest gap volume fraction counted as a crack.
    min_planarity : float
        Smallest planarity (``1 - l3/l2``) of the gap voxels.
    progress : callable(done, total), optional

    Returns
    -------
    CrackReport
    """
    from scipy import ndimage

    raw = as_labels(labels, name="labels", instances=True)
    vs = voxel_size(voxel_size_nm, labels)
    check_number("closing_nm", closing_nm, minimum=0.0, exclusive_minimum=True)
    min_fraction = check_fraction("min_fraction", min_fraction)
    min_planarity = check_fraction("min_planarity", min_planarity)
    lab, values = _sequential(raw)
    ball, pad = crack_closing(closing_nm, vs)
    objs = ndimage.find_objects(lab.astype(np.int32, copy=False))
    present = [i + 1 for i, o in enumerate(objs) if o is not None]
    frac = np.zeros(len(present))
    plan = np.zeros(len(present))
    for k, i in enumerate(present):
        frac[k], plan[k] = crack_of(lab, i, objs[i - 1], ball, pad, vs, float(closing_nm))
        if progress is not None and (k + 1) % 256 == 0:
            progress(k + 1, len(present))
    if progress is not None:
        progress(len(present), len(present))
    return CrackReport(label=values[present].astype(np.int64), crack_volume_fraction=frac, planarity=plan,
                       cracked=(frac >= min_fraction) & (plan >= min_planarity) & (frac > 0))
