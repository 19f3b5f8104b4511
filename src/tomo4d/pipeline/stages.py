"""The stages: ``register_pair``, ``train``, ``enhance``, ``enhance_repeat``, ``enhance_quality`` (first;
:mod:`.stages_enhance`), ``align`` (:mod:`.stages_align`), ``segment`` and ``particles`` (:mod:`.stages_segment`),
``quantify`` (:mod:`.stages_quantify`), ``dvc`` (per step, here), ``strain`` (:mod:`.stages_strain`), ``residual``
(:mod:`.stages_residual`), ``lithiation``
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

from .series import analysis_voxel_size_nm, read_series, reads_series, series_path
from .stage import Stage, rel, section_options
from .stages_align import ALIGN
from .stages_dvc_checks import flag_textureless, interface_motions, t0_noise, weight_follows_noise
from .stages_enhance import ENHANCE_STAGES
from .stages_hallucination import ENHANCE_HALLUCINATION
from .stages_lithiation import LITHIATION
from .stages_neutron import NEUTRON_STAGES
from .stages_neutron_spectra import NEUTRON_SPECTRA
from .stages_quantify import QUANTIFY
from .stages_reconstruct import RECONSTRUCT
from .stages_residual import RESIDUAL
from .stages_segment import PARTICLES, SEGMENT
from .stages_strain import STRAIN
from .vtk_export import write_dvc_vtk

__all__ = ["STAGES", "stage_by_name"]

log = logging.getLogger(__name__)


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


def _mask_axes(sec, band, shape):
    """The pair's mask as per-axis profiles (z, y, x), the mask their outer product; None: the whole volume.  The
    electrode ``band``'s rows (px; ``dvc.mask: electrode``, ``above_collector``: from its bottom up) and, for the
    global method on deconvolved scans, the faces' margins left out (:func:`tomo4d.dvc.interior_axes`: the z faces
    only outside the band)."""
    deconvolved = bool(sec.deconvolve_iterations) and sec.method == "global"
    if band is None and not deconvolved:
        return None
    axes = [np.ones(n, bool) for n in shape]
    if band is not None:
        z = np.arange(shape[0])
        axes[0] = (z >= band[0]) & (z < (band[1] if sec.mask == "electrode" else np.inf))
    if deconvolved:  # the deconvolution's faces are static in every scan: out of the match, the electrode kept
        from ..dvc import interior_axes

        axes = [a & k for a, k in zip(axes, interior_axes(shape, sec.deconvolve_psf_sigma_px, band=band))]
    return axes


def _lazy_mask(axes):
    """The mask of :func:`_mask_axes`, lazily: a node batch (or a cluster task) materialises only its box."""
    import dask.array as da

    kz, ky, kx = (da.from_array(a, chunks=64) for a in axes)
    return kz[:, None, None] & ky[None, :, None] & kx[None, None, :]


def _t0_band(ctx):
    """(lo, hi) px of the T0 electrode (:func:`_electrode_band`), read once per dvc step; None without a mask."""
    if ctx.experiment.dvc.mask == "none":
        return None
    return _electrode_band(ctx, read_series(ctx, 0).shape)


def _noise_band(sec, t0_band):
    """The z band (px) of T0 the route's noise ratio is taken over: the electrode band under the pair's mask
    (``mask: above_collector``: from the collector up); None without a mask: the whole scan."""
    if t0_band is None:
        return None
    return t0_band[0], (t0_band[1] if sec.mask == "electrode" else np.inf)


def _dvc_step(ctx, step, previous):
    sec = ctx.experiment.dvc
    usable = previous is not None and previous.usable.any()
    noise = None  # T0's noise, estimated once for the route's weight and the textureless flag
    t0_band = _t0_band(ctx) if sec.method == "global" else None
    if sec.method == "global" and (sec.flag_textureless or weight_follows_noise(sec)):
        noise = t0_noise(ctx, _noise_band(sec, t0_band))
    if sec.incremental and step > 1 and usable:  # reference updating: T(n-1) -> Tn composed onto T0 -> T(n-1)
        from ..dvc import compose_fields

        increment = _dvc_pair(ctx, step - 1, step, None, frame=previous, noise=noise, t0_band=t0_band)
        # not refined by T0 -> Tn from there: at the demo's large steps the direct criterion pulls the field off
        # (T2 median error 1.09 against 0.86 px composed; RESULTS.md session 17)
        field = compose_fields(previous, increment)
        # the pair's own notes (solver levels, convergence, interface targets and reached values) stay readable
        field = field.with_(notes={**field.notes, "increment": increment.notes})
    else:
        field = _dvc_pair(ctx, 0, step, previous if sec.from_previous and usable else None, noise=noise,
                           t0_band=t0_band)
    if sec.method == "global" and sec.flag_textureless:  # T0's windows of pure noise are not measurements
        field = flag_textureless(ctx, field, noise)
    # the analysis grid's voxel: the pairs are correlated on arrays (deconvolved, streamed), which carry none (the
    # demo's fields read 1 nm before session 33)
    return field.with_(voxel_size_nm=analysis_voxel_size_nm(ctx))


def _dvc_pair(ctx, ref_step, step, initial, frame=None, noise=None, t0_band=None):
    """The field ``ref_step -> step`` by the section's route, started from ``initial`` (or the section's start);
    ``frame``: the T0 -> ref_step field that moves the electrode mask into ``ref_step``; ``noise``: T0's
    (:func:`tomo4d.pipeline.stages_dvc_checks.t0_noise`), for the global route's weight; ``t0_band``: the T0
    electrode (:func:`_t0_band`), whose thickness the global field's notes record."""
    from ..dvc import correlate_global

    sec = ctx.experiment.dvc
    ref, deformed = read_series(ctx, ref_step), read_series(ctx, step)  # the analysis series, lazily
    band = None  # the pair's electrode band: T0's, or with ``frame`` T0's moved into ref_step
    if sec.mask != "none":
        band = t0_band if frame is None and t0_band is not None else _electrode_band(ctx, ref.shape, frame)
    axes = _mask_axes(sec, band, ref.shape)
    mask = None if axes is None else _lazy_mask(axes)
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
        return _local(ref_d, def_d, sec, initial=initial, phi0=phi0, search_radius_px=radius, mask=mask,
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
        notes = {}
        if t0_band is not None:  # the resolution the report's split caution follows (RESULTS.md sessions 36-41)
            lo, hi = t0_band
            notes["electrode_node_spacings"] = round((hi - lo) / sec.node_spacing, 4)
            if sec.deconvolve_iterations:
                notes["electrode_psf_sigmas"] = round((hi - lo) / sec.deconvolve_psf_sigma_px, 4)
        ratio = None if noise is None else noise.ratio  # the Laplacian's weight from T0's noise (every pair's)
        if ratio is not None:
            notes["route_noise_ratio"] = round(ratio, 6)
        opts = sec.global_dvc_options(ratio)
        field = correlate_global(ref, deformed, initial=initial, phi0=phi0, mask=mask,
                                 interfaces=interface_motions(ctx, ref_step, step) if sec.interfaces else None,
                                 node_plane_z_px=_node_plane(sec, band, axes, opts), options=opts)
        return field.with_(notes={**field.notes, **notes}) if notes else field
    radius = 0 if initial is not None or phi0 is not None else sec.search_radius_px
    return _local(ref, deformed, sec, initial=initial, phi0=phi0, search_radius_px=radius, mask=mask,
                  **sec.correlate_kwargs())


def _node_plane(sec, band, axes, opts):
    """``node_plane_z_px`` of a global pair with the electrode ``band`` (px of its reference, or None) and the mask
    ``axes`` (:func:`_mask_axes`): ``dvc.node_grid: cover`` puts the rows where the field covers most of the band's
    collector half under the mask.  The collector half: next to the rigid collector the grid's phase moved the
    collector side by up to 0.03 (session 39); with ``mask: electrode`` the whole band's two faces would trade their
    strips and leave the phase to rounding.  Without a measured collector interface, centred (the mask's own check
    then says what is missing); without a separator, the rows by the collector alone."""
    if band is None or sec.node_grid != "cover" or not np.isfinite(band[0]):
        return None
    from ..dvc import covering_node_plane_px

    lo, hi = float(band[0]), float(band[1])
    top = (lo + hi) / 2 if np.isfinite(hi) and hi > lo else lo + len(axes[0])
    return covering_node_plane_px(axes, opts.node_spacing, cover_z_px=(lo, top), mask_fraction=opts.mask_fraction)


def _local(ref, deformed, sec, *, initial, node_spacing, half_window, **kw):
    """Local DVC of a pair: from ``initial`` one level at the section's spacing; without it the section's coarse
    levels first (``dvc.pyramid``, :func:`tomo4d.dvc.correlate_pyramid`), when there are any for this volume."""
    from ..dvc import correlate, correlate_pyramid

    coarse = sec.pyramid_levels(ref.shape) if initial is None else []
    if not coarse:
        return correlate(ref, deformed, initial=initial, node_spacing=node_spacing, half_window=half_window, **kw)
    return correlate_pyramid(ref, deformed, pyramid=[*coarse, node_spacing],
                             half_windows=[*coarse, half_window or node_spacing], **kw)


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
    options=lambda exp: {**section_options(exp, "dvc"), "inputs.names": exp.inputs.names},
    input_files=lambda inp, step: {"T0": inp.series[0], inp.names[step]: inp.series[step]},
    steps=lambda ctx: tuple(range(1, ctx.inputs.n_steps)),
    run_step=_dvc_step, save_step=_dvc_save, load_step=_dvc_load,
    reads=lambda exp, need: reads_series(exp, need) if need != "quantify" else exp.dvc.mask != "none")


#: every stage, in workflow order
STAGES: tuple[Stage, ...] = (RECONSTRUCT, *ENHANCE_STAGES, ENHANCE_HALLUCINATION, ALIGN, SEGMENT, QUANTIFY, DVC, STRAIN, RESIDUAL, PARTICLES,
                             LITHIATION, *NEUTRON_STAGES, NEUTRON_SPECTRA)


def stage_by_name(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(name)
