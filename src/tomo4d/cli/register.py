"""``tomo4d register``: global (affine, multiscale, multimodal) registration of two volumes."""

# Library imports stay inside the commands: `tomo4d --help` imports every command module, and the
# library packages cost 15-340 ms each to import (measured, issue 17); core ones sit at the top.
from __future__ import annotations

import click

from ._paths import declare_paths
from ._util import emit, json_option, open_array, parse_ints, progress_bar


@declare_paths(inputs=("fixed", "moving", "mask"), outputs=("output",))
@click.command()
@click.argument("fixed", type=click.Path(path_type=str))
@click.argument("moving", type=click.Path(path_type=str))
@click.option("-o", "--output", default=None, type=click.Path(path_type=str), help="Write the registration (phi, centre, errors) as JSON.")
@click.option("--rigid", is_flag=True, help="Rotation and translation only.")
@click.option("--multimodal", is_flag=True, help="Different modalities: mutual-information translation search.")
@click.option("--binning", default="4,2,1", show_default=True, help="Binning levels, coarse to fine.")
@click.option("--mask", default=None, type=click.Path(path_type=str), help="Mask volume of the fixed sample (non-zero = use).")
@click.option("--search", "search_px", default=12.0, show_default=True, help="--multimodal: search range, px.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@json_option
def register(fixed, moving, output, rigid, multimodal, binning, mask, search_px, overwrite, as_json):
    """Register MOVING onto FIXED: phi maps fixed voxel coordinates to moving ones."""
    from ..register import register as _register
    from ..register import register_multimodal

    f, m = open_array(fixed), open_array(moving)
    msk = open_array(mask, mask=True)
    with progress_bar("registering", enabled=not as_json) as progress:
        if multimodal:
            reg = register_multimodal(f, m, search_px=search_px, mask=msk, progress=progress)
        else:
            reg = _register(f, m, rigid=rigid, binning=parse_ints(binning, name="--binning"), mask=msk,
                            progress=progress)
    if output:
        reg.save(output, overwrite=overwrite, inputs=[fixed, moving])

    def lines():
        p = reg.parts
        yield f"converged      {reg.converged} ({reg.iterations} iterations, residual {reg.residual:.4f})"
        yield "translation    " + ", ".join(f"{v:+.4f}" for v in p.translation_px) + " px (z, y, x)"
        yield f"rotation       {p.rotation_angle_deg:.4f} deg"
        yield f"vol. strain    {p.volumetric_strain:+.5f}"
        if output:
            yield f"wrote {output}"

    emit(lambda: reg.to_dict() | ({"output": output} if output else {}), as_json=as_json, text=lines())
