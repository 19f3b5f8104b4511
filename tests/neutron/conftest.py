"""Fixtures of tests/neutron; makes the forward models (neutron_synth.py) importable."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
