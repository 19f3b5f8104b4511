"""The image series that the analysis stages read, and its grid: the rule, in one place.

Some stages rewrite the whole series: ``enhance`` (InDI, twice finer along every axis) and ``align``
(every step resampled onto T0).  Each writes one volume per step, and every stage after it reads those
volumes instead of the input files:

* :data:`SERIES_STAGES` lists the stages that rewrite the series, in workflow order, each with the path
  of its output for one step (``None`` for a step it leaves as it is, e.g. T0 for ``align``, the
  reference).
* A series stage is on when its section is in the experiment file (as every stage); ``enhance`` only
  with ``enhance.apply_to_series`` (its default).
* :func:`series_path` gives the file a stage reads for a step: the output of the last series stage
  that is on and comes before the reader (``before=``; by default all of them), else the input scan.
  So the *analysis series* is the enhanced series with ``enhance.apply_to_series``, else the aligned
  one when ``align`` runs, else ``inputs.series`` (the experiment refuses ``align`` with
  ``apply_to_series``: the enhanced series is not aligned).
* The *analysis grid*: :func:`analysis_scale` analysis voxels per ``inputs.series`` voxel along every
  axis (2 on the enhanced series, else 1), voxel :func:`analysis_voxel_size_nm`.  Enhanced voxel ``j``
  sits at series coordinate ``j / 2 - 0.25`` (:mod:`tomo4d.enhance.data`), so its nearest series voxel
  is ``j // 2``: label volumes given on the series grid (``inputs.labels``, ``segment.labels``,
  ``truth.labels``, ``truth.particles``) are brought onto the analysis grid by repeating every voxel
  ``scale`` times per axis (:func:`to_analysis_grid`, exact nearest neighbour), and each labelled plane of
  ``segment.slices`` covers ``scale`` analysis planes.  Outputs of the analysis stages (labels, fields,
  maps) are on the analysis grid; lengths and volumes in their tables are physical (nm, um).

A stage that reads the series lists every series stage in its ``needs`` with :func:`reads_series` as its
``reads`` rule, so its cache key covers the one it reads (a needed stage that is off, or not read, does
not enter the key).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["ENHANCE_SCALE", "SERIES_STAGES", "aligned_path", "analysis_enhanced", "analysis_labels",
           "analysis_scale", "analysis_voxel_size_nm", "enhanced_path", "enhanced_repeat_path", "read_series",
           "reads_series", "repeat_path", "series_path", "series_stage", "series_voxel_override",
           "to_analysis_grid"]

#: analysis voxels per ``inputs.series`` voxel along every axis on the enhanced series
ENHANCE_SCALE = 2


def aligned_path(out: Path, name: str, step: int) -> Path | None:
    """``volumes/aligned_<step>.ome.zarr`` of the align stage; None for T0 (the reference, not resampled)."""
    return None if step == 0 else Path(out) / "volumes" / f"aligned_{name}.ome.zarr"


def enhanced_path(out: Path, name: str, step: int | None = None) -> Path:
    """``volumes/enhanced_<step>.ome.zarr``: the enhanced volume of step ``name`` in the run folder ``out``."""
    return Path(out) / "volumes" / f"enhanced_{name}.ome.zarr"


def enhanced_repeat_path(out: Path) -> Path:
    """``volumes/repeat_enhanced.ome.zarr``: the enhanced repeat scan (``inputs.repeat``)."""
    return Path(out) / "volumes" / "repeat_enhanced.ome.zarr"


#: stages that rewrite the series, in workflow order: ``(name, path(out, step name, step index))``
SERIES_STAGES: tuple[tuple[str, Callable[[Path, str, int], Path | None]], ...] = (
    ("enhance", enhanced_path),
    ("align", aligned_path),
)


def _on(exp, name: str) -> bool:
    sec = getattr(exp, name, None)
    return sec is not None and bool(getattr(sec, "apply_to_series", True))


def analysis_enhanced(exp) -> bool:
    """The analysis stages read the enhanced series (``enhance.apply_to_series``)."""
    return _on(exp, "enhance")


def analysis_scale(exp) -> int:
    """Analysis voxels per ``inputs.series`` voxel along every axis: 2 on the enhanced series, else 1."""
    return ENHANCE_SCALE if analysis_enhanced(exp) else 1


def analysis_voxel_size_nm(ctx) -> tuple[float, float, float]:
    """The voxel of the analysis grid, nm: ``inputs.series``' divided by :func:`analysis_scale`."""
    s = analysis_scale(ctx.experiment)
    return tuple(float(v) / s for v in ctx.inputs.voxel_size_nm)


