"""A small phantom experiment (32^3, 3 steps) and its experiment file, shared by the runner tests."""

from __future__ import annotations

import pytest

EXPERIMENT = """\
name: phantom
inputs:
  series: series_hq/T*.tif
  time_s: [0, 3600, 7200]
  state_of_charge: [0.0, 0.5, 0.85]
  labels: truth/labels_hq_T*.tif
quantify: {{}}
dvc:
  node_spacing: 4
  half_window: 6
  smooth_sigma_px: 1.0
  tolerance_px: 0.01
  max_iterations: {iterations}
"""


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory):
    from tomo4d.phantom import make_experiment

    d = tmp_path_factory.mktemp("pipeline") / "ph"
    make_experiment(shape=(32, 32, 32), n_steps=3, seed=0).save(d, fields="none")
    return d


@pytest.fixture
def experiment_file(phantom_dir):
    """``experiment_file(iterations=30, name="exp.yaml")``: an experiment file beside the phantom's scans."""

    def make(iterations: int = 30, name: str = "exp.yaml"):
        p = phantom_dir / name
        p.write_text(EXPERIMENT.format(iterations=iterations))
        return p

    return make


#: every stage on the phantom, with its truth (segment trained on four fully labelled xz planes of T0)
FULL_EXPERIMENT = """\
name: phantom-all
inputs:
  series: series_hq/T*.tif
  time_s: [0, 3600, 7200]
  state_of_charge: [0.0, 0.5, 0.85]
  repeat: repeat_hq.tif
quantify: {{}}
dvc:
  node_spacing: 4
  half_window: 6
  smooth_sigma_px: 1.0
  tolerance_px: 0.01
  max_iterations: {iterations}
segment:
  labels: truth/labels_hq_T0.tif
  slices: [4, 12, 20, 28]
  slice_axis: 1
  n_trees: {trees}
particles: {{}}
residual: {{}}
truth:
  labels: truth/labels_hq_T*.tif
  particles: truth/particles_hq_T*.tif
"""


@pytest.fixture
def full_experiment_file(phantom_dir):
    """``full_experiment_file(iterations=30, trees=8, name=...)``: every stage, with truth."""

    def make(iterations: int = 30, trees: int = 8, name: str = "full.yaml", extra: str = ""):
        p = phantom_dir / name
        p.write_text(FULL_EXPERIMENT.format(iterations=iterations, trees=trees) + extra)
        return p

    return make


#: the enhance stages on the phantom's LQ series and pair (tiny InDI preset, a few training steps)
ENHANCE = """\
name: phantom-enhance
inputs:
  series: series/T*.tif
  time_s: [0, 3600, 7200]
  training_pair: {{lq: lq.tif, hq: {hq}}}
enhance:
  preset: tiny
  train: {{steps: {steps}, checkpoint_every: 2, crop: 16, val_every: 2}}
  steps: 2
  tile: 64
  overlap: 8
  truth_hq: series_hq/T*.tif
"""


@pytest.fixture(scope="session")
def enhance_run(phantom_dir, tmp_path_factory):
    """``(out, result, experiment file)``: the enhance stages run once (tests copy ``out`` to build on it)."""
    from tomo4d.pipeline import load_experiment, run_experiment

    exp = phantom_dir / "enhance.yaml"
    exp.write_text(ENHANCE.format(steps=6, hq="hq.tif"))
    out = tmp_path_factory.mktemp("enhance") / "run"
    return out, run_experiment(load_experiment(exp), out), exp
