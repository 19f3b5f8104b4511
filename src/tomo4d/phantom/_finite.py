"""The phantom's deformation in finite-strain measures: F, Hencky strain, det F - 1, regional means.

The phantom maps a reference (T0) point X to ``x = G(P(X))``: ``P`` composes each particle's
local swelling map, ``G`` is the electrode-scale map (:func:`tomo4d.phantom._deform._global_forward`)

    z' = z + e t0 (s + g (s^2 - s)),   s = (z - z_cc) / t0 in [0, 1],
    (y', x') = axis + ((y, x) - axis) (1 + p s),

with ``e = expansion * SoC_eff`` (:attr:`GroundTruth.mean_axial_strain`), ``g`` the
``expansion_gradient`` and ``p = in_plane_ratio * e``.  Its axial stretch
``dz'/dz = 1 + e (1 + g (2 s - 1))`` grows linearly from ``1 + e (1 - g)`` at the collector to
``1 + e (1 + g)`` at the separator, and averages to ``1 + e`` through the thickness: ``e`` is the
mean axial *engineering* strain of ``G`` (``expansion`` is that strain per unit of effective SoC),
the thickness ratio of ``G`` alone is ``1 + e``.  The particles' swelling adds to it locally (and
moves the anode/separator interface, so :attr:`GroundTruth.thickness_nm` is a few % above
``t0 (1 + e)`` at high SoC).

``F`` is evaluated here by central differences of the exact forward map with step ``h_nm`` (1 nm:
truncation ~h^2 |d^3 x| ~ 1e-6 on 300 nm particles, round-off ~1e-12), Hencky ``ln U = 1/2 ln C``
by eigen-decomposition of ``C = F^T F`` - an implementation independent of :mod:`tomo4d.dvc`, so
that comparing DVC with this truth is a real check.  Regional means are Lagrangian volume averages
over the reference anode slab under the HQ field of view, by the midpoint rule on a regular
``n_z x n_yx x n_yx`` grid (no sample point lies within ``h_nm`` of an interface, where ``F`` jumps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ._deform import deform_forward

REGIONS = ("collector side", "separator side", "anode")


def deformation_gradient(model, step: int, pts: np.ndarray, *, h_nm: float = 1.0) -> np.ndarray:
    """F = dx/dX at reference points ``pts`` (..., 3) nm -> (..., 3, 3), central differences of step ``h_nm``.

    Points on a grid ``(nz, ny, nx, 3)`` are mapped much faster than a flat list (the particle pass
    selects sub-blocks of a grid instead of testing every point against every particle)."""
    F = np.empty(pts.shape + (3,))
    for j in range(3):
        e = np.zeros(3)
        e[j] = h_nm
        F[..., j] = (deform_forward(model, step, pts + e) - deform_forward(model, step, pts - e)) / (2 * h_nm)
    return F


def log_stretch(F: np.ndarray) -> np.ndarray:
    """Hencky strain ``ln U = 1/2 ln(F^T F)`` of (N, 3, 3) gradients (NaN where ``det F <= 0``)."""
    C = np.einsum("nki,nkj->nij", F, F)
    w, v = np.linalg.eigh(C)
    with np.errstate(divide="ignore", invalid="ignore"):
        lw = np.where(w > 0, 0.5 * np.log(np.where(w > 0, w, 1.0)), np.nan)
    out = np.einsum("nik,nk,njk->nij", v, lw, v)
    out[np.linalg.det(F) <= 0] = np.nan
    return out


@dataclass(frozen=True, eq=False)
class AnodeStrainTruth:
    """Exact mean finite strains of the phantom anode per step (dimensionless).

    Lagrangian volume averages over the reference (T0) anode between the collector interface
    ``z_collector_nm`` and the T0 separator interface, laterally over the HQ field of view.
    Regions: ``"collector side"`` and ``"separator side"`` (the two halves of the T0 anode
    thickness) and ``"anode"`` (all of it).

    Attributes
    ----------
    step_names : tuple of str
    region_names : tuple of str
        ``("collector side", "separator side", "anode")``.
    hencky_zz, hencky_yy, hencky_xx : (n_steps, 3) float64
        Mean diagonal components of ``ln U`` (axial zz, in-plane yy/xx).
    volumetric : (n_steps, 3) float64
        Mean ``det F - 1`` (= deformed volume / reference volume - 1 of the region).
    thickness_ratio : (n_steps,) float64
        ``thickness_nm[t] / thickness_nm[0]``: ``ln`` of it is what :attr:`hencky_zz` of the whole
        anode approaches (equal for a uniform, purely axial stretch; below it by the Jensen gap
        ``~var(dz'/dz) / (2 (1 + e)^2)`` of the through-thickness gradient plus the particles'
        local swelling).
    grid : (int, int)
        ``(n_z, n_yx)`` midpoint grid of the averages.
    """

    step_names: tuple[str, ...]
    region_names: tuple[str, ...]
    hencky_zz: np.ndarray
    hencky_yy: np.ndarray
    hencky_xx: np.ndarray
    volumetric: np.ndarray
    thickness_ratio: np.ndarray
    grid: tuple[int, int]

    def value(self, region: str, component: str = "hencky_zz") -> np.ndarray:
        """(n_steps,) mean of ``component`` (``hencky_zz/yy/xx``, ``volumetric``) in ``region``."""
        if region not in self.region_names:
            raise InputError(f"region {region!r} is not known; use one of {', '.join(self.region_names)}")
        if component not in ("hencky_zz", "hencky_yy", "hencky_xx", "volumetric"):
            raise InputError(f"component {component!r} is not known; use hencky_zz, hencky_yy, hencky_xx or volumetric")
        return getattr(self, component)[:, self.region_names.index(region)]

    def to_dict(self) -> dict:
        """JSON-serialisable copy."""
        out = {"step_names": list(self.step_names), "region_names": list(self.region_names),
               "thickness_ratio": self.thickness_ratio.tolist(), "grid": list(self.grid)}
        for k in ("hencky_zz", "hencky_yy", "hencky_xx", "volumetric"):
            out[k] = {r: getattr(self, k)[:, i].tolist() for i, r in enumerate(self.region_names)}
        return out


def anode_strain_truth(model, *, lateral_lo_nm, lateral_hi_nm, step_names, thickness_nm, n_z: int = 48,
                       n_yx: int = 64, h_nm: float = 1.0) -> AnodeStrainTruth:
    """Mean finite strains of the anode halves per step (see :class:`AnodeStrainTruth`); ``n_z`` even."""
    lay = model.layout
    t0 = lay.anode_thickness_nm
    s = (np.arange(n_z) + 0.5) / n_z
    lo, hi = np.asarray(lateral_lo_nm, float), np.asarray(lateral_hi_nm, float)
    ys = lo[0] + (np.arange(n_yx) + 0.5) / n_yx * (hi[0] - lo[0])
    xs = lo[1] + (np.arange(n_yx) + 0.5) / n_yx * (hi[1] - lo[1])
    zz, yy, xx = np.meshgrid(lay.z_collector_nm + s * t0, ys, xs, indexing="ij")
    pts = np.stack([zz, yy, xx], -1)
    half = np.repeat(s >= 0.5, n_yx * n_yx)
    masks = (~half, half, np.ones(half.size, bool))
    n = len(step_names)
    out = {k: np.zeros((n, 3)) for k in ("hencky_zz", "hencky_yy", "hencky_xx", "volumetric")}
    for step in range(1, n):
        F = deformation_gradient(model, step, pts, h_nm=h_nm).reshape(-1, 3, 3)
        lnU = log_stretch(F)
        vals = {"hencky_zz": lnU[:, 0, 0], "hencky_yy": lnU[:, 1, 1], "hencky_xx": lnU[:, 2, 2],
                "volumetric": np.linalg.det(F) - 1.0}
        for k, v in vals.items():
            out[k][step] = [v[m].mean() for m in masks]
    th = np.asarray(thickness_nm, float)
    return AnodeStrainTruth(step_names=tuple(step_names), region_names=REGIONS, thickness_ratio=th / th[0],
                            grid=(int(n_z), int(n_yx)), **out)
