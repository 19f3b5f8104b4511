"""Demo stage ``quantify``: thickness, phase volumes, particles, tracks, regional strain and lithiation
modes of the phantom's in-situ series, compared with its ground truth.

Inputs (from earlier stages): ``ctx.store["experiment"]`` (phantom), and when present
``ctx.store["segmentation"]`` / ``ctx.store["particles"]`` (the segment stage's T0 result) and
``ctx.store["dvc_fields"]`` (the dvc stage's measured fields T0 -> Tn on the LQ grid, mapped here
onto the HQ grid).  The segment stage segments T0 only, so the per-step phase and particle labels
are the phantom's truth (HQ grid); tracking, regional strain and the residual maps of the
lithiation modes use the measured fields when the dvc stage ran, else the truth sampled on a
DVC-like node grid.  Tables go to ``quantify/*.csv`` and ``*.parquet``.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

NODE_SPACING = 4


def _truth_fields(exp):
    from ..dvc import DisplacementField

    t = exp.truth
    g = t.hq_grid
    n = g.shape
    axes = [np.arange(0, s, NODE_SPACING) for s in n]
    pos = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(float)
    fields = [None]
    for s in range(1, t.n_steps):
        u = t.displacement(s, np.asarray(g.origin_nm) + pos * g.voxel_size_nm) / g.voxel_size_nm
        phi = np.tile(np.eye(4), (len(pos), 1, 1))
        phi[:, :3, 3] = u
        fields.append(DisplacementField(pos, phi, np.zeros(len(pos), np.int8), grid_shape=tuple(len(a) for a in axes),
                                        node_spacing_px=(NODE_SPACING,) * 3, voxel_size_nm=(g.voxel_size_nm,) * 3))
    return fields


def _lq_field_on_hq(field, truth):
    """A field measured on the LQ grid (px) as a field on the HQ grid (px); both grids are aligned with
    the sample frame, so positions map affinely and translations scale by the voxel-size ratio."""
    from ..dvc import DisplacementField

    hq, lq = truth.hq_grid, truth.lq_grid
    k = lq.voxel_size_nm / hq.voxel_size_nm
    pos_nm = np.asarray(lq.origin_nm) + field.positions_zyx_px * lq.voxel_size_nm
    pos = (pos_nm - np.asarray(hq.origin_nm)) / hq.voxel_size_nm
    phi = field.phi.copy()
    phi[:, :3, 3] *= k
    return DisplacementField(pos, phi, field.status, grid_shape=field.grid_shape,
                             node_spacing_px=tuple(int(round(s * k)) for s in field.node_spacing_px),
                             half_window_px=tuple(int(round(h * k)) for h in field.half_window_px),
                             voxel_size_nm=(hq.voxel_size_nm,) * 3,
                             notes={"from": "dvc stage, LQ grid", "volume_shape_zyx": list(hq.shape)})


def stage_quantify(ctx) -> str:
    from .. import quantify as Q
    from ..dvc import strain_field
    from ..quantify import plots

    exp = ctx.store.get("experiment")
    rep = ctx.report
    if exp is None:
        rep.section("Quantification", "Skipped: no phantom experiment (ctx.store['experiment']); run the "
                                      "'phantom' stage first.")
        return "skipped (no experiment)"
    t = exp.truth
    vs = t.hq_grid.voxel_size_nm
    names = t.step_names
    labels = [t.labels(s) for s in range(t.n_steps)]
    parts = [t.particle_labels(s) for s in range(t.n_steps)]
    out = ctx.path("quantify", "x").parent

    def save(result, name):
        for suf in (".csv", ".parquet"):
            Q.write_table(result, out / f"{name}{suf}", overwrite=True)

    measured = ctx.store.get("dvc_fields")
    if measured is not None and len(measured) == t.n_steps and all(f is not None for f in measured[1:]):
        fields = [None] + [_lq_field_on_hq(f, t) for f in measured[1:]]
        field_note = ("the fields T0->Tn are the dvc stage's measurement on the LQ series, mapped onto the HQ "
                      "grid (used for tracking, regional strain and residual maps)")
        field_src = "measured"
    else:
        fields = _truth_fields(exp)
        field_note = (f"the fields T0->Tn are the truth sampled on a node grid of {NODE_SPACING} voxels (the dvc "
                      "stage did not run)")
        field_src = "truth"
    rep.section("Quantification",
                "Phantom in-situ series on the HQ grid. Per-step phase and particle labels are the phantom's "
                f"truth (the segment stage segments T0 only); {field_note}. Tables (CSV + Parquet, units in the "
                "column names) are in quantify/.")
    # thickness and phases
    th = Q.thickness_series(labels, voxel_size_nm=vs, names=names)
    ph = Q.phase_series(labels, voxel_size_nm=vs, names=names)
    rnl_true = np.asarray(t.non_lithiated_si_volume_nm3) / t.non_lithiated_si_volume_nm3[0]
    save(th, "thickness")
    save(ph, "phases")
    rows = [(n, soc, m, s, tr / 1e3, 100 * e, r, rt) for n, soc, m, s, tr, e, r, rt in
            zip(names, t.state_of_charge, th.mean_um, th.std_um, t.thickness_nm, th.expansion, ph.rnl, rnl_true)]
    seg = ctx.store.get("segmentation")
    seg_note = ""
    if seg is not None and tuple(seg.shape) == labels[0].shape:
        th_seg = Q.electrode_thickness(seg.numpy(), voxel_size_nm=vs)
        seg_note = f" T0 thickness from the segment stage's segmentation: {th_seg.mean_um:.3f} um."
    rep.table(["step", "SoC", "thickness (um)", "std (um)", "truth (um)", "expansion (%)", "RNL", "RNL truth"], rows,
              caption="Anode thickness (collector/separator interfaces per column) and relative non-lithiated Si "
                      "volume." + seg_note)
    rep.figure(plots.thickness_figure(th, truth_um=np.asarray(t.thickness_nm) / 1e3), "Thickness vs time")
    rep.figure(plots.rnl_figure(ph, truth=rnl_true), "Relative non-lithiated Si volume vs time")
    # particles of T0: segmented when available, else truth
    segp = ctx.store.get("particles")
    p_lab = segp.labels if segp is not None and segp.labels.shape == parts[0].shape else parts[0]
    table = Q.particle_properties(p_lab, voxel_size_nm=vs)
    dist = Q.size_distribution(table, bins=10)
    cracks = Q.detect_cracks(parts[0], voxel_size_nm=vs)
    save(table, "particles_T0")
    true_cracked = t.particle_cracked[cracks.label - 1].astype(bool)
    s = table.summary()
    rep.table(["particles", "touching border", "median diameter (um)", "mean sphericity", "D_v50 (um)",
               "pre-cracked found / true"],
              [(s["n_particles"], s["n_touching_border"], s["median_equivalent_diameter_um"], s["mean_sphericity"],
                dist.d50_um, f"{int(cracks.cracked.sum())} / {int(true_cracked.sum())} "
                             f"({int((cracks.cracked & true_cracked).sum())} correct)")],
              caption=f"T0 particles ({'segment stage' if p_lab is not parts[0] else 'truth labels'}); cracks "
                      "from the truth T0 particle labels.")
    rep.figure(plots.size_distribution_figure(dist), "Equivalent-diameter distribution at T0 (interior particles)")
    # tracking (labels permuted per step: the tracker never sees the truth ids)
    rng = np.random.default_rng(ctx.seed)
    perms = [np.concatenate([[0], rng.permutation(int(p.max())) + 1]) for p in parts]
    tr = Q.track_particles([pm[p] for pm, p in zip(perms, parts)], displacement=fields[1:], voxel_size_nm=vs,
                           names=names)
    inv = [np.argsort(pm) for pm in perms]
    t0 = tr.first_step == 0
    ids = np.stack([inv[k][tr.label[t0, k]] for k in range(len(parts))], 1)
    present = set.intersection(*[set(np.unique(p).tolist()) - {0} for p in parts])
    correct = {int(r[0]) for r in ids if np.all(r == r[0]) and r[0] > 0} & present
    link_rate = len(correct) / max(len(present), 1)
    zc_um = float(np.nanmean(th.steps[0].collector_z_nm)) / 1e3
    save(tr.to_columns(collector_z_um=zc_um), "tracks")
    rep.figure(plots.tracks_figure(tr, collector_z_um=zc_um),
               f"Tracks: {len(correct)}/{len(present)} particles present at every step linked correctly "
               f"({100 * link_rate:.0f} %)")
    # regional strain
    strains = [strain_field(f) for f in fields[1:]]
    reg = Q.regional_strain_series(strains, collector_z_px=float(np.nanmean(th.steps[0].collector_z_nm)) / vs,
                                   separator_z_px=float(np.nanmean(th.steps[0].separator_z_nm)) / vs,
                                   names=names[1:])
    save(reg, "regional_strain")
    rep.table(["step"] + [f"{r} ln U_zz (%)" for r in reg.region_names]
              + [f"{r} det F - 1 (%)" for r in reg.region_names],
              [(n, *(100 * reg.value(r, "hencky_zz")[i] for r in reg.region_names),
                *(100 * reg.value(r, "volumetric")[i] for r in reg.region_names))
               for i, n in enumerate(reg.step_names)],
              caption="Mean finite strain (Hencky axial ln U_zz and volumetric det F - 1) of the collector-side "
                      "and separator-side halves of the T0 anode.")
    rep.figure(plots.regional_strain_figure(reg, components=("hencky_zz", "volumetric")),
               "Finite strain by region vs time (Hencky axial, volumetric)")
    rep.figure(plots.strain_histogram_figure(reg), "Axial strain histograms at the last step")
    # lithiation modes from residual maps (HQ series, T_n pulled back by the field)
    ref = exp.series_hq[0].numpy()
    res = Q.residual_series(ref, [v.numpy() for v in exp.series_hq], fields, sigma_px=1.0)
    modes = Q.lithiation_modes(parts[0], res, voxel_size_nm=vs, names=names)
    save(modes, "lithiation_modes")
    truth_mode = t.particle_mode[modes.label - 1]
    k = modes.mode > 0
    acc = float(np.mean(modes.mode[k] == truth_mode[k])) if k.any() else float("nan")
    rep.table(["classified", "core-shell", "network", "accuracy vs truth", "core-shell share", "truth share"],
              [(int(k.sum()), int((modes.mode == 1).sum()), int((modes.mode == 2).sum()), acc,
                modes.core_shell_share, float(np.mean(truth_mode[k] == 1)) if k.any() else float("nan"))],
              caption=f"Lithiation modes from residual maps (HQ T_n pulled back onto T0 by the {field_src} field, "
                      "blur 1 voxel; profile score: residual of the outer half vs the core of each particle) "
                      "inside T0 particles not cut by the border.")
    rep.figure(plots.modes_figure(modes), "Shell score per particle vs time and core-shell share")
    return (f"thickness T0 {th.mean_um[0]:.2f} -> {th.mean_um[-1]:.2f} um (truth {t.thickness_nm[-1] / 1e3:.2f}); "
            f"RNL {ph.rnl[-1]:.3f} (truth {rnl_true[-1]:.3f}); tracks {100 * link_rate:.0f} % linked; "
            f"ln U_zz sep/col {reg.value(reg.region_names[-1])[-1]:.3f}/{reg.value(reg.region_names[0])[-1]:.3f}; "
            f"modes {acc:.2f} correct; {field_src} fields")
