"""Report section of the enhance stages, from saved outputs only (``models/enhance_pair_*.json``,
``models/indi/metrics.json``, ``models/indi/step_sweep.json``, ``models/indi/validation_curve.json``, ``tables/enhance_quality``, ``tables/enhance_roi.npz``,
``tables/enhance_hallucination``, ``tables/enhance_spread_error``, ``volumes/enhanced_<step>.ome.zarr``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .stage_io import read_table_of
from .stages_enhance import ROI_PX, read_rois

__all__ = ["enhance_section", "roi_figure"]


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _slices(out: Path, names):
    from ..io import open_volume

    imgs, titles = [], []
    for n in names:
        p = out / "volumes" / f"enhanced_{n}.ome.zarr"
        if p.exists():
            v = open_volume(p)
            k = v.shape[0] // 2
            imgs.append(np.asarray(v.data[k]))
            titles.append(f"{n} (z = {k})")
    return imgs, titles


_COLUMNS = (("step", "step"), ("psnr_db_bicubic", "PSNR bicubic (dB)"), ("psnr_db_InDI", "PSNR InDI (dB)"),
            ("ssim_bicubic", "SSIM bicubic"), ("ssim_InDI", "SSIM InDI"), ("sift_matches_bicubic", "SIFT bicubic"),
            ("sift_matches_InDI", "SIFT InDI"), ("edge_fwhm_nm_bicubic", "edge FWHM bicubic (nm)"),
            ("edge_fwhm_nm_InDI", "edge FWHM InDI (nm)"), ("edge_fwhm_nm_HQ", "edge FWHM HQ (nm, truth)"),
            ("cnr_bicubic", "CNR bicubic"), ("cnr_InDI", "CNR InDI"), ("cnr_HQ", "CNR HQ (truth)"))


def _quality_table(rep, q: dict) -> None:
    n = len(q["step"])
    rows = [tuple(q[k][i] if k in q else float("nan") for k, _ in _COLUMNS) for i in range(n)]
    notes = sorted({f"{q['step'][i]} {name}: {str(q[f'edge_note_{name}'][i]).split(';')[0]}" for i in range(n) for name in
                    ("bicubic", "InDI", "HQ") if f"edge_note_{name}" in q and q["step"][i] != "pair"
                    and str(q[f"edge_note_{name}"][i]) != "measured"})
    slices = sorted({str(s) for s, st in zip(q.get("slices", ()), q["step"]) if st != "pair"})
    rep.table([h for _, h in _COLUMNS], rows,
              caption="Measured (bicubic LQ, InDI) beside the HQ truth, on the HQ grid through the pair transform "
                      "(tables/enhance_quality): PSNR and SSIM against HQ, SIFT congruent features with HQ, edge "
                      "resolution as the mean FWHM of edge-profile derivatives, CNR between the Otsu classes of HQ. "
                      + (f"SIFT and edges on z slices {'; '.join(slices)}. " if slices else "")
                      + "'pair': held-out slices of the training pair, PSNR from training."
                      + ("" if n > 1 else " No HQ scans of the in-situ steps (enhance.truth_hq): pair only.")
                      + (" Edge FWHM not measurable (nan; full reasons in the edge_note_* columns): " + "; ".join(notes) + "."
                         if notes else ""))


def _sweep_part(rep, out: Path, figure) -> None:
    """The validation sweep over the InDI step count (models/indi/step_sweep.json): table and curve."""
    from ..enhance.steps import StepSweep, sweep_figure
    from ..errors import FormatError

    d = _json(out / "models" / "indi" / "step_sweep.json")
    if not d:
        return
    try:
        sw = StepSweep.from_dict(d)
    except FormatError:
        return
    b, h = sw.bicubic, sw.hq
    nan = (float("nan"),) * len(sw.steps)
    rows = [(*r[:3], d, *r[3:4], q, *r[4:]) for r, q, d in zip(sw.rows(), sw.fwhm_ratio or nan, sw.detail_power or nan)]
    rows += [("bicubic", b["psnr_db"], b["ssim"], b.get("detail_power", nan[0]), b["fwhm_nm"],
              b.get("fwhm_ratio", nan[0]), b["consistency_rms"], 100 * b["inconsistent_fraction"]),
             ("HQ", nan[0], 1.0, 1.0, h["fwhm_nm"], 1.0, h["consistency_rms"], 100 * h["inconsistent_fraction"])]
    rep.table(["InDI steps N", "PSNR (dB)", "SSIM", "detail power / HQ", "edge FWHM (nm)", "FWHM / HQ (same edges)",
               "consistency RMS (sigma_n)", "LQ pixels > 3 sigma_n (%)"], rows,
              caption=f"Validation sweep on the held-out slices {', '.join(map(str, sw.slices))} of the training pair "
                      "(models/indi/step_sweep.json): against HQ (detail power: the output's power at spatial "
                      "frequencies beyond LQ's Nyquist relative to HQ's, 1 = as much fine structure as HQ; edges "
                      "detected in HQ, every image measured along the same profile lines, FWHM / HQ the median "
                      "per-edge ratio), and the output degraded back to LQ against the LQ "
                      f"input in units of sigma_n = {sw.lq_noise:.4g} grey values (HQ's own residual). The series "
                      f"is enhanced with N = {sw.recommended_steps} (rule {sw.rule}; "
                      + ", ".join(f"{r}: {n}" for r, n in sw.recommended.items()) + ") unless enhance.steps is set.")
    figure(rep, sweep_figure(sw), out, "enhance_step_sweep",
           "Validation sweep: PSNR, detail power, edge FWHM and the inconsistent fraction against the InDI step count; bicubic "
           "(dashed) and HQ (dotted) for reference, the recommended N in red.")


def _curve_part(rep, out: Path, figure) -> None:
    """Validation PSNR/SSIM against the training step (models/indi/validation_curve.json): verdict and figure."""
    from ..enhance.validation_curve import (
        CURVE_JSON,
        LATE_FRACTION,
        UNDERTRAINED_DB,
        ValidationCurve,
        curve_figure,
    )
    from ..errors import FormatError

    d = _json(out / "models" / "indi" / CURVE_JSON)
    try:
        curve = ValidationCurve.from_dict(d) if d else None
    except FormatError:
        curve = None
    if curve is None:
        rep.text("No validation curve in models/indi (a model trained before it existed, or a damaged file): "
                 "under-training cannot be judged here; retrain to get it.")
        return
    every = f"every {curve.every} training steps and " if curve.every else ""
    rep.text(f"Validation during training ({every}at the end; models/indi/{CURVE_JSON}): {curve.summary}. "
             f"Rule: under-trained when the last evaluation beats the best one at or before "
             f"{100 * LATE_FRACTION:.0f} % of the steps by more than {UNDERTRAINED_DB:g} dB. PSNR/SSIM in the "
             "normalised units of training (data range 2), "
             f"{curve.val_steps} InDI steps, precision {curve.precision}.")
    figure(rep, curve_figure(curve), out, "enhance_validation_curve",
           "Validation PSNR and SSIM of the held-out slices against the training step (bicubic dashed; the last "
           f"{100 * (1 - LATE_FRACTION):.0f} % of the run shaded; the best step of early stopping in red).")


_HALLU = (("step", "step"), ("image", "image"), ("n_particles", "particles"), ("false_rate", "false (%)"),
          ("missed_rate", "missed (%)"), ("diameter_mae_nm", "size error |d| (nm)"),
          ("diameter_bias_nm", "size bias (nm)"), ("dice", "Dice of the band"))


def _hallucination_part(rep, out: Path) -> None:
    """False / missed particles and size error against the truth (tables/enhance_hallucination), the spread/error
    rank correlation (tables/enhance_spread_error); where there is no truth, a sentence saying so."""
    from .stages_hallucination import HALLUCINATION_TABLE, SPREAD_SAMPLES, SPREAD_TABLE

    h = read_table_of(out, HALLUCINATION_TABLE)
    if h is None:
        rep.text("Hallucination not measured: this run has no true particles of the in-situ steps on an HQ grid "
                 "(enhance.truth_hq with enhance.truth_particles), so false and missed particles and the size "
                 "error of InDI cannot be judged; the spread/error correlation needs an HQ reference too.")
        return
    pct = {"false_rate", "missed_rate"}
    rows = [tuple(100 * float(h[k][i]) if k in pct else h[k][i] for k, _ in _HALLU) for i in range(len(h["step"]))]
    n_true = ", ".join(f"{s}: {int(t)}" for s, t in dict(zip(h["step"], h["n_true"])).items())
    rep.table([c for _, c in _HALLU], rows,
              caption="Hallucination control against the true particles (tables/enhance_hallucination, "
                      "tomo4d.enhance.hallucination_report): every image segmented by one grey band fitted on HQ "
                      f"(band {float(h['band_low'][0]):.4g}..{float(h['band_high'][0]):.4g} on the first step), "
                      "judged in the field of view within the z range of the true particles. False: output "
                      "particles less than half within one voxel of a true particle; missed: true particles less "
                      "than half within one voxel of an output particle; size: equivalent diameter of matched "
                      f"pairs. True particles per step: {n_true}. HQ's own row is the floor of the rule.")
    sp = read_table_of(out, SPREAD_TABLE)
    if sp is not None and len(sp["step"]):
        rep.text(f"Spread against error ({sp['step'][0]}, HQ slices {int(sp['z_first'][0])}-{int(sp['z_last'][0])}, "
                 f"{SPREAD_SAMPLES} InDI samples at N = {int(sp['indi_steps'][0])}; tables/{SPREAD_TABLE}): "
                 f"Spearman rho = {float(sp['rho'][0]):.3f} over {int(sp['n_blocks'][0])} blocks (voxel-wise "
                 f"{float(sp['rho_voxels'][0]):.3f}); the mean error in the top spread decile is "
                 f"{float(sp['decile_ratio'][0]):.3g}x the bottom one's. A positive rho: the spread map is higher "
                 "where the error against HQ is higher.")


def roi_figure(rois: dict, *, size: float = 2.2):
    """Rows = steps, columns = bicubic | InDI | HQ, one grey scale per row (HQ's 0.5/99.5 percentiles)."""
    from matplotlib.figure import Figure

    cols = ("bicubic", "InDI", "HQ")
    fig = Figure(figsize=(size * len(cols), size * len(rois)))
    for i, (step, r) in enumerate(rois.items()):
        lo, hi = np.percentile(r["HQ"], [0.5, 99.5])
        z, y0, x0 = (int(v) for v in r["origin_zyx"])
        for j, name in enumerate(cols):
            ax = fig.add_subplot(len(rois), len(cols), i * len(cols) + j + 1)
            ax.imshow(r[name], cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
            ax.set_title(f"{step} {name}" + (f" (z {z}, y {y0}, x {x0})" if j == 0 else ""), fontsize=8)
            ax.set_axis_off()
    fig.tight_layout()
    return fig


def enhance_section(rep, out: Path, info: dict, figure) -> None:
    """InDI enhancement: the pair's registration, the training, quality of bicubic and InDI against HQ."""
    from ..report import slice_figure

    pq = _json(out / "models" / "enhance_pair_quality.json")
    met = _json(out / "models" / "indi" / "metrics.json")
    apply = info.get("options", {}).get("enhance", {}).get("apply_to_series")
    rep.section("InDI enhancement",
                "LQ scan of the training pair up-sampled x2 and registered onto the HQ scan "
                f"({pq.get('registration', '?')}: normalised cross-correlation {pq.get('ncc', float('nan')):.3f}, "
                f"relative grey-level residual {pq.get('residual_rms_relative', float('nan')):.3f}, "
                f"{100 * pq.get('covered_fraction', float('nan')):.0f} % of HQ covered; "
                "models/enhance_pair_transform.json). InDI trained "
                f"{met.get('steps', '?')} steps (resumed from step {met.get('resumed_from_step', 0)}; models/indi/), "
                "every step of inputs.series enhanced (volumes/enhanced_<step>.ome.zarr). "
                + ("The analysis stages read the enhanced series (twice finer)." if apply
                   else "Later stages read inputs.series."))
    _curve_part(rep, out, figure)
    _sweep_part(rep, out, figure)
    q = read_table_of(out, "enhance_quality")
    if q is not None:
        _quality_table(rep, q)
    _hallucination_part(rep, out)
    rois = read_rois(out)
    if rois:
        figure(rep, roi_figure(rois), out, "enhance_roi",
               "Regions of interest on the HQ grid, one row per step (pair: the training pair): bicubic LQ | InDI | "
               "HQ, the same grey scale in a row (HQ's 0.5-99.5 percentiles). Each is the window of at most "
               f"{ROI_PX} x {ROI_PX} HQ pixels with the largest gradient magnitude of the middle z slice "
               "(tables/enhance_roi.npz).")
    imgs, titles = _slices(out, info["names"])
    if imgs:
        figure(rep, slice_figure(imgs, titles), out, "enhanced_slices", "InDI-enhanced series, middle xy slice")
