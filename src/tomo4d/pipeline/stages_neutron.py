"""The ``neutron`` stages: lithium concentration from neutron attenuation volumes, joint X-ray/neutron phases.

* ``neutron`` (per step): the attenuation volume ``inputs.neutron[step]`` (1/cm; its field is the
  X-ray series' field, its voxel a whole number ``b`` of series voxels, :mod:`.inputs_neutron`).
  With ``neutron.li_free_mu_per_cm``, the step's phase labels (``inputs.labels``, else the ``segment``
  stage's) give the Li-free attenuation on the neutron grid (:func:`tomo4d.neutron.attenuation_from_phases`:
  phase fractions of each ``b``-block, blurred by ``neutron.psf_sigma_nm``), and
  ``c = (mu - mu_Li-free) / (N_A sigma_Li)`` (:func:`tomo4d.neutron.theoretical_lithium_calibration`
  at ``wavelength_angstrom`` and ``li6_fraction``; :func:`tomo4d.neutron.lithium_concentration`)
  -> ``volumes/li_concentration_<step>.ome.zarr`` (mol/L on the neutron grid).  With
  ``neutron.layer_phases``, the mean over the layer's z slabs widened by ``layer_margin_nm``
  (:func:`tomo4d.neutron.layer_lithium`) -> ``tables/neutron_layer_<step>``.  With ``joint_phases``,
  the X-ray scan binned onto the neutron grid (:func:`tomo4d.neutron.bin_to_grid`) and the
  attenuation as a joint histogram with a Gaussian mixture (:func:`tomo4d.neutron.segment_joint_phases`; the
  number of phases ``joint_phases`` given, or "auto": chosen by BIC among 1..``joint_max_phases``)
  -> ``tables/neutron_joint_<step>`` (per phase: mean X-ray grey, mean mu, voxel fraction) and
  ``tables/neutron_joint_hist_<step>.npz`` (counts, edges, phase means and covariances: the figure; the
  BIC curve: ``criterion``, ``candidates``, ``criterion_values``).
  With ``neutron.registration`` (rigid/affine/translation), the step's X-ray scan (as the joint phases read it)
  registered onto the neutron volume (:func:`tomo4d.register.register_modalities`, fixed = neutron, its
  voxel box and ``psf_sigma_nm`` modelled; start: the shared first corner) -> ``tables/neutron_registration_
  <step>`` (rotation, translation, their sigmas, the fitted blur, the residual, and ``xray_input``: which X-ray
  side was used: ``label files`` (``inputs.labels``), ``segment labels`` (the segment stage's phase map of
  that scan) or ``grey values``).  The transform is reported, not applied.
* ``neutron_layer`` (once, cheap): the layer rows of every step in one table, with the truth
  (``truth.li_concentration_mol_l``) and the error beside -> ``tables/neutron_layer``.

Both on the analysis series and grid (:mod:`.series`): with ``enhance.apply_to_series`` the labels (label files
repeated x2 per axis, or the segment stage's) and the X-ray scan of the joint phases are the enhanced grid's, and
a neutron voxel is ``2 b`` of their voxels per axis.  (With ``align`` the joint phases read the scans as given:
the neutron volumes are not aligned either.)

Wavelength-resolved data (Bragg edges, the 6Li fraction from time-of-flight spectra:
:func:`tomo4d.neutron.fit_bragg_edge`, :func:`tomo4d.neutron.fit_li6_fraction`) would plug in before
``neutron``: a fitted 6Li fraction per step would replace ``neutron.li6_fraction`` in its calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .series import analysis_enhanced, analysis_labels, analysis_scale, series_path, series_voxel_override
from .stage import Stage, rel, section_options
from .stage_io import read_table_of, read_volume, save_float_volume, write_tables

__all__ = ["NEUTRON", "NEUTRON_LAYER", "NEUTRON_STAGES", "NeutronStep"]


@dataclass(frozen=True, eq=False)
class NeutronStep:
    """One step of the neutron stage: Li map (mol/L, or None), layer row (or None), joint results (or None)."""

    li_mol_l: np.ndarray | None
    layer: dict | None
    joint: dict | None
    hist: dict | None
    voxel_size_nm: tuple
    registration: dict | None = None


def _labels(ctx, step: int) -> np.ndarray:
    inp = ctx.inputs
    if inp.labels:
        return analysis_labels(ctx, inp.labels[step])  # on the analysis grid, as the segment stage's
    return ctx.load("segment", step)


def _common(mu: np.ndarray, fine_shape, b) -> tuple[tuple[int, ...], np.ndarray]:
    """The neutron voxels the X-ray field fills with whole blocks (the fields agree within one neutron voxel)."""
    n = tuple(min(m, s // f) for m, s, f in zip(mu.shape, fine_shape, b))
    return n, mu[: n[0], : n[1], : n[2]]


def _lithium(ctx, step, mu, b, noise):
    from ..neutron import (
        attenuation_from_phases,
        layer_lithium,
        lithium_concentration,
        theoretical_lithium_calibration,
    )

    sec, inp = ctx.experiment.neutron, ctx.inputs
    labels = _labels(ctx, step)
    n, mu = _common(mu, labels.shape, b)
    labels = labels[: n[0] * b[0], : n[1] * b[1], : n[2] * b[2]]
    present = sorted(int(v) for v in np.unique(labels))
    missing = [v for v in present if v not in sec.li_free_mu_per_cm]
    if missing:
        raise InputError(f"neutron.li_free_mu_per_cm has no value for phase label(s) {missing} present in the labels "
                         f"of {inp.names[step]} (labels present: {present}); give every phase its Li-free attenuation")
    vs = np.asarray(inp.neutron_voxel_size_nm, float)
    psf_px = sec.psf_sigma_nm / float(vs.mean())
    matrix = attenuation_from_phases(labels, sec.li_free_mu_per_cm, bin_factor=b, psf_sigma_px=psf_px)
    cal = theoretical_lithium_calibration(wavelength_angstrom=sec.wavelength_angstrom, li6_fraction=sec.li6_fraction)
    li = lithium_concentration(mu, cal, matrix_mu_per_cm=matrix, mu_sigma_per_cm=noise)
    row = None
    if sec.layer_phases is not None:
        layer = layer_lithium(li, labels, sec.layer_phases, bin_factor=b, fill_threshold=sec.fill_threshold,
                              margin_px=sec.margin_nm() / float(vs[0]))
        row = {"step": inp.names[step], "time_s": inp.time_s[step], "li_mol_l": layer.concentration_mol_l,
               "li_sigma_mol_l": layer.sigma_mol_l, "n_voxels": layer.n_voxels,
               "n_slabs": int(np.count_nonzero(layer.rows)), "first_slab": int(np.flatnonzero(layer.rows)[0]),
               "noise_sigma_per_cm": noise, "li_per_cm_per_mol_l": cal.slope_cm2_per_mol * 1e-3}
    return li.concentration_mol_per_cm3 * np.float32(1e3), row


def _joint(ctx, step, mu, b):
    from ..neutron import bin_to_grid, joint_histogram, segment_joint_phases

    sec, inp = ctx.experiment.neutron, ctx.inputs
    # the enhanced series with apply_to_series, else the scan itself (the neutron volume is not aligned either)
    xray = read_volume(series_path(ctx, step, before="align"), series_voxel_override(ctx.experiment)).numpy()
    n, mu = _common(mu, xray.shape, b)
    xb = bin_to_grid(xray, b)[: n[0], : n[1], : n[2]]
    hist = joint_histogram(xb, mu, bins=sec.joint_bins)
    k = None if sec.joint_phases == "auto" else int(sec.joint_phases)
    ph = segment_joint_phases(xb, mu, n_phases=k, max_phases=sec.joint_max_phases, seed=sec.seed)
    cols = ph.to_columns()
    table = {"step": np.asarray([inp.names[step]] * len(cols["phase"])), "phase": cols["phase"],
             "mean_xray_grey": cols["mean_a"], "mean_mu_per_cm": cols["mean_b"], "weight": cols["weight"],
             "voxel_fraction": cols["voxel_fraction"]}
    saved = {"counts": hist.counts, "a_edges": hist.a_edges, "b_edges": hist.b_edges, "means": ph.means,
             "covariances": ph.covariances, "weights": ph.weights, "criterion": np.asarray(ph.criterion),
             "candidates": np.asarray(ph.candidates, np.int64), "criterion_values": np.asarray(ph.criterion_values)}
    return table, saved


def _xray_labels(ctx, step):
    """The X-ray phase map of ``step`` on the analysis grid and where it came from, or ``(None, "grey values")``."""
    exp = ctx.experiment
    if exp.inputs.labels:
        return analysis_labels(ctx, ctx.inputs.labels[step]), "label files"
    if exp.segment is not None and exp.align is None:  # with align the segment labels lie on the aligned grid
        return ctx.load("segment", step), "segment labels"
    return None, "grey values"


def _register(ctx, step, mu, b):
    """The X-ray scan of ``step`` registered onto its neutron volume (register_modalities): one table row."""
    from ..register import register_modalities

    sec, inp = ctx.experiment.neutron, ctx.inputs
    xray = read_volume(series_path(ctx, step, before="align"), series_voxel_override(ctx.experiment)).numpy()
    labels, source = _xray_labels(ctx, step)
    vn = tuple(float(v) for v in inp.neutron_voxel_size_nm)
    vx = tuple(v / f for v, f in zip(vn, b))
    reg = register_modalities(mu, xray, fixed_voxel_size_nm=vn, moving_voxel_size_nm=vx, transform=sec.registration,
                              fixed_psf_sigma_nm=sec.psf_sigma_nm if sec.psf_sigma_nm > 0 else None,
                              moving_psf_sigma_nm=0.0 if labels is not None else sec.registration_xray_psf_nm,
                              moving_labels=labels, search_px=sec.registration_search_px)
    row = {"step": inp.names[step], "transform": sec.registration, "xray_input": source}
    for i, ax in enumerate("zyx"):
        row[f"rotation_{ax}_deg"] = float(reg.rotation_deg[i])
        row[f"rotation_sigma_{ax}_deg"] = float(reg.rotation_sigma_deg[i])
    for i, ax in enumerate("zyx"):
        row[f"translation_{ax}_nm"] = float(reg.translation_nm[i])
        row[f"translation_sigma_{ax}_nm"] = float(reg.translation_sigma_nm[i])
    row.update(blur_sigma_nm=float(reg.blur_sigma_nm), residual_per_cm=float(reg.residual),
               n_voxels=int(reg.n_voxels), n_iterations=int(reg.iterations))
    return row


def _neutron_step(ctx, step, previous):
    from ..neutron import estimate_noise_per_cm
    from .inputs_neutron import neutron_bin_factor

    sec, inp = ctx.experiment.neutron, ctx.inputs
    mu = read_volume(inp.neutron[step], ctx.experiment.inputs.neutron_voxel_size_nm).numpy().astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(mu)))
    if bad:
        raise InputError(f"inputs.neutron[{step}] ({inp.names[step]}, {str(inp.neutron[step])!r}) has {bad} NaN or "
                         "infinite voxels; fill them (e.g. with the surrounding attenuation) first")
    scale = analysis_scale(ctx.experiment)  # analysis voxels per neutron voxel: the series' bin factor x scale
    b = tuple(scale * v for v in neutron_bin_factor(inp.neutron_voxel_size_nm, inp.voxel_size_nm))
    noise = sec.noise_sigma_per_cm if sec.noise_sigma_per_cm is not None else estimate_noise_per_cm(mu)
    li = row = joint = hist = None
    if sec.li_free_mu_per_cm is not None:
        li, row = _lithium(ctx, step, mu, b, noise)
    if sec.joint_enabled():
        joint, hist = _joint(ctx, step, mu, b)
    reg = _register(ctx, step, mu, b) if sec.registration != "none" else None
    return NeutronStep(li, row, joint, hist, inp.neutron_voxel_size_nm, reg)


def _hist_path(out: Path, name: str) -> Path:
    return out / "tables" / f"neutron_joint_hist_{name}.npz"


def _neutron_save(result, out, ctx, step):
    from ..io import atomic_output

    name, paths = ctx.inputs.names[step], ()
    if result.li_mol_l is not None:
        paths += (save_float_volume(result.li_mol_l, out, f"li_concentration_{name}", result.voxel_size_nm,
                                    f"Li concentration {name} (mol/L)"),)
    if result.layer is not None:
        paths += write_tables({k: np.asarray([v]) for k, v in result.layer.items()}, out, f"neutron_layer_{name}")
    if result.joint is not None:
        paths += write_tables(result.joint, out, f"neutron_joint_{name}")
        with atomic_output(_hist_path(out, name), overwrite=True) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **result.hist)
        paths += (rel(out, _hist_path(out, name)),)
    if result.registration is not None:
        paths += write_tables({k: np.asarray([v]) for k, v in result.registration.items()}, out,
                              f"neutron_registration_{name}")
    return paths


def _neutron_files(inp, step) -> dict:
    files = {f"inputs.neutron[{step}]": inp.neutron[step]}
    if inp.labels:
        files[f"inputs.labels[{step}]"] = inp.labels[step]
    files[f"inputs.series[{step}]"] = inp.series[step]
    return files


def _uses_segment(exp) -> bool:
    if exp.inputs.labels is not None:
        return False
    registers = exp.neutron.registration != "none" and exp.segment is not None and exp.align is None
    return exp.neutron.li_free_mu_per_cm is not None or registers


def _reads(exp, need: str) -> bool:
    """The segment stage's labels for the Li concentration without label files; the series for the joint phases."""
    if need == "segment":
        return _uses_segment(exp)
    series = exp.neutron.joint_enabled() or exp.neutron.registration != "none"
    return series and analysis_enhanced(exp)  # need == "enhance"


