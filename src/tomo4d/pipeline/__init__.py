"""Running stages end to end: the experiment-file runner (and the built-in demo).

- :func:`load_experiment` / :class:`Experiment`: the validated experiment file (YAML);
  :func:`experiment_schema` its JSON schema; :func:`experiment_template` what ``tomo4d init`` writes.
- :func:`plan_experiment`: check the inputs and say what would run and what is done.
- :func:`run_experiment`: run, cache and resume the stages into a run folder.
- :func:`render_report`: ``OUT/report.html`` from the saved outputs.

Imports: the stage modules import the library packages (dvc, register, segment, quantify, neutron,
enhance) inside the functions that run a stage, on purpose: ``tomo4d run --check``, ``--schema`` and
``tomo4d report`` load only the runner (0.27 s) and never the stages' scipy-, sklearn- and torch-backed
code (a further 0.43 s for the library packages and 2.9 s for torch + sklearn; 2 loaded cores,
2026-12-02).  The runner's own modules import each other at the top.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "DemoResult": "demo", "demo_experiment_text": "demo", "run_demo": "demo",
    "run_experiment": "execute",
    "Experiment": "experiment", "experiment_schema": "experiment", "load_experiment": "experiment",
    "parse_experiment": "experiment",
    "render_report": "run_report",
    "Plan": "runner", "RunResult": "runner", "StageRun": "runner", "StageStatus": "runner", "is_run_folder": "runner",
    "plan_experiment": "runner",
    "experiment_template": "template",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
