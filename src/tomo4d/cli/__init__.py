"""The ``tomo4d`` command line: thin wrappers that parse, call the library and print.

Every sub-command lives in a module of this package and is loaded only when it
is used, so ``tomo4d --version`` stays fast.  Errors a user can cause become one
line on stderr and exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from .. import __version__
from .._interrupt import exit_status, handling_interrupts
from ..errors import Tomo4dError

#: name -> "module:attribute" of each sub-command (module relative to tomo4d.cli).
COMMANDS: dict[str, str] = {
    "info": "io:info",
    "convert": "io:convert",
    "demo": "demo:demo",
    "neutron": "neutron:neutron",
    "phantom": "phantom:phantom",
    "enhance": "enhance:enhance",
    "quality": "quality:quality",
    "register": "register:register",
    "dvc": "dvc:dvc",
    "strain": "dvc:strain",
    "residual": "dvc:residual",
    "segment": "segment:segment",
    "quantify": "quantify:quantify",
    "reconstruct": "reconstruct:reconstruct",
    "run": "run:run",
    "report": "run:report",
    "init": "run:init",
}

EXIT_USAGE = 2
EXIT_INTERNAL = 1


class LazyGroup(click.Group):
    """A click group importing each sub-command's module on first use."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="tomo4d")
@click.option("--debug", is_flag=True, help="Show full tracebacks and debug logging.")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
              help="CPU threads of every compute stage (torch, numba, BLAS, dask); default: the CPUs this process "
                   "may use (affinity, cgroup quota). Overrides an experiment file's threads.")
@click.pass_context
def cli(ctx, debug, verbose, threads):
    """tomo4d: 4D tomography of battery cells, from volumes to trustworthy numbers."""
    from .._threads import compute_threads

    level = logging.DEBUG if (debug or verbose > 1) else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = {"debug": debug, "threads": threads}
    if threads is not None:  # without: the stages resolve their own default (tomo4d._threads.resolve_threads)
        ctx.with_resource(compute_threads(threads))


def main(argv=None) -> int:
    """Entry point; returns the exit status (used by the console script).

    Ctrl-C and SIGTERM always end the command with 130 (143), even where a library
    swallowed the KeyboardInterrupt (see :mod:`tomo4d._interrupt`); an output being
    written is then discarded, never published half-written.

    OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless the environment says otherwise; read
    when torch or numba load their OpenMP runtime, in the command): on a shared machine a spinning
    OpenMP thread whose peer is descheduled made a torch U-Net iteration ~14x slower on 2 threads
    (benchmarks/bench_threads.py).  The environment is restored when the command ends.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    policy_set = "OMP_WAIT_POLICY" not in os.environ
    if policy_set:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        with handling_interrupts():
            status = _run(args, debug="--debug" in args)
            interrupted = exit_status()
    finally:
        if policy_set:
            os.environ.pop("OMP_WAIT_POLICY", None)
    if interrupted is not None and status != interrupted:
        click.echo("tomo4d: interrupted", err=True)
        return interrupted
    return status


def _run(args, *, debug: bool) -> int:
    try:
        cli.main(args=args, prog_name="tomo4d", standalone_mode=False)
        return 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:  # one line, like every other bad input (the command's --help says more)
        words = exc.ctx.command_path.split(" ")[1:] if exc.ctx is not None else []
        click.echo(f"tomo4d: error: {exc.format_message().rstrip('.')}; see tomo4d {' '.join([*words, '--help'])}",
                   err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("tomo4d: interrupted; nothing half-written was left under an output name", err=True)
        return exit_status() or 130
    except (Tomo4dError, ValueError, OSError, MemoryError) as exc:
        if debug:
            raise
        click.echo(f"tomo4d: error: {exc}", err=True)
        return EXIT_USAGE
    except Exception as exc:  # a bug: still no traceback without --debug
        if debug:
            raise
        click.echo(f"tomo4d: internal error ({type(exc).__name__}: {exc}); rerun with --debug and report it",
                   err=True)
        return EXIT_INTERNAL
