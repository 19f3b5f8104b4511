"""Report section of the neutron stages, from saved outputs only (``tables/neutron_layer``,
``tables/neutron_joint_<step>``, ``tables/neutron_joint_hist_<step>.npz``,
``volumes/li_concentration_<step>.ome.zarr``, ``tables/neutron_registration_<step>``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .stage_io import read_table_of

__all__ = ["neutron_section"]


def _last(out: Path, names, pattern: str):
    """The last step name with an output ``pattern.format(name)`` under ``out``, or None."""
    for n in reversed(list(names)):
        if (out / pattern.format(n)).exists():
            return n
    return None


def _layer(rep, out: Path, info: dict, figure, vs_time) -> None:
    t = read_table_of(out, "neutron_layer")
    if t is None:
        return
    truth = "true_li_mol_l" in t
    rep.table(["step", "Li measured (mol/L)", "sigma of mean (mol/L)", "voxels", "noise (1/cm)"]
              + (["Li truth (mol/L)", "error (%)"] if truth else []),
              [(t["step"][i], t["li_mol_l"][i], t["li_sigma_mol_l"][i], t["n_voxels"][i], t["noise_sigma_per_cm"][i])
               + ((t["true_li_mol_l"][i], t["error_percent"][i]) if truth else ()) for i in range(len(t["step"]))],
              caption="Mean Li concentration of the layer (neutron.layer_phases) over its z slabs widened by the "
                      "margin (tables/neutron_layer)." + (" Truth: truth.li_concentration_mol_l." if truth else
                                                          " No truth given: measured only."))
    x = np.asarray(info["time_s"], float)[[info["names"].index(str(s)) for s in t["step"]]] / 3600.0
    series = {"measured": t["li_mol_l"], **({"true": t["true_li_mol_l"]} if truth else {})}
    figure(rep, vs_time(x, series, "layer Li (mol/L)", "time (h)"), out, "neutron_layer_li",
           "Li concentration of the layer vs time")


def _li_map(rep, out: Path, info: dict, figure) -> None:
    from ..io import open_volume
    from ..neutron.plot import concentration_figure

    n = _last(out, info["names"], "volumes/li_concentration_{}.ome.zarr")
    if n is None:
        return
    v = open_volume(out / "volumes" / f"li_concentration_{n}.ome.zarr").numpy()
    k = v.shape[2] // 2
    figure(rep, concentration_figure(v[:, :, k] / np.float32(1e3), title=f"{n} Li, x = {k}, z down"), out,
           "neutron_li_map",
           f"Li concentration of {n} on the neutron grid (mol/cm³ = 1000 mol/L), middle zy section "
           f"(volumes/li_concentration_{n}.ome.zarr, mol/L; z: electrode thickness).")


def _joint(rep, out: Path, info: dict, figure) -> None:
    from ..neutron import JointHistogram, JointPhases
    from ..neutron.plot import joint_histogram_figure

    n = _last(out, info["names"], "tables/neutron_joint_hist_{}.npz")
    if n is None:
        return
    with np.load(out / "tables" / f"neutron_joint_hist_{n}.npz") as z:
        h = JointHistogram(z["counts"], z["a_edges"], z["b_edges"])
        empty = np.zeros((0, 0, 0))
        ph = JointPhases(empty.astype(np.int16), empty.astype(np.float32), z["means"], z["covariances"], z["weights"],
                         True)
        how = str(z["criterion"]) if "criterion" in z.files else "given"
        curve = (z["candidates"].tolist(), z["criterion_values"].tolist()) if how == "bic" else ((), ())
    figure(rep, joint_histogram_figure(h, ph, a_label="X-ray grey value (binned to the neutron voxel)"), out,
           "neutron_joint_histogram", f"Joint X-ray/neutron histogram of {n} with the Gaussian-mixture phases "
                                      "(2-sigma ellipses), phases sorted by neutron attenuation.")
    t = read_table_of(out, f"neutron_joint_{n}")
    if t is not None:
        rep.table(["phase", "mean X-ray grey", "mean mu (1/cm)", "voxel fraction (%)"],
                  [(int(t["phase"][i]), t["mean_xray_grey"][i], t["mean_mu_per_cm"][i], 100 * t["voxel_fraction"][i])
                   for i in range(len(t["phase"]))], caption=f"Joint phases of {n} (tables/neutron_joint_{n}).")
    if how == "bic":
        k_best = curve[0][int(np.argmin(curve[1]))]
        rep.table(["phases k", "BIC", "chosen"], [(k, v, "yes" if k == k_best else "") for k, v in zip(*curve)],
                  caption=f"Number of joint phases of {n} chosen by the Bayesian information criterion (lowest BIC = "
                          f"-2 log L + p log n on the standardised voxel values): {k_best} (neutron.joint_phases: auto; "
                          "give a number to override).")
    else:
        rep.text(f"Number of joint phases of {n}: {len(ph.weights)}, given (neutron.joint_phases).")


def _registration(rep, out: Path, info: dict) -> None:
    rows = []
    for n in info["names"]:
        t = read_table_of(out, f"neutron_registration_{n}")
        if t is None:
            continue
        rot = ", ".join(f"{t[f'rotation_{a}_deg'][0]:.2f} +- {t[f'rotation_sigma_{a}_deg'][0]:.2f}" for a in "zyx")
        tr = ", ".join(f"{t[f'translation_{a}_nm'][0]:.0f} +- {t[f'translation_sigma_{a}_nm'][0]:.0f}" for a in "zyx")
        rows.append((n, str(t["xray_input"][0]), str(t["transform"][0]), rot, tr, t["residual_per_cm"][0]))
    if rows:
        rep.table(["step", "X-ray side", "transform", "rotation z, y, x (deg)", "translation z, y, x (nm)",
                   "residual (1/cm)"], rows,
                  caption="X-ray scan registered onto the neutron volume (neutron.registration; "
                          "tomo4d.register.register_modalities, neutron voxel box and PSF modelled; "
                          "tables/neutron_registration_<step>). X-ray side: the phase map (label files or the "
                          "segment stage's labels) or the grey values. Reported, not applied.")


def neutron_section(rep, out: Path, info: dict, figure, vs_time) -> None:
    """Neutron: lithium: layer Li vs time (with truth), the Li map of the last step, its joint histogram."""
    sec = info.get("options", {}).get("neutron") or {}
    rep.section("Neutron: lithium",
                "Li concentration from the neutron attenuation volumes (inputs.neutron): mu minus the Li-free "
                "attenuation of each step's X-ray phase map (neutron.li_free_mu_per_cm, binned to the neutron voxels "
                f"and blurred by psf_sigma_nm = {sec.get('psf_sigma_nm', float('nan')):g} nm), divided by N_A "
                f"sigma_Li at {sec.get('wavelength_angstrom', float('nan')):g} Å with 6Li fraction "
                f"{sec.get('li6_fraction', float('nan')):.4g} (tomo4d.neutron; volumes/li_concentration_<step>.ome.zarr).")
    _layer(rep, out, info, figure, vs_time)
    _li_map(rep, out, info, figure)
    _joint(rep, out, info, figure)
    _registration(rep, out, info)
