"""Parameters of a synthetic experiment: :class:`PhantomParams`, their validation, constants, grids.

The physical constants and grey/attenuation tables the renderer (:mod:`tomo4d.phantom._engine`)
and the ground truth (:mod:`tomo4d.phantom.truth`) share, the memory estimate that
:func:`tomo4d.phantom.make_experiment` checks before rendering, and :class:`GridSpec` (frames and
grids are described in :mod:`tomo4d.phantom.experiment`).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil

from .._validate import check_int, check_number, show
from ..errors import InputError
from ..neutron.xs import (
    AVOGADRO_PER_MOL,
    NATURAL_LI6_FRACTION,
    THERMAL_WAVELENGTH_ANGSTROM,
)
from . import _model as M
from ._model import Phase

#: Gaussian sigma -> 10-90 % edge rise distance.
EDGE_10_90_PER_SIGMA = 2.0 * 1.2815515655446004

_KIND_IDS = {"hq": 1, "lq": 2, "repeat": 3, "series": 4, "series_hq": 5, "repeat_hq": 6, "neutron": 7,
             "rings": 8, "micro": 9, "twin": 10, "misalign": 11, "drift": 12}

DEFAULT_GREY = {Phase.PORE: 0.10, Phase.MATRIX: 0.28, Phase.SILICON: 0.62, Phase.COLLECTOR: 1.0,
                Phase.SEPARATOR: 0.20}

#: Neutron attenuation (1/cm, at 1.8 A) of each phase without its lithium (deuterated electrolyte).
NEUTRON_MU_BACKGROUND = {Phase.PORE: 0.10, Phase.MATRIX: 0.30, Phase.SILICON: 0.12,
                         Phase.LITHIATED_SILICON: 0.06, Phase.COLLECTOR: 1.00, Phase.SEPARATOR: 0.45}
#: natural 6Li atom fraction (``NATURAL_LI6_FRACTION``), the thermal wavelength and Avogadro's
#: number come from :mod:`tomo4d.neutron.xs`, their one source
THERMAL_WAVELENGTH_A = THERMAL_WAVELENGTH_ANGSTROM
AVOGADRO = AVOGADRO_PER_MOL
#: 6Li and 7Li absorption at 1.798 A (2200 m/s), barn
SIGMA_LI6_B = 940.0
SIGMA_LI7_B = 0.0454
#: bound-atom total scattering of 6Li and 7Li, barn (Sears 1992), added to their absorption
SIGMA_LI6_SCATTER_B = 0.97
SIGMA_LI7_SCATTER_B = 1.40


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
