"""``OUT/report.html`` rendered from a run folder's saved outputs alone (no recomputation).

Sections are keyed by stage and ordered by the workflow; a stage is shown when it is a stage of
the last run and its done-marker exists (cached stages too), so a report never mixes results of an
unfinished recomputation, nor those of a stage the experiment file no longer has.
Figures are also written to ``OUT/figures/*.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from .run_report_enhance import enhance_section
from .run_report_lithiation import lithiation_section, numbers_section
from .run_report_neutron import neutron_section
from .run_report_neutron_spectra import neutron_spectra_section
from .run_report_reconstruct import reconstruct_section
from .run_report_sections import (
    particles_section,
    provenance_section,
    residual_section,
    segment_section,
)
from .stage_io import read_table_of
from .stages_align import align_section

__all__ = ["render_report"]


def _done(out: Path, stage: str) -> bool:
    from .runner import STATE_DIR

    return (out / STATE_DIR / "done" / f"{stage}.json").is_file()


def _table(out: Path, name: str):
    return read_table_of(out, name)


def _figure(rep, fig, out: Path, name: str, caption: str) -> None:
    from ..io import atomic_output
    from ..report import figure_png

    png = figure_png(fig)
    with atomic_output(out / "figures" / f"{name}.png", overwrite=True) as tmp:
        tmp.write_bytes(png)
    rep.figure(png, caption)


def _vs_time(x, series: dict, ylabel: str, xlabel: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    colours = {}
    for label, y in series.items():  # a truth dashed, in the colour of its measurement ("X" and "X (truth)")
        truth = "truth" in label or label == "true"
        base = next(iter(series)) if label == "true" else label.replace(" (truth)", "")  # "true": of the first
        c = colours.setdefault(base, f"C{len(colours)}")
        ax.plot(x, y, "o--" if truth else "o-", color=c, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _axis(info: dict, steps):
    """Time axis (h) of the listed steps."""
    idx = [info["names"].index(str(s)) for s in steps]
    return np.asarray(info["time_s"], float)[idx] / 3600.0


def _quantify_section(rep, out: Path, info: dict) -> None:
    th, ph = _table(out, "thickness"), _table(out, "phases")
    rep.section("Quantification", "Electrode thickness and phase volumes of the label series "
                                  "(tables/thickness, tables/phases; Parquet + CSV, units in the column names).")
    truth = th is not None and "true_thickness_mean_um" in th
    if th is not None:
        nan = np.full(len(th["step"]), np.nan)
        tm, te = th.get("true_thickness_mean_um", nan), th.get("true_expansion", nan)
        rep.table(["step", "thickness (um)", "std (um)", "expansion (%)"] + (["true thickness (um)",
                                                                             "true expansion (%)"] if truth else []),
                  [(s, m, d, 100 * e) + ((t, 100 * x) if truth else ())
                   for s, m, d, e, t, x in zip(th["step"], th["thickness_mean_um"], th["thickness_std_um"],
                                               th["expansion"], tm, te)],
                  caption="Measured from the segment stage's labels beside the same measurement on the true labels "
                          "(truth.labels). Both place each interface on the voxel grid: where an interface is flat (a "
                          "pristine electrode's top can be) that is up to half a voxel off in both columns."
                  if truth else "")
        series = {"thickness": th["thickness_mean_um"], **({"true": tm} if truth else {})}
        _figure(rep, _vs_time(_axis(info, th["step"]), series, "thickness (um)", "time (h)"), out, "thickness",
                "Electrode thickness vs time")
    if ph is not None:
        cols = [c for c in ph if c.endswith("_volume_um3") and c != "region_volume_um3"]
        extra = ["true_rnl"] if "true_rnl" in ph else []
        rep.table(["step", *cols, "RNL", *(["true RNL"] if extra else [])],
                  [(ph["step"][i], *(ph[c][i] for c in cols), ph["rnl"][i], *(ph[c][i] for c in extra))
                   for i in range(len(ph["step"]))],
                  caption="Phase volumes (um^3) and relative non-lithiated silicon volume (RNL).")


def _dvc_route(d: dict) -> str:
    """One paragraph: how the run's dvc section measured the fields (its options as recorded for the run)."""
    sp = d.get("node_spacing")
    if d.get("method") == "global":
        text = [f"Global DVC (tomo4d.dvc.correlate_global): one regularised trilinear field, nodes {sp} px apart, "
                "with brightness and contrast fields estimated with it."]
    else:
        text = [f"Local DVC (tomo4d.dvc.correlate): one window per node, nodes {sp} px apart."]
    if d.get("incremental"):
        text.append("Each pair T(n-1) -> Tn correlated and composed onto T0 -> T(n-1) (reference updating); errors "
                    "of the steps add up.")
    else:
        text.append("Each step correlated against T0" + (", started from the previous step's field."
                                                         if d.get("from_previous") else "."))
    if d.get("deconvolve_iterations"):
        text.append(f"Both scans deconvolved first (Richardson-Lucy, {d['deconvolve_iterations']} iterations, "
                    f"PSF sigma {d.get('deconvolve_psf_sigma_px')} px).")
        if d.get("method") == "global" and d.get("deconvolve_psf_sigma_px"):
            from ..dvc import boundary_margin_px

            m = boundary_margin_px(float(d["deconvolve_psf_sigma_px"]))
            text.append(f"The {m} px at each face (at most a quarter of the axis), where the deconvolution saw the "
                        "volume's reflection, the same in every scan, left out of the match (the z faces only outside "
                        "the electrode).")
    if d.get("axial_start"):
        text.append("Started from an axial profile fit" + (" with the in-plane expansion." if d.get("axial_lateral")
                                                           else "."))
    mask = {"electrode": "only the T0 electrode band (quantify's interfaces) matched",
            "above_collector": "the rigid collector left out of the match (quantify's T0 interface)"}.get(d.get("mask"))
    if mask:
        text.append(mask[0].upper() + mask[1:] + ".")
    if mask and d.get("method") == "global" and d.get("node_grid") == "cover":
        text.append("The node rows placed where the field covers most of the electrode under the mask, the lowest "
                    "usable one as close above the collector interface as the mask allows (dvc.node_grid: cover), "
                    "wherever the scans' field of view was cut.")
    if d.get("interfaces"):
        text.append("The field's mean axial displacement at the collector and separator interfaces tied to where the "
                    "quantify stage found them in each step (tomo4d.dvc.InterfaceMotion): the strain then carries "
                    "the segmentation's error of the thickness change instead of the blur's.")
    if d.get("method") == "global" and d.get("flag_textureless", True):
        text.append("Nodes whose T0 window holds no grey variance above T0's noise (from the repeat scan, else from "
                    "T0's finest wavelet band) are LOW_TEXTURE and left out: there the field is only the "
                    "regularisation's continuation.")
    return " ".join(text)


