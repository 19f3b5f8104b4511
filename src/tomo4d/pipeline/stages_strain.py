"""The ``strain`` stage: finite strain of every DVC field, its summary table and, with labels, the regional statistics
of the T0 anode's layers (with ``truth.displacement``, the truth's beside them; see :mod:`.stages` for the workflow)."""

from __future__ import annotations

import logging

import numpy as np

from .series import analysis_scale, analysis_voxel_size_nm
from .stage import Stage, rel
from .stage_io import write_tables
from .stages_quantify import QUANTIFY
from .vtk_export import write_strain_vtk

__all__ = ["STRAIN"]

log = logging.getLogger(__name__)


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
                        "in tables/strain_summary (beyond_validated_range)%s", inp.names[i],
                        "" if ctx.experiment.dvc.method == "global" else "; at such strains local DVC read the "
                        "phantom 1.1-2.6 px off, dvc.method: global (the demo's route) 0.2-0.9 px "
                        "(benchmarks/RESULTS.md)")
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
    paths += write_tables(summary, out, "strain_summary")
    if regional is not None:
        paths += write_tables(regional, out, "regional_strain")
    if regional_truth is not None:
        paths += write_tables(regional_truth, out, "regional_strain_truth")
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
