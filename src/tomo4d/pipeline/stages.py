"""The stages: ``register_pair``, ``train``, ``enhance``, ``enhance_repeat``, ``enhance_quality`` (first;
:mod:`.stages_enhance`), ``align`` (:mod:`.stages_align`), ``segment`` and ``particles`` (:mod:`.stages_segment`),
``quantify``, ``dvc`` (per step), ``strain``, ``residual`` (:mod:`.stages_residual`), ``lithiation``
(:mod:`.stages_lithiation`), ``neutron`` and ``neutron_layer`` (:mod:`.stages_neutron`: Li concentration from
``inputs.neutron`` and the phase labels, the layer's mean per step, joint X-ray/neutron phases).

Options of each stage are given to the cache key as a flat mapping of dotted experiment-file keys
(``dvc.node_spacing``, ``inputs.names``), so a recomputation names the key that changed.

Which series and grid the analysis stages work on is one rule (:mod:`.series`): with ``enhance.apply_to_series``
every stage reading grey volumes (segment, dvc, residual, lithiation frames, neutron joint phases) reads the
enhanced series ``volumes/enhanced_<step>.ome.zarr`` (twice finer along every axis, voxel halved), else the
aligned series when ``align`` runs, else ``inputs.series``.  Label files on the ``inputs.series`` grid
(``inputs.labels``, ``segment.labels``, ``truth.labels``, ``truth.particles``) are repeated x2 per axis onto the
enhanced grid (exact nearest neighbour), so every label volume, field and map of a run shares one grid; tables
are in physical units (nm, um) and do not depend on it.  These stages list ``enhance`` in their ``needs`` (read
only with ``apply_to_series``): editing an enhance option recomputes them; stages that read only label files
carry ``analysis_scale`` among their options.

* ``quantify``: electrode thickness and phase volumes of the label series (``inputs.labels``, else the
  ``segment`` stage's labels)
  (:func:`tomo4d.quantify.thickness_series`, :func:`~tomo4d.quantify.phase_series`) ->
  ``tables/thickness`` and ``tables/phases`` (Parquet + CSV); a label volume over ``chunk_budget_mb`` is read slab
  by slab (:mod:`tomo4d.quantify.chunked`, identical results).
* ``dvc``: local DVC T0 -> Tn of every step n >= 1 (:func:`tomo4d.dvc.correlate`) on the analysis series,
  each step started from the previous step's field (``from_previous``), or, with ``incremental``, the pair
  T(n-1) -> Tn correlated by the same route and composed onto T0 -> T(n-1) (``tomo4d.dvc.compose_fields``; the
  electrode mask moved into T(n-1) by that field) -> ``fields/dvc_T0_<step>.h5`` (+ ``.vtk``
  for ParaView with ``dvc.vtk``, :mod:`.vtk_export`); node spacing and windows are in px of the analysis grid.
  Over ``chunk_budget_mb`` the ``affine_start`` is registered out of core (``register(..., chunk_budget_mb=...)``),
  the ``axial_start`` fitted on lateral block means read slab by slab (``axial_profile_start(...,
  chunk_budget_mb=...)``) and the node batches read lazily (PSF compensation too: each group of nodes reads its
  box), the Richardson-Lucy deconvolution box by box into ``.tomo4d/deconvolved`` (:func:`tomo4d.dvc.
  deconvolve_chunked`); the global method still takes whole volumes.
* ``strain``: finite strain of every field (:func:`tomo4d.dvc.strain_field`) ->
  ``fields/strain_T0_<step>.h5`` (+ ``.vtk`` with hencky_zz and volumetric) and ``tables/strain_summary``; with labels (``quantify``) the
  regional statistics of the T0 anode's layers (:func:`tomo4d.quantify.regional_strain_series`)
  -> ``tables/regional_strain``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from .series import analysis_scale, analysis_voxel_size_nm, read_series, reads_series, series_path
from .stage import Stage, rel
from .stage_io import read_table_of, write_tables
from .stages_align import ALIGN
from .stages_enhance import ENHANCE_STAGES
from .stages_hallucination import ENHANCE_HALLUCINATION
from .stages_lithiation import LITHIATION
from .stages_neutron import NEUTRON_STAGES
from .stages_neutron_spectra import NEUTRON_SPECTRA
from .stages_reconstruct import RECONSTRUCT
from .stages_residual import RESIDUAL
from .stages_segment import PARTICLES, SEGMENT
from .vtk_export import write_dvc_vtk, write_strain_vtk

__all__ = ["STAGES", "stage_by_name"]

log = logging.getLogger(__name__)


def _tables(table, out: Path, name: str) -> tuple[str, ...]:
    return write_tables(table, out, name)


def _section_options(exp, section: str) -> dict:
    return {f"{section}.{k}": v for k, v in getattr(exp, section).model_dump().items()}


# -- quantify -------------------------------------------------------------------------------------

def _quantify_run(ctx):
    from ..quantify import phase_series, thickness_series
    from .chunked import budget_mb, lazy_labels, lazy_segment

    inp, sec = ctx.inputs, ctx.experiment.quantify
    vs = analysis_voxel_size_nm(ctx)  # label files repeated onto the analysis grid (:mod:`.series`)
    labels = [lazy_labels(ctx, p) for p in inp.labels] if inp.labels else \
        [lazy_segment(ctx, i) for i in range(inp.n_steps)]  # no label files: the segment stage's labels
    labels = [_in_memory_or_lazy(ctx, a) for a in labels]  # over chunk_budget_mb: streamed slab by slab
    names = inp.names[:len(labels)]
    budget = budget_mb(ctx)
    th = thickness_series(labels, voxel_size_nm=vs, smooth_nm=sec.smooth_nm, names=names, chunk_budget_mb=budget) \
        if sec.thickness or ctx.experiment.dvc is not None else None
    ph = phase_series(labels, voxel_size_nm=vs, names=names, chunk_budget_mb=budget) if sec.phases else None
    if inp.truth_labels and not inp.labels:  # measured from the segmentation: the truth beside it
        truth = [_in_memory_or_lazy(ctx, lazy_labels(ctx, p)) for p in inp.truth_labels]
        if th is not None:
            tt = thickness_series(truth, voxel_size_nm=vs, smooth_nm=sec.smooth_nm, names=names,
                                  chunk_budget_mb=budget)
            th = {**th.to_columns(), "true_thickness_mean_um": tt.mean_um, "true_expansion": tt.expansion}
        if ph is not None:
            ph = {**ph.to_columns(),
                  "true_rnl": phase_series(truth, voxel_size_nm=vs, names=names, chunk_budget_mb=budget).rnl}
    return th, ph


def _in_memory_or_lazy(ctx, data):
    """``data`` loaded (numpy) when its working set fits ``chunk_budget_mb``, else left lazy (read slab by slab)."""
    from .._array import to_numpy
    from ..quantify.chunked import BYTES_PER_VOXEL
    from .chunked import streams

    return data if streams(ctx, data.shape, BYTES_PER_VOXEL) else to_numpy(data)


def _quantify_save(result, out):
    th, ph = result
    paths = ()
    if th is not None:
        paths += _tables(th, out, "thickness")
    if ph is not None:
        paths += _tables(ph, out, "phases")
    return paths


def _quantify_load(out):
    return read_table_of(out, "thickness")


QUANTIFY = Stage(
    name="quantify", needs=("segment",), per_step=False, description="thickness and phase volumes per step",
    outputs="tables/thickness, tables/phases",
    enabled=lambda exp, inp: exp.quantify is not None and (bool(inp.labels) or exp.segment is not None),
    options=lambda exp: {**_section_options(exp, "quantify"), "dvc": "present" if exp.dvc is not None else "absent",
                         "inputs.labels": exp.inputs.labels, "analysis_scale": analysis_scale(exp),
                         "inputs.names": exp.inputs.names},
    input_files=lambda inp, step: {**{f"labels[{i}]": p for i, p in enumerate(inp.labels)},
                                   **({f"truth.labels[{i}]": p for i, p in enumerate(inp.truth_labels)}
                                      if not inp.labels else {})},
    run=_quantify_run, save=_quantify_save, load=_quantify_load,
    reads=lambda exp, need: exp.inputs.labels is None)  # the segment stage's labels only without label files


# -- dvc ------------------------------------------------------------------------------------------

def _field_path(out: Path, ctx, step: int) -> Path:
    return out / "fields" / f"dvc_T0_{ctx.inputs.names[step]}.h5"


def _electrode_band(ctx, shape, moved_by=None) -> tuple[float, float]:
    """(lo, hi) px of the T0 electrode: the z band between the quantify stage's mean T0 collector and separator
    interfaces, on the analysis grid of shape ``shape``; with ``moved_by`` (a T0 -> Tm field) its edges moved into
    Tm with the material just outside them (:func:`tomo4d.dvc.moved_band`; each edge on its own)."""
    t = ctx.load("quantify")
    vs = analysis_voxel_size_nm(ctx)[0]
    lo, hi = float(t["collector_z_um"][0]) * 1e3 / vs, float(t["separator_z_um"][0]) * 1e3 / vs
    if moved_by is not None:
        from ..dvc import moved_band

        lo, hi = moved_band(moved_by, lo, hi, shape[1:])
    return lo, hi


def _band_mask(lo: float, hi: float, shape):
    """The z band ``lo <= z < hi`` as a lazy (z, y, x) mask (``dvc.mask: electrode``; ``above_collector``: hi
    infinite)."""
    z = np.arange(shape[0])
    band = (z >= lo) & (z < hi)
    import dask.array as da  # lazy: a node batch (or a cluster task) materialises only its box

    return da.broadcast_to(da.from_array(band[:, None, None], chunks=(64, 1, 1)), tuple(shape))


def _inside_faces(mask, shape, psf_sigma_px, band=None, *, iterations: int):
    """``mask`` (or everything) less :func:`tomo4d.dvc.boundary_margin_px` voxels (at most a quarter of the axis) at
    each face of the volume; at the z faces only outside the electrode ``band`` (collector, separator interface; px)
    when given: the collector may lie a few voxels from the bottom face (the HQ phantom's at 7 px; a 9 px margin
    there lost the anode's bottom rows and read the collector side +0.02 high).  The top face of a textureless separator (the LQ phantom's) pinned the separator at rest and
    pulled the anode's top down: the margin there is what lets the separator move (session 19)."""
    import dask.array as da

    from ..dvc import boundary_margin_px

    m = [min(boundary_margin_px(psf_sigma_px, iterations=iterations), n // 4) for n in shape]  # half of each axis kept
    lo, hi = (shape[0], 0) if band is None else band
    z = np.arange(shape[0])
    keep_z = (z >= min(m[0], max(lo, 0))) & (z < max(shape[0] - m[0], min(hi, shape[0])))
    inner = [da.from_array(keep_z, chunks=64)] + [
        da.from_array((np.arange(n) >= k) & (np.arange(n) < n - k), chunks=64) for n, k in zip(shape[1:], m[1:])]
    box = inner[0][:, None, None] & inner[1][None, :, None] & inner[2][None, None, :]
    return box if mask is None else mask & box


def _dvc_step(ctx, step, previous):
    sec = ctx.experiment.dvc
    usable = previous is not None and previous.usable.any()
    if sec.incremental and step > 1 and usable:  # reference updating: T(n-1) -> Tn composed onto T0 -> T(n-1)
        from ..dvc import compose_fields

        increment = _dvc_pair(ctx, step - 1, step, None, frame=previous)
        # not refined by T0 -> Tn from there: at the demo's large steps the direct criterion pulls the field off
        # (T2 median error 1.09 against 0.86 px composed; RESULTS.md session 17)
        field = compose_fields(previous, increment)
        # the pair's own notes (solver levels, convergence, interface targets and reached values) stay readable
        field = field.with_(notes={**field.notes, "increment": increment.notes})
    else:
        field = _dvc_pair(ctx, 0, step, previous if sec.from_previous and usable else None)
    if sec.method == "global" and sec.flag_textureless:  # T0's windows of pure noise are not measurements
        from .stages_dvc_checks import flag_textureless

        field = flag_textureless(ctx, field)
    return field


def _dvc_pair(ctx, ref_step, step, initial, frame=None):
    """The field ``ref_step -> step`` by the section's route, started from ``initial`` (or the section's start);
    ``frame``: the T0 -> ref_step field that moves the electrode mask into ``ref_step``."""
    from ..dvc import correlate, correlate_global

    sec = ctx.experiment.dvc
    ref, deformed = read_series(ctx, ref_step), read_series(ctx, step)  # the analysis series, lazily
    band = _electrode_band(ctx, ref.shape, frame) if sec.mask != "none" else None
    mask = None if band is None else _band_mask(band[0], band[1] if sec.mask == "electrode" else np.inf, ref.shape)
    if sec.deconvolve_iterations and sec.method == "global":  # the deconvolution's faces are static in every
        # scan: out of the match, the electrode kept (measured for the global method; local windows not measured)
        mask = _inside_faces(mask, ref.shape, sec.deconvolve_psf_sigma_px, band, iterations=sec.deconvolve_iterations)
    axial = initial is None and sec.axial_start
    affine_only = initial is None and sec.affine_start and not axial
    if sec.method == "global":  # one regularised field over the whole volume: in memory
        whole = True
    elif sec.deconvolve_iterations:
        whole = not _deconvolve_streams(ctx, ref.shape)
    else:
        whole = (affine_only or axial) and not _register_streams(ctx, ref.shape)
    if not whole:  # local DVC reads its node batches' boxes (chunk_budget_mb) from the stored volumes
        phi0, budget = None, ctx.experiment.chunk_budget_mb
        ref_d, def_d = ref.data, deformed.data
        if sec.deconvolve_iterations:  # over the budget: box by box into the run's work folder (T0's reused)
            ref_d, def_d = _deconvolved(ctx, ref_step, ref_d), _deconvolved(ctx, step, def_d)
        if affine_only or (axial and sec.affine_start):  # over the budget: registered out of core
            from ..register import register

            phi0 = register(ref_d, def_d, chunk_budget_mb=budget).phi
        if axial:  # over the budget: fitted on lateral block means read slab by slab (tomo4d.dvc.axial)
            from ..dvc import axial_profile_start

            initial, phi0 = axial_profile_start(ref_d, def_d, phi0=phi0, mask=mask, chunk_budget_mb=budget,
                                                node_spacing=sec.node_spacing, lateral=sec.axial_lateral), None
        radius = 0 if initial is not None or phi0 is not None else sec.search_radius_px
        kw = sec.correlate_kwargs()
        if "chunk_budget_mb" not in sec.model_fields_set:  # the run's budget (results do not depend on it)
            kw["options"] = dataclasses.replace(kw["options"], chunk_budget_mb=ctx.experiment.chunk_budget_mb)
        return correlate(ref_d, def_d, initial=initial, phi0=phi0, search_radius_px=radius, mask=mask,
                         client=ctx.client, **kw)
    pair_bytes = 2 * 4.0 * float(np.prod(ref.shape))  # the two scans as float32, before the solver's own arrays
    if sec.method == "global" and pair_bytes > ctx.experiment.chunk_budget_mb * 2**20:
        log.warning("dvc: the global method holds both volumes whole in memory (%.2f GiB as float32, over "
                    "chunk_budget_mb=%g); at this size the local method streams", pair_bytes / 2**30,
                    ctx.experiment.chunk_budget_mb)
    ref, deformed = ref.numpy(), deformed.numpy()
    if sec.deconvolve_iterations:  # both scans, with the same PSF (tomo4d.dvc.deconvolve)
        from ..dvc import deconvolve

        ref, deformed = (deconvolve(v, psf_sigma_px=sec.deconvolve_psf_sigma_px, iterations=sec.deconvolve_iterations)
                         for v in (ref, deformed))
    phi0 = None
    if initial is None and (sec.affine_start or sec.axial_start):
        from ..register import register

        phi0 = register(ref, deformed).phi if sec.affine_start else None
        if sec.axial_start:
            from ..dvc import axial_profile_start

            initial, phi0 = axial_profile_start(ref, deformed, phi0=phi0, mask=mask,
                                                node_spacing=sec.node_spacing, lateral=sec.axial_lateral), None
    if sec.method == "global":
        from .stages_dvc_checks import interface_motions

        return correlate_global(ref, deformed, initial=initial, phi0=phi0, mask=mask,
                                interfaces=interface_motions(ctx, ref_step, step) if sec.interfaces else None,
                                options=sec.global_dvc_options())
    radius = 0 if initial is not None or phi0 is not None else sec.search_radius_px
    return correlate(ref, deformed, initial=initial, phi0=phi0, search_radius_px=radius, mask=mask,
                     **sec.correlate_kwargs())


def _deconvolve_streams(ctx, shape) -> bool:
    """The Richardson-Lucy deconvolution of volumes of ``shape`` exceeds ``chunk_budget_mb`` in memory."""
    from ..dvc.deconvolve_chunked import DECONVOLVE_BYTES_PER_VOXEL
    from .chunked import streams

    return streams(ctx, shape, DECONVOLVE_BYTES_PER_VOXEL)


def _deconvolved(ctx, step: int, data):
    """Step ``step`` of the analysis series deconvolved box by box (:func:`tomo4d.dvc.deconvolve_chunked`) into
    ``.tomo4d/deconvolved/<step>.zarr`` of the run, reused while its source file and the PSF options are unchanged
    (T0's serves every step; a run interrupted mid-way resumes its passes)."""
    import json
    import os

    from ..dvc import deconvolve_chunked
    from ..dvc.deconvolve_chunked import open_deconvolved

    sec = ctx.experiment.dvc
    src = series_path(ctx, step)
    st = src.stat()
    key = [str(src), st.st_size, st.st_mtime_ns, float(sec.deconvolve_psf_sigma_px), int(sec.deconvolve_iterations)]
    path = ctx.out / ".tomo4d" / "deconvolved" / f"{ctx.inputs.names[step]}.zarr"
    meta = path.with_suffix(".json")
    try:
        same = json.loads(meta.read_text(encoding="utf-8")) == key
    except (OSError, ValueError):
        same = False
    if same and path.exists():
        return open_deconvolved(path)
    meta.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = deconvolve_chunked(data, path, psf_sigma_px=sec.deconvolve_psf_sigma_px,
                             iterations=sec.deconvolve_iterations, chunk_budget_mb=ctx.experiment.chunk_budget_mb,
                             client=ctx.client)  # on a cluster: each pass's boxes are its tasks
    tmp = meta.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(key), encoding="utf-8")
    os.replace(tmp, meta)
    log.info("dvc: %s deconvolved box by box (%s)", ctx.inputs.names[step], rel(ctx.out, path))
    return arr


def _register_streams(ctx, shape) -> bool:
    """The affine start's registration of volumes of ``shape`` exceeds ``chunk_budget_mb`` in memory."""
    from ..register import LEVEL_BYTES_PER_VOXEL
    from .chunked import streams

    return streams(ctx, shape, LEVEL_BYTES_PER_VOXEL)


def _dvc_save(field, out, ctx, step):
    paths = (rel(out, field.save(_field_path(out, ctx, step), overwrite=True)),)
    if ctx.experiment.dvc.vtk:  # ParaView (tomo4d.pipeline.vtk_export)
        paths += (write_dvc_vtk(field, out, ctx.inputs.names[step]),)
    return paths


def _dvc_load(out, ctx, step):
    from ..dvc import DisplacementField

    return DisplacementField.load(_field_path(out, ctx, step))


DVC = Stage(
    name="dvc", needs=("enhance", "align", "quantify"), per_step=True, chained=True,
    description="DVC T0 -> Tn, one field per step",
    outputs="fields/dvc_T0_<step>.h5 (+ .vtk)",
    enabled=lambda exp, inp: exp.dvc is not None and inp.n_steps >= 2,
    options=lambda exp: {**_section_options(exp, "dvc"), "inputs.names": exp.inputs.names},
    input_files=lambda inp, step: {"T0": inp.series[0], inp.names[step]: inp.series[step]},
    steps=lambda ctx: tuple(range(1, ctx.inputs.n_steps)),
    run_step=_dvc_step, save_step=_dvc_save, load_step=_dvc_load,
    reads=lambda exp, need: reads_series(exp, need) if need != "quantify" else exp.dvc.mask != "none")


# -- strain ---------------------------------------------------------------------------------------

def _summary_row(inp, i, field, st, capped=None):
    from ..dvc import beyond_validated_range

    counts = field.status_counts()
    usable = int(np.count_nonzero(field.usable))
    row = {"step": inp.names[i], "time_s": inp.time_s[i],
           "state_of_charge": np.nan if inp.state_of_charge is None else inp.state_of_charge[i],
           "n_nodes": field.n_nodes, "n_usable": usable, "n_converged": int(counts.get("converged", 0)),
           "n_interpolated": int(counts.get("interpolated", 0))}
    for comp in ("hencky_zz", "volumetric"):
        vals = st.component(comp)[st.valid] if st is not None else np.zeros(0)
        row[f"{comp}_mean"] = float(np.mean(vals)) if vals.size else np.nan
        row[f"{comp}_median"] = float(np.median(vals)) if vals.size else np.nan
    # 1: the strain lies beyond the range where the DVC is validated against a known truth (flagged, not hidden)
    row["beyond_validated_range"] = int(st is not None and beyond_validated_range(st))
    if capped is not None:  # the global method: 1 where a solve the field rests on stopped at its iteration cap
        row["solver_capped"] = int(capped)
    return row


def _capped(field, before: bool) -> bool:
    """Whether a global DVC solve that ``field`` rests on stopped at ``max_iterations`` (its own, and with reference
    updating the earlier steps' too, ``before``): the field is then that iterate, not the criterion's minimum."""
    notes = field.notes
    own = notes.get("increment", notes)
    return own.get("converged") is False or ("increment" in notes and before)


def _strain_run(ctx):
    from ..dvc import strain_field
    from ..errors import InputError
    from ..quantify import regional_strain_series

    inp = ctx.inputs
    rows, strains, fields = [], {}, {}
    capped = False if ctx.experiment.dvc.method == "global" else None
    for i in range(1, inp.n_steps):
        field = fields[inp.names[i]] = ctx.load("dvc", i)
        try:
            strains[i] = strain_field(field)
        except InputError as exc:  # no usable node: the step is reported, not hidden
            log.warning("strain of %s: %s", inp.names[i], exc)
        capped = None if capped is None else _capped(field, capped)
        rows.append(_summary_row(inp, i, field, strains.get(i), capped))
        if rows[-1]["beyond_validated_range"]:
            log.warning("strain of %s lies beyond the range where the DVC is validated (see the report): flagged "
                        "in tables/strain_summary (beyond_validated_range)", inp.names[i])
    summary = {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
    thickness = ctx.load("quantify") if QUANTIFY.enabled(ctx.experiment, inp) else None
    regional = None
    if thickness is not None and strains:
        vs = analysis_voxel_size_nm(ctx)[0]  # the fields' grid (enhanced: twice finer)
        regional = regional_strain_series(  # the fields: the layers' volume means from their interpolant
            [fields[inp.names[i]] for i in strains], collector_z_px=float(thickness["collector_z_um"][0]) * 1e3 / vs,
            separator_z_px=float(thickness["separator_z_um"][0]) * 1e3 / vs,
            n_layers=ctx.experiment.quantify.n_layers, names=[inp.names[i] for i in strains])
    truth = _truth_strain(ctx, fields, strains, summary, thickness)
    vtk = fields if ctx.experiment.dvc.vtk else None  # the fields' grids, for fields/strain_T0_<step>.vtk
    return {inp.names[i]: s for i, s in strains.items()}, summary, (regional, truth), vtk


def _truth_strain(ctx, fields, strains, summary, thickness):
    """With ``truth.displacement`` (:mod:`.truth_fields`): the median displacement error and the mean true strain
    over the nodes the measurement has (``*_true``), added to ``summary`` in place; returns the true regional
    statistics over every node of each layer and its volume means (what the layer truly did), with the true volume
    mean over the part of each layer the measurement covers beside them (``strain_volume_mean_covered``: the
    like-for-like comparison; the demo's lateral faces, left out of the match, hold the separator side's truth
    0.009-0.016 lower than the inner half the measurement covers), or None."""
    from ..quantify import regional_strain_series
    from .truth_fields import truth_field, truth_strain

    inp = ctx.inputs
    if not inp.truth_displacement:
        return None
    scale, vs = analysis_scale(ctx.experiment), inp.voxel_size_nm[0]
    err, cols, true_fields = [], {f"{c}_mean_true": [] for c in ("hencky_zz", "volumetric")}, {}
    for i in range(1, inp.n_steps):
        field = fields[inp.names[i]]
        tf = truth_field(field, inp.truth_displacement[i], voxel_size_nm=vs, scale=scale,
                         key=f"truth.displacement[{i}]")
        ok = field.usable
        d = np.linalg.norm(field.displacement_zyx_px - tf.displacement_zyx_px, axis=1)[ok]
        err.append(float(np.median(d)) if d.size else np.nan)
        true_fields[i] = tf  # the layers' true strain: every node of the truth
        st = truth_strain(tf, strains[i]) if i in strains else None  # the nodes the measurement has
        for c in ("hencky_zz", "volumetric"):
            vals = st.component(c)[st.valid] if st is not None else np.zeros(0)
            cols[f"{c}_mean_true"].append(float(np.mean(vals)) if vals.size else np.nan)
    summary["median_error_px"] = np.asarray(err)
    summary.update({k: np.asarray(v) for k, v in cols.items()})
    if thickness is None:
        return None
    layers = dict(collector_z_px=float(thickness["collector_z_um"][0]) * 1e3 * scale / vs,
                  separator_z_px=float(thickness["separator_z_um"][0]) * 1e3 * scale / vs,
                  n_layers=ctx.experiment.quantify.n_layers, names=[inp.names[i] for i in true_fields])
    cols = regional_strain_series(list(true_fields.values()), **layers).to_columns()  # every step, even failed ones
    cols["strain_volume_mean_covered"] = np.full(len(cols["step"]), np.nan)
    measured = [i for i in true_fields if fields[inp.names[i]].usable.any()]
    if measured:  # the measured nodes only, of the steps that have any
        part = regional_strain_series([true_fields[i].with_(status=fields[inp.names[i]].status) for i in measured],
                                      **{**layers, "names": [inp.names[i] for i in measured]}).to_columns()
        at = {key: n for n, key in enumerate(zip(cols["step"], cols["region"], cols["component"]))}
        for key, v in zip(zip(part["step"], part["region"], part["component"]), part["strain_volume_mean"]):
            cols["strain_volume_mean_covered"][at[key]] = v
    return cols


def _strain_save(result, out):
    strains, summary, (regional, regional_truth), vtk = result
    paths = tuple(rel(out, s.save(out / "fields" / f"strain_T0_{name}.h5", overwrite=True))
                  for name, s in strains.items())
    if vtk is not None:
        paths += tuple(write_strain_vtk(vtk[name], s, out, name) for name, s in strains.items())
    paths += _tables(summary, out, "strain_summary")
    if regional is not None:
        paths += _tables(regional, out, "regional_strain")
    if regional_truth is not None:
        paths += _tables(regional_truth, out, "regional_strain_truth")
    return paths


STRAIN = Stage(
    name="strain", needs=("dvc", "quantify"), per_step=False,
    description="finite strain per step, regional statistics with labels",
    outputs="fields/strain_T0_<step>.h5 (+ .vtk), tables/strain_summary, tables/regional_strain",
    enabled=lambda exp, inp: exp.dvc is not None and inp.n_steps >= 2,
    options=lambda exp: {"quantify.n_layers": exp.quantify.n_layers if exp.quantify is not None else None,
                         "dvc.vtk": exp.dvc.vtk,
                         "inputs.time_s": exp.inputs.time_s, "inputs.state_of_charge": exp.inputs.state_of_charge,
                         "inputs.names": exp.inputs.names},
    input_files=lambda inp, step: {f"truth.displacement[{i}]": p for i, p in enumerate(inp.truth_displacement)},
    run=_strain_run, save=_strain_save)

#: every stage, in workflow order
STAGES: tuple[Stage, ...] = (RECONSTRUCT, *ENHANCE_STAGES, ENHANCE_HALLUCINATION, ALIGN, SEGMENT, QUANTIFY, DVC, STRAIN, RESIDUAL, PARTICLES,
                             LITHIATION, *NEUTRON_STAGES, NEUTRON_SPECTRA)


def stage_by_name(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(name)
