"""The ``align`` stage: every step rigidly aligned onto T0, on the current collector.

The current collector does not deform while the electrode breathes, so the study aligns the time
steps on it: for every step n >= 1, :func:`tomo4d.register.register` (``rigid=True``, rotation +
translation) fits Tn onto T0 using only T0's voxels in the reference region, the collector slab
widened by ``align.margin_px`` slices on each side (a featureless foil fixes only z, and the two
tilts; its faces and the electrode texture next to it fix the rest).  The collector is
``align.collector_z`` (``[start, stop)`` px of T0) or, when null, detected as the brightest slab
of T0 (:func:`detect_collector`).  Tn is then resampled onto T0's grid (``apply_phi``, order
``align.order``, integer scans rounded back to their dtype).

Outputs per step (checkpointed one by one): ``fields/align_<step>.json`` (the rigid Phi, fixed T0 ->
moving Tn coordinates about the volume centre, its translation/rotation, the reference slab and the
displacement of its centre) and
``volumes/aligned_<step>.ome.zarr``.  T0 is the reference and is not rewritten.  Every later stage
reads the aligned series (:func:`tomo4d.pipeline.series.series_path`).

Out of core (:mod:`.chunked`): when the volumes' registration working set exceeds ``chunk_budget_mb``, T0 and Tn
are read lazily: the collector profile chunk by chunk, :func:`tomo4d.register.register` with the budget (streamed
binned levels, the finest on sampled boxes of the reference region), and Tn resampled slab by slab
(:func:`tomo4d.register.apply_phi_slab`) into a resumable :class:`tomo4d._chunks.SlabStore` published by the save.
Same Phi within the sampled level's tolerance (tests/pipeline/test_align.py), same voxels to ~1e-7.

Limits: a featureless foil fixes only z and the two tilts, so the other three parameters come from
the electrode within ``margin_px`` of it, which deforms: on the 32^3 phantom (no rigid motion, 85 %
SoC) the reference region [0, 8) gives about 0.6-1 px and 0.3-1.2 deg of spurious motion, a known
rigid motion is recovered to 0.06 px / 0.001 (tests/pipeline/test_align.py).  Give ``collector_z``
where the collector is textured, and keep ``margin_px`` small where the electrode next to it moves.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .series import aligned_path, series_path
from .stage import Stage, rel, section_options

__all__ = ["ALIGN", "AlignStep", "align_section", "detect_collector", "load_alignment", "reference_slab"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class AlignStep:
    """One step's alignment: the registration, the reference slab (z px, [start, stop)), the aligned volume."""

    registration: object
    slab_z: tuple[int, int]
    aligned: np.ndarray | None
    stored: object | None = None  # streamed (over chunk_budget_mb): the SlabStore to publish
    shape: tuple[int, int, int] = (0, 0, 0)


def detect_collector(image: np.ndarray) -> tuple[int, int]:
    """The brightest slab of ``image`` along z: ``[start, stop)`` px.

    The mean grey level of every z slice is smoothed over 3 slices; the collector is the run of
    slices around the brightest one whose mean is above half-way between that maximum and the
    median slice.  A copper (or any metal) foil is the densest layer of a cell's stack.
    """
    from scipy import ndimage

    from .._array import is_lazy

    if is_lazy(image):  # chunk by chunk (out of core)
        profile = np.asarray(image.astype(np.float64).mean(axis=(1, 2)).compute())
    else:
        profile = np.asarray(image, np.float64).mean(axis=(1, 2))
    profile = ndimage.uniform_filter1d(profile, 3, mode="nearest")
    top = int(np.argmax(profile))
    level = 0.5 * (profile[top] + np.median(profile))
    start, stop = top, top + 1
    while start > 0 and profile[start - 1] > level:
        start -= 1
    while stop < profile.size and profile[stop] > level:
        stop += 1
    return start, stop


