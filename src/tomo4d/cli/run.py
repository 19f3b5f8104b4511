"""``tomo4d run``, ``tomo4d report`` and ``tomo4d init``: the experiment-file workflow."""

# Library imports stay inside the commands: `tomo4d --help` imports every command module, and the
# library packages cost 15-340 ms each to import (measured, issue 17); core ones sit at the top.
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path

import click

from ..errors import InputError
from ._paths import declare_paths


def _experiment_inputs(params) -> list[str]:
    """The experiment file and every file it names (when it can be read), for the path checks."""
    exp = params.get("experiment")
    if exp is None:
        return []
    out = [exp]
    try:
        from ..pipeline import load_experiment
        from ..pipeline.inputs import expand_files

        e = load_experiment(exp)
        out += [str(p) for p in expand_files(e, e.inputs.series, "inputs.series")]
        if e.inputs.labels is not None:
            out += [str(p) for p in expand_files(e, e.inputs.labels, "inputs.labels")]
        out += [str(e.resolve(p)) for p in (e.inputs.repeat, e.segment and e.segment.labels) if p]
        for value in (e.truth.labels, e.truth.particles) if e.truth is not None else ():
            out += [str(p) for p in expand_files(e, value, "truth")] if value is not None else []
        if e.inputs.training_pair is not None:  # the enhance stages' LQ/HQ pair and HQ truth
            out += [str(e.resolve(p)) for p in (e.inputs.training_pair.lq, e.inputs.training_pair.hq)]
        if e.enhance is not None and e.enhance.truth_hq is not None:
            out += [str(p) for p in expand_files(e, e.enhance.truth_hq, "enhance.truth_hq")]
        if e.inputs.neutron is not None:  # the neutron stage's attenuation volumes
            out += [str(p) for p in expand_files(e, e.inputs.neutron, "inputs.neutron")]
    except Exception:  # noqa: BLE001, S110 - an unreadable file is reported by the command itself
        pass
    return out


_experiment_inputs.param = "experiment"  # the parameter these inputs come from (tests/cli/test_paths.py)


def _plan_lines(plan):
    inp = plan.inputs
    vs = ", ".join(f"{v:g}" for v in inp.voxel_size_nm)
    yield (f"inputs: {inp.n_steps} steps ({', '.join(inp.names)}), shape {inp.shape}, {inp.dtype}, voxel ({vs}) nm, "
           f"{len(inp.labels)} label volume(s); all files open and agree")
    for p in inp.series:
        yield f"  series  {p}"
    for p in inp.labels:
        yield f"  labels  {p}"
    if inp.training_pair is not None:  # checked: both open, LQ voxel = 2 x HQ voxel, the HQ field fits the LQ one
        yield f"  training pair  lq {inp.training_pair[0]}  hq {inp.training_pair[1]}"
    if inp.neutron:  # checked: one per step, same shape, field = the series' field within a neutron voxel
        nvs = ", ".join(f"{v:g}" for v in inp.neutron_voxel_size_nm)
        yield f"  neutron volumes: shape {inp.neutron_shape}, voxel ({nvs}) nm, field matches the series"
        for p in inp.neutron:
            yield f"  neutron {p}"
    yield f"output: {plan.out if plan.out is not None else '(give -o OUT to see what is done)'}"
    for s in plan.stages:
        if not s.enabled:
            yield f"  {s.name:<9} off"
            continue
        state = "done" if s.done else "to run"
        if s.steps_done or s.steps_todo:
            state += f" (steps done: {', '.join(s.steps_done) or '-'}; to run: {', '.join(s.steps_todo) or '-'})"
        yield f"  {s.name:<9} {state:<10} {s.description} -> {s.outputs}"
        if s.reasons and s.reasons != ("not computed before",):
            yield f"            to run because {'; '.join(s.reasons)}"


