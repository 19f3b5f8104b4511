"""The ``lithiation`` stage (once, after particles and residual): lithiation modes and particle-centred frames.

* Modes: every particle of T0 (``volumes/particles_<T0>.ome.zarr``) is classified as core-shell-like or
  network-like from the residual maps of the residual stage (``volumes/residual_T0_<step>.ome.zarr``: the
  grey-level change the DVC field does not explain, in the T0 frame) with
  :func:`tomo4d.quantify.lithiation_modes` (profile score: residual of the particle's outer half against
  its core) -> ``tables/lithiation_modes`` (one row per (particle, step): its track, changed fraction,
  score, mode of the step and overall mode) and ``tables/lithiation_mode_counts`` (particles per mode at
  each step and overall, ``step = "all"``).  With ``lithiation.truth_modes`` (a CSV of the true mode per
  true particle, e.g. a phantom's ``truth/particles.csv``) and ``truth.particles``, each measured particle
  is matched to the true particle covering most of its voxels at T0, and its true mode and lithiated
  fraction stand beside the measurement; the counts table then holds the confusion (true core-shell /
  network among the particles measured in each mode) and the agreement of the classified particles.
* Frames: the ``n_frames`` longest tracks (found at most steps, largest first) are cut out of every step's
  grey volume (the series the other stages read) and particle labels, centred on the particle's centre of
  mass at that step (:func:`tomo4d.quantify.particle_frames`), -> ``volumes/particle_frames.npz``
  (``grey`` and ``labels``: (n tracks, n steps, z, y, x), NaN / -1 outside the view or where the track was
  lost; ``track``, ``label`` (n, n_steps), ``centre_um``, ``origin_px``, ``size_um``, ``steps``, ``mode``).

Out of core: T0's particles, the residual maps and the truth are read lazily; over ``chunk_budget_mb`` the modes
are computed slab by slab (:mod:`tomo4d.quantify.modes_chunked`, the same modes) and the frames read only their
boxes.

On the analysis series and grid (:mod:`.series`): with ``enhance.apply_to_series`` the frames are cut out of
the enhanced series (twice finer; ``voxel_size_nm`` in the .npz says which).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .chunked import budget_mb, lazy_labels, streams
from .series import analysis_voxel_size_nm, read_series, reads_series
from .stage import Stage, rel, section_options
from .stage_io import read_table_of, write_tables

__all__ = ["FRAMES", "LITHIATION", "LithiationResult", "tracks_from_table"]

log = logging.getLogger(__name__)

FRAMES = "volumes/particle_frames.npz"
_MODE = {"core_shell": "core-shell", "core-shell": "core-shell", "network": "network", "undetermined": "undetermined"}


@dataclass(frozen=True, eq=False)
class LithiationResult:
    """Tables of the lithiation stage (columns) and the frames (``{name: array}`` of the .npz, or None)."""

    modes: dict
    counts: dict
    frames: dict | None


def tracks_from_table(cols: dict, names, voxel_size_nm):
    """A :class:`tomo4d.quantify.Tracks` rebuilt from the saved long table ``tables/tracks``."""
    from ..quantify import Tracks

    names = tuple(str(n) for n in names)
    n_t = int(np.max(cols["track"])) + 1 if len(cols["track"]) else 0
    lab = np.zeros((n_t, len(names)), np.int64)
    cen = np.full((n_t, len(names), 3), np.nan)
    vol, cost = np.full((n_t, len(names)), np.nan), np.full((n_t, len(names)), np.nan)
    t = np.asarray(cols["track"]).astype(np.int64)
    s = np.asarray([names.index(str(x)) for x in cols["step"]], np.int64)
    lab[t, s] = np.asarray(cols["label"]).astype(np.int64)
    cen[t, s] = np.stack([cols[f"centroid_{a}_um"] for a in "zyx"], -1)
    vol[t, s], cost[t, s] = cols["volume_um3"], cols["cost"]
    first = np.argmax(lab > 0, axis=1).astype(np.int64)
    return Tracks(step_names=names, label=lab, centroid_um=cen, volume_um3=vol, cost=cost, first_step=first,
                  voxel_size_nm=tuple(float(v) for v in voxel_size_nm))


def _truth_modes(ctx, lab0, labels: np.ndarray) -> dict | None:
    """Per measured T0 particle: the dominant true particle, its mode and lithiated fraction per step (or None)."""
    from ..errors import InputError
    from ..quantify import read_table
    from .stages_segment import _dominant

    sec, inp = ctx.experiment.lithiation, ctx.inputs
    if sec.truth_modes is None or not inp.truth_particles:
        return None
    path = ctx.experiment.resolve(sec.truth_modes)
    table = read_table(path)
    if "id" not in table or "mode" not in table:
        raise InputError(f"lithiation.truth_modes={sec.truth_modes!r} has columns {', '.join(table)}; it needs "
                         "'id' (the truth.particles value) and 'mode' (core_shell or network)")
    bad = sorted({str(m) for m in table["mode"]} - set(_MODE))
    if bad:
        raise InputError(f"lithiation.truth_modes: mode {bad[0]!r} is not known; use core_shell or network")
    ids = np.asarray(table["id"]).astype(np.int64)
    dom = _dominant(lab0, lazy_labels(ctx, inp.truth_particles[0]), budget_mb(ctx))  # slab by slab
    true_id = np.asarray([dom.get(int(k), 0) for k in labels], np.int64)
    row = {int(i): r for r, i in enumerate(ids)}
    where = np.asarray([row.get(int(i), -1) for i in true_id])
    mode = np.asarray([_MODE[str(table["mode"][r])] if r >= 0 else "none" for r in where])
    frac = {}
    for n in inp.names:
        col = table.get(f"lithiated_fraction_{n}")
        frac[n] = np.asarray([float(col[r]) if col is not None and r >= 0 else np.nan for r in where])
    return {"true_id": true_id, "mode": mode, "fraction": frac}


def _counts(modes_long: dict, steps, truth: bool) -> dict:
    """Particles per mode at each step (``step_mode``) and overall (``mode``, step "all"), with the confusion."""
    from ..quantify.modes import MODE_NAMES

    rows = []
    for step in (*steps, "all"):
        sel = modes_long["step"] == (step if step != "all" else steps[0])
        measured = modes_long["step_mode" if step != "all" else "mode"][sel]
        true = modes_long["true_mode"][sel] if truth else None
        decided = (measured != MODE_NAMES[0]) & ((true != "none") if truth else True)
        for name in MODE_NAMES.values():
            k = measured == name
            row = {"step": step, "mode": name, "n_particles": int(k.sum())}
            if truth:
                row.update(n_true_core_shell=int(np.sum(k & (true == "core-shell"))),
                           n_true_network=int(np.sum(k & (true == "network"))),
                           n_true=int(np.sum(true == name)),
                           agreement=float(np.mean(measured[decided] == true[decided])) if decided.any() else np.nan)
            rows.append(row)
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}


def _modes(ctx, lab0, tracks) -> dict:
    """The modes of every T0 particle (``lab0`` lazy: read whole within the budget, else slab by slab by
    :func:`tomo4d.quantify.modes_chunked.lithiation_modes_chunked`, the same result)."""
    from .._array import to_numpy
    from ..io import open_volume
    from ..quantify import lithiation_modes
    from ..quantify.modes_chunked import lithiation_modes_chunked, modes_bytes_per_voxel

    sec, inp = ctx.experiment.lithiation, ctx.inputs
    steps = [n for n in inp.names[1:] if (ctx.out / "volumes" / f"residual_T0_{n}.ome.zarr").exists()]
    if not steps:  # every DVC field without a usable node: no residual map (a zero map decides no particle)
        log.warning("lithiation: no residual map (the DVC fields have no usable node); every mode is undetermined")
    maps = [open_volume(ctx.out / "volumes" / f"residual_T0_{n}.ome.zarr").data for n in steps]
    maps = maps or [np.zeros(lab0.shape, np.float32)]
    kw = dict(voxel_size_nm=analysis_voxel_size_nm(ctx), shell_threshold=sec.shell_threshold,
              min_residual=sec.min_residual, exclude_border=sec.exclude_border, method="profile",
              names=steps or [inp.names[0]])
    if streams(ctx, lab0.shape, modes_bytes_per_voxel(len(maps))):
        res = lithiation_modes_chunked(lab0, maps, chunk_budget_mb=budget_mb(ctx), **kw)
    else:
        res = lithiation_modes(to_numpy(lab0), [to_numpy(m) for m in maps], **kw)
    cols = res.to_columns()
    track_of = {}
    if tracks is not None:
        t0 = np.flatnonzero(tracks.label[:, 0] > 0)
        track_of = dict(zip(tracks.label[t0, 0].tolist(), t0.tolist()))
    cols = {"track": np.asarray([track_of.get(int(k), -1) for k in cols["label"]], np.int64), **cols}
    truth = _truth_modes(ctx, lab0, res.label)
    if truth is not None:
        p = np.searchsorted(res.label, cols["label"])
        cols.update(true_id=truth["true_id"][p], true_mode=truth["mode"][p],
                    true_lithiated_fraction=np.asarray([truth["fraction"][str(s)][k]
                                                        for s, k in zip(cols["step"], p)], float))
    return cols


def _chosen_tracks(tracks, n: int, faces: np.ndarray) -> np.ndarray:
    """The ``n`` longest tracks (found at most steps); among equals those not cut by the border at T0, then the
    largest (mean volume)."""
    found = np.count_nonzero(tracks.label > 0, axis=1)
    vol = np.nanmean(np.where(tracks.label > 0, tracks.volume_um3, np.nan), axis=1)
    cut = np.isin(tracks.label[:, 0], faces[faces > 0])
    return np.lexsort((-np.nan_to_num(vol), cut, -found))[:n]


def _face_labels(ctx, lab0) -> np.ndarray:
    """The labels on the six faces of T0's particle volume (read slab by slab)."""
    from .._array import read_box
    from .._chunks import plan_slabs

    found = []
    for z0, z1 in plan_slabs(lab0.shape, bytes_per_voxel=8, chunk_budget_mb=budget_mb(ctx)):
        lab = np.asarray(read_box(lab0, (slice(z0, z1), slice(None), slice(None))))
        found += [lab[:, 0], lab[:, -1], lab[:, :, 0], lab[:, :, -1]] + ([lab[0]] if z0 == 0 else []) \
            + ([lab[-1]] if z1 == lab0.shape[0] else [])
    return np.unique(np.concatenate([f.ravel() for f in found]))


