"""The ``enhance_hallucination`` stage: does InDI invent or lose particles where the truth is known (issue 19)?

For every in-situ step with an HQ scan (``enhance.truth_hq``) and true particle labels on that HQ grid
(``enhance.truth_particles``; the phantom writes ``truth/particles_hq_T*.tif``):

* :func:`tomo4d.enhance.hallucination_report` of InDI (the enhance stage's output), bicubic LQ and HQ, on
  the HQ grid through the pair transform: false-particle rate, missed-particle rate and particle-size error
  against the true particles, every image segmented by one grey band fitted on HQ.  Judged inside the field
  of view and within the z range of the true particles (the electrode layer: outside it a blurred
  collector/matrix boundary crosses the particle grey band and leaves partial-volume fragments that are no
  particle of any kind) -> ``tables/enhance_hallucination``.
* :func:`tomo4d.enhance.spread_error_correlation` on the first such step: :data:`SPREAD_SAMPLES` InDI
  samples (seeds 0..K-1) of at most :data:`SPREAD_SLICES` contiguous HQ-grid slices centred in that z range;
  Spearman's rho between the block-wise spread and the error of the samples' mean against HQ
  -> ``tables/enhance_spread_error``.

Without true particles the stage does not run and the report says that hallucination was not measured.
"""

from __future__ import annotations

import logging

import numpy as np

from .stage import Stage
from .stage_io import read_table_of, write_tables
from .stages_enhance import enhanced_path

log = logging.getLogger(__name__)

__all__ = ["ENHANCE_HALLUCINATION", "HALLUCINATION_TABLE", "SPREAD_TABLE", "SPREAD_SAMPLES", "SPREAD_SLICES"]

HALLUCINATION_TABLE = "enhance_hallucination"
SPREAD_TABLE = "enhance_spread_error"
#: InDI samples of the spread map (K)
SPREAD_SAMPLES = 4
#: at most this many contiguous HQ-grid slices carry the spread map (the blocks are 8^3 voxels)
SPREAD_SLICES = 16
#: the images audited, the reference (HQ) last
IMAGES = ("InDI", "bicubic", "HQ")


def _on(exp, inp) -> bool:
    return (exp.enhance is not None and inp.training_pair is not None and bool(inp.truth_hq)
            and bool(inp.truth_particles_hq))


def _on_hq_grid(volume: np.ndarray, phi: np.ndarray, shape) -> np.ndarray:
    """``volume`` (the enhanced, finer grid = the up-sampled LQ grid) sampled at ``phi(x)`` of every HQ voxel."""
    from scipy import ndimage

    return ndimage.affine_transform(np.asarray(volume, np.float32), phi[:3, :3], offset=phi[:3, 3],
                                    output_shape=tuple(shape), order=3, mode="nearest").astype(np.float32)


def _step_images(ctx, step: int, model, phi):
    from ..enhance import prepare_pair
    from .stage_io import read_volume

    inp = ctx.inputs
    lq = read_volume(inp.series[step], ctx.experiment.inputs.voxel_size_nm)
    pr = prepare_pair(lq, read_volume(inp.truth_hq[step]), register=False, phi0=phi)
    info = model.info
    bicubic = info.hq_scaling.inverse(info.lq_scaling.forward(pr.lq))
    indi = _on_hq_grid(read_volume(enhanced_path(ctx.out, inp.names[step])).numpy(), phi, pr.hq.shape)
    return pr, {"InDI": indi, "bicubic": bicubic, "HQ": pr.hq}


def _true_particles(path, shape, key: str) -> np.ndarray:
    from ..errors import InputError
    from .stage_io import read_volume

    true = np.asarray(read_volume(path).numpy())
    if true.shape != tuple(shape):
        raise InputError(f"{key} ({str(path)!r}) has shape {true.shape} but its HQ scan has {tuple(shape)}; give the "
                         "true particle labels on the HQ scan's grid")
    return true.astype(np.int64)


