"""``tomo4d quality``: compare images with a reference on PSNR, SSIM, SIFT, edge resolution, CNR."""

# Library imports stay inside the commands: `tomo4d --help` imports every command module, and the
# library packages cost 15-340 ms each to import (measured, issue 17); core ones sit at the top.
from __future__ import annotations

import math
from pathlib import Path

import click

from ..errors import FormatError, InputError
from ._paths import declare_paths
from ._util import emit, json_option, parse_triple


def _load(path: str):
    """A 2D image (numpy) or a lazy Volume, whichever the file holds."""
    from ..io import open_image, open_volume

    p = Path(path)
    if p.is_file() and p.suffix.lower() in (".tif", ".tiff"):
        try:
            return open_image(p)
        except FormatError:
            pass
    return open_volume(p)


def _cell(v) -> str:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4g}"
    return str(v)


def _lines(table, cnr_noise, written):
    """The human-readable report of a comparison table, line by line."""
    header = table.header()
    rows = [[_cell(v) for v in r] for r in table.table_rows()]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    yield "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))
    for r in rows:
        yield "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    vs_txt = ", ".join(f"{v:g}" for v in table.voxel_size_nm)
    yield f"voxel size (z, y, x): {vs_txt} nm; CNR noise term: {cnr_noise}"
    for name, msg in table.edge_errors.items():
        yield f"edge resolution of {name} not measured: {msg}"
    for w in written:
        yield f"wrote {w}"


@declare_paths(inputs=("reference", "images", "mask_path"), outputs=("profiles_path", "figure_path"))
@click.command()
@click.argument("reference", type=click.Path(path_type=str))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--voxel-size", default=None, help="Voxel size in nm: one value or Z,Y,X (default: from the file).")
@click.option("--mask", "mask_path", default=None, type=click.Path(path_type=str),
              help="Mask image/volume of the evaluated region (non-zero = inside).")
@click.option("--fov", is_flag=True, help="Evaluate inside the circular field of view only.")
@click.option("--metrics", default="psnr,ssim,sift,edge,cnr", show_default=True,
              help="Comma-separated subset of psnr,ssim,sift,edge,cnr.")
@click.option("--cnr-noise", type=click.Choice(["background", "pooled", "sum"]), default="background",
              show_default=True, help="Noise term of the CNR.")
@click.option("--profiles", "profiles_path", default=None, type=click.Path(path_type=str),
              help="Write the edge profiles to this CSV file.")
@click.option("--figure", "figure_path", default=None, type=click.Path(path_type=str),
              help="Write a PNG figure of the edge profiles.")
@click.option("--overwrite", is_flag=True, help="Replace existing --profiles/--figure outputs.")
@json_option
def quality(reference, images, voxel_size, mask_path, fov, metrics, cnr_noise, profiles_path, figure_path,
            overwrite, as_json):
    """Compare IMAGE(s) with REFERENCE: PSNR, SSIM, SIFT matches, edge FWHM (nm), CNR.

    Images must be on the reference's grid (registered, same shape); 2D TIFF
    slices and volumes in any format tomo4d reads are accepted.
    """
    import numpy as np

    from ..quality import compare, edge_profile_figure, fov_mask, save_edge_profiles

    ref = _load(reference)
    names = [Path(p).name for p in images]
    if len(set(names)) != len(names) or Path(reference).name in names:
        names = [str(p) for p in images]
    imgs = {n: _load(p) for n, p in zip(names, images)}
    mask = None
    if mask_path is not None:
        mask = np.asarray(_load(mask_path)) != 0
    if fov:
        f = fov_mask(ref.shape)
        mask = f if mask is None else (mask & f)
    wanted = [m.strip() for m in metrics.split(",") if m.strip()]
    if (profiles_path or figure_path) and "edge" not in wanted:
        raise InputError("--profiles/--figure need the edge metric; add 'edge' to --metrics")
    vs = parse_triple(voxel_size, name="--voxel-size")
    table = compare(ref, imgs, voxel_size_nm=vs, mask=mask, metrics=wanted, reference_name=Path(reference).name,
                    cnr_noise=cnr_noise)
    written = []
    if (profiles_path or figure_path) and not table.edges:
        raise InputError("no image had enough isolated edges for --profiles/--figure: "
                         + "; ".join(f"{k}: {v}" for k, v in table.edge_errors.items()))
    if profiles_path:
        written.append(save_edge_profiles(table.edges, profiles_path, overwrite=overwrite))
    if figure_path:
        from ..io import atomic_output
        from ..report import figure_png

        png = figure_png(edge_profile_figure(table.edges), dpi=110)
        with atomic_output(Path(figure_path), overwrite=overwrite) as tmp:
            tmp.write_bytes(png)
        written.append(Path(figure_path))
    emit(lambda: table.to_dict() | {"written": [str(w) for w in written]}, as_json=as_json,
         text=_lines(table, cnr_noise, written))