def _frames(ctx, tracks, modes: dict, lab0) -> dict | None:
    from ..io import open_volume
    from ..quantify import particle_frames

    sec, inp = ctx.experiment.lithiation, ctx.inputs
    if tracks is None or sec.n_frames == 0 or tracks.n_tracks == 0:
        return None
    chosen = _chosen_tracks(tracks, sec.n_frames, _face_labels(ctx, lab0))
    size = sec.frame_size_um
    if size is None:  # 2.5 equivalent diameters of the largest framed particle
        v = np.nanmax(np.where(tracks.label[chosen] > 0, tracks.volume_um3[chosen], np.nan))
        size = 2.5 * float(np.cbrt(6.0 * v / np.pi))
    vs = analysis_voxel_size_nm(ctx)
    grey = [read_series(ctx, i).data for i in range(inp.n_steps)]  # lazily: only the frames' boxes are read
    labs = [open_volume(ctx.out / "volumes" / f"particles_{n}.ome.zarr").data for n in inp.names]
    g = [particle_frames(grey, tracks, int(t), size_um=size, voxel_size_nm=vs) for t in chosen]
    lb = [particle_frames(labs, tracks, int(t), size_um=size, voxel_size_nm=vs) for t in chosen]
    by_track = dict(zip(modes["track"].tolist(), modes["mode"].tolist()))
    return {"grey": np.stack([f.frames for f in g]).astype(np.float32),
            "labels": np.stack([np.nan_to_num(f.frames, nan=-1) for f in lb]).astype(np.int32),
            "track": chosen.astype(np.int64), "label": tracks.label[chosen],
            "centre_um": np.stack([f.centre_um for f in g]), "origin_px": np.stack([f.origin_px for f in g]),
            "size_um": np.float64(size), "steps": np.asarray(inp.names),
            "mode": np.asarray([by_track.get(int(t), "not at T0") for t in chosen]),
            "voxel_size_nm": np.asarray(vs, float)}


