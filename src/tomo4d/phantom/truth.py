"""The exact ground truth of a synthetic experiment: :class:`GroundTruth`.

Numbers (per step, per particle, imaging and neutron parameters) are plain frozen fields computed
when the experiment is built; volumes, displacement and strain fields are computed on demand by
the experiment's renderer (:mod:`tomo4d.phantom._engine`), which also holds every cache.  Frames
and grids: :mod:`tomo4d.phantom.experiment`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validate import check_int, check_number, show
from ..errors import InputError
from . import _finite
from ._deform import deform_forward, deform_inverse
from ._model import LithiationMode, Phase
from .params import EDGE_10_90_PER_SIGMA, NEUTRON_MU_BACKGROUND, GridSpec


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """Everything the synthetic experiment knows exactly.

    Scalars and per-step tuples are plain fields, fixed at construction; volumes and the numbers
    derived from them (:attr:`non_lithiated_si_volume_nm3`) are computed on demand by the
    experiment's renderer, which caches a few steps (the GroundTruth itself is never modified), so
    holding a GroundTruth costs little memory.  All positions are nm in the sample
    frame (see :mod:`tomo4d.phantom.experiment`); ``grid`` arguments are ``"hq"`` or ``"lq"``.

    Attributes
    ----------
    step_names : tuple of str
        ``("T0", "T1", ...)``.
    state_of_charge : tuple of float
        SoC of each step (fraction).
    time_s : tuple of float
        Acquisition time of each step, s.
    thickness_nm : tuple of float
        Mean anode thickness per step (collector/anode interface to anode/separator interface),
        averaged over the lateral extent of the HQ field, nm.
    thickness_std_nm : tuple of float
        Lateral standard deviation of the anode/separator interface position, nm.
    mean_axial_strain : tuple of float
        Mean axial *engineering* strain ``e`` of the electrode-scale map, per step: its axial
        stretch ``1 + e (1 + g (2 s - 1))`` (``s`` = reference depth fraction from the collector,
        ``g = expansion_gradient``) averages to ``1 + e`` through the thickness, and
        ``e = expansion * effective SoC`` (``expansion`` is this strain per unit SoC).  The
        particles' swelling comes on top: the finite-strain truth (Hencky, ``det F - 1``, per
        anode half, including the particles) is :meth:`anode_finite_strain`; node-by-node values
        :meth:`deformation_gradient` and :meth:`hencky_strain`.
    in_plane_strain : tuple of float
        yy = xx strain of the electrode-scale field on the separator side (grows linearly from 0 at
        the collector), per step.
    particle_id : ndarray of int, shape (n,)
        Particle ids (values of :meth:`particle_labels`), 1-based.
    particle_mode : ndarray of int, shape (n,)
        :class:`LithiationMode` of each particle.
    particle_centre_nm, particle_radius_nm, particle_cracked : ndarrays
        Reference (T0) centre (n, 3), nominal radius (n,), pre-cracked flag (n,).
    lithiated_fraction : ndarray, shape (n_steps, n)
        Lithiated share of each particle's (uncracked) volume per step.
    particle_swelling : ndarray, shape (n_steps, n)
        Radial strain of each particle's local swelling map per step.
    hq_blur_sigma_nm, lq_blur_sigma_nm, neutron_blur_sigma_nm : float
        Gaussian PSF sigma of each scan type, nm (the blur the scanner adds).  The images are also
        averaged over each voxel (partial volume), a box of one voxel: the effective sigma of an
        edge in an HQ/LQ image is ``hypot(sigma, voxel / sqrt(12))`` (+0.5 % for the defaults).
        The neutron value includes its binning box.
    hq_edge_resolution_nm, lq_edge_resolution_nm : float
        10-90 % edge rise distance of the PSF (2.563 sigma), nm; without the voxel box (see above).
    hq_noise_std, lq_noise_std : float
        Standard deviation of the additive Gaussian noise, grey units.
    neutron_noise_std : float
        Noise of the neutron attenuation volumes, 1/cm.
    ring_amplitude : float
        Amplitude of the ring artefacts of LQ scans (grey units), centred on the LQ field centre (y, x).
    grey_values : dict
        Noise-free grey value of each phase name.
    lq_to_hq_phi : ndarray, shape (4, 4)
        See :attr:`SyntheticExperiment.lq_to_hq_phi`.
    lq_misalignment : ndarray, shape (4, 4)
        Homogeneous affine (sample frame, nm) mapping a position in the LQ training scan's frame to
        the sample position imaged there.
    hq_grid, lq_grid : GridSpec
    hq_offset_nm : tuple of float
        Sample-frame position of the outer corner of the HQ field.
    z_collector_nm : float
        Depth of the collector/anode interface (fixed at all steps), nm.
    li_per_mol_l_neutron_mu : float
        Neutron attenuation (1/cm at 1.8 A) per mol/L of lithium for the chosen 6Li fraction
        (absorption plus bound-atom scattering).
    neutron_mu_li_free_per_cm : dict
        Phase name -> neutron attenuation (1/cm at 1.8 A) of that phase without its lithium: what
        a user knows from the composition of each component (the "matrix" attenuation).  The
        neutron volumes are ``mu_li_free[phase] + li_per_mol_l_neutron_mu * c_Li`` averaged over
        each neutron voxel, blurred by ``neutron_blur_sigma_nm``, plus noise.
    li_concentration_mol_l : dict
        Phase name -> lithium concentration, mol/L (lithiated Si and the electrolyte-filled pores).
    li6_fraction : float
        6Li atom fraction of all lithium in the sample.
    """

    step_names: tuple[str, ...]
    state_of_charge: tuple[float, ...]
    time_s: tuple[float, ...]
    thickness_nm: tuple[float, ...]
    thickness_std_nm: tuple[float, ...]
    mean_axial_strain: tuple[float, ...]
    in_plane_strain: tuple[float, ...]
    particle_id: np.ndarray
    particle_mode: np.ndarray
    particle_centre_nm: np.ndarray
    particle_radius_nm: np.ndarray
    particle_cracked: np.ndarray
    lithiated_fraction: np.ndarray
    particle_swelling: np.ndarray
    hq_blur_sigma_nm: float
    lq_blur_sigma_nm: float
    neutron_blur_sigma_nm: float
    hq_edge_resolution_nm: float
    lq_edge_resolution_nm: float
    hq_noise_std: float
    lq_noise_std: float
    neutron_noise_std: float
    ring_amplitude: float
    grey_values: dict
    lq_to_hq_phi: np.ndarray
    lq_misalignment: np.ndarray
    hq_grid: GridSpec
    lq_grid: GridSpec
    hq_offset_nm: tuple[float, float, float]
    z_collector_nm: float
    li_per_mol_l_neutron_mu: float
    neutron_mu_li_free_per_cm: dict
    li_concentration_mol_l: dict
    li6_fraction: float
    #: the experiment's renderer (:mod:`tomo4d.phantom._engine`): computes the volumes and derived
    #: numbers on demand and holds their caches, so that this object never changes after construction
    _engine: Any = field(default=None, repr=False, compare=False)

    @property
    def n_steps(self) -> int:
        return len(self.step_names)

    def _step(self, step) -> int:
        if isinstance(step, str):
            if step not in self.step_names:
                raise InputError(f"step={show(step)} is unknown; use one of {', '.join(self.step_names)}")
            return self.step_names.index(step)
        try:
            s = int(step)
        except (TypeError, ValueError):
            raise InputError(f"step={show(step)} is not a step index or name") from None
        if not 0 <= s < self.n_steps:
            raise InputError(f"step={show(step)} is out of range; give 0..{self.n_steps - 1} or a name like 'T0'")
        return s

    @staticmethod
    def _grid(grid) -> str:
        if grid not in ("hq", "lq"):
            raise InputError(f"grid={show(grid)} is not supported; use 'hq' or 'lq'")
        return grid

    # -- volumes --------------------------------------------------------------------------------
    def labels(self, step, *, grid: str = "hq") -> np.ndarray:
        """Phase labels (:class:`Phase` values), uint8, shape of the grid, at ``step``.

        The phase at each voxel *centre* (point sampled), whereas the images average the material
        over each voxel (see :mod:`tomo4d.phantom.experiment`).
        """
        return self._engine.labels(self._grid(grid), self._step(step))[0]

    def particle_labels(self, step, *, grid: str = "hq") -> np.ndarray:
        """Particle ids (0 = no particle), int32, shape of the grid, at ``step``."""
        return self._engine.labels(self._grid(grid), self._step(step))[1]

    def pair_labels(self, *, grid: str = "hq") -> tuple[np.ndarray, np.ndarray]:
        """(phase, particle) labels of the training-pair sample at T0 (differs from the series sample
        only with ``series_sample="twin"``), in the sample frame (as the HQ scan sees it)."""
        return self._engine.labels(self._grid(grid), 0, sample="pair")

    def li_concentration(self, step, *, grid: str = "hq") -> np.ndarray:
        """Lithium concentration, mol/L, float32 (lithiated Si 81.9, electrolyte 1.0, else 0)."""
        return self._engine.li_concentration(self.labels(step, grid=grid))

    # -- displacement and strain ----------------------------------------------------------------
    def displacement(self, step, points_zyx_nm) -> np.ndarray:
        """Displacement u(X, t) (nm) of reference (T0) points ``points_zyx_nm`` (N, 3) at ``step``.

        The material at reference position X is at X + u(X, t) in step ``step``; u is 0 at T0.
        """
        pts = np.asarray(points_zyx_nm, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or not np.all(np.isfinite(pts)):
            raise InputError(f"points_zyx_nm must be a finite (N, 3) array of (z, y, x) nm, got shape {pts.shape}")
        s = self._step(step)
        return deform_forward(self._engine.model, s, pts) - pts

    def inverse_displacement(self, step, points_zyx_nm) -> np.ndarray:
        """v(x, t) (nm) such that the material at deformed position x came from x + v (T0)."""
        pts = np.asarray(points_zyx_nm, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise InputError(f"points_zyx_nm must be an (N, 3) array, got shape {pts.shape}")
        return deform_inverse(self._engine.model, self._step(step), pts) - pts

    def displacement_field(self, step, *, grid: str = "lq") -> np.ndarray:
        """u(X, t) at every voxel centre X of ``grid`` (reference configuration), shape (3, z, y, x), nm, float32."""
        g = self._grid(grid)
        pts = self._engine.grids[g].positions_nm()
        u = deform_forward(self._engine.model, self._step(step), pts) - pts
        return np.moveaxis(u, -1, 0).astype(np.float32)

    def deformation_gradient(self, step, points_zyx_nm, *, h_nm: float = 1.0) -> np.ndarray:
        """F = I + grad u at reference points (N, 3) -> (N, 3, 3), central differences of step ``h_nm``
        of the exact map (for points more than ``h_nm`` from the collector/separator interfaces,
        where F jumps)."""
        pts = np.asarray(points_zyx_nm, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise InputError(f"points_zyx_nm must be an (N, 3) array, got shape {pts.shape}")
        h_nm = check_number("h_nm", h_nm, minimum=0.0, exclusive_minimum=True)
        return _finite.deformation_gradient(self._engine.model, self._step(step), pts, h_nm=h_nm)

    def hencky_strain(self, step, points_zyx_nm, *, h_nm: float = 1.0) -> np.ndarray:
        """Hencky (logarithmic) strain ``ln U = 1/2 ln(F^T F)`` at reference (T0) points (N, 3) nm -> (N, 3, 3).

        Compare with a DVC field node by node: node positions px -> nm with
        ``hq_grid.origin_nm + positions_zyx_px * hq_grid.voxel_size_nm``.
        """
        return _finite.log_stretch(self.deformation_gradient(step, points_zyx_nm, h_nm=h_nm))

    def anode_finite_strain(self, *, n_z: int = 48, n_yx: int = 64) -> _finite.AnodeStrainTruth:
        """Mean Hencky strains and ``det F - 1`` of the anode halves and the whole anode per step.

        Exact deformation map (particles included), Lagrangian averages over the T0 anode under the
        HQ field of view on an ``n_z x n_yx x n_yx`` midpoint grid (``n_z`` even: the halves are
        the collector and separator sides); see :class:`tomo4d.phantom.AnodeStrainTruth`.
        Computed on each call (~1.8 s per step at the defaults).  Quadrature error at the defaults
        (against a grid twice as fine): < 1e-3 on each half, < 6e-4 on the whole anode.
        """
        n_z = check_int("n_z", n_z, minimum=2)
        if n_z % 2:
            raise InputError(f"n_z={n_z} must be even (two halves of the anode thickness)")
        n_yx = check_int("n_yx", n_yx, minimum=1)
        g = self.hq_grid
        lo = np.asarray(self.hq_offset_nm[1:], float)
        hi = lo + np.asarray(g.shape[1:], float) * g.voxel_size_nm
        return _finite.anode_strain_truth(self._engine.model, lateral_lo_nm=lo, lateral_hi_nm=hi,
                                          step_names=self.step_names, thickness_nm=self.thickness_nm,
                                          n_z=n_z, n_yx=n_yx)

    def strain(self, step, points_zyx_nm) -> np.ndarray:
        """Green-Lagrange strain E = (F^T F - I) / 2 at reference points, (N, 3, 3)."""
        F = self.deformation_gradient(step, points_zyx_nm)
        return 0.5 * (np.einsum("nki,nkj->nij", F, F) - np.eye(3))

    def volumetric_strain(self, step, points_zyx_nm) -> np.ndarray:
        """det F - 1 at reference points, (N,)."""
        return np.linalg.det(self.deformation_gradient(step, points_zyx_nm)) - 1.0

    def strain_field(self, step, *, grid: str = "lq") -> np.ndarray:
        """Small-strain tensor (sym grad u) on ``grid``, shape (3, 3, z, y, x), float32.

        Second-order finite differences of :meth:`displacement_field` on the voxel grid.
        """
        u = self.displacement_field(step, grid=grid)
        v = self._engine.grids[grid].voxel_size_nm
        g = np.empty((3, 3) + u.shape[1:], np.float32)
        for i in range(3):
            for j, d in enumerate(np.gradient(u[i], v)):
                g[i, j] = d
        return 0.5 * (g + g.transpose(1, 0, 2, 3, 4))

    # -- derived numbers ------------------------------------------------------------------------
    @property
    def non_lithiated_si_volume_nm3(self) -> tuple[float, ...]:
        """Volume of non-lithiated silicon in the HQ field per step, nm^3 (voxel count of the HQ labels)."""
        return self._engine.silicon_volumes_nm3()[0]

    @property
    def lithiated_si_volume_nm3(self) -> tuple[float, ...]:
        """Volume of lithiated silicon in the HQ field per step, nm^3."""
        return self._engine.silicon_volumes_nm3()[1]

    def summary(self) -> dict:
        """JSON-serialisable scalars and per-step numbers (no volumes)."""
        modes = np.asarray(self.particle_mode)
        return {
            "steps": list(self.step_names), "state_of_charge": list(self.state_of_charge),
            "time_s": list(self.time_s), "thickness_nm": list(self.thickness_nm),
            "thickness_std_nm": list(self.thickness_std_nm), "mean_axial_strain": list(self.mean_axial_strain),
            "in_plane_strain": list(self.in_plane_strain),
            "n_particles": int(len(modes)), "n_core_shell": int(np.sum(modes == LithiationMode.CORE_SHELL)),
            "n_network": int(np.sum(modes == LithiationMode.NETWORK)),
            "n_cracked": int(np.sum(self.particle_cracked)),
            "mean_lithiated_fraction": [float(v) for v in np.mean(self.lithiated_fraction, axis=1)],
            "hq_blur_sigma_nm": self.hq_blur_sigma_nm, "lq_blur_sigma_nm": self.lq_blur_sigma_nm,
            "hq_edge_resolution_nm": self.hq_edge_resolution_nm, "lq_edge_resolution_nm": self.lq_edge_resolution_nm,
            "neutron_blur_sigma_nm": self.neutron_blur_sigma_nm,
            "hq_noise_std": self.hq_noise_std, "lq_noise_std": self.lq_noise_std,
            "neutron_noise_std": self.neutron_noise_std, "ring_amplitude": self.ring_amplitude,
            "grey_values": dict(self.grey_values),
            "li_per_mol_l_neutron_mu": self.li_per_mol_l_neutron_mu,
            "neutron_mu_li_free_per_cm": dict(self.neutron_mu_li_free_per_cm),
            "li_concentration_mol_l": dict(self.li_concentration_mol_l), "li6_fraction": self.li6_fraction,
            "lq_to_hq_phi": np.asarray(self.lq_to_hq_phi).tolist(),
            "lq_to_hq_phi_centre": [(n - 1) / 2.0 for n in self.hq_grid.shape],
            "lq_misalignment": np.asarray(self.lq_misalignment).tolist(),
            "hq_grid": dataclasses.asdict(self.hq_grid), "lq_grid": dataclasses.asdict(self.lq_grid),
            "z_collector_nm": self.z_collector_nm, "phases": {ph.name: int(ph) for ph in Phase},
            "lithiation_modes": {m.name: int(m) for m in LithiationMode},
        }


def _thickness(engine) -> tuple[list[float], list[float]]:
    """Mean and std of the deformed anode/separator interface over the HQ field, per step."""
    lay = engine.layout
    n = engine.params.shape
    o = np.asarray(lay.hq_offset_nm)
    h = lay.hq_voxel_nm
    ys = o[1] + (np.arange(2 * n[1]) + 0.5) * h / 2
    xs = o[2] + (np.arange(2 * n[2]) + 0.5) * h / 2
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    base = np.stack([np.full(yy.size, lay.z_separator_nm), yy.ravel(), xx.ravel()], -1)
    means, stds = [], []
    for s in range(engine.params.n_steps):
        z = deform_forward(engine.model, s, base)[:, 0] - lay.z_collector_nm
        means.append(float(z.mean()))
        stds.append(float(z.std()))
    return means, stds


def _build_truth(engine) -> GroundTruth:
    p, model = engine.params, engine.model
    parts = model.particles
    means, stds = _thickness(engine)
    grey = engine.grey_table()
    _, per_mol = engine.neutron_mu_table()
    return GroundTruth(
        step_names=tuple(f"T{i}" for i in range(p.n_steps)),
        state_of_charge=tuple(p.soc_schedule),
        time_s=tuple(float(i * p.step_interval_s) for i in range(p.n_steps)),
        thickness_nm=tuple(means), thickness_std_nm=tuple(stds),
        mean_axial_strain=tuple(s.axial_strain for s in model.steps),
        in_plane_strain=tuple(s.in_plane_strain for s in model.steps),
        particle_id=np.arange(1, len(parts) + 1),
        particle_mode=parts.mode.copy(), particle_centre_nm=parts.centre_nm.copy(),
        particle_radius_nm=parts.radius_nm.copy(), particle_cracked=parts.cracked.copy(),
        lithiated_fraction=np.stack([s.fraction for s in model.steps]),
        particle_swelling=np.stack([s.swelling for s in model.steps]),
        hq_blur_sigma_nm=p.hq_blur_sigma_nm, lq_blur_sigma_nm=p.lq_blur_sigma_nm,
        neutron_blur_sigma_nm=float(math.hypot(p.neutron_blur_sigma_nm,
                                               p.neutron_bin * p.lq_voxel_nm / math.sqrt(12))),
        hq_edge_resolution_nm=EDGE_10_90_PER_SIGMA * p.hq_blur_sigma_nm,
        lq_edge_resolution_nm=EDGE_10_90_PER_SIGMA * p.lq_blur_sigma_nm,
        hq_noise_std=p.hq_noise, lq_noise_std=p.lq_noise, neutron_noise_std=p.neutron_noise,
        ring_amplitude=p.ring_amplitude,
        grey_values={ph.name: float(grey[ph]) for ph in Phase},
        lq_to_hq_phi=engine.lq_to_hq_phi(), lq_misalignment=engine.misalign.copy(),
        hq_grid=engine.grids["hq"], lq_grid=engine.grids["lq"],
        hq_offset_nm=engine.layout.hq_offset_nm, z_collector_nm=engine.layout.z_collector_nm,
        li_per_mol_l_neutron_mu=per_mol,
        neutron_mu_li_free_per_cm={ph.name: float(NEUTRON_MU_BACKGROUND.get(ph, 0.0)) for ph in Phase},
        li_concentration_mol_l={ph.name: float(v) for ph, v in zip(Phase, engine.li_concentration(np.arange(len(Phase))))},
        li6_fraction=float(p.li6_fraction), _engine=engine,
    )

