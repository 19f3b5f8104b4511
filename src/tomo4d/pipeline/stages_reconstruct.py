"""The ``reconstruct`` stage: every NXtomo file of ``inputs.projections`` -> a volume (issue 22).

Once over the scans (:func:`tomo4d.reconstruct.reconstruct`, the algotom engine; slab by slab), each
written to ``volumes/reconstructed_<file stem>.ome.zarr`` with its provenance (engine, version, parameters).  The
table ``tables/reconstruct``: one row per scan, the centre used (found or given), the clipped
transmissions, the angular coverage, the wall time and, with ``reconstruct.truth``, the PSNR and the
mean relative error against the true attenuation volume.  Warnings (short coverage, clipped values)
go to the log and the table, never silently.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .stage import Stage, rel
from .stage_io import read_table_of, write_tables

__all__ = ["RECONSTRUCT", "PredictedVolume", "reconstructed_path", "reconstructed_series", "resolve_projections"]

log = logging.getLogger(__name__)


def reconstructed_path(out: Path, projection_file: Path) -> Path:
    """Where the stage writes the volume of ``projection_file``."""
    return Path(out) / "volumes" / f"reconstructed_{Path(projection_file).stem}.ome.zarr"


@dataclass(frozen=True)
class PredictedVolume:
    """The header of a reconstructed scan not written yet (``reconstruct.as_series`` before the stage ran)."""

    shape: tuple[int, int, int]
    dtype: str
    voxel_size_nm: tuple[float, float, float]


def reconstructed_series(exp, out) -> tuple[tuple[Path, ...], tuple[PredictedVolume, ...]]:
    """With ``reconstruct.as_series``: the series' files (the stage's outputs in the run folder ``out``) and their
    headers as the stage will write them (detector rows x width x width; float32 or uint16; the pixel size)."""
    from ..reconstruct import open_projections

    files = resolve_projections(exp)
    base = Path(out) if out is not None else Path("<run folder>")
    sec, heads = exp.reconstruct, []
    for p in files:
        proj = open_projections(p)
        _, rows, width = proj.shape
        vs = exp.inputs.voxel_size_nm or sec.pixel_size_nm or proj.pixel_size_nm or 1.0
        heads.append(PredictedVolume((rows, width, width), "float32" if sec.uint16_range is None else "uint16",
                                     (float(vs),) * 3))
        close = getattr(getattr(proj.data, "file", None), "close", None)  # an NXtomo file
        if close is not None:
            close()
    return tuple(reconstructed_path(base, p) for p in files), tuple(heads)


def resolve_projections(exp) -> tuple[Path, ...]:
    """The NXtomo files of ``exp`` (headers, image keys and angles checked); () without the section."""
    from ..reconstruct import open_projections
    from ..reconstruct.readers import check_projections
    from .inputs import expand_files

    if exp.reconstruct is None or exp.inputs.projections is None:
        return ()
    files = expand_files(exp, exp.inputs.projections, "inputs.projections")
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        raise InputError(f"inputs.projections has files of the same name {stems}: their volumes would share "
                         "volumes/reconstructed_<name>.ome.zarr; rename them")
    truth = _truth_files(exp, len(files))
    for i, p in enumerate(files):
        key = f"inputs.projections[{i}]"
        if not p.is_file():
            raise InputError(f"{key}: {str(p)!r} does not exist; check the path in the experiment file")
        try:
            proj = open_projections(p)
            check_projections(proj, allow_missing_flats=exp.reconstruct.allow_missing_flats)
        except InputError as exc:
            raise type(exc)(f"{key}: {exc}") from None
        if truth and not truth[i].is_file():
            raise InputError(f"reconstruct.truth[{i}]: {str(truth[i])!r} does not exist; check the path")
    return files


def _truth_files(exp, n: int) -> tuple[Path, ...]:
    from .inputs import expand_files

    value = exp.reconstruct.truth
    files = () if value is None else expand_files(exp, value, "reconstruct.truth")
    if len(files) not in (0, n):
        raise InputError(f"reconstruct.truth has {len(files)} files but inputs.projections has {n} scans; give one "
                         "true attenuation volume per scan")
    return files


def _against_truth(vol, truth_path: Path) -> tuple[float, float]:
    from ..io import open_volume

    truth = open_volume(truth_path).numpy().astype(np.float32)
    rec = np.asarray(vol.data)
    if truth.shape != rec.shape:
        raise InputError(f"reconstruct.truth {str(truth_path)!r} has shape {truth.shape} but the reconstruction "
                         f"{rec.shape}; give the true attenuation on the reconstruction grid")
    mse = float(np.mean((rec - truth) ** 2))
    psnr = 10 * np.log10(float(np.ptp(truth)) ** 2 / mse) if mse > 0 else float("inf")
    inside = np.abs(truth) > 0.1 * float(np.abs(truth).max())
    rel_err = float(rec[inside].mean() / truth[inside].mean() - 1.0) if inside.any() else float("nan")
    return psnr, rel_err


def _run(ctx):
    """Every scan streamed slab by slab into its final volume (published when complete; the slabs on the run's
    Dask cluster when there is one); the table returned for :func:`_save`."""
    from ..reconstruct import open_projections, reconstruct_to

    sec = ctx.experiment.reconstruct
    opts = sec.library_options()
    truth = _truth_files(ctx.experiment, len(ctx.inputs.projections))
    rows, vols = [], {}
    for i, path in enumerate(ctx.inputs.projections):
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            rec = reconstruct_to(open_projections(path), reconstructed_path(ctx.out, path), options=opts,
                                 name=path.stem, overwrite=True, client=ctx.client)
        for text in rec.warnings:
            log.warning("reconstruct %s: %s", path.name, text)
        row = {"scan": path.stem, "center_px": rec.center, "center_found": int(rec.center_found),
               "n_clipped": rec.n_clipped, "coverage_deg": rec.coverage_deg, "n_slices": rec.volume.shape[0],
               "width_px": rec.volume.shape[2], "voxel_size_nm": rec.volume.voxel_size_nm[2],
               "wall_s": round(time.perf_counter() - t0, 3)}
        if truth:
            row["psnr_db"], row["mean_relative_error"] = _against_truth(rec.volume, truth[i])
        rows.append(row)
        vols[path] = reconstructed_path(ctx.out, path)
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}, vols


def _save(result, out):
    table, vols = result  # the volumes are written already (streamed by _run)
    paths = write_tables(table, out, "reconstruct")
    return paths + tuple(rel(out, p) for p in vols.values())


def _options(exp) -> dict:
    return {"reconstruct": json.loads(exp.reconstruct.model_dump_json())}


def _input_files(inp, step) -> dict:
    return {f"inputs.projections[{i}]": p for i, p in enumerate(inp.projections)}


RECONSTRUCT = Stage(
    name="reconstruct", needs=(), per_step=False,
    description="FBP of every scan of inputs.projections (algotom engine): flat/dark, -log, centre, rings",
    outputs="volumes/reconstructed_<scan>.ome.zarr, tables/reconstruct",
    enabled=lambda exp, inp: exp.reconstruct is not None and bool(inp.projections),
    options=_options, input_files=_input_files,
    run=_run, save=_save, load=lambda out: read_table_of(out, "reconstruct"))