def series_voxel_override(exp):
    """The voxel size to force when reading the analysis series: ``inputs.voxel_size_nm`` for the input scans
    (and the aligned ones, written with it), None for the enhanced volumes (written with the halved voxel)."""
    return None if analysis_enhanced(exp) else exp.inputs.voxel_size_nm


def reads_series(exp, need: str) -> bool:
    """``Stage.reads`` of a stage reading the series: the series stages it reads (and any other need)."""
    if need == "enhance":
        return analysis_enhanced(exp)
    return True


def series_stage(exp, step: int = 1, *, before: str | None = None) -> str | None:
    """The series stage whose output is read for ``step`` (None: the input scan)."""
    found = None
    for name, path in SERIES_STAGES:
        if name == before:
            break
        if _on(exp, name) and path(Path("."), "x", step) is not None:
            found = name
    return found


def series_path(ctx, step: int, *, before: str | None = None) -> Path:
    """The file of ``step`` that a stage reads: the last series stage's output before ``before``, else the input."""
    name = series_stage(ctx.experiment, step, before=before)
    if name is None:
        return ctx.inputs.series[step]
    path = dict(SERIES_STAGES)[name]
    return path(ctx.out, ctx.inputs.names[step], step)


def read_series(ctx, step: int):
    """The analysis series' volume of ``step``, lazily (:func:`tomo4d.io.open_volume`), with its voxel size."""
    from ..io import open_volume

    return open_volume(series_path(ctx, step), voxel_size_nm=series_voxel_override(ctx.experiment))


def repeat_path(ctx) -> Path | None:
    """The repeat scan on the analysis grid: the enhanced one on the enhanced series, else ``inputs.repeat``."""
    if ctx.inputs.repeat is None:
        return None
    return enhanced_repeat_path(ctx.out) if analysis_enhanced(ctx.experiment) else ctx.inputs.repeat


def read_repeat(ctx):
    """The repeat scan on the analysis grid (:func:`repeat_path`) as a lazy Volume, or None without one
    (``inputs.voxel_size_nm`` applies to the input file, not to the enhanced repeat the run wrote)."""
    from .stage_io import read_volume

    repeat = repeat_path(ctx)
    if repeat is None:
        return None
    return read_volume(repeat, None if repeat != ctx.inputs.repeat else ctx.experiment.inputs.voxel_size_nm)


def to_analysis_grid(labels: np.ndarray, scale: int) -> np.ndarray:
    """Labels on the ``inputs.series`` grid brought onto the analysis grid: every voxel repeated ``scale`` times
    per axis (the nearest series voxel of analysis voxel ``j`` is ``j // scale``)."""
    out = np.asarray(labels)
    if scale == 1:
        return out
    for axis in range(out.ndim):
        out = np.repeat(out, scale, axis=axis)
    return out


def analysis_labels(ctx, path) -> np.ndarray:
    """A label volume given on the ``inputs.series`` grid (``inputs.labels``, ``truth.labels``, ...), on the
    analysis grid."""
    from ..io import open_volume

    lab = open_volume(path, voxel_size_nm=ctx.experiment.inputs.voxel_size_nm).numpy()
    return to_analysis_grid(lab, analysis_scale(ctx.experiment))
