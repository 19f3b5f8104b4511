"""Helpers shared by the CLI modules: common options, progress bars, output, option parsing."""

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


def emit(info, *, as_json: bool, text) -> None:
    """Print a command's result: *info* as JSON with ``--json``, else *text* for people.

    *info* is the JSON-able result, or a function returning it (called only with ``--json``,
    for results that cost something to build).  *text* is one string or an iterable of lines,
    each echoed as it comes; a generator is run only without ``--json``.
    """
    if as_json:
        echo_json(info() if callable(info) else info)
    elif isinstance(text, str):
        click.echo(text)
    else:
        for line in text:
            click.echo(line)


def option_group(*options):
    """One decorator applying click *options* in the order given (as if stacked top to bottom)."""
    def decorate(f):
        for opt in reversed(options):
            f = opt(f)
        return f

    return decorate


#: ``--json``: print the result as JSON (the ``as_json`` argument).
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
#: ``--overwrite``: replace an existing output file.
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace an existing output (never an input).")
#: ``--voxel-size``: voxel size in nm overriding the input file's (parse with :func:`parse_triple`).
voxel_size_option = click.option("--voxel-size", default=None,
                                 help="Voxel size in nm: one value or Z,Y,X (overrides the file).")


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
