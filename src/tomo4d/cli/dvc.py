"""``tomo4d dvc``, ``tomo4d strain`` and ``tomo4d residual``: local or global DVC, finite strain, residual maps."""

# Library imports stay inside the commands: `tomo4d --help` imports every command module, and the
# library packages cost 15-340 ms each to import (measured, issue 17); core ones sit at the top.
from __future__ import annotations

import logging
from pathlib import Path

import click

from ..errors import InputError
from ._paths import declare_paths
from ._util import check_budget, emit, json_option, open_array, parse_ints, progress_bar, slab_output

log = logging.getLogger(__name__)

#: options of one method only, as the command line spells them: refused with the other method
_LOCAL_ONLY = {"pyramid": "--pyramid", "half_window": "--half-window", "search_px": "--search",
               "grey_model": "--grey-model", "smooth_px": "--smooth", "backend": "--backend"}
_GLOBAL_ONLY = {"regularisation": "--regularisation", "levels": "--levels", "axial_start": "--axial-start",
                "lateral": "--lateral", "no_grey_fields": "--no-grey-fields", "deconvolve_iterations": "--deconvolve"}


def _residual_streamed(r, d, field, output, *, sigma, noise, budget, overwrite, progress):
    """The residual map computed slab by slab into a progress store: OUTPUT itself when it is OME-Zarr (published
    atomically), else a scratch store beside it converted chunk by chunk (:func:`._util.slab_output`)."""
    import numpy as np

    from .._chunks import SlabStore, plan_slabs
    from ..dvc import residual_map
    from ..dvc.residual import RESIDUAL_BYTES_PER_VOXEL
    from ..io import open_volume, save_volume

    with slab_output(output) as (where, scratch):
        halo = int(4.0 * sigma + 0.5) if sigma > 0 else 0
        plan = plan_slabs(r.shape, bytes_per_voxel=RESIDUAL_BYTES_PER_VOXEL, chunk_budget_mb=budget, halo=halo)
        store = SlabStore(where, shape=r.shape, dtype=np.float32, slabs=plan, voxel_size_nm=r.voxel_size_nm,
                          name="residual", modality="unknown", key=f"{sigma}:{noise}").open()
        res = residual_map(r, d, field, sigma_px=sigma, noise=noise, slab=plan[0][1] - plan[0][0], out=store,
                           progress=progress)
        path = store.publish(overwrite=overwrite)
        if scratch is not None:
            save_volume(open_volume(path), output, overwrite=overwrite)
        return res


def _fits(shapes, budget_mb: float) -> bool:
    """Volumes of these shapes as float32 fit the budget (read them whole; else node batches read boxes)."""
    from .._chunks import fits_budget

    return all(fits_budget(shape, 4, budget_mb) for shape in shapes)


@declare_paths(inputs=("ref", "deformed", "mask", "phi_json"), outputs=("output", "vtk"))
@click.command()
@click.argument("ref", type=click.Path(path_type=str))
@click.argument("deformed", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(path_type=str), help="Field file: .h5 (native), .tsv (SPAM) or .vtk (ParaView).")
@click.option("--node-spacing", default=None, type=int, help="Single level: node spacing, px.")
@click.option("--half-window", default=None, type=int, help="Half-window, px (default = node spacing; with --pyramid: "
              "the finest level's).")
@click.option("--pyramid", default=None, help="Node spacings coarse to fine, e.g. 100,70,35 (half-window = spacing); "
              "auto: the study's 100,70,35 levels coarser than --node-spacing (default 10) that fit the volume, then "
              "--node-spacing.")
@click.option("--mask", default=None, type=click.Path(path_type=str), help="Mask volume of the sample in REF (non-zero = "
              "sample); --method global: give the electrode (textureless air makes its solve many times slower).")
@click.option("--phi", "phi_json", default=None, type=click.Path(path_type=str), help="Initial global guess: JSON from 'tomo4d register'.")
@click.option("--search", "search_px", default=0, show_default=True, help="Integer search radius, px (first level).")
@click.option("--psf-sigma", default=None,
              help="Gaussian PSF of the scans, px: one sigma or z,y,x (compensates the blur change at large strain).")
@click.option("--smooth", "smooth_px", default=0.0, show_default=True, type=float,
              help="Gaussian pre-smoothing of both volumes, px (~1 for noisy scans).")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "numba", "torch"]),
              help="Local Gauss-Newton backend (auto: torch on a CUDA GPU when available, else numba).")
@click.option("--device", default=None, help="Torch device for --backend torch, e.g. cpu or cuda:0 (--method global: "
              "a CUDA device runs L-BFGS there).")