def _lithiation_run(ctx):
    from ..io import open_volume

    inp = ctx.inputs
    lab0 = open_volume(ctx.out / "volumes" / f"particles_{inp.names[0]}.ome.zarr").data  # lazy
    tr = read_table_of(ctx.out, "tracks")
    tracks = tracks_from_table(tr, inp.names, analysis_voxel_size_nm(ctx)) if tr is not None else None
    modes = _modes(ctx, lab0, tracks)
    counts = _counts(modes, list(dict.fromkeys(modes["step"].tolist())), "true_mode" in modes)
    return LithiationResult(modes=modes, counts=counts, frames=_frames(ctx, tracks, modes, lab0))


def _lithiation_save(result, out):
    from ..io import atomic_output

    paths = write_tables(result.modes, out, "lithiation_modes") + write_tables(result.counts, out,
                                                                               "lithiation_mode_counts")
    if result.frames is not None:
        with atomic_output(out / FRAMES, overwrite=True) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **result.frames)
        paths += (rel(out, out / FRAMES),)
    return paths


def _options(exp) -> dict:
    from .fingerprint import fingerprint

    opts = section_options(exp, "lithiation")
    if exp.lithiation.truth_modes is not None:  # its content, not only its name, enters the key
        p = exp.resolve(exp.lithiation.truth_modes)
        if not p.is_file():
            from ..errors import InputError

            raise InputError(f"lithiation.truth_modes={exp.lithiation.truth_modes!r} does not exist (looked for "
                             f"{str(p)!r}); check the path")
        opts["lithiation.truth_modes (content)"] = fingerprint(p)
    return {**opts, "inputs.names": exp.inputs.names}


LITHIATION = Stage(
    name="lithiation", needs=("particles", "residual", "enhance", "align"), per_step=False,
    description="lithiation mode per T0 particle from the residual maps; particle-centred frames of the longest tracks",
    outputs=f"tables/lithiation_modes, tables/lithiation_mode_counts, {FRAMES}",
    enabled=lambda exp, inp: (getattr(exp, "lithiation", None) is not None and exp.particles is not None
                              and exp.segment is not None and exp.residual is not None and exp.dvc is not None
                              and inp.n_steps >= 2),
    options=_options,
    input_files=lambda inp, step: {**{n: p for n, p in zip(inp.names, inp.series)},
                                   **({"truth.particles[0]": inp.truth_particles[0]} if inp.truth_particles else {})},
    run=_lithiation_run, save=_lithiation_save, reads=reads_series)
