"""``tomo4d neutron maps``: per-voxel (or per-pixel) 6Li fraction, Li concentration and Bragg-edge maps."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import FormatError, InputError
from ._paths import declare_paths
from ._util import emit, json_option

#: keys of a per-band volume file (.npz) read by ``tomo4d neutron maps``
BAND_KEYS = ("wavelength_angstrom", "mu_per_cm", "sigma_per_cm", "li_concentration_mol_per_cm3", "other_mu_per_cm",
             "crystal_mask")


def _pair(text, *, name):
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise InputError(f"{name}={text!r} must be two numbers LO,HI (Å)") from None
    return lo, hi


def read_band_volumes(path) -> dict:
    """Per-band volumes from a ``.npz``: ``wavelength_angstrom`` (n,), ``mu_per_cm`` (n, z, y, x) and optional
    ``sigma_per_cm`` ((n,) or (n, z, y, x)), ``li_concentration_mol_per_cm3`` (z, y, x), ``other_mu_per_cm``
    ((n,) or (n, z, y, x)), ``crystal_mask`` (z, y, x); returned with the band axis moved LAST."""
    import numpy as np

    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise FormatError(f"cannot read {str(p)!r} as a .npz of per-band volumes: {exc}") from None
    missing = [k for k in BAND_KEYS[:2] if k not in d]
    if missing:
        raise FormatError(f"{str(p)!r} lacks {', '.join(missing)}; per-band volumes need wavelength_angstrom (n,) "
                          "and mu_per_cm (n, z, y, x)")
    w, mu = np.asarray(d["wavelength_angstrom"], np.float64), np.asarray(d["mu_per_cm"], np.float64)
    if mu.ndim != 4 or mu.shape[0] != w.size:
        raise FormatError(f"{str(p)!r}: mu_per_cm has shape {mu.shape}; give (band, z, y, x) with {w.size} bands")
    n_bad = int(np.count_nonzero(np.isinf(mu)))
    if n_bad:
        raise InputError(f"{str(p)!r}: mu_per_cm holds {n_bad} non-finite (infinite) values; NaN marks a missing "
                         "voxel, infinity is not an attenuation")
    out = {"wavelength_angstrom": w, "mu_per_cm": np.moveaxis(mu, 0, -1)}
    for k in ("sigma_per_cm", "other_mu_per_cm"):
        if k in d:
            v = np.asarray(d[k], np.float64)
            out[k] = np.moveaxis(v, 0, -1) if v.ndim == 4 else v
    for k in ("li_concentration_mol_per_cm3", "crystal_mask"):
        if k in d:
            out[k] = np.asarray(d[k])
    return out


@declare_paths(inputs=("source", "open_beam"), outputs=("output",))
@click.command("maps")
@click.argument("source", type=click.Path(path_type=str))
@click.argument("output", type=click.Path(path_type=str))
@click.option("--open-beam", "open_beam", default=None, type=click.Path(path_type=str),
              help="Open-beam ToF stack: SOURCE is then the sample's ToF stack (FITS/TIFF folder), not band volumes.")
@click.option("--flight-path", type=float, default=None, metavar="M", help="ToF stack: flight path L, m.")
@click.option("--bin-width", type=float, default=None, metavar="US", help="ToF stack: bin width, us.")
@click.option("--delay", "delay_us", type=float, default=0.0, show_default=True, help="ToF stack: trigger delay, us.")
@click.option("--first-bin", type=int, default=1, show_default=True, help="ToF stack: number of the first bin.")
@click.option("--thickness-cm", type=float, default=None, help="ToF stack: sample thickness along the beam, cm.")
@click.option("--li-concentration", type=float, default=None,
              help="Known Li concentration, mol/cm^3 (fits the 6Li fraction); band volumes may carry a map.")
@click.option("--li6", type=float, default=None, help="Known 6Li atom fraction (fits the Li concentration).")
@click.option("--both", is_flag=True, help="Fit 6Li fraction and Li concentration together (no background).")
@click.option("--other-mu", type=float, default=None, help="Constant Li-free attenuation, 1/cm (default 0).")
@click.option("--no-background", is_flag=True, help="Do not fit a constant background attenuation.")
@click.option("--bin", "bin_factor", type=int, default=1, show_default=True, help="Macro-pixel size (voxels).")
@click.option("--bragg-window", default=None, help="Also fit one Bragg edge per voxel in LO,HI (Å).")
@click.option("--lattice", type=float, default=None, help="Cubic lattice parameter a, Å (strain maps with --hkl).")
@click.option("--hkl", default="111", show_default=True, help="Planes of the Bragg edge, with --lattice.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT.")
@json_option
def maps(source, output, open_beam, flight_path, bin_width, delay_us, first_bin, thickness_cm, li_concentration, li6,
         both, other_mu, no_background, bin_factor, bragg_window, lattice, hkl, overwrite, as_json):
    """Per-voxel 6Li fraction / Li concentration (and Bragg-edge) maps into OUTPUT (.npz, VoxelMaps).

    SOURCE is per-band volumes (.npz: wavelength_angstrom, mu_per_cm (band, z, y, x), optional
    sigma_per_cm, li_concentration_mol_per_cm3, other_mu_per_cm, crystal_mask), or with --open-beam a
    sample ToF stack (folder of one FITS/TIFF image per bin) giving per-pixel maps.
    """
    from ..neutron import MapOptions, cubic_d_spacing, fit_voxel_maps, parse_hkl, tof_stack_attenuation

    if Path(output).suffix.lower() != ".npz":
        raise InputError(f"OUTPUT={output!r}: maps are written as .npz; give a .npz path")
    if sum([li_concentration is not None, li6 is not None, both]) > 1:
        raise InputError("give one of --li-concentration, --li6 or --both")
    window = _pair(bragg_window, name="--bragg-window") if bragg_window else None
    d0 = None
    if lattice is not None:
        try:
            d0 = cubic_d_spacing(lattice, parse_hkl(hkl))
        except InputError as exc:
            raise InputError(f"--lattice/--hkl: {exc}") from None
    warns = ()
    if open_beam is not None:
        if flight_path is None or bin_width is None or thickness_cm is None:
            raise InputError("a ToF stack (--open-beam) needs --flight-path (m), --bin-width (us) and --thickness-cm")
        w, mu, sig, warns = tof_stack_attenuation(source, open_beam, flight_path_m=flight_path, bin_width_us=bin_width,
                                                  thickness_cm=thickness_cm, delay_us=delay_us, first_bin=first_bin)
        data = {"wavelength_angstrom": w, "mu_per_cm": mu, "sigma_per_cm": sig}
    else:
        if flight_path is not None or bin_width is not None or thickness_cm is not None:
            raise InputError("--flight-path/--bin-width/--thickness-cm apply to ToF stacks: give --open-beam too")
        data = read_band_volumes(source)
    for msg in warns:
        click.echo(f"tomo4d: warning: {msg}", err=True)
    conc = li_concentration if li_concentration is not None else (
        None if (li6 is not None or both) else data.get("li_concentration_mol_per_cm3"))
    if conc is None and li6 is None and not both:
        raise InputError("say what is known: --li-concentration C (mol/cm^3; or a li_concentration_mol_per_cm3 map in "
                         "the band file), --li6 F, or --both")
    other = other_mu if other_mu is not None else data.get("other_mu_per_cm", 0.0)
    opts = MapOptions(fit_background=not (no_background or both), bin_factor=bin_factor,
                      bragg_window_angstrom=window, d0_angstrom=d0)
    result = fit_voxel_maps(data["wavelength_angstrom"], data["mu_per_cm"], data.get("sigma_per_cm"),
                            li_concentration_mol_per_cm3=conc, li6_fraction=li6, other_mu_per_cm=other,
                            crystal_mask=data.get("crystal_mask"), options=opts)
    path = result.save(output, overwrite=overwrite, inputs=[p for p in (source, open_beam) if p])
    summary = {"output": str(path), **result.summary(), "warnings": list(warns),
               "sigma": "given" if data.get("sigma_per_cm") is not None else "estimated per band"}

    def lines():
        s = summary
        if "mode" in s:
            yield (f"6Li maps ({s['mode']}): {s['n_ok']} of {s['n_spectra']} ok; median 6Li "
                   f"{_fmt(s['li6_percent_median'])} % (sigma {_fmt(s['li6_percent_sigma_median'])} %), Li "
                   f"{_fmt(s['li_concentration_median_mol_per_cm3'])} mol/cm^3; sigma {s['sigma']}")
        if "n_edge_ok" in s:
            yield (f"Bragg edge: {s['n_edge_ok']} voxels ok, median {_fmt(s['edge_median_angstrom'])} Å "
                   f"(sigma {_fmt(s['edge_sigma_median_angstrom'])} Å)")
            if "strain_median" in s:
                yield f"strain: median {_fmt(s['strain_median'])} (sigma {_fmt(s['strain_sigma_median'])})"
        yield f"wrote {path}"

    emit(summary, as_json=as_json, text=lines())


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"