@click.option("--grey-model", default="ssd", show_default=True, type=click.Choice(["ssd", "zssd", "nssd", "znssd"]),
              help="How each window's grey levels may change between the scans: znssd brightness and contrast, zssd "
                   "brightness, nssd contrast about zero (attenuation that scales), ssd none.")
@click.option("--method", default="local", show_default=True, type=click.Choice(["local", "global"]),
              help="local: independent windows (small strain, streams volumes over the budget); global: one "
                   "regularised field with brightness and contrast fields, solved to convergence (the route measured "
                   "most accurate at 40-60 % expansion; both volumes held in memory).")
@click.option("--regularisation", default=None, type=float,
              help="global: weight of the field's Laplacian (default 0.05 on scans as reconstructed; with "
                   "--deconvolve 0.2 x the reference's noise variance over its grey variance / 0.15, within "
                   "0.05-0.2).")
@click.option("--levels", default=None, type=int, help="global: pyramid levels (default 3; 1 with --axial-start).")
@click.option("--axial-start", is_flag=True, help="global: start from a per-row axial map fitted on lateral means "
              "(tomo4d.dvc.axial_profile_start; from --phi when given): the capture range for 40-60 % axial stretch.")
@click.option("--lateral", is_flag=True, help="global, with --axial-start: fit an in-plane scale s(z) too.")
@click.option("--no-grey-fields", is_flag=True, help="global: no brightness/contrast fields (grey levels that do not "
              "change between the scans).")
@click.option("--deconvolve", "deconvolve_iterations", default=0, type=int,
              help="global: Richardson-Lucy iterations on both scans first, with the PSF of --psf-sigma (20 on blurred "
                   "scans such as the phantom's LQ series); the faces' reflected band (tomo4d.dvc.boundary_margin_px; "
                   "at z only outside the mask's rows) is left out of the correlation, as in the runner.")
