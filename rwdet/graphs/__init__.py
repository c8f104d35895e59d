"""Random graphs of RandWire stages: the generators and the frozen, serializable ``GraphSpec``
(:mod:`rwdet.graphs.spec`), and their structure statistics (:mod:`rwdet.graphs.stats`).

The bottom layer of rwdet: it imports nothing else of the package.
"""

from .spec import GRAPH_MODELS, GraphSpec, format_setting, generate_graph, validate_graph_params  # noqa: F401
from .stats import format_distribution, format_statistics, graph_statistics  # noqa: F401

__all__ = [
    "GRAPH_MODELS", "GraphSpec", "format_distribution", "format_setting", "format_statistics",
    "generate_graph", "graph_statistics", "validate_graph_params",
]
