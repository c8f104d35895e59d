"""Structure statistics of RandWire graphs, for the analysis tools.

The statistics live beside ``GraphSpec`` in :mod:`rwdet.graphs.stats` (the trainers log them,
and the trainers sit below ``rwdet.analysis``); this module re-exports them under their old
name.
"""

from ..graphs.stats import format_distribution, format_statistics, graph_statistics  # noqa: F401

__all__ = ["graph_statistics", "format_statistics", "format_distribution"]
