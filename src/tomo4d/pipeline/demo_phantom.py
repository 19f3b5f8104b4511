"""Demo stage ``phantom``: generate the built-in synthetic experiment and show it."""

from __future__ import annotations

import numpy as np


def stage_phantom(ctx) -> str:
    """Make a small experiment (64^3, 4 steps), add slices and truth numbers to the report.

    Stores the experiment in ``ctx.store["experiment"]`` and its HQ scan in ``ctx.store["hq"]``.
    """
    from ..phantom import make_experiment
    from ..report import html as rep

    exp = make_experiment(shape=(96, 96, 96), n_steps=4, seed=ctx.seed, particle_radius_nm=900.0)
    ctx.store["experiment"] = exp
    ctx.store["hq"] = exp.hq.compute()
    t = exp.truth
    n = exp.params.shape
    xz = n[1] // 2
    images = [exp.hq.numpy()[:, xz], exp.lq.numpy()[:, xz]]
    titles = ["HQ T0 (50 nm)", "LQ T0 (100 nm, 2x field)"]
    images += [exp.series[s].numpy()[:, xz] for s in range(exp.n_steps)]
    titles += [f"LQ {name} SoC {t.state_of_charge[s]:.2f}" for s, name in enumerate(t.step_names)]
    ctx.report.section(
        "Synthetic in-situ experiment",
        f"{exp!r}: Cu collector (top), Si particles in a porous carbon-binder matrix, fibrous separator "
        f"(bottom); {len(t.particle_id)} particles, "
        f"{int(np.sum(t.particle_mode == 1))} core-shell. Slices are xz planes through the centre.")
    ctx.report.figure(rep.slice_figure(images, titles, ncols=max(2, exp.n_steps)),
                      "Training pair (HQ, LQ) and the in-situ LQ series T0..Tn")
    labels = [t.labels(s)[:, xz].astype(np.float32) for s in range(exp.n_steps)]
    ctx.report.figure(rep.slice_figure(labels, [f"labels {name}" for name in t.step_names], cmap="viridis",
                                       robust=False), "Ground-truth phase labels (HQ grid)")
    ctx.report.table(
        ["step", "SoC", "thickness (um)", "mean axial strain", "non-lithiated Si (um^3)",
         "mean lithiated fraction"],
        [(name, t.state_of_charge[s], t.thickness_nm[s] / 1e3, t.mean_axial_strain[s],
          t.non_lithiated_si_volume_nm3[s] / 1e9, float(np.mean(t.lithiated_fraction[s])))
         for s, name in enumerate(t.step_names)],
        caption="Ground truth per step (thickness and Si volume over the HQ field)")
    ctx.report.table(
        ["quantity", "HQ", "LQ"],
        [("voxel (nm)", exp.params.hq_voxel_nm, exp.params.lq_voxel_nm),
         ("blur sigma (nm)", t.hq_blur_sigma_nm, t.lq_blur_sigma_nm),
         ("edge resolution 10-90 % (nm)", t.hq_edge_resolution_nm, t.lq_edge_resolution_nm),
         ("noise std (grey)", t.hq_noise_std, t.lq_noise_std)],
        caption="Imaging model (true resolution and noise)")
    growth = t.thickness_nm[-2] / t.thickness_nm[0] - 1
    return (f"{len(t.particle_id)} particles, {exp.n_steps} steps, thickness "
            f"{t.thickness_nm[0] / 1e3:.2f} -> {t.thickness_nm[-2] / 1e3:.2f} um (+{100 * growth:.0f} %)")
