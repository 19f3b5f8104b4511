"""A small, dependency-light HTML report: sections of text, tables and figures.

The report is one self-contained file (figures embedded as PNG data URIs) so it
can be mailed or archived next to the results.  Figures are made with
matplotlib's object API (no pyplot, no global state).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._figure import figure_png
from .._version import __version__
from ..io import atomic_output

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{border-bottom:2px solid #446;padding-bottom:.2em}h2{color:#335;margin-top:2em;border-bottom:1px solid #ccd}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}th,td{border:1px solid #ccd;padding:.25em .6em;
text-align:left}th{background:#eef}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}figcaption{font-size:.85em;color:#555;
max-width:600px}img{max-width:100%}.meta{color:#666;font-size:.85em}pre{background:#f6f6fa;padding:.6em}
"""


def slice_figure(images: Sequence[np.ndarray], titles: Sequence[str], *, cmap: str = "gray",
                 ncols: int | None = None, size: float = 2.6, robust: bool = True):
    """A row/grid of 2D images with titles, grey values clipped at the 0.5/99.5 percentiles."""
    from matplotlib.figure import Figure

    n = len(images)
    ncols = ncols or n
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(size * ncols, size * nrows))
    for i, (img, title) in enumerate(zip(images, titles)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        a = np.asarray(img, dtype=np.float32)
        if robust and cmap == "gray":
            lo, hi = np.percentile(a, [0.5, 99.5])
            ax.imshow(a, cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        else:
            ax.imshow(a, cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return str(v)
        a = abs(float(v))
        return f"{v:.4g}" if (a == 0 or 1e-3 <= a < 1e5) else f"{v:.3e}"
    return html.escape(str(v))


def _cell(v) -> str:
    numeric = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
    return f'<td class="num">{_fmt(v)}</td>' if numeric else f"<td>{_fmt(v)}</td>"


@dataclass
class Report:
    """An HTML report assembled section by section, written atomically by :meth:`save`."""

    title: str
    parts: list[str] = field(default_factory=list)

    def section(self, title: str, text: str = "") -> Report:
        self.parts.append(f"<h2>{html.escape(title)}</h2>")
        if text:
            self.parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def text(self, text: str) -> Report:
        self.parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence], caption: str = "") -> Report:
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<table>{cap}<tr>{head}</tr>{body}</table>")
        return self

    def figure(self, fig_or_png, caption: str = "") -> Report:
        png = fig_or_png if isinstance(fig_or_png, bytes) else figure_png(fig_or_png)
        b64 = base64.b64encode(png).decode("ascii")
        self.parts.append(
            f'<figure><img src="data:image/png;base64,{b64}"/><figcaption>{html.escape(caption)}</figcaption></figure>'
        )
        return self

    def html(self) -> str:
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1><p class='meta'>tomo4d {__version__}, {stamp}</p>"
            + "\n".join(self.parts) + "</body></html>"
        )

    def save(self, path, *, overwrite: bool = True) -> Path:
        path = Path(path)
        with atomic_output(path, overwrite=overwrite) as tmp:
            tmp.write_text(self.html(), encoding="utf-8")
        return path
