"""The demo's experiment file (``tomo4d.pipeline.demo.demo_experiment_text``): what it labels for the segmentation."""

from __future__ import annotations

import json

import pytest
import yaml


@pytest.mark.parametrize("soc, labelled", [([0.0, 0.85, 0.5], 1), ([0.0, 0.4, 0.85], 2), ([0.0, 0.0, 0.0], 2)])
def test_the_demo_labels_its_most_lithiated_step(phantom_dir, soc, labelled):
    """Besides T0 the demo labels the step of the highest state of charge (the last one when nothing lithiates): a
    classifier that has not seen the darkest lithiated anode calls its top rows separator (session 23)."""
    from tomo4d.pipeline.demo import demo_experiment_text

    doc = json.loads((phantom_dir / "experiment.json").read_text())
    doc["truth"]["state_of_charge"] = soc
    text = demo_experiment_text(doc, ["series/T0.tif", "series/T1.tif", "series/T2.tif"], [0.0, 0.0, 0.0])
    seg = yaml.safe_load(text)["segment"]
    assert seg["label_steps"] == [0, labelled]
    assert seg["labels"] == ["data/truth/labels_lq_T0.tif", f"data/truth/labels_lq_T{labelled}.tif"]


def test_the_demo_runs_the_converged_global_route(phantom_dir):
    """The demo's DVC is solved to convergence (Gauss-Newton, cubic sampling, the Laplacian 0.2 and the grey fields
    held near-flat across the tied interfaces: session 26), not an L-BFGS iterate stopped at its cap, whose split
    followed its start and rounding: the defaults of a global section with an axial start."""
    from tomo4d.pipeline import parse_experiment
    from tomo4d.pipeline.demo import demo_experiment_text

    doc = json.loads((phantom_dir / "experiment.json").read_text())
    series = ["series/T0.tif", "series/T1.tif", "series/T2.tif"]
    exp = parse_experiment(yaml.safe_load(demo_experiment_text(doc, series, [0.0, 0.0, 0.0])))
    dvc = exp.dvc
    assert dvc.method == "global" and dvc.interfaces and dvc.incremental
    opts = dvc.global_dvc_options()
    assert (opts.solver, opts.interpolation, opts.regularisation, opts.interface_grey_stiffness, opts.levels) == (
        "auto", "cubic", 0.2, 10.0, 1)
    from tomo4d.dvc.global_dvc import auto_solver

    assert auto_solver(opts, (24, 24, 24)) == "gauss-newton"  # the demo's grid, on the CPU
