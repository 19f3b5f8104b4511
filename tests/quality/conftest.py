"""Fixtures of tests/quality; makes the synthetic-image helpers (quality_synth.py) importable."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_synth import REAL  # noqa: E402


@pytest.fixture
def real_dir():
    if not REAL.is_dir():
        pytest.skip(f"real data not found at {REAL}")
    return REAL
