"""DVC accuracy at battery expansions (10-60 %) on the phantom, against its exact finite-strain truth.

Correlates every step T1..Tn of the phantom's in-situ series against T0 (each step initialised by the
previous step's field, the first by an integer search; or, with ``--start truth``, by the exact field,
which separates the accuracy of the matching from its capture range) and prints, per step:

- the fraction of the anode's nodes (windows wholly inside the T0 anode) converged before replacement,
- their median displacement error (px) against the phantom's exact map,
- the mean Hencky axial strain ln U_zz of the collector-side and separator-side halves of the anode
  (node-difference strain of the measured field) next to the truth's volume averages and the exact
  strain sampled at the same nodes (the acceptance uses the volume averages),
- the anode's mean volumetric strain det F - 1 next to the truth's,

then whether the issue's acceptance (per-side ln U_zz and volumetric within 0.02, median error
<= 0.3 px, >= 90 % converged, separator side > collector side) holds at every step.

    .venv/bin/python benchmarks/bench_dvc_large.py [--shape 96] [--series hq] [--grey-model znssd]
        [--psf-sigma 2.8] [--spacing 6] [--half-window 6] [--start chain|truth|affine|chain-affine|axial] [--tiles 3x3]
        [--param key=value ...]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _truth_field(exp, grid, step, spacing, hw, shape):
    from tomo4d.dvc import DisplacementField
    from tomo4d.dvc.field import node_grid

    pos, gs = node_grid(shape, node_spacing=spacing, half_window=hw)
    pos_nm = np.asarray(grid.origin_nm) + pos * grid.voxel_size_nm
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, :3, :3] = exp.truth.deformation_gradient(step, pos_nm)
    phi[:, :3, 3] = exp.truth.displacement(step, pos_nm) / grid.voxel_size_nm
    return DisplacementField(pos.astype(float), phi, np.zeros(len(pos), np.int8), grid_shape=gs,
                             node_spacing_px=(spacing,) * 3, half_window_px=(hw,) * 3,
                             notes={"volume_shape_zyx": list(shape)})


def _row(exp, grid, step, field, truth_means, hw, *, tent=False):
    from tomo4d.dvc import strain_field

    t = exp.truth
    pos_nm = np.asarray(grid.origin_nm) + field.positions_zyx_px * grid.voxel_size_nm
    z, zc, th0 = pos_nm[:, 0], t.z_collector_nm, t.thickness_nm[0]
    half = hw * grid.voxel_size_nm
    shape = np.asarray(field.volume_shape_zyx or (0, 0, 0))
    in_yx = np.all((field.positions_zyx_px[:, 1:] >= hw) & (field.positions_zyx_px[:, 1:] <= shape[1:] - 1 - hw), axis=1)
    inside = (z - half >= zc) & (z + half < zc + th0) & in_yx  # windows wholly inside the T0 anode
    inside &= field.status != 3  # with data: not OUTSIDE_MASK (e.g. the lateral faces left out, session 19)
    sides = {"collector": inside & (z < zc + th0 / 2), "separator": inside & (z >= zc + th0 / 2)}
    converged = field.status == 0  # replaced (interpolated) and out-of-view nodes did not converge
    u_true = t.displacement(step, pos_nm) / grid.voxel_size_nm
    err = np.linalg.norm(field.displacement_zyx_px - u_true, axis=1)
    st = strain_field(field)
    hz, vol, ok = st.component("hencky_zz").ravel(), np.ravel(st.volumetric), st.valid.ravel()
    row = {"step": t.step_names[step], "soc": float(t.state_of_charge[step]), "anode_nodes": int(inside.sum()),
           "converged": float(np.mean(converged[inside])) if inside.any() else float("nan"),
           "median_error_px": float(np.median(err[inside & field.usable])) if (inside & field.usable).any()
           else float("nan"), "median_error_z_px": float(np.median(np.abs(field.displacement_zyx_px[:, 0] - u_true[:, 0])
                                                                  [inside & field.usable])) if (inside & field.usable).any()
           else float("nan"), "out_of_view": int((field.status == 8).sum())}
    sel = inside & field.usable
    if sel.any():
        u_sup = _support_truth(exp, grid, step, field, tent=tent, support=hw)
        row["median_error_support_px"] = float(np.median(np.linalg.norm(field.displacement_zyx_px - u_sup, axis=1)[sel]))
        row["median_support_vs_exact_px"] = float(np.median(np.linalg.norm(u_sup - u_true, axis=1)[sel]))
    h_true = t.hencky_strain(step, pos_nm)[:, 0, 0]  # exact, sampled at the same nodes
    for side, sel in sides.items():
        s = sel & ok
        row[f"hencky_zz_{side}"] = float(np.mean(hz[s])) if s.any() else float("nan")
        row[f"hencky_zz_{side}_truth"] = float(truth_means[f"hencky_zz_{side}"][step])
        row[f"hencky_zz_{side}_truth_nodes"] = float(np.mean(h_true[s])) if s.any() else float("nan")
    row.update(_volume_means(exp, grid, field, step))
    s = inside & ok
    row["volumetric"] = float(np.mean(vol[s])) if s.any() else float("nan")
    row["volumetric_truth"] = float(truth_means["volumetric_anode"][step])
    return row


def _volume_means(exp, grid, field, step):
    """Mean Hencky zz of each half of the T0 anode and its det F - 1 as volume averages of the measured field, the
    way the truth is averaged: ``tomo4d.dvc.slab_volume_mean`` (F of the field's trilinear interpolant at points
    filling each half; points whose 8 nodes are not all usable left out; the runner's regional tables since
    session 19; sessions 17-18 interpolated the node-difference F instead, which reads the halves next to a kink
    up to ~0.01 lower).  The node means above ("windows wholly inside the anode") leave out the strain next to
    both interfaces, which at T3 is far from the half's mean (the exact profile runs 0.18 -> 0.08 -> 0.36 ->
    0.20 -> -0.05 through the anode)."""
    from tomo4d.dvc import slab_volume_mean

    t = exp.truth
    zc = (t.z_collector_nm - grid.origin_nm[0]) / grid.voxel_size_nm
    zs = zc + t.thickness_nm[0] / grid.voxel_size_nm
    out = {f"hencky_zz_{side}_volume": slab_volume_mean(field, lo, hi, components=("hencky_zz",)).values[0]
           for side, (lo, hi) in (("collector", (zc, (zc + zs) / 2)), ("separator", ((zc + zs) / 2, zs)))}
    out["volumetric_volume"] = slab_volume_mean(field, zc, zs, components=("volumetric",)).values[0]
    # the truth over the same part of each half (the measured nodes' statuses: the faces left out of the match are
    # not covered), the like-for-like comparison the runner's report makes since session 22
    phi = field.phi.copy()
    pos_nm = np.asarray(grid.origin_nm) + field.positions_zyx_px * grid.voxel_size_nm
    phi[:, :3, 3] = t.displacement(step, pos_nm) / grid.voxel_size_nm
    exact = field.with_(phi=phi)
    for side, (lo, hi) in (("collector", (zc, (zc + zs) / 2)), ("separator", ((zc + zs) / 2, zs))):
        out[f"hencky_zz_{side}_covered_truth"] = slab_volume_mean(exact, lo, hi, components=("hencky_zz",)).values[0]
    out["volumetric_covered_truth"] = slab_volume_mean(exact, zc, zs, components=("volumetric",)).values[0]
    return out


def _support_truth(exp, grid, step, field, *, tent: bool, support: int):
    """The exact displacement averaged over each node's support (px): a box of the window (local DVC) or the
    trilinear tent of the control grid (global DVC): the field a perfect measurement of that resolution would
    give.  Particle-scale swelling finer than the support is not resolvable by either."""
    from scipy import ndimage

    shape = tuple(int(v) for v in field.volume_shape_zyx)
    pts = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    u = exp.truth.displacement(step, np.asarray(grid.origin_nm) + pts * grid.voxel_size_nm) / grid.voxel_size_nm
    k = np.arange(-support, support + 1, dtype=float)
    w = (1 - np.abs(k) / (support + 1)) if tent else np.ones_like(k)
    w /= w.sum()
    out = np.empty((field.n_nodes, 3))
    for c in range(3):
        v = u[:, c].reshape(shape)
        for ax in range(3):
            v = ndimage.convolve1d(v, w, axis=ax, mode="nearest")
        out[:, c] = ndimage.map_coordinates(v, field.positions_zyx_px.T, order=1, mode="nearest")
    return out


def _print_profile(exp, grid, step, field):
    """Per z row of usable nodes: mean measured u_z, true u_z, their difference, and the median lateral error."""
    pos_nm = np.asarray(grid.origin_nm) + field.positions_zyx_px * grid.voxel_size_nm
    u_true = exp.truth.displacement(step, pos_nm) / grid.voxel_size_nm
    z = field.positions_zyx_px[:, 0]
    zc = (exp.truth.z_collector_nm - grid.origin_nm[0]) / grid.voxel_size_nm
    zs = zc + exp.truth.thickness_nm[0] / grid.voxel_size_nm
    print(f"# z rows (T0 collector/anode interface at z = {zc:.1f} px, anode/separator at {zs:.1f} px)")
    for zz in np.unique(z):
        s = (z == zz) & field.usable
        if not s.any():
            continue
        d = field.displacement_zyx_px[s] - u_true[s]
        print(f"z {zz:5.1f}: u_z measured {field.displacement_zyx_px[s, 0].mean():7.3f} true {u_true[s, 0].mean():7.3f} "
              f"diff {d[:, 0].mean():+.3f} (rms {np.sqrt((d[:, 0] ** 2).mean()):.3f}); lateral median "
              f"{np.median(np.linalg.norm(d[:, 1:], axis=1)):.3f}", flush=True)


def _affine_field(phi0, shape, spacing):
    """The global affine ``phi0`` (about the volume centre) on the control grid of ``spacing``."""
    from tomo4d.dvc import DisplacementField, control_grid
    from tomo4d.register.phi import apply_phi_to_points

    pos, gs, _ = control_grid(shape, spacing)
    u = apply_phi_to_points(pos, phi0, centre=(np.asarray(shape, float) - 1) / 2) - pos
    phi = np.tile(np.asarray(phi0, float), (len(pos), 1, 1))
    phi[:, :3, 3] = u
    return DisplacementField(pos, phi, np.zeros(len(pos), np.int8), grid_shape=gs, node_spacing_px=(spacing,) * 3,
                             half_window_px=(spacing,) * 3, notes={"volume_shape_zyx": list(shape)})


def _deconvolve(volume, sigma_px, iterations, sigma_yx_px=None, pad="zero"):
    """Richardson-Lucy with a Gaussian PSF of ``sigma_px`` (the grey levels shifted positive, then back); with
    ``sigma_yx_px`` the PSF's in-plane sigma is that instead (a partial in-plane deconvolution; the kernel keeps the
    half-width of ``sigma_px``).  ``pad``: what the deconvolution sees beyond the faces: ``zero`` (this bench's,
    unpadded), ``reflect`` (the reflection over twice the PSF's half-width, as :func:`tomo4d.dvc.deconvolve`) or
    ``smooth`` (that reflection smoothed by 3 PSF sigmas: the local mean grey without texture)."""
    from scipy import ndimage
    from skimage.restoration import richardson_lucy

    def kernel(s):
        r = int(np.ceil(3 * sigma_px))
        return np.exp(-np.arange(-r, r + 1) ** 2 / (2 * s ** 2))

    g, h = kernel(sigma_px), kernel(sigma_px if sigma_yx_px is None else sigma_yx_px)
    psf = g[:, None, None] * h[None, :, None] * h[None, None, :]
    lo, span = float(volume.min()), float(np.ptp(volume)) or 1.0
    pos = (volume - lo) / span + 0.05
    w = 0 if pad == "zero" else 2 * (len(g) // 2)
    inner = (slice(w, -w),) * 3
    if w:
        padded = np.pad(pos, w, mode="reflect")
        if pad == "smooth":
            padded = ndimage.gaussian_filter(padded, 3 * sigma_px, mode="reflect")
            padded[inner] = pos
        pos = padded
    out = richardson_lucy(pos, psf / psf.sum(), num_iter=iterations, clip=False)
    if w:
        out = out[inner]
    return ((out - 0.05) * span + lo).astype(np.float32)


def _truth_means(exp):
    a = exp.truth.anode_finite_strain()  # columns: collector side, separator side, anode
    return {"hencky_zz_collector": a.hencky_zz[:, 0], "hencky_zz_separator": a.hencky_zz[:, 1],
            "volumetric_anode": a.volumetric[:, 2]}


def _accepted_volume(r):
    """The acceptance with the side strains and det F - 1 as volume averages over the halves (as the truth)."""
    return _accepted(r | {k: r[f"{k}_volume"] for k in ("hencky_zz_collector", "hencky_zz_separator", "volumetric")})


def _accepted_covered(r):
    """The volume-mean acceptance against the truth over the same part of each half (what the report compares)."""
    keys = ("hencky_zz_collector", "hencky_zz_separator", "volumetric")
    return _accepted(r | {k: r[f"{k}_volume"] for k in keys} | {f"{k}_truth": r[f"{k}_covered_truth"] for k in keys})


def _accepted(r):
    return (abs(r["hencky_zz_collector"] - r["hencky_zz_collector_truth"]) <= 0.02
            and abs(r["hencky_zz_separator"] - r["hencky_zz_separator_truth"]) <= 0.02
            and abs(r["volumetric"] - r["volumetric_truth"]) <= 0.02 and r["median_error_px"] <= 0.3
            and r["converged"] >= 0.9 and r["hencky_zz_separator"] > r["hencky_zz_collector"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, default=96)
    ap.add_argument("--series", choices=["lq", "hq"], default="hq")
    ap.add_argument("--grey-model", default="znssd")
    ap.add_argument("--psf-sigma", type=float, default=None, help="PSF compensation sigma, px (None: off).")
    ap.add_argument("--spacing", type=int, default=6)
    ap.add_argument("--half-window", type=int, default=6)
    ap.add_argument("--smooth", type=float, default=1.0)
    ap.add_argument("--start", choices=["chain", "truth", "affine", "chain-affine", "axial"], default="chain",
                    help="chain: previous step's field (the first step: integer search); truth: the exact "
                         "field; affine: a global affine registration (tomo4d.register) of the pair; "
                         "chain-affine: previous step's field, the first step affine (the runner's default); "
                         "axial: tomo4d.dvc.axial_profile_start of the pair (a z-only map, --tiles profiles)")
    ap.add_argument("--tiles", default="1x1", help="axial start: lateral tiles YxX (e.g. 3x3)")
    ap.add_argument("--param", action="append", default=[], help="Phantom parameter KEY=VALUE (JSON value).")
    ap.add_argument("--exclude-above", type=float, default=None,
                    help="Mask out reference voxels brighter than this (e.g. silicon that lithiates), dilated by "
                         "--exclude-dilate voxels: correlate on what does not change grey level.")
    ap.add_argument("--exclude-dilate", type=int, default=2)
    ap.add_argument("--electrode-mask", action="store_true",
                    help="match only the T0 electrode's z band (collector to separator interface), as the runner's "
                         "dvc.mask: electrode")
    ap.add_argument("--collector-mask", action="store_true",
                    help="match only above the T0 collector interface (the collector left out, the separator in)")
    ap.add_argument("--band-lift", type=float, default=0.0,
                    help="--electrode-mask/--collector-mask: start the band this many px above the collector "
                         "interface (leave the static interface's blur out of the anode's match)")
    ap.add_argument("--interfaces", choices=("none", "truth", "material", "measured"), default="none",
                    help="global: tie the field's mean u_z at the collector and separator interfaces to their motion "
                         "(tomo4d.dvc.InterfaceMotion): the phantom's exact interfaces (the surfaces' motion), the "
                         "true mean displacement of the material on the T0 interface planes (diagnostic), or those "
                         "measured as the runner does (a pixel classifier trained on four xz planes of the "
                         "--label-steps, tomo4d.quantify.electrode_thickness of every step)")
    ap.add_argument("--label-steps", default="0,peak",
                    help="--interfaces measured: the steps whose four xz planes train the segmentation, numbers or "
                         "'last' / 'peak' (the highest state of charge); default as the demo: T0 and the peak")
    ap.add_argument("--anchor-collector", action="store_true",
                    help="global: a node plane on the collector interface (correlate_global(..., node_plane_z_px=); "
                         "the rigid collector's kink then falls on a node)")
    ap.add_argument("--cover-plane", action="store_true",
                    help="global, with --collector-mask / --electrode-mask: the node rows' z phase that covers most of "
                         "the T0 anode's collector half under the mask "
                         "(tomo4d.dvc.covering_node_plane_px; the runner's "
                         "dvc.node_grid: cover); each incremental pair from its own band")
    ap.add_argument("--crop-bottom", type=int, default=0,
                    help="drop this many z slices at the bottom of every scan (the sample's field of view cut "
                         "elsewhere: a centred node grid then lies elsewhere against the collector interface)")
    ap.add_argument("--face-margin", type=int, default=None,
                    help="leave this many voxels at the lateral (y, x) faces of the volume out of the mask (the blur's "
                         "and the deconvolution's boundary: static in every scan, it pins the field there); default "
                         "with --deconvolve tomo4d.dvc.boundary_margin_px (as the runner), else 0 (session 19; "
                         "--face-margin 0 reproduces earlier sessions)")
    ap.add_argument("--top-margin", type=int, default=None,
                    help="leave this many slices at the top z face out of the mask (the bottom face is the "
                         "collector's, masked); default --face-margin's, as the runner's z faces outside the "
                         "electrode")
    ap.add_argument("--exclude-in-anode", action="store_true",
                    help="--exclude-above only inside the T0 anode band (keeps the collector)")
    ap.add_argument("--method", choices=["local", "global", "none"], default="local",
                    help="local: correlate (windows); global: correlate_global (regularised control grid); "
                         "none: no correlation, the start field itself is scored (--start affine|axial|truth)")
    ap.add_argument("--reg", type=_weight, default=None,
                    help="global: regularisation weight, or 'auto': the runner's (pipeline.sections.route_regularisation"
                         " from T0's noise variance over its grey variance above the collector, as scanned; session 38)")
    ap.add_argument("--levels", type=int, default=None, help="global: pyramid levels")
    ap.add_argument("--max-iter", type=int, default=None, help="global: L-BFGS iterations per level")
    ap.add_argument("--solver", choices=["lbfgs", "gauss-newton"], default=None,
                    help="global: GlobalOptions.solver")
    ap.add_argument("--interp", choices=["linear", "cubic"], default=None,
                    help="global: how the deformed volume is sampled (GlobalOptions.interpolation)")
    ap.add_argument("--lateral", action="store_true", help="axial start: also an in-plane scale s(z)")
    ap.add_argument("--continue-reg", type=float, default=None,
                    help="global: GlobalOptions.final_regularisation: the finest level solved again with this "
                         "weaker regularisation (continuation; the grey fields carried on)")
    ap.add_argument("--incremental", action="store_true",
                    help="steps after the first: T(n-1) -> Tn (same start and options) composed onto T0 -> T(n-1), "
                         "as dvc.incremental")
    ap.add_argument("--refine", action="store_true", help="--incremental: then correlate T0 -> Tn from the composition")
    ap.add_argument("--no-grey", action="store_true", help="global: no brightness/contrast fields")
    ap.add_argument("--represent", choices=("grey", "labels", "gradient"), default="grey",
                    help="what is correlated: the grey levels; the segmented phases (lithiated silicon as silicon; "
                         "segmented as scanned, give --deconvolve 0); the gradient magnitude over its local RMS "
                         "(after --deconvolve; session 29)")
    ap.add_argument("--grey-reg", type=float, default=None, help="global: GlobalOptions.grey_regularisation")
    ap.add_argument("--grey-band", type=float, default=None,
                    help="global: GlobalOptions.interface_grey_stiffness (the grey fields held flat across the ties)")
    ap.add_argument("--threads", type=int, default=2, help="global: torch threads")
    ap.add_argument("--steps", default=None, help="comma-separated steps to run (default all)")
    ap.add_argument("--deconvolve", type=int, default=0,
                    help="Richardson-Lucy iterations on both volumes before correlation (0: off)")
    ap.add_argument("--deconvolve-sigma", type=float, default=2.8, help="Gaussian PSF of --deconvolve, px")
    ap.add_argument("--deconvolve-pad", choices=("zero", "reflect", "smooth"), default="zero",
                    help="what --deconvolve sees beyond the faces (see _deconvolve)")
    ap.add_argument("--deconvolve-sigma-yx", type=float, default=None,
                    help="the PSF's in-plane sigma for --deconvolve (default --deconvolve-sigma), px")
    ap.add_argument("--save-fields", default=None, help="write each step's T0 -> Tn field to this folder (.h5)")
    ap.add_argument("--restarts", type=int, default=None,
                    help="global: GlobalOptions.restarts (the nodes without data restarted from the measured field)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="also print, per z row of nodes, the mean measured and true u_z and u_y, x error (px)")
    a = ap.parse_args(argv)
    from tomo4d.dvc import correlate, correlate_global
    from tomo4d.phantom import make_experiment

    params = {k: json.loads(v) for k, v in (p.split("=", 1) for p in a.param)}
    exp = make_experiment(shape=(a.shape,) * 3, **params)
    series = [v.numpy().astype(np.float32) for v in (exp.series if a.series == "lq" else exp.series_hq)]
    grid = exp.truth.lq_grid if a.series == "lq" else exp.truth.hq_grid
    if a.crop_bottom:
        import dataclasses

        series = [v[a.crop_bottom:] for v in series]
        o = grid.origin_nm
        grid = dataclasses.replace(grid, shape=series[0].shape,
                                   origin_nm=(o[0] + a.crop_bottom * grid.voxel_size_nm, o[1], o[2]))
    truth_means = _truth_means(exp)
    kw = dict(node_spacing=a.spacing, half_window=a.half_window, smooth_sigma_px=a.smooth, tolerance_px=0.01,
              max_iterations=100, grey_model=a.grey_model)
    if a.psf_sigma:
        kw["psf_sigma_px"] = a.psf_sigma
    mask = None
    if a.exclude_above is not None:
        from scipy import ndimage

        bright = ndimage.gaussian_filter(series[0], 1.0) > a.exclude_above
        if a.exclude_in_anode:  # only the anode's bright voxels (its silicon); the collector stays in
            t = exp.truth
            z_nm = grid.origin_nm[0] + np.arange(series[0].shape[0]) * grid.voxel_size_nm
            band = (z_nm >= t.z_collector_nm) & (z_nm < t.z_collector_nm + t.thickness_nm[0])
            bright &= band[:, None, None]
        mask = ~ndimage.binary_dilation(bright, iterations=a.exclude_dilate) if a.exclude_dilate else ~bright
        kw["mask"] = mask
    if a.electrode_mask or a.collector_mask:
        t = exp.truth
        z_nm = grid.origin_nm[0] + np.arange(series[0].shape[0]) * grid.voxel_size_nm
        top = t.z_collector_nm + t.thickness_nm[0] if a.electrode_mask else np.inf
        lo_nm = t.z_collector_nm + a.band_lift * grid.voxel_size_nm
        a.band_px = tuple((v - grid.origin_nm[0]) / grid.voxel_size_nm for v in (lo_nm, top))
        band = (z_nm >= lo_nm) & (z_nm < top)
        mask = np.broadcast_to(band[:, None, None], series[0].shape) & (True if mask is None else mask)
        kw["mask"] = mask
    a.planes = _interface_planes(a, exp, grid, series)
    a.node_plane = (exp.truth.z_collector_nm - grid.origin_nm[0]) / grid.voxel_size_nm if a.anchor_collector else None
    if a.face_margin is None:
        from tomo4d.dvc import boundary_margin_px

        a.face_margin = boundary_margin_px(a.deconvolve_sigma) if a.deconvolve else 0
    if a.top_margin is None:
        a.top_margin = a.face_margin
    if a.face_margin or a.top_margin:
        inner = _inner_box(a, series[0].shape)
        mask = inner if mask is None else mask & inner
        mask = np.broadcast_to(mask, series[0].shape)
        kw["mask"] = mask
    if a.cover_plane:
        from tomo4d.dvc import covering_node_plane_px

        t = exp.truth
        zc = (t.z_collector_nm - grid.origin_nm[0]) / grid.voxel_size_nm
        a.cover_band = (zc, zc + t.thickness_nm[0] / grid.voxel_size_nm)
        a.node_plane = covering_node_plane_px(_mask_axes(mask), a.spacing, cover_z_px=_collector_half(a.cover_band))
        print(f"node rows from z = {a.node_plane:g} px (mod {a.spacing})", flush=True)
    if a.reg == "auto":
        a.reg = _route_weight(a, exp, grid, series[0])
    if a.method in ("global", "none"):
        a.half_window = a.spacing
        kw = dict(node_spacing=a.spacing, threads=a.threads, grey_fields=not a.no_grey)
        for k, v in (("regularisation", a.reg), ("levels", a.levels), ("psf_sigma_px", a.psf_sigma),
                     ("max_iterations", a.max_iter), ("interpolation", a.interp),
                     ("final_regularisation", a.continue_reg), ("grey_regularisation", a.grey_reg),
                     ("solver", a.solver), ("interface_grey_stiffness", a.grey_band), ("restarts", a.restarts)):
            if v is not None:
                kw[k] = v
        if mask is not None:
            kw["mask"] = mask
    steps = range(1, len(series)) if a.steps is None else [int(v) for v in a.steps.split(",")]
    if a.represent == "labels":  # segmented as scanned, as the runner's segment stage
        series = _represent(a, exp, series)
    if a.deconvolve:  # only the volumes used
        series = [_deconvolve(v, a.deconvolve_sigma, a.deconvolve, a.deconvolve_sigma_yx, a.deconvolve_pad)
                  if i == 0 or i in steps else v for i, v in enumerate(series)]
    if a.represent == "gradient":  # of the deconvolved volumes
        series = _represent(a, exp, series)
    rows, prev = [], None
    for n in steps:
        t0 = time.perf_counter()
        if a.incremental and prev is not None:
            field = _increment(a, series, n, prev, kw, mask)
            prev = field
            rows.append(_report(a, exp, grid, n, field, truth_means, t0))
            continue
        init = _truth_field(exp, grid, n, a.spacing, a.half_window, series[0].shape) if a.start == "truth" else prev
        phi0 = None
        if a.start == "affine" or (a.start == "chain-affine" and prev is None):
            from tomo4d.register import register

            init, phi0 = None, register(series[0], series[n]).phi
        if a.start == "axial":
            from tomo4d.dvc import axial_profile_start

            tiles = tuple(int(v) for v in a.tiles.split("x"))
            init = axial_profile_start(series[0], series[n], tiles=tiles, mask=mask, lateral=a.lateral)
        if a.method == "none":
            field = init if phi0 is None else _affine_field(phi0, series[0].shape, a.spacing)
        elif a.method == "global":
            field = correlate_global(series[0], series[n], initial=init, phi0=phi0, node_plane_z_px=a.node_plane,
                                     interfaces=_motions(a, 0, n), **kw)
        else:
            field = correlate(series[0], series[n], initial=init, phi0=phi0,
                              search_radius_px=4 if init is None and phi0 is None else 0, **kw)
        prev = field
        rows.append(_report(a, exp, grid, n, field, truth_means, t0))
    ok, okv, okc = ([f(r) for r in rows] for f in (_accepted, _accepted_volume, _accepted_covered))
    if a.json:
        print(json.dumps({"args": vars(a), "rows": rows, "accepted": ok, "accepted_volume": okv,
                          "accepted_covered": okc}, indent=1))
    else:
        print(f"acceptance met at {sum(ok)}/{len(ok)} steps (node means), {sum(okv)}/{len(okv)} (volume means), "
              f"{sum(okc)}/{len(okc)} (volume means against the truth over the part covered)")


def _weight(text: str):
    return text if text == "auto" else float(text)


def _route_weight(a, exp, grid, t0) -> float:
    """The runner's Laplacian weight for these scans (``--reg auto``): from T0's noise ratio above the collector
    (the runner's ``above_collector`` band) when deconvolved."""
    from tomo4d.pipeline.sections import route_regularisation
    from tomo4d.quality import noise_variance_ratio

    zc = (exp.truth.z_collector_nm - grid.origin_nm[0]) / grid.voxel_size_nm
    ratio = noise_variance_ratio(t0[int(np.ceil(zc)):]) if a.deconvolve else None
    weight = route_regularisation(deconvolved=bool(a.deconvolve), noise_ratio=ratio)
    print(f"regularisation {weight:g} (T0's noise variance over its grey variance above the collector: "
          f"{float('nan') if ratio is None else ratio:.4g})", flush=True)
    return weight


def _collector_half(band):
    """The z range whose cover places the rows (the band's collector half, as the runner's ``_node_plane``)."""
    return band[0], (band[0] + band[1]) / 2


def _mask_axes(mask):
    """The per-axis profiles (z, y, x) of a separable mask (the band and the faces' margins)."""
    m = np.asarray(mask)
    return m.any(axis=(1, 2)), m.any(axis=(0, 2)), m.any(axis=(0, 1))


def _inner_box(a, shape):
    """The volume less ``--face-margin`` voxels at the y and x faces and ``--top-margin`` slices at the top."""
    fm = a.face_margin
    inner = np.zeros(shape, bool)
    inner[:, fm:shape[1] - fm, fm:shape[2] - fm] = True
    inner[shape[0] - a.top_margin:] = False
    return inner


def _interface_planes(a, exp, grid, series):
    """Per step (collector, separator) interface z (px): the phantom's exact ones, or measured as the runner does;
    None without ``--interfaces``."""
    if a.interfaces == "none":
        return None
    t, vs = exp.truth, grid.voxel_size_nm
    zc = (t.z_collector_nm - grid.origin_nm[0]) / vs
    if a.interfaces == "truth":
        return [(zc, zc + h / vs) for h in t.thickness_nm]
    if a.interfaces == "material":  # where the material of each T0 plane went, on average (session 23)
        zs = zc + t.thickness_nm[0] / vs
        ny, nx = series[0].shape[1:]
        yy, xx = np.meshgrid(np.linspace(0, ny - 1, 24), np.linspace(0, nx - 1, 24), indexing="ij")
        out = []
        for n in range(len(series)):
            row = []
            for z in (zc, zs):
                pts = np.stack([np.full(yy.size, z), yy.ravel(), xx.ravel()], -1)
                u = exp.truth.displacement(n, np.asarray(grid.origin_nm) + pts * vs) / vs
                row.append(float(z + u[:, 0].mean()))
            out.append(tuple(row))
        print("material planes (px) per step: " + ", ".join(f"{c:.2f}/{s_:.2f}" for c, s_ in out), flush=True)
        return out
    from tomo4d.quantify import electrode_thickness

    out = []
    for phases in _phases(a, exp, series):
        th = electrode_thickness(phases, voxel_size_nm=vs)
        out.append((float(np.nanmean(th.collector_z_nm)) / vs, float(np.nanmean(th.separator_z_nm)) / vs))
    print("measured interfaces (px) per step: " + ", ".join(f"{c:.2f}/{s_:.2f}" for c, s_ in out) +
          "; exact: " + ", ".join(f"{zc:.2f}/{zc + h / vs:.2f}" for h in t.thickness_nm), flush=True)
    return out


def _phases(a, exp, series):
    """Each scan's phase codes (int16) by the runner's pixel classifier (3D features, 24 trees) trained on four fully
    labelled xz planes of each of ``--label-steps`` (as the demo: T0 and the most lithiated step); once per run, for
    the measured interfaces and ``--represent labels`` alike."""
    if getattr(a, "_phases", None) is None:
        from tomo4d.segment import predict_labels

        model = _classifier(a, exp, series)
        a._phases = [predict_labels(model, v).astype(np.int16) - 1 for v in series]
    return a._phases


def _classifier(a, exp, series):
    from tomo4d.pipeline.demo import most_lithiated_step
    from tomo4d.pipeline.sections import SegmentSection
    from tomo4d.segment import FeatureSpec, train_pixel_classifier

    t = exp.truth
    g = "lq" if a.series == "lq" else "hq"
    named = {"last": len(series) - 1, "peak": most_lithiated_step(list(t.state_of_charge))}
    steps = [named[v] if v in named else int(v) for v in a.label_steps.split(",")]
    planes_y = sorted({int(series[0].shape[1] * f) for f in (0.125, 0.375, 0.625, 0.875)})
    labels = []
    for step in steps:
        lab = np.zeros(series[0].shape, np.int16)
        lab[:, planes_y] = t.labels(step, grid=g)[a.crop_bottom:, planes_y].astype(np.int16) + 1
        labels.append(lab)
    # trained as the runner's segment stage with its defaults (3D features, 24 trees).  Before session 23 this
    # trained slice-wise features (FeatureSpec()), whose separator interface lagged the exact motion by
    # 0.13-1.06 px on LQ (3D: within 0.16 px with T0 and the most lithiated step labelled)
    sec = SegmentSection()
    return train_pixel_classifier([series[s] for s in steps], labels,
                                  features=FeatureSpec(sigmas=tuple(sec.sigmas), ndim=sec.feature_ndim),
                                  n_trees=sec.n_trees, max_samples_per_class=sec.max_samples_per_class, seed=sec.seed)


def _represent(a, exp, series):
    """The volumes the DVC correlates (``--represent``): the grey levels; ``labels``, the segmented phases rendered
    with one grey per phase, lithiated silicon as silicon (lithiation's contrast loss gone), Gaussian sigma 1 px; or
    ``gradient``, the gradient magnitude (Gaussian sigma 1 px) over its local RMS (sigma 4 px): invariant to a local
    brightness and contrast change."""
    from scipy import ndimage

    if a.represent == "grey":
        return series
    if a.represent == "gradient":
        out = []
        for v in series:
            g = np.gradient(ndimage.gaussian_filter(v.astype(np.float32), 1.0))
            m = np.sqrt(sum(c * c for c in g))
            out.append((m / (np.sqrt(ndimage.gaussian_filter(m * m, 4.0)) + 1e-6 * float(m.max()))).astype(np.float32))
        return out
    from tomo4d.phantom import Phase
    from tomo4d.phantom.params import DEFAULT_GREY

    table = np.zeros(len(Phase), np.float32)
    for ph, v in DEFAULT_GREY.items():
        table[ph] = v
    table[Phase.LITHIATED_SILICON] = table[Phase.SILICON]
    return [ndimage.gaussian_filter(table[np.clip(p, 0, len(Phase) - 1)], 1.0).astype(np.float32)
            for p in _phases(a, exp, series)]


def _motions(a, ref, n):
    """The InterfaceMotions of the pair ``ref -> n``: the interfaces' place in step ``ref`` (measured, exact or the
    material's, as ``--interfaces``) moved to their place in step ``n``, as the runner (session 24; before, an
    incremental pair took the T0 planes moved into T(n-1) by the composed field with the material outside them)."""
    if a.planes is None:
        return None
    from tomo4d.dvc import InterfaceMotion

    return [InterfaceMotion(z_px=float(p), displacement_px=float(q - p)) for p, q in zip(a.planes[ref], a.planes[n])]


def _increment(a, series, n, prev, kw, mask):
    """T0 -> Tn as T0 -> T(n-1) (``prev``) composed with T(n-1) -> Tn (reference updating; the pair started and
    correlated like a first step, the mask's band moved into T(n-1) by ``prev``), as the runner's
    ``dvc.incremental``; with ``--refine`` T0 -> Tn is then correlated from the composition."""
    from tomo4d.dvc import axial_profile_start, compose_fields, correlate, correlate_global, moved_band

    kwn = dict(kw)
    if mask is not None and (a.electrode_mask or a.collector_mask):
        # from the interfaces themselves (px), as the runner: the first masked row instead (session 17) lifted
        # the edge a few hundredths of a px past it and dropped the node row straddling the collector
        lo, hi = moved_band(prev, *a.band_px, mask.shape[1:])
        zi = np.arange(mask.shape[0])
        kwn["mask"] = np.broadcast_to(((zi >= lo) & (zi < hi))[:, None, None], mask.shape)
        if a.face_margin or a.top_margin:
            kwn["mask"] = kwn["mask"] & _inner_box(a, mask.shape)
    ref, dfm = series[n - 1], series[n]
    init = axial_profile_start(ref, dfm, mask=kwn.get("mask"), lateral=a.lateral) if a.start == "axial" else None
    if a.method == "global":
        plane = None if a.node_plane is None else moved_band(prev, a.node_plane, np.inf, ref.shape[1:])[0]
        if a.cover_plane:  # as the runner: from the pair's own band
            from tomo4d.dvc import covering_node_plane_px

            plane = covering_node_plane_px(_mask_axes(kwn["mask"]), a.spacing,
                                           cover_z_px=_collector_half(moved_band(prev, *a.cover_band, ref.shape[1:])))
        pair = correlate_global(ref, dfm, initial=init, interfaces=_motions(a, n - 1, n),
                                node_plane_z_px=plane, **kwn)
        composed = compose_fields(prev, pair)
        return correlate_global(series[0], dfm, initial=composed, node_plane_z_px=a.node_plane, **kw) if a.refine \
            else composed
    composed = compose_fields(prev, correlate(ref, dfm, initial=init, search_radius_px=4 if init is None else 0, **kwn))
    return correlate(series[0], dfm, initial=composed, search_radius_px=0, **kw) if a.refine else composed


def _report(a, exp, grid, n, field, truth_means, t0):
    if a.save_fields:
        from pathlib import Path

        Path(a.save_fields).mkdir(parents=True, exist_ok=True)
        field.save(Path(a.save_fields) / f"field_T{n}.h5", overwrite=True)
    if a.profile:
        _print_profile(exp, grid, n, field)
    r = _row(exp, grid, n, field, truth_means, a.half_window, tent=a.method in ("global", "none")) | {
        "seconds": time.perf_counter() - t0}
    if not a.json:
        print(f"{r['step']} SoC {r['soc']:.2f}: converged {r['converged']:.2f} of {r['anode_nodes']} anode nodes, "
              f"median |u err| {r['median_error_px']:.3f} px (z {r['median_error_z_px']:.3f}; against the support-averaged "
              f"truth {r.get('median_error_support_px', float('nan')):.3f}, which is "
              f"{r.get('median_support_vs_exact_px', float('nan')):.3f} from the exact); ln U_zz collector {r['hencky_zz_collector']:.3f} "
              f"(truth {r['hencky_zz_collector_truth']:.3f}), separator {r['hencky_zz_separator']:.3f} "
              f"(truth {r['hencky_zz_separator_truth']:.3f}; at these nodes {r['hencky_zz_collector_truth_nodes']:.3f}, "
              f"{r['hencky_zz_separator_truth_nodes']:.3f}); det F - 1 {r['volumetric']:.3f} "
              f"(truth {r['volumetric_truth']:.3f}); volume means: collector {r['hencky_zz_collector_volume']:.3f}, "
              f"separator {r['hencky_zz_separator_volume']:.3f}, det F - 1 {r['volumetric_volume']:.3f} (truth over "
              f"the part covered {r['hencky_zz_collector_covered_truth']:.3f}, "
              f"{r['hencky_zz_separator_covered_truth']:.3f}, {r['volumetric_covered_truth']:.3f}); "
              f"out of view {r['out_of_view']}; {r['seconds']:.1f} s wall",
              flush=True)
    return r


if __name__ == "__main__":
    main()