def _route_notes(out: Path) -> dict:
    """The notes of the pair behind the first field that records its Laplacian's weight (a composed field: its last
    increment's), or {} when none does."""
    from ..dvc import DisplacementField

    for path in sorted((out / "fields").glob("dvc_T0_*.h5")):
        try:
            notes = DisplacementField.load(path).notes
        except (OSError, InputError):
            continue
        if "options" not in notes:  # a composed field: its last increment's
            notes = notes.get("increment") or {}
        if (notes.get("options") or {}).get("regularisation") is not None:
            return notes
    return {}


def _route_weight(notes: dict) -> str:
    """The Laplacian's weight the global route ran with (and T0's noise ratio it follows on deconvolved scans;
    ``sections.route_regularisation``), or "" when the notes do not record it."""
    if not notes:
        return ""
    text = f" The Laplacian's weight: {float(notes['options']['regularisation']):g}"
    if "route_noise_ratio" in notes:
        from .sections import NOISE_RATIO_FULL_WEIGHT, ROUTE_REGULARISATION

        lo, hi = ROUTE_REGULARISATION["as_scanned"], ROUTE_REGULARISATION["deconvolved"]
        text += (f", from T0's noise variance over its grey-level variance in the electrode band "
                 f"({float(notes['route_noise_ratio']):.3g}; {hi:g} from {NOISE_RATIO_FULL_WEIGHT:g} up, in "
                 f"proportion below it, at least {lo:g})")
    return text + "."


