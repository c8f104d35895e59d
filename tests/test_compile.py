"""The GPU code paths of the speed work, held on the CPU: RandWire stages under ``torch.compile``
(one graph, no break: what CUDA graphs and inductor need), equal to eager in outputs and
gradients; the benchmark's ``--compile`` and ``--amp bf16`` options on both sides of a pair."""

import copy

import pytest
import torch

from rwdet.analysis.benchmark import ModelBench, default_setup, pair_specs
from rwdet.graphs import generate_graph
from rwdet.modeling.randwire import RandWireStage

TINY = dict(batches=(2,), size=32, det_size=(64, 96), warmup=0, iters=1, rounds=1, flops=False)


def stage_pair(forward_mode, recompute="none"):
    """(eager stage, deep copy) of a WS(4, 0.75) stage of 12 nodes with random edge weights, in
    float64 so that the two may differ by rounding only."""
    spec = generate_graph("WS", {"K": 4, "P": 0.75}, 12, 5)
    torch.manual_seed(0)
    stage = RandWireStage(spec, 8, 16, 2, "BN", forward_mode=forward_mode).double()
    stage.recompute = recompute
    with torch.no_grad():
        for m in stage.modules():
            if getattr(m, "edge_weights", None) is not None:
                m.edge_weights.normal_()
    return stage, copy.deepcopy(stage)


@pytest.mark.parametrize("forward_mode,recompute", [("node", "none"), ("level", "none"), ("level", "pointwise")])
def test_stage_compiles_as_one_graph_and_matches_eager(forward_mode, recompute):
    torch._dynamo.reset()
    eager, twin = stage_pair(forward_mode, recompute)
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)  # fullgraph: a break raises
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 16, 16, generator=g, dtype=torch.double)
    grad = torch.randn(2, 16, 8, 8, generator=g, dtype=torch.double)
    outs = []
    for module in (eager, compiled):
        xi = x.clone().requires_grad_()
        y = module(xi)
        y.backward(grad)
        outs.append((y.detach(), xi.grad, {n: p.grad for n, p in module.named_parameters()}))
    (y0, gx0, gp0), (y1, gx1, gp1) = outs
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx1, gx0, rtol=1e-10, atol=1e-12)
    names = {n.replace("_orig_mod.", "") for n in gp1}
    assert names == set(gp0)
    for n, g1 in gp1.items():
        g0 = gp0[n.replace("_orig_mod.", "")]
        assert (g0 is None) == (g1 is None), n
        if g0 is not None:
            torch.testing.assert_close(g1, g0, rtol=1e-10, atol=1e-11, msg=n)
    # BN running statistics moved the same in both
    for (k0, v0), (k1, v1) in zip(eager.state_dict().items(), twin.state_dict().items()):
        assert k0 == k1
        torch.testing.assert_close(v1, v0, rtol=1e-12, atol=1e-12, msg=k0)


def test_bench_compile_runs_both_sides_and_keeps_eager_outputs():
    torch._dynamo.reset()
    setup = default_setup("cpu", compile="default", compile_backend="aot_eager", **TINY)
    pair = pair_specs(setup)["cls_small"]
    bench = ModelBench(pair.sides[1], pair, setup)  # MobileNetV2: fast to trace
    assert bench.forward is not bench.model  # the compiled wrapper
    out = bench.train_round()
    assert out["images_per_s"] > 0
    stats = bench.stats()
    assert stats["saved_activation_bytes"] > 0  # measured on the eager model
    assert bench.forward is not bench.model  # compiled again after stats
    infer = bench.infer_round()
    assert infer["norm_layers_after"] == 0 < infer["norm_layers_before"]  # folded, then recompiled
    bench.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(bench.forward(bench.x), bench.model(bench.x), rtol=1e-4, atol=1e-4)


def test_bench_bf16_autocast_on_cpu():
    setup = default_setup("cpu", amp="bf16", **TINY)
    pair = pair_specs(setup)["cls_small"]
    bench = ModelBench(pair.sides[0], pair, setup)  # RandWire small
    with bench._autocast():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert torch.isfinite(bench.loss())
    assert bench.train_round()["images_per_s"] > 0
    assert bench.infer_round()["images_per_s"] > 0


def test_compile_and_amp_settings_are_checked():
    with pytest.raises(ValueError, match="amp='fp16' is for CUDA only"):
        default_setup("cpu", amp="fp16")
    with pytest.raises(ValueError, match="compile='fast'; allowed: 'none', 'default'"):
        default_setup("cpu", compile="fast")
    with pytest.raises(ValueError, match="reduce-overhead.*CUDA only"):
        default_setup("cpu", compile="reduce-overhead")
    with pytest.raises(ValueError, match="compile_backend='nope'; allowed: .*inductor"):
        default_setup("cpu", compile="default", compile_backend="nope")
