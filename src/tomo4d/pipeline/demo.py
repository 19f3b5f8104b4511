"""The built-in demo: every stage of tomo4d on a small example, with an HTML report.

Each stage is a function ``stage(ctx) -> str`` (a one-line summary) that may
write files under ``ctx.out_dir`` and add a section to ``ctx.report``.  Stages
share what they produce through ``ctx.store``.  New stages join
:data:`DEMO_STAGES`; the whole demo must stay under 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..report import Report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageResult:
    """One stage of the demo: its name, wall time in s and a one-line summary."""

    name: str
    seconds: float
    summary: str


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced: output folder, report file and per-stage results."""

    out_dir: Path
    report_path: Path
    stages: tuple[StageResult, ...]

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


@dataclass
class DemoContext:
    """State shared by the demo stages."""

    out_dir: Path
    report: Report
    seed: int = 0
    store: dict[str, Any] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        p = self.out_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


#: (name, "module:function") of every demo stage, in order; modules are relative to
#: ``tomo4d.pipeline`` and imported only when their stage runs.
DEMO_STAGES: list[tuple[str, str]] = [
    ("phantom", "demo_phantom:stage_phantom"),
    ("io", "demo_io:stage_io"),
    ("quality", "demo_quality:stage_quality"),
    ("neutron", "demo_neutron:stage_neutron"),
    ("enhance", "demo_enhance:stage_enhance"),
    ("dvc", "demo_dvc:stage_dvc"),
    ("segment", "demo_segment:stage_segment"),
    ("quantify", "demo_quantify:stage_quantify"),
]


def _load(target: str) -> Callable[[DemoContext], str]:
    import importlib

    module, func = target.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), func)


def run_demo(out_dir, *, overwrite: bool = False, seed: int = 0, stages: list[str] | None = None,
             progress: Callable[[str, int, int], None] | None = None) -> DemoResult:
    """Run the demo stages into ``out_dir`` and write ``out_dir/report.html``.

    Parameters
    ----------
    out_dir : path-like
        Output folder; must not exist unless ``overwrite`` is set.
    overwrite : bool
        Replace an existing output folder.
    seed : int
        Seed of every random choice (the demo is reproducible).
    stages : list of str, optional
        Run only these stages (by name); default all.
    progress : callable(stage_name, index, n_stages), optional
        Called before each stage.
    """
    from .._validate import check_int
    from ..errors import InputError
    from ..io import prepare_folder

    check_int("seed", seed, minimum=0)
    known = [name for name, _ in DEMO_STAGES]
    if stages is not None:
        unknown = sorted(set(stages) - set(known))
        if unknown:
            raise InputError(f"unknown demo stage(s) {', '.join(map(repr, unknown))}; available: {', '.join(known)}")
    # everything is validated: only now may an earlier demo folder be replaced (never a user's folder)
    out = prepare_folder(out_dir, overwrite=overwrite, kind="demo")
    selected = [(n, f) for n, f in DEMO_STAGES if stages is None or n in stages]
    report = Report("tomo4d demo report")
    ctx = DemoContext(out_dir=out, report=report, seed=seed)
    results = []
    for i, (name, fn) in enumerate(selected):
        if progress is not None:
            progress(name, i, len(selected))
        t0 = time.perf_counter()
        summary = _load(fn)(ctx)
        dt = time.perf_counter() - t0
        log.info("demo stage %s: %.1f s: %s", name, dt, summary)
        results.append(StageResult(name, dt, summary))
    report.section("Run summary")
    report.table(["stage", "time (s)", "summary"], [(r.name, r.seconds, r.summary) for r in results])
    # the summary goes first: move it to the top of the report
    report.parts = report.parts[-2:] + report.parts[:-2]
    path = report.save(out / "report.html")
    return DemoResult(out, path, tuple(results))