#: The electrode's T0 thickness in PSF sigmas and in node spacings (``notes["electrode_psf_sigmas"]``,
#: ``["electrode_node_spacings"]``, recorded by the dvc stage) below which the report cautions that the split of the
#: axial strain between the anode's layers is uncertain.  Only the phantom's high-resolution scans (about 15 and 10.6)
#: read both layers within 0.02 of the truth (at 5 of 7 seeds; 0.024 at all), also with the low-resolution scans' noise
#: added.  Its low-resolution scans (6.9 and 5.4) read the separator side up to 0.06 high (seeds 0-4), as much without
#: any noise; with their PSF at 1.4 px (15.4 and 5.4, noise-free) the collector side up to 0.03 high instead; with 3 px
#: node spacing (6.9 and 7.2) the separator side up to 0.07 high; the high-resolution scans with their PSF 1.5x /
#: doubled (10.1 / 7.6 and 10.6) the collector side 0.04 / 0.11 low (RESULTS.md session 41): the split follows the
#: resolution, not the noise.  The caution starts just below the one validated figure of each.
SPLIT_CAUTION_PSF_SIGMAS = 14.0
SPLIT_CAUTION_NODE_SPACINGS = 10.0

#: Fields written before the resolution was recorded (session 41) caution on T0's noise ratio instead, the figure
#: that separated the two resolutions on the phantom (high 0.017-0.019, low 0.174-0.183).
SPLIT_CAUTION_NOISE_RATIO = 0.05


#: Where the scans resolve the electrode as finely as the validated ones: each layer within about 0.02, but the
#: difference between them read smaller than the truth's at every seed measured (RESULTS.md session 42).
SPLIT_NOTE_RESOLVED = (
    "Note: at this resolution the phantom's layers read within 0.02 of the truth at 5 of 7 seeds (0.024 at all), "
    "but the split between them compressed: the separator side's excess over the collector side read 0.009-0.044 "
    "smaller than the truth's at the most expanded step (seeds 1 and 3-6; benchmarks/RESULTS.md, issue 15, session "
    "42). Read a difference between the layers of a few hundredths as a lower bound.")


