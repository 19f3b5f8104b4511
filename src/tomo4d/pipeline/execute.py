"""Executing an experiment: :func:`run_experiment` (keys and markers in :mod:`tomo4d.pipeline.runner`)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .._threads import compute_threads, current_threads
from ..errors import InputError
from .fingerprint import fingerprint
from .inputs import resolve_inputs
from .runner import (
    STATE_DIR,
    RunResult,
    StageRun,
    _enabled,
    _fingerprints,
    _invalidate,
    _is_done,
    _marker,
    _read_marker,
    _run_context,
    _write_marker,
    claim_run_folder,
    stage_keys,
    why_recomputed,
)
from .stages import STAGES, stage_by_name

__all__ = ["DEPENDENCIES", "run_experiment"]

log = logging.getLogger(__name__)

#: packages whose versions go into provenance.json
DEPENDENCIES = ("numpy", "scipy", "dask", "numba", "h5py", "tifffile", "zarr", "pyarrow", "pydantic", "torch",
                "scikit-learn", "scikit-image", "matplotlib", "PyYAML", "click")

#: how peak memory is measured (written into provenance.json)
MEMORY_SOURCES = {
    "VmHWM": ("VmHWM of /proc/self/status, reset (/proc/self/clear_refs 5) when each stage starts: the "
              "process-wide peak resident memory (all threads) during that stage; cached stages show the "
              "value from the run that computed them"),
    "ru_maxrss": ("resource.getrusage(RUSAGE_SELF).ru_maxrss: the process-wide high-water mark of resident memory "
                  "since the process started, read when each stage finished (a stage's own peak is visible only "
                  "where it raised the mark); cached stages show the value from the run that computed them"),
}


def reset_peak_memory() -> bool:
    """Reset the process's peak-RSS mark (Linux ``/proc/self/clear_refs``); False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process, MiB: VmHWM (since the last reset) where /proc exists, else
    ``ru_maxrss`` (since the process started; KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (OSError, ValueError):  # pragma: no cover - platforms without getrusage
        return None
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _memory_source() -> str:
    return MEMORY_SOURCES["VmHWM" if Path("/proc/self/clear_refs").exists() and Path("/proc/self/status").exists()
                          else "ru_maxrss"]


class _RunLog:
    """Appends timestamped lines to ``OUT/log.txt`` (and the ``logging`` module); never prints."""

    def __init__(self, path: Path, progress=None):
        self.path, self.progress = path, progress

    def __call__(self, msg: str) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
        log.info("%s", msg)
        if self.progress is not None:
            self.progress(msg)

    def event(self, kind: str, **info) -> None:
        """A structured progress event for a display (:mod:`tomo4d.pipeline.progress`); plain callables skip it."""
        hook = getattr(self.progress, "event", None)
        if hook is not None:
            hook(kind, **info)


@contextmanager
def _locked(out: Path):
    """Hold an exclusive lock on the run folder (released by the OS even when the process is killed)."""
    with open(out / STATE_DIR / "lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"run folder {str(out)!r} is in use by another tomo4d run; wait for it to finish, "
                             "or choose another folder") from None
        fh.write(str(os.getpid()))
        fh.flush()
        yield


def _stale_steps(s, ctx, out) -> None:
    """Markers and outputs of steps that are no longer in the series (never mixed into this run)."""
    d = out / STATE_DIR / "done" / s.name
    names = {ctx.inputs.names[i] for i in s.steps(ctx)}
    for m in sorted(d.glob("*.json")) if d.is_dir() else ():
        if m.stem not in names:
            _invalidate(out, m)


def compute_step(s, ctx, i: int, previous, *, key: str, basis: dict):
    """Compute step ``i`` of the per-step stage ``s``, write its outputs and then its done-marker (both atomic:
    a repeated call writes the same outputs under the same names); ``(result, paths, wall_s, peak_rss_mib)``."""
    t0 = time.perf_counter()
    result = s.run_step(ctx, i, previous)
    paths = s.save_step(result, ctx.out, ctx, i)
    wall, peak = time.perf_counter() - t0, peak_rss_mib()
    _write_marker(_marker(ctx.out, s.name, ctx.inputs.names[i]), key, paths, wall, basis=basis, peak_rss_mib=peak)
    return result, paths, wall, peak


def _run_steps(s, ctx, keys, out, say) -> tuple[tuple, tuple, tuple, tuple]:
    """A per-step stage: cached steps loaded (when a later step needs them), the rest computed."""
    inp, outputs, computed, cached, reasons = ctx.inputs, [], [], [], []
    previous = None
    steps = s.steps(ctx)
    _stale_steps(s, ctx, out)
    for n, i in enumerate(steps):
        name, key = inp.names[i], keys["steps"][i]
        marker = _marker(out, s.name, name)
        if _is_done(out, marker, key):
            cached.append(name)
            say(f"stage {s.name}: step {name} cached")
            say.event("step", stage=s.name, step=name)
            outputs += json.loads(marker.read_text())["outputs"]
            previous = s.load_step(out, ctx, i) if s.chained and n + 1 < len(steps) \
                and not _is_done(out, _marker(out, s.name, inp.names[steps[n + 1]]), keys["steps"][steps[n + 1]]) \
                else None
            continue
        why = why_recomputed(_read_marker(marker), keys["step_basis"][i], out)
        reasons += [f"{name}: {w}" for w in why]
        _invalidate(out, marker)
        say.event("step_start", stage=s.name, step=name)
        result, paths, wall, _ = compute_step(s, ctx, i, previous, key=key, basis=keys["step_basis"][i])
        say(f"stage {s.name}: step {name} computed in {wall:.2f} s because {'; '.join(why)}")
        computed.append(name)
        say.event("step", stage=s.name, step=name)
        outputs += paths
        previous = result
    return tuple(outputs), tuple(computed), tuple(cached), tuple(reasons)


def _run_stage(s, ctx, keys, out, say, client=None) -> StageRun:
    marker = _marker(out, s.name)
    say.event("stage", name=s.name, steps=tuple(ctx.inputs.names[i] for i in keys["steps"]))
    if _is_done(out, marker, keys["key"]):
        say(f"stage {s.name}: cached")
        say.event("stage_done", name=s.name)
        cached = tuple(ctx.inputs.names[i] for i in keys["steps"])
        return StageRun(s.name, "cached", (), cached, 0.0, (), _read_marker(marker).get("peak_rss_mib"))
    why = why_recomputed(_read_marker(marker), keys["basis"], out)
    if s.per_step:
        marker.unlink(missing_ok=True)  # each step's marker decides about that step's outputs
    else:
        _invalidate(out, marker)
    t0 = time.perf_counter()
    reset_peak_memory()
    say(f"stage {s.name}: running because {'; '.join(why)}")
    step_peak = None
    if s.per_step and client is not None and not s.chained:  # the steps as tasks on the cluster
        from .distributed import run_steps_on_cluster

        paths, computed, cached, step_why, step_peak = run_steps_on_cluster(s, ctx, keys, out, say, client)
        why = step_why if cached and step_why else why
    elif s.per_step:
        paths, computed, cached, step_why = _run_steps(s, ctx, keys, out, say)
        why = step_why if cached and step_why else why
    else:
        paths, computed, cached = s.save(s.run(ctx), out), (), ()
    wall, peak = time.perf_counter() - t0, peak_rss_mib()
    if step_peak is not None:  # the largest of the client's and the workers' (per task) peaks
        peak = step_peak if peak is None else max(peak, step_peak)
    _write_marker(marker, keys["key"], paths, wall, basis=keys["basis"], peak_rss_mib=peak)
    say(f"stage {s.name}: done in {wall:.2f} s")
    say.event("stage_done", name=s.name)
    return StageRun(s.name, "partly cached" if cached else "computed", computed, cached, wall, why, peak)


def _versions() -> dict:
    from importlib import metadata

    from .. import __version__

    out = {"tomo4d": __version__, "python": platform.python_version()}
    for name in DEPENDENCIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _provenance(exp, inp, fps, keys, runs, out: Path, source, executor: str = "this process") -> None:
    from ..io import write_json

    stages = {}
    for r in runs:
        m = json.loads(_marker(out, r.name).read_text())
        stages[r.name] = {"key": keys[r.name]["key"], "status": r.status, "wall_s_this_run": r.wall_s,
                          "wall_s_when_computed": m.get("wall_s"), "peak_rss_mib": m.get("peak_rss_mib"),
                          "recomputed_because": list(r.reasons), "outputs": m.get("outputs")}
    prov = {"experiment_file": None if source is None else str(Path(source).resolve()),
            "experiment_fingerprint": None if source is None else _fp(source),
            "inputs": {str(p): fps[str(p)] for p in inp.files()}, "steps": list(inp.names),
            "options": exp.options(), "versions": _versions(), "seeds": _seeds(exp), "memory": _memory_source(),
            "executor": executor,
            "stages": stages,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(prov, out / "provenance.json", overwrite=True, indent=1, default=str)
    write_json({"options": exp.options(), "names": list(inp.names), "time_s": list(inp.time_s),
                "state_of_charge": inp.state_of_charge, "voxel_size_nm": inp.voxel_size_nm,
                "stages": [r.name for r in runs]}, out / STATE_DIR / "experiment.json", overwrite=True, indent=1)


def _seeds(exp) -> dict:
    """``{"section.seed": value}`` of every enabled section with a seed (randomness is seeded nowhere else)."""
    out = {}
    for name, value in exp.options().items():
        if isinstance(value, dict) and "seed" in value:
            out[f"{name}.seed"] = value["seed"]
    return out


def _local_dask(client):
    """With a client: the stages that run here keep dask's local scheduler (:func:`.distributed.local_dask`)."""
    if client is None:
        from contextlib import nullcontext

        return nullcontext()
    from .distributed import local_dask

    return local_dask()


def _describe(client, out: Path) -> str:
    from .distributed import check_shared_folder, describe_client

    check_shared_folder(client, out)
    return describe_client(client)


def _fp(path):
    from .fingerprint import fingerprint

    return fingerprint(path)


def _reconstruct_series(exp, inp, out, say, client):
    """``reconstruct.as_series``: the reconstruct stage run before the others (its key from the projections'
    fingerprints and its options), then the inputs resolved again on the volumes it wrote.  The stages after it
    key on those volumes' content fingerprints, so a reconstruction that changes reruns them, one that does not
    (cached) leaves them cached.  Returns ``((StageRun, keys), inputs)``."""
    s = stage_by_name("reconstruct")
    fps = {str(p): fingerprint(p) for p in s.input_files(inp, None).values()}
    keys = stage_keys(exp, inp, fps, only=("reconstruct",))["reconstruct"]
    run = _run_stage(s, _run_context(exp, inp, out, client), keys, out, say, client)
    return (run, keys), resolve_inputs(exp, out=out)


def run_experiment(exp, out, *, overwrite: bool = False, source=None, progress=None, client=None) -> RunResult:
    """Run every enabled stage of ``exp`` into the run folder ``out``, skipping what is done.

    Parameters
    ----------
    exp : Experiment
        A validated experiment (:func:`~tomo4d.pipeline.load_experiment`).
    out : path-like
        Run folder: new, empty, or an earlier run (resumed; see :mod:`tomo4d.pipeline.runner`).
    overwrite : bool
        Replace an existing folder that tomo4d wrote but that is not a run.
    source : path-like, optional
        The experiment file (fingerprinted into provenance.json).
    progress : callable(str), optional
        Called with every log line (stage started, step cached or computed, ...); its ``event`` method,
        when it has one, with structured events (:mod:`tomo4d.pipeline.progress`).
    client : distributed.Client, optional
        A Dask distributed client (:func:`tomo4d.pipeline.distributed.cluster_client` makes one): the steps of
        the per-step stages that are not chained run as tasks on its cluster, each task writing its step's
        outputs and done-marker itself (:mod:`tomo4d.pipeline.distributed`); the other stages run here, in order.
        None (default): everything runs in this process.

    Returns
    -------
    RunResult
        Per stage: computed, cached or partly cached, the steps of each, wall time.
    """
    from .run_report import render_report

    t0 = time.perf_counter()
    inp = resolve_inputs(exp, out=out)
    outside = [f for f in inp.files() if not (inp.series_reconstructed and f in inp.series)]
    out = claim_run_folder(out, overwrite=overwrite, inputs=[*outside, *([source] if source else [])])
    say = _RunLog(out / "log.txt", progress)
    threads = current_threads() or exp.threads  # tomo4d --threads / tomo4d.threads(n) over the file's threads
    with _locked(out), _local_dask(client), compute_threads(threads) as n_threads:
        first = None
        if inp.series_reconstructed:  # the series are reconstructed first; the stages after read them as files
            first, inp = _reconstruct_series(exp, inp, out, say, client)
        say(f"run of {exp.name!r}: {inp.n_steps} steps, inputs fingerprinted, {n_threads} CPU thread(s)")
        fps = _fingerprints(inp)
        keys = stage_keys(exp, inp, fps)
        if first is not None:
            keys["reconstruct"] = first[1]
        stages = {s.name: s for s in _enabled(exp, inp)}
        say.event("run", stages=list(stages))
        ctx = _run_context(exp, inp, out, client)
        for name in (s.name for s in STAGES if s.name not in stages):
            if _marker(out, name).exists():
                say(f"stage {name}: off in this experiment file (results of an earlier run kept on disk, "
                    "left out of the report and provenance)")
        executor = "this process" if client is None else _describe(client, out)
        if client is not None:
            say(f"cluster: {executor}")
        runs = tuple(first[0] if first is not None and s.name == "reconstruct" else
                     _run_stage(s, ctx, keys[s.name], out, say, client) for s in stages.values())
        _provenance(exp, inp, fps, keys, runs, out, source, executor)
        report = render_report(out)
        say(f"report {report.name} written; run finished in {time.perf_counter() - t0:.1f} s")
    return RunResult(out=out, stages=runs, report=report, wall_s=time.perf_counter() - t0)
