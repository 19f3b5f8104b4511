"""Shared CLI helpers: ``emit`` (JSON or text output) and ``option_group``."""

from __future__ import annotations

import json

import click
import numpy as np
from click.testing import CliRunner

from tomo4d.cli._util import emit, json_option, option_group, overwrite_option, voxel_size_option


def test_emit_json_calls_a_function_and_ignores_the_text(capsys):
    def text():
        raise AssertionError("text built with --json")
        yield  # pragma: no cover

    emit(lambda: {"a": np.float32(1.5), "b": (1, 2)}, as_json=True, text=text())
    assert json.loads(capsys.readouterr().out) == {"a": 1.5, "b": [1, 2]}


def test_emit_text_as_string_list_or_generator(capsys):
    def info():
        raise AssertionError("JSON built without --json")

    emit(info, as_json=False, text="one line")
    emit(info, as_json=False, text=["first", "second"])
    emit(info, as_json=False, text=(f"line {i}" for i in range(2)))
    assert capsys.readouterr().out == "one line\nfirst\nsecond\nline 0\nline 1\n"


def test_option_group_keeps_the_stacking_order():
    @click.command()
    @option_group(voxel_size_option, overwrite_option, json_option)
    def cmd(voxel_size, overwrite, as_json):
        click.echo(f"{voxel_size} {overwrite} {as_json}")

    assert [p.name for p in cmd.params] == ["voxel_size", "overwrite", "as_json"]
    res = CliRunner().invoke(cmd, ["--voxel-size", "50", "--json"])
    assert res.exit_code == 0 and res.output == "50 False True\n"
