"""Report sections "Lithiation modes" (the lithiation stage) and "All numbers" (every saved table, with units).

Both read saved outputs only: ``tables/lithiation_mode_counts``, ``volumes/particle_frames.npz``, and the
tables each shown stage's done-marker lists.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .stage_io import read_table_of
from .stages_lithiation import FRAMES
from .units import column_unit

__all__ = ["lithiation_section", "numbers_section", "table_numbers"]

#: tables longer than this are summarised (min / median / max) instead of listing every value
MAX_VALUES = 6


def _frames_figure(fr):
    """Rows = tracked particles, columns = steps: middle z slice of each frame, the tracked particle outlined."""
    from matplotlib.figure import Figure

    grey, labels, steps = fr["grey"], fr["labels"], [str(s) for s in fr["steps"]]
    n, m = grey.shape[:2]
    fig = Figure(figsize=(1.6 * m + 0.6, 1.6 * n + 0.4))
    finite = grey[np.isfinite(grey)]
    lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    for i in range(n):
        for s in range(m):
            ax = fig.add_subplot(n, m, i * m + s + 1)
            z = grey.shape[2] // 2
            ax.imshow(grey[i, s, z], cmap="gray", vmin=lo, vmax=hi)
            own = labels[i, s, z] == fr["label"][i, s]
            if fr["label"][i, s] > 0 and own.any():
                ax.contour(own.astype(float), levels=[0.5], colors="orange", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(steps[s], fontsize=8)
            if s == 0:
                ax.set_ylabel(f"track {int(fr['track'][i])}\n{fr['mode'][i]}", fontsize=7)
    fig.tight_layout()
    return fig


def lithiation_section(rep, out: Path, info: dict, figure) -> None:
    c = read_table_of(out, "lithiation_mode_counts")
    rep.section("Lithiation modes", "Each T0 particle classified as core-shell-like or network-like from the residual "
                                    "maps (profile score: residual of its outer half against its core; particles cut by "
                                    "the border and steps with too little residual stay undetermined) "
                                    "(tables/lithiation_modes, tables/lithiation_mode_counts).")
    if c is None:
        return
    truth = "n_true" in c
    head = ["step", "mode", "particles"] + (["true core-shell among them", "true network among them",
                                             "true count"] if truth else [])
    rows = [(c["step"][i], c["mode"][i], int(c["n_particles"][i]))
            + ((int(c["n_true_core_shell"][i]), int(c["n_true_network"][i]), int(c["n_true"][i])) if truth else ())
            for i in range(len(c["step"]))]
    cap = "Particles per mode at each step and overall (step 'all')."
    if truth:
        allr = (c["step"] == "all") & (c["mode"] != "undetermined")
        agree = c["agreement"][c["step"] == "all"]
        true_cs, true_net = int(c["n_true_core_shell"][allr].sum()), int(c["n_true_network"][allr].sum())
        base = max(true_cs, true_net) / max(true_cs + true_net, 1)  # always answering the commoner true mode
        cap += (" Truth (lithiation.truth_modes): the true particle covering most of each measured one at T0; "
                f"agreement of the {true_cs + true_net} classified particles with their true mode: "
                f"{float(agree[0]):.2f} (answering the commoner true mode for all: {base:.2f})."
                if agree.size and np.isfinite(agree[0]) else " No classified particle has a true match.")
    rep.table(head, rows, caption=cap)
    if (out / FRAMES).is_file():
        with np.load(out / FRAMES) as fr:
            fr = dict(fr)
        figure(rep, _frames_figure(fr), out, "particle_frames",
               f"Particle-centred frames ({float(fr['size_um']):.2f} um), middle z slice; rows: the longest tracks "
               "(mode at T0), columns: steps; outline: the tracked particle (volumes/particle_frames.npz).")


def table_numbers(name: str, t: dict) -> list[tuple]:
    """``(table, column, unit, values)`` of every numeric column: all values (named by their step in a table of one
    row per step), or min / median / max when long."""
    rows = []
    steps = [str(x) for x in t.get("step", ())]
    per_step = len(steps) == len(set(steps)) > 0  # one row per step: values named by their step
    for col, v in t.items():
        v = np.asarray(v)
        if v.dtype.kind not in "iuf" or v.size == 0:
            continue
        f = v.astype(float)
        if f.size <= MAX_VALUES:
            text = ", ".join(f"{steps[i]}: {x:.4g}" if per_step else f"{x:.4g}" for i, x in enumerate(f))
        else:
            ok = f[np.isfinite(f)]
            text = (f"{f.size} values: min {ok.min():.4g}, median {np.median(ok):.4g}, max {ok.max():.4g}"
                    + (f" ({f.size - ok.size} NaN)" if ok.size < f.size else "") if ok.size else f"{f.size} NaN")
        rows.append((name, col, column_unit(col), text))
    return rows


def _stage_tables(out: Path, stage: str) -> list[str]:
    from .runner import STATE_DIR

    try:
        marker = json.loads((out / STATE_DIR / "done" / f"{stage}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    names = [Path(p).stem for p in marker.get("outputs", ()) if p.startswith("tables/") and p.endswith(".csv")]
    return list(dict.fromkeys(names))


def numbers_section(rep, out: Path, stages) -> None:
    """Every numeric column of every table of ``stages`` (done, in the last run), with its unit."""
    rows = []
    for stage in stages:
        for name in _stage_tables(out, stage):
            t = read_table_of(out, name)
            if t is not None:
                rows += table_numbers(f"{stage}: tables/{name}", t)
    if not rows:
        return
    rep.section("All numbers", "Every numeric column of the saved tables (Parquet + CSV under tables/), with its "
                               f"unit ('1': dimensionless; 'unit?': not known). Up to {MAX_VALUES} values are listed "
                               "(named by their step in the tables of one row per step), longer columns as min / median / max.")
    rep.table(["table", "column", "unit", "values"], rows)
