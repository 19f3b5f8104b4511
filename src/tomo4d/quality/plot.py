"""Figures and files of edge profiles (matplotlib object API, no pyplot)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import atomic_output
from .edges import EdgeResolution


def _as_mapping(results) -> Mapping[str, EdgeResolution]:
    if isinstance(results, EdgeResolution):
        return {"image": results}
    if not isinstance(results, Mapping) or not results:
        raise InputError("give an EdgeResolution or a non-empty mapping of name -> EdgeResolution")
    return results


def edge_profile_figure(results, *, max_profiles: int = 30):
    """Figure of edge profiles (top) and their derivatives (bottom), one column per image.

    Parameters
    ----------
    results : EdgeResolution or mapping of str to EdgeResolution
    max_profiles : int
        Profiles drawn per image (evenly chosen).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    res = _as_mapping(results)
    n = len(res)
    fig = Figure(figsize=(3.4 * n, 5.2))
    for j, (name, r) in enumerate(res.items()):
        ax1 = fig.add_subplot(2, n, j + 1)
        ax2 = fig.add_subplot(2, n, n + j + 1, sharex=ax1)
        idx = np.unique(np.linspace(0, len(r.profiles) - 1, min(max_profiles, len(r.profiles))).astype(int))
        for i in idx:
            p = r.profiles[i]
            d = p.distance_nm
            lo, span = float(p.fitted.min()), float(p.contrast) or 1.0
            ax1.plot(d, (p.values - lo) / span, color="0.5", lw=0.6, alpha=0.6)
            ax1.plot(d, (p.fitted - lo) / span, color="C0", lw=0.8, alpha=0.8)
            ax2.plot(d, p.derivative / np.abs(p.derivative).max(), color="C1", lw=0.6, alpha=0.6)
        ax1.set_title(f"{name}\nFWHM {r.fwhm_mean_nm:.0f} +- {r.fwhm_std_nm:.0f} nm (n={r.n_edges})", fontsize=9)
        ax1.set_ylabel("normalised grey value")
        ax2.set_ylabel("normalised derivative")
        ax2.set_xlabel("distance across edge (nm)")
    fig.tight_layout()
    return fig


def save_edge_profiles(results, path, *, overwrite: bool = False) -> Path:
    """Write every profile as CSV rows ``image,edge,z,y_px,x_px,fwhm_nm,distance_nm,value,fitted,derivative``.

    The file is written atomically (:func:`tomo4d.io.atomic_output`).
    """
    res = _as_mapping(results)
    path = Path(path)
    lines = ["image,edge,z,y_px,x_px,fwhm_nm,distance_nm,value,fitted,derivative"]
    for name, r in res.items():
        safe = str(name).replace(",", ";")
        for k, p in enumerate(r.profiles):
            head = f"{safe},{k},{p.z},{p.center_px[0]:.3f},{p.center_px[1]:.3f},{p.fwhm_nm:.4g}"
            for d, v, f, g in zip(p.distance_nm, p.values, p.fitted, p.derivative):
                lines.append(f"{head},{d:.5g},{v:.6g},{f:.6g},{g:.6g}")
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
