"""Progress of ``tomo4d run``: a live display on a terminal, plain log lines otherwise.

:func:`run_progress` picks one, by the stream it writes to (stderr: stdout keeps the summary):

* a terminal, with ``rich`` importable: one rich display, a bar over the stages (the current one
  named) and a bar over its time steps (the current one named); every log line is printed above it;
* a terminal without ``rich``: the same on one line, redrawn with a carriage return;
* anything else (a file, a pipe, a captured stream): the log lines, one per line, no control characters;
* ``quiet``: nothing (``OUT/log.txt`` is written in every case).

The runner calls the object with every log line (``progress(msg)``) and, when it has an ``event``
method, with structured events: ``run`` (``stages``: names), ``stage`` (``name``, ``steps``: step
names of a per-step stage), ``step_start`` / ``step`` (``stage``, ``step``: a step started / finished
or was cached) and ``stage_done`` (``name``).
"""

from __future__ import annotations

import importlib.util
import sys

__all__ = ["LineProgress", "PlainProgress", "RichProgress", "run_progress"]


class PlainProgress:
    """Log lines, one per line (for files, pipes and captured output)."""

    def __init__(self, stream):
        self.stream = stream

    def __call__(self, msg: str) -> None:
        self.stream.write(f"{msg}\n")
        self.stream.flush()

    def event(self, kind: str, **info) -> None:  # the log lines already name stage and step
        pass

    def close(self) -> None:
        pass


class _State:
    """Where a run is: stage i of n and its name, step j of m and its name."""

    def __init__(self):
        self.stages, self.stage, self.steps, self.step, self.done_steps = [], "", (), "", 0

    def update(self, kind: str, info: dict) -> None:
        if kind == "run":
            self.stages = list(info["stages"])
        elif kind == "stage":
            self.stage, self.steps, self.step, self.done_steps = info["name"], tuple(info["steps"]), "", 0
        elif kind == "step_start":
            self.step = info["step"]
        elif kind == "step":
            self.step, self.done_steps = info["step"], self.done_steps + 1

    @property
    def stage_index(self) -> int:
        return self.stages.index(self.stage) + 1 if self.stage in self.stages else 0

    def line(self) -> str:
        text = f"stage {self.stage_index}/{len(self.stages)} {self.stage}"
        if self.steps:
            text += f", step {self.step or '-'} ({self.done_steps}/{len(self.steps)} done)"
        return text


class LineProgress:
    """One status line redrawn with a carriage return (a terminal without ``rich``)."""

    def __init__(self, stream):
        self.stream, self.state, self.width = stream, _State(), 0

    def _draw(self) -> None:
        text = self.state.line()
        self.stream.write("\r" + text.ljust(self.width))
        self.width = len(text)
        self.stream.flush()

    def __call__(self, msg: str) -> None:
        self.stream.write("\r" + " " * self.width + "\r" + msg + "\n")
        self.width = 0
        if self.state.stage:
            self._draw()

    def event(self, kind: str, **info) -> None:
        self.state.update(kind, info)
        if kind != "run":
            self._draw()

    def close(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


class RichProgress:
    """A rich display: a bar over the stages and one over the current stage's steps, log lines above."""

    def __init__(self, stream):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.state = _State()
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(file=stream), transient=True)
        self.stages = self.progress.add_task("stages", total=None)
        self.steps = self.progress.add_task("steps", total=None, visible=False)
        self.progress.start()

    def __call__(self, msg: str) -> None:
        self.progress.console.print(msg, markup=False, highlight=False)

    def event(self, kind: str, **info) -> None:
        st, p = self.state, self.progress
        st.update(kind, info)
        if kind == "run":
            p.update(self.stages, total=len(st.stages), completed=0)
        elif kind == "stage":
            p.update(self.stages, description=f"stage {st.stage}", completed=st.stage_index - 1)
            p.update(self.steps, total=len(st.steps) or None, completed=0, visible=bool(st.steps),
                     description=f"{st.stage} steps")
        elif kind in ("step_start", "step"):
            p.update(self.steps, completed=st.done_steps, description=f"{st.stage} step {st.step}")
        elif kind == "stage_done":
            p.update(self.stages, completed=st.stage_index)

    def close(self) -> None:
        self.progress.stop()


class _Context:
    def __init__(self, make):
        self.make, self.display = make, None

    def __enter__(self):
        self.display = None if self.make is None else self.make()
        return self.display

    def __exit__(self, *exc) -> None:
        if self.display is not None:
            self.display.close()


def _has_rich() -> bool:
    return importlib.util.find_spec("rich") is not None


def run_progress(stream=None, *, quiet: bool = False, use_rich: bool | None = None) -> _Context:
    """A context manager giving the progress display of a run (None when ``quiet``); see the module docstring.

    ``stream`` defaults to ``sys.stderr`` (read when called); ``use_rich`` forces (True) or refuses (False)
    the rich display on a terminal (default: when ``rich`` is importable).
    """
    if quiet:
        return _Context(None)
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if not (callable(isatty) and isatty()):
        return _Context(lambda: PlainProgress(stream))
    if use_rich is None:
        use_rich = _has_rich()
    return _Context(lambda: RichProgress(stream) if use_rich else LineProgress(stream))
