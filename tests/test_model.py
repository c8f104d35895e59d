"""RandWire model: node maths, stage shapes, memory release, backbones (FLOPs/params vs the paper: test_flops_table.py)."""

import gc
import logging
import weakref

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY

from rwdet.config import REGIMES, randwire_graph_specs
from rwdet.engine.defaults import get_rwdet_cfg
from rwdet.graphs import generate_graph
from rwdet.modeling import RandWire, RandWireClassifier, RandWireNode, RandWireStage

WS = {"K": 4, "P": 0.75}


def ws_specs(regime, n=32):
    k = len(REGIMES[regime])
    return [generate_graph("WS", WS, n // 2 if (regime == "regular" and i == 0) else n, i + 1) for i in range(k)]


def test_node_aggregation_is_sigmoid_weighted_sum():
    torch.manual_seed(0)
    node = RandWireNode(3, 4, 4, 1, "BN").eval()
    with torch.no_grad():
        node.edge_weights.copy_(torch.tensor([-1.0, 0.5, 2.0]))
    xs = [torch.randn(2, 4, 5, 5) for _ in range(3)]
    w = torch.sigmoid(node.edge_weights)
    expected = node.op(sum(wi * x for wi, x in zip(w, xs)))
    assert torch.allclose(node(xs), expected, atol=1e-6)
    # The inputs are not modified (they may feed other nodes).
    single = RandWireNode(1, 4, 4, 1, "BN").eval()
    x = torch.randn(2, 4, 5, 5)
    x0 = x.clone()
    single([x])
    assert torch.equal(x, x0)
    assert not hasattr(single, "edge_weights")


@pytest.mark.parametrize("model,params", [("ER", {"P": 0.2}), ("BA", {"M": 5}), ("WS", WS)])
def test_stage_shapes_stride_and_grad(model, params):
    spec = generate_graph(model, params, 16, 1)
    stage = RandWireStage(spec, in_channels=8, out_channels=16, stride=2)
    x = torch.randn(2, 8, 17, 24, requires_grad=True)
    y = stage(x)
    assert y.shape == (2, 16, 9, 12)
    y.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # Only the nodes fed by the input node change the channel count and stride.
    for v, node in enumerate(stage.nodes):
        stride = node.op.depthwise.stride[0]
        assert (stride == 2) == (v in spec.input_nodes())
        assert node.op.depthwise.in_channels == (8 if v in spec.input_nodes() else 16)


def test_stage_output_is_mean_of_sink_nodes():
    spec = generate_graph("WS", WS, 12, 2)
    stage = RandWireStage(spec, 4, 4, 1, forward_mode="node").eval()  # per-node hooks
    outs = {}
    for v, node in enumerate(stage.nodes):
        node.register_forward_hook(lambda m, i, o, v=v: outs.__setitem__(v, o))
    with torch.no_grad():
        y = stage(torch.randn(1, 4, 8, 8))
    expected = sum(outs[u] for u in spec.output_nodes()) / len(spec.output_nodes())
    assert torch.allclose(y, expected, atol=1e-6)


def test_node_outputs_released_after_last_consumer():
    spec = generate_graph("WS", WS, 32, 3)
    stage = RandWireStage(spec, 4, 4, 1, forward_mode="node").eval()  # the reference path's release order
    succs = spec.successors()
    refs = {}
    alive_when_dead_expected = []

    def hook(v):
        def fn(module, inputs, output):
            # Before node v's output is stored, every node whose consumers all ran before v
            # (and that is not a stage output) must be freed.
            for u, r in refs.items():
                if u not in spec.output_nodes() and succs[u] and max(succs[u]) < v and r() is not None:
                    alive_when_dead_expected.append((u, v))
            refs[v] = weakref.ref(output)
        return fn

    for v, node in enumerate(stage.nodes):
        node.register_forward_hook(hook(v))
    gc.disable()
    try:
        with torch.no_grad():
            stage(torch.randn(1, 4, 16, 16))
    finally:
        gc.enable()
    assert alive_when_dead_expected == []
    assert len(refs) == 32


def test_classifier_output_and_stage_strides():
    body = RandWire(ws_specs("small", 8), "small", 16, out_features=["stem", "res2", "res3", "res4", "res5"])
    shapes = body.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"stem": 2, "res2": 4, "res3": 8, "res4": 16, "res5": 32}
    assert {k: v.channels for k, v in shapes.items()} == {"stem": 8, "res2": 16, "res3": 16, "res4": 32, "res5": 64}
    x = torch.randn(2, 3, 64, 96)
    out = body(x)
    for k, t in out.items():
        assert t.shape == (2, shapes[k].channels, 64 // shapes[k].stride, 96 // shapes[k].stride)
    logits = RandWireClassifier(RandWire(ws_specs("small", 8), "small", 16), num_classes=10)(x)
    assert logits.shape == (2, 10)


def small_cfg(**overrides):
    cfg = get_rwdet_cfg()
    cfg.MODEL.RANDWIRE.REGIME = "regular"
    cfg.MODEL.RANDWIRE.CHANNELS = 64
    cfg.MODEL.RANDWIRE.NODES = 12
    for k, v in overrides.items():
        setattr(cfg.MODEL.RANDWIRE, k, v)
    return cfg


def test_registered_backbone_and_fpn_shapes():
    cfg = small_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_randwire_fpn_backbone"
    with pytest.raises(ValueError, match="MODEL.FPN.IN_FEATURES is empty"):
        BACKBONE_REGISTRY.get("build_randwire_fpn_backbone")(cfg, ShapeSpec(channels=3))
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    fpn = BACKBONE_REGISTRY.get("build_randwire_fpn_backbone")(cfg, ShapeSpec(channels=3))
    bottom = fpn.bottom_up.output_shape()
    assert {k: (v.channels, v.stride) for k, v in bottom.items()} == {
        "res2": (64, 4), "res3": (128, 8), "res4": (256, 16), "res5": (512, 32)}
    assert {k: v.stride for k, v in fpn.output_shape().items()} == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    out = fpn(torch.randn(1, 3, 128, 192))
    for k, s in fpn.output_shape().items():
        assert out[k].shape == (1, 256, 128 // s.stride, 192 // s.stride)


@pytest.mark.parametrize("norm", ["BN", "FrozenBN", "GN", "SyncBN"])
def test_norms(norm):
    cfg = small_cfg(NORM=norm)
    bb = BACKBONE_REGISTRY.get("build_randwire_backbone")(cfg, ShapeSpec(channels=3)).eval()
    out = bb(torch.randn(1, 3, 64, 64))
    assert out["res5"].shape == (1, 512, 2, 2)
    kinds = {type(m).__name__ for m in bb.modules()}
    assert {"BN": "BatchNorm2d", "FrozenBN": "FrozenBatchNorm2d", "GN": "GroupNorm", "SyncBN": "SyncBatchNorm"}[norm] in kinds


def test_gn_with_channels_not_divisible_by_32_is_refused():
    with pytest.raises(ValueError, match=r"norm='GN'.*54 channels"):
        BACKBONE_REGISTRY.get("build_randwire_backbone")(small_cfg(NORM="GN", CHANNELS=109), ShapeSpec(channels=3))


def _stage_state(bb, names):
    """Per stage: (all parameters trainable, any FrozenBatchNorm2d)."""
    return {
        n: (all(p.requires_grad for p in getattr(bb, n).parameters()),
            any(isinstance(m, FrozenBatchNorm2d) for m in getattr(bb, n).modules()))
        for n in names
    }


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 5])
def test_backbone_freeze_at_freezes_randwire_as_detectron2_freezes_resnet(freeze_at):
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    cfg = small_cfg()
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    bb = BACKBONE_REGISTRY.get("build_randwire_backbone")(cfg, ShapeSpec(channels=3))
    names = ["stem", "res2", "res3", "res4", "res5"]
    state = _stage_state(bb, names)
    expected = {n: (i + 1 > freeze_at, i + 1 <= freeze_at) for i, n in enumerate(names)}
    assert state == expected
    # The same key and value freeze Detectron2's ResNet stage for stage the same way.
    resnet = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    assert _stage_state(resnet, names) == expected


def test_freeze_at_follows_detectron2_default_and_old_key_warns():
    cfg = small_cfg()
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2  # Detectron2's default, now obeyed
    bb = BACKBONE_REGISTRY.get("build_randwire_backbone")(cfg, ShapeSpec(channels=3))
    assert not any(p.requires_grad for p in bb.res2.parameters())
    assert all(p.requires_grad for p in bb.res3.parameters())
    # The old MODEL.RANDWIRE.FREEZE_AT, when set, still applies, with a warning naming both keys.
    cfg = small_cfg(FREEZE_AT=0)
    with pytest.warns(FutureWarning, match=r"MODEL.RANDWIRE.FREEZE_AT=0 is deprecated.*MODEL.BACKBONE.FREEZE_AT"):
        bb = BACKBONE_REGISTRY.get("build_randwire_backbone")(cfg, ShapeSpec(channels=3))
    assert all(p.requires_grad for p in bb.parameters())
    cfg = small_cfg()
    cfg.MODEL.BACKBONE.FREEZE_AT = 6
    with pytest.raises(ValueError, match=r"MODEL.BACKBONE.FREEZE_AT=6 is out of range; allowed: 0"):
        BACKBONE_REGISTRY.get("build_randwire_backbone")(cfg, ShapeSpec(channels=3))


def test_classifier_freeze_at_uses_the_same_key():
    from rwdet.classification.config import get_cls_cfg
    from rwdet.classification.model import build_classifier

    cfg = get_cls_cfg()
    cfg.MODEL.RANDWIRE.REGIME, cfg.MODEL.RANDWIRE.SEEDS = "small", [1, 2, 3]
    cfg.MODEL.RANDWIRE.NODES, cfg.MODEL.RANDWIRE.CHANNELS, cfg.MODEL.NUM_CLASSES = 8, 16, 10
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0  # pretraining trains everything by default
    assert all(p.requires_grad for p in build_classifier(cfg).parameters())
    cfg.MODEL.BACKBONE.FREEZE_AT = 3
    body = build_classifier(cfg).body
    assert _stage_state(body, ["stem", "res2", "res3", "res4"]) == {
        "stem": (False, True), "res2": (False, True), "res3": (False, True), "res4": (True, False)}


def test_config_errors_and_saved_graphs(caplog):
    with pytest.raises(ValueError, match=r"SEEDS=\[1, 2, 3\].*4 random stages"):
        randwire_graph_specs(small_cfg(SEEDS=[1, 2, 3]))
    with pytest.raises(ValueError, match="REGIME='tiny'"):
        randwire_graph_specs(small_cfg(REGIME="tiny"))
    with pytest.raises(ValueError, match=r"P=1\.5"):
        randwire_graph_specs(small_cfg(P=1.5))
    cfg = small_cfg()
    specs = randwire_graph_specs(cfg)
    # Saved specs rebuild the saved edges, even where today's generator differs.
    saved = [s.to_dict() for s in specs]
    saved[1]["edges"] = saved[1]["edges"][:-1]
    from rwdet.graphs import GraphSpec
    cfg.MODEL.RANDWIRE.GRAPHS = [GraphSpec.from_dict(d).to_json() for d in saved]
    with caplog.at_level(logging.WARNING):
        rebuilt = randwire_graph_specs(cfg)
    assert rebuilt[1].edges == specs[1].edges[:-1] and rebuilt[0] == specs[0]
    assert "different edges" in caplog.text
    # Saved specs of another setting are refused.
    cfg.MODEL.RANDWIRE.P = 0.5
    with pytest.raises(ValueError, match="GRAPHS\\[0\\] is WS\\(4, 0.75\\)"):
        randwire_graph_specs(cfg)
