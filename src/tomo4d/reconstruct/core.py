"""Projections -> Volume, slab by slab: flat/dark, Paganin, -log, centre, rings, FBP (algotom)."""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..volume import Volume, VolumeMetadata
from . import engine
from .options import Reconstruction, ReconstructOptions
from .readers import Projections, check_projections

log = logging.getLogger(__name__)

#: coverage below this many degrees (span plus one step) is warned about for parallel beam
MIN_COVERAGE_DEG = 180.0 - 1e-3


def coverage_deg(angles_deg: np.ndarray) -> float:
    """Angular range covered: the span of the (sorted) angles plus one mean step."""
    a = np.sort(np.asarray(angles_deg, dtype=np.float64))
    n = len(a)
    return float(np.ptp(a) * n / (n - 1)) if n > 1 else 0.0


def transmission(raw: np.ndarray, flat, dark, floor: float, *, overwrite: bool = False) -> tuple[np.ndarray, int]:
    """``(raw - dark) / (flat - dark)`` with non-finite and values <= ``floor`` set to ``floor``; their count.

    ``overwrite``: ``raw`` (float32, as :meth:`Projections.rows` returns it) may be overwritten with the result,
    which saves the slab-sized temporaries (the same float32 operations: the result is identical).
    """
    f32 = all(a is None or a.dtype == np.float32 for a in (raw, flat, dark))
    if flat is None:
        t = raw if overwrite and raw.dtype == np.float32 else raw.astype(np.float32, copy=True)
    elif overwrite and f32:
        t = raw
        with np.errstate(divide="ignore", invalid="ignore"):
            if dark is not None:
                np.subtract(t, dark, out=t)
                np.divide(t, flat - dark, out=t)
            else:
                np.divide(t, flat, out=t)
    else:
        d = np.zeros_like(flat) if dark is None else dark
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (raw - d) / (flat - d)
    bad = t > floor  # False for NaN
    bad &= t < np.inf
    np.logical_not(bad, out=bad)  # not finite, or <= floor
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        t[bad] = floor
    return t.astype(np.float32, copy=False), n_bad


def to_uint16(values: np.ndarray, value_range) -> tuple[np.ndarray, int]:
    """``values`` mapped linearly from ``value_range`` (lo, hi) onto 0..65535, clipped; the clipped count."""
    lo, hi = value_range
    scaled = (np.asarray(values, np.float64) - lo) * (65535.0 / (hi - lo))
    n = int(np.count_nonzero((scaled < 0) | (scaled > 65535)))
    return np.rint(np.clip(scaled, 0, 65535)).astype(np.uint16), n


def paganin_margin(ratio: float) -> int:
    """Rows read beyond a slab so the Paganin filter (width ~ sqrt(ratio) px) sees its neighbourhood."""
    return int(min(max(4 * math.ceil(math.sqrt(max(ratio, 0.0))), 8), 512))


def _slab_attenuation(proj: Projections, start: int, stop: int, opts: ReconstructOptions,
                      ratio: float | None) -> tuple[np.ndarray, int]:
    """-log transmission sinograms of rows ``[start, stop)``: ``(angle, row, column)`` and the clipped count."""
    rows = proj.shape[1]
    m = paganin_margin(ratio) if ratio else 0
    lo, hi = max(start - m, 0), min(stop + m, rows)
    raw = proj.rows(lo, hi)
    flat = None if proj.flat is None else proj.flat[lo:hi]
    dark = None if proj.dark is None else proj.dark[lo:hi]
    if opts.drift:  # flats/darks interpolated per projection between those before and after the scan
        flat = proj.flat_drift.rows(lo, hi) if proj.flat_drift is not None else flat
        dark = proj.dark_drift.rows(lo, hi) if proj.dark_drift is not None else dark
    t, n_bad = transmission(raw, flat, dark, opts.min_transmission, overwrite=True)  # raw is ours
    if ratio:
        pad = min(max(m, 16), 256)
        for i in range(t.shape[0]):
            t[i] = np.maximum(engine.paganin(t[i], ratio, pad), opts.min_transmission)
    t = t[:, start - lo:stop - lo]
    if opts.rings != "none":
        for r in range(t.shape[1]):
            t[:, r] = np.maximum(engine.remove_rings(np.ascontiguousarray(t[:, r]), opts.rings, opts.ring_size),
                                 opts.min_transmission)
    np.log(t, out=t)
    np.negative(t, out=t)  # -log in place: no slab-sized temporary
    return t, n_bad


