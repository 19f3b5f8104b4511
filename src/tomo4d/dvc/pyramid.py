"""Local DVC refined over a pyramid of node spacings, coarse to fine."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .._validate import check_int, show
from ..errors import InputError
from .correlate import correlate
from .field import DisplacementField
from .options import CorrelationOptions, PsfCompensation, resolve_options

__all__ = ["correlate_pyramid"]


def correlate_pyramid(reference, deformed, *, pyramid: Sequence[int] = (100, 70, 35), half_windows=None,
                      mask=None, phi0=None, search_radius_px: int = 0, options: CorrelationOptions | None = None,
                      psf: PsfCompensation | None = None, progress: Callable[[int, int], None] | None = None,
                      **shortcuts) -> DisplacementField:
    """Local DVC refined over a pyramid of node spacings (coarse to fine).

    Each level runs :func:`~tomo4d.dvc.correlate` with ``node_spacing = pyramid[i]``
    and ``half_window = half_windows[i]``, initialised by interpolating the
    previous level's field (the first level by ``phi0`` and an optional integer
    search of ``search_radius_px``).

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
        in the volume are skipped; the finest level must fit.
    mask, phi0, search_radius_px
        As for :func:`~tomo4d.dvc.correlate` (``phi0`` and the search act on the first level).
    options, psf, **shortcuts
        As for :func:`~tomo4d.dvc.correlate`, the same at every level.
    progress : callable(done, total), optional
        Called with the number of levels done.

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
    # coarser levels whose windows or spacing do not fit are skipped (listed in notes["levels"])
    usable = [(s, h) for s, h in zip(levels[:-1], hws[:-1]) if np.all(shape >= 2 * h + 1) and np.all(shape >= s)]
    usable.append((levels[-1], hws[-1]))
    field = None
    summaries = []
    for i, (s, h) in enumerate(usable):
        field = correlate(reference, deformed, node_spacing=s, half_window=h, mask=mask,
                          phi0=phi0 if field is None else None, initial=field,
                          search_radius_px=search_radius_px if field is None else 0, options=opts, psf=psf)
        summaries.append({"node_spacing_px": s, "half_window_px": h, **field.status_counts(),
                          "seconds": field.notes.get("seconds")})
        if progress is not None:
            progress(i + 1, len(usable))
    return field.with_(notes={**field.notes, "levels": summaries})


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
