"""Rendering a matplotlib figure to PNG bytes, shared by every stage that saves a figure.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``, no pyplot and no
global state); matplotlib is imported only when a figure is rendered.
"""

from __future__ import annotations

import io


def figure_png(fig, *, dpi: int = 100) -> bytes:
    """Render a matplotlib :class:`~matplotlib.figure.Figure` to PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()
