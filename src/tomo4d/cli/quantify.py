"""``tomo4d quantify``: thickness, phases, particles, track, regions, modes."""

# Library imports stay inside the commands: `tomo4d --help` imports every command module, and the
# library packages cost 15-340 ms each to import (measured, issue 17); core ones sit at the top.
from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError
from ._paths import declare_paths
from ._util import (
    budget_option,
    check_budget,
    emit,
    json_option,
    map_option,
    option_group,
    overwrite_option,
    parse_triple,
    progress_bar,
    relabel,
)

#: --voxel-size, -o/--output, --overwrite and --json of every quantify command.
_table_options = option_group(
    click.option("--voxel-size", default=None, help="Voxel size in nm: one value or Z,Y,X (default: from the files)."),
    click.option("-o", "--output", default=None, type=click.Path(path_type=str),
                 help="Write the table here (.csv or .parquet)."),
    overwrite_option,
    json_option,
)


def _check_output(output):
    if output is not None and Path(output).suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"cannot write a table to {output!r}: use a .csv or .parquet suffix")


def _open_all(paths, voxel_size, output=None):
    from ..io import open_volume

    _check_output(output)

    vs = parse_triple(voxel_size, name="--voxel-size")
    vols = [open_volume(p, voxel_size_nm=vs) for p in paths]
    return vols, vs


def _voxel(vols, vs):
    from .._validate import voxel_size

    return voxel_size(vs, *vols)


def _write(result, output, overwrite, inputs):
    if output is None:
        return None
    from ..quantify import write_table

    return str(write_table(result, output, overwrite=overwrite, inputs=inputs))


def _wrote(written):
    """The closing ``wrote PATH`` line, when a table was written."""
    return [f"wrote {written}"] if written else []


@click.group()
def quantify():
    """Quantify segmented time series: thickness, phase volumes, particles, tracks, strain regions, modes."""