def _split_caution(notes: dict, *, deconvolved: bool = True) -> str:
    """The caution on the layers' split of ln U_zz where the scans resolve the electrode less finely than the
    validated high-resolution ones (``deconvolved``: the run deconvolved its scans); where they resolve it as finely,
    :data:`SPLIT_NOTE_RESOLVED`; "" where the field records neither its resolution nor T0's noise."""
    widths, spacings = notes.get("electrode_psf_sigmas"), notes.get("electrode_node_spacings")
    ratio = notes.get("route_noise_ratio")
    if spacings is not None:
        short = [f"{float(spacings):.3g} node spacings"] if float(spacings) < SPLIT_CAUTION_NODE_SPACINGS else []
        if deconvolved and widths is not None and float(widths) < SPLIT_CAUTION_PSF_SIGMAS:
            short.append(f"{float(widths):.3g} PSF widths (sigma)")
        clauses = [f"the electrode is {' and '.join(short)} thick at T0"] if short else []
        if not deconvolved:
            clauses.append("the scans were not deconvolved (dvc.deconvolve_iterations)")
        if not clauses:
            return SPLIT_NOTE_RESOLVED
        why = (f"Caution: {' and '.join(clauses)}, where the split was validated only from "
               f"{SPLIT_CAUTION_NODE_SPACINGS:g} node spacings and {SPLIT_CAUTION_PSF_SIGMAS:g} PSF widths on "
               "deconvolved scans. ")
    elif ratio is not None and float(ratio) > SPLIT_CAUTION_NOISE_RATIO:
        why = (f"Caution: T0's noise variance is {float(ratio):.3g} of its grey-level variance in the electrode band "
               "(this run's fields do not record the electrode's thickness in node spacings and PSF widths, the "
               "figures the split follows). ")
    else:
        return ""
    return why + ("On the phantom's low-resolution scans (5.4 node spacings, 6.9 PSF widths) the separator side's "
                  "ln U_zz read up to 0.06 above the truth from the third step on (seeds 0-4; at one seed about a "
                  "third of it the segmented separator interface), as much on the same scans without noise; with "
                  "their PSF at 1.4 px the collector side read up to 0.03 above it instead, and without the "
                  "lithiated silicon's contrast loss up to 0.04 below it (0.07 without noise). Its high-resolution "
                  "scans with their PSF 1.5x / doubled (10.1 / 7.6 PSF widths) read the collector side up to 0.04 / "
                  "0.11 below the truth and det F - 1 up to 0.04 / 0.08 below. On its "
                  "high-resolution scans (10.6 node spacings, about 15 PSF widths) both layers read within 0.02 at "
                  "5 of 7 seeds (0.024 at all), also with the low-resolution scans' noise added, with the node rows "
                  "placed as dvc.node_grid: cover places them (benchmarks/RESULTS.md, issue 15, sessions 36-42). "
                  "Read the split of the axial "
                  "strain between the layers as uncertain by that much.")


def _beyond_caution(flagged: str, *, method: str, placed: bool) -> str:
    """The caution on the steps ``flagged`` beyond :data:`tomo4d.dvc.VALIDATED_AXIAL_HENCKY`: what the run's
    ``method`` read on the phantom at such strains.  The local method there is not the validated route, and its
    figures (benchmarks/RESULTS.md, session 42) are far worse than the global route's, which the caution quoted for
    every run until session 42."""
    from ..dvc import VALIDATED_AXIAL_HENCKY

    head = (f"Caution: at {flagged} the axial strain exceeds {VALIDATED_AXIAL_HENCKY:g} (ln U_zz, 90th percentile "
            "of the nodes), beyond the range where ")
    if method != "global":
        return head + ("local DVC (one window per node, this run's dvc.method) has been validated against a known "
                       "truth. On the phantom at these strains (40-60 % expansion while lithiated silicon loses "
                       "contrast) the local method converged at 6-69 % of the anode's nodes from the second step on, "
                       "read the median displacement error 1.1-2.6 px, the layers' ln U_zz up to 0.12 and det F - 1 "
                       "up to 0.2 off the truth, and at the most expanded step left one or both layers without a "
                       "valid strain (benchmarks/RESULTS.md, issue 15, session 42). Do not use these steps' "
                       "figures. The route measured accurate there is dvc.method: global with axial_start, "
                       "incremental, mask: above_collector and interfaces (the demo's; tomo4d init lists it), which "
                       "needs the quantify section and holds both scans of a pair in memory.")
    return head + ("the DVC has been validated against a known truth: on the phantom at ln U_zz 0.15-0.45 (seeds "
                   "0-6 at high resolution, 0-4 at low) the collector side's ln U_zz reads within 0.023 of the truth "
                   "with the node rows placed as dvc.node_grid: cover places them (up to 0.04 high on the "
                   "high-resolution scans with the rows placed otherwise against the collector interface" +
                   ("" if placed else ", as in this run") +
                   "), the separator side's up to 0.06 high on the low-resolution scans, and the median displacement "
                   "error is 0.29-0.86 px against a 0.3 px target (benchmarks/RESULTS.md, issue 15, sessions 36-42). "
                   "Treat these steps' local displacements as indicative.")


