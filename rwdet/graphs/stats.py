"""Structure statistics of a RandWire stage's graph, and a table of them for every stage.

The statistics follow the quantities the paper uses to talk about its generators (Xie et al.,
ICCV 2019, sec. 3.3 graph models, and the graph-damage analysis): node and edge counts, the nodes
fed by the extra input node and averaged by the extra output node, in/out-degree
distributions, the average shortest path length and clustering coefficient of the generator's
undirected graph (the two quantities that define the small-world WS model), and the depth of
the DAG. All graph computations are networkx's.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Dict, List, Sequence, Tuple

import networkx as nx
from tabulate import tabulate

from .spec import GraphSpec

__all__ = ["graph_statistics", "format_statistics", "format_distribution"]


def _check_spec(spec) -> GraphSpec:
    if not isinstance(spec, GraphSpec):
        raise ValueError(f"expected a rwdet.graphs.GraphSpec, got {type(spec).__name__}: {spec!r}")
    return spec


def _distribution(degrees: List[int]) -> Dict[int, int]:
    """``{degree: number of nodes with that degree}``, sorted by degree."""
    return dict(sorted(Counter(degrees).items()))


def _average_shortest_path_length(g: nx.Graph) -> float:
    """Mean shortest-path length (in edges) over ordered pairs ``u != v`` joined by a path.

    For a connected graph this is exactly ``networkx.average_shortest_path_length``; for a
    disconnected one (which networkx refuses) pairs in different components are left out. NaN
    if no pair is connected (a graph without edges).
    """
    if g.number_of_nodes() > 1 and nx.is_connected(g):
        return float(nx.average_shortest_path_length(g))
    total = pairs = 0
    for _, lengths in nx.all_pairs_shortest_path_length(g):
        total += sum(lengths.values())  # the source itself contributes length 0
        pairs += len(lengths) - 1
    return total / pairs if pairs else float("nan")


def graph_statistics(spec: GraphSpec) -> dict:
    """Structure statistics of one stage's graph.

    Directed quantities are measured on the DAG over the N nodes (``spec.to_networkx()``,
    edges from lower to higher index, paper appendix); the extra input and output nodes of the
    stage are *not* counted anywhere. Undirected quantities (path length, clustering,
    components) are measured on the generator's undirected graph over the same N nodes
    (``spec.to_networkx().to_undirected()``), i.e. the ER/BA/WS sample before orientation.

    Args:
        spec: the stage's graph.

    Returns:
        dict with keys

        - ``nodes`` (N), ``edges`` (int).
        - ``input_nodes``: number of nodes with in-degree 0 (fed by the extra input node).
        - ``output_nodes``: number of nodes with out-degree 0 (averaged by the extra output
          node). An isolated node counts in both.
        - ``in_degree`` / ``out_degree``: ``{degree: node count}`` sorted by degree;
          ``in_degree_mean`` / ``out_degree_mean`` (both equal edges / N) and
          ``in_degree_max`` / ``out_degree_max``.
        - ``depth``: longest directed path, in edges, over the N nodes
          (``networkx.dag_longest_path_length``); 0 for a graph without edges. A signal crossing
          the stage passes ``depth + 1`` convolution nodes; counting the extra input and output
          nodes the longest path has ``depth + 2`` edges.
        - ``avg_shortest_path``: mean shortest-path length of the undirected graph over
          ordered pairs of distinct nodes joined by a path. Equals
          ``networkx.average_shortest_path_length`` when the graph is connected; when it is not
          (possible for ER with small P), pairs in different components are left out, so the
          value stays finite. NaN only if the graph has no edge.
        - ``clustering``: ``networkx.average_clustering`` of the undirected graph (mean over all
          N nodes, nodes of degree < 2 count as 0).
        - ``connected_components``: number of connected components of the undirected graph.

    Raises:
        ValueError: ``spec`` is not a :class:`~rwdet.graphs.GraphSpec`.
    """
    spec = _check_spec(spec)
    dag = spec.to_networkx()
    und = dag.to_undirected()
    n = spec.num_nodes
    in_deg = [d for _, d in sorted(dag.in_degree())]
    out_deg = [d for _, d in sorted(dag.out_degree())]
    return {
        "nodes": n,
        "edges": dag.number_of_edges(),
        "input_nodes": sum(d == 0 for d in in_deg),
        "output_nodes": sum(d == 0 for d in out_deg),
        "in_degree": _distribution(in_deg),
        "in_degree_mean": sum(in_deg) / n,
        "in_degree_max": max(in_deg),
        "out_degree": _distribution(out_deg),
        "out_degree_mean": sum(out_deg) / n,
        "out_degree_max": max(out_deg),
        "depth": int(nx.dag_longest_path_length(dag)),
        "avg_shortest_path": _average_shortest_path_length(und),
        "clustering": float(nx.average_clustering(und)),
        "connected_components": nx.number_connected_components(und),
    }


def format_distribution(dist: Dict[int, int]) -> str:
    """A degree distribution in compact form, e.g. ``"1:5 2:10 3:8"`` (degree:count)."""
    return " ".join(f"{d}:{c}" for d, c in sorted(dist.items()))


def _check_stage_specs(stage_specs) -> List[Tuple[str, GraphSpec]]:
    if isinstance(stage_specs, (str, bytes)) or not isinstance(stage_specs, Sequence) or not stage_specs:
        raise ValueError(
            f"stage_specs must be a non-empty list of (stage name, GraphSpec) pairs, got {stage_specs!r}"
        )
    out = []
    for item in stage_specs:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], GraphSpec)):
            raise ValueError(
                f"stage_specs item {item!r} is invalid; each item must be a (stage name, GraphSpec) pair"
            )
        out.append((item[0], item[1]))
    return out


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.3f}"


def format_statistics(stage_specs: Sequence[Tuple[str, GraphSpec]]) -> str:
    """A fixed-width table of :func:`graph_statistics` with one row per stage, then the degree
    distributions of every stage.

    Columns: stage, graph (``spec.describe()``), nodes, edges, in/out nodes (counts of nodes fed
    by the extra input node / averaged by the extra output node), mean/max in-degree, mean/max
    out-degree, average shortest path and clustering (undirected graph), depth (longest path in
    edges over the N nodes). Below the table, one line per stage and direction, e.g.
    ``res3 in-degree:  0:1 1:9 2:12 ...`` (degree:count).

    Args:
        stage_specs: ``[(stage name, GraphSpec), ...]``, e.g. from
            :func:`rwdet.analysis.common.stage_specs`.

    Returns:
        str: the table (several lines, no trailing newline).

    Raises:
        ValueError: ``stage_specs`` is empty or an item is not a (str, GraphSpec) pair.
    """
    stage_specs = _check_stage_specs(stage_specs)
    rows, dists = [], []
    for name, spec in stage_specs:
        s = graph_statistics(spec)
        comps = s["connected_components"]
        path = _fmt(s["avg_shortest_path"]) + (f" ({comps} comp.)" if comps > 1 else "")
        rows.append((
            name, spec.describe(), s["nodes"], s["edges"], f"{s['input_nodes']}/{s['output_nodes']}",
            f"{s['in_degree_mean']:.2f}/{s['in_degree_max']}",
            f"{s['out_degree_mean']:.2f}/{s['out_degree_max']}",
            path, _fmt(s["clustering"]), s["depth"],
        ))
        dists.append(f"{name} in-degree:  {format_distribution(s['in_degree'])}")
        dists.append(f"{name} out-degree: {format_distribution(s['out_degree'])}")
    headers = ["stage", "graph", "nodes", "edges", "in/out nodes", "in-deg mean/max",
               "out-deg mean/max", "avg path", "clustering", "depth"]
    table = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True,
                     colalign=("left", "left") + ("right",) * (len(headers) - 2))
    return table + "\n\nDegree distributions (degree:nodes):\n" + "\n".join(dists)
