"""``tomo4d demo``: the phantom writes an experiment, ``tomo4d run`` runs it (:mod:`tomo4d.pipeline.demo`)."""

# Library imports stay inside the commands: `tomo4d --help` imports every command module, and the
# library packages cost 15-340 ms each to import (measured, issue 17); core ones sit at the top.
from __future__ import annotations

import click

from ._paths import declare_paths


@declare_paths(outputs=("out_dir",))
@click.command()
@click.argument("out_dir", default="tomo4d-demo", type=click.Path(path_type=str))
@click.option("--overwrite", is_flag=True, help="Replace an existing demo output folder.")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic experiment and of the run.")
@click.option("--quiet", is_flag=True, help="No progress display or lines (the run's log is in OUT/run/log.txt).")
def demo(out_dir, overwrite, seed, quiet):
    """Write a synthetic in-situ experiment (scans, truth, experiment.yaml) into OUT_DIR and run it.

    The same as `tomo4d run OUT_DIR/experiment.yaml -o OUT_DIR/run`: the report is OUT_DIR/run/report.html.
    """
    from ..pipeline import run_demo
    from ..pipeline.progress import run_progress

    with run_progress(quiet=quiet) as progress:
        res = run_demo(out_dir, overwrite=overwrite, seed=seed, progress=progress)
    click.echo(f"{'phantom':<15} {'written':<13} {res.phantom_s:7.1f} s  ({res.out_dir / 'data'})")
    for s in res.run.stages:
        click.echo(f"{s.name:<15} {s.status:<13} {s.wall_s:7.1f} s")
    click.echo(f"experiment: {res.experiment_file}")
    click.echo(f"report: {res.report_path}  (total {res.seconds:.1f} s)")
