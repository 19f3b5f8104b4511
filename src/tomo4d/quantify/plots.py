"""Figures of the quantify results (matplotlib object API: no pyplot, no global state)."""

from __future__ import annotations

import numpy as np

__all__ = ["thickness_figure", "rnl_figure", "regional_strain_figure", "strain_histogram_figure",
           "size_distribution_figure", "tracks_figure", "modes_figure"]


def _fig(w=5.0, h=3.2):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def _steps_axis(ax, names):
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_xlabel("step")


def thickness_figure(series, *, truth_um=None):
    """Mean +- std thickness (um) vs step, optionally with a reference curve."""
    fig = _fig()
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(series.step_names))
    ax.errorbar(x, series.mean_um, yerr=series.std_um, fmt="o-", capsize=3, label="measured")
    if truth_um is not None:
        ax.plot(x, truth_um, "k--", label="truth")
    _steps_axis(ax, series.step_names)
    ax.set_ylabel("anode thickness (um)")
    ax2 = ax.twinx()
    ax2.plot(x, 100 * series.expansion, "s:", color="tab:red", alpha=0.6)
    ax2.set_ylabel("expansion vs T0 (%)", color="tab:red")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def rnl_figure(series, *, truth=None):
    """Relative non-lithiated Si volume vs step."""
    fig = _fig()
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(series.step_names))
    ax.plot(x, series.rnl, "o-", label="measured")
    if truth is not None:
        ax.plot(x, truth, "k--", label="truth")
    _steps_axis(ax, series.step_names)
    ax.set_ylabel("relative non-lithiated Si volume")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def regional_strain_figure(regional, *, components=("hencky_zz", "hencky_yy", "hencky_xx", "volumetric")):
    """Mean strain per region vs step, one line style per component (finite strain by default)."""
    fig = _fig(5.5, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(regional.step_names))
    styles = {"zz": "-", "yy": ":", "xx": "--", "volumetric": "-."}
    labels = {"volumetric": "det F - 1"}
    for r, name in enumerate(regional.region_names):
        colour = f"C{r}"
        for comp in components:
            if comp not in regional.components:
                continue
            kind, _, axes = comp.rpartition("_")
            label = labels.get(comp) or (f"ln U_{axes}" if kind == "hencky" else f"e_{comp}")
            ax.plot(x, 100 * regional.value(name, comp), styles.get(axes or comp, "-"), marker="o", color=colour,
                    label=f"{name} {label}", ms=3)
    _steps_axis(ax, regional.step_names)
    ax.set_ylabel("mean strain (%)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def strain_histogram_figure(regional, *, step: int = -1):
    """Histograms of the histogram component per region at one step."""
    fig = _fig()
    ax = fig.add_subplot(1, 1, 1)
    e = regional.hist_edges
    c = 0.5 * (e[1:] + e[:-1])
    for r, name in enumerate(regional.region_names):
        h = regional.hist_counts[step, r]
        ax.step(100 * c, h / max(h.sum(), 1), where="mid", label=name)
    ax.set_xlabel(f"e_{regional.hist_component} (%)")
    ax.set_ylabel("share of nodes")
    ax.set_title(f"{regional.step_names[step]}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def size_distribution_figure(dist):
    """Equivalent-diameter histogram by number and by volume."""
    fig = _fig()
    ax = fig.add_subplot(1, 1, 1)
    e = dist.edges_um
    w = np.diff(e)
    ax.bar(e[:-1], dist.number_fraction, width=w, align="edge", alpha=0.5, label="by number")
    ax.step(e[:-1], dist.volume_fraction, where="post", color="k", label="by volume")
    ax.set_xlabel("equivalent diameter (um)")
    ax.set_ylabel("share")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def tracks_figure(tracks, *, collector_z_um: float = 0.0, max_tracks: int = 2000):
    """Axial and lateral displacement at the last step vs depth, and a few trajectories (x-z)."""
    fig = _fig(8.5, 3.3)
    ok = tracks.complete & (tracks.first_step == 0)
    idx = np.flatnonzero(ok)[:max_tracks]
    depth = tracks.depth_um(collector_z_um)[idx]
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(depth, tracks.axial_um[idx, -1], "o", ms=3, label="axial (z)")
    ax.plot(depth, tracks.lateral_um[idx, -1], "s", ms=3, label="lateral (y, x)")
    ax.set_xlabel("depth above the collector at T0 (um)")
    ax.set_ylabel(f"displacement T0->{tracks.step_names[-1]} (um)")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    for k in idx[:60]:
        c = tracks.centroid_um[k]
        ax.plot(c[:, 2], c[:, 0], "-", lw=0.8)
        ax.plot(c[0, 2], c[0, 0], "k.", ms=3)
    ax.invert_yaxis()
    ax.set_xlabel("x (um)")
    ax.set_ylabel("z (um, collector at top)")
    ax.set_title("particle tracks (dot = T0)", fontsize=9)
    fig.tight_layout()
    return fig


def modes_figure(modes, *, truth=None):
    """Shell score per particle vs step (core-shell vs network), and the share per step."""
    fig = _fig(8.5, 3.2)
    ax = fig.add_subplot(1, 2, 1)
    x = np.arange(len(modes.step_names))
    for p in range(modes.label.size):
        colour = "tab:orange" if modes.mode[p] == 1 else "tab:blue" if modes.mode[p] == 2 else "grey"
        ax.plot(x, modes.shell_score[:, p], "-", color=colour, alpha=0.5, lw=0.8)
    _steps_axis(ax, modes.step_names)
    ax.set_ylabel("shell score (1 = shell, 0 = depth-independent)")
    ax.set_title("orange core-shell, blue network", fontsize=8)
    ax = fig.add_subplot(1, 2, 2)
    ax.plot(x, 100 * modes.core_shell_share_per_step, "o-")
    _steps_axis(ax, modes.step_names)
    ax.set_ylabel("core-shell share of classified particles (%)")
    fig.tight_layout()
    return fig