def _centre(proj, opts, ratio, row_range) -> tuple[float, bool]:
    if opts.center is not None:
        return float(opts.center), False
    r0, r1 = row_range
    n_rows = min(opts.center_rows, r1 - r0)
    picks = np.unique(np.linspace(r0, r1 - 1, n_rows + 2)[1:-1].round().astype(int)) if n_rows > 1 else \
        np.array([(r0 + r1) // 2])
    width = proj.shape[2]
    search = opts.center_search if opts.center_search is not None else width / 4
    found = []
    for r in picks:
        sino, _ = _slab_attenuation(proj, int(r), int(r) + 1, opts, ratio)
        found.append(engine.find_center(sino[:, 0], search))
    return float(np.median(found)), True


def _check_geometry(proj: Projections, opts: ReconstructOptions) -> tuple[tuple[int, int], list[str]]:
    check_projections(proj, allow_missing_flats=opts.allow_missing_flats)
    rows = proj.shape[1]
    r0, r1 = opts.rows if opts.rows is not None else (0, rows)
    if r1 > rows:
        raise InputError(f"rows={opts.rows} goes past the detector's {rows} rows; use a stop <= {rows}")
    notes = []
    cov = coverage_deg(proj.angles_deg)
    if cov < MIN_COVERAGE_DEG:
        notes.append(f"the angles cover {cov:.1f} degrees, less than the 180 a parallel-beam FBP needs: "
                     "expect limited-angle streaks")
    if opts.drift and proj.flat_drift is None and proj.dark_drift is None:
        raise InputError("drift=True needs flats or darks taken both before and after the projections (NXtomo "
                         f"image_key 1/2 at both ends); {proj.source or 'these projections'} has none; drop drift")
    if opts.paganin is not None and (opts.pixel_size_nm or proj.pixel_size_nm) is None:
        raise InputError("Paganin phase retrieval needs the pixel size; give pixel_size_nm (--pixel-size)")
    if opts.center is not None and not 0 <= opts.center <= proj.shape[2] - 1:
        raise InputError(f"center={opts.center} is outside the detector's columns 0..{proj.shape[2] - 1}")
    return (r0, r1), notes


def reconstruct_slab(proj: Projections, start: int, stop: int, center: float, opts: ReconstructOptions,
                     ratio: float | None) -> tuple[np.ndarray, int, int]:
    """Detector rows ``[start, stop)`` reconstructed: ``(slices (row, y, x), n_clipped, n_out_of_range)``.

    Float32 attenuation per voxel, or uint16 with ``opts.uint16_range``.  Reads only those rows (plus the
    Paganin margin): what one slab task of :func:`tomo4d.reconstruct.reconstruct_to` does.
    """
    sino, n_bad = _slab_attenuation(proj, start, stop, opts, ratio)
    rec = engine.fbp(sino, center, proj.angles_deg, opts.filter)
    if opts.uint16_range is None:
        return rec, n_bad, 0
    out, n_range = to_uint16(rec, opts.uint16_range)
    return out, n_bad, n_range


@dataclass(frozen=True)
class Plan:
    """What every slab of one reconstruction shares: rows, centre, Paganin ratio, voxel size, warnings so far."""

    rows: tuple[int, int]
    center: float
    center_found: bool
    ratio: float | None
    pixel_size_nm: float | None
    notes: tuple[str, ...]

    def slabs(self, slab_rows: int) -> list[tuple[int, int]]:
        """``[(start, stop), ...]`` detector rows of each slab."""
        r0, r1 = self.rows
        return [(s, min(s + slab_rows, r1)) for s in range(r0, r1, slab_rows)]


def plan(proj: Projections, opts: ReconstructOptions) -> Plan:
    """Checks the projections and options, finds the centre (once per scan): the :class:`Plan`."""
    engine.engine_modules()
    rows, notes = _check_geometry(proj, opts)
    pixel_nm = opts.pixel_size_nm or proj.pixel_size_nm
    ratio = opts.paganin.ratio(pixel_nm) if opts.paganin is not None else None
    center, found = _centre(proj, opts, ratio, rows)
    return Plan(rows, center, found, ratio, pixel_nm, tuple(notes))


def finish(proj: Projections, opts: ReconstructOptions, pl: Plan, data, *, n_clipped: int, n_range: int,
           seconds: float, name: str = "", extra: dict | None = None) -> Reconstruction:
    """The :class:`Reconstruction` of ``data`` (numpy or lazy): counted warnings issued, provenance filled."""
    notes = list(pl.notes)
    if n_clipped:
        notes.append(f"{n_clipped} transmissions were not finite or <= {opts.min_transmission:g} before -log "
                     "(dead pixels, flat <= dark, or zero counts); set to that floor")
    if n_range:
        notes.append(f"{n_range} voxels were outside uint16_range={list(opts.uint16_range)} and clipped to it")
    for text in notes:
        warnings.warn(f"reconstruct: {text}", stacklevel=3)
    version = engine.engine_version()
    params = opts.to_dict() | {"center": pl.center, "center_found": pl.center_found}
    meta = VolumeMetadata(name=name, modality="xray", provenance=(
        f"reconstruct {proj.source} with {version}: {params}",),
        extra={"reconstruction": {"engine": version, "parameters": params, "n_clipped": n_clipped,
                                  "n_out_of_range": n_range, "coverage_deg": coverage_deg(proj.angles_deg),
                                  "seconds": round(seconds, 3), **(extra or {})}})
    vs = (pl.pixel_size_nm,) * 3 if pl.pixel_size_nm else None
    vol = Volume(data, voxel_size_nm=vs, metadata=meta)
    return Reconstruction(volume=vol, center=pl.center, center_found=pl.center_found, n_clipped=n_clipped,
                          coverage_deg=coverage_deg(proj.angles_deg), engine=version, warnings=tuple(notes),
                          n_out_of_range=n_range)


def reconstruct(proj: Projections, *, options: ReconstructOptions | None = None, progress=None,
                name: str = "") -> Reconstruction:
    """Reconstruct ``proj`` slab by slab with the engine (algotom) into a float32 Volume in memory.

    Memory: one slab of projections (``slab_rows`` rows, plus the Paganin margin) and the output volume;
    :func:`tomo4d.reconstruct.reconstruct_to` streams the slabs into a file instead (bounded memory, parallel).
    ``progress(done_rows, total_rows)`` is called after each slab.
    """
    opts = options or ReconstructOptions()
    t0 = time.perf_counter()
    pl = plan(proj, opts)
    r0, r1 = pl.rows
    width = proj.shape[2]
    out = np.empty((r1 - r0, width, width), np.float32 if opts.uint16_range is None else np.uint16)
    n_clipped = n_range = 0
    for s, e in pl.slabs(opts.slab_rows):
        out[s - r0:e - r0], n_bad, n = reconstruct_slab(proj, s, e, pl.center, opts, pl.ratio)
        n_clipped += n_bad
        n_range += n
        if progress is not None:
            progress(e - r0, r1 - r0)
    return finish(proj, opts, pl, out, n_clipped=n_clipped, n_range=n_range, seconds=time.perf_counter() - t0,
                  name=name)


def phase_retrieve(transmission_image: np.ndarray, paganin, pixel_size_nm: float, *,
                   floor: float = 1e-6) -> np.ndarray:
    """Paganin retrieval of one flat-corrected projection: ``-log`` of the low-passed transmission (``mu T``)."""
    t = np.asarray(transmission_image, dtype=np.float32)
    if t.ndim != 2:
        raise InputError(f"transmission_image has shape {t.shape}; give one 2D projection (rows, cols)")
    ratio = paganin.ratio(pixel_size_nm)
    pad = min(max(paganin_margin(ratio), 16), 256)
    return -np.log(np.maximum(engine.paganin(t, ratio, pad), floor))
