"""Makes the synthetic-image helpers of tests/quality (quality_synth.py) importable; real data: ``real_file``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
