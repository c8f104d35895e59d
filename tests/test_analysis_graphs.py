"""Graph statistics and pictures (rwdet.graphs.stats, rwdet.analysis.draw, tools/graph_stats.py, tools/draw_graphs.py).

Statistics are checked against networkx computed directly on the same graphs, plus one graph
with hand-computed values; the tools run as subprocesses on the tiny test config (N=8) and on
the Fashion-MNIST small-regime config (N=32).
"""

import json
import logging
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import networkx as nx
import pytest
import torch

from rwdet.analysis.draw import draw_stage, draw_stages, stage_layers
from rwdet.graphs.stats import format_statistics, graph_statistics
from rwdet.graphs import GraphSpec, generate_graph

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "configs" / "tiny_fashion_mnist.yaml")
WS_SMALL = str(REPO / "configs" / "fashion_mnist" / "randwire_ws_small.yaml")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

N32_SPECS = [
    generate_graph("WS", {"K": 4, "P": 0.75}, 32, 1),
    generate_graph("ER", {"P": 0.2}, 32, 1),
    generate_graph("BA", {"M": 5}, 32, 1),
]


def run_tool(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


# ---- statistics ----------------------------------------------------------------------------
@pytest.mark.parametrize("spec", N32_SPECS, ids=lambda s: s.model)
def test_statistics_equal_networkx(spec):
    s = graph_statistics(spec)
    dag = spec.to_networkx()
    und = dag.to_undirected()
    assert nx.is_connected(und)  # these settings give connected graphs: networkx's ASPL applies
    assert s["nodes"] == 32 and s["edges"] == dag.number_of_edges() == len(spec.edges)
    assert s["avg_shortest_path"] == pytest.approx(nx.average_shortest_path_length(und), abs=1e-12)
    assert s["clustering"] == pytest.approx(nx.average_clustering(und), abs=1e-12)
    assert s["depth"] == nx.dag_longest_path_length(dag)
    assert s["connected_components"] == 1
    in_counts = Counter(d for _, d in dag.in_degree())
    out_counts = Counter(d for _, d in dag.out_degree())
    assert s["in_degree"] == dict(in_counts) and s["out_degree"] == dict(out_counts)
    assert list(s["in_degree"]) == sorted(s["in_degree"])
    assert s["input_nodes"] == in_counts[0] == len(spec.input_nodes())
    assert s["output_nodes"] == out_counts[0] == len(spec.output_nodes())
    assert s["in_degree_max"] == max(in_counts) and s["out_degree_max"] == max(out_counts)
    assert s["in_degree_mean"] == pytest.approx(len(spec.edges) / 32)
    assert s["out_degree_mean"] == pytest.approx(len(spec.edges) / 32)


def test_statistics_known_values():
    # Triangle 0->1->2, 0->2 plus the isolated node 3 (an input and an output node at once).
    spec = GraphSpec("WS", {"K": 2, "P": 0.0}, 0, 4, ((0, 1), (1, 2), (0, 2)))
    s = graph_statistics(spec)
    assert (s["nodes"], s["edges"], s["input_nodes"], s["output_nodes"]) == (4, 3, 2, 2)
    assert s["in_degree"] == {0: 2, 1: 1, 2: 1} and s["out_degree"] == {0: 2, 1: 1, 2: 1}
    assert s["depth"] == 2
    assert s["avg_shortest_path"] == 1.0  # connected pairs only: the 6 ordered triangle pairs
    assert s["clustering"] == 0.75  # (1 + 1 + 1 + 0) / 4
    assert s["connected_components"] == 2


def test_statistics_disconnected_er_is_finite_and_over_connected_pairs():
    spec = generate_graph("ER", {"P": 0.05}, 32, 2)
    und = spec.to_networkx().to_undirected()
    assert not nx.is_connected(und)
    s = graph_statistics(spec)
    assert math.isfinite(s["avg_shortest_path"]) and math.isfinite(s["clustering"])
    # Mean over ordered connected pairs, from networkx's per-component averages.
    total = pairs = 0
    for comp in nx.connected_components(und):
        n = len(comp)
        if n > 1:
            total += nx.average_shortest_path_length(und.subgraph(comp)) * n * (n - 1)
            pairs += n * (n - 1)
    assert s["avg_shortest_path"] == pytest.approx(total / pairs)
    assert s["clustering"] == pytest.approx(nx.average_clustering(und))
    assert s["connected_components"] == nx.number_connected_components(und) > 1
    assert s["depth"] == nx.dag_longest_path_length(spec.to_networkx())


def test_statistics_without_edges_is_nan():
    s = graph_statistics(GraphSpec("ER", {"P": 0.0}, 0, 5, ()))
    assert math.isnan(s["avg_shortest_path"])
    assert (s["depth"], s["clustering"], s["input_nodes"], s["output_nodes"]) == (0, 0.0, 5, 5)


def test_format_statistics_rows():
    stages = list(zip(["res3", "res4", "res5"], N32_SPECS))
    text = format_statistics(stages)
    lines = text.splitlines()
    for name, spec in stages:
        s = graph_statistics(spec)
        row = [line for line in lines if line.startswith(name + " ") and spec.describe() in line]
        assert len(row) == 1, text
        cells = row[0].split()
        assert cells[-1] == str(s["depth"]) and cells[-2] == f"{s['clustering']:.3f}"
        assert f"{s['avg_shortest_path']:.3f}" in cells and str(s["edges"]) in cells
        assert f"{s['input_nodes']}/{s['output_nodes']}" in cells
        dist = " ".join(f"{d}:{c}" for d, c in s["in_degree"].items())
        assert f"{name} in-degree:  {dist}" in lines


@pytest.mark.parametrize("bad", [[], "res3", [("res3", "not a spec")], [("res3",)]])
def test_format_statistics_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="stage_specs"):
        format_statistics(bad)


