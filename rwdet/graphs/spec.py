"""Random graph generators for RandWire stages, and the serializable graph spec.

Source: Xie, Kirillov, Girshick, He, "Exploring Randomly Wired Neural Networks for Image
Recognition", ICCV 2019, section 3.3 (graph models) and appendix (undirected graph -> DAG).
The undirected graphs come from networkx; this module only fixes the node indexing that turns
them into DAGs and records the result as a :class:`GraphSpec`.

A :class:`GraphSpec` holds the edge list itself, so a model rebuilt from a saved spec is the same
network even if a later networkx release changes its random streams.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import networkx as nx

__all__ = ["GRAPH_MODELS", "GraphSpec", "format_setting", "generate_graph", "validate_graph_params"]

#: Graph model name -> the names of its parameters, in the paper's order.
GRAPH_MODELS: Dict[str, Tuple[str, ...]] = {
    "ER": ("P",),
    "BA": ("M",),
    "WS": ("K", "P"),
}


def validate_graph_params(model: str, params: Dict[str, float], num_nodes: int) -> Dict[str, float]:
    """Check a generator setting and return its parameters, normalised.

    Args:
        model: "ER", "BA" or "WS" (case-insensitive).
        params: the model's parameters: ``{"P": p}`` for ER, ``{"M": m}`` for BA,
            ``{"K": k, "P": p}`` for WS. Extra keys are an error.
        num_nodes: N, the node count of the graph.

    Returns:
        dict: the parameters with ints for K and M and a float for P.

    Raises:
        ValueError: unknown model name, missing or extra parameter, N < 2, P outside [0, 1],
            K odd, K < 2 or K >= N, M < 1 or M >= N. The message names the bad value and the
            allowed range.
    """
    if not isinstance(model, str) or model.upper() not in GRAPH_MODELS:
        raise ValueError(f"unknown graph model {model!r}; allowed: {sorted(GRAPH_MODELS)}")
    model = model.upper()
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 2:
        raise ValueError(f"number of nodes N={num_nodes!r} is invalid; N must be an integer >= 2")
    expected = GRAPH_MODELS[model]
    if set(params) != set(expected):
        raise ValueError(
            f"{model} takes parameters {list(expected)}, got {sorted(params)}"
        )
    out: Dict[str, float] = {}
    if "P" in expected:
        p = params["P"]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"{model}: P={p!r} is out of range; P must be in [0, 1]")
        out["P"] = float(p)
    if "K" in expected:
        k = params["K"]
        if isinstance(k, bool) or not float(k).is_integer():
            raise ValueError(f"WS: K={k!r} must be an even integer in [2, N) with N={num_nodes}")
        k = int(k)
        if k % 2 or k < 2 or k >= num_nodes:
            raise ValueError(
                f"WS: K={k} is invalid; K must be even and 2 <= K < N (N={num_nodes})"
            )
        out["K"] = k
    if "M" in expected:
        m = params["M"]
        if isinstance(m, bool) or not float(m).is_integer() or not 1 <= int(m) < num_nodes:
            raise ValueError(f"BA: M={m!r} is invalid; M must be an integer with 1 <= M < N (N={num_nodes})")
        out["M"] = int(m)
    return {k: out[k] for k in expected}


def format_setting(model: str, params: Dict[str, float]) -> str:
    """A generator setting in the paper's notation, e.g. ``WS(4, 0.75)``, ``ER(0.2)``, ``BA(5)``.

    Args:
        model: a key of :data:`GRAPH_MODELS`; params: its parameters (all of them).
    """
    return f"{model}({', '.join(f'{params[k]:g}' for k in GRAPH_MODELS[model])})"


@dataclass(frozen=True)
class GraphSpec:
    """A DAG for one RandWire stage: the generator setting plus the edge list it produced.

    Nodes are ``0 .. num_nodes-1`` in the paper's DAG index order; every edge ``(u, v)`` has
    ``u < v`` (appendix of the paper). The extra input and output nodes of a stage are implied:
    the input node feeds every node with no predecessor, the output node averages every node
    with no successor.

    Attributes:
        model: "ER", "BA" or "WS".
        params: the model's parameters, e.g. ``{"K": 4, "P": 0.75}``.
        seed: the integer seed given to networkx.
        num_nodes: N.
        edges: sorted tuple of directed edges ``(u, v)`` with ``0 <= u < v < N``.

    Raises:
        ValueError: on construction, if the parameters are invalid (see
            :func:`validate_graph_params`) or an edge is out of range, not ``u < v``, or repeated.
    """

    model: str
    params: Dict[str, float]
    seed: int
    num_nodes: int
    edges: Tuple[Tuple[int, int], ...] = field(default=())

    def __post_init__(self):
        object.__setattr__(self, "model", str(self.model).upper())
        object.__setattr__(
            self, "params", validate_graph_params(self.model, dict(self.params), self.num_nodes)
        )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed={self.seed!r} must be an integer")
        edges = tuple(sorted((int(u), int(v)) for u, v in self.edges))
        for u, v in edges:
            if not 0 <= u < v < self.num_nodes:
                raise ValueError(
                    f"edge ({u}, {v}) is invalid; edges must satisfy 0 <= u < v < N={self.num_nodes}"
                )
        if len(set(edges)) != len(edges):
            raise ValueError("edge list has repeated edges")
        object.__setattr__(self, "edges", edges)

    # ---- structure -------------------------------------------------------------------------
    def predecessors(self) -> List[List[int]]:
        """Return, for each node ``v``, the sorted list of its predecessors (in-edges)."""
        preds: List[List[int]] = [[] for _ in range(self.num_nodes)]
        for u, v in self.edges:
            preds[v].append(u)
        return preds

    def successors(self) -> List[List[int]]:
        """Return, for each node ``u``, the sorted list of its successors (out-edges)."""
        succs: List[List[int]] = [[] for _ in range(self.num_nodes)]
        for u, v in self.edges:
            succs[u].append(v)
        return succs

    def input_nodes(self) -> List[int]:
        """Nodes with in-degree 0: they are fed by the stage's extra input node."""
        return [v for v, p in enumerate(self.predecessors()) if not p]

    def output_nodes(self) -> List[int]:
        """Nodes with out-degree 0: the stage's extra output node averages them."""
        return [u for u, s in enumerate(self.successors()) if not s]

    def to_networkx(self, with_io: bool = False) -> nx.DiGraph:
        """Return the DAG as a ``networkx.DiGraph``.

        Args:
            with_io: also add the extra nodes ``"input"`` (edges to every input node) and
                ``"output"`` (edges from every output node).
        """
        g = nx.DiGraph()
        g.add_nodes_from(range(self.num_nodes))
        g.add_edges_from(self.edges)
        if with_io:
            g.add_edges_from(("input", v) for v in self.input_nodes())
            g.add_edges_from((u, "output") for u in self.output_nodes())
        return g

    # ---- serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-compatible dict; :meth:`from_dict` inverts it exactly."""
        return {
            "model": self.model,
            "params": dict(self.params),
            "seed": self.seed,
            "num_nodes": self.num_nodes,
            "edges": [list(e) for e in self.edges],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "GraphSpec":
        """Build a spec from :meth:`to_dict` output.

        Raises:
            ValueError: a key is missing or unknown, or a value is invalid.
        """
        keys = {"model", "params", "seed", "num_nodes", "edges"}
        if not isinstance(d, dict) or set(d) != keys:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"graph spec must have exactly the keys {sorted(keys)}, got {got}")
        return cls(
            model=d["model"],
            params=d["params"],
            seed=d["seed"],
            num_nodes=d["num_nodes"],
            edges=tuple(tuple(e) for e in d["edges"]),
        )

    def to_json(self) -> str:
        """One-line JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "GraphSpec":
        """Inverse of :meth:`to_json`. Raises ValueError on malformed JSON or an invalid spec."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"graph spec is not valid JSON: {e}") from e
        return cls.from_dict(d)

    def describe(self) -> str:
        """Short name in the paper's notation, e.g. ``WS(4, 0.75) N=32 seed=1``."""
        return f"{format_setting(self.model, self.params)} N={self.num_nodes} seed={self.seed}"


