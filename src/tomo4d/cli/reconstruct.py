"""``tomo4d reconstruct``: projections (NXtomo or TIFF + flats/darks/angles) -> a volume (algotom engine)."""

# Library imports stay inside the command: `tomo4d --help` imports every command module, and the
# library packages cost 15-340 ms each to import (measured, issue 17); core ones sit at the top.
from __future__ import annotations

import click

from ._paths import declare_paths
from ._util import emit, json_option, overwrite_option, progress_bar


def _pair(text, *, name):
    from ..errors import InputError

    try:
        lo, hi = (int(v) for v in str(text).split(":"))
    except ValueError:
        raise InputError(f"{name}={text!r} must be START:STOP detector rows, e.g. 100:300") from None
    return lo, hi


def _range(text):
    from ..errors import InputError

    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise InputError(f"--uint16={text!r} must be LO,HI (attenuation per voxel), e.g. -0.01,0.08") from None
    return lo, hi


@declare_paths(inputs=("projections", "flats", "darks", "angles"), outputs=("output",))
@click.command()
@click.argument("projections", type=click.Path(path_type=str))
@click.argument("output", type=click.Path(path_type=str))
@click.option("--flats", default=None, type=click.Path(path_type=str), help="TIFF input: flat-field stack (averaged).")
@click.option("--darks", default=None, type=click.Path(path_type=str), help="TIFF input: dark stack (averaged).")
@click.option("--angles", default=None, type=click.Path(path_type=str),
              help="TIFF input: text file of angles in degrees, one per projection (default: even over --angle-range).")
@click.option("--angle-range", default=180.0, show_default=True, help="TIFF input without --angles: degrees covered.")
@click.option("--dataset", default=None, help="NXtomo input: the projection dataset (default: found).")
@click.option("--no-flats", is_flag=True, help="Accept projections without flats/darks (already flat-corrected).")
@click.option("--drift", is_flag=True,
              help="NXtomo with flats/darks before and after the scan: interpolate them per projection.")
@click.option("--pixel-size", type=float, default=None, metavar="NM", help="Detector pixel at the sample, nm.")
@click.option("--center", type=float, default=None, help="Rotation axis, detector column (default: found).")
@click.option("--center-search", type=float, default=None, metavar="PX",
              help="Half-width of the centre search, columns (default: a quarter of the width).")
@click.option("--rings", type=click.Choice(["none", "sorting", "filtering", "normalization", "wavelet", "all"]),
              default="none", show_default=True, help="Ring (stripe) removal method (algotom).")
@click.option("--ring-size", type=int, default=21, show_default=True, help="Stripe filter window, columns (odd).")
@click.option("--filter", "filter_name", type=click.Choice(["ramp", "hann", "hamming", "parzen", "blackman"]),
              default="ramp", show_default=True, help="FBP filter.")
@click.option("--paganin", type=float, default=None, metavar="DELTA_BETA",
              help="Paganin phase retrieval with this delta/beta (needs --energy-kev, --distance-m).")
@click.option("--energy-kev", type=float, default=None, help="Paganin: photon energy, keV.")
@click.option("--distance-m", type=float, default=None, help="Paganin: propagation distance, m.")
@click.option("--rows", default=None, help="Detector rows START:STOP to reconstruct (default all).")
@click.option("--slab-rows", type=int, default=32, show_default=True, help="Rows per slab (bounds the memory).")
@click.option("--uint16", "uint16_range", default=None, metavar="LO,HI",
              help="Write uint16: attenuation per voxel LO -> 0, HI -> 65535 (outside: clipped and counted).")
@click.option("--geometry", type=click.Choice(["parallel", "cone"]), default="parallel", show_default=True,
              help="Beam geometry; cone is refused (the algotom engine has no cone-beam FBP) with what supports it.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Slabs reconstructed at once by that many worker processes (the engine runs on one thread each).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run the slabs on this Dask scheduler (tcp://HOST:PORT; its workers must see OUTPUT's folder).")
@overwrite_option
@json_option
def reconstruct(projections, output, flats, darks, angles, angle_range, dataset, no_flats, drift, pixel_size, center,
                center_search, rings, ring_size, filter_name, paganin, energy_kev, distance_m, rows, slab_rows,
                uint16_range, geometry, workers, scheduler, overwrite, as_json):
    """Reconstruct PROJECTIONS (NXtomo .nxs/.h5, or a TIFF stack/folder) into the volume OUTPUT (any format).

    The slabs are streamed into OUTPUT as they are done (memory bounded by --slab-rows, not by the volume),
    under a hidden temporary name until the volume is complete; a rerun after a crash resumes.
    """
    import warnings

    from ..errors import InputError
    from ..pipeline.distributed import cluster_client
    from ..reconstruct import PaganinOptions, ReconstructOptions, open_projections, reconstruct_to

    pag = None
    if paganin is not None:
        if energy_kev is None or distance_m is None:
            raise InputError(f"--paganin {paganin:g} needs --energy-kev and --distance-m (the propagation geometry)")
        pag = PaganinOptions(paganin, energy_kev, distance_m)
    opts = ReconstructOptions(center=center, center_search=center_search, rings=rings, ring_size=ring_size,
                              filter=filter_name, paganin=pag, pixel_size_nm=pixel_size, slab_rows=slab_rows,
                              allow_missing_flats=no_flats, drift=drift, rows=_pair(rows, name="--rows") if rows else None,
                              uint16_range=_range(uint16_range) if uint16_range else None, geometry=geometry)
    proj = open_projections(projections, flats=flats, darks=darks, angles=angles, angle_range_deg=angle_range,
                            pixel_size_nm=pixel_size, data_path=dataset)
    if workers < 1:
        raise InputError(f"--workers {workers} must be >= 1 (worker processes)")
    if scheduler is not None and workers != 1:
        raise InputError(f"give either --workers {workers} (local processes) or --scheduler {scheduler}, not both")
    with warnings.catch_warnings(record=True), cluster_client(scheduler=scheduler) as client:
        warnings.simplefilter("always")
        with progress_bar(f"reconstructing {projections}") as progress:
            rec = reconstruct_to(proj, output, options=opts, workers=workers, client=client, overwrite=overwrite,
                                 progress=progress)
    path = output
    for text in rec.warnings:
        click.echo(f"tomo4d: warning: {text}", err=True)
    done_by = rec.volume.metadata.extra.get("reconstruction", {}).get("slab_processes")
    info = {"output": str(path), **rec.summary(), "workers": workers if scheduler is None else scheduler,
            "slab_processes": done_by}
    emit(info, as_json=as_json, text=f"wrote {path}: {' x '.join(map(str, rec.volume.shape))} voxels of "
                                      f"{rec.volume.voxel_size_nm[0]:g} nm, centre {rec.center:.2f}"
                                      f"{' (found)' if rec.center_found else ''}, {rec.engine}")
