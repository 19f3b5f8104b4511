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

import numpy as np

from .._array import as_float32
from ..errors import InputError


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
    from scipy import ndimage

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
    from scipy import ndimage

    lap = a - ndimage.uniform_filter(a, (1, 3, 3))
    return float(1.4826 * np.median(np.abs(lap - np.median(lap))) * 1.06)


def enhance_with_uncertainty(model, volume, *, n_samples: int = 4, steps: int | None = None, seed: int = 0,
                             tile: int = 512, overlap: int = 64, batch: int = 4, z_interp: bool = True,
                             check_voxel_size: bool = True,
                             progress: Callable[[int, int], None] | None = None) -> UncertaintyResult:
    """Enhance ``volume`` ``n_samples`` times with different noise seeds; spread and consistency maps.

    Holds the K enhanced volumes' running sums in memory (two fine-grid float32
    volumes): use it on regions of interest or moderate volumes.
    """
    from ..volume import Volume, as_volume
    from .data import upsample2_axis, upsample2_xy
    from .sample import enhance_volume

    if int(n_samples) < 2:
        raise InputError(f"n_samples={n_samples!r} must be >= 2 to measure a spread (4-8 is typical)")
    if model.one_step or model.info.config.noise_std == 0:
        raise InputError(f"the {model.objective} model is deterministic (no noise); the spread needs an InDI model "
                         "trained with noise_std > 0")
    vol = as_volume(volume)
    total = n_samples * vol.shape[0]
    s1 = s2 = None
    for k in range(n_samples):
        def prog(done, n, k=k):
            if progress is not None:
                progress(k * vol.shape[0] + done, total)

        e = enhance_volume(model, vol, steps=steps, seed=seed + k, tile=tile, overlap=overlap, batch=batch,
                           z_interp=z_interp, out_dtype=np.float32, check_voxel_size=check_voxel_size,
                           progress=prog)
        a = e.numpy().astype(np.float64)
        s1 = a if s1 is None else s1 + a
        s2 = a * a if s2 is None else s2 + a * a
        meta = e.metadata
    mean = (s1 / n_samples).astype(np.float32)
    spread = np.sqrt(np.maximum(s2 / n_samples - (s1 / n_samples) ** 2, 0)).astype(np.float32)
    lq = as_float32(vol.numpy())
    cons = data_consistency(mean, lq, model, z_interp=z_interp)
    bic = upsample2_xy(upsample2_axis(lq, 0) if z_interp else lq)
    bic_hq = model.info.hq_scaling.inverse(model.info.lq_scaling.forward(bic))
    cons_b = data_consistency(bic_hq, lq, model, z_interp=z_interp)
    vs_fine = tuple(v / 2 for v in vol.voxel_size_nm) if z_interp else (vol.voxel_size_nm[0],) + tuple(
        v / 2 for v in vol.voxel_size_nm[1:])
    meta_k = meta.with_step(f"mean of {n_samples} InDI samples (seeds {seed}..{seed + n_samples - 1})")
    mean_v = Volume(mean, vs_fine, meta_k)
    spread_v = Volume(spread, vs_fine, dataclasses.replace(meta_k, name=(meta.name + " spread").strip()))
    cons_v = Volume(cons, vol.voxel_size_nm,
                    dataclasses.replace(meta_k, name=(meta.name + " data consistency").strip()))
    return UncertaintyResult(mean_v, spread_v, cons_v, int(n_samples), float(spread.mean()),
                             float(np.percentile(spread, 99)), float(cons.mean()), float(np.percentile(cons, 99)),
                             float(cons_b.mean()), _noise_std(lq))
