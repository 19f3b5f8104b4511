"""Running stages end to end: the built-in demo (and later the experiment-file runner)."""

from .demo import DemoResult, StageResult, run_demo

__all__ = ["run_demo", "DemoResult", "StageResult"]