def _volumetric_caution(placed: bool) -> str:
    """The caution on det F - 1 and the collector side's ln U_zz; ``placed``: the run placed its node rows as
    ``dvc.node_grid: cover`` (method global with a mask)."""
    return ("Caution: det F - 1 (volumetric strain) includes the in-plane expansion, the part of the field measured "
            "least well: on the phantom the in-plane expansion (ln U_yy + ln U_xx) read up to 0.021 below the truth "
            "and up to 0.011 above it (seeds 0-2), and det F - 1 0.025 below to 0.044 above (seeds 0-6 at high "
            "resolution, 0-4 at low) "
            "(the demo's electrode up to 0.032 below; the high-resolution scans with the low-resolution ones' noise "
            "up to 0.039 below; benchmarks/RESULTS.md, issue 15, sessions 36-42). The "
            "collector side's ln U_zz is the more robust figure; it moved by up to 0.03 with where the node rows "
            "lie against the collector interface, " +
            ("and this run places them by the rule under which it read within 0.02 (dvc.node_grid: cover; sessions "
             "39-40)." if placed else "and this run did not place them by the rule under which it read within 0.02 "
             "(set dvc.node_grid: cover with method: global and a mask; sessions 39-40)."))


def _strain_section(rep, out: Path, info: dict) -> None:
    summ = _table(out, "strain_summary")
    d = info["options"].get("dvc") or {}
    notes = _route_notes(out) if d.get("method") == "global" else {}
    placed = d.get("method") == "global" and d.get("mask", "none") != "none" and d.get("node_grid") == "cover"
    rep.section("DVC and finite strain",
                _dvc_route(d) + _route_weight(notes) +
                " Fields T0 -> step in fields/dvc_T0_<step>.h5; "
                "finite strain from the displacement gradients (fields/strain_T0_<step>.h5; .vtk files for "
                "ParaView beside them): Hencky axial ln U_zz and volumetric det F - 1 over the usable nodes.")
    if summ is None:
        return
    truth = "median_error_px" in summ
    flagged, capped = (", ".join(str(s) for s, f in zip(summ["step"], summ.get(k, ())) if f)
                       for k in ("beyond_validated_range", "solver_capped"))
    if flagged:
        rep.text(_beyond_caution(flagged, method=d.get("method", "local"), placed=placed))
    if capped:
        rep.text(f"Caution: at {capped} the field rests on a global DVC solve that stopped at its "
                 "iteration cap (dvc.global_options.max_iterations) before the criterion settled: it is that iterate. "
                 "On the phantom this capped L-BFGS route reads the side strains within about 0.02 of the truth, but "
                 "its figures move by up to 0.007 with floating-point rounding (thread counts) and by up to 0.02-0.08 "
                 "with the start (benchmarks/RESULTS.md, issue 15, sessions 25-26).")
    rep.text(_volumetric_caution(placed))
    split = _split_caution(notes, deconvolved=bool(d.get("deconvolve_iterations")))
    if split:
        rep.text(split)
    keys = ["step", "n_nodes", "n_usable", "n_converged", "n_interpolated", "hencky_zz_mean", "volumetric_mean"]
    keys += [k for k in ("beyond_validated_range", "solver_capped") if k in summ]
    keys += ["hencky_zz_mean_true", "volumetric_mean_true", "median_error_px"] if truth else []
    rep.table(keys, [tuple(summ[k][i] for k in keys) for i in range(len(summ["step"]))],
              caption="With truth.displacement: the true field sampled at the nodes, its strain by the same "
                      "operator over the nodes the measurement has (_true), and the median |u - u_true| over the "
                      "usable nodes, px of the analysis grid."
              if truth else "")
    curves = {"ln U_zz": summ["hencky_zz_mean"], "det F - 1": summ["volumetric_mean"]}
    if truth:
        curves.update({"ln U_zz (truth)": summ["hencky_zz_mean_true"], "det F - 1 (truth)": summ["volumetric_mean_true"]})
    _figure(rep, _vs_time(_axis(info, summ["step"]), curves, "mean strain", "time (h)"), out, "strain_mean",
            "Mean finite strain vs time")
    _strain_maps(rep, out, [str(n) for n in summ["step"]])
    reg = _table(out, "regional_strain")
    if reg is not None:
        _regional(rep, out, info, reg, _table(out, "regional_strain_truth"))


