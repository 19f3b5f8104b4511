"""Edge FWHM of the InDI step sweep (:mod:`tomo4d.enhance.steps`), paired with HQ: edges detected once in HQ,
every image measured along the same profile lines (:func:`hq_edge_lines`, :func:`paired_fwhm`); and the
unpaired per-slice mean of automatic edges (:func:`slice_fwhm`) that ``benchmarks/bench_enhance.py`` reports."""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

#: edge options for thin structures (layers of a few pixels), used for a whole sweep when HQ's own edges fail
#: the defaults (e.g. pixel-sharp edges of thin electrode layers): shorter plateaus, looser isolation test
THIN_EDGES = {"min_half_length_px": 3.0, "max_window_change": 0.3}


def slice_fwhm(stack: np.ndarray, mask: np.ndarray, vs, options: dict | None = None) -> float:
    """Mean edge FWHM (nm) of automatic edges, slice by slice (2D), pooled; NaN below 5 edges."""
    from ..quality import edge_resolution

    vals: list[float] = []
    for k in range(stack.shape[0]):
        try:
            r = edge_resolution(stack[k], voxel_size_nm=tuple(vs), mask=mask[k], max_half_length_px=40.0,
                                **(options or {}))
        except InputError:
            continue
        vals.extend(float(v) for v in r.fwhm_nm)
    return float(np.mean(vals)) if len(vals) >= 5 else float("nan")


def edge_options_for(ref: np.ndarray, mask: np.ndarray, vs) -> tuple[dict, str]:
    """The edge options of a sweep: the defaults, or :data:`THIN_EDGES` when HQ has too few default edges."""
    if math.isfinite(slice_fwhm(ref, mask, vs)):
        return {}, "default"
    return dict(THIN_EDGES), "thin structures (" + ", ".join(f"{k}={v}" for k, v in THIN_EDGES.items()) + ")"


#: automatic HQ edges tried per validation slice
_EDGES_PER_SLICE = 60


def _lines_of(profiles, vs) -> np.ndarray:
    """Profile lines ``(n, 2, 2)`` (y, x end points) along the measured profiles: centre +- the half length."""
    vy, vx = float(vs[1]), float(vs[2])
    out = []
    for p in profiles:
        n, c = np.asarray(p.normal, float), np.asarray(p.center_px, float)
        h = float(np.max(np.abs(p.distance_nm))) / math.hypot(n[0] * vy, n[1] * vx)
        out.append([c - n * h, c + n * h])
    return np.asarray(out, float).reshape(-1, 2, 2)


def hq_edge_lines(ref, mask, vs, *, volume=None, volume_mask=None, slices=None) -> tuple[dict, str]:
    """Profile lines across HQ's edges on each slice ``k`` of ``ref`` (``{k: (n, 2, 2)}``) and the edge options
    note.  With ``volume`` (the 3D pair's HQ, ``ref = volume[slices]``) the edges are detected in the volume
    (boundaries tilted out of the slice left out); else slice by slice.  :data:`THIN_EDGES` when the defaults
    find fewer than 5 edges."""
    from ..quality import edge_resolution

    def detect(options) -> dict:
        found: dict = {}
        if volume is not None:
            zs = list(slices)
            try:
                r = edge_resolution(volume, voxel_size_nm=tuple(vs), mask=volume_mask, slices=zs,
                                    max_edges=_EDGES_PER_SLICE * len(zs), max_half_length_px=40.0, **options)
            except InputError:
                return found
            for k, z in enumerate(zs):
                mine = [p for p in r.profiles if p.z == z]
                if mine:
                    found[k] = _lines_of(mine, vs)
            return found
        for k in range(ref.shape[0]):
            try:
                r = edge_resolution(ref[k], voxel_size_nm=tuple(vs), mask=mask[k], max_edges=_EDGES_PER_SLICE,
                                    max_half_length_px=40.0, **options)
            except InputError:
                continue
            found[k] = _lines_of(r.profiles, vs)
        return found

    lines = detect({})
    if sum(len(v) for v in lines.values()) >= 5:
        return lines, "default"
    return detect(dict(THIN_EDGES)), "thin structures (" + ", ".join(f"{k}={v}" for k, v in THIN_EDGES.items()) + ")"


def paired_fwhm(stack: np.ndarray, mask: np.ndarray, lines: dict, vs) -> np.ndarray:
    """FWHM (nm) of ``stack`` along every line of ``lines`` (:func:`hq_edge_lines`), in their order; NaN where the
    profile is not an edge there (the fit does not explain it)."""
    from ..quality import edge_resolution

    out = []
    for k in sorted(lines):
        ln = lines[k]
        f = np.full(len(ln), np.nan)
        try:
            r = edge_resolution(stack[k], voxel_size_nm=tuple(vs), mask=mask[k], edges=ln, min_edges=1,
                                reject_outliers=False, min_contrast=0.0)
        except InputError:
            out.append(f)
            continue
        mids = ln.mean(axis=1)
        dirs = ln[:, 1] - ln[:, 0]
        dirs /= np.hypot(dirs[:, 0], dirs[:, 1])[:, None]
        for p in r.profiles:   # a given line keeps its direction; its edge centre lies on it
            d = np.hypot(*(mids - np.asarray(p.center_px)).T)
            d[np.abs(dirs @ np.asarray(p.normal)) < 0.9999] = np.inf
            f[int(np.argmin(d))] = p.fwhm_nm
        out.append(f)
    return np.concatenate(out) if out else np.zeros(0)


