"""Progress of tomo4d run: plain lines when not on a terminal, a live display on one, nothing with --quiet."""

from __future__ import annotations

import io
import re

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but tab and newline


class _Tty(io.StringIO):
    def isatty(self):
        return True


EVENTS = [("run", {"stages": ["align", "dvc"]}), ("stage", {"name": "align", "steps": ()}),
          ("stage_done", {"name": "align"}), ("stage", {"name": "dvc", "steps": ("T1", "T2")}),
          ("step_start", {"stage": "dvc", "step": "T1"}), ("step", {"stage": "dvc", "step": "T1"}),
          ("step_start", {"stage": "dvc", "step": "T2"})]


def _drive(display):
    for kind, info in EVENTS:
        display.event(kind, **info)
        display(f"log line after {kind}")
    display.close()


def test_run_progress_chooses_by_stream():
    from tomo4d.pipeline.progress import (
        LineProgress,
        PlainProgress,
        RichProgress,
        run_progress,
    )

    with run_progress(io.StringIO()) as p:
        assert isinstance(p, PlainProgress)
    with run_progress(_Tty(), use_rich=False) as p:
        assert isinstance(p, LineProgress)
    with run_progress(_Tty(), use_rich=True) as p:
        assert isinstance(p, RichProgress)
    with run_progress(_Tty(), quiet=True) as p:
        assert p is None


def test_plain_progress_has_no_control_characters():
    from tomo4d.pipeline.progress import run_progress

    stream = io.StringIO()
    with run_progress(stream) as p:
        _drive(p)
    lines = stream.getvalue().splitlines()
    assert lines == [f"log line after {kind}" for kind, _ in EVENTS]
    assert not CONTROL.search(stream.getvalue())


def test_line_progress_redraws_stage_and_step():
    from tomo4d.pipeline.progress import run_progress

    stream = _Tty()
    with run_progress(stream, use_rich=False) as p:
        _drive(p)
    text = stream.getvalue()
    assert "\rstage 2/2 dvc, step T2 (1/2 done)" in text and "log line after step_start\n" in text


def test_rich_progress_runs_and_prints_the_log_lines():
    from tomo4d.pipeline.progress import run_progress

    stream = _Tty()
    with run_progress(stream, use_rich=True) as p:
        _drive(p)
    assert "log line after stage_done" in stream.getvalue()


def test_cli_run_plain_lines_when_captured_and_quiet_silences_them(experiment_file, tmp_path, capsys):
    from tomo4d.cli import main

    exp, out = experiment_file(iterations=5, name="progress.yaml"), tmp_path / "run"
    assert main(["run", str(exp), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "stage dvc: step T1 computed" in err and "stage quantify: done" in err
    assert not CONTROL.search(err)
    assert main(["run", str(exp), "-o", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "stage " not in captured.err and "cached" in captured.out  # the summary stays on stdout
    assert "stage dvc: cached" in (out / "log.txt").read_text()  # the log file is still written