def _strain_maps(rep, out: Path, steps) -> None:
    """ln U_zz on the central xz plane of the node grid of each step (fields/strain_T0_<step>.h5), one colour scale."""
    from matplotlib.figure import Figure

    from ..dvc import StrainField

    maps = []
    for name in steps:
        path = out / "fields" / f"strain_T0_{name}.h5"
        if path.exists():
            st = StrainField.load(path)
            hz = np.where(st.valid, st.component("hencky_zz"), np.nan)
            maps.append((name, hz[:, hz.shape[1] // 2, :]))
    finite = [m[np.isfinite(m)] for _, m in maps]
    if not maps or not any(f.size for f in finite):
        return
    vmax = max(float(np.percentile(np.abs(f), 99)) for f in finite if f.size) or 1.0
    fig = Figure(figsize=(2.6 * len(maps) + 0.8, 2.8))
    for i, (name, m) in enumerate(maps):
        ax = fig.add_subplot(1, len(maps), i + 1)
        im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(f"ln U_zz T0->{name}", fontsize=9)
        ax.set_xlabel("x node")
        ax.set_ylabel("z node")
    fig.colorbar(im, ax=fig.axes, shrink=0.8)
    _figure(rep, fig, out, "strain_maps", "Hencky axial strain ln U_zz on the central xz plane of the node grid "
            "(z down; unusable nodes blank)")


def _layer_mean(table: dict) -> np.ndarray:
    """The layers' volume mean (``strain_volume_mean``); the node mean for tables written before it existed."""
    return table.get("strain_volume_mean", table["strain_mean"])


def _by_step_region(table: dict, sel, values) -> dict:
    return {(str(table["step"][i]), str(table["region"][i])): float(values[i]) for i in np.flatnonzero(sel)}


#: The regional table's components in the report, with their labels.
_REGIONAL = (("hencky_zz", "ln U_zz"), ("volumetric", "det F - 1"))


def _regional(rep, out: Path, info: dict, reg: dict, true: dict | None) -> None:
    """Axial and volumetric strain by layer of the T0 anode and over the whole electrode (volume means), with the
    true field's beside them when known."""
    comps = [(c, label) for c, label in _REGIONAL if np.any(reg["component"] == c)]
    cols = ["step", "region", "component", "nodes", "volume mean", "node mean", "median", "std"]
    if true is not None:
        cols += ["true volume mean (same part)", "error", "true volume mean (whole region)"]
    table, figures, mean = [], [], _layer_mean(reg)
    for c, label in comps:
        sel = reg["component"] == c
        tsel = None if true is None else true["component"] == c
        # by (step, region): every step has a truth; over the part of the region the measurement covers (tables
        # written before session 22: over the whole region only) and over the whole region
        same = {} if tsel is None else _by_step_region(true, tsel, true.get("strain_volume_mean_covered",
                                                                             _layer_mean(true)))
        whole = {} if tsel is None else _by_step_region(true, tsel, _layer_mean(true))
        for i in np.flatnonzero(sel):
            row = (reg["step"][i], reg["region"][i], label, reg["n_nodes"][i], mean[i], reg["strain_mean"][i],
                   reg["strain_median"][i], reg["strain_std"][i])
            if tsel is not None:
                key = (str(reg["step"][i]), str(reg["region"][i]))
                t = same.get(key, float("nan"))
                row += (t, mean[i] - t, whole.get(key, float("nan")))
            table.append(row)
        series = {str(r): mean[sel & (reg["region"] == r)] for r in dict.fromkeys(reg["region"][sel])}
        steps = reg["step"][sel & (reg["region"] == reg["region"][sel][0])]
        if tsel is not None:  # the curves share the measured steps
            series.update({f"{r} (truth)": np.asarray([same.get((str(s), str(r)), np.nan) for s in steps])
                           for r in dict.fromkeys(true["region"][tsel])})
        figures.append((_vs_time(_axis(info, steps), series, f"mean {label} (volume)", "time (h)"),
                        "strain_regions" if c == "hencky_zz" else f"strain_regions_{c}",
                        f"Mean {label} vs time by layer and over the electrode (volume means)"
                        + (" (measured and true)" if tsel is not None else "")))
    rep.table(cols, table, caption="Axial (ln U_zz) and volumetric (det F - 1) finite strain by layer of the T0 "
              "anode (collector side first) and over the whole electrode: the region's volume mean (F of the "
              "displacement field's interpolant over the part of the region the measurement covers, volume_covered in "
              "tables/regional_strain), and the mean, median and spread over the nodes inside it"
              + ("; beside it the true field's volume mean over the same part and the difference, and the true volume "
                 "mean over the whole region (what it did)." if true is not None else "."))
    for fig, name, caption in figures:
        _figure(rep, fig, out, name, caption)


#: report section of each stage, in workflow order
SECTIONS = (("reconstruct", lambda rep, out, info: reconstruct_section(rep, out, info, _figure)),
            ("enhance_quality", lambda rep, out, info: enhance_section(rep, out, info, _figure)),
            ("align", align_section), ("segment", lambda rep, out, info: segment_section(rep, out, info, _figure)),
            ("quantify", _quantify_section), ("strain", _strain_section),
            ("residual", lambda rep, out, info: residual_section(rep, out, info, _figure)),
            ("particles", lambda rep, out, info: particles_section(rep, out, info, _figure, _vs_time)),
            ("lithiation", lambda rep, out, info: lithiation_section(rep, out, info, _figure)),
            ("neutron", lambda rep, out, info: neutron_section(rep, out, info, _figure, _vs_time)),
            ("neutron_spectra", lambda rep, out, info: neutron_spectra_section(rep, out, info, _figure)))


def render_report(out) -> Path:
    """Render ``OUT/report.html`` (and ``OUT/figures/*.png``) from the saved outputs of a run folder."""
    from ..report import Report
    from .runner import STATE_DIR, is_run_folder

    out = Path(out)
    if not is_run_folder(out):
        raise InputError(f"{str(out)!r} is not a tomo4d run folder (no run marker and {STATE_DIR}/); give the "
                         "folder that tomo4d run -o wrote")
    try:
        info = json.loads((out / STATE_DIR / "experiment.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(f"run folder {str(out)!r} has no finished run yet ({STATE_DIR}/experiment.json is "
                         "missing); run tomo4d run again to finish it") from None
    rep = Report(title=f"tomo4d: {info['options'].get('name', 'experiment')}")
    soc = info.get("state_of_charge") or [None] * len(info["names"])
    rep.section("Experiment", f"{len(info['names'])} time steps, voxel size "
                              f"{', '.join(f'{v:g}' for v in info['voxel_size_nm'])} nm. Inputs, fingerprints, "
                              "options and versions: provenance.json.")
    rep.table(["step", "time (s)", "state of charge"], list(zip(info["names"], info["time_s"], soc)))
    for stage, section in SECTIONS:
        if _done(out, stage) and stage in info.get("stages", ()):  # stages of the last run only, never stale ones
            section(rep, out, info)
    numbers_section(rep, out, [s for s in info.get("stages", ()) if _done(out, s)])  # every table, with units
    provenance_section(rep, out, lambda stage: _done(out, stage))
    missing = [s for s in info.get("stages", ()) if not _done(out, s)]
    if missing:
        rep.section("Not finished", f"Stages without results yet: {', '.join(missing)} (run tomo4d run again).")
    return rep.save(out / "report.html", overwrite=True)
