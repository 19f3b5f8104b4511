"""Demo stage ``quality``: the five image-quality metrics of the LQ scan against the HQ scan."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def _on_grid(lq, hq_shape):
    """LQ voxels on the HQ grid: unchanged if the shapes agree, else cubic-spline zoom (as before InDI)."""
    from scipy import ndimage

    a = np.asarray(lq, dtype=np.float32)
    if a.shape == tuple(hq_shape):
        return a
    factors = [h / s for h, s in zip(hq_shape, a.shape)]
    z = ndimage.zoom(a, factors, order=3, mode="nearest", grid_mode=True)
    if z.shape != tuple(hq_shape):  # rounding of the zoomed shape: crop/pad to the HQ grid
        out = np.empty(hq_shape, np.float32)
        sl = tuple(slice(0, min(a_, b_)) for a_, b_ in zip(z.shape, hq_shape))
        out[...] = np.float32(z.mean())
        out[sl] = z[sl]
        z = out
    return z


def stage_quality(ctx) -> str:
    """Compare the demo experiment's LQ scan with its HQ scan on PSNR, SSIM, SIFT, edge FWHM and CNR."""
    from ..quality import compare, edge_profile_figure, fov_mask

    exp = ctx.store.get("experiment")
    if exp is None or getattr(exp, "hq", None) is None or getattr(exp, "lq", None) is None:
        ctx.report.section("Image quality", "Skipped: no phantom experiment (ctx.store['experiment']) is available "
                                            "in this run, so there is no LQ/HQ pair to compare.")
        return "skipped (no experiment in the store)"
    hq, lq = exp.hq, exp.lq
    hq_a = np.asarray(hq.numpy() if hasattr(hq, "numpy") else hq, dtype=np.float32)
    lq_a = _on_grid(lq.numpy() if hasattr(lq, "numpy") else lq, hq_a.shape)
    vs = getattr(hq, "voxel_size_nm", None)
    nz = hq_a.shape[0]
    slices = sorted({int(v) for v in np.linspace(0.2 * nz, 0.8 * nz - 1, 4)})
    mask = fov_mask(hq_a.shape, margin_px=4) if getattr(exp, "circular_fov", False) else None
    images = {"LQ (zoomed to the HQ grid)" if lq_a.shape != np.shape(lq) else "LQ": lq_a}
    for name in ("enhanced", "indi"):
        extra = ctx.store.get(name)
        if extra is not None and np.shape(extra) == hq_a.shape:
            images[name] = np.asarray(extra.numpy() if hasattr(extra, "numpy") else extra, np.float32)
    table = compare(hq_a, images, voxel_size_nm=vs, mask=mask, reference_name="HQ", slices=slices,
                    edge_options={"max_edges": 60})
    truth = getattr(exp, "truth", None)
    note = ""
    if truth is not None:
        bits = []
        for key in ("hq_blur_sigma_nm", "lq_blur_sigma_nm"):
            val = getattr(truth, key, None)
            if val is not None:
                bits.append(f"{key} = {float(np.max(val)):.0f} nm (FWHM {2.355 * float(np.max(val)):.0f} nm)")
        if bits:
            note = " Ground truth: " + ", ".join(bits) + "."
    ctx.report.section(
        "Image quality",
        "Each image against the HQ scan: PSNR and SSIM (mean over slices), SIFT congruent features, edge "
        "resolution as FWHM of edge-profile derivatives (automatic edges, mean +- std), CNR = |mean_fg - "
        "mean_bg| / std_bg with Otsu classes of the HQ scan. Literature (DESIGN.md section 2): edge "
        "resolution LQ 803 +- 135 nm, HQ 357 +- 53 nm; CNR LQ 0.9, HQ 2.4." + note)
    ctx.report.table(table.header(), table.table_rows())
    ctx.report.figure(edge_profile_figure(table.edges), "Edge profiles (grey), error-function fits (blue) and "
                                                         "normalised derivatives (orange).")
    ctx.store["quality_table"] = table
    lq_row = table.rows[1]
    hq_row = table.rows[0]
    return (f"edge FWHM HQ {hq_row.fwhm_mean_nm:.0f} nm, LQ {lq_row.fwhm_mean_nm:.0f} nm; "
            f"CNR HQ {hq_row.cnr:.2f}, LQ {lq_row.cnr:.2f}")
