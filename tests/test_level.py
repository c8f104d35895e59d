"""The level-batched stage forward against the per-node reference: outputs, gradients, BN
running statistics, damage, recomputation, checkpoints; and deploy-mode BN folding."""

import copy
from pathlib import Path

import pytest
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import build_resnet_backbone

from detectron2.modeling import build_model

from rwdet.engine.defaults import load_config
from rwdet.graphs import generate_graph
from rwdet.layers import fold_batchnorm
from rwdet.layers.level import level_norm, level_norm_supported, weighted_sum_relu
from rwdet.modeling.randwire import RandWire, RandWireClassifier, RandWireStage

TINY_BCCD = str(Path(__file__).resolve().parent / "configs" / "tiny_bccd.yaml")
GENERATORS = [("WS", {"K": 4, "P": 0.75}), ("ER", {"P": 0.2}), ("BA", {"M": 5})]


def randomized(module):
    """Random edge weights and BN statistics, so that no term of the forward is trivial."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if getattr(m, "edge_weights", None) is not None:
                m.edge_weights.copy_(torch.randn(m.edge_weights.shape, generator=g))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
    return module


def pair(model, norm, n=16):
    """(per-node stage, level stage) with identical parameters, float64 (GN: 32 channels)."""
    spec = generate_graph(model[0], model[1], n, 3)
    out = 32 if norm == "GN" else 16
    node = randomized(RandWireStage(spec, 8, out, 2, norm, forward_mode="node").double())
    level = copy.deepcopy(node)
    level.forward_mode = "level"
    return node, level


def run(stage, x, grad):
    x = x.clone().requires_grad_()
    y = stage(x)
    y.backward(grad)
    return y.detach(), x.grad, {n: p.grad for n, p in stage.named_parameters()}


@pytest.mark.parametrize("generator", GENERATORS, ids=[g[0] for g in GENERATORS])
@pytest.mark.parametrize("norm", ["BN", "FrozenBN", "GN", ""])
@pytest.mark.parametrize("recompute", ["none", "depthwise", "pointwise", "stage"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_level_equals_per_node_in_outputs_gradients_and_statistics(generator, norm, recompute, channels_last):
    node, level = pair(generator, norm)
    level.recompute = recompute
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    node, level = node.to(memory_format=fmt), level.to(memory_format=fmt)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 8, 12, 12, generator=g, dtype=torch.double).to(memory_format=fmt)
    grad = torch.randn((3, node.out_channels, 6, 6), generator=g, dtype=torch.double)
    y_ref, gx_ref, gp_ref = run(node, x, grad)
    y, gx, gp = run(level, x, grad)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-10, atol=1e-12)
    assert gp.keys() == gp_ref.keys()
    for name in gp_ref:
        assert (gp[name] is None) == (gp_ref[name] is None), name
        if gp_ref[name] is not None:
            torch.testing.assert_close(gp[name], gp_ref[name], rtol=1e-10, atol=1e-11, msg=name)
    # BN running statistics (two forwards above) and num_batches_tracked moved identically.
    for (k, a), (_, b) in zip(node.state_dict().items(), level.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=k)
    assert y.is_contiguous(memory_format=fmt)


def test_recompute_stores_fewer_activations():
    node, level = pair(GENERATORS[0], "BN", n=32)
    x = torch.randn(2, 8, 16, 16, dtype=torch.double)

    def saved_bytes(stage):
        seen = {}

        def pack(t):
            if not isinstance(t, torch.nn.Parameter):
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            stage(x.clone().requires_grad_()).sum()
        return sum(seen.values())

    stored = {}
    for mode in ("none", "depthwise", "pointwise", "stage"):
        level.recompute = mode
        stored[mode] = saved_bytes(level)
    assert stored["stage"] < stored["pointwise"] < stored["depthwise"] < stored["none"]
    # "none" stores what the per-node forward stores, less the per-node copies of ReLU(x).
    assert stored["none"] <= saved_bytes(node)
    # "stage" stores the stage's input only, on either forward.
    assert stored["stage"] == x.numel() * x.element_size()
    node.recompute = "stage"
    assert saved_bytes(node) == stored["stage"]


@pytest.mark.parametrize("norm", ["BN", "GN"])
def test_stage_recompute_on_the_node_forward_equals_storing(norm):
    """recompute="stage" on the per-node forward: same outputs, gradients and BN statistics
    (updated once per step, not again by the rerun in backward) as storing everything."""
    stored, _ = pair(GENERATORS[0], norm)
    rerun = copy.deepcopy(stored)
    rerun.recompute = "stage"
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 12, 12, generator=g, dtype=torch.double)
    grad = torch.randn((2, stored.out_channels, 6, 6), generator=g, dtype=torch.double)
    for _ in range(2):  # two steps: the statistics after the first feed the second
        y_ref, gx_ref, gp_ref = run(stored, x, grad)
        y, gx, gp = run(rerun, x, grad)
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
        for name in gp_ref:
            torch.testing.assert_close(gp[name], gp_ref[name], rtol=1e-12, atol=1e-12, msg=name)
        for (k, a), (_, b) in zip(stored.state_dict().items(), rerun.state_dict().items()):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=k)
        for p in list(stored.parameters()) + list(rerun.parameters()):
            p.grad = None
    # In eval mode (and without grad) nothing is checkpointed: same function.
    stored.eval(), rerun.eval()
    with torch.no_grad():
        torch.testing.assert_close(rerun(x), stored(x), rtol=0, atol=0)


@pytest.mark.parametrize("generator", GENERATORS, ids=[g[0] for g in GENERATORS])
def test_damage_is_the_same_on_both_forwards(generator):
    node, level = pair(generator, "BN", n=32)
    node.eval(), level.eval()
    x = torch.randn(2, 8, 8, 8, dtype=torch.double)
    rng = torch.Generator().manual_seed(2)
    edges = node.spec.edges
    for _ in range(8):
        nodes = torch.randperm(32, generator=rng)[: int(torch.randint(0, 6, (1,), generator=rng))].tolist()
        pick = torch.randperm(len(edges), generator=rng)[: int(torch.randint(0, 12, (1,), generator=rng))]
        damage = dict(nodes=nodes, edges=[edges[i] for i in pick.tolist()])
        node.set_damage(**damage)
        level.set_damage(**damage)
        with torch.no_grad():
            torch.testing.assert_close(level(x), node(x), rtol=1e-12, atol=1e-12)
    level.set_damage(nodes=range(32))
    with torch.no_grad():
        assert not level(x).any()


def test_levels_partition_the_nodes_topologically():
    spec = generate_graph("WS", {"K": 4, "P": 0.75}, 32, 1)
    stage = RandWireStage(spec, 8, 16, 2)
    levels = stage._intact.levels
    assert sorted(v for lv in levels for v in lv.nodes) == list(range(32))
    depth = {v: d for d, lv in enumerate(levels) for v in lv.nodes}
    preds = spec.predecessors()
    assert [v for v in range(32) if not preds[v]] == levels[0].nodes
    for v in range(32):
        if preds[v]:
            assert depth[v] == 1 + max(depth[u] for u in preds[v])
    assert len(levels) < 32  # batching merges nodes


def test_state_dict_keys_are_the_per_node_ones_and_old_checkpoints_load():
    spec = [generate_graph("WS", {"K": 4, "P": 0.75}, 8, s) for s in (1, 2, 3)]
    old = RandWire(spec, regime="small", channels=8, forward_mode="node")
    new = RandWire(spec, regime="small", channels=8, forward_mode="level")
    assert RandWire(spec, regime="small", channels=8).res3.forward_mode == "node"  # the default
    assert list(new.state_dict()) == list(old.state_dict())
    assert "res3.nodes.0.op.pointwise.weight" in new.state_dict()
    assert any(k.startswith("res3.nodes.") and k.endswith(".edge_weights") for k in new.state_dict())
    randomized(old)
    new.load_state_dict(old.state_dict())
    x = torch.randn(2, 3, 32, 32)
    old.eval(), new.eval()
    with torch.no_grad():
        torch.testing.assert_close(new(x)["res5"], old(x)["res5"], rtol=1e-5, atol=1e-5)


def test_syncbn_stage_falls_back_to_per_node():
    spec = generate_graph("WS", {"K": 4, "P": 0.75}, 8, 1)
    stage = RandWireStage(spec, 4, 8, 2, "SyncBN")
    assert not stage._level_batchable()
    assert RandWireStage(spec, 4, 8, 2, "BN")._level_batchable()


def test_bad_modes_are_refused():
    spec = generate_graph("WS", {"K": 4, "P": 0.75}, 8, 1)
    with pytest.raises(ValueError, match="forward_mode='fast'.*'level', 'node'"):
        RandWireStage(spec, 4, 8, 2, forward_mode="fast")
    with pytest.raises(ValueError, match="recompute='all'.*'none', 'depthwise', 'pointwise', 'stage'"):
        RandWireStage(spec, 4, 8, 2, recompute="all")


def test_weighted_sum_relu_by_hand():
    a = torch.tensor([[[[1.0, -2.0]]]])
    b = torch.tensor([[[[3.0, 1.0]]]])
    w = torch.tensor([0.5, 2.0, 1.0], requires_grad=True)
    out = weighted_sum_relu([a, b], w, [[(0, 0), (1, 1)], [(0, 2)]], channels=1)
    # slot 0: relu(0.5*a + 2*b) = relu([6.5, 1.0]); slot 1: relu(1*a) = [1, 0]
    assert out.tolist() == [[[[6.5, 1.0]], [[1.0, 0.0]]]]
    out.sum().backward()
    # d/dw0 = sum(a where slot 0 > 0) = -1; d/dw1 = sum(b) = 4; d/dw2 = sum(a where a > 0) = 1
    assert w.grad.tolist() == [-1.0, 4.0, 1.0]
    with pytest.raises(ValueError, match="at least one input"):
        weighted_sum_relu([a], w, [[]], channels=1)


def test_level_norm_refuses_mixed_norms():
    norms = [torch.nn.BatchNorm2d(4), torch.nn.GroupNorm(2, 4)]
    assert not level_norm_supported(norms)
    with pytest.raises(ValueError, match="BatchNorm2d.*GroupNorm"):
        level_norm(torch.randn(1, 8, 2, 2), norms)


# --- deploy mode --------------------------------------------------------------------------


def assert_folds(model, x, rtol=1e-4):
    model = randomized(model).eval()
    with torch.no_grad():
        want = model(x)
        folded = fold_batchnorm(copy.deepcopy(model))
        got = folded(x)
    bns = [m for m in folded.modules() if isinstance(m, (torch.nn.BatchNorm2d,)) or type(m).__name__ == "FrozenBatchNorm2d"]
    assert bns == []
    if isinstance(want, dict):
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=rtol, atol=rtol * want[k].abs().max().item())
    else:
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * want.abs().max().item())


@pytest.mark.parametrize("forward_mode", ["level", "node"])
def test_fold_batchnorm_randwire(forward_mode):
    specs = [generate_graph("WS", {"K": 4, "P": 0.75}, 8, s) for s in (1, 2, 3, 4)]
    body = RandWire(specs, regime="regular", channels=8, forward_mode=forward_mode)
    assert_folds(RandWireClassifier(body, num_classes=10), torch.randn(2, 3, 64, 64))


def test_fold_batchnorm_torchvision_and_detectron2():
    x = torch.randn(2, 3, 64, 64)
    assert_folds(torchvision.models.resnet18(num_classes=10), x)
    assert_folds(torchvision.models.mobilenet_v2(num_classes=10), x)
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res4"]
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    for norm in ("FrozenBN", "BN"):
        cfg.MODEL.RESNETS.NORM = norm
        assert_folds(build_resnet_backbone(cfg, ShapeSpec(channels=3)), x)


@pytest.mark.parametrize("norm", ["BN", "FrozenBN"])
def test_fold_batchnorm_randwire_fpn_detector_backbone(norm):
    cfg = load_config(TINY_BCCD, ["MODEL.RANDWIRE.NORM", norm, "MODEL.DEVICE", "cpu"])
    assert_folds(build_model(cfg).backbone, torch.randn(1, 3, 64, 96))


def test_fold_batchnorm_refuses_training_mode():
    with pytest.raises(RuntimeError, match=r"eval-mode model \(call .eval\(\) first\)"):
        fold_batchnorm(torchvision.models.resnet18())