@declare_paths(inputs=("labels",), outputs=("output",))
@quantify.command()
@click.argument("labels", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--smooth", "smooth_nm", default=400.0, show_default=True, help="Lateral smoothing of interfaces, nm.")
@map_option
@budget_option
@_table_options
def thickness(labels, smooth_nm, label_map, chunk_budget_mb, voxel_size, output, overwrite, as_json):
    """Anode thickness per step from phase LABELS volumes (T0 first), each read slab by slab when it exceeds
    --chunk-budget-mb."""
    from ..quantify import thickness_series

    budget = check_budget(chunk_budget_mb)
    vols, vs = _open_all(labels, voxel_size, output)
    with progress_bar("thickness") as progress:
        ser = thickness_series([relabel(v.data, label_map) for v in vols], voxel_size_nm=_voxel(vols, vs),
                               smooth_nm=smooth_nm, progress=progress, chunk_budget_mb=budget)
    written = _write(ser, output, overwrite, labels)
    emit({"thickness": ser.to_dict(), "output": written}, as_json=as_json, text=[
        *(f"{n}: {m:.3f} +- {s:.3f} um ({100 * e:+.1f} %)"
          for n, m, s, e in zip(ser.step_names, ser.mean_um, ser.std_um, ser.expansion)),
        *_wrote(written)])


@declare_paths(inputs=("labels",), outputs=("output",))
@quantify.command()
@click.argument("labels", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--region", type=click.Choice(["all", "electrode"]), default="all", show_default=True,
              help="Count over the whole volume or the anode between its interfaces.")
@map_option
@budget_option
@_table_options
def phases(labels, region, label_map, chunk_budget_mb, voxel_size, output, overwrite, as_json):
    """Phase volume fractions per step and the relative non-lithiated Si volume (RNL), each step read slab by
    slab when it exceeds --chunk-budget-mb."""
    from ..quantify import phase_series

    budget = check_budget(chunk_budget_mb)
    vols, vs = _open_all(labels, voxel_size, output)
    ser = phase_series([relabel(v.data, label_map) for v in vols], voxel_size_nm=_voxel(vols, vs),
                       region=None if region == "all" else "electrode", chunk_budget_mb=budget)
    written = _write(ser, output, overwrite, labels)

    def lines():
        for i, n in enumerate(ser.step_names):
            fr = ", ".join(f"{p} {100 * f:.1f} %" for p, f in zip(ser.phase_names, ser.fraction[i]))
            yield f"{n}: RNL {ser.rnl[i]:.3f}; {fr}"
        yield from _wrote(written)

    emit({"phases": ser.to_dict(), "output": written}, as_json=as_json, text=lines())


@declare_paths(inputs=("labels",), outputs=("output",))
@quantify.command()
@click.argument("labels", type=click.Path(path_type=str))
@click.option("--cracks", is_flag=True, help="Also detect pre-cracked particles (internal gaps).")
@budget_option
@_table_options
def particles(labels, cracks, chunk_budget_mb, voxel_size, output, overwrite, as_json):
    """Per-particle geometry of a particle LABELS volume (0 = background), read slab by slab when it exceeds
    --chunk-budget-mb (the same table)."""
    import numpy as np

    from .._chunks import fits_budget
    from ..quantify import detect_cracks, particle_properties, size_distribution
    from ..quantify.particles_chunked import BYTES_PER_VOXEL, particle_properties_chunked

    budget = check_budget(chunk_budget_mb)
    vols, vs = _open_all([labels], voxel_size, output)
    v = _voxel(vols, vs)
    whole = fits_budget(vols[0].shape, BYTES_PER_VOXEL, budget)
    lab = vols[0].numpy() if whole else None
    table = particle_properties(lab, voxel_size_nm=v) if whole else \
        particle_properties_chunked(vols[0].data, voxel_size_nm=v, chunk_budget_mb=budget)
    cols = table.to_columns()
    info = {"particles": table.summary(), "size_distribution": size_distribution(table).to_dict()}
    if cracks:
        from ..quantify.cracks_chunked import detect_cracks_chunked

        cr = detect_cracks(lab, voxel_size_nm=v) if whole else \
            detect_cracks_chunked(vols[0].data, voxel_size_nm=v, chunk_budget_mb=budget)
        cols["cracked"] = cr.cracked
        cols["crack_volume_fraction"] = cr.crack_volume_fraction
        info["n_cracked"] = int(np.sum(cr.cracked))
    info["output"] = _write(cols, output, overwrite, [labels])
    s = info["particles"]
    emit(info, as_json=as_json, text=[
        f"{s['n_particles']} particles ({s['n_touching_border']} touching the border), total "
        f"{s['total_volume_um3']:.3g} um^3, median diameter {s['median_equivalent_diameter_um']:.3g} um",
        *([f"{info['n_cracked']} pre-cracked"] if cracks else []),
        *_wrote(info["output"])])


def _fields(paths):
    from ..dvc import DisplacementField

    return [DisplacementField.load(p) for p in paths]


@declare_paths(inputs=("labels", "fields"), outputs=("output",))
@quantify.command()
@click.argument("labels", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--field", "fields", multiple=True, type=click.Path(path_type=str),
              help="DVC field T0 -> Tn (.h5/.tsv), one per step after T0, in order.")
@budget_option
@_table_options
def track(labels, fields, chunk_budget_mb, voxel_size, output, overwrite, as_json):
    """Track particles through particle LABELS volumes T0..Tn (predicted by --field when given), each step read
    slab by slab when it exceeds --chunk-budget-mb (the same tracks)."""
    from ..quantify import track_particles

    budget = check_budget(chunk_budget_mb)
    vols, vs = _open_all(labels, voxel_size, output)
    disp = _fields(fields) if fields else None
    with progress_bar("tracking") as progress:
        tr = track_particles([v.data for v in vols], displacement=disp, voxel_size_nm=_voxel(vols, vs),
                             progress=progress, chunk_budget_mb=budget)
    written = _write(tr, output, overwrite, list(labels) + list(fields))
    s = tr.summary()
    emit({"tracks": s, "output": written}, as_json=as_json, text=[
        f"{s['n_tracks']} tracks, {s['n_complete']} complete through all {len(labels)} steps", *_wrote(written)])


@declare_paths(inputs=("fields", "labels_path"), outputs=("output",))
@quantify.command()
@click.option("--field", "fields", multiple=True, required=True, type=click.Path(path_type=str),
              help="DVC field T0 -> Tn (.h5/.tsv), one per step, in order.")
@click.option("--labels", "labels_path", required=True, type=click.Path(path_type=str),
              help="Phase labels of T0 on the field's voxel grid (for the electrode interfaces).")
@click.option("--layers", default=2, show_default=True,
              help="Depth bands between the collector and separator interfaces (2: collector/separator side).")
@click.option("-c", "--component", "components", multiple=True,
              help="Strain component (repeatable; default hencky_zz and volumetric = det F - 1), e.g. green_zz, "
                   "hencky_yy, stretch_1.")
@click.option("--small-strain", is_flag=True, help="Also report the small-strain small_zz/yy/xx and volumetric_small "
              "(valid only for strains of a few %).")
@map_option
@budget_option
@_table_options
def regions(fields, labels_path, layers, components, small_strain, label_map, chunk_budget_mb, voxel_size, output,
            overwrite, as_json):
    """Finite-strain statistics per electrode layer and step from DVC fields (Hencky zz, det F - 1)."""
    import numpy as np

    from ..dvc import strain_field
    from ..dvc.strain import DEFAULT_COMPONENTS, SMALL_COMPONENTS
    from ..quantify import regional_strain_series, thickness_series

    comps = tuple(dict.fromkeys((tuple(components) or DEFAULT_COMPONENTS) + (SMALL_COMPONENTS if small_strain else ())))
    vols, vs = _open_all([labels_path], voxel_size, output)
    v = _voxel(vols, vs)
    th = thickness_series([relabel(vols[0].data, label_map)], voxel_size_nm=v,
                          chunk_budget_mb=check_budget(chunk_budget_mb)).steps[0]
    strains = [strain_field(f) for f in _fields(fields)]
    reg = regional_strain_series(strains, collector_z_px=float(np.nanmean(th.collector_z_nm)) / v[0],
                                 separator_z_px=float(np.nanmean(th.separator_z_nm)) / v[0], n_layers=layers,
                                 components=comps, hist_component=comps[0])
    written = _write(reg, output, overwrite, [labels_path, *fields])

    def lines():
        for i, n in enumerate(reg.step_names):
            parts = "; ".join(r + " " + ", ".join(f"{c} {100 * reg.value(r, c)[i]:.2f} %" for c in reg.components)
                              for r in reg.region_names)
            yield f"{n}: {parts}"
        yield from _wrote(written)

    emit({"regions": reg.to_dict(), "output": written}, as_json=as_json, text=lines())


@declare_paths(inputs=("particles_t0", "residuals"), outputs=("output",))
@quantify.command()
@click.argument("particles_t0", type=click.Path(path_type=str))
@click.argument("residuals", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--threshold", default=None, type=float, help="Residual level of a changed voxel (default: Otsu).")
@click.option("--method", default="auto", show_default=True, type=click.Choice(["auto", "threshold", "profile"]),
              help="profile: residual of the outer half vs the core of each particle (float maps); threshold: "
                   "depth of the voxels above --threshold (change masks); auto picks by dtype.")
@budget_option
@_table_options
def modes(particles_t0, residuals, threshold, method, chunk_budget_mb, voxel_size, output, overwrite, as_json):
    """Lithiation mode of every T0 particle from RESIDUALS maps (T0 frame, one per step), read slab by slab when
    they exceed --chunk-budget-mb (the same modes)."""
    from .._chunks import fits_budget
    from ..quantify import lithiation_modes
    from ..quantify.modes_chunked import lithiation_modes_chunked, modes_bytes_per_voxel

    budget = check_budget(chunk_budget_mb)
    vols, vs = _open_all([particles_t0, *residuals], voxel_size, output)
    kw = dict(voxel_size_nm=_voxel(vols, vs), threshold=threshold, method=method)
    if fits_budget(vols[0].shape, modes_bytes_per_voxel(len(residuals)), budget):
        res = lithiation_modes(vols[0].numpy(), [v.numpy() for v in vols[1:]], **kw)
    else:
        res = lithiation_modes_chunked(vols[0].data, [v.data for v in vols[1:]], chunk_budget_mb=budget, **kw)
    written = _write(res, output, overwrite, [particles_t0, *residuals])
    s = res.summary()
    emit({"modes": s, "output": written}, as_json=as_json, text=[
        f"{s['n_core_shell']} core-shell, {s['n_network']} network, {s['n_undetermined']} undetermined "
        f"(core-shell share {s['core_shell_share']:.2f})", *_wrote(written)])