def reference_slab(sec, image: np.ndarray) -> tuple[int, int]:
    """The z range ``[start, stop)`` of the reference region: the collector widened by ``margin_px``."""
    nz = image.shape[0]
    if sec.collector_z is not None:
        start, stop = sec.collector_z
        if stop > nz:
            raise InputError(f"align.collector_z={list(sec.collector_z)} reaches past the volume's {nz} z slices; "
                             f"give a range inside 0..{nz}")
    else:
        start, stop = detect_collector(image)
    return max(0, start - sec.margin_px), min(nz, stop + sec.margin_px)


def _as_dtype(data: np.ndarray, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(data), info.min, info.max).astype(dtype)
    return data.astype(dtype, copy=False)


def _open(path: Path, ctx):
    from ..io import open_volume

    return open_volume(path, voxel_size_nm=ctx.experiment.inputs.voxel_size_nm)


def _align_step(ctx, step, previous):
    from ..register import LEVEL_BYTES_PER_VOXEL, apply_phi, register
    from .chunked import budget_mb, streams

    sec = ctx.experiment.align
    fixed = _open(series_path(ctx, 0, before="align"), ctx)
    moving = _open(series_path(ctx, step, before="align"), ctx)
    big = streams(ctx, fixed.shape, LEVEL_BYTES_PER_VOXEL)  # out of core: read lazily, written slab by slab
    if not big:
        fixed, moving = fixed.numpy(), moving.numpy()
    else:
        fixed, moving = fixed.data, moving.data
    z0, z1 = reference_slab(sec, fixed)
    band = np.zeros(fixed.shape[0], bool)
    band[z0:z1] = True
    if big:
        import dask.array as da

        mask = da.broadcast_to(da.from_array(band[:, None, None], chunks=(64, 1, 1)), tuple(fixed.shape))
    else:
        mask = np.broadcast_to(band[:, None, None], fixed.shape)
    # coarse levels that leave fewer than 4 reference slices (or 8 voxels along an axis) are skipped
    binning = [b for b in sec.binning if b == sec.binning[-1] or (min(fixed.shape) // b >= 8 and (z1 - z0) // b >= 4)]
    reg = register(fixed, moving, mask=mask, rigid=True, binning=binning, max_iterations=sec.max_iterations,
                   chunk_budget_mb=budget_mb(ctx) if big else None)
    if not reg.converged:
        log.warning("align %s: rigid registration did not converge (residual %.3f)", ctx.inputs.names[step],
                    reg.residual)
    if big:
        return _resample_streamed(ctx, step, moving, reg, (z0, z1))
    aligned = apply_phi(moving, reg.phi, order=sec.order)
    return AlignStep(registration=reg, slab_z=(z0, z1), aligned=_as_dtype(aligned, moving.dtype),
                     shape=tuple(moving.shape))


def _resample_streamed(ctx, step, moving, reg, slab_z) -> AlignStep:
    """Tn resampled onto T0's grid slab by slab (:func:`tomo4d.register.apply_phi_slab`) into the progress store of
    ``volumes/aligned_<step>.ome.zarr`` (resumable; published by the save)."""
    from .._chunks import SlabStore, plan_slabs
    from ..register import APPLY_BYTES_PER_VOXEL, apply_phi_slab
    from .chunked import budget_mb

    sec, name = ctx.experiment.align, ctx.inputs.names[step]
    src = series_path(ctx, step, before="align")
    st = src.stat()
    plan = plan_slabs(moving.shape, bytes_per_voxel=APPLY_BYTES_PER_VOXEL, chunk_budget_mb=budget_mb(ctx))
    key = json.dumps([str(src), st.st_size, st.st_mtime_ns, np.round(reg.phi, 12).tolist(), sec.order])
    store = SlabStore(aligned_path(ctx.out, name, step), shape=moving.shape, dtype=moving.dtype, slabs=plan,
                      voxel_size_nm=ctx.inputs.voxel_size_nm, name=f"{name} aligned onto {ctx.inputs.names[0]}",
                      key=key, modality="unknown").open()
    resumed = store.n_done()
    for i, (a, b) in enumerate(plan):
        if not store.is_done(i):
            store.write(i, _as_dtype(apply_phi_slab(moving, reg.phi, a, b, order=sec.order), moving.dtype))
    log.info("align %s: resampled in %d slabs (%d resumed)", name, len(plan), resumed)
    return AlignStep(registration=reg, slab_z=slab_z, aligned=None, stored=store, shape=tuple(moving.shape))


def _phi_path(out: Path, name: str) -> Path:
    return Path(out) / "fields" / f"align_{name}.json"


def _align_save(result, out, ctx, step):
    from ..io import save_volume, write_json
    from ..register import apply_phi_to_points
    from ..volume import Volume, VolumeMetadata

    name, reg = ctx.inputs.names[step], result.registration
    shape = np.asarray(result.shape, float)
    ref = np.array([[(result.slab_z[0] + result.slab_z[1] - 1) / 2, (shape[1] - 1) / 2, (shape[2] - 1) / 2]])
    moved = apply_phi_to_points(ref, reg.phi, centre=reg.centre_zyx_px)[0] - ref[0]
    info = {**reg.to_dict(), "reference_slab_z_px": list(result.slab_z), "fixed": ctx.inputs.names[0], "moving": name,
            "reference_centre_zyx_px": ref[0].tolist(), "reference_displacement_zyx_px": moved.tolist()}
    write_json(info, _phi_path(out, name), overwrite=True, indent=1)
    if result.stored is not None:  # streamed: every slab is in the progress store
        path = result.stored.publish()
    else:
        vol = Volume(result.aligned, ctx.inputs.voxel_size_nm, VolumeMetadata(name=f"{name} aligned onto "
                                                                                 f"{ctx.inputs.names[0]}"))
        path = save_volume(vol, aligned_path(out, name, step), overwrite=True)
    return rel(out, _phi_path(out, name)), rel(out, path)


def load_alignment(out, ctx, step):
    """The registration of ``step`` (:class:`tomo4d.register.Registration`) from ``fields/align_<step>.json``."""
    from ..register import Registration

    return Registration.load(_phi_path(out, ctx.inputs.names[step]))


ALIGN = Stage(
    name="align", needs=(), per_step=True,
    description="rigid alignment of every step onto T0 on the current collector",
    outputs="fields/align_<step>.json, volumes/aligned_<step>.ome.zarr",
    enabled=lambda exp, inp: exp.align is not None and inp.n_steps >= 2,
    options=lambda exp: {**section_options(exp, "align"),
                         "inputs.names": exp.inputs.names},
    input_files=lambda inp, step: {"T0": inp.series[0], inp.names[step]: inp.series[step]},
    steps=lambda ctx: tuple(range(1, ctx.inputs.n_steps)),
    run_step=_align_step, save_step=_align_save, load_step=load_alignment)


def align_section(rep, out: Path, info: dict) -> None:
    """The report's section of the align stage, from ``fields/align_<step>.json`` alone."""
    rows = []
    for name in info["names"][1:]:
        p = _phi_path(out, name)
        if not p.is_file():
            continue
        d = json.loads(p.read_text(encoding="utf-8"))
        t = d.get("reference_displacement_zyx_px", [np.nan] * 3)
        rows.append((name, *(float(v) for v in t), float(d.get("rotation_angle_deg", np.nan)),
                     float(d.get("residual", np.nan)), bool(d.get("converged", False)),
                     "{}-{}".format(*d.get("reference_slab_z_px", ("?", "?")))))
    rep.section("Alignment", f"Every step rigidly registered onto {info['names'][0]} on the current collector "
                             "(the reference slab, z px), then resampled onto its grid (fields/align_<step>.json, "
                             "volumes/aligned_<step>.ome.zarr); later stages read the aligned series.")
    rep.table(["step", "u_z (px)", "u_y (px)", "u_x (px)", "rotation (deg)", "residual", "converged",
               "reference z (px)"], rows, caption="Rigid motion of the step against T0: displacement of the "
                                                  "reference slab's centre and rotation angle.")
