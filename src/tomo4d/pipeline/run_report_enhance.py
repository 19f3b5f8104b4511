"""Report section of the enhance stages, from saved outputs only (``models/enhance_pair_*.json``,
``models/indi/metrics.json``, ``tables/enhance_quality``, ``volumes/enhanced_<step>.ome.zarr``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .stage_io import read_table_of

__all__ = ["enhance_section"]


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
                + ("The dvc stage read the enhanced series." if apply else "Later stages read inputs.series."))
    q = read_table_of(out, "enhance_quality")
    if q is not None:
        cols = [("step", "step"), ("psnr_db_bicubic", "PSNR bicubic (dB)"), ("psnr_db_InDI", "PSNR InDI (dB)"),
                ("ssim_bicubic", "SSIM bicubic"), ("ssim_InDI", "SSIM InDI"), ("cnr_bicubic", "CNR bicubic"),
                ("cnr_InDI", "CNR InDI"), ("cnr_HQ", "CNR HQ (truth)")]
        truth = len(q["step"]) > 1
        rep.table([h for _, h in cols], [tuple(q[k][i] for k, _ in cols) for i in range(len(q["step"]))],
                  caption="Measured (bicubic LQ, InDI) beside the HQ truth, on the HQ grid through the pair transform "
                          "(tables/enhance_quality). 'pair': held-out slices of the training pair, PSNR from training."
                          + ("" if truth else " No HQ scans of the in-situ steps (enhance.truth_hq): pair only."))
    imgs, titles = _slices(out, info["names"])
    if imgs:
        figure(rep, slice_figure(imgs, titles), out, "enhanced_slices", "InDI-enhanced series, middle xy slice")
