"""Every command declares its paths, and no output can ever resolve to an input.

The base invocations below name each command's inputs ``{in:NAME}`` and outputs
``{out:NAME}`` by parameter name.  For every command, every declared output and
every input, the output is pointed at the input (the same path, a symlink to it, a
hard link to it, a folder containing it): the command must exit 2 before any work
and leave the input byte for byte as it was, even with ``--overwrite``.  A new
command, or a new path parameter, fails here until it is declared and listed.
"""

from __future__ import annotations

import os
import re

import click
import pytest

from tomo4d.cli import cli, main
from tomo4d.cli._paths import leaf_commands

#: command words -> arguments, with {in:NAME} / {out:NAME} placeholders for its path parameters.
BASE = {
    ("info",): ["{in:path}"],
    ("convert",): ["{in:src}", "{out:dst}"],
    ("demo",): ["{out:out_dir}", "--quiet"],
    ("phantom",): ["{out:out_dir}"],
    ("quality",): ["{in:reference}", "{in:images}", "--mask", "{in:mask_path}", "--profiles",
                   "{out:profiles_path}", "--figure", "{out:figure_path}"],
    ("register",): ["{in:fixed}", "{in:moving}", "-o", "{out:output}", "--mask", "{in:mask}", "--multimodal",
                    "--moving-labels", "{in:moving_labels}"],
    ("dvc",): ["{in:ref}", "{in:deformed}", "-o", "{out:output}", "--mask", "{in:mask}", "--phi", "{in:phi_json}",
               "--vtk", "{out:vtk}"],
    ("strain",): ["{in:field_path}", "-o", "{out:output}"],
    ("residual",): ["{in:ref}", "{in:deformed}", "{in:field_path}", "-o", "{out:output}", "--repeat",
                    "{in:repeat_scans}", "{in:repeat_scans}"],
    ("enhance", "train"): ["--lq", "{in:lq}", "--hq", "{in:hq}", "-o", "{out:out}", "--config", "{in:config}"],
    ("enhance", "apply"): ["{in:model}", "{in:src}", "{out:dst}", "--samples", "2"],
    ("enhance", "sweep"): ["{in:model}", "--lq", "{in:lq}", "--hq", "{in:hq}"],
    ("enhance", "evaluate"): ["--lq", "{in:lq}", "--hq", "{in:hq}", "--model", "m={in:models}", "-o", "{out:out}"],
    ("segment", "train"): ["--image", "{in:image_path}", "--labels", "{in:labels_path}", "-o", "{out:output}"],
    ("segment", "apply"): ["{in:model_path}", "{in:src}", "{out:dst}"],
    ("segment", "particles"): ["{in:labels_path}", "{out:dst}"],
    ("segment", "evaluate"): ["{in:pred_path}", "{in:truth_path}"],
    ("quantify", "thickness"): ["{in:labels}", "-o", "{out:output}"],
    ("quantify", "phases"): ["{in:labels}", "-o", "{out:output}"],
    ("quantify", "particles"): ["{in:labels}", "-o", "{out:output}"],
    ("quantify", "track"): ["{in:labels}", "--field", "{in:fields}", "-o", "{out:output}"],
    ("quantify", "regions"): ["--field", "{in:fields}", "--labels", "{in:labels_path}", "-o", "{out:output}"],
    ("quantify", "modes"): ["{in:particles_t0}", "{in:residuals}", "-o", "{out:output}"],
    ("neutron", "plan"): ["--target-um", "5"],
    ("reconstruct",): ["{in:projections}", "{out:output}", "--flats", "{in:flats}", "--darks", "{in:darks}",
                       "--angles", "{in:angles}"],
    ("run",): ["{in:experiment}", "-o", "{out:out_dir}"],
    ("report",): ["{out:out_dir}"],
    ("init",): ["{in:scans}", "-o", "{out:output}"],
    ("neutron", "normalize"): ["{in:sample}", "{in:open_beam}", "{out:output}", "--dark", "{in:dark}"],
    ("neutron", "bragg"): ["{in:spectrum}", "--open-beam", "{in:open_beam}", "--flight-path", "9", "--bin-width", "10",
                           "--figure", "{out:figure_path}"],
    ("neutron", "isotopes"): ["{in:spectrum}", "--open-beam", "{in:open_beam}", "--flight-path", "9", "--bin-width",
                              "10", "--thickness-cm", "0.1", "--composition", "Li", "--density", "0.534"],
    ("neutron", "maps"): ["{in:source}", "{out:output}", "--open-beam", "{in:open_beam}", "--flight-path", "10",
                          "--bin-width", "500", "--thickness-cm", "0.2", "--li6", "0.0759"],
    ("neutron", "bands"): ["{in:stacks}", "-o", "{out:output}", "--open-beam", "{in:open_beam}", "--dark", "{in:dark}",
                           "--flight-path", "10", "--bin-width", "500", "--pixel-size", "20000"],
    ("neutron", "lithium"): ["{in:mu_volume}", "{out:output}", "--labels", "{in:labels_path}", "--sigma-output",
                             "{out:sigma_output}"],
}
#: output suffix per command where the command insists on one (the check must come before it anyway).
SUFFIX = {("quantify",): ".csv", ("strain",): ".h5", ("dvc",): ".h5", ("register",): ".json",
          ("segment", "train"): ".npz", ("neutron", "bragg"): ".png", ("quality",): ".csv",
          ("neutron", "maps"): ".npz", ("neutron", "bands"): ".npz"}

COMMANDS = leaf_commands(cli)


