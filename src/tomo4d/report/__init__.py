"""Figures and the self-contained HTML report."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "Report": "html", "figure_png": "html", "slice_figure": "html",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