@click.option("--vtk", default=None, type=click.Path(path_type=str), help="Also export the field to this .vtk file.")
@click.option("--chunk-budget-mb", "chunk_budget_mb", type=float, default=512.0, show_default=True,
              help="Working memory, MiB: volumes larger than it stay on disk and each batch of nodes reads only the "
                   "box its windows reach (the same field to 1e-6 px).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@json_option
def dvc(ref, deformed, output, node_spacing, half_window, pyramid, mask, phi_json, search_px, psf_sigma, smooth_px,
        backend, device, grey_model, method, regularisation, levels, axial_start, lateral, no_grey_fields,
        deconvolve_iterations, vtk, chunk_budget_mb, overwrite, as_json):
    """Local or global DVC from REF to DEFORMED on a node grid (local: or a pyramid of grids)."""
    import numpy as np

    from ..dvc import CorrelationOptions, PsfCompensation, correlate, correlate_pyramid
    from ..register import Registration

    given = {k: v for k, v in locals().items() if k in _LOCAL_ONLY or k in _GLOBAL_ONLY}
    defaults = {"grey_model": "ssd", "smooth_px": 0.0, "search_px": 0, "deconvolve_iterations": 0, "backend": "auto"}
    wrong = _LOCAL_ONLY if method == "global" else _GLOBAL_ONLY
    for k, flag in wrong.items():
        if given[k] not in (None, False, defaults.get(k)):
            raise InputError(f"{flag} is an option of --method {'local' if method == 'global' else 'global'}, not of "
                             f"--method {method}; drop it or choose that method")
    if method == "global":
        return _dvc_global(ref, deformed, output, mask=mask, phi_json=phi_json, node_spacing=node_spacing,
                           psf_sigma=psf_sigma, device=device, regularisation=regularisation,
                           levels=levels, axial_start=axial_start, lateral=lateral, grey_fields=not no_grey_fields,
                           deconvolve_iterations=deconvolve_iterations, vtk=vtk, budget=check_budget(chunk_budget_mb),
                           overwrite=overwrite, as_json=as_json)
    auto = str(pyramid).strip().lower() == "auto"
    if pyramid and not auto and node_spacing is not None:
        raise InputError("give either --pyramid or --node-spacing, not both (--pyramid auto ends at --node-spacing)")
    budget = check_budget(chunk_budget_mb)
    options = CorrelationOptions(smooth_sigma_px=smooth_px, backend=backend, device=device, grey_model=grey_model,
                                 chunk_budget_mb=budget)
    psf = None
    if psf_sigma:
        try:
            sig = [float(v) for v in str(psf_sigma).split(",")]
        except ValueError:
            raise InputError(f"--psf-sigma {psf_sigma!r}: give one sigma or z,y,x sigmas in px, e.g. 2.8") from None
        if len(sig) not in (1, 3):
            raise InputError(f"--psf-sigma {psf_sigma!r}: give one sigma or three (z,y,x), e.g. 2.8 or 2.8,2.8,2.8")
        psf = PsfCompensation(sig[0] if len(sig) == 1 else tuple(sig))
    from ..io import open_volume

    shapes = [open_volume(p).shape for p in (ref, deformed)]   # the headers, read once
    levels = parse_ints(pyramid, name="--pyramid") if pyramid and not auto else None
    if auto:  # the study's levels that fit, then the finest spacing (a small volume: that level alone)
        from ..dvc import study_levels

        ns = 10 if node_spacing is None else node_spacing
        coarse = study_levels(shapes[0], ns)
        levels, node_spacing = ([*coarse, ns], None) if coarse else (None, ns)
    lazy = not _fits(shapes, budget)
    r, d = open_array(ref, lazy=lazy), open_array(deformed, lazy=lazy)
    phi0 = None
    if phi_json:
        reg = Registration.load(phi_json)

        from ..register import recentre_phi

        phi0 = recentre_phi(reg.phi, reg.centre_zyx_px, (np.asarray(r.shape, float) - 1) / 2)
    msk = open_array(mask, mask=True, lazy=lazy)
    with progress_bar("correlating", enabled=not as_json) as progress:
        if levels:
            hws = None if half_window is None else [*levels[:-1], half_window]  # --half-window: the finest level's
            field = correlate_pyramid(r, d, pyramid=levels, half_windows=hws, mask=msk, phi0=phi0,
                                      search_radius_px=search_px, options=options, psf=psf, progress=progress)
        else:
            ns = 10 if node_spacing is None else node_spacing  # only an absent value gets the default
            field = correlate(r, d, node_spacing=ns, half_window=half_window, mask=msk, phi0=phi0,
                              search_radius_px=search_px, options=options, psf=psf, progress=progress)
    _write(field, ref, deformed, output, vtk=vtk, overwrite=overwrite, as_json=as_json)


def _write(field, ref, deformed, output, *, vtk, overwrite, as_json, text=()):
    field.save(output, overwrite=overwrite, inputs=[ref, deformed])
    if vtk:
        field.save(vtk, overwrite=overwrite, inputs=[ref, deformed])
    emit(field.summary() | {"output": output}, as_json=as_json, text=[
        f"{field.n_nodes} nodes, grid {field.grid_shape}: "
        + ", ".join(f"{k} {v}" for k, v in field.status_counts().items()),
        *text, f"replaced by interpolation: {field.notes.get('n_replaced', 0)}", f"wrote {output}"])


def _dvc_global(ref, deformed, output, *, mask, phi_json, node_spacing, psf_sigma, device, regularisation,
                levels, axial_start, lateral, grey_fields, deconvolve_iterations, vtk, budget, overwrite, as_json):
    """``tomo4d dvc --method global``: the runner's converged route (``pipeline.sections.converged_route``) on one
    pair, from ``--phi`` / ``--axial-start``."""
    import numpy as np

    from ..dvc import GlobalOptions, axial_profile_start, boundary_margin_px, correlate_global, deconvolve
    from ..pipeline.sections import converged_route
    from ..register import Registration, recentre_phi
    from ..volume import Volume

    sigma = None
    if psf_sigma is not None:
        try:
            sigma = float(psf_sigma)
        except ValueError:
            raise InputError(f"--psf-sigma {psf_sigma!r}: --method global takes one sigma in px, e.g. 2.8") from None
    if deconvolve_iterations and sigma is None:
        raise InputError(f"--deconvolve {deconvolve_iterations} needs the scans' PSF: give --psf-sigma (px)")
    if lateral and not axial_start:
        raise InputError("--lateral refines the axial start's fit: give --axial-start too, or drop --lateral")
    r, d = open_array(ref), open_array(deformed)      # one regularised field over the whole volume: in memory
    msk = open_array(mask, mask=True)
    ratio = None
    if deconvolve_iterations and regularisation is None:  # the Laplacian's weight follows the scans' noise
        from ..quality import noise_variance_ratio

        ratio = noise_variance_ratio(r, mask=msk if msk is not None and msk.shape == r.shape else None)
    route = {**converged_route(10 if node_spacing is None else node_spacing, deconvolved=bool(deconvolve_iterations),
                               axial_start=axial_start, noise_ratio=ratio), "grey_fields": grey_fields}
    if regularisation is not None:
        route["regularisation"] = regularisation
    if levels is not None:
        route["levels"] = levels
    if sigma and not deconvolve_iterations:
        route["psf_sigma_px"] = sigma           # compensated blur instead of deconvolved scans
    if device is not None:
        route["device"] = str(device)
    opts = GlobalOptions(**route)
    pair_mib = 2 * 4.0 * float(np.prod(r.shape)) / 2**20
    if pair_mib > budget:
        log.warning("dvc --method global holds both volumes whole (%.0f MiB as float32, over --chunk-budget-mb %g); "
                    "--method local streams", pair_mib, budget)
    if deconvolve_iterations:               # each keeps its voxel size (the pair's check, the field's)
        r, d = (Volume(deconvolve(v, psf_sigma_px=sigma, iterations=deconvolve_iterations), v.voxel_size_nm)
                for v in (r, d))
        msk = _without_faces(msk, r.shape, sigma)
    phi0 = None
    if phi_json:
        reg = Registration.load(phi_json)
        phi0 = recentre_phi(reg.phi, reg.centre_zyx_px, (np.asarray(r.shape, float) - 1) / 2)
    initial = None
    if axial_start:
        initial = axial_profile_start(r, d, phi0=phi0, mask=msk, node_spacing=opts.node_spacing, lateral=lateral)
    field = correlate_global(r, d, mask=msk, phi0=phi0, initial=initial, options=opts)
    if deconvolve_iterations:
        notes = {**field.notes, "deconvolved": {"iterations": deconvolve_iterations, "psf_sigma_px": sigma,
                                                "face_margin_px": boundary_margin_px(sigma)}}
        if ratio is not None:
            notes["route_noise_ratio"] = round(ratio, 6)
        field = field.with_(notes=notes)
    _write(field, ref, deformed, output, vtk=vtk, overwrite=overwrite, as_json=as_json,
           text=[f"global: {field.notes['options']['solver']} {opts.interpolation}, regularisation "
                 f"{opts.regularisation:g}"
                 + ("" if ratio is None else f" (the reference's noise variance over its grey variance {ratio:.3g})")
                 + ", "
                 f"{'converged' if field.notes.get('converged') else 'NOT converged (raise max_iterations)'}"]
           + ([f"deconvolved ({deconvolve_iterations} Richardson-Lucy iterations, sigma {sigma:g} px): "
               f"{field.notes['deconvolved']['face_margin_px']} px at the faces left out"]
              if deconvolve_iterations else []))


def _without_faces(msk, shape, sigma: float):
    """The mask (or everything) less the deconvolved scans' faces, where Richardson-Lucy rests on reflected copies
    (:func:`tomo4d.dvc.interior_axes`, as the runner): the z faces only outside the mask's rows, so that an electrode
    a few voxels from a face keeps its rows.  A mask of another shape is left to the correlation's own check."""
    import numpy as np

    from ..dvc import interior_axes

    band = None
    if msk is not None:
        if msk.shape != tuple(shape):
            return msk
        rows = np.flatnonzero(msk.any(axis=(1, 2)))
        band = (int(rows[0]), int(rows[-1]) + 1) if rows.size else None
    kz, ky, kx = interior_axes(shape, sigma, band=band)
    box = kz[:, None, None] & ky[None, :, None] & kx[None, None, :]
    return box if msk is None else msk & box


@declare_paths(inputs=("field_path",), outputs=("output",))
@click.command()
@click.argument("field_path", metavar="FIELD", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(path_type=str), help="Strain file: .h5 (tensors) or .vtk (ParaView).")
@click.option("--split-z", default=None, type=float, help="Report top/bottom statistics split at this z, px.")
@click.option("-c", "--component", "components", multiple=True,
              help="Component to report (repeatable; default hencky_zz and volumetric = det F - 1), e.g. green_zz, "
                   "hencky_yy, stretch_1, deviatoric.")
@click.option("--small-strain", is_flag=True, help="Also report the small-strain small_zz/yy/xx and volumetric_small "
              "(valid only for strains of a few %).")
@click.option("--gradient", default="nodes", show_default=True, type=click.Choice(["nodes", "affine"]),
              help="F from differences of node displacements, or each node's affine fit (noisier).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@json_option
def strain(field_path, output, split_z, components, small_strain, gradient, overwrite, as_json):
    """Finite strain (F, Hencky, Green-Lagrange, det F - 1, principal stretches) from a displacement FIELD."""
    from .._validate import check_number
    from ..dvc import DisplacementField, regional_strain, strain_field
    from ..dvc.strain import DEFAULT_COMPONENTS, SMALL_COMPONENTS

    if split_z is not None:
        split_z = check_number("--split-z", split_z)
    comps = tuple(dict.fromkeys((tuple(components) or DEFAULT_COMPONENTS) + (SMALL_COMPONENTS if small_strain else ())))
    field = DisplacementField.load(field_path)
    s = strain_field(field, gradient=gradient)
    for c in comps:
        s.component(c)  # refuse an unknown name before writing
    suffix = Path(output).suffix.lower()
    if suffix in (".h5", ".hdf5"):
        s.save(output, overwrite=overwrite)
    elif suffix == ".vtk":
        names = dict.fromkeys(("hencky_zz", "hencky_yy", "hencky_xx", "volumetric", "deviatoric", "stretch_1",
                               "stretch_3") + comps)
        scal = {"valid": s.valid.ravel().astype(float)} | {k: s.component(k).ravel() for k in names}
        field.to_vtk(output, scalars=scal, overwrite=overwrite)
    else:
        raise InputError(f"cannot write strain to {output!r}; use .h5 or .vtk")
    regions = {"all": s.valid}
    if split_z is not None:
        regions |= {"z < split": lambda p: p[..., 0] < split_z, "z >= split": lambda p: p[..., 0] >= split_z}
    stats = regional_strain(s, regions, components=comps)
    emit({"output": output, "gradient": gradient, "regions": [r.to_dict() for r in stats]}, as_json=as_json, text=[
        f"{'region':<12} {'component':<16} {'nodes':>6} {'mean':>10} {'median':>10} {'std':>10}",
        *(f"{r.region:<12} {r.component:<16} {r.n_nodes:>6} {r.mean:>10.5f} {r.median:>10.5f} {r.std:>10.5f}"
          for r in stats),
        f"wrote {output}"])


@declare_paths(inputs=("ref", "deformed", "field_path", "repeat_scans"), outputs=("output",))
@click.command()
@click.argument("ref", type=click.Path(path_type=str))
@click.argument("deformed", type=click.Path(path_type=str))
@click.argument("field_path", metavar="FIELD", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(path_type=str), help="Residual volume (any volume format, e.g. .tif).")
@click.option("--sigma", default=2.0, show_default=True, help="Gaussian blur, px.")
@click.option("--repeat", "repeat_scans", nargs=2, default=None, type=click.Path(path_type=str),
              help="Two scans with no change in between: their residual level is subtracted.")
@click.option("--chunk-budget-mb", "chunk_budget_mb", type=float, default=512.0, show_default=True,
              help="Working memory, MiB: larger volumes stay on disk and the map (and the noise floor) is computed "
                   "slab by slab into OUTPUT (the same map).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@json_option
def residual(ref, deformed, field_path, output, sigma, repeat_scans, chunk_budget_mb, overwrite, as_json):
    """Residual map: DEFORMED pulled back by FIELD minus REF, blurred, absolute, minus the noise floor."""
    from .._chunks import fits_budget
    from ..dvc import DisplacementField, noise_floor, residual_map
    from ..dvc.residual import RESIDUAL_BYTES_PER_VOXEL
    from ..io import open_volume, save_volume

    budget = check_budget(chunk_budget_mb)
    field = DisplacementField.load(field_path)
    shape = open_volume(ref).shape
    lazy = not fits_budget(shape, RESIDUAL_BYTES_PER_VOXEL, budget)
    r, d = open_array(ref, lazy=lazy), open_array(deformed, lazy=lazy)
    noise = 0.0
    if repeat_scans:
        a, b = (open_volume(p) for p in repeat_scans)
        noise = noise_floor(a.data, b.data, sigma_px=sigma, chunk_budget_mb=budget)
    with progress_bar("residual", enabled=not as_json) as progress:
        if lazy:
            res = _residual_streamed(r, d, field, output, sigma=sigma, noise=noise, budget=budget,
                                     overwrite=overwrite, progress=progress)
        else:
            res = residual_map(r, d, field, sigma_px=sigma, noise=noise, progress=progress)
            save_volume(r.with_data(res.residual, step=f"residual map sigma={sigma} noise={noise:.4g}"), output,
                        overwrite=overwrite)
    emit(lambda: res.to_dict() | {"output": output}, as_json=as_json, text=[
        f"noise floor {res.noise_floor:.4g}, mean residual {res.mean_before_floor:.4g}, "
        f"{100 * res.fraction_above_floor:.1f}% above the floor",
        f"wrote {output}"])
