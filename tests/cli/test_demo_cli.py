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


def test_bad_stage_is_refused_before_anything_is_deleted(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", str(out), "--stage", "io"]) == 0
    before = sorted(p.name for p in out.rglob("*"))
    assert main(["demo", str(out), "--overwrite", "--stage", "bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == before


def test_phantom_and_demo_follow_one_folder_rule(tmp_path, capsys):
    """Both replace, with --overwrite, only a folder tomo4d wrote; never a folder of user files."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    for args in (["phantom", str(user), "--shape", "24", "--steps", "2", "--fields", "none", "--overwrite"],
                 ["demo", str(user), "--stage", "io", "--overwrite"]):
        assert main(args) == 2
        assert "did not write" in capsys.readouterr().err
        assert (user / "notes.txt").read_text() == "mine"
    ph = tmp_path / "ph"
    args = ["phantom", str(ph), "--shape", "24", "--steps", "2", "--fields", "none"]
    assert main(args) == 0
    assert main(args) == 2
    assert main([*args, "--overwrite"]) == 0


def test_demo_dvc_and_quantify_stages_produce_finite_strain(tmp_path, capsys):
    """The DVC and quantify stages run through the CLI and save finite strain tables (a grid check that
    refused the demo's own fields once broke them with no test noticing)."""
    import csv
    import math

    out = tmp_path / "demo"
    assert main(["demo", str(out), "--stage", "phantom", "--stage", "dvc", "--stage", "quantify"]) == 0, \
        capsys.readouterr().err
    assert (out / "dvc" / "field_T0_T3.h5").is_file()
    with open(out / "quantify" / "regional_strain.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["component"] == "hencky_zz"]
    last = {r["region"]: float(r["strain_mean"]) for r in rows if r["step"] == rows[-1]["step"]}
    assert set(last) == {"collector side", "separator side"} and all(math.isfinite(v) for v in last.values())
    assert last["separator side"] > last["collector side"] > 0.1  # the anode swells, more on the separator side
    assert "Local DVC" in (out / "report.html").read_text()
