"""Local DVC refined over a pyramid of node spacings, coarse to fine."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

from .._validate import check_int, show
from ..errors import InputError
from .correlate import correlate
from .field import USABLE, DisplacementField, NodeStatus, _idw_first_order
from .options import CorrelationOptions, PsfCompensation, resolve_options

__all__ = ["correlate_pyramid", "study_levels", "STUDY_PYRAMID"]

#: node spacings of the in-situ study's local DVC pyramid (px, coarse to fine; half-window = spacing)
STUDY_PYRAMID = (100, 70, 35)


def study_levels(shape, node_spacing: int) -> list[int]:
    """The coarse levels to correlate before ``node_spacing`` on volumes of ``shape``: the spacings of
    :data:`STUDY_PYRAMID` coarser than ``node_spacing`` whose windows (half-window = spacing: ``2 s + 1`` voxels) fit
    along every axis, coarse to fine; ``[]`` for a volume under 71 voxels along an axis."""
    node_spacing = check_int("node_spacing", node_spacing, minimum=1)
    return [s for s in STUDY_PYRAMID if s > node_spacing and all(int(n) >= 2 * s + 1 for n in shape)]


def correlate_pyramid(reference, deformed, *, pyramid: Sequence[int] = STUDY_PYRAMID, half_windows=None,
                      mask=None, phi0=None, search_radius_px: int = 0, options: CorrelationOptions | None = None,
                      psf: PsfCompensation | None = None, progress: Callable[[int, int], None] | None = None,
                      client=None, **shortcuts) -> DisplacementField:
    """Local DVC refined over a pyramid of node spacings (coarse to fine).

    Each level runs :func:`~tomo4d.dvc.correlate` with ``node_spacing = pyramid[i]``
    and ``half_window = half_windows[i]``, initialised by interpolating the
    previous level's field (the first level by ``phi0`` and an optional integer
    search of ``search_radius_px``; so is a level after one that measured no node, e.g.
    a coarse level whose few windows all left the view of a stretched sample).

    Parameters
    ----------
    reference, deformed : (z, y, x) array or Volume
        As for :func:`~tomo4d.dvc.correlate`.
    pyramid : sequence of int
        Node spacings, px, strictly decreasing (coarse to fine), e.g. the
        literature's ``(100, 70, 35)``.
    half_windows : sequence of int, optional
        One half-window per level, px; default equal to the spacing (50 %
        window overlap).  Coarser levels whose windows (or spacing) do not fit
        in the volume are skipped with a warning (``notes["skipped_levels"]``);
        the finest level must fit.
    mask, phi0, search_radius_px
        As for :func:`~tomo4d.dvc.correlate` (``phi0`` and the search act on the first level).
    options, psf, **shortcuts
        As for :func:`~tomo4d.dvc.correlate`, the same at every level.
    progress : callable(done, total), optional
        Called with the number of levels done.
    client : dask.distributed.Client, optional
        As for :func:`~tomo4d.dvc.correlate`, at every level.

    Returns
    -------
    DisplacementField
        The finest level; ``notes["levels"]`` summarises every level run.
    """
    opts, psf = resolve_options(options, psf, shortcuts)
    levels, hws = _check_levels(pyramid, half_windows)
    search_radius_px = check_int("search_radius_px", search_radius_px, minimum=0)
    shape = np.asarray(getattr(reference, "shape", np.shape(reference)))
    if not np.all(shape >= 2 * hws[-1] + 1):
        # the finest level is the result: never replaced by a coarser one
        raise InputError(f"the finest pyramid level (node spacing {levels[-1]}, half-window {hws[-1]}) needs "
                         f"windows of {2 * hws[-1] + 1} voxels but the volume has shape "
                         f"{tuple(int(v) for v in shape)}; use a finest half-window <= {(int(shape.min()) - 1) // 2}")
    bad = [i for i in range(1, len(levels)) if levels[i] >= levels[i - 1]]
    if bad:
        i = bad[0]
        raise InputError(f"pyramid={show(tuple(levels))} is not decreasing: level {i} (node spacing {levels[i]}) is "
                         f"not finer than level {i - 1} ({levels[i - 1]}); give node spacings coarse to fine, e.g. "
                         f"{show(tuple(sorted(set(levels), reverse=True)))}")
    # coarser levels whose windows or spacing do not fit are skipped, with a warning
    fits = [bool(np.all(shape >= 2 * h + 1) and np.all(shape >= s)) for s, h in zip(levels[:-1], hws[:-1])] + [True]
    usable = [(s, h) for (s, h), ok in zip(zip(levels, hws), fits) if ok]
    skipped = [{"node_spacing_px": s, "half_window_px": h} for (s, h), ok in zip(zip(levels, hws), fits) if not ok]
    if skipped:
        warnings.warn(f"correlate_pyramid: level(s) of node spacing {', '.join(str(k['node_spacing_px']) for k in skipped)}"
                      f" skipped: their windows do not fit in the volume of shape {tuple(int(v) for v in shape)}; the "
                      f"pyramid starts at node spacing {usable[0][0]}", RuntimeWarning, stacklevel=2)
    field = start = None
    summaries = []
    for i, (s, h) in enumerate(usable):
        field = correlate(reference, deformed, node_spacing=s, half_window=h, mask=mask,
                          phi0=phi0 if start is None else None, initial=start,
                          search_radius_px=search_radius_px if start is None else 0, options=opts, psf=psf,
                          client=client)
        summaries.append({"node_spacing_px": s, "half_window_px": h, **field.status_counts(),
                          "seconds": field.notes.get("seconds"), "started_from": "phi0" if start is None else
                          "previous level"})
        start = _handed_on(field) if field.usable.any() else start  # a level that measured none: the one before
        if progress is not None:
            progress(i + 1, len(usable))
    return field.with_(notes={**field.notes, "levels": summaries, "skipped_levels": skipped})


def _check_levels(pyramid, half_windows) -> tuple[list[int], list[int]]:
    """Node spacings and half-windows per level, checked (integers >= 1, one half-window per level)."""
    if isinstance(pyramid, (str, bytes)) or not hasattr(pyramid, "__iter__"):
        raise InputError(f"pyramid={show(pyramid)} must be a sequence of node spacings, e.g. (100, 70, 35)")
    levels = [check_int(f"pyramid[{i}]", s, minimum=1) for i, s in enumerate(pyramid)]
    if not levels:
        raise InputError("pyramid is empty; give node spacings, coarse to fine, e.g. (100, 70, 35)")
    if half_windows is None:
        return levels, list(levels)
    if isinstance(half_windows, (str, bytes)) or not hasattr(half_windows, "__iter__"):
        raise InputError(f"half_windows={show(half_windows)} must be a sequence, one per pyramid level")
    hws = [check_int(f"half_windows[{i}]", h, minimum=1) for i, h in enumerate(half_windows)]
    if len(hws) != len(levels):
        raise InputError(f"half_windows={show(hws)} needs one value per pyramid level ({len(levels)})")
    return levels, hws


def _handed_on(field: DisplacementField) -> DisplacementField:
    """A level's field as the next level's start: its unusable nodes (out of view, failed) filled from the usable
    ones, each carried by its own F, so that a stretch continues past the last measured node (with the nearest
    nodes' displacements unchanged, a 45 % stretch's 35 px level started from one 70 px node's translation and
    read Hencky e_zz 0.084 against 0.372; RESULTS.md session 32)."""
    ok = field.usable
    if ok.all():
        return field
    phi = field.phi.copy()
    vals = phi[:, :3, :].reshape(-1, 12)
    phi[~ok, :3, :] = _idw_first_order(field.positions_zyx_px[ok], vals[ok], field.positions_zyx_px[~ok]).reshape(
        -1, 3, 4)
    status = np.where(np.isin(field.status, USABLE), field.status, NodeStatus.INTERPOLATED).astype(np.int8)
    return field.with_(phi=phi, status=status)
