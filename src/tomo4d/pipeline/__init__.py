"""Running stages end to end: the experiment-file runner (and the built-in demo).

- :func:`load_experiment` / :class:`Experiment`: the validated experiment file (YAML);
  :func:`experiment_schema` its JSON schema; :func:`experiment_template` what ``tomo4d init`` writes.
- :func:`plan_experiment`: check the inputs and say what would run and what is done.
- :func:`run_experiment`: run, cache and resume the stages into a run folder.
- :func:`render_report`: ``OUT/report.html`` from the saved outputs.
"""

from .demo import DemoResult, StageResult, run_demo
from .execute import run_experiment
from .experiment import Experiment, experiment_schema, load_experiment, parse_experiment
from .run_report import render_report
from .runner import (
           Plan,
           RunResult,
           StageRun,
           StageStatus,
           is_run_folder,
           plan_experiment,
)
from .template import experiment_template

__all__ = [
           "DemoResult",
           "Experiment",
           "Plan",
           "RunResult",
           "StageResult",
           "StageRun",
           "StageStatus",
           "experiment_schema",
           "experiment_template",
           "is_run_folder",
           "load_experiment",
           "parse_experiment",
           "plan_experiment",
           "render_report",
           "run_demo",
           "run_experiment",
]
