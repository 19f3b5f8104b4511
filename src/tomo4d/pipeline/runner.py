"""The runner: plan, cache, execute and resume the stages of an experiment in a run folder.

A run folder ``OUT`` holds ``tables/`` (Parquet + CSV), ``fields/`` (HDF5), ``figures/`` (PNG),
``report.html``, ``provenance.json``, ``log.txt`` and ``.tomo4d/`` (done-markers, lock, the
experiment as run).  Each stage's cache key (:func:`tomo4d.pipeline.fingerprint.cache_key`)
covers the content fingerprints of its input files, its resolved options, the keys of the stages
it needs and the tomo4d version.  A stage (or a step of a per-step stage) whose done-marker
holds its key, and whose outputs all exist, is skipped; any other is recomputed after its old
marker and outputs are removed, so old and new results never mix.  Markers are written only
after the outputs they list, atomically: a run killed at any moment (SIGKILL included) and run
again recomputes exactly what was not finished.  Stages and steps run one after the other in
this process; with a Dask distributed client (``run_experiment(client=...)``, ``tomo4d run --workers N`` or
``--scheduler ADDRESS``) the steps of the per-step stages that are not chained run as tasks on its cluster,
each writing its outputs and marker the same way (:mod:`tomo4d.pipeline.distributed`).

Each marker also holds the basis of its key (input fingerprints, options as dotted experiment-file
keys, the keys of the needed stages, the previous step's key, the tomo4d version), so a
recomputation says why: ``dvc: recomputed because dvc.node_spacing changed 8 -> 6``
(:func:`why_recomputed`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .._validate import show
from ..errors import OverwriteError
from .fingerprint import cache_key, fingerprint
from .inputs import ResolvedInputs, resolve_inputs
from .stage import StageContext
from .stages import STAGES

__all__ = [
    "STATE_DIR",
    "Plan",
    "RunResult",
    "StageRun",
    "StageStatus",
    "claim_run_folder",
    "is_run_folder",
    "plan_experiment",
    "why_recomputed",
]

log = logging.getLogger(__name__)

#: hidden state of a run folder: done-markers, lock, the experiment as run
STATE_DIR = ".tomo4d"
_KIND = "tomo4d-run"


@dataclass(frozen=True)
class StageStatus:
    """One stage in a :class:`Plan`: whether it runs, and what of it is already done."""

    name: str
    description: str
    outputs: str
    enabled: bool
    done: bool
    steps_done: tuple[str, ...] = ()
    steps_todo: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """What :func:`run_experiment` would do: the checked inputs and every stage's status."""

    inputs: ResolvedInputs
    stages: tuple[StageStatus, ...]
    out: Path | None


@dataclass(frozen=True)
class StageRun:
    """What a run did with one stage: ``status`` is ``"computed"``, ``"cached"`` or ``"partly cached"``.

    ``reasons`` says why it was computed (the changed options and inputs, per step where steps
    differ); ``peak_rss_mib`` is the process's peak resident memory (``ru_maxrss``, process-wide high-water
    mark since the process started) when the stage finished, MiB (None where not measurable).
    """

    name: str
    status: str
    computed_steps: tuple[str, ...]
    cached_steps: tuple[str, ...]
    wall_s: float
    reasons: tuple[str, ...] = ()
    peak_rss_mib: float | None = None


@dataclass(frozen=True)
class RunResult:
    """The outcome of :func:`run_experiment`."""

    out: Path
    stages: tuple[StageRun, ...]
    report: Path
    wall_s: float


