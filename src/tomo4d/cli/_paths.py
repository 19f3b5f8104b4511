"""Every command declares its input and output paths in one place; one check guards them all.

``@declare_paths(inputs=..., outputs=...)`` goes above a command's ``@click.command()``.
Before the command does any work, :func:`tomo4d.io.check_outputs` refuses an
output that resolves to an input (symlinks, hard links and folders included, even
with ``--overwrite``), two outputs that are the same path, and an existing output
without ``--overwrite`` (or a folder tomo4d did not write).  The declaration is kept
on the command (``command.tomo4d_paths``) so the tests can enumerate every command
and prove the rule for each; a command without a declaration fails those tests.
"""

# ``tomo4d.io`` is imported inside the function that needs it: every command module imports this one,
# so `tomo4d --help` would pay its import (~15 ms, measured, issue 17).
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import click

#: An input or output given by a parameter name, or computed from all parameters.
PathSource = str | Callable[[dict], Iterable]


@dataclass(frozen=True)
class PathDeclaration:
    """The paths one command reads and writes.

    Attributes
    ----------
    inputs : tuple
        Parameter names whose values (a path, a tuple of paths, or None) are inputs, or
        callables ``params -> iterable of paths`` for inputs hidden in other syntax.
    outputs : tuple of str
        Parameter names whose values are outputs.
    derived : callable, optional
        ``params -> {label: path}`` of outputs the command writes beside the named ones.
    resumable : tuple of str
        Output parameters that may already exist without ``--overwrite`` (a folder the
        command resumes or adds files to, possibly the home of derived outputs); the
        files inside are checked by the library or declared as derived outputs.
    """

    inputs: tuple = ()
    outputs: tuple[str, ...] = ()
    derived: Callable[[dict], dict] | None = None
    resumable: tuple[str, ...] = ()

    def input_paths(self, params: dict) -> list[str]:
        out = []
        for src in self.inputs:
            values = src(params) if callable(src) else params.get(src)
            if values is None:
                continue
            out.extend([values] if isinstance(values, str) else [v for v in values if v is not None])
        return out

    def output_paths(self, params: dict, labels: dict[str, str]) -> dict[str, str]:
        out = {labels.get(name, name): params.get(name) for name in self.outputs}
        if self.derived is not None:
            out |= self.derived(params)
        return {k: v for k, v in out.items() if v is not None}


def param_label(param: click.Parameter) -> str:
    """How a user knows a parameter: ``--sigma-output`` for an option, ``OUTPUT`` for an argument."""
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return (param.metavar or param.name or "").upper()


def declare_paths(*, inputs=(), outputs=(), derived=None, resumable=()):
    """Decorator for a click command: declare its paths and check them before it runs."""
    decl = PathDeclaration(tuple(inputs), tuple(outputs), derived, tuple(resumable))

    def decorate(cmd: click.Command) -> click.Command:
        labels = {p.name: param_label(p) for p in cmd.params}
        unknown = [n for n in (*decl.outputs, *decl.resumable, *(s for s in decl.inputs if isinstance(s, str)))
                   if n not in labels]
        if unknown:
            raise TypeError(f"{cmd.name}: declared paths {unknown} are not parameters of the command")
        original = cmd.callback

        @functools.wraps(original)
        def callback(**params):
            check_paths(decl, params, labels)
            return original(**params)

        cmd.callback = callback
        cmd.tomo4d_paths = decl
        return cmd

    return decorate


def check_paths(decl: PathDeclaration, params: dict, labels: dict[str, str]) -> None:
    """Apply the output rules of :func:`tomo4d.io.check_outputs` to a command's parameters."""
    from ..io import check_outputs

    outputs = decl.output_paths(params, labels)
    if not outputs:
        return
    resumable = {labels.get(n, n) for n in decl.resumable}
    check_outputs(outputs, inputs=decl.input_paths(params), overwrite=bool(params.get("overwrite", False)),
                  exclusive=[k for k in outputs if k not in resumable], folders=resumable)


def leaf_commands(group: click.Group, ctx=None, prefix=()) -> dict[tuple[str, ...], click.Command]:
    """Every runnable command under ``group`` by its words, e.g. ``("enhance", "apply")``."""
    ctx = ctx or click.Context(group)
    out = {}
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            out |= leaf_commands(cmd, click.Context(cmd, parent=ctx), prefix + (name,))
        else:
            out[prefix + (name,)] = cmd
    return out
