"""The physical model behind :mod:`tomo4d.phantom`: its types, phases and constants.

Everything is defined in the continuous *sample frame*: positions in nm, axes ``(z, y, x)``,
origin at the outer corner of the low-quality (LQ) field of view, so that the centre of LQ voxel
``i`` sits at ``(i + 0.5) * lq_voxel_nm``.  Labels of any voxel grid are obtained by evaluating
the model at the grid's voxel centres (:func:`~tomo4d.phantom._microstructure.material`), grey
images by averaging it over each voxel (:func:`~tomo4d.phantom._render.render_grey`), which makes
the HQ and LQ scans views of one and the same sample, and later time steps exactly the T0
material mapped through the deformation (:mod:`~tomo4d.phantom._deform`).

The model is split along its seams: this module (the dataclasses, :class:`Phase`,
:class:`LithiationMode`, constants), :mod:`~tomo4d.phantom._microstructure` (particles, random
fields, material at reference positions), :mod:`~tomo4d.phantom._deform` (lithiation schedule,
swelling and electrode-scale maps), :mod:`~tomo4d.phantom._render` (partial-volume grey images)
and :mod:`~tomo4d.phantom._kernels` (their numba kernels, imported lazily).

These modules are private; the public entry points are in :mod:`tomo4d.phantom`.
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


