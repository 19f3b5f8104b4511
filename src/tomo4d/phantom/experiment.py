"""Synthetic in-situ experiments: :func:`make_experiment`, :class:`SyntheticExperiment`, :class:`GroundTruth`.

Frames and grids
----------------
All positions are nm in the *sample frame* (axes ``(z, y, x)``, z = electrode thickness = rotation
axis, z grows from the current collector towards the separator).  Its origin is the outer corner of
the low-quality (LQ) field of view.  Two voxel grids are used, both of ``shape`` voxels:

``"lq"``  voxel ``lq_voxel_nm`` (default 100 nm); voxel ``i`` is centred at ``(i + 0.5) * 100`` nm.
``"hq"``  voxel ``hq_voxel_nm`` (default 50 nm), half the field of view per axis (1/8 of the volume),
          centred in the LQ field: voxel ``j`` is centred at ``hq_offset_nm + (j + 0.5) * 50`` nm.

The in-situ series (``series``, ``series_hq``), the repeated scan and the HQ training scan are
aligned with the sample frame; only the LQ training scan ``lq`` is misaligned, by the small affine
transform described by ``lq_to_hq_phi`` and, with ``pair_drift_nm`` > 0, by a smooth local
misregistration on top (:meth:`SyntheticExperiment.lq_drift_nm`) that no affine registration
removes, as between two real scans of one sample.  The ground truth (labels, displacements, strains) refers
to the sample of the series.

Rendering: labels (:meth:`GroundTruth.labels`) are the phase at each voxel *centre* (point
sampling).  Images are partial-volume: before the PSF blur each voxel holds the grey value of the
material averaged over the voxel (as a detector integrates), estimated with ``supersampling**3``
(default 27) midpoint sub-samples in every voxel whose 3x3x3 neighbourhood of labels is not
uniform; the other voxels lie inside one phase and take its grey value.  Sub-sample positions are
mapped to the reference configuration with the local Jacobian of the deformation, particle
surfaces are linearised about the voxel centre (error < 0.05 voxel for the smallest particles).
Without it the 2-voxel pore texture aliases differently in every deformed step, which limits DVC
on ``series_hq`` to ~0.06 px.  The voxel box adds ``voxel**2 / 12`` to the PSF variance (+0.5 % in
sigma for the defaults); ``*_blur_sigma_nm`` and ``*_edge_resolution_nm`` describe the PSF alone.
Neutron volumes are averages of 4^3 point-sampled LQ labels (``neutron_bin``), as before.

Memory: images are dask arrays rendered one whole volume per task (so values never depend on the
chunking) and cached for the last few volumes only; a whole series is never held in memory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import check_int, check_number, show
from ..errors import FormatError, InputError
from ..volume import Volume, VolumeMetadata
from . import _finite
from . import _model as M
from ._model import LithiationMode, Phase

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: Gaussian sigma -> 10-90 % edge rise distance.
EDGE_10_90_PER_SIGMA = 2.0 * 1.2815515655446004

_KIND_IDS = {"hq": 1, "lq": 2, "repeat": 3, "series": 4, "series_hq": 5, "repeat_hq": 6, "neutron": 7,
             "rings": 8, "micro": 9, "twin": 10, "misalign": 11, "drift": 12}

DEFAULT_GREY = {Phase.PORE: 0.10, Phase.MATRIX: 0.28, Phase.SILICON: 0.62, Phase.COLLECTOR: 1.0,
                Phase.SEPARATOR: 0.20}

#: Neutron attenuation (1/cm, at 1.8 A) of each phase without its lithium (deuterated electrolyte).
NEUTRON_MU_BACKGROUND = {Phase.PORE: 0.10, Phase.MATRIX: 0.30, Phase.SILICON: 0.12,
                         Phase.LITHIATED_SILICON: 0.06, Phase.COLLECTOR: 1.00, Phase.SEPARATOR: 0.45}
NATURAL_LI6_FRACTION = 0.075
SIGMA_LI6_B = 940.0
SIGMA_LI7_B = 0.0454
#: bound-atom total scattering of 6Li and 7Li, barn (Sears 1992), added to their absorption
SIGMA_LI6_SCATTER_B = 0.97
SIGMA_LI7_SCATTER_B = 1.40
THERMAL_WAVELENGTH_A = 1.798
AVOGADRO = 6.02214076e23


@dataclass(frozen=True)
class PhantomParams:
    """All parameters of a synthetic experiment (see :func:`make_experiment` for their meaning)."""

    shape: tuple[int, int, int] = (64, 64, 64)
    n_steps: int = 7
    seed: int = 0
    hq_voxel_nm: float = 50.0
    lq_voxel_nm: float = 100.0
    soc_schedule: tuple[float, ...] | None = None
    anode_thickness_nm: float | None = None
    particle_radius_nm: float | None = None
    radius_sigma: float = 0.35
    si_volume_fraction: float = 0.35
    core_shell_fraction: float = 0.1
    cracked_fraction: float = 0.2
    crack_width_nm: float | None = None
    matrix_porosity: float = 0.3
    pore_size_nm: float = 100.0
    separator_solid_fraction: float = 0.45
    fibre_radius_nm: float = 80.0
    expansion: float = 0.52
    expansion_gradient: float = 0.19
    in_plane_ratio: float = 0.05
    residual_fraction: float = 0.6
    particle_swelling: float = 0.35
    hq_blur_sigma_nm: float = 140.0
    lq_blur_sigma_nm: float = 313.0
    hq_noise: float = 0.02
    lq_noise: float = 0.06
    ring_amplitude: float = 0.03
    phase_contrast: float = 0.0
    lithiated_contrast_loss: float = 0.8
    misalignment_deg: float = 0.8
    misalignment_shift_nm: float = 60.0
    pair_drift_nm: float = 0.0
    pair_drift_length_nm: float = 3000.0
    series_sample: str = "same"
    step_interval_s: float = 3600.0
    neutron_bin: int = 4
    neutron_blur_sigma_nm: float = 500.0
    neutron_noise: float = 0.05
    li6_fraction: float = NATURAL_LI6_FRACTION
    supersampling: int = 3
    chunks: Any = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        d["soc_schedule"] = list(self.soc_schedule) if self.soc_schedule is not None else None
        return d


def _fraction(name, v, *, lo=0.0, hi=1.0, open_hi=False):
    f = check_number(name, v, minimum=lo, maximum=hi)
    if open_hi and f >= hi:
        raise InputError(f"{name}={show(f)} is out of range; give a number >= {show(lo)} and < {show(hi)}")
    return f


def _positive(name, v, *, allow_zero=False):
    return check_number(name, v, minimum=0, exclusive_minimum=not allow_zero)


#: bytes of memory per voxel of ``shape`` that rendering one experiment volume takes at its peak
#: (measured: ~185 B/voxel from 96^3 to 128^3, model fields, labels, grey values, blur and noise)
BYTES_PER_VOXEL = 160


def estimate_memory_bytes(shape) -> int:
    """Approximate peak memory (bytes) of generating and rendering an experiment of ``shape`` voxels."""
    return int(BYTES_PER_VOXEL * int(np.prod([int(s) for s in shape], dtype=np.int64)) + 200 * 2**20)


def _gib(n: float) -> str:
    return f"{n / 2**40:.3g} TiB" if n >= 2**40 else f"{n / 2**30:.3g} GiB"


def _check_memory(shape) -> None:
    """Refuse a shape whose rendering would not fit in the memory available now (psutil)."""
    import psutil

    need = estimate_memory_bytes(shape)
    avail = int(psutil.virtual_memory().available)
    if need > avail:
        side = int(((avail - 200 * 2**20) / BYTES_PER_VOXEL) ** (1 / 3)) if avail > 200 * 2**20 else 0
        hint = (f"give a smaller shape (--shape), e.g. at most {side} per axis for a cube here" if side >= 24
                else "free memory or use a machine with more")
        raise InputError(f"shape={show(tuple(shape))} needs about {_gib(need)} of memory to render (~{BYTES_PER_VOXEL} "
                         f"bytes per voxel) but only {_gib(avail)} is available; {hint}")


def default_soc_schedule(n_steps: int) -> tuple[float, ...]:
    """State of charge of T0..T(n-1): lithiation to 85 % then, for n >= 4, a partial delithiation to 50 %."""
    if n_steps == 1:
        return (0.0,)
    if n_steps == 2:
        return (0.0, 0.85)
    if n_steps == 3:
        return (0.0, 0.5, 0.85)
    lith = np.linspace(0.85 / (n_steps - 2), 0.85, n_steps - 2)
    return tuple([0.0] + [round(float(s), 6) for s in lith] + [0.5])


def _validate(p: PhantomParams) -> PhantomParams:
    shape = p.shape
    if isinstance(shape, (numbers.Number, str)) or np.ndim(shape) == 0:
        shape = (shape,) * 3
    try:
        shape = tuple(shape)
    except TypeError:
        raise InputError(f"shape={show(p.shape)} is not understood; give three whole numbers (z, y, x), "
                         "each >= 24") from None
    if len(shape) != 3:
        raise InputError(f"shape={show(p.shape)} has {len(shape)} value(s); give three whole numbers (z, y, x), "
                         "each >= 24")
    try:
        shape = tuple(check_int(f"shape[{i}]", s, minimum=24, maximum=4096) for i, s in enumerate(shape))
    except InputError as exc:
        raise InputError(f"shape={show(p.shape)} is not valid: {exc} (each of z, y, x; smaller than 24 leaves no "
                         "room for the electrode layers)") from None
    n_steps = check_int("n_steps", p.n_steps, minimum=1, maximum=100)
    seed = check_int("seed", p.seed, minimum=0)
    hq = _positive("hq_voxel_nm", p.hq_voxel_nm)
    lq = _positive("lq_voxel_nm", p.lq_voxel_nm)
    if lq < hq:
        raise InputError(f"lq_voxel_nm={show(p.lq_voxel_nm)} must be >= hq_voxel_nm={show(p.hq_voxel_nm)} "
                         "(the LQ scan is coarser)")
    soc = p.soc_schedule
    if soc is None:
        soc = default_soc_schedule(n_steps)
    else:
        if isinstance(soc, (str, numbers.Number)) or np.ndim(soc) != 1:
            raise InputError(f"soc_schedule={show(soc)} is not a sequence; give one state of charge per step, "
                             "the first 0")
        soc = tuple(_fraction(f"soc_schedule[{i}]", s) for i, s in enumerate(soc))
        if len(soc) != n_steps:
            raise InputError(f"soc_schedule has {len(soc)} values but n_steps={n_steps}; give one state of charge per step")
        if soc[0] != 0.0:
            raise InputError(f"soc_schedule[0]={show(soc[0])} must be 0: T0 is the pristine reference state")
    for name in ("core_shell_fraction", "cracked_fraction", "residual_fraction", "lithiated_contrast_loss"):
        _fraction(name, getattr(p, name))
    _fraction("si_volume_fraction", p.si_volume_fraction, lo=0.05, hi=0.55)
    _fraction("matrix_porosity", p.matrix_porosity, hi=0.9)
    _fraction("separator_solid_fraction", p.separator_solid_fraction, lo=0.05, hi=0.95)
    _fraction("li6_fraction", p.li6_fraction)
    _fraction("expansion", p.expansion, hi=1.0)
    _fraction("expansion_gradient", p.expansion_gradient, hi=0.9)
    _fraction("in_plane_ratio", p.in_plane_ratio, hi=0.5)
    _fraction("particle_swelling", p.particle_swelling, hi=0.5)
    _fraction("radius_sigma", p.radius_sigma, hi=1.0)
    for name in ("hq_blur_sigma_nm", "lq_blur_sigma_nm", "hq_noise", "lq_noise", "ring_amplitude",
                 "phase_contrast", "misalignment_deg", "misalignment_shift_nm", "pair_drift_nm",
                 "neutron_blur_sigma_nm", "neutron_noise", "step_interval_s"):
        _positive(name, getattr(p, name), allow_zero=True)
    for name in ("pore_size_nm", "fibre_radius_nm", "pair_drift_length_nm"):
        _positive(name, getattr(p, name))
    if p.misalignment_deg > 10:
        raise InputError(f"misalignment_deg={show(p.misalignment_deg)} is not small; give <= 10 degrees")
    if p.pair_drift_nm > 500:
        raise InputError(f"pair_drift_nm={show(p.pair_drift_nm)} is not a local misregistration; give <= 500 nm")
    if not isinstance(p.series_sample, str) or p.series_sample not in ("same", "twin"):
        raise InputError(f"series_sample={show(p.series_sample)} is not supported; use 'same' or 'twin'")
    ss = p.supersampling
    if isinstance(ss, (bool, np.bool_)) or not isinstance(ss, (int, np.integer)) or not 1 <= ss <= 8:
        raise InputError(f"supersampling={show(ss)} must be an integer in [1, 8] (sub-samples per axis of a voxel "
                         "at an interface; 1 = point sampling)")
    nb = check_int("neutron_bin", p.neutron_bin, minimum=1, maximum=min(shape) // 4)
    hz = shape[0] * hq
    t0 = 0.45 * hz if p.anode_thickness_nm is None else _positive("anode_thickness_nm", p.anode_thickness_nm)
    if 0.08 * hz + t0 * (1.0 + p.expansion) > 0.95 * hz or t0 < 8 * hq:
        raise InputError(
            f"anode_thickness_nm={t0:g} does not fit the HQ field of {hz:g} nm along z with expansion={p.expansion:g} "
            f"(and the collector above it); give at most {(0.87 * hz) / (1 + p.expansion):.0f} nm, at least "
            f"{8 * hq:g} nm, or a larger shape[0]"
        )
    r = t0 / 5.0 if p.particle_radius_nm is None else _positive("particle_radius_nm", p.particle_radius_nm)
    if r < 1.5 * hq or 2 * r > 0.9 * t0:
        raise InputError(
            f"particle_radius_nm={r:g} must be between 1.5 HQ voxels ({1.5 * hq:g} nm) and 0.45 x the anode "
            f"thickness ({0.45 * t0:g} nm); change it, anode_thickness_nm or shape"
        )
    cw = max(hq, 60.0) if p.crack_width_nm is None else _positive("crack_width_nm", p.crack_width_nm)
    if p.particle_swelling * (np.cbrt(1 + M.SI_FULL_VOLUME_EXPANSION) - 1) > 0.3:
        raise InputError(f"particle_swelling={show(p.particle_swelling)} is too large; give <= 0.5")
    return dataclasses.replace(p, shape=shape, n_steps=n_steps, soc_schedule=tuple(float(s) for s in soc),
                               anode_thickness_nm=float(t0), particle_radius_nm=float(r),
                               crack_width_nm=float(cw), neutron_bin=nb, seed=seed,
                               supersampling=int(ss))


@dataclass(frozen=True)
class GridSpec:
    """A voxel grid in the sample frame: voxel ``i`` is centred at ``origin_nm + i * voxel_size_nm``."""

    name: str
    shape: tuple[int, int, int]
    voxel_size_nm: float
    origin_nm: tuple[float, float, float]

    def positions_nm(self) -> np.ndarray:
        """Voxel centres, shape ``(nz, ny, nx, 3)``, nm."""
        o, v = np.asarray(self.origin_nm), self.voxel_size_nm
        pts = np.empty(tuple(self.shape) + (3,))
        for a in range(3):
            sh = [1, 1, 1]
            sh[a] = -1
            pts[..., a] = (o[a] + v * np.arange(self.shape[a])).reshape(sh)
        return pts


@dataclass(frozen=True)
class _DriftField:
    """Smooth random displacement (nm) of the LQ training scan relative to the HQ scan.

    Separate scans of one sample never superpose exactly after an affine registration: the sample
    relaxes, drifts and warms between them, leaving a local misregistration of about one HQ voxel.
    Modelled as a sum of ``n`` plane waves of wavelength ``length_nm`` in random directions, with
    random vector amplitudes scaled so that the RMS length of the displacement is ``rms_nm``.
    """

    wave: np.ndarray  # (n, 3) wave vectors, rad/nm
    phase: np.ndarray  # (n,)
    amp: np.ndarray  # (n, 3) nm

    @classmethod
    def make(cls, rng, *, rms_nm, length_nm, n=12):
        d = rng.normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        wave = d * (2.0 * np.pi / float(length_nm)) * rng.uniform(0.8, 1.25, (n, 1))
        phase = rng.uniform(0.0, 2.0 * np.pi, n)
        amp = rng.normal(size=(n, 3))
        # mean of |sum_k a_k cos(.)|^2 over positions is sum_k |a_k|^2 / 2
        amp *= float(rms_nm) / max(np.sqrt(0.5 * (amp ** 2).sum()), 1e-12)
        return cls(wave, phase, amp)

    def __call__(self, pts):
        if not np.any(self.amp):
            return np.zeros_like(pts)
        out = np.zeros(pts.shape, np.float64)
        for k in range(len(self.phase)):
            out += np.cos(pts @ self.wave[k] + self.phase[k])[..., None] * self.amp[k]
        return out


class _Engine:
    """Renders labels and images of one experiment on demand, with a small cache."""

    def __init__(self, params: PhantomParams, cache_size: int = 8):
        self.params = p = params
        hz = p.shape[0] * p.hq_voxel_nm
        r = p.lq_voxel_nm / p.hq_voxel_nm
        hq_off = tuple(float(round(n * (r - 1) / 2.0) * p.hq_voxel_nm) for n in p.shape)
        self.layout = M.Layout(
            shape=p.shape, hq_voxel_nm=p.hq_voxel_nm, lq_voxel_nm=p.lq_voxel_nm,
            lq_extent_nm=tuple(float(n * p.lq_voxel_nm) for n in p.shape), hq_offset_nm=hq_off,
            z_collector_nm=hq_off[0] + 0.08 * hz, anode_thickness_nm=p.anode_thickness_nm,
            crack_width_nm=p.crack_width_nm)
        self.model = self._make_model(np.random.default_rng([p.seed, _KIND_IDS["micro"]]))
        if p.series_sample == "twin":
            self.pair_model = self._make_model(np.random.default_rng([p.seed, _KIND_IDS["twin"]]))
        else:
            self.pair_model = self.model
        self.misalign = self._make_misalignment(np.random.default_rng([p.seed, _KIND_IDS["misalign"]]))
        self.drift = _DriftField.make(np.random.default_rng([p.seed, _KIND_IDS["drift"]]),
                                      rms_nm=p.pair_drift_nm, length_nm=p.pair_drift_length_nm)
        self.rings = self._make_rings(np.random.default_rng([p.seed, _KIND_IDS["rings"]]))
        self._cache: OrderedDict = OrderedDict()
        #: voxel count of each phase of the HQ truth labels, per step rendered so far
        self.phase_counts_hq: dict[int, np.ndarray] = {}
        self._cache_size = cache_size
        self.grids = {g: GridSpec(g, p.shape, self.layout.voxel_nm(g),
                                  tuple(float(v) for v in self.layout.grid_origin_nm(g))) for g in ("hq", "lq")}

    # -- model ------------------------------------------------------------------------------
    def _make_model(self, rng):
        p, lay = self.params, self.layout
        # particles whose centre lies this far outside the LQ field can still be imaged (in-plane
        # strain, misalignment of the LQ training scan, irregular shapes up to 2.2 x 1.5 radii)
        margin = 3.5 * p.particle_radius_nm + 0.03 * max(lay.lq_extent_nm) + p.misalignment_shift_nm
        parts = M.make_particles(rng, lay, si_fraction=p.si_volume_fraction, radius_nm=p.particle_radius_nm,
                                 radius_sigma=p.radius_sigma, core_shell_fraction=p.core_shell_fraction,
                                 cracked_fraction=p.cracked_fraction, margin_nm=margin)
        fields = M.make_fields(rng, lay, porosity=p.matrix_porosity, pore_size_nm=p.pore_size_nm,
                               fibre_fraction=p.separator_solid_fraction, fibre_radius_nm=p.fibre_radius_nm,
                               margin_nm=margin)
        steps = M.make_steps(parts, p.soc_schedule, expansion=p.expansion, in_plane_ratio=p.in_plane_ratio,
                             residual_fraction=p.residual_fraction, particle_swelling=p.particle_swelling)
        return M.Model(lay, parts, fields, steps, p.expansion_gradient)

    def _make_misalignment(self, rng):
        """4x4 affine (sample frame, nm): LQ-scan position -> sample position, about the LQ centre."""
        p = self.params
        a = np.deg2rad(p.misalignment_deg)
        angles = rng.uniform(-1, 1, 3) * np.array([a, a / 4, a / 4])

        def rot(i, j, t):
            m = np.eye(3)
            m[i, i] = m[j, j] = np.cos(t)
            m[i, j], m[j, i] = -np.sin(t), np.sin(t)
            return m

        lin = rot(1, 2, angles[0]) @ rot(0, 2, angles[1]) @ rot(0, 1, angles[2])
        lin = lin * (1.0 + rng.uniform(-1, 1) * 0.002 * min(p.misalignment_deg, 1.0))
        shift = rng.normal(size=3)
        shift *= p.misalignment_shift_nm / max(np.linalg.norm(shift), 1e-12)
        c = np.asarray(self.layout.lq_extent_nm) / 2.0
        mat = np.eye(4)
        mat[:3, :3] = lin
        mat[:3, 3] = c + shift - lin @ c
        return mat

    def _make_rings(self, rng):
        p = self.params
        n = p.shape
        yy, xx = np.meshgrid(np.arange(n[1]) - (n[1] - 1) / 2.0, np.arange(n[2]) - (n[2] - 1) / 2.0, indexing="ij")
        rr = np.hypot(yy, xx)
        out = np.zeros(n[1:], np.float32)
        if p.ring_amplitude == 0:
            return out
        k = max(4, int(rr.max() / 5))
        for r0, a in zip(rng.uniform(1.0, rr.max(), k), rng.normal(0, 1, k)):
            out += np.float32(a * p.ring_amplitude) * np.exp(-0.5 * ((rr - r0) / 0.6) ** 2).astype(np.float32)
        out += np.float32(2 * p.ring_amplitude) * np.exp(-0.5 * (rr / 1.0) ** 2).astype(np.float32)
        return out

    # -- cache --------------------------------------------------------------------------------
    def _cached(self, key, fn):
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        val = fn()
        self._cache[key] = val
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return val

    # -- labels -------------------------------------------------------------------------------
    def _reference_positions(self, model, grid, step, misaligned):
        pts = M.grid_points(self.layout, grid)
        if misaligned:
            m = self.misalign
            pts = pts @ m[:3, :3].T + m[:3, 3]
            pts = pts + self.drift(pts)
        return M.deform_inverse(model, step, pts)

    def _model_of(self, sample):
        return self.model if sample == "series" else self.pair_model

    def _labels_from(self, key, ref):
        _, grid, step, sample, misaligned = key
        out = M.material(self._model_of(sample), step, ref)
        if grid == "hq" and sample == "series" and not misaligned:
            self.phase_counts_hq[step] = np.bincount(out[0].ravel(), minlength=len(Phase))
        return out

    def labels(self, grid, step, *, sample="series", misaligned=False):
        """(phase uint8, particle int32) volumes of ``grid`` at ``step``: the material at the voxel centres."""
        if self.pair_model is self.model:
            sample = "series"
        key = ("labels", grid, step, sample, misaligned)
        return self._cached(key, lambda: self._labels_from(
            key, self._reference_positions(self._model_of(sample), grid, step, misaligned)))

    def volume_grey(self, grid, step, *, sample="series", misaligned=False):
        """Noise-free, unblurred grey image of ``grid`` at ``step``: the material's grey value averaged
        over each voxel (partial volume, ``supersampling**3`` sub-samples near interfaces), float32."""
        if self.pair_model is self.model:
            sample = "series"
        key = ("labels", grid, step, sample, misaligned)
        table = self.grey_table()
        k = self.params.supersampling

        def compute():
            if k == 1:
                return table[self.labels(grid, step, sample=sample, misaligned=misaligned)[0]]
            model = self._model_of(sample)
            ref = self._reference_positions(model, grid, step, misaligned)
            phase, pid = self._cached(key, lambda: self._labels_from(key, ref))
            return M.render_grey(model, step, ref, phase, pid, table, supersampling=k)
        return self._cached(("grey",) + key[1:], compute)

    # -- images -------------------------------------------------------------------------------
    def grey_table(self):
        p = self.params
        t = np.zeros(len(Phase), np.float32)
        for ph, v in DEFAULT_GREY.items():
            t[ph] = v
        si, mx = DEFAULT_GREY[Phase.SILICON], DEFAULT_GREY[Phase.MATRIX]
        t[Phase.LITHIATED_SILICON] = si + (mx - si) * p.lithiated_contrast_loss
        return t

    def image(self, kind, step=0):
        """float32 image of ``kind`` (hq, lq, repeat, series, series_hq, repeat_hq) at ``step``.

        Volume-averaged grey values (:meth:`volume_grey`), blurred by the scanner-frame Gaussian PSF,
        optional phase-contrast fringes, rings (LQ), additive Gaussian noise.
        """
        from scipy.ndimage import gaussian_filter, gaussian_laplace

        p = self.params
        grid = "hq" if kind in ("hq", "series_hq", "repeat_hq") else "lq"
        sample = "pair" if kind in ("hq", "lq") else "series"
        img = self.volume_grey(grid, step, sample=sample, misaligned=(kind == "lq"))
        vox = self.layout.voxel_nm(grid)
        sigma = (p.hq_blur_sigma_nm if grid == "hq" else p.lq_blur_sigma_nm) / vox
        noise = p.hq_noise if grid == "hq" else p.lq_noise
        out = gaussian_filter(img, sigma, mode="nearest") if sigma > 0 else img.copy()
        if p.phase_contrast > 0:
            fr = max(sigma, 0.7)
            out -= np.float32(p.phase_contrast * fr * fr) * gaussian_laplace(img, fr, mode="nearest")
        del img
        if grid == "lq":
            out += self.rings[None]
        rng = np.random.default_rng([p.seed, _KIND_IDS[kind], step])
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(noise)
        return out

    def li_concentration(self, phase):
        c = np.zeros(len(Phase), np.float32)
        c[Phase.LITHIATED_SILICON] = M.LI_IN_LITHIATED_SI_MOL_L
        c[Phase.PORE] = M.LI_IN_ELECTROLYTE_MOL_L
        return c[phase]

    def neutron_mu_table(self, li6_fraction=None):
        """Attenuation (1/cm at 1.8 A) per phase including its lithium (absorption and scattering)."""
        e = self.params.li6_fraction if li6_fraction is None else li6_fraction
        sigma_li_cm2 = (e * (SIGMA_LI6_B + SIGMA_LI6_SCATTER_B) + (1 - e) * (SIGMA_LI7_B + SIGMA_LI7_SCATTER_B)) * 1e-24
        per_mol_l = AVOGADRO * 1e-3 * sigma_li_cm2  # (1/cm) per (mol/L)
        t = np.zeros(len(Phase), np.float64)
        for ph, v in NEUTRON_MU_BACKGROUND.items():
            t[ph] = v
        t[Phase.LITHIATED_SILICON] += M.LI_IN_LITHIATED_SI_MOL_L * per_mol_l
        t[Phase.PORE] += M.LI_IN_ELECTROLYTE_MOL_L * per_mol_l
        return t.astype(np.float32), float(per_mol_l)

    def neutron(self, step):
        """Neutron attenuation volume (1/cm), LQ field binned by ``neutron_bin``, blurred, noisy."""
        from scipy.ndimage import gaussian_filter

        p = self.params
        phase, _ = self.labels("lq", step)
        mu = self.neutron_mu_table()[0][phase]
        b = p.neutron_bin
        n = tuple(s // b for s in mu.shape)
        mu = mu[:n[0] * b, :n[1] * b, :n[2] * b].reshape(n[0], b, n[1], b, n[2], b).mean(axis=(1, 3, 5))
        sigma = p.neutron_blur_sigma_nm / (b * p.lq_voxel_nm)
        if sigma > 0:
            mu = gaussian_filter(mu, sigma, mode="nearest")
        rng = np.random.default_rng([p.seed, _KIND_IDS["neutron"], step])
        return (mu + rng.standard_normal(mu.shape, dtype=np.float32) * np.float32(p.neutron_noise)).astype(np.float32)

    # -- phi ------------------------------------------------------------------------------------
    def lq_to_hq_phi(self):
        """4x4 phi: HQ voxel coords (fixed) -> LQ-on-HQ-grid voxel coords (moving), about (n-1)/2."""
        lay = self.layout
        h = lay.hq_voxel_nm
        o = np.asarray(lay.hq_offset_nm)
        inv = np.linalg.inv(self.misalign)

        def moving(x):
            X = o + (x + 0.5) * h
            pscan = inv[:3, :3] @ X + inv[:3, 3]
            return (pscan - o) / h - 0.5

        c = (np.asarray(lay.shape, float) - 1.0) / 2.0
        phi = np.eye(4)
        phi[:3, :3] = inv[:3, :3]
        phi[:3, 3] = moving(c) - c
        return phi


def apply_phi(phi, points, centre):
    """Apply a project-convention phi: ``x' = F (x - c) + c + t`` to points (..., 3)."""
    phi = np.asarray(phi, float)
    pts = np.asarray(points, float)
    c = np.asarray(centre, float)
    return (pts - c) @ phi[:3, :3].T + c + phi[:3, 3]


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """Everything the synthetic experiment knows exactly.

    Scalars and per-step tuples are plain fields; volumes are computed on demand (and cached for a
    few steps), so holding a GroundTruth costs little memory.  All positions are nm in the sample
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
    _engine: Any = field(default=None, repr=False, compare=False)
    _lazy: dict = field(default_factory=dict, repr=False, compare=False)

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
        return M.deform_forward(self._engine.model, s, pts) - pts

    def inverse_displacement(self, step, points_zyx_nm) -> np.ndarray:
        """v(x, t) (nm) such that the material at deformed position x came from x + v (T0)."""
        pts = np.asarray(points_zyx_nm, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise InputError(f"points_zyx_nm must be an (N, 3) array, got shape {pts.shape}")
        return M.deform_inverse(self._engine.model, self._step(step), pts) - pts

    def displacement_field(self, step, *, grid: str = "lq") -> np.ndarray:
        """u(X, t) at every voxel centre X of ``grid`` (reference configuration), shape (3, z, y, x), nm, float32."""
        g = self._grid(grid)
        pts = self._engine.grids[g].positions_nm()
        u = M.deform_forward(self._engine.model, self._step(step), pts) - pts
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
        if "si" not in self._lazy:
            v3 = self.hq_grid.voxel_size_nm ** 3
            vals, lith = [], []
            counts = self._engine.phase_counts_hq
            for s in range(self.n_steps):
                if s not in counts:
                    self.labels(s, grid="hq")
                vals.append(float(counts[s][Phase.SILICON]) * v3)
                lith.append(float(counts[s][Phase.LITHIATED_SILICON]) * v3)
            self._lazy["si"] = tuple(vals)
            self._lazy["lith"] = tuple(lith)
        return self._lazy["si"]

    @property
    def lithiated_si_volume_nm3(self) -> tuple[float, ...]:
        """Volume of lithiated silicon in the HQ field per step, nm^3."""
        self.non_lithiated_si_volume_nm3
        return self._lazy["lith"]

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
        z = M.deform_forward(engine.model, s, base)[:, 0] - lay.z_collector_nm
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


def _lazy_volume(engine, fn, key, shape, voxel, meta, chunks):
    import dask
    import dask.array as da

    name = f"tomo4d-phantom-{key}-{dask.base.tokenize(engine.params.to_dict())}"
    arr = da.from_delayed(dask.delayed(fn, pure=True, name=name)(), shape=shape, dtype=np.float32, name=name)
    if chunks is not None:
        arr = arr.rechunk(chunks)
    return Volume(arr, (voxel,) * 3, meta)


class SyntheticExperiment:
    """A synthetic in-situ nano-tomography experiment with its ground truth.

    Built by :func:`make_experiment` (or :meth:`load`).  Image volumes are lazy (dask) and rendered
    one whole volume at a time on first use.

    Attributes
    ----------
    params : PhantomParams
        The validated parameters (reproduce the experiment exactly with ``make_experiment(**...)``).
    hq : Volume
        High-quality training scan at T0: ``hq_voxel_nm`` voxels over the HQ field, mild blur and noise.
    lq : Volume
        Low-quality training scan at T0: ``lq_voxel_nm`` voxels over the 2x larger (8x volume) LQ
        field, stronger blur, more noise, ring artefacts around the rotation axis z; misaligned with
        respect to ``hq`` by :attr:`lq_to_hq_phi`.
    lq_to_hq_phi : ndarray, shape (4, 4)
        Registration of the training pair in the project convention ``register(fixed, moving)``:
        fixed = ``hq`` (HQ voxel coordinates), moving = the LQ scan resampled to the HQ voxel size
        over the nominal HQ field, i.e. :meth:`lq_on_hq_grid` (moving voxel ``m`` is LQ continuous
        index ``(m + hq_offset_vox + 0.5) * hq/lq - 0.5``; for the defaults the x2 cell-centred
        upsampling of ``lq`` cropped from index ``shape // 2``).  ``phi[:3, :3] = F``,
        ``phi[:3, 3] = t``, and ``x_moving = F (x - c) + c + t`` with ``c = (shape - 1) / 2``:
        sampling the moving volume at ``phi(x)`` reproduces ``hq`` at ``x``.  Use :func:`apply_phi`.
    series : tuple of Volume
        In-situ LQ scans T0..Tn of the series sample, aligned with the sample frame (metadata
        ``time_step``, ``time_s``, ``state_of_charge``).
    series_hq : tuple of Volume
        The same steps at HQ quality over the HQ field (independent noise).
    repeat, repeat_hq : Volume
        Second scans of T0 with no change in between (LQ / HQ): the noise floor.
    neutron_series : tuple of Volume
        Neutron attenuation (1/cm) per step over the LQ field, ``neutron_bin`` x coarser voxels.
    truth : GroundTruth
    """

    def __init__(self, params: PhantomParams, *, _engine=None, _volumes=None):
        self.params = params
        self._engine = engine = _engine or _Engine(params)
        self.truth = _build_truth(engine)
        self.lq_to_hq_phi = self.truth.lq_to_hq_phi
        p = params
        n = p.shape
        names = self.truth.step_names
        if _volumes is not None:
            for k, v in _volumes.items():
                setattr(self, k, v)
            return

        def meta(name, step=None, modality="xray"):
            kw = {}
            if step is not None:
                kw = dict(time_step=names[step], time_s=self.truth.time_s[step],
                          state_of_charge=self.truth.state_of_charge[step])
            return VolumeMetadata(name=name, modality=modality, provenance=(f"tomo4d.phantom seed={p.seed}",),
                                  extra={"synthetic": True}, **kw)

        ch = p.chunks
        self.hq = _lazy_volume(engine, lambda: engine.image("hq"), "hq", n, p.hq_voxel_nm, meta("HQ T0", 0), ch)
        self.lq = _lazy_volume(engine, lambda: engine.image("lq"), "lq", n, p.lq_voxel_nm, meta("LQ T0", 0), ch)
        self.repeat = _lazy_volume(engine, lambda: engine.image("repeat"), "repeat", n, p.lq_voxel_nm,
                                   meta("LQ T0 repeat", 0), ch)
        self.repeat_hq = _lazy_volume(engine, lambda: engine.image("repeat_hq"), "repeat_hq", n, p.hq_voxel_nm,
                                      meta("HQ T0 repeat", 0), ch)
        self.series = tuple(
            _lazy_volume(engine, (lambda s=s: engine.image("series", s)), f"series{s}", n, p.lq_voxel_nm,
                         meta(f"LQ {names[s]}", s), ch) for s in range(p.n_steps))
        self.series_hq = tuple(
            _lazy_volume(engine, (lambda s=s: engine.image("series_hq", s)), f"serieshq{s}", n, p.hq_voxel_nm,
                         meta(f"HQ {names[s]}", s), ch) for s in range(p.n_steps))
        nb = tuple(s // p.neutron_bin for s in n)
        self.neutron_series = tuple(
            _lazy_volume(engine, (lambda s=s: engine.neutron(s)), f"neutron{s}", nb, p.neutron_bin * p.lq_voxel_nm,
                         meta(f"neutron {names[s]}", s, "neutron"), ch) for s in range(p.n_steps))

    def __repr__(self) -> str:
        p = self.params
        return (f"<SyntheticExperiment shape={p.shape} steps={p.n_steps} seed={p.seed} "
                f"particles={len(self.truth.particle_id)} hq={p.hq_voxel_nm:g} nm lq={p.lq_voxel_nm:g} nm>")

    @property
    def n_steps(self) -> int:
        return self.params.n_steps

    def lq_drift_nm(self, points_nm) -> np.ndarray:
        """Local misregistration of the LQ training scan (``pair_drift_nm``), nm, after its affine part.

        The LQ scan sees at LQ-scan position ``p`` the sample at ``A p + d(A p)``, with ``A`` the
        affine :attr:`GroundTruth.lq_misalignment` and ``d`` this smooth field (zero by default),
        which no affine registration removes.  ``points_nm``: array of shape ``(..., 3)``, (z, y, x) nm
        in the sample frame (positions after ``A``); returns the same shape.
        """
        pts = np.asarray(points_nm, dtype=np.float64)
        if pts.ndim < 1 or pts.shape[-1] != 3:
            raise InputError(f"points_nm has shape {pts.shape}; give positions of shape (..., 3) in nm")
        return self._engine.drift(pts)

    def lq_on_hq_grid(self, lq=None, *, order: int = 1) -> np.ndarray:
        """Resample an LQ-grid volume (default :attr:`lq`) onto the HQ voxel grid over the nominal HQ field.

        This is the *moving* volume of :attr:`lq_to_hq_phi` (interpolation ``order`` 0-3 of
        :func:`scipy.ndimage.map_coordinates`, cell-centred: HQ-grid voxel ``m`` samples LQ continuous
        index ``(hq_offset_nm + (m + 0.5) * hq_voxel_nm) / lq_voxel_nm - 0.5``).
        """
        from scipy.ndimage import map_coordinates

        vol = self.lq if lq is None else lq
        arr = vol.numpy() if isinstance(vol, Volume) else np.asarray(vol)
        lay = self._engine.layout
        coords = []
        for a in range(3):
            m = np.arange(self.params.shape[a])
            coords.append((lay.hq_offset_nm[a] + (m + 0.5) * lay.hq_voxel_nm) / lay.lq_voxel_nm - 0.5)
        grid = np.meshgrid(*coords, indexing="ij")
        return map_coordinates(arr.astype(np.float32), grid, order=order, mode="nearest").astype(np.float32)

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path, *, overwrite: bool = False, fields: str = "coarse", progress=None) -> Path:
        """Write the experiment to a self-describing folder, one volume at a time (bounded memory).

        Layout: ``experiment.json`` (parameters + ground-truth numbers + file index), ``hq.tif``,
        ``lq.tif``, ``repeat.tif``, ``repeat_hq.tif``, ``series/T*.tif``, ``series_hq/T*.tif``,
        ``neutron/T*.tif``, ``truth/labels_{hq,lq}_T*.tif`` (uint8 :class:`Phase`),
        ``truth/particles_hq_T*.tif`` (int32 ids), ``truth/particles.csv`` (per particle: mode, radius,
        lithiated fraction per step) and ``truth/displacement_T*.npz`` (u in nm on the LQ grid,
        every 4th voxel for ``fields="coarse"``, every voxel for ``"full"``, none for ``"none"``).

        Parameters
        ----------
        path : path-like
            Output folder (written under a temporary name, renamed when complete).
        overwrite : bool
            Replace an existing folder.
        fields : {"coarse", "full", "none"}
        progress : callable(done, total), optional
        """
        from ..io import atomic_output, save_volume

        if fields not in ("coarse", "full", "none"):
            raise InputError(f"fields={show(fields)} is not supported; use 'coarse', 'full' or 'none'")
        out = Path(path)
        truth = self.truth
        n = self.n_steps
        jobs = [("hq.tif", lambda: self.hq), ("lq.tif", lambda: self.lq), ("repeat.tif", lambda: self.repeat),
                ("repeat_hq.tif", lambda: self.repeat_hq)]
        per_step = [[(f"series/{name}.tif", lambda s=s: self.series[s]),
                     (f"series_hq/{name}.tif", lambda s=s: self.series_hq[s]),
                     (f"neutron/{name}.tif", lambda s=s: self.neutron_series[s])]
                    for s, name in enumerate(truth.step_names)]
        total = len(jobs) + 6 * n + 1
        done = 0
        with atomic_output(out, overwrite=overwrite) as tmp:
            tmp.mkdir(parents=True)
            for rel, get in jobs:
                save_volume(get().compute(), tmp / rel)
                done += 1
                if progress:
                    progress(done, total)
            for s, name in enumerate(truth.step_names):
                # everything of one step together: its labels are rendered once (cache)
                for rel, get in per_step[s]:
                    save_volume(get().compute(), tmp / rel)
                    done += 1
                    if progress:
                        progress(done, total)
                meta = VolumeMetadata(name=f"phase labels {name}", time_step=name, modality="label",
                                      state_of_charge=truth.state_of_charge[s],
                                      extra={"phases": {ph.name: int(ph) for ph in Phase}})
                for g in ("hq", "lq"):
                    save_volume(Volume(truth.labels(s, grid=g), (self._engine.layout.voxel_nm(g),) * 3, meta),
                                tmp / "truth" / f"labels_{g}_{name}.tif")
                save_volume(Volume(truth.particle_labels(s, grid="hq"), (self.params.hq_voxel_nm,) * 3,
                                   dataclasses.replace(meta, name=f"particle labels {name}")),
                            tmp / "truth" / f"particles_hq_{name}.tif")
                done += 2
                if fields != "none":
                    stride = 4 if fields == "coarse" else 1
                    g = truth.lq_grid
                    pos = g.positions_nm()[::stride, ::stride, ::stride]
                    u = M.deform_forward(self._engine.model, s, pos) - pos
                    np.savez_compressed(tmp / "truth" / f"displacement_{name}.npz",
                                        positions_nm=pos.astype(np.float32), displacement_nm=u.astype(np.float32))
                done += 1
                if progress:
                    progress(done, total)
            self._write_particles_csv(tmp / "truth" / "particles.csv")
            doc = {"tomo4d_phantom": FORMAT_VERSION, "params": self.params.to_dict(),
                   "truth": truth.summary(),
                   "non_lithiated_si_volume_nm3": list(truth.non_lithiated_si_volume_nm3),
                   "lithiated_si_volume_nm3": list(truth.lithiated_si_volume_nm3),
                   "fingerprint": _fingerprint(self._engine),
                   "files": {"hq": "hq.tif", "lq": "lq.tif", "repeat": "repeat.tif", "repeat_hq": "repeat_hq.tif",
                             "series": [f"series/{s}.tif" for s in truth.step_names],
                             "series_hq": [f"series_hq/{s}.tif" for s in truth.step_names],
                             "neutron_series": [f"neutron/{s}.tif" for s in truth.step_names]}}
            (tmp / "experiment.json").write_text(json.dumps(doc, indent=1))
            done += 1
            if progress:
                progress(done, total)
        return out

    def _write_particles_csv(self, path: Path) -> None:
        t = self.truth
        head = ["id", "mode", "cracked", "radius_nm", "centre_z_nm", "centre_y_nm", "centre_x_nm"]
        head += [f"lithiated_fraction_{s}" for s in t.step_names]
        lines = [",".join(head)]
        for i in range(len(t.particle_id)):
            row = [str(int(t.particle_id[i])), LithiationMode(int(t.particle_mode[i])).name.lower(),
                   str(int(t.particle_cracked[i])), f"{t.particle_radius_nm[i]:.2f}"]
            row += [f"{v:.2f}" for v in t.particle_centre_nm[i]]
            row += [f"{v:.5f}" for v in t.lithiated_fraction[:, i]]
            lines.append(",".join(row))
        path.write_text("\n".join(lines) + "\n")

    @classmethod
    def load(cls, path) -> SyntheticExperiment:
        """Open a folder written by :meth:`save`: volumes are read lazily, the ground truth is rebuilt
        from the stored parameters (checked against the stored fingerprint)."""
        from ..io import open_volume

        p = Path(path)
        doc_path = p / "experiment.json"
        if not doc_path.is_file():
            raise InputError(f"{str(p)!r} is not a saved synthetic experiment (no experiment.json); check the path")
        fix = "regenerate it with 'tomo4d phantom' (make_experiment(...).save)"
        try:
            doc = json.loads(doc_path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"{str(doc_path)!r} is not valid JSON ({exc}); {fix}") from None
        if not isinstance(doc, dict):
            raise FormatError(f"{str(doc_path)!r} holds a JSON {type(doc).__name__}, not an experiment object; {fix}")
        if doc.get("tomo4d_phantom") != FORMAT_VERSION:
            raise FormatError(f"{str(doc_path)!r} has format version {show(doc.get('tomo4d_phantom'))}; "
                              f"this tomo4d reads version {FORMAT_VERSION}: {fix}")
        kw, files = doc.get("params"), doc.get("files")
        known = {f.name for f in dataclasses.fields(PhantomParams)}
        if not isinstance(kw, dict) or not isinstance(files, dict) or set(kw) - known:
            raise FormatError(f"{str(doc_path)!r} lacks or garbles its params/files (unknown: "
                              f"{sorted(set(kw) - known) if isinstance(kw, dict) else 'params'}); {fix}")
        kw = dict(kw)
        for key in ("shape", "soc_schedule"):
            if isinstance(kw.get(key), list):
                kw[key] = tuple(kw[key])
        try:
            params = _validate(PhantomParams(**kw))
        except InputError as exc:
            raise FormatError(f"{str(doc_path)!r}: {exc}; {fix}") from None
        engine = _Engine(params)
        if _fingerprint(engine) != doc.get("fingerprint"):
            raise InputError(f"{str(p)!r} was written by a tomo4d whose phantom differs from this one; "
                             "its ground truth cannot be rebuilt — regenerate it with make_experiment")
        f = files
        try:
            vols = {k: open_volume(p / f[k]) for k in ("hq", "lq", "repeat", "repeat_hq")}
            for k in ("series", "series_hq", "neutron_series"):
                vols[k] = tuple(open_volume(p / r) for r in f[k])
        except (KeyError, TypeError) as exc:
            raise FormatError(f"{str(doc_path)!r} lacks or garbles the file index entry {exc}; {fix}") from None
        return cls(params, _engine=engine, _volumes=vols)


def _fingerprint(engine) -> str:
    import hashlib

    parts = engine.model.particles
    h = hashlib.sha256()
    drift = (engine.drift.amp, engine.drift.wave) if engine.params.pair_drift_nm else ()
    for a in (parts.centre_nm, parts.radius_nm, parts.mode, engine.model.fields.pore[:4], engine.misalign,
              engine.neutron_mu_table()[0]) + drift:
        h.update(np.ascontiguousarray(np.round(a, 6)).tobytes())
    return h.hexdigest()[:16]


def make_experiment(*, shape=(64, 64, 64), n_steps: int = 7, seed: int = 0, **options) -> SyntheticExperiment:
    """Generate a synthetic in-situ nano-tomography experiment of a silicon anode with ground truth.

    Parameters
    ----------
    shape : (int, int, int)
        Voxels (z, y, x) of the HQ *and* of the LQ grids (each >= 24).  The LQ field is
        ``lq_voxel_nm / hq_voxel_nm`` (2) times larger per axis.
    n_steps : int
        Number of time steps T0..T(n-1), including the pristine T0.
    seed : int
        Seed of every random choice: the same seed gives the same bytes.
    **options
        Any field of :class:`PhantomParams`:

        - geometry: ``hq_voxel_nm`` (50), ``lq_voxel_nm`` (100), ``anode_thickness_nm`` (0.45 x the HQ
          z extent), ``particle_radius_nm`` (median, anode/5), ``radius_sigma`` (0.35, log-normal),
          ``si_volume_fraction`` (0.35), ``cracked_fraction`` (0.2), ``crack_width_nm`` (60),
          ``matrix_porosity`` (0.3), ``pore_size_nm`` (100), ``separator_solid_fraction`` (0.45),
          ``fibre_radius_nm`` (80).
        - lithiation: ``soc_schedule`` (one SoC per step, first 0; default ramps to 0.85 then
          delithiates to 0.5), ``core_shell_fraction`` (0.1, the rest lithiate along internal planes).
        - mechanics: ``expansion`` (0.52: mean axial anode strain per unit SoC), ``expansion_gradient``
          (0.19: strain is (1 -/+ g) x mean on the collector/separator side), ``in_plane_ratio`` (0.05:
          in-plane/axial strain), ``residual_fraction`` (0.6: share of the peak swelling kept after
          delithiation), ``particle_swelling`` (0.35 x the free Si swelling, local to each particle).
        - imaging: ``hq_blur_sigma_nm`` (140 -> 10-90 % edge 357 nm), ``lq_blur_sigma_nm`` (313 ->
          803 nm), ``hq_noise`` (0.02), ``lq_noise`` (0.06), ``ring_amplitude`` (0.03),
          ``phase_contrast`` (0: fringe strength), ``lithiated_contrast_loss`` (0.8: lithiated Si grey
          moves this share of the way to the matrix grey), ``misalignment_deg`` (0.8),
          ``misalignment_shift_nm`` (60), ``pair_drift_nm`` (0: RMS local misregistration of the
          LQ training scan left after the affine part, a smooth random field of wavelength
          ``pair_drift_length_nm``, 3000), ``series_sample`` ("same" or "twin": the series images a
          second sample with the same statistics), ``step_interval_s`` (3600).
        - neutron: ``neutron_bin`` (4: neutron voxel = 4 LQ voxels), ``neutron_blur_sigma_nm`` (500),
          ``neutron_noise`` (0.05 1/cm), ``li6_fraction`` (0.075).
        - ``supersampling`` (3): sub-samples per axis of a voxel at an interface, for the
          partial-volume (voxel-averaged) grey values of the images; 1 = point sampling (faster,
          aliased); labels are always point sampled at the voxel centres.
        - ``chunks``: dask chunks of the lazy volumes (values do not depend on it).

    Returns
    -------
    SyntheticExperiment

    Raises
    ------
    InputError
        A parameter out of range (the message names it and the accepted range).

    Examples
    --------
    >>> exp = make_experiment(shape=(64, 64, 64), n_steps=4, seed=1)   # doctest: +SKIP
    >>> exp.series[3].numpy().shape, exp.truth.thickness_nm[3]          # doctest: +SKIP
    """
    known = {f.name for f in dataclasses.fields(PhantomParams)} - {"shape", "n_steps", "seed"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"unknown option(s) {unknown} of make_experiment; known: {', '.join(sorted(known))}")
    seed = check_int("seed", seed, minimum=0)
    soc = options.get("soc_schedule")
    if soc is not None and not isinstance(soc, (str, numbers.Number)) and np.ndim(soc) == 1:
        options["soc_schedule"] = tuple(soc)
    params = _validate(PhantomParams(shape=shape, n_steps=n_steps, seed=seed, **options))
    _check_memory(params.shape)
    return SyntheticExperiment(params)
