"""``tomo4d register``: global (affine, multiscale, multimodal) registration of two volumes."""

# Library imports stay inside the commands: `tomo4d --help` imports every command module, and the
# library packages cost 15-340 ms each to import (measured, issue 17); core ones sit at the top.
from __future__ import annotations

import click

from ..errors import InputError
from ._paths import declare_paths
from ._util import emit, json_option, open_array, parse_ints, progress_bar


@declare_paths(inputs=("fixed", "moving", "mask", "moving_labels"), outputs=("output",))
@click.command()
@click.argument("fixed", type=click.Path(path_type=str))
@click.argument("moving", type=click.Path(path_type=str))
@click.option("-o", "--output", default=None, type=click.Path(path_type=str), help="Write the registration (phi, centre, errors) as JSON.")
@click.option("--rigid", is_flag=True, help="Rotation and translation only.")
@click.option("--multimodal", is_flag=True, help="Different modalities (e.g. FIXED neutron, MOVING X-ray): the coarse FIXED "
              "image is modelled from MOVING (grey-level mapping or phase fractions, voxel box, extra PSF); rigid by "
              "default, with uncertainties (see --transform).")
@click.option("--transform", type=click.Choice(["rigid", "affine", "translation", "mi-translation"]), default="rigid",
              show_default=True, help="--multimodal: transform of the model; 'mi-translation': the former mutual-"
                                      "information translation search alone (same shape and voxel size).")
@click.option("--fixed-voxel-nm", type=float, default=None, help="--multimodal: FIXED voxel size, nm (default: the file's).")
@click.option("--moving-voxel-nm", type=float, default=None, help="--multimodal: MOVING voxel size, nm (default: the file's).")
@click.option("--fixed-psf-nm", type=float, default=None, help="--multimodal: Gaussian PSF sigma of FIXED beyond its voxel, nm "
              "(default: estimated).")
@click.option("--moving-psf-nm", type=float, default=0.0, show_default=True, help="--multimodal: PSF sigma of MOVING, nm.")
@click.option("--moving-labels", default=None, type=click.Path(path_type=str), help="--multimodal: phase labels of MOVING "
              "(its segmentation): the phase-fraction model.")
@click.option("--binning", default="4,2,1", show_default=True, help="Binning levels, coarse to fine.")
@click.option("--mask", default=None, type=click.Path(path_type=str), help="Mask volume of the fixed sample (non-zero = use).")
@click.option("--search", "search_px", default=12.0, show_default=True, help="--multimodal: search range, px (of FIXED).")
@click.option("--chunk-budget-mb", type=float, default=None,
              help="Memory budget, MiB: volumes whose working set (20 bytes per voxel) exceeds it are read slab by "
                   "slab and the fine levels registered on sampled boxes (out of core; not with --multimodal). "
                   "Default: both volumes in memory.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@json_option
def register(fixed, moving, output, rigid, multimodal, transform, fixed_voxel_nm, moving_voxel_nm, fixed_psf_nm,
             moving_psf_nm, moving_labels, binning, mask, search_px, chunk_budget_mb, overwrite, as_json):
    """Register MOVING onto FIXED: phi maps fixed voxel coordinates to moving ones."""
    from ..register import register as _register
    from ..register import register_multimodal

    lazy = chunk_budget_mb is not None and not multimodal
    if lazy:
        from ..io import open_volume

        f, m = open_volume(fixed), open_volume(moving)      # read slab by slab inside the budget
        msk = None if mask is None else open_volume(mask).data > 0
    else:
        if chunk_budget_mb is not None:
            raise InputError(f"--chunk-budget-mb={chunk_budget_mb} is for the affine registration; --multimodal "
                             "registers coarse neutron-sized volumes in memory: drop --chunk-budget-mb")
        f, m = open_array(fixed), open_array(moving)
        msk = open_array(mask, mask=True)
    with progress_bar("registering", enabled=not as_json) as progress:
        if multimodal and transform != "mi-translation":
            reg = _modalities(f, m, msk, moving_labels, transform=transform, fixed_voxel_nm=fixed_voxel_nm,
                              moving_voxel_nm=moving_voxel_nm, fixed_psf_nm=fixed_psf_nm, moving_psf_nm=moving_psf_nm,
                              search_px=search_px)
        elif multimodal:
            reg = register_multimodal(f, m, search_px=search_px, mask=msk, progress=progress)
        else:
            reg = _register(f, m, rigid=rigid, binning=parse_ints(binning, name="--binning"), mask=msk,
                            progress=progress, chunk_budget_mb=chunk_budget_mb)
    if output:
        reg.save(output, overwrite=overwrite, inputs=[fixed, moving])
    emit(lambda: reg.to_dict() | ({"output": output} if output else {}), as_json=as_json, text=_lines(reg, output))


def _modalities(f, m, msk, labels_path, *, transform, fixed_voxel_nm, moving_voxel_nm, fixed_psf_nm, moving_psf_nm,
                search_px):
    import numpy as np

    from ..register.modalities import register_modalities

    lab = None
    if labels_path is not None:
        lab = open_array(labels_path).numpy()
        if lab.dtype.kind == "f" and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int32)
    return register_modalities(
        f, m, fixed_voxel_size_nm=fixed_voxel_nm if fixed_voxel_nm is not None else f.voxel_size_nm,
        moving_voxel_size_nm=moving_voxel_nm if moving_voxel_nm is not None else m.voxel_size_nm, transform=transform,
        fixed_psf_sigma_nm=fixed_psf_nm, moving_psf_sigma_nm=moving_psf_nm, moving_labels=lab, mask=msk,
        search_px=search_px)


def _lines(reg, output):
    from ..register.modalities import ModalityRegistration

    if isinstance(reg, ModalityRegistration):
        yield f"converged      {reg.converged} ({reg.iterations} iterations, residual {reg.residual:.4f})"
        yield ("translation    " + ", ".join(f"{v:+.4f} +- {s:.4f}" for v, s in zip(reg.translation_px,
                                                                                 reg.translation_sigma_px))
               + " px of FIXED (z, y, x)")
        yield ("rotation       " + ", ".join(f"{v:+.4f} +- {s:.4f}" for v, s in zip(reg.rotation_deg,
                                                                                 reg.rotation_sigma_deg))
               + " deg (rotation vector z, y, x)")
        yield f"extra blur     {reg.blur_sigma_nm:.0f} nm ({'estimated' if reg.blur_estimated else 'given'})"
    else:
        p = reg.parts
        yield f"converged      {reg.converged} ({reg.iterations} iterations, residual {reg.residual:.4f})"
        yield "translation    " + ", ".join(f"{v:+.4f}" for v in p.translation_px) + " px (z, y, x)"
        yield f"rotation       {p.rotation_angle_deg:.4f} deg"
        yield f"vol. strain    {p.volumetric_strain:+.5f}"
    if output:
        yield f"wrote {output}"