def test_graph_statistics_rejects_non_spec():
    with pytest.raises(ValueError, match="GraphSpec"):
        graph_statistics([(0, 1)])


# ---- drawing -------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", N32_SPECS + [generate_graph("ER", {"P": 0.05}, 32, 2)], ids=lambda s: s.model)
def test_stage_layers(spec):
    layers = stage_layers(spec)
    assert layers[0] == ["input"] and layers[-1] == ["output"]
    flat = [v for layer in layers for v in layer]
    assert sorted(flat[1:-1]) == list(range(32)) and len(flat) == 34
    assert len(layers) == graph_statistics(spec)["depth"] + 3
    layer_of = {v: k for k, layer in enumerate(layers) for v in layer}
    assert all(layer_of[u] < layer_of[v] for u, v in spec.to_networkx(with_io=True).edges())
    sinks = set(spec.output_nodes()) - set(spec.input_nodes())
    assert set(layers[-2]) >= sinks


def test_draw_stage_files(tmp_path):
    spec = generate_graph("WS", {"K": 4, "P": 0.75}, 8, 1)
    png, svg = draw_stage(spec, str(tmp_path / "sub" / "g"), title="tiny")
    assert (png, svg) == (str(tmp_path / "sub" / "g.png"), str(tmp_path / "sub" / "g.svg"))
    assert Path(png).read_bytes()[:8] == PNG_SIGNATURE
    text = Path(svg).read_text()
    assert "<svg" in text and "tiny" in text
    with pytest.raises(ValueError, match="path_prefix"):
        draw_stage(spec, "")
    with pytest.raises(ValueError, match="stage name"):
        draw_stages([("a/b", spec)], str(tmp_path))