def _spread_row(ctx, name: str, model, pr, true, z_range) -> dict:
    from ..enhance import restore_slices, spread_error_correlation
    from ..enhance.steps import model_steps

    sec = ctx.experiment.enhance
    n, _ = model_steps(model, sec.steps)
    lo, hi = z_range
    k = min(SPREAD_SLICES, hi - lo)
    z0 = lo + (hi - lo - k) // 2
    zs = list(range(z0, z0 + k))
    info = model.info
    x = info.lq_scaling.forward(pr.lq[zs])
    samples = np.stack([info.hq_scaling.inverse(restore_slices(model, x, steps=n, seed=s, slice_ids=zs,
                                                               tile=sec.tile, overlap=sec.overlap,
                                                               precision=sec.train_config().precision))
                        for s in range(SPREAD_SAMPLES)])
    c = spread_error_correlation(samples.std(0), samples.mean(0), pr.hq[zs], block=min(8, k), mask=pr.mask[zs])
    return {"step": name, "indi_steps": float(n), "n_samples": float(SPREAD_SAMPLES), "z_first": float(zs[0]),
            "z_last": float(zs[-1]), "rho": c.rho, "p_value": c.p_value, "n_blocks": float(c.n_blocks),
            "rho_voxels": c.rho_voxels, "decile_ratio": c.decile_ratio,
            "spread_mean": c.spread_mean, "error_mean": c.error_mean}


def _run(ctx):
    from ..enhance import hallucination_report
    from ..errors import InputError

    inp = ctx.inputs
    model, phi = ctx.load("train"), ctx.load("register_pair")
    rows, spread = [], None
    for i, name in enumerate(inp.names):
        pr, images = _step_images(ctx, i, model, phi)
        true = _true_particles(inp.truth_particles_hq[i], pr.hq.shape, f"enhance.truth_particles[{i}] ({name})")
        zs = np.flatnonzero(true.any(axis=(1, 2)))
        if zs.size == 0:            # nothing to judge on this step
            log.warning("enhance_hallucination: %s has no true particle in %s; step skipped", name,
                        inp.truth_particles_hq[i])
            continue
        z_range = (int(zs[0]), int(zs[-1]) + 1)
        region = pr.mask.copy()
        region[:z_range[0]] = region[z_range[1]:] = False
        rep = hallucination_report(images, true, voxel_size_nm=pr.hq_voxel_size_nm, region=region)
        for a in rep.audits:
            rows.append({"step": name, "image": a.name, "n_particles": float(a.n_particles),
                         "n_false": float(a.n_false), "false_rate": a.false_rate, "n_true": float(a.n_true),
                         "n_missed": float(a.n_missed), "missed_rate": a.missed_rate,
                         "diameter_mae_nm": a.diameter_mae_nm, "diameter_bias_nm": a.diameter_bias_nm,
                         "diameter_rel_median": a.diameter_rel_median, "dice": a.dice,
                         "band_low": float(rep.band[0]), "band_high": float(rep.band[1]),
                         "z_first": float(z_range[0]), "z_last": float(z_range[1] - 1)})
        if spread is None:
            spread = _spread_row(ctx, name, model, pr, true, z_range)
    if not rows:
        raise InputError("enhance.truth_particles: no step has a true particle (labels > 0) on its HQ grid; give the "
                         "true particle labels of the in-situ steps, or remove enhance.truth_particles")
    table = {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
    return table, {k: np.asarray([v]) for k, v in spread.items()}


def _save(result, out) -> tuple[str, ...]:
    table, spread = result
    return (*write_tables(table, out, HALLUCINATION_TABLE), *write_tables(spread, out, SPREAD_TABLE))


ENHANCE_HALLUCINATION = Stage(
    name="enhance_hallucination", needs=("register_pair", "train", "enhance"), per_step=False,
    description="false / missed particles and size error of InDI, bicubic and HQ against the true particles; "
    "spread/error rank correlation", outputs=f"tables/{HALLUCINATION_TABLE}, tables/{SPREAD_TABLE}", enabled=_on,
    options=lambda exp: {"enhance.truth_hq": exp.enhance.truth_hq, "enhance.truth_particles":
                         exp.enhance.truth_particles, "inputs.names": exp.inputs.names,
                         **{f"enhance.{k}": getattr(exp.enhance, k) for k in ("steps", "seed", "tile", "overlap")},
                         "enhance_hallucination.rule": f"band on HQ, z range of the truth, K={SPREAD_SAMPLES} "
                         f"samples on <= {SPREAD_SLICES} slices"},
    input_files=lambda inp, step: {**{f"enhance.truth_hq[{i}]": p for i, p in enumerate(inp.truth_hq)},
                                   **{f"enhance.truth_particles[{i}]": p
                                      for i, p in enumerate(inp.truth_particles_hq)}},
    run=_run, save=_save, load=lambda out: read_table_of(out, HALLUCINATION_TABLE))
