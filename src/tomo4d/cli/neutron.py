"""``tomo4d neutron``: resolution planner, normalisation, Bragg edges, isotopes, lithium maps."""

# Library imports stay inside the commands: `tomo4d --help` imports every command module, and the
# library packages cost 15-340 ms each to import (measured, issue 17); core ones sit at the top.
from __future__ import annotations

from pathlib import Path

import click

from ..errors import FormatError, InputError
from ._paths import declare_paths
from ._util import emit, json_option


def _table(header, rows):
    """Lines of a left-aligned text table."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    yield "  ".join(h.ljust(w) for h, w in zip(header, widths))
    for r in rows:
        yield "  ".join(c.ljust(w) for c, w in zip(r, widths))


def _pair(text, *, name):
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise InputError(f"{name}={text!r} must be two numbers LO,HI") from None
    return lo, hi


def _load_array(path: str):
    """A 2D TIFF image or any volume tomo4d reads, as a numpy array; plus the source path."""
    import numpy as np

    from ..io import open_image, open_volume

    p = Path(path)
    if p.is_file() and p.suffix.lower() in (".tif", ".tiff"):
        try:
            return np.asarray(open_image(p))
        except FormatError:
            pass
    return np.asarray(open_volume(p).numpy())


def _save(array, path: str, *, overwrite: bool, name: str) -> Path:
    import numpy as np

    from ..io import save_volume
    from ..volume import Volume, VolumeMetadata

    a = np.asarray(array, dtype=np.float32)
    vol = Volume(a[None] if a.ndim == 2 else a, metadata=VolumeMetadata(name=name, modality="neutron",
                                                                       provenance=(f"tomo4d neutron: {name}",)))
    return save_volume(vol, path, overwrite=overwrite)


def _raw_options(f):
    """--open-beam/--flight-path/--bin-width/--delay/--overlap-triggers: a SPECTRUM of raw ToF counts."""
    opts = [
        click.option("--open-beam", "open_beam", default=None, type=click.Path(path_type=str),
                     help="Open-beam ToF counts (CSV: stack/bin, counts): SPECTRUM is then raw sample counts."),
        click.option("--flight-path", "flight_path", type=float, default=None,
                     help="Flight path L, m (with --open-beam).", metavar="M"),
        click.option("--bin-width", "bin_width", type=float, default=None,
                     help="ToF bin width, us (with --open-beam); bin k is at k x width.", metavar="US"),
        click.option("--delay", "delay_us", type=float, default=0.0, show_default=True,
                     help="Trigger delay subtracted from the ToF, us."),
        click.option("--overlap-triggers", type=float, default=None,
                     help="Event-mode overlap correction: number of source pulses summed into the counts."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _read_spectrum_input(spectrum, raw):
    """(Spectra, warnings) from a prepared CSV (wavelength, value[, sigma]) or raw sample + open-beam ToF counts."""
    from ..neutron import raw_transmission_spectrum, read_spectrum_csv

    open_beam, flight_path, bin_width, delay_us, triggers = raw
    if open_beam is None:
        if flight_path is not None or bin_width is not None or triggers is not None:
            raise InputError("--flight-path/--bin-width/--overlap-triggers apply to raw counts: give --open-beam too")
        return read_spectrum_csv(spectrum), ()
    if flight_path is None or bin_width is None:
        raise InputError("raw ToF counts (--open-beam) need --flight-path (m) and --bin-width (us)")
    return raw_transmission_spectrum(spectrum, open_beam, flight_path_m=flight_path, bin_width_us=bin_width,
                                     delay_us=delay_us, overlap_triggers=triggers)


def _warn(warnings):
    for w in warnings:
        click.echo(f"tomo4d: warning: {w}", err=True)


@click.group()
def neutron():
    """Neutron and joint X-ray/neutron analysis (Li, isotopes, Bragg edges, planning)."""


@declare_paths()
@neutron.command()
@click.option("--target-um", type=float, required=True, help="Wanted resolution, um.")
@click.option("--ld", "collimation_ratio", type=float, default=None, help="Neutron collimation ratio L/D.")
@click.option("--sample-detector-mm", type=float, default=None, help="Neutron sample-detector distance l, mm.")
@click.option("--min-sample-detector-mm", type=float, default=0.0, show_default=True,
              help="Closest the sample can get to the neutron detector, mm.")
@click.option("--detector-res-um", type=float, default=0.0, show_default=True,
              help="Intrinsic neutron detector resolution, um.")
@click.option("--pixel-um", type=float, default=None, help="X-ray detector pixel P_x, um.")
@click.option("--so-mm", type=float, default=None, help="X-ray source-sample distance SO, mm.")
@click.option("--sd-mm", type=float, default=None, help="X-ray source-detector distance SD, mm.")
@click.option("--min-so-mm", type=float, default=0.0, show_default=True,
              help="Closest the sample can get to the X-ray source, mm.")
@click.option("--spot-um", type=float, default=0.0, show_default=True, help="X-ray focal spot size, um.")
@click.option("--beamline", type=click.Choice(["next", "odin"], case_sensitive=False), default=None,
              help="Nominal geometry of ILL NeXT (neutron + X-ray) or ESS ODIN (neutron); the default when no "
                   "geometry is given is next. Explicit --ld/--sample-detector-mm or --pixel-um/--so-mm/--sd-mm "
                   "replace that modality's preset.")
@json_option
def plan(target_um, collimation_ratio, sample_detector_mm, min_sample_detector_mm, detector_res_um, pixel_um, so_mm,
         sd_mm, min_so_mm, spot_um, beamline, as_json):
    """Which resolution a neutron (R = l / (L/D)) and X-ray (R = P / M, M = SD/SO) geometry reaches.

    Without a geometry the nominal NeXT (ILL) set-up is planned (stated in the output).
    """
    from ..neutron import NeutronSetup, XraySetup, beamline_setup, plan_resolution

    n_given = [v is not None for v in (collimation_ratio, sample_detector_mm)]
    x_given = [v is not None for v in (pixel_um, so_mm, sd_mm)]
    if any(n_given) and not all(n_given):
        raise InputError("the neutron geometry needs both --ld and --sample-detector-mm")
    if any(x_given) and not all(x_given):
        raise InputError("the X-ray geometry needs --pixel-um, --so-mm and --sd-mm")
    ns = (NeutronSetup(collimation_ratio=collimation_ratio, sample_detector_distance_mm=sample_detector_mm,
                       min_sample_detector_distance_mm=min_sample_detector_mm,
                       detector_resolution_um=detector_res_um) if all(n_given) else None)
    xs = (XraySetup(detector_pixel_um=pixel_um, source_sample_distance_mm=so_mm, source_detector_distance_mm=sd_mm,
                    min_source_sample_distance_mm=min_so_mm, source_spot_um=spot_um) if all(x_given) else None)
    preset = None
    if beamline is not None or (ns is None and xs is None):
        preset = (beamline or "next").lower()
        pn, px = beamline_setup(preset)
        ns = ns if ns is not None else pn
        xs = xs if xs is not None else px
    result = plan_resolution(target_um, neutron=ns, xray=xs)

    def payload():
        d = result.to_dict()
        d["beamline_preset"] = preset
        return d

    def lines():
        yield f"target resolution: {target_um:g} um"
        if preset is not None:
            yield (f"geometry: nominal {preset} preset (tomo4d.neutron.BEAMLINES; give --ld/--sample-detector-mm, "
                   "--pixel-um/--so-mm/--sd-mm for yours)")
        yield from _table(result.header(), result.table_rows())

    emit(payload, as_json=as_json, text=lines())


@declare_paths(inputs=("sample", "open_beam", "dark"), outputs=("output",))
@neutron.command()
@click.argument("sample", type=click.Path(path_type=str))
@click.argument("open_beam", type=click.Path(path_type=str))
@click.argument("output", type=click.Path(path_type=str))
@click.option("--dark", default=None, type=click.Path(path_type=str), help="Dark-field image/volume.")
@click.option("--sample-dose", type=float, default=None, help="Dose of the sample exposure (proton charge, ...).")
@click.option("--ob-dose", type=float, default=None, help="Dose of the open-beam exposure.")
@click.option("--background", default=None, help="Sample-free region Y0:Y1,X0:X1 (pixels) set to T = 1.")
@click.option("--thickness-cm", type=float, default=None,
              help="Write the attenuation coefficient -ln(T)/thickness (1/cm) instead of T.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT.")
@click.option("--flight-path", "flight_path", type=float, default=None, metavar="M",
              help="ToF spectra (CSV SAMPLE/OPEN_BEAM of counts per bin): flight path L, m.")
@click.option("--bin-width", "bin_width", type=float, default=None, metavar="US",
              help="ToF spectra: bin width, us (bin k at k x width).")
@click.option("--delay", "delay_us", type=float, default=0.0, show_default=True, help="ToF spectra: trigger delay, us.")
@click.option("--overlap-triggers", type=float, default=None,
              help="ToF spectra: event-mode overlap correction with this number of source pulses.")
@json_option
def normalize(sample, open_beam, output, dark, sample_dose, ob_dose, background, thickness_cm, overwrite, flight_path,
              bin_width, delay_us, overlap_triggers, as_json):
    """Open-beam/dark correction of SAMPLE into OUTPUT (transmission or attenuation, float32).

    Images, stacks (a folder of one TIFF per ToF bin) and volumes give a volume; raw ToF counts in CSV
    (columns stack/bin, counts) with --flight-path and --bin-width give a CSV spectrum wl,trans,err
    (or wl,mu,err with --thickness-cm) with Poisson errors.  Open-beam pixels/bins <= dark are masked
    (NaN) and counted; an open beam that is zero everywhere is an error.
    """
    import numpy as np

    from ..neutron import attenuation_coefficient, normalize_transmission

    if Path(sample).suffix.lower() in (".csv", ".txt"):
        if dark or background:
            raise InputError("--dark/--background apply to images; subtract the dark from ToF counts beforehand")
        _normalize_spectrum(sample, open_beam, output, (open_beam, flight_path, bin_width, delay_us,
                                                         overlap_triggers), sample_dose, ob_dose, thickness_cm,
                            overwrite, as_json)
        return
    region = None
    if background:
        try:
            ys, xs = background.split(",")
            region = tuple(slice(*(int(v) for v in part.split(":"))) for part in (ys, xs))
        except ValueError:
            raise InputError(f"--background={background!r} must look like Y0:Y1,X0:X1 (pixel ranges)") from None
    s = _load_array(sample)
    ob = _load_array(open_beam)
    dk = _load_array(dark) if dark else None
    if s.ndim == 3 and ob.ndim == 3 and s.shape[0] != ob.shape[0] and s.shape[1:] == ob.shape[1:]:
        raise InputError(f"SAMPLE has {s.shape[0]} images (ToF bins) but OPEN_BEAM {ob.shape[0]}; record or rebin "
                         "both with the same bins")
    try:
        n_bad = int(np.count_nonzero(np.broadcast_to(ob - (dk if dk is not None else 0.0), s.shape) <= 0))
    except ValueError:  # shapes that do not match: normalize_transmission names them
        n_bad = 0
    partial = 0 < n_bad < s.size
    t = normalize_transmission(s, ob, dk, sample_dose=sample_dose, open_beam_dose=ob_dose, background_region=region,
                               invalid="nan" if partial else "raise")
    if partial:
        _warn([f"open beam minus dark <= 0 at {n_bad} of {s.size} pixels: masked (NaN)"])
    out = attenuation_coefficient(t, thickness_cm=thickness_cm) if thickness_cm is not None else t
    what = "attenuation (1/cm)" if thickness_cm is not None else "transmission"
    path = _save(out, output, overwrite=overwrite, name=what)
    stats = {"output": str(path), "quantity": what, "shape": list(np.shape(out)),
             "mean": float(np.nanmean(out)), "min": float(np.nanmin(out)), "max": float(np.nanmax(out))}
    emit(stats, as_json=as_json, text=f"wrote {path}: {what}, shape {tuple(stats['shape'])}, mean {stats['mean']:.4g} "
                                      f"(min {stats['min']:.4g}, max {stats['max']:.4g})")


def _normalize_spectrum(sample, open_beam, output, raw, sample_dose, ob_dose, thickness_cm, overwrite, as_json):
    """``neutron normalize`` for raw ToF counts in CSV: writes wl,trans,err (or wl,mu,err)."""
    import numpy as np

    from ..io import atomic_output
    from ..neutron import raw_transmission_spectrum

    _, flight_path, bin_width, delay_us, triggers = raw
    if flight_path is None or bin_width is None:
        raise InputError("raw ToF counts (CSV) need --flight-path (m) and --bin-width (us)")
    if Path(output).suffix.lower() != ".csv":
        raise InputError(f"OUTPUT={output!r}: a normalised ToF spectrum is written as CSV; give a .csv path")
    sp, warns = raw_transmission_spectrum(sample, open_beam, flight_path_m=flight_path, bin_width_us=bin_width,
                                          delay_us=delay_us, sample_dose=sample_dose, open_beam_dose=ob_dose,
                                          overlap_triggers=triggers)
    _warn(warns)
    w, v, e, name = sp.wavelength_angstrom, sp.values, sp.sigma, "trans"
    if thickness_cm is not None:
        from ..neutron import attenuation_coefficient

        v = attenuation_coefficient(v, thickness_cm=thickness_cm).astype(np.float64)
        e, name = e / np.maximum(sp.values, 1e-12) / thickness_cm, "mu"
    text = f"wl,{name},err\n" + "".join(f"{a:.7g},{b:.7g},{c:.5g}\n" for a, b, c in zip(w, v, e))
    with atomic_output(Path(output), overwrite=overwrite, inputs=[sample, open_beam]) as tmp:
        tmp.write_text(text)
    stats = {"output": output, "quantity": name, "n_bins": int(w.size), "wavelength_angstrom": [float(w[0]),
             float(w[-1])], "warnings": list(warns)}
    emit(stats, as_json=as_json, text=f"wrote {output}: {name} of {w.size} ToF bins, {w[0]:.4g}..{w[-1]:.4g} Å")


@declare_paths(inputs=("spectrum", "open_beam"), outputs=("figure_path",))
@neutron.command()
@click.argument("spectrum", type=click.Path(path_type=str))
@_raw_options
@click.option("--window", default=None, help="Fit window LO,HI in Å (one edge; recommended).")
@click.option("--guess", type=float, default=None, help="Start value of the edge position, Å.")
@click.option("--profile", type=click.Choice(["tail", "gaussian"]), default="tail", show_default=True,
              help="Edge broadening: Gaussian with exponential tail (Santisteban/Kropff) or Gaussian only.")
@click.option("--baseline", type=click.Choice(["auto", "linear", "quadratic"]), default="auto", show_default=True,
              help="Exponents of T above/below the edge: straight lines, or curved; auto: curved where that edge "
                   "fit is ok, else straight (curved baselines remove the straight ones' strain bias, +3.4e-4 on "
                   "the measured iron powder, at some precision on weak edges).")
@click.option("--position", type=click.Choice(["midpoint", "onset"]), default="midpoint", show_default=True,
              help="Edge position for d spacing and strain: half height of the edge, or the tail model's onset.")
@click.option("--lattice", type=float, default=None, help="Cubic lattice parameter a, Å (gives the expected edge).")
@click.option("--hkl", default="110", show_default=True,
              help="Plane family with --lattice: 110, 1,1,0 or '1 1 0' (minus signs: 1-10).")
@click.option("--figure", "figure_path", default=None, type=click.Path(path_type=str), help="Write a PNG of the fit.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --figure.")
@json_option
def bragg(spectrum, open_beam, flight_path, bin_width, delay_us, overlap_triggers, window, guess, profile, baseline,
          position, lattice, hkl, figure_path, overwrite, as_json):
    """Fit a Bragg edge in a transmission SPECTRUM (CSV: wavelength Å, transmission[, sigma]).

    With --open-beam, SPECTRUM holds raw sample counts per ToF bin (stack/bin, counts), normalised by the
    open beam's with Poisson errors and put on wavelength by --flight-path and --bin-width.
    """
    from ..neutron import cubic_d_spacing, fit_bragg_edge, parse_hkl

    sp, warns = _read_spectrum_input(spectrum, (open_beam, flight_path, bin_width, delay_us, overlap_triggers))
    _warn(warns)
    win = _pair(window, name="--window") if window else None
    expected = None
    if lattice is not None:
        try:
            h = parse_hkl(hkl)
        except InputError as exc:
            raise InputError(f"--hkl: {exc}") from None
        expected = 2 * cubic_d_spacing(lattice, h)
        if guess is None and win is not None and win[0] < expected < win[1]:
            guess = expected
    kw = dict(window_angstrom=win, edge_guess_angstrom=guess, profile=profile, position=position)
    used = "quadratic" if baseline == "auto" else baseline
    fit = fit_bragg_edge(sp.wavelength_angstrom, sp.values, sp.sigma, baseline=used, **kw)
    if baseline == "auto" and not fit.ok:  # a weak edge: curved baselines cost it its significance
        used = "linear"
        fit = fit_bragg_edge(sp.wavelength_angstrom, sp.values, sp.sigma, baseline=used, **kw)
    d = fit.to_dict()
    d["baseline"] = used
    d["warnings"] = list(warns)
    if expected is not None:
        d["expected_edge_angstrom"] = expected
        d["midpoint_minus_expected_angstrom"] = float(fit.edge_midpoint_angstrom) - expected
        d["edge_minus_expected_angstrom"] = float(fit.edge_angstrom) - expected
        if fit.ok:
            st = fit.strain(expected / 2)
            d["strain"] = float(st.strain)
            d["strain_sigma"] = float(st.strain_sigma)
    if figure_path:
        from ..io import atomic_output
        from ..neutron.plot import bragg_edge_figure
        from ..report import figure_png

        png = figure_png(bragg_edge_figure(sp.wavelength_angstrom, sp.values, fit, sigma=sp.sigma,
                                           expected_angstrom=expected, title=Path(spectrum).name), dpi=110)
        with atomic_output(Path(figure_path), overwrite=overwrite, inputs=[spectrum]) as tmp:
            tmp.write_bytes(png)
        d["figure"] = figure_path

    def lines():
        if not fit.ok:
            yield (f"edge fit NOT ok in {fit.window_angstrom[0]:.4g}..{fit.window_angstrom[1]:.4g} Å "
                   "(no significant edge, or it sits at the window border); adjust --window/--guess")
            return
        yield from _table(("quantity", "value", "sigma", "unit"), _bragg_rows(fit, expected, d))
        if figure_path:
            yield f"wrote {figure_path}"

    emit(d, as_json=as_json, text=lines())


def _bragg_rows(fit, expected, d):
    """Rows (quantity, value, sigma, unit) of a fitted Bragg edge for ``tomo4d neutron bragg``."""
    f = lambda a: f"{float(a):.5f}"  # noqa: E731
    rows = [(f"edge position ({fit.position}; {d['baseline']} baselines)", f(fit.edge_angstrom),
             f(fit.edge_sigma_angstrom), "Å"),
            ("edge onset lambda_hkl (model)", f(fit.edge_position_angstrom), f(fit.edge_position_sigma_angstrom), "Å"),
            ("edge midpoint (half height)", f(fit.edge_midpoint_angstrom), f(fit.edge_midpoint_sigma_angstrom), "Å"),
            (f"d spacing ({fit.position} / 2)", f(fit.d_spacing_angstrom), f(fit.d_spacing_sigma_angstrom), "Å"),
            ("width sigma", f(fit.edge_width_angstrom), f(fit.edge_width_sigma_angstrom), "Å"),
            ("tail tau", f(fit.edge_tail_angstrom), "", "Å"),
            ("height", f"{float(fit.edge_height):.4f}", f"{float(fit.edge_height_sigma):.4f}", "transmission"),
            ("reduced chi2", f"{float(fit.chi2_reduced):.3f}", "", "")]
    if expected is not None:
        rows.append(("expected edge 2 d_hkl", f"{expected:.5f}", "", "Å"))
        rows.append((f"edge ({fit.position}) - expected", f"{d['edge_minus_expected_angstrom']:+.5f}", "", "Å"))
        if "strain" in d:
            rows.append(("strain (edge / 2 - d0) / d0", f"{d['strain']:+.2e}", f"{d['strain_sigma']:.1e}", ""))
    return rows


@declare_paths(inputs=("spectrum", "open_beam"))
@neutron.command()
@click.argument("spectrum", type=click.Path(path_type=str))
@_raw_options
@click.option("--composition", required=True, help="Chemical formula of the phase, e.g. Li7La3Zr2O12.")
@click.option("--density", type=float, required=True, help="Mass density of the phase, g/cm^3.")
@click.option("--thickness-cm", type=float, default=None,
              help="The SPECTRUM is a transmission through this thickness (else attenuation in 1/cm).")
@click.option("--no-background", is_flag=True, help="Do not fit a constant background attenuation.")
@json_option
def isotopes(spectrum, open_beam, flight_path, bin_width, delay_us, overlap_triggers, composition, density,
             thickness_cm, no_background, as_json):
    """6Li fraction from an attenuation (or transmission) SPECTRUM of a phase of known composition.

    With --open-beam, SPECTRUM holds raw sample counts per ToF bin; their transmission (needs
    --thickness-cm) is computed with --flight-path and --bin-width.
    """
    import numpy as np

    from ..neutron import (
        attenuation_coefficient,
        fit_li6_fraction,
        li_concentration_from_composition,
        non_lithium_attenuation_per_cm,
    )

    sp, warns = _read_spectrum_input(spectrum, (open_beam, flight_path, bin_width, delay_us, overlap_triggers))
    _warn(warns)
    if open_beam is not None and thickness_cm is None:
        raise InputError("raw counts (--open-beam) give a transmission: --thickness-cm is needed for the attenuation")
    mu, sig = sp.values, sp.sigma
    if thickness_cm is not None:
        mu = attenuation_coefficient(sp.values, thickness_cm=thickness_cm).astype(np.float64)
        if sig is not None:
            sig = sig / np.maximum(sp.values, 1e-12) / thickness_cm
    c_li = li_concentration_from_composition(composition, density_g_per_cm3=density)
    other = non_lithium_attenuation_per_cm(composition, density_g_per_cm3=density,
                                           wavelength_angstrom=sp.wavelength_angstrom)
    fit = fit_li6_fraction(sp.wavelength_angstrom, mu, sig, li_concentration_mol_per_cm3=c_li, other_mu_per_cm=other,
                           fit_background=not no_background)
    d = fit.to_dict()
    d["li_concentration_mol_per_cm3"] = c_li

    def lines():
        if not fit.ok:
            yield "6Li fit NOT ok (too few valid bins or an unphysical result)"
            return
        yield from _table(("quantity", "value", "sigma", "unit"), [
            ("6Li fraction", f"{100 * float(fit.li6_fraction):.3f}", f"{100 * float(fit.li6_fraction_sigma):.3f}",
             "atom %"),
            ("background", f"{float(fit.background_per_cm):.4f}", f"{float(fit.background_sigma_per_cm):.4f}",
             "1/cm"),
            ("Li concentration (input)", f"{c_li:.5f}", "", "mol/cm^3"),
            ("reduced chi2", f"{float(fit.chi2_reduced):.3f}", "", "")])

    emit(d, as_json=as_json, text=lines())


@declare_paths(inputs=("mu_volume", "labels_path"), outputs=("output", "sigma_output"))
@neutron.command()
@click.argument("mu_volume", type=click.Path(path_type=str))
@click.argument("output", type=click.Path(path_type=str))
@click.option("--labels", "labels_path", default=None, type=click.Path(path_type=str),
              help="Label volume of reference (and reported) regions.")
@click.option("--ref", "refs", multiple=True, help="Reference LABEL=CONC (mol/cm^3), e.g. --ref 1=0 --ref 2=0.0769.")
@click.option("--wavelength", type=float, default=1.798, show_default=True,
              help="Effective wavelength (Å) for the cross-section calibration (without --ref).")
@click.option("--li6", type=float, default=0.0759, show_default=True, help="6Li atom fraction (without --ref).")
@click.option("--matrix-mu", type=float, default=0.0, show_default=True,
              help="Li-free attenuation, 1/cm (without --ref, or with a single --ref).")
@click.option("--sigma-output", default=None, type=click.Path(path_type=str), help="Also write the uncertainty map.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@json_option
def lithium(mu_volume, output, labels_path, refs, wavelength, li6, matrix_mu, sigma_output, overwrite, as_json):
    """Li concentration map (mol/cm^3) from a neutron attenuation volume MU_VOLUME (1/cm)."""

    from ..neutron import calibrate_lithium, lithium_concentration, region_values, theoretical_lithium_calibration

    mu = _load_array(mu_volume)
    labels = None
    if labels_path:
        from .._validate import check_labels

        labels = check_labels(f"--labels ({labels_path})", _load_array(labels_path), shape=mu.shape,
                              role="neutron lithium expects region labels")
    if refs:
        if labels is None:
            raise InputError("--ref needs --labels (the reference regions)")
        masks, conc = [], []
        for r in refs:
            try:
                k, v = r.split("=")
                lab, c = int(k), float(v)
            except ValueError:
                raise InputError(f"--ref {r!r} must look like LABEL=CONC, e.g. 2=0.0769") from None
            masks.append(labels == lab)
            conc.append(c)
        cal = calibrate_lithium(mu, masks, conc, intercept_per_cm=matrix_mu if len(refs) == 1 else None)
    else:
        cal = theoretical_lithium_calibration(wavelength_angstrom=wavelength, li6_fraction=li6,
                                              matrix_mu_per_cm=matrix_mu)
    res = lithium_concentration(mu, cal)
    written = [str(_save(res.concentration_mol_per_cm3, output, overwrite=overwrite,
                         name="Li concentration (mol/cm^3)"))]
    if sigma_output:
        written.append(str(_save(res.sigma_mol_per_cm3, sigma_output, overwrite=overwrite,
                                 name="Li concentration uncertainty (mol/cm^3)")))
    regions = None
    if labels is not None:
        rv = region_values(res.concentration_mol_per_cm3, labels)
        regions = [{"label": int(l_), "mean_mol_per_cm3": float(m), "sigma_of_mean_mol_per_cm3": float(s),
                    "n_voxels": int(n)} for l_, m, s, n in zip(rv.labels, rv.mean, rv.sigma_of_mean, rv.n_voxels)]

    def lines():
        yield (f"calibration ({cal.method}): mu = {cal.intercept_per_cm:.4g} + {cal.slope_cm2_per_mol:.4g} c "
               f"(+- {cal.slope_sigma_cm2_per_mol:.2g}) ; effective Li cross section "
               f"{cal.effective_cross_section_barn:.4g} b")
        if regions:
            yield from _table(("label", "Li (mol/cm^3)", "sigma of mean", "voxels"),
                              [(r["label"], f"{r['mean_mol_per_cm3']:.5f}", f"{r['sigma_of_mean_mol_per_cm3']:.2g}",
                                r["n_voxels"]) for r in regions])
        for w in written:
            yield f"wrote {w}"

    emit({"calibration": cal.to_dict(), "regions": regions, "written": written}, as_json=as_json, text=lines())


from .neutron_maps import maps as _maps  # noqa: E402  (its own module: cli/neutron.py is near 500 lines)

neutron.add_command(_maps)
from .neutron_bands import bands as _bands  # noqa: E402

neutron.add_command(_bands)
