"""Graph damage: what removing a node or an edge computes, and tools/graph_damage.py on a trained
classifier (Fashion-MNIST) and detector (BCCD)."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rwdet.analysis.damage import damage_targets, damaged, find_stages, run_damage_sweep
from rwdet.classification.data import DEFAULT_FASHION_MNIST_ROOT
from rwdet.graphs import generate_graph
from rwdet.modeling.randwire import RandWire, RandWireClassifier, RandWireStage

REPO = Path(__file__).resolve().parents[1]
CLS = str(REPO / "tests" / "configs" / "tiny_fashion_mnist.yaml")
DET = str(REPO / "tests" / "configs" / "tiny_bccd.yaml")


def trained_stage(seed=1, n=32, forward_mode="level"):
    """A stage whose BN statistics and edge weights are not at their initial values."""
    torch.manual_seed(seed)
    stage = RandWireStage(generate_graph("WS", {"K": 4, "P": 0.75}, n, seed), 8, 16, 2,
                          forward_mode=forward_mode)
    with torch.no_grad():
        for node in stage.nodes:
            if node.in_degree > 1:
                node.edge_weights.normal_()
    stage.train()
    with torch.no_grad():
        for _ in range(3):
            stage(torch.randn(4, 8, 12, 12))
    return stage.eval()


@pytest.fixture(scope="module", params=["level", "node"])
def stage(request):
    """The same trained stage, once with each forward (damage must work on both)."""
    return trained_stage(forward_mode=request.param)


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(0)
    return torch.randn(2, 8, 12, 12)


def run(stage, x, nodes=(), edges=()):
    stage.set_damage(nodes, edges)
    try:
        with torch.no_grad():
            return stage(x)
    finally:
        stage.clear_damage()


def test_removing_nothing_is_the_intact_stage(stage, x):
    with torch.no_grad():
        intact = stage(x)
    assert torch.equal(run(stage, x), intact)
    assert stage.removed_nodes == []


def test_removing_a_node_changes_the_output(stage, x):
    with torch.no_grad():
        intact = stage(x)
    for v in (0, 15, 31):
        out = run(stage, x, nodes=[v])
        assert out.shape == intact.shape and torch.isfinite(out).all()
        assert not torch.allclose(out, intact), v


def test_removed_edge_contributes_zero(stage, x):
    # Removing edge (u, v) equals driving its weight sigmoid(w) to 0 in the intact stage.
    spec = stage.spec
    preds = spec.predecessors()
    u, v = next((u, v) for u, v in spec.edges if len(preds[v]) > 1)
    damaged_out = run(stage, x, edges=[(u, v)])
    node = stage.nodes[v]
    i = preds[v].index(u)
    saved = node.edge_weights.data.clone()
    try:
        node.edge_weights.data[i] = -1e4
        with torch.no_grad():
            zero_weight = stage(x)
    finally:
        node.edge_weights.data.copy_(saved)
    torch.testing.assert_close(damaged_out, zero_weight)
    with torch.no_grad():
        assert not torch.allclose(damaged_out, stage(x))


def test_removed_node_output_is_zero_for_its_consumers(stage, x):
    # For a node whose successors all keep other inputs, removal equals a zero output.
    spec = stage.spec
    preds, succs = spec.predecessors(), spec.successors()
    u = next(u for u in range(spec.num_nodes) if succs[u] and all(len(preds[s]) > 1 for s in succs[u]))
    handle = stage.nodes[u].register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    mode, stage.forward_mode = stage.forward_mode, "node"  # node hooks run on the per-node path
    try:
        with torch.no_grad():
            zeroed = stage(x)
    finally:
        handle.remove()
        stage.forward_mode = mode
    torch.testing.assert_close(run(stage, x, nodes=[u]), zeroed)


def test_node_that_loses_all_inputs_is_removed(stage, x):
    spec = stage.spec
    preds = spec.predecessors()
    v = next(v for v in range(spec.num_nodes) if len(preds[v]) >= 2)
    stage.set_damage(edges=[(u, v) for u in preds[v]])
    assert v in stage.removed_nodes
    stage.clear_damage()
    torch.testing.assert_close(run(stage, x, edges=[(u, v) for u in preds[v]]), run(stage, x, nodes=[v]))


def test_stage_without_any_surviving_node_outputs_zeros_and_the_network_runs():
    specs = [generate_graph("WS", {"K": 4, "P": 0.75}, 8, s) for s in (1, 2, 3)]
    net = RandWireClassifier(RandWire(specs, "small", 16), num_classes=10, head_channels=32).eval()
    res4 = find_stages(net)["res4"]
    x = torch.randn(2, 3, 64, 64)
    with damaged(net, "res4", nodes=specs[1].input_nodes()) as st, torch.no_grad():
        assert len(st.removed_nodes) == 8
        feat = net.body(x)
        logits = net(x)
    assert torch.isfinite(logits).all() and logits.shape == (2, 10)
    assert not res4.is_damaged  # undone on exit
    with torch.no_grad():
        res3 = net.body.res3(net.body.res2(net.body.stem(x)))
        res4.set_damage(nodes=specs[1].input_nodes())
        zeros = res4(res3)
        res4.clear_damage()
    assert zeros.shape == (2, 32, 4, 4) and not zeros.any()
    assert feat["res5"].shape == (2, 64, 2, 2)


def test_bad_damage_is_refused(stage):
    with pytest.raises(ValueError, match=r"nodes \[32\] are out of range.*0\.\.31"):
        stage.set_damage(nodes=[32])
    missing = next((u, v) for u in range(32) for v in range(u + 1, 32) if (u, v) not in set(stage.spec.edges))
    with pytest.raises(ValueError, match="not in the stage's graph"):
        stage.set_damage(edges=[missing])
    net = RandWireClassifier(RandWire([generate_graph("WS", {"K": 2, "P": 0.5}, 8, s) for s in (1, 2, 3)], "small", 16))
    with pytest.raises(ValueError, match=r"stage 'res2' is not a random stage.*res3"):
        with damaged(net, "res2", nodes=[0]):
            pass
    with pytest.raises(ValueError, match="kind='layer'"):
        damage_targets(find_stages(net), "layer")


def test_targets_cover_every_node_and_edge_and_sample_is_seeded():
    specs = [generate_graph("ER", {"P": 0.3}, 8, s) for s in (1, 2, 3)]
    stages = find_stages(RandWire(specs, "small", 16))
    nodes = damage_targets(stages, "node")
    edges = damage_targets(stages, "edge")
    assert len(nodes) == 24 and len(edges) == sum(len(s.edges) for s in specs)
    for t in nodes:
        succ = specs[["res3", "res4", "res5"].index(t["stage"])].successors()[t["node"]]
        assert t["out_degree"] == (len(succ) if succ else 1)  # an output node feeds the output node
    for t in edges:
        spec = specs[["res3", "res4", "res5"].index(t["stage"])]
        assert t["target_in_degree"] == len(spec.predecessors()[t["edge"][1]])
    a = damage_targets(stages, "node", sample=5, seed=3)
    assert a == damage_targets(stages, "node", sample=5, seed=3) and len(a) == 5
    assert a != damage_targets(stages, "node", sample=5, seed=4)


def test_sweep_records_the_drop_of_each_removal():
    specs = [generate_graph("WS", {"K": 2, "P": 0.5}, 8, s) for s in (1, 2, 3)]
    torch.manual_seed(0)
    net = RandWireClassifier(RandWire(specs, "small", 16), num_classes=10, head_channels=32).eval()
    x = torch.randn(4, 3, 32, 32)

    def evaluate(model):  # a metric that any change of the logits moves
        with torch.no_grad():
            return float(model(x).sum())

    targets = damage_targets(find_stages(net), "node", sample=4, seed=0)
    rows = run_damage_sweep(net, evaluate, targets, metric="sum", progress=False)
    base = evaluate(net)
    assert len(rows) == 4 and all(r["baseline"] == base for r in rows)
    for r in rows:
        with damaged(net, r["stage"], nodes=[r["node"]]):
            assert r["value"] == evaluate(net)
        assert r["drop"] == pytest.approx(base - r["value"])
    assert any(r["drop"] != 0 for r in rows)


def tool(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "tools" / "graph_damage.py"), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.skipif(not os.path.isdir(DEFAULT_FASHION_MNIST_ROOT) and not os.environ.get("RWDET_REQUIRE_FASHION_MNIST"),
                    reason="Fashion-MNIST not installed")
def test_damage_tool_on_trained_classifier(tmp_path):
    from rwdet.classification.config import load_cls_config
    from rwdet.classification.trainer import ClassificationTrainer

    cfg = load_cls_config(CLS, ["OUTPUT_DIR", str(tmp_path / "cls"), "SOLVER.MAX_ITER", "60"])
    trainer = ClassificationTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    weights = str(tmp_path / "cls" / "model_final.pth")
    out = tmp_path / "damage"
    proc = tool("--config-file", CLS, "--weights", weights, "--sample", "6", "--max-images", "1000",
                "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(out / "damage.csv")
    assert [r["kind"] for r in rows] == ["node"] * 6 + ["edge"] * 6
    base = float(rows[0]["baseline"])
    assert base > 20.0  # trained: well above chance (10%)
    for r in rows:
        assert math.isfinite(float(r["value"])) and float(r["drop"]) == pytest.approx(base - float(r["value"]), abs=1e-3)
    assert any(float(r["drop"]) != 0 for r in rows)
    assert (out / "damage.png").stat().st_size > 10_000
    assert f"intact top1: {base:.2f}" in proc.stdout
    # Plot mode combines sweeps; bad input is refused with a clear message.
    proc = tool("--plot", str(out / "damage.csv"), str(out / "damage.csv"), "--output", str(tmp_path / "all.svg"))
    assert proc.returncode == 0 and "<svg" in (tmp_path / "all.svg").read_text()
    proc = tool("--config-file", CLS, "--weights", str(tmp_path / "nope.pth"))
    assert proc.returncode != 0 and "nope.pth" in proc.stderr and "do not exist" in proc.stderr
    proc = tool("--config-file", CLS, "--weights", weights, "--stages", "res9")
    assert proc.returncode != 0 and "res9" in proc.stderr and "res3" in proc.stderr


def test_damage_tool_on_detector(bccd_root, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run_dir = tmp_path / "det"
    subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", DET,
                    "DATASETS.BCCD_ROOT", str(bccd_root), "OUTPUT_DIR", str(run_dir), "SOLVER.MAX_ITER", "2"],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    proc = tool("--config-file", DET, "--weights", str(run_dir / "model_final.pth"), "--kind", "node",
                "--sample", "2", "--output-dir", str(tmp_path / "damage"), "DATASETS.BCCD_ROOT", str(bccd_root),
                "DATASETS.TEST", "('bccd_test',)", "OUTPUT_DIR", str(tmp_path / "eval"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(tmp_path / "damage" / "damage.csv")
    assert len(rows) == 2 and {r["metric"] for r in rows} == {"AP"}
    assert all(math.isfinite(float(r["value"])) for r in rows)
