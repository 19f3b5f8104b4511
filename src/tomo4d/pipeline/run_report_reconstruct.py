"""Report section of the ``reconstruct`` stage, from saved outputs only (``tables/reconstruct``,
``volumes/reconstructed_<scan>.ome.zarr``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .stage_io import read_table_of

__all__ = ["reconstruct_section"]


def _slice_figure(vol, name: str):
    from matplotlib.figure import Figure

    data = np.asarray(vol.data[vol.shape[0] // 2])
    fig = Figure(figsize=(3.6, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(data, cmap="gray")
    fig.colorbar(im, ax=ax, shrink=0.8, label="mu x voxel")
    ax.set_title(f"{name}: middle slice", fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    return fig


def reconstruct_section(rep, out: Path, info: dict, figure) -> None:
    """Reconstruction: one row per scan (centre, clipped values, coverage, time, PSNR against truth); a slice."""
    from ..io import open_volume

    t = read_table_of(out, "reconstruct")
    if t is None:
        return
    rep.section("Reconstruction from projections",
                "Every NXtomo file of inputs.projections: flat/dark normalisation, -log (non-positive and non-finite "
                "transmissions clipped and counted), optional Paganin, ring removal and parallel-beam FBP by the "
                "algotom engine (tomo4d.reconstruct), slab by slab; volumes/reconstructed_<scan>.ome.zarr, provenance in their "
                "metadata.")
    truth = "psnr_db" in t
    rows = [(t["scan"][i], f"{t['center_px'][i]:.2f}" + (" (found)" if int(t["center_found"][i]) else ""),
             int(t["n_clipped"][i]), t["coverage_deg"][i], int(t["n_slices"][i]), int(t["width_px"][i]),
             t["wall_s"][i]) + ((t["psnr_db"][i], 100 * t["mean_relative_error"][i]) if truth else ())
            for i in range(len(t["scan"]))]
    rep.table(["scan", "centre (px)", "clipped", "coverage (deg)", "slices", "width (px)", "time (s)"]
              + (["PSNR vs truth (dB)", "mean error (%)"] if truth else []), rows,
              caption="tables/reconstruct" + ("; truth: reconstruct.truth (the true attenuation)." if truth else "."))
    first = out / "volumes" / f"reconstructed_{t['scan'][0]}.ome.zarr"
    if first.exists():
        figure(rep, _slice_figure(open_volume(first), str(t["scan"][0])), out, "reconstruct_slice",
               f"Middle slice of the reconstruction of {t['scan'][0]}.")
