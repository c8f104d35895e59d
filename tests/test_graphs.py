"""Random graph generators: determinism, the paper's DAG indexing, serialization, errors."""

import json

import networkx as nx
import pytest

from rwdet.graphs import GraphSpec, generate_graph

SETTINGS = [("ER", {"P": 0.2}), ("BA", {"M": 5}), ("WS", {"K": 4, "P": 0.75})]


@pytest.mark.parametrize("model,params", SETTINGS)
def test_same_inputs_same_graph_other_seed_other_graph(model, params):
    a = generate_graph(model, params, 32, seed=1)
    b = generate_graph(model, params, 32, seed=1)
    c = generate_graph(model, params, 32, seed=2)
    assert a == b and a.edges == b.edges
    assert a.edges != c.edges


@pytest.mark.parametrize("model,params", SETTINGS)
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_dag_properties(model, params, seed):
    spec = generate_graph(model, params, 32, seed)
    g = spec.to_networkx()
    assert nx.is_directed_acyclic_graph(g)
    assert all(u < v for u, v in spec.edges)  # edges go from lower to higher index
    assert g.number_of_nodes() == 32
    # With the extra nodes there is exactly one source and one sink.
    gio = spec.to_networkx(with_io=True)
    assert [n for n in gio if gio.in_degree(n) == 0] == ["input"]
    assert [n for n in gio if gio.out_degree(n) == 0] == ["output"]
    # Every node lies on a path from input to output.
    for n in range(32):
        assert nx.has_path(gio, "input", n) and nx.has_path(gio, n, "output")


def test_edge_counts_follow_the_graph_models():
    # WS keeps N*K/2 edges (rewiring moves edges, never adds or removes them).
    assert len(generate_graph("WS", {"K": 4, "P": 0.75}, 32, 1).edges) == 64
    # BA from M edgeless nodes: every added node brings exactly M edges.
    ba = generate_graph("BA", {"M": 5}, 32, 1)
    assert len(ba.edges) == 5 * (32 - 5)
    # BA indexing: the M initial nodes are the inputs; node M is fed by all of them.
    assert ba.input_nodes() == [0, 1, 2, 3, 4]
    assert ba.predecessors()[5] == [0, 1, 2, 3, 4]
    # ER(P): mean edge count over seeds near P * N(N-1)/2.
    mean = sum(len(generate_graph("ER", {"P": 0.2}, 32, s).edges) for s in range(1, 21)) / 20
    assert abs(mean - 0.2 * 32 * 31 / 2) < 10


def test_ws_zero_p_is_the_ring_lattice():
    spec = generate_graph("WS", {"K": 4, "P": 0.0}, 8, 1)
    ring = {tuple(sorted((i, (i + j) % 8))) for i in range(8) for j in (1, 2)}
    assert set(spec.edges) == ring
    assert spec.input_nodes() == [0]  # clockwise indexing: only node 0 has no lower neighbour


@pytest.mark.parametrize("model,params", SETTINGS)
def test_json_round_trip(model, params):
    spec = generate_graph(model, params, 32, 3)
    text = spec.to_json()
    back = GraphSpec.from_json(text)
    assert back == spec
    assert json.loads(text)["edges"] == [list(e) for e in spec.edges]
    assert GraphSpec.from_dict(spec.to_dict()) == spec


def test_saved_spec_keeps_its_edges_even_if_generation_changes():
    spec = generate_graph("WS", {"K": 4, "P": 0.75}, 32, 1)
    d = spec.to_dict()
    d["edges"] = d["edges"][:-1]  # what a different networkx stream could have produced
    assert GraphSpec.from_dict(d).edges == spec.edges[:-1]


@pytest.mark.parametrize(
    "model,params,n,match",
    [
        ("ER", {"P": 1.5}, 32, r"P=1\.5.*\[0, 1\]"),
        ("ER", {"P": -0.1}, 32, r"P=-0\.1.*\[0, 1\]"),
        ("WS", {"K": 3, "P": 0.5}, 32, r"K=3.*even"),
        ("WS", {"K": 32, "P": 0.5}, 32, r"K=32.*K < N"),
        ("WS", {"K": 4, "P": 2}, 32, r"P=2"),
        ("BA", {"M": 32}, 32, r"M=32.*M < N"),
        ("BA", {"M": 0}, 32, r"M=0"),
        ("ER", {"P": 0.2}, 1, r"N=1.*>= 2"),
        ("XY", {"P": 0.2}, 32, r"'XY'.*\['BA', 'ER', 'WS'\]"),
        ("WS", {"P": 0.2}, 32, r"WS takes parameters \['K', 'P'\]"),
    ],
)
def test_invalid_parameters_raise_with_value_and_range(model, params, n, match):
    with pytest.raises(ValueError, match=match):
        generate_graph(model, params, n, seed=1)


def test_invalid_spec_edges_rejected():
    with pytest.raises(ValueError, match=r"edge \(3, 2\)"):
        GraphSpec("WS", {"K": 4, "P": 0.5}, 1, 8, ((3, 2),))
    with pytest.raises(ValueError, match="keys"):
        GraphSpec.from_dict({"model": "WS"})
    with pytest.raises(ValueError, match="not valid JSON"):
        GraphSpec.from_json("{")