NEUTRON = Stage(
    name="neutron", needs=("enhance", "segment"), per_step=True,
    description="Li concentration from neutron attenuation, layer mean, joint X-ray/neutron phases per step",
    outputs="volumes/li_concentration_<step>.ome.zarr, tables/neutron_layer_<step>, tables/neutron_joint_<step>, "
            "tables/neutron_registration_<step>",
    enabled=lambda exp, inp: exp.neutron is not None and bool(inp.neutron),
    options=lambda exp: {**section_options(exp, "neutron"), "inputs.labels": exp.inputs.labels, "inputs.names": exp.inputs.names,
                         "inputs.time_s": exp.inputs.time_s, "inputs.voxel_size_nm": exp.inputs.voxel_size_nm,
                         "inputs.neutron_voxel_size_nm": exp.inputs.neutron_voxel_size_nm,
                         "analysis_scale": analysis_scale(exp)},
    input_files=_neutron_files, steps=lambda ctx: tuple(range(ctx.inputs.n_steps)),
    run_step=_neutron_step, save_step=_neutron_save,
    load_step=lambda out, ctx, step: read_table_of(out, f"neutron_layer_{ctx.inputs.names[step]}"),
    reads=_reads)


# -- neutron_layer --------------------------------------------------------------------------------

def _layer_run(ctx):
    inp, exp = ctx.inputs, ctx.experiment
    rows = [ctx.load("neutron", i) for i in range(inp.n_steps)]
    table = {k: np.concatenate([np.asarray(r[k]) for r in rows]) for k in rows[0]}
    truth = exp.truth.li_concentration_mol_l if exp.truth is not None else None
    if truth is not None:
        want = np.asarray(truth, float)
        table["true_li_mol_l"] = want
        with np.errstate(divide="ignore", invalid="ignore"):
            table["error_percent"] = np.where(want != 0, 100.0 * (table["li_mol_l"] / want - 1.0), np.nan)
    return table


NEUTRON_LAYER = Stage(
    name="neutron_layer", needs=("neutron",), per_step=False,
    description="layer Li concentration of every step (with truth when given)", outputs="tables/neutron_layer",
    enabled=lambda exp, inp: exp.neutron is not None and bool(inp.neutron) and exp.neutron.layer_phases is not None,
    options=lambda exp: {"truth.li_concentration_mol_l": exp.truth.li_concentration_mol_l if exp.truth else None},
    input_files=lambda inp, step: {}, run=_layer_run,
    save=lambda table, out: write_tables(table, out, "neutron_layer"),
    load=lambda out: read_table_of(out, "neutron_layer"))

#: the neutron stages, in workflow order
NEUTRON_STAGES: tuple[Stage, ...] = (NEUTRON, NEUTRON_LAYER)