@contextmanager
def _distributed_logs(option: str | None):
    """With a cluster (``option``), Dask distributed's INFO lines (cluster start, connections) only with -v: its
    logger is set to the command's level for the run and restored after."""
    if option is None:
        yield
        return
    from ..pipeline.distributed import require_distributed

    require_distributed(option)  # its import configures its logger: first
    logger = logging.getLogger("distributed")
    old = logger.level
    logger.setLevel(max(logging.getLogger().getEffectiveLevel(), logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(old)


@declare_paths(inputs=("experiment", _experiment_inputs), outputs=("out_dir",), resumable=("out_dir",))
@click.command()
@click.argument("experiment", required=False, type=click.Path(path_type=str))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=str), help="Run folder (new, or an earlier run).")
@click.option("--check", is_flag=True, help="Validate the file and its inputs, print the plan; compute nothing.")
@click.option("--schema", is_flag=True, help="Print the JSON schema of experiment files.")
@click.option("--overwrite", is_flag=True, help="Replace an existing folder tomo4d wrote that is not a run.")
@click.option("--quiet", is_flag=True, help="No progress display or lines (the log is still written to OUT/log.txt).")
@click.option("--workers", type=int, default=None, metavar="N",
              help="Run on a local Dask cluster of N worker processes (1 thread each), closed after; needs the "
                   "cluster extra: pip install 'tomo4d[cluster]'.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run on an existing Dask cluster, e.g. tcp://HOST:8786 (examples/cluster/ for SLURM); needs the "
                   "cluster extra. The run folder must be on a file system the workers share.")
def run(experiment, out_dir, check, schema, overwrite, quiet, workers, scheduler):
    """Run the experiment file EXPERIMENT into the run folder OUT (resumes; skips what is done).

    With --workers or --scheduler the time steps of the per-step stages that are not chained (align, segment,
    enhance, neutron) run as tasks on a Dask distributed cluster, each writing its own outputs; the rest runs here.
    """
    from ..pipeline import (
        experiment_schema,
        load_experiment,
        plan_experiment,
        run_experiment,
    )

    if schema:
        click.echo(json.dumps(experiment_schema(), indent=2))
        return
    if experiment is None:
        raise InputError("give the experiment file: tomo4d run EXPERIMENT.yaml -o OUT (tomo4d init writes one)")
    exp = load_experiment(experiment)
    if check:
        for line in _plan_lines(plan_experiment(exp, out_dir)):
            click.echo(line)
        return
    if out_dir is None:
        raise InputError("give the run folder with -o OUT (a new folder, or an earlier run to resume)")
    from ..pipeline.distributed import cluster_client
    from ..pipeline.progress import run_progress

    option = f"--workers {workers}" if workers is not None else None if scheduler is None else "--scheduler"
    with _distributed_logs(option), cluster_client(workers=workers, scheduler=scheduler) as client, \
            run_progress(quiet=quiet) as progress:  # stderr: a live display on a terminal, else plain lines
        res = run_experiment(exp, out_dir, overwrite=overwrite, source=experiment, progress=progress, client=client)
    for s in res.stages:
        steps = f" (computed {', '.join(s.computed_steps) or '-'}; cached {', '.join(s.cached_steps) or '-'})" \
            if s.computed_steps or s.cached_steps else ""
        click.echo(f"{s.name:<9} {s.status:<13} {s.wall_s:7.1f} s{steps}")
        if s.reasons:
            click.echo(f"          recomputed because {'; '.join(s.reasons)}")
    click.echo(f"report: {res.report}  (total {res.wall_s:.1f} s)")


@declare_paths(outputs=("out_dir",), resumable=("out_dir",))
@click.command()
@click.argument("out_dir", type=click.Path(path_type=str))
def report(out_dir):
    """Re-render OUT/report.html of the run folder OUT from its saved results (no recomputation)."""
    from ..pipeline import render_report

    click.echo(f"report: {render_report(out_dir)}")


@declare_paths(inputs=("scans",), outputs=("output",))
@click.command()
@click.argument("scans", type=click.Path(path_type=str))
@click.option("-o", "--output", default="experiment.yaml", show_default=True, type=click.Path(path_type=str),
              help="Experiment file to write (paths in it are relative to its folder).")
@click.option("--overwrite", is_flag=True, help="Replace an existing experiment file.")
def init(scans, output, overwrite):
    """Write a commented template experiment file for the folder of scans SCANS."""
    from ..io import atomic_output
    from ..pipeline import experiment_template

    if not Path(scans).exists():
        raise InputError(f"scans folder {scans!r} does not exist; check the path")
    text = experiment_template(scans, relative_to=Path(output).resolve().parent)
    with atomic_output(output, overwrite=overwrite, inputs=[scans]) as tmp:
        tmp.write_text(text, encoding="utf-8")
    todo = sum("TODO" in line.split("#")[0] for line in text.splitlines())
    click.echo(f"wrote {output}" + (f"; fill in the {todo} TODO value(s), then" if todo else "; check it, then")
               + f": tomo4d run {output} --check")
