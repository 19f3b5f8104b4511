"""Demo stage ``neutron``: runs quickly and its report shows the joint histogram, Li map and a Bragg edge."""

import re
import time

from tomo4d.pipeline.demo import DEMO_STAGES, DemoContext
from tomo4d.pipeline.demo_neutron import stage_neutron
from tomo4d.report import Report


def test_stage_neutron_report(tmp_path):
    assert ("neutron", "demo_neutron:stage_neutron") in DEMO_STAGES
    ctx = DemoContext(out_dir=tmp_path, report=Report("t"), seed=0)
    t0 = time.perf_counter()
    summary = stage_neutron(ctx)
    assert time.perf_counter() - t0 < 30
    html = ctx.report.save(tmp_path / "r.html").read_text()
    assert "joint histogram" in html.lower() and "Li concentration" in html and "Bragg-edge fit" in html
    assert html.count("data:image/png;base64") >= 3
    acc = float(re.search(r"joint phases ([\d.]+) %", summary).group(1))
    li = float(re.search(r"Li error max ([\d.]+) %", summary).group(1))
    iso = float(re.search(r"6Li error max ([\d.]+) pp", summary).group(1))
    assert acc >= 95 and li < 5 and iso < 0.5, summary
    assert "li_concentration" in ctx.store and "neutron_phases" in ctx.store


def test_stage_neutron_uses_the_phantom_when_present(tmp_path):
    phantom = __import__("pytest").importorskip("tomo4d.phantom")
    exp = phantom.make_experiment(shape=(64, 64, 64), n_steps=3, seed=0)
    ctx = DemoContext(out_dir=tmp_path, report=Report("t"), seed=0, store={"experiment": exp})
    summary = stage_neutron(ctx)
    assert "phantom joint histogram" in summary
    phantom_li = float(re.search(r"phantom anode Li error max ([\d.]+) %", summary).group(1))
    assert phantom_li < 5, summary
    assert "Li truth (mol/L)" in ctx.report.html()
    assert ctx.report.html().count("data:image/png;base64") >= 4