def is_run_folder(path) -> bool:
    """True if ``path`` is a run folder written by :func:`run_experiment` (resumable)."""
    from ..io import OWNER_MARKER

    p = Path(path)
    try:
        info = json.loads((p / OWNER_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return info.get("kind") == _KIND and (p / STATE_DIR).is_dir()


def claim_run_folder(path, *, overwrite: bool = False, inputs=()) -> Path:
    """Claim ``path`` for a run: a new or empty folder, or an earlier run (resumed).

    Any other existing folder is refused; with ``overwrite`` one that tomo4d wrote (for
    something else) is replaced, a folder tomo4d did not write never is.
    """
    from ..io import check_not_input, prepare_folder, replaceable, write_marker

    p = Path(path)
    check_not_input(p, inputs, name="run folder")
    if is_run_folder(p):
        return p
    if p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
        write_marker(p, kind=_KIND)
    elif p.exists() or p.is_symlink():
        if not overwrite or not replaceable(p):
            hint = ("pass --overwrite to replace it (tomo4d wrote it)" if replaceable(p) else
                    "tomo4d did not write it, so it is never replaced: choose a new folder, or move this one")
            raise OverwriteError(f"run folder {str(p)!r} exists and is not a tomo4d run; {hint}")
        prepare_folder(p, overwrite=True, kind=_KIND, inputs=inputs)
    else:
        prepare_folder(p, kind=_KIND, inputs=inputs)
    (p / STATE_DIR / "done").mkdir(parents=True, exist_ok=True)
    return p


# -- keys and markers -------------------------------------------------------------------------------

def _enabled(exp, inp):
    return [s for s in STAGES if s.enabled(exp, inp)]


def _basis(files: dict, opts: dict, needs: dict, extra: dict) -> dict:
    """What a key is made of, JSON round-tripped (as a marker stores it)."""
    from .. import __version__

    return json.loads(json.dumps({"inputs": files, "options": opts, "needs": needs, **extra, "tomo4d": __version__},
                                 default=str))


def stage_keys(exp, inp: ResolvedInputs, fps: dict, *, only=None) -> dict:
    """``{stage: {"key", "basis", "steps": {step index: key}, "step_basis": {step index: basis}}}`` of every
    enabled stage (or of the stages named in ``only``)."""
    keys: dict = {}
    extra = {"voxel_size_nm": inp.voxel_size_nm}
    for s in _enabled(exp, inp):
        if only is not None and s.name not in only:
            continue
        needs = {n: keys[n]["key"] for n in s.needs if n in keys and (s.reads is None or s.reads(exp, n))}
        opts = s.options(exp)
        if not s.per_step:
            files = {k: fps[str(p)] for k, p in s.input_files(inp, None).items()}
            keys[s.name] = {"key": cache_key(stage=s.name, inputs=files, options=opts, needs=needs, extra=extra),
                            "basis": _basis(files, opts, needs, extra), "steps": {}, "step_basis": {}}
            continue
        steps, basis, prev = {}, {}, None
        for i in s.steps(_light_ctx(exp, inp)):
            files = {k: fps[str(p)] for k, p in s.input_files(inp, i).items()}
            ex = {**extra, "previous": prev if s.chained else None}
            prev = steps[i] = cache_key(stage=f"{s.name}/{inp.names[i]}", inputs=files, options=opts, needs=needs,
                                        extra=ex)
            basis[i] = _basis(files, opts, needs, ex)
        keys[s.name] = {"key": cache_key(stage=s.name, inputs={}, options=opts, needs=needs,
                                         extra=list(steps.values())),
                        "basis": _basis({}, opts, needs, {"steps": {inp.names[i]: k for i, k in steps.items()}}),
                        "steps": steps, "step_basis": basis}
    return keys


def _changed(key: str, a, b) -> str:
    return f"{key} changed {show(a)} -> {show(b)}"


def why_recomputed(marker: dict | None, basis: dict, out: Path | None = None) -> tuple[str, ...]:
    """Why a stage (or step) with done-marker ``marker`` is computed again under ``basis``.

    One reason per difference: an option (``dvc.node_spacing changed 8 -> 6``), an input file's
    content, a needed stage's result, the previous step, the voxel size, the tomo4d version; or
    "not computed before" / "outputs missing".
    """
    if marker is None:
        return ("not computed before",)
    old = marker.get("basis")
    if old is None:
        return ("cache key changed (the earlier marker does not record why)",)
    out_reasons = []
    for k in sorted(set(old.get("options", {})) | set(basis["options"])):
        a, b = old.get("options", {}).get(k, "(unset)"), basis["options"].get(k, "(unset)")
        if a != b:
            out_reasons.append(_changed(k, a, b))
    oi, ni = old.get("inputs", {}), basis["inputs"]
    for k in sorted(set(oi) | set(ni)):
        if k not in oi or k not in ni:
            out_reasons.append(f"input {k} {'added' if k in ni else 'removed'}")
        elif oi[k] != ni[k]:
            out_reasons.append(f"input {k} changed (content fingerprint)")
    on, nn = old.get("needs", {}), basis["needs"]
    for k in sorted(set(on) | set(nn)):
        if on.get(k) != nn.get(k):
            out_reasons.append(f"needed stage {k} was recomputed" if k in on and k in nn else
                               f"needed stage {k} {'added' if k in nn else 'removed'}")
    for k, label in (("previous", "the previous step changed"), ("voxel_size_nm", None), ("tomo4d", None)):
        if old.get(k) != basis.get(k):
            out_reasons.append(label or _changed(k if k != "tomo4d" else "tomo4d version", old.get(k), basis.get(k)))
    os_, ns = old.get("steps") or {}, basis.get("steps") or {}
    diff = [n for n in ns if os_.get(n) != ns[n]] + [n for n in os_ if n not in ns]
    if diff and not out_reasons:
        out_reasons.append(f"steps {', '.join(diff)} changed")
    if not out_reasons and out is not None:
        missing = [o for o in marker.get("outputs", ()) if not (out / o).exists()]
        if missing:
            out_reasons.append(f"outputs missing: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    return tuple(out_reasons) or ("cache key changed",)


def _light_ctx(exp, inp, out=None, load=None, client=None):
    return StageContext(experiment=exp, inputs=inp, out=out, load=load, client=client)


def _run_context(exp, inp, out: Path, client=None) -> StageContext:
    """The context the stages of a run see: its ``load`` reads the saved outputs of the enabled stages in ``out``
    (built the same way in the client and in a cluster's worker, :mod:`tomo4d.pipeline.distributed`)."""
    stages = {s.name: s for s in _enabled(exp, inp)}
    ctx = None

    def load(name, step=None):
        s = stages[name]
        return s.load(out) if step is None else s.load_step(out, ctx, step)

    ctx = _light_ctx(exp, inp, out, load, client)
    return ctx


def _marker(out: Path, stage: str, step: str | None = None) -> Path:
    d = out / STATE_DIR / "done"
    return d / stage / f"{step}.json" if step is not None else d / f"{stage}.json"


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_done(out: Path, path: Path, key: str) -> bool:
    m = _read_marker(path)
    return m is not None and m.get("key") == key and all((out / o).exists() for o in m.get("outputs", ()))


def _write_marker(path: Path, key: str, outputs, wall_s: float, *, basis=None, **extra) -> None:
    from ..io import write_json

    write_json({"key": key, "outputs": list(outputs), "wall_s": wall_s, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **extra, "basis": basis}, path, overwrite=True, indent=1, default=str)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


def _invalidate(out: Path, path: Path) -> None:
    """Remove a done-marker first, then the outputs it lists (never a half-valid result on disk)."""
    m = _read_marker(path)
    path.unlink(missing_ok=True)
    for o in (m or {}).get("outputs", ()):
        _remove(out / o)


#: the fingerprint of a reconstructed series volume that the reconstruct stage has not written yet (plans only)
NOT_YET = "not reconstructed yet"


def _fingerprints(inp: ResolvedInputs) -> dict:
    return {str(p): fingerprint(p) if p.exists() or not inp.series_reconstructed else NOT_YET for p in inp.files()}


def plan_experiment(exp, out=None) -> Plan:
    """Check the inputs of ``exp`` and say which stages would run and what is already done in ``out``.

    Reads file headers (and, with ``out``, fingerprints the inputs); computes nothing.
    """
    inp = resolve_inputs(exp, out=out)
    out = None if out is None else Path(out)
    keys = stage_keys(exp, inp, _fingerprints(inp)) if out is not None and is_run_folder(out) else None
    rows = []
    for s in STAGES:
        on = s.enabled(exp, inp)
        k = (keys or {}).get(s.name)
        done = bool(k) and _is_done(out, _marker(out, s.name), k["key"])
        steps = k["steps"] if k else ({i: None for i in s.steps(_light_ctx(exp, inp))} if on and s.per_step else {})
        sd = tuple(inp.names[i] for i, key in steps.items() if key and _is_done(out, _marker(out, s.name, inp.names[i]), key))
        why = why_recomputed(_read_marker(_marker(out, s.name)), k["basis"], out) if k and not done else ()
        rows.append(StageStatus(s.name, s.description, s.outputs, on, done, sd,
                                tuple(inp.names[i] for i in steps if inp.names[i] not in sd), why))
    return Plan(inputs=inp, stages=tuple(rows), out=out)
