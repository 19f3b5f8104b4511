"""The image series that a stage reads: the input scans, or the output of a stage that rewrites them.

Some stages rewrite the whole series (``align`` today; an ``enhance`` stage would be another):
each writes one volume per step, and every stage after it reads those volumes instead of the input
files.  The rule, in one place:

* :data:`SERIES_STAGES` lists the stages that rewrite the series, in workflow order, each with the path
  of its output for one step (``None`` for a step it leaves as it is, e.g. T0 for ``align``, the
  reference).
* A series stage is on when its section is in the experiment file (as every stage).
* :func:`series_path` gives the file a stage reads for a step: the output of the last series stage
  that is on and comes before the reader (``before=``; by default all of them), else the input scan.
  Series stages chain: ``align`` reads the enhanced series when ``enhance`` runs first.

A stage that reads the series lists every series stage in its ``needs``, so its cache key covers
them (a needed stage that is off does not enter the key).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["SERIES_STAGES", "aligned_path", "series_path", "series_stage"]


def aligned_path(out: Path, name: str, step: int) -> Path | None:
    """``volumes/aligned_<step>.ome.zarr`` of the align stage; None for T0 (the reference, not resampled)."""
    return None if step == 0 else Path(out) / "volumes" / f"aligned_{name}.ome.zarr"


#: stages that rewrite the series, in workflow order: ``(name, path(out, step name, step index))``
SERIES_STAGES: tuple[tuple[str, Callable[[Path, str, int], Path | None]], ...] = (
    ("align", aligned_path),
)


def _on(exp, name: str) -> bool:
    return getattr(exp, name, None) is not None


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
