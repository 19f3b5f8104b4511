"""`tomo4d demo` runs the stages and writes a report."""

from __future__ import annotations

from tomo4d.cli import main


def test_demo_io_stage_writes_report(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", str(out), "--stage", "io"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    html = (out / "report.html").read_text()
    assert "Volume I/O" in html and "MISMATCH" not in cap.out and "all identical" in cap.out
    # refuses to replace without --overwrite, replaces with it
    assert main(["demo", str(out), "--stage", "io"]) == 2
    assert main(["demo", str(out), "--stage", "io", "--overwrite"]) == 0


def test_demo_refuses_to_replace_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("data")
    assert main(["demo", str(tmp_path), "--overwrite", "--stage", "io"]) == 2
    assert (tmp_path / "precious.txt").read_text() == "data"


def test_unknown_stage(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "d"), "--stage", "nonsense"]) == 2
    assert "nonsense" in capsys.readouterr().err