def _ba_initial_graph(m: int) -> nx.Graph:
    # The paper starts BA from M nodes with no edges; the first added node then necessarily
    # links to all M of them. That state is a star whose centre is node M, which networkx
    # accepts as ``initial_graph`` (its default star is centred on node 0 instead).
    g = nx.star_graph(m)  # centre 0, leaves 1..m
    return nx.relabel_nodes(g, {i: (m if i == 0 else i - 1) for i in range(m + 1)})


def generate_graph(model: str, params: Dict[str, float], num_nodes: int, seed: int) -> GraphSpec:
    """Sample an undirected random graph with networkx and orient it into a DAG.

    Graph models and node indexing follow the paper (sec. 3.3 and appendix):

    - ER(P): ``networkx.gnp_random_graph(N, P, seed)``. The paper indexes ER nodes in a random
      order; ER is exchangeable, so networkx's labels already are a uniformly random order.
    - BA(M): ``networkx.barabasi_albert_graph`` grown from M edgeless nodes (see
      ``_ba_initial_graph``); the M initial nodes get indices 0..M-1, each later node the index
      of the order it was added.
    - WS(K, P): ``networkx.watts_strogatz_graph(N, K, P, seed)``; indices run clockwise around
      the ring, rewiring is networkx's clockwise pass.

    Every edge is then directed from the lower index to the higher one.

    Args:
        model: "ER", "BA" or "WS".
        params: the model's parameters, see :func:`validate_graph_params`.
        num_nodes: N >= 2.
        seed: integer seed; the same (model, params, N, seed) gives the same edges.

    Returns:
        GraphSpec: the DAG.

    Raises:
        ValueError: invalid model name or parameters (see :func:`validate_graph_params`).
    """
    params = validate_graph_params(model, dict(params), num_nodes)
    model = model.upper()
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an integer")
    if model == "ER":
        g = nx.gnp_random_graph(num_nodes, params["P"], seed=seed)
    elif model == "BA":
        g = nx.barabasi_albert_graph(
            num_nodes, params["M"], seed=seed, initial_graph=_ba_initial_graph(params["M"])
        )
    else:
        g = nx.watts_strogatz_graph(num_nodes, params["K"], params["P"], seed=seed)
    edges = tuple(sorted((min(u, v), max(u, v)) for u, v in g.edges()))
    return GraphSpec(model=model, params=params, seed=seed, num_nodes=num_nodes, edges=edges)

