"""The HTML report: escaping, numeric cells, embedded figures, atomic save."""

from __future__ import annotations

import base64
import re

import numpy as np

from tomo4d.report import Report, figure_png, slice_figure


def test_table_escapes_text_and_marks_numbers():
    r = Report("t")
    r.section("S <1>", "a & b")
    r.table(["name", "value"], [("<script>", 1.23456789), ("x", np.float32(2e-7))])
    html = r.html()
    assert "<script>" not in html
    assert "&lt;script&gt;" in html and "S &lt;1&gt;" in html and "a &amp; b" in html
    assert '<td class="num">1.235</td>' in html
    assert '<td class="num">2.000e-07</td>' in html


def test_figure_is_embedded_png(tmp_path):
    fig = slice_figure([np.arange(64, dtype=np.float32).reshape(8, 8)] * 2, ["a", "b"])
    png = figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    r = Report("t").figure(fig, "caption & more")
    m = re.search(r'src="data:image/png;base64,([^"]+)"', r.html())
    assert m and base64.b64decode(m.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    out = r.save(tmp_path / "r.html")
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temporary left behind
