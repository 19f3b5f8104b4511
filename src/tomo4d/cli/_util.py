"""Helpers shared by the CLI modules: progress bars, JSON output, option parsing."""

from __future__ import annotations

import json
from contextlib import contextmanager

import click
import numpy as np

from ..errors import InputError


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=_jsonable, sort_keys=False))


def parse_triple(text, *, name: str, kind=float):
    """Parse ``"50"`` or ``"50,50,100"`` into a (z, y, x) tuple."""
    if text is None:
        return None
    parts = [p for p in str(text).replace("x", ",").split(",") if p.strip()]
    try:
        vals = [kind(p) for p in parts]
    except ValueError:
        raise InputError(f"{name}={text!r} is not understood; give one number or three as Z,Y,X") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise InputError(f"{name}={text!r} needs one number or three (Z,Y,X)")
    return tuple(vals)


@contextmanager
def progress_bar(description: str, *, enabled: bool = True):
    """Yield a ``progress(done, total)`` callback drawing a rich progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), console=console, transient=True,
                  disable=not (enabled and console.is_terminal)) as prog:
        task = prog.add_task(description, total=None)

        def update(done, total):
            prog.update(task, completed=done, total=total)

        yield update
