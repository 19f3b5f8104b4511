"""Running an experiment on a Dask distributed cluster (``tomo4d run --workers N`` / ``--scheduler ADDRESS``).

What runs where (the first increment of issue 18):

* the steps of a per-step stage that is not chained (``align``, ``segment``, ``enhance``, ``neutron``) are
  submitted as tasks (``client.submit``, collected with ``as_completed``); each task computes one step,
  writes its outputs and then its done-marker itself (every write atomic, :func:`tomo4d.io.atomic_output`, so a
  task retried by the cluster writes the same outputs under the same names, and a killed task leaves only
  temporaries, removed by the next write) and returns a small summary (output paths, wall time, peak memory).
  A stage's first step runs, and finishes, before its other steps start: it may leave what the others read
  (``segment`` trains its classifier with T0 and saves it to ``models/``).
* chained stages (``dvc``: a step starts from the previous step's field) and whole-stage stages run in the
  client, in order, as without a cluster; so do the keys, the markers of whole stages, the log and the report.

The run folder must be visible to every worker under the same path (a shared file system on a cluster).
A worker that dies loses only its step: the cluster retries the task (``distributed.scheduler.allowed-failures``),
and when it gives up the run stops with the error; running ``tomo4d run`` again resumes from the done-markers.
Nothing here sets global state: the results are those of the single-process run (tests/pipeline/test_distributed.py).
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import contextmanager

from .._validate import show
from ..errors import InputError
from .execute import _stale_steps, compute_step, reset_peak_memory
from .runner import _invalidate, _is_done, _marker, _read_marker, _run_context, why_recomputed
from .stages import stage_by_name

__all__ = ["EXTRA", "TEST_DELAY_ENV", "check_shared_folder", "cluster_client", "describe_client", "require_distributed",
           "run_steps_on_cluster"]

#: the optional dependencies of cluster runs (pyproject.toml)
EXTRA = "tomo4d[cluster]"

#: test-only hook: ``"stage/step=seconds,..."`` makes the task of that step sleep before it computes (read by the
#: worker; tests/pipeline/test_distributed.py kills a worker in that time). Never set it in production.
TEST_DELAY_ENV = "TOMO4D_TEST_STEP_DELAY"


def require_distributed(option: str = "--workers/--scheduler"):
    """The ``distributed`` package, or an InputError naming ``option`` and the extra that installs it."""
    try:
        import distributed
    except ImportError:
        raise InputError(f"{option} needs the Dask distributed scheduler, which is not installed; install the "
                         f"cluster extra: pip install '{EXTRA}' (distributed, dask-jobqueue)") from None
    return distributed


@contextmanager
def cluster_client(*, workers: int | None = None, scheduler: str | None = None):
    """Context manager: a ``distributed.Client`` for a run, closed after; None when neither option is given.

    Parameters
    ----------
    workers : int, optional
        Start a local cluster (``LocalCluster``: ``workers`` processes, 1 thread each), closed after.
    scheduler : str, optional
        Address of a running scheduler (``tcp://HOST:PORT``, e.g. one started by dask-jobqueue); left running.
    """
    if workers is not None and scheduler is not None:
        raise InputError(f"give either workers={show(workers)} (a local cluster) or scheduler={show(scheduler)} "
                         "(an existing one), not both")
    if workers is None and scheduler is None:
        yield None
        return
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers={show(workers)} must be an integer >= 1 (the number of worker processes)")
    if scheduler is not None and (not isinstance(scheduler, str) or "://" not in scheduler):
        raise InputError(f"scheduler={show(scheduler)} must be a scheduler address such as tcp://HOST:8786")
    distributed = require_distributed(f"workers={workers} (--workers)" if workers is not None
                                      else f"scheduler={scheduler!r} (--scheduler)")
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout="30s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise InputError(f"scheduler={scheduler!r}: no Dask scheduler answered ({exc}); check the address "
                             "and that the scheduler runs") from None
        with client:
            yield client
        return
    # no dashboard; the scheduler's HTTP endpoint (metrics) on a free port, never a clash with another run's
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


def local_dask():
    """Context manager: the dask computations inside a stage (slab-wise reads and filters) on the local threaded
    scheduler, as without a cluster, also in a worker's task or beside a default client: the cluster's tasks are
    the steps, and no volume chunk goes through its scheduler (restored on exit)."""
    import dask

    return dask.config.set(scheduler="threads")


def describe_client(client) -> str:
    """One line: the scheduler's address and its workers (for the log)."""
    try:
        info = client.scheduler_info()
        n = len(info.get("workers", {}))
        threads = sum(w.get("nthreads", 0) for w in info.get("workers", {}).values())
        return f"Dask scheduler {info.get('address', '?')}, {n} workers, {threads} threads"
    except Exception as exc:  # noqa: BLE001 - a description only
        return f"Dask client ({exc})"


def check_shared_folder(client, out) -> None:
    """InputError unless every worker of ``client`` sees the run folder ``out`` (a shared file system)."""
    seen = client.run(os.path.isdir, str(out))
    blind = sorted(w for w, ok in seen.items() if not ok)
    if blind:
        raise InputError(f"run folder {str(out)!r} is not visible to {len(blind)} of the {len(seen)} Dask workers "
                         f"({', '.join(blind[:3])}{' ...' if len(blind) > 3 else ''}); the workers write the steps' "
                         "outputs there: put it on a file system they share, under the same path")


def _test_delay(stage: str, step: str) -> None:
    for item in filter(None, os.environ.get(TEST_DELAY_ENV, "").split(",")):
        what, _, seconds = item.partition("=")
        if what.strip() == f"{stage}/{step}":
            time.sleep(float(seconds))


def _step_task(stage: str, exp, inp, out, i: int, key: str, basis: dict) -> dict:
    """One step on a worker: computed, outputs and done-marker written; a small summary returned."""
    _test_delay(stage, inp.names[i])
    reset_peak_memory()  # this task's peak (a worker runs one task at a time: 1 thread)
    with local_dask():
        _, paths, wall, peak = compute_step(stage_by_name(stage), _run_context(exp, inp, out), i, None,
                                            key=key, basis=basis)
    return {"outputs": list(paths), "wall_s": wall, "peak_rss_mib": peak, "pid": os.getpid()}


def _submit(client, s, ctx, keys, batch) -> dict:
    inp = ctx.inputs
    return {client.submit(_step_task, s.name, ctx.experiment, inp, ctx.out, i, keys["steps"][i],
                          keys["step_basis"][i], key=f"tomo4d-{s.name}-{inp.names[i]}-{uuid.uuid4().hex[:8]}",
                          pure=False): i for i in batch}


def _collect(client, futures: dict, s, ctx, why: dict, say) -> dict:
    """``{step: summary}`` of the tasks, logged as each finishes; the first failure cancels the rest and raises."""
    from distributed import as_completed

    done = {}
    for fut in as_completed(list(futures), loop=client.loop):  # this client (it need not be the default one)
        i = futures[fut]
        name = ctx.inputs.names[i]
        try:
            res = fut.result()
        except BaseException as exc:
            client.cancel([f for f in futures if not f.done()])
            say(f"stage {s.name}: step {name} failed on the cluster ({type(exc).__name__}: {exc}); the steps "
                "finished so far are kept: run again to resume")
            raise
        say(f"stage {s.name}: step {name} computed in {res['wall_s']:.2f} s because {'; '.join(why[i])} "
            f"(worker pid {res['pid']})")
        say.event("step", stage=s.name, step=name)
        done[i] = res
    return done


def run_steps_on_cluster(s, ctx, keys, out, say, client):
    """The per-step, not chained stage ``s`` with its steps as tasks on ``client``'s cluster (cached steps
    skipped); ``(outputs, computed, cached, reasons, peak_rss_mib of the tasks)`` in step order."""
    inp, steps = ctx.inputs, s.steps(ctx)
    _stale_steps(s, ctx, out)
    outputs, cached, todo, why, reasons = {}, [], [], {}, []
    for i in steps:
        name, marker = inp.names[i], _marker(out, s.name, inp.names[i])
        if _is_done(out, marker, keys["steps"][i]):
            cached.append(name)
            outputs[i] = _read_marker(marker)["outputs"]
            say(f"stage {s.name}: step {name} cached")
            say.event("step", stage=s.name, step=name)
            continue
        why[i] = why_recomputed(_read_marker(marker), keys["step_basis"][i], out)
        reasons += [f"{name}: {w}" for w in why[i]]
        _invalidate(out, marker)
        todo.append(i)
    first = todo[:1] if todo and todo[0] == steps[0] else []  # may leave what the others read (segment's model)
    done = {}
    for batch in (first, todo[len(first):]):
        if batch:
            for i in batch:
                say.event("step_start", stage=s.name, step=inp.names[i])
            done.update(_collect(client, _submit(client, s, ctx, keys, batch), s, ctx, why, say))
    for i, res in done.items():
        outputs[i] = res["outputs"]
    peaks = [r["peak_rss_mib"] for r in done.values() if r["peak_rss_mib"] is not None]
    return (tuple(p for i in steps for p in outputs[i]), tuple(inp.names[i] for i in todo), tuple(cached),
            tuple(reasons), max(peaks) if peaks else None)
