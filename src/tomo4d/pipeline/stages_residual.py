"""The ``residual`` stage: residual maps T0 -> Tn after the DVC stage.

For every step n >= 1 the scan Tn is pulled back onto T0 by the measured field T0 -> Tn
(:func:`tomo4d.dvc.residual_map`), subtracted from T0, blurred (``residual.sigma_px``), made
absolute, and the noise floor is removed: the same quantity between T0 and a repeated scan of T0
(``inputs.repeat``, :func:`tomo4d.dvc.noise_floor`; 0 without one).  Outputs:
``volumes/residual_T0_<step>.ome.zarr`` (float32, grey levels) and ``tables/residual_summary``
(noise floor, mean before the floor, fraction above it, mean and max of the map; with
``truth.labels`` the mean residual inside the truly lithiated silicon beside the mean elsewhere,
and the true lithiated fraction).  When a map does not fit the experiment's ``chunk_budget_mb``
(:data:`tomo4d.dvc.residual.RESIDUAL_BYTES_PER_VOXEL` of working memory), it is computed in slabs of that budget and written
slab by slab into a resumable store under its final name's progress folder (:class:`tomo4d._chunks.SlabStore`),
published by the save: no step's map is held in memory.  On the analysis series and grid (:mod:`.series`): with
``enhance.apply_to_series`` the enhanced series, its maps twice finer, and the noise floor measured on
the enhanced repeat scan (``enhance_repeat`` stage), the same kind of image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .._chunks import SlabStore
from .series import analysis_voxel_size_nm, read_repeat, read_series, reads_series
from .stage import Stage, rel, section_options
from .stage_io import save_float_volume, write_tables

__all__ = ["RESIDUAL", "ResidualResult"]

log = logging.getLogger(__name__)

#: the numbers of ResidualMap.to_dict() (NaN for a step without a map)
_NUMBERS = ("mean_before_floor", "fraction_above_floor", "residual_mean", "residual_max")


@dataclass(frozen=True, eq=False)
class ResidualResult:
    """Residual maps ``((step name, ResidualMap), ...)`` and their summary table (columns)."""

    maps: tuple
    summary: dict
    voxel_size_nm: tuple[float, float, float]
    save_volumes: bool


def _truth_row(ctx, step: int, residual) -> dict:
    """The true lithiated fraction and the mean residual on and off it (the map in memory or its store, and the
    truth, read slab by slab; sums in float64)."""
    from .._array import read_box
    from .._chunks import plan_slabs
    from ..quantify import PhaseCodes
    from .chunked import budget_mb, lazy_labels

    truth = lazy_labels(ctx, ctx.inputs.truth_labels[step])
    codes = np.asarray(PhaseCodes().lithiated)
    n = np.zeros(2, np.int64)    # voxels off / on the lithiated phase
    tot = np.zeros(2)            # residual summed off / on
    for z0, z1 in plan_slabs(truth.shape, bytes_per_voxel=16, chunk_budget_mb=budget_mb(ctx)):
        lith = np.isin(np.asarray(read_box(truth, (slice(z0, z1),))), codes)
        n += [lith.size - int(lith.sum()), int(lith.sum())]
        if residual is not None:
            r = np.asarray(read_box(residual, (slice(z0, z1),)), np.float64)
            tot += [r[~lith].sum(), r[lith].sum()]
    mean = tot / np.maximum(n, 1) if residual is not None else np.full(2, np.nan)
    return {"true_lithiated_fraction": float(n[1] / n.sum()),
            "residual_mean_true_lithiated": float(mean[1]) if n[1] else np.nan,
            "residual_mean_elsewhere": float(mean[0]) if n[0] else np.nan}


def _residual_run(ctx):
    from ..dvc import noise_floor, residual_map
    from .chunked import budget_mb

    sec, inp = ctx.experiment.residual, ctx.inputs
    ref = read_series(ctx, 0).data  # lazily: residual_map reads slabs and boxes
    noise, rep = 0.0, read_repeat(ctx)
    if rep is not None:  # on the analysis grid: enhanced like the series with apply_to_series
        noise = noise_floor(read_series(ctx, 0).data, rep.data, sigma_px=sec.sigma_px, statistic=sec.statistic,
                            chunk_budget_mb=budget_mb(ctx))  # over the budget: slab by slab
    maps, rows = [], []
    for i in range(1, inp.n_steps):
        field = ctx.load("dvc", i)
        row = {"step": inp.names[i], "time_s": inp.time_s[i], "repeat_scan": inp.repeat is not None,
               "n_usable_nodes": int(np.count_nonzero(field.usable))}
        if not row["n_usable_nodes"]:  # nothing to pull the scan back with: reported, not hidden
            log.warning("residual of %s: the DVC field has no usable node; no residual map", inp.names[i])
            rows.append({**row, **dict.fromkeys(_NUMBERS, np.nan), "noise_floor": noise, "sigma_px": sec.sigma_px})
            continue
        deformed = read_series(ctx, i).data
        slab, out = _streamed_output(ctx, inp.names[i], tuple(int(v) for v in ref.shape), field, sec, noise)
        rm = residual_map(ref, deformed, field, sigma_px=sec.sigma_px, noise=noise, order=sec.order,
                          slab=slab, out=out)
        row.update(rm.to_dict())
        maps.append((inp.names[i], rm))
        rows.append(row)
    if inp.truth_labels:
        by_name = dict(maps)
        for r in rows:  # the map (in memory or its store) and the truth slab by slab
            rm = by_name.get(r["step"])
            r.update(_truth_row(ctx, inp.names.index(r["step"]), None if rm is None else rm.residual))
    summary = {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
    return ResidualResult(maps=tuple(maps), summary=summary, voxel_size_nm=analysis_voxel_size_nm(ctx),
                          save_volumes=sec.save_volumes)


def _digest(field, noise: float, sec) -> str:
    """What a residual map is computed from (a progress store left by another computation is discarded)."""
    import hashlib

    h = hashlib.sha1(np.ascontiguousarray(field.phi).tobytes())
    h.update(repr((float(noise), sec.model_dump())).encode())
    return h.hexdigest()


def _streamed_output(ctx, name: str, shape, field, sec, noise: float):
    """``(slab, out)`` for :func:`residual_map`: the default (32 slices, a new array) when the map fits the
    budget, else slabs of the budget written into a :class:`SlabStore` of ``volumes/residual_T0_<name>``."""
    from .._chunks import plan_slabs
    from ..dvc.residual import RESIDUAL_BYTES_PER_VOXEL
    from .chunked import budget_mb, streams

    if not (sec.save_volumes and streams(ctx, shape, RESIDUAL_BYTES_PER_VOXEL)):
        return 32, None
    halo = int(4.0 * sec.sigma_px + 0.5) if sec.sigma_px > 0 else 0
    plan = plan_slabs(shape, bytes_per_voxel=RESIDUAL_BYTES_PER_VOXEL, chunk_budget_mb=budget_mb(ctx), halo=halo)
    store = SlabStore(ctx.out / "volumes" / f"residual_T0_{name}.ome.zarr", shape=shape, dtype=np.float32,
                      slabs=plan, voxel_size_nm=analysis_voxel_size_nm(ctx), name=f"residual T0 -> {name}",
                      key=_digest(field, noise, sec), modality="unknown").open()
    return plan[0][1] - plan[0][0], store  # residual_map writes store[z0:z1] slab by slab


def _residual_save(result, out):
    paths = ()
    if result.save_volumes:
        for name, rm in result.maps:
            if isinstance(rm.residual, SlabStore):  # streamed: every slab is in the progress store
                paths += (rel(out, rm.residual.publish()),)
                continue
            paths += (save_float_volume(rm.residual, out, f"residual_T0_{name}", result.voxel_size_nm,
                                        f"residual T0 -> {name}"),)
    return paths + write_tables(result.summary, out, "residual_summary")


def _files(inp, step) -> dict:
    files = {name: p for name, p in zip(inp.names, inp.series)}
    if inp.repeat is not None:
        files["inputs.repeat"] = inp.repeat
    files.update({f"truth.labels[{i}]": p for i, p in enumerate(inp.truth_labels)})
    return files


RESIDUAL = Stage(
    name="residual", needs=("enhance", "enhance_repeat", "dvc", "align"), per_step=False, description="residual maps T0 -> Tn, noise floor removed",
    outputs="volumes/residual_T0_<step>.ome.zarr, tables/residual_summary",
    enabled=lambda exp, inp: exp.residual is not None and exp.dvc is not None and inp.n_steps >= 2,
    options=lambda exp: {**section_options(exp, "residual"),
                         "inputs.names": exp.inputs.names, "inputs.time_s": exp.inputs.time_s},
    input_files=_files, run=_residual_run, save=_residual_save, reads=reads_series)
