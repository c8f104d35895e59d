"""Pictures of RandWire stage graphs, in the spirit of the paper's graph figures.

Xie et al. (ICCV 2019) draw a stage as a DAG with its extra input node (feeding every node
without predecessor) and extra output node (averaging every node without successor), the data
flowing in one direction. Here each stage is laid
out in layers by topological depth (``networkx.topological_generations``: a node's layer is the
length of the longest path reaching it from the extra input node; output nodes go to the last
layer), left to right, with ``networkx.multipartite_layout``; nodes inside a layer are ordered
by barycenter sweeps to cut edge crossings. Rendering is matplotlib's Agg (PNG) and
SVG backends through a ``matplotlib.figure.Figure`` (no pyplot state is touched).
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

import networkx as nx
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..graphs import GraphSpec
from ..graphs.stats import _check_spec, _check_stage_specs

__all__ = ["draw_stage", "draw_stages", "stage_layers"]

#: Node role -> (fill colour, legend label).
ROLE_STYLE: Dict[str, Tuple[str, str]] = {
    "io": ("#3a3a3a", "extra input / output node"),
    "input": ("#4daf4a", "input node (fed by extra input)"),
    "output": ("#377eb8", "output node (averaged by extra output)"),
    "both": ("#984ea3", "isolated node (input and output)"),
    "hidden": ("#e6e6e6", "hidden node"),
}


def stage_layers(spec: GraphSpec, sweeps: int = 4) -> List[List]:
    """The layers of the stage's DAG, extra nodes included, in drawing order.

    Args:
        spec: the stage's graph.
        sweeps: number of barycenter passes (alternately using predecessors and successors)
            that order the nodes inside each layer; 0 keeps index order.

    Returns:
        list of layers. Layer ``k`` holds the nodes whose longest path from the extra
        ``"input"`` node has ``k`` edges (``networkx.topological_generations`` of
        ``spec.to_networkx(with_io=True)``), except that output nodes (no successor, at least
        one predecessor) are moved to the last layer before ``"output"``, so that the output
        node's edges stay short, as the input node's are. Layer 0 is ``["input"]``, the last
        ``["output"]``; there are ``depth + 3`` layers (depth as in
        :func:`rwdet.graphs.stats.graph_statistics`). Inside a layer nodes are ordered by the
        mean position of their neighbours in the previous (forward pass) or next (backward
        pass) layers, ties broken by node index (Sugiyama-style barycenter ordering).

    Raises:
        ValueError: ``spec`` is not a GraphSpec, or ``sweeps`` is not an integer >= 0.
    """
    spec = _check_spec(spec)
    if isinstance(sweeps, bool) or not isinstance(sweeps, int) or sweeps < 0:
        raise ValueError(f"sweeps={sweeps!r} is invalid; it must be an integer >= 0")
    g = spec.to_networkx(with_io=True)
    layers: List[List] = [list(gen) for gen in nx.topological_generations(g)]
    last = len(layers) - 2  # the layer just before "output"
    sinks = set(spec.output_nodes()) - set(spec.input_nodes())
    for k in range(1, last):
        moved = [v for v in layers[k] if v in sinks]
        layers[k] = [v for v in layers[k] if v not in sinks]
        layers[last] += moved
    layers = [sorted(layer, key=lambda v: v if isinstance(v, int) else -1) for layer in layers if layer]

    def place(layer):
        for i, v in enumerate(layer):
            y[v] = i - (len(layer) - 1) / 2

    y: Dict = {}
    for layer in layers:
        place(layer)
    for sweep in range(sweeps):
        forward = sweep % 2 == 0
        order = range(1, len(layers)) if forward else range(len(layers) - 2, -1, -1)
        for k in order:
            def key(v):
                nbrs = list(g.predecessors(v) if forward else g.successors(v))
                bary = sum(y[u] for u in nbrs) / len(nbrs) if nbrs else y[v]
                return (bary, v if isinstance(v, int) else -1)

            layers[k] = sorted(layers[k], key=key)
            place(layers[k])
    return layers


def _roles(spec: GraphSpec, g: nx.DiGraph) -> Dict:
    """Node -> role key of :data:`ROLE_STYLE`."""
    ins, outs = set(spec.input_nodes()), set(spec.output_nodes())
    roles = {}
    for v in g.nodes():
        if v in ("input", "output"):
            roles[v] = "io"
        else:
            roles[v] = ("both" if v in outs else "input") if v in ins else ("output" if v in outs else "hidden")
    return roles


def _check_prefix(path_prefix) -> str:
    if not isinstance(path_prefix, (str, os.PathLike)) or not str(path_prefix) or str(path_prefix).endswith(os.sep):
        raise ValueError(
            f"path_prefix={path_prefix!r} is invalid; give a file path without extension, "
            "e.g. 'out/res3' (writes out/res3.png and out/res3.svg)"
        )
    return str(path_prefix)


def draw_stage(spec: GraphSpec, path_prefix: str, title: str = None) -> List[str]:
    """Draw one stage's DAG to ``<path_prefix>.png`` (150 dpi) and ``<path_prefix>.svg``.

    The picture shows the N nodes (labelled with their index) plus the extra ``in`` and ``out``
    nodes, coloured by role (input nodes: in-degree 0; output nodes: out-degree 0; isolated
    nodes: both; hidden: the rest) with a legend, and every directed edge with an arrowhead.
    Edges of the extra nodes are dashed; edges that skip layers are drawn as arcs bowing out by
    about a quarter of the layer spacing. The figure
    grows with the number of layers (width) and the widest layer (height), so N=32 stays
    readable. Layout: see :func:`stage_layers`.

    Args:
        spec: the stage's graph.
        path_prefix: output path without extension; missing parent folders are created.
        title: figure title; default ``spec.describe()``.

    Returns:
        ``[png_path, svg_path]``.

    Raises:
        ValueError: ``spec`` is not a GraphSpec, or ``path_prefix`` is empty or a folder.
    """
    spec = _check_spec(spec)
    path_prefix = _check_prefix(path_prefix)
    layers = stage_layers(spec)
    g = spec.to_networkx(with_io=True)
    pos = nx.multipartite_layout(g, subset_key=dict(enumerate(layers)), align="vertical")

    n_layers, width = len(layers), max(len(layer) for layer in layers)
    fig_w, fig_h = min(4.0 + 0.75 * n_layers, 40.0), min(2.5 + 0.7 * width, 24.0)
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_subplot(1, 1, 1)
    node_size = 260
    layer_of = {v: k for k, layer in enumerate(layers) for v in layer}

    io_edges = [(u, v) for u, v in g.edges() if u == "input" or v == "output"]
    inner = [(u, v) for u, v in g.edges() if u != "input" and v != "output"]
    short = [(u, v) for u, v in inner if layer_of[v] - layer_of[u] == 1]
    long_ = [(u, v) for u, v in inner if layer_of[v] - layer_of[u] > 1]
    common = dict(ax=ax, arrows=True, arrowstyle="-|>", arrowsize=8, node_size=node_size, width=0.7)
    nx.draw_networkx_edges(g, pos, edgelist=io_edges, edge_color="#9a9a9a", style="dashed", **common)
    nx.draw_networkx_edges(g, pos, edgelist=short, edge_color="#555555", **common)
    # Edges skipping layers bow out by about a quarter of the layer spacing whatever their span
    # (arc3's rad is relative to the chord), so they clear the nodes of the layers they cross.
    for span in sorted({layer_of[v] - layer_of[u] for u, v in long_}):
        nx.draw_networkx_edges(g, pos, edgelist=[(u, v) for u, v in long_ if layer_of[v] - layer_of[u] == span],
                               edge_color="#555555", connectionstyle=f"arc3,rad={0.5 / span:.3f}", **common)

    roles = _roles(spec, g)
    present = [r for r in ROLE_STYLE if r in roles.values()]
    for role in present:
        nodes = [v for v in g.nodes() if roles[v] == role]
        nx.draw_networkx_nodes(g, pos, nodelist=nodes, node_color=ROLE_STYLE[role][0], node_size=node_size,
                               edgecolors="#222222", linewidths=0.6, ax=ax)
    labels = {v: ("in" if v == "input" else "out" if v == "output" else str(v)) for v in g.nodes()}
    dark = {v: t for v, t in labels.items() if roles[v] in ("io", "output", "both")}
    light = {v: t for v, t in labels.items() if v not in dark}
    nx.draw_networkx_labels(g, pos, labels=dark, font_size=6.5, font_color="white", ax=ax)
    nx.draw_networkx_labels(g, pos, labels=light, font_size=6.5, font_color="black", ax=ax)

    handles = [Line2D([], [], marker="o", linestyle="", markersize=7, markerfacecolor=ROLE_STYLE[r][0],
                      markeredgecolor="#222222", label=ROLE_STYLE[r][1]) for r in present]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=max(1, min(len(handles), int(fig_w // 3.2))),
              fontsize=7, frameon=False)
    ax.set_title(title if title is not None else spec.describe(), fontsize=10)
    ax.set_axis_off()
    ax.margins(0.03, 0.06)
    fig.tight_layout()

    parent = os.path.dirname(path_prefix)
    if parent:
        os.makedirs(parent, exist_ok=True)
    paths = [path_prefix + ".png", path_prefix + ".svg"]
    fig.savefig(paths[0], dpi=150, format="png", bbox_inches="tight")
    fig.savefig(paths[1], format="svg", bbox_inches="tight")
    fig.clear()
    return paths


def draw_stages(stage_specs: Sequence[Tuple[str, GraphSpec]], output_dir: str, prefix: str = "") -> List[str]:
    """Draw every stage with :func:`draw_stage` to ``<output_dir>/<prefix><stage>.png`` and ``.svg``.

    Args:
        stage_specs: ``[(stage name, GraphSpec), ...]``, e.g. from
            :func:`rwdet.analysis.common.stage_specs`.
        output_dir: folder for the pictures; created if missing.
        prefix: prepended to each file name (e.g. ``"ws_seed1_"``).

    Returns:
        list of written paths, PNG then SVG for each stage in order.

    Raises:
        ValueError: ``stage_specs`` is empty or malformed, ``output_dir`` is empty, or a stage
            name or ``prefix`` contains a path separator.
    """
    stage_specs = _check_stage_specs(stage_specs)
    if not isinstance(output_dir, (str, os.PathLike)) or not str(output_dir):
        raise ValueError(f"output_dir={output_dir!r} is invalid; give a folder path")
    if not isinstance(prefix, str) or os.sep in prefix:
        raise ValueError(f"prefix={prefix!r} is invalid; give a file-name prefix without '{os.sep}'")
    for name, _ in stage_specs:
        if os.sep in name or not name:
            raise ValueError(f"stage name {name!r} is invalid for a file name; it must be non-empty, without '{os.sep}'")
    paths = []
    for name, spec in stage_specs:
        paths += draw_stage(spec, os.path.join(str(output_dir), prefix + name), title=f"{name}: {spec.describe()}")
    return paths