def _names(args, kind):
    """Parameter names of the {in:NAME} or {out:NAME} placeholders in ``args``."""
    return sorted({m for a in args for m in re.findall(r"\{" + kind + r":(\w+)\}", a)})


def test_every_command_is_declared_and_listed():
    assert set(COMMANDS) == set(BASE), "add the new command to BASE (and to the bad-input table)"
    for words, cmd in COMMANDS.items():
        decl = getattr(cmd, "tomo4d_paths", None)
        assert decl is not None, f"{' '.join(words)} has no @declare_paths"
        declared = {s for s in decl.inputs if isinstance(s, str)} | set(decl.outputs)
        path_params = {p.name for p in cmd.params if isinstance(p.type, click.Path)}
        assert path_params <= declared | {"models"}, f"{words}: undeclared path parameters {path_params - declared}"
        assert set(_names(BASE[words], "out")) == set(decl.outputs), words
        inputs = set(_names(BASE[words], "in"))
        assert inputs == {s if isinstance(s, str) else getattr(s, "param", "models") for s in decl.inputs}, words


def _suffix(words):
    return SUFFIX.get(words, SUFFIX.get(words[:1], ".tif"))


def _materialise(tmp_path, words, args):
    """Args with placeholders replaced: inputs are small files holding known bytes."""
    files = {}
    out = []
    for a in args:
        if "{in:" in a:
            head, name = a.split("{in:")
            name = name.rstrip("}")
            f = files.setdefault(name, tmp_path / f"in_{name}{_suffix(words)}")
            f.write_bytes(b"input " + name.encode())
            out.append(head + str(f))
        elif "{out:" in a:
            name = a.split("{out:")[1].rstrip("}")
            out.append(str(tmp_path / f"out_{name}{_suffix(words)}"))
        else:
            out.append(a)
    return out, files


CASES = [(w, o, i, how) for w, args in BASE.items() for o in _names(args, "out") for i in _names(args, "in")
         for how in ("same", "symlink", "hardlink", "parent")]


@pytest.mark.parametrize("words, out_name, in_name, how", CASES, ids=lambda v: str(v) if isinstance(v, str) else "-".join(v))
def test_output_never_resolves_to_an_input(tmp_path, capsys, words, out_name, in_name, how):
    args, files = _materialise(tmp_path, words, BASE[words])
    target = files[in_name]
    if how == "same":
        alias = target
    elif how == "symlink":
        alias = tmp_path / f"alias{target.suffix}"
        alias.symlink_to(target)
    elif how == "hardlink":
        alias = tmp_path / f"alias{target.suffix}"
        os.link(target, alias)
    else:
        alias = tmp_path  # a folder holding the input
    placeholder = str(tmp_path / f"out_{out_name}{_suffix(words)}")
    args = [str(alias) if a == placeholder else a for a in args]
    before = {p: p.read_bytes() for p in files.values()}
    listing = sorted(p.name for p in tmp_path.iterdir())
    assert main([*words, *args, "--overwrite"] if "--overwrite" in _options(words) else [*words, *args]) == 2
    err = capsys.readouterr().err
    assert "would overwrite the input" in err and len(err.strip().splitlines()) == 1, err
    assert {p: p.read_bytes() for p in files.values()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # nothing written, nothing removed


def _options(words):
    return {o for p in COMMANDS[words].params for o in getattr(p, "opts", ())}


OUTPUT_PAIRS = [(w, a, b) for w, args in BASE.items() for a in _names(args, "out") for b in _names(args, "out")
                if a < b]


@pytest.mark.parametrize("words, first, second", OUTPUT_PAIRS, ids=lambda v: str(v) if isinstance(v, str) else "-".join(v))
def test_two_outputs_of_one_command_must_differ(tmp_path, capsys, words, first, second):
    args, _ = _materialise(tmp_path, words, BASE[words])
    a, b = (str(tmp_path / f"out_{n}{_suffix(words)}") for n in (first, second))
    args = [a if x == b else x for x in args]
    assert main([*words, *args]) == 2
    assert "are the same output" in capsys.readouterr().err
    assert not os.path.exists(a)


def test_sample_maps_of_enhance_apply_are_outputs_too(tmp_path, capsys):
    """``--samples K`` writes DST_spread beside DST: that path is an output as well."""
    model, src = tmp_path / "model", tmp_path / "scan_spread.tif"
    model.mkdir()
    src.write_bytes(b"scan")
    assert main(["enhance", "apply", str(model), str(src), str(tmp_path / "scan.tif"), "--samples", "3",
                 "--overwrite"]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert src.read_bytes() == b"scan"


EXCLUSIVE = [(w, o) for w, args in BASE.items() for o in _names(args, "out")
             if o not in COMMANDS[w].tomo4d_paths.resumable]


@pytest.mark.parametrize("words, out_name", EXCLUSIVE, ids=lambda v: str(v) if isinstance(v, str) else "-".join(v))
def test_existing_output_needs_overwrite_before_any_work(tmp_path, capsys, words, out_name):
    args, _ = _materialise(tmp_path, words, BASE[words])
    existing = tmp_path / f"out_{out_name}{_suffix(words)}"
    existing.write_bytes(b"earlier result")
    assert main([*words, *args]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1, err
    assert existing.read_bytes() == b"earlier result"


@pytest.mark.parametrize("words", [w for w in BASE if _names(BASE[w], "in")], ids="-".join)
def test_missing_inputs_are_one_line_naming_the_path(tmp_path, capsys, words):
    args, files = _materialise(tmp_path, words, BASE[words])
    for f in files.values():
        f.unlink()
    assert main([*words, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tomo4d: error:"), err
    assert any(str(f) in err[0] for f in files.values()) and "does not exist" in err[0], err
