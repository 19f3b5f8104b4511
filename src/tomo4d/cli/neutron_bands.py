"""``tomo4d neutron bands``: wavelength-resolved tomography, one reconstruction per wavelength band."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..errors import InputError
from ._paths import declare_paths
from ._util import emit, json_option


def _numbers(text, *, name):
    try:
        return [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{name}={text!r} must be numbers separated by commas") from None


@declare_paths(inputs=("stacks", "open_beam", "dark"), outputs=("output",))
@click.command("bands")
@click.argument("stacks", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(path_type=str),
              help="Band volumes (.npz: wavelength_angstrom, mu_per_cm (band, z, y, x), sigma_per_cm), the input "
                   "of `tomo4d neutron maps`.")
@click.option("--open-beam", "open_beam", required=True, type=click.Path(path_type=str),
              help="Open-beam ToF stack (same bins and detector).")
@click.option("--dark", default=None, type=click.Path(path_type=str),
              help="Dark image or ToF stack, counts per projection exposure (default none: event detector).")
@click.option("--flight-path", type=float, required=True, metavar="M", help="Flight path L, m.")
@click.option("--bin-width", type=float, required=True, metavar="US", help="ToF bin width, us.")
@click.option("--delay", "delay_us", type=float, default=0.0, show_default=True, help="Trigger delay, us.")
@click.option("--first-bin", type=int, default=1, show_default=True, help="Number of the stacks' first bin.")
@click.option("--pixel-size", type=float, required=True, metavar="NM", help="Detector pixel at the sample, nm.")
@click.option("--angles", default=None, metavar="DEG,...",
              help="Angle of each stack, degrees (default: evenly over 180 degrees without end point).")
@click.option("--bands", "n_bands", type=int, default=20, show_default=True,
              help="Number of bands of equal open-beam counts.")
@click.option("--band-edges", default=None, metavar="A,B,...", help="Band edges, Å (instead of --bands).")
@click.option("--open-beam-exposure", type=float, default=1.0, show_default=True,
              help="Open-beam exposure in projection exposures (e.g. 10 summed frames: 10).")
@click.option("--center", type=float, default=None, help="Rotation axis, detector column (default: found once).")
@click.option("--filter", "filter_name", type=click.Choice(["ramp", "hann", "hamming", "parzen", "blackman"]),
              default="ramp", show_default=True, help="FBP filter.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT.")
@json_option
def bands(stacks, output, open_beam, dark, flight_path, bin_width, delay_us, first_bin, pixel_size, angles, n_bands,
          band_edges, open_beam_exposure, center, filter_name, overwrite, as_json):
    """Per-band attenuation volumes (1/cm) from ToF projections: one ToF stack per angle (STACKS, in angle
    order: FITS folders or TIFF stacks, bins x rows x columns) -> bands -> FBP of each band.

    Bands are contiguous ToF bins with equal open-beam counts (--bands) or given edges (--band-edges); the
    band wavelength is the open-beam-weighted mean of its bins.  Each band is reconstructed by the engine of
    `tomo4d reconstruct` (algotom FBP; the axis found once on the sum of all bins); sigma_per_cm is the
    per-voxel standard deviation from the Poisson counts (sample and open beam).  Fit the maps with
    `tomo4d neutron maps OUTPUT MAPS.npz --li-concentration C`.
    """
    from ..neutron import BandOptions, read_tof_stack, reconstruct_bands, tof_bin_wavelengths, wavelength_range_warnings
    from ..reconstruct import ReconstructOptions

    if Path(output).suffix.lower() != ".npz":
        raise InputError(f"OUTPUT={output!r}: band volumes are written as .npz; give a .npz path")
    edges = _numbers(band_edges, name="--band-edges") if band_edges else None
    opts = BandOptions(n_bands=n_bands, edges_angstrom=tuple(edges) if edges else None,
                       open_beam_exposure=open_beam_exposure,
                       reconstruct=ReconstructOptions(center=center, filter=filter_name))
    ang = np.asarray(_numbers(angles, name="--angles")) if angles else np.linspace(0, 180, len(stacks), endpoint=False)
    ob = read_tof_stack(open_beam)
    counts = np.empty((len(stacks),) + ob.shape, np.float32)
    for i, s in enumerate(stacks):
        a = read_tof_stack(s)
        if a.shape != ob.shape:
            raise InputError(f"ToF stack {s!r} is {a.shape} (bins, rows, columns) but the open beam {ob.shape}; "
                             "every stack needs the open beam's bins and detector")
        n_bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if n_bad:
            raise InputError(f"ToF stack {s!r} holds {n_bad} non-finite values; counts are finite numbers")
        counts[i] = a
    dk = None if dark is None else read_tof_stack(dark)
    if len(stacks) < 2:
        raise InputError(f"{len(stacks)} ToF stack given; a tomography needs one stack per angle (>= 2)")
    if ang.size != len(stacks):
        raise InputError(f"--angles has {ang.size} values for {len(stacks)} stacks; give one angle per stack")
    if dk is not None and dk.shape[0] == 1:
        dk = dk[0]
    bins = np.arange(first_bin, first_bin + ob.shape[0], dtype=np.float64)
    w = tof_bin_wavelengths(bins, flight_path_m=flight_path, bin_width_us=bin_width, delay_us=delay_us)
    warns = list(wavelength_range_warnings(w, what="the ToF stacks"))
    result = reconstruct_bands(counts, ob, dk, wavelength_angstrom=w, angles_deg=ang, pixel_size_nm=pixel_size,
                               options=opts)
    path = result.save(output, overwrite=overwrite, inputs=[p for p in (*stacks, open_beam, dark) if p])
    summary = {"output": str(path), "n_bands": int(len(result.bins)), "shape": list(result.mu_per_cm.shape),
               "wavelength_angstrom": [round(float(v), 4) for v in result.wavelength_angstrom],
               "center": result.center, "n_clipped": result.n_clipped, "warnings": warns,
               "sigma_median_per_cm": float(np.median(result.sigma_per_cm))}
    for msg in warns:
        click.echo(f"tomo4d: warning: {msg}", err=True)

    def lines():
        wl = result.wavelength_angstrom
        yield (f"{len(result.bins)} bands {wl[0]:.3f}..{wl[-1]:.3f} Å, volumes {tuple(result.mu_per_cm.shape[1:])} "
               f"voxels of {pixel_size:g} nm, axis at column {result.center:.2f}")
        yield f"median sigma {summary['sigma_median_per_cm']:.4g} 1/cm; clipped transmissions: {result.n_clipped}"
        yield f"wrote {path}"

    emit(summary, as_json=as_json, text=lines())