# ---- tools ---------------------------------------------------------------------------------
def test_graph_stats_tool_tiny(tmp_path):
    out = tmp_path / "stats.json"
    proc = run_tool("tools/graph_stats.py", "--config-file", TINY, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert [s["stage"] for s in data["stages"]] == ["res3", "res4", "res5"]
    for stage in data["stages"]:
        spec = GraphSpec.from_dict(stage["spec"])
        assert spec.num_nodes == 8 and spec.describe() == stage["graph"]
        expected = json.loads(json.dumps(graph_statistics(spec)))  # int keys -> str, as written
        assert stage["statistics"] == expected
        assert any(line.startswith(stage["stage"] + " ") and stage["graph"] in line
                   for line in proc.stdout.splitlines()), proc.stdout
    assert "in-degree:" in proc.stdout and "out-degree:" in proc.stdout


def test_graph_stats_from_checkpoint(tmp_path, capsys):
    # In-process: the tool's main() on a checkpoint holding only a graph record.
    specs = [generate_graph("WS", {"K": 4, "P": 0.75}, 8, s) for s in (1, 2, 3)]
    ckpt = tmp_path / "model.pth"
    torch.save({"randwire_graphs": {"specs": [s.to_json() for s in specs]}}, ckpt)
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import graph_stats
    finally:
        sys.path.remove(str(REPO / "tools"))
    graph_stats.main(["--checkpoint", str(ckpt)])
    out = capsys.readouterr().out
    assert out == f"Graphs of {ckpt}:\n" + format_statistics(list(zip(["res3", "res4", "res5"], specs))) + "\n"


def test_draw_graphs_tool_n32(tmp_path):
    proc = run_tool("tools/draw_graphs.py", "--config-file", WS_SMALL, "--output-dir", str(tmp_path / "pics"))
    assert proc.returncode == 0, proc.stderr
    expected = [str(tmp_path / "pics" / f"{st}.{ext}") for st in ("res3", "res4", "res5") for ext in ("png", "svg")]
    assert proc.stdout.split() == expected
    for path in expected:
        data = Path(path).read_bytes()
        assert len(data) > 1000
        if path.endswith(".png"):
            assert data[:8] == PNG_SIGNATURE
        else:
            assert b"<svg" in data


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "one of the arguments --config-file --checkpoint is required"),
        (["--config-file", TINY, "--checkpoint", "x.pth"], "not allowed with argument"),
        (["--config-file", "no/such.yaml"], "no/such.yaml': no such file"),
        (["--checkpoint", "no/such.pth"], "no/such.pth': no such file"),
        (["--config-file", TINY, "MODEL.RANDWIRE.P"], "odd number"),
    ],
)
@pytest.mark.parametrize("tool", ["graph_stats.py", "draw_graphs.py"])
def test_tools_bad_input(tool, args, message, tmp_path):
    extra = ["--output-dir", str(tmp_path)] if tool == "draw_graphs.py" else []
    proc = run_tool(f"tools/{tool}", *extra, *args)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert not list(tmp_path.iterdir())


def test_draw_graphs_tool_needs_output_dir():
    proc = run_tool("tools/draw_graphs.py", "--config-file", TINY)
    assert proc.returncode != 0 and "--output-dir" in proc.stderr


# ---- training logs ---------------------------------------------------------------------------
def test_classification_trainer_logs_graph_table(monkeypatch, caplog):
    from detectron2.engine import TrainerBase

    from rwdet.classification.config import load_cls_config
    from rwdet.classification.trainer import ClassificationTrainer

    monkeypatch.setattr(TrainerBase, "train", lambda self, start, end: None)
    trainer = ClassificationTrainer.__new__(ClassificationTrainer)
    trainer.cfg = load_cls_config(TINY)
    trainer.max_iter, trainer.iters_per_epoch, trainer.train_set = 10, 5, [0] * 50
    trainer.base_lr, trainer.start_iter = 0.1, 0
    with caplog.at_level(logging.INFO, logger="rwdet.classification.trainer"):
        trainer.train()
    specs = [generate_graph("WS", {"K": 4, "P": 0.75}, 8, s) for s in (1, 2, 3)]
    assert format_statistics(list(zip(["res3", "res4", "res5"], specs))) in caplog.text


def test_detection_trainer_logs_graph_table(monkeypatch, caplog):
    from detectron2.engine import DefaultTrainer

    from rwdet.engine.defaults import load_config
    from rwdet.engine.trainer import Trainer

    monkeypatch.setattr(DefaultTrainer, "train", lambda self: "trained")
    trainer = Trainer.__new__(Trainer)
    trainer.cfg = load_config(str(REPO / "tests" / "configs" / "tiny_bccd.yaml"))
    with caplog.at_level(logging.INFO, logger="rwdet.engine.trainer"):
        assert trainer.train() == "trained"
    specs = [generate_graph("WS", {"K": 4, "P": 0.75}, 8, s) for s in (1, 2, 3)]
    assert format_statistics(list(zip(["res3", "res4", "res5"], specs))) in caplog.text
