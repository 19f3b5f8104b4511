"""``tomo4d demo``."""

# Library imports stay inside the commands: `tomo4d --help` imports every command module, and the
# library packages cost 15-340 ms each to import (measured, issue 17); core ones sit at the top.
from __future__ import annotations

import click

from ._paths import declare_paths


@declare_paths(outputs=("out_dir",))
@click.command()
@click.argument("out_dir", default="tomo4d-demo", type=click.Path(path_type=str))
@click.option("--overwrite", is_flag=True, help="Replace an existing demo output folder.")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic experiment.")
@click.option("--stage", "stages", multiple=True, help="Run only this stage (repeatable).")
def demo(out_dir, overwrite, seed, stages):
    """Run every stage on the built-in synthetic experiment and write an HTML report."""
    from ..pipeline import run_demo

    def progress(name, i, n):
        click.echo(f"[{i + 1}/{n}] {name} ...", err=True)

    res = run_demo(out_dir, overwrite=overwrite, seed=seed, stages=list(stages) or None, progress=progress)
    for s in res.stages:
        click.echo(f"{s.name:<12} {s.seconds:7.1f} s  {s.summary}")
    click.echo(f"report: {res.report_path}  (total {res.seconds:.1f} s)")
