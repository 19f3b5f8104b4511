"""Uncertainty and hallucination control: sample spread and data consistency.

* **Spread**: InDI starts from ``y + noise_std * n``; K samples with different
  noise seeds differ where the network is unsure.  Their per-voxel standard
  deviation (HQ intensity units) is the spread map.
* **Data consistency**: the enhanced volume, degraded back to LQ (Gaussian blur
  estimated from the training pair, then 2x2x2 binning), is compared with the LQ
  input.  Large differences flag structure that is not supported by the
  measurement (hallucination).  The same map for plain bicubic up-sampling is the
  reference level.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .._array import as_float32
from .._validate import check_int
from ..errors import InputError
from ..volume import Volume
from .data import upsample2_axis, upsample2_xy
from .sample import _input_volume, check_model, check_steps, enhance_volume


@dataclass(frozen=True)
class UncertaintyResult:
    """Enhanced mean, spread and data-consistency maps with their summaries.

    Attributes
    ----------
    mean : Volume
        Mean of the K samples (HQ intensity units, float32, fine grid).
    spread : Volume
        Per-voxel standard deviation over the K samples (HQ intensity units, fine grid).
    consistency : Volume
        Absolute difference between the degraded mean and the LQ input (LQ intensity units, LQ grid).
    n_samples : int
        K.
    spread_mean, spread_p99 : float
        Mean and 99th percentile of the spread (HQ units).
    consistency_mean, consistency_p99 : float
        Mean and 99th percentile of the consistency map (LQ units).
    consistency_bicubic_mean : float
        Mean consistency of plain bicubic up-sampling (LQ units): the reference level.
    lq_noise_std : float
        Robust noise estimate of the LQ input (LQ units), for scale.
    """

    mean: object
    spread: object
    consistency: object
    n_samples: int
    spread_mean: float
    spread_p99: float
    consistency_mean: float
    consistency_p99: float
    consistency_bicubic_mean: float
    lq_noise_std: float

    def summary(self) -> dict:
        """The scalar fields as a dict (for JSON output)."""
        return {k: getattr(self, k) for k in ("n_samples", "spread_mean", "spread_p99", "consistency_mean",
                                              "consistency_p99", "consistency_bicubic_mean", "lq_noise_std")}


def degrade(enhanced_hq_units: np.ndarray, model, *, z_binned: bool = True) -> np.ndarray:
    """Degrade an enhanced volume back to LQ: blur (trained sigma), 2x binning, LQ intensity units."""
    info = model.info
    sigma = float(info.provenance.get("degradation_sigma_px", 1.0))
    a = info.hq_scaling.forward(as_float32(enhanced_hq_units))
    if sigma > 0:
        a = ndimage.gaussian_filter(a, (0, sigma, sigma))
    fz = 2 if z_binned else 1
    nz, ny, nx = a.shape[0] // fz, a.shape[1] // 2, a.shape[2] // 2
    a = a[: nz * fz, : 2 * ny, : 2 * nx].reshape(nz, fz, ny, 2, nx, 2).mean((1, 3, 5))
    return info.lq_scaling.inverse(a)


def data_consistency(enhanced, lq, model, *, z_interp: bool = True) -> np.ndarray:
    """``|degrade(enhanced) - lq|`` on the LQ grid (LQ intensity units, float32)."""
    e = np.asarray(enhanced)
    q = as_float32(np.asarray(lq))
    d = degrade(e, model, z_binned=z_interp)
    if d.shape != q.shape:
        raise InputError(f"enhanced volume {e.shape} does not match the LQ volume {q.shape} (expected 2x per axis)")
    return np.abs(d - q).astype(np.float32)


def _noise_std(a: np.ndarray) -> float:
    lap = a - ndimage.uniform_filter(a, (1, 3, 3))
    return float(1.4826 * np.median(np.abs(lap - np.median(lap))) * 1.06)


def _allocate(shape, spill_dir, name):
    """A float32 array of ``shape``: in memory, or a ``.npy`` memory map in ``spill_dir``."""
    if spill_dir is None:
        return np.empty(shape, np.float32)
    d = Path(spill_dir)
    d.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(d / f"{name}.npy", mode="w+", dtype=np.float32, shape=tuple(shape))


class _Subsample:
    """A regular subsample of a stream of arrays (at most ``limit`` values), for percentiles."""

    def __init__(self, total: int, limit: int = 4_000_000):
        self.every = max(1, int(total) // int(limit))
        self.parts: list[np.ndarray] = []
        self.sum = 0.0
        self.n = 0

    def add(self, a: np.ndarray) -> None:
        flat = a.ravel()
        self.sum += float(flat.sum(dtype=np.float64))
        self.n += flat.size
        self.parts.append(flat[:: self.every].copy())

    def mean(self) -> float:
        return self.sum / max(self.n, 1)

    def percentile(self, q: float) -> float:
        return float(np.percentile(np.concatenate(self.parts), q)) if self.parts else float("nan")


def enhance_with_uncertainty(model, volume, *, n_samples: int = 4, steps: int | None = None, seed: int = 0,
                             tile: int = 512, overlap: int = 64, batch: int = 4, z_interp: bool = True,
                             check_voxel_size: bool = True, slab: int = 8, spill_dir=None,
                             progress: Callable[[int, int], None] | None = None) -> UncertaintyResult:
    """Enhance ``volume`` ``n_samples`` times with different noise seeds; spread and consistency maps.

    The work streams slab by slab (``slab`` LQ slices at a time): the K samples of a slab are
    enhanced, reduced to their mean and spread and compared with the LQ input, then dropped.
    The three result volumes are held in memory (two fine-grid float32 volumes and one LQ-grid
    one), or, with ``spill_dir``, written as ``.npy`` memory maps into that folder (bounded
    memory for volumes larger than RAM; the caller removes the folder once the maps are saved).
    The 99th percentiles of the summary are taken over a regular subsample of at most 4 million
    voxels.
    """
    check_model(model)
    n_samples = check_int("n_samples", n_samples, minimum=2)    # a spread needs two samples (4-8 is typical)
    steps = check_steps(model, steps)
    seed = check_int("seed", seed, minimum=0)
    if model.one_step or model.info.config.noise_std == 0:
        raise InputError(f"the {model.objective} model is deterministic (no noise); the spread needs an InDI model "
                         "trained with noise_std > 0")
    slab = check_int("slab", slab, minimum=1)
    vol = _input_volume(volume)
    samples = [enhance_volume(model, vol, steps=steps, seed=seed + k, tile=tile, overlap=overlap, batch=batch,
                              z_interp=z_interp, out_dtype=np.float32, check_voxel_size=check_voxel_size)
               for k in range(n_samples)]
    nz = vol.shape[0]
    fz = 2 if z_interp else 1
    fine_shape = samples[0].shape
    mean = _allocate(fine_shape, spill_dir, "mean")
    spread = _allocate(fine_shape, spill_dir, "spread")
    cons = _allocate(vol.shape, spill_dir, "consistency")
    stats = {name: _Subsample(int(np.prod(shp))) for name, shp in
             (("spread", fine_shape), ("cons", vol.shape), ("cons_b", vol.shape))}
    lq_noise = []
    hq_of_lq = model.info.hq_scaling.inverse
    to_norm = model.info.lq_scaling.forward
    total = n_samples * nz              # progress: LQ slices enhanced, all samples together
    for z0 in range(0, nz, int(slab)):
        z1 = min(z0 + int(slab), nz)
        s1 = s2 = None
        for e in samples:
            a = np.asarray(e.data[fz * z0: fz * z1], np.float64)
            s1 = a if s1 is None else s1 + a
            s2 = a * a if s2 is None else s2 + a * a
        m = (s1 / n_samples).astype(np.float32)
        sp = np.sqrt(np.maximum(s2 / n_samples - (s1 / n_samples) ** 2, 0)).astype(np.float32)
        del s1, s2
        mean[fz * z0: fz * z1] = m
        spread[fz * z0: fz * z1] = sp
        stats["spread"].add(sp)
        lq = as_float32(np.asarray(vol.data[z0:z1]))
        c = data_consistency(m, lq, model, z_interp=z_interp)
        cons[z0:z1] = c
        stats["cons"].add(c)
        # bicubic up-sampling of the same slab (2 LQ slices of context for the cubic z taps)
        if z_interp:
            h0, h1 = max(z0 - 2, 0), min(z1 + 2, nz)
            ext = as_float32(np.asarray(vol.data[h0:h1]))
            bic = upsample2_xy(upsample2_axis(ext, 0)[2 * (z0 - h0): 2 * (z0 - h0) + 2 * (z1 - z0)])
        else:
            bic = upsample2_xy(lq)
        stats["cons_b"].add(data_consistency(hq_of_lq(to_norm(bic)), lq, model, z_interp=z_interp))
        lq_noise.append((_noise_std(lq), lq.size))
        if progress is not None:
            progress(z1 * n_samples, total)
    for arr in (mean, spread, cons):
        if isinstance(arr, np.memmap):
            arr.flush()
    meta = samples[0].metadata
    vs_fine = samples[0].voxel_size_nm
    meta_k = meta.with_step(f"mean of {n_samples} InDI samples (seeds {seed}..{seed + n_samples - 1})")
    mean_v = Volume(mean, vs_fine, meta_k)
    spread_v = Volume(spread, vs_fine, dataclasses.replace(meta_k, name=(meta.name + " spread").strip()))
    cons_v = Volume(cons, vol.voxel_size_nm,
                    dataclasses.replace(meta_k, name=(meta.name + " data consistency").strip()))
    noise = float(sum(v * n for v, n in lq_noise) / sum(n for _, n in lq_noise))
    return UncertaintyResult(mean_v, spread_v, cons_v, int(n_samples), stats["spread"].mean(),
                             stats["spread"].percentile(99), stats["cons"].mean(), stats["cons"].percentile(99),
                             stats["cons_b"].mean(), noise)
