"""Figures and the self-contained HTML report."""

from .html import Report, figure_png, slice_figure

__all__ = ["Report", "figure_png", "slice_figure"]
