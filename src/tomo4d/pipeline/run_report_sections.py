"""Report sections of the segment, particles and residual stages, and the run's provenance summary.

Each reads saved outputs only (``tables/*``, ``volumes/*.ome.zarr``, ``provenance.json``); where the
experiment gave ground truth (``truth:``), the stage saved its measurements beside the true values
and the section shows both columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .stage_io import read_table_of

__all__ = ["particles_section", "provenance_section", "residual_section", "segment_section"]


def _mid_slices(out: Path, names, prefix: str):
    """The middle xy slice of ``volumes/<prefix><step>.ome.zarr`` of each step, read alone (a 1024^3 run's report
    held its two 1 GiB segmentations whole to show two slices: 3.4 GiB peak)."""
    from .._array import read_box
    from ..io import open_volume

    imgs, titles = [], []
    for n in names:
        p = out / "volumes" / f"{prefix}{n}.ome.zarr"
        if p.exists():
            v = open_volume(p)
            k = v.shape[0] // 2
            imgs.append(np.array(read_box(v.data, (slice(k, k + 1),))[0]))
            titles.append(f"{n} (z = {k})")
    return imgs, titles


def _col(t: dict, name: str, i: int):
    return t[name][i] if name in t else float("nan")


def segment_section(rep, out: Path, info: dict, figure) -> None:
    from ..report import slice_figure

    rows, truth = [], False
    for n in info["names"]:
        t = read_table_of(out, f"segment_{n}")
        if t is None:
            continue
        truth = truth or "dice" in t
        for i in range(len(t["class"])):
            rows.append((n, int(t["class"][i]), 100 * t["volume_fraction"][i], 100 * _col(t, "true_volume_fraction", i),
                         _col(t, "dice", i), _col(t, "boundary_f1", i)))
    rep.section("Segmentation", "Random-forest pixel classifier trained on the labelled voxels of T0 "
                                "(models/segment_pixel_classifier.npz), applied to every step "
                                "(volumes/segment_<step>.ome.zarr, tables/segment_<step>)."
                + (" Truth: the experiment's truth.labels; at T0 scored on the voxels not used for training."
                   if truth else " No truth given: measured only."))
    rep.table(["step", "class", "measured volume (%)", "true volume (%)", "Dice", "boundary F1"], rows,
              caption="Volume fraction of each class, measured beside true (NaN: no truth).")
    imgs, titles = _mid_slices(out, info["names"], "segment_")
    if imgs:
        figure(rep, slice_figure(imgs, titles, cmap="tab10"), out, "segment_slices",
               "Segmentation, middle xy slice of each step")


def _columns_table(rep, table: dict, keys, caption: str) -> None:
    """One row per step of ``table`` with the ``(column, header)`` pairs of ``keys`` that it has."""
    keys = [(k, h) for k, h in keys if k in table]
    rep.table([h for _, h in keys], [tuple(table[k][i] for k, _ in keys) for i in range(len(table["step"]))],
              caption=caption)


def particles_section(rep, out: Path, info: dict, figure, vs_time) -> None:
    s = read_table_of(out, "particles_summary")
    rep.section("Particles and tracks", "Particles of the particle class in each step's segmentation (tables/particles, "
                                        "volumes/particles_<step>.ome.zarr); tracks through the steps (tables/tracks), "
                                        "predicted by the DVC field where the dvc stage ran.")
    if s is None:
        return
    truth = "n_true" in s
    keys = [("step", "step"), ("n_particles", "particles"), ("n_true", "true particles"),
            ("median_equivalent_diameter_um", "median diameter (um)"), ("mean_sphericity", "mean sphericity"),
            ("precision", "precision"), ("recall", "recall"), ("f1", "F1"), ("n_tracks_found", "tracks found"),
            ("link_accuracy", "links on one true particle")]
    _columns_table(rep, s, keys, "Measured beside true (truth.particles; detection matched at IoU >= 0.5, links "
                   "from each track's first step)." if truth else "No truth given: measured only.")
    series = {"measured": s["n_particles"], **({"true": s["n_true"]} if truth else {})}
    x = np.asarray(info["time_s"], float)[[info["names"].index(str(n)) for n in s["step"]]] / 3600.0
    figure(rep, vs_time(x, series, "particles", "time (h)"), out, "particles_count", "Number of particles vs time")
    tr = read_table_of(out, "tracks")
    if tr is not None and len(tr["track"]):
        steps = list(dict.fromkeys(tr["step"]))
        rep.table(["step", "tracked particles", "median axial displacement (um)", "median lateral (um)"],
                  [(n, int(np.count_nonzero(tr["step"] == n)), float(np.median(tr["axial_um"][tr["step"] == n])),
                    float(np.median(tr["lateral_um"][tr["step"] == n]))) for n in steps],
                  caption="Particle motion from each track's first step.")


def residual_section(rep, out: Path, info: dict, figure) -> None:
    from ..report import slice_figure

    s = read_table_of(out, "residual_summary")
    rep.section("Residual maps", "T_n pulled back onto T0 by the DVC field, subtracted, blurred, absolute, noise "
                                 "floor (repeat scan T0 vs T0, inputs.repeat) removed (volumes/residual_T0_<step>"
                                 ".ome.zarr, tables/residual_summary): grey-level change the motion does not explain.")
    if s is None:
        return
    keys = [("step", "step"), ("n_usable_nodes", "usable nodes"), ("noise_floor", "noise floor"),
            ("mean_before_floor", "mean before floor"), ("fraction_above_floor", "fraction above floor"),
            ("residual_mean", "mean residual"), ("residual_mean_true_lithiated", "mean in true lithiated Si"),
            ("residual_mean_elsewhere", "mean elsewhere"), ("true_lithiated_fraction", "true lithiated fraction")]
    _columns_table(rep, s, keys, "Grey levels. With truth: the residual inside the truly lithiated silicon beside "
                   "elsewhere (lithiation should stand out)." if "true_lithiated_fraction" in s else "Grey levels.")
    imgs, titles = _mid_slices(out, list(s["step"]), "residual_T0_")
    if imgs:
        figure(rep, slice_figure(imgs, titles, cmap="magma"), out, "residual_slices",
               "Residual maps, middle xy slice")


def provenance_section(rep, out: Path, done) -> None:
    """Per finished stage (``done(name)``): status, why it was recomputed, peak memory; the seeds (provenance.json)."""
    try:
        prov = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    rep.section("Run", "Per stage: what this run did and why, and the process's peak resident memory when the "
                       f"stage finished ({prov.get('memory', 'ru_maxrss')}). Seeds: "
                       f"{', '.join(f'{k}={v}' for k, v in prov.get('seeds', {}).items()) or 'none used'}.")
    rep.table(["stage", "status", "recomputed because", "peak RSS (MiB)", "wall (s, when computed)"],
              [(n, st.get("status"), "; ".join(st.get("recomputed_because") or ()) or "-", st.get("peak_rss_mib"),
                st.get("wall_s_when_computed")) for n, st in prov.get("stages", {}).items() if done(n)])
