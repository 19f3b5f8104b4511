"""What a stage is: a frozen description the runner executes, caches and resumes.

A :class:`Stage` names the stages it needs, whether it runs per time step, the files and options
its cache key covers, how it computes (``run`` or ``run_step``) and how its outputs are saved and
loaded.  It never writes to the report: :mod:`tomo4d.pipeline.run_report` renders the report
from the saved outputs alone.  Outputs are paths relative to the run folder ``OUT`` and are
written atomically (:func:`tomo4d.io.atomic_output`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Stage", "StageContext", "rel", "section_options"]


@dataclass(frozen=True)
class StageContext:
    """What a stage sees while it runs.

    Attributes
    ----------
    experiment : Experiment
        The validated experiment file.
    inputs : ResolvedInputs
        Its checked input files and per-step data.
    out : Path
        The run folder.
    load : callable(stage_name, step=None) -> object
        Loads a saved output of a needed stage (a whole-stage result, or one step's).
    client : distributed.Client, optional
        The run's Dask cluster, for a stage that runs here but cuts its own work into chunk tasks
        (the local DVC's node batches); None without a cluster and inside a cluster's task.
    """

    experiment: object
    inputs: object
    out: Path
    load: Callable
    client: object = None


@dataclass(frozen=True)
class Stage:
    """A frozen description of one stage of the workflow.

    Attributes
    ----------
    name : str
    needs : tuple of str
        Stages whose outputs this one reads when they are enabled (their keys enter this key).
    per_step : bool
        Runs once per time step (``steps``, ``run_step``, ``save_step``, ``load_step``), each step
        checkpointed on its own; else once (``run``, ``save``, ``load``).
    enabled : callable(experiment, inputs) -> bool
    options : callable(experiment) -> dict
        The resolved options the cache key covers (JSON-able).
    input_files : callable(inputs, step) -> dict
        ``{label: path}`` of the input files the key covers (``step`` is None for a whole stage).
    run : callable(ctx) -> result, optional
    save : callable(result, out) -> tuple of str
        Writes the outputs (atomically); returns their paths relative to ``out``.
    load : callable(out) -> result, optional
    steps : callable(ctx) -> tuple of int, optional
        The step indices of a per-step stage.
    chained : bool
        A step starts from the previous step's result (``run_step(ctx, i, previous)``): its key
        includes the previous step's key.
    description, outputs : str
        What the stage computes, and where its outputs go (for the plan).
    reads : callable(experiment, stage_name) -> bool, optional
        Whether this experiment makes the stage read the needed stage ``stage_name`` (default: always);
        only the stages it reads enter its key.
    run_step : callable(ctx, step, previous) -> result, optional
    save_step : callable(result, out, ctx, step) -> tuple of str, optional
    load_step : callable(out, ctx, step) -> result, optional
    """

    name: str
    needs: tuple[str, ...]
    per_step: bool
    enabled: Callable
    options: Callable
    input_files: Callable
    run: Callable | None = None
    save: Callable | None = None
    load: Callable | None = None
    steps: Callable | None = None
    chained: bool = False
    run_step: Callable | None = None
    save_step: Callable | None = None
    load_step: Callable | None = None
    description: str = ""
    outputs: str = ""
    reads: Callable | None = None


def rel(out: Path, path: Path) -> str:
    """``path`` relative to the run folder ``out`` (as stored in done-markers)."""
    return Path(path).relative_to(out).as_posix()


def section_options(exp, section: str) -> dict:
    """The experiment section ``section``'s settings as dotted cache-key entries (``dvc.node_spacing``: value)."""
    return {f"{section}.{k}": v for k, v in getattr(exp, section).model_dump().items()}
