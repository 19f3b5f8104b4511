"""Demo stage ``dvc``: local DVC T0 -> Tn on the phantom's in-situ series, strain maps and strain vs time.

Each step is correlated directly against T0 (no accumulation of increment errors), initialised by
the previous step's field (the first step by an integer search), under the ZNSSD grey-level model
(lithiated silicon loses X-ray attenuation between the scans).  The anode is split at mid-thickness
into a collector side and a separator side; their mean finite strain (Hencky axial ln U_zz and
volumetric det F - 1) is compared with the phantom's exact truth in the same measures at the same
nodes.  The route does not yet meet the accuracy the silicon-anode study needs at 40-60 %
expansion (see benchmarks/RESULTS.md, "DVC at battery expansions"): the report says so.
"""

from __future__ import annotations

import numpy as np


def _regions(exp, pos_nm):
    t = exp.truth
    zc = t.z_collector_nm
    t0 = t.thickness_nm[0]
    z = pos_nm[..., 0]
    return {"collector side": (z >= zc) & (z < zc + t0 / 2), "separator side": (z >= zc + t0 / 2) & (z < zc + t0)}


def stage_dvc(ctx) -> str:
    from matplotlib.figure import Figure

    from ..dvc import correlate, regional_strain, strain_field

    exp = ctx.store.get("experiment")
    if exp is None:
        ctx.report.section("Local DVC", "Skipped: no phantom experiment (ctx.store['experiment']) is available; "
                                        "run the 'phantom' stage first.")
        return "skipped (no experiment)"
    series = [v.numpy() for v in exp.series]
    grid = exp.truth.lq_grid
    ref = series[0]
    # correlate the electrode only (as the study masks it): windows at least half inside the T0 anode band
    z_nm = grid.origin_nm[0] + np.arange(ref.shape[0]) * grid.voxel_size_nm
    band = (z_nm >= exp.truth.z_collector_nm) & (z_nm < exp.truth.z_collector_nm + exp.truth.thickness_nm[0])
    mask = np.broadcast_to(band[:, None, None], ref.shape)
    spacing, hw = 4, 6
    rows, maps, curves = [], [], {"collector side": [0.0], "separator side": [0.0]}
    truth_curves = {"collector side": [0.0], "separator side": [0.0]}
    prev = None
    for n in range(1, len(series)):
        field = correlate(ref, series[n], node_spacing=spacing, half_window=hw, initial=prev,
                          search_radius_px=4 if prev is None else 0, smooth_sigma_px=1.0, tolerance_px=0.01,
                          max_iterations=100, grey_model="znssd", mask=mask)
        prev = field
        ctx.store["dvc_fields"] = ctx.store.get("dvc_fields", [None])[:n] + [field]  # T0 -> Tn, LQ grid
        st = strain_field(field)
        pos_nm = np.asarray(grid.origin_nm) + st.positions_zyx_px * grid.voxel_size_nm
        regions = _regions(exp, pos_nm)
        stats = {r.region: r for r in regional_strain(st, regions, components=("hencky_zz",))}
        true_zz = exp.truth.hencky_strain(n, pos_nm.reshape(-1, 3))[:, 0, 0].reshape(st.valid.shape)
        for name, m in regions.items():
            curves[name].append(stats[name].mean)
            sel = m & st.valid
            truth_curves[name].append(float(true_zz[sel].mean()) if sel.any() else float("nan"))
        u_true = exp.truth.displacement(n, pos_nm.reshape(-1, 3)) / grid.voxel_size_nm
        err = np.linalg.norm(field.displacement_zyx_px - u_true, axis=1)
        counts = field.notes.get("measured_status_counts", {})
        rows.append((exp.truth.step_names[n], exp.truth.state_of_charge[n], field.n_nodes,
                     counts.get("converged", 0), field.notes.get("n_replaced", 0),
                     float(np.median(err)), stats["collector side"].mean, truth_curves["collector side"][-1],
                     stats["separator side"].mean, truth_curves["separator side"][-1]))
        hz = st.component("hencky_zz")
        maps.append((exp.truth.step_names[n], hz[:, hz.shape[1] // 2, :]))
    field.save(ctx.path("dvc", f"field_T0_{exp.truth.step_names[-1]}.h5"), overwrite=True)
    field.save(ctx.path("dvc", f"field_T0_{exp.truth.step_names[-1]}.vtk"), overwrite=True)
    ctx.report.section(
        "Local DVC and strain",
        f"Local DVC of the in-situ LQ series, every step against T0, node spacing {spacing} px, half-window "
        f"{hw} px (Gaussian pre-smoothing 1 px, ZNSSD grey-level model), initialised from the previous step, "
        "windows at least half inside the T0 anode (electrode mask). "
        "Non-converged and outlier nodes are replaced by interpolation from converged neighbours and counted "
        "below. Finite strain (Hencky axial ln U_zz) from displacement gradients on the node grid, next to "
        "the phantom's exact ln U_zz at the same nodes; collector/separator sides are the two halves of the "
        "T0 anode. WARNING: at these expansions, with the windows this small phantom allows, the measured "
        "strain is still well below the truth (benchmarks/RESULTS.md, 'DVC at battery expansions'); do not "
        "read these numbers as accurate.")
    ctx.report.table(["step", "SoC", "nodes", "converged", "replaced", "median |u error| (px)",
                      "ln U_zz collector", "truth", "ln U_zz separator", "truth"], rows)
    fig = Figure(figsize=(2.6 * len(maps), 2.8))
    vmax = max(float(np.nanmax(np.abs(m))) for _, m in maps) or 1.0
    for i, (name, m) in enumerate(maps):
        ax = fig.add_subplot(1, len(maps), i + 1)
        im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(f"ln U_zz T0->{name}", fontsize=9)
        ax.set_xlabel("x node")
        ax.set_ylabel("z node")
    fig.colorbar(im, ax=fig.axes, shrink=0.8)
    ctx.report.figure(fig, "Hencky axial strain ln U_zz on the central xz plane of the node grid "
                           "(collector at the top)")
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    soc = exp.truth.state_of_charge
    for (name, vals), colour in zip(curves.items(), ("tab:orange", "tab:blue")):
        ax.plot(range(len(vals)), vals, "o-", color=colour, label=f"{name} (DVC)")
        ax.plot(range(len(vals)), truth_curves[name], "--", color=colour, label=f"{name} (truth)")
    ax.set_xticks(range(len(soc)))
    ax.set_xticklabels([f"{s}\n{q:.2f}" for s, q in zip(exp.truth.step_names, soc)], fontsize=8)
    ax.set_ylabel("mean ln U_zz")
    ax.set_xlabel("step / SoC")
    ax.legend(fontsize=7)
    fig.tight_layout()
    ctx.report.figure(fig, "Mean Hencky axial strain vs time, collector vs separator side (dashed: truth)")
    last = rows[-1]
    return (f"{len(rows)} steps correlated; {last[0]}: ln U_zz collector {last[6]:.3f} (truth {last[7]:.3f}), "
            f"separator {last[8]:.3f} (truth {last[9]:.3f}), median |u error| {last[5]:.2f} px")
