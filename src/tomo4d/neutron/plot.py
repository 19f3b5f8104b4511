"""Figures of the neutron analysis (matplotlib object API, no pyplot, no global state)."""

from __future__ import annotations

import numpy as np

__all__ = ["bragg_edge_figure", "joint_histogram_figure", "concentration_figure"]


def bragg_edge_figure(wavelength_angstrom, transmission, fit, *, sigma=None, index=(), expected_angstrom=None,
                      title: str = "Bragg edge"):
    """Spectrum (points, error bars), fitted edge model and the edge position/midpoint (vertical lines)."""
    from matplotlib.figure import Figure

    w = np.asarray(wavelength_angstrom, dtype=np.float64)
    t = np.asarray(transmission, dtype=np.float64)[index] if np.ndim(transmission) > 1 else np.asarray(transmission)
    lo, hi = fit.window_angstrom
    pad = 0.25 * (hi - lo)
    sel = (w >= lo - pad) & (w <= hi + pad)
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    if sigma is not None:
        s = np.broadcast_to(np.asarray(sigma, dtype=np.float64), np.shape(transmission))
        s = s[index] if np.ndim(transmission) > 1 else s
        ax.errorbar(w[sel], t[sel], yerr=s[sel], fmt=".", ms=3, color="0.45", lw=0.6, label="data")
    else:
        ax.plot(w[sel], t[sel], ".", ms=3, color="0.45", label="data")
    ok = bool(np.asarray(fit.ok)[index])
    if ok:
        ww = np.linspace(lo, hi, 600)
        ax.plot(ww, fit.model(ww, index), color="C0", lw=1.6, label=f"fit ({fit.profile})")
        e = float(np.asarray(fit.edge_position_angstrom)[index])
        es = float(np.asarray(fit.edge_position_sigma_angstrom)[index])
        m = float(np.asarray(fit.edge_midpoint_angstrom)[index])
        ms = float(np.asarray(fit.edge_midpoint_sigma_angstrom)[index])
        ax.axvline(e, color="C0", ls=":", lw=1, label=f"edge onset {e:.4f} ± {es:.4f} Å")
        ax.axvline(m, color="C1", ls="--", lw=1, label=f"edge midpoint {m:.4f} ± {ms:.4f} Å")
    else:
        ax.text(0.02, 0.95, "fit not ok (flagged)", transform=ax.transAxes, va="top", color="C3")
    if expected_angstrom is not None:
        ax.axvline(float(expected_angstrom), color="C2", lw=1, label=f"expected {float(expected_angstrom):.4f} Å")
    ax.set_xlabel("wavelength (Å)")
    ax.set_ylabel("transmission")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _ellipse(ax, mean, cov, n_sigma, **kw):
    from matplotlib.patches import Ellipse

    vals, vecs = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    vals = np.clip(vals, 0, None)
    angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
    ax.add_patch(Ellipse(tuple(mean), 2 * n_sigma * np.sqrt(vals[1]), 2 * n_sigma * np.sqrt(vals[0]), angle=angle,
                         fill=False, **kw))


def joint_histogram_figure(hist, phases=None, *, a_label: str = "X-ray", b_label: str = "neutron mu (1/cm)",
                           phase_names=None, n_sigma: float = 2.0):
    """Log-count bivariate histogram with the Gaussian-mixture phases as ``n_sigma`` ellipses."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.4, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    c = np.asarray(hist.counts, dtype=np.float64)
    im = ax.imshow(c.T, origin="lower", aspect="auto", cmap="viridis", norm=LogNorm(vmin=1, vmax=max(c.max(), 2)),
                   extent=(hist.a_edges[0], hist.a_edges[-1], hist.b_edges[0], hist.b_edges[-1]),
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, label="voxels")
    if phases is not None:
        for i, (m, cv) in enumerate(zip(phases.means, phases.covariances)):
            color = f"C{(i + 1) % 10}"
            _ellipse(ax, m, cv, n_sigma, edgecolor=color, lw=1.6)
            name = phase_names[i] if phase_names is not None and i < len(phase_names) else f"phase {i + 1}"
            ax.plot(*m, "+", color=color, ms=9)
            right = m[0] > 0.5 * (hist.a_edges[0] + hist.a_edges[-1])
            ax.annotate(name, m, textcoords="offset points", xytext=(-6 if right else 6, 6), color=color, fontsize=8,
                        ha="right" if right else "left")
    ax.set_xlabel(a_label)
    ax.set_ylabel(b_label)
    ax.set_xlim(hist.a_edges[0], hist.a_edges[-1])
    ax.set_ylim(hist.b_edges[0], hist.b_edges[-1])
    ax.set_title(f"joint histogram, {n_sigma:g}-sigma phase ellipses", fontsize=10)
    fig.tight_layout()
    return fig


def concentration_figure(concentration_mol_per_cm3, sigma_mol_per_cm3=None, *, title: str = "Li concentration"):
    """A 2D Li map (mol/cm^3) with a colour bar, and its uncertainty map beside it when given."""
    from matplotlib.figure import Figure

    maps = [np.asarray(concentration_mol_per_cm3, dtype=np.float32)]
    titles = [f"{title} (mol/cm³)"]
    if sigma_mol_per_cm3 is not None:
        maps.append(np.asarray(sigma_mol_per_cm3, dtype=np.float32))
        titles.append("uncertainty (mol/cm³)")
    fig = Figure(figsize=(3.6 * len(maps), 3.2))
    for i, (m, t) in enumerate(zip(maps, titles)):
        ax = fig.add_subplot(1, len(maps), i + 1)
        im = ax.imshow(m, cmap="magma" if i == 0 else "cividis", interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(t, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return fig
