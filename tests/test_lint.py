"""The code passes ``ruff check`` with the rules configured in pyproject.toml ([tool.ruff])."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> str | None:
    try:
        from ruff.__main__ import find_ruff_bin
    except ImportError:
        return shutil.which("ruff")
    try:
        return str(find_ruff_bin())
    except FileNotFoundError:
        return shutil.which("ruff")


def test_ruff_check_passes():
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    res = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", "src", "tests"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"ruff check found problems:\n{res.stdout}{res.stderr}"
